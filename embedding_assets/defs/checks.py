"""The asset checks of one kind: the invariants a user watches in the UI.

`success_matches_snapshot` is yielded by the compaction itself (it checks
what that compaction touched plus a sample, so its cost follows the delta);
`vectors_match_store` is the full comparison, run by the daily reconcile job,
and it repairs what it finds: a vector whose item is gone, a SUCCESS item
with no vector (a writer that bypassed this project's store methods).
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetsDefinition,
    MetadataValue,
)
from dagster import asset_check as dagster_asset_check

from embedding_assets.defs.retries import retry_when_held
from embedding_assets.domain.models import Stage
from embedding_assets.steps.consistency import Agreement
from embedding_assets.steps.reconcile import reconcile
from embedding_assets.steps.status import reaped_batches, stuck_batches
from resources.deployment import EmbeddingResource

COMPACTION_CHECK = "success_matches_snapshot"
RECONCILE_CHECK = "vectors_match_store"
# The checks on batches in flight, run on their own schedule too (`sensors.schedules.checks_schedule`).
BATCH_CHECKS = ("no_pending_without_batch", "no_stuck_batches")


def agreement_result(name: str, agreement: Agreement) -> AssetCheckResult:
    return AssetCheckResult(check_name=name, passed=agreement.ok, severity=AssetCheckSeverity.ERROR, metadata={
        "checked": agreement.scope,
        "success_items": agreement.success, "items_in_snapshot": agreement.in_snapshot,
        "success_missing_from_snapshot": agreement.missing_count,
        "vectors_for_no_success_item": agreement.extra_count, "awaiting_reembed": agreement.awaiting_reembed,
        "sample_missing": MetadataValue.json(agreement.missing_sample),
        "sample_extra": MetadataValue.json(agreement.extra_sample),
    })


def kind_checks(kind: str, submitted_batches: AssetsDefinition,
                chroma_snapshot: AssetsDefinition) -> list[AssetChecksDefinition]:
    # It takes the kind's compaction lease: it waits in the compaction's pool, and for a lease held anyway.
    @dagster_asset_check(asset=chroma_snapshot, name=RECONCILE_CHECK, pool=f"{kind}_compaction", description=(
        "Every vector against every item (the daily reconcile job): vectors of items gone from the store are "
        "removed and SUCCESS items with no vector sent again; fails when it had anything to repair."))
    def vectors_match_store(context: AssetCheckExecutionContext, embedding: EmbeddingResource) -> AssetCheckResult:
        runtime = embedding.open()
        steps = runtime.tuning.steps
        report = retry_when_held(context.log, lambda: reconcile(
            runtime.store, runtime.vectors(kind), steps.lock_ttl_seconds, steps.heartbeat_seconds,
            runtime.tuning.chunk_size))
        return AssetCheckResult(passed=report.clean, severity=AssetCheckSeverity.WARN, metadata={
            "vectors_before": report.vectors_before, "success_items": report.success_items,
            "removed_vectors_of_missing_items": report.removed,
            "requeued_success_items_without_vector": report.requeued,
            "sample_removed": MetadataValue.json(report.removed_sample),
            "sample_requeued": MetadataValue.json(report.requeued_sample),
            "version": report.version or 0, "seconds": round(report.seconds, 3),
        })

    @dagster_asset_check(asset=submitted_batches, name="no_pending_without_batch",
                         description="No item is PENDING unless a live batch record owns it.")
    def no_pending_without_batch(embedding: EmbeddingResource) -> AssetCheckResult:
        stranded = embedding.open().store.pending_without_live_batch(kind)
        return AssetCheckResult(passed=not stranded, severity=AssetCheckSeverity.WARN, metadata={
            "stranded_items": len(stranded),
            "batches": MetadataValue.json(sorted({b or "(none)" for _, b in stranded})[:20]),
            "sample": MetadataValue.json([k for k, _ in stranded[:10]]),
        })

    @dagster_asset_check(asset=submitted_batches, name="no_stuck_batches", description=(
        "No batch in flight is stuck; names those that are, and the batches reaped lately."))
    def no_stuck_batches(embedding: EmbeddingResource) -> AssetCheckResult:
        batches = embedding.open().store.list_batches(kind)
        stuck, reaped = stuck_batches(batches), reaped_batches(batches)
        return AssetCheckResult(passed=not stuck, severity=AssetCheckSeverity.WARN, metadata={
            "stuck_batches": len(stuck), "stuck": MetadataValue.json(stuck),
            "reaped_batches": sum(b.stage == Stage.REAPED for b in batches),
            "recently_reaped": MetadataValue.json(reaped),
        })

    return [vectors_match_store, no_pending_without_batch, no_stuck_batches]
