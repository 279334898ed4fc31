"""Starts compaction when deltas wait and no compaction of the kind is in flight (`decisions.decide_compaction`).

The lease in the compactor already makes a second compaction give way; this
check just avoids queueing runs that would only wait for it.
"""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.domain.models import Stage
from resources.deployment import EmbeddingResource
from sensors.decisions import decide_compaction

IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def compaction_sensor(defs: KindDefinitions, interval_seconds: int = 60):
    """`interval_seconds`: SENSOR_INTERVAL_SECONDS, how often waiting deltas are looked for."""
    kind = defs.kind
    job = defs.compaction_job

    @sensor(name=f"{kind}_compaction_sensor", job=job, minimum_interval_seconds=interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description=f"Runs {kind} compaction when deltas are waiting and none is running.")
    def _sensor(context: SensorEvaluationContext, embedding: EmbeddingResource) -> RunRequest | SkipReason:
        runtime = embedding.open()
        waiting = len(runtime.store.list_batches(kind, [Stage.DELTA_READY]))
        building = runtime.vectors(kind).next_line().latest()
        running = context.instance.get_runs(RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1)
        decision = decide_compaction(waiting, building, running[0].run_id if running else None)
        if not decision.run:
            return SkipReason(decision.reason)
        return RunRequest(run_key=decision.run_key, tags=decision.tags)

    return _sensor
