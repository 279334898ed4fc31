"""What a batch costs, from the tokens the provider reports.

Batch-tier prices (USD per million input tokens, half the synchronous price).
The table is a default, not a fact about a user's contract; `PRICE_PER_MTOK`
can be replaced by the caller.
"""

from __future__ import annotations

PRICE_PER_MTOK: dict[str, float] = {
    "text-embedding-3-small": 0.01,
    "text-embedding-3-large": 0.065,
    "text-embedding-ada-002": 0.05,
}


def batch_cost(model: str, prompt_tokens: int, prices: dict[str, float] | None = None) -> float:
    """Cost in USD; an unknown model (the offline one) costs nothing."""
    table = PRICE_PER_MTOK if prices is None else prices
    return round(prompt_tokens * table.get(model, 0.0) / 1_000_000, 8)
