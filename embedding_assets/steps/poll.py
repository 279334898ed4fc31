"""poll (with reap) and cancel: keep our batch records in step with the provider.

- poll copies the provider's status, usage and errors onto the record; a
  batch failed only for the enqueued limit goes back to PREPARED; a batch
  stuck in finalizing or past its window is flagged in its last error.
- reap (inside poll): a batch the provider no longer knows, or one still
  unfinished `reap_after_seconds` after submission, is cancelled (best
  effort), recorded REAPED, and its items released at the cost of an
  attempt. REAPED owns no items, so a crash between the two steps leaves
  items that the next prepare's orphan release frees; a late result of a
  reaped batch is never ingested, and its items cannot be marked by it.
- cancel only asks the provider; the cancelled batch then takes the normal
  poll and ingest path, which keeps what finished and releases the rest.
"""

from __future__ import annotations

import logging
import time

from embedding_assets.domain.models import (
    PROVIDER_LIVE,
    PROVIDER_TERMINAL,
    PROVIDER_TERMINAL_STATUSES,
    BatchRecord,
    Stage,
)
from embedding_assets.domain.ports import BatchNotFound, ProviderBatch
from embedding_assets.domain.stamps import epoch
from embedding_assets.steps.ingest import load_manifest
from embedding_assets.steps.parts import StepParts

log = logging.getLogger(__name__)

STUCK = "stuck: "
# Finalizing usually takes minutes; the window is 24 h and the provider should expire a batch by then.
STUCK_FINALIZING_SECONDS = 2 * 3600
STUCK_PAST_WINDOW_SECONDS = 3600


def poll(parts: StepParts, kind: str, limit: int, after: str | None = None) -> tuple[list[BatchRecord], str | None]:
    """Refresh up to `limit` live batches after cursor `after`; returns (batches awaiting ingest, next cursor).

    The cursor lets a caller with a time limit (a sensor tick) page through
    any number of live batches across calls; None means it wrapped around.
    """
    live = sorted((r for r in parts.store.list_batches(kind, PROVIDER_LIVE) if after is None or r.batch_id > after),
                  key=lambda r: r.batch_id)  # the cursor is a batch id: page in that order
    page = live[:limit]
    errors: list[Exception] = []
    for record in page:
        try:
            batch = parts.provider.retrieve(record.provider_batch_id or "")
        except BatchNotFound as exc:
            reap(parts, record, f"gone at the provider: {exc}")
            continue
        except Exception as exc:  # one unreachable batch must not keep the others from being polled
            errors.append(exc)
            parts.store.update_batch(record.batch_id, last_error=f"poll: {exc}")
            if _overdue(parts, record):
                reap(parts, record, f"no answer from the provider {_age_hours(record):.1f} h after submission: {exc}")
            continue
        _refresh(parts, record, batch)
        if batch.status not in PROVIDER_TERMINAL_STATUSES and not batch.queue_full and _overdue(parts, record):
            reap(parts, record, f"still {batch.status} {_age_hours(record):.1f} h after submission")
    if page and len(errors) == len(page):
        raise errors[-1]  # nothing answered: the provider itself is unreachable, so say so
    cursor = page[-1].batch_id if len(live) > limit else None
    return parts.store.list_batches(kind, PROVIDER_TERMINAL), cursor


def _refresh(parts: StepParts, record: BatchRecord, batch: ProviderBatch) -> None:
    store = parts.store
    if batch.queue_full:
        log.warning("batch %s: provider queue full, back to PREPARED: %s", record.batch_id, "; ".join(batch.errors))
        store.update_batch(
            record.batch_id, stage=Stage.PREPARED, provider_batch_id=None, input_file_id=None, submitted_at=None,
            last_error=f"held: {'; '.join(batch.errors) or 'enqueued-token limit reached'}",
        )
        return
    try:
        stage = Stage(batch.status)
    except ValueError:
        log.warning("batch %s: unknown provider status %r", record.batch_id, batch.status)
        store.update_batch(record.batch_id, last_error=f"poll: unknown provider status {batch.status!r}")
        return
    note = "; ".join(batch.errors) or stuck_reason(batch, time.time())
    if note and note.startswith(STUCK):
        log.warning("batch %s (%s): %s", record.batch_id, batch.id, note)
    store.update_batch(
        record.batch_id, stage=stage, output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id, completed_requests=batch.completed,
        failed_requests=batch.failed, prompt_tokens=batch.prompt_tokens or record.prompt_tokens,
        last_error=note,
    )


def _age_hours(record: BatchRecord) -> float:
    return (time.time() - epoch(record.submitted_at or record.created_at)) / 3600


def _overdue(parts: StepParts, record: BatchRecord) -> bool:
    return _age_hours(record) * 3600 > parts.settings.reap_after_seconds


def reap(parts: StepParts, record: BatchRecord, reason: str) -> None:
    """Give up on a batch that will never finish: cancel it (best effort), then release its items.

    The record goes REAPED before the release, so a crash between the two
    leaves items owned by no batch, which the next prepare releases.
    """
    log.warning("reaping batch %s (%s): %s", record.batch_id, record.provider_batch_id, reason)
    if record.provider_batch_id:
        try:
            parts.provider.cancel(record.provider_batch_id)
        except Exception as exc:  # the batch may be gone or the provider silent: that is why we reap
            log.warning("batch %s: cancel while reaping failed: %s", record.batch_id, exc)
    parts.store.update_batch(record.batch_id, stage=Stage.REAPED, last_error=f"reaped: {reason}")
    with parts.scratch() as tmp:
        manifest = load_manifest(parts, record, tmp)
        keys = [key for custom_id in manifest for key in manifest[custom_id]["item_keys"]]
    parts.store.release(record.kind, keys, record.batch_id, f"reaped: {reason}", parts.max_attempts)


def cancel(parts: StepParts, batch_id: str) -> BatchRecord:
    """Ask the provider to cancel one in-flight batch; poll and ingest then release its unfinished items."""
    record = parts.store.get_batch(batch_id)
    if record is None:
        raise KeyError(f"no batch record {batch_id!r}")
    if record.stage not in PROVIDER_LIVE or not record.provider_batch_id:
        raise ValueError(f"batch {batch_id} is {record.stage.value}, not in flight: nothing to cancel")
    batch = parts.provider.cancel(record.provider_batch_id)
    return parts.store.update_batch(batch_id, stage=Stage(batch.status), last_error="cancelled on request")


def stuck_reason(batch: ProviderBatch, now: float) -> str | None:
    """Why a live batch looks stuck, or None: finalizing too long, or still live well past its window."""
    if batch.status == Stage.FINALIZING.value and batch.finalizing_at:
        waited = now - batch.finalizing_at
        if waited > STUCK_FINALIZING_SECONDS:
            return f"{STUCK}finalizing for {waited / 3600:.1f} h"
    if batch.status not in PROVIDER_TERMINAL_STATUSES and batch.expires_at:
        late = now - batch.expires_at
        if late > STUCK_PAST_WINDOW_SECONDS:
            return f"{STUCK}still {batch.status} {late / 3600:.1f} h past its completion window"
    return None
