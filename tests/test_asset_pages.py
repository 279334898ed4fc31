"""What an asset page shows: owners, tags and code references on every asset; the snapshot's row count, version,
model, location, tokens and cost; the delta's location and row count."""

from __future__ import annotations

import warnings
from pathlib import Path

from dagster import AssetKey

from embedding_assets.cli.run import run_kind
from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.defs.assets import OWNER, build_kind

KIND = "lines"


def test_every_asset_has_owners_tags_and_code_references(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.owners == [OWNER], key
        assert node.tags["embeds"] == key.path[0] and node.tags["stage"], key
        (reference,) = node.metadata["dagster/code_references"].code_references
        assert Path(reference.file_path).is_file() and reference.line_number > 0, key


def test_the_snapshot_and_delta_pages_say_what_and_where(settings, runtime, instance, demo_receipts):
    runtime.store.put_receipts(demo_receipts)
    summary = run_kind(build_definitions(settings), KIND_DEFS[KIND], runtime, instance, timeout=120,
                       poll_seconds=0.1, progress=lambda _: None)
    snapshot = instance.get_latest_materialization_event(AssetKey([KIND, "chroma_snapshot"])).asset_materialization
    meta = {name: value.value for name, value in snapshot.metadata.items()}
    pointer = runtime.vectors(KIND).latest()
    assert meta["dagster/row_count"] == pointer.vectors == summary.vectors > 0
    assert (meta["version"], meta["model"], meta["dimensions"]) == (pointer.version, pointer.model, pointer.dimensions)
    assert Path(meta["location"]).is_file() and meta["location"] == runtime.objects.uri(pointer.key)
    batches = runtime.store.list_batches(KIND)
    assert meta["prompt_tokens"] == sum(b.prompt_tokens for b in batches) > 0
    assert meta["cost_usd"] == sum(b.cost_usd for b in batches)

    delta = instance.get_latest_materialization_event(AssetKey([KIND, "embedding_deltas"])).asset_materialization
    record = runtime.store.get_batch(delta.partition)
    assert delta.metadata["dagster/row_count"].value == record.vectors > 0
    assert delta.metadata["location"].value == runtime.objects.uri(record.delta_key)
    assert Path(delta.metadata["location"].value).is_file()  # DELETE_PROCESSED_DELTAS is off by default


def test_the_definitions_load_without_deprecation_warnings_and_ingest_stays_partitioned(settings):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        lines = build_kind("lines")  # what the code location builds at load, once per kind
    ingest = build_definitions(settings).resolve_job_def(lines.ingest_job.name)
    assert ingest.partitions_def == KIND_DEFS["lines"].partitions
    assert ingest.partitions_def.name == lines.partitions_name
