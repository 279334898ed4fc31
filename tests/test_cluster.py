"""The local multi-host cluster (deploy/local/cluster.sh), end to end, once.

up (seven hosts, each in its own network and mount namespace), a check that no host can see another
host's directory, the smoke with a SIGKILL of the code host's run process in the middle of an ingest
(the daemon's run retry must finish the batch, nothing lost or ingested twice), then down, which must
leave no process, namespace or bridge behind. Needs root and `ip netns` (CI has both); a few minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local" / "cluster.sh"
HOSTS = ("db", "aws", "chroma", "batchapi", "code", "daemon", "web")
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "`ip netns` is unavailable"
    if not (PG_BIN / "postgres").exists():
        return f"no PostgreSQL server in {PG_BIN}"
    if "re-db" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        return "a local cluster is already running (deploy/local/cluster.sh down first)"
    return None


pytestmark = [pytest.mark.cluster, pytest.mark.skipif(_unavailable() is not None, reason=str(_unavailable()))]


def _script(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _namespace_pids() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.startswith("re-")]
    return [pid for name in names
            for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()]


@pytest.fixture(scope="module")
def cluster():
    cluster_dir = ROOT / ".cluster-test"  # inside the checkout: the postgres user must reach its folder
    env = dict(os.environ, CLUSTER_DIR=str(cluster_dir), PYTHON=sys.executable, PG_BIN=str(PG_BIN),
               BATCHAPI_CONTENT_DELAY="4")
    up = _script(env, "up", timeout=600)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        again = _script(env, "up", timeout=300)  # idempotent: every host answers, nothing is started twice
        assert again.returncode == 0 and "started" not in again.stderr, again.stderr[-2000:]
        yield cluster_dir, env
    finally:
        down = _script(env, "down", timeout=300)
        leftovers = _namespace_pids()
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        shutil.rmtree(cluster_dir, ignore_errors=True)
        assert down.returncode == 0, down.stderr[-2000:]
        assert not leftovers, f"processes left in the cluster's namespaces: {leftovers}"
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert "re-br0" not in links and not any(f"re-{h}" in links for h in HOSTS)
        assert not any(line.startswith("re-") for line in namespaces.splitlines())


def test_each_host_sees_only_its_own_directory(cluster):
    cluster_dir, _ = cluster
    for host in HOSTS:
        pid = (cluster_dir / "admin" / f"{host}.pid").read_text().strip()
        view = subprocess.run(["nsenter", "-t", pid, "-m", "sh", "-c",
                               f"ls -A {cluster_dir}/hosts; ls -A {cluster_dir}/admin; touch {ROOT}/.written"],
                              capture_output=True, text=True)
        assert view.stdout.strip() == "", f"{host} sees {view.stdout!r}"
        assert "Read-only" in view.stderr, f"{host} can write into the repository"
        assert (cluster_dir / "hosts" / host).is_dir()


def test_smoke_converges_after_the_run_process_is_killed_mid_ingest(cluster):
    cluster_dir, env = cluster
    smoke = _script(env, "smoke", "--receipts", "6", "--kill-ingest", "--timeout", "600", timeout=900)
    out = smoke.stdout
    if smoke.returncode != 0:  # the daemon and the code host tell what the sensors and the retry did
        logs = "".join(f"\n--- {host} service.log ---\n" + (cluster_dir / "hosts" / host / "service.log")
                       .read_text(errors="replace")[-3000:] for host in ("daemon", "code"))
        pytest.fail(out[-6000:] + smoke.stderr[-3000:] + logs)
    assert "killed (SIGKILL)" in out and "run retry:" in out
    final = out.strip().splitlines()[-1]
    assert final.startswith("smoke: ") and "OK in" in final
    assert "at most 2 at once" in final  # two ingest runs overlapped, and no more: the pool's limit
    # No pipeline or Dagster state on the Dagster hosts' disks: only the instance file, and on the code host
    # the scratch folder (step folders, the Chroma cache) under DATA_DIR.
    hosts = cluster_dir / "hosts"
    for host in ("code", "daemon", "web"):
        assert [p.name for p in (hosts / host / "dagster_home").iterdir()] == ["dagster.yaml"]
    assert {p.name for p in (hosts / "code" / "scratch").iterdir()} <= {"tmp", "chroma"}


def test_cli_runs_the_pipeline_on_the_deployment(cluster):
    """`run --deployment` with the environment `cluster.sh env` prints: launch, follow the sensors' runs, done."""
    _, env = cluster
    exports = _script(env, "env", timeout=30).stdout
    cli_env = dict(env, **dict(line.removeprefix("export ").split("=", 1) for line in exports.splitlines()))
    cli = Path(sys.executable).with_name("receipt-embeddings")
    seeded = subprocess.run([str(cli), "demo", "seed", "--receipts", "1"], env=cli_env, capture_output=True,
                            text=True, timeout=120, cwd=cli_env["DATA_DIR"])
    assert seeded.returncode == 0, seeded.stderr
    run = subprocess.run([str(cli), "run", "--deployment", "--kind", "all", "--timeout", "500"], env=cli_env,
                         capture_output=True, text=True, timeout=600, cwd=cli_env["DATA_DIR"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "[lines] create batches" in run.stdout and "[words] create batches" in run.stdout
    assert "[lines] done:" in run.stdout and "[words] done:" in run.stdout
