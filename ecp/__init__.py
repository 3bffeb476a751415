"""ECP, the Execution Control Plane for Temporal: verify → authorize → execute → prove.

The public API; everything else lives in private modules (``_x.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp._runtime import build_plugin as build_plugin
    from ecp._runtime import run_workers as run_workers
    from ecp._settings import Role as Role
    from ecp._settings import Settings as Settings
    from ecp._settings import load_settings as load_settings
    from ecp.activities._governed import governed as governed
    from ecp.authority._verify import ExpectedCall as ExpectedCall
    from ecp.authority._verify import VerifiedGrant as VerifiedGrant
    from ecp.authority._verify import verify_grant as verify_grant
    from ecp.errors import EcpError as EcpError
    from ecp.lineage._crosscheck import cross_check as cross_check
    from ecp.lineage.ledger._ledger import Ledger as Ledger
    from ecp.lineage.ledger._receipt import Receipt as Receipt
    from ecp.lineage.ledger._receipt import verify_receipt as verify_receipt
    from ecp.workflows._governed import GovernedExecution as GovernedExecution
    from ecp.workflows._in_workflow import GovernedCallDenied as GovernedCallDenied
    from ecp.workflows._in_workflow import execute_governed as execute_governed
    from ecp.workflows._in_workflow import scope as scope
    from ecp.workflows._models import GovernedRequest as GovernedRequest
    from ecp.workflows._models import GovernedResult as GovernedResult
    from ecp.workflows._models import TaskQueues as TaskQueues
    from ecp.workflows._plugin import EcpPlugin as EcpPlugin
    from ecp.workflows._start import initiator_memo as initiator_memo
    from ecp.workflows._start import start_governed as start_governed

__all__ = [
    "EcpError",
    "EcpPlugin",
    "ExpectedCall",
    "GovernedCallDenied",
    "GovernedExecution",
    "GovernedRequest",
    "GovernedResult",
    "Ledger",
    "Receipt",
    "Role",
    "Settings",
    "TaskQueues",
    "VerifiedGrant",
    "build_plugin",
    "cross_check",
    "execute_governed",
    "governed",
    "initiator_memo",
    "load_settings",
    "run_workers",
    "scope",
    "start_governed",
    "verify_grant",
    "verify_receipt",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "EcpError": "ecp.errors",
        "EcpPlugin": "ecp.workflows._plugin",
        "ExpectedCall": "ecp.authority._verify",
        "GovernedExecution": "ecp.workflows._governed",
        "GovernedCallDenied": "ecp.workflows._in_workflow",
        "execute_governed": "ecp.workflows._in_workflow",
        "scope": "ecp.workflows._in_workflow",
        "initiator_memo": "ecp.workflows._start",
        "GovernedRequest": "ecp.workflows._models",
        "GovernedResult": "ecp.workflows._models",
        "Ledger": "ecp.lineage.ledger._ledger",
        "Receipt": "ecp.lineage.ledger._receipt",
        "Role": "ecp._settings",
        "Settings": "ecp._settings",
        "TaskQueues": "ecp.workflows._models",
        "VerifiedGrant": "ecp.authority._verify",
        "build_plugin": "ecp._runtime",
        "cross_check": "ecp.lineage._crosscheck",
        "governed": "ecp.activities._governed",
        "load_settings": "ecp._settings",
        "run_workers": "ecp._runtime",
        "start_governed": "ecp.workflows._start",
        "verify_grant": "ecp.authority._verify",
        "verify_receipt": "ecp.lineage.ledger._receipt",
    },
)
