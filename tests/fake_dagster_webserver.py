"""A loopback server that answers the GraphQL a `run --deployment` sends, for driving the real client in tests.

It answers Dagster's own `DagsterGraphQLClient` (the job lookup and the launch
mutation) and the reads `embedding_assets.cli.deployment` makes (runs by job
and creation time, one run's creation time, a run's materializations). What
the daemon's sensors would launch is the test's to script: `on_launch` is
called with each launched run and `on_poll` before each answer to a runs
query, numbered from 1, so a test adds runs (`add_run`) when it wants them.
The server keeps its own clock (`skew` seconds off this machine's), as a
webserver on another host does.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from embedding_assets.defs.assets import build_kind
from embedding_assets.domain.models import KINDS


@dataclass
class FakeRun:
    run_id: str
    job: str
    status: str
    created: float
    tags: dict[str, str]
    materializations: dict[str, dict[str, Any]]
    started: float | None = None
    ended: float | None = None

    def as_graphql(self) -> dict[str, Any]:
        return {"runId": self.run_id, "jobName": self.job, "status": self.status, "creationTime": self.created,
                "startTime": self.started, "endTime": self.ended,
                "tags": [{"key": k, "value": v} for k, v in self.tags.items()]}


@dataclass
class FakeWebserver:
    url: str = ""
    skew: float = 0.0
    runs: list[FakeRun] = field(default_factory=list)
    polls: int = 0
    on_launch: Callable[[FakeWebserver, FakeRun], None] = lambda server, run: None
    on_poll: Callable[[FakeWebserver, int], None] = lambda server, n: None
    hang_up_from_poll: int | None = None  # from this runs query on, the connection is closed unanswered
    location: bool = True  # whether the code location (and so every job) is loaded

    def now(self) -> float:
        return time.time() + self.skew

    def add_run(self, job: str, status: str = "SUCCESS", partition: str | None = None,
                tags: dict[str, str] | None = None,
                materializations: dict[str, dict[str, Any]] | None = None) -> FakeRun:
        now = self.now()
        run = FakeRun(uuid.uuid4().hex, job, status, now, dict(tags or {}), materializations or {})
        if partition is not None:
            run.tags["dagster/partition"] = partition
        if status != "QUEUED":
            run.started = now
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            run.ended = now
        self.runs.append(run)
        return run

    def answer(self, query: str, variables: dict[str, Any]) -> dict[str, Any] | None:
        """The `data` of the answer, None to hang up."""
        if "launchPipelineExecution" in query:
            run = self.add_run(variables["executionParams"]["selector"]["pipelineName"], status="QUEUED")
            self.on_launch(self, run)
            return {"launchPipelineExecution": {"__typename": "LaunchRunSuccess", "run": {"runId": run.run_id}}}
        if "repositoriesOrError" in query:
            jobs = [{"name": job.name} for kind in KINDS for defs in [build_kind(kind)]
                    for job in (defs.create_job, defs.ingest_job, defs.compaction_job) if self.location]
            return {"repositoriesOrError": {"__typename": "RepositoryConnection", "nodes": [
                {"name": "__repository__", "location": {"name": "receipt_embeddings"}, "pipelines": jobs}]}}
        if "runsOrError" in query:
            self.polls += 1
            if self.hang_up_from_poll is not None and self.polls >= self.hang_up_from_poll:
                return None
            self.on_poll(self, self.polls)
            wanted = variables["filter"]
            return {"runsOrError": {"__typename": "Runs", "results": [
                r.as_graphql() for r in self.runs if r.job == wanted["pipelineName"]
                and r.created > wanted["createdAfter"]]}}
        found = next((r for r in self.runs if r.run_id == variables.get("id")), None)
        if found is None:
            return {"runOrError": {"__typename": "RunNotFoundError", "message": f"no run {variables.get('id')}"}}
        if "assetMaterializations" in query:
            events = [{"assetKey": {"path": path.split("/")},
                       "metadataEntries": [_entry(label, value) for label, value in metadata.items()]}
                      for path, metadata in found.materializations.items()]
            return {"runOrError": {"__typename": "Run", "assetMaterializations": events}}
        return {"runOrError": {"__typename": "Run", "creationTime": found.created}}


def _entry(label: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"label": label, "boolValue": value}
    if isinstance(value, int):
        return {"label": label, "intValue": value}
    if isinstance(value, float):
        return {"label": label, "floatValue": value}
    if isinstance(value, str):
        return {"label": label, "text": value}
    return {"label": label, "jsonString": json.dumps(value)}


def _handler(server: FakeWebserver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = server.answer(body["query"], body.get("variables") or {})
            if data is None:
                self.close_connection = True
                return
            payload = json.dumps({"data": data}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            pass

    return Handler


@pytest.fixture
def fake_webserver() -> Iterator[FakeWebserver]:
    server = FakeWebserver()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
