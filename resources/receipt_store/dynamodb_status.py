"""Embedding status changes: one conditional `UpdateItem` per item, naming the status (and batch) it starts from.

Not transactions: a transaction is cancelled as a whole when any one condition
fails, so claiming many contested items that way means resending the rest
again and again, while a single-item write is atomic and its outcome is exactly
that item's, so two claimers never both win one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from embedding_assets.domain.models import OWNS_ITEMS, Item, Status
from resources.receipt_store.dynamodb_changes import DynamoChanges
from resources.receipt_store.dynamodb_expressions import Expression, dump
from resources.receipt_store.dynamodb_keys import GSI1_PREFIX, ITEM_TYPE, gsi1pk, key_of, table_key
from resources.receipt_store.dynamodb_records import ITEM_PROJECTION, to_batch, to_item
from resources.receipt_store.dynamodb_table import QUERY_PAGE, parallel
from resources.receipt_store.rules import check_kind


class DynamoStatuses(DynamoChanges):
    """Claims, releases and the other status transitions, and the reads by status over GSI1."""

    def _status_update(self, kind: str, key: str, status: Status, e: Expression, condition: str,
                       sets: Sequence[str] = (), removes: Sequence[str] = ()) -> dict[str, Any]:
        """The update moving one item to `status` (GSI1PK with it) if it exists, is of `kind` and meets `condition`."""
        assignments = [
            f"{e.n('embedding_status')} = {e.v(status.value)}",
            f"{e.n('GSI1PK')} = {e.v(gsi1pk(status))}",
            f"{e.n('GSI1SK')} = if_not_exists({e.n('GSI1SK')}, {e.v(GSI1_PREFIX[kind] + key)})",
            *sets,
        ]
        return {
            "Key": table_key(kind, key),
            "UpdateExpression": "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removes) if removes else ""),
            "ConditionExpression": f"attribute_exists(PK) AND {e.n('TYPE')} = {e.v(ITEM_TYPE[kind])} AND {condition}",
            **e.kwargs(),
        }

    def _write_each(self, updates: Sequence[dict[str, Any]]) -> list[tuple[bool, dict[str, Any] | None]]:
        """Conditional updates of distinct items, each on its own, on a few threads; outcomes in input order."""
        return parallel(lambda update: self._conditional("update_item", **update), updates)

    def _transition(
        self, kind: str, keys: Iterable[str], build: Callable[[str, Expression], dict[str, Any]]
    ) -> dict[str, tuple[bool, dict[str, Any] | None]]:
        """Outcome per distinct key of `kind`; ids of another kind or no item id at all are simply not changed."""
        wanted = [key for key in dict.fromkeys(keys) if table_key(kind, key) is not None]
        return dict(zip(wanted, self._write_each([build(key, Expression()) for key in wanted])))

    def claim(self, kind: str, keys: Sequence[str], batch_id: str, texts: Mapping[str, str] | None = None
              ) -> list[str]:
        """NONE -> PENDING for `batch_id`; returns the keys this call won, in input order.

        Noise items are never claimed since they must never be sent. An item
        found already PENDING for this very batch (a retry after an attempt
        that did land) counts as won, or it would be stranded.
        """
        check_kind(kind)

        def build(key: str, e: Expression) -> dict[str, Any]:
            not_noise = f"(attribute_not_exists({e.n('is_noise')}) OR {e.n('is_noise')} = {e.v(False)})"
            as_read = "" if texts is None else f" AND {e.n('text')} = {e.v(texts[key])}"
            return self._status_update(kind, key, Status.PENDING, e,
                                       f"{e.status_is(Status.NONE)} AND {not_noise}{as_read}",
                                       sets=[f"{e.n('embedding_batch_id')} = {e.v(batch_id)}"])

        def won(done: bool, old: dict[str, Any] | None) -> bool:
            return done or (old is not None and old.get("embedding_status") == Status.PENDING.value
                            and old.get("embedding_batch_id") == batch_id)

        return [key for key, outcome in self._transition(kind, keys, build).items() if won(*outcome)]

    def release(
        self, kind: str, keys: Sequence[str], batch_id: str, error: str | None, max_attempts: int,
        count_attempt: bool = True,
    ) -> tuple[int, int]:
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

        def build(status: Status) -> Callable[[str, Expression], dict[str, Any]]:
            def update(key: str, e: Expression) -> dict[str, Any]:
                budget, sets = "attribute_exists(PK)", []
                if count_attempt:
                    attempts = e.n("embedding_attempts")
                    if status is Status.NONE:
                        budget = f"(attribute_not_exists({attempts}) OR {attempts} < {e.v(limit)})"
                    elif limit > 0:
                        budget = f"{attempts} >= {e.v(limit)}"
                    sets = [f"{attempts} = if_not_exists({attempts}, {e.v(0)}) + {e.v(1)}"]
                owner = (f"{e.n('embedding_batch_id')} = {e.v(batch_id)}" if batch_id
                         else f"attribute_not_exists({e.n('embedding_batch_id')})")
                removes = [e.n("embedding_batch_id")]
                if error is None:
                    removes.append(e.n("embedding_error"))
                else:
                    sets.append(f"{e.n('embedding_error')} = {e.v(error)}")
                condition = f"{e.status_is(Status.PENDING)} AND {owner} AND {budget}"
                return self._status_update(kind, key, status, e, condition, sets=sets, removes=removes)
            return update

        released = 0
        remaining: list[str] = list(keys)
        if not count_attempt:
            return sum(done for done, _ in self._transition(kind, keys, build(Status.NONE)).values()), 0
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

        def build(key: str, e: Expression) -> dict[str, Any]:
            owner = f"{e.n('embedding_batch_id')} = {e.v(batch_id)}"
            return self._status_update(kind, key, Status.SUCCESS, e, f"{e.status_is(Status.PENDING)} AND {owner}",
                                       removes=[e.n("embedding_error")])

        return sum(done for done, _ in self._transition(kind, keys, build).values())

    def mark_noise(self, kind: str, reasons: dict[str, str]) -> int:
        """NONE -> NOISE with the reason kept as the item's last error; an item already in a batch finishes first."""
        check_kind(kind)

        def build(key: str, e: Expression) -> dict[str, Any]:
            return self._status_update(kind, key, Status.NOISE, e, e.status_is(Status.NONE),
                                       sets=[f"{e.n('embedding_error')} = {e.v(reasons[key])}"])

        return sum(done for done, _ in self._transition(kind, reasons, build).values())

    def retry_failed(self, kind: str) -> int:
        """FAILED -> NONE with attempts reset: the user has dealt with the cause (quota, a bad key)."""
        check_kind(kind)
        query = self._status_query(kind, Status.FAILED)
        failed = [key_of(r) for r in self._query(**query, ProjectionExpression="PK, SK")]

        def build(key: str, e: Expression) -> dict[str, Any]:
            return self._status_update(kind, key, Status.NONE, e, e.status_is(Status.FAILED),
                                       removes=[e.n("embedding_attempts"), e.n("embedding_batch_id")])

        return sum(done for done, _ in self._transition(kind, failed, build).values())

    def requeue(self, kind: str, status: str, keys: Sequence[str]) -> int:
        """`status` -> NONE with attempts reset, for these keys only; a re-embed sends SUCCESS items again."""
        check_kind(kind)
        wanted = Status(status)
        if wanted == Status.SUCCESS:
            self._record_changes(kind, keys)  # write-ahead: their vectors are about to stand for non-SUCCESS items

        def build(key: str, e: Expression) -> dict[str, Any]:
            return self._status_update(kind, key, Status.NONE, e, e.status_is(wanted),
                                       removes=[e.n(name) for name in ("embedding_attempts", "embedding_batch_id",
                                                                         "embedding_error")])

        return sum(done for done, _ in self._transition(kind, keys, build).values())

    def set_text(self, kind: str, key: str, text: str) -> bool:
        """A corrected text: the item goes back to NONE so it is embedded again; False if no such item."""
        check_kind(kind)
        self._record_changes(kind, [key])  # write-ahead (see dynamodb_changes)

        def build(item_key: str, e: Expression) -> dict[str, Any]:
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
            "ExpressionAttributeValues": dump({":pk": gsi1pk(status), ":prefix": GSI1_PREFIX[kind]}),
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
        for record in self._query(QUERY_PAGE, **self._status_query(kind, Status(status)), **ITEM_PROJECTION):
            yield to_item(record)

    def pending_without_live_batch(self, kind: str) -> list[tuple[str, str | None]]:
        """(key, batch_id) of PENDING items no batch owns any more, for a run to repair.

        Left by a crash between claiming and writing the batch record, a
        record moved past the stages that own items, or the seed's own
        pipeline (PENDING with no batch id at all).
        """
        check_kind(kind)
        pending = [(key_of(r), r.get("embedding_batch_id"))
                   for r in self._query(**self._status_query(kind, Status.PENDING),
                                        ProjectionExpression="PK, SK, embedding_batch_id")]
        batch_ids = sorted({batch_id for _, batch_id in pending if batch_id})
        records = self._batch_get([dump({"PK": f"BATCH#{b}", "SK": "STATUS"}) for b in batch_ids])
        owning = {r.batch_id for r in map(to_batch, records) if r is not None and r.stage in OWNS_ITEMS}
        return [(key, batch_id) for key, batch_id in pending if batch_id not in owning]
