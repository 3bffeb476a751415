"""Connecting to Temporal, with one clear line when it cannot be reached."""

from __future__ import annotations

import asyncio
import re

from temporalio.client import Client, Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.service import RPCError, RPCStatusCode, TLSConfig

from ecp._settings import OtelExporter, Settings
from ecp.errors import EcpError
from ecp.workflows._search_attributes import ALL_KEYS

__all__ = [
    "FINAL_STATUSES",
    "SearchAttributesMissingError",
    "TemporalRefusedError",
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


class TemporalRefusedError(TemporalUnreachableError):
    """What answers at Temporal's address refused for a reason waiting does not mend.

    A wrong or missing API key or client certificate, no permission, no such
    namespace, something that is not a Temporal frontend (a proxy answering
    404), or a TLS handshake that cannot succeed (TLS against a plaintext
    frontend, an untrusted server certificate). A kind of
    :class:`TemporalUnreachableError`, but a worker starting up fails at once.
    """

    code = "temporal_refused"
    retryable = False


#: gRPC statuses that are Temporal's (or a proxy's) final answer.
FINAL_STATUSES = frozenset(
    {
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.NOT_FOUND,
        RPCStatusCode.UNIMPLEMENTED,
    }
)
#: ``Client.connect`` reports every failure, whatever the status of its
#: ``get_system_info`` call, as a ``RuntimeError`` carrying the Rust core's
#: text, e.g. ``... call error after connection: Status { code: Unauthenticated,
#: message: ...``. The status is read back from it.
_STATUS_IN_TEXT = re.compile(r"Status \{ code: ([A-Za-z]+)")
#: A TLS handshake that failed (rustls reports it as an ``InvalidData`` I/O
#: error: a plaintext server's reply, a certificate it does not trust, an
#: alert from the server). It fails the same way on every try.
_TLS_FAILURES = ("kind: InvalidData", "InvalidCertificate", "invalid peer certificate")


def _is_final(exc: BaseException) -> bool:
    """Whether a failed connect is a refusal that waiting does not mend."""
    if isinstance(exc, RPCError):
        return exc.status in FINAL_STATUSES
    text = str(exc)
    if any(marker in text for marker in _TLS_FAILURES):
        return True
    found = _STATUS_IN_TEXT.search(text)
    if found is None:
        return False
    # Unauthenticated -> UNAUTHENTICATED, PermissionDenied -> PERMISSION_DENIED.
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", found.group(1)).upper()
    status = RPCStatusCode.__members__.get(name)
    return status in FINAL_STATUSES


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


async def connect(
    settings: Settings, *, tracing: bool | None = None, timeout: float | None = None
) -> Client:
    """Connect to the configured Temporal frontend.

    Args:
        settings: Address, namespace, TLS and API key.
        tracing: Install Temporal's OpenTelemetry tracing interceptor on the
            client (and so on every worker built on it). Defaults to whether
            an OTel exporter is configured.
        timeout: Give up after this many seconds (the SDK's own bound on a
            listener that accepts and never answers is about 30 s).

    Raises:
        TemporalUnreachableError: nothing answers at the configured address
            (within ``timeout``).
        TemporalRefusedError: what answers there refused for good (see it).
        TlsFileError: a TLS file cannot be read.
    """
    if tracing is None:
        tracing = settings.otel_exporter is not OtelExporter.NONE
    # On the client, the interceptor is outermost on workers too: its
    # RunActivity span encloses the gate and the body.
    interceptors: list[Interceptor] = [TracingInterceptor()] if tracing else []
    tls = tls_config(settings)
    try:
        return await asyncio.wait_for(
            Client.connect(
                settings.temporal_address,
                namespace=settings.namespace,
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                tls=tls,
                interceptors=interceptors,
            ),
            timeout,
        )
    except TimeoutError:
        within = f"no answer within {timeout:.1f} s" if timeout is not None else "timed out"
        raise TemporalUnreachableError(
            f"cannot reach Temporal at {settings.temporal_address}: {within}"
        ) from None
    except (RuntimeError, RPCError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        error = TemporalRefusedError if _is_final(exc) else TemporalUnreachableError
        raise error(f"cannot reach Temporal at {settings.temporal_address}: {first}") from exc


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
