"""Every backend of each port, as a parametrized fixture: a contract case runs once per backend.

A backend is opened the way production opens it (a SQLite file, a DynamoDB
table and S3 buckets on the session's moto server, a local folder, the
loopback Batch API). Adding a backend is adding an entry here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from embedding_assets.domain.ports import BatchProvider, ObjectStore, ReceiptStore, VectorStore
from resources.object_store import s3 as s3_object_store
from resources.object_store.local import LocalObjectStore
from resources.object_store.s3 import S3ObjectStore, create_buckets
from resources.providers.local import LocalBatchProvider
from resources.providers.openai_batch import OpenAIBatchProvider
from resources.receipt_store import dynamodb_receipts, dynamodb_status, sqlite_status
from resources.receipt_store.dynamodb import DynamoReceiptStore
from resources.receipt_store.dynamodb_table import dynamodb_client
from resources.receipt_store.sqlite import SqliteReceiptStore
from resources.vector_store.snapshots import SnapshotVectorStore
from tests.aws_fixtures import new_table
from tests.support import check_layout, raw_items


@dataclass
class StoreBackend:
    """A receipt store backend: handles on one store, and what its own layout requires."""

    name: str
    # Another handle on the same store with its own connection or client, as another process would hold.
    open: Callable[[], ReceiptStore]
    # Makes the store read `size` items per round trip wherever it pages.
    small_pages: Callable[[pytest.MonkeyPatch, int], None]
    # Asserts that everything stored follows the backend's own layout rules (the seed's, for DynamoDB).
    check_stored: Callable[[ReceiptStore], None]
    handles: list[Any] = field(default_factory=list)


def _sqlite_backend(tmp_path: Path) -> StoreBackend:
    path = tmp_path / "store.sqlite3"
    backend = StoreBackend(
        "sqlite",
        open=lambda: _kept(backend, SqliteReceiptStore(path)),
        small_pages=lambda monkeypatch, size: monkeypatch.setattr(sqlite_status, "PAGE_SIZE", size),
        check_stored=lambda store: None,
    )
    return backend


def _dynamodb_backend(endpoint: str) -> StoreBackend:
    table = new_table(endpoint)

    def small_pages(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
        monkeypatch.setattr(dynamodb_receipts, "QUERY_PAGE", size)
        monkeypatch.setattr(dynamodb_status, "QUERY_PAGE", size)

    def check_stored(store: Any) -> None:
        for item in raw_items(store).values():
            check_layout(item)

    return StoreBackend(
        "dynamodb",
        open=lambda: DynamoReceiptStore(table, client=dynamodb_client.__wrapped__(endpoint)),
        small_pages=small_pages,
        check_stored=check_stored,
    )


def _kept(backend: StoreBackend, handle: Any) -> Any:
    backend.handles.append(handle)
    return handle


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    if request.param == "sqlite":
        backend = _sqlite_backend(tmp_path)
    else:
        backend = _dynamodb_backend(request.getfixturevalue("moto_endpoint"))
    yield backend
    for handle in backend.handles:
        handle.close()


@pytest.fixture
def receipt_store(store_backend: StoreBackend) -> ReceiptStore:
    return store_backend.open()


# Object stores


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    """A local folder, or S3 on moto with two buckets and listings of two keys a page, so every list pages."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    monkeypatch.setattr(s3_object_store, "LIST_PAGE", 2)
    return _s3_objects(request.getfixturevalue("moto_endpoint"))


def _s3_objects(endpoint: str) -> S3ObjectStore:
    """S3 on moto with fresh buckets, request files apart from the rest as in production."""
    suffix = uuid.uuid4().hex[:12]
    buckets = (f"requests-{suffix}", f"chroma-{suffix}")
    create_buckets(buckets, endpoint_url=endpoint)
    return S3ObjectStore(*buckets, endpoint_url=endpoint)


# Batch providers


@pytest.fixture(params=["local", "openai"])
def batch_provider(request: pytest.FixtureRequest, tmp_path: Path) -> BatchProvider:
    """The local emulation, or the openai provider against the loopback Batch API."""
    if request.param == "local":
        return LocalBatchProvider(tmp_path / "provider")
    api = request.getfixturevalue("fake_api")
    return OpenAIBatchProvider(api_key="sk-test", base_url=api.base_url, dimensions=8, max_retries=2,
                               timeout_seconds=5, backoff_seconds=0.01)


# Vector stores


VECTOR_STORES = ["snapshots-local", "snapshots-s3"]


@pytest.fixture(params=VECTOR_STORES)
def vector_store(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    """Snapshot mode over each object store, keeping one version besides the lines' current ones."""
    objects: ObjectStore
    if request.param == "snapshots-local":
        objects = LocalObjectStore(tmp_path / "objects")
    else:
        objects = _s3_objects(request.getfixturevalue("moto_endpoint"))
    return SnapshotVectorStore(objects, tmp_path / "cache", keep_versions=1)
