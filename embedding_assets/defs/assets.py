"""One asset group per kind (`lines`, `words`), built by the same factory.

Asset bodies only open the resources and call a step in `pipeline` or
`compaction`; what they add is what a user watches in the UI: materialization
metadata with counts, tokens and seconds, and asset checks on the invariants.
"""


import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    Config,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    asset,
)

from embedding_assets.defs.checks import COMPACTION_CHECK, agreement_result, kind_checks
from embedding_assets.defs.jobs import kind_jobs
from embedding_assets.defs.retries import retry_when_held
from embedding_assets.domain.vectors import NEXT, held_recipe
from embedding_assets.steps.consistency import sampled_agreement
from embedding_assets.steps.estimate import backlog
from embedding_assets.wiring import Runtime
from resources.deployment import EmbeddingResource

if TYPE_CHECKING:  # what define_asset_job returns; Dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# Who answers for these assets, as the asset pages show it.
OWNER = "team:receipt-embeddings"


def _delta_facts(runtime: Runtime, batch_id: str) -> dict[str, Any]:
    """The model the batch was sent with (not the configured one, which may have moved on) and its delta."""
    record = runtime.store.get_batch(batch_id)
    facts: dict[str, Any] = {"model": (record.model if record else "") or runtime.provider.model}
    if record is not None and record.delta_key:
        facts["location"] = MetadataValue.path(runtime.objects.uri(record.delta_key))
    return facts


def _snapshot_facts(runtime: Runtime, kind: str, line: str) -> dict[str, Any]:
    """What the asset page shows of the version the compaction left on its line: model, size and where it lies."""
    serving = runtime.vectors(kind)
    # After a re-embed's switch the NEXT line is closed and serving holds what it built.
    pointer = (serving.next_line().latest() if line == NEXT else None) or serving.latest()
    if pointer is None:
        return {}
    facts: dict[str, Any] = {"model": pointer.model or "not recorded", "dimensions": pointer.dimensions or 0,
                             "recipe": held_recipe(kind, pointer.recipe) or "not recorded"}
    if pointer.published:
        facts["location"] = MetadataValue.path(runtime.objects.uri(pointer.key))
    return facts


# Concurrency pools (limits in the instance: deploy/dagster.yaml). Both kinds' create-batches runs share one
# submitter to the provider; ingest downloads run side by side up to their pool's limit; each kind's
# compaction has a pool of its own (`{kind}_compaction`).
SUBMISSION_POOL = "provider_submission"
INGEST_POOL = "ingest_downloads"


class CreateBatchesConfig(Config):
    """`max_items`: at most this many items per run; unset means `MAX_ITEMS_PER_RUN` (500,000)."""

    max_items: int | None = None


@dataclass
class KindDefinitions:
    kind: str
    assets: list
    checks: list
    jobs: "dict[str, UnresolvedAssetJobDefinition]"
    schedules: list[ScheduleDefinition]
    partitions: DynamicPartitionsDefinition

    @property
    def partitions_name(self) -> str:
        """The dynamic partitions' name (one partition per batch id)."""
        return f"{self.kind}_batches"

    @property
    def create_job(self) -> "UnresolvedAssetJobDefinition":
        return self.jobs["create_batches"]

    @property
    def ingest_job(self) -> "UnresolvedAssetJobDefinition":
        return self.jobs["ingest_delta"]

    @property
    def compaction_job(self) -> "UnresolvedAssetJobDefinition":
        return self.jobs["compaction"]

    @property
    def checks_job(self) -> "UnresolvedAssetJobDefinition":
        return self.jobs["batch_checks"]


def build_kind(kind: str) -> KindDefinitions:
    partitions = DynamicPartitionsDefinition(name=f"{kind}_batches")  # KindDefinitions.partitions_name
    key = lambda name: AssetKey([kind, name])  # noqa: E731
    common: dict[str, Any] = dict(group_name=kind, key_prefix=[kind], owners=[OWNER])
    tags = lambda stage: {"embeds": kind, "stage": stage}  # noqa: E731

    @asset(name="unembedded", kinds={"python"}, description=f"Claims unembedded {kind} and writes request files.",
           pool=SUBMISSION_POOL, tags=tags("prepare"), **common)
    def unembedded(
        context: AssetExecutionContext, config: CreateBatchesConfig, embedding: EmbeddingResource,
    ) -> MaterializeResult:
        started = time.monotonic()
        runtime = embedding.open()
        report = retry_when_held(context.log, lambda: runtime.pipeline.prepare(
            kind, config.max_items or runtime.tuning.max_items_per_run, context.log.info))
        waiting = backlog(runtime.pipeline, kind)
        return MaterializeResult(metadata={
            "backlog": waiting.describe(), "backlog_items": waiting.items, "backlog_tokens": waiting.tokens,
            "backlog_usd": waiting.cost_usd,
            "receipts": report.receipts, "items": report.items, "requests": report.requests,
            "batches": len(report.batches), "noise": report.noise, "truncated": report.truncated,
            "lost_claims": report.lost_claims, "oversized_receipts": report.oversized_receipts,
            "released_orphans": report.released_orphans, "estimated_tokens": report.estimated_tokens,
            "batch_ids": MetadataValue.json(report.batches), "seconds": round(time.monotonic() - started, 3),
        })

    @asset(name="submitted_batches", deps=[unembedded], kinds={"python"}, pool=SUBMISSION_POOL, tags=tags("submit"),
           description="Uploads PREPARED request files and creates provider batches.", **common)
    def submitted_batches(context: AssetExecutionContext, embedding: EmbeddingResource) -> MaterializeResult:
        started = time.monotonic()
        runtime = embedding.open()
        report = runtime.pipeline.submit(kind, context.log.info)
        if report.failed and not (report.submitted or report.reconciled):
            raise RuntimeError(f"no batch could be submitted: {report.failed}")
        return MaterializeResult(metadata={
            "submitted": len(report.submitted), "reconciled": len(report.reconciled), "failed": len(report.failed),
            "held": len(report.held), "enqueued_token_limit": runtime.provider.enqueued_token_limit or 0,
            "provider": runtime.provider.name, "model": runtime.provider.model,
            "errors": MetadataValue.json(report.failed), "seconds": round(time.monotonic() - started, 3),
        })

    @asset(name="embedding_deltas", deps=[submitted_batches], partitions_def=partitions, kinds={"parquet"},
           pool=INGEST_POOL, tags=tags("ingest"), **common,
           description="One partition per finished provider batch: its vectors as a Parquet delta.")
    def embedding_deltas(context: AssetExecutionContext, embedding: EmbeddingResource) -> MaterializeResult:
        runtime = embedding.open()
        report = runtime.pipeline.ingest(context.partition_key, context.log.info)
        return MaterializeResult(metadata={
            "batch_status": report.status, "vectors": report.vectors, "failed_requests": report.failed_requests,
            "unfinished_requests": report.unfinished_requests, "unknown_results": report.unknown_results,
            "released": report.released, "dead_lettered": report.dead_lettered, "prompt_tokens": report.prompt_tokens,
            "cost_usd": report.cost_usd, "already_ingested": report.already_done, "seconds": round(report.seconds, 3),
            "dagster/row_count": report.vectors, **_delta_facts(runtime, context.partition_key),
        })

    @asset(name="chroma_snapshot", deps=[AssetDep(embedding_deltas)], kinds={"chromadb"}, pool=f"{kind}_compaction",
           check_specs=[AssetCheckSpec(COMPACTION_CHECK, asset=key("chroma_snapshot"), description=(
               "Every item this compaction touched is SUCCESS exactly when a vector stands for it, and a random "
               "sample of vectors stands for SUCCESS items (the full comparison is `vectors_match_store`)."))],
           tags=tags("compact"), **common,
           description=f"The versioned Chroma collection `{kind}`: deltas merged, then items marked SUCCESS.")
    def chroma_snapshot(context: AssetExecutionContext, embedding: EmbeddingResource) -> MaterializeResult:
        runtime = embedding.open()
        report = retry_when_held(context.log, lambda: runtime.compactor(kind).run(context.log.info))
        agreement = sampled_agreement(runtime.store, runtime.vectors(kind), report.touched)
        return MaterializeResult(check_results=[agreement_result(COMPACTION_CHECK, agreement)], metadata={
            "deltas": report.deltas, "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
            "skipped": report.skipped,
            "items_marked": report.items_marked, "version": report.version or 0, "vectors": report.vectors,
            "removed": report.removed, "changes_read": report.changes_read,
            "changes_trimmed": report.changes_trimmed, "resent": report.resent, "full_scan": report.full_scan,
            "published": report.published, "pruned_versions": len(report.pruned),
            "line": report.line, "reembed_switched": report.switched, "superseded_deltas": report.superseded,
            "seconds": round(report.seconds, 3), "prompt_tokens": report.prompt_tokens, "cost_usd": report.cost_usd,
            "dagster/row_count": report.vectors, **_snapshot_facts(runtime, kind, report.line),
        })

    assets = [unembedded, submitted_batches, embedding_deltas, chroma_snapshot]
    checks = kind_checks(kind, submitted_batches, chroma_snapshot)
    jobs, schedules = kind_jobs(kind, checks)
    return KindDefinitions(kind, assets, checks, jobs, schedules, partitions)
