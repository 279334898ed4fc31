"""The ReceiptStore contract, run on every backend: lifecycle rules, paging, races, batch records and leases.

Backend-specific facts stay in their own modules: the seed table's layout,
throttling and batch-call limits in test_dynamodb_store.py, query plans and
claims from other processes in test_sqlite_store.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from embedding_assets.domain.models import Box, Item, Stage, Status, line_key, receipt_key, word_key
from tests.support import make_batch, make_receipt

# Lease owners are UUIDs and lease names mention their kind: the seed's lock items need both.
ME, YOU = str(uuid.uuid4()), str(uuid.uuid4())


# Receipts and items


def test_put_and_read_back(receipt_store):
    store = receipt_store
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


def test_reimport_resets_changed_text_only_and_drops_missing_items(receipt_store, store_backend):
    store = receipt_store
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
        Status.NONE, 0, None, None)
    assert store.merchant_name("img-a", 1) == "New"
    assert store.receipt_count() == 1
    store_backend.check_stored(store)


def test_put_receipts_validates_everything_before_writing(receipt_store):
    store = receipt_store
    store.put_receipts([make_receipt("img-a", 1, ["A"])])
    bad = make_receipt("img-c", 1, ["X"])
    bad.lines.append(Item("img-other", 9, 0, "stray", Box(0, 0, 1, 1), 1.0))

    with pytest.raises(ValueError):
        store.put_receipts([make_receipt("img-a", 1, ["changed"]), make_receipt("img-b", 1, ["B"]), bad])

    assert store.receipt_count() == 1
    assert [item.text for item in store.receipt_items("lines", "img-a", 1)] == ["A"]


def test_delete_receipt_removes_its_items_and_merchant(receipt_store):
    store = receipt_store
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"], words_per_line=2, merchant="Shop"),
                        make_receipt("img-a", 2, ["C"])])

    assert store.delete_receipt("img-a", 1) == 6
    assert store.delete_receipt("img-a", 1) == 0
    assert store.receipt_count() == 1
    assert store.receipt_items("words", "img-a", 1) == []
    assert store.merchant_name("img-a", 1) is None
    assert store.status_counts("lines") == {"NONE": 1}


def test_unembedded_receipts_in_key_order_with_paging(receipt_store, store_backend, monkeypatch):
    store = receipt_store
    store_backend.small_pages(monkeypatch, 1)
    # receipt 10 sorts after 9 only because ids are zero-padded in the key.
    store.put_receipts([make_receipt("img-b", 1, ["x"]), make_receipt("img-a", 10, ["x", "y"]),
                        make_receipt("img-a", 9, ["x"])])
    store.put_receipts([make_receipt("img-a", 2, ["x"])])
    store.claim("lines", [line_key("img-a", 2, 0)], "b1")  # no NONE line left in that receipt

    assert store.unembedded_receipts("lines", 10) == [("img-a", 9), ("img-a", 10), ("img-b", 1)]
    first = store.unembedded_receipts("lines", 2)
    assert first == [("img-a", 9), ("img-a", 10)]
    assert store.unembedded_receipts("lines", 2, after=receipt_key(*first[-1])) == [("img-b", 1)]
    assert store.unembedded_receipts("lines", 2, after=receipt_key("img-b", 1)) == []
    assert store.unembedded_receipts("words", 10) == []


def test_items_with_status_streams_every_item(receipt_store, store_backend, monkeypatch):
    store = receipt_store
    store_backend.small_pages(monkeypatch, 3)
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


def test_claim_only_none_and_not_noise(receipt_store):
    store = receipt_store
    receipt = make_receipt("img-a", 1, ["A", "B", "C", "D"])
    receipt.lines[3].is_noise = True
    store.put_receipts([receipt])
    keys = [line_key("img-a", 1, i) for i in range(4)]

    assert store.claim("lines", [keys[2], keys[0]], "b1") == [keys[2], keys[0]]
    assert store.claim("lines", keys + ["IMAGE#nope#RECEIPT#00001#LINE#00000", "garbage"], "b2") == [keys[1]]
    assert store.claim("words", [keys[1]], "b3") == []
    items = {item.key: item for item in store.receipt_items("lines", "img-a", 1)}
    assert [items[k].batch_id for k in keys] == ["b1", "b2", "b1", None]
    assert items[keys[3]].status is Status.NONE


def test_a_claim_given_the_texts_read_skips_an_item_edited_since(receipt_store):
    store = receipt_store
    store.put_receipts([make_receipt("img-e", 1, ["APPLE JUICE 2.99", "BREAD"], words_per_line=1)])
    keys = [line_key("img-e", 1, 0), line_key("img-e", 1, 1)]
    read = {item.key: item.text for item in store.receipt_items("lines", "img-e", 1)}
    store.set_text("lines", keys[0], "ORANGE SODA 1.49")  # lands between the read and the claim

    assert store.claim("lines", keys, "b1", read) == [keys[1]]
    edited = store.items_by_key("lines", [keys[0]])[keys[0]]
    assert (edited.status, edited.text) == (Status.NONE, "ORANGE SODA 1.49")
    assert store.claim("lines", keys[:1], "b2", {keys[0]: "ORANGE SODA 1.49"}) == keys[:1]


def test_two_claimers_racing_each_win_disjoint_items(store_backend):
    """Windows of 10 keys shifted by 5, met at a barrier, so both sides contest the same keys at once."""
    setup = store_backend.open()
    setup.put_receipts([make_receipt("img-r", r, [f"t{i}" for i in range(20)]) for r in range(1, 6)])
    keys = [line_key("img-r", r, i) for r in range(1, 6) for i in range(20)]
    barrier = threading.Barrier(2, timeout=30)
    claimers = [store_backend.open(), store_backend.open()]  # each its own connection or client

    def claim_rounds(claimer: int, batch_id: str, offset: int) -> list[str]:
        won: list[str] = []
        for start in range(0, len(keys), 10):
            barrier.wait()
            won.extend(claimers[claimer].claim("lines", keys[start + offset:start + offset + 10], batch_id))
        return won

    with ThreadPoolExecutor(2) as pool:
        future_a, future_b = pool.submit(claim_rounds, 0, "a", 0), pool.submit(claim_rounds, 1, "b", 5)
        won_a, won_b = future_a.result(), future_b.result()

    assert set(won_a) & set(won_b) == set()
    assert set(won_a) | set(won_b) == set(keys)
    assert len(won_a) + len(won_b) == len(keys)
    owners = {item.key: item.batch_id for item in setup.items_with_status("lines", "PENDING")}
    assert {key for key, batch_id in owners.items() if batch_id == "a"} == set(won_a)


def test_an_uncounted_release_never_brings_an_item_nearer_to_failed(receipt_store):
    """A batch superseded by a model change did nothing wrong: its items go back as they were."""
    store = receipt_store
    store.put_receipts([make_receipt("img-u", 1, ["A"])])
    a = line_key("img-u", 1, 0)
    store.claim("lines", [a], "b1")
    assert store.release("lines", [a], "b1", "failed once", max_attempts=2) == (1, 0)
    store.claim("lines", [a], "b2")
    assert store.release("lines", [a], "other", "x", max_attempts=2, count_attempt=False) == (0, 0)
    assert store.release("lines", [a], "b2", "superseded", max_attempts=2, count_attempt=False) == (1, 0)
    item = store.receipt_items("lines", "img-u", 1)[0]
    assert (item.status, item.attempts, item.batch_id, item.last_error) == (Status.NONE, 1, None, "superseded")


def test_release_returns_to_none_then_fails_at_the_limit(receipt_store):
    store = receipt_store
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

    store.claim("lines", [b], "b4")
    assert store.release("lines", [b], "b4", None, max_attempts=1) == (0, 1)  # a limit of one fails at once


def test_mark_success_only_for_the_owning_batch(receipt_store):
    store = receipt_store
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


def test_mark_noise_only_from_none(receipt_store):
    store = receipt_store
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


def test_retry_failed_and_set_text_send_items_back_to_none(receipt_store, store_backend):
    store = receipt_store
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"])])
    a, b = line_key("img-a", 1, 0), line_key("img-a", 1, 1)
    store.claim("lines", [a, b], "b1")
    store.release("lines", [a], "b1", "quota", max_attempts=1)
    store.mark_success("lines", [b], "b1")

    assert store.retry_failed("lines") == 1 and store.retry_failed("words") == 0
    item = store.receipt_items("lines", "img-a", 1)[0]
    assert (item.status, item.attempts, item.batch_id, item.last_error) == (Status.NONE, 0, None, "quota")

    assert store.set_text("lines", b, "B fixed")
    assert not store.set_text("lines", line_key("img-a", 1, 9), "nothing there")
    assert not store.set_text("words", b, "wrong kind")
    fixed = store.receipt_items("lines", "img-a", 1)[1]
    assert (fixed.text, fixed.status, fixed.batch_id) == ("B fixed", Status.NONE, None)
    assert store.status_counts("lines") == {"NONE": 2}
    store_backend.check_stored(store)


def test_requeue_sends_only_the_named_items_of_that_status_back_to_none(receipt_store, store_backend):
    store = receipt_store
    store.put_receipts([make_receipt("img-a", 1, ["A", "B", "C", "D"], words_per_line=1)])
    a, b, c, d = (line_key("img-a", 1, i) for i in range(4))
    store.claim("lines", [a, b, c], "b1")
    store.release("lines", [c], "b1", "expired", max_attempts=3)
    store.claim("lines", [c], "b2")
    store.mark_success("lines", [a, b], "b1")
    store.mark_success("lines", [c], "b2")

    assert store.requeue("lines", "SUCCESS", [a, c, d]) == 2  # d is NONE, not SUCCESS
    items = {item.key: item for item in store.receipt_items("lines", "img-a", 1)}
    for key in (a, c):
        assert (items[key].status, items[key].attempts, items[key].batch_id, items[key].last_error) == (
            Status.NONE, 0, None, None)
    assert (items[b].status, items[b].batch_id) == (Status.SUCCESS, "b1")
    assert store.requeue("lines", Status.SUCCESS, [a]) == 0  # already NONE
    assert store.requeue("words", "SUCCESS", [b]) == 0  # a line is not a word
    assert store.requeue("lines", "PENDING", [b]) == 0
    assert store.status_counts("lines") == {"NONE": 3, "SUCCESS": 1}
    assert store.claim("lines", [a, c], "b3") == [a, c]
    store_backend.check_stored(store)


def test_pending_without_live_batch(receipt_store):
    store = receipt_store
    store.put_receipts([make_receipt("img-a", 1, ["A", "B", "C", "D"])])
    keys = [line_key("img-a", 1, i) for i in range(4)]
    store.put_batch(make_batch("live", stage=Stage.IN_PROGRESS))
    store.put_batch(make_batch("done", stage=Stage.COMPACTED))
    store.claim("lines", [keys[0]], "live")
    store.claim("lines", [keys[1]], "done")
    store.claim("lines", [keys[2]], "never-recorded")

    assert store.pending_without_live_batch("lines") == [(keys[1], "done"), (keys[2], "never-recorded")]
    assert store.pending_without_live_batch("words") == []


def test_unknown_kind_is_rejected(receipt_store):
    with pytest.raises(ValueError):
        receipt_store.unembedded_receipts("pages", 1)


# Batch records


def test_batch_record_round_trip_and_update(receipt_store):
    store = receipt_store
    record = make_batch("b1", created_at="2024-01-01T00:00:00+00:00")
    record.receipt_refs = [("img-a", 1), ("img-b", 12)]
    record.model, record.dimensions = "text-embedding-3-small", 512
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
    latest = store.update_batch("b1", stage=Stage.DELTA_READY, receipt_refs=[("img-c", 3)], last_error=None,
                                submitted_at="2024-01-02T00:00:00+00:00")
    assert (latest.stage, latest.receipt_refs, latest.submitted_at) == (
        Stage.DELTA_READY, [("img-c", 3)], "2024-01-02T00:00:00+00:00")
    assert store.get_batch("b1") == latest

    with pytest.raises(ValueError):
        store.update_batch("b1", colour="red")
    with pytest.raises(ValueError):
        store.update_batch("b1", stage="not-a-stage")
    with pytest.raises(KeyError):
        store.update_batch("missing", stage=Stage.FAILED)
    assert store.get_batch("missing") is None



def test_a_conditional_batch_update_changes_only_a_record_in_the_stages_named(receipt_store):
    receipt_store.put_batch(make_batch("b1", stage=Stage.COMPLETED))

    moved = receipt_store.update_batch_from("b1", [Stage.COMPLETED, Stage.FAILED], stage=Stage.DELTA_READY, vectors=2)
    receipt_store.update_batch("b1", stage=Stage.COMPACTED)

    assert (moved.stage, moved.vectors) == (Stage.DELTA_READY, 2)
    assert receipt_store.update_batch_from("b1", [Stage.COMPLETED], stage=Stage.DELTA_READY, vectors=9) is None
    assert (receipt_store.get_batch("b1").stage, receipt_store.get_batch("b1").vectors) == (Stage.COMPACTED, 2)
    assert receipt_store.update_batch_from("missing", [Stage.COMPLETED], stage=Stage.DELTA_READY) is None


def test_list_batches_oldest_first_by_kind_and_stage(receipt_store):
    store = receipt_store
    store.put_batch(make_batch("b3", created_at="2024-01-02T00:00:00+00:00"))
    store.put_batch(make_batch("b2", created_at="2024-01-01T00:00:00+00:00", stage=Stage.COMPLETED))
    store.put_batch(make_batch("b1", created_at="2024-01-02T00:00:00+00:00"))
    store.put_batch(make_batch("w1", kind="words", created_at="2024-01-01T00:00:00+00:00"))

    assert [r.batch_id for r in store.list_batches("lines")] == ["b2", "b1", "b3"]
    assert [r.batch_id for r in store.list_batches("lines", [Stage.PREPARED])] == ["b1", "b3"]
    assert [r.batch_id for r in store.list_batches("lines", ["completed", Stage.FAILED])] == ["b2"]
    assert store.list_batches("lines", [Stage.DELTA_READY]) == []  # the seed's status of completed, another stage
    assert store.list_batches("lines", []) == []
    assert [r.batch_id for r in store.list_batches("words")] == ["w1"]


# Leases


def test_lock_respects_another_owner_and_release_is_owner_checked(store_backend):
    one, two = store_backend.open(), store_backend.open()
    name = "chroma-lines-compaction"
    assert one.acquire_lock(name, ME, 60)
    assert not two.acquire_lock(name, YOU, 60)
    assert one.acquire_lock(name, ME, 60)  # re-entrant for the same owner
    assert two.lock_owner(name) == ME
    assert not two.release_lock(name, YOU)
    assert one.release_lock(name, ME)
    assert one.lock_owner(name) is None
    assert two.acquire_lock(name, YOU, 60)


def test_expired_lock_is_taken_over_and_heartbeat_is_owner_checked(receipt_store, store_backend):
    store = receipt_store
    name = "lines-create"
    # Long enough for the three calls before the sleep on a loaded machine (moto answers in tens of ms).
    ttl = 0.5
    assert store.acquire_lock(name, ME, ttl)
    assert store.heartbeat_lock(name, ME, ttl)
    assert not store.heartbeat_lock(name, YOU, 60)
    assert store.lock_owner(name) == ME
    time.sleep(ttl + 0.1)

    assert store.lock_owner(name) is None
    assert store.acquire_lock(name, YOU, 60)
    assert not store.heartbeat_lock(name, ME, 60)
    assert not store.release_lock(name, ME)
    assert store.lock_owner(name) == YOU
    assert store.heartbeat_lock(name, YOU, 60)
    store_backend.check_stored(store)


# The change feed compaction reads


def test_the_change_feed_records_what_can_make_a_vector_stale(receipt_store, monkeypatch):
    from resources.receipt_store import dynamodb_changes

    monkeypatch.setattr(dynamodb_changes, "FEED_SETTLE_SECONDS", 0.0)  # read what was just written
    store = receipt_store
    store.put_receipts([make_receipt("img-f", 1, ["TOTAL", "MILK", "BREAD", "EGGS"], words_per_line=1)])
    keys = [line_key("img-f", 1, i) for i in range(4)]
    start = store.changes_head("lines")
    assert store.vector_changes("lines", start) == ([], start), "new items make no vector stale"
    assert store.claim("lines", keys, "b1") == keys and store.mark_success("lines", keys, "b1") == 4
    assert store.vector_changes("lines", start) == ([], start), "nor does embedding them"

    store.set_text("lines", keys[0], "TOTAL 9.99")
    assert store.requeue("lines", Status.SUCCESS.value, [keys[1]]) == 1
    store.put_receipts([make_receipt("img-f", 1, ["TOTAL 9.99", "MILK", "BREAD"], words_per_line=1)])  # EGGS gone
    changed, cursor = store.vector_changes("lines", start)
    assert set(changed) == {keys[0], keys[1], keys[3]}
    assert cursor == store.changes_head("lines") != start
    assert store.vector_changes("lines", cursor) == ([], cursor), "a change is read once"
    assert all(key.endswith("#WORD#00000") for key in store.vector_changes("words", "")[0]), "kinds apart"

    store.delete_receipt("img-f", 1)
    gone, _ = store.vector_changes("lines", cursor)
    assert set(gone) == set(keys[:3])


def test_trimming_the_change_feed_forgets_only_what_every_reader_is_past(receipt_store, monkeypatch):
    from resources.receipt_store import dynamodb_changes

    monkeypatch.setattr(dynamodb_changes, "FEED_SETTLE_SECONDS", 0.0)
    store = receipt_store
    store.put_receipts([make_receipt("img-t", 1, ["A", "B", "C"], words_per_line=1)])
    keys = [line_key("img-t", 1, i) for i in range(3)]
    store.claim("lines", keys, "b1")
    store.mark_success("lines", keys, "b1")
    assert store.trim_changes("lines", []) == 0 and store.trim_changes("lines", [""]) == 0
    for n in range(2):
        store.set_text("lines", keys[0], f"A{n}")
    _, first = store.vector_changes("lines", "")
    store.set_text("lines", keys[1], "B2")
    _, second = store.vector_changes("lines", first)
    store.set_text("words", word_key("img-t", 1, 2, 0), "C2")

    assert store.trim_changes("lines", [second, first]) > 0  # only what the slower reader is past
    assert store.vector_changes("lines", first) == ([keys[1]], second)
    assert store.changes_head("lines") == second
    assert store.trim_changes("lines", [second]) > 0
    assert store.vector_changes("lines", second) == ([], second) and store.changes_head("lines") == second
    assert store.vector_changes("words", "")[0] == [word_key("img-t", 1, 2, 0)], "the other kind untouched"
    store.set_text("lines", keys[2], "C2")
    assert store.vector_changes("lines", second)[0] == [keys[2]], "a change after a trim is seen"


def test_items_by_key_reads_any_status_and_skips_unknown_keys(receipt_store):
    store = receipt_store
    store.put_receipts([make_receipt("img-k", 1, ["A", "B"], words_per_line=1)])
    keys = [line_key("img-k", 1, 0), line_key("img-k", 1, 1)]
    store.claim("lines", keys[:1], "b1")
    found = store.items_by_key("lines", [*keys, line_key("img-k", 9, 0), word_key("img-k", 1, 0, 0)])
    assert set(found) == set(keys)
    assert (found[keys[0]].status, found[keys[0]].batch_id) == (Status.PENDING, "b1")
    assert found[keys[1]].status == Status.NONE and found[keys[1]].text == "B"
    assert store.items_by_key("words", [word_key("img-k", 1, 0, 0)])[word_key("img-k", 1, 0, 0)].text
