"""One real `chroma run` server for the whole session, on 127.0.0.1, and a fresh database on it per test.

The `chroma` command ships with the `chromadb` package (in the venv's bin);
it is started once, asked for its heartbeat until it answers, and stopped
at the end of the session. Each test gets its own database name, so tests
share the server without seeing each other's collections.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMA = Path(sys.executable).parent / "chroma"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_answering(url: str, process: subprocess.Popen, log: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"chroma run did not answer {url} within {seconds}s:\n{log.read_text()[-2000:]}")


@contextmanager
def running_chroma_server(root: Path) -> Iterator[tuple[str, int]]:
    """(host, port) of a `chroma run` server on loopback, its data under `root`, stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = root / "server.log"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CHROMA), "run", "--path", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        _wait_until_answering(f"http://127.0.0.1:{port}/api/v2/heartbeat", process, log)
        yield "127.0.0.1", port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The session's server, with its data in a temporary folder."""
    with running_chroma_server(tmp_path_factory.mktemp("chroma_server")) as address:
        yield address


def server_mode_env(chroma_server: tuple[str, int]) -> dict[str, str]:
    """The variables that put a test in server mode, on a database of its own."""
    host, port = chroma_server
    return {"CHROMA_HOST": host, "CHROMA_PORT": str(port), "CHROMA_DATABASE": f"test_{uuid.uuid4().hex[:12]}"}
