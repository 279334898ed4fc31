"""A lease whose holder is provably dead (this host, process gone) is taken over at once; a live one is not.

The holder is a real child process on the real store (SQLite, or DynamoDB on
the moto server): it takes the compaction lease and is SIGKILLed, as `run` was.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedding_assets.domain.lease import Lease, LeaseHeld, compaction_lease, this_process
from embedding_assets.domain.models import LockHolder
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime
from tests.conftest import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
NAME = compaction_lease("lines")
TTL = 300.0  # far longer than the test: only a take-over can free it

HOLD = f"""
import sys, time
from embedding_assets.domain.lease import Lease
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime
store = Runtime.from_settings(Settings.from_env()).store
with Lease(store, {NAME!r}, {TTL}, {TTL / 2}):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture(params=sorted(BACKENDS))
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    return BACKENDS[request.param](tmp_path, request)


@pytest.fixture
def holder(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A child process holding the lease, started once it says so."""
    child = subprocess.Popen([sys.executable, "-c", HOLD], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait(30)


def test_a_lease_whose_holder_was_killed_is_taken_over_at_once(env, holder):
    store = Runtime.from_settings(Settings.from_env(env)).store
    state = store.lock_state(NAME)
    assert state is not None and state.holder is not None and state.holder.pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)

    with Lease(store, NAME, TTL, TTL / 2) as lease:
        assert lease.took_over is not None and lease.took_over.owner == state.owner
        assert store.lock_owner(NAME) == lease.owner
        assert store.lock_state(NAME).holder == this_process()
    assert store.lock_owner(NAME) is None


def test_a_live_holder_keeps_its_lease_and_says_who_it_is(env, holder):
    store = Runtime.from_settings(Settings.from_env(env)).store
    with pytest.raises(LeaseHeld) as held:
        Lease(store, NAME, TTL, TTL / 2).__enter__()
    assert held.value.state.holder.pid == holder.pid
    assert f"process {holder.pid} on" in str(held.value) and 0 < held.value.seconds_left <= TTL


@pytest.mark.parametrize("who", ["pid reused by a later process", "another host"])
def test_only_a_holder_provably_gone_is_replaced(who, settings):
    """A pid now running something started later is dead to us; a holder elsewhere can only be waited out."""
    store = Runtime.from_settings(settings).store
    me = this_process()
    gone = (LockHolder(me.host, me.pid, me.started - 1000) if who.startswith("pid")
            else LockHolder("elsewhere.example", 1, 0.0))
    owner = "3a6e4b52-7d68-4c1e-9a1c-3f0d2f3b8e11"
    assert store.acquire_lock(NAME, owner, TTL, gone)
    if who.startswith("pid"):
        with Lease(store, NAME, TTL, TTL / 2) as lease:
            assert lease.took_over.owner == owner
    else:
        with pytest.raises(LeaseHeld, match="on elsewhere.example"):
            Lease(store, NAME, TTL, TTL / 2).__enter__()
        assert store.lock_owner(NAME) == owner


def test_a_store_made_before_holders_were_recorded_gains_the_columns(tmp_path):
    import sqlite3

    from resources.receipt_store.sqlite import SqliteReceiptStore

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE locks (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL)")
    store = SqliteReceiptStore(path)
    with Lease(store, NAME, TTL, TTL / 2):
        assert store.lock_state(NAME).holder == this_process()


def test_a_renewal_that_errors_is_tried_again_and_the_lease_stays_ours(runtime, monkeypatch):
    """One failed heartbeat (the store busy for a moment) must not let the lease lapse under a live holder."""
    store = runtime.store
    beat = store.heartbeat_lock
    failures = iter([RuntimeError("database is locked")])

    def flaky(*args, **kwargs):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return beat(*args, **kwargs)

    monkeypatch.setattr(store, "heartbeat_lock", flaky)
    with Lease(store, NAME, 1.0, 0.2) as lease:
        time.sleep(2.0)  # two TTLs: only renewals after the failed one keep it
        assert next(failures, None) is None, "the failing renewal was tried"
        lease.check()
        assert store.lock_owner(NAME) == lease.owner
        with pytest.raises(LeaseHeld), Lease(store, NAME, 1.0, 0.2):
            pass
