"""The steps that move items from NONE to a delta, with no orchestrator in them.

Each step reads its work from the store, so it can be re-run after a crash at
any line and converge:

- prepare: claim -> write manifest -> write request file -> create the PREPARED
  record. A crash before the record leaves items PENDING with no batch; the
  next prepare (one at a time per kind, under a lease) releases them first.
- submit: reconcile with the provider by our batch id in the batch metadata
  before creating anything, so a record never has two live provider batches.
  Batches that would push the estimated tokens in flight (all kinds, one
  model) past the provider's enqueued-token limit stay PREPARED, oldest
  first, for a later submit; so does a batch the provider refuses for that
  limit. Concurrent submits of two kinds can still overshoot together; the
  provider's refusal then sends the batch back to PREPARED, not to failure.
- poll: copies the provider's status, usage and errors onto the record; a
  batch failed only for the enqueued limit goes back to PREPARED; a batch
  stuck in finalizing or past its window is flagged in its last error.
- reap (inside poll): a batch the provider no longer knows, or one still
  unfinished `reap_after_seconds` after submission, is cancelled (best
  effort), recorded REAPED, and its items released at the cost of an
  attempt. REAPED owns no items, so a crash between the two steps leaves
  items that the next prepare's orphan release frees; a late result of a
  reaped batch is never ingested, and its items cannot be marked by it.
- ingest: releases failures conditionally on the owning batch (repeats are
  no-ops), writes the delta and the per-receipt usage, and only then marks
  DELTA_READY.
- cancel: only asks the provider; the cancelled batch then takes the normal
  poll and ingest path, which keeps what finished and releases the rest.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from embedding_assets.domain.batching import Budget, PlannedFile, plan_files
from embedding_assets.steps.costs import UsageTally, write_usage
from embedding_assets.domain.deltas import DeltaWriter
from embedding_assets.domain.formatting import ReceiptRequests, estimate_tokens, line_requests, word_requests
from embedding_assets.domain.lease import Lease, LeaseHeld
from embedding_assets.domain.models import KINDS, PROVIDER_LIVE, PROVIDER_TERMINAL, BatchRecord, Stage
from embedding_assets.domain.ports import BatchNotFound, BatchProvider, EnqueuedLimitReached, ObjectStore, ProviderBatch, ReceiptStore
from embedding_assets.domain.pricing import batch_cost
from embedding_assets.domain.results import iter_results

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
MAX_PARALLEL_SUBMISSIONS = 10
_RECEIPT_PAGE = 200
STUCK = "stuck: "
# Finalizing usually takes minutes; the window is 24 h and the provider should expire a batch by then.
STUCK_FINALIZING_SECONDS = 2 * 3600
STUCK_PAST_WINDOW_SECONDS = 3600
# Our record is written before the provider batch is created; allow for clocks that disagree.
_CLOCK_SKEW_SECONDS = 3600


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_batch_id(kind: str) -> str:
    """Sortable by creation time, unique across processes, free of '#'."""
    return f"{kind}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


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


@dataclass
class SubmitReport:
    submitted: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    batch_id: str
    status: str
    vectors: int = 0
    failed_requests: int = 0
    unfinished_requests: int = 0
    unknown_results: int = 0
    released: int = 0
    dead_lettered: int = 0
    prompt_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    already_done: bool = False


class Manifest(Mapping[str, dict[str, Any]]):
    """custom_id -> manifest entry, kept as the raw JSON lines and parsed on use.

    Held as dicts, a 50,000-request batch costs ~80 MB during ingest; as bytes
    about a third of that.
    """

    def __init__(self, path: Path):
        with path.open("rb") as f:
            self._raw = {orjson.loads(line)["custom_id"]: line for line in f}

    def __getitem__(self, custom_id: str) -> dict[str, Any]:
        return orjson.loads(self._raw[custom_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def batch_keys(kind: str, batch_id: str) -> tuple[str, str, str]:
    """(request file, manifest, delta) keys of one batch in the object store."""
    return (
        f"batches/{kind}/{batch_id}.jsonl",
        f"batches/{kind}/{batch_id}.manifest.jsonl",
        f"deltas/{kind}/{batch_id}.parquet",
    )


class Pipeline:
    """The pipeline's steps over one receipt store, object store and provider."""

    def __init__(
        self,
        store: ReceiptStore,
        objects: ObjectStore,
        provider: BatchProvider,
        work_dir: Path,
        max_attempts: int = 3,
        budget: Budget | None = None,
        lock_ttl_seconds: float = 300.0,
        heartbeat_seconds: float = 30.0,
        delete_intermediate: bool = True,
        prices: dict[str, float] | None = None,
        reap_after_seconds: float = 48 * 3600,
    ):
        self.store = store
        self.objects = objects
        self.provider = provider
        self.work_dir = Path(work_dir)
        self.max_attempts = max_attempts
        # One file never exceeds what the provider lets be enqueued at once.
        self.budget = budget or Budget(max_tokens=provider.enqueued_token_limit)
        self.prices = prices
        self.lock_ttl_seconds = lock_ttl_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.delete_intermediate = delete_intermediate
        self.reap_after_seconds = reap_after_seconds

    # ---------------------------------------------------------------- prepare
    def prepare(self, kind: str, max_items: int, progress: Progress = log.info) -> PrepareReport:
        """Claim unembedded items and write their request files, under the kind's create lease."""
        with Lease(self.store, f"{kind}-create", self.lock_ttl_seconds, self.heartbeat_seconds):
            report = PrepareReport()
            report.released_orphans = self.release_orphans(kind)
            oversized: list[tuple[ReceiptRequests, str]] = []
            for planned in plan_files(
                self._receipt_requests(kind, max_items, report), self.budget, self.provider.model,
                self.provider.request_dimensions, oversized,
            ):
                self._write_batch(kind, planned, report)
                progress(f"{kind}: prepared batch {report.batches[-1]} ({report.items} items so far)")
            for receipt, reason in oversized:
                report.oversized_receipts += 1
                progress(f"{kind}: skipped receipt {receipt.image_id}/{receipt.receipt_id}: {reason}")
            return report

    def release_orphans(self, kind: str) -> int:
        """Release PENDING items whose batch record is missing or no longer owns them.

        Runs under the create lease, so no other prepare is between its claim
        and its record; what is orphaned now was orphaned by a crash.
        """
        released = 0
        orphans: dict[str | None, list[str]] = {}
        for key, batch_id in self.store.pending_without_live_batch(kind):
            orphans.setdefault(batch_id, []).append(key)
        for batch_id, keys in orphans.items():
            got, failed = self.store.release(kind, keys, batch_id or "", "released: its batch was lost", self.max_attempts + 1)
            released += got + failed
        return released

    def _receipt_requests(self, kind: str, max_items: int, report: PrepareReport) -> Iterator[ReceiptRequests]:
        build = line_requests if kind == "lines" else word_requests
        after: str | None = None
        while report.items < max_items:
            page = self.store.unembedded_receipts(kind, _RECEIPT_PAGE, after)
            if not page:
                return
            for image_id, receipt_id in page:
                items = self.store.receipt_items(kind, image_id, receipt_id)
                built = build(items, self.store.merchant_name(image_id, receipt_id), self.provider.max_input_tokens)
                if built.noise:
                    report.noise += self.store.mark_noise(kind, built.noise)
                report.receipts += 1
                report.items += sum(len(r.item_keys) for r in built.requests)
                report.truncated += sum(r.truncated for r in built.requests)
                yield built
                if report.items >= max_items:
                    return
            after = f"IMAGE#{page[-1][0]}#RECEIPT#{page[-1][1]:05d}"

    def _write_batch(self, kind: str, planned: PlannedFile, report: PrepareReport) -> None:
        batch_id = new_batch_id(kind)
        input_key, manifest_key, _ = batch_keys(kind, batch_id)
        wanted = [k for receipt in planned.receipts for r in receipt.requests for k in r.item_keys]
        won = set(self.store.claim(kind, wanted, batch_id))
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
                    tokens += estimate_tokens(request.input)
                    requests.append((line, {"custom_id": request.custom_id, "item_keys": keys,
                                            "document": request.metadata["text"], "metadata": request.metadata}))
            if kept:
                refs.append((receipt.image_id, receipt.receipt_id))
        if not requests:
            return
        tmp = self._tmp_dir()
        try:
            manifest = tmp / "manifest.jsonl"
            with manifest.open("wb") as f:
                for _, entry in requests:
                    f.write(orjson.dumps(entry) + b"\n")
            self.objects.put_file(manifest_key, manifest)
            body = tmp / "input.jsonl"
            with body.open("wb") as f:
                for line, _ in requests:
                    f.write(line)
            self.objects.put_file(input_key, body)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        now = utc_now()
        self.store.put_batch(BatchRecord(
            batch_id=batch_id, kind=kind, stage=Stage.PREPARED, input_key=input_key, manifest_key=manifest_key,
            item_count=sum(len(e["item_keys"]) for _, e in requests), request_count=len(requests),
            estimated_tokens=tokens,
            receipt_refs=refs, created_at=now, updated_at=now,
        ))
        report.batches.append(batch_id)
        report.requests += len(requests)
        report.estimated_tokens += tokens

    # ----------------------------------------------------------------- submit
    def submit(self, kind: str, progress: Progress = log.info) -> SubmitReport:
        """Send PREPARED batches to the provider, oldest first and up to ten at a time, within its enqueued limit.

        Under the kind's submit lease: two submits racing past the same
        reconciliation would each create a provider batch for one record.
        """
        try:
            with Lease(self.store, f"{kind}-submit", self.lock_ttl_seconds, self.heartbeat_seconds) as lease:
                return self._submit_all(kind, lease, progress)
        except LeaseHeld:
            progress(f"{kind}: another submit is sending the PREPARED batches")
            return SubmitReport()

    def _submit_all(self, kind: str, lease: Lease, progress: Progress) -> SubmitReport:
        report = SubmitReport()
        prepared = self.store.list_batches(kind, [Stage.PREPARED])
        sendable = self._within_enqueued_limit(prepared)
        for record in prepared[len(sendable):]:
            report.held.append(record.batch_id)
            self.store.update_batch(record.batch_id, last_error="held: the provider's enqueued-token limit is reached")
        if report.held:
            progress(f"{kind}: {len(report.held)} batches held as PREPARED until enqueued batches finish")
        if not sendable:
            return report
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SUBMISSIONS, len(sendable))) as pool:
            for record, outcome in zip(sendable, pool.map(lambda r: self._submit_one(r, lease), sendable)):
                kind_of, detail = outcome
                if kind_of == "failed":
                    report.failed[record.batch_id] = detail
                    progress(f"{kind}: batch {record.batch_id} not submitted: {detail}")
                elif kind_of == "held":
                    report.held.append(record.batch_id)
                    progress(f"{kind}: batch {record.batch_id} held as PREPARED: {detail}")
                else:
                    getattr(report, kind_of).append(record.batch_id)
                    progress(f"{kind}: batch {record.batch_id} {kind_of} as {detail}")
        return report

    def _within_enqueued_limit(self, prepared: list[BatchRecord]) -> list[BatchRecord]:
        """The oldest PREPARED batches whose estimated tokens fit beside those already in flight.

        Strictly in order, so a large old batch is never starved by small new ones.
        """
        limit = self.provider.enqueued_token_limit
        if limit is None:
            return prepared
        enqueued = sum(r.estimated_tokens for kind in KINDS for r in self.store.list_batches(kind, PROVIDER_LIVE))
        sendable = []
        for record in prepared:
            if enqueued + record.estimated_tokens > limit:
                break
            enqueued += record.estimated_tokens
            sendable.append(record)
        return sendable

    def _submit_one(self, record: BatchRecord, lease: Lease) -> tuple[str, str]:
        try:
            since = _epoch(record.created_at) - _CLOCK_SKEW_SECONDS
            # A failed provider batch holds nothing; any other one is ours to adopt, live ones first.
            found = [b for b in self.provider.find_batches({"batch_id": record.batch_id}, since=since)
                     if b.status != "failed"]
            found.sort(key=lambda b: b.status in PROVIDER_TERMINAL_STATUSES)
            if found:
                self._record_submission(record, found[0])
                return "reconciled", found[0].id
            tmp = self._tmp_dir()
            try:
                path = tmp / f"{record.batch_id}.jsonl"
                self.objects.download(record.input_key, path)
                file_id = self.provider.upload(path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            lease.check()  # an upload can outlast a paused lease; never create once another submit may have
            created = self.provider.create_batch(file_id, {
                "batch_id": record.batch_id, "kind": record.kind, "model": self.provider.model,
                "dimensions": str(self.provider.dimensions or ""),
            })
            self._record_submission(record, created)
            return "submitted", created.id
        except EnqueuedLimitReached as exc:
            self.store.update_batch(record.batch_id, last_error=f"held: {exc}")
            return "held", str(exc)
        except Exception as exc:  # a batch that cannot be sent stays PREPARED for the next run
            self.store.update_batch(record.batch_id, last_error=f"submit: {exc}")
            return "failed", str(exc)

    def _record_submission(self, record: BatchRecord, batch: ProviderBatch) -> None:
        self.store.update_batch(
            record.batch_id, stage=Stage.SUBMITTED, provider_batch_id=batch.id, input_file_id=batch.input_file_id,
            submitted_at=utc_now(), last_error=None,
        )

    # ------------------------------------------------------------------- poll
    def poll(self, kind: str, limit: int, after: str | None = None) -> tuple[list[BatchRecord], str | None]:
        """Refresh up to `limit` live batches after cursor `after`; returns (batches awaiting ingest, next cursor).

        The cursor lets a caller with a time limit (a sensor tick) page through
        any number of live batches across calls; None means it wrapped around.
        """
        live = sorted((r for r in self.store.list_batches(kind, PROVIDER_LIVE) if after is None or r.batch_id > after),
                      key=lambda r: r.batch_id)  # the cursor is a batch id: page in that order
        page = live[:limit]
        errors: list[Exception] = []
        for record in page:
            try:
                batch = self.provider.retrieve(record.provider_batch_id)
            except BatchNotFound as exc:
                self.reap(record, f"gone at the provider: {exc}")
                continue
            except Exception as exc:  # one unreachable batch must not keep the others from being polled
                errors.append(exc)
                self.store.update_batch(record.batch_id, last_error=f"poll: {exc}")
                if self._overdue(record):
                    self.reap(record, f"no answer from the provider {self._age_hours(record):.1f} h after submission: {exc}")
                continue
            self._refresh(record, batch)
            if batch.status not in PROVIDER_TERMINAL_STATUSES and not batch.queue_full and self._overdue(record):
                self.reap(record, f"still {batch.status} {self._age_hours(record):.1f} h after submission")
        if page and len(errors) == len(page):
            raise errors[-1]  # nothing answered: the provider itself is unreachable, so say so
        cursor = page[-1].batch_id if len(live) > limit else None
        return self.store.list_batches(kind, PROVIDER_TERMINAL), cursor

    def _refresh(self, record: BatchRecord, batch: ProviderBatch) -> None:
        if batch.queue_full:
            log.warning("batch %s: provider queue full, back to PREPARED: %s", record.batch_id, "; ".join(batch.errors))
            self.store.update_batch(
                record.batch_id, stage=Stage.PREPARED, provider_batch_id=None, input_file_id=None, submitted_at=None,
                last_error=f"held: {'; '.join(batch.errors) or 'enqueued-token limit reached'}",
            )
            return
        try:
            stage = Stage(batch.status)
        except ValueError:
            log.warning("batch %s: unknown provider status %r", record.batch_id, batch.status)
            self.store.update_batch(record.batch_id, last_error=f"poll: unknown provider status {batch.status!r}")
            return
        note = "; ".join(batch.errors) or stuck_reason(batch, time.time())
        if note and note.startswith(STUCK):
            log.warning("batch %s (%s): %s", record.batch_id, batch.id, note)
        self.store.update_batch(
            record.batch_id, stage=stage, output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id, completed_requests=batch.completed,
            failed_requests=batch.failed, prompt_tokens=batch.prompt_tokens or record.prompt_tokens,
            last_error=note,
        )

    def _age_hours(self, record: BatchRecord) -> float:
        return (time.time() - _epoch(record.submitted_at or record.created_at)) / 3600

    def _overdue(self, record: BatchRecord) -> bool:
        return self._age_hours(record) * 3600 > self.reap_after_seconds

    def reap(self, record: BatchRecord, reason: str) -> None:
        """Give up on a batch that will never finish: cancel it (best effort), then release its items.

        The record goes REAPED before the release, so a crash between the two
        leaves items owned by no batch, which the next prepare releases.
        """
        log.warning("reaping batch %s (%s): %s", record.batch_id, record.provider_batch_id, reason)
        if record.provider_batch_id:
            try:
                self.provider.cancel(record.provider_batch_id)
            except Exception as exc:  # the batch may be gone or the provider silent: that is why we reap
                log.warning("batch %s: cancel while reaping failed: %s", record.batch_id, exc)
        self.store.update_batch(record.batch_id, stage=Stage.REAPED, last_error=f"reaped: {reason}")
        tmp = self._tmp_dir()
        try:
            manifest = self._load_manifest(record, tmp)
            keys = [key for custom_id in manifest for key in manifest[custom_id]["item_keys"]]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.store.release(record.kind, keys, record.batch_id, f"reaped: {reason}", self.max_attempts)

    # ----------------------------------------------------------------- cancel
    def cancel(self, batch_id: str) -> BatchRecord:
        """Ask the provider to cancel one in-flight batch; poll and ingest then release its unfinished items."""
        record = self.store.get_batch(batch_id)
        if record is None:
            raise KeyError(f"no batch record {batch_id!r}")
        if record.stage not in PROVIDER_LIVE or not record.provider_batch_id:
            raise ValueError(f"batch {batch_id} is {record.stage.value}, not in flight: nothing to cancel")
        batch = self.provider.cancel(record.provider_batch_id)
        return self.store.update_batch(batch_id, stage=Stage(batch.status), last_error="cancelled on request")

    # ----------------------------------------------------------------- ingest
    def ingest(self, batch_id: str, progress: Progress = log.info) -> IngestReport:
        """Turn one finished batch into a delta and release what did not finish."""
        started = time.monotonic()
        record = self.store.get_batch(batch_id)
        if record is None:
            raise KeyError(f"no batch record {batch_id!r}")
        if record.stage in (Stage.DELTA_READY, Stage.COMPACTED):
            return IngestReport(batch_id, record.stage.value, vectors=record.vectors,
                                prompt_tokens=record.prompt_tokens, cost_usd=record.cost_usd, already_done=True)
        if record.stage not in PROVIDER_TERMINAL:
            raise ValueError(f"batch {batch_id} is {record.stage.value}, not finished: nothing to ingest yet")
        report = IngestReport(batch_id, record.stage.value)
        _, _, delta_key = batch_keys(record.kind, batch_id)
        tmp = self._tmp_dir()
        try:
            manifest = self._load_manifest(record, tmp)
            errors: dict[str, str] = {}
            done: set[str] = set()
            usage = UsageTally()
            delta_path = tmp / "delta.parquet"
            dims = self.provider.dimensions
            with DeltaWriter(delta_path, dims) as writer:
                for file_id in (record.output_file_id, record.error_file_id):
                    if file_id:
                        path = tmp / f"{file_id}.jsonl"
                        self.provider.download(file_id, path)
                        self._read_results(path, record, manifest, writer, done, errors, report, usage)
            report.vectors = writer.count
            unfinished = f"not processed: batch ended {record.stage.value}"
            if record.last_error:
                unfinished += f" ({record.last_error})"
            for custom_id in manifest.keys() - done - errors.keys():
                errors[custom_id] = unfinished
                report.unfinished_requests += 1
            report.failed_requests = len(errors) - report.unfinished_requests
            self._release(record, manifest, errors, report)
            sha = writer.sha256 if writer.count else None
            if sha:
                self.objects.put_file(delta_key, delta_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # The batch's own usage is what is billed; the per-line sum stands in where the provider gives none.
        report.prompt_tokens = record.prompt_tokens or report.prompt_tokens
        report.cost_usd = batch_cost(self.provider.model, report.prompt_tokens, self.prices)
        write_usage(self.objects, record, self.provider.model, report.prompt_tokens, report.cost_usd, usage)
        self.store.update_batch(
            batch_id, stage=Stage.DELTA_READY, delta_key=delta_key if sha else None, delta_sha256=sha,
            vectors=report.vectors, prompt_tokens=report.prompt_tokens, cost_usd=report.cost_usd,
            failed_requests=len(errors),
        )
        self._delete_intermediate(record)
        report.seconds = time.monotonic() - started
        progress(f"{record.kind}: batch {batch_id} -> {report.vectors} vectors, {len(errors)} requests released")
        return report

    def _read_results(
        self, path: Path, record: BatchRecord, manifest: Mapping[str, dict[str, Any]], writer: DeltaWriter,
        done: set[str], errors: dict[str, str], report: IngestReport, usage: UsageTally,
    ) -> None:
        """Match results to requests by custom_id (output order is arbitrary); the first answer per id wins."""
        dims = writer.dimensions
        for result in iter_results(path):
            entry = manifest.get(result.custom_id)
            if entry is None or result.custom_id in done or result.custom_id in errors:
                report.unknown_results += 1
                continue
            report.prompt_tokens += result.prompt_tokens
            usage.add(result.custom_id, result.prompt_tokens)
            if result.error or not result.vectors:
                errors[result.custom_id] = result.error or "no embedding in the response"
            elif len(result.vectors[0]) != dims:
                errors[result.custom_id] = f"embedding has {len(result.vectors[0])} dimensions, expected {dims}"
            else:
                meta = dict(entry["metadata"], model=self.provider.model, dimensions=dims, batch_id=record.batch_id)
                writer.add(result.custom_id, result.vectors[0], entry["document"], meta)
                done.add(result.custom_id)

    def _load_manifest(self, record: BatchRecord, tmp: Path) -> Mapping[str, dict[str, Any]]:
        path = tmp / "manifest.jsonl"
        self.objects.download(record.manifest_key, path)
        return Manifest(path)

    def _release(self, record: BatchRecord, manifest: Mapping[str, dict[str, Any]], errors: dict[str, str], report: IngestReport) -> None:
        by_error: dict[str, list[str]] = {}
        for custom_id, error in errors.items():
            by_error.setdefault(error, []).extend(manifest[custom_id]["item_keys"])
        for error, keys in by_error.items():
            released, failed = self.store.release(record.kind, keys, record.batch_id, error, self.max_attempts)
            report.released += released
            report.dead_lettered += failed

    def _delete_intermediate(self, record: BatchRecord) -> None:
        """The request file is only needed until the batch is ingested; keep it for audits when asked."""
        if self.delete_intermediate:
            self.objects.delete(record.input_key)

    def _tmp_dir(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.work_dir, prefix="step-"))


PROVIDER_TERMINAL_STATUSES = frozenset(stage.value for stage in PROVIDER_TERMINAL)


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


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()
