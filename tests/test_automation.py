"""Sensors and schedules on a real instance and a real store: compaction follows an ingest within seconds,
ticks that start nothing say why, creation is skipped when there is nothing to claim, and the batch checks run
on their own schedule."""

from __future__ import annotations

from dagster import (
    AssetCheckKey,
    DagsterEventType,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
)

from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.models import Stage
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime
from sensors.batch_status import batch_status_sensor
from sensors.compaction import AFTER_INGEST_SECONDS, compaction_after_ingest_sensor
from sensors.schedules import CHECKS_CRON, create_batches_schedule
from tests.conftest import base_env

KIND = "lines"


def quiet(_: str) -> None:
    pass


def test_compaction_follows_a_successful_ingest_within_seconds_one_at_a_time(settings, runtime, instance,
                                                                              demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    runtime.pipeline.prepare(KIND, 10_000_000, quiet)
    runtime.pipeline.submit(KIND, quiet)
    (batch_id,) = [b.batch_id for b in runtime.store.list_batches(KIND)]
    while not runtime.pipeline.poll(KIND, 10)[0]:
        pass
    defs = build_definitions(settings)
    kind_defs = KIND_DEFS[KIND]
    instance.add_dynamic_partitions(kind_defs.partitions_name, [batch_id])
    ingest = defs.resolve_job_def(kind_defs.ingest_job.name).execute_in_process(
        instance=instance, partition_key=batch_id)
    assert runtime.store.list_batches(KIND, [Stage.DELTA_READY])
    sensor = compaction_after_ingest_sensor(kind_defs)
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == AFTER_INGEST_SECONDS <= 5
    success = next(e for e in instance.all_logs(ingest.run_id) if e.dagster_event_type == DagsterEventType.RUN_SUCCESS)

    def evaluate():
        with build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=success.dagster_event, dagster_instance=instance,
            dagster_run=ingest.dagster_run, resources=defs.resources,
        ) as context:
            return sensor(context)

    assert isinstance(evaluate(), RunRequest)
    compaction = defs.resolve_job_def(kind_defs.compaction_job.name)
    instance.create_run_for_job(compaction)  # one compaction in flight (NOT_STARTED): no second one
    held = evaluate()
    assert isinstance(held, SkipReason) and "still in flight" in held.skip_message


def test_a_batch_status_tick_that_starts_nothing_says_how_many_batches_are_live(tmp_path, instance, demo_receipts,
                                                                               fake_api, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings.from_env({**base_env(tmp_path), "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test",
                                  "OPENAI_BASE_URL": fake_api.base_url, "EMBEDDING_DIMENSIONS": "32"})
    runtime = Runtime.from_settings(settings)
    defs = build_definitions(settings)
    sensor = batch_status_sensor(KIND_DEFS[KIND])
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        assert sensor(context).skip_reason.skip_message == "no batch live"
    runtime.store.put_receipts(demo_receipts)
    runtime.pipeline.prepare(KIND, 10_000_000, quiet)
    runtime.pipeline.submit(KIND, quiet)
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = sensor(context)  # the server moves a batch one status per look: validating -> in_progress
    assert not result.run_requests and result.skip_reason.skip_message == "1 batches live, none finished"


def test_the_create_schedule_launches_only_when_there_is_something_to_claim(settings, runtime, instance,
                                                                            demo_receipts):
    defs = build_definitions(settings)
    schedule = create_batches_schedule(KIND_DEFS[KIND])
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    with build_schedule_context(instance=instance, resources=defs.resources) as context:
        skipped = schedule.evaluate_tick(context)
    assert not skipped.run_requests and skipped.skip_message == "nothing to embed: no item is NONE"
    runtime.store.put_receipts(demo_receipts)
    with build_schedule_context(instance=instance, resources=defs.resources) as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.asset_selection is None and "unembedded items" in request.tags["reason"]


def test_the_batch_checks_run_on_their_own_schedule(settings, runtime, instance):
    defs = build_definitions(settings)
    (scheduled,) = [s for s in defs.schedules if s.name == f"{KIND}_batch_checks_schedule"]
    assert scheduled.cron_schedule == CHECKS_CRON == "*/15 * * * *"
    assert scheduled.default_status == DefaultScheduleStatus.RUNNING
    result = defs.resolve_job_def(scheduled.job_name).execute_in_process(instance=instance)
    evaluated = {e.asset_check_evaluation_data.asset_check_key for e in result.all_events
                 if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION}
    assert evaluated == {AssetCheckKey.from_user_string(f"{KIND}/submitted_batches:{name}")
                         for name in ("no_pending_without_batch", "no_stuck_batches")}
