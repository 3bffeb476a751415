"""The workers' ledger only takes evidence signed by a trusted worker key."""

from __future__ import annotations

from pathlib import Path

import pytest

from authority.canonical import digest_bytes
from authority.keys import Ed25519FileSigner
from ecp.keyring import init_keyring
from ecp.runtime import build_plugin
from ecp.settings import Role, Settings
from lineage.errors import EvidenceSignatureError
from lineage.evidence import build_statement, sign_evidence
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
