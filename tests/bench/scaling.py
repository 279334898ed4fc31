"""How a small compaction's cost grows with the collection it merges into, per vector-store mode.

For each mode (snapshot archives; a `chroma run` server started here), one
world (SQLite store, local object folder, the stand-in provider) grows a
collection to each of `--scaling-sizes` vectors, then compacts one small
delta (`--scaling-delta-lines` lines, ~0.63 vectors per line) into it with
the real `Compactor`. The filler vectors are written through the port with
their items marked SUCCESS (as a compaction would leave them) and are not
timed, nor is one small compaction after each fill (the first compaction
after a bulk write is not a steady-state one: the fill's writes may still be
being indexed); only the next compaction is. What it uploads to the object store is
counted (snapshot mode: the whole archive; server mode: the pointer; the
delta's vectors themselves go to the server in both the bench and real use).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedding_assets.domain.formatting import DEFAULT_RECIPES
from embedding_assets.domain.models import Receipt, line_key
from embedding_assets.domain.ports import ObjectStore, VectorLine, VectorStore
from embedding_assets.domain.settings import ChromaServer
from embedding_assets.steps.compact import Compactor
from resources.vector_store.server import ServerVectorStore
from resources.vector_store.snapshots import SnapshotVectorStore
from tests.bench.run import KIND, MB, MODEL, Clock, Report, Row, Timed, Verdict, World, quiet, run_through_ingest
from tests.chroma_server import running_chroma_server

MODES = ("snapshot", "server")
SERVER_FLAT_TARGET = 1.3  # issue 10: a small compaction at the largest size within 1.3x of the smallest non-zero

RECIPE = DEFAULT_RECIPES[KIND]  # what the bench's pipeline formats lines with


class CountingObjects:
    """An object store that counts the bytes put into it."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.uploaded = 0

    def put_file(self, key: str, path: Path) -> None:
        self.uploaded += path.stat().st_size
        self.inner.put_file(key, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.uploaded += len(data)
        self.inner.put_bytes(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclasses.dataclass
class TimedCompactor(Compactor):
    """The real compactor, with its merge and its stale-vector search (ownership, change feed) timed into `clock`."""

    clock: Clock = dataclasses.field(default_factory=Clock)

    def _apply(self, *args: Any, **kwargs: Any) -> list[str]:
        with self.clock.measure("merge"):
            return super()._apply(*args, **kwargs)

    def _still_owned(self, *args: Any, **kwargs: Any) -> set[str]:
        with self.clock.measure("scan"):
            return super()._still_owned(*args, **kwargs)

    def _stale(self, *args: Any, **kwargs: Any) -> tuple[list[str], str]:
        with self.clock.measure("scan"):
            return super()._stale(*args, **kwargs)


@dataclasses.dataclass
class Point:
    mode: str
    stored: int
    delta: int
    seconds: float
    uploaded: int
    parts: dict[str, float]


def _take(receipts: Iterator[Receipt], lines: int) -> list[Receipt]:
    """Whole receipts (a receipt is never split: putting it again would replace it) until `lines` are taken."""
    taken: list[Receipt] = []
    count = 0
    while count < lines:
        receipt = next(receipts)
        taken.append(receipt)
        count += len(receipt.lines)
    return taken


def _fill(world: World, line: VectorLine, receipts: list[Receipt], dims: int, tag: str,
          rng: np.random.Generator) -> None:
    """Store `receipts` as embedded (SUCCESS) with one vector per line in the collection: a compaction's result."""
    world.store.put_receipts(receipts)
    lines = [(line_key(r.image_id, r.receipt_id, x.line_id), r, x) for r in receipts for x in r.lines]
    keys = [key for key, _, _ in lines]
    world.store.mark_success(KIND, world.store.claim(KIND, keys, tag), tag)
    with line.writable(MODEL, dims, RECIPE) as (collection, _):
        for start in range(0, len(lines), 5000):
            part = lines[start:start + 5000]
            vectors = rng.standard_normal((len(part), dims), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            collection.add(
                ids=[key for key, _, _ in part], embeddings=vectors, documents=[x.text for _, _, x in part],
                metadatas=[{"batch_id": tag, "text": x.text, "image_id": r.image_id, "receipt_id": r.receipt_id,
                            "line_id": x.line_id, "model": MODEL, "dimensions": dims, "recipe": RECIPE}
                           for _, r, x in part],
            )
        count = collection.count()
    # As a compaction leaves it: the change feed applied up to now, so the next one reads only what follows.
    pointer = line.swap(line.stage(line.next_version()), count, MODEL, dims, world.store.changes_head(KIND),
                           recipe=RECIPE)
    line.mark_clean(pointer.version)


def _measure_mode(mode: str, root: Path, open_store: Any, receipts: Iterator[Receipt], sizes: Sequence[int],
                  delta_lines: int, dims: int, report: Report) -> list[Point]:
    world = World(root, dims)
    objects = CountingObjects(world.objects)
    vector_store: VectorStore = open_store(objects)
    rng = np.random.default_rng(3)
    points = []
    stored = 0
    for size in sizes:
        if size > stored:
            _fill(world, vector_store.line(KIND), _take(receipts, size - stored), dims, f"fill-{size}", rng)
            # One untimed small compaction first, so that the timed one pays for its own delta only, as one in a
            # steady stream does, and not for indexing work a bulk fill may leave behind.
            world.store.put_receipts(_take(receipts, delta_lines))
            run_through_ingest(world)
            Compactor(world.store, objects, vector_store.line(KIND), MODEL, dims, RECIPE,
                      work_dir=root / "tmp").run(quiet)
        world.store.put_receipts(_take(receipts, delta_lines))
        deltas = run_through_ingest(world)
        before = vector_store.line(KIND).latest()
        stored = before.vectors if before else 0
        clock = Clock()
        line = Timed(vector_store.line(KIND), clock, ["stage", "swap", "prune"], "publish.")
        store = Timed(world.store, clock, ["mark_success", "update_batch"], "mark.")
        compactor = TimedCompactor(store, objects, line, MODEL, dims, RECIPE, work_dir=root / "tmp", clock=clock)
        objects.uploaded = 0
        result = compactor.run(quiet)
        c = clock.seconds
        parts = {"merge": c["merge"], "scan": c["scan"],
                 "publish": sum(v for k, v in c.items() if k.startswith("publish.")),
                 "mark": c["mark.mark_success"] + c["mark.update_batch"]}
        point = Point(mode, stored, sum(r.vectors for r in deltas), result.seconds, objects.uploaded, parts)
        points.append(point)
        report.say(f"  {mode}: {point.delta} vectors into {stored:,} in {point.seconds:.2f}s "
                   f"(merge {parts['merge']:.2f}, stale search {parts['scan']:.2f}, "
                   f"publish {parts['publish']:.2f}, mark {parts['mark']:.2f}), {point.uploaded / MB:.1f} MB uploaded")
        stored = result.vectors
    world.store.close()
    return points


def bench_scaling(report: Report, root: Path, receipts: list[Receipt], dims: int, sizes: Sequence[int],
                  delta_lines: int) -> list[Point]:
    """Both modes over the same sizes; prints the table and the size up to which snapshot mode is cheaper."""
    sizes = sorted(set(sizes))
    points: list[Point] = []
    points += _measure_mode("snapshot", root / "snapshot", lambda objects: SnapshotVectorStore(objects, root / "cache"),
                            iter(receipts), sizes, delta_lines, dims, report)
    with running_chroma_server(root / "chroma-server") as (host, port):
        server = ChromaServer(host=host, port=port)
        points += _measure_mode("server", root / "server",
                                lambda objects: ServerVectorStore(server, objects, root / "scratch"),
                                iter(receipts), sizes, delta_lines, dims, report)
    report.say("")
    report.say(scaling_table(points))
    for point in points:
        report.rows.append(Row(f"scaling {point.mode}: delta into {point.stored:,} vectors", point.delta, "vectors",
                               point.seconds, f"{point.uploaded / MB:,.1f} MB uploaded"))
    report.notes.append(crossover(points))
    server_points = [p for p in points if p.mode == "server" and p.stored > 0]
    if len(server_points) >= 2:
        small, large = server_points[0], server_points[-1]
        ratio = large.seconds / small.seconds if small.seconds else 0.0
        report.verdicts.append(Verdict(
            f"server mode: a small compaction at {large.stored:,} vectors within {SERVER_FLAT_TARGET}x of at "
            f"{small.stored:,}", ratio <= SERVER_FLAT_TARGET,
            f"{large.seconds:.2f}s vs {small.seconds:.2f}s = {ratio:.2f}x",
        ))
    return points


def scaling_table(points: Sequence[Point]) -> str:
    header = ("mode", "stored", "delta", "seconds", "merge", "stale", "publish", "mark", "MB uploaded")
    rows = [(p.mode, f"{p.stored:,}", f"{p.delta:,}", f"{p.seconds:.2f}", f"{p.parts['merge']:.2f}",
             f"{p.parts['scan']:.2f}", f"{p.parts['publish']:.2f}", f"{p.parts['mark']:.2f}",
             f"{p.uploaded / MB:,.1f}") for p in points]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


def crossover(points: Sequence[Point]) -> str:
    """Where a straight line through each mode's seconds says server mode becomes the cheaper one."""
    fits = {}
    for mode in MODES:
        mine = [p for p in points if p.mode == mode]
        if len(mine) < 2:
            return "scaling: fewer than two sizes, no crossover estimated"
        slope, intercept = np.polyfit([p.stored for p in mine], [p.seconds for p in mine], 1)
        fits[mode] = (float(slope), float(intercept))
    (s_slope, s_icpt), (v_slope, v_icpt) = fits["snapshot"], fits["server"]
    fit = (f"snapshot {s_icpt:.2f}s + {s_slope * 1000:.3f}s per 1k stored; "
           f"server {v_icpt:.2f}s + {v_slope * 1000:.3f}s per 1k stored")
    if s_slope <= v_slope:
        return f"scaling: {fit}; snapshot mode is never the dearer one at these sizes"
    at = max(0.0, (v_icpt - s_icpt) / (s_slope - v_slope))
    return f"scaling: {fit}; snapshot mode is the cheaper one up to about {at:,.0f} stored vectors"

