"""Token figures for `make bench`: byte estimates against cl100k_base counts, and what they do to the queue.

1. On the demo set (`demo seed`: 200 receipts, seed 7), lines and words as
   they are sent: UTF-8 bytes (the old estimate) against exact cl100k_base
   tokens, the ratio, and the counting speed.
2. Batch cycles for `--token-lines` lines (default 1,000,000) at tier 1 (a
   3,000,000-token enqueued limit): the same requests packed into files
   under the same budget, counted as bytes (before) and as tokens (after),
   then `queue_cycles` over the files. Receipts are generated and formatted
   a thousand at a time, so memory stays flat whatever the count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from embedding_assets.data.demo import generate_receipts
from embedding_assets.domain import openai_models
from embedding_assets.domain.batching import Budget, plan_files, queue_cycles
from embedding_assets.domain.formatting import ReceiptRequests, line_requests, word_requests
from embedding_assets.domain.tokens import cl100k

TIER_1 = openai_models.DEFAULT_ENQUEUED_TOKENS[openai_models.DEFAULT_MODEL]


def _fit(text: str) -> Any:
    return cl100k().fit(text, openai_models.MAX_INPUT_TOKENS)


def bench_tokens(report: Any, token_lines: int) -> None:
    receipts = generate_receipts(200, seed=7)
    for kind, build in (("lines", line_requests), ("words", word_requests)):
        inputs = [r.input for receipt in receipts for r in build(getattr(receipt, kind), receipt.merchant_name,
                                                                 _fit).requests]
        size = sum(len(text.encode()) for text in inputs)
        started = time.perf_counter()
        counted = sum(cl100k().count(text) for text in inputs)
        seconds = time.perf_counter() - started
        report.row(f"count tokens (cl100k_base), demo {kind}", len(inputs), "inputs", seconds,
                   rate=f"{len(inputs) / seconds:,.0f} inputs/s; {size:,} bytes vs {counted:,} tokens: "
                        f"bytes overcount {size / counted:.2f}x")

    cycles = {"bytes": 0, "tokens": 0}
    totals = {"bytes": 0, "tokens": 0}
    started = time.perf_counter()
    for name in cycles:
        files = [planned.tokens for planned in plan_files(_line_requests(token_lines, name == "bytes"),
                                                            Budget(max_tokens=TIER_1), openai_models.DEFAULT_MODEL,
                                                            None, [])]
        cycles[name], totals[name] = queue_cycles(files, TIER_1), sum(files)
    seconds = time.perf_counter() - started
    report.row(f"queue cycles for {token_lines:,} lines at tier 1 ({TIER_1:,} tokens)", token_lines, "lines",
               seconds, rate=f"before (bytes) {cycles['bytes']} cycles for ~{totals['bytes']:,} tokens, "
                             f"after (exact) {cycles['tokens']} cycles for {totals['tokens']:,} tokens: "
                             f"{cycles['bytes'] / max(1, cycles['tokens']):.2f}x fewer")


def _line_requests(n_lines: int, as_bytes: bool) -> Iterator[ReceiptRequests]:
    """Demo receipts' line requests, `n_lines` lines in all; with `as_bytes`, each counted as its UTF-8 bytes."""
    seed, left = 1000, n_lines
    while left > 0:
        for receipt in generate_receipts(1000, seed=seed):
            lines = receipt.lines[:left]
            left -= len(lines)
            built = line_requests(lines, receipt.merchant_name, _fit)
            if as_bytes:
                built.requests = [replace(r, tokens=len(r.input.encode())) for r in built.requests]
            yield built
            if left <= 0:
                return
        seed += 1
