from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from embedding_assets.domain.deltas import CorruptDelta, DeltaWriter, read_delta, verify_delta
from embedding_assets.domain.stamps import file_sha256


def _rows(n: int, d: int) -> tuple[list[str], np.ndarray, list[str], list[dict]]:
    rng = np.random.default_rng(7)
    ids = [f"IMAGE#img#RECEIPT#00001#LINE#{i:05d}" for i in range(n)]
    embeddings = rng.standard_normal((n, d)).astype(np.float32)
    documents = [f"line {i} — café €{i}.99" for i in range(n)]
    metadatas = [{"line_id": i, "x": i / 3, "text": f"t{i}", "ok": i % 2 == 0} for i in range(n)]
    return ids, embeddings, documents, metadatas


def _write(path: Path, n: int, d: int, row_group_size: int = 5000) -> DeltaWriter:
    ids, embeddings, documents, metadatas = _rows(n, d)
    with DeltaWriter(path, d, row_group_size=row_group_size) as writer:
        for row in zip(ids, embeddings, documents, metadatas):
            writer.add(*row)
    return writer


def test_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "deltas" / "batch_1.parquet"
    writer = _write(path, 10, 8)

    chunks = list(read_delta(path))

    ids, embeddings, documents, metadatas = _rows(10, 8)
    assert writer.count == 10
    assert writer.sha256 == file_sha256(path)
    assert not path.with_name(path.name + ".tmp").exists()
    assert [i for c in chunks for i in c.ids] == ids
    got = np.concatenate([c.embeddings for c in chunks])
    assert got.dtype == np.float32 and got.shape == (10, 8)
    np.testing.assert_array_equal(got, embeddings)
    assert [doc for c in chunks for doc in c.documents] == documents
    assert [m for c in chunks for m in c.metadatas] == metadatas


def test_many_row_groups_read_in_bounded_chunks(tmp_path: Path) -> None:
    path = tmp_path / "many.parquet"
    writer = _write(path, 103, 4, row_group_size=10)

    assert writer.count == 103
    assert pq.ParquetFile(path).metadata.num_row_groups == 11
    chunks = list(read_delta(path, batch_rows=10))
    assert max(len(c.ids) for c in chunks) == 10
    np.testing.assert_array_equal(np.concatenate([c.embeddings for c in chunks]), _rows(103, 4)[1])


def test_empty_delta(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    with DeltaWriter(path, 4) as writer:
        pass
    assert writer.count == 0
    verify_delta(path, writer.sha256)
    assert list(read_delta(path)) == []


def test_checksum_verification_detects_corruption(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    writer = _write(path, 20, 4)
    verify_delta(path, writer.sha256)

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDelta, match="sha256"):
        verify_delta(path, writer.sha256)

    path.write_bytes(b"not parquet at all")
    with pytest.raises(CorruptDelta, match="unreadable"):
        verify_delta(path, file_sha256(path))
    with pytest.raises(CorruptDelta):
        list(read_delta(path))


def test_partial_file_removed_on_exception(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    with pytest.raises(RuntimeError), DeltaWriter(path, 4, row_group_size=2) as writer:
        for i in range(5):
            writer.add(f"id{i}", np.zeros(4, dtype=np.float32), "doc", {})
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_wrong_dimensions_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"), DeltaWriter(tmp_path / "d.parquet", 4) as writer:
        writer.add("id", np.zeros(5, dtype=np.float32), "doc", {})
    assert list(tmp_path.iterdir()) == []
