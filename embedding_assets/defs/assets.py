"""One asset group per kind (`lines`, `words`), built by the same factory.

Asset bodies only open the resources and call a step in `pipeline` or
`compaction`; what they add is what a user watches in the UI: materialization
metadata with counts, tokens and seconds, and asset checks on the invariants.
"""


import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    Config,
    DefaultScheduleStatus,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    ScheduleDefinition,
    asset,
    asset_check,
    define_asset_job,
)

from embedding_assets.domain.models import Stage
from embedding_assets.steps.consistency import snapshot_agreement
from embedding_assets.steps.status import reaped_batches, stuck_batches
from resources.deployment import EmbeddingResource

if TYPE_CHECKING:  # what define_asset_job returns; Dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


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
    schedule: ScheduleDefinition
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


def build_kind(kind: str) -> KindDefinitions:
    partitions = DynamicPartitionsDefinition(name=f"{kind}_batches")  # KindDefinitions.partitions_name
    key = lambda name: AssetKey([kind, name])  # noqa: E731
    common: dict[str, Any] = dict(group_name=kind, key_prefix=[kind])

    @asset(name="unembedded", kinds={"python"}, description=f"Claims unembedded {kind} and writes request files.",
           pool=SUBMISSION_POOL, **common)
    def unembedded(
        context: AssetExecutionContext, config: CreateBatchesConfig, embedding: EmbeddingResource,
    ) -> MaterializeResult:
        started = time.monotonic()
        runtime = embedding.open()
        report = runtime.pipeline.prepare(kind, config.max_items or runtime.tuning.max_items_per_run, context.log.info)
        return MaterializeResult(metadata={
            "receipts": report.receipts, "items": report.items, "requests": report.requests,
            "batches": len(report.batches), "noise": report.noise, "truncated": report.truncated,
            "lost_claims": report.lost_claims, "oversized_receipts": report.oversized_receipts,
            "released_orphans": report.released_orphans, "estimated_tokens": report.estimated_tokens,
            "batch_ids": MetadataValue.json(report.batches), "seconds": round(time.monotonic() - started, 3),
        })

    @asset(name="submitted_batches", deps=[unembedded], kinds={"python"}, pool=SUBMISSION_POOL,
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
           pool=INGEST_POOL, description="One partition per finished provider batch: its vectors as a Parquet delta.",
           **common)
    def embedding_deltas(context: AssetExecutionContext, embedding: EmbeddingResource) -> MaterializeResult:
        runtime = embedding.open()
        report = runtime.pipeline.ingest(context.partition_key, context.log.info)
        return MaterializeResult(metadata={
            "batch_status": report.status, "vectors": report.vectors, "failed_requests": report.failed_requests,
            "unfinished_requests": report.unfinished_requests, "unknown_results": report.unknown_results,
            "released": report.released, "dead_lettered": report.dead_lettered, "prompt_tokens": report.prompt_tokens,
            "cost_usd": report.cost_usd, "model": runtime.provider.model,
            "already_ingested": report.already_done, "seconds": round(report.seconds, 3),
        })

    @asset(name="chroma_snapshot", deps=[AssetDep(embedding_deltas)], kinds={"chromadb"}, pool=f"{kind}_compaction",
           description=f"The versioned Chroma collection `{kind}`: deltas merged, then items marked SUCCESS.", **common)
    def chroma_snapshot(context: AssetExecutionContext, embedding: EmbeddingResource) -> MaterializeResult:
        runtime = embedding.open()
        report = runtime.compactor(kind).run(context.log.info)
        return MaterializeResult(metadata={
            "deltas": report.deltas, "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
            "items_marked": report.items_marked, "version": report.version or 0, "vectors": report.vectors,
            "removed": report.removed, "published": report.published, "pruned_versions": len(report.pruned),
            "line": report.line, "reembed_switched": report.switched, "superseded_deltas": report.superseded,
            "model": runtime.provider.model, "seconds": round(report.seconds, 3),
        })

    @asset_check(asset=chroma_snapshot, name="success_matches_snapshot",
                 description="Every SUCCESS item is in the latest snapshot, and every vector there is a SUCCESS item.")
    def success_matches_snapshot(embedding: EmbeddingResource) -> AssetCheckResult:
        runtime = embedding.open()
        agreement = snapshot_agreement(runtime.store, runtime.vectors(kind))
        return AssetCheckResult(passed=agreement.ok, severity=AssetCheckSeverity.ERROR, metadata={
            "success_items": agreement.success, "items_in_snapshot": agreement.in_snapshot,
            "success_missing_from_snapshot": agreement.missing_count,
            "vectors_for_no_success_item": agreement.extra_count, "awaiting_reembed": agreement.awaiting_reembed,
            "sample_missing": MetadataValue.json(agreement.missing_sample),
            "sample_extra": MetadataValue.json(agreement.extra_sample),
        })

    @asset_check(asset=submitted_batches, name="no_pending_without_batch",
                 description="No item is PENDING unless a live batch record owns it.")
    def no_pending_without_batch(embedding: EmbeddingResource) -> AssetCheckResult:
        stranded = embedding.open().store.pending_without_live_batch(kind)
        return AssetCheckResult(passed=not stranded, severity=AssetCheckSeverity.WARN, metadata={
            "stranded_items": len(stranded),
            "batches": MetadataValue.json(sorted({b or "(none)" for _, b in stranded})[:20]),
            "sample": MetadataValue.json([k for k, _ in stranded[:10]]),
        })

    @asset_check(asset=submitted_batches, name="no_stuck_batches",
                 description="No batch in flight is stuck; names those that are, and the batches reaped lately.")
    def no_stuck_batches(embedding: EmbeddingResource) -> AssetCheckResult:
        batches = embedding.open().store.list_batches(kind)
        stuck, reaped = stuck_batches(batches), reaped_batches(batches)
        return AssetCheckResult(passed=not stuck, severity=AssetCheckSeverity.WARN, metadata={
            "stuck_batches": len(stuck), "stuck": MetadataValue.json(stuck),
            "reaped_batches": sum(b.stage == Stage.REAPED for b in batches),
            "recently_reaped": MetadataValue.json(reaped),
        })

    jobs = {
        "create_batches": define_asset_job(
            f"{kind}_create_batches", selection=AssetSelection.assets(key("unembedded"), key("submitted_batches")),
            description=f"Find, claim and format unembedded {kind}; submit them as batches.",
        ),
        "ingest_delta": define_asset_job(
            f"{kind}_ingest_delta", selection=AssetSelection.assets(key("embedding_deltas")), partitions_def=partitions,
            description="Turn one finished batch (the partition) into a delta.",
        ),
        "compaction": define_asset_job(
            f"{kind}_compaction", selection=AssetSelection.assets(key("chroma_snapshot")),
            description="Merge waiting deltas into a new snapshot version.",
        ),
    }
    schedule = ScheduleDefinition(
        name=f"{kind}_create_batches_schedule", job=jobs["create_batches"], cron_schedule="0 * * * *",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Hourly batch creation; off by default so that nothing is sent (or paid for) until you turn it on.",
    )
    return KindDefinitions(
        kind, [unembedded, submitted_batches, embedding_deltas, chroma_snapshot],
        [success_matches_snapshot, no_pending_without_batch, no_stuck_batches], jobs, schedule, partitions,
    )
