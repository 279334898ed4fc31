"""Rules every receipt store enforces the same way, whatever it is stored in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from embedding_assets.domain.models import KINDS, BatchRecord, LockState, Receipt, Stage

# The id is the record's identity and updated_at is the store's to set.
UPDATABLE_BATCH_FIELDS = frozenset(f.name for f in dataclasses.fields(BatchRecord)) - {"batch_id", "updated_at"}


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def check_batch_changes(names: Iterable[str]) -> None:
    unknown = set(names) - UPDATABLE_BATCH_FIELDS
    if unknown:
        raise ValueError(f"cannot update batch field(s): {', '.join(sorted(unknown))}")


def validate_receipt(receipt: Receipt) -> None:
    """Reject a receipt whose items would land under another receipt or the wrong kind.

    Raised before anything is written, so one bad receipt stops the whole import.
    """
    seen: set[str] = set()
    for kind, items in (("lines", receipt.lines), ("words", receipt.words)):
        for item in items:
            if (item.image_id, item.receipt_id) != (receipt.image_id, receipt.receipt_id):
                raise ValueError(f"{item.key} does not belong to receipt {receipt.key}")
            if item.kind != kind:
                raise ValueError(f"{item.key} is listed under {kind}")
            if item.key in seen:
                raise ValueError(f"{item.key} appears twice in receipt {receipt.key}")
            seen.add(item.key)


class BatchUpdates:
    """The batch record updates both stores offer, over each store's one conditional write."""

    def _update_batch(self, batch_id: str, stages: list[str] | None, changes: dict[str, Any]) -> BatchRecord | None:
        """Apply `changes` (and updated_at) if the record exists and, when `stages` is given, is in one of them;
        the record as stored, or None when it did not apply."""
        raise NotImplementedError

    def update_batch(self, batch_id: str, **changes: Any) -> BatchRecord:
        """Change some fields of a record and return it as stored.

        batch_id and updated_at are not accepted: the id is the record's
        identity and updated_at is always set to now here.
        """
        updated = self._update_batch(batch_id, None, changes)
        if updated is None:
            raise KeyError(batch_id)
        return updated

    def update_batch_from(self, batch_id: str, stages: Iterable[Stage], **changes: Any) -> BatchRecord | None:
        return self._update_batch(batch_id, [Stage(stage).value for stage in stages], changes)


class LeaseOwner:
    """`lock_owner` as both stores answer it: from the one read of `lock_state`."""

    def lock_state(self, name: str) -> LockState | None:
        raise NotImplementedError

    def lock_owner(self, name: str) -> str | None:
        """The owner of an unexpired lease, else None."""
        state = self.lock_state(name)
        return state.owner if state is not None else None
