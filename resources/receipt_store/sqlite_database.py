"""One SQLite file opened for the store's parts: WAL, the busy timeout, and write transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resources.receipt_store.sqlite_schema import ADDED_COLUMNS, SCHEMA

# Long enough to ride out another process's put_receipts of a large import.
BUSY_TIMEOUT_SECONDS = 30.0


class SqliteDatabase:
    """The connection the store's parts share, behind an RLock (see sqlite.py for the concurrency model)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
            check_same_thread=False,
        )
        self._conn.row_factory = sqlite3.Row
        # busy_timeout first: switching to WAL may have to wait for another opener.
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        with self._write() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
            for table, column, kind in ADDED_COLUMNS:
                if column not in {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its first statement.

        IMMEDIATE rather than DEFERRED: a deferred transaction that reads and
        then writes can fail with SQLITE_BUSY instead of waiting, and its read
        may already be stale when the write lock is finally granted.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()
