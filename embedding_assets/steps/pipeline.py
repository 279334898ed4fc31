"""The steps behind one name, so an asset body, a sensor tick and the CLI call the same code.

Each step lives in its own module (`prepare`, `submit`, `poll`, `ingest`) and
reads its work from the store, so it can be re-run after a crash at any line
and converge; each module's docstring says how.
"""

from __future__ import annotations

import logging

from embedding_assets.domain.models import BatchRecord
from embedding_assets.steps import ingest as ingest_step
from embedding_assets.steps import poll as poll_step
from embedding_assets.steps import prepare as prepare_step
from embedding_assets.steps import submit as submit_step
from embedding_assets.steps.parts import Progress, StepParts

log = logging.getLogger(__name__)


class Pipeline(StepParts):
    """The steps bound to one set of parts."""

    def prepare(self, kind: str, max_items: int, progress: Progress = log.info) -> prepare_step.PrepareReport:
        return prepare_step.prepare(self, kind, max_items, progress)

    def release_orphans(self, kind: str) -> int:
        return prepare_step.release_orphans(self, kind)

    def submit(self, kind: str, progress: Progress = log.info) -> submit_step.SubmitReport:
        return submit_step.submit(self, kind, progress)

    def poll(self, kind: str, limit: int, after: str | None = None) -> tuple[list[BatchRecord], str | None]:
        return poll_step.poll(self, kind, limit, after)

    def reap(self, record: BatchRecord, reason: str) -> None:
        poll_step.reap(self, record, reason)

    def cancel(self, batch_id: str) -> BatchRecord:
        return poll_step.cancel(self, batch_id)

    def ingest(self, batch_id: str, progress: Progress = log.info) -> ingest_step.IngestReport:
        return ingest_step.ingest(self, batch_id, progress)
