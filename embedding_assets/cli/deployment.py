"""`receipt-embeddings run --deployment URL`: drive a deployed pipeline through its webserver.

The in-process `run` executes every job itself; a deployment has a daemon
whose sensors do that. So here the create-batches job is launched through
Dagster's GraphQL client (`DagsterGraphQLClient`), and then nothing more is
launched: the runs the sensors start (one ingest per finished batch, then
compaction) are followed through the GraphQL API until the batches the create
runs submitted are ingested and a compaction that began after the last ingest
has published them. Progress lines match the in-process `run`. Only the
webserver's address is needed, not the stores: counts come from the runs'
materialization metadata.

Only this command's runs are followed: its create runs by id, ingest runs by
the batches those created (another batch's ingest finishing says nothing
about ours), and runs created after its first create run by the server's
clock, never this machine's.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from embedding_assets.cli.errors import EXIT_FAILED, EXIT_TIMED_OUT, EXIT_UNREACHABLE, EXIT_USAGE
from embedding_assets.defs.assets import KindDefinitions, build_kind
from sensors.decisions import MAX_INGEST_RUNS, WILL_RETRY_TAG, awaiting_retry

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
POLL_SECONDS = 2.0

_RUNS = """
query($filter: RunsFilter!) { runsOrError(filter: $filter) { __typename
  ... on Runs { results { runId jobName status creationTime startTime endTime tags { key value } } }
  ... on PythonError { message } } }"""

_MATERIALIZATIONS = """
query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { assetMaterializations {
  assetKey { path }
  metadataEntries { label
    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
    ... on BoolMetadataEntry { boolValue } ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString } }
} } ... on RunNotFoundError { message } ... on PythonError { message } } }"""

_CREATED = """
query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { creationTime }
  ... on RunNotFoundError { message } ... on PythonError { message } } }"""

_CHECKS = """
query($key: AssetKeyInput!, $name: String!) { assetCheckExecutions(assetKey: $key, checkName: $name, limit: 1) {
  runId status timestamp } }"""


class DeploymentError(RuntimeError):
    """The deployment refused a request or one of the pipeline's runs failed for good."""

    exit_code = EXIT_FAILED


class BadAddress(DeploymentError):
    exit_code = EXIT_USAGE


class Unreachable(DeploymentError):
    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True)
class RunView:
    run_id: str
    job: str
    status: str
    created: float
    started: float | None
    ended: float | None
    tags: dict[str, str]

    @property
    def partition(self) -> str | None:
        return self.tags.get("dagster/partition")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def retried(self) -> bool:
        return self.status == "FAILURE" and self.tags.get(WILL_RETRY_TAG) == "true"


class Deployment:
    """A Dagster deployment reached through its webserver (`http[s]://host[:port][/prefix]`)."""

    def __init__(self, url: str, timeout: int = 60):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        bad = BadAddress(f"--deployment {url!r}: expected http[s]://HOST[:PORT][/PREFIX]")
        try:
            port = parts.port
        except ValueError:
            raise bad from None
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise bad
        prefix = parts.path.rstrip("/")
        self.client = DagsterGraphQLClient(parts.hostname, port_number=port, use_https=parts.scheme == "https",
                                           timeout=timeout, path_prefix=prefix)
        self.graphql_url = f"{parts.scheme}://{parts.netloc}{prefix}/graphql"
        self.timeout = timeout

    def launch(self, job: str, run_config: dict[str, Any] | None = None) -> str:
        """Submit a job (queued, like any launch from the UI); the run id."""
        try:
            return self.client.submit_job_execution(job, run_config=run_config or {})
        except DagsterGraphQLClientError as exc:
            if _connection_failure(exc) is not None:
                raise self._unreachable(exc) from exc
            detail = exc.__cause__ or " ".join(map(str, exc.args))  # the client's own text holds its query
            raise DeploymentError(_one_line(f"the deployment did not launch {job}: {detail}")) from exc

    def created(self, run_id: str) -> float:
        """When the server made the run, by its own clock."""
        answer = self.query(_CREATED, {"id": run_id})["runOrError"]
        if answer["__typename"] != "Run":
            raise DeploymentError(f"run {run_id}: {answer.get('message')}")
        return float(answer["creationTime"])

    def query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A read the client has no method for."""
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(self.graphql_url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise DeploymentError(f"GraphQL at {self.graphql_url}: HTTP {exc.code} {exc.reason}") from exc
        except OSError as exc:  # URLError, a refused or reset connection, a read that timed out
            raise self._unreachable(exc) from exc
        if payload.get("errors"):
            raise DeploymentError(_one_line(f"GraphQL: {payload['errors'][0].get('message')}"))
        return payload["data"]

    def runs(self, jobs: Iterable[str], created_after: float) -> list[RunView]:
        found = []
        for job in jobs:
            answer = self.query(_RUNS, {"filter": {"pipelineName": job, "createdAfter": created_after}})["runsOrError"]
            if answer["__typename"] != "Runs":
                raise DeploymentError(f"runs of {job}: {answer.get('message')}")
            found += [RunView(r["runId"], r["jobName"], r["status"], r["creationTime"], r["startTime"], r["endTime"],
                              {t["key"]: t["value"] for t in r["tags"]}) for r in answer["results"]]
        return sorted(found, key=lambda r: r.created)

    def materializations(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Asset path ("lines/unembedded") -> its metadata in that run."""
        answer = self.query(_MATERIALIZATIONS, {"id": run_id})["runOrError"]
        if answer["__typename"] != "Run":
            raise DeploymentError(f"run {run_id}: {answer.get('message')}")
        found: dict[str, dict[str, Any]] = {}
        for event in answer["assetMaterializations"]:
            values = {}
            for entry in event["metadataEntries"]:
                if "jsonString" in entry:
                    values[entry["label"]] = json.loads(entry["jsonString"])
                else:
                    values[entry["label"]] = next((v for k, v in entry.items() if k != "label"), None)
            found["/".join(event["assetKey"]["path"])] = values
        return found

    def latest_check(self, asset: list[str], check: str) -> dict[str, Any] | None:
        executions = self.query(_CHECKS, {"key": {"path": asset}, "name": check})["assetCheckExecutions"]
        return executions[0] if executions else None

    def _unreachable(self, exc: BaseException) -> Unreachable:
        reason = _connection_failure(exc) or exc
        return Unreachable(f"cannot reach the Dagster webserver at {self.graphql_url}: {reason}; check the URL "
                           f"(--deployment or DAGSTER_WEBSERVER_URL) and that the webserver is up")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _connection_failure(exc: BaseException) -> OSError | None:
    """The innermost socket error under the client's wrappers (gql's, requests', urllib3's), if any."""
    found = None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError):
            found = cause
        cause = cause.__cause__ or cause.__context__
    return found


@dataclass
class KindFollow:
    """What one kind's runs have done so far."""

    defs: KindDefinitions
    create_runs: list[str]
    batches: list[str] = field(default_factory=list)  # the batches its create runs prepared: the only ones followed
    submitted_at: dict[str, float] = field(default_factory=dict)  # batch id -> when its create run ended
    expected_ingests: int | None = None  # of `batches`: those not held back or refused by the provider
    items: int = 0
    embedded: int = 0
    snapshot: dict[str, Any] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # run id -> last status reported
    done: bool = False

    @property
    def kind(self) -> str:
        return self.defs.kind

    @property
    def jobs(self) -> tuple[str, str, str]:
        return self.defs.create_job.name, self.defs.ingest_job.name, self.defs.compaction_job.name


def launch_create(deployment: Deployment, kind: str) -> str:
    return deployment.launch(build_kind(kind).create_job.name)


def follow(deployment: Deployment, create_runs: dict[str, list[str]], since: float, timeout: float,
           progress: Callable[[str], None] = print, poll_seconds: float = POLL_SECONDS,
           on_tick: Callable[[list[RunView]], None] | None = None) -> dict[str, KindFollow]:
    """Watch the create runs and then the runs the sensors launch, until every kind is done or `timeout` passes."""
    kinds = {kind: KindFollow(build_kind(kind), ids) for kind, ids in create_runs.items()}
    deadline = time.monotonic() + timeout
    while not all(k.done for k in kinds.values()):
        jobs = [job for k in kinds.values() for job in k.jobs]
        runs = deployment.runs(jobs, since)
        for state in kinds.values():
            _step(deployment, state, [r for r in runs if r.job in state.jobs], progress)
        if on_tick is not None:
            on_tick(runs)
        if all(k.done for k in kinds.values()):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(", ".join(f"{k.kind}: {_waiting_for(k)}" for k in kinds.values() if not k.done))
        time.sleep(poll_seconds)
    return kinds


def _step(deployment: Deployment, state: KindFollow, runs: list[RunView], progress: Callable[[str], None]) -> None:
    kind = state.kind
    create_job, ingest_job, compaction_job = state.jobs
    for run in runs:
        if run.job == ingest_job and run.partition not in state.batches:
            continue  # another batch's, or ours before its create run is read
        if state.seen.get(run.run_id) == run.status:
            continue
        first = run.run_id not in state.seen
        state.seen[run.run_id] = run.status
        if run.job == create_job and run.run_id in state.create_runs:
            _on_create(deployment, state, run, first, progress)
        elif run.job == ingest_job:
            if first:
                progress(f"[{kind}] ingest batch {run.partition} (run {run.run_id[:8]}, {run.status.lower()})")
            if run.retried:
                progress(f"[{kind}] ingest run {run.run_id[:8]} of {run.partition} failed; the daemon retries it")
            elif run.status == "FAILURE":
                progress(f"[{kind}] ingest run {run.run_id[:8]} of {run.partition} failed; the batch status sensor "
                         f"launches it again")
        elif run.job == compaction_job:
            if first:
                progress(f"[{kind}] compact (run {run.run_id[:8]}, {run.status.lower()})")
            if run.status == "SUCCESS":
                _on_compaction(deployment, state, run, progress)
        if run.status in ("FAILURE", "CANCELED") and not run.retried and run.job != ingest_job:
            raise DeploymentError(f"[{kind}] run {run.run_id} of {run.job} ended {run.status}")
    _fail_given_up(state, runs)
    state.done = _is_done(state, runs)


def _on_create(deployment: Deployment, state: KindFollow, run: RunView, first: bool,
               progress: Callable[[str], None]) -> None:
    if first:
        progress(f"[{state.kind}] create batches (run {run.run_id[:8]})")
    if run.status != "SUCCESS":
        return
    found = deployment.materializations(run.run_id)
    prepared = found.get(f"{state.kind}/unembedded", {})
    submitted = found.get(f"{state.kind}/submitted_batches", {})
    state.batches += prepared.get("batch_ids") or []
    state.submitted_at.update({batch_id: run.ended or time.time() for batch_id in prepared.get("batch_ids") or []})
    state.items += prepared.get("items") or 0
    # The submit sends older PREPARED batches too, oldest first, so the held ones are the newest: ours, at worst.
    ours = len(prepared.get("batch_ids") or [])
    state.expected_ingests = (state.expected_ingests or 0) + max(
        0, ours - (submitted.get("held") or 0) - (submitted.get("failed") or 0))
    progress(f"[{state.kind}] {len(state.batches)} batches in flight with {state.items} {state.kind}")
    if submitted.get("held"):
        progress(f"[{state.kind}] {submitted['held']} batches held back by the provider's queue limit: "
                 f"the next create-batches run sends them")


def _on_compaction(deployment: Deployment, state: KindFollow, run: RunView, progress: Callable[[str], None]) -> None:
    snapshot = deployment.materializations(run.run_id).get(f"{state.kind}/chroma_snapshot", {})
    state.snapshot = snapshot
    state.embedded += snapshot.get("items_marked") or 0
    progress(f"[{state.kind}] snapshot v{snapshot.get('version')} published with {snapshot.get('vectors')} vectors "
             f"({snapshot.get('items_marked')} {state.kind} marked)")


def _our_ingests(state: KindFollow, runs: list[RunView]) -> list[RunView]:
    return [r for r in runs if r.job == state.defs.ingest_job.name and r.partition in state.batches]


def _fail_given_up(state: KindFollow, runs: list[RunView]) -> None:
    """A batch of ours whose ingest failed as often as the batch status sensor allows is never ingested now."""
    now = time.time()
    for batch_id in state.batches:
        tries = [r for r in _our_ingests(state, runs) if r.partition == batch_id]
        if any(r.status == "SUCCESS" or not r.finished for r in tries):
            continue
        failed = [r for r in tries if r.status == "FAILURE"
                  and not awaiting_retry(r.tags, r.ended or r.created, now, retries_enabled=True)]
        if len(failed) >= MAX_INGEST_RUNS:
            raise DeploymentError(f"[{state.kind}] the ingest of batch {batch_id} failed {len(failed)} times "
                                  f"(last run {failed[-1].run_id}); the batch status sensor has given up on it: "
                                  f"see the run's error, then launch its partition again from the UI")


def _is_done(state: KindFollow, runs: list[RunView]) -> bool:
    create_job, ingest_job, compaction_job = state.jobs
    creates = [r for r in runs if r.run_id in state.create_runs]
    if len(creates) < len(state.create_runs) or not all(r.status == "SUCCESS" for r in creates):
        return False
    ours = _our_ingests(state, runs)
    ingested = {r.partition: r for r in ours if r.status == "SUCCESS"}
    if len(ingested) < (state.expected_ingests or 0):
        return False
    if any(not r.finished for r in [*ours, *(r for r in runs if r.job == compaction_job)]):
        return False
    last_ingest = max((r.ended or 0 for r in ingested.values()), default=0.0)
    return not ingested or any(r.job == compaction_job and r.status == "SUCCESS" and (r.started or 0) >= last_ingest
                               for r in runs)


def _waiting_for(state: KindFollow) -> str:
    if state.expected_ingests is None:
        return "the create-batches runs"
    return f"{state.expected_ingests} batches to be ingested and compacted"


def run_deployment(url: str, kinds: tuple[str, ...], timeout: float, progress: Callable[[str], None] = print) -> int:
    """The `run --deployment` command: exit 0 when done, 1 when a run failed, 3 on timeout (as `run`), 2 for a
    bad URL and 4 for a webserver that does not answer; a failure is one line on stderr.

    Runs are looked for from the first create run's creation by the server's clock (less a second, as the
    filter is strict), so a CLI host whose clock runs ahead still sees its own runs.
    """
    started = time.monotonic()
    try:
        deployment = Deployment(url)
        creates = {kind: [launch_create(deployment, kind)] for kind in kinds}
        since = min(deployment.created(run_id) for ids in creates.values() for run_id in ids) - 1
        done = follow(deployment, creates, since, timeout, progress, poll_seconds=POLL_SECONDS)
    except DeploymentError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    except TimeoutError as exc:
        print(f"timed out waiting for {exc}", file=sys.stderr)
        return EXIT_TIMED_OUT
    seconds = round(time.monotonic() - started, 2)
    for state in done.values():
        snapshot = state.snapshot
        if not state.batches:
            progress(f"[{state.kind}] nothing to embed: no {state.kind[:-1]} was waiting")
            continue
        progress(f"[{state.kind}] done: {state.embedded} {state.kind} embedded in {len(state.batches)} batches, "
                 f"snapshot v{snapshot.get('version')} ({snapshot.get('model')}) with {snapshot.get('vectors')} "
                 f"vectors, {seconds}s")
    return 0
