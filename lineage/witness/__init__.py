"""Witnesses: separate processes that cosign a log's checkpoints (C2SP tlog-witness).

A witness keeps its own key and, per log, the latest checkpoint it cosigned;
it cosigns a new one only with a consistency proof from that one, so a log
that rewrote its history cannot get its cosignature. ``ecp witness`` runs
one; :class:`WitnessClient` is what the log uses to ask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ecp._lazy import lazy_exports

if TYPE_CHECKING:
    from ecp.lineage.witness._client import WitnessClient as WitnessClient
    from ecp.lineage.witness._server import WitnessServer as WitnessServer
    from ecp.lineage.witness._state import WitnessState as WitnessState
    from ecp.lineage.witness._witness import Witness as Witness

__all__ = ["Witness", "WitnessClient", "WitnessServer", "WitnessState"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Witness": "ecp.lineage.witness._witness",
        "WitnessClient": "ecp.lineage.witness._client",
        "WitnessServer": "ecp.lineage.witness._server",
        "WitnessState": "ecp.lineage.witness._state",
    },
)
