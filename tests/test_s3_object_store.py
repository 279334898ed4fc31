"""S3ObjectStore on a moto server: routing to the two buckets, multipart, atomic downloads.

The rules every object store keeps are in tests/contracts/test_object_store.py.
"""

from __future__ import annotations

import os
import uuid

import pytest

from resources.object_store.s3 import S3ObjectStore, create_buckets


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


def test_one_bucket_for_both(buckets, moto_endpoint):
    objects = S3ObjectStore(buckets[0], buckets[0], endpoint_url=moto_endpoint)
    objects.put_bytes("batches/lines/a.jsonl", b"1")
    objects.put_bytes("deltas/lines/a.parquet", b"2")
    assert list(objects.list("")) == ["batches/lines/a.jsonl", "deltas/lines/a.parquet"]
