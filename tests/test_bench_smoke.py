"""The benchmark runs end to end on a tiny input; its figures are not checked (speed lives in `make bench`)."""

from __future__ import annotations

import io
from pathlib import Path

from tests.bench.run import main

STAGES = (
    "count tokens (cl100k_base), demo lines",
    "count tokens (cl100k_base), demo words",
    "queue cycles for 3,000 lines at tier 1",
    "seed store (put_receipts)",
    "find receipts (store.unembedded_receipts)",
    "read items (store.receipt_items + merchant_name)",
    "format requests (line_requests)",
    "write request + manifest files",
    "claim (store.claim, NONE -> PENDING)",
    "prepare (Pipeline.prepare: find+claim+format+write)",
    "provider stand-in output",
    "parse base64 (iter_results), best of 2",
    "parse float lists (iter_results",
    "ingest (Pipeline.ingest",
    "delta write (DeltaWriter, Parquet)",
    "compaction (Compactor.run",
    "compaction: snapshot archive + sha256",
    "raw chroma add (fresh PersistentClient",
    "compaction / raw add",
    "peak RSS iter_results, 100 results",
    "peak RSS iter_results, 300 results",
    "peak RSS Pipeline.ingest, 300 results",
    "verdict:",
)


def test_bench_runs_every_stage_on_a_tiny_input(tmp_path: Path) -> None:
    out = io.StringIO()
    code = main(
        ["--lines", "300", "--dims", "64", "--out", str(tmp_path), "--compact-lines", "300",
         "--float-results", "200", "--memory-sizes", "100,300", "--token-lines", "3000"],
        out=out,
    )
    text = out.getvalue()
    assert code == 0
    missing = [stage for stage in STAGES if stage not in text]
    assert not missing, f"stages missing from the bench output: {missing}\n{text}"
    for target in ("parse base64 >= 25,000 vectors/s", "compaction >= 0.9 x raw Chroma add",
                   "iter_results peak memory flat", "Pipeline.ingest peak memory flat"):
        assert target in text.split("verdict:")[1]
    assert not (tmp_path / "work").exists(), "the bench leaves no work files behind unless --keep"
