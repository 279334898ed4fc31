"""reconcile: every vector against every item, for the changes no change feed saw.

A writer that changes the store behind this project's back (a row deleted in
the console, another tool) leaves nothing in the feed that compaction reads.
Reconcile scans the whole collection against the store's SUCCESS items under
the compaction lease: vectors standing for no SUCCESS item are removed and a
new version published; SUCCESS items with no vector are sent back to NONE,
so the ordinary pipeline embeds them again. Its cost grows with the
collection, so it runs on a schedule (daily by default) and on demand, not
with every compaction. A crash before the swap leaves the old version serving
and the next reconcile finds the same; a crash after it leaves only the
requeue to do, which the next reconcile does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.lease import Lease, compaction_lease
from embedding_assets.domain.models import Status
from embedding_assets.domain.ports import ReceiptStore, VectorLine
from embedding_assets.domain.vectors import held_recipe, iter_metadatas
from embedding_assets.steps.consistency import SAMPLE
from embedding_assets.steps.parts import Progress
from embedding_assets.steps.stale import delete_vectors


@dataclass
class ReconcileReport:
    kind: str
    vectors_before: int = 0
    success_items: int = 0
    removed: int = 0
    requeued: int = 0
    version: int | None = None
    removed_sample: list[str] = field(default_factory=list)
    requeued_sample: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Nothing was out of place: every writer went through the project's store methods."""
        return not (self.removed or self.requeued)


def reconcile(store: ReceiptStore, vectors: VectorLine, lock_ttl_seconds: float, heartbeat_seconds: float,
              chunk_size: int, progress: Progress = print) -> ReconcileReport:
    """Repair the line being built (serving, or NEXT during a re-embed) against the store."""
    started = time.monotonic()
    kind = vectors.kind
    report = ReconcileReport(kind)
    with Lease(store, compaction_lease(kind), lock_ttl_seconds, heartbeat_seconds) as lease:
        line = vectors.target()
        pointer = line.latest()
        if pointer is None or not pointer.published or pointer.model is None:
            progress(f"{kind}: nothing published yet, nothing to reconcile")
            return report
        cursor = store.changes_head(kind)
        success = {item.key for item in store.items_with_status(kind, Status.SUCCESS.value)}
        report.success_items = len(success)
        recipe = held_recipe(kind, pointer.recipe)
        with line.writable(pointer.model, pointer.dimensions, recipe or "") as (collection, _):
            rows = {vector_id: item_keys_of_vector(vector_id, meta or {})
                    for vector_id, meta in iter_metadatas(collection)}
            # The status listing may lag the items (DynamoDB's index): a vector's item it did not list as
            # SUCCESS is read again, exactly, before its vector is judged.
            doubtful = sorted({key for keys in rows.values() for key in keys if key not in success})
            present = store.items_by_key(kind, doubtful) if doubtful else {}
            success |= {key for key, item in present.items() if item.status == Status.SUCCESS}
            stale = [vector_id for vector_id, keys in rows.items() if not any(key in success for key in keys)]
            # A row vector with a line deleted from the store carries that line's text: it goes, and the
            # row's SUCCESS lines, no longer covered, are sent again below.
            stale += [vector_id for vector_id, keys in rows.items() if any(key in success for key in keys)
                      and any(key not in success and key not in present for key in keys)]
            gone = set(stale)
            covered = {key for vector_id, keys in rows.items() if vector_id not in gone for key in keys}
            report.vectors_before = collection.count()
            report.removed = delete_vectors(collection, stale, chunk_size)
            remaining = collection.count()
        report.removed_sample = sorted(stale)[:SAMPLE]
        if report.removed:
            staged = line.stage(vectors.next_version())
            lease.check()
            pointer = line.swap(staged, remaining, pointer.model, pointer.dimensions, cursor, recipe)
            line.mark_clean(pointer.version)
            progress(f"{kind}: removed {report.removed} vectors of items gone from the store; "
                     f"published v{pointer.version}")
        missing = sorted(success - covered)
        report.requeued = store.requeue(kind, Status.SUCCESS.value, missing) if missing else 0
        report.requeued_sample = missing[:SAMPLE]
        if missing:
            progress(f"{kind}: {report.requeued} SUCCESS items had no vector; sent back to be embedded")
        report.version = pointer.version
    report.seconds = time.monotonic() - started
    return report
