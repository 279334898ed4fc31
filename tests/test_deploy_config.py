"""What can be checked of the deployment files without a container daemon or a cluster.

Every YAML file parses; the production instance (deploy/dagster.yaml) loads as Dagster loads it, alone and
with each example launcher in place of the default one, and each launcher's config fits its class; and every
environment variable the files set (Helm values, secrets, launchers, Dockerfile, the local cluster) is one
that something reads: the settings module, an EnvVar resource, the instance file, the CLI, or the library
named for it below; and every variable the pipeline reads reaches each launcher's runs, as a run lacking one
would use its default while the code server uses another value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_k8s import K8sRunLauncher

from embedding_assets.domain.formatting import RECIPES

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
LAUNCHERS = {"k8s.yaml": K8sRunLauncher, "ecs.yaml": EcsRunLauncher}

# Read by a library rather than by this repository's code.
LIBRARY_VARIABLES = {
    "DAGSTER_HOME": "Dagster (where the instance file is)",
    "DAGSTER_DISABLE_TELEMETRY": "Dagster",
    "ANONYMIZED_TELEMETRY": "chromadb",
    "AWS_ACCESS_KEY_ID": "boto3",
    "AWS_SECRET_ACCESS_KEY": "boto3",
    "AWS_DEFAULT_REGION": "boto3",
}
# Read by the pipeline but not given to runs, and why.
NOT_FOR_RUNS = {"AWS_ENDPOINT_URL": "a stand-in for AWS (moto, LocalStack); boto3 reads it too, so on AWS it is unset"}
INSTANCE_VARIABLES = {"DAGSTER_PG_HOST": "5432", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "dagster",
                      "DAGSTER_PG_PASSWORD": "secret", "DAGSTER_PG_DB": "dagster", "S3_BUCKET": "logs"}


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml"))


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)


@pytest.mark.parametrize("launcher", [None, *LAUNCHERS], ids=lambda name: name or "default")
def test_instance_loads_with_each_launcher(launcher, tmp_path, monkeypatch):
    for name, value in INSTANCE_VARIABLES.items():
        monkeypatch.setenv(name, value)
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    if launcher:
        example = yaml.safe_load((DEPLOY / "launchers" / launcher).read_text())["run_launcher"]
        checked = validate_config(LAUNCHERS[launcher].config_type(), example["config"])
        assert checked.success, [e.message for e in checked.errors]
        instance["run_launcher"] = example
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    loaded = dagster_instance_config(str(tmp_path))[0]
    assert loaded["run_retries"]["enabled"] and loaded["concurrency"]["pools"]["granularity"] == "run"


def _read_by_code() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("embedding_assets/**/*.py"), *ROOT.glob("resources/**/*.py"), *ROOT.glob("sensors/*.py")]:
        text = path.read_text()
        names |= set(re.findall(r'reader\.\w+\("([A-Z0-9_]+)"', text))
        names |= set(re.findall(r'EnvVar\("([A-Z0-9_]+)"\)', text))
        names |= set(re.findall(r'environ(?:\.get)?[\[(]"([A-Z0-9_]+)"', text))
    names |= set(re.findall(r"\{env: ([A-Z0-9_]+)\}", (DEPLOY / "dagster.yaml").read_text()))
    return names | {f"{kind.upper()}_RECIPE" for kind in RECIPES}  # read as reader.choice(f"{kind.upper()}_RECIPE")


def _pipeline_variables() -> set[str]:
    """What the settings module and the resources' EnvVars read."""
    names = set(re.findall(r'reader\.\w+\("([A-Z0-9_]+)"', (ROOT / "embedding_assets/domain/settings.py").read_text()))
    names |= {f"{kind.upper()}_RECIPE" for kind in RECIPES}
    names |= set(re.findall(r'EnvVar\("([A-Z0-9_]+)"\)', (ROOT / "resources/deployment.py").read_text()))
    return names - set(NOT_FOR_RUNS)


def _manifests(kind: str) -> dict[str, dict[str, str]]:
    """Name -> data of each ConfigMap or Secret under deploy/k8s."""
    found = {}
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] == kind:
                found[document["metadata"]["name"]] = document.get("data") or document.get("stringData") or {}
    return found


def _names(entries) -> list[str]:
    return [e["name"] if isinstance(e, dict) else e for e in entries or []]


def _run_environment(launcher: str) -> set[str]:
    """The variables a run's container starts with under this launcher's configuration."""
    maps, secrets = _manifests("ConfigMap"), _manifests("Secret")
    if launcher == "helm/values.yaml":
        values = yaml.safe_load((DEPLOY / launcher).read_text())
        code, runs = values["dagster-user-deployments"]["deployments"][0], values["runLauncher"]["config"][
            "k8sRunLauncher"]
        assert code["includeConfigInLaunchedRuns"]["enabled"]  # the code server's env reaches its runs
        env = set(_names(code.get("env"))) | set(_names(runs.get("envVars")))
        map_names = _names(code.get("envConfigMaps")) + _names(runs.get("envConfigMaps"))
        secret_names = _names(code.get("envSecrets")) + _names(runs.get("envSecrets"))
    else:
        config = yaml.safe_load((DEPLOY / launcher).read_text())["run_launcher"]["config"]
        env = set(config.get("env_vars", [])) | {s["name"] for s in config.get("secrets", [])}
        map_names, secret_names = config.get("env_config_maps", []), config.get("env_secrets", [])
        if config.get("postgres_password_secret"):
            env.add("DAGSTER_PG_PASSWORD")
        if launcher.endswith("ecs.yaml"):
            # Without a task_definition of its own, EcsRunLauncher copies the daemon's task and its environment.
            assert isinstance(config.get("task_definition"), dict)
    for name in map_names:
        env |= set(maps[name])
    for name in secret_names:
        env |= set(secrets[name])
    return env


@pytest.mark.parametrize("launcher", ["helm/values.yaml", "launchers/k8s.yaml", "launchers/ecs.yaml"])
def test_every_pipeline_variable_reaches_the_runs(launcher):
    wanted = _pipeline_variables()
    if launcher.startswith("launchers/"):  # the chart renders the instance file itself
        wanted |= set(re.findall(r"\{env: ([A-Z0-9_]+)\}", (DEPLOY / "dagster.yaml").read_text()))
    missing = sorted(wanted - _run_environment(launcher))
    assert not missing, f"{launcher}: a run would start without {missing}"


def _set_by_deployment() -> dict[str, set[str]]:
    """Variable name -> the files that set it."""
    found: dict[str, set[str]] = {}

    def add(names, where: str) -> None:
        for name in names:
            found.setdefault(name, set()).add(where)

    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    for deployment in values["dagster-user-deployments"]["deployments"]:
        add(_names(deployment.get("env")), "helm/values.yaml")
    for data in _manifests("ConfigMap").values():
        add(data, "k8s/env.yaml")
    for secret in yaml.safe_load_all((DEPLOY / "k8s" / "secrets.example.yaml").read_text()):
        if secret["metadata"]["name"] != values["global"]["postgresqlSecretName"]:  # the chart reads that one
            add(secret["stringData"], "k8s/secrets.example.yaml")
    for name in LAUNCHERS:
        config = yaml.safe_load((DEPLOY / "launchers" / name).read_text())["run_launcher"]["config"]
        add(config.get("env_vars", []), f"launchers/{name}")
        add([s["name"] for s in config.get("secrets", [])], f"launchers/{name}")
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    add(re.findall(r"\b([A-Z][A-Z0-9_]+)=", dockerfile.split("ENV", 1)[1].split("\n\n", 1)[0]), "Dockerfile")
    script = (DEPLOY / "local" / "cluster.sh").read_text()  # the hosts' environments: heredocs and echo lines
    heredocs = "\n".join(re.findall(r"cat <<EOF\n(.*?)\nEOF", script, re.S))
    add(re.findall(r"^([A-Z][A-Z0-9_]+)=", heredocs, re.M) + re.findall(r'echo "([A-Z][A-Z0-9_]+)=', script),
        "local/cluster.sh")
    return found


def test_every_variable_the_deployment_sets_is_read():
    read = _read_by_code() | set(LIBRARY_VARIABLES)
    unread = {name: sorted(where) for name, where in _set_by_deployment().items() if name not in read}
    assert not unread, f"set but read by nothing: {unread}"


def test_secrets_reach_resources_only_as_env_vars():
    """The secrets are EnvVars on the resources, never literals, and no file gives one as a plain variable."""
    secrets = set(re.findall(r'EnvVar\("([A-Z0-9_]+)"\)', (ROOT / "resources" / "deployment.py").read_text()))
    assert {"OPENAI_API_KEY", "CHROMA_AUTH_TOKEN", "CHROMA_HEADERS"} <= secrets
    plain = {name for name, where in _set_by_deployment().items() if where - {"k8s/secrets.example.yaml"}}
    plain -= {s["name"] for name in LAUNCHERS for s in
              yaml.safe_load((DEPLOY / "launchers" / name).read_text())["run_launcher"]["config"].get("secrets", [])}
    assert not plain & (secrets | {"DAGSTER_PG_PASSWORD"})


def test_image_installs_what_the_makefile_installs():
    """The same lock, the same pinned uv, and the project without dependencies, as `make install`."""
    dockerfile, makefile = (DEPLOY / "Dockerfile").read_text(), (ROOT / "Makefile").read_text()
    uv_version = re.search(r"^UV_VERSION := (\S+)", makefile, re.M).group(1)
    assert f"ARG UV_VERSION={uv_version}" in dockerfile
    assert "-r requirements.lock" in makefile and "-r requirements.lock" in dockerfile
    assert "--no-deps -e ." in makefile and "--no-deps ." in dockerfile
