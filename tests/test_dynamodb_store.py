"""DynamoReceiptStore on a moto server: the SQLite store's rules, plus the seed table's layout kept."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from embedding_assets.cli.run import run_kind
from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.lease import Lease, LeaseHeld
from embedding_assets.domain.models import Box, Item, Stage, Status, line_key, receipt_key, word_key
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime
from resources.receipt_store import dynamodb_receipts, dynamodb_records, dynamodb_status, dynamodb_table
from resources.receipt_store.dynamodb import DynamoReceiptStore
from resources.receipt_store.dynamodb_keys import SEED_STATUS
from resources.receipt_store.dynamodb_table import dynamodb_client
from tests.aws_fixtures import aws_backend_env, new_table
from tests.conftest import base_env
from tests.test_sqlite_store import make_batch, make_receipt

ME, YOU = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture
def table(moto_endpoint) -> str:
    return new_table(moto_endpoint)


@pytest.fixture
def store(table, moto_endpoint) -> DynamoReceiptStore:
    return DynamoReceiptStore(table, endpoint_url=moto_endpoint)


def raw_items(store: DynamoReceiptStore) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of the table as stored (attribute-value form), by (PK, SK)."""
    items = {}
    for page in store._client.get_paginator("scan").paginate(TableName=store.table_name):
        for item in page["Items"]:
            items[(item["PK"]["S"], item["SK"]["S"])] = item
    return items


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


def test_written_items_follow_the_seed_layout(store):
    store.put_receipts([make_receipt("img-a", 1, ["TOTAL"], words_per_line=1, merchant="Shop")])
    items = raw_items(store)

    assert items[("IMAGE#img-a", "RECEIPT#00001")] == {
        "PK": {"S": "IMAGE#img-a"}, "SK": {"S": "RECEIPT#00001"}, "TYPE": {"S": "RECEIPT"}}
    assert items[("IMAGE#img-a", "RECEIPT#00001#PLACE")] == {
        "PK": {"S": "IMAGE#img-a"}, "SK": {"S": "RECEIPT#00001#PLACE"}, "TYPE": {"S": "RECEIPT_PLACE"},
        "merchant_name": {"S": "Shop"}}
    for item in items.values():
        check_layout(item)
    word = items[("IMAGE#img-a", "RECEIPT#00001#LINE#00000#WORD#00000")]
    assert word["top_left"] == {"M": {"x": {"N": "0.1"}, "y": {"N": "0.9500000000000001"}}}
    assert word["bottom_right"] == {"M": {"x": {"N": "0.25"}, "y": {"N": "0.9"}}}
    assert word["confidence"] == {"N": "0.8"} and word["angle_degrees"] == {"N": "0"}


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
    assert set(items) == {keys[0], keys[1]}
    unchanged, rewritten = items[keys[0]], items[keys[1]]
    assert (unchanged.status, unchanged.batch_id) == (Status.PENDING, "b1")
    assert unchanged.box == Box(0.2, 0.2, 0.5, 0.1) and unchanged.confidence == 0.5
    assert rewritten.text == "B2"
    assert (rewritten.status, rewritten.attempts, rewritten.batch_id, rewritten.last_error) == (Status.NONE, 0, None, None)
    assert store.merchant_name("img-a", 1) == "New"
    assert store.receipt_count() == 1
    for item in raw_items(store).values():
        check_layout(item)


def test_put_receipts_validates_everything_before_writing(store):
    store.put_receipts([make_receipt("img-a", 1, ["A"])])
    bad = make_receipt("img-c", 1, ["X"])
    bad.lines.append(Item("img-other", 9, 0, "stray", Box(0, 0, 1, 1), 1.0))
    with pytest.raises(ValueError):
        store.put_receipts([make_receipt("img-a", 1, ["changed"]), make_receipt("img-b", 1, ["B"]), bad])
    with pytest.raises(ValueError, match="five digits"):
        store.put_receipts([make_receipt("img-b", 100_000, ["B"])])
    with pytest.raises(ValueError, match="'#'"):
        store.put_receipts([make_receipt("img#b", 1, ["B"])])

    assert store.receipt_count() == 1
    assert [item.text for item in store.receipt_items("lines", "img-a", 1)] == ["A"]


def test_delete_receipt_removes_its_items_and_own_place_only(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"], words_per_line=2, merchant="Shop"),
                        make_receipt("img-a", 2, ["C"])])

    assert store.delete_receipt("img-a", 1) == 6
    assert store.delete_receipt("img-a", 1) == 0
    assert store.receipt_count() == 1
    assert store.receipt_items("words", "img-a", 1) == []
    assert store.merchant_name("img-a", 1) is None
    assert store.status_counts("lines") == {"NONE": 1}


def test_big_receipt_is_written_in_batches_within_the_per_call_limit(store, monkeypatch):
    sizes: list[int] = []
    real = store._client

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def batch_write_item(self, **kwargs):
            sizes.append(sum(len(v) for v in kwargs["RequestItems"].values()))
            return real.batch_write_item(**kwargs)

    monkeypatch.setattr(store, "_client", Counting())
    store.put_receipts([make_receipt("img-a", 1, [f"line {i}" for i in range(30)], words_per_line=2)])

    assert sum(sizes) == 1 + 30 + 60 and max(sizes) == dynamodb_table.BATCH_WRITE_LIMIT
    assert store.status_counts("words") == {"NONE": 60}


def test_unembedded_receipts_in_key_order_with_paging(store, monkeypatch):
    monkeypatch.setattr(dynamodb_receipts, "QUERY_PAGE", 1)
    store.put_receipts([make_receipt("img-b", 1, ["x"]), make_receipt("img-a", 10, ["x", "y"]),
                        make_receipt("img-a", 9, ["x"])])
    store.put_receipts([make_receipt("img-a", 2, ["x"])])
    store.claim("lines", [line_key("img-a", 2, 0)], "b1")

    assert store.unembedded_receipts("lines", 10) == [("img-a", 9), ("img-a", 10), ("img-b", 1)]
    first = store.unembedded_receipts("lines", 2)
    assert first == [("img-a", 9), ("img-a", 10)]
    assert store.unembedded_receipts("lines", 2, after=receipt_key(*first[-1])) == [("img-b", 1)]
    assert store.unembedded_receipts("lines", 2, after=receipt_key("img-b", 1)) == []
    assert store.unembedded_receipts("words", 10) == []


def test_items_with_status_streams_every_item(store, monkeypatch):
    monkeypatch.setattr(dynamodb_status, "QUERY_PAGE", 3)
    store.put_receipts([make_receipt("img-a", r, [f"l{i}" for i in range(4)]) for r in (1, 2)])
    store.claim("lines", [line_key("img-a", 1, 0)], "b1")

    keys = [item.key for item in store.items_with_status("lines", "NONE")]
    assert keys == sorted(keys) and len(keys) == 7
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
    assert store.claim("lines", keys + ["IMAGE#nope#RECEIPT#00001#LINE#00000", "garbage"], "b2") == [keys[1]]
    assert store.claim("words", [keys[1]], "b3") == []
    items = {item.key: item for item in store.receipt_items("lines", "img-a", 1)}
    assert [items[k].batch_id for k in keys] == ["b1", "b2", "b1", None]
    assert items[keys[3]].status is Status.NONE
    assert len(raw_items(store)) == 1 + 4  # a claim of a missing key created nothing


def test_claim_retried_after_a_landed_attempt_counts_as_won(store):
    store.put_receipts([make_receipt("img-a", 1, ["A"])])
    key = line_key("img-a", 1, 0)
    assert store.claim("lines", [key], "b1") == [key]
    assert store.claim("lines", [key], "b1") == [key]
    assert store.claim("lines", [key], "b2") == []


def test_two_claimers_racing_each_win_disjoint_items(table, moto_endpoint):
    setup = DynamoReceiptStore(table, endpoint_url=moto_endpoint)
    setup.put_receipts([make_receipt("img-r", r, [f"t{i}" for i in range(20)]) for r in range(1, 6)])
    keys = [line_key("img-r", r, i) for r in range(1, 6) for i in range(20)]
    barrier = threading.Barrier(2, timeout=30)

    def claim_rounds(batch_id: str, offset: int) -> list[str]:
        # Each claimer has its own client, as two processes would.
        store = DynamoReceiptStore(table, client=dynamodb_client.__wrapped__(moto_endpoint))
        won: list[str] = []
        for start in range(0, len(keys), 10):
            barrier.wait()
            won.extend(store.claim("lines", keys[start + offset:start + offset + 10], batch_id))
        return won

    with ThreadPoolExecutor(2) as pool:
        future_a, future_b = pool.submit(claim_rounds, "a", 0), pool.submit(claim_rounds, "b", 5)
        won_a, won_b = future_a.result(), future_b.result()

    assert set(won_a) & set(won_b) == set()
    assert set(won_a) | set(won_b) == set(keys)
    assert len(won_a) + len(won_b) == len(keys)
    owners = {item.key: item.batch_id for item in setup.items_with_status("lines", "PENDING")}
    assert {key for key, batch_id in owners.items() if batch_id == "a"} == set(won_a)


def test_release_returns_to_none_then_fails_at_the_limit(store):
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"])])
    a, b = line_key("img-a", 1, 0), line_key("img-a", 1, 1)

    store.claim("lines", [a, b], "b1")
    assert store.release("lines", [a, b], "other-batch", "nope", max_attempts=2) == (0, 0)
    assert store.release("lines", [a, b], "b1", "expired", max_attempts=2) == (2, 0)
    item = store.receipt_items("lines", "img-a", 1)[0]
    assert (item.status, item.attempts, item.batch_id, item.last_error) == (Status.NONE, 1, None, "expired")
    assert store.release("lines", [a], "b1", "again", max_attempts=2) == (0, 0)

    store.claim("lines", [a], "b2")
    assert store.release("lines", [a], "b2", "bad input", max_attempts=2) == (0, 1)
    item = store.receipt_items("lines", "img-a", 1)[0]
    assert (item.status, item.attempts, item.batch_id, item.last_error) == (Status.FAILED, 2, None, "bad input")
    assert store.claim("lines", [a], "b3") == []
    assert store.status_counts("lines") == {"FAILED": 1, "NONE": 1}

    store.claim("lines", [b], "b4")
    assert store.release("lines", [b], "b4", None, max_attempts=1) == (0, 1)  # a limit of one fails at once


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


def test_retry_failed_and_set_text_send_items_back_to_none(store):
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
    for raw in raw_items(store).values():
        check_layout(raw)


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


def test_throttling_and_transaction_conflicts_are_retried(store, monkeypatch):
    monkeypatch.setattr(dynamodb_table, "BACKOFF_BASE_SECONDS", 0.001)
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"])])
    real = store._client
    failures = {"update_item": ["TransactionConflictException", "ThrottlingException"],
                "batch_get_item": ["ProvisionedThroughputExceededException"]}

    class Flaky:
        def __getattr__(self, name):
            method = getattr(real, name)

            def call(**kwargs):
                if failures.get(name):
                    code = failures[name].pop(0)
                    raise ClientError({"Error": {"Code": code, "Message": "try again"}}, name)
                return method(**kwargs)
            return call

    monkeypatch.setattr(store, "_client", Flaky())
    keys = [line_key("img-a", 1, 0), line_key("img-a", 1, 1)]
    assert store.claim("lines", keys, "b1") == keys
    assert store.pending_without_live_batch("lines") == [(k, "b1") for k in keys]
    assert failures == {"update_item": [], "batch_get_item": []}

    failures["update_item"] = ["ValidationException"]
    with pytest.raises(ClientError):
        store.mark_success("lines", keys[:1], "b1")


def test_unprocessed_batch_writes_are_sent_again(store, monkeypatch):
    monkeypatch.setattr(dynamodb_table, "BACKOFF_BASE_SECONDS", 0.001)
    real = store._client
    calls: list[int] = []

    class Throttled:
        def __getattr__(self, name):
            return getattr(real, name)

        def batch_write_item(self, RequestItems):
            calls.append(len(RequestItems[store.table_name]))
            if len(calls) == 1:  # DynamoDB took nothing this time
                return {"UnprocessedItems": RequestItems}
            return real.batch_write_item(RequestItems=RequestItems)

    monkeypatch.setattr(store, "_client", Throttled())
    store.put_receipts([make_receipt("img-a", 1, ["A", "B"])])
    assert calls == [3, 3] and store.status_counts("lines") == {"NONE": 2}


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


@pytest.mark.parametrize("stage", list(Stage))
def test_batch_summary_shows_the_seed_status_of_every_stage(store, stage):
    store.put_batch(make_batch("b1"))
    store.update_batch("b1", stage=stage, provider_batch_id="batch_1")

    item = raw_items(store)[("BATCH#b1", "STATUS")]
    check_layout(item)
    assert item["status"] == {"S": SEED_STATUS[stage]} and item["pipeline_stage"] == {"S": stage.value}
    assert item["GSI1PK"] == {"S": f"STATUS#{SEED_STATUS[stage]}"}
    assert [r.batch_id for r in store.list_batches("lines", [stage])] == ["b1"]


def test_list_batches_oldest_first_by_kind_and_stage(store):
    store.put_batch(make_batch("b3", created_at="2024-01-02T00:00:00+00:00"))
    store.put_batch(make_batch("b2", created_at="2024-01-01T00:00:00+00:00", stage=Stage.COMPLETED))
    store.put_batch(make_batch("b1", created_at="2024-01-02T00:00:00+00:00"))
    store.put_batch(make_batch("w1", kind="words", created_at="2024-01-01T00:00:00+00:00"))
    store._client.put_item(TableName=store.table_name, Item=seed_batch_summary("seeds-own", "PENDING"))

    assert [r.batch_id for r in store.list_batches("lines")] == ["b2", "b1", "b3"]
    assert [r.batch_id for r in store.list_batches("lines", [Stage.PREPARED])] == ["b1", "b3"]
    assert [r.batch_id for r in store.list_batches("lines", ["completed", Stage.FAILED])] == ["b2"]
    assert store.list_batches("lines", [Stage.DELTA_READY]) == []  # same seed status as completed, other stage
    assert store.list_batches("lines", []) == []
    assert [r.batch_id for r in store.list_batches("words")] == ["w1"]
    assert store.get_batch("seeds-own") is None


def test_long_receipt_refs_are_cut_to_fit_the_item(store, monkeypatch):
    monkeypatch.setattr(dynamodb_records, "RECEIPT_REFS_BYTES", 1000)
    record = make_batch("b1")
    record.receipt_refs = [(str(uuid.UUID(int=i)), 1) for i in range(100)]
    store.put_batch(record)

    item = raw_items(store)[("BATCH#b1", "STATUS")]
    kept = store.get_batch("b1").receipt_refs
    assert 0 < len(kept) < 100 and kept == record.receipt_refs[:len(kept)]
    assert item["pipeline_receipt_refs_omitted"] == {"N": str(100 - len(kept))}
    check_layout(item)


# Leases


def test_lock_respects_another_owner_and_release_is_owner_checked(table, moto_endpoint):
    one = DynamoReceiptStore(table, endpoint_url=moto_endpoint)
    two = DynamoReceiptStore(table, endpoint_url=moto_endpoint)
    name = "chroma-lines-compaction"
    assert one.acquire_lock(name, ME, 60)
    assert not two.acquire_lock(name, YOU, 60)
    assert one.acquire_lock(name, ME, 60)
    assert two.lock_owner(name) == ME
    assert not two.release_lock(name, YOU)
    assert one.release_lock(name, ME)
    assert one.lock_owner(name) is None
    assert two.acquire_lock(name, YOU, 60)


def test_expired_lock_is_taken_over_and_heartbeat_is_owner_checked(store):
    name = "lines-create"
    assert store.acquire_lock(name, ME, 0.05)
    assert store.heartbeat_lock(name, ME, 0.05)
    assert not store.heartbeat_lock(name, YOU, 60)
    assert store.lock_owner(name) == ME
    time.sleep(0.1)

    assert store.lock_owner(name) is None
    assert store.acquire_lock(name, YOU, 60)
    assert not store.heartbeat_lock(name, ME, 60)
    assert not store.release_lock(name, ME)
    assert store.lock_owner(name) == YOU
    assert store.heartbeat_lock(name, YOU, 60)


def test_lock_is_the_seed_lock_item(store):
    assert store.acquire_lock("chroma-words-compaction", ME, 60)
    assert store.heartbeat_lock("chroma-words-compaction", ME, 120)

    item = raw_items(store)[("LOCK#words#chroma-words-compaction", "LOCK")]
    check_layout(item)
    assert item["owner"] == {"S": ME} and item["collection"] == {"S": "words"}
    assert item["GSI1SK"] == {"S": f"EXPIRES#{item['expires']['S']}"}
    with pytest.raises(ValueError):
        store.acquire_lock("no-collection-named", ME, 60)
    with pytest.raises(ValueError):
        store.acquire_lock("lines-create", "not-a-uuid", 60)


def test_a_lock_the_seed_holds_is_respected_and_an_expired_one_taken_over(store):
    def seed_lock(expires: str) -> dict[str, Any]:
        return {"PK": {"S": "LOCK#lines#chroma-lines-compaction"}, "SK": {"S": "LOCK"},
                "TYPE": {"S": "COMPACTION_LOCK"}, "GSI1PK": {"S": "LOCK#lines"}, "GSI1SK": {"S": f"EXPIRES#{expires}"},
                "owner": {"S": YOU}, "expires": {"S": expires}, "heartbeat": {"S": "2024-01-01T00:00:00+00:00"},
                "collection": {"S": "lines"}}

    store._client.put_item(TableName=store.table_name, Item=seed_lock("2999-01-01T00:00:00+00:00"))
    with pytest.raises(LeaseHeld), Lease(store, "chroma-lines-compaction", 60, 30):
        pass
    assert store.lock_owner("chroma-lines-compaction") == YOU

    store._client.put_item(TableName=store.table_name, Item=seed_lock("2024-01-01T00:00:00+00:00"))
    with Lease(store, "chroma-lines-compaction", 60, 30) as lease:
        lease.check()
        assert store.lock_owner("chroma-lines-compaction") == lease.owner
    assert store.lock_owner("chroma-lines-compaction") is None


# The layout document's rules, checked on every item after the store worked on it.

SEED_BATCH_STATUSES = {"PENDING", "VALIDATING", "IN_PROGRESS", "FINALIZING", "COMPLETED", "FAILED", "EXPIRED",
                       "CANCELING", "CANCELLED"}
ITEM_STATUSES = {s.value for s in Status}
LINE_ATTRIBUTES = {"PK", "SK", "TYPE", "GSI1PK", "GSI1SK", "GSI3PK", "GSI3SK", "GSI4PK", "GSI4SK", "text",
                   "bounding_box", "top_left", "top_right", "bottom_left", "bottom_right", "angle_degrees",
                   "angle_radians", "confidence", "embedding_status", "is_noise"}
PIPELINE_ITEM_ATTRIBUTES = {"embedding_batch_id", "embedding_attempts", "embedding_error"}


def _n(value: dict[str, Any]) -> float:
    return float(value["N"])


def _iso_utc(value: dict[str, Any]) -> None:
    assert value["S"].endswith("+00:00"), value


def check_layout(item: dict[str, Any]) -> None:
    """Assert that an item (attribute-value form) parses by SEED_TABLE_LAYOUT.md."""
    pk, sk, kind = item["PK"]["S"], item["SK"]["S"], item["TYPE"]["S"]
    if kind in ("RECEIPT_LINE", "RECEIPT_WORD"):
        image_id, parts = pk.removeprefix("IMAGE#"), sk.split("#")
        assert pk.startswith("IMAGE#") and parts[0] == "RECEIPT" and parts[2] == "LINE"
        assert all(len(p) == 5 and p.isdigit() for p in parts[1::2])
        rkey = f"IMAGE#{image_id}#RECEIPT#{parts[1]}"
        word = kind == "RECEIPT_WORD"
        assert len(parts) == (6 if word else 4) and (not word or parts[4] == "WORD")
        status = item.get("embedding_status", {"S": "NONE"})["S"]
        assert status in ITEM_STATUSES
        assert item["GSI1PK"] == {"S": f"EMBEDDING_STATUS#{status}"}
        assert item["GSI1SK"] == {"S": f"{'WORD' if word else 'LINE'}#{pk}#{sk}"}
        assert item["GSI3PK"] == {"S": rkey} and item["GSI3SK"] == {"S": "WORD" if word else "LINE"}
        assert item["GSI4PK"] == {"S": rkey}
        assert item["GSI4SK"] == {"S": f"3_WORD#{parts[3]}#{parts[5]}" if word else f"2_LINE#{parts[3]}"}
        if word:
            assert item["GSI2PK"] == {"S": "RECEIPT"} and item["GSI2SK"] == {"S": f"{pk}#{sk}"}
        assert set(item["bounding_box"]["M"]) == {"x", "y", "width", "height"}
        assert all("N" in v for v in item["bounding_box"]["M"].values())
        for corner in ("top_left", "top_right", "bottom_left", "bottom_right"):
            assert set(item[corner]["M"]) == {"x", "y"} and all("N" in v for v in item[corner]["M"].values())
        assert "N" in item["angle_degrees"] and "N" in item["angle_radians"]
        assert 0 < _n(item["confidence"]) <= 1 and round(_n(item["confidence"]), 2) == _n(item["confidence"])
        assert "S" in item["text"]
        assert "BOOL" in item.get("is_noise", {"BOOL": False})
        extra = set(item) - LINE_ATTRIBUTES - PIPELINE_ITEM_ATTRIBUTES - ({"GSI2PK", "GSI2SK", "extracted_data"} if word else set())
        assert not extra, extra
        assert all("NULL" not in v for name, v in item.items() if name != "extracted_data")
    elif kind == "BATCH_SUMMARY":
        batch_id = pk.removeprefix("BATCH#")
        assert pk.startswith("BATCH#") and "#" not in batch_id and sk == "STATUS"
        assert item["status"]["S"] in SEED_BATCH_STATUSES
        assert item["batch_type"]["S"] in ("LINE_EMBEDDING", "WORD_EMBEDDING")
        assert item["GSI1PK"] == {"S": f"STATUS#{item['status']['S']}"}
        assert item["GSI1SK"] == {"S": f"BATCH_TYPE#{item['batch_type']['S']}#BATCH_ID#{batch_id}"}
        assert "S" in item["openai_batch_id"] and "S" in item["result_file_id"]
        _iso_utc(item["submitted_at"])
        for ref in item["receipt_refs"]["L"]:
            assert set(ref["M"]) == {"image_id", "receipt_id"}
            assert "S" in ref["M"]["image_id"] and "N" in ref["M"]["receipt_id"]
        assert all("NULL" not in v for v in item.values())
    elif kind == "COMPACTION_LOCK":
        collection = item["collection"]["S"]
        assert collection in ("lines", "words") and pk.startswith(f"LOCK#{collection}#") and sk == "LOCK"
        assert str(uuid.UUID(item["owner"]["S"])) == item["owner"]["S"]
        _iso_utc(item["expires"])
        _iso_utc(item["heartbeat"])
        assert item["GSI1PK"] == {"S": f"LOCK#{collection}"}
        assert item["GSI1SK"] == {"S": f"EXPIRES#{item['expires']['S']}"}
    elif kind == "RECEIPT_PLACE":
        assert sk.endswith("#PLACE") and "S" in item["merchant_name"]
    else:
        assert kind == "RECEIPT" or sk.count("#") == 1, kind


def seed_batch_summary(batch_id: str, status: str) -> dict[str, Any]:
    return {"PK": {"S": f"BATCH#{batch_id}"}, "SK": {"S": "STATUS"}, "TYPE": {"S": "BATCH_SUMMARY"},
            "GSI1PK": {"S": f"STATUS#{status}"}, "GSI1SK": {"S": f"BATCH_TYPE#LINE_EMBEDDING#BATCH_ID#{batch_id}"},
            "batch_type": {"S": "LINE_EMBEDDING"}, "status": {"S": status}, "openai_batch_id": {"S": "batch_x"},
            "result_file_id": {"S": ""}, "submitted_at": {"S": "2024-01-01T00:00:00+00:00"},
            "receipt_refs": {"L": [{"M": {"image_id": {"S": "img"}, "receipt_id": {"N": "1"}}}]}}


# A table written by the seed system, embedded by the pipeline.

SEED_IMAGE = "2f0c3a5e-7d41-4c3b-9a8e-1b2c3d4e5f60"


def _box(x: float, y: float, width: float, height: float) -> dict[str, Any]:
    def n(v: float) -> dict[str, str]:
        return {"N": str(v)}
    return {
        "bounding_box": {"M": {"x": n(x), "y": n(y), "width": n(width), "height": n(height)}},
        "top_left": {"M": {"x": n(x), "y": n(y + height)}}, "top_right": {"M": {"x": n(x + width), "y": n(y + height)}},
        "bottom_left": {"M": {"x": n(x), "y": n(y)}}, "bottom_right": {"M": {"x": n(x + width), "y": n(y)}},
        "angle_degrees": n(0.5), "angle_radians": n(0.0087),
    }


def seed_line(rid: int, lid: int, text: str, y: float, status: str | None = "NONE", **extra: Any) -> dict[str, Any]:
    rkey = f"IMAGE#{SEED_IMAGE}#RECEIPT#{rid:05d}"
    item = {
        "PK": {"S": f"IMAGE#{SEED_IMAGE}"}, "SK": {"S": f"RECEIPT#{rid:05d}#LINE#{lid:05d}"},
        "TYPE": {"S": "RECEIPT_LINE"},
        "GSI1PK": {"S": f"EMBEDDING_STATUS#{status or 'NONE'}"}, "GSI1SK": {"S": f"LINE#{rkey}#LINE#{lid:05d}"},
        "GSI3PK": {"S": rkey}, "GSI3SK": {"S": "LINE"}, "GSI4PK": {"S": rkey}, "GSI4SK": {"S": f"2_LINE#{lid:05d}"},
        "text": {"S": text}, **_box(0.1, y, 0.6, 0.03), "confidence": {"N": "0.97"}, "is_noise": {"BOOL": False},
        **extra,
    }
    if status is not None:
        item["embedding_status"] = {"S": status}
    return item


def seed_word(rid: int, lid: int, wid: int, text: str, x: float, y: float, **extra: Any) -> dict[str, Any]:
    rkey = f"IMAGE#{SEED_IMAGE}#RECEIPT#{rid:05d}"
    wkey = f"{rkey}#LINE#{lid:05d}#WORD#{wid:05d}"
    return {
        "PK": {"S": f"IMAGE#{SEED_IMAGE}"}, "SK": {"S": f"RECEIPT#{rid:05d}#LINE#{lid:05d}#WORD#{wid:05d}"},
        "TYPE": {"S": "RECEIPT_WORD"},
        "GSI1PK": {"S": "EMBEDDING_STATUS#NONE"}, "GSI1SK": {"S": f"WORD#{wkey}"},
        "GSI2PK": {"S": "RECEIPT"}, "GSI2SK": {"S": wkey},
        "GSI3PK": {"S": rkey}, "GSI3SK": {"S": "WORD"}, "GSI4PK": {"S": rkey},
        "GSI4SK": {"S": f"3_WORD#{lid:05d}#{wid:05d}"},
        "text": {"S": text}, **_box(x, y, 0.15, 0.03), "confidence": {"N": "0.9"},
        "embedding_status": {"S": "NONE"}, "is_noise": {"BOOL": False}, **extra,
    }


def seed_items() -> list[dict[str, Any]]:
    """Receipt 1 with its place, lines and words; receipt 2 whose receipt key holds a placeholder."""
    pk = {"S": f"IMAGE#{SEED_IMAGE}"}
    return [
        {"PK": pk, "SK": {"S": "RECEIPT#00001"}, "TYPE": {"S": "RECEIPT"}, "width": {"N": "1200"},
         "height": {"N": "3000"}, "timestamp_added": {"S": "2024-05-01T10:00:00+00:00"}},
        {"PK": pk, "SK": {"S": "RECEIPT#00001#PLACE"}, "TYPE": {"S": "RECEIPT_PLACE"},
         "merchant_name": {"S": "Harbor Deli"}, "place_id": {"S": "ChIJ123"},
         "formatted_address": {"S": "1 Pier Rd"}, "matched_fields": {"L": [{"S": "name"}]},
         "timestamp": {"S": "2024-05-01T10:00:00+00:00"}},
        {"PK": pk, "SK": {"S": "RECEIPT#00002"}, "TYPE": {"S": "RECEIPT_PLACEHOLDER"}},
        seed_line(1, 0, "HARBOR DELI", 0.9),
        seed_line(1, 1, "TURKEY CLUB 8.50", 0.8, status=None),  # no embedding_status: NONE
        seed_line(1, 2, "TOTAL 8.50", 0.7, status="PENDING"),  # left PENDING by the seed's own pipeline
        seed_line(1, 3, "----", 0.6, is_noise={"BOOL": True}),
        seed_line(2, 0, "THANK YOU", 0.5),
        seed_word(1, 0, 0, "HARBOR", 0.1, 0.9, extracted_data={"M": {"type": {"S": "merchant"}, "value": {"S": "HARBOR"}}}),
        seed_word(1, 0, 1, "DELI", 0.3, 0.9, extracted_data={"NULL": True}),
        seed_word(1, 1, 0, "TURKEY", 0.1, 0.8),
        seed_word(1, 1, 1, "CLUB", 0.3, 0.8),
        seed_word(1, 1, 2, "8.50", 0.5, 0.8),
        seed_batch_summary("seeds-own", "COMPLETED"),
    ]


def test_a_seed_table_is_embedded_and_still_parses_afterwards(tmp_path, moto_endpoint, instance):
    settings = Settings.from_env({**base_env(tmp_path), **aws_backend_env(moto_endpoint)})
    runtime = Runtime.from_settings(settings)
    store = runtime.store
    for item in seed_items():
        store._client.put_item(TableName=store.table_name, Item=item)
    before = raw_items(store)

    assert store.receipt_count() == 1  # the placeholder is not a receipt
    assert store.merchant_name(SEED_IMAGE, 1) == "Harbor Deli" and store.merchant_name(SEED_IMAGE, 2) is None
    assert store.unembedded_receipts("lines", 10) == [(SEED_IMAGE, 1), (SEED_IMAGE, 2)]
    lines = store.receipt_items("lines", SEED_IMAGE, 1)
    assert [(i.text, i.status, i.is_noise) for i in lines] == [
        ("HARBOR DELI", Status.NONE, False), ("TURKEY CLUB 8.50", Status.NONE, False),
        ("TOTAL 8.50", Status.PENDING, False), ("----", Status.NONE, True)]
    assert lines[0].box == Box(0.1, 0.9, 0.6, 0.03) and lines[0].confidence == 0.97
    assert store.pending_without_live_batch("lines") == [(line_key(SEED_IMAGE, 1, 2), None)]
    assert store.list_batches("lines") == []

    defs = build_definitions(settings)
    for kind in ("lines", "words"):
        summary = run_kind(defs, KIND_DEFS[kind], runtime, instance, timeout=120, poll_seconds=0.1,
                           progress=lambda _: None)
        assert not summary.timed_out and summary.snapshot_version == 1

    assert store.status_counts("lines") == {"SUCCESS": 4, "NOISE": 1}
    assert store.status_counts("words") == {"SUCCESS": 5}
    after = raw_items(store)
    for item in after.values():
        check_layout(item)
    for sk in ("RECEIPT#00001", "RECEIPT#00001#PLACE", "RECEIPT#00002"):
        assert after[(f"IMAGE#{SEED_IMAGE}", sk)] == before[(f"IMAGE#{SEED_IMAGE}", sk)]
    assert after[("BATCH#seeds-own", "STATUS")] == before[("BATCH#seeds-own", "STATUS")]
    for key, old in before.items():
        if old["TYPE"]["S"] in ("RECEIPT_LINE", "RECEIPT_WORD"):
            new = after[key]
            changed = {name for name in set(old) | set(new) if old.get(name) != new.get(name)}
            assert changed <= {"embedding_status", "GSI1PK"} | PIPELINE_ITEM_ATTRIBUTES, (key, changed)
            assert new["embedding_status"]["S"] in ("SUCCESS", "NOISE")
    word = after[(f"IMAGE#{SEED_IMAGE}", "RECEIPT#00001#LINE#00000#WORD#00000")]
    assert word["extracted_data"] == before[(f"IMAGE#{SEED_IMAGE}", "RECEIPT#00001#LINE#00000#WORD#00000")]["extracted_data"]

    ours = [item for (pk, _), item in after.items() if pk.startswith("BATCH#") and "pipeline_stage" in item]
    assert {item["batch_type"]["S"] for item in ours} == {"LINE_EMBEDDING", "WORD_EMBEDDING"}
    seen_by_seed = store._client.query(
        TableName=store.table_name, IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk AND begins_with(GSI1SK, :type)",
        ExpressionAttributeValues={":pk": {"S": "STATUS#COMPLETED"}, ":type": {"S": "BATCH_TYPE#LINE_EMBEDDING"}},
    )["Items"]
    assert {item["PK"]["S"] for item in seen_by_seed} >= {"BATCH#seeds-own"} | {
        item["PK"]["S"] for item in ours if item["batch_type"]["S"] == "LINE_EMBEDDING"}
    assert not [key for key in after if key[0].startswith("LOCK#")]  # every lease was released
