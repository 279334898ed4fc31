"""The whole pipeline through Dagster, on a real instance and a temporary store."""

from __future__ import annotations

import pytest

from embedding_assets.cli.run import run_kind
from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.models import Stage, Status
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.consistency import snapshot_agreement
from embedding_assets.steps.search import search
from embedding_assets.steps.status import kind_status
from embedding_assets.wiring import Runtime, Tuning
from resources.deployment import resources_from_settings
from tests.support import base_env


@pytest.fixture
def seeded(backend_settings, demo_receipts):
    runtime = Runtime.from_settings(backend_settings)
    runtime.store.put_receipts(demo_receipts)
    return backend_settings, runtime


@pytest.mark.parametrize("kind", ["lines", "words"])
def test_pipeline_embeds_every_item_once_and_a_second_run_does_nothing(seeded, instance, demo_receipts, kind):
    settings, runtime = seeded
    defs = build_definitions(settings)
    total = sum(len(getattr(r, kind)) for r in demo_receipts)

    first = run_kind(defs, KIND_DEFS[kind], runtime, instance, timeout=120, poll_seconds=0.1, progress=lambda _: None)

    counts = runtime.store.status_counts(kind)
    assert counts.get(Status.SUCCESS.value, 0) + counts.get(Status.NOISE.value, 0) == total
    assert first.embedded == counts[Status.SUCCESS.value] and not first.timed_out
    assert first.snapshot_version == 1 and first.vectors > 0
    assert all(b.stage == Stage.COMPACTED for b in runtime.store.list_batches(kind))
    agreement = snapshot_agreement(runtime.store, runtime.vectors(kind))
    assert agreement.ok and agreement.success == counts[Status.SUCCESS.value]

    second = run_kind(defs, KIND_DEFS[kind], runtime, instance, timeout=60, poll_seconds=0.1, progress=lambda _: None)
    assert second.nothing_to_do and second.embedded == 0
    assert second.snapshot_version == 1 and second.vectors == first.vectors

    materialized = instance.get_latest_materialization_event(KIND_DEFS[kind].assets[3].key)
    assert materialized is not None
    meta = materialized.asset_materialization.metadata
    assert meta["vectors"].value == first.vectors
    # The second run had nothing to claim, so it launched nothing: the last materialization is the first run's,
    # whose backlog is the batches it had prepared and not yet submitted.
    assert second.runs == []
    unembedded = instance.get_latest_materialization_event(KIND_DEFS[kind].assets[0].key)
    assert unembedded is not None and unembedded.run_id in first.runs
    assert unembedded.asset_materialization.metadata["backlog"].value.startswith("backlog: ")
    partitions = instance.get_dynamic_partitions(KIND_DEFS[kind].partitions_name)
    assert sorted(partitions) == sorted(b.batch_id for b in runtime.store.list_batches(kind))


def test_search_finds_a_line_by_its_own_text_and_filters_by_merchant(seeded, instance, demo_receipts):
    settings, runtime = seeded
    run_kind(build_definitions(settings), KIND_DEFS["lines"], runtime, instance, timeout=120, poll_seconds=0.1,
             progress=lambda _: None)
    merchant = demo_receipts[0].merchant_name
    hits = search(runtime.vectors("lines"), runtime.provider, "TOTAL", k=3, merchant=merchant)
    assert hits and all(h.merchant_name == merchant for h in hits)
    assert hits == sorted(hits, key=lambda h: -h.score)


def test_dagster_runs_read_the_same_tuning_as_the_cli_recipes_included(tmp_path, instance, demo_receipts):
    settings = Settings.from_env(base_env(tmp_path) | {"LINES_RECIPE": "context3", "WORDS_RECIPE": "context5",
                                                       "MAX_ATTEMPTS": "4", "REAP_AFTER_HOURS": "7"})
    embedding = resources_from_settings(settings)["embedding"]
    assert embedding.open().tuning == Tuning.from_settings(settings)

    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:2])
    summary = run_kind(build_definitions(settings), KIND_DEFS["lines"], runtime, instance, timeout=120,
                       poll_seconds=0.1, progress=lambda _: None)
    assert summary.snapshot_version == 1 and not summary.timed_out
    assert kind_status(runtime.store, runtime.vectors("lines"))["recipe"] == "context3"
