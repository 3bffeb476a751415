"""Connecting to Temporal, with one clear line when it cannot be reached."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.service import RPCError

from ecp.errors import EcpError
from ecp.settings import Settings
from workflows.search_attributes import ALL_KEYS

__all__ = ["TemporalUnreachableError", "connect", "ensure_search_attributes"]


class TemporalUnreachableError(EcpError):
    """The Temporal frontend did not answer."""


async def connect(settings: Settings) -> Client:
    """Connect to the configured Temporal frontend.

    Raises:
        TemporalUnreachableError: nothing answers at the configured address.
    """
    try:
        return await Client.connect(settings.temporal_address, namespace=settings.namespace)
    except (RuntimeError, RPCError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TemporalUnreachableError(
            f"cannot reach Temporal at {settings.temporal_address}: {first}"
        ) from exc


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register ECP's search attributes on a server that lacks them.

    A dev server started by ``ecp dev`` has them already; a reused or remote
    one may not, and then every upsert would fail the workflow task.
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for k in ALL_KEYS
        if k.name not in have.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
        )
