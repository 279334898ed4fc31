"""Stale vectors: found from the store's change feed at compaction, and by the full reconcile for the rest."""

from __future__ import annotations

import sqlite3

import boto3
from dagster import materialize

from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.models import Status, parse_item_key
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.consistency import sampled_agreement, snapshot_agreement
from embedding_assets.steps.reconcile import reconcile
from embedding_assets.wiring import Runtime
from resources.deployment import resources_from_settings
from tests.crashes import drive
from tests.support import IMAGE, make_receipt

KIND = "words"


def _vector_ids(runtime: Runtime, kind: str = KIND) -> set[str]:
    with runtime.vectors(kind).readable() as collection:
        return set(collection.get(include=[])["ids"]) if collection is not None else set()


def _delete_behind_our_back(settings: Settings, key: str) -> None:
    """What another tool would do: remove the item from the store without any of this project's methods."""
    if settings.dynamodb_table:
        parts = parse_item_key(key)
        sk = f"RECEIPT#{parts['receipt_id']:05d}#LINE#{parts['line_id']:05d}"
        if "word_id" in parts:
            sk += f"#WORD#{parts['word_id']:05d}"
        client = boto3.client("dynamodb", endpoint_url=settings.aws_endpoint_url)
        client.delete_item(TableName=settings.dynamodb_table, Key={"PK": {"S": f"IMAGE#{parts['image_id']}"},
                                                                   "SK": {"S": sk}})
    else:
        with sqlite3.connect(settings.sqlite_path) as conn:
            conn.execute("DELETE FROM items WHERE key = ?", (key,))


def test_compaction_reads_only_the_changes_since_the_last_version(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, KIND)
    first = runtime.vectors(KIND).latest()
    assert first.changes_cursor == runtime.store.changes_head(KIND)
    gone = demo_receipts[0]
    word = next(i for i in runtime.store.items_with_status(KIND, Status.SUCCESS.value) if i.image_id != gone.image_id)
    runtime.store.delete_receipt(gone.image_id, gone.receipt_id)
    runtime.store.set_text(KIND, word.key, "CHANGED")
    report = runtime.compactor(KIND).run()
    assert report.published and not report.full_scan
    assert report.changes_read == len(gone.words) + 1 and report.removed == len(gone.words) + 1
    assert not any(v.startswith(gone.key) for v in _vector_ids(runtime)) and word.key not in _vector_ids(runtime)
    assert runtime.vectors(KIND).latest().changes_cursor == runtime.store.changes_head(KIND)
    assert report.changes_trimmed > 0 and len(runtime.store.vector_changes(KIND, "")[0]) <= 1, "applied, forgotten"
    assert snapshot_agreement(runtime.store, runtime.vectors(KIND)).ok
    again = runtime.compactor(KIND).run()
    assert again.changes_read == 0 and not again.published, "a change is applied once"


def test_changes_that_touch_no_vector_only_move_the_cursor(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts[:2])
    drive(runtime, KIND)
    before = runtime.vectors(KIND).latest()
    runtime.store.put_receipts(demo_receipts[2:3])  # new items, nothing embedded for them yet
    runtime.store.delete_receipt(demo_receipts[2].image_id, demo_receipts[2].receipt_id)
    report = runtime.compactor(KIND).run()
    after = runtime.vectors(KIND).latest()
    assert report.removed == 0 and after.version == before.version
    assert after.changes_cursor == runtime.store.changes_head(KIND) != before.changes_cursor


def test_reconcile_removes_a_vector_whose_item_was_deleted_behind_our_back(backend_settings, demo_receipts):
    runtime = Runtime.from_settings(backend_settings)
    runtime.store.put_receipts(demo_receipts[:2])
    drive(runtime, KIND)
    victim = sorted(_vector_ids(runtime))[0]
    _delete_behind_our_back(backend_settings, victim)
    assert not snapshot_agreement(runtime.store, runtime.vectors(KIND)).ok
    steps = runtime.tuning.steps
    report = reconcile(runtime.store, runtime.vectors(KIND), steps.lock_ttl_seconds, steps.heartbeat_seconds, 100,
                       progress=lambda _: None)
    assert report.removed == 1 and report.removed_sample == [victim] and not report.clean
    assert victim not in _vector_ids(runtime)
    assert snapshot_agreement(runtime.store, runtime.vectors(KIND)).ok
    assert reconcile(runtime.store, runtime.vectors(KIND), steps.lock_ttl_seconds, steps.heartbeat_seconds, 100,
                     progress=lambda _: None).clean


def test_reconcile_drops_a_row_vector_whose_line_was_deleted_and_sends_the_rest_of_the_row_again(
        backend_settings, demo_receipts):
    runtime = Runtime.from_settings(backend_settings)
    runtime.store.put_receipts(demo_receipts[:2])
    drive(runtime, "lines")
    line = runtime.vectors("lines")
    with line.readable() as collection:
        got = collection.get(include=["metadatas"])
    vector_id, keys = next((vid, item_keys_of_vector(vid, meta)) for vid, meta in zip(got["ids"], got["metadatas"])
                           if len(item_keys_of_vector(vid, meta)) > 1)
    _delete_behind_our_back(backend_settings, vector_id)  # the row's leftmost line
    steps = runtime.tuning.steps
    report = reconcile(runtime.store, line, steps.lock_ttl_seconds, steps.heartbeat_seconds, 100,
                       progress=lambda _: None)
    assert report.removed == 1 and report.requeued == len(keys) - 1
    assert vector_id not in _vector_ids(runtime, "lines")
    drive(runtime, "lines")
    assert snapshot_agreement(runtime.store, line).ok and vector_id not in _vector_ids(runtime, "lines")


def test_reconcile_reads_again_what_a_lagging_status_listing_left_out_before_removing_its_vector(
        runtime, demo_receipts, monkeypatch):
    """DynamoDB lists statuses from an index that lags the items: just marked SUCCESS may not be listed yet."""
    runtime.store.put_receipts(demo_receipts[:2])
    drive(runtime, KIND)
    listing = runtime.store.items_with_status
    hidden = next(listing(KIND, Status.SUCCESS.value)).key
    monkeypatch.setattr(runtime.store, "items_with_status",
                        lambda kind, status: (i for i in listing(kind, status) if i.key != hidden))
    steps = runtime.tuning.steps
    report = reconcile(runtime.store, runtime.vectors(KIND), steps.lock_ttl_seconds, steps.heartbeat_seconds, 100,
                       progress=lambda _: None)
    assert report.removed == 0 and hidden in _vector_ids(runtime)
    assert snapshot_agreement(runtime.store, runtime.vectors(KIND)).ok, "nor does the full check call it extra"


def test_the_daily_reconcile_job_reports_what_it_repaired(settings, instance, demo_receipts):
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:2])
    drive(runtime, KIND)
    victim = sorted(_vector_ids(runtime))[-1]
    _delete_behind_our_back(settings, victim)
    job = build_definitions(settings).resolve_job_def(KIND_DEFS[KIND].jobs["reconcile"].name)
    result = job.execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "vectors_match_store" and not evaluation.passed
    assert evaluation.metadata["removed_vectors_of_missing_items"].value == 1
    assert victim not in _vector_ids(runtime)
    again = job.execute_in_process(instance=instance).get_asset_check_evaluations()[0]
    assert again.passed


def test_the_compaction_check_covers_what_it_touched_and_a_sample(settings, instance, demo_receipts):
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:3])
    defs = KIND_DEFS[KIND]
    for _ in range(3):
        runtime.pipeline.prepare(KIND, 10_000, progress=lambda _: None)
        runtime.pipeline.submit(KIND, progress=lambda _: None)
        for record in runtime.pipeline.poll(KIND, 100)[0]:
            runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
    result = materialize([defs.assets[3]], instance=instance, resources=resources_from_settings(settings))
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "success_matches_snapshot" and evaluation.passed
    assert "items this compaction touched" in evaluation.metadata["checked"].value
    victim = sorted(_vector_ids(runtime))[0]
    _delete_behind_our_back(settings, victim)
    sampled = sampled_agreement(runtime.store, runtime.vectors(KIND), [victim], sample=10_000)
    assert not sampled.ok and sampled.extra_sample == [victim]


def test_the_compaction_check_draws_every_vector_of_a_collection_smaller_than_a_page(settings, instance):
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts([make_receipt(IMAGE, 1, ["TOTAL 12.50", "CASH 20.00", "CHANGE 7.50"],
                                             words_per_line=2)])
    runtime.pipeline.prepare(KIND, 10_000, progress=lambda _: None)
    runtime.pipeline.submit(KIND, progress=lambda _: None)
    for record in runtime.pipeline.poll(KIND, 100)[0]:
        runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
    result = materialize([KIND_DEFS[KIND].assets[3]], instance=instance, resources=resources_from_settings(settings))
    (evaluation,) = result.get_asset_check_evaluations()
    vectors = len(_vector_ids(runtime))
    assert 0 < vectors < 50
    assert evaluation.metadata["checked"].value.endswith(f"and {vectors} of {vectors} vectors drawn at random")


def test_the_reconcile_command_repairs_and_says_so(settings, demo_receipts, capsys, monkeypatch):
    from embedding_assets.cli.main import main

    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:1])
    drive(runtime, KIND)
    victim = sorted(_vector_ids(runtime))[0]
    _delete_behind_our_back(settings, victim)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    assert main(["reconcile", "--kind", KIND]) == 1
    assert "1 vectors of missing items removed" in capsys.readouterr().out
    assert main(["reconcile", "--kind", KIND]) == 0
