"""The DynamoDB store's change feed, and reads by key.

DynamoDB has no triggers, so this store writes a change record just before
each change that can make a vector stale (write-ahead): an item deleted
(`delete_receipt`, or dropped by a re-import), given new text (`set_text`, a
re-import), or sent back from SUCCESS (`requeue`). A record whose change
never happened (a crash in between) costs the compactor one look at the item
and nothing more, since it keeps any vector whose item is still SUCCESS.

Records live beside the seed's items under `CHANGES#<kind>` /
`<ISO time>#<random>#<n>`, a key no reader of the seed queries. Writers on
other hosts stamp with their own clocks and a record is visible only once its
write lands, so the feed is read only up to `FEED_SETTLE_SECONDS` ago; a later
compaction reads what is newer. Clocks must agree to well within that. Writers
that bypass this store (the console, another tool) write no record: the
daily reconcile finds what they did.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from embedding_assets.domain.models import Item
from resources.receipt_store.dynamodb_expressions import dump
from resources.receipt_store.dynamodb_keys import ITEM_TYPE, key_of, table_key
from resources.receipt_store.dynamodb_records import to_item
from resources.receipt_store.dynamodb_table import DynamoTable
from resources.receipt_store.rules import check_kind

FEED_SETTLE_SECONDS = 120.0


def _feed_pk(kind: str) -> str:
    return f"CHANGES#{kind}"


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


class DynamoChanges(DynamoTable):
    def _record_changes(self, kind: str, keys: Sequence[str]) -> None:
        """Write-ahead records for changes about to be made to these items."""
        if not keys:
            return
        prefix = f"{_stamp(datetime.now(UTC))}#{uuid.uuid4().hex[:12]}"
        self._batch_write([{"PutRequest": {"Item": dump({
            "PK": _feed_pk(kind), "SK": f"{prefix}#{n:06d}", "TYPE": "VECTOR_CHANGE", "item_key": key,
        })}} for n, key in enumerate(dict.fromkeys(keys))])

    def _horizon(self) -> str:
        return _stamp(datetime.now(UTC) - timedelta(seconds=FEED_SETTLE_SECONDS)) + "~"

    def vector_changes(self, kind: str, after: str) -> tuple[list[str], str]:
        check_kind(kind)
        horizon = self._horizon()
        if after >= horizon:  # a cursor from a host whose clock runs ahead: nothing settled past it yet
            return [], after
        records = list(self._query(
            KeyConditionExpression="PK = :pk AND SK BETWEEN :after AND :horizon",
            ExpressionAttributeValues=dump({":pk": _feed_pk(kind), ":after": after or " ", ":horizon": horizon}),
            ConsistentRead=True,
        ))
        records = [r for r in records if r["SK"] > after]
        keys = list(dict.fromkeys(r["item_key"] for r in records))
        return keys, records[-1]["SK"] if records else after

    def changes_head(self, kind: str) -> str:
        check_kind(kind)
        page = self._call(
            "query", TableName=self.table_name, KeyConditionExpression="PK = :pk AND SK <= :horizon",
            ExpressionAttributeValues=dump({":pk": _feed_pk(kind), ":horizon": self._horizon()}),
            ScanIndexForward=False, Limit=1, ConsistentRead=True,
        )
        items = page.get("Items") or []
        return items[0]["SK"]["S"] if items else ""

    def trim_changes(self, kind: str, cursors: Sequence[str]) -> int:
        check_kind(kind)
        if not cursors or not min(cursors):
            return 0
        records = list(self._query(
            KeyConditionExpression="PK = :pk AND SK <= :upto", ProjectionExpression="PK, SK",
            ExpressionAttributeValues=dump({":pk": _feed_pk(kind), ":upto": min(cursors)}),
        ))[:-1]  # the newest change read is kept, so the head stays where it was
        self._batch_write([{"DeleteRequest": {"Key": dump({"PK": r["PK"], "SK": r["SK"]})}} for r in records])
        return len(records)

    def items_by_key(self, kind: str, keys: Sequence[str]) -> dict[str, Item]:
        check_kind(kind)
        table_keys = [k for k in (table_key(kind, key) for key in dict.fromkeys(keys)) if k is not None]
        records = self._batch_get(table_keys)
        return {key_of(r): to_item(r) for r in records if r.get("TYPE") == ITEM_TYPE[kind]}
