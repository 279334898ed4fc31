"""A job and schedule per kind that export the serving version into the snapshot layout.

In server mode that is how restorable versions are kept (the compactions
write into the server and publish no archives); in snapshot mode it only
names the archive the last compaction published. The schedule is off by
default: an export of a large collection is a full copy.
"""

from dagster import DefaultScheduleStatus, JobDefinition, OpExecutionContext, Output, ScheduleDefinition, job, op

from embedding_assets.defs.retries import retry_when_held
from resources.deployment import EmbeddingResource


def build_export(kind: str) -> tuple[JobDefinition, ScheduleDefinition]:
    # It takes the kind's compaction lease: it waits in the compaction's pool, and for a lease held anyway.
    @op(name=f"{kind}_export_serving", pool=f"{kind}_compaction",
        description=f"Archive the serving {kind} version under snapshots/{kind}/.")
    def export_serving(context: OpExecutionContext, embedding: EmbeddingResource) -> Output[None]:
        runtime = embedding.open()
        pointer = retry_when_held(context.log, lambda: runtime.export(kind))
        if pointer is None:
            context.log.info(f"{kind}: nothing published yet, nothing exported")
            return Output(None, metadata={"exported": False})
        return Output(None, metadata={"exported": True, "version": pointer.version, "key": pointer.key,
                                      "vectors": pointer.vectors, "sha256": pointer.sha256})

    @job(name=f"{kind}_export", description=f"Export the serving {kind} collection as a restorable snapshot.")
    def export_job() -> None:
        export_serving()

    schedule = ScheduleDefinition(
        name=f"{kind}_export_schedule", job=export_job, cron_schedule="0 5 * * *",
        default_status=DefaultScheduleStatus.STOPPED,
        description="Daily export of the serving collection; off by default (each export is a full copy).",
    )
    return export_job, schedule
