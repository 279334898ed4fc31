"""Compaction: repeatable, exclusive, and never publishing what it cannot vouch for."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace

import pytest

from embedding_assets.domain.deltas import CorruptDelta
from embedding_assets.domain.lease import LeaseHeld, LeaseLost
from embedding_assets.domain.models import Stage, Status, batch_keys
from embedding_assets.domain.settings import Settings
from embedding_assets.domain.vectors import CorruptSnapshot, iter_metadatas
from embedding_assets.steps.ingest import ingest
from embedding_assets.wiring import Runtime
from resources.vector_store.chroma import persistent_collection
from tests.crashes import drive
from tests.support import base_env


def _ingested(runtime, kind="lines"):
    runtime.pipeline.prepare(kind, 10_000_000, progress=lambda _: None)
    runtime.pipeline.submit(kind, progress=lambda _: None)
    finished, _ = runtime.pipeline.poll(kind, 100)
    for record in finished:
        runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
    return finished


def _snapshot_contents(runtime, kind="lines"):
    directory, pointer = runtime.vectors(kind).read_copy()
    with persistent_collection(directory, kind) as collection:
        rows = sorted(iter_metadatas(collection), key=lambda r: r[0])
        got = collection.get(ids=[r[0] for r in rows], include=["embeddings"])
        vectors = dict(zip(got["ids"], (bytes(memoryview(e.astype("float32"))) for e in got["embeddings"])))
    return pointer, [(vid, meta, hashlib.sha256(vectors[vid]).hexdigest()) for vid, meta in rows]


def test_compacting_the_same_deltas_twice_gives_the_same_snapshot(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    finished = _ingested(runtime)
    first = runtime.compactor("lines").run()
    pointer1, contents1 = _snapshot_contents(runtime)
    for record in finished:  # as if the marking step had been lost: the same deltas come round again
        runtime.store.update_batch(record.batch_id, stage=Stage.DELTA_READY)
    again = runtime.compactor("lines").run()
    pointer2, contents2 = _snapshot_contents(runtime)
    assert first.published and first.added == first.vectors
    assert not again.published and again.added == again.updated == 0 and again.unchanged == first.added
    assert pointer2 == pointer1 and contents2 == contents1


def test_two_compactions_at_once_one_gives_way(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    _ingested(runtime)
    compactor = runtime.compactor("lines")
    holder = compactor.store
    gate, release = threading.Event(), threading.Event()
    original = compactor.vectors.checkout

    def slow_checkout():
        gate.set()
        release.wait(10)
        return original()

    compactor.vectors.checkout = slow_checkout
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("first", compactor.run()))
    worker.start()
    gate.wait(10)
    with pytest.raises(LeaseHeld):
        runtime.compactor("lines").run()
    release.set()
    worker.join(30)
    assert results["first"].published
    assert holder.status_counts("lines").get(Status.PENDING.value) is None


def test_a_compactor_whose_lease_was_taken_over_does_not_publish(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    _ingested(runtime)
    compactor = runtime.compactor("lines")
    original = compactor.vectors.upload

    def paused_upload(directory, version):
        result = original(directory, version)
        # While "paused", the lease expires and another owner takes it.
        runtime.store.release_lock("chroma-lines-compaction", runtime.store.lock_owner("chroma-lines-compaction"))
        assert runtime.store.acquire_lock("chroma-lines-compaction", "someone-else", 60)
        return result

    compactor.vectors.upload = paused_upload
    with pytest.raises(LeaseLost):
        compactor.run()
    assert runtime.vectors("lines").latest() is None
    assert runtime.store.status_counts("lines").get(Status.SUCCESS.value) is None


def test_a_corrupt_delta_is_detected_and_nothing_is_applied(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    finished = _ingested(runtime)
    record = runtime.store.get_batch(finished[0].batch_id)
    path = runtime.objects.root / record.delta_key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDelta):
        runtime.compactor("lines").run()
    assert runtime.vectors("lines").latest() is None
    assert runtime.store.status_counts("lines").get(Status.SUCCESS.value) is None


def test_a_truncated_snapshot_archive_is_detected_not_half_applied(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, "lines")
    pointer = runtime.vectors("lines").latest()
    archive = runtime.objects.root / pointer.key
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    fresh = runtime.vectors("lines")
    fresh.root = fresh.root.parent / "elsewhere"  # a machine without the local copy must download
    with pytest.raises(CorruptSnapshot):
        fresh.read_copy()
    assert not any((fresh.root / "read").iterdir()), "no copy, whole or half, is left to open"


class _RaceAfterUpload:
    """The real object store, with another run's work done right after this run uploads `key`."""

    def __init__(self, objects, key, meanwhile):
        self._objects, self._key, self._meanwhile = objects, key, meanwhile

    def put_file(self, key, path):
        self._objects.put_file(key, path)
        if key == self._key:
            self._meanwhile()

    def __getattr__(self, name):
        return getattr(self._objects, name)


def test_a_second_ingest_finishing_after_the_compaction_leaves_the_batch_compacted(tmp_path, demo_receipts):
    runtime = Runtime.from_settings(Settings.from_env(base_env(tmp_path) | {"DELETE_PROCESSED_DELTAS": "true"}))
    runtime.store.put_receipts(demo_receipts[:2])
    runtime.pipeline.prepare("lines", 10_000_000, progress=lambda _: None)
    runtime.pipeline.submit("lines", progress=lambda _: None)
    (record,) = runtime.pipeline.poll("lines", 100)[0]

    def first_ingest_and_its_compaction():
        runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
        runtime.compactor("lines").run()

    _, _, delta_key = batch_keys("lines", record.batch_id)
    late = replace(runtime.pipeline, objects=_RaceAfterUpload(runtime.objects, delta_key,
                                                                   first_ingest_and_its_compaction))
    report = ingest(late, record.batch_id, progress=lambda _: None)

    assert runtime.store.get_batch(record.batch_id).stage is Stage.COMPACTED
    assert report.already_done
    runtime.store.put_receipts(demo_receipts[2:3])
    drive(runtime, "lines")  # a later compaction does not trip over the deleted delta
    assert set(runtime.store.status_counts("lines")) <= {Status.SUCCESS.value, Status.NOISE.value}


def test_a_version_number_published_again_with_other_contents_is_read_anew(runtime):
    """A re-embed started again after an abandoned one numbers its versions as the first did."""
    line, provider = runtime.vectors("lines"), runtime.provider
    for ids in (["a"], ["a", "b"]):
        with line.writable(provider.model, provider.dimensions, "row-lower") as (collection, _):
            collection.upsert(ids=ids, embeddings=provider.embed(ids), metadatas=[{"text": i} for i in ids])
        line.swap(line.stage(7), len(ids), provider.model, provider.dimensions, recipe="row-lower")
        line.mark_clean(7)
        with line.readable() as collection:
            assert collection.count() == len(ids)
