"""A pipeline step in a child process that SIGKILLs itself at a chosen line.

`python -m tests.crash_child STEP KIND TARGET WHEN [ARG]`: TARGET is
`module:Class.method`; WHEN is `before` or `after` the call (or `during:N`,
killing on the N-th call). The environment carries the settings, so the
child works on the parent's store. Nothing in production code knows about it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

from embedding_assets.domain.settings import Settings
from embedding_assets.wiring import Runtime


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def patch(target: str, when: str) -> None:
    module_name, attr = target.split(":")
    owner_name, method_name = attr.split(".")
    owner = getattr(importlib.import_module(module_name), owner_name)
    original = getattr(owner, method_name)
    nth = int(when.split(":")[1]) if when.startswith("during:") else 1
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= nth and when != "after":
            _die()
        result = original(*args, **kwargs)
        if when == "after":
            _die()
        return result

    setattr(owner, method_name, wrapper)


def main(step: str, kind: str, target: str, when: str, arg: str | None = None) -> None:
    runtime = Runtime.from_settings(Settings.from_env())
    patch(target, when)
    if step == "prepare":
        runtime.pipeline.prepare(kind, 10_000_000)
    elif step == "submit":
        runtime.pipeline.submit(kind)
    elif step == "poll":
        runtime.pipeline.poll(kind, 1000)
    elif step == "ingest":
        runtime.pipeline.ingest(arg)
    elif step == "compact":
        runtime.compactor(kind).run()
    elif step == "reembed":
        runtime.start_reembed(kind)
    else:
        raise SystemExit(f"unknown step {step}")


if __name__ == "__main__":
    main(*sys.argv[1:])
