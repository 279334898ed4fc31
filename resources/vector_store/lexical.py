"""The lexical side of search: an SQLite FTS5 index of the row texts of one published version.

Receipt vocabulary (TOTAL, GST, CASH, CHANGE, dates, phone numbers) is matched
exactly here where the embedding model is weak. The index is built from the
collection itself when a version is staged and travels in the same archive, so
it always holds the same items as the vectors of that version. FTS5's
`unicode61` tokenizer folds case and splits `12/03/2018` into `12 03 2018`; a
query is folded the same way, and each of its whitespace-separated pieces is
matched as a phrase, so a typed date or phone number matches as a sequence.

A row's lexical score is the summed rarity (idf) of the query pieces it holds,
so "total amount" puts rows holding both words first and a rare word counts
for more than a common one; `bm25()` orders rows of equal score. The score
deliberately ignores how long a row is: bm25's length penalty ranked a bare
"Sub Total" above "TOTAL 61.00" (an amount splits into two tokens), and which
of the rows holding a word is meant is for the embedding model to say.
"""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path
from typing import Any

FILE_NAME = "lexical.sqlite3"
_TOKEN = re.compile(r"\w+")
_PAGE = 5000
# Rows whose bm25 order is read to break ties between equal scores; the rest keep the index's order.
_TIE_BREAK = 1000
_DF_CACHE = 4096


def build_index(collection: Any, path: Path) -> int:
    """Write the index of every item in `collection` to `path` (replaced whole); returns the rows indexed."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.execute(
            "CREATE VIRTUAL TABLE rows USING fts5(text, id UNINDEXED, receipt UNINDEXED, merchant UNINDEXED, "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        db.execute("CREATE TABLE merchants(name TEXT PRIMARY KEY, folded TEXT) WITHOUT ROWID")
        db.execute("CREATE INDEX merchants_folded ON merchants(folded)")
        count, offset = 0, 0
        while True:
            got = collection.get(limit=_PAGE, offset=offset, include=["documents", "metadatas"])
            if not got["ids"]:
                break
            db.executemany(
                "INSERT INTO rows(text, id, receipt, merchant) VALUES (?, ?, ?, ?)",
                [(doc or (meta or {}).get("text", ""), vid, receipt_ref(meta or {}),
                  str((meta or {}).get("merchant_name") or "").lower())
                 for vid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"])],
            )
            db.executemany("INSERT OR IGNORE INTO merchants(name, folded) VALUES (?, ?)",
                           [(m["merchant_name"], str(m["merchant_name"]).lower())
                            for m in got["metadatas"] if m and m.get("merchant_name")])
            count += len(got["ids"])
            offset += len(got["ids"])
        db.commit()
    finally:
        db.close()
    tmp.replace(path)
    return count


def receipt_ref(meta: dict[str, Any]) -> str:
    """`IMAGE_ID:RECEIPT_ID`, as the search filter names a receipt."""
    return f"{meta.get('image_id', '')}:{int(meta.get('receipt_id') or 0)}"


def phrases(text: str) -> list[str]:
    """What a person typed as FTS5 phrases: each whitespace-separated piece, its folded tokens in order."""
    found = []
    for piece in text.split():
        tokens = _TOKEN.findall(piece.lower())
        if tokens:
            found.append('"' + " ".join(tokens) + '"')
    return list(dict.fromkeys(found))


class FtsIndex:
    """A built index opened read-only; safe to share between threads of one process."""

    def __init__(self, path: Path):
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        # The index never changes once built, so its size and each phrase's frequency can be kept.
        self._rows = self._db.execute("SELECT count(*) FROM rows").fetchone()[0]
        self._df: dict[str, int] = {}

    def rank(self, text: str, limit: int | None, receipt: str | None = None,
             merchant: str | None = None) -> list[tuple[str, float]]:
        """(id, score) of matching items, best (highest score) first, all of them without a `limit`."""
        weights = self._idf(phrases(text))
        if not weights:
            return []
        filters, args = "", []
        if receipt is not None:
            filters += " AND receipt = ?"
            args.append(receipt)
        if merchant is not None:
            filters += " AND merchant = ?"
            args.append(merchant.lower())
        score: dict[str, float] = {}
        for phrase, idf in weights.items():
            for (vid,) in self._db.execute(f"SELECT id FROM rows WHERE rows MATCH ?{filters}", [phrase, *args]):
                score[vid] = score.get(vid, 0.0) + idf
        either = " OR ".join(weights)
        by_bm25 = {vid: i for i, (vid,) in enumerate(self._db.execute(
            f"SELECT id FROM rows WHERE rows MATCH ?{filters} ORDER BY rank LIMIT ?", [either, *args, _TIE_BREAK]))}
        ranked = sorted(score, key=lambda vid: (-score[vid], by_bm25.get(vid, _TIE_BREAK)))[:limit]
        return [(vid, score[vid]) for vid in ranked]

    def _idf(self, wanted: list[str]) -> dict[str, float]:
        """Each phrase that occurs at all, with its rarity over the whole version."""
        weights = {}
        for phrase in wanted:
            if phrase not in self._df:
                if len(self._df) >= _DF_CACHE:
                    self._df.clear()
                self._df[phrase] = self._db.execute("SELECT count(*) FROM rows WHERE rows MATCH ?",
                                                    (phrase,)).fetchone()[0]
            df = self._df[phrase]
            if df:
                weights[phrase] = math.log(1 + (self._rows - df + 0.5) / (df + 0.5))
        return weights

    def merchant_names(self, merchant: str) -> list[str]:
        """The stored spellings of a merchant name, matched case-insensitively."""
        rows = self._db.execute("SELECT name FROM merchants WHERE folded = ?", (merchant.strip().lower(),))
        return [row[0] for row in rows]

    def close(self) -> None:
        self._db.close()
