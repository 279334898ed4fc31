"""Merging deltas into the kind's Chroma snapshot, then marking items embedded.

Order is what makes it crash-safe: apply deltas to the working copy, upload
the new version, re-check the lease, swap the pointer, and only then mark
items SUCCESS and batches COMPACTED. A crash before the swap leaves the old
version current and the items PENDING; a crash after it leaves vectors that
the next run finds already present (same id, same batch) and skips, so it
only has to mark the items.

Chroma `add` of new ids is ~8x faster than `upsert` of existing ones, so each
chunk is split: new ids are added, ids holding another batch's vector are
upserted, ids already holding this batch's vector are skipped.

Stale vectors (their items deleted, re-texted or sent back) are found from
the store's change feed since the cursor the pointer records, and from the
merged vectors whose items changed while their batch was out (see `stale`);
so the work follows the deltas and the changes, not the collection. The new
pointer records how far the feed was applied.

During a re-embed (see `rebuild`) the same steps write to the NEXT line, and
after marking, the compactor switches search over once NEXT holds everything.
A delta embedded with another model than the configured one (in flight when
the re-embed started) is never merged: its items go back to NONE.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from embedding_assets.domain.deltas import read_delta, verify_delta
from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.lease import Lease, compaction_lease
from embedding_assets.domain.models import BatchRecord, Stage, Status
from embedding_assets.domain.ports import ObjectStore, ReceiptStore, VectorCollection, VectorLine
from embedding_assets.domain.vectors import NEXT, SERVING, Pointer, held_recipe
from embedding_assets.steps.reembed import compaction_target, switch_if_complete
from embedding_assets.steps.stale import delete_vectors, stale_by_scan, stale_from_changes, trim_feed

# (vector id, the item keys it stands for), per merged delta
Merged = list[tuple[str, list[str]]]

log = logging.getLogger(__name__)


@dataclass
class CompactionReport:
    kind: str
    deltas: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # delta rows no longer this batch's to merge (their items were sent again since)
    removed: int = 0
    changes_read: int = 0
    changes_trimmed: int = 0
    resent: int = 0  # SUCCESS lines sent again because a line of their row was deleted
    full_scan: bool = False
    items_marked: int = 0
    version: int | None = None
    vectors: int = 0
    published: bool = False
    line: str = SERVING
    switched: bool = False
    superseded: int = 0
    prompt_tokens: int = 0  # of the deltas merged, as their batches' usage recorded them
    cost_usd: float = 0.0
    pruned: list[str] = field(default_factory=list)
    # Item keys this compaction marked or whose vectors it removed: what the asset check verifies first.
    touched: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _line_name(line: VectorLine) -> str:
    return "re-embed (NEXT)" if line.line == NEXT else "serving"


@dataclass
class Compactor:
    store: ReceiptStore
    objects: ObjectStore
    vectors: VectorLine
    model: str
    dimensions: int | None
    recipe: str
    lock_ttl_seconds: float = 300.0
    heartbeat_seconds: float = 30.0
    chunk_size: int = 5000
    delete_processed_deltas: bool = False
    work_dir: Path = Path(".data/tmp")
    max_attempts: int = 3

    @property
    def kind(self) -> str:
        return self.vectors.kind

    def run(self, progress: Callable[[str], None] = log.info) -> CompactionReport:
        started = time.monotonic()
        report = CompactionReport(self.kind)
        with Lease(self.store, compaction_lease(self.kind), self.lock_ttl_seconds, self.heartbeat_seconds) as lease:
            target = compaction_target(self.vectors, self.model, self.dimensions, self.recipe)
            report.line = target.line
            records = self.store.list_batches(self.kind, [Stage.DELTA_READY])
            report.deltas = len(records)
            report.prompt_tokens = sum(r.prompt_tokens for r in records)
            report.cost_usd = round(sum(r.cost_usd for r in records), 8)
            merged: dict[str, Merged] = {}
            with target.writable(self.model, self.dimensions, self.recipe) as (collection, pointer):
                for record in records:
                    merged[record.batch_id] = self._apply(collection, record, report, lease)
                    progress(f"{self.kind}: merged delta {record.batch_id} ({record.vectors} vectors)")
                owned = self._still_owned(merged)
                stale, cursor = self._stale(collection, pointer, merged, owned, report)
                report.removed = delete_vectors(collection, stale, self.chunk_size)
                vectors = collection.count()
            unpublished = pointer is None or not pointer.published
            # A run killed mid-merge wrote into a server collection in place: the count the pointer says may
            # differ, or rows it replaced are found holding this batch's vectors; a new version makes every
            # host read them anew (its lexical index is built per version).
            miscounted = pointer is not None and pointer.published and pointer.vectors != vectors
            rerun = target.writes_in_place and bool(records and report.unchanged)
            if report.added or report.updated or report.removed or (unpublished and records) or miscounted or rerun:
                staged = target.stage(self.vectors.next_version())
                lease.check()
                pointer = target.swap(staged, vectors, self.model, self.dimensions, cursor, self.recipe)
                report.published = True
                progress(f"{self.kind}: published {_line_name(target)} snapshot v{staged.version} "
                         f"({vectors} vectors, {report.removed} removed)")
            elif pointer is not None and pointer.published and cursor != pointer.changes_cursor:
                lease.check()  # the changes read touched no vector: the same version has now applied them
                pointer = target.write_pointer(replace(pointer, changes_cursor=cursor))
            if pointer is None or not pointer.published:
                report.seconds = time.monotonic() - started
                return report
            target.mark_clean(pointer.version)
            report.version, report.vectors = pointer.version, pointer.vectors
            for record in records:
                keys = [key for _, item_keys in merged[record.batch_id] for key in item_keys]
                report.items_marked += self.store.mark_success(self.kind, keys, record.batch_id)
                report.touched.extend(keys)
                self.store.update_batch(record.batch_id, stage=Stage.COMPACTED)
                if self.delete_processed_deltas and record.delta_key:
                    self.objects.delete(record.delta_key)
            if target.line == NEXT:
                lease.check()
                switched = switch_if_complete(self.store, self.vectors)
                report.switched = switched is not None
                if switched:
                    progress(f"{self.kind}: re-embed complete, search now answers from v{switched.version} "
                             f"({switched.vectors_of}, {switched.vectors} vectors)")
            report.pruned = self.vectors.prune()
            report.changes_trimmed = trim_feed(self.store, self.vectors)
        report.seconds = time.monotonic() - started
        return report

    def _still_owned(self, merged: dict[str, Merged]) -> set[str]:
        """Merged keys whose vectors stay: still PENDING for the batch whose delta was merged (about to be
        marked), or SUCCESS for it already (the same delta merged again after a crash before its marking finished).

        An item whose text changed while its batch was out is NONE again; its
        fresh vector is for the old text, so it must go with the stale ones
        rather than sit in the snapshot beside a non-SUCCESS item.
        """
        wanted = {key: batch_id for batch_id, rows in merged.items() for _, keys in rows for key in keys}
        items = self.store.items_by_key(self.kind, sorted(wanted))
        return {key for key, item in items.items()
                if item.status in (Status.SUCCESS, Status.PENDING) and item.batch_id == wanted[key]}

    def _stale(self, collection: VectorCollection, pointer: Pointer | None, merged: dict[str, Merged],
               owned: set[str], report: CompactionReport) -> tuple[list[str], str]:
        """(vector ids to delete, the change-feed cursor the new version will have applied)."""
        stale = {vid for rows in merged.values() for vid, keys in rows if not any(key in owned for key in keys)}
        if pointer is None or not pointer.published:
            # Nothing published yet, but a server collection may hold rows from before this run (a re-embed
            # abandoned and started again reuses its name): those are checked against the store once.
            cursor = self.store.changes_head(self.kind)
            if collection.count() > len({vid for rows in merged.values() for vid, _ in rows}):
                stale.update(stale_by_scan(self.store, self.kind, collection, owned))
                report.full_scan = True
            return sorted(stale), cursor
        if pointer.changes_cursor is None:  # published before the feed existed: one full scan
            cursor = self.store.changes_head(self.kind)
            stale.update(stale_by_scan(self.store, self.kind, collection, owned))
            report.full_scan = True
        else:
            found, resend, cursor, report.changes_read = stale_from_changes(
                self.store, self.kind, collection, owned, pointer.changes_cursor)
            stale.update(found)
            # Before the new version is published: a crash in between leaves the row's vector and the
            # feed's records in place, so the next run finds both again.
            report.resent = self.store.requeue(self.kind, Status.SUCCESS.value, resend) if resend else 0
        report.touched.extend(sorted(stale))
        return sorted(stale), cursor

    def _apply(self, collection: VectorCollection, record: BatchRecord, report: CompactionReport,
               lease: Lease) -> Merged:
        """Merge one delta; returns its vectors with the item keys each stands for."""
        if not record.delta_key:
            return []
        merged: Merged = []
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
            path = Path(tmp) / "delta.parquet"
            self.objects.download(record.delta_key, path)
            verify_delta(path, record.delta_sha256 or "")  # a delta with no recorded hash is not to be trusted
            foreign = self._foreign_model(path)
            if foreign:
                self._supersede(path, record, foreign)
                report.superseded += 1
                return []
            for chunk in read_delta(path, self.chunk_size):
                lease.check()
                keys = [item_keys_of_vector(vector_id, meta) for vector_id, meta in zip(chunk.ids, chunk.metadatas)]
                owners = self._owners([key for row in keys for key in row])
                own = [n for n in range(len(chunk.ids)) if record.batch_id in {owners.get(k) for k in keys[n]}]
                existing = collection.get(ids=chunk.ids, include=["metadatas"])
                holder = {i: (m or {}).get("batch_id") for i, m in zip(existing["ids"], existing["metadatas"])}
                new = [n for n in own if chunk.ids[n] not in holder]
                changed = [n for n in own if chunk.ids[n] in holder and holder[chunk.ids[n]] != record.batch_id]
                # This batch's vector left by a run killed before the item moved on: it goes with the stale.
                owned_rows = set(own)
                leftover = [n for n in range(len(chunk.ids)) if n not in owned_rows
                            and holder.get(chunk.ids[n]) == record.batch_id]
                report.skipped += len(chunk.ids) - len(own)
                for op, rows in ((collection.add, new), (collection.upsert, changed)):
                    if rows:
                        op(
                            ids=[chunk.ids[n] for n in rows],
                            embeddings=chunk.embeddings[rows],
                            documents=[chunk.documents[n] for n in rows],
                            metadatas=[chunk.metadatas[n] for n in rows],
                        )
                report.added += len(new)
                report.updated += len(changed)
                report.unchanged += len(own) - len(new) - len(changed)
                merged.extend((chunk.ids[n], keys[n]) for n in sorted([*own, *leftover]))
        return merged

    def _owners(self, keys: list[str]) -> dict[str, str]:
        """Key -> the batch whose vector the item is waiting for or holds (PENDING or SUCCESS for it).

        A batch merges only rows it owns: an older batch finishing after a
        newer one (the item re-sent after a text change) must not put the old
        text's vector over the new one.
        """
        items = self.store.items_by_key(self.kind, sorted(set(keys)))
        return {key: item.batch_id for key, item in items.items()
                if item.batch_id and item.status in (Status.PENDING, Status.SUCCESS)}

    def _foreign_model(self, path: Path) -> str | None:
        """What the delta was embedded with, when that is not the configured model, size and recipe; else None."""
        for chunk in read_delta(path, 1):
            meta = chunk.metadatas[0] if chunk.metadatas else {}
            recipe = held_recipe(self.kind, meta.get("recipe"))
            if (meta.get("model") != self.model or int(meta.get("dimensions") or 0) != int(self.dimensions or 0)
                    or recipe != self.recipe):
                return f"{meta.get('model')} ({meta.get('dimensions')} dimensions, recipe {recipe})"
            return None
        return None

    def _supersede(self, path: Path, record: BatchRecord, foreign: str) -> None:
        """A delta of another model (embedded before a re-embed started) is not merged: its items go again."""
        reason = (
            f"superseded: embedded with {foreign}, the collection holds {self.model} ({self.dimensions} dimensions, "
            f"recipe {self.recipe})"
        )
        keys = [
            key
            for chunk in read_delta(path, self.chunk_size)
            for vector_id, meta in zip(chunk.ids, chunk.metadatas)
            for key in item_keys_of_vector(vector_id, meta)
        ]
        self.store.release(self.kind, keys, record.batch_id, reason, self.max_attempts, count_attempt=False)
        self.store.update_batch(record.batch_id, last_error=reason)
        log.warning("%s: delta %s %s", self.kind, record.batch_id, reason)
