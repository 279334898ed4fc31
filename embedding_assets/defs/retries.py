"""A held lease is a wait, not an error, for every step that takes one (assets, checks, ops alike)."""

from collections.abc import Callable
from typing import TypeVar

from dagster import DagsterLogManager, RetryRequested

from embedding_assets.domain.lease import LeaseHeld

T = TypeVar("T")

# Tries of a step whose lease another live process holds, and the longest wait between two.
LEASE_RETRIES = 5
LEASE_RETRY_MAX_SECONDS = 60.0


def retry_when_held(log: DagsterLogManager, work: Callable[[], T]) -> T:
    """The step is tried again once the lease may be free, with who holds it in the run's log."""
    try:
        return work()
    except LeaseHeld as held:
        wait = min(max(held.seconds_left, 5.0), LEASE_RETRY_MAX_SECONDS)
        log.warning(f"{held}; trying again in {wait:.0f}s")
        raise RetryRequested(max_retries=LEASE_RETRIES, seconds_to_wait=wait) from held
