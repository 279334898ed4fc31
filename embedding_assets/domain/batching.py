"""Packing receipts' requests into request files under the provider's budgets.

A file is one provider batch, so its limits are the Batch API's (requests and
bytes per file) plus an optional token budget that keeps a batch under the
provider's enqueued-token limit. A receipt is never split: its rows are
context for one another, and it keeps claims and releases per receipt.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from embedding_assets.domain.formatting import ReceiptRequests, Request

MAX_REQUESTS_PER_FILE = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class Budget:
    max_requests: int = MAX_REQUESTS_PER_FILE
    # Kept below the hard 200 MB so that a rounding in the provider's count never rejects a file.
    max_bytes: int = MAX_FILE_BYTES - 1024 * 1024
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1 or (self.max_tokens is not None and self.max_tokens < 1):
            raise ValueError(f"budget limits must be positive: {self}")


@dataclass
class PlannedFile:
    """Receipts that go into one request file, with the encoded lines ready to write."""

    receipts: list[ReceiptRequests] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    bytes: int = 0
    tokens: int = 0

    @property
    def request_count(self) -> int:
        return len(self.lines)


def request_line(request: Request, model: str, dimensions: int | None) -> bytes:
    """One JSONL line of a Batch API input file; base64 vectors parse ~20x faster than float lists."""
    body: dict = {"model": model, "input": request.input, "encoding_format": "base64"}
    if dimensions:
        body["dimensions"] = dimensions
    return (
        orjson.dumps({"custom_id": request.custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}) + b"\n"
    )


def plan_files(
    receipts: Iterable[ReceiptRequests],
    budget: Budget,
    model: str,
    dimensions: int | None,
    oversized: list[tuple[ReceiptRequests, str]],
) -> Iterator[PlannedFile]:
    """Yield files as they fill, so a run over millions of items holds one file at a time.

    A receipt larger than a whole file's budget cannot be sent without being
    split; it is appended to `oversized` with the reason and the others go on.
    """
    current = PlannedFile()
    for receipt in receipts:
        if not receipt.requests:
            continue
        lines = [request_line(r, model, dimensions) for r in receipt.requests]
        size = sum(len(line) for line in lines)
        tokens = sum(r.tokens for r in receipt.requests)
        if (
            len(lines) > budget.max_requests
            or size > budget.max_bytes
            or (budget.max_tokens is not None and tokens > budget.max_tokens)
        ):
            oversized.append(
                (receipt, f"receipt needs {len(lines)} requests, {size} bytes, {tokens} tokens: over {budget}")
            )
            continue
        fits = (
            current.request_count + len(lines) <= budget.max_requests
            and current.bytes + size <= budget.max_bytes
            and (budget.max_tokens is None or current.tokens + tokens <= budget.max_tokens)
        )
        if not fits:
            yield current
            current = PlannedFile()
        current.receipts.append(receipt)
        current.lines.extend(lines)
        current.bytes += size
        current.tokens += tokens
    if current.lines:
        yield current


def queue_cycles(file_tokens: Iterable[int], limit: int | None) -> int:
    """How many times the provider's queue must fill and drain to take these files, sent strictly in order.

    A cycle sends files while their tokens fit in the enqueued-token limit
    and then waits for them all to finish, as `submit` holds the rest back.
    No limit means one cycle; no file means none.
    """
    cycles, queued = 0, 0
    for tokens in file_tokens:
        if cycles == 0 or (limit is not None and queued + tokens > limit):
            cycles, queued = cycles + 1, 0
        queued += tokens
    return cycles
