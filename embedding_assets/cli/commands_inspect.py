"""`search`, `status` and `cost`: what the pipeline answers, where it stands and what it spent."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from embedding_assets.cli.common import print_json
from embedding_assets.cli.errors import EXIT_FAILED, EXIT_USAGE
from embedding_assets.domain.models import KINDS
from embedding_assets.domain.settings import Settings

if TYPE_CHECKING:
    from embedding_assets.wiring import Runtime


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime, search_receipts

    try:  # NoSnapshot is told and exits 1 through cli.errors, as for every command
        runtime = open_runtime(settings)
        hits = search_receipts(args.text, args.kind, args.k, args.merchant, runtime, args.mode, args.receipt)
    except ValueError as exc:
        print(f"search: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json([asdict(h) for h in hits])
        return 0
    filters = "".join(f", {name} {value!r}" for name, value in (("merchant", args.merchant),
                                                                 ("receipt", args.receipt)) if value)
    if not hits:
        print(f"no {args.kind} match {args.text!r} ({args.mode}{filters})")
        return 0
    print(f"best {args.kind} for {args.text!r} ({args.mode}{filters}):")
    if args.kind == "all":
        print(_answered_from(runtime))
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>2}. {hit.score:.3f}  {hit.text!r}  [{hit.merchant_name or '?'}] "
              f"receipt {hit.image_id}:{hit.receipt_id}  {hit.id.rsplit('#', 2)[-2].lower()}")
    return 0


def _answered_from(runtime: Runtime) -> str:
    """With --kind all, which kinds' snapshots answered and which had nothing to search."""
    empty = [kind for kind in KINDS if runtime.vectors(kind).latest() is None]
    answered = ", ".join(kind for kind in KINDS if kind not in empty)
    missing = f"; {', '.join(empty)}: no snapshot yet, nothing searched" if empty else ""
    return f"(answered from {answered}{missing})"


def _snapshot_line(kind: str, s: dict[str, Any]) -> str:
    money = f"{s['prompt_tokens']} tokens, ${s['cost_usd']:.6f}"
    if s["snapshot_version"] is None:
        return f"{kind}: no snapshot yet (nothing published; `run` embeds and publishes); {money}"
    return (f"{kind}: snapshot v{s['snapshot_version']} ({s['model']}, {s['dimensions'] or 'native'} dimensions, "
            f"recipe {s['recipe']}) with {s['vectors']} vectors; {money}")


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime, pipeline_status

    status = pipeline_status(KINDS, open_runtime(settings))
    if args.json:
        print_json(status)
        return 0
    for kind, s in status.items():
        items = ", ".join(f"{k} {v}" for k, v in sorted(s["items"].items())) or "none"
        batches = ", ".join(f"{k} {v}" for k, v in sorted(s["batches"].items())) or "none"
        print(f"{kind}: items: {items}")
        print(f"{kind}: batches: {batches}; deltas waiting: {s['deltas_waiting']}")
        print(_snapshot_line(kind, s))
        if s["reembed"]:
            r = s["reembed"]
            built = f"v{r['next_version']} with {r['next_vectors']} vectors" if r["next_version"] else "nothing yet"
            print(f"{kind}: re-embedding with {r['to_model']} ({r['to_dimensions'] or 'native'} dimensions, "
                  f"recipe {r['to_recipe']}): built "
                  f"{built}; {r['waiting']} {kind} still to re-embed "
                  f"before search switches from v{r['serving_version']}")
        for batch_id, reason in s["stuck"].items():
            print(f"{kind}: batch {batch_id} {reason} (cancel it with `batches cancel {batch_id}`)")
        for batch_id, reason in s["reaped"].items():
            print(f"{kind}: batch {batch_id} {reason}")
        for key, error in s["failed"].items():
            print(f"{kind}: FAILED {key}: {error} (send back with `retry-failed --kind {kind}`)")
    print(f"total: {sum(s['prompt_tokens'] for s in status.values())} tokens, "
          f"${sum(s['cost_usd'] for s in status.values()):.6f}")
    return 0


def cmd_cost(args: argparse.Namespace, settings: Settings) -> int:
    """Totals first; then the costliest receipts, most first, `--top` of them."""
    from embedding_assets.api import open_runtime
    from embedding_assets.steps.costs import receipt_costs

    receipt = None
    if args.receipt:
        image_id, sep, receipt_id = args.receipt.rpartition(":")
        if not sep or not image_id or not receipt_id.isdigit():
            print(f"--receipt {args.receipt!r}: expected IMAGE_ID:RECEIPT_ID", file=sys.stderr)
            return EXIT_USAGE
        receipt = (image_id, int(receipt_id))
    runtime = open_runtime(settings)
    if receipt and not any(runtime.store.receipt_items(kind, *receipt) for kind in KINDS):
        print(f"no receipt {args.receipt} in the store", file=sys.stderr)
        return EXIT_FAILED
    report = receipt_costs(runtime.store, runtime.objects, KINDS, receipt)
    report.receipts.sort(key=lambda r: (-r.cost_usd, -r.prompt_tokens, r.image_id, r.receipt_id))
    if args.json:
        print_json(asdict(report))
        return 0
    unsplit = f"; ${report.unattributed_usd:.6f} not split by receipt" if report.unattributed_usd else ""
    print(f"{'receipt ' + args.receipt if receipt else 'total'}: {report.prompt_tokens} tokens, "
          f"${report.cost_usd:.6f} over {report.batches} batches{unsplit}")
    model = runtime.provider.model
    if not settings.batch_prices.get(model, 0.0):
        print(f"the {runtime.provider.name} provider's model {model} is free: the tokens are counted, nothing is "
              "charged")
    shown = report.receipts if receipt or args.top == 0 else report.receipts[:args.top]
    if not receipt and shown:
        more = f" (of {len(report.receipts)}; --top N for more)" if len(shown) < len(report.receipts) else ""
        print(f"costliest receipts{more}:")
    for r in shown:
        kinds = ", ".join(f"{kind} ${usd:.6f}" for kind, usd in sorted(r.cost_by_kind.items()))
        print(f"  {r.image_id}:{r.receipt_id}  {r.prompt_tokens} tokens  ${r.cost_usd:.6f}  "
              f"({kinds}; {r.batches} batches)")
    return 0
