"""A lease on a named lock in the receipt store, kept alive by a heartbeat thread.

Work that must not run twice at once (compaction, batch creation) holds one.
A holder that was paused past its lease loses it; `check()` lets it find out
before an irreversible step, such as the snapshot pointer swap.
"""

from __future__ import annotations

import threading
import uuid

from embedding_assets.domain.ports import ReceiptStore


def compaction_lease(kind: str) -> str:
    """The lease every writer of a kind's snapshot lines holds: compaction, and starting a re-embed."""
    return f"chroma-{kind}-compaction"


class LeaseHeld(RuntimeError):
    """Another owner holds the lease."""


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
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        if not self.store.acquire_lock(self.name, self.owner, self.ttl):
            raise LeaseHeld(f"lease {self.name!r} is held by {self.store.lock_owner(self.name)}")
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.store.release_lock(self.name, self.owner)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.store.heartbeat_lock(self.name, self.owner, self.ttl):
                self._lost.set()
                return

    def check(self) -> None:
        """Raise LeaseLost unless we still own the lease right now."""
        if self._lost.is_set() or self.store.lock_owner(self.name) != self.owner:
            self._lost.set()
            raise LeaseLost(f"lease {self.name!r} was lost (expired or taken over); nothing published")
