"""Odd receipts each get a documented outcome, and none stops the others from being embedded."""

from __future__ import annotations

import json

import pytest

from embedding_assets.data.importer import ReceiptImportError, load_receipts
from embedding_assets.domain.formatting import line_requests, visual_rows
from embedding_assets.domain.models import Receipt, Status
from tests.crashes import drive
from tests.support import fit, line


def _odd_receipts() -> list[Receipt]:
    control = Receipt("img-control", 1, "Odd Shop", lines=[
        line(0, "TOT\x00AL\x07 9.99", 0.05, 0.8, image_id="img-control"),
        line(1, "\u200b\u200d", 0.05, 0.7, image_id="img-control"),  # only zero-width: NOISE
        line(2, "CAF\u00c9 \U0001f600", 0.05, 0.6, image_id="img-control"),
    ])
    degenerate = Receipt("img-flat", 1, None, lines=[
        line(0, "FLAT", 0.05, 0.5, width=0.0, height=0.0, image_id="img-flat"),
        line(1, "ALSO FLAT", 0.5, 0.5, width=0.0, height=0.0, image_id="img-flat"),
    ])
    huge = Receipt("img-huge", 1, "Warehouse", lines=[
        line(i, f"ITEM {i} 1.00", 0.05, 0.99 - i * 0.99 / 3000, height=0.99 / 3000 * 0.9, image_id="img-huge")
        for i in range(3000)
    ])
    normal = Receipt("img-normal", 1, "Corner Market", lines=[line(0, "MILK 3.99", 0.05, 0.5, image_id="img-normal")])
    return [control, degenerate, huge, normal]


def test_odd_receipts_are_embedded_or_marked_and_never_stop_the_run(runtime):
    runtime.store.put_receipts(_odd_receipts())
    drive(runtime, "lines")
    counts = runtime.store.status_counts("lines")
    assert counts == {Status.SUCCESS.value: 3 + 2 + 3000 + 1 - 1, Status.NOISE.value: 1}
    noise = list(runtime.store.items_with_status("lines", Status.NOISE.value))
    assert noise[0].last_error == "empty text after cleaning"


def test_control_characters_are_dropped_from_the_input_not_sent():
    built = line_requests(_odd_receipts()[0].lines, None, fit(), "context3")  # one input holds both rows
    assert all("\x00" not in r.input and "\u200b" not in r.input for r in built.requests)
    assert "TOTAL 9.99" in built.requests[0].input and "CAF\u00c9 \U0001f600" in built.requests[0].input


def test_zero_height_boxes_on_one_height_share_a_row():
    rows = visual_rows(_odd_receipts()[1].lines)
    assert [[it.text for it in row] for row in rows] == [["FLAT", "ALSO FLAT"]]


def test_a_thousands_of_lines_receipt_makes_one_request_per_row():
    built = line_requests(_odd_receipts()[2].lines, None, fit())
    assert len(built.requests) == 3000


def test_invalid_utf8_and_duplicate_ids_in_an_import_are_rejected_whole(tmp_path):
    bad_bytes = tmp_path / "bad.json"
    bad_bytes.write_bytes(b'[{"image_id": "\xff\xfe", "receipt_id": 1, "lines": []}]')
    with pytest.raises(ReceiptImportError):
        load_receipts(bad_bytes)
    record = {"image_id": "a", "receipt_id": 1, "lines": [
        {"line_id": 0, "text": "A", "bounding_box": {"x": 0, "y": 0, "width": 0.1, "height": 0.1}, "confidence": 0.9},
        {"line_id": 0, "text": "B", "bounding_box": {"x": 0, "y": 0.2, "width": 0.1, "height": 0.1}, "confidence": 0.9},
    ]}
    surrogate = tmp_path / "surrogate.json"
    surrogate.write_text(json.dumps([record]).replace('"text": "A"', '"text": "A\\ud83d"'))
    with pytest.raises(ReceiptImportError, match="lines\\[0\\].text: is not valid Unicode"):
        load_receipts(surrogate)
    dupes = tmp_path / "dupes.json"
    dupes.write_text(json.dumps([record]))
    with pytest.raises(ReceiptImportError, match="line_id"):
        load_receipts(dupes)
