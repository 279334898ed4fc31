"""`run --deployment` against a loopback webserver that answers its GraphQL (tests/fake_dagster_webserver.py):
it follows only its own batches, by the server's clock, fails at once on an ingest the sensor has given up on,
and says in one line, with the README's exit code, that the address is bad or the webserver does not answer."""

from __future__ import annotations

import socket

import pytest

from embedding_assets.cli import deployment
from embedding_assets.cli import main as cli
from embedding_assets.cli.errors import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE
from embedding_assets.defs.assets import build_kind
from sensors.decisions import MAX_INGEST_RUNS
from tests.fake_dagster_webserver import FakeRun, FakeWebserver
from tests.support import one_line_error

pytest_plugins = ["tests.fake_dagster_webserver"]

LINES = build_kind("lines")


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(deployment, "POLL_SECONDS", 0.05)


def created(batch_ids: list[str], submitted: int, held: int = 0):
    """`on_launch`: the create run succeeds at once, having prepared `batch_ids` and sent `submitted` batches."""
    def launch(server: FakeWebserver, run: FakeRun) -> None:
        run.status, run.started, run.ended = "SUCCESS", server.now(), server.now()
        run.materializations = {
            "lines/unembedded": {"batch_ids": batch_ids, "items": 3 * len(batch_ids)},
            "lines/submitted_batches": {"submitted": submitted, "reconciled": 0, "held": held, "failed": 0},
        }
    return launch


def ingest_and_compact(server: FakeWebserver, batch_id: str, version: int, marked: int) -> None:
    server.add_run(LINES.ingest_job.name, partition=batch_id)
    server.add_run(LINES.compaction_job.name, materializations={
        "lines/chroma_snapshot": {"version": version, "vectors": 10 * version, "items_marked": marked}})


def run(url: str, timeout: int = 20) -> int:
    return cli.main(["run", "--deployment", url, "--kind", "lines", "--timeout", str(timeout)])


def test_an_older_batch_ingested_first_does_not_end_the_wait_for_ours(env, fake_webserver, capsys):
    """Another create run's batch is ingested and compacted first; ours later."""
    fake_webserver.on_launch = created(["ours"], submitted=1)

    def sensors(server: FakeWebserver, poll: int) -> None:
        if poll == 1:
            ingest_and_compact(server, "older", version=1, marked=3)
        elif poll == 5:
            ingest_and_compact(server, "ours", version=2, marked=3)

    fake_webserver.on_poll = sensors
    assert run(fake_webserver.url) == 0
    out = capsys.readouterr().out
    assert "ingest batch ours" in out and "ingest batch older" not in out
    assert "[lines] done:" in out and "snapshot v2" in out.split("[lines] done:")[1]
    assert fake_webserver.polls >= 5


def test_an_ingest_the_sensor_gave_up_on_fails_the_command_at_once(env, fake_webserver, capsys):
    fake_webserver.on_launch = created(["ours"], submitted=1)

    def sensors(server: FakeWebserver, poll: int) -> None:
        if poll <= MAX_INGEST_RUNS:
            server.add_run(LINES.ingest_job.name, status="FAILURE", partition="ours",
                           tags={"dagster/will_retry": "false"})

    fake_webserver.on_poll = sensors
    assert run(fake_webserver.url, timeout=60) == EXIT_FAILED
    line = one_line_error(capsys)
    assert f"ingest of batch ours failed {MAX_INGEST_RUNS} times" in line and "given up" in line
    assert fake_webserver.polls < 20  # not held to the timeout


def test_a_cli_clock_ahead_of_the_server_still_finds_its_own_runs(env, fake_webserver, capsys):
    fake_webserver.skew = -120.0  # the server's clock is two minutes behind this machine's
    fake_webserver.on_launch = created(["ours"], submitted=1)
    fake_webserver.on_poll = lambda server, poll: poll == 2 and ingest_and_compact(server, "ours", 1, 3)
    assert run(fake_webserver.url, timeout=10) == 0
    assert "[lines] done: 3 lines embedded in 1 batches, snapshot v1" in capsys.readouterr().out


def test_a_deployment_without_the_job_is_one_line_and_exit_1(env, fake_webserver, capsys):
    fake_webserver.location = False
    assert run(fake_webserver.url) == EXIT_FAILED
    assert "the deployment did not launch lines_create_batches" in one_line_error(capsys)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_webserver_that_does_not_answer_is_one_line_and_exit_4(env, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", f"http://127.0.0.1:{_closed_port()}")
    assert cli.main(["run", "--deployment", "--kind", "lines", "--timeout", "5"]) == EXIT_UNREACHABLE
    assert "cannot reach the Dagster webserver" in one_line_error(capsys)


def test_a_webserver_lost_while_following_is_one_line_and_exit_4(env, fake_webserver, capsys):
    fake_webserver.on_launch = created(["ours"], submitted=1)
    fake_webserver.hang_up_from_poll = 2
    assert run(fake_webserver.url) == EXIT_UNREACHABLE
    assert "cannot reach the Dagster webserver" in one_line_error(capsys)


@pytest.mark.parametrize("url", ["http://:80", "http://host:port", "ftp://host"])
def test_a_bad_address_is_one_line_and_exit_2(env, capsys, url):
    assert run(url) == EXIT_USAGE
    assert "expected http[s]://HOST[:PORT][/PREFIX]" in one_line_error(capsys)
