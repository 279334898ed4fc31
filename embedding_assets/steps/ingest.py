"""ingest: turn one finished batch into a delta and release what did not finish.

Failures are released conditionally on the owning batch (repeats are no-ops),
the delta and the per-receipt usage are written, and only then is the record
marked DELTA_READY; a crash anywhere before that repeats the whole step. That
mark is conditional on the batch not being ingested yet, so a second ingest of
the same batch finishing after a compaction never sends it back to DELTA_READY.

The delta is labelled with the model and size the requests were built for (on
the record), not with what is configured now: a batch still out when the
model changes is another model's, and compaction supersedes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from embedding_assets.domain.deltas import DeltaWriter
from embedding_assets.domain.models import PROVIDER_TERMINAL, BatchRecord, Stage, batch_keys
from embedding_assets.domain.pricing import batch_cost
from embedding_assets.domain.results import iter_results
from embedding_assets.steps.costs import UsageTally, write_usage
from embedding_assets.steps.parts import Progress, StepParts


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


def load_manifest(parts: StepParts, record: BatchRecord, tmp: Path) -> Manifest:
    path = tmp / "manifest.jsonl"
    parts.objects.download(record.manifest_key, path)
    return Manifest(path)


def ingest(parts: StepParts, batch_id: str, progress: Progress) -> IngestReport:
    started = time.monotonic()
    record = parts.store.get_batch(batch_id)
    if record is None:
        raise KeyError(f"no batch record {batch_id!r}")
    if record.stage in (Stage.DELTA_READY, Stage.COMPACTED):
        return IngestReport(batch_id, record.stage.value, vectors=record.vectors,
                            prompt_tokens=record.prompt_tokens, cost_usd=record.cost_usd, already_done=True)
    if record.stage not in PROVIDER_TERMINAL:
        raise ValueError(f"batch {batch_id} is {record.stage.value}, not finished: nothing to ingest yet")
    report = IngestReport(batch_id, record.stage.value)
    _, _, delta_key = batch_keys(record.kind, batch_id)
    provider = parts.provider
    # Records from before the batch kept its model were built for the configured one.
    model, dimensions = record.model or provider.model, record.dimensions or provider.dimensions
    with parts.scratch() as tmp:
        manifest = load_manifest(parts, record, tmp)
        errors: dict[str, str] = {}
        done: set[str] = set()
        usage = UsageTally()
        delta_path = tmp / "delta.parquet"
        with DeltaWriter(delta_path, dimensions) as writer:
            for file_id in (record.output_file_id, record.error_file_id):
                if file_id:
                    path = tmp / f"{file_id}.jsonl"
                    provider.download(file_id, path)
                    _read_results(path, record, manifest, writer, _Outcome(done, errors, report, usage), model)
        report.vectors = writer.count
        unfinished = f"not processed: batch ended {record.stage.value}"
        if record.last_error:
            unfinished += f" ({record.last_error})"
        for custom_id in manifest.keys() - done - errors.keys():
            errors[custom_id] = unfinished
            report.unfinished_requests += 1
        report.failed_requests = len(errors) - report.unfinished_requests
        _release(parts, record, manifest, errors, report)
        sha = writer.sha256 if writer.count else None
        if _ingested_meanwhile(parts, batch_id):  # its delta may already be merged, and deleted
            report.already_done = True
            return report
        if sha:
            parts.objects.put_file(delta_key, delta_path)
    # The batch's own usage is what is billed; the per-line sum stands in where the provider gives none.
    report.prompt_tokens = record.prompt_tokens or report.prompt_tokens
    report.cost_usd = batch_cost(model, report.prompt_tokens, parts.settings.prices)
    write_usage(parts.objects, record, model, report.prompt_tokens, report.cost_usd, usage)
    marked = parts.store.update_batch_from(
        batch_id, PROVIDER_TERMINAL, stage=Stage.DELTA_READY, delta_key=delta_key if sha else None,
        delta_sha256=sha, vectors=report.vectors, prompt_tokens=report.prompt_tokens, cost_usd=report.cost_usd,
        failed_requests=len(errors),
    )
    if marked is None:  # another ingest of this batch got there first
        report.already_done = True
        return report
    if parts.settings.delete_intermediate:  # the request file is only needed until the batch is ingested
        parts.objects.delete(record.input_key)
    report.seconds = time.monotonic() - started
    progress(f"{record.kind}: batch {batch_id} -> {report.vectors} vectors, {len(errors)} requests released")
    return report


def _ingested_meanwhile(parts: StepParts, batch_id: str) -> bool:
    """Whether another ingest of the batch finished while this one read the results."""
    current = parts.store.get_batch(batch_id)
    return current is None or current.stage not in PROVIDER_TERMINAL


@dataclass
class _Outcome:
    """What reading the result files has found so far."""

    done: set[str]
    errors: dict[str, str]
    report: IngestReport
    usage: UsageTally


def _read_results(path: Path, record: BatchRecord, manifest: Mapping[str, dict[str, Any]], writer: DeltaWriter,
                  outcome: _Outcome, model: str) -> None:
    """Match results to requests by custom_id (output order is arbitrary); the first answer per id wins."""
    dims = writer.dimensions
    done, errors, report = outcome.done, outcome.errors, outcome.report
    for result in iter_results(path):
        entry = manifest.get(result.custom_id)
        if entry is None or result.custom_id in done or result.custom_id in errors:
            report.unknown_results += 1
            continue
        report.prompt_tokens += result.prompt_tokens
        outcome.usage.add(result.custom_id, result.prompt_tokens)
        if result.error or not result.vectors:
            errors[result.custom_id] = result.error or "no embedding in the response"
        elif len(result.vectors[0]) != dims:
            errors[result.custom_id] = f"embedding has {len(result.vectors[0])} dimensions, expected {dims}"
        else:
            meta = dict(entry["metadata"], model=model, dimensions=dims, batch_id=record.batch_id)
            writer.add(result.custom_id, result.vectors[0], entry["document"], meta)
            done.add(result.custom_id)


def _release(parts: StepParts, record: BatchRecord, manifest: Mapping[str, dict[str, Any]], errors: dict[str, str],
             report: IngestReport) -> None:
    by_error: dict[str, list[str]] = {}
    for custom_id, error in errors.items():
        by_error.setdefault(error, []).extend(manifest[custom_id]["item_keys"])
    for error, keys in by_error.items():
        released, failed = parts.store.release(record.kind, keys, record.batch_id, error, parts.max_attempts)
        report.released += released
        report.dead_lettered += failed
