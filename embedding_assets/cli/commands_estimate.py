"""`receipt-embeddings estimate`: the bill before it is run up.

What the next run (or, with `--reembed`, a re-embed with the configured model)
would send: items, requests, batches, exact tokens, USD at the batch price and
the queue cycles the enqueued-token limit implies. Nothing is claimed or sent.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from embedding_assets.cli.common import KIND_CHOICES, print_json
from embedding_assets.domain.settings import Settings
from embedding_assets.domain.tokens import EncodingFileError


def cmd_estimate(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime

    runtime = open_runtime(settings)
    try:
        kinds = KIND_CHOICES if args.kind == "all" else (args.kind,)
        estimates = [runtime.estimate(kind, args.reembed) for kind in kinds]
    except EncodingFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        print_json([asdict(e) for e in estimates])
        return 0
    what = "a re-embed" if args.reembed else "the next run"
    for e in estimates:
        limit = f"the {e.enqueued_token_limit:,}-token enqueued limit" if e.enqueued_token_limit else "no queue limit"
        print(f"[{e.kind}] {what} sends {_n(e.items, e.kind[:-1])} in {_n(e.requests, 'request')} and "
              f"{_n(e.batches, 'batch')}: {_n(e.tokens, 'token')}, ${e.cost_usd:.6f} at the batch price of "
              f"{e.model}; {_n(e.queue_cycles, 'queue cycle')} at {limit}")
        notes = [f"{_n(e.prepared_batches, 'batch')} already prepared" if e.prepared_batches else "",
                 f"{_n(e.truncated, 'input')} cut to the model's input limit" if e.truncated else "",
                 f"{_n(e.oversized_receipts, 'receipt')} too large for one batch, not sent" if e.oversized_receipts
                 else ""]
        if any(notes):
            print(f"[{e.kind}] " + "; ".join(n for n in notes if n))
    if len(estimates) > 1:
        print(f"total: {sum(e.tokens for e in estimates):,} tokens, ${sum(e.cost_usd for e in estimates):.6f}")
    return 0


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "es" if noun.endswith("ch") else "s")
