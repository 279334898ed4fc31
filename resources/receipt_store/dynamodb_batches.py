"""Batch records as the seed's batch summary items, found through GSI1 and re-read consistently."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from embedding_assets.domain.models import BatchRecord, Stage
from resources.receipt_store.dynamodb_expressions import Expression, dump, load
from resources.receipt_store.dynamodb_keys import BATCH_TYPE, SEED_STATUS
from resources.receipt_store.dynamodb_records import BATCH_FIELDS, batch_attributes, current_time, iso, to_batch
from resources.receipt_store.dynamodb_table import DynamoTable, error_code
from resources.receipt_store.rules import BatchUpdates, check_batch_changes, check_kind


class DynamoBatches(BatchUpdates, DynamoTable):
    """Create, change and list batch records; summaries the seed wrote itself are skipped."""

    def put_batch(self, record: BatchRecord) -> None:
        """Create a batch summary; an existing id is an error (ids are unique per run).

        Empty created_at / updated_at are filled with now so records always
        sort by age; the seed's `submitted_at` (which it requires) shows
        created_at until the batch is submitted.
        """
        if not record.batch_id or "#" in record.batch_id:
            raise ValueError(f"batch id {record.batch_id!r} must be non-empty and free of '#'")
        now = iso(current_time())
        values = {name: getattr(record, name) for name in BATCH_FIELDS if name != "batch_id"}
        values["created_at"] = values["created_at"] or now
        values["updated_at"] = values["updated_at"] or now
        sets, _ = batch_attributes(record.batch_id, values)
        item = {"PK": f"BATCH#{record.batch_id}", "SK": "STATUS", "TYPE": "BATCH_SUMMARY",
                "submitted_at": values["created_at"], **sets}
        done, _ = self._conditional("put_item", Item=dump(item), ConditionExpression="attribute_not_exists(PK)")
        if not done:
            raise ValueError(f"batch {record.batch_id!r} already exists")

    def _update_batch(self, batch_id: str, stages: list[str] | None, changes: dict[str, Any]) -> BatchRecord | None:
        check_batch_changes(changes)
        sets, removes = batch_attributes(batch_id, {**changes, "updated_at": iso(current_time())})
        e = Expression()
        update = "SET " + ", ".join(f"{e.n(name)} = {e.v(value)}" for name, value in sets.items())
        if removes:
            update += " REMOVE " + ", ".join(e.n(name) for name in removes)
        condition = f"attribute_exists({e.n('pipeline_stage')})"
        if stages is not None:
            condition += f" AND {e.n('pipeline_stage')} IN ({', '.join(e.v(stage) for stage in stages)})"
        try:
            response = self._call(
                "update_item", TableName=self.table_name, Key=dump({"PK": f"BATCH#{batch_id}", "SK": "STATUS"}),
                UpdateExpression=update, ConditionExpression=condition, ReturnValues="ALL_NEW", **e.kwargs(),
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        updated = to_batch(load(response["Attributes"]))
        assert updated is not None  # the condition above required pipeline_stage
        return updated

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        record = self._get(dump({"PK": f"BATCH#{batch_id}", "SK": "STATUS"}))
        return to_batch(record) if record else None

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
                ExpressionAttributeValues=dump({":pk": f"STATUS#{status}",
                                                 ":prefix": f"BATCH_TYPE#{BATCH_TYPE[kind]}#BATCH_ID#"}),
                ProjectionExpression="PK",
            ):
                ids.add(record["PK"])
        records = self._batch_get([dump({"PK": pk, "SK": "STATUS"}) for pk in sorted(ids)])
        found = [r for r in map(to_batch, records) if r is not None and r.kind == kind and r.stage in wanted]
        return sorted(found, key=lambda r: (r.created_at, r.batch_id))
