"""Runs a job in this process as a run of the code location, so the UI files it under its job.

The UI finds a job's runs (job page, overview timeline, sparklines) by the
run's remote origin: the code location and repository it came from. Dagster's
`execute_in_process` records none, so its runs show only in the flat run list.
Here the run is created with the origin the webserver and daemon load from
`workspace.yaml` (a `python_module` entry named `LOCATION_NAME`) and then
executed in process, as `execute_in_process` would, with the in-process
executor. A tag says the run came from the CLI.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dagster import AssetKey, DagsterInstance, Definitions
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.execute_in_process import merge_run_tags
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from embedding_assets.definitions import LOCATION_NAME

DEFINITIONS_MODULE = "embedding_assets.definitions"
REPOSITORY_NAME = "__repository__"  # the repository a Definitions object becomes
LAUNCHED_BY_TAG = "launched_by"
ROOT = Path(__file__).resolve().parents[2]


def job_origin(job_name: str) -> RemoteJobOrigin:
    """The job's origin as `workspace.yaml` loads it: same module, working directory and location name."""
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE,
                                  working_directory=str(ROOT))
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, location_name=LOCATION_NAME)
    return RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY_NAME), job_name)


def launch(defs: Definitions, instance: DagsterInstance, job_name: str, launched_by: str,
           run_config: Mapping[str, object], partition_key: str | None = None,
           asset_selection: Sequence[AssetKey] | None = None) -> JobExecutionResult:
    job_def = defs.resolve_job_def(job_name)
    selection = list(asset_selection) if asset_selection else None
    ephemeral = job_def.as_ephemeral_job(resource_defs={}, input_values={}, asset_selection=selection)
    job = InMemoryJob(ephemeral)
    tags = merge_run_tags(job_def=job_def, partition_key=partition_key, tags={LAUNCHED_BY_TAG: launched_by},
                          asset_selection=selection, instance=instance, run_config=run_config)
    plan = create_execution_plan(job, run_config=run_config, instance_ref=instance.get_ref())
    run = instance.create_run_for_job(
        job_def=ephemeral, run_config=run_config, tags=tags, execution_plan=plan,
        remote_job_origin=job_origin(job_name), asset_selection=frozenset(selection) if selection else None,
    )
    return execute_run(job, run, instance)
