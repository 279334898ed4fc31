"""Nearest receipt lines or words to a query, from the latest published snapshot.

Search reads its own extracted copy of the pointer's version, never the
compactor's working copy, so it answers while a compaction runs and always
from a whole, published version. The query is embedded with the model and
size recorded on that collection, so search keeps answering while a
re-embed with another model is built beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedding_assets.domain.ports import BatchProvider, VectorLine


@dataclass
class Hit:
    id: str
    text: str
    merchant_name: str | None
    image_id: str
    receipt_id: int
    distance: float
    metadata: dict[str, Any]


class NoSnapshot(LookupError):
    """Nothing has been published for this kind yet."""


def search(
    snapshots: VectorLine, provider: BatchProvider, text: str, k: int = 5, merchant: str | None = None
) -> list[Hit]:
    if not text.strip():
        raise ValueError("search text is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with snapshots.readable() as collection:
        if collection is None:
            raise NoSnapshot(f"no {snapshots.kind} snapshot published yet: run the pipeline first")
        meta = collection.metadata or {}
        query = provider.embed([text], meta.get("model"), int(meta.get("dimensions") or 0) or None)
        result = collection.query(
            query_embeddings=query,
            n_results=k,
            where={"merchant_name": merchant} if merchant else None,
            include=["metadatas", "documents", "distances"],
        )
    hits = []
    for vid, doc, meta, dist in zip(
        result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
    ):
        meta = meta or {}
        hits.append(
            Hit(
                vid,
                doc or meta.get("text", ""),
                meta.get("merchant_name"),
                meta.get("image_id", ""),
                int(meta.get("receipt_id", 0)),
                float(dist),
                meta,
            )
        )
    return hits
