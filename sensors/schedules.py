"""Schedules per kind: batch creation, and the batch checks while batches are out.

Creation ships stopped (nothing is sent, or paid for, until you switch it on)
and launches only when there is something to claim (`decisions.decide_create`,
the same decision `run` makes), so the asset history shows real work only.
The checks are free and ship running: they look at the store every 15 minutes,
not only right after a submit.
"""

from __future__ import annotations

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from embedding_assets.defs.assets import KindDefinitions
from embedding_assets.steps.status import create_work
from resources.deployment import EmbeddingResource
from sensors.decisions import decide_create

CREATE_CRON = "0 * * * *"
CHECKS_CRON = "*/15 * * * *"


def create_batches_schedule(defs: KindDefinitions) -> ScheduleDefinition:
    kind = defs.kind

    @schedule(name=f"{kind}_create_batches_schedule", job=defs.create_job, cron_schedule=CREATE_CRON,
              default_status=DefaultScheduleStatus.STOPPED,
              description="Hourly batch creation when there is something to claim; off by default so that nothing is "
                          "sent (or paid for) until you turn it on.")
    def _schedule(context: ScheduleEvaluationContext, embedding: EmbeddingResource) -> RunRequest | SkipReason:
        work = create_work(embedding.open().store, kind)
        decision = decide_create(work.unembedded, work.stranded, work.prepared)
        if decision.run:
            return RunRequest(tags={"reason": decision.reason})
        if decision.submit_only:
            return RunRequest(asset_selection=[AssetKey([kind, "submitted_batches"])], tags={"reason": decision.reason})
        return SkipReason(decision.reason)

    return _schedule


def checks_schedule(defs: KindDefinitions) -> ScheduleDefinition:
    return ScheduleDefinition(
        name=f"{defs.kind}_batch_checks_schedule", job=defs.checks_job, cron_schedule=CHECKS_CRON,
        default_status=DefaultScheduleStatus.RUNNING,
        description="no_pending_without_batch and no_stuck_batches every 15 minutes, so stuck work is seen while "
                    "batches are out.",
    )
