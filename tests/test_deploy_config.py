"""What can be checked of the deployment files without a container daemon or a cluster.

Every YAML file parses; the production instance (deploy/dagster.yaml) loads as Dagster loads it, alone and
with each example launcher in place of the default one, and each launcher's config fits its class; and every
environment variable the files set (Helm values, secrets, launchers, Dockerfile, the local cluster) is one
that something reads: the settings module, an EnvVar resource, the instance file, the CLI, or the library
named for it below.
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
    return names


def _set_by_deployment() -> dict[str, set[str]]:
    """Variable name -> the files that set it."""
    found: dict[str, set[str]] = {}

    def add(names, where: str) -> None:
        for name in names:
            found.setdefault(name, set()).add(where)

    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    for deployment in values["dagster-user-deployments"]["deployments"]:
        add([e["name"] for e in deployment["env"]], "helm/values.yaml")
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
    """The OpenAI key the manifests provide as a secret is an EnvVar on the resource, never a literal."""
    assert 'EnvVar("OPENAI_API_KEY")' in (ROOT / "resources" / "deployment.py").read_text()
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    env = values["dagster-user-deployments"]["deployments"][0]["env"]
    assert not any("KEY" in e["name"] or "TOKEN" in e["name"] or "SECRET" in e["name"] for e in env)


def test_image_installs_what_the_makefile_installs():
    """The same lock, the same pinned uv, and the project without dependencies, as `make install`."""
    dockerfile, makefile = (DEPLOY / "Dockerfile").read_text(), (ROOT / "Makefile").read_text()
    uv_version = re.search(r"^UV_VERSION := (\S+)", makefile, re.M).group(1)
    assert f"ARG UV_VERSION={uv_version}" in dockerfile
    assert "-r requirements.lock" in makefile and "-r requirements.lock" in dockerfile
    assert "--no-deps -e ." in makefile and "--no-deps ." in dockerfile
