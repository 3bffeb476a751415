"""The health page shows each configured witness and the age of its latest cosignature."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ecp._keyring import init_keyring
from ecp._settings import Settings
from ecp.authority._keys import Ed25519FileSigner
from ecp.console import create_app
from ecp.lineage.witness._client import WitnessClient
from tests.console.conftest import free_port
from tests.witness.conftest import StartWitness, log_vkey, start_witness  # noqa: F401
from tests.witness.support import build_log, rewrite_log

WORKER = Ed25519FileSigner.generate()
LOG = Ed25519FileSigner.generate()


@pytest.fixture
def log_signer() -> Ed25519FileSigner:
    return LOG


def test_health_shows_each_witness(tmp_path: Path, start_witness: StartWitness) -> None:  # noqa: F811
    server, up = start_witness("w1.example/witness")
    _, spare = start_witness("w2.example/witness")
    down = WitnessClient(f"http://127.0.0.1:{free_port()}", spare.verifier, timeout=2.0)
    db = tmp_path / "log.db"
    build_log(db, WORKER, LOG, [up, down]).close()
    init_keyring(tmp_path / "keys")
    settings = Settings(
        home=tmp_path,
        temporal_address=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite:///{db}",
        witnesses=",".join(f"{c.verifier.vkey()}@{c.url}" for c in (up, down)),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        items = {i["name"]: i for i in http.get("/api/health").json()["items"]}
        w1, w2 = items["witness w1.example/witness"], items["witness w2.example/witness"]
        assert w1["status"] == "green"
        assert "latest cosignature" in w1["reason"]
        assert w1["details"]["cosignedSize"] == 10
        assert w1["details"]["ageSeconds"] >= 0
        assert w2["status"] == "amber"
        assert "unwitnessed" in w2["reason"]
        page = http.get("/health").text
        assert 'data-item="witness w1.example/witness"' in page
    # The operator rewrites the log; the witness refuses, and the page says so in red.
    rewrite_log(db, WORKER, LOG, [up]).close()
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        items = {i["name"]: i for i in http.get("/api/health").json()["items"]}
        assert items["witness w1.example/witness"]["status"] == "red"
        assert "Refused" in items["witness w1.example/witness"]["reason"]
    assert server.witness.state.head("ecp.local/ledger") is not None
