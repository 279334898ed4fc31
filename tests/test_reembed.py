"""Re-embedding with another model: built beside the serving collection, switched to when complete.

The local model changes size here (256 -> 128 dimensions), which is a model
change as far as the collection is concerned: the two sets of vectors must
never mix, and search must keep answering from the old one until the switch.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from dagster import SkipReason, build_sensor_context

from embedding_assets.cli import main as cli
from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.models import Stage, Status
from embedding_assets.domain.settings import Settings
from embedding_assets.domain.vectors import NEXT, ModelMismatch
from embedding_assets.steps.consistency import snapshot_agreement
from embedding_assets.steps.reembed import NothingToReembed
from embedding_assets.steps.search import search
from embedding_assets.steps.status import kind_status
from embedding_assets.wiring import Runtime
from resources.providers.local_model import MODEL as LOCAL_MODEL
from resources.vector_store.chroma import persistent_collection
from sensors.compaction import compaction_sensor
from tests.crashes import drive, kill_during
from tests.support import BACKENDS, base_env

KIND = "lines"
OLD, NEW = 256, 128
LEASE_SECONDS = 3


def _resized(settings: Settings, dimensions: int) -> Settings:
    """The same deployment, configured for another vector size."""
    return replace(settings, dimensions=dimensions)


def _with_dimensions(settings: Settings, dimensions: int) -> Runtime:
    return Runtime.from_settings(_resized(settings, dimensions))


def _collection_dimensions(runtime: Runtime) -> tuple[int, set[int]]:
    """The size recorded on the serving collection, and the sizes of the vectors in it."""
    directory, _ = runtime.vectors(KIND).read_copy()
    with persistent_collection(directory, KIND) as collection:
        got = collection.get(include=["embeddings"])
        return int(collection.metadata["dimensions"]), {len(v) for v in got["embeddings"]}


def _hits(runtime: Runtime) -> list[tuple[str, float]]:
    return [(h.id, round(h.distance, 5)) for h in search(runtime.vectors(KIND), runtime.provider, "TOTAL", k=5)]


def _step(runtime: Runtime, max_items: int) -> None:
    """One small round: a few items embedded and merged, so the re-embed is part done."""
    runtime.pipeline.prepare(KIND, max_items, progress=lambda _: None)
    runtime.pipeline.submit(KIND, progress=lambda _: None)
    finished, _ = runtime.pipeline.poll(KIND, 1000)
    for record in finished:
        runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
    runtime.compactor(KIND).run()


@pytest.fixture(params=sorted(BACKENDS))
def embedded_at_old_size(request, tmp_path, demo_receipts) -> Settings:
    settings = Settings.from_env(BACKENDS[request.param](tmp_path, request) | {"EMBEDDING_DIMENSIONS": str(OLD)})
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, KIND)
    return settings


def test_reembed_builds_beside_the_old_collection_and_switches_when_complete(embedded_at_old_size):
    old = Runtime.from_settings(embedded_at_old_size)
    before = _hits(old)
    success = old.store.status_counts(KIND)[Status.SUCCESS.value]
    new = _with_dimensions(embedded_at_old_size, NEW)
    with pytest.raises(ModelMismatch, match=f"reembed --kind {KIND}"):
        new.compactor(KIND).run()

    start = new.start_reembed(KIND)

    assert (start.requeued, start.resumed, start.serving_dimensions) == (success, False, OLD)
    assert new.store.status_counts(KIND).get(Status.SUCCESS.value, 0) == 0
    assert _hits(new) == before, "search answers from the old collection, with its own model"
    _step(new, max_items=10)
    progress = kind_status(new.store, new.vectors(KIND))["reembed"]
    assert progress["to_dimensions"] == NEW and progress["next_version"] == 2 and progress["waiting"] > 0
    assert new.vectors(KIND).latest().version == 1 and _hits(new) == before
    assert snapshot_agreement(new.store, new.vectors(KIND)).ok, "SUCCESS matches the collection being built"

    drive(new, KIND)

    serving = new.vectors(KIND).latest()
    assert serving.dimensions == NEW and serving.version > 2
    assert new.vectors(KIND).next_line().latest() is None
    assert _collection_dimensions(new) == (NEW, {NEW})
    assert new.store.status_counts(KIND)[Status.SUCCESS.value] == success
    assert snapshot_agreement(new.store, new.vectors(KIND)).ok
    hits = search(new.vectors(KIND), new.provider, "TOTAL", k=5)
    assert hits and {h.metadata["dimensions"] for h in hits} == {NEW}
    with pytest.raises(NothingToReembed):
        new.start_reembed(KIND)
    with pytest.raises(ModelMismatch):
        old.compactor(KIND).run()  # the old size is now the one that does not fit


def test_a_batch_of_the_old_model_in_flight_at_the_start_is_not_merged(settings, demo_receipts):
    old = Runtime.from_settings(settings)
    old.store.put_receipts(demo_receipts)
    drive(old, KIND)
    edited = next(old.store.items_with_status(KIND, Status.SUCCESS.value))
    old.store.set_text(KIND, edited.key, "EDITED TOTAL")
    old.pipeline.prepare(KIND, 10_000, progress=lambda _: None)
    old.pipeline.submit(KIND, progress=lambda _: None)
    for record in old.pipeline.poll(KIND, 100)[0]:
        old.pipeline.ingest(record.batch_id, progress=lambda _: None)
    (in_flight,) = old.store.list_batches(KIND, [Stage.DELTA_READY])
    new = _with_dimensions(settings, NEW)
    new.start_reembed(KIND)

    report = new.compactor(KIND).run()

    assert report.superseded == 1 and report.line == NEXT
    assert new.store.get_batch(in_flight.batch_id).last_error.startswith("superseded: embedded with")
    drive(new, KIND)
    assert _collection_dimensions(new) == (NEW, {NEW})
    assert snapshot_agreement(new.store, new.vectors(KIND)).ok
    directory, _ = new.vectors(KIND).read_copy()
    with persistent_collection(directory, KIND) as collection:
        assert collection.get(ids=[edited.key], include=["documents"])["documents"][0] is not None



@pytest.mark.parametrize("abandon", [False, True], ids=["reembed", "abandoned-reembed"])
def test_a_batch_out_when_the_size_changes_is_ingested_at_its_own_size_and_superseded(settings, demo_receipts,
                                                                                     abandon):
    """Ingested under the new configuration, the batch keeps the size it was sent for: no request fails for
    it, and compaction sends its items again instead of merging them into a collection of another size."""
    old = Runtime.from_settings(settings)
    old.store.put_receipts(demo_receipts)
    drive(old, KIND)
    new = _with_dimensions(settings, NEW)
    sender, ingester = (new, old) if abandon else (old, new)
    if abandon:
        new.start_reembed(KIND)
    else:
        old.store.set_text(KIND, next(old.store.items_with_status(KIND, Status.SUCCESS.value)).key, "EDITED")
    sender.pipeline.prepare(KIND, 10, progress=lambda _: None)
    sender.pipeline.submit(KIND, progress=lambda _: None)
    (out,) = sender.store.list_batches(KIND, [Stage.SUBMITTED])
    ingester.start_reembed(KIND)  # the re-embed starts, or is abandoned, while the batch is out
    for record in ingester.pipeline.poll(KIND, 100)[0]:
        ingester.pipeline.ingest(record.batch_id, progress=lambda _: None)

    ingested = ingester.store.get_batch(out.batch_id)
    assert ingested.failed_requests == 0 and ingested.vectors == out.request_count
    report = ingester.compactor(KIND).run()

    assert report.superseded == 1
    assert ingester.store.status_counts(KIND).get(Status.FAILED.value, 0) == 0
    drive(ingester, KIND)
    size = OLD if abandon else NEW
    assert _collection_dimensions(ingester) == (size, {size})
    assert snapshot_agreement(ingester.store, ingester.vectors(KIND)).ok


@pytest.fixture
def embedded_with_short_lease(tmp_path, demo_receipts) -> Settings:
    """Everything embedded at the old size, with a lease a killed child's successor can wait out."""
    settings = Settings.from_env(base_env(tmp_path) | {"LOCK_DURATION_MINUTES": str(LEASE_SECONDS / 60),
                                                       "HEARTBEAT_INTERVAL_SECONDS": "1"})
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, KIND)
    return settings


def test_a_second_reembed_command_resumes_after_a_kill_before_anything_was_sent_again(embedded_with_short_lease):
    settings = embedded_with_short_lease
    runtime = Runtime.from_settings(settings)
    success = runtime.store.status_counts(KIND)[Status.SUCCESS.value]
    new = _with_dimensions(settings, NEW)
    store_cls = type(runtime.store)

    kill_during(_resized(settings, NEW), "reembed", KIND, f"{store_cls.__module__}:{store_cls.__name__}.requeue")

    assert new.vectors(KIND).next_line().latest() is not None
    assert new.store.status_counts(KIND)[Status.SUCCESS.value] == success
    time.sleep(LEASE_SECONDS + 0.5)  # the dead child's lease runs out
    start = new.start_reembed(KIND)
    assert start.resumed and start.requeued == success
    drive(new, KIND)
    assert new.vectors(KIND).latest().dimensions == NEW
    assert snapshot_agreement(new.store, new.vectors(KIND)).ok


def test_a_kill_between_the_switch_and_clearing_next_is_finished_by_the_next_compaction(embedded_with_short_lease):
    settings = embedded_with_short_lease
    new = _with_dimensions(settings, NEW)
    new.start_reembed(KIND)
    new.pipeline.prepare(KIND, 10_000_000, progress=lambda _: None)
    new.pipeline.submit(KIND, progress=lambda _: None)
    for record in new.pipeline.poll(KIND, 1000)[0]:
        new.pipeline.ingest(record.batch_id, progress=lambda _: None)

    kill_during(_resized(settings, NEW), "compact", KIND, "resources.vector_store.snapshots:SnapshotStore.clear")

    serving, building = new.vectors(KIND).latest(), new.vectors(KIND).next_line().latest()
    assert serving == building and serving.dimensions == NEW, "switched, NEXT not yet cleared"
    time.sleep(LEASE_SECONDS + 0.5)
    report = new.compactor(KIND).run()
    assert report.line != NEXT and new.vectors(KIND).next_line().latest() is None
    assert new.store.status_counts(KIND).get(Status.PENDING.value, 0) == 0
    assert snapshot_agreement(new.store, new.vectors(KIND)).ok


def test_the_cli_reembeds_through_the_dagster_jobs_and_status_reports_it(tmp_path, monkeypatch, capsys):
    env = base_env(tmp_path) | {"DAGSTER_HOME": str(tmp_path / "dagster"), "EMBEDDING_DIMENSIONS": str(OLD)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["demo", "seed", "--receipts", "4"]) == 0
    assert cli.main(["reembed", "--kind", "lines"]) == 0
    assert "nothing to re-embed" in capsys.readouterr().out
    assert cli.main(["run", "--kind", "lines"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("EMBEDDING_DIMENSIONS", str(NEW))

    assert cli.main(["reembed", "--kind", "lines", "--no-run"]) == 0
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"lines: re-embedding with {LOCAL_MODEL} ({NEW} dimensions, recipe row-lower)" in out
    assert cli.main(["reembed", "--kind", "lines"]) == 0  # resumes, then runs it to the switch

    out = capsys.readouterr().out
    assert "resuming the re-embed" in out and "re-embed is not complete" not in out
    assert cli.main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)["lines"]
    assert status["reembed"] is None and status["snapshot_version"] >= 2
    runtime = Runtime.from_settings(Settings.from_env())
    assert runtime.vectors(KIND).latest().dimensions == NEW
    assert snapshot_agreement(runtime.store, runtime.vectors(KIND)).ok


def test_the_compaction_sensor_asks_once_per_version_whether_a_reembed_can_switch(settings, instance, demo_receipts):
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, KIND)
    resized = _resized(settings, NEW)
    Runtime.from_settings(resized).start_reembed(KIND)
    defs = build_definitions(resized)
    sensor = compaction_sensor(KIND_DEFS[KIND])
    with build_sensor_context(instance=instance, resources=defs.resources) as context:
        request = sensor(context)
    assert not isinstance(request, SkipReason) and request.run_key == "reembed-switch-check-v0"


def test_reembed_with_the_serving_model_abandons_a_running_one(settings, demo_receipts):
    old = Runtime.from_settings(settings)
    old.store.put_receipts(demo_receipts)
    drive(old, KIND)
    gone = demo_receipts[:2]  # deleted while the re-embed runs: the serving line must still hear of them
    success = old.store.status_counts(KIND)[Status.SUCCESS.value] - sum(
        item.status == Status.SUCCESS for r in gone for item in old.store.receipt_items(KIND, r.image_id, r.receipt_id))
    new = _with_dimensions(settings, NEW)
    new.start_reembed(KIND)
    for receipt in gone:
        old.store.delete_receipt(receipt.image_id, receipt.receipt_id)
    _step(new, max_items=10)
    with pytest.raises(ModelMismatch, match="a re-embed to"):
        old.compactor(KIND).run()

    start = old.start_reembed(KIND)

    assert start.abandoned and old.vectors(KIND).next_line().latest() is None
    drive(old, KIND)
    assert old.vectors(KIND).latest().dimensions == OLD
    assert _collection_dimensions(old) == (OLD, {OLD})
    assert old.store.status_counts(KIND)[Status.SUCCESS.value] == success
    assert snapshot_agreement(old.store, old.vectors(KIND)).ok
    with old.vectors(KIND).readable() as collection:
        assert not collection.get(where={"image_id": {"$in": [r.image_id for r in gone]}}, include=[])["ids"]


def test_run_refuses_a_model_the_collection_does_not_hold_before_sending_anything(tmp_path, monkeypatch, capsys):
    for name, value in (base_env(tmp_path) | {"DAGSTER_HOME": str(tmp_path / "dagster")}).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["demo", "seed", "--receipts", "2"]) == 0
    assert cli.main(["run", "--kind", "lines"]) == 0
    runtime = Runtime.from_settings(Settings.from_env())
    edited = next(runtime.store.items_with_status(KIND, Status.SUCCESS.value))
    runtime.store.set_text(KIND, edited.key, "EDITED")
    capsys.readouterr()
    monkeypatch.setenv("EMBEDDING_DIMENSIONS", str(NEW))

    assert cli.main(["run", "--kind", "lines"]) == 2

    err = capsys.readouterr().err
    assert f"holds {LOCAL_MODEL} vectors of {OLD} dimensions" in err and "reembed --kind lines" in err
    assert runtime.store.status_counts(KIND)[Status.NONE.value] == 1, "nothing was claimed or sent"


def test_an_item_corrected_during_a_reembed_keeps_its_new_text_when_the_reembed_is_abandoned(settings, demo_receipts):
    old = Runtime.from_settings(settings)
    old.store.put_receipts(demo_receipts[:2])
    drive(old, KIND)
    first = min(demo_receipts[:2], key=lambda receipt: receipt.key)
    corrected = first.lines[0].key
    new = _with_dimensions(settings, NEW)
    new.start_reembed(KIND)
    new.store.set_text(KIND, corrected, "CORRECTED TEXT 123")
    _step(new, max_items=len(first.lines))  # the corrected line goes into NEXT only
    assert new.store.items_by_key(KIND, [corrected])[corrected].status == Status.SUCCESS
    assert old.vectors(KIND).next_line().latest() is not None, "not switched yet"

    assert old.start_reembed(KIND).abandoned
    drive(old, KIND)

    with old.vectors(KIND).readable() as collection:
        got = collection.get(where={"image_id": first.image_id}, include=["metadatas"])
    (text,) = [meta["text"] for meta in got["metadatas"] if corrected in item_keys_of_vector("", meta)]
    assert "CORRECTED TEXT 123" in text
    assert snapshot_agreement(old.store, old.vectors(KIND)).ok
