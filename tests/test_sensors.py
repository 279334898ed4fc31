"""Sensors evaluated with build_sensor_context on a real instance and a real store."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunRequest, RunsFilter, SkipReason, build_sensor_context

from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.lease import Lease, compaction_lease, this_process
from embedding_assets.domain.models import LockHolder, Stage
from sensors import batch_status, decisions
from sensors.batch_status import batch_status_sensor
from sensors.compaction import compaction_sensor


def _prepared_and_submitted(runtime, demo_receipts, receipts_per_batch=None):
    runtime.store.put_receipts(demo_receipts)
    if receipts_per_batch:
        from embedding_assets.domain.batching import Budget

        runtime.pipeline.budget = Budget(max_requests=receipts_per_batch)
    runtime.pipeline.prepare("lines", 10_000_000, progress=lambda _: None)
    runtime.pipeline.submit("lines", progress=lambda _: None)


def test_batch_status_sensor_adds_partitions_and_requests_each_ingest_once(settings, runtime, instance, demo_receipts):
    _prepared_and_submitted(runtime, demo_receipts, receipts_per_batch=40)
    batch_ids = sorted(b.batch_id for b in runtime.store.list_batches("lines"))
    assert len(batch_ids) > 1
    defs = build_definitions(settings)
    sensor = batch_status_sensor(KIND_DEFS["lines"])

    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = sensor(context)
    assert sorted(r.partition_key for r in result.run_requests) == batch_ids
    assert all(r.run_key == f"lines-ingest-{r.partition_key}-0" for r in result.run_requests)
    (add,) = result.dynamic_partitions_requests
    assert add.partitions_def_name == "lines_batches" and sorted(add.partition_keys) == batch_ids
    assert all(b.stage == Stage.COMPLETED for b in runtime.store.list_batches("lines"))

    instance.add_dynamic_partitions("lines_batches", batch_ids)
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        again = sensor(context)
    assert not again.dynamic_partitions_requests  # known partitions are not added twice
    assert {r.run_key for r in again.run_requests} == {r.run_key for r in result.run_requests}


def test_a_failed_ingest_run_is_requested_again_up_to_the_limit(settings, runtime, instance, demo_receipts):
    _prepared_and_submitted(runtime, demo_receipts)
    defs = build_definitions(settings)
    sensor = batch_status_sensor(KIND_DEFS["lines"])
    (batch_id,) = [b.batch_id for b in runtime.store.list_batches("lines")]
    job = defs.resolve_job_def("lines_ingest_delta")
    keys = []
    for _ in range(decisions.MAX_INGEST_RUNS + 1):
        with build_sensor_context(instance=instance, resources=defs.resources) as context:
            keys.append([r.run_key for r in sensor(context).run_requests])
        instance.create_run_for_job(job, status=DagsterRunStatus.FAILURE, tags={"dagster/partition": batch_id})
    assert keys == [[f"lines-ingest-{batch_id}-{n}"] for n in range(decisions.MAX_INGEST_RUNS)] + [[]]


@pytest.mark.parametrize("retried", [False, True], ids=["canceled", "daemon-retry-canceled"])
def test_a_canceled_ingest_run_counts_as_failed_even_with_run_retries_on(settings, runtime, tmp_path, demo_receipts,
                                                                         retried):
    """The daemon never retries a canceled run, so it must change the run key as a failure does."""
    _prepared_and_submitted(runtime, demo_receipts)
    defs = build_definitions(settings)
    sensor = batch_status_sensor(KIND_DEFS["lines"])
    (batch_id,) = [b.batch_id for b in runtime.store.list_batches("lines")]
    job = defs.resolve_job_def("lines_ingest_delta")
    home = tmp_path / "retrying_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home), overrides={"run_retries": {"enabled": True}}) as instance:
        assert instance.run_retries_enabled
        keys = []
        for _ in range(decisions.MAX_INGEST_RUNS + 1):
            with build_sensor_context(instance=instance, resources=defs.resources) as context:
                keys.append([r.run_key for r in sensor(context).run_requests])
            tags = {"dagster/partition": batch_id}
            if retried:  # the run failed, the daemon retried it, and that retry was canceled
                retry = instance.create_run_for_job(job, status=DagsterRunStatus.CANCELED, tags=tags)
                instance.create_run_for_job(job, status=DagsterRunStatus.FAILURE, tags=tags | {
                    decisions.WILL_RETRY_TAG: "true", decisions.RETRIED_BY_TAG: retry.run_id})
            else:
                instance.create_run_for_job(job, status=DagsterRunStatus.CANCELED, tags=tags)
    assert keys == [[f"lines-ingest-{batch_id}-{n}"] for n in range(decisions.MAX_INGEST_RUNS)] + [[]]


def test_a_failed_run_the_daemon_retries_is_left_to_it_until_the_retry_is_overdue(settings, runtime, instance,
                                                                                  demo_receipts, monkeypatch):
    """A killed worker's run is the daemon's to retry; the sensor relaunches the batch only if that never comes."""
    _prepared_and_submitted(runtime, demo_receipts)
    defs = build_definitions(settings)
    sensor = batch_status_sensor(KIND_DEFS["lines"])
    (batch_id,) = [b.batch_id for b in runtime.store.list_batches("lines")]
    job = defs.resolve_job_def("lines_ingest_delta")

    def keys() -> list[str]:
        with build_sensor_context(instance=instance, resources=defs.resources) as context:
            return [r.run_key for r in sensor(context).run_requests]

    promised = instance.create_run_for_job(job, status=DagsterRunStatus.FAILURE,
                                           tags={"dagster/partition": batch_id, decisions.WILL_RETRY_TAG: "true"})
    assert keys() == [f"lines-ingest-{batch_id}-0"]  # the key already used: nothing new is launched
    monkeypatch.setattr(decisions, "RETRY_GRACE_SECONDS", 0)
    assert keys() == [f"lines-ingest-{batch_id}-1"]  # the retry is overdue: the sensor launches the batch again
    instance.add_run_tags(promised.run_id, {decisions.RETRIED_BY_TAG: "some-run"})
    assert keys() == [f"lines-ingest-{batch_id}-0"]  # the daemon did retry: its run carries the batch


GRACE = decisions.RETRY_GRACE_SECONDS


@pytest.mark.parametrize(("tags", "ended_ago", "retries_on", "awaiting"), [
    ({}, 0, False, False),  # no run retries: a failure is the sensor's to relaunch
    ({}, 0, True, True),  # retries on, verdict not written yet
    ({}, GRACE + 1, True, False),
    ({"dagster/will_retry": "false"}, 0, True, False),
    ({"dagster/will_retry": "true"}, 0, True, True),
    ({"dagster/will_retry": "true"}, GRACE + 1, True, False),  # promised, never came
    ({"dagster/will_retry": "true", "dagster/auto_retry_run_id": "r"}, GRACE + 1, True, True),
])
def test_awaiting_retry(tags, ended_ago, retries_on, awaiting):
    assert decisions.awaiting_retry(tags, ended=1000.0, now=1000.0 + ended_ago, retries_enabled=retries_on) is awaiting


def test_batch_status_sensor_pages_through_live_batches_across_ticks(
    settings, runtime, instance, demo_receipts, monkeypatch
):
    _prepared_and_submitted(runtime, demo_receipts, receipts_per_batch=40)
    live = sorted(b.batch_id for b in runtime.store.list_batches("lines"))
    monkeypatch.setattr(batch_status, "MAX_POLLS_PER_TICK", 1)
    defs = build_definitions(settings)
    sensor = batch_status_sensor(KIND_DEFS["lines"])
    cursor, seen = None, []
    for _ in live:
        with build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as context:
            result = sensor(context)
        cursor = result.cursor
        seen = sorted(r.partition_key for r in result.run_requests)
    assert seen == live and cursor == ""


def test_compaction_sensor_waits_for_deltas_and_for_a_running_compaction(settings, runtime, instance, demo_receipts):
    defs = build_definitions(settings)
    sensor = compaction_sensor(KIND_DEFS["lines"])
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        assert isinstance(sensor(context), SkipReason)

    _prepared_and_submitted(runtime, demo_receipts)
    finished, _ = runtime.pipeline.poll("lines", 100)
    runtime.pipeline.ingest(finished[0].batch_id, progress=lambda _: None)
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        request = sensor(context)
    assert request.tags["deltas"] == "1"

    job = defs.resolve_job_def("lines_compaction")
    instance.create_run_for_job(job, status=DagsterRunStatus.STARTED)
    assert instance.get_runs(RunsFilter(job_name="lines_compaction"))
    # The started run's live process (here, this one) holds the lease.
    with (Lease(runtime.store, compaction_lease("lines"), 60, 30),
          build_sensor_context(instance=instance, resources=defs.resources) as context):
        skipped = sensor(context)
    assert isinstance(skipped, SkipReason) and "in flight" in skipped.skip_message


@pytest.mark.parametrize("holder", ["dead on this host", "none"])
def test_a_started_compaction_run_whose_process_is_gone_does_not_hold_compaction_up(settings, runtime, instance,
                                                                                    demo_receipts, holder):
    """A `run` killed with kill -9 mid-compaction leaves its run STARTED for ever; its lease tells it is gone."""
    defs = build_definitions(settings)
    sensor = compaction_sensor(KIND_DEFS["lines"])
    _prepared_and_submitted(runtime, demo_receipts)
    finished, _ = runtime.pipeline.poll("lines", 100)
    runtime.pipeline.ingest(finished[0].batch_id, progress=lambda _: None)
    killed = instance.create_run_for_job(defs.resolve_job_def("lines_compaction"), status=DagsterRunStatus.STARTED)
    if holder.startswith("dead"):
        me = this_process()
        gone = LockHolder(me.host, me.pid, me.started - 1000)  # this pid, but a process started later: not it
        assert runtime.store.acquire_lock(compaction_lease("lines"), killed.run_id, 300, gone)
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        request = sensor(context)
    assert isinstance(request, RunRequest) and request.tags["deltas"] == "1"
    instance.create_run_for_job(defs.resolve_job_def("lines_compaction"), status=DagsterRunStatus.NOT_STARTED)
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        skipped = sensor(context)
    assert isinstance(skipped, SkipReason) and "in flight" in skipped.skip_message  # a run not started yet still counts


def test_compaction_sensor_applies_a_deletion_without_waiting_for_a_delta(settings, runtime, instance, demo_receipts):
    from tests.crashes import drive

    defs = build_definitions(settings)
    sensor = compaction_sensor(KIND_DEFS["lines"])
    runtime.store.put_receipts(demo_receipts[:2])
    drive(runtime, "lines")
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        assert isinstance(sensor(context), SkipReason), "everything applied: nothing to do"
    gone = demo_receipts[0]
    removed = runtime.store.delete_receipt(gone.image_id, gone.receipt_id)
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        request = sensor(context)
    assert removed > len(gone.lines) and request.tags == {"changes": str(len(gone.lines))}
    assert runtime.compactor("lines").run().removed > 0
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        assert isinstance(sensor(context), SkipReason), "the new version has applied them"
