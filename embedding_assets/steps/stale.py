"""Which vectors stand for no embedded item any more, found two ways.

- From the store's change feed (`ReceiptStore.vector_changes`): only the
  receipts whose items were deleted, changed text or were sent back since the
  cursor the line's pointer records. The cost follows the changes, not the
  collection; every compaction does this.
- By a full scan, every vector against every SUCCESS item: this also catches
  writers that change the store behind this project's back. The reconcile
  job does it on a schedule, and a line whose pointer records no cursor yet
  (published before the feed existed) gets it once.

`keep` names keys about to become SUCCESS (merged in this compaction), whose
vectors must stay although the store does not say SUCCESS yet.
"""

from __future__ import annotations

from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.models import Status, parse_item_key
from embedding_assets.domain.ports import ReceiptStore, VectorCollection, VectorLine
from embedding_assets.domain.vectors import iter_metadatas


def stale_from_changes(store: ReceiptStore, kind: str, collection: VectorCollection, keep: set[str],
                       cursor: str) -> tuple[list[str], list[str], str, int]:
    """(stale vector ids, SUCCESS items to send again, the feed's new cursor, changes read) for the changes
    after `cursor`.

    A row vector whose every line is gone or unembedded is stale. So is one
    with a line deleted from the store: its text (and maybe its id) is that
    line's, so it goes, and the row's remaining SUCCESS lines are sent again
    to be embedded as the row they now make.
    """
    changed, new_cursor = store.vector_changes(kind, cursor)
    candidates: dict[str, list[str]] = {}
    for image_id, receipt_id in sorted({_receipt_of(key) for key in changed}):
        got = collection.get(where={"$and": [{"image_id": image_id}, {"receipt_id": receipt_id}]},
                             include=["metadatas"])
        for vector_id, meta in zip(got["ids"], got["metadatas"]):
            candidates[vector_id] = item_keys_of_vector(vector_id, meta or {})
    items = store.items_by_key(kind, sorted({key for keys in candidates.values() for key in keys}))
    success = {key for key, item in items.items() if item.status == Status.SUCCESS}
    stale: list[str] = []
    resend: list[str] = []
    for vector_id, keys in candidates.items():
        if any(key in keep for key in keys):
            continue
        if not any(key in success for key in keys):
            stale.append(vector_id)
        elif any(key not in items for key in keys):
            stale.append(vector_id)
            resend += [key for key in keys if key in success]
    return stale, resend, new_cursor, len(changed)


def changes_waiting(store: ReceiptStore, vectors: VectorLine) -> int:
    """Changed items the line being built has not applied yet (0 before anything is published)."""
    pointer = vectors.target().latest()
    if pointer is None or not pointer.published or pointer.changes_cursor is None:
        return 0
    return len(store.vector_changes(vectors.kind, pointer.changes_cursor)[0])


def trim_feed(store: ReceiptStore, vectors: VectorLine) -> int:
    """Forget the changes both lines have applied; how many. The caller holds the kind's compaction lease.

    The serving line counts during a re-embed too: if the re-embed is
    abandoned, it goes on from its own cursor. A line without a published
    cursor reads no feed: it starts at the head, or scans once.
    """
    pointers = [line.latest() for line in (vectors.serving_line(), vectors.next_line())]
    cursors = [p.changes_cursor for p in pointers if p is not None and p.published and p.changes_cursor is not None]
    return store.trim_changes(vectors.kind, cursors)


def stale_by_scan(store: ReceiptStore, kind: str, collection: VectorCollection, keep: set[str]) -> list[str]:
    """Every vector whose items are all neither SUCCESS nor in `keep`.

    The status listing may lag the items (DynamoDB's index), so what it
    leaves out is read again, exactly, before a vector is called stale.
    """
    success = keep | {item.key for item in store.items_with_status(kind, Status.SUCCESS.value)}
    rows = ((vid, item_keys_of_vector(vid, meta or {})) for vid, meta in iter_metadatas(collection))
    candidates = {vid: keys for vid, keys in rows if not any(key in success for key in keys)}
    current = store.items_by_key(kind, sorted({key for keys in candidates.values() for key in keys}))
    return [vid for vid, keys in candidates.items()
            if not any(key in current and current[key].status == Status.SUCCESS for key in keys)]


def delete_vectors(collection: VectorCollection, ids: list[str], chunk_size: int) -> int:
    for start in range(0, len(ids), chunk_size):
        collection.delete(ids=ids[start:start + chunk_size])
    return len(ids)


def _receipt_of(key: str) -> tuple[str, int]:
    parts = parse_item_key(key)
    return parts["image_id"], parts["receipt_id"]
