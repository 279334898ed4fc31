"""Server mode of the vector-store port: collections on a Chroma server, named by pointer objects.

A compaction writes its delta straight into the serving collection on the
server, so its cost follows the delta, not the collection (snapshot mode
archives and uploads the whole collection every time). Pointers live at
`collections/{kind}/LATEST.json` and `NEXT.json`, not under `snapshots/`:
there, exports keep snapshot mode's own format (an archive and its pointer),
so a snapshot-mode deployment, the seed system or `restore` reading
`snapshots/{kind}/LATEST.json` always finds an archive, never a collection
name. A pointer's `key` is the collection's name and its `sha256` is empty.

A collection is named `{kind}_v{version:08d}` after the version its line
was at when it was first written (`next_version`). While a line is not yet
published that name does not change, so a compactor killed before its first
swap finds its half-filled collection again, skips the vectors already there
(same id, same batch) and publishes. Once published, the pointer keeps the
name and only its version and count move.

What is on the server is visible at once: vectors written by a compaction
are searchable before their items are SUCCESS (never the other way round),
and a run killed mid-merge leaves them there until the next compaction marks
their items or removes them as stale. A re-embed builds its collection
beside the serving one and the switch rewrites the serving pointer; the old
collection stays until `prune` drops collections no pointer names beyond the
newest `keep_versions`.

Search needs a lexical index beside the collection (`open_view`). The server
has none, so each host builds an SQLite FTS5 file from the served collection's
documents the first time it opens a version, and keeps it in a local cache
(`{scratch_dir}/lexical/{kind}/{version}/`) until the pointer moves on. The
cost is one full read of the collection per published version per host
(about what snapshot mode's download costs, without the vectors). The index
holds what the collection held when it was read, which is the version the
pointer named unless a compaction was writing into it at that moment; the
next version's index is read afresh. Exports carry the index in their
archive, as every snapshot-mode version does.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import ChromaError, NotFoundError

from embedding_assets.domain.ports import ObjectStore, SearchView
from embedding_assets.domain.settings import ChromaServer
from embedding_assets.domain.stamps import utc_now
from embedding_assets.domain.vectors import SERVING, Pointer, Staged, VersionNotFound, held_recipe, model_problem
from resources.vector_store.chroma import check_model, collection_options, persistent_collection
from resources.vector_store.lexical import FILE_NAME as LEXICAL_FILE
from resources.vector_store.lexical import FtsIndex, build_index
from resources.vector_store.pointers import PointerLine, read_pointer
from resources.vector_store.snapshots import SnapshotStore, archive_key, fetch_archive, publish_archive

PAGE = 1000  # vectors per request when copying a collection (1,536 floats each)
FLOATS_PER_WRITE = 2_000_000  # ~25 MB of JSON: a server refuses (413) an `add` of 5,000 vectors of 1,536 floats


def _client_settings() -> ChromaSettings:
    """A fresh settings object per client: `chromadb.HttpClient` writes the host and port into the one it is given."""
    return ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def request_headers(server: ChromaServer) -> dict[str, str]:
    headers = dict(server.headers)
    if server.auth_token:
        headers["Authorization"] = f"Bearer {server.auth_token}"
    return headers


def connect(server: ChromaServer) -> ClientAPI:
    """A client on the configured tenant and database, creating the database on first use."""
    def client() -> ClientAPI:
        return chromadb.HttpClient(host=server.host, port=server.port, ssl=server.ssl, headers=request_headers(server),
                                   settings=_client_settings(), tenant=server.tenant, database=server.database)

    try:
        return client()
    except ValueError as exc:  # how chromadb reports a server that does not answer its heartbeat
        if "Could not connect" not in str(exc):
            raise
        scheme = "https" if server.ssl else "http"
        raise ConnectionError(f"Chroma server {scheme}://{server.host}:{server.port} did not answer") from exc
    except NotFoundError:
        admin = chromadb.AdminClient(ChromaSettings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host=server.host,
            chroma_server_http_port=server.port, chroma_server_ssl_enabled=server.ssl,
            chroma_server_headers=request_headers(server), anonymized_telemetry=False,
        ))
        try:
            admin.create_database(server.database, tenant=server.tenant)
        except ChromaError as exc:
            if "already exists" not in str(exc):  # another process created it first
                raise
        return client()


def copy_collection(source: Any, dest: Any, page: int = PAGE) -> int:
    """Add every vector of `source` to `dest`, a page at a time; returns how many."""
    copied = 0
    while True:
        got = source.get(limit=page, offset=copied, include=["embeddings", "documents", "metadatas"])
        if not got["ids"]:
            return copied
        dest.add(ids=got["ids"], embeddings=np.asarray(got["embeddings"], dtype=np.float32),
                 documents=got["documents"], metadatas=got["metadatas"])
        copied += len(got["ids"])


class PagedCollection:
    """A server collection whose writes go in requests the server accepts.

    A Chroma server refuses a request body over its payload limit, and the
    steps write up to `CHUNK_SIZE` (5,000) vectors at once; writes carrying
    vectors are split into requests of at most `FLOATS_PER_WRITE` floats.
    Everything else goes to the collection as it is.
    """

    def __init__(self, inner: Any, floats_per_write: int = FLOATS_PER_WRITE):
        self.inner = inner
        self.floats_per_write = floats_per_write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def add(self, ids: Any, embeddings: Any = None, **columns: Any) -> None:
        self._split(self.inner.add, ids, embeddings, columns)

    def upsert(self, ids: Any, embeddings: Any = None, **columns: Any) -> None:
        self._split(self.inner.upsert, ids, embeddings, columns)

    def _split(self, write: Any, ids: Any, embeddings: Any, columns: dict[str, Any]) -> None:
        dims = len(embeddings[0]) if embeddings is not None and len(embeddings) else 1
        step = max(1, self.floats_per_write // dims)
        for start in range(0, len(ids), step):
            part = slice(start, start + step)
            write(ids=ids[part], embeddings=None if embeddings is None else embeddings[part],
                  **{name: None if value is None else value[part] for name, value in columns.items()})


class ServerVectorStore:
    """Server mode: each kind's collections on one Chroma server; `scratch_dir` for exports, restores and the
    lexical index cache."""

    def __init__(self, server: ChromaServer, objects: ObjectStore, scratch_dir: Path, keep_versions: int = 3):
        self.server = server
        self.objects = objects
        self.scratch_dir = Path(scratch_dir)
        self.keep_versions = keep_versions
        self._client: ClientAPI | None = None

    def client(self) -> ClientAPI:
        if self._client is None:
            self._client = connect(self.server)
        return self._client

    def line(self, kind: str) -> ServerLine:
        return ServerLine(self, kind, SERVING)


class ServerLine(PointerLine):
    """One line of a kind's collections on the server (the `VectorLine` port)."""

    prefix = "collections"
    writes_in_place = True

    def __init__(self, owner: ServerVectorStore, kind: str, line: str):
        super().__init__(owner.objects, kind, line)
        self.owner = owner

    def at(self, line: str) -> ServerLine:
        return ServerLine(self.owner, self.kind, line)

    def version_floor(self) -> int:
        """Exports count too, so an export never overwrites an archive of an earlier mode or restore."""
        exported = read_pointer(self.objects, self._exports().pointer_key)
        return max(super().version_floor(), exported.version if exported else 0)

    def collection_name(self, pointer: Pointer | None = None) -> str:
        """The collection this line writes to: the pointer's, or the one its first version will be.

        `pointer`: the line's pointer when the caller has just read it (else it is read here).
        """
        pointer = pointer or self.latest()
        if pointer is not None and pointer.published:
            return pointer.key
        return f"{self.kind}_v{self.next_version():08d}"

    @contextmanager
    def writable(self, model: str, dimensions: int | None, recipe: str) -> Iterator[tuple[Any, Pointer | None]]:
        """The line's collection on the server, created for `model` and `recipe` when new; writes are seen at once."""
        pointer = self.latest()
        name = self.collection_name(pointer)
        client = self.owner.client()
        if pointer is None or not pointer.published:
            self._drop_unnamed_of_other_model(client, name, model, dimensions, recipe)
        collection = client.get_or_create_collection(name, **collection_options(model, dimensions, recipe))
        check_model(collection, model, dimensions, recipe)
        yield PagedCollection(collection), pointer

    def _drop_unnamed_of_other_model(self, client: ClientAPI, name: str, model: str, dimensions: int | None,
                                     recipe: str) -> None:
        """A collection no pointer names, of another model or recipe, is left by an abandoned re-embed: start afresh."""
        try:
            found = client.get_collection(name, embedding_function=None)
        except NotFoundError:
            return
        if model_problem(name, found.metadata, model, dimensions, recipe):
            client.delete_collection(name)

    @contextmanager
    def readable(self) -> Iterator[Any]:
        pointer = self.latest()
        if pointer is None or not pointer.published:
            yield None
            return
        yield PagedCollection(self.owner.client().get_collection(pointer.key, embedding_function=None))

    def stage(self, version: int) -> Staged:
        """Nothing to upload: the vectors are on the server already; the stage names the collection."""
        return Staged(version, self.collection_name(), "")

    def swap(self, staged: Staged, vectors: int, model: str | None = None, dimensions: int | None = None,
             changes_cursor: str | None = None, recipe: str | None = None) -> Pointer:
        return self.write_pointer(Pointer(staged.version, staged.key, "", vectors, utc_now(), model, dimensions,
                                          changes_cursor, recipe))

    def open_view(self) -> SearchView | None:
        """The serving collection with this host's lexical index of its version (built here on first open)."""
        pointer = self.latest()
        if pointer is None or not pointer.published:
            return None
        collection: Any = self.owner.client().get_collection(pointer.key, embedding_function=None)
        lexical = FtsIndex(self._lexical_index(collection, pointer.version))
        return SearchView(pointer.version, collection, lexical, lexical.close)

    def _lexical_index(self, collection: Any, version: int) -> Path:
        """The cached index file of `version`, built from `collection` when missing; older versions' are dropped."""
        root = self.owner.scratch_dir / "lexical" / self.kind
        path = root / str(version) / LEXICAL_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # two processes may build it at once
                build_index(collection, Path(tmp) / LEXICAL_FILE)
                os.replace(Path(tmp) / LEXICAL_FILE, path)
            for old in root.iterdir():
                if old.name != str(version):
                    shutil.rmtree(old, ignore_errors=True)
        return path

    def mark_clean(self, version: int) -> None:
        """Nothing local to mark: the server's collection is the only copy."""

    def prune(self) -> list[str]:
        """Drop this kind's collections that no pointer names, beyond the newest `keep_versions`."""
        lines = (self.serving_line(), self.next_line())
        named = {line.collection_name(pointer) for line in lines if (pointer := line.latest()) is not None}
        pattern = re.compile(rf"{re.escape(self.kind)}_v\d{{8}}")
        client = self.owner.client()
        ours = sorted(c.name for c in client.list_collections() if pattern.fullmatch(c.name))
        stale = [name for name in ours[: -self.owner.keep_versions] if name not in named]
        for name in stale:
            client.delete_collection(name)
        return stale

    # ------------------------------------------------------------ exports
    def _exports(self) -> SnapshotStore:
        return SnapshotStore(self.objects, self.owner.scratch_dir, self.kind, self.owner.keep_versions)

    def export(self) -> Pointer | None:
        """Copy the serving collection into a PersistentClient directory and publish it as snapshot mode does.

        The archive takes the serving version's number; exporting a version
        already exported does nothing.
        """
        pointer = self.serving_line().latest()
        if pointer is None or not pointer.published:
            return None
        exports = self._exports()
        done = exports.latest()
        if done is not None and done.version == pointer.version:
            return done
        source = self.owner.client().get_collection(pointer.key, embedding_function=None)
        meta = source.metadata or {}
        model, dimensions = meta.get("model") or pointer.model or "", int(meta.get("dimensions") or 0) or None
        recipe = held_recipe(self.kind, meta.get("recipe"))
        self.owner.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.owner.scratch_dir) as tmp:
            directory = Path(tmp) / "chroma"
            with persistent_collection(directory, self.kind, model, dimensions, recipe) as copy:
                vectors = copy_collection(source, copy)
                build_index(copy, directory / LEXICAL_FILE)
            key = archive_key(self.kind, pointer.version)
            sha = publish_archive(self.objects, directory, key, Path(tmp))
        exported = exports.write_pointer(Pointer(pointer.version, key, sha, vectors, utc_now(), model, dimensions,
                                                 pointer.changes_cursor, recipe))
        exports.prune()
        return exported

    def restore(self, version: int | None) -> Pointer:
        """Load an archived version into a new collection and make it the serving one.

        The new pointer records no change-feed cursor, so the next compaction
        compares the whole collection with the store once.
        """
        exported = self._exports().latest()
        if version is None and exported is None:
            raise VersionNotFound(f"no {self.kind} export to restore: `receipt-embeddings export --kind {self.kind}`")
        key = archive_key(self.kind, version) if version is not None else exported.key  # type: ignore[union-attr]
        if not self.objects.exists(key):
            raise VersionNotFound(f"no archived {self.kind} version {version} ({key})")
        sha = exported.sha256 if exported is not None and exported.key == key else None
        new = self.next_version()
        name = f"{self.kind}_v{new:08d}"  # newer than any pointer names: a left-over of a killed restore at most
        client = self.owner.client()
        self.owner.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.owner.scratch_dir) as tmp:
            directory = Path(tmp) / "chroma"
            fetch_archive(self.objects, key, directory, sha, Path(tmp))
            with persistent_collection(directory, self.kind) as source:
                meta = source.metadata or {}
                model, dimensions = meta.get("model") or "", int(meta.get("dimensions") or 0) or None
                recipe = held_recipe(self.kind, meta.get("recipe"))
                if name in {c.name for c in client.list_collections()}:
                    client.delete_collection(name)
                target = client.create_collection(name, **collection_options(model, dimensions, recipe))
                vectors = copy_collection(source, PagedCollection(target))
        return self.serving_line().write_pointer(Pointer(new, name, "", vectors, utc_now(), model, dimensions,
                                                         recipe=recipe))
