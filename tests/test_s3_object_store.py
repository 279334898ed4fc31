"""S3ObjectStore on a moto server: routing to the two buckets, multipart, atomic downloads, paging, key rules."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from embedding_assets.domain.ports import ObjectNotFound
from embedding_assets.domain.vectors import Staged
from resources.object_store import s3 as s3_object_store
from resources.object_store.s3 import S3ObjectStore, create_buckets
from resources.vector_store.snapshots import SnapshotStore


@pytest.fixture
def buckets(moto_endpoint) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:12]
    names = (f"requests-{suffix}", f"chroma-{suffix}")
    assert create_buckets(names, endpoint_url=moto_endpoint) == list(names)
    assert create_buckets(names, endpoint_url=moto_endpoint) == []
    return names


@pytest.fixture
def objects(buckets, moto_endpoint) -> S3ObjectStore:
    return S3ObjectStore(*buckets, endpoint_url=moto_endpoint)


def bucket_keys(objects: S3ObjectStore, bucket: str) -> list[str]:
    return [o["Key"] for o in objects._client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_request_files_go_to_the_requests_bucket_and_the_rest_to_the_chroma_bucket(objects, buckets):
    objects.put_bytes("batches/lines/b1.jsonl", b"request")
    objects.put_bytes("deltas/lines/b1.parquet", b"delta")
    objects.put_bytes("snapshots/lines/LATEST.json", b"{}")

    assert bucket_keys(objects, buckets[0]) == ["batches/lines/b1.jsonl"]
    assert bucket_keys(objects, buckets[1]) == ["deltas/lines/b1.parquet", "snapshots/lines/LATEST.json"]
    assert objects.get_bytes("batches/lines/b1.jsonl") == b"request"
    assert objects.exists("deltas/lines/b1.parquet") and not objects.exists("deltas/lines/b2.parquet")


def test_missing_keys_and_idempotent_delete(objects, tmp_path):
    with pytest.raises(ObjectNotFound):
        objects.get_bytes("deltas/lines/nope.parquet")
    with pytest.raises(ObjectNotFound):
        objects.download("batches/lines/nope.jsonl", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []  # no temp file left behind

    objects.put_bytes("deltas/lines/a", b"1")
    objects.delete("deltas/lines/a")
    objects.delete("deltas/lines/a")
    assert not objects.exists("deltas/lines/a")


def test_large_files_travel_as_multipart_and_download_atomically(buckets, moto_endpoint, tmp_path):
    objects = S3ObjectStore(*buckets, endpoint_url=moto_endpoint, multipart_threshold=5 * 1024 * 1024)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(11 * 1024 * 1024))
    objects.put_file("snapshots/lines/00000001/chroma.tar", source)

    head = objects._client.head_object(Bucket=buckets[1], Key="snapshots/lines/00000001/chroma.tar")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    dest = tmp_path / "out" / "chroma.tar"
    dest.parent.mkdir()
    dest.write_bytes(b"old content")
    objects.download("snapshots/lines/00000001/chroma.tar", dest)
    assert dest.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["chroma.tar"]


def test_list_is_paged_sorted_and_merges_both_buckets(objects, monkeypatch):
    monkeypatch.setattr(s3_object_store, "LIST_PAGE", 2)
    keys = ["batches/lines/a.jsonl", "batches/lines/b.jsonl", "batches/words/a.jsonl",
            "deltas/lines/a.parquet", "deltas/lines/b.parquet", "deltas/lines/c.parquet", "snapshots/lines/LATEST.json"]
    for key in reversed(keys):
        objects.put_bytes(key, b"x")

    assert list(objects.list("")) == keys
    assert list(objects.list("ba")) == keys[:3]
    assert list(objects.list("batches/lines/")) == keys[:2]
    assert list(objects.list("deltas/")) == keys[3:6]
    assert list(objects.list("nothing/")) == []


def test_one_bucket_for_both(buckets, moto_endpoint):
    objects = S3ObjectStore(buckets[0], buckets[0], endpoint_url=moto_endpoint)
    objects.put_bytes("batches/lines/a.jsonl", b"1")
    objects.put_bytes("deltas/lines/a.parquet", b"2")
    assert list(objects.list("")) == ["batches/lines/a.jsonl", "deltas/lines/a.parquet"]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "deltas//a", "deltas/../a", "./a", "a\\b", "deltas/.tmp-x"])
def test_bad_keys_are_rejected_as_locally(objects, key, tmp_path):
    for call in (lambda: objects.put_bytes(key, b"x"), lambda: objects.get_bytes(key), lambda: objects.exists(key),
                 lambda: objects.download(key, tmp_path / "x"), lambda: objects.delete(key)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        list(objects.list("/abs"))


def test_snapshot_publish_and_read_back_over_s3(objects, tmp_path):
    snapshots = SnapshotStore(objects, tmp_path / "cache", "lines", keep_versions=1)
    source = tmp_path / "chroma"
    source.mkdir()
    for version in (1, 2):
        (source / "data.bin").write_bytes(f"v{version}".encode())
        key, sha = snapshots.upload(source, version)
        snapshots.swap(Staged(version, key, sha), vectors=version)
    assert snapshots.prune() == ["snapshots/lines/00000001/chroma.tar"]

    copy, pointer = snapshots.read_copy()
    assert pointer.version == 2 and (Path(copy) / "data.bin").read_bytes() == b"v2"
