from pathlib import Path

import pytest

from embedding_assets.domain.ports import ObjectNotFound
from resources.object_store import local as local_object_store
from resources.object_store.local import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "root")


def test_put_get_overwrite_and_files(store: LocalObjectStore, tmp_path: Path) -> None:
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


def test_failed_write_keeps_old_object_and_leaves_no_temp(store: LocalObjectStore, monkeypatch) -> None:
    store.put_bytes("k/v", b"old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(local_object_store.os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        store.put_bytes("k/v", b"new")
    monkeypatch.undo()
    assert store.get_bytes("k/v") == b"old"
    assert [p.name for p in (store.root / "k").iterdir()] == ["v"]


def test_list_is_sorted_prefix_match_without_temp_files(store: LocalObjectStore) -> None:
    for key in ["batches/lines/b", "batches/lines/a", "batches/words/c", "batches/lines.txt", "deltas/x"]:
        store.put_bytes(key, b"1")
    (store.root / "batches" / "lines" / ".tmp-abc").write_bytes(b"partial")

    assert list(store.list("batches/lines/")) == ["batches/lines/a", "batches/lines/b"]
    assert list(store.list("batches/li")) == ["batches/lines.txt", "batches/lines/a", "batches/lines/b"]
    assert list(store.list("")) == sorted(
        ["batches/lines/a", "batches/lines/b", "batches/lines.txt", "batches/words/c", "deltas/x"]
    )
    assert list(store.list("nothing/here/")) == []


def test_missing_keys(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("no/such")
    with pytest.raises(KeyError):
        store.download("no/such", tmp_path / "d")
    assert not (tmp_path / "d").exists()
    assert not store.exists("no/such")
    store.delete("no/such")
    store.put_bytes("a/b", b"1")
    store.delete("a/b")
    assert not store.exists("a/b")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("a")


@pytest.mark.parametrize(
    "key", ["../x", "/abs", "a/../../b", "a//b", "a\\b", "a\x00b", "a/./b", "a/", ".tmp-1", ""]
)
def test_bad_keys_are_rejected(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(ValueError) as info:
        store.put_bytes(key, b"x")
    assert repr(key) in str(info.value)
    with pytest.raises(ValueError):
        store.get_bytes(key)
    with pytest.raises(ValueError):
        store.delete(key)
    assert list(store.list("")) == []
    assert not (store.root.parent / "x").exists()


@pytest.mark.parametrize("prefix", ["../", "/etc/", "a//b", "a\\b"])
def test_bad_prefixes_are_rejected(store: LocalObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        list(store.list(prefix))


def test_symlink_cannot_lead_outside_root(store: LocalObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        store.put_bytes("link/x", b"x")
    assert list(outside.iterdir()) == []
