"""C2SP signed-note and tlog-checkpoint: every case of tests/vectors/signed_note.json."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._checkpoint import Checkpoint, open_checkpoint
from ecp.lineage.ledger._note import NoteVerifier, parse_note, sign_note, verify_note
from ecp.lineage.ledger.errors import (
    MalformedCheckpointError,
    MalformedNoteError,
    NoteError,
    NoteSignatureError,
    UnverifiedNoteError,
    VerifierKeyError,
)
from tests.vectors import load_vector_file

V = load_vector_file("signed_note.json")
assert isinstance(V, dict)


@pytest.mark.parametrize("key", V["verifier_keys"], ids=lambda k: k["vkey"].split("+")[0])
def test_verifier_keys_parse_and_round_trip(key: dict) -> None:
    assert NoteVerifier.from_vkey(key["vkey"]).vkey() == key["vkey"]


@pytest.mark.parametrize("key", V["invalid_verifier_keys"], ids=lambda k: k["why"])
def test_invalid_verifier_keys_are_rejected(key: dict) -> None:
    with pytest.raises(VerifierKeyError):
        NoteVerifier.from_vkey(key["vkey"])


@pytest.mark.parametrize("case", V["notes"], ids=lambda c: c["id"])
def test_note_case(case: dict) -> None:
    data = bytes.fromhex(case["note_hex"]) if "note_hex" in case else case["note"]
    verifiers = [NoteVerifier.from_vkey(k) for k in case["trusted"]]
    if case["expect"] == "reject":
        with pytest.raises(NoteError):
            verify_note(data, verifiers)
        return
    note = verify_note(data, verifiers)
    assert list(note.verified_by) == case["verified_by"]
    assert [s.name for s in note.unverified] == case.get("unverified", [])
    if "text" in case:
        assert note.text == case["text"]
    if "checkpoint" in case:
        cp = Checkpoint.parse(note.text)
        want = case["checkpoint"]
        assert (cp.origin, cp.size) == (want["origin"], want["size"])
        assert base64.b64encode(cp.root_hash).decode() == want["root_b64"]
        assert cp.to_text() == note.text


def test_specific_note_errors() -> None:
    by_id = {c["id"]: c for c in V["notes"]}
    peter = [NoteVerifier.from_vkey(by_id["gomod-peter"]["trusted"][0])]
    with pytest.raises(NoteSignatureError):
        verify_note(by_id["gomod-corrupted-sig"]["note"], peter)
    with pytest.raises(UnverifiedNoteError):
        verify_note(by_id["gomod-no-trusted-key"]["note"], [])
    with pytest.raises(MalformedNoteError):
        parse_note(by_id["gomod-malformed-trailing-line"]["note"])


def test_go_skey_signing_reproduces_the_note() -> None:
    key = V["verifier_keys"][0]
    seed = base64.b64decode(key["skey"].split("+", 4)[4])[1:]
    signer = Ed25519FileSigner(Ed25519PrivateKey.from_private_bytes(seed))
    case = V["notes"][0]
    assert sign_note(case["text"], signer, "PeterNeumann") == case["note"]


def test_rekor_checkpoint_opens_with_log_key_and_witnesses() -> None:
    case = next(c for c in V["notes"] if c["id"].startswith("rekor-v2"))
    log, *witnesses = (NoteVerifier.from_vkey(k) for k in case["trusted"])
    cp, note = open_checkpoint(case["note"], log, witnesses=tuple(witnesses))
    assert cp.size == 4026479
    assert len(note.verified_by) == 4
    # A real inclusion proof from merkle.json verifies against this checkpoint's root.
    rekor = load_vector_file("merkle.json")["real_world_inclusion"][0]  # type: ignore[index]
    assert cp.root_hash.hex() == rekor["root"]


def test_checkpoint_round_trip_and_malformed_bodies() -> None:
    signer = Ed25519FileSigner.generate()
    cp = Checkpoint("example.com/log", 7, b"\x01" * 32, ("ext line",))
    signed = cp.sign(signer)
    got, _ = open_checkpoint(signed.note, signer.public_key)
    assert got == cp
    for bad in [
        "origin\n07\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",
        "origin\n-1\n" + base64.b64encode(b"\x00" * 32).decode() + "\n",
        "origin\n1\n" + base64.b64encode(b"\x00" * 31).decode() + "\n",
        "origin\n1\nnot base64!\n",
        "origin\n1\n",
        "origin\n1\n" + base64.b64encode(b"\x00" * 32).decode(),
    ]:
        with pytest.raises(MalformedCheckpointError):
            Checkpoint.parse(bad)
    other = Ed25519FileSigner.generate()
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(signed.note, other.public_key)
