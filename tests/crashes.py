"""Drive the pipeline's steps in process, and kill a child at a chosen line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from embedding_assets.domain.models import PROVIDER_LIVE, Stage
from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime

ROOT = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces `settings` in a child process."""
    names = {
        "data_dir": "DATA_DIR", "lock_duration_minutes": "LOCK_DURATION_MINUTES",
        "heartbeat_interval_seconds": "HEARTBEAT_INTERVAL_SECONDS", "dynamodb_table": "DYNAMODB_TABLE_NAME",
        "s3_bucket": "S3_BUCKET", "chromadb_bucket": "CHROMADB_BUCKET", "aws_endpoint_url": "AWS_ENDPOINT_URL",
        "chroma_persist_directory": "CHROMA_PERSIST_DIRECTORY", "max_attempts": "MAX_ATTEMPTS",
        "dimensions": "EMBEDDING_DIMENSIONS", "model": "EMBEDDING_MODEL",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNAMODB_", "S3_", "CHROMA", "EMBEDDING_"))}
    for field in fields(settings):
        value = getattr(settings, field.name)
        if field.name in names and value is not None:
            env[names[field.name]] = str(value)
    server = settings.chroma_server
    if server is not None:
        env |= {"CHROMA_HOST": server.host, "CHROMA_PORT": str(server.port), "CHROMA_SSL": str(server.ssl),
                "CHROMA_TENANT": server.tenant, "CHROMA_DATABASE": server.database}
    return env


def kill_during(settings: Settings, step: str, kind: str, target: str, when: str = "before", arg: str = "") -> None:
    """Run `step` in a child that SIGKILLs itself at `target`; fail if it did not die there."""
    argv = [sys.executable, "-m", "tests.crash_child", step, kind, target, when] + ([arg] if arg else [])
    done = subprocess.run(argv, cwd=ROOT, env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, (
        f"child was not killed at {target}: rc={done.returncode}\n{done.stderr[-3000:]}"
    )


def drive(runtime: Runtime, kind: str, rounds: int = 5) -> None:
    """The run loop without Dagster: prepare, submit, poll, ingest, compact until nothing is live."""
    for _ in range(rounds):
        runtime.pipeline.prepare(kind, 10_000_000)
        runtime.pipeline.submit(kind)
        finished, _ = runtime.pipeline.poll(kind, 1000)
        for record in finished:
            runtime.pipeline.ingest(record.batch_id)
        runtime.compactor(kind).run()
        live = runtime.store.list_batches(kind, [Stage.PREPARED, *PROVIDER_LIVE])
        if not live and not runtime.store.status_counts(kind).get("PENDING"):
            return
