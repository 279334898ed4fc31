"""SqliteReceiptStore against real files: lifecycle rules, paging, races and leases."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from embedding_assets.domain.models import (
    BatchRecord,
    Box,
    Item,
    Receipt,
    Stage,
    Status,
    line_key,
    receipt_key,
    word_key,
)
from resources.receipt_store.sqlite import SqliteReceiptStore


def make_receipt(
    image_id: str, receipt_id: int, lines: list[str], words_per_line: int = 0, merchant: str | None = None
) -> Receipt:
    receipt = Receipt(image_id, receipt_id, merchant_name=merchant)
    for line_id, text in enumerate(lines):
        box = Box(0.1, 1.0 - 0.1 * (line_id + 1), 0.8, 0.05)
        receipt.lines.append(Item(image_id, receipt_id, line_id, text, box, 0.9))
        for word_id in range(words_per_line):
            word_box = Box(0.1 + 0.2 * word_id, box.y, 0.15, 0.05)
            receipt.words.append(
                Item(image_id, receipt_id, line_id, f"{text}-{word_id}", word_box, 0.8, word_id=word_id)
            )
    return receipt


def make_batch(batch_id: str, kind: str = "lines", stage: Stage = Stage.PREPARED, created_at: str = "") -> BatchRecord:
    return BatchRecord(
        batch_id=batch_id,
        kind=kind,
        stage=stage,
        input_key=f"batches/{kind}/{batch_id}.jsonl",
        manifest_key=f"batches/{kind}/{batch_id}.manifest.json",
        item_count=3,
        request_count=2,
        estimated_tokens=40,
        created_at=created_at,
    )


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteReceiptStore(tmp_path / "store.sqlite3")
    yield s
    s.close()


# Receipts and items


def test_put_and_read_back(store):
    assert store.put_receipts([make_receipt("img-a", 1, ["TOTAL", "MILK"], words_per_line=2, merchant="Shop")]) == 1

    assert store.receipt_count() == 1
    assert store.merchant_name("img-a", 1) == "Shop"
    assert store.merchant_name("img-a", 2) is None
    lines = store.receipt_items("lines", "img-a", 1)
    assert [line.key for line in lines] == [line_key("img-a", 1, 0), line_key("img-a", 1, 1)]
    assert lines[0].text == "TOTAL" and lines[0].box == Box(0.1, 0.9, 0.8, 0.05) and lines[0].confidence == 0.9
    assert lines[0].word_id is None and lines[0].status is Status.NONE
    words = store.receipt_items("words", "img-a", 1)
    assert [(w.line_id, w.word_id) for w in words] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert store.status_counts("lines") == {"NONE": 2}
    assert store.status_counts("words") == {"NONE": 4}


def test_reimport_resets_changed_text_only_and_drops_missing_items(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B", "C"], merchant="Old")])
    keys = [line_key("img-a", 1, i) for i in range(3)]
    assert store.claim("lines", keys, "b1") == keys
    store.release("lines", [keys[1]], "b1", "timeout", max_attempts=3)
    assert store.claim("lines", [keys[1]], "b2") == [keys[1]]

    changed = make_receipt("img-a", 1, ["A", "B2"], merchant="New")
    changed.lines[0] = Item("img-a", 1, 0, "A", Box(0.2, 0.2, 0.5, 0.1), 0.5)
    assert store.put_receipts([changed]) == 1

    items = {item.key: item for item in store.receipt_items("lines", "img-a", 1)}
    assert set(items) == {keys[0], keys[1]}  # line 2 is no longer in the receipt
    unchanged, rewritten = items[keys[0]], items[keys[1]]
    assert (unchanged.status, unchanged.batch_id) == (Status.PENDING, "b1")
    assert unchanged.box == Box(0.2, 0.2, 0.5, 0.1) and unchanged.confidence == 0.5
    assert rewritten.text == "B2"
    assert (rewritten.status, rewritten.attempts, rewritten.batch_id, rewritten.last_error) == (
        Status.NONE,
        0,
        None,
        None,
    )
    assert store.merchant_name("img-a", 1) == "New"
    assert store.receipt_count() == 1


def test_put_receipts_is_all_or_nothing(store):
    store.put_receipts([make_receipt("img-a", 1, ["A"])])
    bad = make_receipt("img-c", 1, ["X"])
    bad.lines.append(Item("img-other", 9, 0, "stray", Box(0, 0, 1, 1), 1.0))

    with pytest.raises(ValueError):
        store.put_receipts([make_receipt("img-a", 1, ["changed"]), make_receipt("img-b", 1, ["B"]), bad])

    assert store.receipt_count() == 1
    assert [item.text for item in store.receipt_items("lines", "img-a", 1)] == ["A"]


def test_delete_receipt_removes_its_items(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"], words_per_line=2), make_receipt("img-a", 2, ["C"])])

    assert store.delete_receipt("img-a", 1) == 6
    assert store.delete_receipt("img-a", 1) == 0
    assert store.receipt_count() == 1
    assert store.receipt_items("words", "img-a", 1) == []
    assert store.status_counts("lines") == {"NONE": 1}


def test_unembedded_receipts_in_key_order_with_paging(store):
    # receipt 10 sorts after 9 only because ids are zero-padded in the key.
    store.put_receipts(
        [make_receipt("img-b", 1, ["x"]), make_receipt("img-a", 10, ["x"]), make_receipt("img-a", 9, ["x"])]
    )
    store.put_receipts([make_receipt("img-a", 2, ["x"])])
    store.claim("lines", [line_key("img-a", 2, 0)], "b1")  # no NONE line left in that receipt

    assert store.unembedded_receipts("lines", 10) == [("img-a", 9), ("img-a", 10), ("img-b", 1)]
    first = store.unembedded_receipts("lines", 2)
    assert first == [("img-a", 9), ("img-a", 10)]
    assert store.unembedded_receipts("lines", 2, after=receipt_key(*first[-1])) == [("img-b", 1)]
    assert store.unembedded_receipts("lines", 2, after=receipt_key("img-b", 1)) == []
    assert store.unembedded_receipts("words", 10) == []


def test_unembedded_receipts_is_an_index_range_scan(store, tmp_path):
    executed: list[str] = []
    store._conn.set_trace_callback(executed.append)
    store.unembedded_receipts("lines", 5, after=receipt_key("img-a", 1))
    store._conn.set_trace_callback(None)
    query = next(sql for sql in executed if sql.lstrip().upper().startswith("SELECT"))

    with closing(sqlite3.connect(tmp_path / "store.sqlite3")) as conn:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "USING COVERING INDEX items_unembedded" in plan
    assert "TEMP B-TREE" not in plan


def test_items_with_status_streams_every_item(store, monkeypatch):
    monkeypatch.setattr("resources.receipt_store.sqlite_status.PAGE_SIZE", 3)
    store.put_receipts([make_receipt("img-a", r, [f"l{i}" for i in range(4)]) for r in (1, 2)])
    store.claim("lines", [line_key("img-a", 1, 0)], "b1")

    keys = [item.key for item in store.items_with_status("lines", "NONE")]
    assert keys == sorted(keys) and len(keys) == 7
    # Changing items mid-iteration must not skip or repeat the rest.
    seen = []
    for item in store.items_with_status("lines", Status.NONE):
        seen.append(item.key)
        store.claim("lines", [item.key], "b2")
    assert seen == keys
    assert [item.key for item in store.items_with_status("lines", "PENDING")][0] == line_key("img-a", 1, 0)


# Status transitions


def test_claim_only_none_and_not_noise(store):
    receipt = make_receipt("img-a", 1, ["A", "B", "C", "D"])
    receipt.lines[3].is_noise = True
    store.put_receipts([receipt])
    keys = [line_key("img-a", 1, i) for i in range(4)]

    assert store.claim("lines", [keys[2], keys[0]], "b1") == [keys[2], keys[0]]
    assert store.claim("lines", keys + ["IMAGE#nope#RECEIPT#00001#LINE#00000"], "b2") == [keys[1]]
    assert store.claim("words", [keys[1]], "b3") == []
    items = {item.key: item for item in store.receipt_items("lines", "img-a", 1)}
    assert [items[k].batch_id for k in keys] == ["b1", "b2", "b1", None]
    assert items[keys[3]].status is Status.NONE


def _claim_rounds(path: Path, keys: list[str], batch_id: str, offset: int, barrier) -> list[str]:
    """Claim windows of 10 keys shifted by `offset`, meeting the rival at `barrier` before each.

    With offsets 0 and 5 every window overlaps the rival's current and next
    one, so both sides contest the same keys at the same moment.
    """
    store = SqliteReceiptStore(path)
    won: list[str] = []
    try:
        for start in range(0, len(keys), 10):
            barrier.wait()
            won.extend(store.claim("lines", keys[start + offset : start + offset + 10], batch_id))
    finally:
        store.close()
    return won


def _claim_rounds_in_process(path: str, keys: list[str], batch_id: str, offset: int, barrier, queue) -> None:
    queue.put((batch_id, _claim_rounds(Path(path), keys, batch_id, offset, barrier)))


def _race_setup(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "race.sqlite3"
    setup = SqliteReceiptStore(path)
    setup.put_receipts([make_receipt("img-r", r, [f"t{i}" for i in range(40)]) for r in range(1, 26)])
    setup.close()
    return path, [line_key("img-r", r, i) for r in range(1, 26) for i in range(40)]


def test_concurrent_claims_from_two_threads_never_share_an_item(tmp_path):
    path, keys = _race_setup(tmp_path)
    barrier = threading.Barrier(2, timeout=10)
    with ThreadPoolExecutor(2) as pool:
        future_a = pool.submit(_claim_rounds, path, keys, "a", 0, barrier)
        future_b = pool.submit(_claim_rounds, path, keys, "b", 5, barrier)
        won_a, won_b = future_a.result(), future_b.result()

    assert set(won_a) & set(won_b) == set()
    assert set(won_a) | set(won_b) == set(keys)
    assert len(won_a) + len(won_b) == len(keys)
    check = SqliteReceiptStore(path)
    owners = {item.key: item.batch_id for item in check.items_with_status("lines", "PENDING")}
    check.close()
    assert {key for key, batch_id in owners.items() if batch_id == "a"} == set(won_a)


def test_concurrent_claims_from_two_processes_never_share_an_item(tmp_path):
    path, keys = _race_setup(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=20)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_rounds_in_process, args=(str(path), keys, batch_id, offset, barrier, queue))
        for batch_id, offset in (("a", 0), ("b", 5))
    ]
    for proc in procs:
        proc.start()
    won = dict(queue.get(timeout=30) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    assert set(won["a"]) & set(won["b"]) == set()
    assert set(won["a"]) | set(won["b"]) == set(keys)


def test_release_returns_to_none_then_fails_at_the_limit(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"])])
    a, b = line_key("img-a", 1, 0), line_key("img-a", 1, 1)

    store.claim("lines", [a, b], "b1")
    assert store.release("lines", [a, b], "other-batch", "nope", max_attempts=2) == (0, 0)
    assert store.release("lines", [a, b], "b1", "expired", max_attempts=2) == (2, 0)
    item = store.receipt_items("lines", "img-a", 1)[0]
    assert (item.status, item.attempts, item.batch_id, item.last_error) == (Status.NONE, 1, None, "expired")
    assert store.release("lines", [a], "b1", "again", max_attempts=2) == (0, 0)  # no longer PENDING

    store.claim("lines", [a], "b2")
    assert store.release("lines", [a], "b2", "bad input", max_attempts=2) == (0, 1)
    item = store.receipt_items("lines", "img-a", 1)[0]
    assert (item.status, item.attempts, item.batch_id, item.last_error) == (Status.FAILED, 2, None, "bad input")
    assert store.claim("lines", [a], "b3") == []
    assert store.status_counts("lines") == {"FAILED": 1, "NONE": 1}


def test_mark_success_only_for_the_owning_batch(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B", "C"])])
    a, b, c = (line_key("img-a", 1, i) for i in range(3))
    store.claim("lines", [a, b], "b1")
    store.claim("lines", [c], "b2")

    assert store.mark_success("lines", [a, b, c], "b1") == 2
    assert store.mark_success("lines", [a], "b1") == 0
    items = {item.key: item for item in store.receipt_items("lines", "img-a", 1)}
    assert (items[a].status, items[a].batch_id) == (Status.SUCCESS, "b1")
    assert (items[c].status, items[c].batch_id) == (Status.PENDING, "b2")
    assert store.mark_success("lines", [], "b1") == 0


def test_mark_noise_only_from_none(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"], words_per_line=1)])
    a, b = line_key("img-a", 1, 0), line_key("img-a", 1, 1)
    store.claim("lines", [b], "b1")

    assert store.mark_noise("lines", {a: "punctuation only", b: "too short"}) == 1
    items = {item.key: item for item in store.receipt_items("lines", "img-a", 1)}
    assert (items[a].status, items[a].last_error) == (Status.NOISE, "punctuation only")
    assert items[b].status is Status.PENDING
    assert store.mark_noise("words", {a: "wrong kind"}) == 0
    assert store.mark_noise("words", {word_key("img-a", 1, 0, 0): "x"}) == 1
    assert store.claim("lines", [a], "b2") == []


def test_pending_without_live_batch(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B", "C", "D"])])
    keys = [line_key("img-a", 1, i) for i in range(4)]
    store.put_batch(make_batch("live", stage=Stage.IN_PROGRESS))
    store.put_batch(make_batch("done", stage=Stage.COMPACTED))
    store.claim("lines", [keys[0]], "live")
    store.claim("lines", [keys[1]], "done")
    store.claim("lines", [keys[2]], "never-recorded")

    assert store.pending_without_live_batch("lines") == [(keys[1], "done"), (keys[2], "never-recorded")]
    assert store.pending_without_live_batch("words") == []


def test_unknown_kind_is_rejected(store):
    with pytest.raises(ValueError):
        store.unembedded_receipts("pages", 1)


# Batch records


def test_batch_record_round_trip_and_update(store):
    record = make_batch("b1", created_at="2024-01-01T00:00:00+00:00")
    record.receipt_refs = [("img-a", 1), ("img-b", 12)]
    store.put_batch(record)

    got = store.get_batch("b1")
    assert got.receipt_refs == [("img-a", 1), ("img-b", 12)]
    assert got.stage is Stage.PREPARED and got.created_at == "2024-01-01T00:00:00+00:00"
    assert got.updated_at.endswith("+00:00")
    assert {**vars(got), "updated_at": ""} == {**vars(record), "updated_at": ""}
    with pytest.raises(ValueError):
        store.put_batch(make_batch("b1"))

    before = got.updated_at
    time.sleep(0.002)
    updated = store.update_batch("b1", stage="in_progress", provider_batch_id="batch_123", cost_usd=0.25)
    assert (updated.stage, updated.provider_batch_id, updated.cost_usd) == (Stage.IN_PROGRESS, "batch_123", 0.25)
    assert updated.updated_at > before and updated.updated_at.endswith("+00:00")
    latest = store.update_batch("b1", stage=Stage.DELTA_READY, receipt_refs=[("img-c", 3)])
    assert (latest.stage, latest.receipt_refs) == (Stage.DELTA_READY, [("img-c", 3)])
    assert store.get_batch("b1") == latest

    with pytest.raises(ValueError):
        store.update_batch("b1", colour="red")
    with pytest.raises(ValueError):
        store.update_batch("b1", stage="not-a-stage")
    with pytest.raises(KeyError):
        store.update_batch("missing", stage=Stage.FAILED)
    assert store.get_batch("missing") is None


def test_list_batches_oldest_first_by_kind_and_stage(store):
    store.put_batch(make_batch("b3", created_at="2024-01-02T00:00:00+00:00"))
    store.put_batch(make_batch("b2", created_at="2024-01-01T00:00:00+00:00", stage=Stage.COMPLETED))
    store.put_batch(make_batch("b1", created_at="2024-01-02T00:00:00+00:00"))
    store.put_batch(make_batch("w1", kind="words", created_at="2024-01-01T00:00:00+00:00"))

    assert [r.batch_id for r in store.list_batches("lines")] == ["b2", "b1", "b3"]
    assert [r.batch_id for r in store.list_batches("lines", [Stage.PREPARED])] == ["b1", "b3"]
    assert [r.batch_id for r in store.list_batches("lines", ["completed", Stage.FAILED])] == ["b2"]
    assert store.list_batches("lines", []) == []
    assert [r.batch_id for r in store.list_batches("words")] == ["w1"]


# Leases


def test_lock_respects_another_owner_and_release_is_owner_checked(tmp_path):
    one = SqliteReceiptStore(tmp_path / "s.sqlite3")
    two = SqliteReceiptStore(tmp_path / "s.sqlite3")
    try:
        assert one.acquire_lock("compaction-lines", "me", 60)
        assert not two.acquire_lock("compaction-lines", "you", 60)
        assert one.acquire_lock("compaction-lines", "me", 60)  # re-entrant for the same owner
        assert two.lock_owner("compaction-lines") == "me"
        assert not two.release_lock("compaction-lines", "you")
        assert one.release_lock("compaction-lines", "me")
        assert one.lock_owner("compaction-lines") is None
        assert two.acquire_lock("compaction-lines", "you", 60)
    finally:
        one.close()
        two.close()


def test_expired_lock_is_taken_over_and_heartbeat_is_owner_checked(store):
    assert store.acquire_lock("l", "me", 0.05)
    assert store.heartbeat_lock("l", "me", 0.05)
    assert not store.heartbeat_lock("l", "you", 60)
    assert store.lock_owner("l") == "me"
    time.sleep(0.1)

    assert store.lock_owner("l") is None
    assert store.acquire_lock("l", "you", 60)
    assert not store.heartbeat_lock("l", "me", 60)
    assert not store.release_lock("l", "me")
    assert store.lock_owner("l") == "you"
    assert store.heartbeat_lock("l", "you", 60)
