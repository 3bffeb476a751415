"""TrustStoreReader: parsed once per content, read afresh on every call.

The workers ask for the trust store at every check; parsing it each time was
more than a millisecond of CPU per governed action, so the reader keeps the
store it parsed last. What must not change: every call sees the file as it
is now (a revocation at the next call, a damaged file refused), whatever the
file's size or modification time say.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ecp._runtime import _trust_loader
from ecp.authority._keys import Ed25519FileSigner
from ecp.authority._truststore import KeyRole, TrustedKey, TrustStore, TrustStoreReader
from ecp.authority.errors import RevokedKeyError, TrustStoreError

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def _store(name: str) -> tuple[TrustStore, TrustedKey]:
    key = TrustedKey.create(Ed25519FileSigner.generate().public_key, [KeyRole.WORKER], name=name)
    return TrustStore([key]), key


def test_the_runtime_loader_is_a_reader(tmp_path: Path) -> None:
    # The workers' loader is the one these tests check.
    store, _ = _store("w")
    store.save(tmp_path)
    assert isinstance(_trust_loader(tmp_path), TrustStoreReader)


def test_unchanged_bytes_are_parsed_once(tmp_path: Path) -> None:
    store, key = _store("w")
    store.save(tmp_path)
    read = TrustStoreReader(tmp_path)
    first = read()
    assert read() is first
    assert first.require(key.key_id, role=KeyRole.WORKER, at=T0) == key


def test_a_revocation_counts_at_the_next_call(tmp_path: Path) -> None:
    store, key = _store("w")
    store.save(tmp_path)
    read = TrustStoreReader(tmp_path)
    read().require(key.key_id, role=KeyRole.WORKER, at=T0)
    store.revoked(key.key_id, T0).save(tmp_path)
    with pytest.raises(RevokedKeyError):
        read().require(key.key_id, role=KeyRole.WORKER, at=T0)


def test_an_edit_that_keeps_size_and_mtime_is_seen(tmp_path: Path) -> None:
    # Keyed by the content itself: an edit of the same length, with the
    # file's times put back, is still a different store.
    store, key = _store("aaaa")
    store.save(tmp_path)
    file = TrustStore.resolve_path(tmp_path)
    read = TrustStoreReader(tmp_path)
    assert read().require(key.key_id, role=KeyRole.WORKER, at=T0).name == "aaaa"
    before = file.stat()
    edited = file.read_bytes().replace(b'"aaaa"', b'"bbbb"')
    file.write_bytes(edited)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert file.stat().st_size == before.st_size
    assert file.stat().st_mtime_ns == before.st_mtime_ns
    assert read().require(key.key_id, role=KeyRole.WORKER, at=T0).name == "bbbb"


def test_a_damaged_or_missing_file_is_refused_not_served_from_memory(tmp_path: Path) -> None:
    store, _ = _store("w")
    store.save(tmp_path)
    file = TrustStore.resolve_path(tmp_path)
    read = TrustStoreReader(tmp_path)
    read()
    good = file.read_bytes()
    file.write_bytes(good[:-10])
    with pytest.raises(TrustStoreError, match="not a valid trust store"):
        read()
    file.unlink()
    with pytest.raises(TrustStoreError, match="not found"):
        read()
    # Back as it was: served again (parsed again or not, the same content).
    file.write_bytes(good)
    assert len(read()) == 1


def test_threads_each_see_a_whole_store(tmp_path: Path) -> None:
    # Readers racing a writer that alternates two stores (save() replaces
    # the file atomically): every store a reader gets is one of the two.
    one, key_one = _store("one")
    two, key_two = _store("two")
    one.save(tmp_path)
    read = TrustStoreReader(tmp_path)
    seen: list[frozenset[str]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(frozenset(k.key_id for k in read()))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(200):
        (two if i % 2 else one).save(tmp_path)
    stop.set()
    for t in threads:
        t.join()
    assert seen
    assert set(seen) <= {frozenset({key_one.key_id}), frozenset({key_two.key_id})}
