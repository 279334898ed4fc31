"""Rules every receipt store enforces the same way, whatever it is stored in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from embedding_assets.domain.models import KINDS, BatchRecord, Receipt

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
