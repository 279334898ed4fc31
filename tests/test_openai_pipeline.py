"""The pipeline against a loopback Batch API, through the real openai SDK, one misbehaviour at a time.

Whatever the server does, the run ends with every item SUCCESS (its vector
in the snapshot, the one for its own input), or back to NONE / FAILED with
the provider's reason; no request is answered (paid) twice, no record has
two live provider batches, and the recorded cost is the server's usage at
the configured price.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedding_assets.data.demo import generate_receipts
from embedding_assets.domain.batching import Budget
from embedding_assets.domain.models import PROVIDER_LIVE, Stage, Status
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.consistency import snapshot_agreement
from embedding_assets.steps.pipeline import Pipeline
from embedding_assets.steps.search import search
from embedding_assets.wiring import Runtime
from resources.vector_store.chroma import persistent_collection
from tests.fake_batch_api import FakeBatchAPI, Fault, fake_tokens, fake_vector
from tests.support import DIMS, KIND, make_runtime, openai_env, quiet, settle

PRICE = 0.01  # text-embedding-3-small, batch tier, USD per million tokens


@pytest.fixture
def runtime(tmp_path: Path, fake_api: FakeBatchAPI) -> Runtime:
    return make_runtime(tmp_path, fake_api)


def drive(runtime: Runtime, rounds: int = 5, pipeline: Pipeline | None = None) -> None:
    """Rounds of prepare -> settle (released items are sent again), then one compaction."""
    pipeline = pipeline or runtime.pipeline
    for _ in range(rounds):
        pipeline.prepare(KIND, 100_000, quiet)
        settle(pipeline, runtime.store)
        if not runtime.store.status_counts(KIND).get(Status.NONE.value):
            break
    runtime.compactor(KIND).run(quiet)


def snapshot_vectors(runtime: Runtime) -> dict[str, np.ndarray]:
    found = runtime.vectors(KIND).read_copy()
    if found is None:
        return {}
    with persistent_collection(found[0], KIND) as collection:
        got = collection.get(include=["embeddings"])
    return {vid: np.asarray(vec, dtype=np.float32) for vid, vec in zip(got["ids"], got["embeddings"])}


def assert_sound(runtime: Runtime, api: FakeBatchAPI) -> dict[str, int]:
    """The invariants every scenario ends with; returns the item counts."""
    counts = runtime.store.status_counts(KIND)
    assert not counts.get(Status.PENDING.value), counts
    assert snapshot_agreement(runtime.store, runtime.vectors(KIND)).ok
    inputs = api.sent_inputs()
    for vector_id, vector in snapshot_vectors(runtime).items():
        np.testing.assert_allclose(vector, fake_vector(inputs[vector_id], DIMS), atol=1e-6)
    assert max(api.answered().values(), default=0) <= 1, "a request was answered (paid for) twice"
    records = runtime.store.list_batches(KIND)
    for record in records:
        unfailed = [b for b in api.batches_for(record.batch_id) if b["status"] != "failed"]
        assert len(unfailed) <= 1, f"{record.batch_id} has provider batches {[b['id'] for b in unfailed]}"
    assert sum(r.prompt_tokens for r in records) == api.billed_tokens()
    assert sum(r.cost_usd for r in records) == pytest.approx(api.billed_tokens() * PRICE / 1e6, abs=1e-9)
    for item in runtime.store.items_with_status(KIND, Status.FAILED.value):
        assert item.last_error and item.attempts == 3
    return counts


def total_items(runtime: Runtime) -> int:
    return sum(runtime.store.status_counts(KIND).values())


def test_shuffled_output_lands_every_vector_on_its_own_item(runtime, fake_api):
    fake_api.switches.shuffle = True
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert counts[Status.SUCCESS.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)
    assert fake_api.billed_tokens() > 0 and fake_api.line_tokens() == fake_api.billed_tokens()
    bodies = fake_api.sent_inputs()
    assert len(snapshot_vectors(runtime)) == len(bodies)


def test_native_size_omits_dimensions_and_search_embeds_the_query_synchronously(tmp_path, fake_api):
    runtime = make_runtime(tmp_path, fake_api, receipts=1, EMBEDDING_DIMENSIONS="")
    assert runtime.provider.dimensions == 1536 and runtime.provider.request_dimensions is None
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    record = runtime.store.list_batches(KIND)[0]
    assert b'"dimensions"' not in runtime.objects.get_bytes(record.input_key)
    settle(runtime.pipeline, runtime.store)
    runtime.compactor(KIND).run(quiet)
    custom_id, text = next(iter(fake_api.sent_inputs().items()))
    hits = search(runtime.vectors(KIND), runtime.provider, text, k=1)
    assert hits[0].id == custom_id and hits[0].distance == pytest.approx(0.0, abs=1e-4)
    assert "POST /v1/embeddings" in fake_api.calls


def test_failed_requests_retry_then_fail_with_the_providers_message(runtime, fake_api):
    fake_api.switches.fail_share = 0.3
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    failed = list(runtime.store.items_with_status(KIND, Status.FAILED.value))
    assert failed and counts.get(Status.SUCCESS.value)
    assert all("Injected failure" in item.last_error and "HTTP 400" in item.last_error for item in failed)
    assert counts.get(Status.NONE.value, 0) == 0


def test_expired_batch_keeps_what_finished_and_sends_the_rest_again(runtime, fake_api):
    fake_api.switches.expire_after = 4
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    settle(runtime.pipeline, runtime.store)
    record = runtime.store.list_batches(KIND)[0]
    assert record.stage == Stage.DELTA_READY and record.vectors == 4
    released = list(runtime.store.items_with_status(KIND, Status.NONE.value))
    assert released and all("batch_expired" in item.last_error and item.attempts == 1 for item in released)

    fake_api.switches.expire_after = None
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert counts[Status.SUCCESS.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)


def test_batch_whose_every_request_failed_has_no_output_file_and_releases_all(runtime, fake_api):
    fake_api.switches.all_fail = True
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    settle(runtime.pipeline, runtime.store)
    record = runtime.store.list_batches(KIND)[0]
    assert record.stage == Stage.DELTA_READY and record.output_file_id is None and record.vectors == 0
    assert record.failed_requests == record.request_count and record.cost_usd == 0
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert counts[Status.FAILED.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)


def test_validation_failure_is_kept_on_the_record_and_its_items_released(runtime, fake_api):
    fake_api.switches.fail_validation = 1
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    settle(runtime.pipeline, runtime.store)
    record = runtime.store.list_batches(KIND)[0]
    assert record.stage == Stage.DELTA_READY
    assert "invalid_request (line 1): The input file is malformed" in record.last_error
    released = list(runtime.store.items_with_status(KIND, Status.NONE.value))
    assert released and all("malformed" in item.last_error and item.attempts == 1 for item in released)
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert counts[Status.SUCCESS.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)


@pytest.mark.parametrize("status", [429, 500])
def test_rate_limits_and_server_errors_are_retried_without_a_second_batch(runtime, fake_api, status):
    wait = {"POST /v1/batches": "1", "other": "0.2"} if status == 429 else {}
    fake_api.faults += [Fault("POST", "/v1/files", status, 1, wait.get("other")),
                        Fault("POST", "/v1/batches", status, 1, wait.get("POST /v1/batches")),
                        Fault("GET", "/v1/batches/", status, 2, wait.get("other")),
                        Fault("GET", "/v1/files/", status, 2, wait.get("other"))]
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert counts[Status.SUCCESS.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)
    assert all(f.times == 0 for f in fake_api.faults)
    assert len(fake_api.batches) == len(runtime.store.list_batches(KIND))
    if status == 429:  # the create was tried again only after the Retry-After it was given
        creates = [t for call, t in zip(fake_api.calls, fake_api.call_times) if call == "POST /v1/batches"]
        assert creates[1] - creates[0] >= 1.0


def test_cut_downloads_are_fetched_again_whole(runtime, fake_api):
    fake_api.switches.cut_downloads = 3
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert fake_api.switches.cut_downloads == 0
    assert counts[Status.SUCCESS.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)
    assert not list(runtime.tuning.work_dir.rglob("*.part"))


def test_float_vectors_from_a_server_that_ignores_base64(runtime, fake_api):
    fake_api.switches.ignore_base64 = True
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert counts[Status.SUCCESS.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)


def test_lost_create_answer_is_reconciled_not_created_twice(runtime, fake_api):
    fake_api.switches.drop_create_responses = 1
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    report = runtime.pipeline.submit(KIND, quiet)
    assert len(report.submitted) == 1 and len(fake_api.batches) == 1
    drive(runtime)
    assert_sound(runtime, fake_api)


def test_crashed_submission_is_adopted_by_the_next_submit(runtime, fake_api):
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    record = runtime.store.list_batches(KIND)[0]
    file_id = runtime.provider.upload(_input_file(runtime, record, runtime.tuning.work_dir))
    runtime.provider.create_batch(file_id, {"batch_id": record.batch_id})  # then the process "died"
    report = runtime.pipeline.submit(KIND, quiet)
    assert report.reconciled == [record.batch_id] and len(fake_api.batches) == 1
    drive(runtime)
    assert_sound(runtime, fake_api)


def _input_file(runtime: Runtime, record, scratch: Path) -> Path:
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "crashed.jsonl"
    runtime.objects.download(record.input_key, path)
    return path


def test_enqueued_limit_holds_batches_and_a_refusal_sends_one_back_to_prepared(tmp_path, fake_api):
    runtime = make_runtime(tmp_path, fake_api, receipts=4, ENQUEUED_TOKEN_LIMIT="1250", LINES_RECIPE="context3")
    # Files of one receipt each (500-600 tokens with the three-row inputs): two fit in the limit at once.
    pipeline = Pipeline(runtime.store, runtime.objects, runtime.provider, runtime.tuning.work_dir,
                        budget=Budget(max_tokens=650), settings=runtime.pipeline.settings)
    pipeline.prepare(KIND, 100_000, quiet)
    prepared = runtime.store.list_batches(KIND)
    assert len(prepared) == 4 and all(r.estimated_tokens == _provider_tokens(runtime, r) for r in prepared)

    report = pipeline.submit(KIND, quiet)
    assert len(report.submitted) == 2 and report.held == [r.batch_id for r in prepared[2:]]
    # The provider's own queue holds any one batch but not two: the second is refused at validation.
    fake_api.switches.enqueued_limit = max(_provider_tokens(runtime, r) for r in prepared) + 1
    pipeline.poll(KIND, 100)
    refused = runtime.store.get_batch(report.submitted[1])
    assert refused.stage == Stage.PREPARED and refused.provider_batch_id is None
    assert "token_limit_exceeded" in refused.last_error
    image_id, receipt_id = refused.receipt_refs[0]
    assert all(i.status in (Status.PENDING, Status.NOISE) and i.attempts == 0
               for i in runtime.store.receipt_items(KIND, image_id, receipt_id))

    drive(runtime, pipeline=pipeline)
    counts = assert_sound(runtime, fake_api)
    assert counts[Status.SUCCESS.value] + counts.get(Status.NOISE.value, 0) == total_items(runtime)
    assert all(item.attempts == 0 for item in runtime.store.items_with_status(KIND, Status.SUCCESS.value))
    tries = fake_api.batches_for(refused.batch_id)
    assert len(tries) >= 2 and sum(b["status"] == "failed" for b in tries) == len(tries) - 1
    assert all(b["errors"]["data"][0]["code"] == "token_limit_exceeded" for b in tries if b["status"] == "failed")


def _provider_tokens(runtime: Runtime, record) -> int:
    lines = runtime.objects.get_bytes(record.input_key).splitlines()
    return sum(fake_tokens(json.loads(line)["body"]["input"]) for line in lines)


def test_cancel_keeps_what_finished_and_releases_the_rest(runtime, fake_api):
    fake_api.switches.cancel_keeps = 3
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    runtime.pipeline.submit(KIND, quiet)
    record = runtime.store.list_batches(KIND)[0]
    assert runtime.pipeline.cancel(record.batch_id).stage == Stage.CANCELLING
    settle(runtime.pipeline, runtime.store)
    record = runtime.store.get_batch(record.batch_id)
    assert record.stage == Stage.DELTA_READY and record.vectors == 3
    released = list(runtime.store.items_with_status(KIND, Status.NONE.value))
    assert released and all("batch ended cancelled" in item.last_error for item in released)
    with pytest.raises(ValueError, match="not in flight"):
        runtime.pipeline.cancel(record.batch_id)
    runtime.compactor(KIND).run(quiet)
    assert_sound(runtime, fake_api)


def test_batch_stuck_in_finalizing_is_reported(runtime, fake_api):
    from embedding_assets.steps.status import kind_status

    fake_api.switches.stuck_finalizing = True
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    runtime.pipeline.submit(KIND, quiet)
    for _ in range(4):
        runtime.pipeline.poll(KIND, 100)
    record = runtime.store.list_batches(KIND)[0]
    assert record.stage == Stage.FINALIZING and record.last_error.startswith("stuck: finalizing for 3.0 h")
    assert kind_status(runtime.store, runtime.vectors(KIND))["stuck"] == {record.batch_id: record.last_error}


def test_batch_stuck_past_the_reap_age_is_cancelled_reaped_and_its_items_sent_again(runtime, fake_api):
    fake_api.switches.stuck_finalizing = True
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    runtime.pipeline.submit(KIND, quiet)
    for _ in range(3):
        runtime.pipeline.poll(KIND, 100)
    (record,) = runtime.store.list_batches(KIND)
    assert record.stage == Stage.FINALIZING
    runtime.pipeline.settings = replace(runtime.pipeline.settings, reap_after_seconds=0)

    finished, _ = runtime.pipeline.poll(KIND, 100)

    reaped = runtime.store.get_batch(record.batch_id)
    assert not finished and reaped.stage == Stage.REAPED
    assert reaped.last_error.startswith("reaped: still finalizing")
    assert fake_api.batches_for(record.batch_id)[0]["status"] in ("cancelling", "cancelled")
    assert runtime.store.status_counts(KIND) == {Status.NONE.value: total_items(runtime)}
    fake_api.switches.stuck_finalizing = False
    runtime.pipeline.settings = replace(runtime.pipeline.settings, reap_after_seconds=48 * 3600)
    drive(runtime)
    counts = assert_sound(runtime, fake_api)
    assert counts.get(Status.SUCCESS.value, 0) + counts.get(Status.NOISE.value, 0) == total_items(runtime)


def test_costs_fall_back_to_line_usage_when_the_batch_has_none(runtime, fake_api):
    fake_api.switches.batch_usage = False
    drive(runtime)
    assert_sound(runtime, fake_api)


def test_polling_pages_through_any_number_of_batches_across_calls(runtime, fake_api):
    pipeline = Pipeline(runtime.store, runtime.objects, runtime.provider, runtime.tuning.work_dir,
                        budget=Budget(max_requests=40), settings=runtime.pipeline.settings)
    runtime.store.put_receipts(generate_receipts(6, seed=9))
    pipeline.prepare(KIND, 100_000, quiet)
    pipeline.submit(KIND, quiet)
    live = runtime.store.list_batches(KIND, PROVIDER_LIVE)
    assert len(live) > 3
    start, cursor, pages = len(fake_api.calls), None, 0
    while True:
        _, cursor = pipeline.poll(KIND, 2, cursor)
        pages += 1
        if cursor is None:
            break
    retrieved = [c for c in fake_api.calls[start:] if c.startswith("GET /v1/batches/batch_")]
    assert sorted(retrieved) == sorted({f"GET /v1/batches/{r.provider_batch_id}" for r in live})
    assert pages == -(-len(live) // 2)


def test_the_dagster_assets_and_runner_work_against_the_batch_api(tmp_path, fake_api, monkeypatch):
    from dagster import DagsterInstance

    from embedding_assets.cli.run import run_kind
    from embedding_assets.definitions import KIND_DEFS, build_definitions

    env = openai_env(tmp_path, fake_api, BATCH_PRICES_PER_MTOK="text-embedding-3-small=0.02")
    monkeypatch.setenv("OPENAI_API_KEY", env["OPENAI_API_KEY"])  # the resource reads it as an EnvVar, at run time
    settings = Settings.from_env(env)
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(generate_receipts(1, seed=5))
    fake_api.switches.shuffle = True
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        summary = run_kind(build_definitions(settings), KIND_DEFS[KIND], runtime, instance, timeout=60,
                           poll_seconds=0.05, progress=quiet)
        deltas = instance.get_latest_materialization_event(KIND_DEFS[KIND].assets[2].key)
        meta = deltas.asset_materialization.metadata
    assert not summary.timed_out and summary.embedded > 0
    record = runtime.store.list_batches(KIND)[0]
    assert record.stage == Stage.COMPACTED and record.prompt_tokens == fake_api.billed_tokens()
    assert record.cost_usd == pytest.approx(fake_api.billed_tokens() * 0.02 / 1e6)
    assert meta["cost_usd"].value == record.cost_usd and meta["model"].value == "text-embedding-3-small"


def test_a_batch_sent_with_the_old_model_is_superseded_not_merged_into_the_reembed(tmp_path, fake_api):
    """ada-002 and 3-small share a size: only what the batch was sent with tells their vectors apart."""
    old = make_runtime(tmp_path, fake_api, EMBEDDING_MODEL="text-embedding-ada-002", EMBEDDING_DIMENSIONS="")
    drive(old)
    old.store.put_receipts(generate_receipts(3, seed=5)[2:])
    old.pipeline.prepare(KIND, 100_000, quiet)
    old.pipeline.submit(KIND, quiet)
    (in_flight,) = old.store.list_batches(KIND, [Stage.SUBMITTED])
    new = Runtime.from_settings(Settings.from_env(openai_env(
        tmp_path, fake_api, EMBEDDING_MODEL="text-embedding-3-small", EMBEDDING_DIMENSIONS="")))
    new.provider.backoff_seconds = 0.01
    assert new.provider.dimensions == old.provider.dimensions
    new.start_reembed(KIND)

    settle(new.pipeline, new.store)  # the old batch finishes and is ingested under the new configuration
    report = new.compactor(KIND).run(quiet)

    assert report.superseded == 1
    keys = [key for line in new.objects.get_bytes(in_flight.manifest_key).splitlines()
            for key in json.loads(line)["item_keys"]]
    items = new.store.items_by_key(KIND, keys).values()
    assert keys and {item.status for item in items} == {Status.NONE}
    drive(new)
    assert new.vectors(KIND).latest().model == "text-embedding-3-small"
    assert {item.status for item in new.store.items_by_key(KIND, keys).values()} == {Status.SUCCESS}
    with new.vectors(KIND).readable() as collection:
        batches = {meta["batch_id"] for meta in collection.get(include=["metadatas"])["metadatas"]}
    assert in_flight.batch_id not in batches
    assert {fake_api.batches_for(b)[0]["model"] for b in batches} == {"text-embedding-3-small"}

