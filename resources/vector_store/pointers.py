"""The two pointer objects of a kind (serving and NEXT), shared by both vector-store modes.

A pointer is one small object in the object store, written whole (a put is
atomic): rewriting it is the switch readers see. Snapshot mode keeps its
pointers under `snapshots/{kind}/`, naming archives; server mode under
`collections/{kind}/`, naming collections on the server.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Self

import orjson

from embedding_assets.domain.ports import ObjectNotFound, ObjectStore
from embedding_assets.domain.vectors import NEXT, SERVING, Pointer


def read_pointer(objects: ObjectStore, key: str) -> Pointer | None:
    try:
        return Pointer(**orjson.loads(objects.get_bytes(key)))
    except ObjectNotFound:
        return None


class PointerLine:
    """One line's pointer under `prefix`; subclasses say how to open the line beside it (`at`)."""

    prefix = "snapshots"

    def __init__(self, objects: ObjectStore, kind: str, line: str):
        if line not in (SERVING, NEXT):
            raise ValueError(f"unknown line {line!r}")
        self.objects = objects
        self.kind = kind
        self.line = line
        self.pointer_key = f"{self.prefix}/{kind}/{line}.json"

    def at(self, line: str) -> Self:
        raise NotImplementedError

    def next_line(self) -> Self:
        """The line a re-embed builds beside this one."""
        return self.at(NEXT)

    def serving_line(self) -> Self:
        return self.at(SERVING)

    def target(self) -> Self:
        """The line compaction writes to and the invariant is checked on: NEXT while a re-embed runs."""
        nxt = self.next_line()
        return nxt if nxt.latest() is not None else self.serving_line()

    def latest(self) -> Pointer | None:
        return read_pointer(self.objects, self.pointer_key)

    def version_floor(self) -> int:
        """The newest version either line names, which the next version must pass."""
        pointers = (self.serving_line().latest(), self.next_line().latest())
        return max((p.version for p in pointers if p), default=0)

    def next_version(self) -> int:
        """One past the newest version of either line, so the two never share a version."""
        return self.version_floor() + 1

    def write_pointer(self, pointer: Pointer) -> Pointer:
        self.objects.put_bytes(self.pointer_key, orjson.dumps(asdict(pointer)))
        return pointer

    def clear(self) -> None:
        """Remove this line's pointer (the NEXT line, once switched or abandoned); what it named goes with prune."""
        self.objects.delete(self.pointer_key)
