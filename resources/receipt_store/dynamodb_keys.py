"""The seed table's key layout: which PK/SK and index keys a line, word, receipt, batch or lock lives under.

Ids of lines and words are their table keys joined (`IMAGE#<id>#RECEIPT#...#LINE#...[#WORD#...]`), so a key
converts both ways without a read.
"""

from __future__ import annotations

import uuid
from typing import Any

from embedding_assets.domain.models import KINDS, Stage, Status, parse_item_key

ITEM_TYPE = {"lines": "RECEIPT_LINE", "words": "RECEIPT_WORD"}
BATCH_TYPE = {"lines": "LINE_EMBEDDING", "words": "WORD_EMBEDDING"}
KIND_OF_BATCH_TYPE = {v: k for k, v in BATCH_TYPE.items()}
GSI1_PREFIX = {"lines": "LINE#", "words": "WORD#"}
GSI3_SORT = {"lines": "LINE", "words": "WORD"}

# Our stage -> the seed's batch status; the seed's reader knows only these values.
SEED_STATUS = {
    Stage.PREPARED: "PENDING",
    Stage.SUBMITTED: "PENDING",
    Stage.VALIDATING: "VALIDATING",
    Stage.IN_PROGRESS: "IN_PROGRESS",
    Stage.FINALIZING: "FINALIZING",
    Stage.CANCELLING: "CANCELING",
    Stage.COMPLETED: "COMPLETED",
    Stage.DELTA_READY: "COMPLETED",
    Stage.COMPACTED: "COMPLETED",
    Stage.FAILED: "FAILED",
    Stage.EXPIRED: "EXPIRED",
    Stage.CANCELLED: "CANCELLED",
    Stage.REAPED: "FAILED",
}

# The table the seed system uses: key attributes of the table and of its five indexes.
TABLE_KEYS = ("PK", "SK")
INDEXES = {
    "GSI1": ("GSI1PK", "GSI1SK"),
    "GSI2": ("GSI2PK", "GSI2SK"),
    "GSI3": ("GSI3PK", "GSI3SK"),
    "GSI4": ("GSI4PK", "GSI4SK"),
    "GSITYPE": ("TYPE", None),
}


def receipt_sort_key(receipt_id: int) -> str:
    return f"RECEIPT#{receipt_id:05d}"


def item_sort_key(line_id: int, word_id: int | None) -> str:
    sk = f"LINE#{line_id:05d}"
    return sk if word_id is None else f"{sk}#WORD#{word_id:05d}"


def table_key(kind: str, key: str) -> dict[str, Any] | None:
    """The table key of a line or word id, or None if the id is not one of `kind`."""
    try:
        parts = parse_item_key(key)
    except ValueError:
        return None
    if ("word_id" in parts) != (kind == "words"):
        return None
    sk = f"{receipt_sort_key(parts['receipt_id'])}#{item_sort_key(parts['line_id'], parts.get('word_id'))}"
    return {"PK": {"S": f"IMAGE#{parts['image_id']}"}, "SK": {"S": sk}}


def key_of(record: dict[str, Any]) -> str:
    """A line's or word's id is its table key joined: IMAGE#<id> + # + RECEIPT#...#LINE#...[#WORD#...]."""
    return f"{record['PK']}#{record['SK']}"


def gsi1pk(status: Status) -> str:
    return f"EMBEDDING_STATUS#{status.value}"


def lock_key(name: str) -> tuple[dict[str, Any], str]:
    """(table key, collection) of a lock name; the mapping is in the store's docstring (dynamodb.py)."""
    collections = [kind for kind in KINDS if kind in name.split("-")]
    if "#" in name or not collections:
        raise ValueError(f"lock name {name!r} must name a collection ({' or '.join(KINDS)}) and hold no '#'")
    collection = collections[0]
    return {"PK": {"S": f"LOCK#{collection}#{name}"}, "SK": {"S": "LOCK"}}, collection


def check_owner(owner: str) -> None:
    """The seed's lock owner is a UUID string; anything else would not parse there."""
    try:
        canonical = str(uuid.UUID(owner))
    except (TypeError, ValueError):
        canonical = None
    if canonical != owner:
        raise ValueError(f"lock owner {owner!r} must be a UUID string such as {uuid.uuid4()}")

