"""The SQLite store's tables, and rows to items and batch records and back."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from embedding_assets.domain.models import KINDS, BatchRecord, Box, Item, Stage, Status

SCHEMA = (
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
    # The change feed compaction reads: every change that can make a vector stale is written by a
    # trigger in the transaction that makes it, whoever makes it (a cascade from a deleted receipt too).
    """
    CREATE TABLE IF NOT EXISTS vector_changes (
        seq  INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT    NOT NULL,
        key  TEXT    NOT NULL
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS vector_changes_by_kind ON vector_changes (kind, seq)
    """,
    """
    CREATE TRIGGER IF NOT EXISTS items_deleted_change AFTER DELETE ON items
    BEGIN INSERT INTO vector_changes (kind, key) VALUES (old.kind, old.key); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS items_text_change AFTER UPDATE OF text ON items WHEN new.text IS NOT old.text
    BEGIN INSERT INTO vector_changes (kind, key) VALUES (new.kind, new.key); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS items_left_success_change AFTER UPDATE OF status ON items
    WHEN old.status = 'SUCCESS' AND new.status <> 'SUCCESS'
    BEGIN INSERT INTO vector_changes (kind, key) VALUES (new.kind, new.key); END
    """,
)

# Columns added after the first release, which a store made before them lacks: (table, column, type).
ADDED_COLUMNS = (
    # The lease holder's process, so a holder that died on this host can be taken over at once.
    ("locks", "holder_host", "TEXT"),
    ("locks", "holder_pid", "INTEGER"),
    ("locks", "holder_started", "REAL"),
    # What a batch's requests were built for (BatchRecord.model / dimensions).
    ("batches", "model", "TEXT NOT NULL DEFAULT ''"),
    ("batches", "dimensions", "INTEGER NOT NULL DEFAULT 0"),
)

ITEM_COLUMNS = (
    "key, kind, image_id, receipt_id, receipt_key, line_id, word_id, text, x, y, width, height,"
    " confidence, status, is_noise, attempts, batch_id, last_error, updated_at"
)

# Only a changed text invalidates the vector, so only then does the item start
# over; the WHERE clause skips rows where nothing changed at all, which keeps
# updated_at meaningful and a re-import of an unchanged receipt write-free.
UPSERT_ITEM = f"""
    INSERT INTO items ({ITEM_COLUMNS})
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

BATCH_FIELDS = tuple(f.name for f in dataclasses.fields(BatchRecord))


def now_iso() -> str:
    """UTC with a +00:00 offset, the form the seed table uses, so timestamps compare as strings."""
    return datetime.now(UTC).isoformat()


def item_row(item: Item, kind: str, now: str) -> dict[str, Any]:
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


def row_item(row: sqlite3.Row) -> Item:
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


def batch_column(name: str, value: Any) -> Any:
    """A BatchRecord field as stored: enums by value, receipt refs as JSON."""
    if name == "stage":
        return Stage(value).value
    if name == "receipt_refs":
        return json.dumps([[image_id, int(receipt_id)] for image_id, receipt_id in value])
    return value


def row_batch(row: sqlite3.Row) -> BatchRecord:
    values = {name: row[name] for name in BATCH_FIELDS}
    values["stage"] = Stage(values["stage"])
    values["receipt_refs"] = [(image_id, receipt_id) for image_id, receipt_id in json.loads(values["receipt_refs"])]
    return BatchRecord(**values)
