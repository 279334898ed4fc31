"""Edits, deletes and dead letters: the snapshot follows the store."""

from __future__ import annotations

import copy

from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.models import Status
from embedding_assets.steps.consistency import snapshot_agreement
from resources.vector_store.chroma import persistent_collection
from tests.crashes import drive


def _vector_ids(runtime, kind):
    directory, _ = runtime.vectors(kind).read_copy()
    with persistent_collection(directory, kind) as collection:
        return set(collection.get(include=[])["ids"])


def test_a_changed_word_is_embedded_again_and_its_vector_replaced(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, "words")
    word = next(runtime.store.items_with_status("words", Status.SUCCESS.value))
    assert runtime.store.set_text("words", word.key, "CORRECTED")
    assert runtime.store.status_counts("words")[Status.NONE.value] == 1
    drive(runtime, "words")
    directory, _ = runtime.vectors("words").read_copy()
    with persistent_collection(directory, "words") as collection:
        got = collection.get(ids=[word.key], include=["metadatas"])
    assert got["metadatas"][0]["text"] == "CORRECTED"
    assert snapshot_agreement(runtime.store, runtime.vectors("words")).ok


def test_a_deleted_receipt_loses_its_vectors_at_the_next_compaction(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, "lines")
    gone = demo_receipts[0]
    before = _vector_ids(runtime, "lines")
    assert any(v.startswith(gone.key) for v in before)
    assert runtime.store.delete_receipt(gone.image_id, gone.receipt_id) > 0
    report = runtime.compactor("lines").run()
    after = _vector_ids(runtime, "lines")
    assert report.published and report.removed == len(before) - len(after) > 0
    assert not any(v.startswith(gone.key) for v in after)
    assert snapshot_agreement(runtime.store, runtime.vectors("lines")).ok


def test_failed_items_are_listed_with_their_error_and_can_be_retried(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts[:1])
    runtime.pipeline.prepare("lines", 10_000, progress=lambda _: None)
    (record,) = runtime.store.list_batches("lines")
    keys = [item.key for item in runtime.store.items_with_status("lines", Status.PENDING.value)]
    for _ in range(runtime.pipeline.max_attempts):
        runtime.store.release("lines", keys, record.batch_id, "provider said no", runtime.pipeline.max_attempts)
        runtime.store.claim("lines", keys, record.batch_id)
    failed = list(runtime.store.items_with_status("lines", Status.FAILED.value))
    assert len(failed) == len(keys) and {f.last_error for f in failed} == {"provider said no"}
    assert runtime.store.retry_failed("lines") == len(keys)
    assert runtime.store.status_counts("lines") == {Status.NONE.value: len(keys)}


def test_a_text_change_between_reading_a_receipt_and_claiming_it_is_embedded_with_the_new_text(
        runtime, demo_receipts, monkeypatch):
    runtime.store.put_receipts(demo_receipts[:1])
    word = next(runtime.store.items_with_status("words", Status.NONE.value))
    claim = runtime.store.claim

    def edited_meanwhile(kind, keys, batch_id, texts=None):
        runtime.store.set_text(kind, word.key, "CORRECTED")  # the request file already holds the old text
        monkeypatch.setattr(runtime.store, "claim", claim)
        return claim(kind, keys, batch_id, texts)

    monkeypatch.setattr(runtime.store, "claim", edited_meanwhile)
    drive(runtime, "words")
    assert runtime.store.status_counts("words")[Status.NONE.value] == 1, "left for the next batch, not sent stale"
    drive(runtime, "words")

    assert runtime.store.status_counts("words") == {Status.SUCCESS.value: len(demo_receipts[0].words)}
    directory, _ = runtime.vectors("words").read_copy()
    with persistent_collection(directory, "words") as collection:
        assert collection.get(ids=[word.key], include=["metadatas"])["metadatas"][0]["text"] == "CORRECTED"


def test_an_older_batch_finishing_after_the_newer_one_never_puts_back_the_old_texts_vector(runtime, demo_receipts):
    """The item re-sent after a text change: its second batch is merged first, its first one last."""
    runtime.store.put_receipts(demo_receipts[:1])
    quiet = {"progress": lambda _: None}
    runtime.pipeline.prepare("words", 10_000, **quiet)
    runtime.pipeline.submit("words", **quiet)
    word = next(runtime.store.items_with_status("words", Status.PENDING.value))
    first = word.batch_id
    assert runtime.store.set_text("words", word.key, "NEWTEXT")
    runtime.pipeline.prepare("words", 10_000, **quiet)
    runtime.pipeline.submit("words", **quiet)
    second = runtime.store.items_by_key("words", [word.key])[word.key].batch_id
    finished = {record.batch_id for record in runtime.pipeline.poll("words", 100)[0]}
    assert {first, second} <= finished and first != second

    runtime.pipeline.ingest(second, **quiet)
    runtime.compactor("words").run()
    runtime.pipeline.ingest(first, **quiet)
    late = runtime.compactor("words").run()

    assert late.skipped == 1, "the late batch's row for the re-sent word is not merged"
    assert runtime.store.status_counts("words") == {Status.SUCCESS.value: len(demo_receipts[0].words)}
    directory, _ = runtime.vectors("words").read_copy()
    with persistent_collection(directory, "words") as collection:
        (meta,) = collection.get(ids=[word.key], include=["metadatas"])["metadatas"]
    assert (meta["text"], meta["batch_id"]) == ("NEWTEXT", second)
    assert snapshot_agreement(runtime.store, runtime.vectors("words")).ok


def test_a_text_change_while_its_batch_is_out_never_leaves_the_old_texts_vector(runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts[:2])
    runtime.pipeline.prepare("words", 10_000, progress=lambda _: None)
    runtime.pipeline.submit("words", progress=lambda _: None)
    for record in runtime.pipeline.poll("words", 100)[0]:
        runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
    word = next(runtime.store.items_with_status("words", Status.PENDING.value))
    assert runtime.store.set_text("words", word.key, "CHANGED")

    runtime.compactor("words").run()

    assert word.key not in _vector_ids(runtime, "words")
    assert runtime.store.status_counts("words")[Status.NONE.value] == 1
    assert snapshot_agreement(runtime.store, runtime.vectors("words")).ok
    drive(runtime, "words")
    directory, _ = runtime.vectors("words").read_copy()
    with persistent_collection(directory, "words") as collection:
        assert collection.get(ids=[word.key], include=["metadatas"])["metadatas"][0]["text"] == "CHANGED"


def _a_row_vector(runtime, kind="lines"):
    """(vector id, the line keys it stands for, its text) of some row of two or more lines."""
    directory, _ = runtime.vectors(kind).read_copy()
    with persistent_collection(directory, kind) as collection:
        got = collection.get(include=["metadatas", "documents"])
    return next((vid, item_keys_of_vector(vid, meta), doc) for vid, meta, doc in
                zip(got["ids"], got["metadatas"], got["documents"]) if len(item_keys_of_vector(vid, meta)) > 1)


def test_a_line_deleted_from_its_row_takes_the_row_vector_and_the_rest_of_the_row_is_embedded_again(
        runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts[:2])
    drive(runtime, "lines")
    vector_id, keys, text = _a_row_vector(runtime)
    receipt = next(r for r in demo_receipts if vector_id.startswith(r.key))
    survivors = [k for k in keys if k != vector_id]
    shorter = copy.deepcopy(receipt)
    shorter.lines = [line for line in shorter.lines if line.key != vector_id]  # the row's leftmost line goes
    runtime.store.put_receipts([shorter])

    report = runtime.compactor("lines").run()

    assert report.resent == len(survivors) and vector_id not in _vector_ids(runtime, "lines")
    assert {runtime.store.items_by_key("lines", [k])[k].status for k in survivors} == {Status.NONE}
    drive(runtime, "lines")
    directory, _ = runtime.vectors("lines").read_copy()
    with persistent_collection(directory, "lines") as collection:
        (meta,) = collection.get(ids=[survivors[0]], include=["metadatas"])["metadatas"]
    deleted = next(line.text for line in receipt.lines if line.key == vector_id)
    assert meta["text"] != text and deleted not in meta["text"].split(), "the row without the deleted line"
    assert snapshot_agreement(runtime.store, runtime.vectors("lines")).ok
