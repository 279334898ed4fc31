"""The SQLite store's change feed and reads by key.

Triggers (see `sqlite_schema`) append to `vector_changes` in the very
transaction that deletes an item, changes its text or moves it off SUCCESS,
so the feed misses nothing written to the file, by us or by anyone else. The
cursor is the last sequence number read; sequence numbers are handed out
under SQLite's write lock, so they follow commit order.
"""

from __future__ import annotations

from collections.abc import Sequence

from embedding_assets.domain.models import Item
from resources.receipt_store.rules import check_kind
from resources.receipt_store.sqlite_database import SqliteDatabase
from resources.receipt_store.sqlite_schema import ITEM_COLUMNS, row_item

# Keys per IN (...) query: far below SQLite's limit on bound parameters.
_KEYS_PER_QUERY = 500


class SqliteChanges(SqliteDatabase):
    def vector_changes(self, kind: str, after: str) -> tuple[list[str], str]:
        check_kind(kind)
        rows = self._read("SELECT seq, key FROM vector_changes WHERE kind = ? AND seq > ? ORDER BY seq",
                          (kind, int(after or 0)))
        keys = list(dict.fromkeys(row["key"] for row in rows))
        return keys, str(rows[-1]["seq"]) if rows else after

    def changes_head(self, kind: str) -> str:
        check_kind(kind)
        (head,) = self._read("SELECT MAX(seq) FROM vector_changes WHERE kind = ?", (kind,))[0]
        return str(head) if head is not None else ""

    def trim_changes(self, kind: str, cursors: Sequence[str]) -> int:
        check_kind(kind)
        if not cursors:
            return 0
        # The newest change read is kept, so the head stays where it was.
        with self._write() as db:
            return db.execute(
                "DELETE FROM vector_changes WHERE kind = ? AND seq < "
                "(SELECT MAX(seq) FROM vector_changes WHERE kind = ? AND seq <= ?)",
                (kind, kind, min(int(cursor or 0) for cursor in cursors))).rowcount

    def items_by_key(self, kind: str, keys: Sequence[str]) -> dict[str, Item]:
        check_kind(kind)
        found: dict[str, Item] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = list(keys[start:start + _KEYS_PER_QUERY])
            placeholders = ", ".join("?" * len(chunk))
            rows = self._read(f"SELECT {ITEM_COLUMNS} FROM items WHERE kind = ? AND key IN ({placeholders})",
                              (kind, *chunk))
            found.update((row["key"], row_item(row)) for row in rows)
        return found
