"""SqliteReceiptStore on real files: its query plan and claims from other processes.

The rules every receipt store keeps are in tests/contracts/test_receipt_store.py.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from embedding_assets.domain.models import line_key, receipt_key
from resources.receipt_store.sqlite import SqliteReceiptStore
from tests.support import make_batch, make_receipt


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteReceiptStore(tmp_path / "store.sqlite3")
    yield s
    s.close()


def test_unembedded_receipts_is_an_index_range_scan(store, tmp_path):
    executed: list[str] = []
    store._conn.set_trace_callback(executed.append)
    store.unembedded_receipts("lines", 5, after=receipt_key("img-a", 1))
    store._conn.set_trace_callback(None)
    query = next(sql for sql in executed if sql.lstrip().upper().startswith("SELECT"))

    with closing(sqlite3.connect(tmp_path / "store.sqlite3")) as conn:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))
    assert "USING COVERING INDEX items_unembedded" in plan
    assert "TEMP B-TREE" not in plan


def _claim_rounds(path: Path, keys: list[str], batch_id: str, offset: int, barrier) -> list[str]:
    """Claim windows of 10 keys shifted by `offset`, meeting the rival at `barrier` before each.

    With offsets 0 and 5 every window overlaps the rival's current and next
    one, so both sides contest the same keys at the same moment.
    """
    store = SqliteReceiptStore(path)
    won: list[str] = []
    try:
        for start in range(0, len(keys), 10):
            barrier.wait()
            won.extend(store.claim("lines", keys[start + offset : start + offset + 10], batch_id))
    finally:
        store.close()
    return won


def _claim_rounds_in_process(path: str, keys: list[str], batch_id: str, offset: int, barrier, queue) -> None:
    queue.put((batch_id, _claim_rounds(Path(path), keys, batch_id, offset, barrier)))


def _race_setup(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "race.sqlite3"
    setup = SqliteReceiptStore(path)
    setup.put_receipts([make_receipt("img-r", r, [f"t{i}" for i in range(40)]) for r in range(1, 26)])
    setup.close()
    return path, [line_key("img-r", r, i) for r in range(1, 26) for i in range(40)]


def test_concurrent_claims_from_two_processes_never_share_an_item(tmp_path):
    path, keys = _race_setup(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=20)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_claim_rounds_in_process, args=(str(path), keys, batch_id, offset, barrier, queue))
        for batch_id, offset in (("a", 0), ("b", 5))
    ]
    for proc in procs:
        proc.start()
    won = dict(queue.get(timeout=30) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    assert set(won["a"]) & set(won["b"]) == set()
    assert set(won["a"]) | set(won["b"]) == set(keys)


def test_a_store_from_before_batches_kept_their_model_opens_and_reads_them_as_unknown(tmp_path):
    path = tmp_path / "store.sqlite3"
    first = SqliteReceiptStore(path)
    first.put_batch(make_batch("b1"))
    first.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("ALTER TABLE batches DROP COLUMN model")
        conn.execute("ALTER TABLE batches DROP COLUMN dimensions")
        conn.commit()

    reopened = SqliteReceiptStore(path)

    assert (reopened.get_batch("b1").model, reopened.get_batch("b1").dimensions) == ("", 0)
    reopened.put_batch(replace(make_batch("b2"), model="text-embedding-3-small", dimensions=512))
    assert (reopened.get_batch("b2").model, reopened.get_batch("b2").dimensions) == ("text-embedding-3-small", 512)
    reopened.close()
