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
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from embedding_assets.domain.ports import ObjectNotFound, ObjectStore, SearchView, VectorCollection
from embedding_assets.domain.stamps import file_sha256, utc_now
from embedding_assets.domain.vectors import NEXT, SERVING, CorruptSnapshot, Pointer, Staged
from resources.vector_store.chroma import open_client, persistent_collection
from resources.vector_store.lexical import FILE_NAME as LEXICAL_FILE
from resources.vector_store.lexical import FtsIndex, build_index


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract with the stdlib 'data' filter, which refuses links and paths that escape `dest`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptSnapshot(f"snapshot archive {archive.name} cannot be extracted safely: {exc}") from exc


class SnapshotStore:
    def __init__(self, objects: ObjectStore, cache_dir: Path, kind: str, keep_versions: int = 3, line: str = SERVING):
        if line not in (SERVING, NEXT):
            raise ValueError(f"unknown snapshot line {line!r}")
        self.objects = objects
        self.cache_dir = Path(cache_dir)
        self.kind = kind
        self.keep_versions = keep_versions
        self.line = line
        self.root = self.cache_dir / kind if line == SERVING else self.cache_dir / kind / "next"
        self.pointer_key = f"snapshots/{kind}/{line}.json"

    def next_line(self) -> SnapshotStore:
        """The line a re-embed builds beside this one."""
        return SnapshotStore(self.objects, self.cache_dir, self.kind, self.keep_versions, NEXT)

    def serving_line(self) -> SnapshotStore:
        return SnapshotStore(self.objects, self.cache_dir, self.kind, self.keep_versions, SERVING)

    def target(self) -> SnapshotStore:
        """The line compaction writes to and the invariant is checked on: NEXT while a re-embed runs."""
        nxt = self.next_line()
        return nxt if nxt.latest() is not None else self.serving_line()

    # ---------------------------------------------------------------- pointer
    def latest(self) -> Pointer | None:
        try:
            return Pointer(**orjson.loads(self.objects.get_bytes(self.pointer_key)))
        except ObjectNotFound:
            return None

    def next_version(self) -> int:
        """One past the newest version of either line, so the two never share an archive key."""
        pointers = (self.serving_line().latest(), self.next_line().latest())
        return max((p.version for p in pointers if p), default=0) + 1

    def write_pointer(self, pointer: Pointer) -> Pointer:
        self.objects.put_bytes(self.pointer_key, orjson.dumps(asdict(pointer)))
        return pointer

    def clear(self) -> None:
        """Remove this line's pointer (the NEXT line, once switched or abandoned); archives go with prune."""
        self.objects.delete(self.pointer_key)

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
        wanted = str(pointer.version) if pointer else "0"
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
        tmp = self._marker.with_suffix(".tmp")
        tmp.write_text(str(version))
        os.replace(tmp, self._marker)

    def read_copy(self) -> tuple[Path, Pointer] | None:
        """A read-only copy of the latest version for search, extracted once per version."""
        pointer = self.latest()
        if pointer is None or not pointer.published:
            return None
        dest = self.root / "read" / str(pointer.version)
        if not (dest / ".complete").exists():
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            self._fetch(pointer, dest)
            (dest / ".complete").touch()
            for old in (self.root / "read").iterdir():
                if old.name != str(pointer.version):
                    shutil.rmtree(old, ignore_errors=True)
        return dest, pointer

    def _fetch(self, pointer: Pointer, dest: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            archive = Path(tmp) / "snapshot.tar"
            self.objects.download(pointer.key, archive)
            actual = file_sha256(archive)
            if actual != pointer.sha256:
                raise CorruptSnapshot(f"{pointer.key}: sha256 {actual} != {pointer.sha256} named by the pointer")
            _safe_extract(archive, dest)

    # ---------------------------------------------------------------- publish
    def upload(self, directory: Path, version: int) -> tuple[str, str]:
        """Archive a closed Chroma directory as `version`; returns (key, sha256). Not yet visible to readers."""
        key = f"snapshots/{self.kind}/{version:08d}/chroma.tar"
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            archive = Path(tmp) / "chroma.tar"
            with tarfile.open(archive, "w") as tar:
                for entry in sorted(directory.iterdir()):
                    tar.add(entry, arcname=entry.name)
            sha = file_sha256(archive)
            self.objects.put_file(key, archive)
        return key, sha

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
