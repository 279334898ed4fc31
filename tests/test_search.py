"""Search: hybrid/vector/lexical modes, receipt and merchant filters, the lexical index beside each version,
views kept per version, recipes as part of a collection's identity, and repeatable HNSW answers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from embedding_assets.api import search_receipts
from embedding_assets.cli import main as cli
from embedding_assets.data.realistic import labelled_receipts
from embedding_assets.domain.fields import header_rows
from embedding_assets.domain.settings import ConfigError, Settings
from embedding_assets.domain.vectors import ModelMismatch
from embedding_assets.steps.search import Query, Searcher, search
from embedding_assets.steps.status import kind_status
from embedding_assets.wiring import Runtime
from resources.vector_store.chroma import persistent_collection
from resources.vector_store.lexical import FILE_NAME
from tests.conftest import base_env
from tests.crashes import drive

KIND = "lines"


@pytest.fixture(scope="module")
def labelled():
    return labelled_receipts(12, seed=4)


@pytest.fixture
def embedded(tmp_path, labelled) -> Runtime:
    runtime = Runtime.from_settings(Settings.from_env(base_env(tmp_path)))
    runtime.store.put_receipts([r for r, _ in labelled])
    drive(runtime, KIND)
    return runtime


def _role(labelled, hit) -> str:
    for receipt, roles in labelled:
        if receipt.image_id == hit.image_id:
            return roles[int(hit.metadata["line_id"])]
    raise AssertionError(hit.id)


@pytest.mark.parametrize("mode", ["hybrid", "vector", "lexical"])
def test_total_finds_a_total_row_first_and_total_amount_a_total_in_every_mode(embedded, labelled, mode):
    hits = search(embedded.vectors(KIND), embedded.provider, "total", k=5, mode=mode)
    # bm25 alone ranks any short row holding the word first (SUB-TOTAL too); the model tells them apart
    labels = ("TOTAL", "GRAND TOTAL", "NETT TOTAL", "NET TOTAL") if mode != "lexical" else ("",)
    assert hits and "TOTAL" in hits[0].text.upper() and hits[0].text.upper().startswith(labels)
    hits = search(embedded.vectors(KIND), embedded.provider, "total amount", k=3, mode=mode)
    assert "total" in {_role(labelled, hit) for hit in hits}


def test_upper_and_lower_case_queries_find_the_same_rows(embedded):
    line = embedded.vectors(KIND)
    lower = [h.id for h in search(line, embedded.provider, "cash", k=5)]
    assert lower == [h.id for h in search(line, embedded.provider, "CASH", k=5)]


def test_receipt_filter_searches_inside_one_receipt(embedded, labelled):
    receipt, roles = labelled[3]
    ref = f"{receipt.image_id}:{receipt.receipt_id}"
    hits = search(embedded.vectors(KIND), embedded.provider, "date", k=3, receipt=ref)
    assert hits and {(h.image_id, h.receipt_id) for h in hits} == {(receipt.image_id, receipt.receipt_id)}
    assert "date" in {roles[int(h.metadata["line_id"])] for h in hits}
    with pytest.raises(ValueError, match="IMAGE_ID:RECEIPT_ID"):
        Query("date", receipt="no-colon")


def test_merchant_filter_is_case_insensitive_and_an_unknown_merchant_finds_nothing(embedded, labelled):
    merchant = labelled[0][0].merchant_name
    for mode in ("hybrid", "vector", "lexical"):
        hits = search(embedded.vectors(KIND), embedded.provider, "total", k=4, merchant=merchant.lower(), mode=mode)
        assert hits and {h.merchant_name for h in hits} == {merchant}
    assert search(embedded.vectors(KIND), embedded.provider, "total", merchant="NO SUCH SHOP") == []



@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
def test_a_padded_receipt_id_or_merchant_finds_what_the_canonical_form_finds(embedded, labelled, mode):
    receipt = labelled[3][0]
    line = embedded.vectors(KIND)

    def ids(**filters):  # with scores: in hybrid, a filter the lexical side missed leaves the vector scores alone
        return [(h.id, h.score) for h in search(line, embedded.provider, "total", k=20, mode=mode, **filters)]

    canonical = ids(receipt=f"{receipt.image_id}:{receipt.receipt_id}")
    assert canonical and canonical == ids(receipt=f"{receipt.image_id}:{receipt.receipt_id:05d}")
    by_name = ids(merchant=receipt.merchant_name)
    assert by_name and by_name == ids(merchant=f"  {receipt.merchant_name} ")
    assert Query("total", receipt="IMG:00001", merchant=" Shop ") == Query("total", receipt="IMG:1", merchant="Shop")


def test_the_lexical_index_holds_the_same_items_as_its_version(embedded, labelled):
    line = embedded.vectors(KIND)
    before = _index_ids(line)
    with persistent_collection(line.read_copy()[0], KIND) as collection:
        assert before == set(collection.get()["ids"])
    gone = labelled[0][0]
    embedded.store.delete_receipt(gone.image_id, gone.receipt_id)
    embedded.compactor(KIND).run()
    after = _index_ids(line)
    assert after and not any(gone.image_id in vid for vid in after) and after < before
    hits = search(line, embedded.provider, gone.merchant_name, k=50, mode="lexical")
    assert all(h.image_id != gone.image_id for h in hits)


def _index_ids(line) -> set[str]:
    directory, _ = line.read_copy()
    db = sqlite3.connect(Path(directory) / FILE_NAME)
    try:
        return {row[0] for row in db.execute("SELECT id FROM rows")}
    finally:
        db.close()


def test_a_searcher_keeps_its_view_until_a_new_version_is_published(embedded, labelled):
    searcher = Searcher()
    line = embedded.vectors(KIND)
    first = searcher.view(line)
    assert searcher.view(line) is first
    gone = labelled[1][0]
    embedded.store.delete_receipt(gone.image_id, gone.receipt_id)
    embedded.compactor(KIND).run()
    second = searcher.view(line)
    assert second is not first and second.version == first.version + 1
    searcher.close()


def test_the_api_keeps_one_runtime_per_configuration(embedded, monkeypatch, tmp_path):
    for name, value in base_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    first = search_receipts("total amount", k=3)
    again = search_receipts("total amount", k=3, mode="vector")
    assert first and again and first[0].id == again[0].id


def test_cli_search_modes_filters_and_an_empty_result_says_so(embedded, labelled, tmp_path, monkeypatch, capsys):
    for name, value in base_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["search", "TOTAL", "--mode", "lexical", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "(lexical)" in out and "TOTAL" in out.splitlines()[1].upper()
    receipt = labelled[2][0]
    assert cli.main(["search", "date", "--receipt", f"{receipt.image_id}:{receipt.receipt_id}"]) == 0
    assert receipt.image_id in capsys.readouterr().out
    assert cli.main(["search", "total", "--merchant", "no such shop"]) == 0
    assert "no lines match 'total'" in capsys.readouterr().out


def test_the_cli_search_path_imports_no_dagster(embedded, tmp_path):
    env = {**base_env(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = ("import sys; from embedding_assets.cli import main; main.main(['search', 'total']); "
            "print('DAGSTER', 'dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert "DAGSTER False" in out


def test_a_recipe_change_goes_through_reembed_and_search_answers_from_the_old_collection_meanwhile(
        tmp_path, labelled):
    old_settings = Settings.from_env(base_env(tmp_path) | {"LINES_RECIPE": "context3"})
    old = Runtime.from_settings(old_settings)
    old.store.put_receipts([r for r, _ in labelled])
    drive(old, KIND)
    assert kind_status(old.store, old.vectors(KIND))["recipe"] == "context3"
    before = [h.id for h in search(old.vectors(KIND), old.provider, "TOTAL", k=5)]
    new = Runtime.from_settings(replace(old_settings, recipes={"lines": "row-lower", "words": "word-lower"}))
    with pytest.raises(ModelMismatch, match="recipe context3"):
        new.compactor(KIND).run()

    start = new.start_reembed(KIND)

    assert (start.recipe, start.serving_recipe) == ("row-lower", "context3")
    assert [h.id for h in search(new.vectors(KIND), new.provider, "TOTAL", k=5)] == before
    assert kind_status(new.store, new.vectors(KIND))["reembed"]["to_recipe"] == "row-lower"
    drive(new, KIND)
    pointer = new.vectors(KIND).latest()
    assert pointer.recipe == "row-lower" and new.vectors(KIND).next_line().latest() is None
    with persistent_collection(new.vectors(KIND).read_copy()[0], KIND) as collection:
        assert collection.metadata["recipe"] == "row-lower"


def test_an_unknown_recipe_fails_at_load_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="WORDS_RECIPE"):
        Settings.from_env(base_env(tmp_path) | {"WORDS_RECIPE": "paragraph"})


@pytest.mark.parametrize(("query", "rows"), [
    ("company", 1), ("COMPANY NAME", 1), ("store name", 1), ("name of the shop", 1), ("merchant", 1),
    ("store address", None), ("company no", None), ("total", None), ("name", None), ("", None),
])
def test_a_query_naming_a_header_field_is_told_apart_from_one_asking_for_words(query, rows):
    assert header_rows(query) == rows


def test_company_name_finds_each_receipts_name_row_in_hybrid(embedded, labelled):
    line = embedded.vectors(KIND)
    hits = search(line, embedded.provider, "company name", k=10)
    assert len(hits) == 10 and {_role(labelled, hit) for hit in hits} == {"merchant"}
    receipt, roles = labelled[5]
    (inside,) = search(line, embedded.provider, "company", k=1, receipt=f"{receipt.image_id}:{receipt.receipt_id}")
    assert roles[int(inside.metadata["line_id"])] == "merchant" and inside.text == receipt.lines[0].text
    assert any(h.metadata["row"] > 0 for h in search(line, embedded.provider, "company name", k=10, mode="vector"))


def test_a_collection_from_before_rows_answers_a_header_field_query_as_written(tmp_path, labelled):
    """Its vectors record no row, or only the newer ones do: the field query is a plain hybrid search."""
    runtime = Runtime.from_settings(Settings.from_env(base_env(tmp_path)))
    line, provider = runtime.vectors(KIND), runtime.provider
    texts = [row.text for receipt, _ in labelled[:2] for row in receipt.lines]
    with line.writable(provider.model, provider.dimensions, "row-lower") as (collection, _):
        collection.modify(metadata={"model": provider.model, "dimensions": provider.dimensions, "recipe": "row-lower"})
        collection.add(ids=[f"IMAGE#i#RECEIPT#00001#LINE#{n:05d}" for n in range(len(texts))],
                       embeddings=provider.embed([t.lower() for t in texts]), documents=texts,
                       metadatas=[{"image_id": "i", "receipt_id": 1, "line_id": n, "text": t, **({"row": n} if n < 3
                                                                                                  else {})}
                                  for n, t in enumerate(texts)])
    line.swap(line.stage(1), len(texts), provider.model, provider.dimensions, recipe="row-lower")
    hits = search(line, provider, "company name", k=5)
    assert len(hits) == 5 and any("row" not in hit.metadata for hit in hits)


def test_identical_builds_give_identical_answers(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    queries = rng.standard_normal((20, 32)).astype(np.float32)
    answers = []
    for name in ("a", "b"):
        with persistent_collection(tmp_path / name, KIND, "m", 32, "row-lower") as collection:
            for start in range(0, len(vectors), 1000):
                collection.add(ids=[f"v{i}" for i in range(start, start + 1000)],
                               embeddings=vectors[start:start + 1000])
            answers.append(collection.query(query_embeddings=queries, n_results=10)["ids"])
    assert answers[0] == answers[1]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = np.argsort(-(queries @ unit.T), axis=1)[:, :10]
    found = np.mean([len({f"v{i}" for i in row} & set(got)) / 10 for row, got in zip(exact, answers[0])])
    assert found >= 0.99


def test_a_word_search_finds_the_word_itself(tmp_path, labelled):
    runtime = Runtime.from_settings(Settings.from_env(base_env(tmp_path)))
    runtime.store.put_receipts([r for r, _ in labelled[:4]])
    drive(runtime, "words")
    for mode in ("hybrid", "vector", "lexical"):
        hits = search(runtime.vectors("words"), runtime.provider, "total", k=3, mode=mode)
        assert hits and hits[0].text.upper().strip(":") == "TOTAL", (mode, [h.text for h in hits])
    assert kind_status(runtime.store, runtime.vectors("words"))["recipe"] == "word-lower"
