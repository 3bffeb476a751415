"""The gate's artifact check: recompute each digest from the bytes the body will read.

Before a governed body runs, the gate takes every artifact its grant names
and **copies it into a private, content-addressed directory while hashing
the very bytes it writes** (:func:`stage_artifacts`). Only if every digest and
size match does the body run, and it reaches the artifacts only through
:func:`artifact`, which hands out the verified copy, never the path the
request named. So there is no time-of-check/time-of-use gap: whatever
happens to the original afterwards (replaced, truncated, a symlink swapped
in, a file appended to) the body reads exactly the bytes that were checked.

* ``file``: opened once with ``O_NOFOLLOW`` (a symlink is refused), checked
  to be a regular file, streamed ``CHUNK_BYTES`` at a time into
  ``<stage>/<hex digest>`` and hashed on the way; at most ``size + 1`` bytes
  are read, so a file that keeps growing is refused rather than read forever.
* ``directory``: walked by directory file descriptors (no symlink is ever
  followed; one in the tree is refused), each file copied and hashed, and the
  ``ecp.tree/v1`` digest of the copy compared.
* ``url``: fetched over http(s) and hashed while streaming into the copy.
* ``oci``: nothing to copy: the grant's reference is by digest, which is the
  image's identity; the body gets that digest-pinned reference to pull.

The copies are removed when the body returns. A mismatch is a non-retryable
denial (``ecp.artifact_mismatch``) whose evidence names the artifact with
both digests. A body declares its outputs with :func:`declare_output`; the
gate digests them after the body and records them as ``generated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ecp.authority._artifact import (
    NAME_PATTERN,
    ArtifactError,
    ArtifactMismatchError,
    ArtifactRef,
    ArtifactUnavailableError,
    fd_reader,
    file_digest,
    open_regular,
    stream_digest,
    walk_tree,
)
from ecp.authority._canonical import Digest
from ecp.authority._verify import VerifiedGrant
from ecp.authority.errors import AuthorityError

#: The gate's record type (``_gate.GateRecord``; not imported: the gate imports this module).
GateRecordLike = Any

__all__ = [
    "ArtifactNotGrantedError",
    "StagedArtifacts",
    "VerifiedArtifact",
    "artifact",
    "declare_output",
    "refused_evidence",
    "stage_artifacts",
    "stage_for_body",
]

log = logging.getLogger("ecp.gate")

#: How long a url artifact's server may take to answer (seconds).
FETCH_TIMEOUT = 60.0


class ArtifactNotGrantedError(ArtifactError):
    """The body asked for an artifact its grant does not name."""

    code = "artifact_not_granted"


@dataclass(frozen=True, slots=True)
class VerifiedArtifact:
    """An artifact whose bytes the gate checked, as the body receives it.

    Attributes:
        ref: The artifact as the grant names it.
        path: The gate's private read-only copy (a file, or a directory's
            root); ``None`` for an image.
        reference: What to use: the copy's path, or an image's
            ``registry/repo@sha256:<hex>``.
        seconds: How long checking (and copying) took.
    """

    ref: ArtifactRef
    path: Path | None
    reference: str
    seconds: float

    @property
    def digest(self) -> Digest:
        """The verified ``sha256:`` digest."""
        return self.ref.digest

    def open(self) -> BinaryIO:
        """Open the verified copy of a file artifact for reading.

        Raises:
            ArtifactError: the artifact is not a file or url artifact.
        """
        if self.path is None or self.ref.kind == "directory":
            raise ArtifactError(f"artifact {self.ref.name!r} is a {self.ref.kind}, not a file")
        return self.path.open("rb")


@dataclass(frozen=True, slots=True)
class _Output:
    name: str
    path: Path
    media_type: str


@dataclass
class StagedArtifacts:
    """The verified artifacts of one attempt, and the outputs its body declares."""

    root: Path | None
    verified: dict[str, VerifiedArtifact]
    outputs: list[_Output] = field(default_factory=list)

    @contextlib.contextmanager
    def delivered(self) -> Iterator[None]:
        """Make the artifacts (and output declaration) available to the body in this block."""
        t1 = _staged.set(self)
        try:
            yield
        finally:
            _staged.reset(t1)

    def used(self) -> list[dict[str, object]]:
        """Evidence entries for the artifacts the body was given."""
        return [_entry(v.ref, "used") for v in self.verified.values()]

    def evidence(self) -> list[dict[str, object]]:
        """Used artifacts plus the declared outputs, digested now (after the body).

        An output that cannot be digested is left out and logged: the body
        has run, and its record must still be written.
        """
        out = self.used()
        for o in self.outputs:
            try:
                if o.path.is_dir() and not o.path.is_symlink():
                    digest, size = walk_tree(o.path)
                    kind = "directory"
                else:
                    digest, size = file_digest(o.path)
                    kind = "file"
            except ArtifactError as exc:
                log.error("output %r cannot be digested: %s", o.name, exc)
                continue
            entry: dict[str, object] = {
                "name": o.name,
                "role": "generated",
                "kind": kind,
                "uri": str(o.path),
                "digest": digest,
                "size": size,
            }
            if o.media_type:
                entry["mediaType"] = o.media_type
            out.append(entry)
        return out

    async def finish(self) -> list[dict[str, object]]:
        """:meth:`evidence`, off the event loop when there is anything to digest."""
        if not self.outputs:
            return self.used()
        return await asyncio.to_thread(self.evidence)

    async def aclose(self) -> None:
        """:meth:`close`, off the event loop when there are copies to remove."""
        if self.root is not None:
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Remove the private copies."""
        if self.root is None:
            return
        _remove(self.root)
        self.root = None


_staged: ContextVar[StagedArtifacts | None] = ContextVar("ecp_artifacts", default=None)


def artifact(name: str) -> VerifiedArtifact:
    """The verified artifact ``name`` of the governed activity running now.

    Raises:
        ArtifactNotGrantedError: not inside a governed body, or its grant
            names no artifact ``name``.
    """
    staged = _staged.get()
    if staged is None or name not in staged.verified:
        raise ArtifactNotGrantedError(f"the grant of this execution names no artifact {name!r}")
    return staged.verified[name]


def declare_output(name: str, path: str | os.PathLike[str], *, media_type: str = "") -> None:
    """Declare that the running governed body produced ``path`` as output ``name``.

    The gate digests it (a file, or a directory under its tree digest) after
    the body returns and records it as a ``generated`` artifact.

    Raises:
        ArtifactNotGrantedError: not inside a governed body.
        ValueError: ``name`` is not a lowercase identifier.
    """
    staged = _staged.get()
    if staged is None:
        raise ArtifactNotGrantedError("outputs are declared only inside a governed body")
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"output name {name!r} must be a lowercase identifier (as artifacts)")
    staged.outputs.append(_Output(name, Path(os.path.abspath(path)), media_type))


def _entry(ref: ArtifactRef, role: str, found: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": ref.name,
        "role": role,
        "kind": ref.kind,
        "uri": ref.uri,
        "digest": ref.digest,
    }
    if ref.size is not None:
        entry["size"] = ref.size
    if ref.media_type:
        entry["mediaType"] = ref.media_type
    if found is not None:
        entry["found"] = found[:500]
    return entry


def refused_evidence(refs: Sequence[ArtifactRef], exc: ArtifactError) -> list[dict[str, object]]:
    """Evidence entries for a refused attempt: the refused artifact with what was found."""
    name = getattr(exc, "name", "")
    found = getattr(exc, "found", None) or exc.code
    return [_entry(r, "refused", found) for r in refs if r.name == name]


# --- staging -----------------------------------------------------------------


def _remove(root: Path) -> None:
    # The copies are read-only; make them writable again to delete them.
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, d), stat.S_IRWXU)
    with contextlib.suppress(OSError):
        os.chmod(root, stat.S_IRWXU)
    shutil.rmtree(root, ignore_errors=True)


def _mismatch(ref: ArtifactRef, hexdigest: str, size: int, more: bool) -> ArtifactMismatchError:
    found = "sha256:" + hexdigest
    if more:
        what = f"more than the approved {ref.size} bytes (digest {found} of the first {size})"
    else:
        what = f"{found} ({size} bytes)"
    return ArtifactMismatchError(
        f"artifact {ref.name!r} ({ref.kind} {ref.uri}) is not the approved one: "
        f"expected {ref.digest} ({ref.size} bytes), found {what}",
        name=ref.name,
        expected=ref.digest,
        found=found,
    )


def _copy_stream(ref: ArtifactRef, read: Callable[[int], bytes], dest: Path) -> None:
    """Stream ``read`` into ``dest`` while hashing; refuse on any difference."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        hexdigest, size, more = stream_digest(
            read,
            limit=ref.size,
            sink=lambda chunk: os.write(fd, chunk),
        )
    finally:
        os.close(fd)
    os.chmod(dest, stat.S_IRUSR)
    if more or size != ref.size or "sha256:" + hexdigest != ref.digest:
        raise _mismatch(ref, hexdigest, size, more)


def _with_name(exc: ArtifactMismatchError, ref: ArtifactRef) -> ArtifactMismatchError:
    if exc.name:
        return exc
    return ArtifactMismatchError(
        f"artifact {ref.name!r}: {exc}", name=ref.name, expected=ref.digest, found=exc.found
    )


def _stage_file(ref: ArtifactRef, stage: Path) -> Path:
    dest = stage / ref.digest.removeprefix("sha256:")
    src = open_regular(ref.uri)
    try:
        _copy_stream(ref, fd_reader(src), dest)
    finally:
        os.close(src)
    return dest


def _stage_url(ref: ArtifactRef, stage: Path) -> Path:
    dest = stage / ref.digest.removeprefix("sha256:")
    try:
        with urllib.request.urlopen(ref.uri, timeout=FETCH_TIMEOUT) as resp:  # noqa: S310 - http(s) only, checked by ArtifactRef
            _copy_stream(ref, resp.read, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ArtifactUnavailableError(
            f"artifact {ref.name!r}: cannot fetch {ref.origin}: {exc}"
        ) from None
    return dest


def _stage_directory(ref: ArtifactRef, stage: Path) -> Path:
    dest = stage / ref.digest.removeprefix("sha256:")
    dest.mkdir(mode=0o700)
    copied: list[Path] = []

    def on_dir(rel: str) -> None:
        (dest / rel).mkdir(mode=0o700)
        copied.append(dest / rel)

    def read_file(rel: str, fd: int) -> tuple[str, int]:
        target = dest / rel
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            hexdigest, size, _ = stream_digest(fd_reader(fd), sink=lambda c: os.write(out, c))
        finally:
            os.close(out)
        mode = os.fstat(fd).st_mode & stat.S_IXUSR
        os.chmod(target, stat.S_IRUSR | mode)
        return hexdigest, size

    digest, size = walk_tree(ref.uri, read_file=read_file, on_dir=on_dir)
    for d in [*reversed(copied), dest]:
        os.chmod(d, stat.S_IRUSR | stat.S_IXUSR)
    if digest != ref.digest or size != ref.size:
        raise ArtifactMismatchError(
            f"artifact {ref.name!r} (directory {ref.uri}) is not the approved tree: "
            f"expected {ref.digest} ({ref.size} bytes), found {digest} ({size} bytes)",
            name=ref.name,
            expected=ref.digest,
            found=digest,
        )
    return dest


def stage_artifacts(refs: Sequence[ArtifactRef], *, under: str | None = None) -> StagedArtifacts:
    """Check every artifact and make the private copies the body will read.

    Blocking (the gate runs it in a thread). ``under`` is where the private
    directory is made (the system temporary directory by default).

    Raises:
        ArtifactMismatchError: an artifact's bytes (digest, size, file type)
            are not the approved ones.
        ArtifactUnavailableError: an artifact cannot be read or fetched.
    """
    if not refs:
        return StagedArtifacts(None, {})
    root = Path(tempfile.mkdtemp(prefix="ecp-artifacts-", dir=under))
    verified: dict[str, VerifiedArtifact] = {}
    try:
        for ref in refs:
            started = time.perf_counter()
            stage = root / ref.name
            stage.mkdir(mode=0o700)
            path: Path | None
            try:
                if ref.kind == "file":
                    path = _stage_file(ref, stage)
                elif ref.kind == "directory":
                    path = _stage_directory(ref, stage)
                elif ref.kind == "url":
                    path = _stage_url(ref, stage)
                else:
                    path = None  # the digest-pinned reference is the identity
            except ArtifactMismatchError as exc:
                raise _with_name(exc, ref) from None
            seconds = time.perf_counter() - started
            if ref.size:
                log.info(
                    "artifact %s verified: %d bytes in %.3f s (%.0f MiB/s)",
                    ref.name,
                    ref.size,
                    seconds,
                    ref.size / max(seconds, 1e-9) / 2**20,
                )
            verified[ref.name] = VerifiedArtifact(
                ref, path, str(path) if path is not None else ref.uri, seconds
            )
    except BaseException:
        _remove(root)
        raise
    return StagedArtifacts(root, verified)


async def stage_for_body(
    verified: VerifiedGrant,
    record: Callable[..., GateRecordLike],
    deny: Callable[[GateRecordLike, AuthorityError], Awaitable[None]],
) -> StagedArtifacts:
    """The gate's hook: stage the grant's artifacts, or record the denial and raise.

    ``record`` builds the gate's record of this attempt and ``deny`` records
    a denial and raises it (the gate's own). The refusal names the artifact
    with the expected and found digests, in the reason and in the evidence.
    """
    refs = verified.grant.artifacts
    if not refs:
        return StagedArtifacts(None, {})  # no thread hop for the common case
    try:
        return await asyncio.to_thread(stage_artifacts, refs)
    except ArtifactError as exc:
        await deny(
            record(
                "denied",
                grant=verified,
                reason_code=exc.code,
                reason=str(exc),
                artifacts=refused_evidence(refs, exc),
            ),
            exc,
        )
        raise AssertionError("unreachable") from exc  # deny always raises
