"""Which backends a deployment runs on, as Dagster resources: one class per backend.

Each resource holds its backend's settings (what the UI shows; secrets only
as `EnvVar`, which the UI never reveals) and opens its client once per run
or sensor tick in `setup_for_execution`, closing it afterwards.
`resources_from_settings` picks the classes with the same plain mapping the
CLI uses (`resources.backends`), as Dagster's own examples pick per
deployment. `EmbeddingResource` nests the four (Dagster sets them up and
tears them down with it) and hands asset and sensor bodies one `Runtime`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar, InitResourceContext
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from embedding_assets.domain.formatting import DEFAULT_RECIPES
from embedding_assets.domain.ports import BatchProvider, ObjectStore, ReceiptStore, VectorStore
from embedding_assets.domain.pricing import PRICE_PER_MTOK
from embedding_assets.domain.settings import ChromaServer, Settings, parse_pairs
from embedding_assets.steps.parts import StepSettings
from embedding_assets.wiring import Runtime, Tuning
from resources import backends


class _Backend(ConfigurableResource):
    """Opens its backend once per run or tick, and closes what holds a connection."""

    _opened: Any = PrivateAttr(default=None)

    def connect(self) -> Any:
        raise NotImplementedError

    def opened(self) -> Any:
        if self._opened is None:
            self._opened = self.connect()
        return self._opened

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._opened = self.connect()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        close = getattr(self._opened, "close", None)
        if close is not None:
            close()
        self._opened = None


class ReceiptStoreResource(_Backend):
    """Receipts, item statuses, batch records and leases."""

    def connect(self) -> ReceiptStore:
        raise NotImplementedError


class SqliteReceiptStoreResource(ReceiptStoreResource):
    """The embedded default: one SQLite file."""

    path: str

    def connect(self) -> ReceiptStore:
        from resources.receipt_store.sqlite import SqliteReceiptStore

        return SqliteReceiptStore(Path(self.path))


class DynamoReceiptStoreResource(ReceiptStoreResource):
    """The seed system's single DynamoDB table."""

    table_name: str
    endpoint_url: str | None = None

    def connect(self) -> ReceiptStore:
        from resources.receipt_store.dynamodb import DynamoReceiptStore

        return DynamoReceiptStore(self.table_name, endpoint_url=self.endpoint_url)


class ObjectStoreResource(_Backend):
    """Request files, deltas and snapshot archives."""

    def connect(self) -> ObjectStore:
        raise NotImplementedError


class LocalObjectStoreResource(ObjectStoreResource):
    root: str

    def connect(self) -> ObjectStore:
        from resources.object_store.local import LocalObjectStore

        return LocalObjectStore(Path(self.root))


class S3ObjectStoreResource(ObjectStoreResource):
    """Two buckets (they may be one), reached through dagster-aws's S3 resource."""

    s3: S3Resource
    requests_bucket: str
    chroma_bucket: str

    def connect(self) -> ObjectStore:
        from resources.object_store.s3 import S3ObjectStore

        return S3ObjectStore(self.requests_bucket, self.chroma_bucket, client=self.s3.get_client())


class BatchProviderResource(_Backend):
    """The batch embedding service."""

    def connect(self) -> BatchProvider:
        raise NotImplementedError


class LocalProviderResource(BatchProviderResource):
    """No key, no network, free: the Batch API's file lifecycle over a packaged offline model."""

    root: str
    dimensions: int | None = None

    def connect(self) -> BatchProvider:
        from resources.providers.local import LocalBatchProvider

        return LocalBatchProvider(Path(self.root), dimensions=self.dimensions)


class OpenAIProviderResource(BatchProviderResource):
    """OpenAI's Batch API (paid). `api_key` is given as `EnvVar("OPENAI_API_KEY")`, never as a value."""

    api_key: str
    base_url: str | None = None
    model: str | None = None
    dimensions: int | None = None
    max_retries: int = 5
    timeout_seconds: float = 600.0
    enqueued_token_limit: int | None = None
    output_expires_after_hours: int = 168

    def connect(self) -> BatchProvider:
        from resources.providers.openai_batch import OpenAIBatchProvider

        return OpenAIBatchProvider(
            api_key=self.api_key, base_url=self.base_url, model=self.model, dimensions=self.dimensions,
            max_retries=self.max_retries, timeout_seconds=self.timeout_seconds,
            enqueued_token_limit=self.enqueued_token_limit,
            output_expires_after_seconds=self.output_expires_after_hours * 3600,
        )


class VectorStoreResource(ConfigurableResource):
    """Where each kind's collection versions live."""

    def for_objects(self, objects: ObjectStore) -> VectorStore:
        raise NotImplementedError


class SnapshotVectorStoreResource(VectorStoreResource):
    """Snapshot mode: versioned Chroma archives in the object store, local copies in `cache_dir`."""

    cache_dir: str
    keep_versions: int = 3

    def for_objects(self, objects: ObjectStore) -> VectorStore:
        from resources.vector_store.snapshots import SnapshotVectorStore

        return SnapshotVectorStore(objects, Path(self.cache_dir), self.keep_versions)


class ServerVectorStoreResource(VectorStoreResource):
    """Server mode: collections on a Chroma server, pointers in the object store, exports under `snapshots/`.

    `auth_token` is given as `EnvVar("CHROMA_AUTH_TOKEN")` and `headers` as `EnvVar("CHROMA_HEADERS")`
    (the raw `name=value,...` text, parsed here), never as values: a hosted Chroma takes its key as a header.
    `scratch_dir` holds exports and restores while they are archived, and the lexical index cache.
    """

    host: str
    port: int = 8000
    ssl: bool = False
    headers: str | None = None
    auth_token: str | None = None
    tenant: str = "default_tenant"
    database: str = "default_database"
    scratch_dir: str
    keep_versions: int = 3

    def for_objects(self, objects: ObjectStore) -> VectorStore:
        from resources.vector_store.server import ServerVectorStore

        server = ChromaServer(host=self.host, port=self.port, ssl=self.ssl,
                              headers=parse_pairs("CHROMA_HEADERS", self.headers, "name=value"),
                              auth_token=self.auth_token, tenant=self.tenant, database=self.database)
        return ServerVectorStore(server, objects, Path(self.scratch_dir), self.keep_versions)


class EmbeddingResource(ConfigurableResource):
    """The four backends and the steps' settings; bodies call `open()` for the run's `Runtime`.

    `reap_after_hours`: how long after submission a batch that has not
    finished (or that the provider no longer answers for) is given up on.
    `prices`: USD per million tokens at the batch tier, per model.
    `recipes`: what a vector stands for, per kind (`LINES_RECIPE`, `WORDS_RECIPE`).
    """

    receipt_store: ReceiptStoreResource
    object_store: ObjectStoreResource
    batch_provider: BatchProviderResource
    vector_store: VectorStoreResource
    scratch_dir: str
    max_attempts: int = 3
    lock_duration_minutes: float = 5.0
    heartbeat_interval_seconds: float = 30.0
    delete_intermediate_chunks: bool = True
    delete_processed_deltas: bool = False
    reap_after_hours: float = 48.0
    chunk_size: int = 5000
    max_items_per_run: int = 500_000
    max_requests_per_batch: int = 50_000
    prices: dict[str, float] = dict(PRICE_PER_MTOK)
    recipes: dict[str, str] = dict(DEFAULT_RECIPES)

    _runtime: Runtime | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._runtime = self._build()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self._runtime = None

    def open(self) -> Runtime:
        """The run's Runtime (built on first use outside a run, e.g. in a direct test call)."""
        if self._runtime is None:
            self._runtime = self._build()
        return self._runtime

    def _build(self) -> Runtime:
        objects = self.object_store.opened()
        tuning = Tuning(
            work_dir=Path(self.scratch_dir),
            steps=StepSettings(
                max_attempts=self.max_attempts, lock_ttl_seconds=self.lock_duration_minutes * 60,
                heartbeat_seconds=self.heartbeat_interval_seconds, delete_intermediate=self.delete_intermediate_chunks,
                prices=dict(self.prices), reap_after_seconds=self.reap_after_hours * 3600,
                max_requests_per_batch=self.max_requests_per_batch, recipes=dict(self.recipes),
            ),
            chunk_size=self.chunk_size, delete_processed_deltas=self.delete_processed_deltas,
            max_items_per_run=self.max_items_per_run,
        )
        return Runtime(self.receipt_store.opened(), objects, self.batch_provider.opened(),
                       self.vector_store.for_objects(objects), tuning)


def _receipt_store(settings: Settings) -> ReceiptStoreResource:
    if backends.receipt_store_backend(settings) == "dynamodb":
        return DynamoReceiptStoreResource(table_name=settings.dynamodb_table or "",
                                          endpoint_url=settings.aws_endpoint_url)
    return SqliteReceiptStoreResource(path=str(settings.sqlite_path))


def _object_store(settings: Settings) -> ObjectStoreResource:
    if backends.object_store_backend(settings) == "s3":
        return S3ObjectStoreResource(
            s3=S3Resource(endpoint_url=settings.aws_endpoint_url),
            requests_bucket=settings.s3_bucket or "",
            chroma_bucket=settings.chromadb_bucket or "",
        )
    return LocalObjectStoreResource(root=str(settings.objects_dir))


def _batch_provider(settings: Settings) -> BatchProviderResource:
    if settings.provider == "openai":
        return OpenAIProviderResource(
            api_key=EnvVar("OPENAI_API_KEY"),
            base_url=settings.openai_base_url,
            model=settings.model,
            dimensions=settings.dimensions,
            max_retries=settings.openai_max_retries,
            timeout_seconds=settings.openai_timeout_seconds,
            enqueued_token_limit=settings.enqueued_token_limit,
            output_expires_after_hours=settings.output_expires_after_hours,
        )
    return LocalProviderResource(root=str(settings.provider_dir), dimensions=settings.dimensions)


def _vector_store(settings: Settings) -> VectorStoreResource:
    server = settings.chroma_server
    if server is None:
        return SnapshotVectorStoreResource(
            cache_dir=str(settings.chroma_persist_directory), keep_versions=settings.keep_snapshot_versions
        )
    return ServerVectorStoreResource(
        host=server.host, port=server.port, ssl=server.ssl,
        headers=EnvVar("CHROMA_HEADERS") if server.headers else None,
        auth_token=EnvVar("CHROMA_AUTH_TOKEN") if server.auth_token else None,
        tenant=server.tenant, database=server.database,
        scratch_dir=str(settings.chroma_persist_directory), keep_versions=settings.keep_snapshot_versions,
    )


def resources_from_settings(settings: Settings) -> dict[str, ConfigurableResource]:
    """The four backends that `settings` chooses (each shown by name in the UI) and `embedding` over them."""
    parts: dict[str, Any] = {
        "receipt_store": _receipt_store(settings),
        "object_store": _object_store(settings),
        "batch_provider": _batch_provider(settings),
        "vector_store": _vector_store(settings),
    }
    tuning = Tuning.from_settings(settings)
    embedding = EmbeddingResource(
        **parts,
        scratch_dir=str(tuning.work_dir),
        max_attempts=settings.max_attempts,
        lock_duration_minutes=settings.lock_duration_minutes,
        heartbeat_interval_seconds=settings.heartbeat_interval_seconds,
        delete_intermediate_chunks=settings.delete_intermediate_chunks,
        delete_processed_deltas=settings.delete_processed_deltas,
        reap_after_hours=settings.reap_after_hours,
        chunk_size=settings.chunk_size,
        max_items_per_run=settings.max_items_per_run,
        max_requests_per_batch=settings.max_requests_per_batch,
        prices=settings.batch_prices,
        recipes=dict(settings.recipes),
    )
    return {**parts, "embedding": embedding}
