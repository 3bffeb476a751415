"""Cedar policy bundles: allow, deny by default, forbid wins, approvals, validation, determinism."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ecp.authority._policy import (
    ApprovalRequirement,
    Decision,
    Effect,
    PolicyBundle,
    PolicyRequest,
)
from ecp.authority.errors import PolicyBundleError, PolicyEvaluationError
from tests.authority.support import EXAMPLE_BUNDLE


def payout(amount: int, *, initiator: str = "alice", currency: str = "EUR") -> PolicyRequest:
    return PolicyRequest(
        action="payout",
        initiator=initiator,
        arguments={"amount": amount, "currency": currency, "recipient": "acme"},
        purpose="invoice",
    )


def infra(env: str, claims: dict[str, object] | None = None) -> PolicyRequest:
    return PolicyRequest.model_validate(
        {
            "action": "change_infrastructure",
            "initiator": "bob",
            "arguments": {"target": "db", "environment": env, "change": "resize"},
            "purpose": "capacity",
            "environment": claims or {},
        }
    )


def copy_bundle(tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(EXAMPLE_BUNDLE, dst)
    return dst


def test_small_payout_by_operator_is_allowed(bundle: PolicyBundle) -> None:
    d = bundle.evaluate(payout(250))
    assert d.effect is Effect.ALLOW
    assert d.policy_ids == ("payout-small-by-operator",)
    assert d.scope is not None
    assert d.scope.max_attempts == 3
    assert d.scope.constraints == {"max_amount": 1000}
    assert d.policy_digest == bundle.digest
    assert d.request_digest == payout(250).digest()


def test_large_payout_needs_one_finance_approval(bundle: PolicyBundle) -> None:
    d = bundle.evaluate(payout(250_000))
    assert d.effect is Effect.ALLOW_AFTER_APPROVAL
    assert d.approval == ApprovalRequirement(role="finance", count=1, approvers=("carol", "dave"))
    assert d.reasons == ("payouts above 1000 need one finance approval",)


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (payout(250, initiator="eve"), "denied by default"),
        (payout(250, initiator="nobody"), "unknown to the policy bundle"),
        (
            PolicyRequest(action="delete_everything", initiator="alice", arguments={}),
            "does not exist",
        ),
        (
            PolicyRequest(action="payout", initiator="alice", arguments={"amount": "250"}),
            "failed to build request",
        ),
        (payout(250, initiator=""), "no initiator"),
        (infra("production"), "denied by default"),
        (infra("production", {"attested": False, "build_id": "b1"}), "denied by default"),
        (infra("production", {"attested": True}), "denied by default"),
    ],
    ids=[
        "no-permit",
        "unknown-initiator",
        "unknown-action",
        "ill-typed-args",
        "no-initiator",
        "prod-no-claims",
        "prod-not-attested",
        "prod-no-build-id",
    ],
)
def test_deny_by_default(bundle: PolicyBundle, request_: PolicyRequest, why: str) -> None:
    d = bundle.evaluate(request_)
    assert d.effect is Effect.DENY
    assert d.scope is None
    assert any(why in r for r in d.reasons), d.reasons


def test_forbid_overrides_permit(bundle: PolicyBundle) -> None:
    # The small-payout permit matches too; the currency forbid still wins.
    d = bundle.evaluate(payout(250, currency="JPY"))
    assert d.effect is Effect.DENY
    assert d.policy_ids == ("payout-currency-allowlist",)
    assert d.reasons == ("only EUR, USD and GBP payouts are supported",)


def test_production_change_needs_attested_environment(bundle: PolicyBundle) -> None:
    d = bundle.evaluate(infra("production", {"attested": True, "build_id": "build-42"}))
    assert d.effect is Effect.ALLOW
    assert d.policy_ids == ("infra-production-attested",)
    assert bundle.evaluate(infra("staging")).effect is Effect.ALLOW
    assert bundle.evaluate(infra("moon")).effect is Effect.DENY


def test_decisions_are_byte_identical(bundle: PolicyBundle) -> None:
    again = PolicyBundle.load(EXAMPLE_BUNDLE)
    for req in (payout(250), payout(5000), payout(1, currency="XXX"), infra("production")):
        first = bundle.evaluate(req).to_json()
        assert again.evaluate(req).to_json() == first
        assert (
            bundle.evaluate(PolicyRequest.model_validate_json(req.model_dump_json())).to_json()
            == first
        )
        assert Decision.from_json(first).to_json() == first
    assert bundle.evaluate(payout(250)).decision_id != bundle.evaluate(payout(251)).decision_id


def test_digest_covers_every_file(tmp_path: Path, bundle: PolicyBundle) -> None:
    path = copy_bundle(tmp_path)
    assert PolicyBundle.load(path).digest == bundle.digest
    for name in ("policies.cedar", "schema.cedarschema", "entities.json"):
        p = copy_bundle(tmp_path / name)
        f = p / name
        text = f.read_text()
        if name == "entities.json":
            # Entities are digested as JSON values: a new member matters, spacing does not.
            new = '{"uid": {"type": "User", "id": "zed"}, "attrs": {}, "parents": []},\n'
            f.write_text(text.replace("[\n", "[\n" + new, 1))
        else:
            f.write_text(text + "\n")
        assert PolicyBundle.load(p).digest != bundle.digest


def test_schema_violation_is_rejected_by_validate(tmp_path: Path) -> None:
    path = copy_bundle(tmp_path)
    (path / "policies.cedar").write_text(
        (path / "policies.cedar").read_text()
        + '\n@id("bad-type")\npermit (principal, action == Action::"payout", resource)'
        + ' when { context.arguments.amount == "lots" };\n'
    )
    b = PolicyBundle.load(path)
    with pytest.raises(PolicyBundleError, match=r"policies\.cedar.*'bad-type'"):
        b.validate()


@pytest.mark.parametrize(
    ("file", "content", "match"),
    [
        ("policies.cedar", "permit(", "policies.cedar"),
        ("schema.cedarschema", "entity User in", "schema.cedarschema"),
        ("entities.json", '{"not": "a list"}', "entities.json"),
        ("entities.json", '[{"uid": {"type": "User", "id": "a"}, "uid": {}}]', "entities.json"),
        (
            "policies.cedar",
            '@id("x") permit(principal, action, resource);\n'
            '@id("x") forbid(principal, action, resource);',
            "share @id",
        ),
        (
            "policies.cedar",
            '@id("x") @max_attempts("0") permit(principal, action, resource);',
            "max_attempts",
        ),
        (
            "policies.cedar",
            '@id("x") @constraints("[1]") permit(principal, action, resource);',
            "constraints",
        ),
        (
            "policies.cedar",
            '@id("x") @approvals_required("2") permit(principal, action, resource);',
            "approval_role",
        ),
    ],
    ids=[
        "policy-syntax",
        "schema-syntax",
        "entities-not-list",
        "entities-dup-key",
        "dup-id",
        "bad-max-attempts",
        "bad-constraints",
        "count-without-role",
    ],
)
def test_bad_bundles_name_the_file(tmp_path: Path, file: str, content: str, match: str) -> None:
    path = copy_bundle(tmp_path)
    (path / file).write_text(content)
    with pytest.raises(PolicyBundleError, match=match):
        PolicyBundle.load(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyBundleError, match="not a policy bundle directory"):
        PolicyBundle.load(tmp_path / "nope")
    path = copy_bundle(tmp_path)
    (path / "entities.json").unlink()
    with pytest.raises(PolicyBundleError, match=r"entities\.json: missing"):
        PolicyBundle.load(path)


def test_role_too_small_for_threshold(tmp_path: Path) -> None:
    path = copy_bundle(tmp_path)
    text = (
        (path / "policies.cedar")
        .read_text()
        .replace('@approvals_required("1")', '@approvals_required("3")')
    )
    (path / "policies.cedar").write_text(text)
    with pytest.raises(PolicyBundleError, match="needs 3 approvals"):
        PolicyBundle.load(path).validate()


def test_strictest_permit_wins_and_disagreeing_roles_deny(tmp_path: Path) -> None:
    path = copy_bundle(tmp_path)
    extra = (
        '\n@id("ops-approval") @approval_role("operators") @approvals_required("2")\n'
        'permit (principal in Group::"operators", action == Action::"payout", resource)'
        " when { context.arguments.amount > 100000 };\n"
        '\n@id("plain") @max_attempts("5")\n'
        'permit (principal in Group::"operators", action == Action::"payout", resource)'
        " when { context.arguments.amount == 5000 };\n"
    )
    (path / "policies.cedar").write_text((path / "policies.cedar").read_text() + extra)
    b = PolicyBundle.load(path)
    b.validate()
    both = b.evaluate(payout(5000))
    # A plain permit matching alongside an approval permit does not waive the approval.
    assert both.effect is Effect.ALLOW_AFTER_APPROVAL
    assert both.scope is not None
    assert both.scope.max_attempts == 3
    clash = b.evaluate(payout(200_000))
    assert clash.effect is Effect.DENY
    assert "different roles" in clash.reasons[0]


def test_json_schema_bundles_load(tmp_path: Path) -> None:
    path = tmp_path / "b"
    path.mkdir()
    (path / "policies.cedar").write_text(
        '@id("all") permit(principal, action == Action::"ping", resource);'
    )
    (path / "schema.cedarschema.json").write_text(
        '{"": {"entityTypes": {"User": {}, "Activity": {}}, "actions": {"ping": {"appliesTo":'
        ' {"principalTypes": ["User"], "resourceTypes": ["Activity"], "context": {"type": "Record",'
        ' "attributes": {"arguments": {"type": "Record", "attributes": {}},'
        ' "purpose": {"type": "String"},'
        ' "environment": {"type": "Record", "attributes": {}}}}}}}}}'
    )
    (path / "entities.json").write_text("[]")
    b = PolicyBundle.load(path)
    b.validate()
    d = b.evaluate(PolicyRequest(action="ping", initiator="x", arguments={}))
    assert d.effect is Effect.ALLOW
    assert d.scope is not None
    assert d.scope.max_attempts == 1


def test_decision_from_json_rejects_garbage() -> None:
    with pytest.raises(PolicyEvaluationError):
        Decision.from_json(b'{"effect": "allow"}')
