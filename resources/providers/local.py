"""The offline batch provider: OpenAI's Batch API lifecycle on local files.

It exists so the whole pipeline (upload, create, poll, download, parse) runs
the same code paths with no key, no network and no cost. Files and batches
live under `root` (`files/{file_id}`, `batches/{batch_id}.json`, the latter
holding the Batch API's batch object), and output and error files use the
Batch API's exact line format.

Model: wordllama's l2_supercat_256, a static token-embedding table that ships
in the wheel. wordllama's own `load()` looks in the wrong folder and may try
the network, so the weights and tokenizer are read straight from the package
directory, once per process. Embeddings are the mean of the input's token
vectors, L2-normalised: what `WordLlamaInference.embed(norm=True)` computes,
but pooled over the concatenated token ids rather than a padded batch, so
memory follows the number of tokens rather than batch size x longest input,
and the one tokenisation also gives the usage counts.

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

import base64
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from embedding_assets.domain.ports import BatchNotFound, ProviderBatch
from resources.object_store.local import atomic_write

MODEL = "wordllama-l2-supercat-256"
NATIVE_DIMENSIONS = 256

_MAX_REQUESTS = 50_000
_MAX_FILE_BYTES = 200 * 1024 * 1024
_MAX_INPUTS_PER_REQUEST = 2048
_MAX_TOKENS_PER_REQUEST = 300_000
_EMBED_CHUNK_INPUTS = 1024
_POOL_TOKENS = 32_768
_MAX_FILE_ERRORS = 100
_COMPLETION_WINDOW = 24 * 3600
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_FILE_ID = re.compile(r"file-[0-9a-f]{24}")
_BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
_COPY_CHUNK = 1 << 20


class _Model:
    """The static embedding table and its tokenizer."""

    def __init__(self, table: np.ndarray, tokenizer: Any) -> None:
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer = tokenizer

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.intp) for e in encodings]

    def pool(self, token_ids: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length mean token vectors; each input must have at least one token.

        Inputs are pooled in groups of at most _POOL_TOKENS gathered token
        vectors (or one longer input), which bounds the working memory.
        """
        out = np.empty((len(token_ids), self.table.shape[1]), dtype=np.float32)
        start = 0
        while start < len(token_ids):
            stop, tokens = start + 1, len(token_ids[start])
            while stop < len(token_ids) and tokens + len(token_ids[stop]) <= _POOL_TOKENS:
                tokens += len(token_ids[stop])
                stop += 1
            group = token_ids[start:stop]
            lengths = np.array([len(ids) for ids in group], dtype=np.intp)
            offsets = np.concatenate(([0], np.cumsum(lengths[:-1])))
            sums = np.add.reduceat(self.table[np.concatenate(group)], offsets, axis=0)
            out[start:stop] = sums / lengths[:, None].astype(np.float32)
            start = stop
        return _normalise(out)


_model: _Model | None = None
_model_lock = threading.Lock()


def load_model() -> _Model:
    """The process-wide model, read from the installed wordllama package on first use."""
    global _model
    with _model_lock:
        if _model is None:
            from safetensors import safe_open
            from tokenizers import Tokenizer

            spec = importlib.util.find_spec("wordllama")
            if spec is None or not spec.submodule_search_locations:
                raise RuntimeError("the wordllama package is not installed")
            package = Path(next(iter(spec.submodule_search_locations)))
            weights = package / "weights" / "l2_supercat_256.safetensors"
            tokenizer = package / "tokenizers" / "l2_supercat_tokenizer_config.json"
            with safe_open(str(weights), framework="np", device="cpu") as f:
                table = f.get_tensor("embedding.weight")
            _model = _Model(table, Tokenizer.from_file(str(tokenizer)))
        return _model


class _Invalid(Exception):
    """A request the batch answers with a 400 line."""


@dataclass
class _Request:
    custom_id: str
    token_ids: list[np.ndarray]
    dimensions: int
    encoding_format: str

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


class LocalBatchProvider:
    """BatchProvider over a local folder, computing embeddings with wordllama."""

    name = "local"
    model = MODEL
    max_input_tokens = 8192
    # Free and local: nothing to queue behind.
    enqueued_token_limit = None

    def __init__(self, root: Path, dimensions: int | None = None) -> None:
        self.dimensions = NATIVE_DIMENSIONS if dimensions is None else _check_dimensions(dimensions)
        self.request_dimensions = self.dimensions
        self.root = Path(root)
        self._files = self.root / "files"
        self._batches = self.root / "batches"
        self._files.mkdir(parents=True, exist_ok=True)
        self._batches.mkdir(parents=True, exist_ok=True)

    def upload(self, path: Path) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with open(path, "rb") as src:
            atomic_write(self._files / file_id, lambda dst: shutil.copyfileobj(src, dst, _COPY_CHUNK))
        return file_id

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> ProviderBatch:
        if not self._file_path(input_file_id).is_file():
            raise FileNotFoundError(f"no local file {input_file_id}")
        _check_metadata(metadata)
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
        return _provider_batch(state)

    def find_batches(self, metadata: dict[str, str], since: float | None = None) -> list[ProviderBatch]:
        found = []
        for path in self._batches.glob("batch_*.json"):
            state = orjson.loads(path.read_bytes())
            recent = since is None or state["created_at"] >= since
            if recent and all(state["metadata"].get(k) == v for k, v in metadata.items()):
                found.append(state)
        found.sort(key=lambda s: (s["created_at"], s["id"]))
        return [_provider_batch(s) for s in found]

    def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        with self._locked(provider_batch_id):
            state = self._load(provider_batch_id)
            if state["status"] in ("validating", "in_progress"):
                self._process(state)
            return _provider_batch(state)

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
            if state["status"] not in _TERMINAL:
                now = int(time.time())
                state.update(status="cancelled", cancelling_at=now, cancelled_at=now)
                for file_id in self._result_file_ids(state["id"]):
                    self._temp_path(file_id).unlink(missing_ok=True)
                self._save(state)
            return _provider_batch(state)

    def embed(self, texts: Sequence[str], model: str | None = None, dimensions: int | None = None) -> np.ndarray:
        if model not in (None, self.model):
            raise ValueError(f"The model {model!r} is not served here; use {self.model!r}.")
        size = self.dimensions if dimensions is None else _check_dimensions(dimensions)
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
        return _truncate(loaded.pool(token_ids), size)

    def _process(self, state: dict[str, Any]) -> None:
        """Validate the input file, then answer every request; updates `state` in place and saves it."""
        now = int(time.time())
        input_path = self._file_path(state["input_file_id"])
        problems = _file_problems(input_path)
        if problems:
            state.update(status="failed", failed_at=now, errors={"object": "list", "data": problems})
            self._save(state)
            return
        state.update(status="in_progress", in_progress_at=state["in_progress_at"] or now)
        self._save(state)

        output_id, error_id = self._result_file_ids(state["id"])
        output_tmp, error_tmp = self._temp_path(output_id), self._temp_path(error_id)
        with open(input_path, "rb") as src, open(output_tmp, "wb") as out, open(error_tmp, "wb") as err:
            counts = self._answer(_rows(src), out, err)
            for f in (out, err):
                f.flush()
                os.fsync(f.fileno())
        completed, failed, tokens = counts

        state["output_file_id"] = _publish(output_tmp, self._files / output_id, completed)
        state["error_file_id"] = _publish(error_tmp, self._files / error_id, failed)
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
        pending: list[_Request] = []
        pending_inputs = 0
        for row in rows:
            try:
                request = self._request(model, row)
            except _Invalid as exc:
                err.write(_error_line(row["custom_id"], str(exc)))
                failed += 1
                continue
            pending.append(request)
            pending_inputs += len(request.token_ids)
            if pending_inputs >= _EMBED_CHUNK_INPUTS:
                tokens += _write_responses(model, pending, out)
                completed += len(pending)
                pending, pending_inputs = [], 0
        if pending:
            tokens += _write_responses(model, pending, out)
            completed += len(pending)
        return completed, failed, tokens

    def _request(self, model: _Model, row: dict[str, Any]) -> _Request:
        if row.get("method") != "POST":
            raise _Invalid("'method' must be 'POST'.")
        if row.get("url") != "/v1/embeddings":
            raise _Invalid(f"'url' {row.get('url')!r} is not '/v1/embeddings'.")
        body = row.get("body")
        if not isinstance(body, dict):
            raise _Invalid("'body' must be an object.")
        if body.get("model") != self.model:
            raise _Invalid(f"The model {body.get('model')!r} is not served here; use {self.model!r}.")
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise _Invalid("'input' must be a non-empty string or a non-empty list of non-empty strings.")
        if len(texts) > _MAX_INPUTS_PER_REQUEST:
            raise _Invalid(f"'input' holds {len(texts)} items; the limit is {_MAX_INPUTS_PER_REQUEST}.")
        encoding_format = body.get("encoding_format", "float")
        if encoding_format not in ("float", "base64"):
            raise _Invalid(f"'encoding_format' {encoding_format!r} is not 'float' or 'base64'.")
        dimensions = body.get("dimensions", self.dimensions)
        try:
            dimensions = _check_dimensions(dimensions)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        token_ids = model.token_ids(texts)
        request = _Request(row["custom_id"], token_ids, dimensions, encoding_format)
        longest = max(len(ids) for ids in token_ids)
        if longest > self.max_input_tokens:
            raise _Invalid(
                f"This model's maximum context length is {self.max_input_tokens} tokens, "
                f"however you requested {longest} tokens."
            )
        if request.prompt_tokens > _MAX_TOKENS_PER_REQUEST:
            raise _Invalid(
                f"Requested {request.prompt_tokens} tokens; the limit per request is {_MAX_TOKENS_PER_REQUEST}."
            )
        return request

    @contextmanager
    def _locked(self, batch_id: str) -> Iterator[None]:
        _check_id(batch_id, _BATCH_ID)
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
        _check_id(file_id, _FILE_ID)
        return self._files / file_id

    def _temp_path(self, file_id: str) -> Path:
        return self._files / f".tmp-{file_id}"

    @staticmethod
    def _result_file_ids(batch_id: str) -> tuple[str, str]:
        """Fixed per batch, so reprocessing after a crash overwrites rather than orphans."""

        def file_id(kind: str) -> str:
            return f"file-{hashlib.sha256(f'{batch_id}:{kind}'.encode()).hexdigest()[:24]}"

        return file_id("output"), file_id("error")


def _file_problems(path: Path) -> list[dict[str, Any]]:
    """File-level validation errors (Batch API `errors.data` items); empty when the file is usable."""
    if path.stat().st_size > _MAX_FILE_BYTES:
        return [_problem("file_too_large", f"The input file exceeds {_MAX_FILE_BYTES} bytes.")]
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    requests = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            requests += 1
            if requests > _MAX_REQUESTS:
                return [_problem("too_many_requests", f"The input file holds more than {_MAX_REQUESTS} requests.")]
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            custom_id = row.get("custom_id") if isinstance(row, dict) else None
            if not isinstance(row, dict):
                problem = _problem("invalid_json_line", "This line is not a JSON object.", number)
            elif not isinstance(custom_id, str) or not custom_id:
                problem = _problem("missing_custom_id", "'custom_id' must be a non-empty string.", number)
            elif custom_id in seen:
                problem = _problem("duplicate_custom_id", f"The custom_id {custom_id!r} is repeated.", number)
            else:
                seen.add(custom_id)
                continue
            if len(problems) < _MAX_FILE_ERRORS:
                problems.append(problem)
    if not requests:
        return [_problem("empty_file", "The input file holds no requests.")]
    return problems


def _problem(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _rows(src: BinaryIO) -> Iterator[dict[str, Any]]:
    for line in src:
        if line.strip():
            yield orjson.loads(line)


def _write_responses(model: _Model, requests: list[_Request], out: BinaryIO) -> int:
    """Embed the requests' inputs together, write one 200 line per request; returns tokens."""
    vectors = model.pool([ids for request in requests for ids in request.token_ids])
    tokens = 0
    start = 0
    for request in requests:
        stop = start + len(request.token_ids)
        block = _truncate(vectors[start:stop], request.dimensions)
        start = stop
        if request.encoding_format == "base64":
            data = [_item(i, base64.b64encode(v.astype("<f4").tobytes()).decode()) for i, v in enumerate(block)]
        else:
            data = [_item(i, v) for i, v in enumerate(block)]
        tokens += request.prompt_tokens
        body = {
            "object": "list",
            "data": data,
            "model": MODEL,
            "usage": {"prompt_tokens": request.prompt_tokens, "total_tokens": request.prompt_tokens},
        }
        out.write(_line(request.custom_id, 200, body))
    return tokens


def _item(index: int, embedding: Any) -> dict[str, Any]:
    return {"object": "embedding", "index": index, "embedding": embedding}


def _error_line(custom_id: str, message: str) -> bytes:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return _line(custom_id, 400, body)


def _line(custom_id: str, status_code: int, body: dict[str, Any]) -> bytes:
    row = {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": uuid.uuid4().hex, "body": body},
        "error": None,
    }
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


def _publish(tmp: Path, path: Path, lines: int) -> str | None:
    """Move a finished result file into place; an empty one is dropped, as the Batch API does."""
    if not lines:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return None
    os.replace(tmp, path)
    return path.name


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=vectors, where=norms > 0)


def _truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """OpenAI-style `dimensions`: keep the leading components and re-normalise."""
    if dimensions == vectors.shape[1]:
        return vectors
    return _normalise(np.array(vectors[:, :dimensions]))


def _check_dimensions(dimensions: Any) -> int:
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= NATIVE_DIMENSIONS:
        raise ValueError(f"dimensions must be an integer from 1 to {NATIVE_DIMENSIONS}, got {dimensions!r}")
    return dimensions


def _check_metadata(metadata: dict[str, str]) -> None:
    """The Batch API's metadata limits, so what works here also works against OpenAI."""
    if len(metadata) > 16:
        raise ValueError("batch metadata holds at most 16 pairs")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise ValueError(f"batch metadata {key!r}: keys are strings <= 64 chars, values strings <= 512 chars")


def _check_id(value: str, pattern: re.Pattern[str]) -> None:
    """Ids become file names, so only the exact shapes this provider issues are accepted."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not an id of the form {pattern.pattern}")


def _provider_batch(state: dict[str, Any]) -> ProviderBatch:
    errors = (state.get("errors") or {}).get("data") or []
    counts = state["request_counts"]
    return ProviderBatch(
        id=state["id"],
        status=state["status"],
        input_file_id=state["input_file_id"],
        output_file_id=state["output_file_id"],
        error_file_id=state["error_file_id"],
        total=counts["total"],
        completed=counts["completed"],
        failed=counts["failed"],
        metadata=dict(state["metadata"]),
        errors=[
            f"{e['code']}" + (f" (line {e['line']})" if e.get("line") else "") + f": {e['message']}"
            for e in errors
        ],
        created_at=state["created_at"],
        expires_at=state["expires_at"],
        finalizing_at=state["finalizing_at"],
        prompt_tokens=state["usage"]["input_tokens"],
    )

