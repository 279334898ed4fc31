"""The invariants the asset checks watch, computed without Dagster.

SUCCESS <=> present in the latest snapshot of the line being built (the
serving one, or NEXT during a re-embed): an item is present when a vector
stands for it (a line vector covers every line of its row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from embedding_assets.domain.formatting import item_keys_of_vector
from embedding_assets.domain.models import Status
from embedding_assets.domain.ports import ReceiptStore, VectorLine
from embedding_assets.domain.vectors import iter_metadatas

SAMPLE = 10


@dataclass
class Agreement:
    """How the store's SUCCESS items and the latest snapshot's vectors line up.

    A line vector stands for its whole visual row. A row member that is not
    SUCCESS (its text changed, it is being re-embedded) rides on a vector kept
    for its SUCCESS neighbours: counted as `awaiting_reembed`, not an error.
    A vector standing for no SUCCESS item at all is an error (`extra`).
    """

    success: int
    in_snapshot: int
    missing_count: int
    extra_count: int
    awaiting_reembed: int = 0
    missing_sample: list[str] = field(default_factory=list)
    extra_sample: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing_count == 0 and self.extra_count == 0


def item_keys_in(line: VectorLine) -> set[str]:
    """Every item a line's latest published version holds a vector for."""
    with line.readable() as collection:
        if collection is None:
            return set()
        return {
            key for vector_id, meta in iter_metadatas(collection) for key in item_keys_of_vector(vector_id, meta or {})
        }


def snapshot_agreement(store: ReceiptStore, vectors: VectorLine) -> Agreement:
    line = vectors.target()
    success = {item.key for item in store.items_with_status(line.kind, Status.SUCCESS.value)}
    covered: set[str] = set()
    extra: list[str] = []
    extra_keys: set[str] = set()
    with line.readable() as collection:
        if collection is not None:
            for vector_id, meta in iter_metadatas(collection):
                keys = item_keys_of_vector(vector_id, meta or {})
                covered.update(keys)
                if not any(key in success for key in keys):
                    extra.append(vector_id)
                    extra_keys.update(keys)
    missing = sorted(success - covered)
    awaiting = len(covered - success - extra_keys)
    return Agreement(
        len(success), len(covered), len(missing), len(extra), awaiting, missing[:SAMPLE], sorted(extra)[:SAMPLE]
    )
