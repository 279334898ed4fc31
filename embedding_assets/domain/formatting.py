"""Turning receipt items into embedding requests: which text a vector stands for is its recipe.

Lines are embedded per visual row (a price shares its item's vector). What
the input holds is the recipe, recorded on the collection beside the model:

* `row-lower` (lines, default): the row's own text, lower-cased. Search must
  find the row a person asks for; with the rows above and below in the input
  the neighbours of a total scored as high as the total itself (real receipts:
  precision@10 0.20 against 0.43), and the local model is case-sensitive while
  receipts are upper case and people type lower case.
* `context3` (lines): the seed system's input, row above, the row, row below,
  `<EDGE>` past either end, case kept: for finding rows in similar surroundings.
* `word-lower` (words, default): the word's own text, lower-cased.
* `context5` (words): the seed's `l2 l1 WORD r1 r2` along the visual line.

The ids, the `<EDGE>` marker and the row rule follow the seed system.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedding_assets.domain.models import Item, Status, line_key
from embedding_assets.domain.tokens import Fitted

EDGE = "<EDGE>"
LINE_RECIPES = ("row-lower", "context3")
WORD_RECIPES = ("word-lower", "context5")
RECIPES = {"lines": LINE_RECIPES, "words": WORD_RECIPES}
DEFAULT_RECIPES = {kind: recipes[0] for kind, recipes in RECIPES.items()}
# What collections built before recipes were recorded hold.
LEGACY_RECIPES = {kind: recipes[1] for kind, recipes in RECIPES.items()}
_SPACES = re.compile(r"\s+")
# An input as sent: cut to the provider's per-input limit in its own tokens, and counted.
Fit = Callable[[str], Fitted]


@dataclass
class Request:
    """One embedding request: id, input and its exact tokens, the items that follow its outcome, vector metadata."""

    custom_id: str
    input: str
    item_keys: list[str]
    metadata: dict[str, Any]
    tokens: int
    truncated: bool = False


@dataclass
class ReceiptRequests:
    """What one receipt contributes to a batch; a receipt is never split across files."""

    image_id: str
    receipt_id: int
    requests: list[Request] = field(default_factory=list)
    noise: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)  # item key -> its text as read, for the claim


def clean_text(text: str) -> str:
    """The text as sent: control, format and zero-width characters dropped, whitespace collapsed.

    OCR output carries stray control bytes and zero-width joiners that would
    change the vector without changing what a reader sees.
    """
    text = "".join(" " if ch.isspace() else "" if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return _SPACES.sub(" ", text).strip()


def noise_reason(item: Item) -> str | None:
    """Why an item is never sent, or None; empty input is rejected by the API, so it is noise."""
    if item.is_noise:
        return "marked is_noise"
    if not clean_text(item.text):
        return "empty text after cleaning"
    return None


def visual_rows(items: Sequence[Item]) -> list[list[Item]]:
    """Group items into rows, top to bottom, each row left to right.

    Two items share a row when one's vertical centre lies inside the other's
    box, grouped transitively; y grows upwards (seed convention).
    """
    ordered = sorted(items, key=lambda it: it.box.center_y)
    parent = list(range(len(ordered)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    tallest = max((it.box.height for it in ordered), default=0.0)
    for i, a in enumerate(ordered):
        for j in range(i + 1, len(ordered)):
            b = ordered[j]
            if b.box.center_y - a.box.center_y > tallest:
                break
            if a.box.contains_y(b.box.center_y) or b.box.contains_y(a.box.center_y):
                parent[find(j)] = find(i)
    groups: dict[int, list[Item]] = {}
    for i, it in enumerate(ordered):
        groups.setdefault(find(i), []).append(it)
    rows = [sorted(g, key=lambda it: (it.box.x, it.line_id, it.word_id or 0)) for g in groups.values()]
    rows.sort(key=lambda row: -sum(it.box.center_y for it in row) / len(row))
    return rows


def _row_text(row: Sequence[Item]) -> str:
    return " ".join(clean_text(it.text) for it in row)


def _union_box(row: Sequence[Item]) -> dict[str, float]:
    x0 = min(it.box.x for it in row)
    y0 = min(it.box.y for it in row)
    x1 = max(it.box.x + it.box.width for it in row)
    y1 = max(it.box.y + it.box.height for it in row)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}


def _base_metadata(item: Item, merchant_name: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"image_id": item.image_id, "receipt_id": item.receipt_id, "line_id": item.line_id}
    if merchant_name:
        meta["merchant_name"] = merchant_name
    return meta


def _split_noise(items: Sequence[Item]) -> tuple[ReceiptRequests, list[Item]]:
    """The receipt's empty request set with its new noise filled in, and the items that can be sent.

    Noise is left out of the rows too, so it is never context for a neighbour.
    """
    first = items[0] if items else None
    out = ReceiptRequests(first.image_id if first else "", first.receipt_id if first else 0)
    live: list[Item] = []
    for item in items:
        reason = noise_reason(item)
        if reason is None:
            live.append(item)
        elif item.status == Status.NONE:
            out.noise[item.key] = reason
    return out, live


def line_requests(
    lines: Sequence[Item], merchant_name: str | None, fit: Fit, recipe: str = "row-lower"
) -> ReceiptRequests:
    """One request per visual row that holds an unembedded line, its input made by `recipe`.

    The request carries the row's leftmost line id; every unembedded line of
    the row follows its outcome, so a price and its item name share a vector.
    """
    out, live = _split_noise(lines)
    rows = visual_rows(live)
    texts = [_row_text(row) for row in rows]
    for index, row in enumerate(rows):
        todo = [it.key for it in row if it.status == Status.NONE]
        if not todo:
            continue
        out.texts.update((it.key, it.text) for it in row if it.status == Status.NONE)
        if recipe == "context3":
            above = texts[index - 1] if index > 0 else EDGE
            below = texts[index + 1] if index + 1 < len(rows) else EDGE
            sent = fit(f"{above}\n{texts[index]}\n{below}")
        else:
            sent = fit(texts[index].lower())
        leftmost = row[0]
        meta = _base_metadata(leftmost, merchant_name)
        meta.update(_union_box(row))
        meta["text"] = texts[index]
        meta["confidence"] = min(it.confidence for it in row)
        meta["row_line_ids"] = ",".join(str(it.line_id) for it in row)
        meta["row"] = index  # 0 at the top: where a receipt's fields sit (see domain.fields)
        meta["recipe"] = recipe
        out.requests.append(Request(leftmost.key, sent.text, todo, meta, sent.tokens, sent.truncated))
    return out


def word_requests(
    words: Sequence[Item], merchant_name: str | None, fit: Fit, recipe: str = "word-lower"
) -> ReceiptRequests:
    """One request per unembedded word, its input made by `recipe`."""
    out, live = _split_noise(words)
    for row_index, row in enumerate(visual_rows(live)):
        texts = [clean_text(w.text) for w in row]
        for index, word in enumerate(row):
            if word.status != Status.NONE:
                continue
            out.texts[word.key] = word.text
            if recipe == "context5":
                left = [texts[i] if i >= 0 else EDGE for i in (index - 2, index - 1)]
                right = [texts[i] if i < len(row) else EDGE for i in (index + 1, index + 2)]
                sent = fit(" ".join([*left, texts[index], *right]))
            else:
                sent = fit(texts[index].lower())
            meta = _base_metadata(word, merchant_name)
            meta.update(word_id=word.word_id, text=texts[index], confidence=word.confidence, recipe=recipe,
                        row=row_index)
            meta.update(x=word.box.x, y=word.box.y, width=word.box.width, height=word.box.height)
            out.requests.append(Request(word.key, sent.text, [word.key], meta, sent.tokens, sent.truncated))
    return out


def item_keys_of_vector(vector_id: str, metadata: dict[str, Any]) -> list[str]:
    """The item ids a stored vector stands for (a line vector covers its whole row)."""
    row = metadata.get("row_line_ids")
    if not row:
        return [vector_id]
    return [line_key(metadata["image_id"], int(metadata["receipt_id"]), int(lid)) for lid in str(row).split(",")]
