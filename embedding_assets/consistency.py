"""The invariants the asset checks watch, computed without Dagster.

SUCCESS <=> present in the latest snapshot: an item is present when a vector
stands for it (a line vector covers every line of its row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .chroma_collections import iter_metadatas, persistent_collection
from .formatting import item_keys_of_vector
from .models import Status
from .ports import ReceiptStore
from .snapshots import SnapshotStore

SAMPLE = 10


@dataclass
class Agreement:
    success: int
    in_snapshot: int
    missing_count: int
    extra_count: int
    missing_sample: list[str] = field(default_factory=list)
    extra_sample: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing_count == 0 and self.extra_count == 0


def snapshot_item_keys(snapshots: SnapshotStore) -> set[str]:
    found = snapshots.read_copy()
    if found is None:
        return set()
    keys: set[str] = set()
    with persistent_collection(found[0], snapshots.kind) as collection:
        for vector_id, meta in iter_metadatas(collection):
            keys.update(item_keys_of_vector(vector_id, meta or {}))
    return keys


def snapshot_agreement(store: ReceiptStore, snapshots: SnapshotStore) -> Agreement:
    success = {item.key for item in store.items_with_status(snapshots.kind, Status.SUCCESS.value)}
    present = snapshot_item_keys(snapshots)
    missing = sorted(success - present)
    extra = sorted(present - success)
    return Agreement(len(success), len(present), len(missing), len(extra), missing[:SAMPLE], extra[:SAMPLE])

