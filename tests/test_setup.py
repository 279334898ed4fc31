"""What a newcomer's first commands rely on: the install from the committed locks, the Makefile honouring the
caller's environment, an install without setuptools warnings, and `dg dev` serving the code location."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from embedding_assets.definitions import LOCATION_NAME

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {"requirements.lock": [], "requirements-dev.lock": ["dev"]}


def pins(lock: Path) -> dict[str, list[tuple[str, str, bool]]]:
    """name -> [(version, marker, hashed)] of the lock's entries."""
    found: dict[str, list[tuple[str, str, bool]]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\\n]+))?", entry)
        if match:
            name, version, marker = match.groups()
            found.setdefault(canonicalize_name(name), []).append((version, (marker or "").strip(), "--hash=" in entry))
    return found


@pytest.mark.parametrize("lock_name", sorted(LOCKS))
def test_the_lock_pins_every_requirement_with_hashes(lock_name):
    """A dependency added to pyproject without `make lock` fails here, before an install would miss it."""
    locked = pins(ROOT / lock_name)
    requirements = list(PYPROJECT["project"]["dependencies"])
    for extra in LOCKS[lock_name]:
        requirements += PYPROJECT["project"]["optional-dependencies"][extra]
    here = default_environment()
    for text in requirements:
        requirement = Requirement(text)
        versions = [v for v, marker, _ in locked.get(canonicalize_name(requirement.name), [])
                    if not marker or Requirement(f"x; {marker}").marker.evaluate(here)]
        assert versions and all(requirement.specifier.contains(v, prereleases=True) for v in versions), text
    assert all(hashed for entries in locked.values() for _, _, hashed in entries)
    assert f"-o {lock_name}" in (ROOT / lock_name).read_text().splitlines()[1]


def make(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_installs_the_locks_with_uv_and_shows_progress():
    planned = make("-n", "-B", "-W", "requirements-dev.lock", "VENV=/nonexistent/venv", "install-dev")
    assert "pip install --disable-pip-version-check uv==" in planned
    assert "uv pip install --python /nonexistent/venv/bin/python -r requirements-dev.lock" in planned
    assert "--no-deps -e ." in planned and "--quiet" not in planned


@pytest.mark.parametrize("given", [None, "/somewhere/else"])
def test_the_makefile_honours_dagster_home_from_the_environment(given):
    show = "show:\n\t@echo \"$$DAGSTER_HOME\"\n"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if given:
        env["DAGSTER_HOME"] = given
    done = subprocess.run(["make", "-s", "--no-print-directory", "-f", "Makefile", "-f", "-", "show"], cwd=ROOT,
                          input=show, capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.strip() == (given or str(ROOT / ".dagster_home"))


def test_an_editable_install_prints_no_setuptools_warning(tmp_path):
    project = tmp_path / "project"
    skip = shutil.ignore_patterns(".venv", ".data", ".dagster_home", ".git", "*.egg-info", "__pycache__", "build",
                                  ".bench", "tests")
    shutil.copytree(ROOT, project, ignore=skip)
    out = tmp_path / "wheel"
    out.mkdir()
    done = subprocess.run([sys.executable, "-W", "always", "-c",
                           f"from setuptools import build_meta; print(build_meta.build_editable({str(out)!r}))"],
                          cwd=project, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "same name as your package" not in said and "Warning" not in said, said[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dg_lists_and_serves_the_code_location_without_a_supersession_warning(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    listed = subprocess.run([str(BIN / "dg"), "list", "defs", "--json"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=180)
    assert listed.returncode == 0, listed.stderr
    jobs = {job["name"] for job in json.loads(listed.stdout)["jobs"]}
    assert {"lines_create_batches", "lines_ingest_delta", "lines_compaction"} <= jobs

    port = _free_port()
    log = tmp_path / "dg_dev.log"
    with log.open("w") as sink:
        server = subprocess.Popen([str(BIN / "dg"), "dev", "-p", str(port)], cwd=ROOT, env=env, stdout=sink,
                                  stderr=subprocess.STDOUT)
    try:
        entries_query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
        query = json.dumps({"query": entries_query})
        deadline = time.monotonic() + 150
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", query.encode(),
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    entries = json.loads(response.read())["data"]["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["loadStatus"] == "LOADED":
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        assert [e["name"] for e in entries] == [LOCATION_NAME]
    finally:
        server.terminate()
        server.wait(60)
    assert "SupersessionWarning" not in log.read_text()
