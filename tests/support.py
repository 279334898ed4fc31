"""Builders, environments and checks shared by test modules (fixtures live in conftest.py and its plugins)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from embedding_assets.data.demo import generate_receipts
from embedding_assets.domain.formatting import Fit
from embedding_assets.domain.models import PROVIDER_LIVE, BatchRecord, Box, Item, Receipt, Stage, Status
from embedding_assets.domain.settings import Settings
from embedding_assets.domain.tokens import cl100k
from embedding_assets.steps.pipeline import Pipeline
from embedding_assets.wiring import Runtime
from resources.receipt_store.dynamodb import DynamoReceiptStore
from tests.aws_fixtures import aws_backend_env
from tests.chroma_server import server_mode_env
from tests.fake_batch_api import FakeBatchAPI

IMAGE = "3f1c2a9e-0000-4000-8000-000000000001"
KIND = "lines"
DIMS = 64

# Items and receipts



def line(line_id: int, text: str, x: float, y: float, width: float = 0.3, height: float = 0.02,
         status: Status = Status.NONE, image_id: str = IMAGE, receipt_id: int = 1, **kw) -> Item:
    return Item(image_id, receipt_id, line_id, text, Box(x, y, width, height), 0.95, status=status, **kw)


def word(line_id: int, word_id: int, text: str, x: float, y: float, width: float = 0.1, height: float = 0.02,
         status: Status = Status.NONE) -> Item:
    return Item(IMAGE, 1, line_id, text, Box(x, y, width, height), 0.9, word_id=word_id, status=status)


def receipt(lines: list[Item], merchant: str = "Corner Market", receipt_id: int = 1, image_id: str = IMAGE) -> Receipt:
    return Receipt(image_id, receipt_id, merchant, lines=lines)


def fit(max_tokens: int = 8192) -> Fit:
    """The cut and count the openai provider applies, at `max_tokens`."""
    return partial(cl100k().fit, max_tokens=max_tokens)


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


# Environments for whole-pipeline runs


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(tmp_path / "data"),
        "LOCK_DURATION_MINUTES": "1",
        "HEARTBEAT_INTERVAL_SECONDS": "2",
    }


def embedded_env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    return base_env(tmp_path)


def aws_env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """DynamoDB in the seed's layout and S3, on the session's moto server; a fresh table and buckets per test."""
    return {**base_env(tmp_path), **aws_backend_env(request.getfixturevalue("moto_endpoint"))}


def server_env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The embedded store and objects, with vectors on the session's `chroma run` server (a fresh database)."""
    return {**base_env(tmp_path), **server_mode_env(request.getfixturevalue("chroma_server"))}


# name -> builder of the environment for that backend set
BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], dict[str, str]]] = {
    "embedded": embedded_env,
    "aws": aws_env,
}


# The openai provider against the loopback Batch API


def quiet(_: str) -> None:
    pass


def openai_env(tmp_path: Path, api: FakeBatchAPI, **extra: str) -> dict[str, str]:
    return {
        "DATA_DIR": str(tmp_path / "data"), "LOCK_DURATION_MINUTES": "1", "HEARTBEAT_INTERVAL_SECONDS": "2",
        "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.base_url,
        "EMBEDDING_DIMENSIONS": str(DIMS), "OPENAI_MAX_RETRIES": "3", "OPENAI_TIMEOUT_SECONDS": "10", **extra,
    }


def make_runtime(tmp_path: Path, api: FakeBatchAPI, receipts: int = 2, **extra: str) -> Runtime:
    runtime = Runtime.from_settings(Settings.from_env(openai_env(tmp_path, api, **extra)))
    runtime.provider.backoff_seconds = 0.01
    runtime.store.put_receipts(generate_receipts(receipts, seed=5))
    return runtime


def settle(pipeline: Pipeline, store) -> None:
    """Submit, poll and ingest until no batch is prepared or in flight."""
    for _ in range(40):
        pipeline.submit(KIND, quiet)
        finished, _ = pipeline.poll(KIND, 100)
        for record in finished:
            pipeline.ingest(record.batch_id, quiet)
        if not store.list_batches(KIND, [Stage.PREPARED, *PROVIDER_LIVE]):
            return
    raise AssertionError("batches never settled")


# The seed table (DynamoDB): every item as stored, and the layout document's rules


def raw_items(store: DynamoReceiptStore) -> dict[tuple[str, str], dict[str, Any]]:
    """Every item of the table as stored (attribute-value form), by (PK, SK)."""
    items = {}
    for page in store._client.get_paginator("scan").paginate(TableName=store.table_name):
        for item in page["Items"]:
            items[(item["PK"]["S"], item["SK"]["S"])] = item
    return items


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
        word_only = {"GSI2PK", "GSI2SK", "extracted_data"} if word else set()
        extra = set(item) - LINE_ATTRIBUTES - PIPELINE_ITEM_ATTRIBUTES - word_only
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
    elif kind == "VECTOR_CHANGE":  # ours: the change feed, under a key no seed query reads, in no GSI but GSITYPE
        assert pk in ("CHANGES#lines", "CHANGES#words") and set(item) == {"PK", "SK", "TYPE", "item_key"}
        _iso_utc({"S": sk.split("#")[0]})
    elif kind == "EMBEDDING_LEASE":  # ours: a lease the seed has no lock for, outside its GSI1 lock listing
        assert pk.startswith(f"LOCK#{item['collection']['S']}#") and sk == "LOCK" and "GSI1PK" not in item
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
    elif kind == "EMBEDDING_MERCHANT":  # ours: an imported merchant name, under a key no seed query reads
        assert pk.startswith("EMBEDDING_MERCHANT#IMAGE#") and set(item) == {"PK", "SK", "TYPE", "merchant_name"}
    else:
        assert kind == "RECEIPT" or sk.count("#") == 1, kind


def one_line_error(capsys) -> str:
    """What a CLI command printed on stderr, required to be one line and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()
