"""Finding receipt lines or words: vector, lexical, or both fused (the default).

Search answers from a whole published version (see `VectorLine.open_view`),
never the compactor's working copy, so it answers while a compaction or a
re-embed runs. The query is embedded with the model, size and recipe recorded
on that version's collection; a lower-casing recipe lower-cases the query too.

Hybrid: the vector ranking and the lexical ranking (FTS5, see
`resources.vector_store.lexical`) are fused by reciprocal rank fusion,
score = 1/(K + vector rank) + W/(K + lexical rank), over the top CANDIDATES
of each; every lexical match of a vector candidate counts, however far down.

Keywords say which rows hold a word, not which of them is meant (TOTAL QTY
beside TOTAL, TAX INVOICE beside GST 6%), so rows holding the same query
words share one lexical rank (competition ranking) and the vectors order
them. Plain RRF over bm25 ranks scored below vectors alone on real receipts:
bm25 ranks short label-only rows first and spreads equal matches over many
ranks. With shared ranks the two sides get equal weight: a row holding the
query words then counts as much as the model's best guess, which is what
finds dates and CASH rows where the model is weak (keyword matching alone
scored 0.9 and 1.0 precision@10 on those on real receipts, vectors 0.0-0.6).
Where the lexical side matches nothing, the vector ranking stands as it is.

A query that only names a field by what it is ("company name") is answered
from the rows where receipts print that field (`domain.fields`), in hybrid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedding_assets.domain.fields import header_rows
from embedding_assets.domain.ports import BatchProvider, SearchView, VectorLine

MODES = ("hybrid", "vector", "lexical")
CANDIDATES = 100
RRF_K = 60
LEXICAL_WEIGHT = 1.0


@dataclass
class Hit:
    id: str
    text: str
    merchant_name: str | None
    image_id: str
    receipt_id: int
    score: float
    distance: float | None
    metadata: dict[str, Any]


class NoSnapshot(LookupError):
    """Nothing has been published for this kind yet."""


@dataclass(frozen=True)
class Query:
    """What a person asked for; `receipt` is `IMAGE_ID:RECEIPT_ID`, `merchant` matches case-insensitively.

    Both filters are held in one canonical form (`IMG:00001` as `IMG:1`, the merchant without surrounding
    spaces), since the vector side and the lexical side each compare them their own way.
    """

    text: str
    k: int = 5
    mode: str = "hybrid"
    merchant: str | None = None
    receipt: str | None = None

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("search text is empty")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.receipt is not None:
            image_id, receipt_id = parse_receipt(self.receipt)
            object.__setattr__(self, "receipt", f"{image_id}:{receipt_id}")
        if self.merchant is not None:
            object.__setattr__(self, "merchant", self.merchant.strip())


def parse_receipt(ref: str) -> tuple[str, int]:
    image_id, sep, receipt_id = ref.rpartition(":")
    if not sep or not image_id or not receipt_id.isdigit():
        raise ValueError(f"receipt must be IMAGE_ID:RECEIPT_ID (e.g. 0f3c...:1), got {ref!r}")
    return image_id, int(receipt_id)


class Searcher:
    """Opened versions kept between queries, one per line; a newly published version replaces its view."""

    def __init__(self) -> None:
        self._views: dict[tuple[str, str], SearchView] = {}

    def view(self, line: VectorLine) -> SearchView:
        key = (line.kind, line.line)
        pointer = line.latest()
        if pointer is None or not pointer.published:
            raise NoSnapshot(f"no {line.kind} snapshot published yet: run the pipeline first")
        held = self._views.get(key)
        if held is not None and held.version == pointer.version:
            return held
        view = line.open_view()
        if view is None:
            raise NoSnapshot(f"no {line.kind} snapshot published yet: run the pipeline first")
        if held is not None:
            held.close()
        self._views[key] = view
        return view

    def close(self) -> None:
        for view in self._views.values():
            view.close()
        self._views.clear()

    def search(self, line: VectorLine, provider: BatchProvider, query: Query) -> list[Hit]:
        return search_view(self.view(line), provider, query)


def search_view(view: SearchView, provider: BatchProvider, query: Query) -> list[Hit]:
    """The best `query.k` items of one opened version, best first; [] when nothing passes the filters."""
    merchants = view.lexical.merchant_names(query.merchant) if query.merchant is not None else None
    if merchants == []:
        return []
    depth = query.k if query.mode == "vector" else max(query.k, CANDIDATES)
    # A field named by what it is (see domain.fields): hybrid ranks only the top rows that hold it, in a
    # collection whose every vector records its row (`rows`; older collections hold vectors without).
    rows_recorded = bool((view.collection.metadata or {}).get("rows"))
    top = header_rows(query.text) if query.mode == "hybrid" and rows_recorded else None
    embedding = _query_embedding(view, provider, query) if query.mode != "lexical" else None
    vector = _vector_ranking(view, embedding, _where(query, merchants, top), depth) if top else {}
    in_header = bool(vector)
    if not in_header and embedding is not None:
        vector = _vector_ranking(view, embedding, _where(query, merchants), depth)
    lexical: list[tuple[str, float]] = []
    if query.mode != "vector":
        # hybrid takes every match, so a vector candidate past the lexical top still gets its keyword's due
        limit = depth if query.mode == "lexical" else None
        lexical = view.lexical.rank(query.text, limit, query.receipt, query.merchant)
        if in_header:
            lexical = [(vid, score) for vid, score in lexical if vid in vector]
    if query.mode == "vector":
        scores = {vid: 1.0 - dist for vid, (_, dist) in vector.items()}
    elif query.mode == "lexical":
        scores = {vid: 1.0 / (rank + 1) for rank, (vid, _) in enumerate(lexical)}
    else:
        scores = _fuse(list(vector), lexical)
    best = sorted(scores, key=lambda vid: -scores[vid])[: query.k]
    missing = [vid for vid in best if vid not in vector]
    fetched = view.collection.get(ids=missing, include=["metadatas", "documents"]) if missing else None
    rows: dict[str, tuple[str | None, dict[str, Any]]] = {vid: (doc_meta[0], doc_meta[1])
                                                          for vid, (doc_meta, _) in vector.items()}
    if fetched is not None:
        rows.update({vid: (doc, meta or {}) for vid, doc, meta in
                     zip(fetched["ids"], fetched["documents"], fetched["metadatas"])})
    return [_hit(vid, *rows[vid], scores[vid], vector[vid][1] if vid in vector else None)
            for vid in best if vid in rows]


def _fuse(vector: list[str], lexical: list[tuple[str, float]]) -> dict[str, float]:
    """RRF over the vector candidates and the lexical top CANDIDATES; every lexical match of a candidate counts."""
    scores: dict[str, float] = {}
    for rank, vid in enumerate(vector):
        scores[vid] = 1.0 / (RRF_K + rank + 1)
    rank, previous = 0, None
    for position, (vid, score) in enumerate(lexical):
        if score != previous:
            rank, previous = position, score
        if position < CANDIDATES or vid in scores:
            scores[vid] = scores.get(vid, 0.0) + LEXICAL_WEIGHT / (RRF_K + rank + 1)
    return scores


def _where(query: Query, merchants: list[str] | None, top_rows: int | None = None) -> dict[str, Any] | None:
    """Chroma's filter for the query; `merchants` are the stored spellings of the asked merchant, `top_rows`
    keeps each receipt's first rows only."""
    clauses: list[dict[str, Any]] = [{"row": {"$lt": top_rows}}] if top_rows else []
    if query.receipt is not None:
        image_id, receipt_id = parse_receipt(query.receipt)
        clauses += [{"image_id": image_id}, {"receipt_id": receipt_id}]
    if merchants is not None:
        clauses.append({"merchant_name": {"$in": merchants}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _query_embedding(view: SearchView, provider: BatchProvider, query: Query) -> Any:
    """The query embedded as the version's vectors were: its model, size, and lower-cased for a -lower recipe."""
    meta = view.collection.metadata or {}
    text = query.text.lower() if str(meta.get("recipe") or "").endswith("-lower") else query.text
    return provider.embed([text], meta.get("model"), int(meta.get("dimensions") or 0) or None)


def _vector_ranking(view: SearchView, embedding: Any, where: dict[str, Any] | None,
                    depth: int) -> dict[str, tuple[tuple[str | None, dict[str, Any]], float]]:
    """id -> ((document, metadata), distance), nearest first (dicts keep insertion order)."""
    result = view.collection.query(query_embeddings=embedding, n_results=depth, where=where,
                                   include=["metadatas", "documents", "distances"])
    return {vid: ((doc, m or {}), float(dist)) for vid, doc, m, dist in
            zip(result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0])}


def _hit(vid: str, doc: str | None, meta: dict[str, Any], score: float, distance: float | None) -> Hit:
    return Hit(vid, doc or meta.get("text", ""), meta.get("merchant_name"), meta.get("image_id", ""),
               int(meta.get("receipt_id", 0)), score, distance, meta)


def search(line: VectorLine, provider: BatchProvider, text: str, k: int = 5, merchant: str | None = None,
           mode: str = "hybrid", receipt: str | None = None) -> list[Hit]:
    """One query against the line's latest version, opened and closed for it (a `Searcher` keeps it open)."""
    searcher = Searcher()
    try:
        return searcher.search(line, provider, Query(text, k, mode, merchant, receipt))
    finally:
        searcher.close()
