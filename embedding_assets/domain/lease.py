"""A lease on a named lock in the receipt store, kept alive by a heartbeat thread.

Work that must not run twice at once (compaction, batch creation) holds one.
A holder that was paused past its lease loses it; `check()` lets it find out
before an irreversible step, such as the snapshot pointer swap.

The owner is recorded with its process (host, pid, start time). A lease whose
holder ran on this host and whose process is gone (killed, crashed) is taken
over at once instead of blocking the kind until it expires; a holder on another
host, or one recording no process (the seed's), can only be waited out.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid

import psutil

from embedding_assets.domain.models import LockHolder, LockState
from embedding_assets.domain.ports import ReceiptStore

log = logging.getLogger(__name__)


def compaction_lease(kind: str) -> str:
    """The lease every writer of a kind's snapshot lines holds: compaction, and starting a re-embed."""
    return f"chroma-{kind}-compaction"


def this_process() -> LockHolder:
    me = psutil.Process()
    return LockHolder(socket.gethostname(), me.pid, me.create_time())


def provably_dead(holder: LockHolder | None) -> bool:
    """True only when the holder ran on this host and no process with its pid and start time is left."""
    if holder is None or holder.host != socket.gethostname():
        return False
    try:
        process = psutil.Process(holder.pid)
        alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        return not alive or abs(process.create_time() - holder.started) > 1.0
    except psutil.NoSuchProcess:
        return True


def describe(state: LockState | None) -> str:
    """Who holds a lease and for how long, in words a person can act on."""
    if state is None:
        return "nobody (it was just released)"
    left = max(0, round(state.expires - time.time()))
    who = f"process {state.holder.pid} on {state.holder.host}" if state.holder else f"owner {state.owner}"
    return f"{who} for up to {left}s more"


class LeaseHeld(RuntimeError):
    """A live owner holds the lease; `state` says who and until when."""

    def __init__(self, name: str, state: LockState | None):
        super().__init__(f"lease {name!r} is held by {describe(state)}")
        self.name = name
        self.state = state

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.state.expires - time.time()) if self.state else 0.0


class LeaseLost(RuntimeError):
    """The lease expired or was taken over while we worked."""


class Lease:
    def __init__(self, store: ReceiptStore, name: str, ttl_seconds: float, heartbeat_seconds: float):
        if heartbeat_seconds >= ttl_seconds:
            raise ValueError(f"heartbeat every {heartbeat_seconds}s cannot keep a {ttl_seconds}s lease alive")
        self.store = store
        self.name = name
        self.ttl = ttl_seconds
        self.interval = heartbeat_seconds
        # A UUID string, as the seed system's lock items hold their owner.
        self.owner = str(uuid.uuid4())
        self.holder = this_process()
        self.took_over: LockState | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        if not self._take():
            raise LeaseHeld(self.name, self.store.lock_state(self.name))
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _take(self) -> bool:
        if self.store.acquire_lock(self.name, self.owner, self.ttl, self.holder):
            return True
        state = self.store.lock_state(self.name)
        if state is None:  # released or expired between the two calls
            return self.store.acquire_lock(self.name, self.owner, self.ttl, self.holder)
        if provably_dead(state.holder) and self.store.acquire_lock(
                self.name, self.owner, self.ttl, self.holder, replacing=state.owner):
            self.took_over = state
            log.warning(f"took lease {self.name!r} over from {describe(state)}: its process is gone")
            return True
        return False

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.store.release_lock(self.name, self.owner)

    def _beat(self) -> None:
        """Renew until stopped. A renewal that errors (the store busy or unreachable for a moment) is tried
        again at the next beat; the lease is given up only when the store says it is not ours any more, or
        when no renewal has landed for a whole TTL (by then another process may have taken it)."""
        renewed = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                ours = self.store.heartbeat_lock(self.name, self.owner, self.ttl)
            except Exception as exc:  # any store error is retried: it must not end the renewals
                log.warning(f"lease {self.name!r}: renewal failed ({exc}); trying again in {self.interval:.0f}s")
                if time.monotonic() - renewed < self.ttl:
                    continue
                ours = False
            if not ours:
                self._lost.set()
                return
            renewed = time.monotonic()

    def check(self) -> None:
        """Raise LeaseLost unless we still own the lease right now."""
        if self._lost.is_set() or self.store.lock_owner(self.name) != self.owner:
            self._lost.set()
            raise LeaseLost(f"lease {self.name!r} was lost (expired or taken over); nothing published")
