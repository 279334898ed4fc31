"""What a run will cost, said before it is sent, and a provider queue kept full without a refusal.

Against the loopback Batch API, which counts tokens with the models' own
encoding: the estimate is what the server bills afterwards, and a backlog
under an enqueued-token limit goes in as few queue cycles as exact counts
allow, where byte counts needed about twice as many.
"""

from __future__ import annotations

import json

import pytest

from embedding_assets.cli import main as cli
from embedding_assets.domain.batching import Budget
from embedding_assets.domain.models import KINDS, PROVIDER_LIVE, Stage, Status
from embedding_assets.domain.tokens import Fitted
from embedding_assets.steps.estimate import backlog
from embedding_assets.steps.pipeline import Pipeline
from embedding_assets.wiring import Runtime
from resources.providers.openai_batch import OpenAIBatchProvider
from tests.fake_batch_api import FakeBatchAPI
from tests.support import KIND, make_runtime, openai_env, quiet


def _cli(monkeypatch, capsys, env: dict[str, str], *argv: str) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def settle(pipeline: Pipeline, kind: str) -> None:
    """Submit, poll and ingest until nothing of `kind` is prepared or in flight."""
    for _ in range(100):
        pipeline.submit(kind, quiet)
        finished, _ = pipeline.poll(kind, 100)
        for record in finished:
            pipeline.ingest(record.batch_id, quiet)
        if not pipeline.store.list_batches(kind, [Stage.PREPARED, *PROVIDER_LIVE]):
            return
    raise AssertionError("batches never settled")


def test_the_estimate_is_what_the_server_bills_and_sends_nothing(tmp_path, fake_api):
    runtime = make_runtime(tmp_path, fake_api, receipts=3)
    counts = {kind: runtime.store.status_counts(kind) for kind in KINDS}
    estimates = {kind: runtime.estimate(kind) for kind in KINDS}
    assert fake_api.calls == [] and {kind: runtime.store.status_counts(kind) for kind in KINDS} == counts

    for kind in KINDS:
        runtime.pipeline.prepare(kind, 100_000, quiet)
        settle(runtime.pipeline, kind)
    billed = fake_api.billed_tokens()
    records = [r for kind in KINDS for r in runtime.store.list_batches(kind)]
    assert sum(e.tokens for e in estimates.values()) == pytest.approx(billed, rel=0.01)
    assert sum(e.cost_usd for e in estimates.values()) == pytest.approx(sum(r.cost_usd for r in records), rel=0.01)
    for kind, e in estimates.items():
        assert e.items == sum(r.item_count for r in runtime.store.list_batches(kind)) > 0
        assert e.requests == sum(r.request_count for r in runtime.store.list_batches(kind))
        assert e.batches == len(runtime.store.list_batches(kind)) and e.queue_cycles == 1


def test_cli_estimate_and_a_reembed_estimate_with_another_model(tmp_path, fake_api, monkeypatch, capsys):
    runtime = make_runtime(tmp_path, fake_api, receipts=2)
    env = {**openai_env(tmp_path, fake_api), "DAGSTER_HOME": str(tmp_path / "dagster")}
    code, out = _cli(monkeypatch, capsys, env, "estimate", "--kind", KIND, "--json")
    [before] = json.loads(out)
    assert code == 0 and before["tokens"] > 0 and before["model"] == "text-embedding-3-small"
    code, out = _cli(monkeypatch, capsys, env, "estimate")
    assert code == 0 and f"[{KIND}] the next run sends {before['items']:,} {KIND}" in out
    assert out.splitlines()[-1].startswith("total: ") and fake_api.calls == []

    runtime.pipeline.prepare(KIND, 100_000, quiet)
    settle(runtime.pipeline, KIND)
    runtime.compactor(KIND).run(quiet)
    code, out = _cli(monkeypatch, capsys, env, "estimate", "--kind", KIND, "--json")
    assert json.loads(out)[0]["items"] == 0
    large = {**env, "EMBEDDING_MODEL": "text-embedding-3-large", "EMBEDDING_DIMENSIONS": "256"}
    code, out = _cli(monkeypatch, capsys, large, "estimate", "--kind", KIND, "--reembed", "--json")
    [again] = json.loads(out)
    # Every embedded line again, the same inputs, at the large model's price.
    assert (again["items"], again["tokens"]) == (before["items"], fake_api.billed_tokens())
    assert again["cost_usd"] == pytest.approx(again["tokens"] * 0.065 / 1e6, abs=1e-8)  # reported to 1e-8 USD


def test_the_local_provider_estimates_in_its_own_tokens(runtime: Runtime, demo_receipts):
    runtime.store.put_receipts(demo_receipts[:2])
    guess = runtime.estimate(KIND)
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    settle(runtime.pipeline, KIND)
    assert guess.tokens == sum(r.prompt_tokens for r in runtime.store.list_batches(KIND)) > 0
    assert guess.cost_usd == 0.0 and guess.queue_cycles == 1


def test_backlog_after_a_prepare_counts_what_still_waits(tmp_path, fake_api):
    runtime = make_runtime(tmp_path, fake_api, receipts=6)
    whole = runtime.estimate(KIND)
    runtime.pipeline.prepare(KIND, whole.items // 2, quiet)
    waiting = backlog(runtime.pipeline, KIND)
    assert waiting.items == whole.items
    assert waiting.tokens == pytest.approx(whole.tokens, rel=0.15)
    assert waiting.describe().startswith(f"backlog: {whole.items} items, ~")
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    everything = backlog(runtime.pipeline, KIND)
    assert (everything.items, everything.tokens) == (whole.items, whole.tokens)


class _Bytes:
    """The count this project used before: one token per UTF-8 byte, a bound that never undercounts."""

    def count(self, text: str) -> int:
        return len(text.encode())

    def fit(self, text: str, max_tokens: int) -> Fitted:
        data = text.encode()
        return Fitted(data[:max_tokens].decode(errors="ignore"), min(len(data), max_tokens), len(data) > max_tokens)


def _cycles(runtime: Runtime) -> int:
    """Submit rounds until the backlog is gone, each waiting for everything in flight to finish."""
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    cycles = 0
    while runtime.store.list_batches(KIND, [Stage.PREPARED]):
        assert runtime.pipeline.submit(KIND, quiet).submitted, "nothing fits in an empty queue"
        cycles += 1
        while runtime.store.list_batches(KIND, PROVIDER_LIVE):
            finished, _ = runtime.pipeline.poll(KIND, 100)
            for record in finished:
                runtime.pipeline.ingest(record.batch_id, quiet)
    return cycles


def test_exact_counts_take_a_backlog_in_half_the_queue_cycles_with_no_refusal(tmp_path, monkeypatch):
    limit = 3000
    cycles, ratios = {}, {}
    for name in ("bytes", "exact"):
        api = FakeBatchAPI().start()
        try:
            api.switches.enqueued_limit = limit
            with monkeypatch.context() as patch:
                if name == "bytes":
                    patch.setattr(OpenAIBatchProvider, "tokenizer", property(lambda self: _Bytes()))
                runtime = make_runtime(tmp_path / name, api, receipts=24, ENQUEUED_TOKEN_LIMIT=str(limit))
                predicted = runtime.estimate(KIND).queue_cycles
                cycles[name] = _cycles(runtime)
            assert cycles[name] == predicted
            assert api.refusals() == 0 and api.peak_enqueued <= limit
            ratios[name] = sum(r.estimated_tokens for r in runtime.store.list_batches(KIND)) / api.billed_tokens()
            assert runtime.store.status_counts(KIND).get(Status.NONE.value, 0) == 0
        finally:
            api.stop()
    # Demo receipt text is ~2.1 bytes per cl100k token; the queue cycles shrink by about as much.
    assert ratios["exact"] == 1.0 and ratios["bytes"] > 2
    assert cycles["bytes"] >= 1.8 * cycles["exact"], cycles


def test_a_batch_finished_at_the_provider_frees_the_queue_before_our_poll_sees_it(tmp_path, fake_api):
    # Files of one receipt each with the three-row inputs (500-600 tokens): two fit in the limit at once.
    runtime = make_runtime(tmp_path, fake_api, receipts=4, ENQUEUED_TOKEN_LIMIT="1250", LINES_RECIPE="context3")
    pipeline = Pipeline(runtime.store, runtime.objects, runtime.provider, runtime.tuning.work_dir,
                        budget=Budget(max_tokens=650), settings=runtime.pipeline.settings)
    pipeline.prepare(KIND, 100_000, quiet)
    first = pipeline.submit(KIND, quiet)
    assert len(first.submitted) == 2 and len(first.held) == 2
    for batch_id in first.submitted:  # the provider finishes them; our records still say SUBMITTED
        record = runtime.store.get_batch(batch_id)
        while runtime.provider.retrieve(record.provider_batch_id).status != "completed":
            pass
    assert all(runtime.store.get_batch(b).stage == Stage.SUBMITTED for b in first.submitted)
    assert pipeline.submit(KIND, quiet).submitted == first.held


def test_output_files_are_kept_for_the_configured_time(tmp_path, fake_api):
    runtime = make_runtime(tmp_path, fake_api, receipts=1, OUTPUT_EXPIRES_AFTER_HOURS="36")
    runtime.pipeline.prepare(KIND, 100_000, quiet)
    settle(runtime.pipeline, KIND)
    outputs = [f for f in fake_api.files.values() if f["purpose"] == "batch_output"]
    assert outputs and all(f["expires_at"] - f["created_at"] == 36 * 3600 for f in outputs)
    default = make_runtime(tmp_path / "default", fake_api, receipts=1)
    assert default.provider.output_expires_after_seconds == 7 * 24 * 3600
