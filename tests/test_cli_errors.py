"""Expected conditions reach a CLI user as one line on stderr and an exit code the README lists, never a traceback;
in a Dagster run, a held lease is a retried step."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef

from embedding_assets.cli import main as cli
from embedding_assets.cli.errors import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMED_OUT,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from embedding_assets.data.demo import generate_receipts
from embedding_assets.definitions import build_definitions
from embedding_assets.domain.lease import Lease, compaction_lease
from embedding_assets.domain.models import Receipt
from embedding_assets.domain.settings import LOCAL_NATIVE_DIMENSIONS, Settings
from embedding_assets.domain.vectors import Pointer
from embedding_assets.wiring import Runtime
from tests.support import one_line_error

ROOT = Path(__file__).resolve().parents[1]


def test_a_lease_held_by_a_live_process_is_waited_for_within_the_timeout(env, capsys):
    assert cli.main(["demo", "seed", "--receipts", "1"]) == 0
    store = Runtime.from_settings(Settings.from_env(env)).store
    with Lease(store, "lines-create", 60, 20):  # this process: alive, so never taken over
        started = time.monotonic()
        code = cli.main(["run", "--kind", "lines", "--timeout", "1"])
        waited = time.monotonic() - started
    out = capsys.readouterr()
    assert code == EXIT_TIMED_OUT and 1 <= waited < 30
    assert "[lines] waiting for lease lines-create, held by process" in out.out
    (line,) = out.err.strip().splitlines()
    assert "Traceback" not in out.err and "timed out: lease lines-create still held by process" in line


def test_a_command_that_needs_a_held_lease_says_who_holds_it(env, capsys):
    assert cli.main(["demo", "seed", "--receipts", "1"]) == 0
    assert cli.main(["run", "--kind", "lines"]) == 0
    capsys.readouterr()
    store = Runtime.from_settings(Settings.from_env(env)).store
    with Lease(store, compaction_lease("lines"), 60, 20):
        assert cli.main(["reembed", "--kind", "lines", "--no-run"]) == EXIT_BUSY
    line = one_line_error(capsys)
    assert f"lease 'chroma-lines-compaction' is held by process {os.getpid()}" in line and "try again" in line


def test_a_missing_snapshot_and_a_bad_setting_are_one_line_each(env, capsys, monkeypatch):
    assert cli.main(["search", "total", "--kind", "lines"]) == EXIT_FAILED
    assert "no lines snapshot published yet" in one_line_error(capsys)
    monkeypatch.setenv("CHUNK_SIZE", "lots")
    assert cli.main(["status"]) == EXIT_USAGE
    assert one_line_error(capsys).startswith("configuration error:")


@pytest.mark.parametrize(("values", "named"), [
    ({"EMBEDDING_DIMENSIONS": "300"}, ["EMBEDDING_DIMENSIONS"]),  # the local model gives at most 256
    ({"HEARTBEAT_INTERVAL_SECONDS": "60", "LOCK_DURATION_MINUTES": "1"},
     ["HEARTBEAT_INTERVAL_SECONDS", "LOCK_DURATION_MINUTES"]),  # no lease could ever be renewed in time
])
def test_a_setting_every_run_would_fail_on_stops_the_load(env, capsys, monkeypatch, values, named):
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["status"]) == EXIT_USAGE
    line = one_line_error(capsys)
    assert line.startswith("configuration error:") and all(name in line for name in named)


def test_the_largest_good_values_still_load(env):
    settings = Settings.from_env(env | {"EMBEDDING_DIMENSIONS": str(LOCAL_NATIVE_DIMENSIONS),
                                        "HEARTBEAT_INTERVAL_SECONDS": "59.9", "LOCK_DURATION_MINUTES": "1"})
    assert Runtime.from_settings(settings).provider.dimensions == LOCAL_NATIVE_DIMENSIONS


def test_an_endpoint_that_does_not_answer_is_one_line(env, capsys, monkeypatch, fake_api):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for name, value in {"EMBEDDING_PROVIDER": "openai", "OPENAI_BASE_URL": fake_api.base_url,
                        "EMBEDDING_DIMENSIONS": "32", "OPENAI_MAX_RETRIES": "0", "OPENAI_TIMEOUT_SECONDS": "5"}.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["demo", "seed", "--receipts", "1"]) == 0
    assert cli.main(["run", "--kind", "lines", "--timeout", "120"]) == 0
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed.getsockname()[1]}/v1")
    capsys.readouterr()
    assert cli.main(["search", "total", "--kind", "lines"]) == EXIT_UNREACHABLE
    assert one_line_error(capsys).startswith("cannot reach a backend:")


def test_a_chroma_server_that_does_not_answer_is_one_line(env, capsys, monkeypatch):
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("CHROMA_HOST", "127.0.0.1")
        monkeypatch.setenv("CHROMA_PORT", str(closed.getsockname()[1]))
    # A published version whose collection is on that server (pointers are in the object store).
    Runtime.from_settings(Settings.from_env()).vectors("lines").write_pointer(
        Pointer(1, "lines_v00000001", "", 1, "2026-01-01T00:00:00Z"))
    assert cli.main(["search", "total", "--kind", "lines"]) == EXIT_UNREACHABLE
    error = one_line_error(capsys)
    assert error.startswith("cannot reach a backend: Chroma server http://127.0.0.1:") and "CHROMA_HOST" in error


def retry_requested(instance) -> bool:
    runs = instance.get_runs()
    return bool(runs) and bool(
        instance.get_records_for_run(runs[0].run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records)


@pytest.mark.parametrize("job_name", ["lines_compaction", "lines_reconcile", "lines_export"])
def test_a_held_lease_in_a_dagster_run_is_a_retried_step_not_a_failure(settings, instance, job_name):
    """The lease is held (alive, heartbeating) until the step has asked for its retry, then released.

    Reconcile's check and the export op take the compaction lease too: a compaction at 03:30 delays them.
    """
    store = Runtime.from_settings(settings).store
    job = build_definitions(settings).resolve_job_def(job_name)
    assert {node.definition.pool for node in job.nodes_in_topological_order} == {"lines_compaction"}  # one at once
    results = []
    with Lease(store, compaction_lease("lines"), 6.0, 2.0):
        worker = threading.Thread(target=lambda: results.append(
            job.execute_in_process(instance=instance, raise_on_error=False)))
        worker.start()
        deadline = time.monotonic() + 120
        while not retry_requested(instance):
            assert worker.is_alive() and time.monotonic() < deadline
            time.sleep(0.2)
    worker.join(120)
    (result,) = results
    assert result.success
    logged = [r.user_message for r in instance.all_logs(result.run_id) if "trying again in" in r.user_message]
    assert logged and "is held by process" in logged[0]


def test_deleting_a_receipt_that_is_not_there_is_exit_1(env, capsys):
    store = Runtime.from_settings(Settings.from_env(env)).store
    store.put_receipts([Receipt("empty-image", 1, "Corner Market"), *generate_receipts(1, seed=3)])
    there = generate_receipts(1, seed=3)[0]
    assert cli.main(["receipts", "delete", "nope:1"]) == EXIT_FAILED
    assert one_line_error(capsys) == "no such receipt: nope:1"
    assert cli.main(["receipts", "delete", "empty-image:1"]) == 0  # there, with nothing in it
    assert cli.main(["receipts", "delete", f"{there.image_id}:{there.receipt_id}"]) == 0
    assert "deleted receipt" in capsys.readouterr().out and store.receipt_count() == 0


def test_a_failed_run_is_one_line_naming_its_cause(env, capsys):
    """Dagster's own ERROR event, stack and all, stays in the instance; the CLI says what went wrong."""
    settings = Settings.from_env(env)
    assert cli.main(["demo", "seed", "--receipts", "1"]) == 0
    assert cli.main(["run", "--kind", "lines"]) == 0
    archive = "snapshots/lines/00000001/chroma.tar"
    (settings.objects_dir / archive).unlink()  # the published version is lost, and with it the local copy
    shutil.rmtree(settings.chroma_persist_directory)
    assert cli.main(["demo", "seed", "--receipts", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["run", "--kind", "lines"]) == EXIT_FAILED
    line = one_line_error(capsys)
    assert "of lines_compaction failed: " in line and f"ObjectNotFound: '{archive}'" in line


def test_ctrl_c_during_a_run_is_exit_130_and_one_line(env):
    assert cli.main(["demo", "seed", "--receipts", "3"]) == 0
    child = subprocess.Popen([sys.executable, "-m", "embedding_assets.cli.main", "run", "--kind", "lines"],
                             cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        with DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"])) as instance:
            deadline = time.monotonic() + 120
            while not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
                assert child.poll() is None and time.monotonic() < deadline, "no run started"
                time.sleep(0.05)
        child.send_signal(signal.SIGINT)  # inside the run's step, as Ctrl-C in a terminal
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == EXIT_INTERRUPTED
    assert err.strip() == "interrupted; anything half done is picked up by the next run"
