"""The embedded object store: one file per key under a root directory.

It stands in for S3, so it keeps S3's promises that the pipeline relies on:
a reader never sees half an object (every write goes to a temp file in the
target directory, is fsynced and then `os.replace`d over the key), and
`list` is a plain string-prefix match returning keys in lexicographic order.

Keys come from configuration and from batch ids, so they are validated
before touching the disk: a key is a '/'-separated relative path whose
segments are non-empty and neither '.' nor '..', with no backslash or NUL,
and whose resolved path (symlinks included) stays strictly inside the root.
Segments starting with `.tmp-` are reserved for in-flight writes, which is
what lets `list` tell them apart from objects.

A key cannot be both an object and a "directory" of other keys (S3 allows
`a` next to `a/b`; a file system does not); such a write fails with the
OS error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from embedding_assets.domain.ports import ObjectNotFound

TEMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


class LocalObjectStore:
    """ObjectStore over a local directory (the `DATA_DIR` default)."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        with open(path, "rb") as src:
            atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, _CHUNK))

    def put_bytes(self, key: str, data: bytes) -> None:
        atomic_write(self._path(key), lambda dst: dst.write(data))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def download(self, key: str, dest: Path) -> None:
        path = self._path(key)
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed by the `with` below; only the open maps to ObjectNotFound
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        with src:
            atomic_write(Path(dest), lambda dst: shutil.copyfileobj(src, dst, _CHUNK))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix`, sorted; only the directory the prefix names is walked."""
        check_prefix(prefix)
        folder, _, _ = prefix.rpartition("/")
        base = self._path(folder) if folder else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            return
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self.root.joinpath(*key.split("/")).resolve()
        if path == self.root or self.root not in path.parents:
            raise ValueError(f"object key {key!r} resolves outside the store root")
        return path


def check_key_chars(key: str) -> None:
    if not isinstance(key, str):
        raise ValueError(f"object key {key!r} must be a string")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"object key {key!r} contains a backslash or NUL")


def check_key(key: str) -> None:
    check_key_chars(key)
    if not key:
        raise ValueError("object key '' is empty")
    if key.startswith("/"):
        raise ValueError(f"object key {key!r} must be relative")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
        if segment.startswith(TEMP_PREFIX):
            raise ValueError(f"object key {key!r} uses the reserved prefix {TEMP_PREFIX!r}")


def check_prefix(prefix: str) -> None:
    """A listing prefix: relative, and its folder part (up to the last '/') a key that could exist."""
    check_key_chars(prefix)
    if prefix.startswith("/"):
        raise ValueError(f"object key prefix {prefix!r} must be relative")
    folder, _, _ = prefix.rpartition("/")
    if folder:
        check_key(folder)


def atomic_write(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write through a same-directory temp file so `path` only ever holds complete content.

    `fill` writes the content to the open temp file; a failure removes the temp file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as dst:
            fill(dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable, not only the file's bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
