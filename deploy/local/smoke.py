"""The local cluster's smoke: seed, launch create-batches through the webserver, then only watch.

Run by `cluster.sh smoke` on this machine with the environment `cluster.sh env` prints. It seeds demo
receipts into the cluster's DynamoDB table, launches the create-batches job of each kind through the
webserver's GraphQL API (the code host's MAX_REQUESTS_PER_BATCH splits them into several batches), and
from then on launches nothing: the daemon's sensors must ingest every batch
(in parallel up to the ingest pool's limit) and compact into the vector store. It then checks every
item is SUCCESS or NOISE, each batch was ingested once, the vectors are on the Chroma host (server mode)
and the asset checks passed, and prints the runs, how long each stage waited, and one line of counts.

`--kill-ingest` kills (SIGKILL) the code host's run process of the first ingest run while its step is
downloading, and then requires the daemon's run retry to finish that batch with nothing lost or duplicated.
Exit code 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from embedding_assets.cli.deployment import Deployment, KindFollow, RunView, follow, launch_create
from embedding_assets.data.demo import generate_receipts
from embedding_assets.defs.assets import build_kind
from embedding_assets.domain.models import KINDS, Status
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime

CHECKS = {"chroma_snapshot": ["success_matches_snapshot"],
          "submitted_batches": ["no_pending_without_batch", "no_stuck_batches"]}


class IngestKiller:
    """Kills the run process of the first ingest run seen executing its step on the code host."""

    def __init__(self, netns: str):
        self.netns = netns
        self.killed: RunView | None = None
        self.pid: int | None = None

    def __call__(self, runs: list[RunView]) -> None:
        if self.killed is not None:
            return
        for run in runs:
            if run.job.endswith("_ingest_delta") and run.status == "STARTED":
                pid = self._run_process(run.run_id)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    self.killed, self.pid = run, pid
                    print(f"killed (SIGKILL) pid {pid} on the code host: ingest run {run.run_id[:8]} of "
                          f"{run.partition}, mid-step", flush=True)
                    return

    def _run_process(self, run_id: str) -> int | None:
        """The run worker: the process holding the run's step log open, apart from Dagster's log tailers."""
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if any(script in cmdline.read() for script in (b"poll_compute_logs", b"watch_orphans")):
                        continue
                fds = os.listdir(f"/proc/{pid}/fd")
                if any(run_id in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds):
                    return int(pid)
            except OSError:  # the process ended meanwhile
                continue
        return None


def seed(runtime: Runtime, receipts: int) -> dict[str, int]:
    written = generate_receipts(receipts, seed=11)
    runtime.store.put_receipts(written)
    waiting = {kind: runtime.store.status_counts(kind).get(Status.NONE.value, 0) for kind in KINDS}
    print(f"seeded {len(written)} receipts: {waiting['lines']} lines and {waiting['words']} words to embed", flush=True)
    return waiting


def print_runs(runs: list[RunView]) -> None:
    print("runs:")
    for r in runs:
        retry = {k.removeprefix("dagster/"): v for k, v in r.tags.items()
                 if k in ("dagster/will_retry", "dagster/parent_run_id", "dagster/auto_retry_run_id")}
        print(f"  {r.run_id} {r.job:22} {r.status:8} {r.partition or ''} {retry or ''}".rstrip(), flush=True)


def overlap(runs: list[RunView]) -> int:
    """The most runs of the list that were executing at the same moment."""
    edges = sorted([(r.started, 1) for r in runs if r.started] + [(r.ended, -1) for r in runs if r.ended])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}s" if values else "-"


def stage_report(name: str, runs: list[RunView], ready: dict[str, float], cause: str) -> str:
    """How long the stage's runs waited: for their sensor (since `ready[run_id]`), in the queue, and ran."""
    if not runs:
        return f"  {name}: no runs"
    sensed = [r.created - ready[r.run_id] for r in runs if r.run_id in ready]
    queued = [(r.started or r.created) - r.created for r in runs]
    ran = [(r.ended or r.started or 0) - (r.started or 0) for r in runs]
    waited = f"launched {spread(sensed)} after {cause}; " if sensed else ""
    return (f"  {name}: {len(runs)} runs; {waited}queued {spread(queued)}; ran {spread(ran)}; "
            f"at most {overlap(runs)} at once")


def print_stages(runs: list[RunView], done: dict[str, KindFollow]) -> None:
    print("stages (queued = created -> started, which includes starting the run's process):")
    creates = [r for r in runs if r.job.endswith("_create_batches")]
    ingests = [r for r in runs if r.job.endswith("_ingest_delta")]
    compactions = [r for r in runs if r.job.endswith("_compaction")]
    submitted = {b: t for state in done.values() for b, t in state.submitted_at.items()}
    print(stage_report("create-batches", creates, {}, ""))
    print(stage_report("ingest", ingests, {r.run_id: submitted[r.partition] for r in ingests
                                           if r.partition in submitted and not r.tags.get("dagster/parent_run_id")},
                       "their batch was submitted (provider time + batch-status sensor)"))
    delta_ready = {}
    for r in compactions:
        before = [i.ended for i in ingests if i.ended and i.job[:5] == r.job[:5] and i.ended <= r.created]
        if before:
            delta_ready[r.run_id] = max(before)
    print(stage_report("compaction", compactions, delta_ready, "the last delta before them (compaction sensor)"))


def chroma_host_vectors(settings: Settings) -> dict[str, int] | None:
    """Collections on the Chroma host and their sizes, in server mode; None in snapshot mode."""
    server = getattr(settings, "chroma_server", None)
    if server is None:
        return None
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.HttpClient(host=server.host, port=server.port,
                                 settings=ChromaSettings(anonymized_telemetry=False))
    return {c.name: client.get_collection(c.name).count() for c in client.list_collections()}


def verify(deployment: Deployment, runtime: Runtime, settings: Settings, done: dict[str, KindFollow],
           runs: list[RunView], killer: IngestKiller | None) -> list[str]:
    problems = []
    for kind, state in done.items():
        counts = runtime.store.status_counts(kind)
        left = {s: n for s, n in counts.items() if s not in (Status.SUCCESS.value, Status.NOISE.value) and n}
        if left:
            problems.append(f"{kind}: items not SUCCESS: {left}")
        batches = [b for b in runtime.store.list_batches(kind) if b.batch_id in state.batches]
        if sum(b.item_count for b in batches) != sum(counts.values()) - counts.get(Status.NOISE.value, 0):
            problems.append(f"{kind}: batches hold {sum(b.item_count for b in batches)} items, "
                            f"expected every non-noise item exactly once")
        ingests = Counter(r.partition for r in runs if r.job == f"{kind}_ingest_delta" and r.status == "SUCCESS")
        twice = [b for b, n in ingests.items() if n > 1]
        if twice or set(ingests) != set(state.batches):
            problems.append(f"{kind}: batches ingested more than once {twice} or never "
                            f"{sorted(set(state.batches) - set(ingests))}")
        for asset, names in CHECKS.items():
            for name in names:
                latest = deployment.latest_check([kind, asset], name)
                if not latest or latest["status"] != "SUCCEEDED":
                    problems.append(f"{kind}: asset check {name} latest: {latest and latest['status']}")
        with runtime.vectors(kind).readable() as collection:
            vectors = collection.count() if collection is not None else 0
        if vectors != (state.snapshot.get("vectors") or 0):
            problems.append(f"{kind}: the serving collection holds {vectors} vectors, the compaction said "
                            f"{state.snapshot.get('vectors')}")
    on_host = chroma_host_vectors(settings)
    if on_host is not None and sum(on_host.values()) < sum((s.snapshot.get("vectors") or 0) for s in done.values()):
        problems.append(f"the Chroma host holds {on_host}, fewer vectors than were published")
    if killer is not None:
        problems += retry_problems(deployment, killer, runs)
    return problems


_EVENTS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection(limit: 1000) {
  events { __typename } } } } }"""


def retry_problems(deployment: Deployment, killer: IngestKiller, runs: list[RunView]) -> list[str]:
    if killer.killed is None:
        return ["--kill-ingest: no ingest run was caught mid-step"]
    events = deployment.query(_EVENTS, {"id": killer.killed.run_id})["runOrError"]["eventConnection"]["events"]
    kinds = {e["__typename"] for e in events}
    if "ExecutionStepStartEvent" not in kinds or "ExecutionStepSuccessEvent" in kinds:
        return [f"killed run {killer.killed.run_id}: not killed inside its step ({sorted(kinds)})"]
    by_id = {r.run_id: r for r in runs}
    killed = by_id.get(killer.killed.run_id)
    retries = [r for r in runs if r.tags.get("dagster/parent_run_id") == killer.killed.run_id]
    if killed is None or not killed.retried:
        return [f"killed run {killer.killed.run_id}: ended {killed and killed.status}, not marked for retry"]
    if not any(r.status == "SUCCESS" for r in retries):
        return [f"killed run {killer.killed.run_id}: no successful retry ({[r.status for r in retries]})"]
    print(f"run retry: {killer.killed.run_id[:8]} FAILURE (worker killed) -> "
          f"{', '.join(f'{r.run_id[:8]} {r.status}' for r in retries)}", flush=True)
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--kill-ingest", action="store_true")
    parser.add_argument("--code-netns", default="re-code", help="the code host's network namespace")
    args = parser.parse_args()
    started = time.monotonic()
    settings = Settings.from_env()
    runtime = Runtime.from_settings(settings)
    deployment = Deployment(os.environ["DAGSTER_WEBSERVER_URL"])
    waiting = seed(runtime, args.receipts)
    since = time.time() - 1
    creates = {kind: [launch_create(deployment, kind)] for kind in KINDS if waiting[kind]}
    print("launched create-batches: " + ", ".join(f"{k} {[r[:8] for r in ids]}" for k, ids in creates.items()),
          flush=True)
    killer = IngestKiller(args.code_netns) if args.kill_ingest else None
    try:
        done = follow(deployment, creates, since, args.timeout, lambda line: print(line, flush=True),
                      on_tick=killer)
    except TimeoutError as waiting:
        print(f"PROBLEM: timed out after {args.timeout:.0f}s waiting for {waiting}", file=sys.stderr)
        print_runs(deployment.runs([job for kind in creates for job in KindFollow(build_kind(kind), []).jobs], since))
        print(f"store: {({kind: runtime.store.status_counts(kind) for kind in KINDS})}")
        return 1
    runs = deployment.runs([job for state in done.values() for job in state.jobs], since)
    print_runs(runs)
    print_stages(runs, done)
    ingests = [r for r in runs if r.job.endswith("_ingest_delta")]
    problems = verify(deployment, runtime, settings, done, runs, killer)
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    on_host = chroma_host_vectors(settings)
    counts = {kind: runtime.store.status_counts(kind) for kind in KINDS}
    print("smoke: " + "; ".join(
        f"{kind} {counts[kind].get(Status.SUCCESS.value, 0)} SUCCESS / {sum(counts[kind].values())}"
        f" ({len(done[kind].batches)} batches, v{done[kind].snapshot.get('version')} "
        f"{done[kind].snapshot.get('vectors')} vectors)" for kind in KINDS)
        + f"; ingest runs {len(ingests)}, at most {overlap(ingests)} at once"
        + ("; chroma host unused (snapshot mode)" if on_host is None
           else f"; chroma host {sum(on_host.values())} vectors in {len(on_host)} collections")
        + f"; {'retried after kill -9' if killer else 'no kill'}"
        + f"; {'OK' if not problems else f'{len(problems)} PROBLEMS'} in {time.monotonic() - started:.0f}s")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
