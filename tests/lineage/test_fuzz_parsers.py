"""Bounded fuzzing of every lineage parser of untrusted input.

Receipts, signed notes and checkpoints, verifier keys, evidence envelopes and
the grant headers the lineage tools read out of history. A parser may raise
only its typed error family (:class:`~ecp.lineage.ledger.errors.LineageError`
subclasses); reading a grant header raises nothing at all. Strategies are
shared with ``tests/authority/test_fuzz_parsers.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.api.common.v1 import Header

from ecp.authority._dsse import Envelope, sign_envelope
from ecp.authority._intoto import INTOTO_PAYLOAD_TYPE
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore
from ecp.lineage.graph._grant_header import GRANT_HEADER, grant_claims, grant_namespace
from ecp.lineage.ledger._checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint
from ecp.lineage.ledger._evidence import Evidence, parse_evidence, verify_evidence_signature
from ecp.lineage.ledger._merkle import InMemoryTree, leaf_hash
from ecp.lineage.ledger._note import NoteVerifier, parse_note, sign_note, verify_note
from ecp.lineage.ledger._receipt import Receipt, entry_leaf, verify_receipt
from ecp.lineage.ledger.errors import (
    EvidenceSignatureError,
    LineageError,
    MalformedCheckpointError,
    MalformedEvidenceError,
    MalformedNoteError,
    MalformedReceiptError,
    NonCanonicalEvidenceError,
    NoteError,
    VerifierKeyError,
)
from tests.authority.test_fuzz_parsers import (
    FUZZ,
    GRANT_ENVELOPE_DOC,
    any_input,
    expect_only,
    finish,
    fragments,
    mutated_json,
    nasty_text,
    signed_mutation,
    to_bytes,
)
from tests.lineage.support import make_envelope

ORIGIN = "ecp.test/fuzz-log"
WORKER = Ed25519FileSigner.generate()
LOG = Ed25519FileSigner.generate()
LOG_VERIFIER = NoteVerifier.for_key(ORIGIN, LOG.public_key)
TRUST = TrustStore([TrustedKey.create(WORKER.public_key, [KeyRole.WORKER], name="worker")])
AT = datetime(2025, 1, 2, 4, 0, tzinfo=UTC)

ENTRIES = [make_envelope(i, WORKER) for i in range(3)]
_TREE = InMemoryTree()
for _e in ENTRIES:
    _TREE.append(entry_leaf(_e))
CHECKPOINT = Checkpoint(ORIGIN, 3, _TREE.root(3)).sign(LOG)
RECEIPT = Receipt(
    log_index=1,
    leaf_hash=leaf_hash(entry_leaf(ENTRIES[1])),
    entry=ENTRIES[1],
    tree_size=3,
    proof=tuple(_TREE.inclusion_proof(1, 3)),
    checkpoint_note=CHECKPOINT.note,
)
RECEIPT_DOC = json.loads(RECEIPT.to_json())
EVIDENCE_ENVELOPE_DOC = json.loads(ENTRIES[0].to_json())
STATEMENT_DOC = json.loads(ENTRIES[0].payload)

_B64_ROOT = base64.b64encode(_TREE.root(3)).decode()

# --- strategies -----------------------------------------------------------------

_note_lines = st.one_of(
    nasty_text,
    st.sampled_from(
        [
            "",
            "0",
            "00",
            "-1",
            "+1",
            "\uff11\uff12",
            str(MAX_TREE_SIZE),
            str(MAX_TREE_SIZE + 1),
            "9" * 4300,
            "9" * 5000,
            "AAAA",
            "=",
            _B64_ROOT,
            _B64_ROOT[:-1],
            ORIGIN,
            f"\u2014 {ORIGIN} AAAA",
            f"\u2014 {ORIGIN} " + base64.b64encode(b"\x00" * 68).decode(),
            "\u2014 \ud800 " + base64.b64encode(b"\x00" * 68).decode(),
            "\u2014  ",
            "\u2014 ",
        ]
    ),
    st.builds(
        lambda name, blob: f"\u2014 {name} {base64.b64encode(blob).decode()}",
        nasty_text,
        st.binary(max_size=80),
    ),
)


@st.composite
def mutated_lines(draw: st.DrawFn, text: str) -> str:
    """``text`` with one line replaced, inserted, deleted or doubled."""
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    op = draw(st.sampled_from(["replace", "replace", "insert", "delete", "double"]))
    if op == "replace":
        lines[i] = draw(_note_lines)
    elif op == "insert":
        lines.insert(i, draw(_note_lines))
    elif op == "delete":
        del lines[i]
    else:
        lines.insert(i, lines[i])
    return "\n".join(lines)


def _sign_or_not(body: str) -> str:
    # Validly signed by the log when the text allows it: the mutation then
    # gets past the signature to the checkpoint parser.
    try:
        return sign_note(body, LOG, ORIGIN)
    except NoteError:
        return body + "\n\u2014 " + ORIGIN + " AAAAAAA=\n"


signed_bodies = mutated_lines(CHECKPOINT.checkpoint.to_text()).map(_sign_or_not)
notes = st.one_of(
    any_input,
    mutated_lines(CHECKPOINT.note).flatmap(finish),
    signed_bodies.flatmap(finish),
)


def _with_checkpoint(note: str) -> str:
    return json.dumps({**RECEIPT_DOC, "checkpoint": note})


# --- the attacks, reproduced ----------------------------------------------------


def _body(size: str) -> str:
    return f"{ORIGIN}\n{size}\n{_B64_ROOT}\n"


@pytest.mark.parametrize("digits", [4301, 5000, 100_000])
def test_checkpoint_size_beyond_the_int_limit_is_malformed(digits: int) -> None:
    # Was: ValueError: Exceeds the limit (4300 digits) for integer string conversion.
    body = _body("9" * digits)
    with pytest.raises(MalformedCheckpointError):
        Checkpoint.parse(body)
    note = sign_note(body, LOG, ORIGIN)
    with pytest.raises(MalformedCheckpointError):
        open_checkpoint(note, LOG.public_key)
    with pytest.raises(MalformedCheckpointError):
        verify_receipt(_with_checkpoint(note), LOG.public_key, origin=ORIGIN)


def test_checkpoint_size_is_unsigned_64_bit() -> None:
    assert Checkpoint.parse(_body(str(MAX_TREE_SIZE))).size == MAX_TREE_SIZE
    for size in (str(MAX_TREE_SIZE + 1), "9" * 21, "9" * 4300):
        with pytest.raises(MalformedCheckpointError):
            Checkpoint.parse(_body(size))
    with pytest.raises(MalformedCheckpointError):
        Checkpoint(ORIGIN, MAX_TREE_SIZE + 1, b"\x00" * 32)


@pytest.mark.parametrize("bad_type", [[], {}, ["https://in-toto.io/Statement/v1"]])
def test_evidence_statement_type_that_is_unhashable_is_malformed(bad_type: object) -> None:
    # Was: TypeError: unhashable type: 'list'.
    payload = json.dumps({**STATEMENT_DOC, "_type": bad_type}).encode()
    with pytest.raises(MalformedEvidenceError):
        parse_evidence(sign_envelope(INTOTO_PAYLOAD_TYPE, payload, WORKER))


def test_evidence_without_a_canonical_form_is_a_lineage_error() -> None:
    # Was: CanonicalizationError, an authority error, out of a lineage parser.
    doc = json.loads(ENTRIES[0].payload)
    doc["predicate"]["activity"]["attempt"] = 2**60
    payload = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    with pytest.raises(NonCanonicalEvidenceError):
        parse_evidence(sign_envelope(INTOTO_PAYLOAD_TYPE, payload, WORKER))


def test_lone_surrogates_in_notes_receipts_and_keys_are_typed() -> None:
    # Was: UnicodeEncodeError (from verify_note, note_key_id, Receipt.from_json).
    bad_note = CHECKPOINT.note.replace(ORIGIN, ORIGIN + "\ud800", 1)
    with pytest.raises(MalformedNoteError):
        verify_note(bad_note, [LOG_VERIFIER])
    with pytest.raises(MalformedNoteError):
        open_checkpoint(bad_note, LOG.public_key)
    with pytest.raises(MalformedNoteError):
        sign_note(CHECKPOINT.checkpoint.to_text().replace(ORIGIN, "\ud800"), LOG, ORIGIN)
    vkey = LOG_VERIFIER.vkey()
    with pytest.raises(VerifierKeyError):
        NoteVerifier.from_vkey("\ud800" + vkey)
    with pytest.raises(VerifierKeyError):
        NoteVerifier.for_key("\ud800", LOG.public_key)
    with pytest.raises(MalformedReceiptError):
        Receipt.from_json(RECEIPT.to_json().decode() + "\ud800")
    with pytest.raises(MalformedNoteError):
        verify_receipt(dataclasses.replace(RECEIPT, checkpoint_note=bad_note), LOG.public_key)


def test_grant_header_of_5000_brackets_reads_as_unreadable() -> None:
    # Was: RecursionError out of grant_claims, crashing ``ecp lineage``.
    for data in (
        b"[" * 5000,
        b'{"payload":"' + base64.b64encode(b"[" * 5000) + b'"}',
        b'{"payload":"' + base64.b64encode(b"9" * 5000) + b'"}',
        to_bytes('{"payload":"\ud800"}'),
    ):
        assert grant_claims(data) is None
        h = Header()
        h.fields[GRANT_HEADER].data = data
        assert grant_namespace(h) is None


def test_the_valid_artifacts_verify() -> None:
    verify_receipt(RECEIPT.to_json(), LOG.public_key, origin=ORIGIN)
    verify_evidence_signature(parse_evidence(ENTRIES[0].to_json()), TRUST, AT)
    assert NoteVerifier.from_vkey(LOG_VERIFIER.vkey()) == LOG_VERIFIER


# --- fuzzing, one parser per test -----------------------------------------------


@FUZZ
@given(data=notes)
def test_fuzz_signed_note_and_checkpoint(data: str | bytes) -> None:
    note = expect_only((MalformedNoteError,), parse_note, data)
    expect_only((NoteError,), verify_note, data, [LOG_VERIFIER])
    expect_only((NoteError, MalformedCheckpointError), open_checkpoint, data, LOG.public_key)
    expect_only(
        (NoteError, MalformedCheckpointError),
        open_checkpoint,
        data,
        LOG_VERIFIER,
        origin=ORIGIN,
    )
    if not isinstance(note, MalformedNoteError):
        cp = expect_only((MalformedCheckpointError,), Checkpoint.parse, note.text)  # type: ignore[union-attr]
        if isinstance(cp, Checkpoint):
            assert Checkpoint.parse(cp.to_text()) == cp


@FUZZ
@given(text=st.one_of(any_input, mutated_lines(CHECKPOINT.checkpoint.to_text())))
def test_fuzz_checkpoint_body(text: str | bytes) -> None:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    expect_only((MalformedCheckpointError,), Checkpoint.parse, text)


@st.composite
def _vkeys(draw: st.DrawFn) -> str:
    name, hex_id, b64 = LOG_VERIFIER.vkey().split("+", 2)
    parts = [name, hex_id, b64]
    parts[draw(st.integers(0, 2))] = draw(
        st.one_of(nasty_text, st.sampled_from(["", "ZZZZZZZZ", "0" * 8, "BA==", "AQ=="]))
    )
    return "+".join(parts)


@FUZZ
@given(vkey=st.one_of(st.text(max_size=80), nasty_text, _vkeys()))
def test_fuzz_verifier_key(vkey: str) -> None:
    v = expect_only((VerifierKeyError,), NoteVerifier.from_vkey, vkey)
    if isinstance(v, NoteVerifier):
        assert NoteVerifier.from_vkey(v.vkey()) == v


@FUZZ
@given(
    data=st.one_of(
        any_input,
        mutated_json(RECEIPT_DOC),
        signed_bodies.map(_with_checkpoint),
        mutated_lines(CHECKPOINT.note).map(_with_checkpoint),
    )
)
def test_fuzz_receipt(data: str | bytes) -> None:
    r = expect_only((MalformedReceiptError,), Receipt.from_json, data)
    expect_only((LineageError,), verify_receipt, data, LOG.public_key, origin=ORIGIN)
    if isinstance(r, Receipt):
        expect_only((LineageError,), verify_receipt, r, LOG_VERIFIER, min_tree_size=2)
        assert Receipt.from_json(r.to_json()) == r


@FUZZ
@given(
    data=st.one_of(
        any_input,
        mutated_json(EVIDENCE_ENVELOPE_DOC),
        signed_mutation(STATEMENT_DOC, INTOTO_PAYLOAD_TYPE, WORKER),
    )
)
def test_fuzz_evidence(data: str | bytes) -> None:
    ev = expect_only((MalformedEvidenceError,), parse_evidence, data)
    if isinstance(ev, Evidence):
        expect_only((EvidenceSignatureError,), verify_evidence_signature, ev, TRUST, AT)
        assert set(ev.subjects) <= {"arguments", "result", "grant"}
        entry_leaf(ev.envelope)
        # The same, handed over already parsed as an envelope.
        assert parse_evidence(ev.envelope) == ev


def _envelope_around(payload: bytes) -> bytes:
    return Envelope("application/vnd.ecp.grant.v1+json", payload, ()).to_json()


@FUZZ
@given(
    data=st.one_of(
        any_input.map(lambda d: d if isinstance(d, bytes) else to_bytes(d)),
        mutated_json(GRANT_ENVELOPE_DOC).map(lambda d: d if isinstance(d, bytes) else to_bytes(d)),
        st.one_of(st.binary(max_size=64), fragments.map(to_bytes)).map(
            lambda p: json.dumps(
                {**GRANT_ENVELOPE_DOC, "payload": base64.b64encode(p).decode()}
            ).encode()
        ),
        fragments.map(to_bytes).map(_envelope_around),
    )
)
def test_fuzz_grant_header_reading(data: bytes) -> None:
    # What ``ecp lineage`` does with every header in history: nothing may escape.
    claims = expect_only((), grant_claims, data)
    assert claims is None or isinstance(claims, dict)
    h = Header()
    h.fields[GRANT_HEADER].data = data
    ns = expect_only((), grant_namespace, h)
    assert ns is None or isinstance(ns, str)
