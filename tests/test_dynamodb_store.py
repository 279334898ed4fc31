"""DynamoReceiptStore on a moto server: the seed table's layout kept, and what only DynamoDB needs.

The rules every receipt store keeps are in tests/contracts/test_receipt_store.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from embedding_assets.cli.run import run_kind
from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.lease import Lease, LeaseHeld
from embedding_assets.domain.models import Box, Stage, Status, line_key
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime
from resources.receipt_store import dynamodb_records, dynamodb_table
from resources.receipt_store.dynamodb import DynamoReceiptStore
from resources.receipt_store.dynamodb_keys import SEED_STATUS
from tests.aws_fixtures import aws_backend_env, new_table
from tests.support import PIPELINE_ITEM_ATTRIBUTES, base_env, check_layout, make_batch, make_receipt, raw_items

ME, YOU = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture
def table(moto_endpoint) -> str:
    return new_table(moto_endpoint)


@pytest.fixture
def store(table, moto_endpoint) -> DynamoReceiptStore:
    return DynamoReceiptStore(table, endpoint_url=moto_endpoint)


# Receipts and items


def test_written_items_follow_the_seed_layout(store):
    store.put_receipts([make_receipt("img-a", 1, ["TOTAL"], words_per_line=1, merchant="Shop")])
    items = raw_items(store)

    assert items[("IMAGE#img-a", "RECEIPT#00001")] == {
        "PK": {"S": "IMAGE#img-a"}, "SK": {"S": "RECEIPT#00001"}, "TYPE": {"S": "RECEIPT"}}
    assert ("IMAGE#img-a", "RECEIPT#00001#PLACE") not in items, "place items are the seed's, read only"
    assert items[("EMBEDDING_MERCHANT#IMAGE#img-a", "RECEIPT#00001")] == {
        "PK": {"S": "EMBEDDING_MERCHANT#IMAGE#img-a"}, "SK": {"S": "RECEIPT#00001"},
        "TYPE": {"S": "EMBEDDING_MERCHANT"}, "merchant_name": {"S": "Shop"}}
    assert store.merchant_name("img-a", 1) == "Shop"
    for item in items.values():
        check_layout(item)
    word = items[("IMAGE#img-a", "RECEIPT#00001#LINE#00000#WORD#00000")]
    assert word["top_left"] == {"M": {"x": {"N": "0.1"}, "y": {"N": "0.9500000000000001"}}}
    assert word["bottom_right"] == {"M": {"x": {"N": "0.25"}, "y": {"N": "0.9"}}}
    assert word["confidence"] == {"N": "0.8"} and word["angle_degrees"] == {"N": "0"}


def test_put_receipts_rejects_what_the_seed_keys_cannot_hold(store):
    store.put_receipts([make_receipt("img-a", 1, ["A"])])
    with pytest.raises(ValueError, match="five digits"):
        store.put_receipts([make_receipt("img-b", 100_000, ["B"])])
    with pytest.raises(ValueError, match="'#'"):
        store.put_receipts([make_receipt("img#b", 1, ["B"])])

    assert store.receipt_count() == 1
    assert [item.text for item in store.receipt_items("lines", "img-a", 1)] == ["A"]


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


# Status transitions


def test_a_claim_of_a_missing_key_creates_nothing(store):
    """An UpdateItem on a missing key would create the item; the claim's condition must stop it."""
    store.put_receipts([make_receipt("img-a", 1, ["A", "B", "C", "D"])])
    keys = [line_key("img-a", 1, i) for i in range(4)]

    assert store.claim("lines", keys + ["IMAGE#nope#RECEIPT#00001#LINE#00000", "garbage"], "b2") == keys
    assert len(raw_items(store)) == 1 + 4


def test_claim_retried_after_a_landed_attempt_counts_as_won(store):
    store.put_receipts([make_receipt("img-a", 1, ["A"])])
    key = line_key("img-a", 1, 0)
    assert store.claim("lines", [key], "b1") == [key]
    assert store.claim("lines", [key], "b1") == [key]
    assert store.claim("lines", [key], "b2") == []


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


@pytest.mark.parametrize("stage", list(Stage))
def test_batch_summary_shows_the_seed_status_of_every_stage(store, stage):
    store.put_batch(make_batch("b1"))
    store.update_batch("b1", stage=stage, provider_batch_id="batch_1")

    item = raw_items(store)[("BATCH#b1", "STATUS")]
    check_layout(item)
    assert item["status"] == {"S": SEED_STATUS[stage]} and item["pipeline_stage"] == {"S": stage.value}
    assert item["GSI1PK"] == {"S": f"STATUS#{SEED_STATUS[stage]}"}
    assert [r.batch_id for r in store.list_batches("lines", [stage])] == ["b1"]


def test_list_batches_skips_the_seeds_own_batch_summaries(store):
    store.put_batch(make_batch("b1", created_at="2024-01-02T00:00:00+00:00"))
    store._client.put_item(TableName=store.table_name, Item=seed_batch_summary("seeds-own", "PENDING"))

    assert [r.batch_id for r in store.list_batches("lines")] == ["b1"]
    assert [r.batch_id for r in store.list_batches("lines", [Stage.PREPARED])] == ["b1"]
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


def test_lock_is_the_seed_lock_item(store):
    assert store.acquire_lock("chroma-words-compaction", ME, 60)
    assert store.heartbeat_lock("chroma-words-compaction", ME, 120)

    item = raw_items(store)[("LOCK#words#chroma-words-compaction", "LOCK")]
    check_layout(item)
    assert item["owner"] == {"S": ME} and item["collection"] == {"S": "words"}
    assert item["GSI1SK"] == {"S": f"EXPIRES#{item['expires']['S']}"}
    assert store.acquire_lock("lines-create", ME, 60) and store.heartbeat_lock("lines-create", ME, 120)
    ours = raw_items(store)[("LOCK#lines#lines-create", "LOCK")]
    check_layout(ours)
    assert ours["TYPE"] == {"S": "EMBEDDING_LEASE"} and "GSI1PK" not in ours and "GSI1SK" not in ours, \
        "the seed's lock listing (GSI1 LOCK#lines) shows its compaction lock only"
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
        seed_word(1, 0, 0, "HARBOR", 0.1, 0.9,
                  extracted_data={"M": {"type": {"S": "merchant"}, "value": {"S": "HARBOR"}}}),
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
    harbor_word = (f"IMAGE#{SEED_IMAGE}", "RECEIPT#00001#LINE#00000#WORD#00000")
    assert after[harbor_word]["extracted_data"] == before[harbor_word]["extracted_data"]

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


def test_a_long_import_writes_each_groups_change_records_just_before_its_own_writes(store, monkeypatch):
    """A compaction reading the feed in the middle of a big re-import must not consume records of changes
    the import has not made yet (it would see the items unchanged and move past them for good)."""
    from resources.receipt_store import dynamodb_changes, dynamodb_receipts

    monkeypatch.setattr(dynamodb_changes, "FEED_SETTLE_SECONDS", 0.0)  # every record counts as settled
    count = dynamodb_receipts._RECEIPTS_PER_GROUP + 3
    receipts = [make_receipt(f"img-g{n:03d}", 1, ["KEEP", "DROP"]) for n in range(count)]
    store.put_receipts(receipts)
    cursor = store.changes_head("lines")
    last = receipts[-1]
    reads: list[str] = []
    batch_write = store._batch_write

    def read_midway(requests):
        if not reads and any("DeleteRequest" in r for r in requests):  # a compaction amid the item writes
            keys, moved = store.vector_changes("lines", cursor)
            reads.append(moved)
            assert line_key(last.image_id, 1, 1) not in keys
        batch_write(requests)

    monkeypatch.setattr(store, "_batch_write", read_midway)
    store.put_receipts([make_receipt(r.image_id, 1, ["KEEP"]) for r in receipts])  # every DROP line goes
    assert line_key(last.image_id, 1, 1) in store.vector_changes("lines", reads[0])[0], "still ahead of the cursor"


def test_a_cursor_stamped_by_a_clock_running_ahead_reads_nothing_yet(store):
    ahead = "2999-01-01T00:00:00.000000+00:00#abc#000000"
    assert store.vector_changes("lines", ahead) == ([], ahead)


def test_a_place_item_an_earlier_version_wrote_moves_to_our_own_merchant_item(store):
    """Earlier imports wrote a bare place item; the seed's place reader fails on one, so it is moved."""
    legacy = {"PK": {"S": "IMAGE#img-m"}, "SK": {"S": "RECEIPT#00001#PLACE"}, "TYPE": {"S": "RECEIPT_PLACE"},
              "merchant_name": {"S": "Old Name"}}
    store._client.put_item(TableName=store.table_name, Item=legacy)
    store.put_receipts([make_receipt("img-m", 1, ["TOTAL"], merchant="New Name")])
    items = raw_items(store)
    assert ("IMAGE#img-m", "RECEIPT#00001#PLACE") not in items and store.merchant_name("img-m", 1) == "New Name"
    store.put_receipts([make_receipt("img-m", 1, ["TOTAL"])])  # no merchant any more
    assert store.merchant_name("img-m", 1) is None
    assert ("EMBEDDING_MERCHANT#IMAGE#img-m", "RECEIPT#00001") not in raw_items(store)
