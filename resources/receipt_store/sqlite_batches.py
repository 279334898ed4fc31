"""Batch records and leases in the SQLite store."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from embedding_assets.domain.models import BatchRecord, LockHolder, LockState, Stage
from resources.receipt_store.rules import BatchUpdates, LeaseOwner, check_batch_changes
from resources.receipt_store.sqlite_database import SqliteDatabase
from resources.receipt_store.sqlite_schema import BATCH_FIELDS, batch_column, now_iso, row_batch


class SqliteBatches(BatchUpdates, SqliteDatabase):
    """Create, change and list batch records."""

    def put_batch(self, record: BatchRecord) -> None:
        """Create a batch record; an existing id is an error (ids are unique per run).

        Empty created_at / updated_at are filled with now so records always
        sort by age.
        """
        now = now_iso()
        values = {name: batch_column(name, getattr(record, name)) for name in BATCH_FIELDS}
        values["created_at"] = values["created_at"] or now
        values["updated_at"] = values["updated_at"] or now
        columns = ", ".join(BATCH_FIELDS)
        placeholders = ", ".join(f":{name}" for name in BATCH_FIELDS)
        with self._write() as conn:
            cursor = conn.execute(
                f"INSERT INTO batches ({columns}) VALUES ({placeholders}) ON CONFLICT (batch_id) DO NOTHING", values
            )
            if not cursor.rowcount:
                raise ValueError(f"batch {record.batch_id!r} already exists")

    def _update_batch(self, batch_id: str, stages: list[str] | None, changes: dict[str, Any]) -> BatchRecord | None:
        check_batch_changes(changes)
        values = {name: batch_column(name, value) for name, value in changes.items()}
        values["updated_at"] = now_iso()
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        params: dict[str, Any] = {**values, "batch_id": batch_id}
        sql = f"UPDATE batches SET {assignments} WHERE batch_id = :batch_id"
        if stages is not None:
            params |= {f"from_{n}": stage for n, stage in enumerate(stages)}
            sql += f" AND stage IN ({', '.join(f':from_{n}' for n in range(len(stages)))})"
        with self._write() as conn:
            if not conn.execute(sql, params).rowcount:
                return None
            row = conn.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return row_batch(row)

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = self._read("SELECT * FROM batches WHERE batch_id = ?", (batch_id,))
        return row_batch(rows[0]) if rows else None

    def list_batches(self, kind: str, stages: Iterable[Stage] | None = None) -> list[BatchRecord]:
        """Records of `kind` (all stages when None), oldest first."""
        sql = "SELECT * FROM batches WHERE kind = ?"
        params: list[Any] = [kind]
        if stages is not None:
            wanted = [Stage(stage).value for stage in stages]
            sql += f" AND stage IN ({', '.join('?' * len(wanted))})"
            params += wanted
        rows = self._read(sql + " ORDER BY created_at, batch_id", params)
        return [row_batch(row) for row in rows]


class SqliteLeases(LeaseOwner, SqliteDatabase):
    """Leases: a lease is expired once `expires` (epoch seconds) is not after now."""

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float, holder: LockHolder | None = None,
                     replacing: str | None = None) -> bool:
        """Take a free or expired lease, renew one `owner` already holds, or take one over from `replacing`.

        A single upsert whose update is conditional, so two processes racing
        for a free lease (or for a dead holder's) cannot both win it.
        """
        now = time.time()
        host, pid, started = (holder.host, holder.pid, holder.started) if holder else (None, None, None)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO locks (name, owner, expires, holder_host, holder_pid, holder_started)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires,"
                " holder_host = excluded.holder_host, holder_pid = excluded.holder_pid,"
                " holder_started = excluded.holder_started"
                " WHERE locks.expires <= ? OR locks.owner = excluded.owner OR locks.owner = ?",
                (name, owner, now + ttl_seconds, host, pid, started, now, replacing),
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

    def lock_state(self, name: str) -> LockState | None:
        rows = self._read("SELECT * FROM locks WHERE name = ? AND expires > ?", (name, time.time()))
        if not rows:
            return None
        row = rows[0]
        holder = (LockHolder(row["holder_host"], row["holder_pid"], row["holder_started"])
                  if row["holder_host"] is not None else None)
        return LockState(row["owner"], row["expires"], holder)
