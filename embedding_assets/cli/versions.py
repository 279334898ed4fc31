"""`export` and `restore`: a kind's serving version to and from the snapshot layout.

In server mode `export` copies the serving collection into an archive under
`snapshots/{kind}/`; in snapshot mode every version already is one, so it
names the serving archive. `restore` serves an archived version again.
"""

from __future__ import annotations

import argparse
import sys

from embedding_assets.cli.errors import EXIT_FAILED
from embedding_assets.domain.models import KINDS
from embedding_assets.domain.settings import Settings


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime

    pointer = open_runtime(settings).export(args.kind)
    if pointer is None:
        print(f"no {args.kind} version is published yet: nothing to export", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.kind} v{pointer.version} ({pointer.vectors} vectors, {pointer.vectors_of}) is at {pointer.key}")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from embedding_assets.api import open_runtime
    from embedding_assets.domain.vectors import CorruptSnapshot, VersionNotFound
    from embedding_assets.steps.exports import RestoreRefused

    try:
        restored = open_runtime(settings).restore(args.kind, args.version)
    except (VersionNotFound, RestoreRefused, CorruptSnapshot) as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    pointer = restored.pointer
    print(f"{args.kind}: search now answers from v{pointer.version} ({pointer.vectors} vectors, "
          f"{pointer.vectors_of}); {restored.requeued} {args.kind} it lacks are sent again at the next run")
    return 0


def add_version_commands(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="archive the serving version under snapshots/ (server mode copies it out)")
    export.add_argument("--kind", choices=KINDS, default="lines")
    export.set_defaults(func=cmd_export)
    restore = sub.add_parser("restore", help="serve an archived version again; items it lacks are embedded again")
    restore.add_argument("--kind", choices=KINDS, default="lines")
    restore.add_argument("--version", type=int, help="the archive's version (default: the newest export)")
    restore.set_defaults(func=cmd_restore)
