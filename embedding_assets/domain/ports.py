"""The four outside parts the pipeline talks to, as protocols (the vector store's in `vector_ports`, re-exported here).

Each has an embedded implementation (SQLite, a local folder, an offline model,
Chroma snapshots) and a production one (DynamoDB, S3, OpenAI); the steps only
see these methods, which is what lets both run the same code paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedding_assets.domain.models import BatchRecord, Item, LockHolder, LockState, Receipt, Stage
from embedding_assets.domain.tokens import Tokenizer
from embedding_assets.domain.vector_ports import LexicalIndex as LexicalIndex
from embedding_assets.domain.vector_ports import SearchView as SearchView
from embedding_assets.domain.vector_ports import VectorCollection as VectorCollection
from embedding_assets.domain.vector_ports import VectorLine as VectorLine
from embedding_assets.domain.vector_ports import VectorStore as VectorStore


class ReceiptStore(Protocol):
    """Receipts, their items' embedding status, batch records and leases.

    Every status change is conditional on the current status (and, where it
    says so, on the owning batch), so concurrent runs never both win an item.
    """

    def put_receipts(self, receipts: Iterable[Receipt]) -> int:
        """Insert or replace receipts, all or nothing; a changed text sends the item back to NONE."""

    def receipt_count(self) -> int: ...

    def unembedded_receipts(self, kind: str, limit: int, after: str | None = None) -> list[tuple[str, int]]:
        """(image_id, receipt_id) of receipts holding NONE items of `kind`, in receipt-key order after `after`."""

    def receipt_items(self, kind: str, image_id: str, receipt_id: int) -> list[Item]:
        """Every line (or word) of one receipt, whatever its status."""

    def merchant_name(self, image_id: str, receipt_id: int) -> str | None: ...

    def claim(self, kind: str, keys: Sequence[str], batch_id: str, texts: Mapping[str, str] | None = None
              ) -> list[str]:
        """NONE -> PENDING for `batch_id`; returns the keys this call won.

        `texts`, the text each item had when its request was built: an item
        given new text since then is not claimed (its request carries the
        old text), and is sent with its new text later.
        """

    def release(
        self, kind: str, keys: Sequence[str], batch_id: str, error: str | None, max_attempts: int,
        count_attempt: bool = True,
    ) -> tuple[int, int]:
        """PENDING(batch_id) -> NONE with attempts + 1, or FAILED at the limit; returns (released, failed).

        `count_attempt=False`: back to NONE as it was, for items whose batch did nothing wrong (superseded
        by a model change), so it never brings them nearer to FAILED.
        """

    def mark_success(self, kind: str, keys: Sequence[str], batch_id: str) -> int:
        """PENDING(batch_id) -> SUCCESS; returns how many changed."""

    def mark_noise(self, kind: str, reasons: dict[str, str]) -> int:
        """NONE -> NOISE with the reason kept as the item's last error."""

    def retry_failed(self, kind: str) -> int:
        """FAILED -> NONE with attempts reset; returns how many."""

    def requeue(self, kind: str, status: str, keys: Sequence[str]) -> int:
        """`status` -> NONE with attempts reset for these keys; returns how many.

        A re-embed sends SUCCESS items again this way.
        """

    def set_text(self, kind: str, key: str, text: str) -> bool:
        """Replace an item's text and send it back to NONE; False when the item does not exist."""

    def status_counts(self, kind: str) -> dict[str, int]: ...

    def items_by_key(self, kind: str, keys: Sequence[str]) -> dict[str, Item]:
        """The items these keys name, whatever their status; keys naming no item are left out."""

    def vector_changes(self, kind: str, after: str) -> tuple[list[str], str]:
        """Keys of items deleted, given new text or sent back from SUCCESS after cursor `after` ("" for the
        start), oldest first, and the cursor past the last of them (`after` itself when there are none).

        Each change is recorded with the change itself (same transaction or
        conditional write), so a compaction that reads the feed sees every
        change our own writers made, at a cost that follows the changes.
        """

    def changes_head(self, kind: str) -> str:
        """The cursor past the newest change so far ("" when there is none)."""

    def trim_changes(self, kind: str, cursors: Sequence[str]) -> int:
        """Forget the changes every one of `cursors` is past (the feed's readers' positions); how many.

        Keeps the feed as long as the work still ahead of its slowest reader,
        not as long as the table's history.
        """

    def items_with_status(self, kind: str, status: str) -> Iterator[Item]: ...

    def pending_without_live_batch(self, kind: str) -> list[tuple[str, str | None]]:
        """(key, batch_id) of PENDING items whose batch has no record or no longer owns items.

        These are left by a crash between claiming and recording a batch; a run
        repairs them, since no batch will ever release them.
        """

    def delete_receipt(self, image_id: str, receipt_id: int) -> int:
        """Remove a receipt with its lines and words; returns how many lines and words went.

        Their vectors leave the snapshot at the next compaction.
        """

    def put_batch(self, record: BatchRecord) -> None:
        """Create a batch record; an existing id is an error (ids are unique per run)."""

    def update_batch(self, batch_id: str, **changes: Any) -> BatchRecord: ...

    def update_batch_from(self, batch_id: str, stages: Iterable[Stage], **changes: Any) -> BatchRecord | None:
        """`update_batch` only while the record is in one of `stages`, in one conditional write; None when not.

        Two runs of one step (a retry beside a slow original) must not move a record back.
        """

    def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    def list_batches(self, kind: str, stages: Iterable[Stage] | None = None) -> list[BatchRecord]:
        """Records of `kind` (all stages when None), oldest first."""

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float, holder: LockHolder | None = None,
                     replacing: str | None = None) -> bool:
        """Take a free or expired lease, or renew our own; also one `replacing` still holds (a dead holder's).

        One conditional write, so of two processes taking the same lease over, one wins.
        """

    def heartbeat_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Extend the lease only while `owner` still holds it."""

    def release_lock(self, name: str, owner: str) -> bool: ...

    def lock_owner(self, name: str) -> str | None:
        """The owner of an unexpired lease, else None."""

    def lock_state(self, name: str) -> LockState | None:
        """The unexpired lease with its holder's process, else None."""


class ObjectNotFound(KeyError):
    """The key names no object."""


class ObjectStore(Protocol):
    """Flat keys (`batches/lines/...`) to whole objects; a put is atomic."""

    def put_file(self, key: str, path: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, dest: Path) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str:
        """Where the object lives, for a person to find it: a file path, or s3://bucket/key."""


@dataclass
class ProviderBatch:
    """What the provider says about one batch, in the Batch API's terms.

    `queue_full` marks a batch the provider failed only because its queue of
    enqueued tokens for the model was full: nothing in it was wrong, so it is
    sent again later rather than counted against its items' attempts.
    """

    id: str
    status: str
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    created_at: int = 0
    expires_at: int | None = None
    finalizing_at: int | None = None
    prompt_tokens: int = 0
    queue_full: bool = False
    model: str | None = None


class BatchNotFound(LookupError):
    """The provider has no batch by that id (deleted, or another account's): it will never finish."""


class EnqueuedLimitReached(RuntimeError):
    """The provider refused a new batch because the model's enqueued-token limit is reached.

    Raised by `create_batch`; the batch waits as PREPARED for a later submit.
    """


class BatchProvider(Protocol):
    """An asynchronous batch embedding service speaking the Batch API's file format.

    `request_dimensions` is what request bodies name as `dimensions`: None
    where the model's size is fixed or native (some models reject the
    parameter). `enqueued_token_limit` bounds the tokens of batches in flight
    at once for the model; None means no bound. `tokenizer` counts as the
    model does, so budgets, cuts and estimates are in the tokens it bills.
    """

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    @property
    def request_dimensions(self) -> int | None: ...

    @property
    def max_input_tokens(self) -> int: ...

    @property
    def enqueued_token_limit(self) -> int | None: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def upload(self, path: Path) -> str: ...

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> ProviderBatch: ...

    def find_batches(self, metadata: dict[str, str], since: float | None = None) -> list[ProviderBatch]:
        """Batches whose metadata holds every given pair, for reconciling a lost submission.

        `since` (epoch seconds) lets a provider stop listing at batches created
        before it, so reconciling stays cheap however long the history is.
        """

    def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        """The batch's current state; raises BatchNotFound when the provider has no such batch."""

    def download(self, file_id: str, dest: Path) -> None:
        """Stream a file's content to `dest` (never whole in memory)."""

    def cancel(self, provider_batch_id: str) -> ProviderBatch:
        """Ask the provider to stop; a batch already finished comes back unchanged."""

    def embed(self, texts: Sequence[str], model: str | None = None, dimensions: int | None = None) -> np.ndarray:
        """Synchronous embeddings (float32, one row per text), for search queries.

        `model`/`dimensions` default to the configured ones; search names the
        serving collection's own, which differ while a re-embed runs.
        """
