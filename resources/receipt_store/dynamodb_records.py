"""Lines, words and batch records to the seed's item attributes and back.

What this store writes the seed can still read: items carry the seed's geometry and index keys, batch
summaries the seed's status beside our exact record in `pipeline_*` attributes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_type_hints

from embedding_assets.domain.models import BatchRecord, Box, Item, Receipt, Stage, Status, receipt_key
from resources.receipt_store.dynamodb_keys import (
    BATCH_TYPE,
    GSI1_PREFIX,
    GSI3_SORT,
    ITEM_TYPE,
    KIND_OF_BATCH_TYPE,
    SEED_STATUS,
    gsi1pk,
    item_sort_key,
    receipt_sort_key,
)
from resources.receipt_store.rules import check_kind

# Bytes of receipt_refs kept in a batch summary; the rest of the 400 KB item is left for everything else.
RECEIPT_REFS_BYTES = 300_000

BATCH_FIELDS = tuple(f.name for f in fields(BatchRecord))
_BATCH_TYPES = get_type_hints(BatchRecord)
# BatchRecord fields the seed's summary already holds under its own name ("" for None).
_SEED_BATCH_ATTRIBUTE = {"provider_batch_id": "openai_batch_id", "output_file_id": "result_file_id"}
# What reading an item into an Item needs; the corners, angles and index keys stay on the server.
_ITEM_ATTRIBUTES = ("PK", "SK", "TYPE", "text", "bounding_box", "confidence", "embedding_status", "is_noise",
                    "embedding_attempts", "embedding_batch_id", "embedding_error")
ITEM_PROJECTION: dict[str, Any] = {
    "ProjectionExpression": ", ".join(f"#{name}" for name in _ITEM_ATTRIBUTES),
    "ExpressionAttributeNames": {f"#{name}": name for name in _ITEM_ATTRIBUTES},
}


def _number(value: float) -> Decimal:
    """DynamoDB numbers are decimal strings; str() keeps the float's shortest exact form."""
    return Decimal(str(value))


def current_time() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width ISO UTC with +00:00, the seed's form, so that timestamps compare as strings."""
    return moment.isoformat(timespec="microseconds")


def _confidence(value: float) -> Decimal:
    """The seed keeps two decimals; 0.01 is the smallest value its `> 0` rule allows."""
    return max(_number(round(value, 2)), Decimal("0.01"))


GEOMETRY = ("bounding_box", "top_left", "top_right", "bottom_left", "bottom_right", "angle_degrees", "angle_radians",
             "confidence")


def _geometry(box: Box, confidence: float) -> dict[str, Any]:
    """Box, corners (y = 0 at the bottom, so the top is y + height), no rotation, rounded confidence."""
    left, right = _number(box.x), _number(box.x + box.width)
    bottom, top = _number(box.y), _number(box.y + box.height)
    return {
        "bounding_box": {"x": left, "y": bottom, "width": _number(box.width), "height": _number(box.height)},
        "top_left": {"x": left, "y": top},
        "top_right": {"x": right, "y": top},
        "bottom_left": {"x": left, "y": bottom},
        "bottom_right": {"x": right, "y": bottom},
        "angle_degrees": Decimal(0),
        "angle_radians": Decimal(0),
        "confidence": _confidence(confidence),
    }


def item_record(item: Item) -> dict[str, Any]:
    """A line or word exactly as the seed writes it, plus the pipeline's attributes it carries."""
    kind = item.kind
    rkey = receipt_key(item.image_id, item.receipt_id)
    status = Status(item.status)
    record: dict[str, Any] = {
        "PK": f"IMAGE#{item.image_id}",
        "SK": f"{receipt_sort_key(item.receipt_id)}#{item_sort_key(item.line_id, item.word_id)}",
        "TYPE": ITEM_TYPE[kind],
        "GSI1PK": gsi1pk(status),
        "GSI1SK": GSI1_PREFIX[kind] + item.key,
        "GSI3PK": rkey,
        "GSI3SK": GSI3_SORT[kind],
        "GSI4PK": rkey,
        "GSI4SK": f"2_LINE#{item.line_id:05d}" if kind == "lines" else f"3_WORD#{item.line_id:05d}#{item.word_id:05d}",
        "text": item.text,
        **_geometry(item.box, item.confidence),
        "embedding_status": status.value,
        "is_noise": bool(item.is_noise),
    }
    if kind == "words":
        record["GSI2PK"] = "RECEIPT"
        record["GSI2SK"] = item.key
    if item.attempts:
        record["embedding_attempts"] = item.attempts
    if item.batch_id:
        record["embedding_batch_id"] = item.batch_id
    if item.last_error is not None:
        record["embedding_error"] = item.last_error
    return record


def to_item(record: dict[str, Any]) -> Item:
    """An Item from a line or word; the ids come from the keys, as in the seed's reader."""
    parts = record["SK"].split("#")
    box = record["bounding_box"]
    return Item(
        image_id=record["PK"].removeprefix("IMAGE#"),
        receipt_id=int(parts[1]),
        line_id=int(parts[3]),
        word_id=int(parts[5]) if len(parts) >= 6 else None,
        text=record["text"],
        box=Box(float(box["x"]), float(box["y"]), float(box["width"]), float(box["height"])),
        confidence=float(record["confidence"]),
        status=Status(record.get("embedding_status") or Status.NONE.value),
        is_noise=bool(record.get("is_noise")),
        attempts=int(record.get("embedding_attempts") or 0),
        batch_id=record.get("embedding_batch_id"),
        last_error=record.get("embedding_error"),
    )


def content(record: dict[str, Any]) -> tuple[Any, ...]:
    """What an import can change on an item, compared in stored form."""
    box = record["bounding_box"]
    return (record["text"], tuple(Decimal(box[k]) for k in ("x", "y", "width", "height")),
            Decimal(record["confidence"]), bool(record.get("is_noise")))


def validate_layout(receipt: Receipt) -> None:
    """What the seed's keys and attributes can hold; checked for every receipt before anything is written."""
    if not receipt.image_id or "#" in receipt.image_id:
        raise ValueError(f"image_id {receipt.image_id!r} must be non-empty and free of '#'")
    if not 1 <= receipt.receipt_id <= 99_999:
        raise ValueError(f"{receipt.key}: receipt_id must be 1..99999 (five digits in keys)")
    for item in (*receipt.lines, *receipt.words):
        if not all(0 <= i <= 99_999 for i in (item.line_id, item.word_id or 0)):
            raise ValueError(f"{item.key}: line and word ids must be 0..99999 (five digits in keys)")
        if not 0 < item.confidence <= 1:
            raise ValueError(f"{item.key}: confidence {item.confidence} is not in (0, 1]")
        if not all(math.isfinite(v) for v in (item.box.x, item.box.y, item.box.width, item.box.height)):
            raise ValueError(f"{item.key}: bounding box {item.box} is not finite")


def _receipt_refs(refs: Sequence[tuple[str, int]]) -> tuple[list[dict[str, Any]], int]:
    """receipt_refs in the seed's shape, cut to RECEIPT_REFS_BYTES; returns (refs kept, refs left out)."""
    kept: list[dict[str, Any]] = []
    size = 0
    for image_id, receipt_id in refs:
        size += len(image_id.encode()) + 40  # two attribute names, a number and the map and list overhead
        if size > RECEIPT_REFS_BYTES:
            break
        kept.append({"image_id": image_id, "receipt_id": int(receipt_id)})
    return kept, len(refs) - len(kept)


def batch_attributes(batch_id: str, changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Attributes to set and to remove for some BatchRecord fields, with the seed's view of those fields."""
    sets: dict[str, Any] = {}
    removes: list[str] = []
    for name, value in changes.items():
        if name == "stage":
            stage = Stage(value)
            sets["pipeline_stage"] = stage.value
            sets["status"] = SEED_STATUS[stage]
            sets["GSI1PK"] = f"STATUS#{SEED_STATUS[stage]}"
        elif name == "kind":
            check_kind(value)
            sets["batch_type"] = BATCH_TYPE[value]
            sets["GSI1SK"] = f"BATCH_TYPE#{BATCH_TYPE[value]}#BATCH_ID#{batch_id}"
        elif name in _SEED_BATCH_ATTRIBUTE:
            sets[_SEED_BATCH_ATTRIBUTE[name]] = value or ""
        elif name == "receipt_refs":
            sets["receipt_refs"], omitted = _receipt_refs(value)
            if omitted:
                sets["pipeline_receipt_refs_omitted"] = omitted
            else:
                removes.append("pipeline_receipt_refs_omitted")
        elif value is None:
            removes.append(f"pipeline_{name}")
        else:
            if name == "submitted_at":
                sets["submitted_at"] = value
            sets[f"pipeline_{name}"] = _number(value) if _BATCH_TYPES[name] is float else value
    return sets, removes


def to_batch(record: dict[str, Any]) -> BatchRecord | None:
    """Our record from a batch summary item; None for the seed's own summaries."""
    if "pipeline_stage" not in record:
        return None
    values: dict[str, Any] = {
        "batch_id": record["PK"].removeprefix("BATCH#"),
        "kind": KIND_OF_BATCH_TYPE[record["batch_type"]],
        "stage": Stage(record["pipeline_stage"]),
        "receipt_refs": [(ref["image_id"], int(ref["receipt_id"])) for ref in record.get("receipt_refs") or ()],
    }
    for name in BATCH_FIELDS:
        if name in values:
            continue
        raw = record.get(_SEED_BATCH_ATTRIBUTE.get(name, f"pipeline_{name}"))
        kind_of = _BATCH_TYPES[name]
        if raw is None or raw == "":
            values[name] = 0 if kind_of is int else 0.0 if kind_of is float else "" if kind_of is str else None
        else:
            values[name] = int(raw) if kind_of is int else float(raw) if kind_of is float else raw
    return BatchRecord(**values)

