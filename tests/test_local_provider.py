"""The local provider's own behaviour: the Batch API's validation tiers, crash redo, wordllama's vectors.

What every provider does is in tests/contracts/test_batch_provider.py.
"""

from pathlib import Path

import numpy as np
import orjson
import pytest

from embedding_assets.domain.ports import BatchNotFound
from embedding_assets.domain.results import Result, iter_results
from resources.providers import local as local_provider
from resources.providers.local import LocalBatchProvider
from resources.providers.local_model import MODEL, load_model


@pytest.fixture(scope="session")
def model():
    return load_model()


@pytest.fixture
def provider(tmp_path: Path, model) -> LocalBatchProvider:
    return LocalBatchProvider(tmp_path / "provider")


def _request(custom_id: str, input, **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": MODEL, "input": input, **body},
    }


def _submit(provider: LocalBatchProvider, tmp_path: Path, rows: list, metadata: dict | None = None):
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"".join(r if isinstance(r, bytes) else orjson.dumps(r) + b"\n" for r in rows))
    return provider.create_batch(provider.upload(path), metadata or {})


def _results(provider: LocalBatchProvider, tmp_path: Path, file_id: str | None) -> dict[str, Result]:
    if file_id is None:
        return {}
    dest = tmp_path / f"{file_id}.jsonl"
    provider.download(file_id, dest)
    return {r.custom_id: r for r in iter_results(dest)}


def test_lifecycle(provider: LocalBatchProvider, tmp_path: Path) -> None:
    rows = [
        _request("a", "MILK 2% 1 GAL 3.49", encoding_format="base64"),
        _request("b", ["<EDGE>", "TOTAL 12.99", "VISA 12.99"], encoding_format="base64"),
        _request("c", "THANK YOU"),
    ]
    created = _submit(provider, tmp_path, rows, {"kind": "lines"})
    assert created.status == "validating"
    assert created.id.startswith("batch_") and created.input_file_id.startswith("file-")
    assert created.expires_at == created.created_at + 24 * 3600

    done = provider.retrieve(created.id)

    assert done.status == "completed"
    assert (done.total, done.completed, done.failed) == (3, 3, 0)
    assert done.error_file_id is None
    results = _results(provider, tmp_path, done.output_file_id)
    assert set(results) == {"a", "b", "c"}
    assert [len(results[k].vectors) for k in "abc"] == [1, 3, 1]
    for result in results.values():
        assert result.error is None
        for vector in result.vectors:
            assert vector.shape == (256,)
            assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    assert done.prompt_tokens == sum(r.prompt_tokens for r in results.values()) > 0
    np.testing.assert_allclose(results["b"].vectors[1], provider.embed(["TOTAL 12.99"])[0], atol=1e-6)
    assert provider.retrieve(created.id) == done


def test_bad_requests_go_to_the_error_file(provider: LocalBatchProvider, tmp_path: Path) -> None:
    rows = [
        _request("good", "EGGS 2.19"),
        {**_request("get", "x"), "method": "GET"},
        _request("other-model", "x") | {"body": {"model": "text-embedding-3-small", "input": "x"}},
        _request("empty", ["ok", ""]),
        _request("too-long", "word " * 9000),
        _request("big-dims", "x", dimensions=1024),
    ]
    done = provider.retrieve(_submit(provider, tmp_path, rows).id)

    assert (done.status, done.completed, done.failed) == ("completed", 1, 5)
    assert set(_results(provider, tmp_path, done.output_file_id)) == {"good"}
    errors = _results(provider, tmp_path, done.error_file_id)
    assert set(errors) == {"get", "other-model", "empty", "too-long", "big-dims"}
    assert all(r.status_code == 400 and r.vectors is None for r in errors.values())
    assert "invalid_request_error" in errors["get"].error
    assert "8192" in errors["too-long"].error


def test_all_failed_batch_completes_without_output(provider: LocalBatchProvider, tmp_path: Path) -> None:
    rows = [_request("x", ""), _request("y", 42)]
    done = provider.retrieve(_submit(provider, tmp_path, rows).id)

    assert done.status == "completed"
    assert done.output_file_id is None
    assert set(_results(provider, tmp_path, done.error_file_id)) == {"x", "y"}


@pytest.mark.parametrize(
    "content, code",
    [
        (b"this is not json\n", "invalid_json_line"),
        (b"".join(orjson.dumps(_request("dup", t)) + b"\n" for t in "ab"), "duplicate_custom_id"),
        (orjson.dumps({"method": "POST"}) + b"\n", "missing_custom_id"),
        (b"\n", "empty_file"),
        (b"{}\n" * 50_001, "too_many_requests"),
    ],
)
def test_malformed_file_fails_the_batch(
    provider: LocalBatchProvider, tmp_path: Path, content: bytes, code: str
) -> None:
    done = provider.retrieve(_submit(provider, tmp_path, [content]).id)

    assert done.status == "failed"
    assert done.output_file_id is None and done.error_file_id is None
    assert done.errors and done.errors[0].startswith(code)


def test_float_and_base64_give_the_same_vectors(provider: LocalBatchProvider, tmp_path: Path) -> None:
    rows = [
        _request("f", "BREAD 1.99", encoding_format="float"),
        _request("b", "BREAD 1.99", encoding_format="base64"),
    ]
    done = provider.retrieve(_submit(provider, tmp_path, rows).id)

    output = tmp_path / "out.jsonl"
    provider.download(done.output_file_id, output)
    lines = {row["custom_id"]: row for row in map(orjson.loads, output.read_bytes().splitlines())}
    assert isinstance(lines["f"]["response"]["body"]["data"][0]["embedding"], list)
    assert isinstance(lines["b"]["response"]["body"]["data"][0]["embedding"], str)
    results = _results(provider, tmp_path, done.output_file_id)
    np.testing.assert_array_equal(results["f"].vectors[0], results["b"].vectors[0])


def test_cancel_of_a_batch_in_flight(provider: LocalBatchProvider, tmp_path: Path) -> None:
    created = _submit(provider, tmp_path, [_request("a", "x")])

    cancelled = provider.cancel(created.id)

    assert cancelled.status == "cancelled"
    after = provider.retrieve(created.id)
    assert after.status == "cancelled" and after.output_file_id is None


def test_crash_mid_processing_is_redone(provider: LocalBatchProvider, tmp_path: Path, monkeypatch) -> None:
    created = _submit(provider, tmp_path, [_request("a", "x"), _request("b", "y")])

    def crash(*args):
        raise MemoryError("killed")

    monkeypatch.setattr(local_provider, "write_responses", crash)
    with pytest.raises(MemoryError):
        provider.retrieve(created.id)
    monkeypatch.undo()
    state = orjson.loads((provider.root / "batches" / f"{created.id}.json").read_bytes())
    assert state["status"] == "in_progress" and state["output_file_id"] is None

    done = provider.retrieve(created.id)
    assert done.status == "completed"
    assert set(_results(provider, tmp_path, done.output_file_id)) == {"a", "b"}


def test_truncated_dimensions_are_renormalised(tmp_path: Path, model) -> None:
    small = LocalBatchProvider(tmp_path / "p", dimensions=64)
    full = LocalBatchProvider(tmp_path / "p")
    text = "COFFEE LARGE 4.50"

    vector = small.embed([text])[0]

    assert vector.shape == (64,)
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    head = full.embed([text])[0][:64]
    np.testing.assert_allclose(vector, head / np.linalg.norm(head), atol=1e-6)
    done = small.retrieve(_submit(small, tmp_path, [_request("a", text), _request("b", text, dimensions=32)]).id)
    results = _results(small, tmp_path, done.output_file_id)
    assert results["a"].vectors[0].shape == (64,) and results["b"].vectors[0].shape == (32,)
    with pytest.raises(ValueError):
        LocalBatchProvider(tmp_path / "p", dimensions=257)


def test_embed_matches_wordllama_and_ranks_similar_texts_closer(provider: LocalBatchProvider, model) -> None:
    from wordllama.inference import WordLlamaInference

    texts = ["whole milk gallon", "milk 1 gallon whole", "credit card payment approved"]
    vectors = provider.embed(texts)

    reference = WordLlamaInference(model.table, model.tokenizer.__class__.from_str(model.tokenizer.to_str()))
    np.testing.assert_allclose(vectors, reference.embed(texts, norm=True), atol=1e-5)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 256)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])
    assert provider.embed([]).shape == (0, 256)
    with pytest.raises(ValueError):
        provider.embed([""])


def test_ids_cannot_name_other_files(provider: LocalBatchProvider, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        provider.retrieve("../../etc/passwd")
    with pytest.raises(ValueError):
        provider.download("file-../x", tmp_path / "x")
    with pytest.raises(BatchNotFound):
        provider.retrieve("batch_" + "0" * 24)
