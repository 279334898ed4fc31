"""`demo seed` and `import`: receipts into the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedding_assets.domain.settings import Settings


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime
    from embedding_assets.data.demo import generate_receipts

    runtime = open_runtime(settings)
    existing = runtime.store.receipt_count()
    if args.if_empty and existing:
        print(f"store already holds {existing} receipts: not seeding")
        return 0
    receipts = generate_receipts(args.receipts, seed=args.seed)
    written = runtime.store.put_receipts(receipts)
    lines = sum(len(r.lines) for r in receipts)
    words = sum(len(r.words) for r in receipts)
    store = f"DynamoDB table {settings.dynamodb_table}" if settings.dynamodb_table else settings.sqlite_path
    print(f"seeded {written} demo receipts ({lines} lines, {words} words) into {store}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime
    from embedding_assets.data.importer import ReceiptImportError, load_receipts

    try:
        receipts = load_receipts(Path(args.path))
    except (ReceiptImportError, OSError) as exc:
        print(f"import failed, nothing written: {exc}", file=sys.stderr)
        return 2
    written = open_runtime(settings).store.put_receipts(receipts)
    print(f"imported {written} receipts ({sum(len(r.lines) for r in receipts)} lines) from {args.path}")
    return 0
