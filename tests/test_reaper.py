"""Batches that will never finish are given up on, so no item stays PENDING for ever.

A batch is reaped when the provider no longer knows it, or when it is still
unfinished long after submission (`REAP_AFTER_HOURS`). Its items go back to
NONE (an attempt spent) and the next run embeds them through a new batch.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from embedding_assets.domain.models import Stage, Status
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.consistency import snapshot_agreement
from embedding_assets.steps.status import kind_status
from embedding_assets.wiring import Runtime
from tests.crashes import drive, kill_during
from tests.support import base_env

KIND = "lines"


def _submitted(runtime: Runtime) -> list:
    runtime.pipeline.prepare(KIND, 10_000_000, progress=lambda _: None)
    runtime.pipeline.submit(KIND, progress=lambda _: None)
    records = runtime.store.list_batches(KIND, [Stage.SUBMITTED])
    assert records
    return records


def _forget_at_provider(settings: Settings, record) -> None:
    """The provider loses the batch: the local provider's record of it is deleted."""
    (settings.provider_dir / "batches" / f"{record.provider_batch_id}.json").unlink()


def _assert_converged(runtime: Runtime, receipts) -> None:
    counts = runtime.store.status_counts(KIND)
    total = sum(len(r.lines) for r in receipts)
    assert counts.get(Status.SUCCESS.value, 0) + counts.get(Status.NOISE.value, 0) == total, counts
    assert not runtime.store.pending_without_live_batch(KIND)
    assert snapshot_agreement(runtime.store, runtime.vectors(KIND)).ok


@pytest.fixture
def backend_runtime(backend_settings: Settings) -> Runtime:
    return Runtime.from_settings(backend_settings)


def test_a_batch_the_provider_lost_is_reaped_and_its_items_embedded_again(
    backend_settings, backend_runtime, demo_receipts
):
    runtime = backend_runtime
    runtime.store.put_receipts(demo_receipts)
    lost, *kept = _submitted(runtime)
    _forget_at_provider(backend_settings, lost)

    finished, _ = runtime.pipeline.poll(KIND, 1000)

    record = runtime.store.get_batch(lost.batch_id)
    assert record.stage == Stage.REAPED and record.last_error.startswith("reaped: gone at the provider")
    assert lost.batch_id not in {r.batch_id for r in finished}
    released = [i for i in runtime.store.items_with_status(KIND, Status.NONE.value) if i.attempts == 1]
    assert released and {i.last_error for i in released} == {record.last_error}
    assert {r.batch_id for r in finished} == {r.batch_id for r in kept}
    drive(runtime, KIND)
    _assert_converged(runtime, demo_receipts)
    assert runtime.store.get_batch(lost.batch_id).stage == Stage.REAPED


def test_a_batch_unanswered_past_the_reap_age_is_reaped(settings, demo_receipts, monkeypatch):
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:2])
    (record,) = _submitted(runtime)
    runtime.pipeline.poll(KIND, 1000)  # completes it: the local provider works on retrieve
    runtime.store.update_batch(record.batch_id, stage=Stage.IN_PROGRESS)

    def silent(self, batch_id):  # the provider stops answering
        raise TimeoutError("the provider does not answer")

    monkeypatch.setattr(type(runtime.provider), "retrieve", silent)
    with pytest.raises(TimeoutError):
        runtime.pipeline.poll(KIND, 1000)  # within the age: kept, the error on the record
    assert runtime.store.get_batch(record.batch_id).stage == Stage.IN_PROGRESS
    assert runtime.store.get_batch(record.batch_id).last_error == "poll: the provider does not answer"
    runtime.pipeline.settings = replace(runtime.pipeline.settings, reap_after_seconds=0)
    with pytest.raises(TimeoutError):
        runtime.pipeline.poll(KIND, 1000)
    reaped = runtime.store.get_batch(record.batch_id)
    assert reaped.stage == Stage.REAPED and "no answer from the provider" in reaped.last_error
    assert not runtime.store.status_counts(KIND).get(Status.PENDING.value)


def test_a_kill_between_recording_the_reap_and_releasing_is_repaired_by_the_next_run(tmp_path, demo_receipts):
    settings = Settings.from_env(base_env(tmp_path))
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts)
    lost, *_ = _submitted(runtime)
    _forget_at_provider(settings, lost)
    store_cls = type(runtime.store)

    kill_during(settings, "poll", KIND, f"{store_cls.__module__}:{store_cls.__name__}.release", "before")

    assert runtime.store.get_batch(lost.batch_id).stage == Stage.REAPED
    assert runtime.store.pending_without_live_batch(KIND), "its items are still PENDING, owned by no batch"
    drive(runtime, KIND)
    _assert_converged(runtime, demo_receipts)


def test_status_names_reaped_batches(settings, demo_receipts):
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:1])
    (record,) = _submitted(runtime)
    _forget_at_provider(settings, record)
    runtime.pipeline.poll(KIND, 1000)
    status = kind_status(runtime.store, runtime.vectors(KIND))
    assert status["reaped"] == {record.batch_id: runtime.store.get_batch(record.batch_id).last_error}


def test_the_asset_check_names_stuck_and_reaped_batches(settings, instance, demo_receipts):
    from embedding_assets.definitions import KIND_DEFS, build_definitions

    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:3])
    (lost,) = _submitted(runtime)
    runtime.store.put_receipts(demo_receipts[3:])
    stuck = next(r for r in _submitted(runtime) if r.batch_id != lost.batch_id)
    _forget_at_provider(settings, lost)
    runtime.pipeline.poll(KIND, 1000)
    runtime.store.update_batch(stuck.batch_id, stage=Stage.FINALIZING, last_error="stuck: finalizing for 3.0 h")
    defs = build_definitions(settings)

    result = defs.resolve_job_def(KIND_DEFS[KIND].create_job.name).execute_in_process(instance=instance)

    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_stuck_batches"]
    assert not evaluation.passed
    assert evaluation.metadata["stuck"].value == {stuck.batch_id: "stuck: finalizing for 3.0 h"}
    assert list(evaluation.metadata["recently_reaped"].value) == [lost.batch_id]
