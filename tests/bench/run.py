"""Benchmark of the line pipeline's steps: `python -m tests.bench.run [--lines N] [--dims D] [--out DIR]`.

It prints a table (stage, items, seconds, rate, target) and a verdict per
target; it never asserts. Everything runs on the real steps (SQLite store,
local object folder, `Pipeline.prepare/submit/poll/ingest`, `iter_results`,
`DeltaWriter`, `Compactor.run`) except the provider, which is a stand-in
(`StandInProvider`) that answers a batch instantly with random unit vectors
of the asked size, written with numpy + base64 in the Batch API's exact
output format (order shuffled, as the real API's is arbitrary). No model is
loaded and nothing leaves the machine.

What is measured, on N synthetic lines (demo receipts, lines only: words are
not benched, so they are left out of the store):

0. tokens (`tests/bench/tokens.py`): byte estimates against exact
   cl100k_base counts on the demo set, and batch cycles for `--token-lines`
   lines at tier 1, before (bytes) and after (tokens).
1. find + claim: `Pipeline.prepare` end to end (lines/s), plus the store
   calls alone on a copy of the seeded store (find, read, claim).
2. format + write: `line_requests` (lines/s), encoding the request lines and
   writing request + manifest files to the object store (requests/s, MB/s).
3. parse: `iter_results` over the stand-in's base64 output files and over a
   float-list file (`--float-results` results, default 20,000: a float file
   is ~2.2x the bytes and ~3x slower to parse, so it is kept to a subset).
4. delta write: `DeltaWriter` on the same ids, documents and metadata.
5. compaction: `Compactor.run` (LocalObjectStore, SnapshotStore, lease in the
   SQLite store) against a raw `collection.add` of the same vectors into a
   fresh PersistentClient. Chroma adds 1536-d vectors at a few hundred per
   second on 2 cores, so this runs on the first `--compact-lines` lines
   (default 20,000, about 12,500 vectors) in a world of its own; the output
   says so. Sub-timings (Chroma get/add, snapshot archive and upload, store
   updates) are taken by thin timing wrappers around the real objects.
6. memory: peak RSS of `iter_results` and of the real `Pipeline.ingest`, each
   in a fresh subprocess, for two batch sizes (`--memory-sizes`, default
   10,000 and 50,000), minus a baseline subprocess that imports the same
   modules and does nothing.

The work directory `<out>/work` is wiped at the start and (unless `--keep`)
at the end: at the default N it holds about 2 GB of output files and deltas.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson

from embedding_assets.domain.batching import Budget, plan_files
from embedding_assets.domain.deltas import DeltaWriter, read_delta
from embedding_assets.domain.formatting import ReceiptRequests, line_requests
from embedding_assets.domain.models import BatchRecord, Receipt, Stage, batch_keys, line_key, receipt_key
from embedding_assets.domain.ports import ProviderBatch
from embedding_assets.domain.results import iter_results
from embedding_assets.domain.tokens import TiktokenCounter, cl100k
from embedding_assets.steps.pipeline import Pipeline
from resources.object_store.local import LocalObjectStore
from resources.receipt_store.sqlite import SqliteReceiptStore
from tests.bench.tokens import bench_tokens

REPO_ROOT = Path(__file__).resolve().parents[2]
KIND = "lines"
MODEL = "bench-standin"
PARSE_TARGET = 25_000  # vectors/s, base64 (DESIGN: orjson+base64 ~30k/s)
COMPACTION_RATIO_TARGET = 0.9
MB = 1024 * 1024


# ---------------------------------------------------------------- provider stand-in
def write_result_file(
    path: Path, custom_ids: Sequence[str], dims: int, encoding: str, rng: np.random.Generator,
    tokens: Callable[[str], int] = lambda _id: 12, chunk: int = 2048,
) -> int:
    """A Batch API output file answering every id with a random unit vector; returns its bytes.

    Lines go out in a shuffled order, as the real API's output order is arbitrary.
    """
    order = rng.permutation(len(custom_ids))
    with open(path, "wb") as f:
        for start in range(0, len(order), chunk):
            block = order[start:start + chunk]
            vectors = rng.standard_normal((len(block), dims), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors.astype("<f4", copy=False)
            for n, vector in zip(block, vectors):
                custom_id = custom_ids[n]
                embedding: Any = base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector
                used = tokens(custom_id)
                row = {
                    "id": f"batch_req_{n:024x}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": 200,
                        "request_id": f"req_{n:024x}",
                        "body": {
                            "object": "list",
                            "data": [{"object": "embedding", "index": 0, "embedding": embedding}],
                            "model": MODEL,
                            "usage": {"prompt_tokens": used, "total_tokens": used},
                        },
                    },
                    "error": None,
                }
                f.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE))
        return f.tell()


class StandInProvider:
    """A `BatchProvider` that completes a batch on its first `retrieve`, with random vectors.

    State lives in files under `root` (like the local provider), so a
    subprocess can open the same provider and download its files.
    """

    name = "bench"
    model = MODEL
    max_input_tokens = 8192

    def __init__(self, root: Path, dimensions: int, seed: int = 0) -> None:
        self.root = Path(root)
        self.dimensions = dimensions
        self.request_dimensions = dimensions
        self.enqueued_token_limit: int | None = None
        self.files = self.root / "files"
        self.batches = self.root / "batches"
        self.files.mkdir(parents=True, exist_ok=True)
        self.batches.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(seed)
        self.generated_vectors = 0
        self.generated_bytes = 0
        self.generate_seconds = 0.0

    @property
    def tokenizer(self) -> TiktokenCounter:
        return cl100k()

    def file_path(self, file_id: str) -> Path:
        return self.files / file_id

    def upload(self, path: Path) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        shutil.copyfile(path, self.file_path(file_id))
        return file_id

    def add_result_file(self, custom_ids: Sequence[str], encoding: str = "base64") -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        started = time.perf_counter()
        self.generated_bytes += write_result_file(self.file_path(file_id), custom_ids, self.dimensions, encoding,
                                                  self.rng)
        self.generate_seconds += time.perf_counter() - started
        self.generated_vectors += len(custom_ids)
        return file_id

    def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> ProviderBatch:
        state = {"id": f"batch_{uuid.uuid4().hex[:24]}", "status": "validating", "input_file_id": input_file_id,
                 "output_file_id": None, "total": 0, "metadata": dict(metadata), "created_at": int(time.time())}
        self._save(state)
        return self._batch(state)

    def find_batches(self, metadata: dict[str, str], since: float | None = None) -> list[ProviderBatch]:
        states = [orjson.loads(p.read_bytes()) for p in self.batches.glob("*.json")]
        return [self._batch(s) for s in states if all(s["metadata"].get(k) == v for k, v in metadata.items())]

    def retrieve(self, provider_batch_id: str) -> ProviderBatch:
        state = orjson.loads((self.batches / f"{provider_batch_id}.json").read_bytes())
        if state["status"] == "validating":
            with open(self.file_path(state["input_file_id"]), "rb") as f:
                ids = [orjson.loads(line)["custom_id"] for line in f]
            state.update(status="completed", output_file_id=self.add_result_file(ids), total=len(ids))
            self._save(state)
        return self._batch(state)

    def download(self, file_id: str, dest: Path) -> None:
        shutil.copyfile(self.file_path(file_id), dest)

    def cancel(self, provider_batch_id: str) -> ProviderBatch:
        return self.retrieve(provider_batch_id)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.rng.standard_normal((len(texts), self.dimensions), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def _save(self, state: dict[str, Any]) -> None:
        (self.batches / f"{state['id']}.json").write_bytes(orjson.dumps(state))

    @staticmethod
    def _batch(state: dict[str, Any]) -> ProviderBatch:
        done = state["total"] if state["status"] == "completed" else 0
        return ProviderBatch(id=state["id"], status=state["status"], input_file_id=state["input_file_id"],
                             output_file_id=state["output_file_id"], total=state["total"], completed=done,
                             metadata=state["metadata"], created_at=state["created_at"])


# ------------------------------------------------------------------------- timing
class Clock:
    """Seconds and calls per name, summed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1


class Timed:
    """Delegates everything to `inner`, timing the named (non-generator) methods into `clock`."""

    def __init__(self, inner: Any, clock: Clock, names: Iterable[str], prefix: str = "") -> None:
        self._inner, self._clock, self._names, self._prefix = inner, clock, frozenset(names), prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._names:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._clock.measure(self._prefix + name):
                return attr(*args, **kwargs)

        return timed


@dataclass
class Row:
    stage: str
    items: int | None
    unit: str
    seconds: float | None
    rate: str
    target: str = ""


@dataclass
class Verdict:
    target: str
    met: bool | None
    detail: str


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.rows: list[Row] = []
        self.verdicts: list[Verdict] = []
        self.notes: list[str] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def row(self, stage: str, items: int | None, unit: str, seconds: float | None, rate: str | None = None,
            target: str = "", mb: float | None = None) -> float:
        """Add a row; the rate is items/s (and MB/s when `mb` is given) unless given. Returns items/s."""
        per_second = items / seconds if items is not None and seconds else 0.0
        if rate is None:
            rate = f"{per_second:,.0f} {unit}/s"
            if mb is not None and seconds:
                rate += f", {mb / seconds:,.1f} MB/s"
        self.rows.append(Row(stage, items, unit, seconds, rate, target))
        shown = f"{seconds:.2f}s" if seconds is not None else "-"
        self.say(f"  {stage}: {items if items is not None else '-'} {unit} in {shown} -> {rate}")
        return per_second

    def table(self) -> str:
        header = ("stage", "items", "seconds", "rate", "target")
        body = [
            (r.stage, "" if r.items is None else f"{r.items:,} {r.unit}",
             "" if r.seconds is None else f"{r.seconds:.2f}", r.rate, r.target)
            for r in self.rows
        ]
        widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
        fmt = "  ".join(f"{{:{'<' if i in (0, 3, 4) else '>'}{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        lines = [line.rstrip() for line in lines] + [fmt.format(*line).rstrip() for line in body]
        return "\n".join(lines)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def quiet(_message: str) -> None:
    pass


# -------------------------------------------------------------------------- data
def receipts_with_lines(n_lines: int, seed: int) -> list[Receipt]:
    """Demo receipts, lines only, holding exactly `n_lines` lines (the last receipt is cut short)."""
    from embedding_assets.data.demo import generate_receipts

    count = max(1, n_lines // 30 + 1)
    while True:
        generated = generate_receipts(count, seed=seed)
        if sum(len(r.lines) for r in generated) >= n_lines:
            break
        count *= 2
    out: list[Receipt] = []
    total = 0
    for receipt in generated:
        take = receipt.lines[: n_lines - total]
        out.append(dataclasses.replace(receipt, lines=take, words=[]))
        total += len(take)
        if total >= n_lines:
            return out
    return out


@dataclass
class World:
    """One store, object folder and provider under a directory, with a pipeline over them."""

    root: Path
    dims: int
    clock: Clock = dataclasses.field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = SqliteReceiptStore(self.root / "store.sqlite")
        self.objects = LocalObjectStore(self.root / "objects")
        self.provider = StandInProvider(self.root / "provider", self.dims)

    def pipeline(self, timed_store: bool = False) -> Pipeline:
        store: Any = self.store
        objects: Any = self.objects
        if timed_store:
            store = Timed(self.store, self.clock, ["unembedded_receipts", "receipt_items", "merchant_name", "claim",
                                                    "mark_noise", "put_batch"], "store.")
            objects = Timed(self.objects, self.clock, ["put_file"], "objects.")
        return Pipeline(store, objects, self.provider, self.root / "tmp", budget=Budget())

    def records(self, stages: Iterable[Stage] | None = None) -> list[BatchRecord]:
        return self.store.list_batches(KIND, stages)

    def manifest_entries(self) -> Iterator[dict[str, Any]]:
        for record in self.records():
            for line in self.objects.get_bytes(record.manifest_key).splitlines():
                yield orjson.loads(line)


def seed_world(world: World, receipts: list[Receipt]) -> None:
    world.store.put_receipts(receipts)


def run_through_ingest(world: World) -> list[BatchRecord]:
    """prepare, submit, poll and ingest every batch, untimed (used for the compaction world)."""
    pipeline = world.pipeline()
    pipeline.prepare(KIND, 10**9, quiet)
    pipeline.submit(KIND, quiet)
    pipeline.poll(KIND, 1000)
    for record in world.records([Stage.COMPLETED]):
        pipeline.ingest(record.batch_id, quiet)
    return world.records([Stage.DELTA_READY])


# ------------------------------------------------------------------------ stages
def bench_store_steps(report: Report, db: Path, objects_dir: Path, provider: StandInProvider, lines: int) -> None:
    """find / read / format / encode+write / claim, each alone, on a copy of the seeded store."""
    store = SqliteReceiptStore(db)
    objects = LocalObjectStore(objects_dir)
    try:
        def find() -> list[tuple[str, int]]:
            keys: list[tuple[str, int]] = []
            after = None
            while page := store.unembedded_receipts(KIND, 200, after):
                keys += page
                after = receipt_key(*page[-1])
            return keys

        keys, seconds = timed(find)
        report.row("find receipts (store.unembedded_receipts)", len(keys), "receipts", seconds)

        read, seconds = timed(lambda: [(store.receipt_items(KIND, i, r), store.merchant_name(i, r)) for i, r in keys])
        report.row("read items (store.receipt_items + merchant_name)", sum(len(items) for items, _ in read), "lines",
                   seconds)

        built: list[ReceiptRequests]
        fit = partial(provider.tokenizer.fit, max_tokens=provider.max_input_tokens)
        built, format_seconds = timed(lambda: [line_requests(items, merchant, fit) for items, merchant in read])
        requests = sum(len(b.requests) for b in built)
        report.row("format requests (line_requests)", lines, "lines", format_seconds,
                   rate=f"{lines / format_seconds:,.0f} lines/s, {requests / format_seconds:,.0f} requests/s")

        oversized: list = []
        planned, encode_seconds = timed(lambda: list(plan_files(built, Budget(), provider.model,
                                                                provider.request_dimensions, oversized)))
        tmp = db.parent / "write-tmp"
        tmp.mkdir(exist_ok=True)

        def write() -> tuple[int, int]:
            input_bytes = manifest_bytes = 0
            for n, plan in enumerate(planned):
                body, manifest = tmp / "input.jsonl", tmp / "manifest.jsonl"
                with manifest.open("wb") as f:
                    for receipt in plan.receipts:
                        for r in receipt.requests:
                            f.write(orjson.dumps({"custom_id": r.custom_id, "item_keys": r.item_keys,
                                                  "document": r.metadata["text"], "metadata": r.metadata}) + b"\n")
                    manifest_bytes += f.tell()
                with body.open("wb") as f:
                    f.writelines(plan.lines)
                    input_bytes += f.tell()
                objects.put_file(f"batches/{KIND}/bench-{n}.manifest.jsonl", manifest)
                objects.put_file(f"batches/{KIND}/bench-{n}.jsonl", body)
            return input_bytes, manifest_bytes

        (input_bytes, manifest_bytes), write_seconds = timed(write)
        total = format_seconds + encode_seconds + write_seconds
        report.row("encode request lines (plan_files)", requests, "requests", encode_seconds,
                   mb=input_bytes / MB)
        report.row("write request + manifest files", requests, "requests", write_seconds,
                   mb=(input_bytes + manifest_bytes) / MB)
        report.row("format+write total (format + encode + write)", requests, "requests", total,
                   mb=(input_bytes + manifest_bytes) / MB)
        report.notes.append(f"request files: {len(planned)} file(s), {input_bytes / MB:.1f} MB of requests + "
                            f"{manifest_bytes / MB:.1f} MB of manifests for {requests:,} requests")

        claim_keys = [[k for receipt in plan.receipts for r in receipt.requests for k in r.item_keys]
                      for plan in planned]
        won, seconds = timed(lambda: sum(len(store.claim(KIND, ks, f"bench-{n}")) for n, ks in enumerate(claim_keys)))
        report.row("claim (store.claim, NONE -> PENDING)", won, "lines", seconds)
    finally:
        store.close()


def bench_prepare(report: Report, world: World) -> int:
    pipeline = world.pipeline(timed_store=True)
    prepared, seconds = timed(lambda: pipeline.prepare(KIND, 10**9, quiet))
    report.row("prepare (Pipeline.prepare: find+claim+format+write)", prepared.items, "lines", seconds,
               rate=f"{prepared.items / seconds:,.0f} lines/s, {prepared.requests / seconds:,.0f} requests/s")
    c = world.clock.seconds
    find = c["store.unembedded_receipts"]
    read = c["store.receipt_items"] + c["store.merchant_name"]
    claim = c["store.claim"]
    puts = c["objects.put_file"]
    rest = seconds - find - read - claim - puts - c["store.mark_noise"] - c["store.put_batch"]
    report.notes.append(
        f"prepare breakdown: find {find:.2f}s, read items {read:.2f}s, claim {claim:.2f}s, object puts {puts:.2f}s, "
        f"format+encode+local writes+lease {rest:.2f}s; {len(prepared.batches)} batch(es), "
        f"{prepared.requests:,} requests"
    )
    return prepared.requests


def bench_parse(report: Report, paths: Sequence[Path], label: str, target: str = "", runs: int = 2) -> float:
    """The best of `runs` passes, so that one burst of load from elsewhere does not decide a target."""
    def parse() -> int:
        vectors = 0
        for path in paths:
            for result in iter_results(path):
                vectors += len(result.vectors or ())
        return vectors

    size = sum(p.stat().st_size for p in paths)
    vectors, seconds = min((timed(parse) for _ in range(runs)), key=lambda got: got[1])
    return report.row(f"{label}, best of {runs}", vectors, "vectors", seconds, target=target, mb=size / MB)


def bench_delta_write(report: Report, world: World, dims: int, count_limit: int) -> None:
    entries = []
    for entry in world.manifest_entries():
        meta = dict(entry["metadata"], model=MODEL, dimensions=dims, batch_id="bench")
        entries.append((entry["custom_id"], entry["document"], meta))
        if len(entries) >= count_limit:
            break
    pool = np.random.default_rng(1).standard_normal((1024, dims), dtype=np.float32)
    path = world.root / "bench-delta.parquet"

    def write() -> int:
        with DeltaWriter(path, dims) as writer:
            for n, (custom_id, document, meta) in enumerate(entries):
                writer.add(custom_id, pool[n % 1024], document, meta)
        return writer.count

    count, seconds = timed(write)
    report.row("delta write (DeltaWriter, Parquet)", count, "vectors", seconds, mb=path.stat().st_size / MB)
    path.unlink()


@contextmanager
def timed_compaction(clock: Clock) -> Iterator[None]:
    """Wrap the compactor's Chroma collection in a timing proxy, for the length of the block."""
    import resources.vector_store.snapshots as compaction

    original = compaction.persistent_collection

    @contextmanager
    def collection(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with clock.measure("chroma.open"):
            manager = original(*args, **kwargs)
            handle = manager.__enter__()
        try:
            yield Timed(handle, clock, ["get", "add", "upsert", "count"], "chroma.")
        finally:
            with clock.measure("chroma.close"):
                manager.__exit__(*sys.exc_info())

    compaction.persistent_collection = collection
    try:
        yield
    finally:
        compaction.persistent_collection = original


def bench_compaction(report: Report, root: Path, receipts: list[Receipt], dims: int, subset_lines: int,
                     total_lines: int) -> tuple[float, float]:
    from embedding_assets.steps.compact import Compactor
    from resources.vector_store.chroma import persistent_collection
    from resources.vector_store.snapshots import SnapshotStore

    world = World(root, dims)
    subset = receipts_prefix(receipts, subset_lines)
    seed_world(world, subset)
    deltas = run_through_ingest(world)
    vectors_in = sum(r.vectors for r in deltas)
    if subset_lines < total_lines:
        report.say(f"  (compaction and raw add run on the first {subset_lines:,} of {total_lines:,} lines, "
                   f"{vectors_in:,} vectors: --compact-lines)")
    clock = Clock()

    class TimedSnapshots(SnapshotStore):
        def upload(self, directory: Path, version: int) -> tuple[str, str]:
            with clock.measure("snapshot.upload"):
                return super().upload(directory, version)

        def checkout(self):  # type: ignore[no-untyped-def]
            with clock.measure("snapshot.checkout"):
                return super().checkout()

    objects = Timed(world.objects, clock, ["download", "put_file"], "objects.")
    snapshots = TimedSnapshots(objects, root / "chroma-cache", KIND)
    compactor = Compactor(
        store=Timed(world.store, clock, ["mark_success", "update_batch", "list_batches"], "store."),
        objects=objects, vectors=snapshots, model=MODEL, dimensions=dims, recipe="row-lower", work_dir=root / "tmp",
    )
    with timed_compaction(clock):
        result, seconds = timed(lambda: compactor.run(quiet))
    c = clock.seconds
    compaction_rate = report.row(
        f"compaction (Compactor.run, {len(deltas)} delta(s))", result.added + result.updated, "vectors", seconds,
        target="ratio to raw add >= 0.9",
    )
    upload = c["snapshot.upload"]
    put = c["objects.put_file"]
    chroma = sum(v for k, v in c.items() if k.startswith("chroma."))
    store_time = c["store.mark_success"] + c["store.update_batch"] + c["store.list_batches"]
    parts = [
        ("chroma get (ids already present?)", c["chroma.get"]),
        ("chroma add", c["chroma.add"]),
        ("chroma upsert", c["chroma.upsert"]),
        ("chroma open + count + close", c["chroma.open"] + c["chroma.count"] + c["chroma.close"]),
        ("snapshot archive + sha256", upload - put),
        ("snapshot object put", put),
        ("delta download (object store)", c["objects.download"]),
        ("store: list, mark SUCCESS, COMPACTED", store_time),
        ("other (verify + read delta, item keys, lease, checkout)",
         seconds - chroma - upload - c["objects.download"] - store_time),
    ]
    for name, part in parts:
        report.rows.append(Row(f"  compaction: {name}", None, "", part, f"{100 * part / seconds:.0f}% of compaction"))
        report.say(f"    {name}: {part:.2f}s ({100 * part / seconds:.0f}%)")

    # The same vectors, added raw into a fresh client: read first, then only the Chroma work is timed.
    chunks = []
    for record in deltas:
        path = root / f"raw-{record.batch_id}.parquet"
        world.objects.download(record.delta_key, path)
        for chunk in read_delta(path, 5000):
            chunks.append(chunk)
        path.unlink()

    def raw_add() -> int:
        added = 0
        with persistent_collection(root / "raw-chroma", KIND, MODEL, dims, "row-lower") as collection:
            for chunk in chunks:
                collection.add(ids=chunk.ids, embeddings=chunk.embeddings, documents=chunk.documents,
                               metadatas=chunk.metadatas)
                added += len(chunk.ids)
        return added

    added, raw_seconds = timed(raw_add)
    raw_rate = report.row("raw chroma add (fresh PersistentClient, open+add+close)", added, "vectors", raw_seconds,
                          target="DESIGN: ~500-650/s")
    ratio = compaction_rate / raw_rate if raw_rate else 0.0
    merge_only = (result.added + result.updated) / (seconds - upload) / raw_rate if raw_rate else 0.0
    report.rows.append(Row("compaction / raw add", None, "", None,
                           f"{ratio:.2f} (without snapshot upload {merge_only:.2f})", f">= {COMPACTION_RATIO_TARGET}"))
    report.say(f"  compaction / raw add: {ratio:.2f} (without the snapshot upload: {merge_only:.2f})")
    report.verdicts.append(Verdict(f"compaction >= {COMPACTION_RATIO_TARGET} x raw Chroma add",
                                   ratio >= COMPACTION_RATIO_TARGET,
                                   f"{compaction_rate:,.0f} vs {raw_rate:,.0f} vectors/s = {ratio:.2f}"
                                   f" (on {added:,} vectors)"))
    world.store.close()
    return compaction_rate, raw_rate


def receipts_prefix(receipts: list[Receipt], n_lines: int) -> list[Receipt]:
    out, total = [], 0
    for receipt in receipts:
        if total >= n_lines:
            break
        take = receipt.lines[: n_lines - total]
        out.append(dataclasses.replace(receipt, lines=take))
        total += len(take)
    return out


# ------------------------------------------------------------------------ memory
def _child(argv: list[str]) -> int:
    """Run in a fresh interpreter: one measured action, then its own peak RSS as JSON on stdout."""
    mode = argv[0]
    started = time.perf_counter()
    vectors = 0
    if mode == "parse":
        for result in iter_results(Path(argv[1])):
            vectors += len(result.vectors or ())
    elif mode == "ingest":
        root, batch_id, dims = Path(argv[1]), argv[2], int(argv[3])
        store = SqliteReceiptStore(root / "store.sqlite")
        provider = StandInProvider(root / "provider", dims)
        pipeline = Pipeline(store, LocalObjectStore(root / "objects"), provider, root / "tmp")
        vectors = pipeline.ingest(batch_id, quiet).vectors
        store.close()
    elif mode != "baseline":
        raise SystemExit(f"unknown child mode {mode!r}")
    seconds = time.perf_counter() - started
    print(json.dumps({"peak_kb": peak_rss_kb(), "seconds": seconds, "vectors": vectors}))
    return 0


def peak_rss_kb() -> int:
    """This process's peak resident set size in KB.

    VmHWM where /proc has it: on Linux, ru_maxrss of a freshly spawned child
    starts at its parent's RSS at fork time (over 1 GB here by the memory
    stage), which would swamp what the child itself used.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KB on Linux


def run_child(*args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "tests.bench.run", "_child", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_world(root: Path, dims: int, size: int, templates: list[dict[str, Any]]) -> tuple[str, Path]:
    """A store holding one COMPLETED batch of `size` requests, its manifest and its output file."""
    world = World(root, dims)
    batch_id = f"lines-mem-{size}"
    input_key, manifest_key, _ = batch_keys(KIND, batch_id)
    ids = []
    lines = []
    for n in range(size):
        template = templates[n % len(templates)]
        # Real line ids, ~25 requests per receipt as in the demo data (ingest tallies usage per receipt).
        custom_id = line_key(str(uuid.UUID(int=n // 25 + 1, version=4)), 1, n % 25 + 1)
        ids.append(custom_id)
        lines.append(orjson.dumps(dict(template, custom_id=custom_id, item_keys=[custom_id])) + b"\n")
    world.objects.put_bytes(manifest_key, b"".join(lines))
    world.objects.put_bytes(input_key, b"{}\n")
    del lines
    file_id = world.provider.add_result_file(ids)
    world.store.put_batch(BatchRecord(batch_id=batch_id, kind=KIND, stage=Stage.COMPLETED, input_key=input_key,
                                      manifest_key=manifest_key, item_count=size, request_count=size,
                                      estimated_tokens=0, output_file_id=file_id, created_at="x", updated_at="x"))
    world.store.close()
    return batch_id, world.provider.file_path(file_id)


def bench_memory(report: Report, root: Path, dims: int, sizes: Sequence[int], templates: list[dict[str, Any]]) -> None:
    base = run_child("baseline")["peak_kb"]
    report.say(f"  baseline subprocess (imports only): peak RSS {base / 1024:.0f} MB")
    extra: dict[str, dict[int, float]] = {"parse": {}, "ingest": {}}
    for size in sizes:
        world_root = root / f"mem-{size}"
        batch_id, output = memory_world(world_root, dims, size, templates)
        for mode, args in (("parse", [str(output)]), ("ingest", [str(world_root), batch_id, str(dims)])):
            got = run_child(mode, *args)
            above = (got["peak_kb"] - base) / 1024
            extra[mode][size] = above
            label = "iter_results" if mode == "parse" else "Pipeline.ingest"
            report.rows.append(Row(f"peak RSS {label}, {size:,} results", got["vectors"], "vectors", got["seconds"],
                                   f"+{above:,.1f} MB over baseline", "flat in batch size"))
            report.say(f"  {label} on {size:,} results: +{above:,.1f} MB over baseline ({got['seconds']:.2f}s)")
        shutil.rmtree(world_root, ignore_errors=True)
    small, large = min(sizes), max(sizes)
    # Holding every extra result would cost (large - small) vectors of dims float32; flat means a small part of that.
    held = (large - small) * dims * 4 / MB
    allowed = max(8.0, 0.1 * held)
    for mode, label in (("parse", "iter_results"), ("ingest", "Pipeline.ingest")):
        growth = extra[mode][large] - extra[mode][small]
        report.verdicts.append(Verdict(
            f"{label} peak memory flat in batch size", growth <= allowed,
            f"+{extra[mode][small]:.1f} MB at {small:,}, +{extra[mode][large]:.1f} MB at {large:,}: "
            f"grows {growth:.1f} MB "
            f"(allowed {allowed:.1f} MB; holding the extra vectors would take {held:.0f} MB)",
        ))


# -------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000, help="synthetic lines (default 100000)")
    parser.add_argument("--dims", type=int, default=1536, help="vector size (default 1536)")
    parser.add_argument("--out", type=Path, default=Path(".bench"), help="bench directory (default .bench)")
    parser.add_argument("--compact-lines", type=int, default=20_000,
                        help="lines whose vectors go through compaction and raw add (default 20000)")
    parser.add_argument("--float-results", type=int, default=20_000,
                        help="results in the float-list parse file (default 20000)")
    parser.add_argument("--memory-sizes", default="10000,50000",
                        help="two batch sizes for peak memory (default 10000,50000)")
    parser.add_argument("--token-lines", type=int, default=1_000_000,
                        help="lines whose batch cycles are counted at tier 1, bytes against tokens (default 1000000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep <out>/work afterwards")
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.memory_sizes.split(",") if s.strip()})
    if args.lines < 1 or args.dims < 1 or len(sizes) != 2 or min(sizes) < 1:
        parser.error("--lines and --dims must be positive and --memory-sizes two different positive sizes")
    args.sizes = sizes
    return args


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        return _child(argv[1:])
    args = parse_args(argv)
    report = Report(out or sys.stdout)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    report.say(f"bench: {args.lines:,} lines, {args.dims} dimensions, work dir {work} ({os.cpu_count()} CPUs, "
               f"load average {os.getloadavg()[0]:.1f})")
    try:
        run_stages(report, args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report.say("")
    report.say(report.table())
    report.say("")
    load = os.getloadavg()
    busy = load[1] > (os.cpu_count() or 1)
    busy_note = "; the machine was busy with other work, so the rates are low" if busy else ""
    report.notes.append(f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) on "
                        f"{os.cpu_count()} CPUs{busy_note}")
    for note in report.notes:
        report.say(f"note: {note}")
    report.say("")
    report.say("verdict:")
    for verdict in report.verdicts:
        state = "met" if verdict.met else "NOT MET" if verdict.met is not None else "n/a"
        report.say(f"  [{state}] {verdict.target}: {verdict.detail}")
    report.say(f"bench finished in {time.perf_counter() - started:.0f}s")
    return 0


def run_stages(report: Report, args: argparse.Namespace, work: Path) -> None:
    report.say("0. tokens: byte estimates against exact cl100k_base counts:")
    bench_tokens(report, args.token_lines)

    receipts, seconds = timed(lambda: receipts_with_lines(args.lines, args.seed))
    report.row("generate receipts (demo)", args.lines, "lines", seconds)

    world = World(work / "main", args.dims)
    _, seconds = timed(lambda: seed_world(world, receipts))
    report.row("seed store (put_receipts)", args.lines, "lines", seconds)
    world.store.close()
    steps = work / "steps"
    steps.mkdir()
    shutil.copyfile(world.root / "store.sqlite", steps / "store.sqlite")
    world.store = SqliteReceiptStore(world.root / "store.sqlite")

    report.say("1-2. find, claim, format and write, each alone (on a copy of the seeded store):")
    bench_store_steps(report, steps / "store.sqlite", steps / "objects", world.provider, args.lines)
    shutil.rmtree(steps, ignore_errors=True)

    report.say("1-2. the real prepare step:")
    requests = bench_prepare(report, world)
    pipeline = world.pipeline()
    _, seconds = timed(lambda: pipeline.submit(KIND, quiet))
    report.row("submit (Pipeline.submit: upload + create)", len(world.records([Stage.SUBMITTED])), "batches", seconds)
    pipeline.poll(KIND, 1000)
    provider = world.provider
    report.row("provider stand-in output (numpy + base64, not a target)", provider.generated_vectors, "vectors",
               provider.generate_seconds, mb=provider.generated_bytes / MB)

    report.say("3. result parsing:")
    completed = world.records([Stage.COMPLETED])
    outputs = [provider.file_path(r.output_file_id) for r in completed]
    parse_rate = bench_parse(report, outputs, "parse base64 (iter_results)", target=f">= {PARSE_TARGET:,} vectors/s")
    report.verdicts.append(Verdict(f"parse base64 >= {PARSE_TARGET:,} vectors/s", parse_rate >= PARSE_TARGET,
                                   f"{parse_rate:,.0f} vectors/s"))
    ids = [e["custom_id"] for _, e in zip(range(args.float_results), world.manifest_entries())]
    float_file = provider.file_path(provider.add_result_file(ids, encoding="float"))
    bench_parse(report, [float_file], f"parse float lists (iter_results, {len(ids):,} results)",
                target="DESIGN: ~11k/s")
    float_file.unlink()

    clock = Clock()
    ingesting = Pipeline(world.store, Timed(world.objects, clock, ["download", "put_file"], "objects."),
                         Timed(provider, clock, ["download"], "provider."), world.root / "tmp", budget=Budget())

    def ingest_all() -> int:
        return sum(ingesting.ingest(r.batch_id, quiet).vectors for r in completed)

    vectors, seconds = timed(ingest_all)
    report.row("ingest (Pipeline.ingest: download+parse+delta+release)", vectors, "vectors", seconds)
    c = clock.seconds
    report.notes.append(
        f"ingest breakdown: output download {c['provider.download']:.2f}s, manifest download "
        f"{c['objects.download']:.2f}s, delta put {c['objects.put_file']:.2f}s, parse + match + delta write + "
        f"release {seconds - sum(c.values()):.2f}s"
    )

    report.say("4. delta writing:")
    bench_delta_write(report, world, args.dims, requests)
    templates = [e for _, e in zip(range(5000), world.manifest_entries())]
    world.store.close()
    shutil.rmtree(world.root, ignore_errors=True)

    report.say("5. compaction:")
    bench_compaction(report, work / "compact", receipts, args.dims, min(args.compact_lines, args.lines), args.lines)

    report.say("6. peak memory (one subprocess per run):")
    bench_memory(report, work, args.dims, args.sizes, templates)


if __name__ == "__main__":
    sys.exit(main())
