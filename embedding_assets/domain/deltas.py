"""Delta files: one Parquet file per batch, carrying what the compactor adds to Chroma.

Why Parquet written in row groups: a batch can hold tens of thousands of
vectors, and neither the ingest step nor the compactor may hold a whole batch
in memory; row groups are written as the buffer fills and read back one at a
time.

Schema: id string, embedding fixed_size_list<float32>[dimensions], document
string, metadata string (the dict as sorted-key orjson, so equal metadata
gives equal bytes and Chroma's value types survive untouched).

A delta only appears at its final path once complete (written to
`<path>.tmp`, then renamed); the sha256 recorded with the batch lets the
compactor refuse a file that changed or broke in the object store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from embedding_assets.domain.stamps import file_sha256


class CorruptDelta(ValueError):
    """The delta file is not the one that was written, or is not a readable delta."""


def delta_schema(dimensions: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dimensions), nullable=False),
            pa.field("document", pa.string(), nullable=False),
            pa.field("metadata", pa.string(), nullable=False),
        ]
    )


class DeltaWriter:
    """Buffers rows and writes them a row group at a time.

    Use as a context manager: a clean exit publishes the file and sets
    `count` and `sha256`; an exception deletes the partial file, so a retried
    step starts from nothing.
    """

    def __init__(self, path: Path, dimensions: int, row_group_size: int = 5000) -> None:
        if dimensions < 1 or row_group_size < 1:
            raise ValueError("dimensions and row_group_size must be positive")
        self.path = Path(path)
        self.dimensions = dimensions
        self.row_group_size = row_group_size
        self.count = 0
        self.sha256: str | None = None
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._schema = delta_schema(dimensions)
        self._embeddings = np.empty((row_group_size, dimensions), dtype=np.float32)
        self._ids: list[str] = []
        self._documents: list[str] = []
        self._metadatas: list[str] = []
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> DeltaWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Dictionary encoding buys nothing on unique ids and float vectors.
        self._writer = pq.ParquetWriter(self._tmp, self._schema, use_dictionary=False)
        return self

    def add(self, id: str, embedding: np.ndarray, document: str, metadata: dict[str, Any]) -> None:
        if self._writer is None:
            raise RuntimeError("DeltaWriter.add outside its `with` block")
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (self.dimensions,):
            raise ValueError(f"{id}: embedding shape {vector.shape} is not ({self.dimensions},)")
        self._embeddings[len(self._ids)] = vector
        self._ids.append(id)
        self._documents.append(document)
        self._metadatas.append(orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS).decode())
        if len(self._ids) == self.row_group_size:
            self._flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._close()
        else:
            self._abort()

    def _flush(self) -> None:
        n = len(self._ids)
        if not n:
            return
        embeddings = pa.FixedSizeListArray.from_arrays(
            pa.array(self._embeddings[:n].reshape(-1), type=pa.float32()), self.dimensions
        )
        table = pa.Table.from_arrays(
            [
                pa.array(self._ids, type=pa.string()),
                embeddings,
                pa.array(self._documents, type=pa.string()),
                pa.array(self._metadatas, type=pa.string()),
            ],
            schema=self._schema,
        )
        assert self._writer is not None, "rows are only flushed between open and close"
        self._writer.write_table(table, row_group_size=n)
        self.count += n
        self._ids.clear()
        self._documents.clear()
        self._metadatas.clear()

    def _close(self) -> None:
        try:
            self._flush()
            if self._writer is not None:
                self._writer.close()
            self._writer = None
            _fsync(self._tmp)
            self.sha256 = file_sha256(self._tmp)
            os.replace(self._tmp, self.path)
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
        self._tmp.unlink(missing_ok=True)


@dataclass
class DeltaChunk:
    """A slice of a delta, column by column, as Chroma's `add` takes it."""

    ids: list[str]
    embeddings: np.ndarray
    documents: list[str]
    metadatas: list[dict[str, Any]]


def read_delta(path: Path, batch_rows: int = 5000) -> Iterator[DeltaChunk]:
    """Chunks of at most `batch_rows` rows, read a row group at a time.

    Raises CorruptDelta when the file is not Parquet or not a delta. The
    embedding arrays may be read-only views of Arrow memory.
    """
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise CorruptDelta(f"{path}: unreadable Parquet ({exc})") from exc
    with parquet:
        dimensions = _check_schema(path, parquet.schema_arrow)
        try:
            for batch in parquet.iter_batches(batch_size=batch_rows):
                flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
                yield DeltaChunk(
                    ids=batch.column("id").to_pylist(),
                    embeddings=flat.reshape(-1, dimensions),
                    documents=batch.column("document").to_pylist(),
                    metadatas=[orjson.loads(m) for m in batch.column("metadata").to_pylist()],
                )
        except (pa.ArrowException, orjson.JSONDecodeError) as exc:
            raise CorruptDelta(f"{path}: unreadable delta ({exc})") from exc



def verify_delta(path: Path, sha256: str) -> None:
    """Raise CorruptDelta unless `path` is byte-for-byte the delta that was recorded.

    A missing file raises FileNotFoundError instead: it calls for a fresh
    download, not for rebuilding the delta.
    """
    actual = file_sha256(path)
    if actual != sha256:
        raise CorruptDelta(f"{path}: sha256 {actual} differs from the recorded {sha256}")
    try:
        with pq.ParquetFile(path) as parquet:
            _check_schema(path, parquet.schema_arrow)
    except (pa.ArrowException, OSError) as exc:
        raise CorruptDelta(f"{path}: unreadable Parquet ({exc})") from exc


def _check_schema(path: Path, schema: pa.Schema) -> int:
    embedding = schema.field("embedding").type if "embedding" in schema.names else None
    if not isinstance(embedding, pa.FixedSizeListType) or embedding.value_type != pa.float32():
        raise CorruptDelta(f"{path}: no fixed-size float32 embedding column")
    if schema != delta_schema(embedding.list_size):
        raise CorruptDelta(f"{path}: schema {schema} is not a delta's")
    return embedding.list_size


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
