"""Reading (not verifying) the grant an activity header carries."""

from __future__ import annotations

import base64
import binascii
import json

from temporalio.api.common.v1 import Header

__all__ = ["GRANT_HEADER", "grant_claims", "grant_envelope", "grant_namespace"]

#: Must equal ``ecp.workflows._grant_header.GRANT_HEADER``; ``lineage`` does not
#: import workflow code.
GRANT_HEADER = "ecp-grant"


def grant_envelope(header: Header) -> bytes | None:
    """The grant envelope bytes in ``header``, if any."""
    p = header.fields.get(GRANT_HEADER)
    return None if p is None else bytes(p.data)


def grant_claims(envelope: bytes) -> dict[str, object] | None:
    """The grant's claims as JSON, unverified; ``None`` if unreadable."""
    try:
        env = json.loads(envelope)
        payload = base64.b64decode(env["payload"], altchars=None, validate=False)
        claims = json.loads(payload)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def grant_namespace(header: Header) -> str | None:
    """The namespace a header's grant claims to be bound to, if readable."""
    env = grant_envelope(header)
    claims = grant_claims(env) if env is not None else None
    call = claims.get("call") if claims else None
    ns = call.get("namespace") if isinstance(call, dict) else None
    return ns if isinstance(ns, str) else None
