"""Regressions for review findings: inputs that used to escape the error family."""

from __future__ import annotations

import json

import pytest
from temporalio.converter import default as default_converter

from ecp.authority._calldigest import canonical_json_exact, digest_values
from ecp.authority._canonical import canonical_json, parse_json_strict
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.authority.errors import CanonicalizationError, TrustStoreError


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_deep_nesting_is_a_canonicalisation_error() -> None:
    deep = _nested(5000)
    with pytest.raises(CanonicalizationError):
        canonical_json(deep)
    with pytest.raises(CanonicalizationError):
        canonical_json_exact(deep)
    with pytest.raises(CanonicalizationError):
        digest_values([deep], default_converter().payload_converter)


def test_huge_integer_literal_is_a_canonicalisation_error() -> None:
    with pytest.raises(CanonicalizationError):
        parse_json_strict(b'{"n": ' + b"9" * 5000 + b"}")


def test_trust_store_refuses_a_repeated_key() -> None:
    # A second, clean entry must not silently undo the first one's revocation.
    signer = Ed25519FileSigner.generate()
    entry = TrustedKey.create(signer.public_key, {KeyRole.AUTHORITY})
    doc = json.loads(TrustStore([entry]).to_json())
    revoked = dict(doc["keys"][0], revoked_at="2030-01-01T00:00:00Z")
    doc["keys"] = [revoked, doc["keys"][0]]
    with pytest.raises(TrustStoreError, match="repeats key"):
        TrustStore.from_json(json.dumps(doc).encode(), "test")
