"""The invariants the asset checks watch, computed without Dagster.

SUCCESS <=> present in the latest snapshot of the line being built (the
serving one, or NEXT during a re-embed): an item is present when a vector
stands for it (a line vector covers every line of its row).

`snapshot_agreement` compares everything with everything (the reconcile
job's check); `sampled_agreement` checks what one compaction touched plus a
random sample of vectors, at a cost that does not grow with the collection.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.models import Status, parse_item_key
from embedding_assets.domain.ports import ReceiptStore, VectorCollection, VectorLine
from embedding_assets.domain.vectors import iter_metadatas

SAMPLE = 10
# Vectors drawn at random per compaction check, in pages at random offsets.
CHECK_SAMPLE_VECTORS = 200
_SAMPLE_PAGE = 50


@dataclass
class Agreement:
    """How the store's SUCCESS items and the latest snapshot's vectors line up.

    A line vector stands for its whole visual row. A row member that is not
    SUCCESS (its text changed, it is being re-embedded) rides on a vector kept
    for its SUCCESS neighbours: counted as `awaiting_reembed`, not an error.
    A vector standing for no SUCCESS item at all is an error (`extra`).
    """

    success: int
    in_snapshot: int
    missing_count: int
    extra_count: int
    awaiting_reembed: int = 0
    missing_sample: list[str] = field(default_factory=list)
    extra_sample: list[str] = field(default_factory=list)
    scope: str = "every item and every vector"

    @property
    def ok(self) -> bool:
        return self.missing_count == 0 and self.extra_count == 0


def item_keys_in(line: VectorLine) -> set[str]:
    """Every item a line's latest published version holds a vector for."""
    with line.readable() as collection:
        if collection is None:
            return set()
        return {
            key for vector_id, meta in iter_metadatas(collection) for key in item_keys_of_vector(vector_id, meta or {})
        }


def snapshot_agreement(store: ReceiptStore, vectors: VectorLine) -> Agreement:
    """Every vector against every SUCCESS item. Where the status listing and the vectors disagree, the
    items are read again, exactly: the listing may lag the items (DynamoDB's index, just after a compaction)."""
    line = vectors.target()
    success = {item.key for item in store.items_with_status(line.kind, Status.SUCCESS.value)}
    with line.readable() as collection:
        listed = iter_metadatas(collection) if collection is not None else iter(())
        rows = {vector_id: item_keys_of_vector(vector_id, meta or {}) for vector_id, meta in listed}
    covered = {key for keys in rows.values() for key in keys}
    doubtful = sorted((covered - success) | (success - covered))
    exact = store.items_by_key(line.kind, doubtful) if doubtful else {}
    success = (success - set(doubtful)) | {key for key, item in exact.items() if item.status == Status.SUCCESS}
    extra = [vector_id for vector_id, keys in rows.items() if not any(key in success for key in keys)]
    extra_keys = {key for vector_id in extra for key in rows[vector_id]}
    missing = sorted(success - covered)
    awaiting = len(covered - success - extra_keys)
    return Agreement(
        len(success), len(covered), len(missing), len(extra), awaiting, missing[:SAMPLE], sorted(extra)[:SAMPLE]
    )


def sampled_agreement(store: ReceiptStore, vectors: VectorLine, touched: Sequence[str],
                      sample: int = CHECK_SAMPLE_VECTORS, rng: random.Random | None = None) -> Agreement:
    """The invariant on the keys a compaction touched, and on a random sample of the collection's vectors."""
    line = vectors.target()
    keys = sorted(set(touched))
    with line.readable() as collection:
        found = _vectors_for(collection, keys) if collection is not None else {}
        total = collection.count() if collection is not None else 0
        drawn = _draw(collection, total, sample, rng or random.Random()) if collection is not None else {}
    judged = {**found, **drawn}
    items = store.items_by_key(line.kind, sorted(set(keys) | {k for ks in judged.values() for k in ks}))
    success = {key for key, item in items.items() if item.status == Status.SUCCESS}
    covered = {k for ks in judged.values() for k in ks}
    missing = [key for key in keys if key in success and key not in covered]
    extra = sorted(vid for vid, ks in judged.items() if not any(k in success for k in ks))
    return Agreement(
        len(success & set(keys)), len(covered), len(missing), len(extra), 0, missing[:SAMPLE], extra[:SAMPLE],
        scope=f"{len(keys)} items this compaction touched, and {len(drawn)} of {total} vectors drawn at random",
    )


def _vectors_for(collection: VectorCollection, keys: Sequence[str], chunk: int = 5000) -> dict[str, list[str]]:
    """The vectors standing for any of `keys`: by id first, then by receipt for row members and deleted items."""
    found: dict[str, list[str]] = {}
    for start in range(0, len(keys), chunk):
        got = collection.get(ids=list(keys[start:start + chunk]), include=["metadatas"])
        found.update((vid, item_keys_of_vector(vid, meta or {})) for vid, meta in zip(got["ids"], got["metadatas"]))
    covered = {k for ks in found.values() for k in ks}
    receipts = sorted({(p["image_id"], p["receipt_id"]) for p in map(parse_item_key, set(keys) - covered)})
    for image_id, receipt_id in receipts:
        got = collection.get(where={"$and": [{"image_id": image_id}, {"receipt_id": receipt_id}]},
                             include=["metadatas"])
        found.update((vid, item_keys_of_vector(vid, meta or {})) for vid, meta in zip(got["ids"], got["metadatas"]))
    return found


def _draw(collection: VectorCollection, total: int, sample: int, rng: random.Random) -> dict[str, list[str]]:
    """About `sample` vectors, in pages read at random offsets."""
    drawn: dict[str, list[str]] = {}
    for _ in range(math.ceil(min(total, sample) / _SAMPLE_PAGE)):
        offset = rng.randrange(max(1, total - _SAMPLE_PAGE + 1))
        got = collection.get(limit=_SAMPLE_PAGE, offset=offset, include=["metadatas"])
        drawn.update((vid, item_keys_of_vector(vid, meta or {})) for vid, meta in zip(got["ids"], got["metadatas"]))
    return drawn
