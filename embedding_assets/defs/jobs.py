"""The jobs and schedules of one kind.

Reconcile is daily and RUNNING, since it only reads the store and repairs the
collection. The create-batches schedule, which looks at the store before it
launches, and the batch checks' schedule are in `sensors.schedules`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import (
    AssetChecksDefinition,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
)

from embedding_assets.defs.checks import BATCH_CHECKS, RECONCILE_CHECK

if TYPE_CHECKING:  # what define_asset_job returns; Dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

Jobs = dict[str, "UnresolvedAssetJobDefinition"]


def kind_jobs(kind: str, checks: list[AssetChecksDefinition]) -> tuple[Jobs, list[ScheduleDefinition]]:
    def key(name: str) -> AssetKey:
        return AssetKey([kind, name])

    reconcile_check = AssetSelection.checks(*[c for c in checks if any(k.name == RECONCILE_CHECK
                                                                        for k in c.check_keys)])
    jobs: Jobs = {
        "create_batches": define_asset_job(
            f"{kind}_create_batches", selection=AssetSelection.assets(key("unembedded"), key("submitted_batches")),
            description=f"Find, claim and format unembedded {kind}; submit them as batches.",
        ),
        "ingest_delta": define_asset_job(
            f"{kind}_ingest_delta", selection=AssetSelection.assets(key("embedding_deltas")),
            description="Turn one finished batch (the partition, from the asset's partitions) into a delta.",
        ),
        "compaction": define_asset_job(
            f"{kind}_compaction", selection=AssetSelection.assets(key("chroma_snapshot")) - reconcile_check,
            description="Merge waiting deltas into a new snapshot version.",
        ),
        "batch_checks": define_asset_job(
            f"{kind}_batch_checks", selection=AssetSelection.checks(*[c for c in checks if any(
                k.name in BATCH_CHECKS for k in c.check_keys)]),
            description="The batch checks on their own, on a schedule: they watch while batches are out.",
        ),
        "reconcile": define_asset_job(
            f"{kind}_reconcile", selection=reconcile_check,
            description="Compare every vector with every item; remove vectors of items gone, resend items lacking one.",
        ),
    }
    schedules = [
        ScheduleDefinition(
            name=f"{kind}_reconcile_schedule", job=jobs["reconcile"], cron_schedule="30 3 * * *",
            default_status=DefaultScheduleStatus.RUNNING,
            description="Daily full reconciliation of the collection with the store (the `vectors_match_store` check).",
        ),
    ]
    return jobs, schedules
