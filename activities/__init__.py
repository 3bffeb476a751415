"""Execution: the gate and the governance activities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.activities._artifact_check import VerifiedArtifact as VerifiedArtifact
    from ecp.activities._artifact_check import artifact as artifact
    from ecp.activities._artifact_check import declare_output as declare_output
    from ecp.activities._authority_side import AuthorityActivities as AuthorityActivities
    from ecp.activities._control_watch import ControlWatch as ControlWatch
    from ecp.activities._evidence_sink import LedgerEvidenceSink as LedgerEvidenceSink
    from ecp.activities._executor_side import ExecutorActivities as ExecutorActivities
    from ecp.activities._gate import GateConfig as GateConfig
    from ecp.activities._gate import GateInterceptor as GateInterceptor
    from ecp.activities._gate import MissingGrantError as MissingGrantError
    from ecp.activities._gate import RefusingGate as RefusingGate
    from ecp.activities._governed import GateMissingError as GateMissingError
    from ecp.activities._governed import governed as governed
    from ecp.activities._governed import is_governed as is_governed
    from ecp.activities._prove import ProveActivities as ProveActivities

__all__ = [
    "AuthorityActivities",
    "ControlWatch",
    "ExecutorActivities",
    "GateConfig",
    "GateInterceptor",
    "GateMissingError",
    "LedgerEvidenceSink",
    "MissingGrantError",
    "ProveActivities",
    "RefusingGate",
    "VerifiedArtifact",
    "artifact",
    "declare_output",
    "governed",
    "is_governed",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "VerifiedArtifact": "ecp.activities._artifact_check",
        "artifact": "ecp.activities._artifact_check",
        "declare_output": "ecp.activities._artifact_check",
        "AuthorityActivities": "ecp.activities._authority_side",
        "ControlWatch": "ecp.activities._control_watch",
        "ExecutorActivities": "ecp.activities._executor_side",
        "GateConfig": "ecp.activities._gate",
        "GateInterceptor": "ecp.activities._gate",
        "GateMissingError": "ecp.activities._governed",
        "LedgerEvidenceSink": "ecp.activities._evidence_sink",
        "MissingGrantError": "ecp.activities._gate",
        "ProveActivities": "ecp.activities._prove",
        "RefusingGate": "ecp.activities._gate",
        "governed": "ecp.activities._governed",
        "is_governed": "ecp.activities._governed",
    },
)
