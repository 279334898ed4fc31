"""`receipt-embeddings`: seed, import, run, search and inspect the pipeline.

Every command reads the same environment as the Dagster code location, and
`run` drives the same definitions on the same instance, so what it does shows
up in the UI.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from embedding_assets.cli.commands_aws import cmd_aws_create_buckets, cmd_aws_create_table
from embedding_assets.cli.commands_data import cmd_import, cmd_seed
from embedding_assets.cli.commands_estimate import cmd_estimate
from embedding_assets.cli.commands_inspect import cmd_cost, cmd_search, cmd_status
from embedding_assets.cli.commands_lifecycle import (
    cmd_batches_cancel,
    cmd_receipts_delete,
    cmd_receipts_set_text,
    cmd_reconcile,
    cmd_retry_failed,
)
from embedding_assets.cli.commands_pipeline import cmd_reembed, cmd_run
from embedding_assets.cli.common import KIND_CHOICES
from embedding_assets.cli.errors import EXIT_USAGE, explain
from embedding_assets.cli.versions import add_version_commands
from embedding_assets.domain.settings import Settings


def _ensure_dagster_home() -> None:
    """The same instance as `make dev`, with telemetry off, created on first use."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").absolute())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="receipt-embeddings", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="demo data").add_subparsers(dest="demo_command", required=True)
    seed = demo.add_parser("seed", help="write deterministic synthetic receipts into the store")
    seed.add_argument("--receipts", type=int, default=200, help="how many receipts to add, new to the store")
    seed.add_argument("--seed", type=int, default=7)
    seed.add_argument("--if-empty", action="store_true", help="do nothing when the store already holds receipts")
    seed.set_defaults(func=cmd_seed)

    imp = sub.add_parser("import", help="import receipts from JSON or NDJSON (docs/IMPORT_FORMAT.md)")
    imp.add_argument("path")
    imp.set_defaults(func=cmd_import)

    run = sub.add_parser("run", help="run the pipeline to completion in process")
    run.add_argument("--kind", choices=(*KIND_CHOICES, "all"), default="lines")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up on pending items")
    run.add_argument("--json", action="store_true")
    run.add_argument("--deployment", metavar="URL", nargs="?", const="",
                     help="launch on a deployed Dagster (its webserver; default DAGSTER_WEBSERVER_URL) and follow "
                          "the runs its sensors start")
    run.set_defaults(func=cmd_run)

    search = sub.add_parser("search", help="best matching items from the latest snapshot")
    search.add_argument("text")
    search.add_argument("--kind", choices=(*KIND_CHOICES, "all"), default="lines")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--mode", choices=("hybrid", "vector", "lexical"), default="hybrid",
                        help="vector and lexical rankings fused (default), or either alone")
    search.add_argument("--merchant", help="only this merchant (case-insensitive)")
    search.add_argument("--receipt", metavar="IMAGE_ID:RECEIPT_ID", help="only inside this receipt")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    status = sub.add_parser("status", help="items by status, batches by stage, snapshot per kind")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    cost = sub.add_parser("cost", help="embedding cost per receipt, from the provider's usage")
    cost.add_argument("--receipt", metavar="IMAGE_ID:RECEIPT_ID", help="only this receipt")
    cost.add_argument("--top", type=int, default=10, metavar="N", help="the N costliest receipts (0: all)")
    cost.add_argument("--json", action="store_true")
    cost.set_defaults(func=cmd_cost)

    estimate = sub.add_parser("estimate", help="tokens and USD the next run (or a re-embed) would send; sends nothing")
    estimate.add_argument("--kind", choices=(*KIND_CHOICES, "all"), default="all")
    estimate.add_argument("--reembed", action="store_true",
                          help="as if every embedded item were sent again with the configured model")
    estimate.add_argument("--json", action="store_true")
    estimate.set_defaults(func=cmd_estimate)

    batches = sub.add_parser("batches", help="provider batches").add_subparsers(dest="batches_command", required=True)
    cancel = batches.add_parser("cancel", help="cancel in-flight batches; what finished is kept, the rest released")
    cancel.add_argument("batch_id", nargs="?", metavar="BATCH_ID")
    cancel.add_argument("--all", action="store_true", help="every in-flight batch of every kind")
    cancel.set_defaults(func=cmd_batches_cancel)
    _add_lifecycle_commands(sub)
    add_version_commands(sub)
    _add_aws_commands(sub)
    return parser


def _add_lifecycle_commands(sub: argparse._SubParsersAction) -> None:
    reembed = sub.add_parser(
        "reembed", help="re-embed with the configured model into a new collection; search switches when it is complete")
    reembed.add_argument("--kind", choices=(*KIND_CHOICES, "all"), default="lines")
    reembed.add_argument("--no-run", action="store_true", help="only start it; leave the work to the sensors")
    reembed.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up on pending items")
    reembed.add_argument("--json", action="store_true")
    reembed.set_defaults(func=cmd_reembed)

    reconcile = sub.add_parser("reconcile", help=(
        "compare every vector with every item now (the daily job): remove vectors of items gone, resend items "
        "without one; exit 1 when anything needed repair"))
    reconcile.add_argument("--kind", choices=(*KIND_CHOICES, "all"), default="all")
    reconcile.set_defaults(func=cmd_reconcile)

    retry = sub.add_parser("retry-failed", help="send FAILED items (dead letters) back to NONE")
    retry.add_argument("--kind", choices=(*KIND_CHOICES, "all"), default="all")
    retry.set_defaults(func=cmd_retry_failed)

    receipts = sub.add_parser("receipts", help="edit receipts").add_subparsers(dest="receipts_command", required=True)
    delete = receipts.add_parser("delete", help="delete a receipt; its vectors go at the next compaction")
    delete.add_argument("receipt", metavar="IMAGE_ID:RECEIPT_ID")
    delete.set_defaults(func=cmd_receipts_delete)
    set_text = receipts.add_parser("set-text", help="correct a line's or word's text; it is embedded again")
    set_text.add_argument("item_id", metavar="ITEM_ID", help="IMAGE#...#RECEIPT#00001#LINE#00003[#WORD#00000]")
    set_text.add_argument("text")
    set_text.set_defaults(func=cmd_receipts_set_text)


def _add_aws_commands(sub: argparse._SubParsersAction) -> None:
    aws = sub.add_parser("aws", help="set up DynamoDB and S3 for the AWS backends").add_subparsers(
        dest="aws_command", required=True)
    table = aws.add_parser("create-table", help="create a DynamoDB table in the seed system's layout")
    table.add_argument("--table", help="table name (default: DYNAMODB_TABLE_NAME)")
    table.set_defaults(func=cmd_aws_create_table)
    buckets = aws.add_parser("create-buckets", help="create the S3 buckets for request files and for Chroma")
    buckets.add_argument("--requests-bucket", help="request files (default: S3_BUCKET)")
    buckets.add_argument("--chroma-bucket", help="deltas and snapshots (default: CHROMADB_BUCKET)")
    buckets.set_defaults(func=cmd_aws_create_buckets)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _ensure_dagster_home()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "k", 1) < 1 or getattr(args, "receipts", 1) < 1:
        print("-k and --receipts must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args, Settings.from_env())
    except (Exception, KeyboardInterrupt) as exc:
        known = explain(exc)
        if known is None:
            raise
        print(known[1], file=sys.stderr)
        return known[0]


if __name__ == "__main__":
    sys.exit(main())
