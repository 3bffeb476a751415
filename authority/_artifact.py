"""Artifacts a governed action uses: what a request names, the grant binds and the gate checks.

An artifact is named by the request with its SHA-256 digest and is one of:

* ``file``: a regular file on the executor, by absolute path;
* ``directory``: a directory tree on the executor, by absolute path, under
  the **tree digest** (:func:`tree_digest_of`);
* ``url``: content fetched over ``http``/``https`` (an object store);
* ``oci``: an OCI image, only by digest (``registry/repo@sha256:<hex>``).
  The digest *is* the image's identity (the manifest's SHA-256), so nothing
  needs the registry to check it: a reference by tag names something that
  can change under the same name and is refused here, before any policy.

The digest, kind, size, media type and origin reach the policy
(:func:`policy_view`); the grant carries the :class:`ArtifactRef` values as
signed, and the gate recomputes each digest from the bytes the body will read
(``ecp.activities._artifact_check``).

Tree digest (``ecp.tree/v1``): the SHA-256 of the RFC 8785 bytes of
``{"format": "ecp.tree/v1", "entries": [...]}``, where ``entries`` lists every
directory (``{"path", "type": "dir"}``) and regular file (``{"path", "type":
"file", "size", "sha256", "executable"}``) below the root, ``path`` relative
with ``/`` separators, sorted by path. A symbolic link, device, socket or FIFO
anywhere in the tree is refused, as is a name that is not UTF-8. Owners,
times and permission bits other than the owner's execute bit are left out, so
the same content checked out anywhere digests the same.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from ecp.authority._canonical import Digest, digest_json
from ecp.authority._signed import DIGEST_PATTERN
from ecp.authority.errors import VerificationError

__all__ = [
    "CHUNK_BYTES",
    "NAME_PATTERN",
    "TREE_FORMAT",
    "ArtifactError",
    "ArtifactKind",
    "ArtifactMismatchError",
    "ArtifactRef",
    "ArtifactRefusedError",
    "ArtifactUnavailableError",
    "artifacts_json",
    "bind_artifacts",
    "describe_directory",
    "describe_file",
    "describe_image",
    "fd_reader",
    "file_digest",
    "open_regular",
    "parse_artifacts",
    "policy_view",
    "stream_digest",
    "tree_digest_of",
    "walk_tree",
]

TREE_FORMAT: Final = "ecp.tree/v1"
#: Streaming unit: large artifacts are hashed (and copied) this much at a time.
CHUNK_BYTES: Final = 1024 * 1024
#: How many artifacts one request may name (the grant stays well under 16 KiB).
MAX_ARTIFACTS: Final = 16

ArtifactKind = Literal["file", "directory", "url", "oci"]

# Cedar attribute names: the policy reads ``context.artifacts.<name>``.
NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
# registry[:port]/path@sha256:<64 hex>; lowercase repository path as OCI requires.
_OCI_REF = re.compile(
    r"(?P<repo>[a-z0-9.-]+(?::[0-9]{1,5})?/[a-z0-9]+(?:[._/-][a-z0-9]+)*)@(?P<digest>sha256:[0-9a-f]{64})"
)


class ArtifactError(VerificationError):
    """An artifact cannot be used as approved."""

    code = "artifact_invalid"


class ArtifactRefusedError(ArtifactError):
    """The request names an artifact in a form that cannot be checked (tag, relative path...)."""

    code = "artifact_refused"


class ArtifactMismatchError(ArtifactError):
    """The bytes at the gate are not the approved ones (digest, size or type)."""

    code = "artifact_mismatch"

    def __init__(self, message: str, *, name: str, expected: str, found: str) -> None:
        """Keep the artifact and both digests for the evidence."""
        super().__init__(message)
        self.name = name
        self.expected = expected
        self.found = found


class ArtifactUnavailableError(ArtifactError):
    """The artifact could not be read or fetched at the gate."""

    code = "artifact_unavailable"


_WIRE = ConfigDict(frozen=True, extra="forbid", strict=True)


class ArtifactRef(BaseModel):
    """One artifact as the request names it and the grant binds it.

    ``uri`` is an absolute path (file, directory), an ``http(s)`` URL (url)
    or ``registry/repo@sha256:<hex>`` (oci). ``size`` is the byte count
    (a directory's: the sum of its files); required except for images.
    """

    model_config = _WIRE

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: ArtifactKind
    uri: Annotated[str, Field(min_length=1, max_length=2048)]
    digest: Annotated[Digest, Field(pattern=DIGEST_PATTERN)]
    size: Annotated[int | None, Field(ge=0)] = None
    media_type: Annotated[str, Field(max_length=256)] = ""

    @model_validator(mode="after")
    def _checkable(self) -> ArtifactRef:
        if "\x00" in self.uri or any(c < " " for c in self.uri):
            raise ValueError("uri must not hold control characters")
        if self.kind in ("file", "directory"):
            if not os.path.isabs(self.uri):
                raise ValueError(f"a {self.kind} artifact needs an absolute path")
        elif self.kind == "url":
            if not self.uri.startswith(("http://", "https://")):
                raise ValueError("a url artifact is fetched over http or https")
        else:
            m = _OCI_REF.fullmatch(self.uri)
            if m is None:
                raise ValueError(
                    "an image is named only by digest: registry/repository@sha256:<64 hex> "
                    "(a tag can change under the same name)"
                )
            if m.group("digest") != self.digest:
                raise ValueError("the image reference's digest is not the artifact's digest")
        if self.kind != "oci" and self.size is None:
            raise ValueError(f"a {self.kind} artifact needs its size")
        return self

    @model_serializer(mode="wrap")
    def _omit_no_size(self, handler: SerializerFunctionWrapHandler) -> object:
        # An image has no size: absent, not null (Cedar has no null).
        doc = handler(self)
        if isinstance(doc, dict) and self.size is None:
            doc.pop("size", None)
        return doc

    @property
    def origin(self) -> str:
        """Where it comes from: the repository, the URL without query, or the path."""
        if self.kind == "oci":
            return self.uri.split("@", 1)[0]
        if self.kind == "url":
            return self.uri.split("?", 1)[0].split("#", 1)[0]
        return self.uri


def parse_artifacts(raw: Iterable[object]) -> tuple[ArtifactRef, ...]:
    """The artifacts a request names, validated; names unique, sorted by name.

    Raises:
        ArtifactRefusedError: an entry is not an artifact ECP can check (a
            tag instead of a digest, a relative path, no size, a duplicate
            name, too many).
    """
    out: dict[str, ArtifactRef] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ArtifactRefusedError(f"artifact {i} is not an object")
        fields = {k: v for k, v in item.items() if k != "attestations"}
        uri = fields.get("uri")
        if fields.get("kind") == "oci" and isinstance(uri, str) and "@sha256:" not in uri:
            raise ArtifactRefusedError(
                f"artifact {i} names image {uri[:200]!r} by tag: an image is named only by "
                "digest, registry/repository@sha256:<64 hex> (a tag can change under the name)"
            )
        try:
            ref = ArtifactRef.model_validate(fields, strict=False)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "artifact"
            raise ArtifactRefusedError(f"artifact {i} {where}: {first['msg']}") from None
        if ref.name in out:
            raise ArtifactRefusedError(f"two artifacts are named {ref.name!r}")
        out[ref.name] = ref
    if len(out) > MAX_ARTIFACTS:
        raise ArtifactRefusedError(f"a request names at most {MAX_ARTIFACTS} artifacts")
    return tuple(out[n] for n in sorted(out))


def policy_view(
    ref: ArtifactRef, attestations: Iterable[Mapping[str, str]] = ()
) -> dict[str, JsonValue]:
    """What the policy sees of one artifact (``context.artifacts.<name>``).

    ``attestations`` are verified attestation claims (see
    ``ecp.authority._artifact_attestation``): their predicate types become
    ``predicate_types``, and the first SLSA provenance becomes ``provenance``
    (``builder_id``, ``source_repository``, ``signer``).
    """
    view: dict[str, JsonValue] = {
        "kind": ref.kind,
        "digest": ref.digest,
        "media_type": ref.media_type,
        "origin": ref.origin,
        "uri": ref.uri,
    }
    if ref.size is not None:
        view["size"] = ref.size
    claims = list(attestations)
    types: list[JsonValue] = [*sorted({c["predicate_type"] for c in claims})]
    view["predicate_types"] = types
    provenance = [
        c for c in claims if c["predicate_type"].startswith("https://slsa.dev/provenance/")
    ]
    if provenance:
        first = provenance[0]
        view["provenance"] = {
            "builder_id": first["builder_id"],
            "source_repository": first["source_repository"],
            "signer": first["signer"],
        }
    return view


# --- digests -----------------------------------------------------------------


def stream_digest(
    read: Callable[[int], bytes],
    *,
    limit: int | None = None,
    sink: Callable[[bytes], object] | None = None,
) -> tuple[str, int, bool]:
    """SHA-256 hex and byte count of what ``read`` yields until it returns ``b""``, streamed.

    Reads at most ``limit + 1`` bytes when ``limit`` is given (a file that
    grows without end is refused, not read forever); the third value says
    whether more than ``limit`` was there. ``sink`` receives each chunk
    exactly as hashed (the gate writes its private copy from it).
    """
    h = hashlib.sha256()
    total = 0
    cap = None if limit is None else limit + 1
    while True:
        want = CHUNK_BYTES if cap is None else min(CHUNK_BYTES, cap - total)
        if want <= 0:
            break
        chunk = read(want)
        if not chunk:
            break
        h.update(chunk)
        total += len(chunk)
        if sink is not None:
            sink(chunk)
    return h.hexdigest(), total, limit is not None and total > limit


def fd_reader(fd: int) -> Callable[[int], bytes]:
    """``read(n)`` over an open file descriptor."""
    return functools.partial(os.read, fd)


def open_regular(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> int:
    """Open a regular file for reading without following a final symlink.

    Raises:
        ArtifactUnavailableError: missing or unreadable.
        ArtifactMismatchError: not a regular file (a symlink, FIFO, device).
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the final component is a symlink
            raise _not_regular(str(path), "a symbolic link") from None
        raise ArtifactUnavailableError(f"cannot open {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(str(path), "not a regular file")
    os.set_blocking(fd, True)
    return fd


def _not_regular(path: str, what: str) -> ArtifactMismatchError:
    return ArtifactMismatchError(
        f"{path} is {what}; artifacts are read only from regular files",
        name="",
        expected="regular file",
        found=what,
    )


def file_digest(path: str | os.PathLike[str]) -> tuple[Digest, int]:
    """``sha256:`` digest and size of a regular file, streamed.

    Raises:
        ArtifactUnavailableError, ArtifactMismatchError: see :func:`open_regular`.
    """
    fd = open_regular(path)
    try:
        hexdigest, size, _ = stream_digest(fd_reader(fd))
    finally:
        os.close(fd)
    return Digest("sha256:" + hexdigest), size


def tree_digest_of(entries: Iterable[Mapping[str, JsonValue]]) -> Digest:
    """The ``ecp.tree/v1`` digest of a listing (sorted here by path)."""
    listing = sorted(entries, key=lambda e: str(e["path"]))
    return digest_json({"format": TREE_FORMAT, "entries": listing})


#: Called per regular file with (relative path, open fd); returns (hex, size).
FileReader = Callable[[str, int], tuple[str, int]]


def _hash_only(_: str, fd: int) -> tuple[str, int]:
    hexdigest, size, _more = stream_digest(fd_reader(fd))
    return hexdigest, size


def walk_tree(
    root: str | os.PathLike[str],
    *,
    read_file: FileReader = _hash_only,
    on_dir: Callable[[str], object] | None = None,
) -> tuple[Digest, int]:
    """Tree digest and total file bytes of the directory at ``root``.

    Walks by directory file descriptors, never following a symlink, so a
    link swapped in mid-walk is seen as a link (and refused), not followed.
    ``read_file`` reads each file from its fd (the gate copies as it
    hashes); ``on_dir`` is told each directory's relative path first.

    Raises:
        ArtifactMismatchError: a symlink, special file or non-UTF-8 name.
        ArtifactUnavailableError: the root or an entry cannot be read.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        top = os.open(root, flags)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _not_regular(str(root), "not a directory (or a symbolic link)") from None
        raise ArtifactUnavailableError(f"cannot open {root}: {exc.strerror}") from None
    entries: list[dict[str, JsonValue]] = []
    total = 0

    def walk(dir_fd: int, prefix: str) -> None:
        nonlocal total
        names = sorted(os.listdir(dir_fd))
        for raw in names:
            try:
                raw.encode("utf-8")
            except UnicodeEncodeError:
                raise _not_regular(f"{root}/{prefix}{raw!r}", "a name that is not UTF-8") from None
            rel = f"{prefix}{raw}"
            st = os.stat(raw, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                entries.append({"path": rel, "type": "dir"})
                if on_dir is not None:
                    on_dir(rel)
                sub = os.open(raw, flags, dir_fd=dir_fd)
                try:
                    walk(sub, rel + "/")
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                fd = open_regular(raw, dir_fd=dir_fd)
                try:
                    executable = bool(os.fstat(fd).st_mode & stat.S_IXUSR)
                    hexdigest, size = read_file(rel, fd)
                finally:
                    os.close(fd)
                total += size
                entries.append(
                    {
                        "path": rel,
                        "type": "file",
                        "size": size,
                        "sha256": hexdigest,
                        "executable": executable,
                    }
                )
            else:
                kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a special file"
                raise _not_regular(f"{root}/{rel}", kind)

    try:
        walk(top, "")
    except OSError as exc:
        raise ArtifactUnavailableError(f"cannot read {root}: {exc.strerror}") from None
    finally:
        os.close(top)
    return tree_digest_of(entries), total


# --- describing artifacts (for submitters) ----------------------------------


def describe_file(name: str, path: str | os.PathLike[str], *, media_type: str = "") -> ArtifactRef:
    """An :class:`ArtifactRef` for a local file, its digest computed now.

    Raises:
        ArtifactUnavailableError, ArtifactMismatchError: see :func:`open_regular`.
    """
    digest, size = file_digest(path)
    return ArtifactRef(
        name=name,
        kind="file",
        uri=os.path.abspath(path),
        digest=digest,
        size=size,
        media_type=media_type,
    )


def describe_directory(
    name: str, path: str | os.PathLike[str], *, media_type: str = ""
) -> ArtifactRef:
    """An :class:`ArtifactRef` for a local directory, under its tree digest.

    Raises:
        ArtifactUnavailableError, ArtifactMismatchError: see :func:`walk_tree`.
    """
    digest, size = walk_tree(path)
    return ArtifactRef(
        name=name,
        kind="directory",
        uri=os.path.abspath(path),
        digest=digest,
        size=size,
        media_type=media_type,
    )


def describe_image(name: str, reference: str, *, media_type: str = "") -> ArtifactRef:
    """An :class:`ArtifactRef` for an image named by digest.

    Raises:
        ArtifactRefusedError: ``reference`` is not ``registry/repo@sha256:<hex>``.
    """
    digest = reference.rpartition("@")[2]
    item = {"name": name, "kind": "oci", "uri": reference, "digest": digest}
    (ref,) = parse_artifacts([{**item, "media_type": media_type}])
    return ref


def bind_artifacts(args_digest: Digest, refs: Iterable[ArtifactRef]) -> Digest:
    """What a signed request's ``args_digest`` covers: the arguments, and the artifacts.

    Without artifacts it is the argument digest itself (requests signed
    before artifacts existed still verify); with them, ``sha256:`` of the JCS
    of ``{"args_digest", "artifacts"}`` (the artifacts as the grant binds
    them, attestations left out: those are verified on their own).
    """
    listed = artifacts_json(refs)
    if not listed:
        return args_digest
    return digest_json({"args_digest": args_digest, "artifacts": listed})


def artifacts_json(refs: Iterable[ArtifactRef]) -> list[dict[str, JsonValue]]:
    """JSON form of ``refs`` for a request's ``artifacts`` (without attestations)."""
    return [r.model_dump(mode="json") for r in refs]
