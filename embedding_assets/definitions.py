"""The code location: both kinds' assets, checks, jobs, schedules and sensors.

Settings are read here, at load, so a bad variable stops the location from
loading with a message naming it, instead of failing a run later.
"""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions, in_process_executor, with_source_code_references

from embedding_assets.defs.assets import build_kind
from embedding_assets.defs.exports import build_export
from embedding_assets.domain.models import KINDS
from embedding_assets.domain.settings import Settings
from resources.deployment import resources_from_settings
from sensors.batch_status import batch_status_sensor
from sensors.compaction import compaction_after_ingest_sensor, compaction_sensor
from sensors.schedules import checks_schedule, create_batches_schedule

# The code location's name in workspace.yaml and pyproject ([tool.dagster], [tool.dg.project]).
LOCATION_NAME = "receipt_embeddings"

KIND_DEFS = {kind: build_kind(kind) for kind in KINDS}
EXPORTS = {kind: build_export(kind) for kind in KINDS}


def _with_code_references(assets: list) -> list:
    """Each asset page links to the function that computes it; Dagster's beta notice is not for our users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return list(with_source_code_references(assets))


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings.from_env()
    kinds = KIND_DEFS.values()
    return Definitions(
        assets=_with_code_references([a for k in kinds for a in k.assets]),
        asset_checks=[c for k in kinds for c in k.checks],
        jobs=[*(j for k in kinds for j in k.jobs.values()), *(job for job, _ in EXPORTS.values())],
        schedules=[*(s for k in kinds for s in k.schedules), *(schedule for _, schedule in EXPORTS.values()),
                   *(s(k) for k in kinds for s in (create_batches_schedule, checks_schedule))],
        sensors=[*(sensor(k, settings.sensor_interval_seconds)
                   for k in kinds for sensor in (batch_status_sensor, compaction_sensor)),
                 *(compaction_after_ingest_sensor(k) for k in kinds)],
        resources=resources_from_settings(settings),
        # One process per run: its steps are short and sequential, and a process per step would cost more in
        # start-up than the steps take. Under K8sRunLauncher / EcsRunLauncher a run is one pod / task.
        executor=in_process_executor,
    )


defs = build_definitions()
