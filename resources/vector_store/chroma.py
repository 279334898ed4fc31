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

_SETTINGS = ChromaSettings(anonymized_telemetry=False, allow_reset=False)


class ModelMismatch(RuntimeError):
    """The collection holds vectors of another model or size than the configured one."""


@contextmanager
def persistent_collection(path: Path, name: str, model: str | None = None, dimensions: int | None = None) -> Iterator[Any]:
    """Open (creating when asked with a model) a collection in a local directory, closed on exit.

    Closing matters: a snapshot is archived from the directory, and an open
    client may still hold unflushed writes.
    """
    client = chromadb.PersistentClient(path=str(path), settings=_SETTINGS)
    try:
        if model is None:
            yield client.get_collection(name, embedding_function=None)
        else:
            collection = client.get_or_create_collection(
                name, embedding_function=None,
                metadata={"hnsw:space": "cosine", "model": model, "dimensions": int(dimensions or 0)},
            )
            check_model(collection, model, dimensions)
            yield collection
    finally:
        client.close()


def check_model(collection: Any, model: str, dimensions: int | None) -> None:
    meta = collection.metadata or {}
    if meta.get("model") != model or int(meta.get("dimensions") or 0) != int(dimensions or 0):
        raise ModelMismatch(
            f"collection {collection.name!r} holds {meta.get('model')} vectors of {meta.get('dimensions')} dimensions, "
            f"but the configuration asks for {model} with {dimensions}: set EMBEDDING_MODEL/EMBEDDING_DIMENSIONS back, "
            f"or run `receipt-embeddings reembed --kind {collection.name}` to build a {model} collection beside it"
        )


def iter_metadatas(collection: Any, page: int = 5000) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (id, metadata) in the collection, a page at a time."""
    offset = 0
    while True:
        got = collection.get(limit=page, offset=offset, include=["metadatas"])
        if not got["ids"]:
            return
        yield from zip(got["ids"], got["metadatas"])
        offset += len(got["ids"])
