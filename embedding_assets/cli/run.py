"""Drives the Dagster definitions in process until no item is left to send or waiting.

This is what `receipt-embeddings run` (and `make run`) does: the same jobs the
sensors would launch, on the same instance (`DAGSTER_HOME`) and under the code
location's job origin (`cli.launch`), so the runs show under their jobs in the
UI. The status check between runs is the sensor's own step (`Pipeline.poll`),
and what to launch is decided by the sensors' own decision functions
(`sensors.decisions`).

It goes on until nothing is PENDING and no NONE item could still be sent:
items a failed, expired or cancelled request released go out again (within
their attempts), and what ended FAILED is reported. A lease held by a live
process (the daemon's compaction, another `run`) is waited for, with a progress
line, within the timeout; one whose holder died on this host is taken over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from dagster import AssetKey, DagsterExecutionInterruptedError, DagsterInstance, Definitions
from dagster._utils.error import SerializableErrorInfo

from embedding_assets.cli.launch import launch
from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.domain.lease import compaction_lease, describe, provably_dead
from embedding_assets.domain.models import Stage, Status
from embedding_assets.domain.vectors import ModelMismatch
from embedding_assets.steps.reembed import configuration_problem
from embedding_assets.steps.stale import changes_waiting
from embedding_assets.steps.status import create_work
from embedding_assets.wiring import Runtime
from sensors.batch_status import failed_ingest_runs
from sensors.decisions import decide_compaction, decide_create, decide_ingests

FAILED_SAMPLE = 5
LAUNCHED_BY = "receipt-embeddings run"


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
    unsendable: int = 0
    timed_out: bool = False
    waiting_for: str | None = None
    nothing_to_do: bool = False
    vectors_of: str | None = None
    reembed_waiting: bool = False
    failed_sample: dict[str, str | None] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)


# Our own progress lines say what happens, and a failed run is one line naming its cause (`RunFailed`);
# Dagster's event log, failures with their stacks included, stays in the instance for the UI.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# What Dagster records a Ctrl-C inside a run as.
_INTERRUPTED = (DagsterExecutionInterruptedError.__name__, KeyboardInterrupt.__name__)


class RunFailed(RuntimeError):
    """A Dagster run of the pipeline failed; its id is in the message."""


class TimedOut(Exception):
    """The run's --timeout passed while it waited (for a lease); the message says for what."""


def _root(error: SerializableErrorInfo) -> SerializableErrorInfo:
    """What went wrong at the bottom of a failure, below Dagster's "Error occurred while executing op"."""
    while error.cause is not None:
        error = error.cause
    return error


class _Loop:
    """One kind's run: the jobs it launches, the leases it waits for, the summary it fills."""

    def __init__(self, defs: Definitions, kind_defs: KindDefinitions, runtime: Runtime, instance: DagsterInstance,
                 deadline: float, poll_seconds: float, progress: Callable[[str], None]):
        self.defs, self.kind_defs, self.runtime, self.instance = defs, kind_defs, runtime, instance
        self.kind = kind_defs.kind
        self.deadline, self.poll_seconds, self.progress = deadline, poll_seconds, progress
        self.summary = RunSummary(self.kind)

    def execute(self, job_name: str, lease: str | None = None, **kwargs) -> None:
        if lease:
            self.wait_for_lease(lease)
        result = launch(self.defs, self.instance, job_name, LAUNCHED_BY, _QUIET, **kwargs)
        self.summary.runs.append(result.run_id)
        if not result.success:
            errors = [e.step_failure_data.error for e in result.get_step_failure_events() if e.step_failure_data.error]
            errors += [e.job_failure_data.error for e in result.filter_events(lambda e: e.is_run_failure)
                       if e.job_failure_data.error]
            # Dagster turns Ctrl-C into the failure of the step it hit, or of the run between steps.
            if any(_root(error).cls_name in _INTERRUPTED for error in errors):
                raise KeyboardInterrupt
            causes = "; ".join(dict.fromkeys(" ".join(_root(error).message.split()) for error in errors))
            raise RunFailed(f"run {result.run_id} of {job_name} failed: {causes or 'see the Dagster UI'}")

    def wait_for_lease(self, name: str) -> None:
        """Until nobody alive holds `name`: a dead holder's lease is left for the run to take over."""
        said: str | None = None
        while (state := self.runtime.store.lock_state(name)) is not None and not provably_dead(state.holder):
            if time.monotonic() > self.deadline:
                raise TimedOut(f"lease {name} still held by {describe(state)}")
            if state.owner != said:
                self.progress(f"[{self.kind}] waiting for lease {name}, held by {describe(state)}")
                said = state.owner
            time.sleep(self.poll_seconds)

    def create(self, unclaimable: int) -> int:
        """Create batches if there is anything to claim; returns how many NONE items it left as they were."""
        store, kind = self.runtime.store, self.kind
        work = create_work(store, kind)
        decision = decide_create(work.unembedded, work.stranded, work.prepared, unclaimable)
        if decision.run:
            self.progress(f"[{kind}] create batches ({decision.reason})")
            self.execute(self.kind_defs.create_job.name, lease=f"{kind}-create")
            after = create_work(store, kind)
            self.summary.batches += len(after.unfinished - work.unfinished)
            in_flight = store.status_counts(kind).get(Status.PENDING.value, 0)
            self.progress(f"[{kind}] {len(after.unfinished)} batches in flight with {in_flight} {kind}")
            return after.unembedded if after.unembedded == work.unembedded else 0
        if decision.submit_only:
            # Batches held back by the provider's enqueued-token limit go as earlier ones finish.
            self.execute(self.kind_defs.create_job.name, asset_selection=[AssetKey([kind, "submitted_batches"])])
        return unclaimable

    def ingest_finished(self) -> None:
        kind, job = self.kind, self.kind_defs.ingest_job.name
        finished, _ = self.runtime.pipeline.poll(kind, limit=10_000)
        ingests = decide_ingests(kind, [r.batch_id for r in finished],
                                 lambda b: failed_ingest_runs(self.instance, job, b))
        partitions = self.kind_defs.partitions_name
        known = set(self.instance.get_dynamic_partitions(partitions))
        for batch_id, _ in ingests.launch:
            if batch_id not in known:
                self.instance.add_dynamic_partitions(partitions, [batch_id])
            self.progress(f"[{kind}] ingest batch {batch_id}")
            self.execute(job, partition_key=batch_id)
            self.summary.deltas += 1
        for batch_id in ingests.given_up:
            self.progress(f"[{kind}] batch {batch_id}: its ingest failed too often; relaunch it from the UI")

    def compact(self) -> None:
        kind = self.kind
        serving = self.runtime.vectors(kind)
        into = " into the re-embed (NEXT) collection" if serving.next_line().latest() is not None else ""
        self.progress(f"[{kind}] compact{into}")
        self.execute(self.kind_defs.compaction_job.name, lease=compaction_lease(kind))
        building, now = serving.next_line().latest(), serving.latest()
        if building is not None and building.published and now is not None:
            self.progress(f"[{kind}] re-embed snapshot v{building.version} ({building.vectors_of}) published; search "
                          f"answers from v{now.version} ({now.vectors_of}) until every {kind[:-1]} is re-embedded")
        else:
            self.progress(f"[{kind}] snapshot v{now.version} ({now.vectors_of}) published" if now
                          else f"[{kind}] nothing published")


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
    problem = configuration_problem(runtime.vectors(kind), runtime.provider.model, runtime.provider.dimensions,
                                    runtime.tuning.steps.recipe(kind))
    if problem:
        raise ModelMismatch(problem)  # before anything is sent: compaction could not merge what it brings back
    loop = _Loop(defs, kind_defs, runtime, instance, started + timeout, poll_seconds, progress)
    summary = loop.summary
    before = runtime.store.status_counts(kind)
    unclaimable = 0
    try:
        while True:
            unclaimable = loop.create(unclaimable)
            loop.ingest_finished()
            deltas = len(runtime.store.list_batches(kind, [Stage.DELTA_READY]))
            changes = 0 if deltas else changes_waiting(runtime.store, runtime.vectors(kind))
            if decide_compaction(deltas, None, None, changes).run:
                loop.compact()
            counts = runtime.store.status_counts(kind)
            summary.pending = counts.get(Status.PENDING.value, 0)
            unembedded = counts.get(Status.NONE.value, 0)
            if summary.pending == 0 and unembedded <= unclaimable:
                break
            if time.monotonic() - started > timeout:
                summary.timed_out = True
                break
            if summary.pending:
                progress(f"[{kind}] waiting for {summary.pending} pending items")
                time.sleep(poll_seconds)
        building = runtime.vectors(kind).next_line().latest()
        if not summary.timed_out and decide_compaction(0, building, None).run:
            # Nothing was left to merge, but a re-embed may be complete (a deletion, or a crash before its switch).
            loop.compact()
    except TimedOut as exc:
        summary.timed_out, summary.waiting_for = True, str(exc)
    _finish(runtime, summary, before, started)
    summary.nothing_to_do = not summary.runs
    return summary


def _finish(runtime: Runtime, summary: RunSummary, before: dict[str, int], started: float) -> None:
    kind = summary.kind
    counts = runtime.store.status_counts(kind)
    pointer = runtime.vectors(kind).latest()
    summary.snapshot_version = pointer.version if pointer else None
    summary.vectors_of = pointer.vectors_of if pointer else None
    summary.reembed_waiting = runtime.vectors(kind).next_line().latest() is not None
    summary.vectors = pointer.vectors if pointer else 0
    summary.embedded = counts.get(Status.SUCCESS.value, 0) - before.get(Status.SUCCESS.value, 0)
    summary.pending = counts.get(Status.PENDING.value, 0)
    summary.unsendable = 0 if summary.timed_out else counts.get(Status.NONE.value, 0)
    summary.failed = counts.get(Status.FAILED.value, 0)
    summary.failed_sample = {item.key: item.last_error for item in
                             islice(runtime.store.items_with_status(kind, Status.FAILED.value), FAILED_SAMPLE)}
    summary.noise = counts.get(Status.NOISE.value, 0)
    summary.seconds = round(time.monotonic() - started, 2)
