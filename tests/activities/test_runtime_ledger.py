"""The workers' ledger only takes evidence signed by a trusted worker key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecp._keyring import init_keyring
from ecp._runtime import build_plugin
from ecp._settings import Role, Settings
from ecp.authority._canonical import digest_bytes
from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._evidence import build_statement, sign_evidence
from ecp.lineage.ledger.errors import EvidenceSignatureError
from tests.lineage.support import make_predicate


def test_untrusted_evidence_is_refused(tmp_path: Path) -> None:
    keys = init_keyring(tmp_path / "keys")
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'ecp.db'}")
    _, ledger = build_plugin(settings, role=Role.ALL)
    statement = build_statement(
        make_predicate(1),
        arguments=digest_bytes(b"a"),
        result=digest_bytes(b"r"),
        grant=digest_bytes(b"g"),
    )
    try:
        with pytest.raises(EvidenceSignatureError):
            ledger.append(sign_evidence(statement, Ed25519FileSigner.generate()))
        # The executor's own key is trusted as a worker.
        ledger.append(sign_evidence(statement, Ed25519FileSigner.from_file(keys.worker)))
        assert ledger.head().size == 1
    finally:
        ledger.close()
