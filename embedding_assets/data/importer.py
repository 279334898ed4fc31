"""Reading receipts from JSON files, checked in full before anything is stored.

The caller writes the returned receipts in one transaction, so a file is
either imported whole or not at all; every check therefore happens here, and
the first problem stops the import with a message naming the record and the
field, which is what someone fixing a hand-made or exported file needs.

File format (also in docs/IMPORT_FORMAT.md)
-------------------------------------------
UTF-8 text in one of three shapes:

* a JSON array of receipt objects;
* a JSON object ``{"receipts": [...]}`` (other keys are ignored);
* NDJSON: one receipt object per line, blank lines skipped. Used when the
  file name ends in ``.ndjson`` or ``.jsonl``, or when the content is not a
  single JSON document but its first line is.

Receipt object::

    image_id       string, required, non-empty, without "#"
    receipt_id     integer >= 1, required
    merchant_name  string or null, optional
    lines          array of line objects, required (may be empty)

Line object::

    line_id        integer >= 0, required, unique within the receipt
    text           string, required; blank text is kept and becomes NOISE, never sent;
                   lone surrogate escapes (not valid Unicode) are rejected
    bounding_box   box object, required
    confidence     number, 0 < confidence <= 1, required
    is_noise       boolean, optional (default false)
    words          array of word objects, optional

Word object: ``word_id`` (integer >= 0, unique within its line), ``text``,
``bounding_box``, ``confidence`` and ``is_noise`` as for a line.

Box object: numbers ``x``, ``y``, ``width``, ``height``, normalised to the
receipt, y = 0 at its bottom; each in [0, 1], width and height > 0, and
x + width and y + height at most 1 (with 1e-6 of slack for rounding).

Keys not listed are ignored at every level, so exports carrying more (say,
corner points or angles) import as they are. (image_id, receipt_id) must be
unique within a file. Statuses are not part of the format: every imported
item starts as NONE.

Errors read ``record 3 (image 5f..., receipt 1): lines[2].bounding_box.width:
must be > 0`` for arrays (records counted from 0) and ``line 7 (...)`` for
NDJSON (file lines counted from 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from embedding_assets.domain.models import Box, Item, Receipt

NDJSON_SUFFIXES = frozenset({".ndjson", ".jsonl"})
_SLACK = 1e-6


# Bad records named in one failed import, at most: enough to fix a file in one pass, not a flood.
MAX_REPORTED = 20


class ReceiptImportError(ValueError):
    """The file cannot be imported; `record` and `field` locate the problem when known.

    A file with several bad records raises one error for all of them: `problems`
    holds each record's own error (the first `MAX_REPORTED`), `bad_records`
    counts them all, and `record`/`field` are the first one's.
    """

    def __init__(self, message: str, record: str | None = None, field: str | None = None,
                 problems: list[ReceiptImportError] | None = None, bad_records: int = 1) -> None:
        super().__init__(message)
        self.record = record
        self.field = field
        self.problems = problems if problems is not None else [self]
        self.bad_records = bad_records


def _all_of(problems: list[ReceiptImportError]) -> ReceiptImportError:
    if len(problems) == 1:
        return problems[0]
    first = problems[0]
    return ReceiptImportError(f"{len(problems)} bad records, the first: {first}", first.record, first.field,
                              problems[:MAX_REPORTED], len(problems))


class _FieldError(Exception):
    """Raised inside one record, before the record's label is known to the raiser; field "" is the record itself."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


def _is_number(value: Any) -> bool:
    # Exact types, because bool is an int subclass. NaN and Infinity, which
    # json accepts, fail the range check every caller makes next.
    return type(value) is float or type(value) is int


def _get(obj: dict[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise _FieldError(f"{path}{key}", "required")
    return obj[key]


def _int(obj: dict[str, Any], key: str, path: str, minimum: int) -> int:
    value = _get(obj, key, path)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _FieldError(f"{path}{key}", f"must be an integer, got {value!r}")
    if value < minimum:
        raise _FieldError(f"{path}{key}", f"must be >= {minimum}, got {value}")
    return value


def _entries(obj: dict[str, Any], key: str, path: str, id_field: str) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(path prefix, object, id) of each entry of a lines or words array; a repeated id names its twin."""
    seen: dict[int, int] = {}
    for i, entry in enumerate(_list(obj, key, path)):
        here = f"{path}{key}[{i}]"
        if not isinstance(entry, dict):
            raise _FieldError(here, "must be an object")
        here += "."
        entry_id = _int(entry, id_field, here, 0)
        if entry_id in seen:
            raise _FieldError(f"{here}{id_field}", f"duplicate {entry_id} (also {path}{key}[{seen[entry_id]}])")
        seen[entry_id] = i
        yield here, entry, entry_id


def _text(obj: dict[str, Any], path: str) -> str:
    value = _get(obj, "text", path)
    if not isinstance(value, str):
        raise _FieldError(f"{path}text", f"must be a string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _FieldError(f"{path}text", "is not valid Unicode (a lone surrogate escape)") from None
    return value


def _confidence(obj: dict[str, Any], path: str) -> float:
    value = _get(obj, "confidence", path)
    if not _is_number(value) or not 0 < value <= 1:
        raise _FieldError(f"{path}confidence", f"must be a number in (0, 1], got {value!r}")
    return float(value)


def _is_noise(obj: dict[str, Any], path: str) -> bool:
    value = obj.get("is_noise", False)
    if not isinstance(value, bool):
        raise _FieldError(f"{path}is_noise", f"must be true or false, got {value!r}")
    return value


def _box(obj: dict[str, Any], path: str) -> Box:
    value = _get(obj, "bounding_box", path)
    path = f"{path}bounding_box"
    if not isinstance(value, dict):
        raise _FieldError(path, "must be an object")
    nums = {}
    for key in ("x", "y", "width", "height"):
        num = _get(value, key, f"{path}.")
        if not _is_number(num) or not 0 <= num <= 1:
            raise _FieldError(f"{path}.{key}", f"must be a number in [0, 1], got {num!r}")
        nums[key] = float(num)
    for key in ("width", "height"):
        if nums[key] <= 0:
            raise _FieldError(f"{path}.{key}", "must be > 0")
    if nums["x"] + nums["width"] > 1 + _SLACK:
        raise _FieldError(f"{path}.width", "x + width must be <= 1")
    if nums["y"] + nums["height"] > 1 + _SLACK:
        raise _FieldError(f"{path}.height", "y + height must be <= 1")
    return Box(**nums)


def _list(obj: dict[str, Any], key: str, path: str) -> list[Any]:
    value = _get(obj, key, path)
    if not isinstance(value, list):
        raise _FieldError(f"{path}{key}", "must be an array")
    return value


def _receipt(obj: Any, context: dict[str, Any]) -> Receipt:
    """Build one receipt; `context` collects image and receipt ids as they pass, for the error label."""
    if not isinstance(obj, dict):
        raise _FieldError("", f"must be a JSON object, got {type(obj).__name__}")
    image_id = _get(obj, "image_id", "")
    if not isinstance(image_id, str) or not image_id:
        raise _FieldError("image_id", f"must be a non-empty string, got {image_id!r}")
    if "#" in image_id:
        raise _FieldError("image_id", "must not contain '#' (it separates the parts of item keys)")
    context["image_id"] = image_id
    receipt_id = _int(obj, "receipt_id", "", 1)
    context["receipt_id"] = receipt_id
    merchant = obj.get("merchant_name")
    if merchant is not None and not isinstance(merchant, str):
        raise _FieldError("merchant_name", f"must be a string or null, got {merchant!r}")

    receipt = Receipt(image_id=image_id, receipt_id=receipt_id, merchant_name=merchant)
    for path, line, line_id in _entries(obj, "lines", "", "line_id"):
        receipt.lines.append(Item(
            image_id, receipt_id, line_id, _text(line, path), _box(line, path), _confidence(line, path),
            is_noise=_is_noise(line, path),
        ))
        if "words" not in line:
            continue
        for wpath, word, word_id in _entries(line, "words", path, "word_id"):
            receipt.words.append(Item(
                image_id, receipt_id, line_id, _text(word, wpath), _box(word, wpath), _confidence(word, wpath),
                word_id=word_id, is_noise=_is_noise(word, wpath),
            ))
    return receipt


def _label(where: str, context: dict[str, Any]) -> str:
    if "receipt_id" in context:
        return f"{where} (image {context['image_id']}, receipt {context['receipt_id']})"
    if "image_id" in context:
        return f"{where} (image {context['image_id']})"
    return where


def _build(records: Iterable[tuple[str, Any]]) -> list[Receipt]:
    """Every record checked, so one failed import names every bad record; nothing is returned if any is bad."""
    out: list[Receipt] = []
    problems: list[ReceiptImportError] = []
    first_seen: dict[tuple[str, int], str] = {}
    for where, obj in records:
        if isinstance(obj, ReceiptImportError):  # a line that is not JSON
            problems.append(obj)
            continue
        context: dict[str, Any] = {}
        try:
            receipt = _receipt(obj, context)
        except _FieldError as exc:
            label = _label(where, context)
            problems.append(ReceiptImportError(f"{label}: {exc}", record=label, field=exc.field or None))
            continue
        key = (receipt.image_id, receipt.receipt_id)
        if key in first_seen:
            label = _label(where, context)
            message = f"{label}: receipt_id: duplicate receipt, first seen at {first_seen[key]}"
            problems.append(ReceiptImportError(message, record=label, field="receipt_id"))
            continue
        first_seen[key] = where
        out.append(receipt)
    if problems:
        raise _all_of(problems)
    return out


def _ndjson_records(text: str) -> Iterator[tuple[str, Any]]:
    """(where, parsed record), or (where, ReceiptImportError) for a line that does not parse."""
    # Only "\n" ends a record: str.splitlines would also split inside strings holding U+2028 and the like.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        where = f"line {number}"
        try:
            yield where, json.loads(raw)
        except json.JSONDecodeError as exc:
            yield where, ReceiptImportError(f"{where}: invalid JSON at column {exc.colno}: {exc.msg}", record=where)


def _first_line_parses(text: str) -> bool:
    first = next((line for line in text.split("\n") if line.strip()), "")
    try:
        json.loads(first)
    except json.JSONDecodeError:
        return False
    return True


def load_receipts(path: Path) -> list[Receipt]:
    """Every receipt in the file, or ReceiptImportError and nothing."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReceiptImportError(f"not UTF-8 text: byte {exc.start}: {exc.reason}") from None
    if path.suffix.lower() in NDJSON_SUFFIXES:
        return _build(_ndjson_records(text))
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        # Several documents, one per line: NDJSON under another name.
        if _first_line_parses(text):
            return _build(_ndjson_records(text))
        raise ReceiptImportError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if isinstance(doc, dict) and "receipts" in doc:
        doc = doc["receipts"]
        if not isinstance(doc, list):
            raise ReceiptImportError("receipts: must be an array", field="receipts")
    elif isinstance(doc, dict) and "\n" not in text.strip():
        # A single receipt on one line is a one-record NDJSON file.
        return _build(_ndjson_records(text))
    if not isinstance(doc, list):
        raise ReceiptImportError(
            'top level: expected an array of receipts, an object with a "receipts" array, or NDJSON'
        )
    return _build((f"record {i}", obj) for i, obj in enumerate(doc))


def _box_json(box: Box) -> dict[str, float]:
    return {"x": box.x, "y": box.y, "width": box.width, "height": box.height}


def _item_json(item: Item, id_key: str, id_value: int | None) -> dict[str, Any]:
    return {
        id_key: id_value, "text": item.text, "bounding_box": _box_json(item.box),
        "confidence": item.confidence, "is_noise": item.is_noise,
    }


def receipt_to_json(receipt: Receipt) -> dict[str, Any]:
    """The format's receipt object; words nest under their lines, so a word without its line cannot be written."""
    lines = []
    by_line: dict[int, list[dict[str, Any]]] = {}
    for line in receipt.lines:
        obj = _item_json(line, "line_id", line.line_id)
        obj["words"] = by_line[line.line_id] = []
        lines.append(obj)
    for word in receipt.words:
        if word.line_id not in by_line:
            raise ValueError(f"{receipt.key}: word {word.word_id} names line {word.line_id}, which the receipt lacks")
        by_line[word.line_id].append(_item_json(word, "word_id", word.word_id))
    return {
        "image_id": receipt.image_id, "receipt_id": receipt.receipt_id,
        "merchant_name": receipt.merchant_name, "lines": lines,
    }


def dump_receipts(receipts: Iterable[Receipt], path: Path) -> None:
    """Write receipts so that load_receipts gives them back.

    Either shape keeps one receipt per text line, so exports diff and grep well.
    """
    path = Path(path)
    rows = [json.dumps(receipt_to_json(r), ensure_ascii=False, separators=(",", ":")) for r in receipts]
    if path.suffix.lower() in NDJSON_SUFFIXES:
        body = "".join(row + "\n" for row in rows)
    else:
        body = "[\n" + ",\n".join(rows) + "\n]\n" if rows else "[]\n"
    path.write_text(body, encoding="utf-8")
