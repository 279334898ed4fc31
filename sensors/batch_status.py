"""Polls the provider; each finished batch becomes a delta partition and its ingest run.

Bounded work per tick (at most `MAX_POLLS_PER_TICK` provider calls, far under
the 60 s sensor limit); the cursor remembers where paging stopped, so any
number of live batches is covered across ticks. The partition and its run are
requested in one SensorResult, and the run key is the batch id, so a batch is
ingested once however often it is seen finished.
"""


from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from embedding_assets.factory import KindDefinitions
from resources.configurable import EmbeddingResource

MAX_POLLS_PER_TICK = 50


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
        return SensorResult(
            run_requests=[RunRequest(partition_key=batch_id, run_key=f"{kind}-ingest-{batch_id}") for batch_id in ids],
            dynamic_partitions_requests=[defs.partitions.build_add_request(new)] if new else [],
            cursor=cursor or "",
        )

    return _sensor
