import copy
import json
import re
from pathlib import Path

import pytest

from embedding_assets.data.demo import generate_receipts
from embedding_assets.data.importer import ReceiptImportError, dump_receipts, load_receipts, receipt_to_json
from embedding_assets.domain.models import Status

DOCS = Path(__file__).resolve().parent.parent / "docs" / "IMPORT_FORMAT.md"


@pytest.fixture(scope="module")
def demo():
    return generate_receipts(12, seed=3)


@pytest.fixture
def record(demo):
    return receipt_to_json(demo[0])


def write_json(tmp_path: Path, records, name="in.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def write_ndjson(tmp_path: Path, records, name="in.ndjson") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def load_error(path: Path) -> ReceiptImportError:
    with pytest.raises(ReceiptImportError) as info:
        load_receipts(path)
    return info.value


@pytest.mark.parametrize("name", ["r.json", "r.ndjson", "r.jsonl", "r.txt"])
def test_round_trip(demo, tmp_path, name):
    path = tmp_path / name
    dump_receipts(demo, path)
    assert load_receipts(path) == demo


def test_dump_chooses_format_by_suffix(demo, tmp_path):
    dump_receipts(demo, tmp_path / "a.json")
    dump_receipts(demo, tmp_path / "a.ndjson")
    assert isinstance(json.loads((tmp_path / "a.json").read_text()), list)
    lines = (tmp_path / "a.ndjson").read_text().splitlines()
    assert [json.loads(line)["image_id"] for line in lines] == [r.image_id for r in demo]


def test_empty_inputs(tmp_path):
    dump_receipts([], tmp_path / "e.json")
    dump_receipts([], tmp_path / "e.ndjson")
    assert load_receipts(tmp_path / "e.json") == []
    assert load_receipts(tmp_path / "e.ndjson") == []


def test_container_object_and_ndjson_detected_by_content(demo, tmp_path):
    records = [receipt_to_json(r) for r in demo]
    container = write_json(tmp_path, {"receipts": records, "exported_by": "someone"}, "c.json")
    assert load_receipts(container) == demo
    assert load_receipts(write_ndjson(tmp_path, records, "n.json")) == demo
    assert load_receipts(write_ndjson(tmp_path, records[:1], "one.json")) == demo[:1]


def test_minimal_record_and_unknown_fields(tmp_path):
    box = {"x": 0.1, "y": 0.2, "width": 0.3, "height": 0.04, "angle": 0}
    path = write_json(tmp_path, [{
        "image_id": "img-1", "receipt_id": 2, "source": "scanner",
        "lines": [{"line_id": 7, "text": "TOTAL", "bounding_box": box, "confidence": 1, "corners": []}],
    }])
    [receipt] = load_receipts(path)
    assert receipt.merchant_name is None and receipt.words == []
    [line] = receipt.lines
    assert (line.key, line.text, line.confidence, line.is_noise, line.status) == (
        "IMAGE#img-1#RECEIPT#00002#LINE#00007", "TOTAL", 1.0, False, Status.NONE)


def test_docs_example_loads(tmp_path):
    example = re.search(r"```json\n(.*?)```", DOCS.read_text(), re.S).group(1)
    path = tmp_path / "example.json"
    path.write_text(example)
    [receipt] = load_receipts(path)
    assert [len(receipt.lines), len(receipt.words)] == [3, 3]
    item, price = receipt.lines[1:]
    assert item.box.contains_y(price.box.center_y)


def set_path(obj, path, value):
    """Set (or, with value DELETE, remove) obj[path]; path like 'lines.2.bounding_box.width'."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for p in parents:
        obj = obj[p]
    if value is DELETE:
        del obj[last]
    else:
        obj[last] = value


DELETE = object()

BAD_FIELDS = [
    ("image_id", DELETE, "image_id: required"),
    ("image_id", "", "image_id: must be a non-empty string"),
    ("image_id", 5, "image_id: must be a non-empty string"),
    ("image_id", "a#b", "image_id: must not contain '#'"),
    ("receipt_id", 0, "receipt_id: must be >= 1"),
    ("receipt_id", "1", "receipt_id: must be an integer"),
    ("receipt_id", True, "receipt_id: must be an integer"),
    ("merchant_name", 3, "merchant_name: must be a string or null"),
    ("lines", DELETE, "lines: required"),
    ("lines", {}, "lines: must be an array"),
    ("lines.2", "text", "lines[2]: must be an object"),
    ("lines.2.line_id", -1, "lines[2].line_id: must be >= 0"),
    ("lines.2.line_id", 1.0, "lines[2].line_id: must be an integer"),
    ("lines.2.text", None, "lines[2].text: must be a string"),
    ("lines.2.bounding_box", DELETE, "lines[2].bounding_box: required"),
    ("lines.2.bounding_box", [0, 0, 1, 1], "lines[2].bounding_box: must be an object"),
    ("lines.2.bounding_box.width", DELETE, "lines[2].bounding_box.width: required"),
    ("lines.2.bounding_box.width", 0, "lines[2].bounding_box.width: must be > 0"),
    ("lines.2.bounding_box.height", 0.0, "lines[2].bounding_box.height: must be > 0"),
    ("lines.2.bounding_box.x", -0.1, "lines[2].bounding_box.x: must be a number in [0, 1]"),
    ("lines.2.bounding_box.y", "0.5", "lines[2].bounding_box.y: must be a number in [0, 1]"),
    ("lines.2.bounding_box.y", float("nan"), "lines[2].bounding_box.y: must be a number in [0, 1]"),
    ("lines.2.bounding_box.x", 0.9, "lines[2].bounding_box.width: x + width must be <= 1"),
    ("lines.2.bounding_box.y", 0.99, "lines[2].bounding_box.height: y + height must be <= 1"),
    ("lines.2.confidence", 0, "lines[2].confidence: must be a number in (0, 1]"),
    ("lines.2.confidence", 1.01, "lines[2].confidence: must be a number in (0, 1]"),
    ("lines.2.confidence", DELETE, "lines[2].confidence: required"),
    ("lines.2.is_noise", "no", "lines[2].is_noise: must be true or false"),
    ("lines.2.words", "x", "lines[2].words: must be an array"),
    ("lines.2.words.0.word_id", DELETE, "lines[2].words[0].word_id: required"),
    ("lines.2.words.0.word_id", -2, "lines[2].words[0].word_id: must be >= 0"),
    ("lines.2.words.0.bounding_box.height", 2, "lines[2].words[0].bounding_box.height: must be a number in [0, 1]"),
    ("lines.2.words.0.confidence", None, "lines[2].words[0].confidence: must be a number in (0, 1]"),
    ("lines.2.words.0.is_noise", 1, "lines[2].words[0].is_noise: must be true or false"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_bad_field_names_record_and_field(demo, tmp_path, fmt, field, value, message):
    records = [receipt_to_json(r) for r in demo[:4]]
    set_path(records[3], field, value)
    if fmt == "json":
        err = load_error(write_json(tmp_path, records))
        where = "record 3"
    else:
        err = load_error(write_ndjson(tmp_path, records))
        where = "line 4"
    if field.startswith("image_id"):
        label = where
    elif field.startswith("receipt_id"):
        label = f"{where} (image {demo[3].image_id})"
    else:
        label = f"{where} (image {demo[3].image_id}, receipt {demo[3].receipt_id})"
    assert str(err).startswith(f"{label}: {message}"), str(err)
    assert (err.record, err.field) == (label, message.split(":")[0])


def test_record_not_an_object(demo, tmp_path):
    err = load_error(write_json(tmp_path, [receipt_to_json(demo[0]), 42]))
    assert str(err) == "record 1: must be a JSON object, got int"
    assert (err.record, err.field) == ("record 1", None)


def test_label_has_image_once_known(record, tmp_path):
    record["receipt_id"] = -1
    message = str(load_error(write_json(tmp_path, [record])))
    assert message.startswith(f"record 0 (image {record['image_id']}): receipt_id: must be >= 1")


def test_duplicate_receipt(demo, tmp_path):
    records = [receipt_to_json(r) for r in demo[:3]]
    records.append(copy.deepcopy(records[1]))
    err = load_error(write_json(tmp_path, records))
    assert str(err) == (
        f"record 3 (image {demo[1].image_id}, receipt {demo[1].receipt_id}): "
        "receipt_id: duplicate receipt, first seen at record 1"
    )
    assert "first seen at line 2" in str(load_error(write_ndjson(tmp_path, records)))


def test_same_image_other_receipt_is_fine(record, tmp_path):
    other = copy.deepcopy(record)
    other["receipt_id"] = record["receipt_id"] + 1
    assert len(load_receipts(write_json(tmp_path, [record, other]))) == 2


def test_duplicate_line_id(record, tmp_path):
    record["lines"][4]["line_id"] = record["lines"][1]["line_id"]
    err = load_error(write_json(tmp_path, [record]))
    assert str(err).endswith("lines[4].line_id: duplicate 1 (also lines[1])")
    assert err.field == "lines[4].line_id"


def test_duplicate_word_id(record, tmp_path):
    words = record["lines"][0]["words"]
    words[1]["word_id"] = words[0]["word_id"]
    err = load_error(write_json(tmp_path, [record]))
    assert str(err).endswith("lines[0].words[1].word_id: duplicate 0 (also lines[0].words[0])")


def test_invalid_json(demo, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"image_id": "a",\n   "receipt_id" 1}\n]')
    assert str(load_error(path)).startswith("invalid JSON at line 3 column")


def test_invalid_ndjson_line(demo, tmp_path):
    lines = [json.dumps(receipt_to_json(r)) for r in demo[:3]]
    lines.insert(2, "")  # blank lines are skipped but still counted
    lines[3] = lines[3][:-5]
    for name in ("bad.ndjson", "bad.json"):
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        assert str(load_error(path)).startswith("line 4: invalid JSON at column")


@pytest.mark.parametrize("content", ['42', '"receipts"', '{"receipts": {}}', '{\n"image_id": "a"\n}'])
def test_bad_top_level(tmp_path, content):
    path = tmp_path / "top.json"
    path.write_text(content)
    assert re.match(r"(top level|receipts): ", str(load_error(path)))


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"image_id": "caf\xe9"}]')
    assert str(load_error(path)).startswith("not UTF-8 text")


def test_text_with_line_separator_survives_ndjson(record, tmp_path):
    record["lines"][0]["text"] = "A\u2028B"
    record["lines"][0].pop("words")
    path = tmp_path / "sep.ndjson"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_receipts(path)[0].lines[0].text == "A\u2028B"
