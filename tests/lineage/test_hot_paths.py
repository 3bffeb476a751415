"""The driver-level append and proof paths: same answers, same guarantees."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from typer.testing import CliRunner

from ecp.authority._dsse import Envelope, EnvelopeSignature
from ecp.cli import app
from ecp.lineage.ledger._evidence import parse_evidence
from ecp.lineage.ledger._ledger import Ledger, _leaf_bytes
from ecp.lineage.ledger._merkle import InMemoryTree, leaf_hash, verify_inclusion
from ecp.lineage.ledger._receipt import entry_leaf
from ecp.lineage.ledger._store import _ENTRY_COLUMNS, AppendPlan, Planner, StoredHead
from ecp.lineage.ledger.errors import (
    EntryNotFoundError,
    EntryRefusedError,
    InconsistentCheckpointError,
    ProofSizeError,
    TamperError,
)
from tests.lineage.conftest import _TABLES
from tests.lineage.support import make_envelope, open_unverified

_text = st.text(st.characters(codec="utf-8"), max_size=12)  # incl. controls, quotes, non-BMP


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=40),
    payload_type=_text,
    sigs=st.lists(st.tuples(_text, st.binary(min_size=1, max_size=8)), min_size=1, max_size=3),
)
def test_fast_leaf_is_the_canonical_leaf(
    payload: bytes, payload_type: str, sigs: list[tuple[str, bytes]]
) -> None:
    env = Envelope(payload_type, payload, tuple(EnvelopeSignature(k, s) for k, s in sigs))
    assert _leaf_bytes(env) == entry_leaf(env)


def test_fast_leaf_lone_surrogate_fails_like_entry_leaf() -> None:
    env = Envelope("x\ud800", b"p", (EnvelopeSignature("k", b"s"),))
    with pytest.raises(Exception) as fast:  # noqa: PT011 - compared with entry_leaf below
        _leaf_bytes(env)
    with pytest.raises(Exception) as slow:  # noqa: PT011
        entry_leaf(env)
    assert type(fast.value) is type(slow.value)


def test_proofs_match_an_in_memory_tree(ledger_url: str, worker) -> None:
    envs = [make_envelope(i, worker) for i in range(37)]
    with open_unverified(ledger_url) as ledger:
        for e in envs[:20]:
            ledger.append(e)
        ledger.append_many(envs[20:])
        tree = InMemoryTree()
        for i in range(37):
            tree.append(ledger.entry(i).leaf)
        for size in (1, 2, 5, 16, 17, 37):
            assert ledger.root_at(size) == tree.root(size)
            for index in {0, size // 2, size - 1}:
                proof = ledger.inclusion_proof(index, size)
                assert proof == tree.inclusion_proof(index, size)
                leaf = leaf_hash(ledger.entry(index).leaf)
                verify_inclusion(index, size, leaf, proof, tree.root(size))
            if size > 1:
                assert ledger.consistency_proof(size - 1, size) == tree.consistency_proof(
                    size - 1, size
                )
        assert ledger.inclusion_proof(3) == tree.inclusion_proof(3, 37)
        assert ledger.consistency_proof(7) == tree.consistency_proof(7, 37)


def test_proof_errors_in_the_old_order(ledger_url: str, worker) -> None:
    with open_unverified(ledger_url) as ledger:
        assert ledger.root_at(0) == InMemoryTree().root(0)
        with pytest.raises(EntryNotFoundError):
            ledger.root_at(1)
        ledger.append_many([make_envelope(i, worker) for i in range(3)])
        # Size beyond the log wins over an index outside the tree, as before.
        with pytest.raises(EntryNotFoundError):
            ledger.inclusion_proof(7, 5)
        with pytest.raises(EntryNotFoundError):
            ledger.consistency_proof(9, 5)
        with pytest.raises(EntryNotFoundError):
            ledger.root_at(-1)
        with pytest.raises(EntryNotFoundError):
            ledger.inclusion_proof(0, -2)
        with pytest.raises(ProofSizeError):
            ledger.inclusion_proof(3)
        assert ledger.inclusion_proof(0, 1) == []


def test_missing_subtree_is_tampering_on_the_proof_path(ledger_url: str, worker) -> None:
    with open_unverified(ledger_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(8)])
        with ledger.database.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM ledger_node")
        with pytest.raises(TamperError):
            ledger.inclusion_proof(0, 8)


def test_refused_auto_checkpoint_appends_nothing_and_frees_the_lock(
    ledger_url: str, worker, log_signer
) -> None:
    with open_unverified(ledger_url, checkpoint_signer=log_signer, checkpoint_every=2) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(2)])
        # The stored checkpoint now claims a larger log: signing a smaller one is refused.
        with ledger.database.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE ledger_checkpoint SET note = replace(note, '\n2\n', '\n100\n')"
            )
        for _ in range(2):  # the second try proves no transaction or lock was left behind
            with pytest.raises(InconsistentCheckpointError):
                ledger.append_many([make_envelope(i, worker) for i in range(2, 4)])
            assert ledger.head().size == 2
            assert ledger.find(parse_evidence(make_envelope(2, worker)).evidence_id) is None
    with open_unverified(ledger_url) as plain:
        assert plain.append(make_envelope(2, worker)).index == 2


def test_postgres_pooled_connections_dropped_by_the_server(pg_url: str, worker, log_signer) -> None:
    """No ping per checkout: every path must survive a server-side disconnect."""
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with open_unverified(pg_url) as ledger:

        def drop_all() -> None:
            # Fill the pool, then have the server end every connection in it.
            conns = [ledger.database.engine.connect() for _ in range(2)]
            for c in conns:
                c.close()
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )

        ledger.append_many([make_envelope(i, worker) for i in range(4)])
        drop_all()
        assert ledger.append(make_envelope(4, worker)).index == 4
        drop_all()
        assert len(ledger.inclusion_proof(1, 5)) == 3
        drop_all()
        assert ledger.head().size == 5
        drop_all()
        ledger.checkpoint(log_signer)
        drop_all()
        assert ledger.entry(2).index == 2
        drop_all()
        latest = ledger.latest_checkpoint()
        assert latest is not None
        assert latest.checkpoint.size == 5
        drop_all()
        assert ledger.verify_all(log_signer.public_key).size == 5


# Identity text as Temporal allows it (anything but NUL): quotes, backslashes,
# placeholders, newlines, non-BMP characters.
_SPECIAL = ["'", "\\", "%s", "%(x)s", "E'\\x00'", "'); DROP TABLE ledger_entry; --"]
_ident = st.text(
    st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=1, max_size=12
) | st.sampled_from(_SPECIAL)
# Under Shift JIS only what it encodes, with the characters whose second byte
# is 0x5c, a backslash to a quoting that reads bytes, not characters.
_SJIS_TRAIL_5C = "ソ表能予十"
_sjis_ident = st.text(
    st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + list(_SJIS_TRAIL_5C + "日本語ー")),
    min_size=1,
    max_size=12,
) | st.sampled_from([*_SPECIAL, "ソ'", "表\\", "能\\'); DROP TABLE ledger_node; --"])

#: Breaks out of a literal quoted without regard to standard_conforming_strings
#: (with it off, a backslash escapes the quote that doubling added).
_CANARY_PAYLOAD = "x\\',$$r$$,$$a$$);DROP TABLE canary;COMMIT;--"

#: (standard_conforming_strings, client encoding set by the session)
_SESSIONS = [("on", None), ("off", None), ("off", "SJIS")]


@pytest.mark.parametrize(("scs", "encoding"), _SESSIONS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_stored_rows_are_the_planned_values(
    pg_database: str, worker, scs: str, encoding: str | None, data: st.DataObject
) -> None:
    """The PostgreSQL append writes its values as quoted literals: they must land unchanged.

    Under both settings of ``standard_conforming_strings`` and a client
    encoding whose multibyte characters can end in a backslash byte; every
    stored column of the entry, node and head rows is the planned value.
    """
    strategy = _ident if encoding is None else _sjis_ident
    idents = [
        ("default", _CANARY_PAYLOAD, "r", "a"),
        *data.draw(st.lists(st.tuples(strategy, strategy, strategy, strategy), max_size=4)),
    ]
    dsn = pg_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f"DROP TABLE IF EXISTS {', '.join(_TABLES)}, canary CASCADE")
        con.execute("CREATE TABLE canary (x int)")
    envs = [_envelope_of(i, worker, ident) for i, ident in enumerate(idents)]
    url = f"{pg_database}?options=-c%20standard_conforming_strings%3D{scs}"
    with open_unverified(url) as ledger:
        db = ledger.database
        if encoding is not None:
            # The engine pins UTF-8 at connect; only a session can change it.
            statement = f"SET client_encoding TO '{encoding}'".encode()
            event.listen(
                db.engine, "connect", lambda dbapi_con, _: dbapi_con.pgconn.exec_(statement)
            )
            db.engine.dispose()
        plans: list[AppendPlan] = []
        append = db.append

        def recording(ids: Sequence[str], plan: Planner) -> None:
            made: list[AppendPlan] = []

            def planner(
                head: StoredHead, existing: Mapping[str, tuple[int, bytes]]
            ) -> AppendPlan | None:
                p = plan(head, existing)
                made[:] = [] if p is None else [p]
                return p

            append(ids, planner)
            plans.extend(made)  # the plan of the attempt that committed

        db.append = recording  # type: ignore[method-assign]
        ledger.append(make_envelope(100, worker))  # rows beside an existing head
        results = ledger.append_many(envs)
        ledger.verify_all()
        with db.engine.connect() as conn:  # the session the appends ran in
            assert conn.exec_driver_sql("SHOW client_encoding").scalar() == (encoding or "UTF8")
            assert conn.exec_driver_sql("SHOW standard_conforming_strings").scalar() == scs
    with psycopg.connect(dsn, client_encoding="utf8") as con:
        assert con.execute("SELECT to_regclass('canary') IS NOT NULL").fetchone() == (True,)
        assert con.execute(
            f"SELECT {', '.join(_ENTRY_COLUMNS)} FROM ledger_entry ORDER BY seq"
        ).fetchall() == [tuple(e) for p in plans for e in p.entries]
        assert con.execute("SELECT node_id, hash FROM ledger_node ORDER BY node_id").fetchall() == [
            tuple(n) for p in plans for n in p.nodes
        ]
        head = plans[-1].head
        assert con.execute("SELECT size, root_hash, border FROM ledger_head").fetchall() == [
            (head.size, head.root_hash, head.border)
        ]
        # And the plan is what the envelopes say (independently of the planner).
        for env, ident, r in zip(envs, idents, results, strict=True):
            row = con.execute(
                "SELECT evidence_id, leaf_hash, envelope, namespace, workflow_id, run_id, "
                "activity_id FROM ledger_entry WHERE seq = %s",
                (r.index,),
            ).fetchone()
            assert row is not None
            leaf = _leaf_bytes(parse_evidence(env).envelope)
            assert row == (r.evidence_id, leaf_hash(leaf), leaf, *ident)


def _envelope_of(i: int, worker, ident: tuple[str, str, str, str]) -> Envelope:  # type: ignore[no-untyped-def]
    from ecp.authority._canonical import digest_bytes
    from ecp.lineage.ledger._evidence import (
        ActivityIdentity,
        build_statement,
        sign_evidence,
    )
    from tests.lineage.support import make_predicate

    ns, wf, run, act = ident
    pred = make_predicate(i).model_copy(
        update={
            "activity": ActivityIdentity(
                namespace=ns,
                workflow_id=wf,
                run_id=run,
                activity_id=act,
                attempt=1,
                activity_type="t",
            )
        }
    )
    return sign_evidence(
        build_statement(
            pred,
            arguments=digest_bytes(b"a%d" % i),
            result=digest_bytes(b"r"),
            grant=digest_bytes(b"g"),
        ),
        worker,
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda led: led.inclusion_proof(0, 2**64),
        lambda led: led.inclusion_proof(2**63, 2**64),
        lambda led: led.consistency_proof(3, 2**64),
        lambda led: led.consistency_proof(3, 2**63),
        lambda led: led.root_at(2**64),
    ],
)
def test_sizes_beyond_a_bigint_are_beyond_the_log(ledger_url: str, worker, call) -> None:  # type: ignore[no-untyped-def]
    """Keys no BIGINT can hold are never stored: the size is beyond the log, not a driver error."""
    with open_unverified(ledger_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(5)])
        with pytest.raises(EntryNotFoundError, match="beyond the log"):
            call(ledger)
        assert len(ledger.inclusion_proof(1, 5)) == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda led: led.entry(2**64),
        lambda led: led.entry(2**63),
        lambda led: led.entry(-1),
        lambda led: led.leaves(0, 2**64),
        lambda led: led.leaves(2**63, 2**63 + 1),
        lambda led: led.leaves(-1, 2),
    ],
)
def test_indexes_beyond_a_bigint_are_not_in_the_log(ledger_url: str, worker, call) -> None:  # type: ignore[no-untyped-def]
    """An entry index no BIGINT can hold is not found, on both back ends (not a driver overflow)."""
    with open_unverified(ledger_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(5)])
        with pytest.raises(EntryNotFoundError):
            call(ledger)
        assert ledger.entry(4).index == 4
        assert len(ledger.leaves(0, 5)) == 5


def test_cli_consistency_beyond_a_bigint(ledger_url: str, worker) -> None:  # type: ignore[no-untyped-def]
    with open_unverified(ledger_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(5)])
    r = CliRunner().invoke(app, ["ledger", "consistency", "3", str(2**64), "--db", ledger_url])
    assert r.exit_code != 0
    assert "beyond the log" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def _on_every_checkout(ledger: Ledger, statement: bytes) -> None:
    """Run ``statement`` on each pooled connection as it is handed out, behind psycopg's back.

    What a transaction-mode pooler does to prepared statements: the server
    connection behind the client's changes, so psycopg's record of what is
    prepared no longer holds (sent through libpq, psycopg does not see it).
    """

    def hook(dbapi_con, record, proxy) -> None:  # type: ignore[no-untyped-def]
        dbapi_con.pgconn.exec_(statement)

    event.listen(ledger.database.engine, "checkout", hook)


def test_proofs_survive_prepared_statements_that_vanish(pg_url: str, worker) -> None:
    with open_unverified(pg_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(5)])
        expected = ledger.inclusion_proof(1, 5)  # prepared on some pooled connection
        _on_every_checkout(ledger, b"DEALLOCATE ALL")
        for _ in range(8):  # every pooled connection is reused
            assert ledger.inclusion_proof(1, 5) == expected
            assert len(ledger.consistency_proof(2, 5)) > 0


def test_proofs_survive_prepared_statements_that_already_exist(pg_url: str, worker) -> None:
    with open_unverified(pg_url) as ledger:
        ledger.append_many([make_envelope(i, worker) for i in range(5)])
        ledger.database.engine.dispose()  # fresh connections: psycopg names its first _pg3_0
        _on_every_checkout(ledger, b"DEALLOCATE ALL; PREPARE _pg3_0 AS SELECT 1")
        for _ in range(8):
            assert len(ledger.inclusion_proof(1, 5)) == 3


def test_a_non_utf8_client_encoding_in_the_environment_is_ignored(
    pg_url: str, worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    ident = ("默认", "工作流-表ソ\\'", "运行", "活动")
    with open_unverified(pg_url) as ledger:
        r = ledger.append(_envelope_of(0, worker, ident))
        ledger.verify_all()
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, client_encoding="utf8") as con:
        row = con.execute(
            "SELECT namespace, workflow_id, run_id, activity_id FROM ledger_entry WHERE seq = %s",
            (r.index,),
        ).fetchone()
    assert row == ident


def test_text_the_session_encoding_cannot_carry_refuses_only_that_entry(
    pg_url: str, worker
) -> None:
    with open_unverified(pg_url) as ledger:
        ledger.append(make_envelope(100, worker))
        # Only a session can change the pinned encoding; then the quoting
        # cannot encode the text, and that entry alone is refused.
        _on_every_checkout(ledger, b"SET client_encoding TO 'LATIN1'")
        bad = _envelope_of(0, worker, ("default", "工作流", "r", "a"))
        with pytest.raises(EntryRefusedError) as refused:
            ledger.append(bad)
        assert refused.value.evidence_ids == (parse_evidence(bad).evidence_id,)
        assert ledger.append(_envelope_of(1, worker, ("default", "zoë", "r", "a"))).index == 1
        assert ledger.verify_all().size == 2
