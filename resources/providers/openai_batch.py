"""OpenAI's Batch API behind the BatchProvider protocol, through the official SDK.

A user pays for every batch and waits hours for it, so each call is shaped
by what a failure would cost:

- Creating a batch is the one call that is not safe to repeat: the API takes
  no idempotency key, so a blind retry after a lost answer starts a second,
  paid batch. The SDK's own retries are off for it. After a failure that may
  have reached the server (connection lost, timeout, 5xx) the batch list is
  searched for a batch with our metadata and this input file, and only when
  none is there is the batch created again. A 429 proves nothing was created;
  its Retry-After is honoured up to `MAX_RETRY_AFTER_SECONDS`, beyond which
  the error goes up and the batch waits as PREPARED for the next run.
- Every other call is safe to repeat and uses the SDK's retries (count and
  timeout from settings; the SDK honours Retry-After on 429 and 5xx).
- The provider's enqueued-token limit, answered at creation or as a batch
  `failed` with `token_limit_exceeded`, becomes `EnqueuedLimitReached` or
  `ProviderBatch.queue_full`: the batch is sent again later, its items keep
  their attempts.
- Uploads stream from an open file (the SDK reads a path whole into memory),
  after the file's bytes and request count are checked against the limits.
- Downloads stream into a temp file beside `dest`, are checked against the
  announced length (Content-Length, else the file object's `bytes`) and only
  then renamed to `dest`. A broken or short download starts over into a fresh
  temp file, so `dest` is whole or absent, never partial.
- `find_batches` relies on the list being newest first and stops at `since`.
- Request bodies name `dimensions` only when it differs from the model's
  native size; ada-002 rejects the parameter outright.
- Output and error files are kept `output_expires_after_seconds` (7 days by
  default) after they are written, so an ingest retried days later still
  finds them.
- Tokens are counted with the models' own encoding (`cl100k_base`, offline):
  what the batch's `usage` will bill, and what its enqueued-token queue holds.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openai

from embedding_assets.domain import openai_models
from embedding_assets.domain.batching import MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from embedding_assets.domain.ports import BatchNotFound, EnqueuedLimitReached, ProviderBatch
from embedding_assets.domain.tokens import TiktokenCounter, cl100k

try:  # the SDK's HTTP client: httpx2 from openai 3 on, httpx before
    import httpx2 as _http
except ImportError:  # pragma: no cover - only with openai < 3
    import httpx as _http  # type: ignore[no-redef]

MAX_INPUTS_PER_REQUEST = 2048
MAX_RETRY_AFTER_SECONDS = 120.0
_MAX_BACKOFF_SECONDS = 30.0
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_CHUNK = 1 << 20
_MAX_METADATA_PAIRS, _MAX_METADATA_KEY, _MAX_METADATA_VALUE = 16, 64, 512


class DownloadFailed(OSError):
    """A result file could not be fetched whole within the allowed attempts."""


class _Incomplete(Exception):
    """The connection ended before the whole file arrived."""


class OpenAIBatchProvider:
    """BatchProvider over OpenAI's Batch API (endpoint /v1/embeddings, 24 h window)."""

    name = "openai"
    max_input_tokens = openai_models.MAX_INPUT_TOKENS

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None = None,
        model: str | None = None,
        dimensions: int | None = None,
        max_retries: int = 5,
        timeout_seconds: float = 600.0,
        enqueued_token_limit: int | None = None,
        download_attempts: int = 5,
        backoff_seconds: float = 1.0,
        output_expires_after_seconds: int = openai_models.DEFAULT_OUTPUT_EXPIRES_AFTER_SECONDS,
    ) -> None:
        if not api_key:
            raise ValueError("OPENAI_API_KEY is required for the openai provider")
        self.model = model or openai_models.DEFAULT_MODEL
        self.dimensions = openai_models.resolve_dimensions(self.model, dimensions)
        self.request_dimensions = openai_models.request_dimensions(self.model, self.dimensions)
        self.enqueued_token_limit = openai_models.enqueued_token_limit(self.model, enqueued_token_limit)
        self.max_retries = max_retries
        self.download_attempts = max(1, download_attempts)
        self.backoff_seconds = backoff_seconds
        self.output_expires_after_seconds = openai_models.check_output_expiry(output_expires_after_seconds)
        self._client = openai_client(api_key, base_url, max_retries, timeout_seconds)
        self._create_client = self._client.with_options(max_retries=0)

    @property
    def tokenizer(self) -> TiktokenCounter:
        return cl100k()

    # ------------------------------------------------------------- batches
    def upload(self, path: Path) -> str:
        path = Path(path)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{path.name} holds {size} bytes; a batch input file may hold at most {MAX_FILE_BYTES}")
        with path.open("rb") as f:
            requests = sum(1 for line in f if line.strip())
        if not requests or requests > MAX_REQUESTS_PER_FILE:
            raise ValueError(f"{path.name} holds {requests} requests; a batch needs 1 to {MAX_REQUESTS_PER_FILE}")
        with path.open("rb") as f:
            return self._client.files.create(file=(path.name, f, "application/jsonl"), purpose="batch").id

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> ProviderBatch:
        _check_metadata(metadata)
        started = time.time()
        error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                adopted = self._created_by(input_file_id, metadata, started)
                if adopted is not None:
                    return adopted
            try:
                batch = self._create_client.batches.create(
                    input_file_id=input_file_id, endpoint="/v1/embeddings", completion_window="24h", metadata=metadata,
                    output_expires_after={"anchor": "created_at", "seconds": self.output_expires_after_seconds},
                )
                return _provider_batch(batch)
            except openai.RateLimitError as exc:
                if _queue_full(exc.code, exc.message):
                    raise EnqueuedLimitReached(exc.message) from exc
                delay = _retry_after(exc)
                if delay is not None and delay > MAX_RETRY_AFTER_SECONDS:
                    raise
                error = exc
                time.sleep(self._backoff(attempt) if delay is None else delay)
            except openai.BadRequestError as exc:
                if _queue_full(exc.code, exc.message):
                    raise EnqueuedLimitReached(exc.message) from exc
                raise
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                error = exc
                time.sleep(self._backoff(attempt))
        assert error is not None
        adopted = self._created_by(input_file_id, metadata, started)
        if adopted is not None:
            return adopted
        raise error

    def _created_by(self, input_file_id: str, metadata: dict[str, str], started: float) -> ProviderBatch | None:
        """The batch an earlier attempt created even though its answer was lost, if any."""
        since = started - 300  # the server's clock may lag ours
        for batch in self.find_batches(metadata, since=since):
            if batch.input_file_id == input_file_id:
                return batch
        return None

    def find_batches(self, metadata: dict[str, str], since: float | None = None) -> list[ProviderBatch]:
        found = []
        for batch in self._client.batches.list(limit=100):
            if since is not None and batch.created_at < since:
                break
            held = batch.metadata or {}
            if all(held.get(k) == v for k, v in metadata.items()):
                found.append(_provider_batch(batch))
        found.sort(key=lambda b: (b.created_at, b.id))
        return found

    def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        try:
            return _provider_batch(self._client.batches.retrieve(provider_batch_id))
        except openai.NotFoundError as exc:
            raise BatchNotFound(f"the provider has no batch {provider_batch_id}: {exc}") from exc

    def cancel(self, provider_batch_id: str) -> ProviderBatch:
        try:
            return _provider_batch(self._client.batches.cancel(provider_batch_id))
        except (openai.BadRequestError, openai.ConflictError):
            batch = self.retrieve(provider_batch_id)
            if batch.status in _TERMINAL or batch.status == "cancelling":
                return batch
            raise

    # --------------------------------------------------------------- files
    def download(self, file_id: str, dest: Path) -> None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        error: Exception | None = None
        for attempt in range(self.download_attempts):
            if attempt:
                time.sleep(self._backoff(attempt - 1))
            part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                self._fetch(file_id, part)
                os.replace(part, dest)
                return
            except (_Incomplete, _http.HTTPError, openai.APIConnectionError, openai.InternalServerError,
                    openai.RateLimitError) as exc:
                error = exc
            finally:
                part.unlink(missing_ok=True)
        raise DownloadFailed(f"file {file_id}: no whole download in {self.download_attempts} attempts: {error}")

    def _fetch(self, file_id: str, part: Path) -> None:
        with self._client.files.with_streaming_response.content(file_id) as response:
            announced = response.headers.get("content-length")
            encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
            with part.open("wb") as f:
                for chunk in response.iter_bytes(_CHUNK):
                    f.write(chunk)
        size = part.stat().st_size
        if announced is not None and not encoded:
            expected = int(announced)
        else:
            expected = self._client.files.retrieve(file_id).bytes or size
        if size != expected:
            raise _Incomplete(f"got {size} of {expected} bytes")

    # ---------------------------------------------------------------- sync
    def embed(self, texts: Sequence[str], model: str | None = None, dimensions: int | None = None) -> np.ndarray:
        model = model or self.model
        size = openai_models.resolve_dimensions(model, dimensions if dimensions is not None else
                                                (self.dimensions if model == self.model else None))
        texts = list(texts)
        if not all(isinstance(t, str) and t for t in texts):
            raise ValueError("embed() takes non-empty strings only")
        out = np.empty((len(texts), size), dtype=np.float32)
        named = openai_models.request_dimensions(model, size)
        extra: dict[str, Any] = {"dimensions": named} if named else {}
        for start in range(0, len(texts), MAX_INPUTS_PER_REQUEST):
            chunk = texts[start:start + MAX_INPUTS_PER_REQUEST]
            response = self._client.embeddings.create(model=model, input=chunk, **extra)
            if len(response.data) != len(chunk):
                raise ValueError(f"asked for {len(chunk)} embeddings, got {len(response.data)}")
            for item in response.data:
                vector = np.asarray(item.embedding, dtype=np.float32)
                if vector.shape != (size,):
                    raise ValueError(f"embedding has {vector.size} dimensions, expected {size}")
                out[start + item.index] = vector
        return out

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_seconds * 2 ** attempt, _MAX_BACKOFF_SECONDS)


@functools.cache
def openai_client(api_key: str, base_url: str | None, max_retries: int, timeout_seconds: float) -> openai.OpenAI:
    """One client (and connection pool) per configuration and process: a provider is opened every sensor tick."""
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_seconds)


def _provider_batch(batch: Any) -> ProviderBatch:
    counts = batch.request_counts
    errors = list(batch.errors.data or []) if batch.errors else []
    return ProviderBatch(
        id=batch.id,
        status=batch.status,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        metadata=dict(batch.metadata or {}),
        errors=[_describe(e) for e in errors],
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        finalizing_at=batch.finalizing_at,
        prompt_tokens=getattr(batch.usage, "input_tokens", 0) or 0,
        queue_full=batch.status == "failed" and any(_queue_full(e.code, e.message) for e in errors),
        model=getattr(batch, "model", None),
    )


def _describe(error: Any) -> str:
    where = f" (line {error.line})" if error.line else ""
    return f"{error.code or 'error'}{where}: {error.message or 'no message'}"


def _queue_full(code: str | None, message: str | None) -> bool:
    return code == "token_limit_exceeded" or "enqueued token limit" in (message or "").lower()


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > _MAX_METADATA_PAIRS:
        raise ValueError(f"batch metadata holds {len(metadata)} pairs; the limit is {_MAX_METADATA_PAIRS}")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > _MAX_METADATA_KEY or len(value) > _MAX_METADATA_VALUE:
            raise ValueError(f"batch metadata {key!r}: keys up to {_MAX_METADATA_KEY} chars, "
                             f"string values up to {_MAX_METADATA_VALUE}")
