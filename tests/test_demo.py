import re
from collections import defaultdict

import pytest

from embedding_assets.data.demo import MERCHANTS, generate_receipts
from embedding_assets.domain.models import Item, Status

MONEY = re.compile(r"^\$?\d+\.\d{2}$")
N = 400


@pytest.fixture(scope="module")
def receipts():
    return generate_receipts(N, seed=11)


def cents(text: str) -> int:
    return round(float(text.lstrip("$")) * 100)


def row_pairs(receipt) -> dict[int, Item]:
    """Left line id -> its right-hand partner, found by geometry rather than by text."""
    pairs = {}
    lines = receipt.lines
    for left, right in zip(lines, lines[1:]):
        if left.box.contains_y(right.box.center_y) and right.box.x > left.box.x + left.box.width:
            pairs[left.line_id] = right
    return pairs


def test_same_seed_same_output_other_seed_differs():
    assert generate_receipts(30, seed=5) == generate_receipts(30, seed=5)
    assert generate_receipts(30, seed=5) != generate_receipts(30, seed=6)


def test_counts_and_ids(receipts):
    assert len(receipts) == N
    assert len({r.key for r in receipts}) == N
    per_image = defaultdict(list)
    for r in receipts:
        per_image[r.image_id].append(r.receipt_id)
    assert all(ids in ([1], [1, 2]) for ids in per_image.values())
    assert any(ids == [1, 2] for ids in per_image.values())
    for r in receipts:
        assert [line.line_id for line in r.lines] == list(range(len(r.lines)))
        keys = [i.key for i in r.lines + r.words]
        assert len(keys) == len(set(keys))
        by_line = {}
        for w in r.words:
            by_line.setdefault(w.line_id, []).append(w.word_id)
        for line in r.lines:
            assert by_line[line.line_id] == list(range(len(line.text.split())))
        assert all(i.image_id == r.image_id and i.receipt_id == r.receipt_id for i in r.lines + r.words)
        assert all(i.status is Status.NONE and not i.is_noise for i in r.lines + r.words)
    assert len({r.merchant_name for r in receipts}) >= 15
    assert {r.merchant_name for r in receipts} <= {name for name, _ in MERCHANTS}


def test_item_counts_within_range(receipts):
    for r in receipts:
        subtotal_id = next(line.line_id for line in r.lines if line.text == "SUBTOTAL")
        items = [p for lid, p in row_pairs(r).items() if lid < subtotal_id and MONEY.match(p.text)]
        assert 3 <= len(items) <= 15


def test_reading_order_top_to_bottom(receipts):
    for r in receipts:
        pairs = row_pairs(r)
        rights = {p.line_id for p in pairs.values()}
        lefts = [line for line in r.lines if line.line_id not in rights]
        tops = [line.box.y + line.box.height for line in lefts]
        assert tops == sorted(tops, reverse=True)


def test_merchant_and_totals_add_up(receipts):
    for r in receipts:
        assert r.lines[0].text == r.merchant_name
        pairs = row_pairs(r)
        by_text = {line.text: line for line in r.lines}
        subtotal_line = by_text["SUBTOTAL"]
        tax_line = next(line for line in r.lines if "TAX" in line.text and line.line_id in pairs)
        total_line = by_text["TOTAL"]
        subtotal = cents(pairs[subtotal_line.line_id].text)
        tax = cents(pairs[tax_line.line_id].text)
        total = cents(pairs[total_line.line_id].text)
        items = [
            cents(p.text) for lid, p in pairs.items() if lid < subtotal_line.line_id and MONEY.match(p.text)
        ]
        assert sum(items) == subtotal
        assert total == subtotal + tax
        card = [line for line in r.lines if "****" in line.text]
        if card:
            assert cents(pairs[card[0].line_id].text) == total
        else:
            tendered = cents(pairs[by_text["CASH"].line_id].text)
            assert tendered - total == cents(pairs[by_text["CHANGE"].line_id].text) >= 0
        texts = " ".join(line.text for line in r.lines)
        assert "THANK" in texts and ("WWW." in texts or "www." in texts)


def test_every_price_shares_a_row_with_its_item(receipts):
    for r in receipts:
        for prev, line in zip(r.lines, r.lines[1:]):
            if not MONEY.match(line.text):
                continue
            assert prev.box.contains_y(line.box.center_y), (r.key, prev.text, line.text)
            assert prev.box.x + prev.box.width < line.box.x
            assert line.box.x + line.box.width == pytest.approx(0.95, abs=0.011)
            assert not MONEY.match(prev.text)


def test_geometry_in_range_and_words_inside_lines(receipts):
    for r in receipts:
        lines = {line.line_id: line for line in r.lines}
        words_of = defaultdict(list)
        for w in r.words:
            words_of[w.line_id].append(w)
        for item in r.lines + r.words:
            b = item.box
            assert b.x >= 0 and b.x + b.width <= 1 and b.y >= 0 and b.y + b.height <= 1
            assert b.width > 0 and 0.012 <= b.height <= 0.0315
            assert 0.82 <= item.confidence <= 1.0 and item.confidence == round(item.confidence, 2)
        for line in r.lines:
            assert line.confidence >= 0.85
        for w in r.words:
            lb, wb = lines[w.line_id].box, w.box
            assert (wb.y, wb.height) == (lb.y, lb.height)
            assert lb.x - 1e-12 <= wb.x and wb.x + wb.width <= lb.x + lb.width + 1e-12
            assert abs(w.confidence - lines[w.line_id].confidence) <= 0.031
        for line in r.lines:
            words = words_of[line.line_id]
            assert " ".join(w.text for w in words) == line.text
            per_char = line.box.width / len(line.text)
            assert [w.box.width for w in words] == pytest.approx([len(w.text) * per_char for w in words])
