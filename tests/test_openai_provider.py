"""The openai provider's own guarantees, its settings and its CLI commands, against the loopback Batch API.

What every provider does is in tests/contracts/test_batch_provider.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from embedding_assets.cli import main as cli
from embedding_assets.domain.models import Stage, Status
from embedding_assets.domain.ports import EnqueuedLimitReached
from embedding_assets.domain.settings import ConfigError, Settings
from resources.providers import openai_batch as openai_provider
from resources.providers.openai_batch import DownloadFailed, OpenAIBatchProvider
from tests.fake_batch_api import FakeBatchAPI, Fault, fake_vector
from tests.support import KIND, make_runtime, openai_env, quiet, settle


def provider(api: FakeBatchAPI, **kw) -> OpenAIBatchProvider:
    kw.setdefault("dimensions", 8)
    return OpenAIBatchProvider(api_key="sk-test", base_url=api.base_url, max_retries=2, timeout_seconds=5,
                               backoff_seconds=0.01, **kw)


def request_file(path: Path, count: int = 3, dims: int = 8) -> Path:
    with path.open("w") as f:
        for i in range(count):
            body = {"model": "text-embedding-3-small", "input": f"text {i}", "encoding_format": "base64",
                    "dimensions": dims}
            f.write(json.dumps({"custom_id": f"IMAGE#a#RECEIPT#00001#LINE#{i:05d}", "method": "POST",
                                "url": "/v1/embeddings", "body": body}) + "\n")
    return path


@pytest.mark.parametrize("env, variable", [
    ({"EMBEDDING_DIMENSIONS": "4000"}, "EMBEDDING_DIMENSIONS"),
    ({"EMBEDDING_MODEL": "text-embedding-ada-002", "EMBEDDING_DIMENSIONS": "512"}, "EMBEDDING_DIMENSIONS"),
    ({"EMBEDDING_MODEL": "some-new-model"}, "EMBEDDING_DIMENSIONS"),
    ({"OPENAI_MAX_RETRIES": "-1"}, "OPENAI_MAX_RETRIES"),
    ({"OPENAI_TIMEOUT_SECONDS": "soon"}, "OPENAI_TIMEOUT_SECONDS"),
    ({"ENQUEUED_TOKEN_LIMIT": "0"}, "ENQUEUED_TOKEN_LIMIT"),
    ({"OUTPUT_EXPIRES_AFTER_HOURS": "0"}, "OUTPUT_EXPIRES_AFTER_HOURS"),
    ({"OUTPUT_EXPIRES_AFTER_HOURS": "721"}, "OUTPUT_EXPIRES_AFTER_HOURS"),
    ({"BATCH_PRICES_PER_MTOK": "text-embedding-3-small:0.01"}, "BATCH_PRICES_PER_MTOK"),
    ({"BATCH_PRICES_PER_MTOK": "text-embedding-3-small=nan"}, "BATCH_PRICES_PER_MTOK"),
])
def test_bad_openai_settings_fail_at_load_naming_the_variable(env, variable):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({"EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test", **env})


def test_settings_defaults_and_price_overrides():
    settings = Settings.from_env({"EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test",
                                  "BATCH_PRICES_PER_MTOK": "text-embedding-3-large=0.05, my-model=1"})
    assert settings.model == "text-embedding-3-small" and settings.openai_max_retries == 5
    assert settings.batch_prices["text-embedding-3-small"] == 0.01
    assert settings.batch_prices["text-embedding-3-large"] == 0.05 and settings.batch_prices["my-model"] == 1.0


def test_each_model_gets_its_size_and_only_names_dimensions_when_they_differ(fake_api):
    small = provider(fake_api, dimensions=None)
    assert (small.model, small.dimensions, small.request_dimensions) == ("text-embedding-3-small", 1536, None)
    large = provider(fake_api, model="text-embedding-3-large", dimensions=256)
    assert (large.dimensions, large.request_dimensions) == (256, 256)
    ada = provider(fake_api, model="text-embedding-ada-002", dimensions=None)
    assert (ada.dimensions, ada.request_dimensions, ada.enqueued_token_limit) == (1536, None, 3_000_000)
    assert provider(fake_api, enqueued_token_limit=10).enqueued_token_limit == 10


def test_upload_checks_the_file_against_the_limits_before_sending(fake_api, tmp_path, monkeypatch):
    p = provider(fake_api)
    path = request_file(tmp_path / "in.jsonl", count=3)
    monkeypatch.setattr(openai_provider, "MAX_REQUESTS_PER_FILE", 2)
    with pytest.raises(ValueError, match="3 requests"):
        p.upload(path)
    monkeypatch.setattr(openai_provider, "MAX_FILE_BYTES", 100)
    with pytest.raises(ValueError, match="at most 100"):
        p.upload(path)
    assert fake_api.calls == []


def test_batch_metadata_limits_are_checked_before_sending(fake_api):
    p = provider(fake_api)
    with pytest.raises(ValueError, match="pairs"):
        p.create_batch("file-x", {f"k{i}": "v" for i in range(17)})
    with pytest.raises(ValueError, match="512"):
        p.create_batch("file-x", {"batch_id": "x" * 513})
    assert fake_api.calls == []


def test_a_create_refused_for_the_enqueued_limit_leaves_the_batch_prepared(tmp_path, fake_api):
    runtime = make_runtime(tmp_path, fake_api, receipts=1)
    fake_api.faults.append(Fault("POST", "/v1/batches", 400, code="token_limit_exceeded",
                                 message="Enqueued token limit reached for text-embedding-3-small."))
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    report = runtime.pipeline.submit(KIND, quiet)
    record = runtime.store.list_batches(KIND)[0]
    assert report.held == [record.batch_id] and not report.failed
    assert record.stage == Stage.PREPARED and record.last_error.startswith("held: ")
    assert "Enqueued token limit reached" in record.last_error
    assert runtime.pipeline.submit(KIND, quiet).submitted == [record.batch_id]

    p = provider(fake_api)
    fake_api.faults.append(Fault("POST", "/v1/batches", 429, code="token_limit_exceeded"))
    with pytest.raises(EnqueuedLimitReached):
        p.create_batch(p.upload(request_file(tmp_path / "in.jsonl")), {"batch_id": "b"})


def test_a_retry_after_too_long_to_wait_leaves_the_batch_for_the_next_run(tmp_path, fake_api):
    runtime = make_runtime(tmp_path, fake_api, receipts=1)
    fake_api.faults.append(Fault("POST", "/v1/batches", 429, retry_after="3600"))
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    started = time.monotonic()
    report = runtime.pipeline.submit(KIND, quiet)
    assert time.monotonic() - started < 5
    assert list(report.failed) == [r.batch_id for r in runtime.store.list_batches(KIND)]
    record = runtime.store.list_batches(KIND)[0]
    assert record.stage == Stage.PREPARED and "429" in record.last_error and not fake_api.batches
    assert runtime.pipeline.submit(KIND, quiet).submitted == [record.batch_id]


def test_a_download_that_never_completes_fails_and_leaves_nothing_behind(fake_api, tmp_path):
    p = provider(fake_api, download_attempts=3)
    file_id = p.upload(request_file(tmp_path / "in.jsonl"))
    fake_api.switches.cut_downloads = 3
    dest = tmp_path / "out" / "result.jsonl"
    with pytest.raises(DownloadFailed, match="3 attempts"):
        p.download(file_id, dest)
    assert not dest.exists() and not list(dest.parent.iterdir())
    p.download(file_id, dest)
    assert dest.read_bytes() == (tmp_path / "in.jsonl").read_bytes()


def test_find_batches_pages_through_the_list_and_stops_at_since(fake_api, tmp_path):
    p = provider(fake_api)
    file_id = p.upload(request_file(tmp_path / "in.jsonl"))
    p.create_batch(file_id, {"batch_id": "b0", "kind": "lines"})
    for i in range(1, 105):  # straight into the server's state: only the listing is under test
        fake_api._create({"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h",
                          "metadata": {"batch_id": f"b{i}", "kind": "lines"}})
    assert [b.metadata["batch_id"] for b in p.find_batches({"batch_id": "b0"})] == ["b0"]
    assert len(p.find_batches({"kind": "lines"})) == 105
    lists = fake_api.calls.count("GET /v1/batches")
    assert p.find_batches({"batch_id": "b0"}, since=time.time() + 3600) == []
    assert fake_api.calls.count("GET /v1/batches") == lists + 1


def test_embed_uses_the_sync_endpoint_in_chunks_and_accepts_floats(fake_api):
    p = provider(fake_api)
    texts = [f"query {i}" for i in range(2050)]
    vectors = p.embed(texts)
    assert vectors.shape == (2050, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[2049], fake_vector("query 2049", 8), atol=1e-6)
    assert fake_api.calls.count("POST /v1/embeddings") == 2
    fake_api.switches.ignore_base64 = True
    np.testing.assert_allclose(p.embed(["x"])[0], fake_vector("x", 8), atol=1e-6)
    with pytest.raises(ValueError):
        p.embed(["", "x"])


def _cli(monkeypatch, capsys, env: dict[str, str], *argv: str) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_cli_cancels_in_flight_batches_and_reports_cost_per_receipt(tmp_path, fake_api, monkeypatch, capsys):
    runtime = make_runtime(tmp_path, fake_api, receipts=2)
    env = {**openai_env(tmp_path, fake_api), "DAGSTER_HOME": str(tmp_path / "dagster")}
    fake_api.switches.cancel_keeps = 5
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    runtime.pipeline.submit(KIND, quiet)
    record = runtime.store.list_batches(KIND)[0]

    code, out = _cli(monkeypatch, capsys, env, "batches", "cancel", "--all")
    assert code == 0 and f"{record.batch_id}: cancelling" in out
    assert _cli(monkeypatch, capsys, env, "batches", "cancel")[0] == 2
    settle(runtime.pipeline, runtime.store)
    runtime.compactor(KIND).run(quiet)
    record = runtime.store.get_batch(record.batch_id)
    assert record.stage == Stage.COMPACTED and record.vectors == 5
    assert runtime.store.status_counts(KIND)[Status.SUCCESS.value] >= 5
    assert _cli(monkeypatch, capsys, env, "batches", "cancel", "--all") == (0, "no batch in flight\n")
    assert _cli(monkeypatch, capsys, env, "batches", "cancel", record.batch_id)[0] == 1

    code, out = _cli(monkeypatch, capsys, env, "cost", "--json")
    total = json.loads(out)
    assert code == 0 and total["prompt_tokens"] == fake_api.billed_tokens() > 0
    assert total["cost_usd"] == pytest.approx(fake_api.billed_tokens() * 0.01 / 1e6)
    assert sum(r["cost_usd"] for r in total["receipts"]) == pytest.approx(total["cost_usd"])
    assert sum(r["prompt_tokens"] for r in total["receipts"]) == total["prompt_tokens"]

    first = total["receipts"][0]
    receipt = f"{first['image_id']}:{first['receipt_id']}"
    code, out = _cli(monkeypatch, capsys, env, "cost", "--receipt", receipt, "--json")
    one = json.loads(out)
    assert one["receipts"] == [first] and one["cost_usd"] == pytest.approx(first["cost_usd"])
    code, out = _cli(monkeypatch, capsys, env, "cost")
    assert code == 0 and out.splitlines()[0].startswith(f"total: {total['prompt_tokens']} tokens")
    assert _cli(monkeypatch, capsys, env, "cost", "--receipt", "nonsense")[0] == 2
    assert _cli(monkeypatch, capsys, env, "cost", "--receipt", "missing:1")[0] == 1

    code, out = _cli(monkeypatch, capsys, env, "status")
    assert code == 0 and f"total: {total['prompt_tokens']} tokens" in out
