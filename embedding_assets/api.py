"""The Python entry points behind the CLI, for notebooks and services."""

from __future__ import annotations

from typing import Any

from resources.configurable import Runtime

from .config import Settings
from .search import Hit, search
from .status import kind_status


def open_runtime(settings: Settings | None = None) -> Runtime:
    return Runtime.from_settings(settings or Settings.from_env())


def search_receipts(
    text: str, kind: str = "lines", k: int = 5, merchant: str | None = None, runtime: Runtime | None = None
) -> list[Hit]:
    """Nearest lines (or words) to `text` in the latest published snapshot."""
    runtime = runtime or open_runtime()
    return search(runtime.snapshots(kind), runtime.provider, text, k, merchant)


def pipeline_status(kinds: tuple[str, ...] = ("lines",), runtime: Runtime | None = None) -> dict[str, Any]:
    runtime = runtime or open_runtime()
    return {kind: kind_status(runtime.store, runtime.snapshots(kind)) for kind in kinds}
