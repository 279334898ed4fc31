"""estimate: what the next run, or a re-embed, would send and cost, before anything is claimed or sent.

It builds every request the way `prepare` does (same rows, same cut, same
token count), packs them into files under the same budget, and adds the
batches already PREPARED, which go first. Nothing is written: noise is not
marked, nothing is claimed, the provider is not asked. The queue cycles are
how many times the enqueued-token limit must fill and drain to take it all.

`backlog` is the cheap figure a prepare leaves on its asset: the PREPARED
batches at their exact tokens, plus the items still unclaimed at the same
mean tokens per item (counting those exactly would mean reading them all on
every run).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from embedding_assets.domain.batching import plan_files, queue_cycles
from embedding_assets.domain.formatting import ReceiptRequests
from embedding_assets.domain.models import Stage, Status, receipt_key
from embedding_assets.domain.ports import VectorLine
from embedding_assets.domain.pricing import batch_cost
from embedding_assets.steps.consistency import item_keys_in
from embedding_assets.steps.parts import StepParts
from embedding_assets.steps.prepare import receipt_requests

_RECEIPT_PAGE = 200


@dataclass
class Estimate:
    kind: str
    model: str
    reembed: bool
    receipts: int = 0
    items: int = 0
    requests: int = 0
    batches: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    queue_cycles: int = 0
    enqueued_token_limit: int | None = None
    # Batches already PREPARED (claimed, not yet sent): counted in every total above.
    prepared_batches: int = 0
    truncated: int = 0
    oversized_receipts: int = 0


@dataclass
class Backlog:
    items: int
    tokens: int
    cost_usd: float

    def describe(self) -> str:
        return f"backlog: {self.items} items, ~{self.tokens} tokens, ~${self.cost_usd:.4f}"


def estimate(parts: StepParts, kind: str, reembed: bool = False, held: frozenset[str] = frozenset()) -> Estimate:
    """The whole backlog of `kind`; with `reembed`, as if every embedded item not in `held` were sent again."""
    provider = parts.provider
    assert parts.budget is not None
    out = Estimate(kind, provider.model, reembed, enqueued_token_limit=provider.enqueued_token_limit)
    prepared = parts.store.list_batches(kind, [Stage.PREPARED])
    file_tokens = [record.estimated_tokens for record in prepared]
    out.prepared_batches = len(prepared)
    out.items = sum(r.item_count for r in prepared)
    out.requests = sum(r.request_count for r in prepared)
    oversized: list[tuple[ReceiptRequests, str]] = []
    for planned in plan_files(_receipts(parts, kind, reembed, held, out), parts.budget, provider.model,
                              provider.request_dimensions, oversized):
        file_tokens.append(planned.tokens)
        out.items += sum(len(r.item_keys) for receipt in planned.receipts for r in receipt.requests)
        out.requests += planned.request_count
    out.oversized_receipts = len(oversized)
    out.batches = len(file_tokens)
    out.tokens = sum(file_tokens)
    out.cost_usd = batch_cost(provider.model, out.tokens, parts.settings.prices)
    out.queue_cycles = queue_cycles(file_tokens, provider.enqueued_token_limit)
    return out


def reembed_held(line: VectorLine, model: str, dimensions: int | None) -> frozenset[str]:
    """Items a resumed re-embed to `model` would not send again: the NEXT collection already holds them."""
    nxt = line.next_line()
    pending = nxt.latest()
    if pending is None or pending.model != model or int(pending.dimensions or 0) != int(dimensions or 0):
        return frozenset()
    return frozenset(item_keys_in(nxt))


def backlog(parts: StepParts, kind: str) -> Backlog:
    """What still waits to be sent once a prepare is done (see the module docstring)."""
    prepared = parts.store.list_batches(kind, [Stage.PREPARED])
    items = sum(r.item_count for r in prepared)
    tokens = sum(r.estimated_tokens for r in prepared)
    unclaimed = parts.store.status_counts(kind).get(Status.NONE.value, 0)
    if unclaimed and items:
        tokens += round(unclaimed * tokens / items)
    elif unclaimed:  # nothing prepared to go by: what is left is what prepare could not take, so it is small
        counted = estimate(parts, kind)
        tokens += counted.tokens
        unclaimed = counted.items
    items += unclaimed
    return Backlog(items, tokens, batch_cost(parts.provider.model, tokens, parts.settings.prices))


def _receipts(parts: StepParts, kind: str, reembed: bool, held: frozenset[str], out: Estimate,
              ) -> Iterator[ReceiptRequests]:
    store = parts.store
    for image_id, receipt_id in _receipt_ids(parts, kind, reembed):
        items = store.receipt_items(kind, image_id, receipt_id)
        if reembed:
            items = [replace(it, status=Status.NONE) if it.status == Status.SUCCESS and it.key not in held else it
                     for it in items]
        built = receipt_requests(parts, kind, items, store.merchant_name(image_id, receipt_id))
        out.receipts += bool(built.requests)
        out.truncated += sum(r.truncated for r in built.requests)
        yield built


def _receipt_ids(parts: StepParts, kind: str, reembed: bool) -> Iterator[tuple[str, int]]:
    """Receipts holding unembedded items, in key order; with `reembed`, those holding embedded ones too."""
    store = parts.store
    ids: set[tuple[str, int]] = set()
    after: str | None = None
    while page := store.unembedded_receipts(kind, _RECEIPT_PAGE, after):
        if reembed:
            ids.update(page)
        else:
            yield from page
        after = receipt_key(*page[-1])
    if reembed:
        ids.update((item.image_id, item.receipt_id) for item in store.items_with_status(kind, Status.SUCCESS.value))
        yield from sorted(ids)
