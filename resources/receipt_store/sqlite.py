"""The embedded `ReceiptStore`: one SQLite file, shared by threads and processes.

Dagster runs steps in subprocesses, so several processes open the same file at
once. WAL lets readers go on while one writer works; every write opens with
BEGIN IMMEDIATE, so it takes the write lock before reading anything, and every
status change carries its precondition in the UPDATE's WHERE clause. That is
what makes a claim atomic across processes with no lock beyond SQLite's own.

Within one process, the single connection is shared by threads behind an
RLock: sqlite3 connections carry one transaction state, so two threads must
never interleave statements on it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from embedding_assets.domain.models import (
    KINDS,
    OWNS_ITEMS,
    BatchRecord,
    Box,
    Item,
    Receipt,
    Stage,
    Status,
)
from resources.receipt_store.rules import check_batch_changes, check_kind, validate_receipt

# Long enough to ride out another process's put_receipts of a large import.
BUSY_TIMEOUT_SECONDS = 30.0
# Rows per round trip when streaming; a page is read in its own short
# statement so no read transaction stays open while the caller works.
PAGE_SIZE = 500

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS receipts (
        image_id      TEXT    NOT NULL,
        receipt_id    INTEGER NOT NULL,
        merchant_name TEXT,
        PRIMARY KEY (image_id, receipt_id)
    )
    """,
    # One table for both kinds: lines and words follow the same lifecycle, and
    # the kind column keeps every query on the same indexes.
    f"""
    CREATE TABLE IF NOT EXISTS items (
        key         TEXT    PRIMARY KEY,
        kind        TEXT    NOT NULL CHECK (kind IN {KINDS!r}),
        image_id    TEXT    NOT NULL,
        receipt_id  INTEGER NOT NULL,
        receipt_key TEXT    NOT NULL,
        line_id     INTEGER NOT NULL,
        word_id     INTEGER,
        text        TEXT    NOT NULL,
        x           REAL    NOT NULL,
        y           REAL    NOT NULL,
        width       REAL    NOT NULL,
        height      REAL    NOT NULL,
        confidence  REAL    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN {tuple(s.value for s in Status)!r}),
        is_noise    INTEGER NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0,
        batch_id    TEXT,
        last_error  TEXT,
        updated_at  TEXT    NOT NULL,
        CHECK ((kind = 'lines') = (word_id IS NULL)),
        FOREIGN KEY (image_id, receipt_id) REFERENCES receipts (image_id, receipt_id) ON DELETE CASCADE
    )
    """,
    # Finding the next receipts to batch is a range scan of this small partial
    # index. status is repeated as a column only so that the index covers the
    # query (SQLite does not infer it from the WHERE) and the table is never read.
    """
    CREATE INDEX IF NOT EXISTS items_unembedded
        ON items (kind, receipt_key, image_id, receipt_id, status) WHERE status = 'NONE'
    """,
    # Per-receipt reads and the foreign key's cascade.
    """
    CREATE INDEX IF NOT EXISTS items_by_receipt
        ON items (image_id, receipt_id, kind, line_id, word_id)
    """,
    # Status counts, keyset paging over a status, and PENDING repair.
    """
    CREATE INDEX IF NOT EXISTS items_by_status ON items (kind, status, key)
    """,
    """
    CREATE TABLE IF NOT EXISTS batches (
        batch_id           TEXT    PRIMARY KEY,
        kind               TEXT    NOT NULL,
        stage              TEXT    NOT NULL,
        input_key          TEXT    NOT NULL,
        manifest_key       TEXT    NOT NULL,
        item_count         INTEGER NOT NULL,
        request_count      INTEGER NOT NULL,
        estimated_tokens   INTEGER NOT NULL,
        receipt_refs       TEXT    NOT NULL,
        provider_batch_id  TEXT,
        input_file_id      TEXT,
        output_file_id     TEXT,
        error_file_id      TEXT,
        delta_key          TEXT,
        delta_sha256       TEXT,
        completed_requests INTEGER NOT NULL,
        failed_requests    INTEGER NOT NULL,
        vectors            INTEGER NOT NULL,
        prompt_tokens      INTEGER NOT NULL,
        cost_usd           REAL    NOT NULL,
        created_at         TEXT    NOT NULL,
        submitted_at       TEXT,
        updated_at         TEXT    NOT NULL,
        last_error         TEXT
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS batches_by_kind ON batches (kind, stage, created_at, batch_id)
    """,
    # expires is epoch seconds: a number compares the same whatever its text form.
    """
    CREATE TABLE IF NOT EXISTS locks (
        name    TEXT PRIMARY KEY,
        owner   TEXT NOT NULL,
        expires REAL NOT NULL
    )
    """,
)

_ITEM_COLUMNS = (
    "key, kind, image_id, receipt_id, receipt_key, line_id, word_id, text, x, y, width, height,"
    " confidence, status, is_noise, attempts, batch_id, last_error, updated_at"
)

# Only a changed text invalidates the vector, so only then does the item start
# over; the WHERE clause skips rows where nothing changed at all, which keeps
# updated_at meaningful and a re-import of an unchanged receipt write-free.
_UPSERT_ITEM = f"""
    INSERT INTO items ({_ITEM_COLUMNS})
    VALUES (:key, :kind, :image_id, :receipt_id, :receipt_key, :line_id, :word_id, :text, :x, :y,
            :width, :height, :confidence, :status, :is_noise, :attempts, :batch_id, :last_error, :updated_at)
    ON CONFLICT (key) DO UPDATE SET
        text       = excluded.text,
        x          = excluded.x,
        y          = excluded.y,
        width      = excluded.width,
        height     = excluded.height,
        confidence = excluded.confidence,
        is_noise   = excluded.is_noise,
        status     = CASE WHEN items.text = excluded.text THEN items.status ELSE 'NONE' END,
        attempts   = CASE WHEN items.text = excluded.text THEN items.attempts ELSE 0 END,
        batch_id   = CASE WHEN items.text = excluded.text THEN items.batch_id ELSE NULL END,
        last_error = CASE WHEN items.text = excluded.text THEN items.last_error ELSE NULL END,
        updated_at = excluded.updated_at
    WHERE items.text IS NOT excluded.text
       OR items.x IS NOT excluded.x
       OR items.y IS NOT excluded.y
       OR items.width IS NOT excluded.width
       OR items.height IS NOT excluded.height
       OR items.confidence IS NOT excluded.confidence
       OR items.is_noise IS NOT excluded.is_noise
"""

_BATCH_FIELDS = tuple(f.name for f in dataclasses.fields(BatchRecord))


def _now_iso() -> str:
    """UTC with a +00:00 offset, the form the seed table uses, so timestamps compare as strings."""
    return datetime.now(UTC).isoformat()



def _item_row(item: Item, kind: str, now: str) -> dict[str, Any]:
    return {
        "key": item.key,
        "kind": kind,
        "image_id": item.image_id,
        "receipt_id": item.receipt_id,
        "receipt_key": item.receipt,  # models.receipt_key, the order batching walks in
        "line_id": item.line_id,
        "word_id": item.word_id,
        "text": item.text,
        "x": item.box.x,
        "y": item.box.y,
        "width": item.box.width,
        "height": item.box.height,
        "confidence": item.confidence,
        "status": Status(item.status).value,
        "is_noise": int(item.is_noise),
        "attempts": item.attempts,
        "batch_id": item.batch_id,
        "last_error": item.last_error,
        "updated_at": now,
    }


def _row_item(row: sqlite3.Row) -> Item:
    return Item(
        image_id=row["image_id"],
        receipt_id=row["receipt_id"],
        line_id=row["line_id"],
        word_id=row["word_id"],
        text=row["text"],
        box=Box(row["x"], row["y"], row["width"], row["height"]),
        confidence=row["confidence"],
        status=Status(row["status"]),
        is_noise=bool(row["is_noise"]),
        attempts=row["attempts"],
        batch_id=row["batch_id"],
        last_error=row["last_error"],
    )


def _batch_column(name: str, value: Any) -> Any:
    """A BatchRecord field as stored: enums by value, receipt refs as JSON."""
    if name == "stage":
        return Stage(value).value
    if name == "receipt_refs":
        return json.dumps([[image_id, int(receipt_id)] for image_id, receipt_id in value])
    return value


def _row_batch(row: sqlite3.Row) -> BatchRecord:
    values = {name: row[name] for name in _BATCH_FIELDS}
    values["stage"] = Stage(values["stage"])
    values["receipt_refs"] = [(image_id, receipt_id) for image_id, receipt_id in json.loads(values["receipt_refs"])]
    return BatchRecord(**values)


class SqliteReceiptStore:
    """`ReceiptStore` on a local SQLite file (see the module docstring for the concurrency model)."""

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
            for statement in _SCHEMA:
                conn.execute(statement)

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

    # Receipts and items

    def put_receipts(self, receipts: Iterable[Receipt]) -> int:
        """Insert or replace receipts, all or nothing; a changed text sends the item back to NONE.

        A new item is stored with the status fields it carries, so a receipt
        copied from another store keeps its state. A re-imported receipt
        replaces the old one: items it no longer holds are deleted.
        """
        written = 0
        now = _now_iso()
        with self._write() as conn:
            for receipt in receipts:
                validate_receipt(receipt)
                conn.execute(
                    "INSERT INTO receipts (image_id, receipt_id, merchant_name) VALUES (?, ?, ?)"
                    " ON CONFLICT (image_id, receipt_id) DO UPDATE SET merchant_name = excluded.merchant_name",
                    (receipt.image_id, receipt.receipt_id, receipt.merchant_name),
                )
                rows = [_item_row(item, "lines", now) for item in receipt.lines]
                rows += [_item_row(item, "words", now) for item in receipt.words]
                conn.executemany(_UPSERT_ITEM, rows)
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
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE image_id = ? AND receipt_id = ? AND kind = ?"
            " ORDER BY line_id, word_id",
            (image_id, receipt_id, kind),
        )
        return [_row_item(row) for row in rows]

    def merchant_name(self, image_id: str, receipt_id: int) -> str | None:
        rows = self._read(
            "SELECT merchant_name FROM receipts WHERE image_id = ? AND receipt_id = ?", (image_id, receipt_id)
        )
        return rows[0]["merchant_name"] if rows else None

    # Status transitions: each UPDATE names the status (and batch) it starts from.

    def claim(self, kind: str, keys: Sequence[str], batch_id: str) -> list[str]:
        """NONE -> PENDING for `batch_id`; returns the keys this call won, in input order.

        One UPDATE per key so the rowcount says which keys were won; noise
        items are never claimed since they must never be sent.
        """
        check_kind(kind)
        now = _now_iso()
        won: list[str] = []
        with self._write() as conn:
            for key in keys:
                cursor = conn.execute(
                    "UPDATE items SET status = 'PENDING', batch_id = ?, updated_at = ?"
                    " WHERE key = ? AND kind = ? AND status = 'NONE' AND is_noise = 0",
                    (batch_id, now, key, kind),
                )
                if cursor.rowcount:
                    won.append(key)
        return won

    def release(self, kind: str, keys: Sequence[str], batch_id: str, error: str | None,
                max_attempts: int) -> tuple[int, int]:
        """PENDING(batch_id) -> NONE with attempts + 1, or FAILED at the limit; returns (released, failed).

        Only the owning batch may release an item: a batch that lost its items
        to a text change or a repair must not touch their new state.
        """
        check_kind(kind)
        now = _now_iso()
        released = failed = 0
        with self._write() as conn:
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
        now = _now_iso()
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
        now = _now_iso()
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
                (_now_iso(), kind),
            )
            return max(cursor.rowcount, 0)

    def requeue(self, kind: str, status: str, keys: Sequence[str]) -> int:
        """`status` -> NONE with attempts reset, for these keys only; a re-embed sends SUCCESS items again."""
        check_kind(kind)
        now = _now_iso()
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
                (text, _now_iso(), key, kind),
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
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE kind = ? AND status = ? AND key > ? ORDER BY key LIMIT ?",
                (kind, status_value, after, PAGE_SIZE),
            )
            yield from (_row_item(row) for row in rows)
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

    # Batch records

    def put_batch(self, record: BatchRecord) -> None:
        """Create a batch record; an existing id is an error (ids are unique per run).

        Empty created_at / updated_at are filled with now so records always
        sort by age.
        """
        now = _now_iso()
        values = {name: _batch_column(name, getattr(record, name)) for name in _BATCH_FIELDS}
        values["created_at"] = values["created_at"] or now
        values["updated_at"] = values["updated_at"] or now
        columns = ", ".join(_BATCH_FIELDS)
        placeholders = ", ".join(f":{name}" for name in _BATCH_FIELDS)
        with self._write() as conn:
            cursor = conn.execute(
                f"INSERT INTO batches ({columns}) VALUES ({placeholders}) ON CONFLICT (batch_id) DO NOTHING", values
            )
            if not cursor.rowcount:
                raise ValueError(f"batch {record.batch_id!r} already exists")

    def update_batch(self, batch_id: str, **changes: Any) -> BatchRecord:
        """Change some fields of a record and return it as stored.

        batch_id and updated_at are not accepted: the id is the record's
        identity and updated_at is always set to now here.
        """
        check_batch_changes(changes)
        values = {name: _batch_column(name, value) for name, value in changes.items()}
        values["updated_at"] = _now_iso()
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE batches SET {assignments} WHERE batch_id = :batch_id", {**values, "batch_id": batch_id}
            )
            if not cursor.rowcount:
                raise KeyError(batch_id)
            row = conn.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return _row_batch(row)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = self._read("SELECT * FROM batches WHERE batch_id = ?", (batch_id,))
        return _row_batch(rows[0]) if rows else None

    def list_batches(self, kind: str, stages: Iterable[Stage] | None = None) -> list[BatchRecord]:
        """Records of `kind` (all stages when None), oldest first."""
        sql = "SELECT * FROM batches WHERE kind = ?"
        params: list[Any] = [kind]
        if stages is not None:
            wanted = [Stage(stage).value for stage in stages]
            sql += f" AND stage IN ({', '.join('?' * len(wanted))})"
            params += wanted
        rows = self._read(sql + " ORDER BY created_at, batch_id", params)
        return [_row_batch(row) for row in rows]

    # Leases. A lease is expired once `expires` is not after now.

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take a free or expired lease, or renew one `owner` already holds.

        A single upsert whose update is conditional, so two processes racing
        for a free lease cannot both see it free.
        """
        now = time.time()
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO locks (name, owner, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires"
                " WHERE locks.expires <= ? OR locks.owner = excluded.owner",
                (name, owner, now + ttl_seconds, now),
            )
            return cursor.rowcount == 1

    def heartbeat_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend the lease only while `owner` still holds it.

        Checks the owner only, as the seed's lock does, so an owner may revive
        its own lease shortly after it expired: anyone who had taken it over
        in between would have replaced the owner, so two holders never coexist.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE locks SET expires = ? WHERE name = ? AND owner = ?", (time.time() + ttl_seconds, name, owner)
            )
            return cursor.rowcount == 1

    def release_lock(self, name: str, owner: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM locks WHERE name = ? AND owner = ?", (name, owner)).rowcount == 1

    def lock_owner(self, name: str) -> str | None:
        """The owner of an unexpired lease, else None."""
        rows = self._read("SELECT owner FROM locks WHERE name = ? AND expires > ?", (name, time.time()))
        return rows[0]["owner"] if rows else None
