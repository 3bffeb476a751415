"""Fixtures: keys, and real witnesses (HTTP servers with their own SQLite state) in threads."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._ledger import DEFAULT_ORIGIN
from ecp.lineage.ledger._note import NoteVerifier
from ecp.lineage.witness._client import WitnessClient
from ecp.lineage.witness._server import WitnessServer
from ecp.lineage.witness._state import WitnessState
from ecp.lineage.witness._witness import Witness


@pytest.fixture(scope="session")
def worker() -> Ed25519FileSigner:
    return Ed25519FileSigner.generate()


@pytest.fixture(scope="session")
def log_signer() -> Ed25519FileSigner:
    return Ed25519FileSigner.generate()


@pytest.fixture
def log_vkey(log_signer: Ed25519FileSigner) -> str:
    return NoteVerifier.for_key(DEFAULT_ORIGIN, log_signer.public_key).vkey()


StartWitness = Callable[[str], tuple[WitnessServer, WitnessClient]]


@pytest.fixture
def start_witness(tmp_path: Path, log_vkey: str) -> Iterator[StartWitness]:
    """Start a witness named ``name`` that accepts the test log; stopped after the test."""
    servers: list[WitnessServer] = []

    def start(name: str) -> tuple[WitnessServer, WitnessClient]:
        directory = tmp_path / "witnesses" / name.replace("/", "_")
        state = (
            WitnessState(directory)
            if (directory / "witness.db").exists()
            else WitnessState.init(directory, name)
        )
        state.add_log(log_vkey)
        server = WitnessServer(("127.0.0.1", 0), Witness(state))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, WitnessClient(server.url, state.verifier)

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


GoBuild = Callable[[str], Path]
_GOPATH = Path("/usr/share/gocode")


@pytest.fixture(scope="session")
def go_build(tmp_path_factory: pytest.TempPathFactory) -> GoBuild:
    """Build ``tests/witness/<name>/main.go`` against Debian's golang.org/x/mod, offline.

    GOPATH mode over /usr/share/gocode (packages golang-go and
    golang-golang-x-mod-dev; scripts/system-packages.sh installs them). No
    Go fails the test rather than skipping it: the interop claim would be
    untested.
    """
    go = shutil.which("go")
    if go is None or not (_GOPATH / "src/golang.org/x/mod/sumdb/note").is_dir():
        pytest.fail(
            "Go and golang.org/x/mod are needed to check the log against Go's sumdb: "
            "apt-get install golang-go golang-golang-x-mod-dev (scripts/system-packages.sh)",
            pytrace=False,
        )
    out_dir = tmp_path_factory.mktemp("go")
    env = {
        **os.environ,
        "GO111MODULE": "off",  # GOPATH mode: the Debian package is the library
        "GOPATH": str(_GOPATH),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOCACHE": str(out_dir / "cache"),
    }

    def build(name: str) -> Path:
        out = out_dir / name
        if not out.exists():
            source = Path(__file__).parent / name / "main.go"
            subprocess.run([go, "build", "-o", str(out), str(source)], env=env, check=True)
        return out

    return build
