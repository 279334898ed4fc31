"""LocalObjectStore's own guarantees: atomic writes, temp files unseen, no way out of its root.

The rules every object store keeps are in tests/contracts/test_object_store.py.
"""

from pathlib import Path

import pytest

from resources.object_store import local as local_object_store
from resources.object_store.local import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "root")


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


def test_list_skips_temp_files(store: LocalObjectStore) -> None:
    for key in ["batches/lines/b", "batches/lines/a"]:
        store.put_bytes(key, b"1")
    (store.root / "batches" / "lines" / ".tmp-abc").write_bytes(b"partial")

    assert list(store.list("batches/lines/")) == ["batches/lines/a", "batches/lines/b"]
    assert list(store.list("")) == ["batches/lines/a", "batches/lines/b"]


def test_symlink_cannot_lead_outside_root(store: LocalObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        store.put_bytes("link/x", b"x")
    assert list(outside.iterdir()) == []
