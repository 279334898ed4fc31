"""Opening Chroma collections the one way this project needs them.

Collections are created with `embedding_function=None` and always handed
vectors, so Chroma never tries to download its default model. The model, dimensions and input
recipe are recorded on the collection so that vectors of two kinds are never
mixed in one index.

HNSW settings (measured on 20k receipt rows, see the README): Chroma's
defaults returned hits farther than the true 10th neighbour and two identical
builds answered differently. One build thread makes a build repeatable (the
graph depends on insertion order only), and a wide search beam (ef_search
200) makes the answer exact in practice, for ~1 ms more per query.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chromadb
from chromadb.config import Settings as ChromaSettings

from embedding_assets.domain.vectors import ModelMismatch, model_problem

_SETTINGS = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
HNSW: dict[str, Any] = {"space": "cosine", "ef_construction": 200, "ef_search": 200, "max_neighbors": 32,
                        "num_threads": 1}


def open_client(path: Path) -> Any:
    """A client over a local Chroma directory; the caller closes it."""
    return chromadb.PersistentClient(path=str(path), settings=_SETTINGS)


def collection_options(model: str, dimensions: int | None, recipe: str | None) -> dict[str, Any]:
    """How a new collection is created, in either mode: the index settings, and the model, dimensions and
    recipe its vectors are of (`check_model` compares them on every open). `rows`: every vector records its
    row from the top of its receipt, which collections made before that did not (search reads it)."""
    return {"embedding_function": None, "configuration": {"hnsw": HNSW},
            "metadata": {"model": model, "dimensions": int(dimensions or 0), "recipe": recipe or "", "rows": 1}}


@contextmanager
def persistent_collection(
    path: Path, name: str, model: str | None = None, dimensions: int | None = None, recipe: str | None = None
) -> Iterator[Any]:
    """Open (creating when asked with a model) a collection in a local directory, closed on exit.

    Closing matters: a snapshot is archived from the directory, and an open
    client may still hold unflushed writes.
    """
    client = open_client(path)
    try:
        if model is None:
            yield client.get_collection(name, embedding_function=None)
        else:
            collection = client.get_or_create_collection(
                name,
                **collection_options(model, dimensions, recipe),
            )
            check_model(collection, model, dimensions, recipe or "")
            yield collection
    finally:
        client.close()


def check_model(collection: Any, model: str, dimensions: int | None, recipe: str) -> None:
    problem = model_problem(collection.name, collection.metadata, model, dimensions, recipe)
    if problem:
        raise ModelMismatch(problem)
