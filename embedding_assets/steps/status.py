"""One summary of where every item and batch stands, for the CLI and the UI."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import Any

from embedding_assets.domain.models import PROVIDER_LIVE, BatchRecord, Stage, Status
from embedding_assets.domain.ports import ReceiptStore, VectorLine
from embedding_assets.domain.vectors import held_recipe
from embedding_assets.steps.poll import STUCK
from embedding_assets.steps.reembed import reembed_progress

DEAD_LETTER_SAMPLE = 20


def stuck_batches(batches: list[BatchRecord]) -> dict[str, str]:
    """Live batches that poll flagged as stuck, with the reason: they will be reaped if they stay so."""
    return {b.batch_id: b.last_error or "" for b in batches
            if b.stage in PROVIDER_LIVE and (b.last_error or "").startswith(STUCK)}


def reaped_batches(batches: list[BatchRecord], limit: int = DEAD_LETTER_SAMPLE) -> dict[str, str]:
    """The most recently reaped batches, with why they were given up on."""
    reaped = [b for b in batches if b.stage == Stage.REAPED]
    return {b.batch_id: b.last_error or "" for b in reaped[-limit:]}


@dataclass(frozen=True)
class CreateWork:
    """What a create-batches run would find to do, counted before one is launched."""

    unembedded: int
    stranded: int  # PENDING with no live batch: left by a crash between claim and record
    prepared: int  # request files waiting for room in the provider's queue
    unfinished: frozenset[str]  # ids of batches not yet merged: prepared, with the provider, or a delta waiting


def create_work(store: ReceiptStore, kind: str) -> CreateWork:
    """Strandedness is only looked for when nothing is in flight: while batches are out, their items are PENDING."""
    counts = store.status_counts(kind)
    unfinished = store.list_batches(kind, [Stage.PREPARED, Stage.DELTA_READY, *PROVIDER_LIVE])
    pending = counts.get(Status.PENDING.value, 0)
    stranded = len(store.pending_without_live_batch(kind)) if pending and not unfinished else 0
    return CreateWork(counts.get(Status.NONE.value, 0), stranded, sum(b.stage == Stage.PREPARED for b in unfinished),
                      frozenset(b.batch_id for b in unfinished))


def kind_status(store: ReceiptStore, snapshots: VectorLine) -> dict[str, Any]:
    batches = store.list_batches(snapshots.kind)
    pointer = snapshots.latest()
    return {
        "items": store.status_counts(snapshots.kind),
        "batches": dict(Counter(b.stage.value for b in batches)),
        "deltas_waiting": sum(b.stage == Stage.DELTA_READY for b in batches),
        "snapshot_version": pointer.version if pointer else None,
        "model": pointer.model if pointer else None,
        "dimensions": pointer.dimensions if pointer else None,
        "recipe": held_recipe(snapshots.kind, pointer.recipe) if pointer else None,
        "vectors": pointer.vectors if pointer else 0,
        "prompt_tokens": sum(b.prompt_tokens for b in batches),
        "cost_usd": round(sum(b.cost_usd for b in batches), 6),
        "stuck": stuck_batches(batches),
        "reaped": reaped_batches(batches),
        "reembed": reembed_progress(store, snapshots),
        # Dead letters: items past the attempt limit, with the provider's last word on them.
        "failed": {
            item.key: item.last_error
            for item in islice(store.items_with_status(snapshots.kind, Status.FAILED.value), DEAD_LETTER_SAMPLE)
        },
    }
