"""The VectorStore contract, run on every mode: versions written, staged, switched, read and pruned.

Today's mode keeps snapshot archives in an object store (local folder or S3);
a server mode is added by a new entry in `VECTOR_STORES` (tests/contracts/conftest.py).
"""

from __future__ import annotations

import pytest

from embedding_assets.domain.vectors import NEXT, SERVING, ModelMismatch

KIND = "lines"
MODEL, OTHER_MODEL = "model-a", "model-b"
DIMS = 4
RECIPE = "row-lower"


def vector(i: int) -> list[float]:
    return [float(i + 1), 1.0, 0.0, 0.5]


def publish(line, ids: list[str], model: str = MODEL, delete: tuple[str, ...] = ()) -> int:
    """Add `ids` to the line's working collection and switch readers to it; returns the new version."""
    with line.writable(model, DIMS, RECIPE) as (collection, _):
        if delete:
            collection.delete(ids=list(delete))
        if ids:
            collection.add(ids=ids, embeddings=[vector(i) for i in range(len(ids))],
                           metadatas=[{"text": key} for key in ids])
        count = collection.count()
    version = line.next_version()
    staged = line.stage(version)
    line.swap(staged, count, model, DIMS, recipe=RECIPE)
    line.mark_clean(version)
    return version


def test_nothing_published_reads_as_none(vector_store):
    line = vector_store.line(KIND)
    assert (line.kind, line.line) == (KIND, SERVING)
    assert line.latest() is None and line.next_version() == 1
    assert line.target().line == SERVING
    with line.readable() as collection:
        assert collection is None


def test_a_staged_version_is_seen_only_after_the_swap(vector_store):
    line = vector_store.line(KIND)
    with line.writable(MODEL, DIMS, RECIPE) as (collection, pointer):
        assert pointer is None
        collection.add(ids=["a", "b"], embeddings=[vector(0), vector(1)])
    staged = line.stage(1)
    with line.readable() as collection:
        assert collection is None

    pointer = line.swap(staged, 2, MODEL, DIMS, recipe=RECIPE)
    assert (pointer.version, pointer.vectors, pointer.model, pointer.dimensions) == (1, 2, MODEL, DIMS)
    assert line.latest() == pointer
    with line.readable() as collection:
        assert collection.count() == 2 and sorted(collection.get()["ids"]) == ["a", "b"]
        assert collection.query(query_embeddings=[vector(1)], n_results=1)["ids"] == [["b"]]


def test_each_version_builds_on_the_last_and_old_ones_are_pruned(vector_store):
    line = vector_store.line(KIND)
    assert publish(line, ["a", "b"]) == 1
    first = line.latest().key
    assert publish(line, ["c"], delete=("a",)) == 2
    with line.readable() as collection:
        assert sorted(collection.get()["ids"]) == ["b", "c"]

    assert line.prune() == [first]  # keep_versions=1
    assert line.prune() == []
    with vector_store.line(KIND).readable() as collection:
        assert collection.count() == 2


def test_the_next_line_is_built_beside_serving_then_cleared(vector_store):
    serving = vector_store.line(KIND)
    publish(serving, ["a"])
    nxt = serving.next_line()
    assert nxt.line == NEXT and nxt.latest() is None

    assert publish(nxt, ["a", "b"], model=OTHER_MODEL) == 2  # one numbering for both lines
    assert serving.target().line == NEXT and serving.next_version() == 3
    with serving.readable() as collection:
        assert collection.get()["ids"] == ["a"]
    with nxt.readable() as collection:
        assert sorted(collection.get()["ids"]) == ["a", "b"]
    assert serving.prune() == []  # keep_versions=1, yet both lines' current versions stay

    nxt.clear()
    assert nxt.latest() is None and serving.target().line == SERVING
    assert serving.latest().model == MODEL


def test_a_line_refuses_vectors_of_another_model(vector_store):
    line = vector_store.line(KIND)
    publish(line, ["a"])
    with pytest.raises(ModelMismatch), line.writable(OTHER_MODEL, DIMS, RECIPE):
        pass
    with line.writable(MODEL, DIMS, RECIPE) as (collection, pointer):
        assert pointer.version == 1 and collection.count() == 1


def test_a_line_refuses_vectors_of_another_recipe(vector_store):
    line = vector_store.line(KIND)
    publish(line, ["a"])
    assert line.latest().recipe == RECIPE
    with pytest.raises(ModelMismatch, match="recipe"), line.writable(MODEL, DIMS, "context3"):
        pass


def test_a_search_view_holds_the_published_version_and_its_lexical_index(vector_store):
    line = vector_store.line(KIND)
    assert line.open_view() is None
    publish(line, ["TOTAL 9.99", "CASH 10.00"])
    version = publish(line, ["CHANGE 0.01"], delete=("CASH 10.00",))
    view = line.open_view()
    try:
        assert view.version == version and sorted(view.collection.get()["ids"]) == ["CHANGE 0.01", "TOTAL 9.99"]
        assert [vid for vid, _ in view.lexical.rank("total", None)] == ["TOTAL 9.99"]
        assert view.lexical.rank("cash", None) == []
    finally:
        view.close()
