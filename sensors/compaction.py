"""Starts compaction when deltas or changes wait and none of the kind is in flight (`decisions.decide_compaction`).

Two sensors make the same decision: one reacts within seconds to a successful
ingest (or to a compaction finishing while more deltas came in), so a delta is
merged as soon as it lands; the other ticks every minute as a safety net (a
failed compaction, a re-embed's switch check). The lease in the compactor
already makes a second compaction give way; the in-flight check just avoids
queueing runs that would only wait for it. A started run counts as in flight
only while the kind's compaction lease is held by a live process
(`decisions.compaction_in_flight`): a killed run's record may stay STARTED.
"""

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_status_sensor,
    sensor,
)

from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.domain.lease import compaction_lease, provably_dead
from embedding_assets.domain.models import Stage
from embedding_assets.steps.stale import changes_waiting
from resources.deployment import EmbeddingResource
from sensors.decisions import compaction_in_flight, decide_compaction

# How soon after an ingest succeeds its delta is merged, at most (the sensor daemon's own loop adds a little).
AFTER_INGEST_SECONDS = 5
WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


def _run_id(instance: DagsterInstance, job_name: str, statuses: list[DagsterRunStatus]) -> str | None:
    runs = instance.get_runs(RunsFilter(job_name=job_name, statuses=statuses), limit=1)
    return runs[0].run_id if runs else None


def _decide(kind: str, job_name: str, instance: DagsterInstance,
            embedding: EmbeddingResource) -> RunRequest | SkipReason:
    runtime = embedding.open()
    waiting = len(runtime.store.list_batches(kind, [Stage.DELTA_READY]))
    line = runtime.vectors(kind)
    building = line.next_line().latest()
    lease = runtime.store.lock_state(compaction_lease(kind))
    in_flight = compaction_in_flight(_run_id(instance, job_name, WAITING),
                                     _run_id(instance, job_name, [DagsterRunStatus.STARTED]),
                                     lease is not None and not provably_dead(lease.holder))
    # The change feed only matters when no delta waits (a compaction for the deltas applies it too).
    changes = 0 if waiting else changes_waiting(runtime.store, line)
    decision = decide_compaction(waiting, building, in_flight, changes)
    if not decision.run:
        return SkipReason(decision.reason)
    return RunRequest(run_key=decision.run_key, tags=decision.tags)


def compaction_sensor(defs: KindDefinitions, interval_seconds: int = 60) -> SensorDefinition:
    """The safety net; `interval_seconds` is SENSOR_INTERVAL_SECONDS."""
    kind, job = defs.kind, defs.compaction_job

    @sensor(name=f"{kind}_compaction_sensor", job=job, minimum_interval_seconds=interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description=f"Runs {kind} compaction when deltas are waiting and none is running.")
    def _sensor(context: SensorEvaluationContext, embedding: EmbeddingResource) -> RunRequest | SkipReason:
        return _decide(kind, job.name, context.instance, embedding)

    return _sensor


def compaction_after_ingest_sensor(defs: KindDefinitions) -> SensorDefinition:
    kind, job = defs.kind, defs.compaction_job

    @run_status_sensor(name=f"{kind}_compaction_after_ingest_sensor", run_status=DagsterRunStatus.SUCCESS,
                       monitored_jobs=[defs.ingest_job, job], request_job=job,
                       minimum_interval_seconds=AFTER_INGEST_SECONDS, default_status=DefaultSensorStatus.RUNNING,
                       description=f"Runs {kind} compaction seconds after an ingest succeeds, one at a time.")
    def _sensor(context: RunStatusSensorContext, embedding: EmbeddingResource) -> RunRequest | SkipReason:
        return _decide(kind, job.name, context.instance, embedding)

    return _sensor
