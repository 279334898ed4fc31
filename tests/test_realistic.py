"""Labelled receipts in the style of real scans: every line has a role, labels vary, text is mostly upper case."""

from __future__ import annotations

from embedding_assets.data.realistic import labelled_receipts

ROLES = {"merchant", "regno", "taxid", "address", "phone", "date", "item", "subtotal", "tax", "rounding", "total",
         "cash", "change", "card", "footer", "other"}


def test_every_line_has_a_role_and_every_receipt_a_total_and_a_date():
    for receipt, roles in labelled_receipts(40, seed=3):
        assert set(roles) == {line.line_id for line in receipt.lines}
        assert set(roles.values()) <= ROLES
        assert {"merchant", "address", "date", "total"} <= set(roles.values())
        assert receipt.lines[0].text.upper() == receipt.merchant_name


def test_labels_vary_and_text_is_mostly_upper_case():
    labelled = labelled_receipts(60, seed=5)
    totals = {line.text.split(" ")[0] + " " + (line.text.split(" ") + [""])[1]
              for receipt, roles in labelled for line in receipt.lines if roles[line.line_id] == "total"}
    assert len(totals) >= 8
    texts = [line.text for receipt, _ in labelled for line in receipt.lines]
    assert sum(t == t.upper() for t in texts) / len(texts) > 0.8


def test_same_seed_same_receipts():
    assert labelled_receipts(5, seed=9) == labelled_receipts(5, seed=9)
    assert labelled_receipts(5, seed=9) != labelled_receipts(5, seed=10)
