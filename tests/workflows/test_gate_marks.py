"""Only the gate's own refusals count as denials; a body's error is a failure
even when its type happens to start with ``ecp.``."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from ecp.activities._contracts import GATE_MARK
from ecp.workflows._governed import from_gate


def test_gate_refusals_are_marked_and_body_errors_are_not() -> None:
    assert from_gate(ApplicationError("denied", GATE_MARK, type="ecp.key_unknown"))
    assert not from_gate(ApplicationError("body failed", type="ecp.custom"))
    assert not from_gate(ApplicationError("body failed", "other", type="ecp.custom"))
    assert not from_gate(RuntimeError("not an application error"))
