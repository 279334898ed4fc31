"""The ObjectStore contract, run on every backend: whole objects under flat keys, sorted listings, key rules.

Backend-specific facts stay in their own modules: atomic local writes and
symlinks in test_local_object_store.py; bucket routing and multipart in
test_s3_object_store.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from embedding_assets.domain.ports import ObjectNotFound

BAD_KEYS = ["", "../x", "/abs", "/etc/passwd", "a/../../b", "deltas/../a", "a//b", "deltas//a", "a\\b", "a\x00b",
            "a/./b", "./a", "a/", ".tmp-1", "deltas/.tmp-x"]


def test_put_get_overwrite_and_files(object_store, tmp_path: Path) -> None:
    store = object_store
    store.put_bytes("batches/lines/a.jsonl", b"one")
    assert store.get_bytes("batches/lines/a.jsonl") == b"one"
    store.put_bytes("batches/lines/a.jsonl", b"two")
    assert store.get_bytes("batches/lines/a.jsonl") == b"two"

    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    store.put_file("deltas/lines/b.parquet", src)
    dest = tmp_path / "out.bin"
    store.download("deltas/lines/b.parquet", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert store.exists("deltas/lines/b.parquet")
    assert not store.exists("deltas/lines")


def test_missing_keys_and_idempotent_delete(object_store, tmp_path: Path) -> None:
    store = object_store
    with pytest.raises(ObjectNotFound):
        store.get_bytes("deltas/lines/nope.parquet")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(ObjectNotFound):
        store.download("batches/lines/nope.jsonl", downloads / "x")
    assert list(downloads.iterdir()) == []  # no temp file left behind
    assert not store.exists("deltas/lines/nope.parquet")
    store.delete("deltas/lines/nope.parquet")

    store.put_bytes("deltas/lines/a", b"1")
    store.delete("deltas/lines/a")
    store.delete("deltas/lines/a")
    assert not store.exists("deltas/lines/a")
    store.put_bytes("deltas/lines/b", b"1")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("deltas/lines")  # a prefix is not an object


def test_list_is_sorted_and_matches_any_prefix(object_store) -> None:
    keys = ["batches/lines.txt", "batches/lines/a.jsonl", "batches/lines/b.jsonl", "batches/words/a.jsonl",
            "deltas/lines/a.parquet", "deltas/lines/b.parquet", "deltas/lines/c.parquet", "snapshots/lines/LATEST.json"]
    for key in reversed(keys):
        object_store.put_bytes(key, b"x")

    assert list(object_store.list("")) == keys
    assert list(object_store.list("ba")) == keys[:4]
    assert list(object_store.list("batches/li")) == keys[:3]
    assert list(object_store.list("batches/lines/")) == keys[1:3]
    assert list(object_store.list("deltas/")) == keys[4:7]
    assert list(object_store.list("nothing/here/")) == []


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(object_store, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        object_store.put_bytes(key, b"x")
    assert repr(key) in str(info.value)
    for call in (lambda: object_store.get_bytes(key), lambda: object_store.exists(key),
                 lambda: object_store.download(key, tmp_path / "x"), lambda: object_store.delete(key)):
        with pytest.raises(ValueError):
            call()
    assert list(object_store.list("")) == []
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("prefix", ["../", "/etc/", "/abs", "a//b", "a\\b"])
def test_bad_prefixes_are_rejected(object_store, prefix: str) -> None:
    with pytest.raises(ValueError):
        list(object_store.list(prefix))
