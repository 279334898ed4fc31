"""The conditions a CLI user is expected to meet, each as one line and an exit code (the README lists them).

A traceback is for a bug; a held lease, a missing snapshot, a bad setting or an
endpoint that does not answer are situations with something to do about them,
so the message says what happened and what to do. Anything not named here is
a bug and keeps its traceback.
"""

from __future__ import annotations

from embedding_assets.domain.lease import LeaseHeld
from embedding_assets.domain.settings import ConfigError
from embedding_assets.domain.vectors import ModelMismatch
from embedding_assets.steps.search import NoSnapshot

EXIT_FAILED = 1  # a pipeline run failed, or what was asked for is not there (no snapshot, no receipt)
EXIT_USAGE = 2  # bad arguments, bad configuration, or a model the collection does not hold
EXIT_TIMED_OUT = 3  # --timeout passed with items still PENDING or a lease still held by a live process
EXIT_UNREACHABLE = 4  # a backend (stores, Chroma server, provider, Dagster webserver) did not answer
EXIT_BUSY = 5  # another live process holds the lease this command needs
EXIT_INTERRUPTED = 130  # Ctrl-C


def _unreachable() -> tuple[type[BaseException], ...]:
    """Connection failures of the clients we use, imported only once one is being explained."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError
    from openai import APIConnectionError

    return ConnectionError, EndpointConnectionError, APIConnectionError, NoCredentialsError


def explain(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an expected condition, None for anything else."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted; anything half done is picked up by the next run"
    if isinstance(exc, LeaseHeld):
        return EXIT_BUSY, f"{exc}; it is working on this kind now: try again once it is done"
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, f"configuration error: {exc}"
    if isinstance(exc, ModelMismatch):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, NoSnapshot):
        return EXIT_FAILED, f"{exc}"
    if isinstance(exc, _unreachable()):
        return EXIT_UNREACHABLE, (f"cannot reach a backend: {exc}; check the endpoint variables (AWS_ENDPOINT_URL, "
                                  "OPENAI_BASE_URL, CHROMA_HOST/CHROMA_PORT) and credentials, or that the service "
                                  "is up")
    return None
