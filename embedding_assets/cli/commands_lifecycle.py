"""`batches cancel`, `retry-failed` and `receipts delete|set-text`: an operator's corrections."""

from __future__ import annotations

import argparse
import sys

from embedding_assets.cli.common import KIND_CHOICES
from embedding_assets.domain.settings import Settings


def cmd_batches_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime
    from embedding_assets.domain.models import PROVIDER_LIVE

    if bool(args.batch_id) == bool(args.all):
        print("give one BATCH_ID or --all", file=sys.stderr)
        return 2
    runtime = open_runtime(settings)
    ids = [args.batch_id] if args.batch_id else [
        r.batch_id for kind in KIND_CHOICES for r in runtime.store.list_batches(kind, PROVIDER_LIVE)]
    if not ids:
        print("no batch in flight")
        return 0
    failures = 0
    for batch_id in ids:
        try:
            record = runtime.pipeline.cancel(batch_id)
        except Exception as exc:  # one batch the provider will not cancel must not stop the others
            print(f"{batch_id}: not cancelled: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            failures += 1
            continue
        print(f"{batch_id}: {record.stage.value} (provider batch {record.provider_batch_id})")
    if failures < len(ids):
        print("what finished is kept and the rest released once the batch status sensor (or `run`) ingests them")
    return 1 if failures else 0


def cmd_retry_failed(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime

    store = open_runtime(settings).store
    for kind in KIND_CHOICES if args.kind == "all" else (args.kind,):
        print(f"{kind}: {store.retry_failed(kind)} FAILED items sent back to NONE")
    return 0


def cmd_receipts_delete(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime

    image_id, _, receipt_id = args.receipt.rpartition(":")
    if not image_id or not receipt_id.isdigit():
        print(f"expected IMAGE_ID:RECEIPT_ID, got {args.receipt!r}", file=sys.stderr)
        return 2
    store = open_runtime(settings).store
    # A receipt without items deletes 0 items, as one that is not there does: only then are receipts counted
    # (a whole index read on DynamoDB) to tell the two apart.
    empty = not any(store.receipt_items(kind, image_id, int(receipt_id)) for kind in KIND_CHOICES)
    before = store.receipt_count() if empty else None
    removed = store.delete_receipt(image_id, int(receipt_id))
    if before is not None and store.receipt_count() == before:
        print(f"no such receipt: {args.receipt}", file=sys.stderr)
        return 1
    print(f"deleted receipt {args.receipt} ({removed} lines and words); its vectors go at the next compaction")
    return 0


def cmd_receipts_set_text(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime
    from embedding_assets.domain.models import parse_item_key

    try:
        kind = "words" if "word_id" in parse_item_key(args.item_id) else "lines"
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not open_runtime(settings).store.set_text(kind, args.item_id, args.text):
        print(f"no such {kind[:-1]}: {args.item_id}", file=sys.stderr)
        return 1
    print(f"{args.item_id}: text set; it is embedded again at the next run")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Every vector against every item: what the daily reconcile job does, now."""
    from embedding_assets.api import open_runtime
    from embedding_assets.steps.reconcile import reconcile

    runtime = open_runtime(settings)
    steps = runtime.tuning.steps
    dirty = False
    for kind in KIND_CHOICES if args.kind == "all" else (args.kind,):
        report = reconcile(runtime.store, runtime.vectors(kind), steps.lock_ttl_seconds, steps.heartbeat_seconds,
                           runtime.tuning.chunk_size)
        print(f"{kind}: {report.vectors_before} vectors against {report.success_items} SUCCESS items: "
              f"{report.removed} vectors of missing items removed, {report.requeued} items without a vector "
              f"sent again ({report.seconds:.1f} s)")
        dirty = dirty or not report.clean
    return 1 if dirty else 0
