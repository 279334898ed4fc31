"""The production `ReceiptStore`: the seed system's DynamoDB table, used as it is.

Everything here follows /work/shared/SEED_TABLE_LAYOUT.md: what the seed
writes is read as is, and what this store writes the seed can still read.

Reads. Unembedded items come from `GSI1` (`EMBEDDING_STATUS#NONE`, sort key
`LINE#...`/`WORD#...`, which orders them by image, receipt and line), a
receipt's items from `GSI3`, the merchant from the receipt place item, counts
from `Select=COUNT` queries. Every query follows `LastEvaluatedKey`, so tables
of any size are read a page at a time. Indexes are eventually consistent, so
they only ever propose work: every status change is a conditional write that
decides on the item itself, and batch records found through `GSI1` are
re-read from the table with consistent reads before anyone acts on them.

Items GSI1 does not hold. The seed writes `GSI1PK`/`GSI1SK` on every line and
word; an item without them is invisible to discovery and to the counts (an
index only holds items carrying its keys). Such an item is still read with its
receipt through `GSI3` and a missing `embedding_status` means NONE, so it is
claimed along with its receipt's other lines; every status write also sets
`GSI1SK` if it is missing, so an item the pipeline touched is in the index.

Status writes. One conditional `UpdateItem` per item, on a few threads, not
transactions: a transaction is cancelled as a whole when any one condition
fails, so claiming many contested items that way means resending the rest
again and again, while a single-item write is atomic in DynamoDB and its
outcome is exactly that item's, so two claimers never both win one. (A
transaction would only be needed to claim a receipt's items all or nothing,
and a receipt's requests are built from whatever part of it was won.) An
update changes `embedding_status` and `GSI1PK` together, plus the pipeline's
own attributes (`embedding_batch_id`, `embedding_attempts`,
`embedding_error`), and never rewrites the item, so a concurrent edit of its
text or geometry is never overwritten.

Batch records are the seed's batch summary items: the seed's status (mapped
from our stage, see `SEED_STATUS`), `batch_type`, `openai_batch_id`,
`result_file_id`, `submitted_at` and `receipt_refs` as it expects them, and
our exact record beside them in `pipeline_*` attributes, which its reader
ignores. Item lists live in the object store (the manifest); `receipt_refs`
is cut to fit the 400 KB item limit (`pipeline_receipt_refs_omitted` counts
what was left out). Batch summaries the seed wrote itself have no
`pipeline_stage`; they are not ours and `get_batch`/`list_batches` skip them.

Locks are the seed's compaction lock items. A lock name maps to
`LOCK#<collection>#<name>` / `LOCK`, the collection being the kind the name
mentions (`chroma-lines-compaction` is exactly the seed's lines compaction
lock, `lines-create` becomes `LOCK#lines#lines-create`); a name mentioning no
kind is rejected, since the seed's lock item must name its collection.
Owners are UUID strings, expiry times ISO UTC `+00:00` strings compared as
strings, as the seed does.

Retries. botocore's standard mode retries throttling and server errors; on top
of that, `TransactionConflictException` (an item taken by someone else's
transaction) and throttling that outlasts botocore are retried here with
capped exponential backoff and jitter. A failed condition is never retried:
it means the item is not in the state we asked for.
"""

from __future__ import annotations

import functools
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, get_type_hints

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from embedding_assets.domain.models import (
    KINDS,
    OWNS_ITEMS,
    BatchRecord,
    Box,
    Item,
    Receipt,
    Stage,
    Status,
    parse_item_key,
    receipt_key,
)
from resources.receipt_store.rules import check_batch_changes, check_kind, validate_receipt

T = TypeVar("T")
R = TypeVar("R")

ITEM_TYPE = {"lines": "RECEIPT_LINE", "words": "RECEIPT_WORD"}
BATCH_TYPE = {"lines": "LINE_EMBEDDING", "words": "WORD_EMBEDDING"}
_KIND_OF_BATCH_TYPE = {v: k for k, v in BATCH_TYPE.items()}
_GSI1_PREFIX = {"lines": "LINE#", "words": "WORD#"}
_GSI3_SORT = {"lines": "LINE", "words": "WORD"}

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

# Per-call limits of DynamoDB.
BATCH_WRITE_LIMIT = 25
BATCH_GET_LIMIT = 100
# Items per query page while looking for receipts: small enough to stop early, large enough to be few calls.
QUERY_PAGE = 1000
# Threads for independent calls: single-item writes, batch writes, an import's receipts.
WORKERS = 8
# Our own retries on top of botocore's, for what botocore does not retry or gave up on.
RETRY_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 5.0
_RETRYABLE = frozenset({
    "TransactionConflictException",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "LimitExceededException",
})
# Bytes of receipt_refs kept in a batch summary; the rest of the 400 KB item is left for everything else.
RECEIPT_REFS_BYTES = 300_000

_BATCH_FIELDS = tuple(f.name for f in fields(BatchRecord))
_BATCH_TYPES = get_type_hints(BatchRecord)
# BatchRecord fields the seed's summary already holds under its own name ("" for None).
_SEED_BATCH_ATTRIBUTE = {"provider_batch_id": "openai_batch_id", "output_file_id": "result_file_id"}
# Attributes a place item carries when this store wrote it; anything more is the seed's.
_OWN_PLACE_ATTRIBUTES = frozenset({"PK", "SK", "TYPE", "merchant_name"})

# What reading an item into an Item needs; the corners, angles and index keys stay on the server.
_ITEM_ATTRIBUTES = ("PK", "SK", "TYPE", "text", "bounding_box", "confidence", "embedding_status", "is_noise",
                    "embedding_attempts", "embedding_batch_id", "embedding_error")
_ITEM_PROJECTION = {
    "ProjectionExpression": ", ".join(f"#{name}" for name in _ITEM_ATTRIBUTES),
    "ExpressionAttributeNames": {f"#{name}": name for name in _ITEM_ATTRIBUTES},
}

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


@functools.cache
def dynamodb_client(endpoint_url: str | None = None) -> Any:
    """One client per endpoint and process, with retries for throttling.

    Clients are thread-safe and cost ~0.2 s to build, while a store is opened
    for every asset and sensor tick; the client gets a session of its own
    because sessions are not thread-safe.
    """
    config = Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=2 * WORKERS)
    return boto3.session.Session().client("dynamodb", endpoint_url=endpoint_url, config=config)


def create_table(table_name: str, endpoint_url: str | None = None, client: Any = None) -> bool:
    """Create a table in the seed's layout (keys, the five indexes, streams); False if it already exists."""
    client = client or dynamodb_client(endpoint_url)
    attributes = sorted({name for pair in (TABLE_KEYS, *INDEXES.values()) for name in pair if name})
    indexes = [
        {
            "IndexName": index,
            "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"}]
            + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else []),
            "Projection": {"ProjectionType": "ALL"},
        }
        for index, (hash_key, range_key) in INDEXES.items()
    ]
    try:
        client.create_table(
            TableName=table_name,
            KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in attributes],
            GlobalSecondaryIndexes=indexes,
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
    except ClientError as exc:
        if _code(exc) == "ResourceInUseException":
            return False
        raise
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return True


# Values and keys


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _dump(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in item.items()}


def _load(raw: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in raw.items()}


def _number(value: float) -> Decimal:
    """DynamoDB numbers are decimal strings; str() keeps the float's shortest exact form."""
    return Decimal(str(value))


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    """Fixed-width ISO UTC with +00:00, the seed's form, so that timestamps compare as strings."""
    return moment.isoformat(timespec="microseconds")



def _receipt_sk(receipt_id: int) -> str:
    return f"RECEIPT#{receipt_id:05d}"


def _item_sk(line_id: int, word_id: int | None) -> str:
    sk = f"LINE#{line_id:05d}"
    return sk if word_id is None else f"{sk}#WORD#{word_id:05d}"


def _table_key(kind: str, key: str) -> dict[str, Any] | None:
    """The table key of a line or word id, or None if the id is not one of `kind`."""
    try:
        parts = parse_item_key(key)
    except ValueError:
        return None
    if ("word_id" in parts) != (kind == "words"):
        return None
    sk = f"{_receipt_sk(parts['receipt_id'])}#{_item_sk(parts['line_id'], parts.get('word_id'))}"
    return {"PK": {"S": f"IMAGE#{parts['image_id']}"}, "SK": {"S": sk}}


def _key_of(record: dict[str, Any]) -> str:
    """A line's or word's id is its table key joined: IMAGE#<id> + # + RECEIPT#...#LINE#...[#WORD#...]."""
    return f"{record['PK']}#{record['SK']}"


def _gsi1pk(status: Status) -> str:
    return f"EMBEDDING_STATUS#{status.value}"


def _confidence(value: float) -> Decimal:
    """The seed keeps two decimals; 0.01 is the smallest value its `> 0` rule allows."""
    return max(_number(round(value, 2)), Decimal("0.01"))


_GEOMETRY = ("bounding_box", "top_left", "top_right", "bottom_left", "bottom_right", "angle_degrees", "angle_radians",
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


def _item_record(item: Item) -> dict[str, Any]:
    """A line or word exactly as the seed writes it, plus the pipeline's attributes it carries."""
    kind = item.kind
    rkey = receipt_key(item.image_id, item.receipt_id)
    status = Status(item.status)
    record: dict[str, Any] = {
        "PK": f"IMAGE#{item.image_id}",
        "SK": f"{_receipt_sk(item.receipt_id)}#{_item_sk(item.line_id, item.word_id)}",
        "TYPE": ITEM_TYPE[kind],
        "GSI1PK": _gsi1pk(status),
        "GSI1SK": _GSI1_PREFIX[kind] + item.key,
        "GSI3PK": rkey,
        "GSI3SK": _GSI3_SORT[kind],
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


def _to_item(record: dict[str, Any]) -> Item:
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


def _content(record: dict[str, Any]) -> tuple[Any, ...]:
    """What an import can change on an item, compared in stored form."""
    box = record["bounding_box"]
    return (record["text"], tuple(Decimal(box[k]) for k in ("x", "y", "width", "height")),
            Decimal(record["confidence"]), bool(record.get("is_noise")))


def _validate_layout(receipt: Receipt) -> None:
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


class _Expression:
    """Placeholders for every name and value, so reserved words (TYPE, status, owner, text) need no care."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def n(self, attribute: str) -> str:
        placeholder = f"#{attribute}"
        self.names[placeholder] = attribute
        return placeholder

    def v(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _serializer.serialize(value)
        return placeholder

    def status_is(self, status: Status) -> str:
        """Missing embedding_status means NONE."""
        test = f"{self.n('embedding_status')} = {self.v(status.value)}"
        if status is Status.NONE:
            return f"(attribute_not_exists({self.n('embedding_status')}) OR {test})"
        return test

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


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


def _batch_attributes(batch_id: str, changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
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


def _to_batch(record: dict[str, Any]) -> BatchRecord | None:
    """Our record from a batch summary item; None for the seed's own summaries."""
    if "pipeline_stage" not in record:
        return None
    values: dict[str, Any] = {
        "batch_id": record["PK"].removeprefix("BATCH#"),
        "kind": _KIND_OF_BATCH_TYPE[record["batch_type"]],
        "stage": Stage(record["pipeline_stage"]),
        "receipt_refs": [(ref["image_id"], int(ref["receipt_id"])) for ref in record.get("receipt_refs") or ()],
    }
    for name in _BATCH_FIELDS:
        if name in values:
            continue
        raw = record.get(_SEED_BATCH_ATTRIBUTE.get(name, f"pipeline_{name}"))
        kind_of = _BATCH_TYPES[name]
        if raw is None or raw == "":
            values[name] = 0 if kind_of is int else 0.0 if kind_of is float else "" if kind_of is str else None
        else:
            values[name] = int(raw) if kind_of is int else float(raw) if kind_of is float else raw
    return BatchRecord(**values)


def _lock_key(name: str) -> tuple[dict[str, Any], str]:
    """(table key, collection) of a lock name; see the module docstring for the mapping."""
    collections = [kind for kind in KINDS if kind in name.split("-")]
    if "#" in name or not collections:
        raise ValueError(f"lock name {name!r} must name a collection ({' or '.join(KINDS)}) and hold no '#'")
    collection = collections[0]
    return {"PK": {"S": f"LOCK#{collection}#{name}"}, "SK": {"S": "LOCK"}}, collection


def _check_owner(owner: str) -> None:
    """The seed's lock owner is a UUID string; anything else would not parse there."""
    try:
        canonical = str(uuid.UUID(owner))
    except (TypeError, ValueError):
        canonical = None
    if canonical != owner:
        raise ValueError(f"lock owner {owner!r} must be a UUID string such as {uuid.uuid4()}")


class DynamoReceiptStore:
    """`ReceiptStore` on the seed's DynamoDB table (see the module docstring for the rules it keeps)."""

    def __init__(self, table_name: str, endpoint_url: str | None = None, client: Any = None) -> None:
        if not table_name:
            raise ValueError("a DynamoDB table name is required (DYNAMODB_TABLE_NAME)")
        self.table_name = table_name
        self._client = client or dynamodb_client(endpoint_url)

    # Calls

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self._client, operation)
        attempt = 0
        while True:
            try:
                return method(**kwargs)
            except ClientError as exc:
                attempt += 1
                if _code(exc) not in _RETRYABLE or attempt == RETRY_ATTEMPTS:
                    raise
            _backoff(attempt - 1)

    def _conditional(self, operation: str, **kwargs: Any) -> tuple[bool, dict[str, Any] | None]:
        """(True, None) when the write happened, (False, the item as it was) when its condition failed."""
        try:
            self._call(operation, TableName=self.table_name, ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            return False, _load(old) if old else None
        return True, None

    def _query(self, page_size: int | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item a query matches, a page at a time."""
        kwargs = {"TableName": self.table_name, **kwargs}
        if page_size:
            kwargs["Limit"] = page_size
        while True:
            page = self._call("query", **kwargs)
            yield from (_load(raw) for raw in page.get("Items", ()))
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _count(self, **kwargs: Any) -> int:
        kwargs = {"TableName": self.table_name, "Select": "COUNT", **kwargs}
        total = 0
        while True:
            page = self._call("query", **kwargs)
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        raw = self._call("get_item", TableName=self.table_name, Key=key, ConsistentRead=True).get("Item")
        return _load(raw) if raw else None

    def _batch_get(self, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Consistent reads of many items, BATCH_GET_LIMIT per call, unprocessed keys retried."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            pending: dict[str, Any] = {self.table_name: {"Keys": list(keys[start:start + BATCH_GET_LIMIT]),
                                                         "ConsistentRead": True}}
            for _ in _unprocessed_rounds("batch_get_item"):
                page = self._call("batch_get_item", RequestItems=pending)
                found.extend(_load(raw) for raw in page.get("Responses", {}).get(self.table_name, ()))
                pending = page.get("UnprocessedKeys") or {}
                if not pending:
                    break
        return found

    def _batch_write(self, requests: Sequence[dict[str, Any]]) -> None:
        """Puts and deletes, BATCH_WRITE_LIMIT per call on a few threads, unprocessed ones retried."""
        def write(chunk: list[dict[str, Any]]) -> None:
            pending: dict[str, Any] = {self.table_name: chunk}
            for _ in _unprocessed_rounds("batch_write_item"):
                pending = self._call("batch_write_item", RequestItems=pending).get("UnprocessedItems") or {}
                if not pending:
                    break

        _parallel(write, [list(requests[i:i + BATCH_WRITE_LIMIT]) for i in range(0, len(requests), BATCH_WRITE_LIMIT)])

    # Receipts and items

    def put_receipts(self, receipts: Iterable[Receipt]) -> int:
        """Insert or replace receipts; a changed text sends the item back to NONE.

        All or nothing as far as DynamoDB allows: every receipt is validated
        before anything is written, then the writes go out in batches. A
        failure mid-way leaves some receipts written and is repaired by running
        the same import again, since every write here is idempotent.

        New items are written in the seed's format with the status they carry.
        An existing item is updated in place, so attributes this store does not
        know (the seed's `extracted_data`, say) survive; items the receipt no
        longer holds are deleted. A receipt row is written only where the key
        is free (an existing receipt or placeholder row is the seed's). The
        place item is written only when there is none or this store wrote it
        (it holds nothing but the merchant name); the seed's own place items
        are never touched.
        """
        receipts = list(receipts)
        latest: dict[str, Receipt] = {}
        for receipt in receipts:
            validate_receipt(receipt)
            _validate_layout(receipt)
            latest[receipt.key] = receipt  # a receipt listed twice: the later one wins, as it would in order
        plans = _parallel(self._plan_receipt, list(latest.values()))
        self._batch_write([request for writes, _ in plans for request in writes])
        _parallel(lambda update: self._apply_update(*update), [update for _, updates in plans for update in updates])
        return len(receipts)

    def _receipt_records(self, image_id: str, receipt_id: int) -> list[dict[str, Any]]:
        """The receipt row and everything stored under it, read consistently from the table."""
        prefix = _receipt_sk(receipt_id)
        records = self._query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ExpressionAttributeValues=_dump({":pk": f"IMAGE#{image_id}", ":sk": prefix}),
            ConsistentRead=True,
        )
        return [r for r in records if r["SK"] == prefix or r["SK"].startswith(prefix + "#")]

    def _plan_receipt(self, receipt: Receipt) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], dict[str, Any]]]]:
        """(batch write requests, conditional updates as (existing record, new record)) for one receipt."""
        existing = {r["SK"]: r for r in self._receipt_records(receipt.image_id, receipt.receipt_id)}
        receipt_sk = _receipt_sk(receipt.receipt_id)
        pk = f"IMAGE#{receipt.image_id}"
        writes: list[dict[str, Any]] = []
        updates: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if receipt_sk not in existing:
            writes.append({"PutRequest": {"Item": _dump({"PK": pk, "SK": receipt_sk, "TYPE": "RECEIPT"})}})
        place = existing.get(f"{receipt_sk}#PLACE")
        ours = place is None or set(place) <= _OWN_PLACE_ATTRIBUTES
        if ours and receipt.merchant_name and (place or {}).get("merchant_name") != receipt.merchant_name:
            item = {"PK": pk, "SK": f"{receipt_sk}#PLACE", "TYPE": "RECEIPT_PLACE", "merchant_name": receipt.merchant_name}
            writes.append({"PutRequest": {"Item": _dump(item)}})
        elif ours and place is not None and not receipt.merchant_name:
            writes.append({"DeleteRequest": {"Key": _dump({"PK": pk, "SK": place["SK"]})}})
        wanted = set()
        for item in (*receipt.lines, *receipt.words):
            record = _item_record(item)
            wanted.add(record["SK"])
            old = existing.get(record["SK"])
            if old is None or old.get("TYPE") != record["TYPE"]:
                writes.append({"PutRequest": {"Item": _dump(record)}})
            elif _content(old) != _content(record):
                updates.append((old, record))
        for sk, old in existing.items():
            if old.get("TYPE") in ITEM_TYPE.values() and sk not in wanted:
                writes.append({"DeleteRequest": {"Key": _dump({"PK": pk, "SK": sk})}})
        return writes, updates

    def _apply_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Rewrite an item's content; a new text also starts its embedding over (NONE, no batch, no attempts)."""
        e = _Expression()
        sets = [f"{e.n(name)} = {e.v(new[name])}" for name in ("text", *_GEOMETRY, "is_noise")]
        removes: list[str] = []
        if new["text"] != old["text"]:
            sets += [f"{e.n('embedding_status')} = {e.v(Status.NONE.value)}",
                     f"{e.n('GSI1PK')} = {e.v(_gsi1pk(Status.NONE))}",
                     f"{e.n('GSI1SK')} = if_not_exists({e.n('GSI1SK')}, {e.v(new['GSI1SK'])})"]
            removes = [e.n(name) for name in ("embedding_batch_id", "embedding_attempts", "embedding_error")]
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        done, _ = self._conditional(
            "update_item", Key=_dump({"PK": new["PK"], "SK": new["SK"]}), UpdateExpression=update,
            ConditionExpression=f"attribute_exists(PK) AND {e.n('text')} = {e.v(old['text'])}", **e.kwargs(),
        )
        if not done:
            raise RuntimeError(f"{new['PK']} {new['SK']} changed while importing; run the import again")

    def delete_receipt(self, image_id: str, receipt_id: int) -> int:
        """Remove a receipt row, its lines and words, and a place item this store wrote.

        Returns how many lines and words went; their vectors leave the
        snapshot at the next compaction. A placeholder at the receipt key,
        the seed's own place item and any other seed entity under the receipt
        are left alone: their lifecycle is the seed's.
        """
        receipt_sk = _receipt_sk(receipt_id)
        gone: list[dict[str, Any]] = []
        items = 0
        for record in self._receipt_records(image_id, receipt_id):
            item_type = record.get("TYPE")
            if item_type in ITEM_TYPE.values():
                items += 1
            elif not ((record["SK"] == receipt_sk and item_type == "RECEIPT")
                      or (item_type == "RECEIPT_PLACE" and set(record) <= _OWN_PLACE_ATTRIBUTES)):
                continue
            gone.append({"DeleteRequest": {"Key": _dump({"PK": record["PK"], "SK": record["SK"]})}})
        self._batch_write(gone)
        return items

    def receipt_count(self) -> int:
        """Receipt rows by `TYPE`, so placeholders at receipt keys are not counted."""
        return self._count(IndexName="GSITYPE", KeyConditionExpression="#type = :type",
                           ExpressionAttributeNames={"#type": "TYPE"},
                           ExpressionAttributeValues=_dump({":type": "RECEIPT"}))

    def unembedded_receipts(self, kind: str, limit: int, after: str | None = None) -> list[tuple[str, int]]:
        """(image_id, receipt_id) of receipts holding NONE items of `kind`, in receipt-key order after `after`.

        GSI1's sort key is the prefix plus the item id, so its order is receipt
        order; starting just past `after` + '#' skips every item of that receipt
        ('$' is the character after '#').
        """
        check_kind(kind)
        if limit < 1:
            return []
        prefix = _GSI1_PREFIX[kind]
        values = {":pk": _gsi1pk(Status.NONE)}
        if after:
            condition = "GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi"
            values.update({":lo": f"{prefix}{after}$", ":hi": prefix[:-1] + "$"})
        else:
            condition = "GSI1PK = :pk AND begins_with(GSI1SK, :prefix)"
            values[":prefix"] = prefix
        found: list[tuple[str, int]] = []
        for record in self._query(QUERY_PAGE, IndexName="GSI1", KeyConditionExpression=condition,
                                  ExpressionAttributeValues=_dump(values), ProjectionExpression="GSI1SK"):
            parts = record["GSI1SK"].split("#")  # LINE, IMAGE, id, RECEIPT, rid, ...
            receipt = (parts[2], int(parts[4]))
            if not found or found[-1] != receipt:
                found.append(receipt)
                if len(found) == limit:
                    break
        return found

    def receipt_items(self, kind: str, image_id: str, receipt_id: int) -> list[Item]:
        """Every line (or word) of one receipt, whatever its status, from GSI3."""
        check_kind(kind)
        records = self._query(
            IndexName="GSI3", KeyConditionExpression="GSI3PK = :pk AND GSI3SK = :sk",
            ExpressionAttributeValues=_dump({":pk": receipt_key(image_id, receipt_id), ":sk": _GSI3_SORT[kind]}),
            **_ITEM_PROJECTION,
        )
        items = [_to_item(r) for r in records if r.get("TYPE") == ITEM_TYPE[kind]]
        return sorted(items, key=lambda item: (item.line_id, item.word_id or 0))

    def merchant_name(self, image_id: str, receipt_id: int) -> str | None:
        """From the receipt place item, read only."""
        place = self._get(_dump({"PK": f"IMAGE#{image_id}", "SK": f"{_receipt_sk(receipt_id)}#PLACE"}))
        if place is None or place.get("TYPE") != "RECEIPT_PLACE":
            return None
        return place.get("merchant_name") or None

    # Status transitions: each write names the status (and batch) it starts from.

    def _status_update(self, kind: str, key: str, status: Status, e: _Expression, condition: str,
                       sets: Sequence[str] = (), removes: Sequence[str] = ()) -> dict[str, Any]:
        """The update moving one item to `status` (GSI1PK with it) if it exists, is of `kind` and meets `condition`."""
        assignments = [
            f"{e.n('embedding_status')} = {e.v(status.value)}",
            f"{e.n('GSI1PK')} = {e.v(_gsi1pk(status))}",
            f"{e.n('GSI1SK')} = if_not_exists({e.n('GSI1SK')}, {e.v(_GSI1_PREFIX[kind] + key)})",
            *sets,
        ]
        return {
            "Key": _table_key(kind, key),
            "UpdateExpression": "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removes) if removes else ""),
            "ConditionExpression": f"attribute_exists(PK) AND {e.n('TYPE')} = {e.v(ITEM_TYPE[kind])} AND {condition}",
            **e.kwargs(),
        }

    def _write_each(self, updates: Sequence[dict[str, Any]]) -> list[tuple[bool, dict[str, Any] | None]]:
        """Conditional updates of distinct items, each on its own, on a few threads; outcomes in input order."""
        return _parallel(lambda update: self._conditional("update_item", **update), updates)

    def _transition(self, kind: str, keys: Iterable[str],
                    build: Callable[[str, _Expression], dict[str, Any]]) -> dict[str, tuple[bool, dict[str, Any] | None]]:
        """Outcome per distinct key of `kind`; ids of another kind or no item id at all are simply not changed."""
        wanted = [key for key in dict.fromkeys(keys) if _table_key(kind, key) is not None]
        return dict(zip(wanted, self._write_each([build(key, _Expression()) for key in wanted])))

    def claim(self, kind: str, keys: Sequence[str], batch_id: str) -> list[str]:
        """NONE -> PENDING for `batch_id`; returns the keys this call won, in input order.

        Noise items are never claimed since they must never be sent. An item
        found already PENDING for this very batch (a retry after an attempt
        that did land) counts as won, or it would be stranded.
        """
        check_kind(kind)

        def build(key: str, e: _Expression) -> dict[str, Any]:
            not_noise = f"(attribute_not_exists({e.n('is_noise')}) OR {e.n('is_noise')} = {e.v(False)})"
            return self._status_update(kind, key, Status.PENDING, e, f"{e.status_is(Status.NONE)} AND {not_noise}",
                                       sets=[f"{e.n('embedding_batch_id')} = {e.v(batch_id)}"])

        def won(done: bool, old: dict[str, Any] | None) -> bool:
            return done or (old is not None and old.get("embedding_status") == Status.PENDING.value
                            and old.get("embedding_batch_id") == batch_id)

        return [key for key, outcome in self._transition(kind, keys, build).items() if won(*outcome)]

    def release(self, kind: str, keys: Sequence[str], batch_id: str, error: str | None, max_attempts: int) -> tuple[int, int]:
        """PENDING(batch_id) -> NONE with attempts + 1, or FAILED at the limit; returns (released, failed).

        Only the owning batch may release an item. An empty `batch_id` stands
        for items PENDING with no batch at all (the seed's own pipeline leaves
        them so), which only the orphan repair releases. A write cannot pick
        its target status from the item, so NONE (the common case) is tried
        first, and FAILED, under its own attempts condition, for the items
        still PENDING after that.
        """
        check_kind(kind)
        limit = max_attempts - 1  # attempts already made at which this failure is the last one allowed

        def build(status: Status) -> Callable[[str, _Expression], dict[str, Any]]:
            def update(key: str, e: _Expression) -> dict[str, Any]:
                attempts = e.n("embedding_attempts")
                if status is Status.NONE:
                    budget = f"(attribute_not_exists({attempts}) OR {attempts} < {e.v(limit)})"
                else:
                    budget = f"{attempts} >= {e.v(limit)}" if limit > 0 else "attribute_exists(PK)"
                owner = (f"{e.n('embedding_batch_id')} = {e.v(batch_id)}" if batch_id
                         else f"attribute_not_exists({e.n('embedding_batch_id')})")
                sets = [f"{attempts} = if_not_exists({attempts}, {e.v(0)}) + {e.v(1)}"]
                removes = [e.n("embedding_batch_id")]
                if error is None:
                    removes.append(e.n("embedding_error"))
                else:
                    sets.append(f"{e.n('embedding_error')} = {e.v(error)}")
                return self._status_update(kind, key, status, e, f"{e.status_is(Status.PENDING)} AND {owner} AND {budget}",
                                           sets=sets, removes=removes)
            return update

        released = 0
        remaining: list[str] = list(keys)
        if limit > 0:
            outcomes = self._transition(kind, keys, build(Status.NONE))
            released = sum(done for done, _ in outcomes.values())
            remaining = [key for key, (done, old) in outcomes.items()
                         if not done and old is not None and old.get("embedding_status") == Status.PENDING.value]
        failed = sum(done for done, _ in self._transition(kind, remaining, build(Status.FAILED)).values())
        return released, failed

    def mark_success(self, kind: str, keys: Sequence[str], batch_id: str) -> int:
        """PENDING(batch_id) -> SUCCESS; returns how many changed.

        embedding_batch_id stays on the item so a vector can be traced to the batch that embedded it.
        """
        check_kind(kind)

        def build(key: str, e: _Expression) -> dict[str, Any]:
            owner = f"{e.n('embedding_batch_id')} = {e.v(batch_id)}"
            return self._status_update(kind, key, Status.SUCCESS, e, f"{e.status_is(Status.PENDING)} AND {owner}",
                                       removes=[e.n("embedding_error")])

        return sum(done for done, _ in self._transition(kind, keys, build).values())

    def mark_noise(self, kind: str, reasons: dict[str, str]) -> int:
        """NONE -> NOISE with the reason kept as the item's last error; an item already in a batch finishes first."""
        check_kind(kind)

        def build(key: str, e: _Expression) -> dict[str, Any]:
            return self._status_update(kind, key, Status.NOISE, e, e.status_is(Status.NONE),
                                       sets=[f"{e.n('embedding_error')} = {e.v(reasons[key])}"])

        return sum(done for done, _ in self._transition(kind, reasons, build).values())

    def retry_failed(self, kind: str) -> int:
        """FAILED -> NONE with attempts reset: the user has dealt with the cause (quota, a bad key)."""
        check_kind(kind)
        failed = [_key_of(r) for r in self._query(**self._status_query(kind, Status.FAILED), ProjectionExpression="PK, SK")]

        def build(key: str, e: _Expression) -> dict[str, Any]:
            return self._status_update(kind, key, Status.NONE, e, e.status_is(Status.FAILED),
                                       removes=[e.n("embedding_attempts"), e.n("embedding_batch_id")])

        return sum(done for done, _ in self._transition(kind, failed, build).values())

    def requeue(self, kind: str, status: str, keys: Sequence[str]) -> int:
        """`status` -> NONE with attempts reset, for these keys only; a re-embed sends SUCCESS items again."""
        check_kind(kind)
        wanted = Status(status)

        def build(key: str, e: _Expression) -> dict[str, Any]:
            return self._status_update(kind, key, Status.NONE, e, e.status_is(wanted),
                                       removes=[e.n(name) for name in ("embedding_attempts", "embedding_batch_id",
                                                                         "embedding_error")])

        return sum(done for done, _ in self._transition(kind, keys, build).values())

    def set_text(self, kind: str, key: str, text: str) -> bool:
        """A corrected text: the item goes back to NONE so it is embedded again; False if no such item."""
        check_kind(kind)

        def build(item_key: str, e: _Expression) -> dict[str, Any]:
            return self._status_update(
                kind, item_key, Status.NONE, e, "attribute_exists(PK)", sets=[f"{e.n('text')} = {e.v(text)}"],
                removes=[e.n(name) for name in ("embedding_attempts", "embedding_batch_id", "embedding_error")],
            )

        return any(done for done, _ in self._transition(kind, [key], build).values())

    @staticmethod
    def _status_query(kind: str, status: Status) -> dict[str, Any]:
        """The seed's own query for items of one status: GSI1, by status, sort key prefix LINE# or WORD#."""
        return {
            "IndexName": "GSI1",
            "KeyConditionExpression": "GSI1PK = :pk AND begins_with(GSI1SK, :prefix)",
            "ExpressionAttributeValues": _dump({":pk": _gsi1pk(status), ":prefix": _GSI1_PREFIX[kind]}),
        }

    def status_counts(self, kind: str) -> dict[str, int]:
        """One COUNT query per status over GSI1 (reads, but does not return, every item of the kind)."""
        check_kind(kind)
        counts = {}
        for status in Status:
            count = self._count(**self._status_query(kind, status))
            if count:
                counts[status.value] = count
        return counts

    def items_with_status(self, kind: str, status: str) -> Iterator[Item]:
        """Items of one status in key order, a page at a time.

        A page continues after the last key seen, not from a cursor into a
        result set, so the caller may change the items it iterates over.
        """
        check_kind(kind)
        for record in self._query(QUERY_PAGE, **self._status_query(kind, Status(status)), **_ITEM_PROJECTION):
            yield _to_item(record)

    def pending_without_live_batch(self, kind: str) -> list[tuple[str, str | None]]:
        """(key, batch_id) of PENDING items no batch owns any more, for a run to repair.

        Left by a crash between claiming and writing the batch record, a
        record moved past the stages that own items, or the seed's own
        pipeline (PENDING with no batch id at all).
        """
        check_kind(kind)
        pending = [(_key_of(r), r.get("embedding_batch_id"))
                   for r in self._query(**self._status_query(kind, Status.PENDING),
                                        ProjectionExpression="PK, SK, embedding_batch_id")]
        batch_ids = sorted({batch_id for _, batch_id in pending if batch_id})
        records = self._batch_get([_dump({"PK": f"BATCH#{b}", "SK": "STATUS"}) for b in batch_ids])
        owning = {r.batch_id for r in map(_to_batch, records) if r is not None and r.stage in OWNS_ITEMS}
        return [(key, batch_id) for key, batch_id in pending if batch_id not in owning]

    # Batch records

    def put_batch(self, record: BatchRecord) -> None:
        """Create a batch summary; an existing id is an error (ids are unique per run).

        Empty created_at / updated_at are filled with now so records always
        sort by age; the seed's `submitted_at` (which it requires) shows
        created_at until the batch is submitted.
        """
        if not record.batch_id or "#" in record.batch_id:
            raise ValueError(f"batch id {record.batch_id!r} must be non-empty and free of '#'")
        now = _iso(_now())
        values = {name: getattr(record, name) for name in _BATCH_FIELDS if name != "batch_id"}
        values["created_at"] = values["created_at"] or now
        values["updated_at"] = values["updated_at"] or now
        sets, _ = _batch_attributes(record.batch_id, values)
        item = {"PK": f"BATCH#{record.batch_id}", "SK": "STATUS", "TYPE": "BATCH_SUMMARY",
                "submitted_at": values["created_at"], **sets}
        done, _ = self._conditional("put_item", Item=_dump(item), ConditionExpression="attribute_not_exists(PK)")
        if not done:
            raise ValueError(f"batch {record.batch_id!r} already exists")

    def update_batch(self, batch_id: str, **changes: Any) -> BatchRecord:
        """Change some fields of a record and return it as stored.

        batch_id and updated_at are not accepted: the id is the record's
        identity and updated_at is always set to now here.
        """
        check_batch_changes(changes)
        sets, removes = _batch_attributes(batch_id, {**changes, "updated_at": _iso(_now())})
        e = _Expression()
        update = "SET " + ", ".join(f"{e.n(name)} = {e.v(value)}" for name, value in sets.items())
        if removes:
            update += " REMOVE " + ", ".join(e.n(name) for name in removes)
        try:
            response = self._call(
                "update_item", TableName=self.table_name, Key=_dump({"PK": f"BATCH#{batch_id}", "SK": "STATUS"}),
                UpdateExpression=update, ConditionExpression=f"attribute_exists({e.n('pipeline_stage')})",
                ReturnValues="ALL_NEW", **e.kwargs(),
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise KeyError(batch_id) from None
            raise
        return _to_batch(_load(response["Attributes"]))

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        record = self._get(_dump({"PK": f"BATCH#{batch_id}", "SK": "STATUS"}))
        return _to_batch(record) if record else None

    def list_batches(self, kind: str, stages: Iterable[Stage] | None = None) -> list[BatchRecord]:
        """Records of `kind` (all stages when None), oldest first.

        GSI1 finds candidates by the seed's status (the seed's own query);
        their current state is then read from the table, so a lagging index
        never hands out a record in a stage it has already left.
        """
        check_kind(kind)
        wanted = set(Stage) if stages is None else {Stage(stage) for stage in stages}
        ids: set[str] = set()
        for status in sorted({SEED_STATUS[stage] for stage in wanted}):
            for record in self._query(
                IndexName="GSI1", KeyConditionExpression="GSI1PK = :pk AND begins_with(GSI1SK, :prefix)",
                ExpressionAttributeValues=_dump({":pk": f"STATUS#{status}",
                                                 ":prefix": f"BATCH_TYPE#{BATCH_TYPE[kind]}#BATCH_ID#"}),
                ProjectionExpression="PK",
            ):
                ids.add(record["PK"])
        records = self._batch_get([_dump({"PK": pk, "SK": "STATUS"}) for pk in sorted(ids)])
        found = [r for r in map(_to_batch, records) if r is not None and r.kind == kind and r.stage in wanted]
        return sorted(found, key=lambda r: (r.created_at, r.batch_id))

    # Leases: the seed's lock items. A lease is expired once `expires` is not after now.

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take a free or expired lease, or renew one `owner` already holds, with one conditional put."""
        key, collection = _lock_key(name)
        _check_owner(owner)
        now = _now()
        expires = _iso(now + timedelta(seconds=ttl_seconds))
        item = {"PK": key["PK"]["S"], "SK": "LOCK", "TYPE": "COMPACTION_LOCK", "GSI1PK": f"LOCK#{collection}",
                "GSI1SK": f"EXPIRES#{expires}", "owner": owner, "expires": expires, "heartbeat": _iso(now),
                "collection": collection}
        e = _Expression()
        condition = (f"attribute_not_exists(PK) OR {e.n('expires')} < {e.v(_iso(now))}"
                     f" OR {e.n('owner')} = {e.v(owner)}")
        return self._conditional("put_item", Item=_dump(item), ConditionExpression=condition, **e.kwargs())[0]

    def heartbeat_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend the lease only while `owner` still holds it (the seed's heartbeat lacks this check).

        Checks the owner only, so an owner may revive its own lease shortly
        after it expired: anyone who had taken it over in between would have
        replaced the owner, so two holders never coexist.
        """
        key, _ = _lock_key(name)
        _check_owner(owner)
        now = _now()
        expires = _iso(now + timedelta(seconds=ttl_seconds))
        e = _Expression()
        update = (f"SET {e.n('expires')} = {e.v(expires)}, {e.n('heartbeat')} = {e.v(_iso(now))},"
                  f" {e.n('GSI1SK')} = {e.v(f'EXPIRES#{expires}')}")
        return self._conditional("update_item", Key=key, UpdateExpression=update,
                                 ConditionExpression=f"{e.n('owner')} = {e.v(owner)}", **e.kwargs())[0]

    def release_lock(self, name: str, owner: str) -> bool:
        key, _ = _lock_key(name)
        e = _Expression()
        return self._conditional("delete_item", Key=key, ConditionExpression=f"{e.n('owner')} = {e.v(owner)}",
                                 **e.kwargs())[0]

    def lock_owner(self, name: str) -> str | None:
        """The owner of an unexpired lease, else None."""
        key, _ = _lock_key(name)
        lock = self._get(key)
        if lock is None or lock.get("expires", "") <= _iso(_now()):
            return None
        return lock.get("owner")


def _unprocessed_rounds(operation: str) -> Iterator[int]:
    """Rounds of a batch call that DynamoDB may answer only in part, with backoff between them.

    A batch call under throttling succeeds with the rest returned as
    unprocessed; each round sends that rest again, and a call still not
    through after RETRY_ATTEMPTS rounds fails (every batch write here is an
    idempotent put or delete, so running the step again is safe).
    """
    for attempt in range(RETRY_ATTEMPTS):
        if attempt:
            _backoff(attempt - 1)
        yield attempt
    raise RuntimeError(f"{operation}: DynamoDB left items unprocessed after {RETRY_ATTEMPTS} rounds (throttled)")


def _backoff(attempt: int) -> None:
    """Full jitter, so that many writers backing off at once do not come back in step."""
    time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempt)))


def _parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`function` over `items` on up to WORKERS threads, results in input order."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        return list(pool.map(function, items))
