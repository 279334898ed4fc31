"""The vector-store side of the ports: collections, their lexical index, and the versioned lines holding them.

Kept apart from `ports` (which re-exports every name) so each module stays small;
the two modes implementing `VectorLine` are snapshot archives and collections on
a Chroma server (`resources.vector_store`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from embedding_assets.domain.vectors import Pointer, Staged


class VectorCollection(Protocol):
    """One opened collection: the part of Chroma's `Collection` API the steps use (a Chroma collection is one,
    local or on a server)."""

    @property
    def name(self) -> str: ...

    @property
    def metadata(self) -> Any: ...

    def count(self) -> int: ...

    def get(self, ids: Any = None, where: Any = None, limit: Any = None, offset: Any = None,
            include: Any = ...) -> Any: ...

    def add(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None) -> None: ...

    def upsert(self, ids: Any, embeddings: Any = None, metadatas: Any = None, documents: Any = None) -> None: ...

    def delete(self, ids: Any = None, where: Any = None) -> None: ...

    def query(self, query_embeddings: Any = None, n_results: int = 10, where: Any = None,
              include: Any = ...) -> Any: ...


class LexicalIndex(Protocol):
    """A keyword index over the item texts of one published version (same items as its vectors)."""

    def rank(self, text: str, limit: int | None, receipt: str | None = None,
             merchant: str | None = None) -> list[tuple[str, float]]:
        """(id, score) of the items matching `text`, best (highest score) first, all without a `limit`.

        `receipt` is `IMAGE_ID:RECEIPT_ID`; rows of equal score hold the same query words.
        """

    def merchant_names(self, merchant: str) -> list[str]:
        """The stored spellings of a merchant name, matched case-insensitively."""


@dataclass
class SearchView:
    """One published version opened for search: its collection and its lexical index, closed together.

    Kept open between queries (opening a collection costs tens of ms); a new
    published version means a new view.
    """

    version: int
    collection: VectorCollection
    lexical: LexicalIndex
    close: Callable[[], None]


class VectorLine(Protocol):
    """One line (serving or NEXT) of a kind's collection versions, wherever they are kept.

    Writing is: `writable()` (a working collection at the pointer's version),
    `stage(version)` once it is closed (readers could fetch it, none is told),
    then `swap` (the atomic switch) and `mark_clean`. A crash anywhere before
    the swap leaves the old version serving; see each adapter for how it
    notices a dirty working copy.
    """

    kind: str
    line: str
    # Whether writes land in the published collection itself (a server), seen before any swap; a snapshot
    # line writes a private working copy.
    writes_in_place: bool

    def next_line(self) -> VectorLine: ...

    def serving_line(self) -> VectorLine: ...

    def target(self) -> VectorLine:
        """The line compaction writes to and the invariant is checked on: NEXT while a re-embed runs."""

    def latest(self) -> Pointer | None: ...

    def next_version(self) -> int:
        """One past the newest version of either line, so the two never share a version."""

    def write_pointer(self, pointer: Pointer) -> Pointer: ...

    def clear(self) -> None:
        """Remove this line's pointer (NEXT, once switched or abandoned)."""

    def writable(
        self, model: str, dimensions: int | None, recipe: str
    ) -> AbstractContextManager[tuple[VectorCollection, Pointer | None]]:
        """The working collection at the pointer's version (created for `model` when new), closed on exit.

        Raises ModelMismatch when it holds another model's vectors.
        """

    def readable(self) -> AbstractContextManager[VectorCollection | None]:
        """The latest published version for reading, or None when nothing is published."""

    def stage(self, version: int) -> Staged:
        """Publishable copy of the closed working collection, with its lexical index; not yet visible."""

    def open_view(self) -> SearchView | None:
        """The latest published version opened for search, or None when nothing is published."""

    def swap(self, staged: Staged, vectors: int, model: str | None = None, dimensions: int | None = None,
             changes_cursor: str | None = None, recipe: str | None = None) -> Pointer:
        """The atomic switch readers see; the caller re-checks its lease right before."""

    def mark_clean(self, version: int) -> None: ...

    def prune(self) -> list[str]:
        """Drop old versions beyond those kept; both lines' current versions are always kept."""

    def export(self) -> Pointer | None:
        """Put the serving version in the snapshot layout (`snapshots/{kind}/{version}/chroma.tar` and its pointer).

        Returns the snapshot pointer, None when nothing is published. Snapshot
        mode publishes every version that way already; server mode copies
        its serving collection out. The caller holds the compaction lease.
        """

    def restore(self, version: int | None) -> Pointer:
        """Serve an archived version (the newest export when None) as the serving line's next version.

        Raises VersionNotFound. The caller holds the compaction lease and
        squares the store's items with what the restored version holds.
        """


class VectorStore(Protocol):
    """Where each kind's collection versions live (snapshot archives, or collections on a Chroma server)."""

    def line(self, kind: str) -> VectorLine:
        """The kind's serving line (its `next_line()` is the re-embed's)."""
