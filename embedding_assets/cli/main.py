"""`receipt-embeddings`: seed, import, run, search and inspect the pipeline.

Every command reads the same environment as the Dagster code location, and
`run` drives the same definitions on the same instance, so what it does shows
up in the UI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from embedding_assets.domain.models import KINDS
from embedding_assets.domain.settings import ConfigError, Settings

KIND_CHOICES = KINDS


def _json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


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


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.deployment is not None:
        from embedding_assets.cli.deployment import run_deployment

        url = args.deployment or os.environ.get("DAGSTER_WEBSERVER_URL", "")
        if not url:
            print("--deployment needs a URL or DAGSTER_WEBSERVER_URL", file=sys.stderr)
            return 2
        return run_deployment(url, KIND_CHOICES if args.kind == "all" else (args.kind,), args.timeout)
    return _run_kinds(KIND_CHOICES if args.kind == "all" else (args.kind,), args, settings)


def _run_kinds(kinds: tuple[str, ...], args: argparse.Namespace, settings: Settings) -> int:
    from dagster import DagsterInstance

    from embedding_assets.api import open_runtime
    from embedding_assets.cli.run import RunFailed, run_kind
    from embedding_assets.definitions import KIND_DEFS, build_definitions
    from embedding_assets.domain.vectors import ModelMismatch

    defs = build_definitions(settings)
    runtime = open_runtime(settings)
    summaries = []
    with DagsterInstance.get() as instance:
        for kind in kinds:
            try:
                summary = run_kind(defs, KIND_DEFS[kind], runtime, instance, args.timeout,
                                   progress=(lambda _: None) if args.json else print)
            except RunFailed as exc:
                print(f"[{kind}] {exc}", file=sys.stderr)
                return 1
            except ModelMismatch as exc:
                print(exc, file=sys.stderr)
                return 2
            summaries.append(summary)
    if args.json:
        _json([asdict(s) for s in summaries])
    for s in summaries if not args.json else ():
        if s.nothing_to_do:
            print(f"[{s.kind}] nothing to embed: every {s.kind[:-1]} is already embedded, noise or failed "
                  f"(snapshot v{s.snapshot_version}, {s.vectors} vectors)")
        else:
            print(f"[{s.kind}] done: {s.embedded} {s.kind} embedded in {s.batches} batches, snapshot "
                  f"v{s.snapshot_version} ({s.vectors_of}) with {s.vectors} vectors, "
                  f"{s.noise} noise, {s.failed} failed, "
                  f"{s.seconds}s")
        if s.reembed_waiting:
            print(f"[{s.kind}] the re-embed is not complete yet: search answers from v{s.snapshot_version} "
                  f"({s.vectors_of}) until it is; `status` says what it waits for")
        if s.timed_out:
            print(f"[{s.kind}] timed out with {s.pending} items still PENDING", file=sys.stderr)
    return 3 if any(s.timed_out for s in summaries) else 0


def cmd_reembed(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime
    from embedding_assets.domain.vectors import ModelMismatch
    from embedding_assets.steps.reembed import NothingToReembed

    runtime = open_runtime(settings)
    started = []
    for kind in KIND_CHOICES if args.kind == "all" else (args.kind,):
        try:
            start = runtime.start_reembed(kind)
        except NothingToReembed as exc:
            print(f"[{kind}] nothing to re-embed: {exc}")
            continue
        except ModelMismatch as exc:
            print(exc, file=sys.stderr)
            return 2
        if start.abandoned:
            print(f"[{kind}] abandoned the re-embed to {start.abandoned}; search stays on {start.model}: "
                  f"{start.requeued} {kind} only the new collection held are sent again")
            started.append(kind)
            continue
        verb = "resuming the re-embed" if start.resumed else "re-embedding"
        print(f"[{kind}] {verb} with {start.model} ({start.dimensions or 'native'} dimensions) beside the serving "
              f"{start.serving_model} ({start.serving_dimensions or 'native'} dimensions): "
              f"{start.requeued} {kind} sent again; "
              f"search answers from the old collection until the new one holds every {kind[:-1]}")
        started.append(kind)
    if args.no_run or not started:
        if started:
            print("the sensors (or `receipt-embeddings run`) now embed them and switch when done")
        return 0
    return _run_kinds(tuple(started), args, settings)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime, search_receipts
    from embedding_assets.steps.search import NoSnapshot

    try:
        hits = search_receipts(args.text, args.kind, args.k, args.merchant, open_runtime(settings))
    except NoSnapshot as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.json:
        _json([asdict(h) for h in hits])
        return 0
    print(f"nearest {args.kind} to {args.text!r}:")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>2}. {hit.distance:.3f}  {hit.text!r}  [{hit.merchant_name or '?'}] "
              f"receipt {hit.image_id}/{hit.receipt_id}  {hit.id.rsplit('#', 2)[-2].lower()}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime, pipeline_status

    status = pipeline_status(KIND_CHOICES, open_runtime(settings))
    if args.json:
        _json(status)
        return 0
    for kind, s in status.items():
        items = ", ".join(f"{k} {v}" for k, v in sorted(s["items"].items())) or "none"
        batches = ", ".join(f"{k} {v}" for k, v in sorted(s["batches"].items())) or "none"
        print(f"{kind}: items: {items}")
        print(f"{kind}: batches: {batches}; deltas waiting: {s['deltas_waiting']}")
        print(f"{kind}: snapshot v{s['snapshot_version']} ({s['model']}, {s['dimensions']} dimensions) "
              f"with {s['vectors']} vectors; "
              f"{s['prompt_tokens']} tokens, ${s['cost_usd']:.6f}")
        if s["reembed"]:
            r = s["reembed"]
            built = f"v{r['next_version']} with {r['next_vectors']} vectors" if r["next_version"] else "nothing yet"
            print(f"{kind}: re-embedding with {r['to_model']} ({r['to_dimensions'] or 'native'} dimensions): built "
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
    from embedding_assets.api import open_runtime
    from embedding_assets.steps.costs import receipt_costs

    receipt = None
    if args.receipt:
        image_id, sep, receipt_id = args.receipt.rpartition(":")
        if not sep or not image_id or not receipt_id.isdigit():
            print(f"--receipt {args.receipt!r}: expected IMAGE_ID:RECEIPT_ID", file=sys.stderr)
            return 2
        receipt = (image_id, int(receipt_id))
    runtime = open_runtime(settings)
    if receipt and not any(runtime.store.receipt_items(kind, *receipt) for kind in KIND_CHOICES):
        print(f"no receipt {args.receipt} in the store", file=sys.stderr)
        return 1
    report = receipt_costs(runtime.store, runtime.objects, KIND_CHOICES, receipt)
    if args.json:
        _json(asdict(report))
        return 0
    for r in report.receipts:
        kinds = ", ".join(f"{kind} ${usd:.6f}" for kind, usd in sorted(r.cost_by_kind.items()))
        print(f"{r.image_id}:{r.receipt_id}  {r.prompt_tokens} tokens  ${r.cost_usd:.6f}  "
              f"({kinds}; {r.batches} batches)")
    unsplit = f"; ${report.unattributed_usd:.6f} not split by receipt" if report.unattributed_usd else ""
    print(f"{'receipt ' + args.receipt if receipt else 'total'}: {report.prompt_tokens} tokens, "
          f"${report.cost_usd:.6f} over {report.batches} batches{unsplit}")
    return 0


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
    removed = open_runtime(settings).store.delete_receipt(image_id, int(receipt_id))
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


def cmd_aws_create_table(args: argparse.Namespace, settings: Settings) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from resources.receipt_store.dynamodb import create_table

    name = args.table or settings.dynamodb_table
    if not name:
        print("no table named: pass --table or set DYNAMODB_TABLE_NAME", file=sys.stderr)
        return 2
    try:
        created = create_table(name, endpoint_url=settings.aws_endpoint_url)
    except (BotoCoreError, ClientError) as exc:
        print(f"cannot create table {name}: {exc}", file=sys.stderr)
        return 1
    print(f"table {name}: " + ("created in the seed layout (PK/SK, GSI1-GSI4, GSITYPE)" if created
                               else "already exists, left as it is"))
    return 0


def cmd_aws_create_buckets(args: argparse.Namespace, settings: Settings) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from resources.object_store.s3 import create_buckets

    names = [args.requests_bucket or settings.s3_bucket, args.chroma_bucket or settings.chromadb_bucket]
    if not all(names):
        print("no buckets named: pass --requests-bucket and --chroma-bucket or set S3_BUCKET and CHROMADB_BUCKET",
              file=sys.stderr)
        return 2
    try:
        created = create_buckets(names, endpoint_url=settings.aws_endpoint_url)
    except (BotoCoreError, ClientError) as exc:
        print(f"cannot create buckets {', '.join(names)}: {exc}", file=sys.stderr)
        return 1
    for name in dict.fromkeys(names):
        print(f"bucket {name}: {'created' if name in created else 'already exists'}")
    return 0


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
    seed.add_argument("--receipts", type=int, default=200)
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

    search = sub.add_parser("search", help="nearest items from the latest snapshot")
    search.add_argument("text")
    search.add_argument("--kind", choices=(*KIND_CHOICES, "all"), default="lines")
    search.add_argument("-k", type=int, default=5)
    search.add_argument("--merchant")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    status = sub.add_parser("status", help="items by status, batches by stage, snapshot per kind")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    cost = sub.add_parser("cost", help="embedding cost per receipt, from the provider's usage")
    cost.add_argument("--receipt", metavar="IMAGE_ID:RECEIPT_ID", help="only this receipt")
    cost.add_argument("--json", action="store_true")
    cost.set_defaults(func=cmd_cost)

    batches = sub.add_parser("batches", help="provider batches").add_subparsers(dest="batches_command", required=True)
    cancel = batches.add_parser("cancel", help="cancel in-flight batches; what finished is kept, the rest released")
    cancel.add_argument("batch_id", nargs="?", metavar="BATCH_ID")
    cancel.add_argument("--all", action="store_true", help="every in-flight batch of every kind")
    cancel.set_defaults(func=cmd_batches_cancel)
    _add_lifecycle_commands(sub)
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
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "k", 1) < 1 or getattr(args, "receipts", 1) < 1:
        print("-k and --receipts must be >= 1", file=sys.stderr)
        return 2
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
