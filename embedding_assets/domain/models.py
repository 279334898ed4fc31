"""Plain records shared by every step; no dagster, no storage details.

Ids follow the seed system so that vectors, requests and store items all
name an item by the same string.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

KINDS = ("lines", "words")


class Status(str, enum.Enum):
    """Item embedding status, stored as its value string (seed compatible)."""

    NONE = "NONE"
    PENDING = "PENDING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    NOISE = "NOISE"


class Stage(str, enum.Enum):
    """Our batch record's stage.

    PREPARED and SUBMITTED are ours; the provider's own statuses are kept
    verbatim between them and DELTA_READY, so a record shows what the provider
    last said.
    """

    PREPARED = "PREPARED"
    SUBMITTED = "SUBMITTED"
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    DELTA_READY = "DELTA_READY"
    COMPACTED = "COMPACTED"
    # Given up on: gone at the provider, or unfinished long past its window. Owns no items.
    REAPED = "REAPED"


PROVIDER_LIVE = frozenset({Stage.SUBMITTED, Stage.VALIDATING, Stage.IN_PROGRESS, Stage.FINALIZING, Stage.CANCELLING})
PROVIDER_TERMINAL = frozenset({Stage.COMPLETED, Stage.FAILED, Stage.EXPIRED, Stage.CANCELLED})
# The same, as the status strings a provider reports.
PROVIDER_TERMINAL_STATUSES = frozenset(stage.value for stage in PROVIDER_TERMINAL)
PROVIDER_LIVE_STATUSES = frozenset(stage.value for stage in PROVIDER_LIVE - {Stage.SUBMITTED})
# Stages in which a batch still owns its PENDING items.
OWNS_ITEMS = frozenset({Stage.PREPARED}) | PROVIDER_LIVE | PROVIDER_TERMINAL | {Stage.DELTA_READY}


def batch_keys(kind: str, batch_id: str) -> tuple[str, str, str]:
    """(request file, manifest, delta) keys of one batch in the object store."""
    return (
        f"batches/{kind}/{batch_id}.jsonl",
        f"batches/{kind}/{batch_id}.manifest.jsonl",
        f"deltas/{kind}/{batch_id}.parquet",
    )


def receipt_key(image_id: str, receipt_id: int) -> str:
    return f"IMAGE#{image_id}#RECEIPT#{receipt_id:05d}"


def line_key(image_id: str, receipt_id: int, line_id: int) -> str:
    return f"{receipt_key(image_id, receipt_id)}#LINE#{line_id:05d}"


def word_key(image_id: str, receipt_id: int, line_id: int, word_id: int) -> str:
    return f"{line_key(image_id, receipt_id, line_id)}#WORD#{word_id:05d}"


def parse_item_key(key: str) -> dict[str, Any]:
    """Split a line or word id back into its parts; raises ValueError on anything else."""
    parts = key.split("#")
    try:
        if parts[0] != "IMAGE" or parts[2] != "RECEIPT" or parts[4] != "LINE":
            raise ValueError
        out: dict[str, Any] = {"image_id": parts[1], "receipt_id": int(parts[3]), "line_id": int(parts[5])}
        if len(parts) == 8 and parts[6] == "WORD":
            out["word_id"] = int(parts[7])
        elif len(parts) != 6:
            raise ValueError
    except (IndexError, ValueError):
        raise ValueError(f"not a line or word id: {key!r}") from None
    return out


@dataclass(frozen=True)
class Box:
    """Normalised box, 0..1, y = 0 at the bottom of the receipt (seed convention)."""

    x: float
    y: float
    width: float
    height: float

    @property
    def center_y(self) -> float:
        return self.y + self.height / 2

    def contains_y(self, y: float) -> bool:
        return self.y <= y <= self.y + self.height


@dataclass
class Item:
    """A receipt line (word_id None) or word, as the pipeline needs it."""

    image_id: str
    receipt_id: int
    line_id: int
    text: str
    box: Box
    confidence: float
    word_id: int | None = None
    status: Status = Status.NONE
    is_noise: bool = False
    attempts: int = 0
    batch_id: str | None = None
    last_error: str | None = None

    @property
    def kind(self) -> str:
        return "lines" if self.word_id is None else "words"

    @property
    def key(self) -> str:
        if self.word_id is None:
            return line_key(self.image_id, self.receipt_id, self.line_id)
        return word_key(self.image_id, self.receipt_id, self.line_id, self.word_id)

    @property
    def receipt(self) -> str:
        return receipt_key(self.image_id, self.receipt_id)


@dataclass
class Receipt:
    """A receipt with its lines and words, the unit of import and of batching."""

    image_id: str
    receipt_id: int
    merchant_name: str | None = None
    lines: list[Item] = field(default_factory=list)
    words: list[Item] = field(default_factory=list)

    @property
    def key(self) -> str:
        return receipt_key(self.image_id, self.receipt_id)


@dataclass
class BatchRecord:
    """One request file and, once submitted, its provider batch.

    Item lists live in the object store (manifest_key), never in the record,
    so a record stays small on every backend.
    """

    batch_id: str
    kind: str
    stage: Stage
    input_key: str
    manifest_key: str
    item_count: int
    request_count: int
    estimated_tokens: int
    receipt_refs: list[tuple[str, int]] = field(default_factory=list)
    provider_batch_id: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    delta_key: str | None = None
    delta_sha256: str | None = None
    completed_requests: int = 0
    failed_requests: int = 0
    vectors: int = 0
    prompt_tokens: int = 0
    cost_usd: float = 0.0
    created_at: str = ""
    submitted_at: str | None = None
    updated_at: str = ""
    last_error: str | None = None
    # The model and vector size the requests were built for; ingest labels the delta with them, so a batch
    # still out when the configuration moves on is recognised as another model's. "" / 0 on older records.
    model: str = ""
    dimensions: int = 0


@dataclass(frozen=True)
class LockHolder:
    """The process behind a lease owner: enough to prove it dead when it ran on this host.

    `started` is the process's start time (epoch seconds), so a pid reused by a
    later process is not taken for the holder.
    """

    host: str
    pid: int
    started: float


@dataclass(frozen=True)
class LockState:
    """An unexpired lease as the store holds it; `holder` is None for owners that record none (the seed's)."""

    owner: str
    expires: float
    holder: LockHolder | None = None
