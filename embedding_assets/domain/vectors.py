"""What a published collection version is, whatever stores it.

Two lines of versions share one numbering: `SERVING` (`LATEST`) is what
search answers from; `NEXT` exists only while a kind is re-embedded with
another model (see `steps.reembed`), built beside it until it replaces it.
A pointer names the version, where its vectors are, and the model and size
they were embedded with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from embedding_assets.domain.stamps import utc_now

SERVING = "LATEST"
NEXT = "NEXT"


class ModelMismatch(RuntimeError):
    """The collection holds vectors of another model or size than the configured one."""


class CorruptSnapshot(RuntimeError):
    """A stored version does not match its checksum or holds unsafe paths."""


@dataclass(frozen=True)
class Pointer:
    """A published version (or, with no `key`, a NEXT line started but not yet published).

    `model`/`dimensions` are None in pointers written before they were recorded.
    """

    version: int
    key: str
    sha256: str
    vectors: int
    created_at: str
    model: str | None = None
    dimensions: int | None = None
    # How far the store's change feed has been applied to this version; None before the feed existed.
    changes_cursor: str | None = None

    @property
    def published(self) -> bool:
        return bool(self.key)

    @property
    def vectors_of(self) -> str:
        """What the version's vectors are, for messages: the model alone does not say the size."""
        return f"{self.model}, {self.dimensions} dimensions" if self.model else "model not recorded"

    @classmethod
    def unpublished(cls, model: str, dimensions: int | None) -> Pointer:
        """A NEXT line opened for `model` before anything is merged into it."""
        return cls(0, "", "", 0, utc_now(), model, dimensions)


@dataclass(frozen=True)
class Staged:
    """A version written where readers can fetch it, not yet named by the pointer."""

    version: int
    key: str
    sha256: str


def model_problem(name: str, metadata: dict | None, model: str, dimensions: int | None) -> str | None:
    """Why a collection with this metadata cannot take vectors of `model`/`dimensions`, or None."""
    meta = metadata or {}
    if meta.get("model") == model and int(meta.get("dimensions") or 0) == int(dimensions or 0):
        return None
    return (
        f"collection {name!r} holds {meta.get('model')} vectors of {meta.get('dimensions')} dimensions, "
        f"but the configuration asks for {model} with {dimensions}: set EMBEDDING_MODEL/EMBEDDING_DIMENSIONS back, "
        f"or run `receipt-embeddings reembed --kind {name}` to build a {model} collection beside it"
    )


def iter_metadatas(collection: Any, page: int = 5000) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (id, metadata) in a collection, a page at a time."""
    offset = 0
    while True:
        got = collection.get(limit=page, offset=offset, include=["metadatas"])
        if not got["ids"]:
            return
        yield from zip(got["ids"], got["metadatas"])
        offset += len(got["ids"])
