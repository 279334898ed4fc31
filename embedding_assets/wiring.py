"""The opened backends and the steps over them, for one asset run, sensor tick or CLI command.

The Dagster resources (`resources.deployment`) and the CLI (`from_settings`)
both end here, so a run and a command work on the same objects the same way.
Nothing here imports Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedding_assets.domain.ports import BatchProvider, ObjectStore, ReceiptStore, VectorLine, VectorStore
from embedding_assets.domain.settings import Settings
from embedding_assets.domain.vectors import Pointer
from embedding_assets.steps.compact import Compactor
from embedding_assets.steps.estimate import Estimate, estimate, reembed_held
from embedding_assets.steps.exports import Restored, export_serving, restore_serving
from embedding_assets.steps.parts import StepSettings
from embedding_assets.steps.pipeline import Pipeline
from embedding_assets.steps.reembed import ReembedStart, start_reembed
from embedding_assets.steps.search import Searcher
from resources import backends


@dataclass(frozen=True)
class Tuning:
    """The settings the steps read, apart from which backends serve them."""

    work_dir: Path
    steps: StepSettings
    chunk_size: int = 5000
    delete_processed_deltas: bool = False
    max_items_per_run: int = 500_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Tuning:
        return cls(
            work_dir=settings.data_dir / "tmp",
            steps=StepSettings(
                max_attempts=settings.max_attempts, lock_ttl_seconds=settings.lock_duration_minutes * 60,
                heartbeat_seconds=settings.heartbeat_interval_seconds,
                delete_intermediate=settings.delete_intermediate_chunks, prices=settings.batch_prices,
                reap_after_seconds=settings.reap_after_hours * 3600, recipes=dict(settings.recipes),
                max_requests_per_batch=settings.max_requests_per_batch,
            ),
            chunk_size=settings.chunk_size, delete_processed_deltas=settings.delete_processed_deltas,
            max_items_per_run=settings.max_items_per_run,
        )


class Runtime:
    """The four ports, opened, and the steps bound to them."""

    def __init__(self, store: ReceiptStore, objects: ObjectStore, provider: BatchProvider, vector_store: VectorStore,
                 tuning: Tuning):
        self.store = store
        self.objects = objects
        self.provider = provider
        self.vector_store = vector_store
        self.tuning = tuning
        self.pipeline = Pipeline(store, objects, provider, tuning.work_dir, tuning.steps)
        self.searcher = Searcher()

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        objects = backends.open_object_store(settings)
        return cls(backends.open_receipt_store(settings), objects, backends.open_batch_provider(settings),
                   backends.open_vector_store(settings, objects), Tuning.from_settings(settings))

    def vectors(self, kind: str) -> VectorLine:
        """The kind's serving line of collection versions."""
        return self.vector_store.line(kind)

    def start_reembed(self, kind: str) -> ReembedStart:
        """Open (or resume) a re-embed of `kind` with the configured model; see `steps.reembed`."""
        steps = self.tuning.steps
        return start_reembed(self.store, self.vectors(kind), self.provider.model, self.provider.dimensions,
                             steps.recipe(kind), steps.lock_ttl_seconds, steps.heartbeat_seconds)

    def estimate(self, kind: str, reembed: bool = False) -> Estimate:
        """What the next run (or a re-embed with the configured model) would send and cost; nothing is sent."""
        provider = self.provider
        held = reembed_held(self.vectors(kind), provider.model, provider.dimensions) if reembed else frozenset()
        return estimate(self.pipeline, kind, reembed, held)

    def export(self, kind: str) -> Pointer | None:
        """The serving version in the snapshot layout (exported now in server mode); see `steps.exports`."""
        steps = self.tuning.steps
        return export_serving(self.store, self.vectors(kind), steps.lock_ttl_seconds, steps.heartbeat_seconds)

    def restore(self, kind: str, version: int | None) -> Restored:
        """Serve an archived version of `kind` again; see `steps.exports`."""
        steps = self.tuning.steps
        return restore_serving(self.store, self.vectors(kind), version, steps.lock_ttl_seconds,
                               steps.heartbeat_seconds)

    def compactor(self, kind: str) -> Compactor:
        steps = self.tuning.steps
        return Compactor(
            self.store, self.objects, self.vectors(kind), self.provider.model, self.provider.dimensions,
            steps.recipe(kind), lock_ttl_seconds=steps.lock_ttl_seconds, heartbeat_seconds=steps.heartbeat_seconds,
            chunk_size=self.tuning.chunk_size, delete_processed_deltas=self.tuning.delete_processed_deltas,
            work_dir=self.tuning.work_dir, max_attempts=steps.max_attempts,
        )

    def close(self) -> None:
        """Close what holds a connection (SQLite, opened search views); clients shared per process stay open."""
        self.searcher.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
