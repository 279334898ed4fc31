"""Calls on one DynamoDB table: retries, paging, batch calls with their unprocessed rest, a few threads.

botocore's standard mode retries throttling and server errors; on top of that,
`TransactionConflictException` and throttling that outlasts botocore are
retried here with capped exponential backoff and jitter. A failed condition is
never retried: it means the item is not in the state we asked for.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from resources.receipt_store.dynamodb_expressions import load
from resources.receipt_store.dynamodb_keys import INDEXES, TABLE_KEYS

T = TypeVar("T")
R = TypeVar("R")

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
        if error_code(exc) == "ResourceInUseException":
            return False
        raise
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return True


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


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


def parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`function` over `items` on up to WORKERS threads, results in input order."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items))) as pool:
        return list(pool.map(function, items))


class DynamoTable:
    """One table and its client; the store's parts share these calls."""

    def __init__(self, table_name: str, endpoint_url: str | None = None, client: Any = None) -> None:
        if not table_name:
            raise ValueError("a DynamoDB table name is required (DYNAMODB_TABLE_NAME)")
        self.table_name = table_name
        self._client = client or dynamodb_client(endpoint_url)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self._client, operation)
        attempt = 0
        while True:
            try:
                return method(**kwargs)
            except ClientError as exc:
                attempt += 1
                if error_code(exc) not in _RETRYABLE or attempt == RETRY_ATTEMPTS:
                    raise
            _backoff(attempt - 1)

    def _conditional(self, operation: str, **kwargs: Any) -> tuple[bool, dict[str, Any] | None]:
        """(True, None) when the write happened, (False, the item as it was) when its condition failed."""
        try:
            self._call(operation, TableName=self.table_name, ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs)
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            return False, load(old) if old else None
        return True, None

    def _query(self, page_size: int | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item a query matches, a page at a time."""
        kwargs = {"TableName": self.table_name, **kwargs}
        if page_size:
            kwargs["Limit"] = page_size
        while True:
            page = self._call("query", **kwargs)
            yield from (load(raw) for raw in page.get("Items", ()))
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
        return load(raw) if raw else None

    def _batch_get(self, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Consistent reads of many items, BATCH_GET_LIMIT per call, unprocessed keys retried."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            pending: dict[str, Any] = {self.table_name: {"Keys": list(keys[start:start + BATCH_GET_LIMIT]),
                                                         "ConsistentRead": True}}
            for _ in _unprocessed_rounds("batch_get_item"):
                page = self._call("batch_get_item", RequestItems=pending)
                found.extend(load(raw) for raw in page.get("Responses", {}).get(self.table_name, ()))
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

        parallel(write, [list(requests[i:i + BATCH_WRITE_LIMIT]) for i in range(0, len(requests), BATCH_WRITE_LIMIT)])
