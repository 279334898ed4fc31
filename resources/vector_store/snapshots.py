"""Versioned Chroma snapshots in the object store, and the local copies of them.

A version is a closed PersistentClient directory, archived once and never
changed; `snapshots/{kind}/LATEST.json` names the current one and is written
last, so readers see the old version or the new one, never half of one.

This is the snapshot mode of the `VectorLine` port (the embedded default and
the seed system's layout); the lines and pointers are described in
`embedding_assets.domain.vectors`.

The compactor keeps one working copy per line and a marker file saying which
version it is clean at. The marker is removed before the copy is touched, so a
crash mid-write leaves no marker and the next run fetches the pointer's
version again instead of trusting a half-written directory.

Publishing reads the archive once: it is hashed while tar writes it, then
uploaded (an upload is the only read). Server mode exports into the same
layout (`publish_archive`) and restores from it (`fetch_archive`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from embedding_assets.domain.ports import ObjectStore, SearchView, VectorCollection
from embedding_assets.domain.stamps import file_sha256, utc_now
from embedding_assets.domain.vectors import SERVING, CorruptSnapshot, Pointer, Staged, VersionNotFound, held_recipe
from resources.vector_store.chroma import open_client, persistent_collection
from resources.vector_store.lexical import FILE_NAME as LEXICAL_FILE
from resources.vector_store.lexical import FtsIndex, build_index
from resources.vector_store.pointers import PointerLine


def archive_key(kind: str, version: int) -> str:
    return f"snapshots/{kind}/{version:08d}/chroma.tar"


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract with the stdlib 'data' filter, which refuses links and paths that escape `dest`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptSnapshot(f"snapshot archive {archive.name} cannot be extracted safely: {exc}") from exc


class _HashingWriter:
    """A write-only file that hashes what passes through, so an archive is read once: by the upload."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.out.write(data)


def publish_archive(objects: ObjectStore, directory: Path, key: str, scratch: Path) -> str:
    """Archive a closed Chroma directory under `key`, hashing while it is written; returns its sha256."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        archive = Path(tmp) / "chroma.tar"
        with archive.open("wb") as out:
            writer = _HashingWriter(out)
            with tarfile.open(fileobj=writer, mode="w|") as tar:  # type: ignore[call-overload]  # stream mode
                for entry in sorted(directory.iterdir()):
                    tar.add(entry, arcname=entry.name)
        objects.put_file(key, archive)
    return writer.sha.hexdigest()


def fetch_archive(objects: ObjectStore, key: str, dest: Path, sha256: str | None, scratch: Path) -> str:
    """Download `key`, check it against `sha256` when one is recorded, extract it safely; returns its sha256."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        archive = Path(tmp) / "snapshot.tar"
        objects.download(key, archive)
        actual = file_sha256(archive)
        if sha256 is not None and actual != sha256:
            raise CorruptSnapshot(f"{key}: sha256 {actual} != {sha256} named by the pointer")
        _safe_extract(archive, dest)
    return actual


def _identity(pointer: Pointer | None) -> str:
    """What a local copy is a copy of: the version and its archive's hash ("0" for nothing yet)."""
    return f"{pointer.version}:{pointer.sha256 or ''}" if pointer is not None else "0"


class SnapshotStore(PointerLine):
    writes_in_place = False

    def __init__(self, objects: ObjectStore, cache_dir: Path, kind: str, keep_versions: int = 3, line: str = SERVING):
        super().__init__(objects, kind, line)
        self.cache_dir = Path(cache_dir)
        self.keep_versions = keep_versions
        self.root = self.cache_dir / kind if line == SERVING else self.cache_dir / kind / "next"

    def at(self, line: str) -> SnapshotStore:
        return SnapshotStore(self.objects, self.cache_dir, self.kind, self.keep_versions, line)

    # ------------------------------------------------------------ local copies
    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def _marker(self) -> Path:
        return self.root / "work.version"

    def checkout(self) -> tuple[Path, Pointer | None]:
        """The working copy at the pointer's version, marked dirty; downloads only when the pointer moved."""
        pointer = self.latest()
        wanted = _identity(pointer)
        clean_at = self._marker.read_text().strip() if self._marker.exists() else None
        if clean_at != wanted or not self.work_dir.exists():
            self._marker.unlink(missing_ok=True)
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir.mkdir(parents=True)
            if pointer and pointer.published:
                self._fetch(pointer, self.work_dir)
        self._marker.unlink(missing_ok=True)
        return self.work_dir, pointer

    @contextmanager
    def writable(
        self, model: str, dimensions: int | None, recipe: str
    ) -> Iterator[tuple[VectorCollection, Pointer | None]]:
        """The working copy's collection, opened for `model` and `recipe`; closed (flushed) on exit, ready to stage."""
        directory, pointer = self.checkout()
        with persistent_collection(directory, self.kind, model, dimensions, recipe) as collection:
            yield collection, pointer

    @contextmanager
    def readable(self) -> Iterator[VectorCollection | None]:
        found = self.read_copy()
        if found is None:
            yield None
            return
        with persistent_collection(found[0], self.kind) as collection:
            yield collection

    def open_view(self) -> SearchView | None:
        """The read copy of the latest version, opened; a version archived without its index gets one here."""
        found = self.read_copy()
        if found is None:
            return None
        directory, pointer = found
        client = open_client(directory)
        collection = client.get_collection(self.kind, embedding_function=None)
        index_path = directory / LEXICAL_FILE
        if not index_path.exists():
            build_index(collection, index_path)
        lexical = FtsIndex(index_path)

        def close() -> None:
            lexical.close()
            client.close()

        return SearchView(pointer.version, collection, lexical, close)

    def mark_clean(self, version: int) -> None:
        pointer = self.latest()
        tmp = self._marker.with_suffix(".tmp")
        tmp.write_text(_identity(pointer) if pointer is not None and pointer.version == version else "")
        os.replace(tmp, self._marker)

    def read_copy(self) -> tuple[Path, Pointer] | None:
        """A read-only copy of the latest version for search, extracted once per version.

        Named by version and archive hash: a re-embed started again after an
        abandoned one reuses version numbers for other contents. Extracted
        aside and renamed into place, so a reader never opens a half copy.
        """
        pointer = self.latest()
        if pointer is None or not pointer.published:
            return None
        reads = self.root / "read"
        dest = reads / _identity(pointer).replace(":", "-")
        if not (dest / ".complete").exists():
            reads.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=reads))
            try:
                self._fetch(pointer, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            (staging / ".complete").touch()
            if dest.exists() and not (dest / ".complete").exists():
                shutil.rmtree(dest, ignore_errors=True)  # left half done by a process that died
            try:
                staging.rename(dest)
            except OSError:  # another process put the same copy there first
                shutil.rmtree(staging, ignore_errors=True)
            for old in reads.iterdir():
                if old.name != dest.name and not old.name.startswith("."):
                    shutil.rmtree(old, ignore_errors=True)
        return dest, pointer

    def _fetch(self, pointer: Pointer, dest: Path) -> None:
        fetch_archive(self.objects, pointer.key, dest, pointer.sha256, self.root)

    # ---------------------------------------------------------------- publish
    def upload(self, directory: Path, version: int) -> tuple[str, str]:
        """Archive a closed Chroma directory as `version`; returns (key, sha256). Not yet visible to readers."""
        key = archive_key(self.kind, version)
        return key, publish_archive(self.objects, directory, key, self.root)

    def stage(self, version: int) -> Staged:
        """Archive the closed working copy with its lexical index as `version`; not yet visible to readers."""
        with persistent_collection(self.work_dir, self.kind) as collection:
            build_index(collection, self.work_dir / LEXICAL_FILE)
        key, sha = self.upload(self.work_dir, version)
        return Staged(version, key, sha)

    def swap(self, staged: Staged, vectors: int, model: str | None = None, dimensions: int | None = None,
             changes_cursor: str | None = None, recipe: str | None = None) -> Pointer:
        """The atomic switch readers see; the caller re-checks its lease right before."""
        pointer = Pointer(staged.version, staged.key, staged.sha256, vectors, utc_now(), model, dimensions,
                          changes_cursor, recipe)
        return self.write_pointer(pointer)

    def export(self) -> Pointer | None:
        """Every published version already is an archive in the snapshot layout: the serving pointer names it."""
        return self.serving_line().latest()

    def restore(self, version: int | None) -> Pointer:
        """Serve an archived version again under a new version number (the archive is reused, not copied).

        The new pointer records no change-feed cursor, so the next compaction
        compares the whole collection with the store once.
        """
        serving = self.serving_line()
        current = serving.latest()
        key = archive_key(self.kind, version) if version is not None else (current.key if current else "")
        if not key or not self.objects.exists(key):
            raise VersionNotFound(f"no archived {self.kind} version {version if version is not None else ''}")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            sha = fetch_archive(self.objects, key, Path(tmp) / "chroma", None, Path(tmp))
            with persistent_collection(Path(tmp) / "chroma", self.kind) as collection:
                vectors, meta = collection.count(), collection.metadata or {}
        pointer = Pointer(self.next_version(), key, sha, vectors, utc_now(), meta.get("model"),
                          int(meta.get("dimensions") or 0) or None, recipe=held_recipe(self.kind, meta.get("recipe")))
        return serving.write_pointer(pointer)

    def prune(self) -> list[str]:
        """Delete all but the newest `keep_versions` archives; both lines' current versions are always kept."""
        current = {p.key for p in (self.serving_line().latest(), self.next_line().latest()) if p}
        keys = sorted(k for k in self.objects.list(f"snapshots/{self.kind}/") if k.endswith("/chroma.tar"))
        stale = [k for k in keys[: -self.keep_versions] if k not in current]
        for key in stale:
            self.objects.delete(key)
        return stale


@dataclass(frozen=True)
class SnapshotVectorStore:
    """Snapshot mode: each kind's versions as archives in the object store, local copies under `cache_dir`."""

    objects: ObjectStore
    cache_dir: Path
    keep_versions: int = 3

    def line(self, kind: str) -> SnapshotStore:
        return SnapshotStore(self.objects, self.cache_dir, kind, self.keep_versions)
