"""The public API is pinned: a name added or removed here is a deliberate change.

Modelled on temporalio's own exports tests: each package's ``__all__`` is
compared with the list below, and every name must resolve to the object the
private module defines.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

EXPORTS: dict[str, list[str]] = {
    "ecp": [
        "EcpError",
        "EcpPlugin",
        "ExpectedCall",
        "GovernedCallDenied",
        "GovernedExecution",
        "GovernedRequest",
        "GovernedResult",
        "Ledger",
        "Receipt",
        "Role",
        "Settings",
        "TaskQueues",
        "VerifiedGrant",
        "build_plugin",
        "cross_check",
        "execute_governed",
        "scope",
        "governed",
        "initiator_memo",
        "load_settings",
        "run_workers",
        "start_governed",
        "verify_grant",
        "verify_receipt",
    ],
    "ecp.authority": [
        "Approval",
        "ArtifactRef",
        "AuthorityError",
        "CallBinding",
        "Clock",
        "ControlState",
        "Decision",
        "Ed25519FileSigner",
        "Effect",
        "Envelope",
        "EnvironmentAttestation",
        "ExpectedCall",
        "FixedClock",
        "Grant",
        "GrantScope",
        "InMemoryControlLog",
        "InMemoryReplayGuard",
        "KeyId",
        "KeyRole",
        "PolicyBundle",
        "PolicyRequest",
        "ReplayGuard",
        "Signer",
        "SqlControlLog",
        "SqlReplayGuard",
        "TrustStore",
        "TrustedKey",
        "VerificationError",
        "VerifiedApproval",
        "VerifiedAttestation",
        "VerifiedGrant",
        "canonical_json",
        "describe_directory",
        "describe_file",
        "describe_image",
        "digest_values",
        "generate_private_key",
        "issue_control",
        "issue_grant",
        "key_id_for",
        "load_private_key",
        "load_public_key",
        "measure_environment",
        "sign_approval",
        "sign_attestation",
        "sign_envelope",
        "system_clock",
        "verify_approvals",
        "verify_attestation",
        "verify_envelope",
        "verify_grant",
        "write_private_key",
        "write_public_key",
    ],
    "ecp.activities": [
        "AuthorityActivities",
        "ControlWatch",
        "ExecutorActivities",
        "GateConfig",
        "GateInterceptor",
        "GateMissingError",
        "LedgerEvidenceSink",
        "MissingGrantError",
        "ProveActivities",
        "RefusingGate",
        "VerifiedArtifact",
        "artifact",
        "declare_output",
        "governed",
        "is_governed",
    ],
    "ecp.workflows": [
        "INITIATOR_MEMO",
        "ApprovalAck",
        "EcpPlugin",
        "GovernedCallDenied",
        "GovernedCallFailed",
        "GovernedExecution",
        "GovernedRequest",
        "GovernedResult",
        "GrantHeaderInterceptor",
        "ScopeDenied",
        "TaskQueues",
        "execute_governed",
        "initiator_memo",
        "sandbox_runner",
        "scope",
        "start_governed",
    ],
    "ecp.lineage": [
        "CrossCheckReport",
        "Finding",
        "GovernanceStatus",
        "Violation",
        "annotate_graph",
        "cross_check",
    ],
    "ecp.lineage.ledger": [
        "ACCEPT_UNVERIFIED",
        "AppendResult",
        "Checkpoint",
        "Evidence",
        "Ledger",
        "LedgerError",
        "LineageError",
        "Note",
        "NoteVerifier",
        "Receipt",
        "SignedCheckpoint",
        "VerifiedReceipt",
        "VerifyReport",
        "WitnessPolicy",
        "consistency_proof",
        "inclusion_proof",
        "leaf_hash",
        "open_checkpoint",
        "parse_evidence",
        "parse_note",
        "sign_evidence",
        "sign_note",
        "verify_consistency",
        "verify_evidence_signature",
        "verify_inclusion",
        "verify_note",
        "verify_receipt",
    ],
    "ecp.lineage.witness": [
        "Witness",
        "WitnessClient",
        "WitnessServer",
        "WitnessState",
    ],
    "ecp.lineage.graph": [
        "ExportFormat",
        "LineageGraphError",
        "NodeKind",
        "RunHistory",
        "build_graph",
        "export_graph",
        "fetch_histories",
        "load_history_file",
        "load_history_json",
        "render_graph",
    ],
}


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_exports_are_pinned(package: str) -> None:
    mod = importlib.import_module(package)
    assert sorted(mod.__all__) == sorted(EXPORTS[package])
    assert sorted(dir(mod)) == sorted(EXPORTS[package])


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_every_export_resolves_to_its_definition(package: str) -> None:
    mod = importlib.import_module(package)
    for name in mod.__all__:
        obj = getattr(mod, name)
        assert obj is not None, name
        origin = getattr(obj, "__module__", None)
        if origin is not None and origin.startswith("ecp."):
            # Re-exported from a private module, never redefined.
            assert getattr(importlib.import_module(origin), name) is obj, (package, name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        getattr(mod, "no_such_name")  # noqa: B009


def test_importing_the_offline_parts_pulls_in_no_temporal_or_database() -> None:
    # An auditor verifying a receipt offline needs neither Temporal nor SQL.
    code = (
        "import sys, ecp, ecp.lineage.ledger as L, ecp.errors, ecp._wire;"
        "L.verify_receipt; L.parse_note; ecp.EcpError;"
        "bad = [m for m in ('temporalio', 'sqlalchemy', 'psycopg') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_wire_strings_module_imports_nothing_heavy() -> None:
    code = "import sys, ecp._wire; print('temporalio' in sys.modules, 'sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
