"""What a published collection version is, whatever stores it.

Two lines of versions share one numbering: `SERVING` (`LATEST`) is what
search answers from; `NEXT` exists only while a kind is re-embedded with
another model (see `steps.reembed`), built beside it until it replaces it.
A pointer names the version, where its vectors are, and the model, size and
input recipe (see `domain.formatting`) they were embedded with: a collection
never mixes two of any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from embedding_assets.domain.formatting import LEGACY_RECIPES
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

    `model`/`dimensions`/`recipe` are None in pointers written before they were recorded.
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
    recipe: str | None = None

    @property
    def published(self) -> bool:
        return bool(self.key)

    @property
    def vectors_of(self) -> str:
        """What the version's vectors are, for messages: the model alone does not say the size."""
        if not self.model:
            return "model not recorded"
        return f"{self.model}, {self.dimensions} dimensions, recipe {self.recipe or 'not recorded'}"

    @classmethod
    def unpublished(cls, model: str, dimensions: int | None, recipe: str) -> Pointer:
        """A NEXT line opened for `model` and `recipe` before anything is merged into it."""
        return cls(0, "", "", 0, utc_now(), model, dimensions, recipe=recipe)


@dataclass(frozen=True)
class Staged:
    """A version written where readers can fetch it, not yet named by the pointer."""

    version: int
    key: str
    sha256: str


def held_recipe(kind: str, recorded: Any) -> str | None:
    """The recipe a collection holds: collections from before recipes were recorded hold the seed's context form."""
    return str(recorded) if recorded else LEGACY_RECIPES.get(kind)


def model_problem(name: str, metadata: dict | None, model: str, dimensions: int | None, recipe: str) -> str | None:
    """Why a collection with this metadata cannot take vectors of `model`/`dimensions`/`recipe`, or None."""
    meta = metadata or {}
    held = held_recipe(name, meta.get("recipe"))
    if meta.get("model") == model and int(meta.get("dimensions") or 0) == int(dimensions or 0) and held == recipe:
        return None
    return (
        f"collection {name!r} holds {meta.get('model')} vectors of {meta.get('dimensions')} dimensions "
        f"(recipe {held}), but the configuration asks for {model} with {dimensions} (recipe {recipe}): set "
        f"EMBEDDING_MODEL/EMBEDDING_DIMENSIONS/{name.upper()}_RECIPE back, "
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
