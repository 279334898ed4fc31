"""submit: send PREPARED batches to the provider, oldest first, up to ten at a time.

It reconciles with the provider by our batch id in the batch metadata before
creating anything, so a record never has two live provider batches. Batches
that would push the tokens in flight past the provider's enqueued-token
limit stay PREPARED, oldest first, for a later submit; so does a batch the
provider refuses for that limit. Concurrent submits of two kinds can still
overshoot together; the provider's refusal then sends the batch back to
PREPARED, not to failure, and costs its items no attempt.

What is in flight comes from the provider's own batch list: a batch that
finished there frees its tokens before our poll has seen it, and a batch
of the same model that is not ours (another deployment) holds its tokens
too. Our batches count at their exact tokens from our records; another
one at the usage the provider reports for it (often none while it runs,
which leaves that case to the refusal above).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from embedding_assets.domain.lease import Lease, LeaseHeld
from embedding_assets.domain.models import (
    KINDS,
    PROVIDER_LIVE,
    PROVIDER_LIVE_STATUSES,
    PROVIDER_TERMINAL_STATUSES,
    BatchRecord,
    Stage,
)
from embedding_assets.domain.ports import EnqueuedLimitReached, ProviderBatch
from embedding_assets.domain.stamps import epoch, utc_now
from embedding_assets.steps.parts import Progress, StepParts

MAX_PARALLEL_SUBMISSIONS = 10
# Our record is written before the provider batch is created; allow for clocks that disagree.
_CLOCK_SKEW_SECONDS = 3600


@dataclass
class SubmitReport:
    submitted: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)


def submit(parts: StepParts, kind: str, progress: Progress) -> SubmitReport:
    """Under the kind's submit lease: two submits racing past one reconciliation would each create a batch."""
    try:
        with parts.lease(f"{kind}-submit") as lease:
            return _submit_all(parts, kind, lease, progress)
    except LeaseHeld:
        progress(f"{kind}: another submit is sending the PREPARED batches")
        return SubmitReport()


def _submit_all(parts: StepParts, kind: str, lease: Lease, progress: Progress) -> SubmitReport:
    report = SubmitReport()
    prepared = parts.store.list_batches(kind, [Stage.PREPARED])
    sendable = _within_enqueued_limit(parts, prepared)
    for record in prepared[len(sendable):]:
        report.held.append(record.batch_id)
        parts.store.update_batch(record.batch_id, last_error="held: the provider's enqueued-token limit is reached")
    if report.held:
        progress(f"{kind}: {len(report.held)} batches held as PREPARED until enqueued batches finish")
    if not sendable:
        return report
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SUBMISSIONS, len(sendable))) as pool:
        for record, (outcome, detail) in zip(sendable, pool.map(lambda r: _submit_one(parts, r, lease), sendable)):
            if outcome == "failed":
                report.failed[record.batch_id] = detail
                progress(f"{kind}: batch {record.batch_id} not submitted: {detail}")
            elif outcome == "held":
                report.held.append(record.batch_id)
                progress(f"{kind}: batch {record.batch_id} held as PREPARED: {detail}")
            else:
                getattr(report, outcome).append(record.batch_id)
                progress(f"{kind}: batch {record.batch_id} {outcome} as {detail}")
    return report


def _within_enqueued_limit(parts: StepParts, prepared: list[BatchRecord]) -> list[BatchRecord]:
    """The oldest PREPARED batches whose tokens fit beside those already in flight.

    Strictly in order, so a large old batch is never starved by small new ones.
    """
    limit = parts.provider.enqueued_token_limit
    if limit is None:
        return prepared
    enqueued = in_flight_tokens(parts)
    sendable = []
    for record in prepared:
        if enqueued + record.estimated_tokens > limit:
            break
        enqueued += record.estimated_tokens
        sendable.append(record)
    return sendable


def in_flight_tokens(parts: StepParts) -> int:
    """Tokens the provider holds in its queue for our model now, by its own list of live batches."""
    provider = parts.provider
    # PREPARED too: a submit that crashed after creating the batch left it there.
    ours = {r.batch_id: r for kind in KINDS for r in parts.store.list_batches(kind, [*PROVIDER_LIVE, Stage.PREPARED])}
    # A live batch is younger than the reaper's age: older ones are cancelled.
    since = time.time() - parts.settings.reap_after_seconds - _CLOCK_SKEW_SECONDS
    tokens = 0
    for batch in provider.find_batches({}, since=since):
        model = batch.model or batch.metadata.get("model") or provider.model
        if batch.status not in PROVIDER_LIVE_STATUSES or model != provider.model:
            continue  # the limit is per model
        record = ours.get(batch.metadata.get("batch_id", ""))
        tokens += record.estimated_tokens if record is not None else batch.prompt_tokens
    return tokens


def _submit_one(parts: StepParts, record: BatchRecord, lease: Lease) -> tuple[str, str]:
    provider = parts.provider
    try:
        since = epoch(record.created_at) - _CLOCK_SKEW_SECONDS
        # A failed provider batch holds nothing; any other one is ours to adopt, live ones first.
        found = [b for b in provider.find_batches({"batch_id": record.batch_id}, since=since) if b.status != "failed"]
        found.sort(key=lambda b: b.status in PROVIDER_TERMINAL_STATUSES)
        if found:
            _record_submission(parts, record, found[0])
            return "reconciled", found[0].id
        with parts.scratch() as tmp:
            path = tmp / f"{record.batch_id}.jsonl"
            parts.objects.download(record.input_key, path)
            file_id = provider.upload(path)
        lease.check()  # an upload can outlast a paused lease; never create once another submit may have
        created = provider.create_batch(file_id, {
            "batch_id": record.batch_id, "kind": record.kind, "model": record.model or provider.model,
            "dimensions": str(record.dimensions or provider.dimensions or ""),
        })
        _record_submission(parts, record, created)
        return "submitted", created.id
    except EnqueuedLimitReached as exc:
        parts.store.update_batch(record.batch_id, last_error=f"held: {exc}")
        return "held", str(exc)
    except Exception as exc:  # a batch that cannot be sent stays PREPARED for the next run
        parts.store.update_batch(record.batch_id, last_error=f"submit: {exc}")
        return "failed", str(exc)


def _record_submission(parts: StepParts, record: BatchRecord, batch: ProviderBatch) -> None:
    parts.store.update_batch(
        record.batch_id, stage=Stage.SUBMITTED, provider_batch_id=batch.id, input_file_id=batch.input_file_id,
        submitted_at=utc_now(), last_error=None,
    )
