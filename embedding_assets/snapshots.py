"""Versioned Chroma snapshots in the object store, and the local copies of them.

A version is a closed PersistentClient directory, archived once and never
changed; `snapshots/{kind}/LATEST.json` names the current one and is written
last, so readers see the old version or the new one, never half of one.

The compactor keeps one working copy per kind and a marker file saying which
version it is clean at. The marker is removed before the copy is touched, so a
crash mid-write leaves no marker and the next run fetches the pointer's
version again instead of trusting a half-written directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from .ports import ObjectNotFound, ObjectStore


class CorruptSnapshot(RuntimeError):
    """A snapshot archive does not match its checksum or holds unsafe paths."""


@dataclass(frozen=True)
class Pointer:
    version: int
    key: str
    sha256: str
    vectors: int
    created_at: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract with the stdlib 'data' filter, which refuses links and paths that escape `dest`."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptSnapshot(f"snapshot archive {archive.name} cannot be extracted safely: {exc}") from exc


class SnapshotStore:
    def __init__(self, objects: ObjectStore, cache_dir: Path, kind: str, keep_versions: int = 3):
        self.objects = objects
        self.kind = kind
        self.keep_versions = keep_versions
        self.root = Path(cache_dir) / kind
        self.pointer_key = f"snapshots/{kind}/LATEST.json"

    # ---------------------------------------------------------------- pointer
    def latest(self) -> Pointer | None:
        try:
            return Pointer(**orjson.loads(self.objects.get_bytes(self.pointer_key)))
        except ObjectNotFound:
            return None

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
            if pointer:
                self._fetch(pointer, self.work_dir)
        self._marker.unlink(missing_ok=True)
        return self.work_dir, pointer

    def mark_clean(self, version: int) -> None:
        tmp = self._marker.with_suffix(".tmp")
        tmp.write_text(str(version))
        os.replace(tmp, self._marker)

    def read_copy(self) -> tuple[Path, Pointer] | None:
        """A read-only copy of the latest version for search, extracted once per version."""
        pointer = self.latest()
        if pointer is None:
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
            actual = _sha256(archive)
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
            sha = _sha256(archive)
            self.objects.put_file(key, archive)
        return key, sha

    def swap(self, version: int, key: str, sha256: str, vectors: int) -> Pointer:
        """The atomic switch readers see; the caller re-checks its lease right before."""
        pointer = Pointer(version, key, sha256, vectors, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self.objects.put_bytes(self.pointer_key, orjson.dumps(asdict(pointer)))
        return pointer

    def prune(self) -> list[str]:
        """Delete all but the newest `keep_versions` archives; the pointer's version is always kept."""
        pointer = self.latest()
        keys = sorted(k for k in self.objects.list(f"snapshots/{self.kind}/") if k.endswith("/chroma.tar"))
        stale = [k for k in keys[: -self.keep_versions] if not pointer or k != pointer.key]
        for key in stale:
            self.objects.delete(key)
        return stale
