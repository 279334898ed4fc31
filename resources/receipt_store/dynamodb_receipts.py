"""Receipts, their lines and words, and the merchant: imports in the seed's format, reads by receipt."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from embedding_assets.domain.models import Item, Receipt, Status, receipt_key
from resources.receipt_store.dynamodb_changes import DynamoChanges
from resources.receipt_store.dynamodb_expressions import Expression, dump
from resources.receipt_store.dynamodb_keys import GSI1_PREFIX, GSI3_SORT, ITEM_TYPE, gsi1pk, key_of, receipt_sort_key
from resources.receipt_store.dynamodb_records import (
    GEOMETRY,
    ITEM_PROJECTION,
    content,
    item_record,
    to_item,
    validate_layout,
)
from resources.receipt_store.dynamodb_table import QUERY_PAGE, parallel
from resources.receipt_store.rules import check_kind, validate_receipt

Record = dict[str, Any]
_KIND_OF_TYPE = {item_type: kind for kind, item_type in ITEM_TYPE.items()}
# Receipts written behind one write-ahead group of change records. The feed is read once its records are
# FEED_SETTLE_SECONDS old, so each group's changes must land well within that after its records: a whole
# large import recorded up front would have its records read (item still unchanged) before it got to them.
_RECEIPTS_PER_GROUP = 25
# Attributes of a place item an earlier version of this store wrote; anything more is the seed's.
_OWN_PLACE_ATTRIBUTES = frozenset({"PK", "SK", "TYPE", "merchant_name"})
# The merchant name an import carries is kept under a key of our own, never as a place item: the seed's
# place reader fails on the attributes such an item would lack (SEED_TABLE_LAYOUT: place items are read only).
MERCHANT_TYPE = "EMBEDDING_MERCHANT"


def _merchant_key(image_id: str, receipt_id: int) -> dict[str, str]:
    return {"PK": f"{MERCHANT_TYPE}#IMAGE#{image_id}", "SK": receipt_sort_key(receipt_id)}


class DynamoReceipts(DynamoChanges):
    """Receipts and items as the seed keeps them; an import never rewrites what the seed wrote beside them."""

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
        merchant name goes to an item of our own (`MERCHANT_TYPE`); place
        items are the seed's and never written, except that one an earlier
        version of this store wrote (nothing but the name) is moved to ours.
        """
        receipts = list(receipts)
        latest: dict[str, Receipt] = {}
        for receipt in receipts:
            validate_receipt(receipt)
            validate_layout(receipt)
            latest[receipt.key] = receipt  # a receipt listed twice: the later one wins, as it would in order
        ordered = list(latest.values())
        for start in range(0, len(ordered), _RECEIPTS_PER_GROUP):
            plans = parallel(self._plan_receipt, ordered[start:start + _RECEIPTS_PER_GROUP])
            for kind in ITEM_TYPE:  # write-ahead: the change feed first (see dynamodb_changes)
                self._record_changes(kind, [key for _, _, changed in plans for of_kind, key in changed
                                            if of_kind == kind])
            self._batch_write([request for writes, _, _ in plans for request in writes])
            parallel(lambda update: self._apply_update(*update),
                     [update for _, updates, _ in plans for update in updates])
        return len(receipts)

    def _receipt_records(self, image_id: str, receipt_id: int) -> list[dict[str, Any]]:
        """The receipt row and everything stored under it, read consistently from the table."""
        prefix = receipt_sort_key(receipt_id)
        records = self._query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ExpressionAttributeValues=dump({":pk": f"IMAGE#{image_id}", ":sk": prefix}),
            ConsistentRead=True,
        )
        return [r for r in records if r["SK"] == prefix or r["SK"].startswith(prefix + "#")]

    def _plan_receipt(self, receipt: Receipt) -> tuple[list[Record], list[tuple[Record, Record]],
                                                       list[tuple[str, str]]]:
        """(batch write requests, conditional updates as (existing record, new record), (kind, key) of the
        items whose vectors the import makes stale: deleted, or given new text) for one receipt."""
        existing = {r["SK"]: r for r in self._receipt_records(receipt.image_id, receipt.receipt_id)}
        receipt_sk = receipt_sort_key(receipt.receipt_id)
        pk = f"IMAGE#{receipt.image_id}"
        writes: list[dict[str, Any]] = []
        updates: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if receipt_sk not in existing:
            writes.append({"PutRequest": {"Item": dump({"PK": pk, "SK": receipt_sk, "TYPE": "RECEIPT"})}})
        place = existing.get(f"{receipt_sk}#PLACE")
        if place is not None and set(place) <= _OWN_PLACE_ATTRIBUTES:
            writes.append({"DeleteRequest": {"Key": dump({"PK": pk, "SK": place["SK"]})}})
        merchant = _merchant_key(receipt.image_id, receipt.receipt_id)
        kept = self._get(dump(merchant))
        if receipt.merchant_name and (kept or {}).get("merchant_name") != receipt.merchant_name:
            writes.append({"PutRequest": {"Item": dump({**merchant, "TYPE": MERCHANT_TYPE,
                                                        "merchant_name": receipt.merchant_name})}})
        elif kept is not None and not receipt.merchant_name:
            writes.append({"DeleteRequest": {"Key": dump(merchant)}})
        wanted = set()
        changed: list[tuple[str, str]] = []
        for item in (*receipt.lines, *receipt.words):
            record = item_record(item)
            wanted.add(record["SK"])
            old = existing.get(record["SK"])
            if old is None or old.get("TYPE") != record["TYPE"]:
                writes.append({"PutRequest": {"Item": dump(record)}})
            elif content(old) != content(record):
                updates.append((old, record))
                if old["text"] != record["text"]:
                    changed.append((item.kind, key_of(old)))
        for sk, old in existing.items():
            if old.get("TYPE") in ITEM_TYPE.values() and sk not in wanted:
                writes.append({"DeleteRequest": {"Key": dump({"PK": pk, "SK": sk})}})
                changed.append((_KIND_OF_TYPE[old["TYPE"]], key_of(old)))
        return writes, updates, changed

    def _apply_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Rewrite an item's content; a new text also starts its embedding over (NONE, no batch, no attempts)."""
        e = Expression()
        sets = [f"{e.n(name)} = {e.v(new[name])}" for name in ("text", *GEOMETRY, "is_noise")]
        removes: list[str] = []
        if new["text"] != old["text"]:
            sets += [f"{e.n('embedding_status')} = {e.v(Status.NONE.value)}",
                     f"{e.n('GSI1PK')} = {e.v(gsi1pk(Status.NONE))}",
                     f"{e.n('GSI1SK')} = if_not_exists({e.n('GSI1SK')}, {e.v(new['GSI1SK'])})"]
            removes = [e.n(name) for name in ("embedding_batch_id", "embedding_attempts", "embedding_error")]
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        done, _ = self._conditional(
            "update_item", Key=dump({"PK": new["PK"], "SK": new["SK"]}), UpdateExpression=update,
            ConditionExpression=f"attribute_exists(PK) AND {e.n('text')} = {e.v(old['text'])}", **e.kwargs(),
        )
        if not done:
            raise RuntimeError(f"{new['PK']} {new['SK']} changed while importing; run the import again")

    def delete_receipt(self, image_id: str, receipt_id: int) -> int:
        """Remove a receipt row, its lines and words, and the merchant name this store keeps for it.

        Returns how many lines and words went; their vectors leave the
        snapshot at the next compaction. A placeholder at the receipt key,
        the seed's own place item and any other seed entity under the receipt
        are left alone: their lifecycle is the seed's.
        """
        receipt_sk = receipt_sort_key(receipt_id)
        gone: list[dict[str, Any]] = []
        items: list[tuple[str, str]] = []
        for record in self._receipt_records(image_id, receipt_id):
            item_type = record.get("TYPE")
            if item_type in ITEM_TYPE.values():
                items.append((_KIND_OF_TYPE[record["TYPE"]], key_of(record)))
            elif not ((record["SK"] == receipt_sk and item_type == "RECEIPT")
                      or (item_type == "RECEIPT_PLACE" and set(record) <= _OWN_PLACE_ATTRIBUTES)):
                continue
            gone.append({"DeleteRequest": {"Key": dump({"PK": record["PK"], "SK": record["SK"]})}})
        for kind in ITEM_TYPE:  # write-ahead, as in put_receipts
            self._record_changes(kind, [key for of_kind, key in items if of_kind == kind])
        self._batch_write([*gone, {"DeleteRequest": {"Key": dump(_merchant_key(image_id, receipt_id))}}])
        return len(items)

    def receipt_count(self) -> int:
        """Receipt rows by `TYPE`, so placeholders at receipt keys are not counted."""
        return self._count(IndexName="GSITYPE", KeyConditionExpression="#type = :type",
                           ExpressionAttributeNames={"#type": "TYPE"},
                           ExpressionAttributeValues=dump({":type": "RECEIPT"}))

    def unembedded_receipts(self, kind: str, limit: int, after: str | None = None) -> list[tuple[str, int]]:
        """(image_id, receipt_id) of receipts holding NONE items of `kind`, in receipt-key order after `after`.

        GSI1's sort key is the prefix plus the item id, so its order is receipt
        order; starting just past `after` + '#' skips every item of that receipt
        ('$' is the character after '#').
        """
        check_kind(kind)
        if limit < 1:
            return []
        prefix = GSI1_PREFIX[kind]
        values = {":pk": gsi1pk(Status.NONE)}
        if after:
            condition = "GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi"
            values.update({":lo": f"{prefix}{after}$", ":hi": prefix[:-1] + "$"})
        else:
            condition = "GSI1PK = :pk AND begins_with(GSI1SK, :prefix)"
            values[":prefix"] = prefix
        found: list[tuple[str, int]] = []
        for record in self._query(QUERY_PAGE, IndexName="GSI1", KeyConditionExpression=condition,
                                  ExpressionAttributeValues=dump(values), ProjectionExpression="GSI1SK"):
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
            ExpressionAttributeValues=dump({":pk": receipt_key(image_id, receipt_id), ":sk": GSI3_SORT[kind]}),
            **ITEM_PROJECTION,
        )
        items = [to_item(r) for r in records if r.get("TYPE") == ITEM_TYPE[kind]]
        return sorted(items, key=lambda item: (item.line_id, item.word_id or 0))

    def merchant_name(self, image_id: str, receipt_id: int) -> str | None:
        """From the seed's receipt place item (read only), else from the one an import gave."""
        place = self._get(dump({"PK": f"IMAGE#{image_id}", "SK": f"{receipt_sort_key(receipt_id)}#PLACE"}))
        if place is not None and place.get("TYPE") == "RECEIPT_PLACE" and place.get("merchant_name"):
            return str(place["merchant_name"])
        ours = self._get(dump(_merchant_key(image_id, receipt_id)))
        return str(ours["merchant_name"]) if ours and ours.get("merchant_name") else None
