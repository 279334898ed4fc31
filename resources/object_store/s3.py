"""The production `ObjectStore`: two S3 buckets (Dagster runs reach them through dagster-aws's `S3Resource`).

Request files (`batches/...`) live in the requests bucket (`S3_BUCKET`, as in
the seed system); deltas and snapshots (`deltas/...`, `snapshots/...`) in the
Chroma bucket (`CHROMADB_BUCKET`). The two may be the same bucket.

S3 already keeps the promises the pipeline relies on: an object appears whole
or not at all, so a put is atomic and the snapshot pointer, written last, is a
clean swap. Files above `multipart_threshold` go through boto3's managed
transfer as multipart uploads (also completed atomically) and are downloaded
in ranged parts; a download lands in a temp file beside its destination and
is renamed over it, so a reader never sees half a file. Listing is paged and
in key order. Keys are validated exactly as `LocalObjectStore` validates them,
so a key that one backend accepts the other accepts too.
"""

from __future__ import annotations

import functools
import heapq
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from embedding_assets.domain.ports import ObjectNotFound
from resources.object_store.local import TEMP_PREFIX, check_key, check_prefix

REQUESTS_PREFIX = "batches/"
# Keys per list call (S3's maximum).
LIST_PAGE = 1000
# boto3's own default; below 5 MiB S3 would reject the parts.
MULTIPART_THRESHOLD = 8 * 1024 * 1024
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


@functools.cache
def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 client with standard retries, one per endpoint and process (Dagster runs hand in dagster-aws's).

    Clients are thread-safe and cost ~0.4 s to build, while a store is opened
    for every asset and sensor tick.
    """
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url,
                                          config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}))


def create_buckets(names: Iterable[str], endpoint_url: str | None = None, client: Any = None) -> list[str]:
    """Create the buckets that do not exist yet; returns the ones created."""
    client = client or s3_client(endpoint_url)
    region = client.meta.region_name
    created = []
    for name in dict.fromkeys(names):
        try:
            client.head_bucket(Bucket=name)
            continue
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise
        kwargs: dict[str, Any] = {"Bucket": name}
        if region and region not in ("us-east-1", "aws-global"):
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(**kwargs)
        created.append(name)
    return created


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ObjectStore:
    """ObjectStore over the requests bucket and the Chroma bucket (see the module docstring)."""

    def __init__(self, requests_bucket: str, chroma_bucket: str, endpoint_url: str | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD, client: Any = None) -> None:
        if not requests_bucket or not chroma_bucket:
            raise ValueError("both buckets are required (S3_BUCKET and CHROMADB_BUCKET)")
        self.requests_bucket = requests_bucket
        self.chroma_bucket = chroma_bucket
        self._client = client or s3_client(endpoint_url)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold
        )

    def uri(self, key: str) -> str:
        return f"s3://{self._bucket(key)}/{key}"

    def _bucket(self, key: str) -> str:
        check_key(key)
        return self.requests_bucket if key.startswith(REQUESTS_PREFIX) else self.chroma_bucket

    def put_file(self, key: str, path: Path) -> None:
        self._client.upload_file(str(path), self._bucket(key), key, Config=self._transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self._bucket(key), Key=key, Body=data)

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket(key), Key=key)
        except ClientError as exc:
            raise _not_found(exc, key) from None
        with response["Body"] as body:
            return body.read()

    def download(self, key: str, dest: Path) -> None:
        bucket = self._bucket(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=dest.parent)
        os.close(fd)
        try:
            self._client.download_file(bucket, key, tmp, Config=self._transfer)
            os.replace(tmp, dest)
        except ClientError as exc:
            raise _not_found(exc, key) from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket(key), Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix`, sorted; a prefix that both buckets could hold lists both, merged."""
        check_prefix(prefix)
        if self.requests_bucket == self.chroma_bucket:
            yield from self._keys(self.requests_bucket, prefix, lambda key: True)
            return
        sources = []
        if prefix.startswith(REQUESTS_PREFIX) or REQUESTS_PREFIX.startswith(prefix):
            sources.append(self._keys(self.requests_bucket, prefix, lambda key: key.startswith(REQUESTS_PREFIX)))
        if not prefix.startswith(REQUESTS_PREFIX):
            sources.append(self._keys(self.chroma_bucket, prefix, lambda key: not key.startswith(REQUESTS_PREFIX)))
        yield from heapq.merge(*sources)

    def _keys(self, bucket: str, prefix: str, belongs: Callable[[str], bool]) -> Iterator[str]:
        """One bucket's keys under `prefix` that this store would route to it, in S3's (UTF-8 byte) order."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE}
        )
        for page in pages:
            yield from (obj["Key"] for obj in page.get("Contents", ()) if belongs(obj["Key"]))

    def delete(self, key: str) -> None:
        """Idempotent, as S3's own delete is."""
        self._client.delete_object(Bucket=self._bucket(key), Key=key)


def _not_found(exc: ClientError, key: str) -> Exception:
    return ObjectNotFound(key) if _code(exc) in _MISSING else exc
