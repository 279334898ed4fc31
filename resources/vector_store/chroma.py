"""Opening Chroma collections the one way this project needs them.

Collections are created with `embedding_function=None` and always handed
vectors, so Chroma never tries to download its default model. The model and
dimensions are recorded on the collection so that vectors of two models are
never mixed in one index.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chromadb
from chromadb.config import Settings as ChromaSettings

from embedding_assets.domain.vectors import ModelMismatch, model_problem

SETTINGS = ChromaSettings(anonymized_telemetry=False, allow_reset=False)


def collection_metadata(model: str, dimensions: int | None) -> dict[str, Any]:
    """What a new collection records, in either mode: the index's distance, and the model its vectors are of."""
    return {"hnsw:space": "cosine", "model": model, "dimensions": int(dimensions or 0)}


@contextmanager
def persistent_collection(
    path: Path, name: str, model: str | None = None, dimensions: int | None = None
) -> Iterator[Any]:
    """Open (creating when asked with a model) a collection in a local directory, closed on exit.

    Closing matters: a snapshot is archived from the directory, and an open
    client may still hold unflushed writes.
    """
    client = chromadb.PersistentClient(path=str(path), settings=SETTINGS)
    try:
        if model is None:
            yield client.get_collection(name, embedding_function=None)
        else:
            collection = client.get_or_create_collection(
                name,
                embedding_function=None,
                metadata=collection_metadata(model, dimensions),
            )
            check_model(collection, model, dimensions)
            yield collection
    finally:
        client.close()  # type: ignore[attr-defined]  # on the client since chromadb 1.0, missing from its stubs


def check_model(collection: Any, model: str, dimensions: int | None) -> None:
    problem = model_problem(collection.name, collection.metadata, model, dimensions)
    if problem:
        raise ModelMismatch(problem)
