"""Which backend serves each port, chosen from the environment: the one plain mapping.

The CLI and the Python API open backends through here without importing
Dagster; the Dagster resources in `resources.deployment` make the same
choice and build the same classes. Backends are imported when chosen, so a
production SDK loads only where it is used.
"""

from __future__ import annotations

from embedding_assets.domain.ports import BatchProvider, ObjectStore, ReceiptStore, VectorStore
from embedding_assets.domain.settings import Settings


def receipt_store_backend(settings: Settings) -> str:
    return "dynamodb" if settings.dynamodb_table else "sqlite"


def object_store_backend(settings: Settings) -> str:
    return "s3" if settings.s3_bucket else "local"


def open_receipt_store(settings: Settings) -> ReceiptStore:
    if receipt_store_backend(settings) == "dynamodb":
        from resources.receipt_store.dynamodb import DynamoReceiptStore

        return DynamoReceiptStore(settings.dynamodb_table or "", endpoint_url=settings.aws_endpoint_url)
    from resources.receipt_store.sqlite import SqliteReceiptStore

    return SqliteReceiptStore(settings.sqlite_path)


def open_object_store(settings: Settings) -> ObjectStore:
    if object_store_backend(settings) == "s3":
        from resources.object_store.s3 import S3ObjectStore

        return S3ObjectStore(settings.s3_bucket or "", settings.chromadb_bucket or "",
                             endpoint_url=settings.aws_endpoint_url)
    from resources.object_store.local import LocalObjectStore

    return LocalObjectStore(settings.objects_dir)


def open_batch_provider(settings: Settings) -> BatchProvider:
    if settings.provider == "openai":
        from resources.providers.openai_batch import OpenAIBatchProvider

        # This process's own client (CLI, Python API): no Dagster resource config, so nothing the UI could show.
        key = settings.openai_api_key
        return OpenAIBatchProvider(
            api_key=key, base_url=settings.openai_base_url, model=settings.model,
            dimensions=settings.dimensions, max_retries=settings.openai_max_retries,
            timeout_seconds=settings.openai_timeout_seconds, enqueued_token_limit=settings.enqueued_token_limit,
            output_expires_after_seconds=settings.output_expires_after_hours * 3600,
        )
    from resources.providers.local import LocalBatchProvider

    return LocalBatchProvider(settings.provider_dir, dimensions=settings.dimensions)


def open_vector_store(settings: Settings, objects: ObjectStore) -> VectorStore:
    if settings.chroma_server is not None:
        from resources.vector_store.server import ServerVectorStore

        return ServerVectorStore(settings.chroma_server, objects, settings.chroma_persist_directory,
                                 settings.keep_snapshot_versions)
    from resources.vector_store.snapshots import SnapshotVectorStore

    return SnapshotVectorStore(objects, settings.chroma_persist_directory, settings.keep_snapshot_versions)
