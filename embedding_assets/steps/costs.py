"""What each receipt cost, from the tokens its requests used.

A batch's cost comes from the provider's usage; splitting it over receipts
needs each request's tokens, which only the result lines carry. So ingest
writes a small usage object per batch beside its request file
(`batches/{kind}/{batch_id}.usage.json`): tokens and requests per receipt,
with the batch's model, tokens and cost. A receipt's share of a batch is in
proportion to its tokens (to its requests when the lines report no usage),
so receipt costs add up to batch costs, whatever the per-line counts say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from embedding_assets.domain.models import BatchRecord, Stage, parse_item_key
from embedding_assets.domain.ports import ObjectNotFound, ObjectStore, ReceiptStore

INGESTED = (Stage.DELTA_READY, Stage.COMPACTED)


def usage_key(kind: str, batch_id: str) -> str:
    return f"batches/{kind}/{batch_id}.usage.json"


@dataclass
class UsageTally:
    """Tokens and answered requests per receipt, as result lines come in."""

    receipts: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    def add(self, custom_id: str, tokens: int) -> None:
        parts = parse_item_key(custom_id)
        entry = self.receipts.setdefault((parts["image_id"], parts["receipt_id"]), [0, 0])
        entry[0] += tokens
        entry[1] += 1


def write_usage(objects: ObjectStore, record: BatchRecord, model: str, tokens: int, cost_usd: float,
                tally: UsageTally) -> None:
    """Overwritten whole on a re-ingest, so a crash and retry never counts a receipt twice."""
    objects.put_bytes(usage_key(record.kind, record.batch_id), orjson.dumps({
        "batch_id": record.batch_id, "model": model, "prompt_tokens": tokens, "cost_usd": cost_usd,
        "receipts": [[image_id, receipt_id, t, r] for (image_id, receipt_id), (t, r) in sorted(tally.receipts.items())],
    }))


@dataclass
class ReceiptCost:
    image_id: str
    receipt_id: int
    prompt_tokens: float = 0.0
    cost_usd: float = 0.0
    batches: int = 0
    cost_by_kind: dict[str, float] = field(default_factory=dict)


@dataclass
class CostReport:
    receipts: list[ReceiptCost]
    prompt_tokens: int = 0
    cost_usd: float = 0.0
    batches: int = 0
    # Cost of ingested batches with no usage object (ingested before it existed, or lost): not split by receipt.
    unattributed_usd: float = 0.0


def receipt_costs(store: ReceiptStore, objects: ObjectStore, kinds: Iterable[str],
                  receipt: tuple[str, int] | None = None) -> CostReport:
    """Cost per receipt over every ingested batch of `kinds`, or of one receipt."""
    costs: dict[tuple[str, int], ReceiptCost] = {}
    report = CostReport([])
    for kind in kinds:
        for record in store.list_batches(kind, INGESTED):
            if receipt is not None and receipt not in {(image_id, int(rid)) for image_id, rid in record.receipt_refs}:
                continue
            report.batches += 1
            report.prompt_tokens += record.prompt_tokens
            report.cost_usd += record.cost_usd
            try:
                usage = orjson.loads(objects.get_bytes(usage_key(kind, record.batch_id)))
            except ObjectNotFound:
                report.unattributed_usd += record.cost_usd
                continue
            _share(kind, usage, costs, receipt)
    if receipt is not None:
        # Only this receipt's share of the batches it was in.
        mine = costs.get(receipt)
        report.prompt_tokens = round(mine.prompt_tokens) if mine else 0
        report.cost_usd = mine.cost_usd if mine else 0.0
        report.unattributed_usd = 0.0
    report.cost_usd = round(report.cost_usd, 8)
    report.receipts = [_rounded(costs[key]) for key in sorted(costs)]
    return report


def _share(kind: str, usage: dict, costs: dict[tuple[str, int], ReceiptCost], only: tuple[str, int] | None) -> None:
    rows = usage["receipts"]
    by_tokens = sum(row[2] for row in rows) > 0
    total = sum(row[2] if by_tokens else row[3] for row in rows)
    for image_id, receipt_id, tokens, requests in rows:
        key = (image_id, receipt_id)
        if only is not None and key != only or not total:
            continue
        weight = (tokens if by_tokens else requests) / total
        cost = costs.setdefault(key, ReceiptCost(image_id, receipt_id))
        cost.prompt_tokens += usage["prompt_tokens"] * weight
        cost.cost_usd += usage["cost_usd"] * weight
        cost.batches += 1
        cost.cost_by_kind[kind] = cost.cost_by_kind.get(kind, 0.0) + usage["cost_usd"] * weight


def _rounded(cost: ReceiptCost) -> ReceiptCost:
    cost.prompt_tokens = round(cost.prompt_tokens)
    cost.cost_usd = round(cost.cost_usd, 8)
    cost.cost_by_kind = {k: round(v, 8) for k, v in cost.cost_by_kind.items()}
    return cost
