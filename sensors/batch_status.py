"""Polls the provider; each finished batch becomes a delta partition and its ingest run.

Bounded work per tick (at most `MAX_POLLS_PER_TICK` provider calls, far under
the 60 s sensor limit); the cursor remembers where paging stopped, so any
number of live batches is covered across ticks. The partition and its run are
requested in one SensorResult; which runs, and under which run keys, is
`decisions.decide_ingests`.
"""

import time

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.domain.models import PROVIDER_LIVE
from resources.deployment import EmbeddingResource
from sensors.decisions import MAX_POLLS_PER_TICK, awaiting_retry, decide_ingests, nothing_finished


def failed_ingest_runs(instance: DagsterInstance, job_name: str, batch_id: str) -> int:
    """Failed or canceled ingest runs of the batch, apart from failures the instance's run retries take care of.

    A run whose worker died is retried by the daemon (`run_retries` in deploy/dagster.yaml) and tagged
    `dagster/will_retry=true`; see `decisions.awaiting_retry`. The daemon never retries a canceled run, so
    each one counts: otherwise the batch's run key would not change and the batch would never be ingested.
    """
    records = instance.get_run_records(RunsFilter(
        job_name=job_name, statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED],
        tags={"dagster/partition": batch_id},
    ))
    now, retries = time.time(), instance.run_retries_enabled
    return sum(
        r.dagster_run.status == DagsterRunStatus.CANCELED
        or not awaiting_retry(r.dagster_run.tags, r.end_time or r.update_timestamp.timestamp(), now, retries)
        for r in records
    )


def batch_status_sensor(defs: KindDefinitions, interval_seconds: int = 60):
    """`interval_seconds`: SENSOR_INTERVAL_SECONDS, how often live batches are polled."""
    kind = defs.kind

    @sensor(name=f"{kind}_batch_status_sensor", job=defs.ingest_job, minimum_interval_seconds=interval_seconds,
            default_status=DefaultSensorStatus.RUNNING,
            description=f"Polls live {kind} batches; a finished one gets a delta partition and an ingest run.")
    def _sensor(context: SensorEvaluationContext, embedding: EmbeddingResource) -> SensorResult:
        runtime = embedding.open()
        finished, cursor = runtime.pipeline.poll(kind, MAX_POLLS_PER_TICK, context.cursor or None)
        ids = [record.batch_id for record in finished]
        known = set(context.instance.get_dynamic_partitions(defs.partitions_name))
        new = [batch_id for batch_id in ids if batch_id not in known]
        decision = decide_ingests(kind, ids, lambda b: failed_ingest_runs(context.instance, defs.ingest_job.name, b))
        for batch_id in decision.given_up:
            context.log.warning(f"batch {batch_id}: its ingest failed too often; relaunch it from the UI")
        if not decision.launch:
            live = len(runtime.store.list_batches(kind, PROVIDER_LIVE))
            return SensorResult(skip_reason=SkipReason(nothing_finished(live, decision.given_up)), cursor=cursor or "")
        return SensorResult(
            run_requests=[RunRequest(partition_key=batch_id, run_key=key) for batch_id, key in decision.launch],
            dynamic_partitions_requests=[defs.partitions.build_add_request(new)] if new else [],
            cursor=cursor or "",
        )

    return _sensor
