"""Reading (not verifying) the grant an activity header carries."""

from __future__ import annotations

from temporalio.api.common.v1 import Header

from ecp.authority._canonical import parse_json_strict
from ecp.authority._dsse import DEFAULT_MAX_ENVELOPE_BYTES, Envelope
from ecp.authority.errors import AuthorityError

__all__ = ["GRANT_HEADER", "grant_claims", "grant_envelope", "grant_namespace"]

#: Must equal ``ecp.workflows._grant_header.GRANT_HEADER``; ``lineage`` does not
#: import workflow code.
GRANT_HEADER = "ecp-grant"


def grant_envelope(header: Header) -> bytes | None:
    """The grant envelope bytes in ``header``, if any."""
    p = header.fields.get(GRANT_HEADER)
    return None if p is None else bytes(p.data)


def grant_claims(envelope: bytes) -> dict[str, object] | None:
    """The grant's claims as JSON, unverified; ``None`` if unreadable.

    Never raises: history holds whatever bytes a workflow put in the header,
    and the lineage tools must report those, not crash on them. The envelope
    and its payload are read with the verifier's own strict parsers (DSSE
    envelope, either base64 alphabet, strict JSON), so a header the gate
    could not have accepted is unreadable here too, rather than read one way
    here and another way there.
    """
    try:
        env = Envelope.from_json(envelope, max_bytes=DEFAULT_MAX_ENVELOPE_BYTES)
        claims = parse_json_strict(env.payload)
    except AuthorityError:
        return None
    except (ValueError, TypeError, RecursionError):  # pragma: no cover - defence in depth
        # The parsers raise only AuthorityError (fuzzed); an audit must not
        # die of a bug in them either.
        return None
    return claims if isinstance(claims, dict) else None


def grant_namespace(header: Header) -> str | None:
    """The namespace a header's grant claims to be bound to, if readable."""
    env = grant_envelope(header)
    claims = grant_claims(env) if env is not None else None
    call = claims.get("call") if claims else None
    ns = call.get("namespace") if isinstance(call, dict) else None
    return ns if isinstance(ns, str) else None
