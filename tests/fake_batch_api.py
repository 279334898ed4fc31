"""A loopback server that speaks OpenAI's Batch API, for driving the real SDK in tests.

Endpoints, as the SDK calls them: POST /v1/files (multipart), GET
/v1/files/{id}, GET /v1/files/{id}/content, POST /v1/batches, GET
/v1/batches (newest first; `after`, `limit`, `has_more`, `first_id`,
`last_id`), GET /v1/batches/{id}, POST /v1/batches/{id}/cancel, POST
/v1/embeddings.

A batch moves one status per retrieve: validating -> in_progress ->
finalizing -> its end, and is processed on the step into its end. Vectors
are unit vectors seeded by a hash of the input (`fake_vector`), and tokens
are counted with the models' own encoding (`fake_tokens`, cl100k_base) into
per-line and per-batch usage, so a test can check both the vectors that land
and what they cost. Batch objects carry `model` and `usage` as newer batches
do; `output_expires_after` is checked and sets the result files' expiry. An
enqueued-token limit (`Switches.enqueued_limit`) fails a batch that would
take the tokens of live batches past it with `token_limit_exceeded`;
`peak_enqueued` is the most the queue held. `Switches` make the server
misbehave the ways the real one does; `faults` answer chosen calls with an
HTTP error first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from embedding_assets.domain.tokens import cl100k

NATIVE = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
TERMINAL = ("completed", "failed", "expired", "cancelled")
STEPS = ("validating", "in_progress", "finalizing")


def fake_tokens(text: str) -> int:
    """What the real API bills for one input: its cl100k_base tokens."""
    return cl100k().count(text)


def fake_vector(text: str, dimensions: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dimensions).astype(np.float32)
    return vector / np.linalg.norm(vector)


@dataclass
class Fault:
    """Answer the next `times` calls of `method path...` with `status` (and Retry-After, error code when given)."""

    method: str
    path: str
    status: int
    times: int = 1
    retry_after: str | None = None
    code: str | None = None
    message: str | None = None


@dataclass
class Switches:
    shuffle: bool = False
    fail_share: float = 0.0  # requests failing with a 400 line, chosen by a hash of the custom_id
    all_fail: bool = False  # every request fails: completed, no output file
    expire_after: int | None = None  # the batch expires with only this many requests done
    fail_validation: int = 0  # the next N batches fail validation as a whole
    enqueued_limit: int | None = None  # tokens in live batches beyond which a batch fails token_limit_exceeded
    cancel_keeps: int = 0  # requests done by the time a cancelled batch stops
    ignore_base64: bool = False  # float lists whatever the request asked
    cut_downloads: int = 0  # the next N file downloads stop half way
    drop_create_responses: int = 0  # the next N batch creations succeed but the answer never arrives
    stuck_finalizing: bool = False  # batches stay in finalizing, started hours ago
    batch_usage: bool = True  # batch objects carry `usage` (only newer batches do)


class FakeBatchAPI:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.switches = Switches()
        self.faults: list[Fault] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.call_times: list[float] = []
        self.peak_enqueued = 0
        self.lock = threading.RLock()
        self._seq = 0
        self._internal: dict[str, dict[str, Any]] = {}
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeBatchAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------- helpers for tests
    def batches_for(self, batch_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.batches.values() if (b["metadata"] or {}).get("batch_id") == batch_id]

    def billed_tokens(self) -> int:
        with self.lock:
            return sum(b["usage"]["input_tokens"] for b in self.batches.values())

    def sent_inputs(self) -> dict[str, str]:
        """custom_id -> input of every request ever uploaded."""
        with self.lock:
            inputs = {}
            for file_id, meta in self.files.items():
                if meta["purpose"] == "batch":
                    for line in self.contents[file_id].splitlines():
                        row = json.loads(line)
                        inputs[row["custom_id"]] = row["body"]["input"]
            return inputs

    def answered(self) -> Counter[str]:
        """How many times each custom_id was answered with a vector, over every batch: each is paid for."""
        with self.lock:
            counts: Counter[str] = Counter()
            for batch in self.batches.values():
                if batch["output_file_id"]:
                    counts.update(json.loads(line)["custom_id"]
                                  for line in self.contents[batch["output_file_id"]].splitlines())
            return counts

    def refusals(self) -> int:
        """Batches failed for the enqueued-token limit."""
        with self.lock:
            return sum(1 for b in self.batches.values()
                       if any(e["code"] == "token_limit_exceeded" for e in (b["errors"] or {}).get("data", [])))

    def line_tokens(self) -> int:
        """Tokens of every answered request, from the output files themselves."""
        with self.lock:
            total = 0
            for batch in self.batches.values():
                if batch["output_file_id"]:
                    for line in self.contents[batch["output_file_id"]].splitlines():
                        total += json.loads(line)["response"]["body"]["usage"]["prompt_tokens"]
            return total

    # ------------------------------------------------------------------- routing
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes, headers: Any) -> tuple:
        """(status, payload or bytes, extra headers, action) for one call; action is '', 'drop' or 'cut'."""
        with self.lock:
            self.calls.append(f"{method} {path}")
            self.call_times.append(time.monotonic())
        if not (headers.get("Authorization") or "").startswith("Bearer "):
            return _error(401, "Missing bearer token.")
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and path.startswith(fault.path):
                    fault.times -= 1
                    extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                    message = fault.message or f"injected {fault.status}"
                    return (*_error(fault.status, message, fault.code)[:2], extra, "")
            parts = path.strip("/").split("/")[1:]
            if parts == ["files"] and method == "POST":
                return self._upload(body, headers)
            if parts[:1] == ["files"] and len(parts) == 2 and method == "GET":
                return self._file(parts[1])
            if parts[:1] == ["files"] and len(parts) == 3 and parts[2] == "content" and method == "GET":
                return self._content(parts[1])
            if parts == ["batches"] and method == "POST":
                return self._create(json.loads(body))
            if parts == ["batches"] and method == "GET":
                return self._list(query)
            if parts[:1] == ["batches"] and len(parts) == 2 and method == "GET":
                return self._retrieve(parts[1])
            if parts[:1] == ["batches"] and len(parts) == 3 and parts[2] == "cancel" and method == "POST":
                return self._cancel(parts[1])
            if parts == ["embeddings"] and method == "POST":
                return self._embeddings(json.loads(body))
        return _error(404, f"Unknown route {method} {path}")

    def _upload(self, body: bytes, headers: Any) -> tuple:
        fields = _multipart(body, headers.get("Content-Type", ""))
        if fields.get("purpose", (None, b""))[1] != b"batch" or "file" not in fields:
            return _error(400, "purpose must be 'batch' and a file is required")
        filename, content = fields["file"]
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.contents[file_id] = content
        self.files[file_id] = {
            "id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
            "filename": filename or "upload.jsonl", "purpose": "batch", "status": "processed",
            "expires_at": None, "status_details": None,
        }
        return 200, self.files[file_id], {}, ""

    def _file(self, file_id: str) -> tuple:
        if file_id not in self.files:
            return _error(404, f"No such File object: {file_id}")
        return 200, self.files[file_id], {}, ""

    def _content(self, file_id: str) -> tuple:
        if file_id not in self.contents:
            return _error(404, f"No such File object: {file_id}")
        if self.switches.cut_downloads > 0:
            self.switches.cut_downloads -= 1
            return 200, self.contents[file_id], {}, "cut"
        return 200, self.contents[file_id], {}, ""

    def _create(self, params: dict[str, Any]) -> tuple:
        if params.get("input_file_id") not in self.contents:
            return _error(400, f"Invalid input_file_id {params.get('input_file_id')!r}")
        if params.get("endpoint") != "/v1/embeddings" or params.get("completion_window") != "24h":
            return _error(400, "endpoint must be /v1/embeddings and completion_window 24h here")
        expiry = params.get("output_expires_after")
        if expiry is not None and (expiry.get("anchor") != "created_at"
                                   or not 3600 <= int(expiry.get("seconds", 0)) <= 30 * 24 * 3600):
            return _error(400, "output_expires_after: anchor 'created_at' and 3600 to 2592000 seconds")
        now = int(time.time())
        self._seq += 1
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": "/v1/embeddings", "errors": None,
            "input_file_id": params["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": _usage(0), "metadata": params.get("metadata") or {},
            "model": self._input_model(params["input_file_id"]),
        }
        self._internal[batch_id] = {"seq": self._seq, "tokens": self._input_tokens(params["input_file_id"]),
                                    "keep_output": (expiry or {}).get("seconds")}
        if self.switches.drop_create_responses > 0:
            self.switches.drop_create_responses -= 1
            return 200, self._public(batch_id), {}, "drop"
        return 200, self._public(batch_id), {}, ""

    def _list(self, query: dict[str, list[str]]) -> tuple:
        limit = int(query.get("limit", ["20"])[0])
        after = query.get("after", [None])[0]
        ordered = sorted(self.batches, key=lambda b: self._internal[b]["seq"], reverse=True)
        start = ordered.index(after) + 1 if after in ordered else 0
        page = ordered[start:start + limit]
        return 200, {
            "object": "list", "data": [self._public(b) for b in page], "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None, "has_more": start + limit < len(ordered),
        }, {}, ""

    def _retrieve(self, batch_id: str) -> tuple:
        if batch_id not in self.batches:
            return _error(404, f"No such Batch object: {batch_id}")
        self._advance(batch_id)
        return 200, self._public(batch_id), {}, ""

    def _cancel(self, batch_id: str) -> tuple:
        batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, f"No such Batch object: {batch_id}")
        if batch["status"] in TERMINAL or batch["status"] == "cancelling":
            return _error(400, f"Cannot cancel a batch with status '{batch['status']}'.")
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        return 200, self._public(batch_id), {}, ""

    def _embeddings(self, params: dict[str, Any]) -> tuple:
        try:
            texts, dims, fmt = self._check_body(params)
        except ValueError as exc:
            return _error(400, str(exc))
        data = [{"object": "embedding", "index": i, "embedding": self._encode(fake_vector(t, dims), fmt)}
                for i, t in enumerate(texts)]
        tokens = sum(fake_tokens(t) for t in texts)
        return 200, {"object": "list", "data": data, "model": params["model"],
                     "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, {}, ""

    # ------------------------------------------------------------------- batches
    def _public(self, batch_id: str) -> dict[str, Any]:
        batch = dict(self.batches[batch_id])
        if not self.switches.batch_usage:
            batch.pop("usage")
        return batch

    def _input_model(self, file_id: str) -> str | None:
        first = self.contents[file_id].split(b"\n", 1)[0]
        return json.loads(first).get("body", {}).get("model") if first.strip() else None

    def _input_tokens(self, file_id: str) -> int:
        total = 0
        for line in self.contents[file_id].splitlines():
            text = json.loads(line).get("body", {}).get("input", "")
            total += sum(fake_tokens(t) for t in ([text] if isinstance(text, str) else text))
        return total

    def _advance(self, batch_id: str) -> None:
        batch, now = self.batches[batch_id], int(time.time())
        status = batch["status"]
        if status == "validating":
            problem = self._validation_problem(batch_id)
            if problem:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [problem]})
            else:
                batch.update(status="in_progress", in_progress_at=now)
        elif status == "in_progress":
            batch.update(status="finalizing", finalizing_at=now - (3 * 3600 if self.switches.stuck_finalizing else 0))
        elif status == "finalizing" and not self.switches.stuck_finalizing:
            end = "expired" if self.switches.expire_after is not None else "completed"
            self._process(batch_id, end, self.switches.expire_after)
        elif status == "cancelling":
            self._process(batch_id, "cancelled", self.switches.cancel_keeps)

    def _validation_problem(self, batch_id: str) -> dict[str, Any] | None:
        if self.switches.fail_validation > 0:
            self.switches.fail_validation -= 1
            return {"code": "invalid_request", "message": "The input file is malformed: line 1 is not valid.",
                    "param": None, "line": 1}
        limit = self.switches.enqueued_limit
        model = self.batches[batch_id]["model"]
        live = sum(self._internal[b]["tokens"] for b, s in self.batches.items() if b != batch_id
                   and s["model"] == model and s["status"] in ("in_progress", "finalizing", "cancelling"))
        enqueued = live + self._internal[batch_id]["tokens"]
        if limit is not None and enqueued > limit:
            return {"code": "token_limit_exceeded", "param": None, "line": None, "message": (
                f"Enqueued token limit reached for {model} in organization org-fake. Limit: {limit} enqueued "
                "tokens. Please try submitting your batch again once your other batches have completed.")}
        self.peak_enqueued = max(self.peak_enqueued, enqueued)
        return None

    def _process(self, batch_id: str, end: str, done_limit: int | None) -> None:
        """Answer the requests (up to `done_limit`), write the result files and finish the batch as `end`."""
        batch, now = self.batches[batch_id], int(time.time())
        out: list[bytes] = []
        err: list[bytes] = []
        tokens = 0
        for number, line in enumerate(self.contents[batch["input_file_id"]].splitlines()):
            row = json.loads(line)
            custom_id = row["custom_id"]
            if done_limit is not None and number >= done_limit:
                if end == "expired":
                    err.append(_line(custom_id, None, {"code": "batch_expired", "message":
                                     "This request could not be executed before the completion window expired."}))
                continue
            failing = self.switches.all_fail or _share(custom_id) < self.switches.fail_share
            try:
                if failing:
                    raise ValueError(f"Injected failure for {custom_id}.")
                texts, dims, fmt = self._check_body(row.get("body") or {})
            except ValueError as exc:
                err.append(_line(custom_id, {"status_code": 400, "request_id": uuid.uuid4().hex, "body": {
                    "error": {"message": str(exc), "type": "invalid_request_error", "param": None, "code": None}}}))
                continue
            used = sum(fake_tokens(t) for t in texts)
            tokens += used
            data = [{"object": "embedding", "index": i, "embedding": self._encode(fake_vector(t, dims), fmt)}
                    for i, t in enumerate(texts)]
            out.append(_line(custom_id, {"status_code": 200, "request_id": uuid.uuid4().hex, "body": {
                "object": "list", "data": data, "model": row["body"]["model"],
                "usage": {"prompt_tokens": used, "total_tokens": used}}}))
        if self.switches.shuffle:
            random.Random(batch_id).shuffle(out)
        batch.update(
            status=end, output_file_id=self._result_file(out, batch_id), error_file_id=self._result_file(err, batch_id),
            request_counts={"total": len(out) + len(err), "completed": len(out), "failed": len(err)},
            usage=_usage(tokens), **{f"{end}_at": now},
        )

    def _result_file(self, lines: list[bytes], batch_id: str) -> str | None:
        if not lines:
            return None
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.contents[file_id] = b"".join(lines)
        now, keep = int(time.time()), self._internal[batch_id]["keep_output"]
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(self.contents[file_id]),
                               "created_at": now, "filename": "batch_output.jsonl",
                               "purpose": "batch_output", "status": "processed",
                               "expires_at": now + keep if keep else None, "status_details": None}
        return file_id

    def _check_body(self, body: dict[str, Any]) -> tuple[list[str], int, str]:
        model = body.get("model")
        if model not in NATIVE:
            raise ValueError(f"The model '{model}' does not exist.")
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise ValueError("'input' must be a non-empty string or list of non-empty strings.")
        dims = body.get("dimensions")
        if dims is not None and (model == "text-embedding-ada-002" or not 1 <= dims <= NATIVE[model]):
            raise ValueError(f"This model does not support dimensions={dims}.")
        return texts, dims or NATIVE[model], body.get("encoding_format", "float")

    def _encode(self, vector: np.ndarray, fmt: str) -> Any:
        if fmt == "base64" and not self.switches.ignore_base64:
            return base64.b64encode(vector.astype("<f4").tobytes()).decode()
        return [float(x) for x in vector]


def _share(custom_id: str) -> float:
    return int.from_bytes(hashlib.sha256(custom_id.encode()).digest()[:4], "little") / 2 ** 32


def _usage(tokens: int) -> dict[str, Any]:
    return {"input_tokens": tokens, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": tokens}


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None = None) -> bytes:
    row = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": response, "error": error}
    return json.dumps(row).encode() + b"\n"


def _error(status: int, message: str, code: str | None = None) -> tuple:
    kind = "rate_limit_exceeded" if status == 429 else "invalid_request_error"
    return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, {}, ""


def _multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        # Each part is CRLF, headers, a blank line, the content, then the CRLF that precedes the next boundary.
        head, _, content = part[2:-2].partition(b"\r\n\r\n")
        disposition = next(h for h in head.decode().split("\r\n") if h.lower().startswith("content-disposition"))
        params = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:])
        fields[params["name"].strip('"')] = (params.get("filename", "").strip('"') or None, content)
    return fields


def _handler(api: FakeBatchAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return b"".join(self._chunks())
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _chunks(self) -> Iterator[bytes]:
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if not size:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            status, payload, extra, action = api.handle(method, url.path, parse_qs(url.query), self._body(),
                                                        self.headers)
            if action == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", uuid.uuid4().hex)
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if action == "cut":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


@pytest.fixture
def fake_api() -> Iterator[FakeBatchAPI]:
    api = FakeBatchAPI().start()
    yield api
    api.stop()
