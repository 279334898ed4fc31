"""Secrets (the OpenAI key, the Chroma token and headers) reach their resources only as EnvVars: the UI never
shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_resources
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from embedding_assets.domain.settings import Settings
from resources.deployment import resources_from_settings
from resources.object_store.local import LocalObjectStore
from resources.vector_store.server import request_headers

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-do-not-show-4f9a1c"
RESOURCES = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  allTopLevelResourceDetails { name configuredValues { key value type } nestedResources { name type } } } } } }"""


SECRETS = [
    ({"EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": SECRET}, "batch_provider", "api_key", "OPENAI_API_KEY"),
    ({"CHROMA_HOST": "chroma.internal", "CHROMA_AUTH_TOKEN": SECRET}, "vector_store", "auth_token",
     "CHROMA_AUTH_TOKEN"),
    # A hosted Chroma takes its API key as a header.
    ({"CHROMA_HOST": "chroma.internal", "CHROMA_HEADERS": f"x-chroma-token={SECRET},X-Team=search"}, "vector_store",
     "headers", "CHROMA_HEADERS"),
]


@pytest.mark.parametrize(("env", "resource", "field", "variable"), SECRETS, ids=[s[3] for s in SECRETS])
def test_graphql_resource_config_names_the_variable_not_the_secret(tmp_path, monkeypatch, env, resource, field,
                                                                    variable):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    target = ModuleTarget(module_name="embedding_assets.definitions", attribute="defs",
                          working_directory=str(ROOT), location_name="receipt_embeddings")
    with DagsterInstance.local_temp(str(home)) as instance, WorkspaceProcessContext(instance, target) as workspace:
        result = execute_dagster_graphql(workspace.create_request_context(), RESOURCES)
    assert not result.errors, result.errors
    resources = result.data["repositoriesOrError"]["nodes"][0]["allTopLevelResourceDetails"]
    by_name = {r["name"]: {c["key"]: c for c in r["configuredValues"]} for r in resources}
    assert by_name[resource][field]["type"] == "ENV_VAR"
    assert by_name[resource][field]["value"] == variable
    assert SECRET not in json.dumps(result.data)


def test_headers_hidden_from_the_ui_still_reach_the_chroma_client(tmp_path, monkeypatch):
    """The resource holds `CHROMA_HEADERS` as an EnvVar; opened in a run, the client sends them (and the token)."""
    env = {"DATA_DIR": str(tmp_path), "CHROMA_HOST": "chroma.internal", "CHROMA_AUTH_TOKEN": SECRET,
           "CHROMA_HEADERS": f"x-chroma-token={SECRET}, X-Team = search"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    resource = resources_from_settings(Settings.from_env(env))["vector_store"]
    with build_resources({"vector_store": resource}) as opened:
        store = opened.vector_store.for_objects(LocalObjectStore(tmp_path / "objects"))
    assert request_headers(store.server) == {"x-chroma-token": SECRET, "X-Team": "search",
                                             "Authorization": f"Bearer {SECRET}"}
