"""The BatchProvider contract, run on every provider: the Batch API lifecycle, lookups by metadata, sync embeds.

The local provider runs its wordllama emulation; the openai provider talks to
the loopback Batch API (tests/fake_batch_api.py) through the real SDK.
Provider-specific behaviour stays in test_local_provider.py and test_openai_provider.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from embedding_assets.domain.ports import BatchNotFound, BatchProvider, ProviderBatch
from embedding_assets.domain.results import iter_results

TEXTS = ["MILK 2% 1 GAL 3.49", "TOTAL 12.99", "THANK YOU"]


def request_file(provider: BatchProvider, path: Path, texts: list[str]) -> Path:
    """One embedding request per text, for the provider's own model and size, as the pipeline writes them."""
    with path.open("w") as f:
        for i, text in enumerate(texts):
            body: dict = {"model": provider.model, "input": text, "encoding_format": "base64"}
            if provider.request_dimensions is not None:
                body["dimensions"] = provider.request_dimensions
            f.write(json.dumps({"custom_id": f"IMAGE#a#RECEIPT#00001#LINE#{i:05d}", "method": "POST",
                                "url": "/v1/embeddings", "body": body}) + "\n")
    return path


def submit(provider: BatchProvider, tmp_path: Path, metadata: dict[str, str], texts: list[str] = TEXTS):
    return provider.create_batch(provider.upload(request_file(provider, tmp_path / "in.jsonl", texts)), metadata)


def finish(provider: BatchProvider, batch: ProviderBatch) -> ProviderBatch:
    for _ in range(50):
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        batch = provider.retrieve(batch.id)
    raise AssertionError(f"batch {batch.id} never finished: {batch.status}")


def test_a_batch_runs_to_completion_and_its_results_parse(batch_provider, tmp_path: Path) -> None:
    created = submit(batch_provider, tmp_path, {"batch_id": "b1", "kind": "lines"})
    assert created.status not in ("failed", "expired", "cancelled")
    assert created.metadata == {"batch_id": "b1", "kind": "lines"}

    done = finish(batch_provider, created)

    assert done.status == "completed" and (done.total, done.completed, done.failed) == (3, 3, 0)
    assert done.error_file_id is None and done.prompt_tokens > 0
    dest = tmp_path / "out" / "results.jsonl"
    dest.parent.mkdir()
    batch_provider.download(done.output_file_id, dest)
    results = {r.custom_id: r for r in iter_results(dest)}
    assert sorted(results) == [f"IMAGE#a#RECEIPT#00001#LINE#{i:05d}" for i in range(3)]
    expected = batch_provider.embed(TEXTS)
    for i, text in enumerate(TEXTS):
        (vector,) = results[f"IMAGE#a#RECEIPT#00001#LINE#{i:05d}"].vectors
        assert vector.shape == (batch_provider.dimensions,), text
        np.testing.assert_allclose(vector, expected[i], atol=1e-5)
    assert sum(r.prompt_tokens for r in results.values()) == done.prompt_tokens
    assert batch_provider.retrieve(created.id).status == "completed"


def test_cancel_of_a_finished_batch_returns_it_unchanged(batch_provider, tmp_path: Path) -> None:
    done = finish(batch_provider, submit(batch_provider, tmp_path, {"batch_id": "b"}))
    assert done.status == "completed" and done.prompt_tokens > 0 and done.completed == 3
    assert batch_provider.cancel(done.id).status == "completed"


def test_find_batches_by_metadata(batch_provider, tmp_path: Path) -> None:
    first = submit(batch_provider, tmp_path, {"kind": "lines", "run": "1"})
    second = submit(batch_provider, tmp_path, {"kind": "lines", "run": "2"})

    assert {b.id for b in batch_provider.find_batches({"kind": "lines"})} == {first.id, second.id}
    assert [b.id for b in batch_provider.find_batches({"kind": "lines", "run": "2"})] == [second.id]
    assert batch_provider.find_batches({"kind": "words"}) == []
    assert batch_provider.find_batches({"kind": "lines"}, since=time.time() + 3600) == []


def test_batch_metadata_beyond_the_batch_api_limits_is_refused(batch_provider, tmp_path: Path) -> None:
    file_id = batch_provider.upload(request_file(batch_provider, tmp_path / "in.jsonl", TEXTS))
    with pytest.raises(ValueError, match="pairs"):
        batch_provider.create_batch(file_id, {f"k{i}": "v" for i in range(17)})
    with pytest.raises(ValueError, match="512"):
        batch_provider.create_batch(file_id, {"batch_id": "x" * 513})
    assert batch_provider.find_batches({}) == []


def test_an_unknown_batch_is_not_found(batch_provider) -> None:
    with pytest.raises(BatchNotFound):
        batch_provider.retrieve("batch_" + "0" * 24)


def test_embed_gives_unit_rows_of_the_configured_size(batch_provider) -> None:
    vectors = batch_provider.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (3, batch_provider.dimensions)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert batch_provider.embed([]).shape == (0, batch_provider.dimensions)
    with pytest.raises(ValueError):
        batch_provider.embed(["", "x"])
