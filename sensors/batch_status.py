"""Polls the provider; each finished batch becomes a delta partition and its ingest run.

Bounded work per tick (at most `MAX_POLLS_PER_TICK` provider calls, far under
the 60 s sensor limit); the cursor remembers where paging stopped, so any
number of live batches is covered across ticks. The partition and its run are
requested in one SensorResult, and the run key is the batch id with the count
of its failed ingest runs, so a batch is ingested once however often it is
seen finished, and a failed ingest (a broken download) is tried again, up to
`MAX_INGEST_RUNS` times, rather than left stranded.
"""


from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.wiring import EmbeddingResource

MAX_POLLS_PER_TICK = 50
MAX_INGEST_RUNS = 3


def failed_ingest_runs(instance: DagsterInstance, job_name: str, batch_id: str) -> int:
    runs = RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.FAILURE], tags={"dagster/partition": batch_id})
    return instance.get_runs_count(runs)


def batch_status_sensor(defs: KindDefinitions):
    kind = defs.kind

    @sensor(name=f"{kind}_batch_status_sensor", job=defs.ingest_job, minimum_interval_seconds=60,
            default_status=DefaultSensorStatus.RUNNING,
            description=f"Polls live {kind} batches; a finished one gets a delta partition and an ingest run.")
    def _sensor(context: SensorEvaluationContext, embedding: EmbeddingResource) -> SensorResult:
        runtime = embedding.open()
        finished, cursor = runtime.pipeline.poll(kind, MAX_POLLS_PER_TICK, context.cursor or None)
        ids = [record.batch_id for record in finished]
        known = set(context.instance.get_dynamic_partitions(defs.partitions.name))
        new = [batch_id for batch_id in ids if batch_id not in known]
        requests = []
        for batch_id in ids:
            failures = failed_ingest_runs(context.instance, defs.ingest_job.name, batch_id)
            if failures < MAX_INGEST_RUNS:
                requests.append(RunRequest(partition_key=batch_id, run_key=f"{kind}-ingest-{batch_id}-{failures}"))
            else:
                context.log.warning(f"batch {batch_id}: ingest failed {failures} times; relaunch it from the UI")
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[defs.partitions.build_add_request(new)] if new else [],
            cursor=cursor or "",
        )

    return _sensor
