"""Server mode end to end, on the session's `chroma run` server: the pipeline through Dagster, a compactor
SIGKILLed mid-merge, a re-embed switch, exports and restores, and the settings that choose the mode.
"""

from __future__ import annotations

import tarfile
from dataclasses import replace

import numpy as np
import pytest

from embedding_assets.cli import main as cli
from embedding_assets.cli.run import run_kind
from embedding_assets.definitions import KIND_DEFS, build_definitions
from embedding_assets.domain.models import Status
from embedding_assets.domain.settings import ConfigError, Settings
from embedding_assets.steps.consistency import snapshot_agreement
from embedding_assets.steps.search import search
from embedding_assets.wiring import Runtime
from resources.vector_store.lexical import FILE_NAME as LEXICAL_FILE
from resources.vector_store.server import request_headers
from tests.crashes import drive, kill_during
from tests.support import server_env

KIND = "lines"


def _embedded(runtime: Runtime, receipts) -> None:
    counts = runtime.store.status_counts(KIND)
    total = sum(len(r.lines) for r in receipts)
    assert counts.get(Status.SUCCESS.value, 0) + counts.get(Status.NOISE.value, 0) == total, counts
    agreement = snapshot_agreement(runtime.store, runtime.vectors(KIND))
    assert agreement.ok and agreement.success == counts[Status.SUCCESS.value], agreement


def test_pipeline_through_dagster_writes_into_a_server_collection(server_settings, instance, demo_receipts):
    runtime = Runtime.from_settings(server_settings)
    runtime.store.put_receipts(demo_receipts)
    defs = build_definitions(server_settings)

    first = run_kind(defs, KIND_DEFS[KIND], runtime, instance, timeout=120, poll_seconds=0.1, progress=lambda _: None)

    _embedded(runtime, demo_receipts)
    assert first.snapshot_version == 1 and first.vectors > 0 and not first.timed_out
    pointer = runtime.vectors(KIND).latest()
    assert pointer is not None and pointer.key == f"{KIND}_v00000001" and pointer.sha256 == ""
    assert not list(runtime.objects.list(f"snapshots/{KIND}/")), "server mode publishes no archives"
    merchant = demo_receipts[0].merchant_name
    hits = search(runtime.vectors(KIND), runtime.provider, "TOTAL", k=3, merchant=merchant)
    assert hits and all(h.merchant_name == merchant for h in hits)

    second = run_kind(defs, KIND_DEFS[KIND], runtime, instance, timeout=60, poll_seconds=0.1, progress=lambda _: None)
    assert second.nothing_to_do and second.snapshot_version == 1 and second.vectors == first.vectors

    exported = defs.get_job_def(f"{KIND}_export").execute_in_process(instance=instance)
    assert exported.success
    archive = runtime.vectors(KIND).export()
    assert archive is not None and archive.version == 1 and runtime.objects.exists(archive.key)
    assert archive.recipe == pointer.recipe == server_settings.recipes[KIND]
    runtime.objects.download(archive.key, server_settings.data_dir / "export.tar")
    with tarfile.open(server_settings.data_dir / "export.tar") as tar:
        assert LEXICAL_FILE in tar.getnames(), "an export carries its lexical index, as a snapshot-mode version does"


def test_search_builds_a_local_lexical_index_once_per_served_version(server_settings):
    line = Runtime.from_settings(server_settings).vectors(KIND)
    cache = server_settings.chroma_persist_directory / "lexical" / KIND

    def publish(ids: list[str]) -> None:
        with line.writable("m", 4, "row-lower") as (collection, _):
            collection.add(ids=ids, embeddings=[[1.0, float(n), 0.0, 0.5] for n in range(len(ids))], documents=ids)
            count = collection.count()
        version = line.next_version()
        line.swap(line.stage(version), count, "m", 4, recipe="row-lower")

    def ranked(text: str) -> list[str]:
        view = line.open_view()
        try:
            return [vid for vid, _ in view.lexical.rank(text, None)]
        finally:
            view.close()

    publish(["TOTAL 9.99"])
    assert ranked("total") == ["TOTAL 9.99"]
    built = (cache / "1" / LEXICAL_FILE).stat().st_mtime_ns
    assert ranked("total") == ["TOTAL 9.99"] and (cache / "1" / LEXICAL_FILE).stat().st_mtime_ns == built
    publish(["CASH 10.00"])
    assert ranked("cash") == ["CASH 10.00"] and ranked("total") == ["TOTAL 9.99"]
    assert [d.name for d in cache.iterdir()] == ["2"], "an index no version is served from any more is dropped"


@pytest.mark.parametrize("published_before", [False, True], ids=["first-version", "after-a-version"])
def test_compactor_killed_mid_merge_converges(tmp_path, request, demo_receipts, published_before):
    settings = Settings.from_env(server_env(tmp_path, request))  # the killed holder's lease is taken over at once
    runtime = Runtime.from_settings(settings)
    if published_before:
        runtime.store.put_receipts(demo_receipts[:2])
        drive(runtime, KIND)
    before = runtime.vectors(KIND).latest()
    runtime.store.put_receipts(demo_receipts)
    runtime.pipeline.prepare(KIND, 10_000_000, progress=lambda _: None)
    runtime.pipeline.submit(KIND, progress=lambda _: None)
    finished, _ = runtime.pipeline.poll(KIND, 1000)
    for record in finished:
        runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)
    pending = runtime.store.status_counts(KIND)[Status.PENDING.value]

    kill_during(settings, "compact", KIND, "chromadb.api.models.Collection:Collection.add", "after")

    assert runtime.vectors(KIND).latest() == before, "killed before its swap: the pointer has not moved"
    assert runtime.store.status_counts(KIND)[Status.PENDING.value] == pending, "no item SUCCESS before its swap"
    drive(runtime, KIND)
    _embedded(runtime, demo_receipts)
    pointer = runtime.vectors(KIND).latest()
    with runtime.vectors(KIND).readable() as collection:
        assert pointer is not None and pointer.vectors == collection.count()
    report = runtime.compactor(KIND).run()
    assert report.added == 0 and not report.published


def test_a_compactor_killed_after_replacing_rows_in_place_publishes_them_as_a_new_version(tmp_path, request,
                                                                                         demo_receipts):
    """The count is unchanged, but the served collection changed: every host's per-version index must renew."""
    settings = Settings.from_env(server_env(tmp_path, request))  # the killed holder's lease is taken over at once
    runtime = Runtime.from_settings(settings)
    runtime.store.put_receipts(demo_receipts[:1])
    drive(runtime, KIND)
    before = runtime.vectors(KIND).latest()
    edited = next(i for i in runtime.store.items_with_status(KIND, Status.SUCCESS.value) if i.text != "ZEBRA")
    runtime.store.set_text(KIND, edited.key, "ZEBRA")
    runtime.pipeline.prepare(KIND, 10_000_000, progress=lambda _: None)
    runtime.pipeline.submit(KIND, progress=lambda _: None)
    for record in runtime.pipeline.poll(KIND, 1000)[0]:
        runtime.pipeline.ingest(record.batch_id, progress=lambda _: None)

    kill_during(settings, "compact", KIND, "chromadb.api.models.Collection:Collection.upsert", "after")
    assert runtime.vectors(KIND).latest() == before, "killed before its swap"
    report = runtime.compactor(KIND).run()

    assert report.unchanged and report.published and runtime.vectors(KIND).latest().version > before.version
    hits = search(runtime.vectors(KIND), runtime.provider, "zebra", k=1, mode="lexical")
    assert hits and "ZEBRA" in hits[0].text
    _embedded(runtime, demo_receipts[:1])


def test_reembed_builds_a_second_collection_and_switches_the_pointer(server_settings, demo_receipts):
    old = Runtime.from_settings(replace(server_settings, dimensions=256))
    old.store.put_receipts(demo_receipts)
    drive(old, KIND)
    serving_before = old.vectors(KIND).latest()
    assert serving_before is not None and serving_before.dimensions == 256

    new = Runtime.from_settings(replace(server_settings, dimensions=128))
    start = new.start_reembed(KIND)
    assert start.requeued > 0
    assert search(new.vectors(KIND), new.provider, "TOTAL", k=3), "search answers from the old collection meanwhile"
    # A row an earlier, abandoned attempt left in the collection this one reuses by name, of an item now gone.
    leftover = "IMAGE#gone#RECEIPT#00001#LINE#00000"
    with new.vectors(KIND).next_line().writable(new.provider.model, 128, "row-lower") as (collection, _):
        collection.add(ids=[leftover], embeddings=new.provider.embed(["gone"]), documents=["GONE"],
                       metadatas=[{"image_id": "gone", "receipt_id": 1, "line_id": 0, "text": "GONE"}])
    drive(new, KIND)

    serving = new.vectors(KIND).latest()
    assert serving is not None and serving.dimensions == 128 and serving.key != serving_before.key
    assert new.vectors(KIND).next_line().latest() is None
    _embedded(new, demo_receipts)
    with new.vectors(KIND).readable() as collection:
        assert {len(v) for v in collection.get(include=["embeddings"], limit=20)["embeddings"]} == {128}
        assert not collection.get(ids=[leftover])["ids"], "checked against the store at the first publish"


def test_cli_export_and_restore_bring_back_an_earlier_version(tmp_path, request, monkeypatch, demo_receipts, capsys):
    env = server_env(tmp_path, request) | {"DAGSTER_HOME": str(tmp_path / "dagster_home")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime = Runtime.from_settings(Settings.from_env(env))
    runtime.store.put_receipts(demo_receipts)
    drive(runtime, KIND)
    assert cli.main(["export", "--kind", KIND]) == 0
    changed = next(i for i in runtime.store.items_with_status(KIND, Status.SUCCESS.value) if i.text != "TOTAL")
    runtime.store.set_text(KIND, changed.key, "TOTAL")
    drive(runtime, KIND)
    newest = runtime.vectors(KIND).latest()

    assert cli.main(["restore", "--kind", KIND, "--version", "1"]) == 0
    assert "sent again" in capsys.readouterr().out
    restored = runtime.vectors(KIND).latest()
    assert restored is not None and restored.version > newest.version and restored.key != newest.key
    requeued = {i.key for i in runtime.store.items_with_status(KIND, Status.NONE.value)}
    assert changed.key in requeued, "the restored version holds the old text's vector: embedded again"
    drive(runtime, KIND)
    _embedded(runtime, demo_receipts)
    assert cli.main(["restore", "--kind", KIND, "--version", "99"]) == 1


@pytest.mark.parametrize(("env", "variable"), [
    ({"CHROMA_PORT": "eighty"}, "CHROMA_PORT"),
    ({"CHROMA_PORT": "70000"}, "CHROMA_PORT"),
    ({"CHROMA_SSL": "maybe"}, "CHROMA_SSL"),
    ({"CHROMA_HEADERS": "X-Tenant"}, "CHROMA_HEADERS"),
])
def test_a_bad_server_setting_fails_at_load_naming_it(tmp_path, env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({"DATA_DIR": str(tmp_path), "CHROMA_HOST": "chroma.internal", **env})


def test_server_settings_carry_headers_and_the_token_as_a_bearer(tmp_path):
    settings = Settings.from_env({
        "DATA_DIR": str(tmp_path), "CHROMA_HOST": "chroma.internal", "CHROMA_PORT": "443", "CHROMA_SSL": "true",
        "CHROMA_HEADERS": "X-Proxy=a, X-Team = search", "CHROMA_AUTH_TOKEN": "secret-token",
    })
    server = settings.chroma_server
    assert server is not None and (server.host, server.port, server.ssl) == ("chroma.internal", 443, True)
    assert request_headers(server) == {"X-Proxy": "a", "X-Team": "search", "Authorization": "Bearer secret-token"}
    assert "secret-token" not in repr(settings)
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).chroma_server is None


def test_a_full_chunk_of_openai_sized_vectors_is_written_in_requests_the_server_accepts(server_settings):
    """5,000 vectors of 1,536 floats in one `add` is a body the server refuses (413); the adapter splits it."""
    line = Runtime.from_settings(server_settings).vectors(KIND)
    ids = [f"v{n}" for n in range(5000)]
    vectors = np.random.default_rng(0).standard_normal((len(ids), 1536), dtype=np.float32)
    with line.writable("text-embedding-3-small", 1536, "row-lower") as (collection, _):
        collection.add(ids=ids, embeddings=vectors, documents=ids, metadatas=[{"batch_id": "b"}] * len(ids))
        assert collection.count() == len(ids)
