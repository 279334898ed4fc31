"""Shared fixtures: a temporary embedded store, a real Dagster instance, demo receipts.

`backend_settings` is parametrized over the backend sets the whole-pipeline
tests run on; each entry builds environment variables for one set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance

from embedding_assets.data.demo import generate_receipts
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime
from tests.support import BACKENDS, base_env, server_env

# Fixtures shared by several test modules, registered once instead of imported into each.
pytest_plugins = ["tests.aws_fixtures", "tests.fake_batch_api", "tests.chroma_server"]

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(base_env(tmp_path))


@pytest.fixture(params=sorted(BACKENDS))
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return Settings.from_env(BACKENDS[request.param](tmp_path, request))


@pytest.fixture
def server_settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Server mode on the session's `chroma run` server."""
    return Settings.from_env(server_env(tmp_path, request))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The process environment a CLI command in this process reads: an embedded store under tmp_path."""
    values = {"DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dagster"),
              "LOCK_DURATION_MINUTES": "1", "HEARTBEAT_INTERVAL_SECONDS": "2"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    return Runtime.from_settings(settings)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as inst:
        yield inst


@pytest.fixture(scope="session")
def demo_receipts():
    return generate_receipts(6, seed=11)
