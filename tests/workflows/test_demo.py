"""`ecp demo` end to end, as the README's main command runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.local_ecp import free_port, listening, spawned_ecp

# Starts its own dev server through the ecp command line.
pytestmark = pytest.mark.temporal


def test_demo_runs_every_scenario_and_audits_it(tmp_path: Path) -> None:
    port = free_port()
    with spawned_ecp(tmp_path, port, "demo") as proc:
        stdout, stderr = proc.communicate(timeout=240)
    out = stdout
    assert proc.returncode == 0, out + stderr
    for scenario in (
        "small payout",
        "large payout, approved",
        "denied by policy",
        "forged grant at the gate",
        "tampered model at the gate",
    ):
        assert f"✔ as the policy says  {scenario}" in out
    assert "✘" not in out
    assert out.count("✔ consistent") == 5
    assert "ecp.key_unknown" in out
    # The tampered model: the report names the approved digest and the one found.
    assert "gate refused the model: expected sha256:" in out
    assert ", found sha256:" in out
    # Its keys, ledger and lineage exports are where it says, and the server is gone.
    assert (tmp_path / "keys" / "truststore.json").exists()
    assert len(list((tmp_path / "lineage").glob("*.prov.json"))) == 5
    assert not listening(port)
