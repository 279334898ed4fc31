"""The Dagster resources: configuration in the UI, plain domain objects out.

Each resource only holds settings and opens the matching backend; the steps
themselves live in `embedding_assets` and never see Dagster. Backends are
imported when opened, so the production ones' SDKs load only when chosen.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from embedding_assets.steps.compact import Compactor
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.pipeline import Pipeline
from embedding_assets.domain.ports import BatchProvider, ObjectStore, ReceiptStore
from embedding_assets.domain.pricing import PRICE_PER_MTOK
from embedding_assets.steps.reembed import ReembedStart, start_reembed
from resources.vector_store.snapshots import SnapshotStore


class ReceiptStoreResource(ConfigurableResource):
    """Receipts, item statuses, batch records and leases: SQLite (default) or the seed's DynamoDB table."""

    backend: str = "sqlite"
    sqlite_path: str = ""
    dynamodb_table: str = ""
    aws_endpoint_url: str | None = None
    max_attempts: int = 3

    def open(self) -> ReceiptStore:
        if self.backend == "dynamodb":
            from resources.receipt_store.dynamodb import DynamoReceiptStore

            return DynamoReceiptStore(self.dynamodb_table, endpoint_url=self.aws_endpoint_url)
        from resources.receipt_store.sqlite import SqliteReceiptStore

        return SqliteReceiptStore(Path(self.sqlite_path))


class ObjectStoreResource(ConfigurableResource):
    """Request files, deltas and snapshots: a local folder (default) or S3."""

    backend: str = "local"
    root: str = ""
    requests_bucket: str = ""
    chroma_bucket: str = ""
    aws_endpoint_url: str | None = None
    scratch_dir: str
    delete_intermediate_chunks: bool = True
    delete_processed_deltas: bool = False

    def open(self) -> ObjectStore:
        if self.backend == "s3":
            from resources.object_store.s3 import S3ObjectStore

            return S3ObjectStore(self.requests_bucket, self.chroma_bucket, endpoint_url=self.aws_endpoint_url)
        from resources.object_store.local import LocalObjectStore

        return LocalObjectStore(Path(self.root))


class BatchProviderResource(ConfigurableResource):
    """The batch embedding service: `local` (no key, no network, free) or `openai` (paid, explicit).

    `prices` is USD per million tokens at the batch tier, per model.
    `reap_after_hours` is how long after submission a batch that has not
    finished (or that the provider no longer answers for) is given up on:
    the 24 h window plus a day of grace by default.
    """

    provider: str = "local"
    root: str = ""
    model: str | None = None
    dimensions: int | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_max_retries: int = 5
    openai_timeout_seconds: float = 600.0
    enqueued_token_limit: int | None = None
    reap_after_hours: float = 48.0
    prices: dict[str, float] = dict(PRICE_PER_MTOK)

    def open(self) -> BatchProvider:
        if self.provider == "openai":
            from resources.providers.openai_batch import OpenAIBatchProvider

            return OpenAIBatchProvider(
                api_key=self.openai_api_key, base_url=self.openai_base_url, model=self.model,
                dimensions=self.dimensions, max_retries=self.openai_max_retries,
                timeout_seconds=self.openai_timeout_seconds, enqueued_token_limit=self.enqueued_token_limit,
            )
        from resources.providers.local import LocalBatchProvider

        return LocalBatchProvider(Path(self.root), dimensions=self.dimensions)


class ChromaStoreResource(ConfigurableResource):
    """Versioned Chroma snapshots and the compactor's local copies of them."""

    cache_dir: str
    keep_versions: int = 3
    chunk_size: int = 5000

    def snapshots(self, objects: ObjectStore, kind: str) -> SnapshotStore:
        return SnapshotStore(objects, Path(self.cache_dir), kind, self.keep_versions)


class LockResource(ConfigurableResource):
    """Lease settings for the work that must not run twice at once."""

    lock_duration_minutes: float = 5.0
    heartbeat_interval_seconds: float = 30.0

    @property
    def ttl_seconds(self) -> float:
        return self.lock_duration_minutes * 60


class EmbeddingResource(ConfigurableResource):
    """The five parts as one resource, so an asset or sensor body asks for a single opened Runtime."""

    receipt_store: ReceiptStoreResource
    object_store: ObjectStoreResource
    batch_provider: BatchProviderResource
    chroma: ChromaStoreResource
    lock: LockResource

    def open(self) -> Runtime:
        return Runtime(self.receipt_store, self.object_store, self.batch_provider, self.chroma, self.lock)


def resources_from_settings(settings: Settings) -> dict[str, ConfigurableResource]:
    """The five parts, plus `embedding`: the same parts together, which asset and sensor bodies take."""
    parts = _parts(settings)
    return {**parts, "embedding": EmbeddingResource(**parts)}


def _parts(settings: Settings) -> dict[str, ConfigurableResource]:
    return {
        "receipt_store": ReceiptStoreResource(
            backend="dynamodb" if settings.dynamodb_table else "sqlite", sqlite_path=str(settings.sqlite_path),
            dynamodb_table=settings.dynamodb_table or "", aws_endpoint_url=settings.aws_endpoint_url,
            max_attempts=settings.max_attempts,
        ),
        "object_store": ObjectStoreResource(
            backend="s3" if settings.s3_bucket else "local", root=str(settings.objects_dir),
            requests_bucket=settings.s3_bucket or "", chroma_bucket=settings.chromadb_bucket or "",
            aws_endpoint_url=settings.aws_endpoint_url, scratch_dir=str(settings.data_dir / "tmp"),
            delete_intermediate_chunks=settings.delete_intermediate_chunks,
            delete_processed_deltas=settings.delete_processed_deltas,
        ),
        "batch_provider": BatchProviderResource(
            provider=settings.provider, root=str(settings.provider_dir), model=settings.model, dimensions=settings.dimensions,
            openai_api_key=settings.openai_api_key, openai_base_url=settings.openai_base_url,
            openai_max_retries=settings.openai_max_retries, openai_timeout_seconds=settings.openai_timeout_seconds,
            enqueued_token_limit=settings.enqueued_token_limit, reap_after_hours=settings.reap_after_hours,
            prices=settings.batch_prices,
        ),
        "chroma": ChromaStoreResource(
            cache_dir=str(settings.chroma_persist_directory), keep_versions=settings.keep_snapshot_versions,
            chunk_size=settings.chunk_size,
        ),
        "lock": LockResource(
            lock_duration_minutes=settings.lock_duration_minutes,
            heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
        ),
    }


class Runtime:
    """The opened backends and the steps over them, for one asset, sensor tick or CLI command."""

    def __init__(
        self,
        receipt_store: ReceiptStoreResource,
        object_store: ObjectStoreResource,
        batch_provider: BatchProviderResource,
        chroma: ChromaStoreResource,
        lock: LockResource,
    ):
        self.config = (receipt_store, object_store, batch_provider, chroma, lock)
        self.store = receipt_store.open()
        self.objects = object_store.open()
        self.provider = batch_provider.open()
        self.pipeline = Pipeline(
            self.store, self.objects, self.provider, Path(object_store.scratch_dir),
            max_attempts=receipt_store.max_attempts, lock_ttl_seconds=lock.ttl_seconds,
            heartbeat_seconds=lock.heartbeat_interval_seconds,
            delete_intermediate=object_store.delete_intermediate_chunks, prices=batch_provider.prices,
            reap_after_seconds=batch_provider.reap_after_hours * 3600,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(**_parts(settings))

    def snapshots(self, kind: str) -> SnapshotStore:
        return self.config[3].snapshots(self.objects, kind)

    def start_reembed(self, kind: str) -> ReembedStart:
        """Open (or resume) a re-embed of `kind` with the configured model; see `embedding_assets.steps.reembed`."""
        lock = self.config[4]
        return start_reembed(self.store, self.snapshots(kind), self.provider.model, self.provider.dimensions,
                             lock.ttl_seconds, lock.heartbeat_interval_seconds)

    def compactor(self, kind: str) -> Compactor:
        _, object_store, _, chroma, lock = self.config
        return Compactor(
            self.store, self.objects, self.snapshots(kind), self.provider.model, self.provider.dimensions,
            lock_ttl_seconds=lock.ttl_seconds, heartbeat_seconds=lock.heartbeat_interval_seconds,
            chunk_size=chroma.chunk_size, delete_processed_deltas=object_store.delete_processed_deltas,
            work_dir=Path(object_store.scratch_dir), max_attempts=self.pipeline.max_attempts,
        )
