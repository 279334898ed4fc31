"""`run` and `reembed`: the pipeline driven to completion in process."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from embedding_assets.cli.common import KIND_CHOICES, print_json
from embedding_assets.cli.errors import EXIT_FAILED, EXIT_TIMED_OUT
from embedding_assets.domain.settings import Settings

if TYPE_CHECKING:
    from embedding_assets.cli.run import RunSummary


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
                return EXIT_FAILED
            summaries.append(summary)
    if args.json:
        print_json([asdict(s) for s in summaries])
    for s in summaries if not args.json else ():
        _print_summary(s)
    return EXIT_TIMED_OUT if any(s.timed_out for s in summaries) else 0


def _print_summary(s: RunSummary) -> None:
    if s.nothing_to_do:
        print(f"[{s.kind}] nothing to embed: every {s.kind[:-1]} is already embedded, noise or failed "
              f"(snapshot v{s.snapshot_version}, {s.vectors} vectors)")
    else:
        print(f"[{s.kind}] done: {s.embedded} {s.kind} embedded in {s.batches} batches, snapshot "
              f"v{s.snapshot_version} ({s.vectors_of}) with {s.vectors} vectors, {s.noise} noise, "
              f"{s.failed} failed, {s.seconds}s")
    for key, error in s.failed_sample.items():
        print(f"[{s.kind}] FAILED {key}: {error}")
    if s.failed:
        print(f"[{s.kind}] {s.failed} {s.kind} FAILED after every attempt; `status` lists them, "
              f"`retry-failed --kind {s.kind}` sends them again")
    if s.unsendable:
        print(f"[{s.kind}] {s.unsendable} {s.kind} are NONE but could not be sent (see the create run in the UI)")
    if s.reembed_waiting:
        print(f"[{s.kind}] the re-embed is not complete yet: search answers from v{s.snapshot_version} "
              f"({s.vectors_of}) until it is; `status` says what it waits for")
    if s.timed_out:
        why = s.waiting_for or f"{s.pending} items still PENDING"
        print(f"[{s.kind}] timed out: {why}; run again, or raise --timeout", file=sys.stderr)


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
        print(f"[{kind}] {verb} with {start.model} ({start.dimensions or 'native'} dimensions, recipe {start.recipe}) "
              f"beside the serving {start.serving_model} ({start.serving_dimensions or 'native'} dimensions, "
              f"recipe {start.serving_recipe}): "
              f"{start.requeued} {kind} sent again; "
              f"search answers from the old collection until the new one holds every {kind[:-1]}")
        started.append(kind)
    if args.no_run or not started:
        if started:
            print("the sensors (or `receipt-embeddings run`) now embed them and switch when done")
        return 0
    return _run_kinds(tuple(started), args, settings)
