"""Starts compaction when deltas wait and no compaction of the kind is in flight.

The lease in the compactor already makes a second compaction give way; this
check just avoids queueing runs that would only wait for it. While a
re-embed runs, it also asks once per NEXT version for a compaction with no
deltas, which switches search over if nothing is left to re-embed (the last
waiting items were deleted, or a crash came between marking and switching).
"""


from dagster import DagsterRunStatus, DefaultSensorStatus, RunRequest, RunsFilter, SensorEvaluationContext, SkipReason, sensor

from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.domain.models import Stage
from embedding_assets.wiring import EmbeddingResource

IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]


def compaction_sensor(defs: KindDefinitions):
    kind = defs.kind
    job = defs.compaction_job

    @sensor(name=f"{kind}_compaction_sensor", job=job, minimum_interval_seconds=60,
            default_status=DefaultSensorStatus.RUNNING,
            description=f"Runs {kind} compaction when deltas are waiting and none is running.")
    def _sensor(context: SensorEvaluationContext, embedding: EmbeddingResource):
        waiting = embedding.receipt_store.open().list_batches(kind, [Stage.DELTA_READY])
        building = embedding.chroma.snapshots(embedding.object_store.open(), kind).next_line().latest()
        if not waiting and building is None:
            return SkipReason("no deltas waiting")
        running = context.instance.get_runs(RunsFilter(job_name=job.name, statuses=IN_FLIGHT), limit=1)
        if running:
            return SkipReason(f"compaction run {running[0].run_id} still in flight")
        if waiting:
            return RunRequest(tags={"deltas": str(len(waiting))})
        return RunRequest(run_key=f"reembed-switch-check-v{building.version}", tags={"reembed": "switch-check"})

    return _sensor
