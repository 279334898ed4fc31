"""`demo seed` and `import`: receipts into the store.

`demo seed --receipts N` adds N receipts the store does not hold yet. The
generator is deterministic per seed, so seeding again with the same seed would
only rewrite the same receipts; instead it draws further receipts from the
same sequence until N new ones are found, and says how many it added and how
many were already there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedding_assets.cli.errors import EXIT_USAGE
from embedding_assets.domain.models import Receipt
from embedding_assets.domain.ports import ReceiptStore
from embedding_assets.domain.settings import Settings


def new_demo_receipts(store: ReceiptStore, wanted: int, seed: int) -> list[Receipt]:
    """`wanted` demo receipts of the seed's sequence that the store does not hold, in sequence order."""
    from embedding_assets.data.realistic import labelled_receipts

    drawn = store.receipt_count() + wanted
    while True:
        receipts = [receipt for receipt, _ in labelled_receipts(drawn, seed=seed)]
        new = [r for r in receipts if not store.receipt_items("lines", r.image_id, r.receipt_id)]
        if len(new) >= wanted:
            return new[:wanted]
        drawn += wanted - len(new) + 1


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime

    store = open_runtime(settings).store
    existing = store.receipt_count()
    if args.if_empty and existing:
        print(f"store already holds {existing} receipts: not seeding")
        return 0
    receipts = new_demo_receipts(store, args.receipts, args.seed)
    store.put_receipts(receipts)
    lines = sum(len(r.lines) for r in receipts)
    words = sum(len(r.words) for r in receipts)
    where = f"DynamoDB table {settings.dynamodb_table}" if settings.dynamodb_table else settings.sqlite_path
    print(f"added {len(receipts)} demo receipts ({lines} lines, {words} words) to {where}; "
          f"{existing} receipts already there left unchanged, {store.receipt_count()} in all")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime
    from embedding_assets.data.importer import ReceiptImportError, load_receipts

    try:
        receipts = load_receipts(Path(args.path))
    except ReceiptImportError as exc:
        if exc.bad_records == 1:
            print(f"import failed, nothing written: {exc}", file=sys.stderr)
            return EXIT_USAGE
        shown = f" (the first {len(exc.problems)})" if len(exc.problems) < exc.bad_records else ""
        print(f"import failed, nothing written: {exc.bad_records} bad records{shown}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"import failed, nothing written: {exc}", file=sys.stderr)
        return EXIT_USAGE
    written = open_runtime(settings).store.put_receipts(receipts)
    print(f"imported {written} receipts ({sum(len(r.lines) for r in receipts)} lines) from {args.path}")
    return 0
