"""The gate's artifact staging: the body reads the checked bytes, whatever befalls the original."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecp.activities._artifact_check import (
    ArtifactNotGrantedError,
    artifact,
    declare_output,
    stage_artifacts,
)
from ecp.authority._artifact import (
    ArtifactError,
    ArtifactMismatchError,
    ArtifactRef,
    ArtifactUnavailableError,
    describe_directory,
    describe_file,
    describe_image,
    file_digest,
    stream_digest,
)
from tests.loopback import serve_directory

WEIGHTS = b"approved weights " * 10_000


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_symlink_swapped_after_the_check_changes_nothing_the_body_reads(
    tmp_path: Path,
) -> None:
    src = _write(tmp_path / "model.bin", WEIGHTS)
    ref = describe_file("model", src)
    staged = stage_artifacts([ref], under=str(tmp_path))
    try:
        # After the check, before the use: the original becomes a link to other bytes.
        evil = _write(tmp_path / "evil.bin", b"backdoor" * 100)
        os.unlink(src)
        os.symlink(evil, src)
        with staged.delivered():
            got = artifact("model")
            with got.open() as fh:
                assert fh.read() == WEIGHTS
            assert got.path is not None
            assert got.path.name == ref.digest.removeprefix("sha256:")
            assert not str(got.path).startswith(str(src))
    finally:
        staged.close()
    # The private copies are gone once the body is done.
    assert not any(tmp_path.glob("ecp-artifacts-*"))


def test_a_file_that_grows_while_read_is_refused_after_size_plus_one_bytes() -> None:
    calls = 0

    def endless(n: int) -> bytes:
        nonlocal calls
        calls += 1
        return b"x" * n

    _, size, more = stream_digest(endless, limit=10 * 1024 * 1024)
    assert more
    assert size == 10 * 1024 * 1024 + 1  # it stopped: one byte past the approved size
    assert calls < 20


def test_a_mismatch_names_the_artifact_and_both_digests(tmp_path: Path) -> None:
    src = _write(tmp_path / "model.bin", WEIGHTS)
    ref = describe_file("model", src)
    _write(src, WEIGHTS.upper())
    with pytest.raises(ArtifactMismatchError) as err:
        stage_artifacts([ref], under=str(tmp_path))
    assert err.value.name == "model"
    assert err.value.expected == ref.digest
    assert err.value.found == file_digest(src)[0]
    assert ref.digest in str(err.value)
    assert not any(tmp_path.glob("ecp-artifacts-*"))


def test_a_directory_is_copied_as_checked(tmp_path: Path) -> None:
    root = tmp_path / "model"
    (root / "layers").mkdir(parents=True)
    _write(root / "layers" / "0.bin", WEIGHTS)
    ref = describe_directory("model", root)
    staged = stage_artifacts([ref], under=str(tmp_path))
    try:
        _write(root / "layers" / "0.bin", b"changed")
        copy = staged.verified["model"].path
        assert copy is not None
        assert (copy / "layers" / "0.bin").read_bytes() == WEIGHTS
        assert describe_directory("x", copy).digest == ref.digest
    finally:
        staged.close()


def test_outside_a_governed_body_there_are_no_artifacts(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotGrantedError):
        artifact("model")
    with pytest.raises(ArtifactNotGrantedError):
        declare_output("model", tmp_path / "x")
    staged = stage_artifacts([])
    with staged.delivered(), pytest.raises(ArtifactNotGrantedError, match="dataset"):
        artifact("dataset")


def test_declared_outputs_are_digested_after_the_body(tmp_path: Path) -> None:
    staged = stage_artifacts([])
    out = tmp_path / "model.bin"
    with staged.delivered():
        _write(out, WEIGHTS)
        declare_output("model", out, media_type="application/octet-stream")
    (entry,) = staged.evidence()
    assert entry["role"] == "generated"
    assert entry["digest"] == file_digest(out)[0]
    assert entry["mediaType"] == "application/octet-stream"


# --- url artifacts, from a loopback server ----------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "bucket"
    root.mkdir()
    with serve_directory(root) as base:
        yield base, root


def _url_ref(url: str, data: bytes) -> ArtifactRef:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return ArtifactRef(name="model", kind="url", uri=url, digest=digest, size=len(data))


def test_url_content_is_hashed_while_streaming_into_the_copy(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = served
    _write(root / "model.bin", WEIGHTS)
    ref = _url_ref(f"{base}/model.bin", WEIGHTS)
    staged = stage_artifacts([ref], under=str(tmp_path))
    try:
        with staged.delivered(), artifact("model").open() as fh:
            assert fh.read() == WEIGHTS
    finally:
        staged.close()
    # The object changed in the store after approval: refused.
    _write(root / "model.bin", WEIGHTS + b"!")
    with pytest.raises(ArtifactMismatchError, match="more than the approved"):
        stage_artifacts([ref], under=str(tmp_path))
    with pytest.raises(ArtifactUnavailableError):
        stage_artifacts([_url_ref(f"{base}/missing.bin", WEIGHTS)], under=str(tmp_path))


def test_an_image_is_handed_over_by_its_digest_pinned_reference() -> None:
    ref = describe_image("image", "registry.example.com/ml/serving@sha256:" + "ab" * 32)
    staged = stage_artifacts([ref])
    try:
        with staged.delivered():
            got = artifact("image")
            assert got.reference == ref.uri
            assert got.path is None
            with pytest.raises(ArtifactError, match="not a file"):
                got.open()
    finally:
        staged.close()
