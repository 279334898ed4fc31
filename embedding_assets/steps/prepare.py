"""prepare: claim -> write manifest -> write request file -> create the PREPARED record.

A crash before the record leaves items PENDING with no batch; the next
prepare (one at a time per kind, under the kind's create lease) releases
them first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from embedding_assets.domain.batching import PlannedFile, plan_files
from embedding_assets.domain.formatting import ReceiptRequests, line_requests, word_requests
from embedding_assets.domain.models import BatchRecord, Item, Stage, batch_keys, receipt_key
from embedding_assets.domain.stamps import utc_now
from embedding_assets.steps.parts import Progress, StepParts

_RECEIPT_PAGE = 200


@dataclass
class PrepareReport:
    receipts: int = 0
    items: int = 0
    requests: int = 0
    batches: list[str] = field(default_factory=list)
    noise: int = 0
    truncated: int = 0
    lost_claims: int = 0
    oversized_receipts: int = 0
    released_orphans: int = 0
    estimated_tokens: int = 0


def new_batch_id(kind: str) -> str:
    """Sortable by creation time, unique across processes, free of '#'.

    To the microsecond: one prepare writes many files within a second, and
    submit sends them oldest first, in the order they were planned.
    """
    return f"{kind}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def prepare(parts: StepParts, kind: str, max_items: int, progress: Progress) -> PrepareReport:
    """Claim unembedded items and write their request files, under the kind's create lease."""
    with parts.lease(f"{kind}-create"):
        report = PrepareReport()
        report.released_orphans = release_orphans(parts, kind)
        oversized: list[tuple[ReceiptRequests, str]] = []
        assert parts.budget is not None
        for planned in plan_files(
            _receipt_requests(parts, kind, max_items, report), parts.budget, parts.provider.model,
            parts.provider.request_dimensions, oversized,
        ):
            _write_batch(parts, kind, planned, report)
            progress(f"{kind}: prepared batch {report.batches[-1]} ({report.items} items so far)")
        for receipt, reason in oversized:
            report.oversized_receipts += 1
            progress(f"{kind}: skipped receipt {receipt.image_id}/{receipt.receipt_id}: {reason}")
        return report


def release_orphans(parts: StepParts, kind: str) -> int:
    """Release PENDING items whose batch record is missing or no longer owns them.

    Runs under the create lease, so no other prepare is between its claim
    and its record; what is orphaned now was orphaned by a crash.
    """
    released = 0
    orphans: dict[str | None, list[str]] = {}
    for key, batch_id in parts.store.pending_without_live_batch(kind):
        orphans.setdefault(batch_id, []).append(key)
    for batch_id, keys in orphans.items():
        got, failed = parts.store.release(kind, keys, batch_id or "", "released: its batch was lost",
                                          parts.max_attempts + 1)
        released += got + failed
    return released


def receipt_requests(parts: StepParts, kind: str, items: list[Item], merchant_name: str | None) -> ReceiptRequests:
    """What one receipt's unembedded items would send; `estimate` asks the same, so it counts what is sent."""
    build = line_requests if kind == "lines" else word_requests
    return build(items, merchant_name, parts.fit_input, parts.settings.recipe(kind))


def _receipt_requests(parts: StepParts, kind: str, max_items: int, report: PrepareReport) -> Iterator[ReceiptRequests]:
    store = parts.store
    after: str | None = None
    while report.items < max_items:
        page = store.unembedded_receipts(kind, _RECEIPT_PAGE, after)
        if not page:
            return
        for image_id, receipt_id in page:
            items = store.receipt_items(kind, image_id, receipt_id)
            built = receipt_requests(parts, kind, items, store.merchant_name(image_id, receipt_id))
            if built.noise:
                report.noise += store.mark_noise(kind, built.noise)
            report.receipts += 1
            report.items += sum(len(r.item_keys) for r in built.requests)
            report.truncated += sum(r.truncated for r in built.requests)
            yield built
            if report.items >= max_items:
                return
        after = receipt_key(*page[-1])


def _write_batch(parts: StepParts, kind: str, planned: PlannedFile, report: PrepareReport) -> None:
    batch_id = new_batch_id(kind)
    input_key, manifest_key, _ = batch_keys(kind, batch_id)
    wanted = [k for receipt in planned.receipts for r in receipt.requests for k in r.item_keys]
    won = set(parts.store.claim(kind, wanted, batch_id, {k: r.texts[k] for r in planned.receipts for k in r.texts}))
    report.lost_claims += len(wanted) - len(won)
    requests: list[tuple[bytes, dict[str, Any]]] = []
    line_iter = iter(planned.lines)
    refs: list[tuple[str, int]] = []
    tokens = 0
    for receipt in planned.receipts:
        kept = False
        for request in receipt.requests:
            line = next(line_iter)
            keys = [k for k in request.item_keys if k in won]
            if keys:
                kept = True
                tokens += request.tokens
                requests.append((line, {"custom_id": request.custom_id, "item_keys": keys,
                                        "document": request.metadata["text"], "metadata": request.metadata}))
        if kept:
            refs.append((receipt.image_id, receipt.receipt_id))
    if not requests:
        return
    with parts.scratch() as tmp:
        manifest = tmp / "manifest.jsonl"
        with manifest.open("wb") as f:
            for _, entry in requests:
                f.write(orjson.dumps(entry) + b"\n")
        parts.objects.put_file(manifest_key, manifest)
        body = tmp / "input.jsonl"
        with body.open("wb") as f:
            for line, _ in requests:
                f.write(line)
        parts.objects.put_file(input_key, body)
    now = utc_now()
    parts.store.put_batch(BatchRecord(
        batch_id=batch_id, kind=kind, stage=Stage.PREPARED, input_key=input_key, manifest_key=manifest_key,
        item_count=sum(len(e["item_keys"]) for _, e in requests), request_count=len(requests),
        estimated_tokens=tokens, receipt_refs=refs, created_at=now, updated_at=now,
        model=parts.provider.model, dimensions=parts.provider.dimensions,
    ))
    report.batches.append(batch_id)
    report.requests += len(requests)
    report.estimated_tokens += tokens
