"""The offline batch provider: OpenAI's Batch API lifecycle on local files.

It exists so the whole pipeline (upload, create, poll, download, parse) runs
the same code paths with no key, no network and no cost. Files and batches
live under `root` (`files/{file_id}`, `batches/{batch_id}.json`, the latter
holding the Batch API's batch object), and output and error files use the
Batch API's exact line format.

The model is wordllama's, offline (see local_model.py); the file formats are in local_format.py.

Lifecycle decisions:
- A batch is processed inside the first `retrieve` that sees it `validating`
  or `in_progress`, under an exclusive per-batch file lock, so concurrent
  pollers (sensor and runs) never process it twice and `cancel` never races
  processing. `retrieve` therefore returns a terminal status.
- Validation is in two tiers, as the Batch API does it. The file fails as a
  whole (status `failed`, `errors` set, no files) when it is empty, larger
  than 200 MB, holds more than 50,000 requests, holds a line that is not a
  JSON object with a non-empty string `custom_id`, or repeats a `custom_id`:
  such a line cannot be answered by id. Every other defect (method, url,
  body, model, input, encoding_format, dimensions, token limits) fails only
  its request, with a 400 line in the error file.
- `body.model` must be this provider's model: a request meant for another
  model must not come back labelled as if it had been served.
- `body.dimensions` overrides the provider's `dimensions` per request, as
  OpenAI's does; truncated vectors are re-normalised.
- Output and error file ids derive from the batch id and their content is
  written to fixed temp names, then `os.replace`d, before the batch object
  is: a crash mid-processing leaves the batch `in_progress`, and the next
  `retrieve` redoes it over the same names.
- Like OpenAI, an empty output or error file is not created (its id is
  None): a batch whose every request failed is `completed` with no output.
- `cancel` of a terminal batch returns it unchanged rather than raising, so
  a caller reconciling state can cancel without first checking.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from embedding_assets.domain.models import PROVIDER_TERMINAL_STATUSES
from embedding_assets.domain.ports import BatchNotFound, ProviderBatch
from resources.object_store.local import atomic_write
from resources.providers.local_format import (
    MAX_INPUTS_PER_REQUEST,
    MAX_TOKENS_PER_REQUEST,
    EmbeddingRequest,
    InvalidRequest,
    check_id,
    check_metadata,
    error_line,
    file_problems,
    provider_batch,
    publish,
    request_rows,
    write_responses,
)
from resources.providers.local_model import (
    MODEL,
    NATIVE_DIMENSIONS,
    WordLlamaModel,
    check_dimensions,
    load_model,
    truncate,
)

_EMBED_CHUNK_INPUTS = 1024
_COMPLETION_WINDOW = 24 * 3600
_FILE_ID = re.compile(r"file-[0-9a-f]{24}")
_BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
_COPY_CHUNK = 1 << 20


class LocalBatchProvider:
    """BatchProvider over a local folder, computing embeddings with wordllama."""

    name = "local"
    model = MODEL
    max_input_tokens = 8192
    # Free and local: nothing to queue behind.
    enqueued_token_limit = None

    def __init__(self, root: Path, dimensions: int | None = None) -> None:
        self.dimensions = NATIVE_DIMENSIONS if dimensions is None else check_dimensions(dimensions)
        self.request_dimensions = self.dimensions
        self.root = Path(root)
        self._files = self.root / "files"
        self._batches = self.root / "batches"
        self._files.mkdir(parents=True, exist_ok=True)
        self._batches.mkdir(parents=True, exist_ok=True)

    @property
    def tokenizer(self) -> WordLlamaModel:
        return load_model()

    def upload(self, path: Path) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with open(path, "rb") as src:
            atomic_write(self._files / file_id, lambda dst: shutil.copyfileobj(src, dst, _COPY_CHUNK))
        return file_id

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> ProviderBatch:
        if not self._file_path(input_file_id).is_file():
            raise FileNotFoundError(f"no local file {input_file_id}")
        check_metadata(metadata)
        now = int(time.time())
        state = {
            "id": f"batch_{uuid.uuid4().hex[:24]}",
            "object": "batch",
            "endpoint": "/v1/embeddings",
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + _COMPLETION_WINDOW,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
            "metadata": dict(metadata),
        }
        self._save(state)
        return provider_batch(state)

    def find_batches(self, metadata: dict[str, str], since: float | None = None) -> list[ProviderBatch]:
        found = []
        for path in self._batches.glob("batch_*.json"):
            state = orjson.loads(path.read_bytes())
            recent = since is None or state["created_at"] >= since
            if recent and all(state["metadata"].get(k) == v for k, v in metadata.items()):
                found.append(state)
        found.sort(key=lambda s: (s["created_at"], s["id"]))
        return [provider_batch(s) for s in found]

    def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        with self._locked(provider_batch_id):
            state = self._load(provider_batch_id)
            if state["status"] in ("validating", "in_progress"):
                self._process(state)
            return provider_batch(state)

    def download(self, file_id: str, dest: Path) -> None:
        try:
            src = open(self._file_path(file_id), "rb")  # noqa: SIM115 - closed by the `with` below
        except FileNotFoundError:
            raise FileNotFoundError(f"no local file {file_id}") from None
        with src:
            atomic_write(Path(dest), lambda dst: shutil.copyfileobj(src, dst, _COPY_CHUNK))

    def cancel(self, provider_batch_id: str) -> ProviderBatch:
        with self._locked(provider_batch_id):
            state = self._load(provider_batch_id)
            if state["status"] not in PROVIDER_TERMINAL_STATUSES:
                now = int(time.time())
                state.update(status="cancelled", cancelling_at=now, cancelled_at=now)
                for file_id in self._result_file_ids(state["id"]):
                    self._temp_path(file_id).unlink(missing_ok=True)
                self._save(state)
            return provider_batch(state)

    def embed(self, texts: Sequence[str], model: str | None = None, dimensions: int | None = None) -> np.ndarray:
        if model not in (None, self.model):
            raise ValueError(f"The model {model!r} is not served here; use {self.model!r}.")
        size = self.dimensions if dimensions is None else check_dimensions(dimensions)
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str) or not text:
                raise ValueError("embed() takes non-empty strings only")
        if not texts:
            return np.empty((0, size), dtype=np.float32)
        loaded = load_model()
        token_ids = loaded.token_ids(texts)
        longest = max(len(ids) for ids in token_ids)
        if longest > self.max_input_tokens:
            raise ValueError(f"an input has {longest} tokens; the limit is {self.max_input_tokens}")
        return truncate(loaded.pool(token_ids), size)

    def _process(self, state: dict[str, Any]) -> None:
        """Validate the input file, then answer every request; updates `state` in place and saves it."""
        now = int(time.time())
        input_path = self._file_path(state["input_file_id"])
        problems = file_problems(input_path)
        if problems:
            state.update(status="failed", failed_at=now, errors={"object": "list", "data": problems})
            self._save(state)
            return
        state.update(status="in_progress", in_progress_at=state["in_progress_at"] or now)
        self._save(state)

        output_id, error_id = self._result_file_ids(state["id"])
        output_tmp, error_tmp = self._temp_path(output_id), self._temp_path(error_id)
        with open(input_path, "rb") as src, open(output_tmp, "wb") as out, open(error_tmp, "wb") as err:
            counts = self._answer(request_rows(src), out, err)
            for f in (out, err):
                f.flush()
                os.fsync(f.fileno())
        completed, failed, tokens = counts

        state["output_file_id"] = publish(output_tmp, self._files / output_id, completed)
        state["error_file_id"] = publish(error_tmp, self._files / error_id, failed)
        now = int(time.time())
        state.update(
            status="completed",
            finalizing_at=now,
            completed_at=now,
            request_counts={"total": completed + failed, "completed": completed, "failed": failed},
            usage={"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens},
        )
        self._save(state)

    def _answer(self, rows: Iterator[dict[str, Any]], out: BinaryIO, err: BinaryIO) -> tuple[int, int, int]:
        """Write a response line per request; returns (completed, failed, prompt tokens)."""
        model = load_model()
        completed = failed = tokens = 0
        pending: list[EmbeddingRequest] = []
        pending_inputs = 0
        for row in rows:
            try:
                request = self._request(model, row)
            except InvalidRequest as exc:
                err.write(error_line(row["custom_id"], str(exc)))
                failed += 1
                continue
            pending.append(request)
            pending_inputs += len(request.token_ids)
            if pending_inputs >= _EMBED_CHUNK_INPUTS:
                tokens += write_responses(model, pending, out)
                completed += len(pending)
                pending, pending_inputs = [], 0
        if pending:
            tokens += write_responses(model, pending, out)
            completed += len(pending)
        return completed, failed, tokens

    def _request(self, model: WordLlamaModel, row: dict[str, Any]) -> EmbeddingRequest:
        if row.get("method") != "POST":
            raise InvalidRequest("'method' must be 'POST'.")
        if row.get("url") != "/v1/embeddings":
            raise InvalidRequest(f"'url' {row.get('url')!r} is not '/v1/embeddings'.")
        body = row.get("body")
        if not isinstance(body, dict):
            raise InvalidRequest("'body' must be an object.")
        if body.get("model") != self.model:
            raise InvalidRequest(f"The model {body.get('model')!r} is not served here; use {self.model!r}.")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise InvalidRequest("'input' must be a non-empty string or a non-empty list of non-empty strings.")
        if len(texts) > MAX_INPUTS_PER_REQUEST:
            raise InvalidRequest(f"'input' holds {len(texts)} items; the limit is {MAX_INPUTS_PER_REQUEST}.")
        encoding_format = body.get("encoding_format", "float")
        if encoding_format not in ("float", "base64"):
            raise InvalidRequest(f"'encoding_format' {encoding_format!r} is not 'float' or 'base64'.")
        dimensions = body.get("dimensions", self.dimensions)
        try:
            dimensions = check_dimensions(dimensions)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        token_ids = model.token_ids(texts)
        request = EmbeddingRequest(row["custom_id"], token_ids, dimensions, encoding_format)
        longest = max(len(ids) for ids in token_ids)
        if longest > self.max_input_tokens:
            raise InvalidRequest(
                f"This model's maximum context length is {self.max_input_tokens} tokens, "
                f"however you requested {longest} tokens."
            )
        if request.prompt_tokens > MAX_TOKENS_PER_REQUEST:
            raise InvalidRequest(
                f"Requested {request.prompt_tokens} tokens; the limit per request is {MAX_TOKENS_PER_REQUEST}."
            )
        return request

    @contextmanager
    def _locked(self, batch_id: str) -> Iterator[None]:
        check_id(batch_id, _BATCH_ID)
        with open(self._batches / f"{batch_id}.lock", "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _load(self, batch_id: str) -> dict[str, Any]:
        try:
            return orjson.loads((self._batches / f"{batch_id}.json").read_bytes())
        except FileNotFoundError:
            raise BatchNotFound(f"no local batch {batch_id}") from None

    def _save(self, state: dict[str, Any]) -> None:
        data = orjson.dumps(state, option=orjson.OPT_INDENT_2)
        atomic_write(self._batches / f"{state['id']}.json", lambda dst: dst.write(data))

    def _file_path(self, file_id: str) -> Path:
        check_id(file_id, _FILE_ID)
        return self._files / file_id

    def _temp_path(self, file_id: str) -> Path:
        return self._files / f".tmp-{file_id}"

    @staticmethod
    def _result_file_ids(batch_id: str) -> tuple[str, str]:
        """Fixed per batch, so reprocessing after a crash overwrites rather than orphans."""

        def file_id(kind: str) -> str:
            return f"file-{hashlib.sha256(f'{batch_id}:{kind}'.encode()).hexdigest()[:24]}"

        return file_id("output"), file_id("error")
