"""Embedding status changes in the SQLite store: each UPDATE names the status (and batch) it starts from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from embedding_assets.domain.models import OWNS_ITEMS, Item, Status
from resources.receipt_store.rules import check_kind
from resources.receipt_store.sqlite_database import SqliteDatabase
from resources.receipt_store.sqlite_schema import ITEM_COLUMNS, now_iso, row_item

# Rows per round trip when streaming; a page is read in its own short
# statement so no read transaction stays open while the caller works.
PAGE_SIZE = 500


class SqliteStatuses(SqliteDatabase):
    """Claims, releases and the other status transitions, and the reads by status."""

    def claim(self, kind: str, keys: Sequence[str], batch_id: str, texts: Mapping[str, str] | None = None
              ) -> list[str]:
        """NONE -> PENDING for `batch_id`; returns the keys this call won, in input order.

        One UPDATE per key so the rowcount says which keys were won; noise
        items are never claimed since they must never be sent.
        """
        check_kind(kind)
        now = now_iso()
        won: list[str] = []
        with self._write() as conn:
            for key in keys:
                as_read = "" if texts is None else " AND text = ?"
                cursor = conn.execute(
                    "UPDATE items SET status = 'PENDING', batch_id = ?, updated_at = ?"
                    " WHERE key = ? AND kind = ? AND status = 'NONE' AND is_noise = 0" + as_read,
                    (batch_id, now, key, kind, *(() if texts is None else (texts[key],))),
                )
                if cursor.rowcount:
                    won.append(key)
        return won

    def release(self, kind: str, keys: Sequence[str], batch_id: str, error: str | None,
                max_attempts: int, count_attempt: bool = True) -> tuple[int, int]:
        """PENDING(batch_id) -> NONE with attempts + 1, or FAILED at the limit; returns (released, failed).

        Only the owning batch may release an item: a batch that lost its items
        to a text change or a repair must not touch their new state.
        """
        check_kind(kind)
        now = now_iso()
        released = failed = 0
        with self._write() as conn:
            if not count_attempt:
                for key in keys:
                    released += conn.execute(
                        "UPDATE items SET status = 'NONE', batch_id = NULL, last_error = ?, updated_at = ?"
                        " WHERE key = ? AND kind = ? AND status = 'PENDING' AND batch_id = ?",
                        (error, now, key, kind, batch_id)).rowcount
                return released, 0
            for key in keys:
                params = (error, now, key, kind, batch_id, max_attempts)
                if conn.execute(
                    "UPDATE items SET status = 'FAILED', attempts = attempts + 1, batch_id = NULL,"
                    " last_error = ?, updated_at = ?"
                    " WHERE key = ? AND kind = ? AND status = 'PENDING' AND batch_id = ? AND attempts + 1 >= ?",
                    params,
                ).rowcount:
                    failed += 1
                elif conn.execute(
                    "UPDATE items SET status = 'NONE', attempts = attempts + 1, batch_id = NULL,"
                    " last_error = ?, updated_at = ?"
                    " WHERE key = ? AND kind = ? AND status = 'PENDING' AND batch_id = ? AND attempts + 1 < ?",
                    params,
                ).rowcount:
                    released += 1
        return released, failed

    def mark_success(self, kind: str, keys: Sequence[str], batch_id: str) -> int:
        """PENDING(batch_id) -> SUCCESS; returns how many changed.

        batch_id stays on the item so a vector can be traced to the batch that embedded it.
        """
        check_kind(kind)
        now = now_iso()
        with self._write() as conn:
            cursor = conn.executemany(
                "UPDATE items SET status = 'SUCCESS', last_error = NULL, updated_at = ?"
                " WHERE key = ? AND kind = ? AND status = 'PENDING' AND batch_id = ?",
                [(now, key, kind, batch_id) for key in keys],
            )
            return max(cursor.rowcount, 0)

    def mark_noise(self, kind: str, reasons: dict[str, str]) -> int:
        """NONE -> NOISE with the reason kept as the item's last error.

        Only from NONE: an item already in a batch finishes its round first.
        """
        check_kind(kind)
        now = now_iso()
        with self._write() as conn:
            cursor = conn.executemany(
                "UPDATE items SET status = 'NOISE', last_error = ?, updated_at = ?"
                " WHERE key = ? AND kind = ? AND status = 'NONE'",
                [(reason, now, key, kind) for key, reason in reasons.items()],
            )
            return max(cursor.rowcount, 0)

    def retry_failed(self, kind: str) -> int:
        """FAILED -> NONE with attempts reset: the user has dealt with the cause (quota, a bad key)."""
        check_kind(kind)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE items SET status = 'NONE', attempts = 0, batch_id = NULL, updated_at = ?"
                " WHERE kind = ? AND status = 'FAILED'",
                (now_iso(), kind),
            )
            return max(cursor.rowcount, 0)

    def requeue(self, kind: str, status: str, keys: Sequence[str]) -> int:
        """`status` -> NONE with attempts reset, for these keys only; a re-embed sends SUCCESS items again."""
        check_kind(kind)
        now = now_iso()
        with self._write() as conn:
            cursor = conn.executemany(
                "UPDATE items SET status = 'NONE', attempts = 0, batch_id = NULL, last_error = NULL, updated_at = ?"
                " WHERE key = ? AND kind = ? AND status = ?",
                [(now, key, kind, Status(status).value) for key in keys],
            )
            return max(cursor.rowcount, 0)

    def set_text(self, kind: str, key: str, text: str) -> bool:
        """A corrected text: the item goes back to NONE so it is embedded again; False if no such item."""
        check_kind(kind)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE items SET text = ?, status = 'NONE', attempts = 0, batch_id = NULL, last_error = NULL,"
                " updated_at = ? WHERE key = ? AND kind = ?",
                (text, now_iso(), key, kind),
            )
            return cursor.rowcount > 0

    def status_counts(self, kind: str) -> dict[str, int]:
        check_kind(kind)
        rows = self._read("SELECT status, COUNT(*) AS n FROM items WHERE kind = ? GROUP BY status", (kind,))
        return {row["status"]: row["n"] for row in rows}

    def items_with_status(self, kind: str, status: str) -> Iterator[Item]:
        """Items of one status, in key order, a page at a time.

        Keyset paging instead of one long cursor: the caller may change the
        very items it is iterating over (and other processes may too), and a
        read transaction held open for the whole walk would stop WAL checkpoints.
        """
        check_kind(kind)
        status_value = Status(status).value
        after = ""
        while True:
            rows = self._read(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE kind = ? AND status = ? AND key > ? ORDER BY key LIMIT ?",
                (kind, status_value, after, PAGE_SIZE),
            )
            yield from (row_item(row) for row in rows)
            if len(rows) < PAGE_SIZE:
                return
            after = rows[-1]["key"]

    def pending_without_live_batch(self, kind: str) -> list[tuple[str, str | None]]:
        """(key, batch_id) of PENDING items no batch owns any more, for a run to repair.

        A crash between claiming and writing the batch record, or a record
        moved past the stages that own items, leaves such orphans behind.
        """
        check_kind(kind)
        owning = sorted(stage.value for stage in OWNS_ITEMS)
        placeholders = ", ".join("?" * len(owning))
        rows = self._read(
            "SELECT i.key, i.batch_id FROM items AS i LEFT JOIN batches AS b ON b.batch_id = i.batch_id"
            f" WHERE i.kind = ? AND i.status = 'PENDING' AND (b.batch_id IS NULL OR b.stage NOT IN ({placeholders}))"
            " ORDER BY i.key",
            (kind, *owning),
        )
        return [(row["key"], row["batch_id"]) for row in rows]
