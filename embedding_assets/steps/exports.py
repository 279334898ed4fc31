"""Exporting a kind's serving version into the snapshot layout, and restoring one, under the compaction lease.

In snapshot mode every published version is already such an archive; in
server mode the export copies the serving collection out, so users keep
restorable versions there too (see the vector-store adapters).

A restored version may not hold what the store says is embedded: items the
store calls SUCCESS that it holds no vector for, or a vector of another batch
than the item's (an older text), go back to NONE here and are embedded again;
vectors it holds for items that are not SUCCESS go at the next compaction,
which compares the whole collection with the store once (a restored pointer
records no change-feed cursor). A restore is refused while a
re-embed runs: the NEXT line is built against the serving one it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.lease import Lease, compaction_lease
from embedding_assets.domain.models import Status
from embedding_assets.domain.ports import ReceiptStore, VectorLine
from embedding_assets.domain.vectors import Pointer, iter_metadatas


class RestoreRefused(RuntimeError):
    """A re-embed is under way: finish or abandon it before restoring."""


@dataclass
class Restored:
    kind: str
    pointer: Pointer
    requeued: int


def export_serving(store: ReceiptStore, serving: VectorLine, lease_seconds: float,
                   heartbeat_seconds: float) -> Pointer | None:
    """The snapshot pointer of the serving version, exported first when needed; None when nothing is published."""
    with Lease(store, compaction_lease(serving.kind), lease_seconds, heartbeat_seconds):
        return serving.export()


def restore_serving(store: ReceiptStore, serving: VectorLine, version: int | None, lease_seconds: float,
                    heartbeat_seconds: float) -> Restored:
    """Serve archived `version` (the newest export when None) and send again what it does not hold."""
    with Lease(store, compaction_lease(serving.kind), lease_seconds, heartbeat_seconds) as lease:
        building = serving.next_line().latest()
        if building is not None:
            raise RestoreRefused(
                f"{serving.kind}: a re-embed to {building.model} is under way; let it finish or abandon it "
                f"(`receipt-embeddings reembed --kind {serving.kind}` with the serving model) before restoring"
            )
        lease.check()
        pointer = serving.restore(version)
        requeued = _requeue_not_held(store, serving)
    return Restored(serving.kind, pointer, requeued)


def _requeue_not_held(store: ReceiptStore, line: VectorLine) -> int:
    """SUCCESS items the line's version holds no vector of their own batch for go back to NONE."""
    held: dict[str, str | None] = {}
    with line.readable() as collection:
        for vector_id, meta in iter_metadatas(collection) if collection is not None else ():
            for key in item_keys_of_vector(vector_id, meta or {}):
                held[key] = (meta or {}).get("batch_id")
    keys = [item.key for item in store.items_with_status(line.kind, Status.SUCCESS.value)
            if item.key not in held or held[item.key] != item.batch_id]
    return store.requeue(line.kind, Status.SUCCESS.value, keys)
