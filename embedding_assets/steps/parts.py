"""The parts every step works over: the three ports, a scratch folder, leases and settings."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from embedding_assets.domain.batching import MAX_REQUESTS_PER_FILE, Budget
from embedding_assets.domain.formatting import DEFAULT_RECIPES
from embedding_assets.domain.lease import Lease
from embedding_assets.domain.ports import BatchProvider, ObjectStore, ReceiptStore
from embedding_assets.domain.tokens import Fitted

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StepSettings:
    """How the steps behave, as read from the environment (see `domain.settings`).

    `reap_after_seconds` is how long after submission a batch that has not
    finished is given up on: the 24 h window plus a day of grace by default.
    """

    max_attempts: int = 3
    lock_ttl_seconds: float = 300.0
    heartbeat_seconds: float = 30.0
    delete_intermediate: bool = True
    prices: dict[str, float] | None = None
    reap_after_seconds: float = 48 * 3600
    # Smaller batches finish sooner at the provider and are ingested side by side (MAX_REQUESTS_PER_BATCH).
    max_requests_per_batch: int = MAX_REQUESTS_PER_FILE
    recipes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_RECIPES))

    def recipe(self, kind: str) -> str:
        """What a vector of `kind` stands for (see `domain.formatting`)."""
        return self.recipes[kind]


@dataclass
class StepParts:
    """What a step is handed; one per run, tick or command."""

    store: ReceiptStore
    objects: ObjectStore
    provider: BatchProvider
    work_dir: Path
    settings: StepSettings = field(default_factory=StepSettings)
    budget: Budget | None = None

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)
        # One file never exceeds what the provider lets be enqueued at once.
        if self.budget is None:
            self.budget = Budget(max_requests=self.settings.max_requests_per_batch,
                                 max_tokens=self.provider.enqueued_token_limit)

    @property
    def max_attempts(self) -> int:
        return self.settings.max_attempts

    def fit_input(self, text: str) -> Fitted:
        """An input cut to the provider's per-input limit and counted, both in the model's own tokens."""
        return self.provider.tokenizer.fit(text, self.provider.max_input_tokens)

    def lease(self, name: str) -> Lease:
        return Lease(self.store, name, self.settings.lock_ttl_seconds, self.settings.heartbeat_seconds)

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private folder under the work dir, removed afterwards whatever happens."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=self.work_dir, prefix="step-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
