"""The Python entry points behind the CLI, for notebooks and services.

Without a `runtime`, calls share one per configuration, so a service's second
query reuses the opened collection and lexical index of the version it
searched before (opening them costs tens of milliseconds).
"""

from __future__ import annotations

from typing import Any

from embedding_assets.domain.models import KINDS
from embedding_assets.domain.settings import Settings
from embedding_assets.steps.search import Hit, NoSnapshot, Query
from embedding_assets.steps.status import kind_status
from embedding_assets.wiring import Runtime

_shared: dict[str, Runtime] = {}


def open_runtime(settings: Settings | None = None) -> Runtime:
    return Runtime.from_settings(settings or Settings.from_env())


def shared_runtime(settings: Settings | None = None) -> Runtime:
    """One runtime per configuration for this process, opened on first use."""
    settings = settings or Settings.from_env()
    key = repr(settings)  # Settings holds dicts, so it is not hashable; its repr names every value
    if key not in _shared:
        _shared[key] = open_runtime(settings)
    return _shared[key]


def search_receipts(
    text: str, kind: str = "lines", k: int = 5, merchant: str | None = None, runtime: Runtime | None = None,
    mode: str = "hybrid", receipt: str | None = None,
) -> list[Hit]:
    """The best lines (or words, or both with kind="all") for `text` in the latest published versions.

    `mode` is hybrid (default), vector or lexical; `receipt` (`IMAGE_ID:RECEIPT_ID`) searches inside one
    receipt; `merchant` matches the merchant name case-insensitively. An empty list means nothing matched.
    """
    query = Query(text, k, mode, merchant, receipt)
    runtime = runtime or shared_runtime()
    if kind != "all":
        return runtime.searcher.search(runtime.vectors(kind), runtime.provider, query)
    hits: list[Hit] = []
    published = False
    for one in KINDS:
        try:
            hits += runtime.searcher.search(runtime.vectors(one), runtime.provider, query)
            published = True
        except NoSnapshot:
            continue
    if not published:
        raise NoSnapshot("no snapshot published yet for any kind: run the pipeline first")
    return sorted(hits, key=lambda h: -h.score)[:k]


def pipeline_status(kinds: tuple[str, ...] = ("lines",), runtime: Runtime | None = None) -> dict[str, Any]:
    runtime = runtime or open_runtime()
    return {kind: kind_status(runtime.store, runtime.vectors(kind)) for kind in kinds}
