"""Receipts, their lines and words, and the merchant in the SQLite store."""

from __future__ import annotations

from collections.abc import Iterable

from embedding_assets.domain.models import Item, Receipt
from resources.receipt_store.rules import check_kind, validate_receipt
from resources.receipt_store.sqlite_database import SqliteDatabase
from resources.receipt_store.sqlite_schema import ITEM_COLUMNS, UPSERT_ITEM, item_row, now_iso, row_item


class SqliteReceipts(SqliteDatabase):
    """Imports replace a receipt whole; reads go by receipt or by the next receipts to batch."""

    def put_receipts(self, receipts: Iterable[Receipt]) -> int:
        """Insert or replace receipts, all or nothing; a changed text sends the item back to NONE.

        A new item is stored with the status fields it carries, so a receipt
        copied from another store keeps its state. A re-imported receipt
        replaces the old one: items it no longer holds are deleted.
        """
        written = 0
        now = now_iso()
        with self._write() as conn:
            for receipt in receipts:
                validate_receipt(receipt)
                conn.execute(
                    "INSERT INTO receipts (image_id, receipt_id, merchant_name) VALUES (?, ?, ?)"
                    " ON CONFLICT (image_id, receipt_id) DO UPDATE SET merchant_name = excluded.merchant_name",
                    (receipt.image_id, receipt.receipt_id, receipt.merchant_name),
                )
                rows = [item_row(item, "lines", now) for item in receipt.lines]
                rows += [item_row(item, "words", now) for item in receipt.words]
                conn.executemany(UPSERT_ITEM, rows)
                existing = {
                    row["key"]
                    for row in conn.execute(
                        "SELECT key FROM items WHERE image_id = ? AND receipt_id = ?",
                        (receipt.image_id, receipt.receipt_id),
                    )
                }
                gone = existing - {row["key"] for row in rows}
                conn.executemany("DELETE FROM items WHERE key = ?", [(key,) for key in gone])
                written += 1
        return written

    def delete_receipt(self, image_id: str, receipt_id: int) -> int:
        """Remove a receipt with its lines and words; returns how many lines and words went.

        The vectors stay in the snapshot until the next compaction notices
        their items are gone.
        """
        with self._write() as conn:
            (items,) = conn.execute(
                "SELECT COUNT(*) FROM items WHERE image_id = ? AND receipt_id = ?", (image_id, receipt_id)
            ).fetchone()
            conn.execute("DELETE FROM receipts WHERE image_id = ? AND receipt_id = ?", (image_id, receipt_id))
        return items

    def receipt_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM receipts")[0][0]

    def unembedded_receipts(self, kind: str, limit: int, after: str | None = None) -> list[tuple[str, int]]:
        """(image_id, receipt_id) of receipts holding NONE items of `kind`, in receipt-key order after `after`.

        'NONE' is a literal, not a parameter: SQLite only uses a partial index
        when it can prove the WHERE clause implies the index's condition.
        """
        check_kind(kind)
        rows = self._read(
            "SELECT DISTINCT receipt_key, image_id, receipt_id FROM items"
            " WHERE kind = ? AND status = 'NONE' AND receipt_key > ?"
            " ORDER BY receipt_key LIMIT ?",
            (kind, after or "", limit),
        )
        return [(row["image_id"], row["receipt_id"]) for row in rows]

    def receipt_items(self, kind: str, image_id: str, receipt_id: int) -> list[Item]:
        """Every line (or word) of one receipt, whatever its status."""
        check_kind(kind)
        rows = self._read(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE image_id = ? AND receipt_id = ? AND kind = ?"
            " ORDER BY line_id, word_id",
            (image_id, receipt_id, kind),
        )
        return [row_item(row) for row in rows]

    def merchant_name(self, image_id: str, receipt_id: int) -> str | None:
        rows = self._read(
            "SELECT merchant_name FROM receipts WHERE image_id = ? AND receipt_id = ?", (image_id, receipt_id)
        )
        return rows[0]["merchant_name"] if rows else None
