"""After execution: the ledger and the provenance graphs, and the cross-check joining them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.lineage._crosscheck import CrossCheckReport as CrossCheckReport
    from ecp.lineage._crosscheck import Finding as Finding
    from ecp.lineage._crosscheck import GovernanceStatus as GovernanceStatus
    from ecp.lineage._crosscheck import Violation as Violation
    from ecp.lineage._crosscheck import annotate_graph as annotate_graph
    from ecp.lineage._crosscheck import cross_check as cross_check

__all__ = [
    "CrossCheckReport",
    "Finding",
    "GovernanceStatus",
    "Violation",
    "annotate_graph",
    "cross_check",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CrossCheckReport": "ecp.lineage._crosscheck",
        "Finding": "ecp.lineage._crosscheck",
        "GovernanceStatus": "ecp.lineage._crosscheck",
        "Violation": "ecp.lineage._crosscheck",
        "annotate_graph": "ecp.lineage._crosscheck",
        "cross_check": "ecp.lineage._crosscheck",
    },
)
