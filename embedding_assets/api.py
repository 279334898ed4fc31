"""The Python entry points behind the CLI, for notebooks and services."""

from __future__ import annotations

from typing import Any

from embedding_assets.domain.models import KINDS
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.search import Hit, NoSnapshot, search
from embedding_assets.steps.status import kind_status
from embedding_assets.wiring import Runtime


def open_runtime(settings: Settings | None = None) -> Runtime:
    return Runtime.from_settings(settings or Settings.from_env())


def search_receipts(
    text: str, kind: str = "lines", k: int = 5, merchant: str | None = None, runtime: Runtime | None = None
) -> list[Hit]:
    """Nearest lines (or words, or both with kind="all") to `text` in the latest published snapshots."""
    runtime = runtime or open_runtime()
    if kind != "all":
        return search(runtime.vectors(kind), runtime.provider, text, k, merchant)
    hits: list[Hit] = []
    for one in KINDS:
        try:
            hits += search(runtime.vectors(one), runtime.provider, text, k, merchant)
        except NoSnapshot:
            continue
    if not hits:
        raise NoSnapshot("no snapshot published yet for any kind: run the pipeline first")
    return sorted(hits, key=lambda h: h.distance)[:k]


def pipeline_status(kinds: tuple[str, ...] = ("lines",), runtime: Runtime | None = None) -> dict[str, Any]:
    runtime = runtime or open_runtime()
    return {kind: kind_status(runtime.store, runtime.vectors(kind)) for kind in kinds}
