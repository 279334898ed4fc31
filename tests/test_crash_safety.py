"""A step SIGKILLed at any line leaves a state the next run repairs by itself.

Each case runs the pipeline in process up to the step, kills a child process
running that step at the chosen line, waits out the lease the dead child held,
then drives the pipeline to the end and checks the store and the snapshot agree.
"""

from __future__ import annotations

import time

import pytest

from embedding_assets.domain.models import Stage, Status
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.consistency import snapshot_agreement
from embedding_assets.wiring import Runtime
from tests.crashes import drive, kill_during
from tests.support import base_env

LEASE_SECONDS = 3


@pytest.fixture
def fast_lease_settings(tmp_path):
    env = base_env(tmp_path) | {"LOCK_DURATION_MINUTES": str(LEASE_SECONDS / 60), "HEARTBEAT_INTERVAL_SECONDS": "1"}
    return Settings.from_env(env)


def _store_method(runtime: Runtime, name: str) -> str:
    cls = type(runtime.store)
    return f"{cls.__module__}:{cls.__name__}.{name}"


def _provider_method(runtime: Runtime, name: str) -> str:
    cls = type(runtime.provider)
    return f"{cls.__module__}:{cls.__name__}.{name}"


# (case id, step, target builder, when, steps to run in process first)
CASES = [
    ("prepare-after-claim", "prepare", lambda rt: _store_method(rt, "claim"), "after", ()),
    ("prepare-after-request-file", "prepare", lambda rt: _store_method(rt, "put_batch"), "before", ()),
    ("submit-after-create", "submit", lambda rt: _provider_method(rt, "create_batch"), "after", ("prepare",)),
    ("ingest-mid-delta", "ingest", lambda rt: "embedding_assets.domain.deltas:DeltaWriter.add", "during:40",
     ("prepare", "submit", "poll")),
    ("ingest-after-delta-upload", "ingest", lambda rt: _store_method(rt, "update_batch_from"), "before",
     ("prepare", "submit", "poll")),
    ("compact-mid-merge", "compact", lambda rt: "chromadb.api.models.Collection:Collection.add", "after",
     ("prepare", "submit", "poll", "ingest")),
    ("compact-before-swap", "compact", lambda rt: "resources.vector_store.snapshots:SnapshotStore.swap", "before",
     ("prepare", "submit", "poll", "ingest")),
    ("compact-after-swap", "compact", lambda rt: "resources.vector_store.snapshots:SnapshotStore.swap", "after",
     ("prepare", "submit", "poll", "ingest")),
]


def _run_steps(runtime: Runtime, kind: str, steps: tuple[str, ...]) -> str:
    batch_id = ""
    for step in steps:
        if step == "prepare":
            runtime.pipeline.prepare(kind, 10_000_000, progress=lambda _: None)
        elif step == "submit":
            runtime.pipeline.submit(kind, progress=lambda _: None)
        elif step == "poll":
            finished, _ = runtime.pipeline.poll(kind, 100)
            batch_id = finished[0].batch_id
            for record in finished[1:]:
                runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
        elif step == "ingest":
            for record in runtime.store.list_batches(kind, [Stage.COMPLETED]):
                runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
    return batch_id


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kill_at_each_step_then_next_run_converges(case, fast_lease_settings, demo_receipts):
    _, step, target, when, before = case
    kind = "lines"
    runtime = Runtime.from_settings(fast_lease_settings)
    runtime.store.put_receipts(demo_receipts)
    if step == "compact":
        runtime.compactor(kind).run()  # a first, empty version, so "before the swap" has an old one to keep
        old = runtime.vectors(kind).latest()
    batch_id = _run_steps(runtime, kind, before)

    kill_during(fast_lease_settings, step, kind, target(runtime), when, batch_id)

    if step == "compact" and "before" in case[0]:
        assert runtime.vectors(kind).latest() == old, "the old snapshot must stay current"
        assert runtime.store.status_counts(kind).get(Status.PENDING.value), "items stay PENDING until published"
    time.sleep(LEASE_SECONDS + 0.5)
    drive(runtime, kind)

    counts = runtime.store.status_counts(kind)
    total = sum(len(r.lines) for r in demo_receipts)
    assert counts.get(Status.SUCCESS.value, 0) + counts.get(Status.NOISE.value, 0) == total, counts
    assert not runtime.store.pending_without_live_batch(kind)
    agreement = snapshot_agreement(runtime.store, runtime.vectors(kind))
    assert agreement.ok, agreement
    for record in runtime.store.list_batches(kind):
        assert len(runtime.provider.find_batches({"batch_id": record.batch_id})) <= 1
