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

from resources.receipt_store.sqlite_batches import SqliteBatches, SqliteLeases
from resources.receipt_store.sqlite_changes import SqliteChanges
from resources.receipt_store.sqlite_receipts import SqliteReceipts
from resources.receipt_store.sqlite_status import SqliteStatuses


class SqliteReceiptStore(SqliteReceipts, SqliteStatuses, SqliteBatches, SqliteLeases, SqliteChanges):
    """`ReceiptStore` on a local SQLite file (see the module docstring for the concurrency model).

    Each part is a class of its own over the same connection (`SqliteDatabase`): receipts and items,
    status transitions, batch records, leases, and the change feed compaction reads.
    """
