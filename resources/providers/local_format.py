"""The Batch API's file formats on the local provider: input checks, response lines, batch objects.

What is accepted and answered here matches OpenAI's Batch API, so what works
against the local provider also works against OpenAI.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from embedding_assets.domain.ports import ProviderBatch
from resources.providers.local_model import MODEL, WordLlamaModel, truncate

_MAX_REQUESTS = 50_000
_MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
_MAX_FILE_ERRORS = 100


class InvalidRequest(Exception):
    """A request the batch answers with a 400 line."""


@dataclass
class EmbeddingRequest:
    custom_id: str
    token_ids: list[np.ndarray]
    dimensions: int
    encoding_format: str

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


def file_problems(path: Path) -> list[dict[str, Any]]:
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


def request_rows(src: BinaryIO) -> Iterator[dict[str, Any]]:
    for line in src:
        if line.strip():
            yield orjson.loads(line)


def write_responses(model: WordLlamaModel, requests: list[EmbeddingRequest], out: BinaryIO) -> int:
    """Embed the requests' inputs together, write one 200 line per request; returns tokens."""
    vectors = model.pool([ids for request in requests for ids in request.token_ids])
    tokens = 0
    start = 0
    for request in requests:
        stop = start + len(request.token_ids)
        block = truncate(vectors[start:stop], request.dimensions)
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


def error_line(custom_id: str, message: str) -> bytes:
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


def publish(tmp: Path, path: Path, lines: int) -> str | None:
    """Move a finished result file into place; an empty one is dropped, as the Batch API does."""
    if not lines:
        tmp.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return None
    os.replace(tmp, path)
    return path.name


def check_metadata(metadata: dict[str, str]) -> None:
    """The Batch API's metadata limits, so what works here also works against OpenAI."""
    if len(metadata) > 16:
        raise ValueError("batch metadata holds at most 16 pairs")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise ValueError(f"batch metadata {key!r}: keys are strings <= 64 chars, values strings <= 512 chars")


def check_id(value: str, pattern: re.Pattern[str]) -> None:
    """Ids become file names, so only the exact shapes this provider issues are accepted."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not an id of the form {pattern.pattern}")


def provider_batch(state: dict[str, Any]) -> ProviderBatch:
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
