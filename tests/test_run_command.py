"""`run` against the loopback Batch API: it ends only when nothing is left to send or waiting, launches
nothing when there is nothing to claim, and files its runs under their jobs in the UI."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, RunsFilter
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from embedding_assets.cli.launch import LAUNCHED_BY_TAG
from embedding_assets.cli.run import LAUNCHED_BY, run_kind
from embedding_assets.data.demo import generate_receipts
from embedding_assets.definitions import KIND_DEFS, LOCATION_NAME, build_definitions
from embedding_assets.domain.models import Status
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime
from tests.fake_batch_api import FakeBatchAPI

KIND = "lines"


def openai_settings(tmp_path: Path, api: FakeBatchAPI) -> Settings:
    return Settings.from_env({
        "DATA_DIR": str(tmp_path / "data"), "LOCK_DURATION_MINUTES": "1", "HEARTBEAT_INTERVAL_SECONDS": "2",
        "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url,
        "EMBEDDING_DIMENSIONS": "32", "OPENAI_MAX_RETRIES": "2", "OPENAI_TIMEOUT_SECONDS": "10",
    })


def run_once(settings: Settings, runtime: Runtime, instance: DagsterInstance, lines: list[str]):
    return run_kind(build_definitions(settings), KIND_DEFS[KIND], runtime, instance, timeout=240, poll_seconds=0.05,
                    progress=lines.append)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Dagster resource reads the key from the environment (an EnvVar), as in production."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


@pytest.mark.parametrize("fault", ["a share of requests fail", "batches expire part done", "a batch fails whole"])
def test_run_sends_released_items_again_until_none_is_left_then_reports_the_failed(tmp_path, fake_api, instance,
                                                                                   fault):
    settings = openai_settings(tmp_path, fake_api)
    runtime = Runtime.from_settings(settings)
    runtime.provider.backoff_seconds = 0.01
    runtime.store.put_receipts(generate_receipts(2, seed=5))
    if fault == "a share of requests fail":
        fake_api.switches.fail_share = 0.2  # the same requests every time: they end FAILED
    elif fault == "batches expire part done":
        fake_api.switches.expire_after = 12
    else:
        fake_api.switches.fail_validation = 1
    lines: list[str] = []
    summary = run_once(settings, runtime, instance, lines)

    counts = runtime.store.status_counts(KIND)
    assert not summary.timed_out
    assert counts.get(Status.NONE.value, 0) == 0 and counts.get(Status.PENDING.value, 0) == 0
    assert sum(line.startswith(f"[{KIND}] create batches") for line in lines) >= 2  # released items went again
    assert summary.failed == counts.get(Status.FAILED.value, 0)
    failed = list(runtime.store.items_with_status(KIND, Status.FAILED.value))
    assert set(summary.failed_sample) <= {item.key for item in failed}
    assert all(error for error in summary.failed_sample.values())
    if fault == "a batch fails whole":
        assert summary.failed == 0 and counts[Status.SUCCESS.value] > 0
    else:
        assert summary.failed > 0 and summary.failed_sample and counts[Status.SUCCESS.value] > 0


def test_a_run_with_nothing_to_claim_launches_nothing_and_runs_show_under_their_jobs(tmp_path, fake_api, instance):
    settings = openai_settings(tmp_path, fake_api)
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(generate_receipts(1, seed=5))
    first = run_once(settings, runtime, instance, [])
    unembedded = AssetKey([KIND, "unembedded"])
    materialized = instance.get_latest_materialization_event(unembedded)
    second = run_once(settings, runtime, instance, [])

    assert first.embedded > 0 and not first.nothing_to_do
    assert second.nothing_to_do and second.runs == []
    assert instance.get_latest_materialization_event(unembedded).run_id == materialized.run_id

    label = f"__repository__@{LOCATION_NAME}"
    for job in (KIND_DEFS[KIND].create_job, KIND_DEFS[KIND].ingest_job, KIND_DEFS[KIND].compaction_job):
        runs = instance.get_runs(RunsFilter(job_name=job.name, tags={REPOSITORY_LABEL_TAG: label}))
        assert runs and all(run.tags[LAUNCHED_BY_TAG] == LAUNCHED_BY for run in runs), job.name
        assert all(run.remote_job_origin.location_name == LOCATION_NAME for run in runs)
    assert {run.run_id for run in instance.get_runs()} == set(first.runs)
