"""tlog-cosignature/v1: the wire format against the spec's example, signing, k-of-n policies."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from ecp.authority._keys import Ed25519FileSigner
from ecp.lineage.ledger._checkpoint import Checkpoint
from ecp.lineage.ledger._cosignature import (
    WitnessPolicy,
    add_cosignatures,
    cosign,
    cosignatures,
    cosigned_message,
    witness_verifier,
)
from ecp.lineage.ledger._note import (
    NoteKeyType,
    NoteSignature,
    NoteVerifier,
    note_key_id,
    parse_note,
)
from ecp.lineage.ledger.errors import NoteSignatureError, VerifierKeyError, WitnessQuorumError

# The example of c2sp.org/tlog-cosignature: a checkpoint with a log signature
# and one Ed25519 cosignature by witness.example.com/w1.
SPEC_EXAMPLE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
    "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrD"
    "JsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
# The spec's signed-message example for that cosignature.
SPEC_MESSAGE = (
    "cosignature/v1\n"
    "time 1679315147\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

BODY = Checkpoint("ecp.local/ledger", 5, bytes(range(32))).to_text()


def test_spec_example_cosignature_layout() -> None:
    note = parse_note(SPEC_EXAMPLE)
    cosig = note.signatures[1]
    assert cosig.name == "witness.example.com/w1"
    # key id (4) ‖ timestamp (8, big-endian) ‖ Ed25519 signature (64)
    assert len(cosig.signature) == 8 + 64
    (timestamp,) = struct.unpack(">Q", cosig.signature[:8])
    assert timestamp == 1679315147
    assert cosigned_message(note.text, timestamp) == SPEC_MESSAGE.encode()


def test_key_id_is_sha256_of_name_newline_type_0x04_key() -> None:
    w = Ed25519FileSigner.generate()
    v = witness_verifier("witness.example/w1", w.public_key)
    raw = v.vkey().split("+", 2)[2]
    assert base64.b64decode(raw)[0] == 0x04
    expected = hashlib.sha256(b"witness.example/w1\n\x04" + base64.b64decode(raw)[1:]).digest()[:4]
    assert v.key_id == int.from_bytes(expected, "big")
    assert v.key_id == note_key_id(
        "witness.example/w1", NoteKeyType.COSIGNATURE_V1, base64.b64decode(raw)[1:]
    )


def test_cosign_round_trip_and_tamper() -> None:
    w = Ed25519FileSigner.generate()
    v = witness_verifier("witness.example/w1", w.public_key)
    sig = cosign(BODY, w, v.name, 1_700_000_000)
    log = Ed25519FileSigner.generate()
    note = add_cosignatures(Checkpoint.parse(BODY).sign(log).note, [sig])
    [found] = cosignatures(note, [v])
    assert found.timestamp == 1_700_000_000
    # The timestamp is signed: moving it breaks the cosignature.
    moved = NoteSignature(sig.name, sig.key_id, struct.pack(">Q", 1) + sig.signature[8:])
    forged = add_cosignatures(Checkpoint.parse(BODY).sign(log).note, [moved])
    with pytest.raises(NoteSignatureError):
        cosignatures(forged, [v])
    # A cosignature of another checkpoint does not carry over.
    other = Checkpoint("ecp.local/ledger", 6, bytes(32)).to_text()
    stolen = NoteSignature(sig.name, sig.key_id, cosign(other, w, v.name, 5).signature)
    with pytest.raises(NoteSignatureError):
        cosignatures(add_cosignatures(Checkpoint.parse(BODY).sign(log).note, [stolen]), [v])


def test_policy_counts_distinct_trusted_witnesses() -> None:
    log = Ed25519FileSigner.generate()
    ws = [Ed25519FileSigner.generate() for _ in range(3)]
    vs = [witness_verifier(f"w{i}.example", k.public_key) for i, k in enumerate(ws)]
    base = Checkpoint.parse(BODY).sign(log).note
    two = add_cosignatures(base, [cosign(BODY, ws[i], vs[i].name, 10) for i in (0, 2)])
    assert len(WitnessPolicy(tuple(vs), 2).check(two)) == 2
    with pytest.raises(WitnessQuorumError):
        WitnessPolicy(tuple(vs), 3).check(two)
    with pytest.raises(WitnessQuorumError):
        WitnessPolicy(tuple(vs), 1).check(base)  # unwitnessed
    # Cosignatures by an untrusted witness are ignored, not counted.
    stranger = Ed25519FileSigner.generate()
    odd = add_cosignatures(base, [cosign(BODY, stranger, "w0.example", 10)])
    with pytest.raises(WitnessQuorumError):
        WitnessPolicy(tuple(vs), 1).check(odd)
    with pytest.raises(WitnessQuorumError):
        WitnessPolicy(tuple(vs), 4)
    with pytest.raises(VerifierKeyError):  # a log key is no witness key
        WitnessPolicy.from_vkeys([NoteVerifier.for_key("log", log.public_key).vkey()])
