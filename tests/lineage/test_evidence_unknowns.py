"""Who asked and under what policy may be unknown only for an ungranted denial.

A call that reached the gate with no verifiable grant has no decision,
policy or initiator anybody established; its denial is still evidence. Any
other outcome must name all three.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ecp.lineage.ledger._evidence import EvidencePredicate, OutcomeStatus
from tests.lineage.support import make_predicate

UNKNOWN = {"decisionId": None, "policyDigest": None, "initiator": None}


def _doc(status: OutcomeStatus, **changes: object) -> dict[str, object]:
    doc = make_predicate(1, status=status).model_dump(mode="json", by_alias=True)
    doc.update(changes)
    return doc


def test_ungranted_denial_may_leave_them_unknown() -> None:
    pred = EvidencePredicate.model_validate(_doc(OutcomeStatus.DENIED, **UNKNOWN))
    assert (pred.decision_id, pred.policy_digest, pred.initiator) == (None, None, None)


@pytest.mark.parametrize("field", sorted(UNKNOWN))
def test_a_failure_must_name_each_of_them(field: str) -> None:
    with pytest.raises(ValidationError, match="may be absent only for an ungranted denial"):
        EvidencePredicate.model_validate(_doc(OutcomeStatus.FAILED, **{field: None}))


def test_a_denial_under_a_grant_must_name_them() -> None:
    with pytest.raises(ValidationError, match="may be absent only for an ungranted denial"):
        EvidencePredicate.model_validate(_doc(OutcomeStatus.DENIED, grantId="grant-1", **UNKNOWN))


@pytest.mark.parametrize("bad", ["a\x00b", "line\nbreak", "tab\there", "\x1f", " padded", ""])
@pytest.mark.parametrize("field", ["decision_id", "grant_id", "initiator"])
def test_free_text_fields_are_single_line_without_padding(field: str, bad: str) -> None:
    fields = make_predicate(1).model_dump()
    fields[field] = bad
    with pytest.raises(ValidationError, match="single-line"):
        EvidencePredicate.model_validate(fields)


def test_other_characters_pass() -> None:
    fields = make_predicate(1).model_dump()
    fields["initiator"] = "zoë\x7f\u2028x"  # DEL and Unicode separators are not C0 controls
    assert EvidencePredicate.model_validate(fields).initiator == fields["initiator"]
