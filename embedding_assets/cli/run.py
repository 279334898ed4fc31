"""Drives the Dagster definitions in process until every item has left PENDING.

This is what `receipt-embeddings run` (and `make run`) does: the same jobs the
sensors would launch, on the same instance (`DAGSTER_HOME`), so the runs show
up in the UI afterwards. The status check between runs is the sensor's own
step (`Pipeline.poll`), and what to launch after it is decided by the
sensors' own decision functions (`sensors.decisions`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import AssetKey, DagsterInstance, Definitions

from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.domain.models import Stage, Status
from embedding_assets.domain.vectors import ModelMismatch
from embedding_assets.steps.reembed import configuration_problem
from embedding_assets.wiring import Runtime
from sensors.batch_status import failed_ingest_runs
from sensors.decisions import decide_compaction, decide_ingests


@dataclass
class RunSummary:
    kind: str
    embedded: int = 0
    batches: int = 0
    deltas: int = 0
    snapshot_version: int | None = None
    vectors: int = 0
    seconds: float = 0.0
    pending: int = 0
    failed: int = 0
    noise: int = 0
    timed_out: bool = False
    nothing_to_do: bool = False
    vectors_of: str | None = None
    reembed_waiting: bool = False
    runs: list[str] = field(default_factory=list)


# Our own progress lines say what happens; Dagster's event log stays in the instance for the UI.
_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


class RunFailed(RuntimeError):
    """A Dagster run of the pipeline failed; its id is in the message."""


def _execute(defs: Definitions, instance: DagsterInstance, job_name: str, summary: RunSummary, **kwargs) -> None:
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, raise_on_error=False, run_config=_QUIET, **kwargs
    )
    summary.runs.append(result.run_id)
    if not result.success:
        errors = [str(e.event_specific_data.error.message).strip() for e in result.all_events
                  if e.is_step_failure and e.event_specific_data and e.event_specific_data.error]
        raise RunFailed(f"run {result.run_id} of {job_name} failed: {'; '.join(errors) or 'see the Dagster UI'}")


def _compact(defs: Definitions, instance: DagsterInstance, kind_defs: KindDefinitions, runtime: Runtime,
             summary: RunSummary, progress: Callable[[str], None]) -> None:
    kind = kind_defs.kind
    serving = runtime.vectors(kind)
    into = " into the re-embed (NEXT) collection" if serving.next_line().latest() is not None else ""
    progress(f"[{kind}] compact{into}")
    _execute(defs, instance, kind_defs.compaction_job.name, summary)
    building, now = serving.next_line().latest(), serving.latest()
    if building is not None and building.published:
        progress(f"[{kind}] re-embed snapshot v{building.version} ({building.vectors_of}) published; search answers "
                 f"from v{now.version} ({now.vectors_of}) until every {kind[:-1]} is re-embedded")
    else:
        progress(
            f"[{kind}] snapshot v{now.version} ({now.vectors_of}) published" if now else f"[{kind}] nothing published"
        )


def run_kind(
    defs: Definitions,
    kind_defs: KindDefinitions,
    runtime: Runtime,
    instance: DagsterInstance,
    timeout: float,
    poll_seconds: float = 2.0,
    progress: Callable[[str], None] = print,
) -> RunSummary:
    kind = kind_defs.kind
    started = time.monotonic()
    summary = RunSummary(kind)
    problem = configuration_problem(runtime.vectors(kind), runtime.provider.model, runtime.provider.dimensions,
                                    runtime.tuning.steps.recipe(kind))
    if problem:
        raise ModelMismatch(problem)  # before anything is sent: compaction could not merge what it brings back
    before = runtime.store.status_counts(kind)
    progress(f"[{kind}] create batches")
    _execute(defs, instance, kind_defs.create_job.name, summary)
    created = [b for b in runtime.store.list_batches(kind) if b.stage not in (Stage.DELTA_READY, Stage.COMPACTED)]
    summary.batches = len(created)
    progress(f"[{kind}] {len(created)} batches in flight with {sum(b.item_count for b in created)} {kind}")
    if not created and not runtime.store.list_batches(kind, [Stage.DELTA_READY]):
        summary.nothing_to_do = before.get(Status.PENDING.value, 0) == 0
    while True:
        if runtime.store.list_batches(kind, [Stage.PREPARED]):
            # Batches held back by the provider's enqueued-token limit go as earlier ones finish.
            _execute(
                defs,
                instance,
                kind_defs.create_job.name,
                summary,
                asset_selection=[AssetKey([kind, "submitted_batches"])],
            )
        finished, _ = runtime.pipeline.poll(kind, limit=10_000)
        job = kind_defs.ingest_job.name
        ingests = decide_ingests(kind, [r.batch_id for r in finished],
                                 lambda b, job=job: failed_ingest_runs(instance, job, b))
        known = set(instance.get_dynamic_partitions(kind_defs.partitions_name))
        for batch_id, _ in ingests.launch:
            if batch_id not in known:
                instance.add_dynamic_partitions(kind_defs.partitions_name, [batch_id])
            progress(f"[{kind}] ingest batch {batch_id}")
            _execute(defs, instance, job, summary, partition_key=batch_id)
            summary.deltas += 1
        for batch_id in ingests.given_up:
            progress(f"[{kind}] batch {batch_id}: its ingest failed too often; relaunch it from the UI")
        waiting = len(runtime.store.list_batches(kind, [Stage.DELTA_READY]))
        if decide_compaction(waiting, None, None).run:
            _compact(defs, instance, kind_defs, runtime, summary, progress)
        counts = runtime.store.status_counts(kind)
        summary.pending = counts.get(Status.PENDING.value, 0)
        if summary.pending == 0:
            break
        if time.monotonic() - started > timeout:
            summary.timed_out = True
            break
        progress(f"[{kind}] waiting for {summary.pending} pending items")
        time.sleep(poll_seconds)
    building = runtime.vectors(kind).next_line().latest()
    if not summary.timed_out and decide_compaction(0, building, None).run:
        # Nothing was left to merge, but a re-embed may be complete (a deletion, or a crash before its switch).
        _compact(defs, instance, kind_defs, runtime, summary, progress)
    pointer = runtime.vectors(kind).latest()
    summary.snapshot_version = pointer.version if pointer else None
    summary.vectors_of = pointer.vectors_of if pointer else None
    summary.reembed_waiting = runtime.vectors(kind).next_line().latest() is not None
    summary.vectors = pointer.vectors if pointer else 0
    summary.embedded = counts.get(Status.SUCCESS.value, 0) - before.get(Status.SUCCESS.value, 0)
    summary.failed = counts.get(Status.FAILED.value, 0)
    summary.noise = counts.get(Status.NOISE.value, 0)
    summary.seconds = round(time.monotonic() - started, 2)
    return summary
