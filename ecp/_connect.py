"""Connecting to Temporal, with one clear line when it cannot be reached."""

from __future__ import annotations

from temporalio.client import Client, Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.service import RPCError, TLSConfig

from ecp._settings import OtelExporter, Settings
from ecp.errors import EcpError
from ecp.workflows._search_attributes import ALL_KEYS

__all__ = [
    "SearchAttributesMissingError",
    "TemporalUnreachableError",
    "TlsFileError",
    "connect",
    "ensure_search_attributes",
    "tls_config",
]


class SearchAttributesMissingError(EcpError):
    """The namespace lacks ECP's search attributes, and they cannot be added from here."""

    code = "search_attributes_missing"


class TemporalUnreachableError(EcpError):
    """The Temporal frontend did not answer."""

    code = "temporal_unreachable"
    retryable = True


class TlsFileError(TemporalUnreachableError):
    """A configured TLS file cannot be read: the deployment's fault, not an outage.

    A kind of :class:`TemporalUnreachableError` (no connection can be made),
    but waiting does not mend it, so a worker starting up fails at once.
    """

    code = "tls_file_unreadable"
    retryable = False


def tls_config(settings: Settings) -> bool | TLSConfig:
    """The ``tls=`` argument for ``Client.connect`` from the TLS settings.

    Raises:
        TlsFileError: a configured certificate file cannot be read.
    """
    if not settings.uses_tls:
        return False
    if settings.tls_ca is None and settings.tls_cert is None and not settings.tls_server_name:
        return True  # system roots, as Temporal Cloud with an API key needs

    def read(path: object) -> bytes | None:
        if path is None:
            return None
        try:
            with open(str(path), "rb") as f:
                return f.read()
        except OSError as exc:
            raise TlsFileError(f"cannot read TLS file {path}: {exc}") from exc

    return TLSConfig(
        server_root_ca_cert=read(settings.tls_ca),
        client_cert=read(settings.tls_cert),
        client_private_key=read(settings.tls_key),
        domain=settings.tls_server_name,
    )


async def connect(settings: Settings, *, tracing: bool | None = None) -> Client:
    """Connect to the configured Temporal frontend.

    Args:
        settings: Address, namespace, TLS and API key.
        tracing: Install Temporal's OpenTelemetry tracing interceptor on the
            client (and so on every worker built on it). Defaults to whether
            an OTel exporter is configured.

    Raises:
        TemporalUnreachableError: nothing answers at the configured address.
        TlsFileError: a TLS file cannot be read.
    """
    if tracing is None:
        tracing = settings.otel_exporter is not OtelExporter.NONE
    # On the client, the interceptor is outermost on workers too: its
    # RunActivity span encloses the gate and the body.
    interceptors: list[Interceptor] = [TracingInterceptor()] if tracing else []
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.namespace,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            tls=tls_config(settings),
            interceptors=interceptors,
        )
    except (RuntimeError, RPCError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TemporalUnreachableError(
            f"cannot reach Temporal at {settings.temporal_address}: {first}"
        ) from exc


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register ECP's search attributes on a server that lacks them.

    A dev server started by ``ecp dev`` has them already; a reused or remote
    one may not, and then every upsert would fail the workflow task.

    Raises:
        SearchAttributesMissingError: they are missing and cannot be added
            from this client (the message gives the commands that add them).
    """
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    missing = {k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for k in ALL_KEYS}
    try:
        have = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        missing = {k: v for k, v in missing.items() if k not in have.custom_attributes}
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(search_attributes=missing, namespace=namespace)
            )
    except RPCError as exc:
        # No operator permission (Temporal Cloud, a locked-down cluster), or
        # no such namespace: refuse to start rather than let every governed
        # workflow task fail (and its submitter wait forever).
        commands = "; ".join(
            f"temporal operator search-attribute create --namespace {namespace} "
            f"--name {name} --type Keyword"
            for name in sorted(missing)
        )
        raise SearchAttributesMissingError(
            f"namespace {namespace!r} may lack ECP's search attributes "
            f"{', '.join(sorted(missing))} and they could not be registered from here "
            f"({exc.status.name}: {exc.message}); run: {commands}"
        ) from None
