"""What the sensors decide, as plain functions: the sensors and the CLI's `run` loop call the same ones.

Kept free of Dagster so the decisions can be read and tested on their own;
the sensors only gather the facts (from the store and the instance) and turn
a decision into a RunRequest or a SkipReason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from embedding_assets.domain.vectors import Pointer

# Provider calls per batch-status tick: far under the 60 s sensor limit.
MAX_POLLS_PER_TICK = 50
# Ingest runs of one batch that may fail before a person must relaunch it.
MAX_INGEST_RUNS = 3
# How long a failed run the instance promised to retry may go without that retry before the batch-status
# sensor relaunches the batch itself. The daemon retries within seconds; this only covers a retry that never
# comes (the daemon's retry pass failing, or retries switched off after the promise).
RETRY_GRACE_SECONDS = 300
# Tags the instance's run retries put on a failed run: whether it will be retried, and once it is, by which run.
WILL_RETRY_TAG = "dagster/will_retry"
RETRIED_BY_TAG = "dagster/auto_retry_run_id"


@dataclass(frozen=True)
class IngestDecision:
    """Which finished batches get an ingest run (with its run key), and which are given up on."""

    launch: list[tuple[str, str]] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)


def decide_ingests(kind: str, finished: Sequence[str], failed_runs: Callable[[str], int]) -> IngestDecision:
    """One run per finished batch; the run key counts failed runs, so a failed ingest is tried again, up to a limit.

    A batch seen finished on many ticks keeps the same key, so it is ingested once.
    """
    decision = IngestDecision()
    for batch_id in finished:
        failures = failed_runs(batch_id)
        if failures < MAX_INGEST_RUNS:
            decision.launch.append((batch_id, f"{kind}-ingest-{batch_id}-{failures}"))
        else:
            decision.given_up.append(batch_id)
    return decision


def awaiting_retry(tags: Mapping[str, str], ended: float, now: float, retries_enabled: bool) -> bool:
    """Whether a failed run is the instance's to retry (launched, or still due), so not a failure to relaunch.

    Counting such a run would launch a second ingest of the batch beside the retry. The instance tags a failed
    run just after marking it failed, so with retries on a run not tagged yet is still due its verdict.
    """
    verdict = tags.get(WILL_RETRY_TAG)
    if verdict == "false" or (verdict is None and not retries_enabled):
        return False
    return RETRIED_BY_TAG in tags or now - ended < RETRY_GRACE_SECONDS


def nothing_finished(live: int, given_up: Sequence[str]) -> str:
    """Why a batch-status tick started nothing, for the tick list in the UI."""
    reason = f"{live} batches live, none finished" if live else "no batch live"
    return reason + (f"; {len(given_up)} finished batches need their ingest relaunched from the UI" if given_up else "")


@dataclass(frozen=True)
class CompactionDecision:
    run: bool
    reason: str
    run_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def compaction_in_flight(waiting: str | None, started: str | None, lease_held: bool) -> str | None:
    """The compaction run still in flight, if any: one waiting to start, or a started one the lease shows alive.

    A run is left STARTED for ever on an instance that nothing monitors when its process is killed
    (`receipt-embeddings run` killed with kill -9 mid-compaction). A live compaction holds the kind's
    compaction lease for as long as it works, so a started run counts only while the lease has a holder
    that is not provably dead; a dead holder's lease is taken over by the next compaction at once, and
    one on another host counts until it expires (`LOCK_DURATION_MINUTES`).
    """
    return waiting or (started if lease_held else None)


def decide_compaction(deltas_waiting: int, building: Pointer | None, run_in_flight: str | None,
                      changes_waiting: int = 0) -> CompactionDecision:
    """Compact when deltas wait, or the store's change feed holds changes the published version has not
    applied (a deletion reaches search without waiting for the next delta), and no compaction of the
    kind is in flight.

    While a re-embed runs, also once per NEXT version with no deltas: that
    compaction switches search over if nothing is left to re-embed (the last
    waiting items were deleted, or a crash came between marking and switching).
    """
    if not deltas_waiting and not changes_waiting and building is None:
        return CompactionDecision(False, "no deltas waiting, no changes to apply")
    if run_in_flight:
        return CompactionDecision(False, f"compaction run {run_in_flight} still in flight")
    if deltas_waiting:
        return CompactionDecision(True, f"{deltas_waiting} deltas waiting", tags={"deltas": str(deltas_waiting)})
    if changes_waiting:
        return CompactionDecision(True, f"{changes_waiting} changed items to apply",
                                  tags={"changes": str(changes_waiting)})
    assert building is not None
    return CompactionDecision(True, "re-embed switch check", run_key=f"reembed-switch-check-v{building.version}",
                              tags={"reembed": "switch-check"})


@dataclass(frozen=True)
class CreateDecision:
    """Whether to run create-batches (claim and submit), only its submit step, or nothing."""

    run: bool
    submit_only: bool
    reason: str


def decide_create(unembedded: int, stranded: int, prepared: int, unclaimable: int = 0) -> CreateDecision:
    """Create batches only when there is something to claim, so a run with nothing to do is never launched.

    `stranded` items are PENDING with no live batch (a crash between claim and
    record): a create releases and sends them. `unclaimable` is how many NONE
    items the last create left as they were (none of them could go): they do
    not call for another create until more items are released beside them.
    PREPARED batches held back for the provider's queue only need a submit.
    """
    if stranded or unembedded > unclaimable:
        return CreateDecision(True, False, f"{unembedded} unembedded items, {stranded} stranded PENDING")
    if prepared:
        return CreateDecision(False, True, f"{prepared} batches prepared, waiting for room in the provider's queue")
    if unembedded:
        return CreateDecision(False, False, f"{unembedded} unembedded items, none of which the last create could send")
    return CreateDecision(False, False, "nothing to embed: no item is NONE")
