"""Small builders shared by tests."""

from __future__ import annotations

from embedding_assets.domain.models import Box, Item, Receipt, Status

IMAGE = "3f1c2a9e-0000-4000-8000-000000000001"


def line(line_id: int, text: str, x: float, y: float, width: float = 0.3, height: float = 0.02,
         status: Status = Status.NONE, image_id: str = IMAGE, receipt_id: int = 1, **kw) -> Item:
    return Item(image_id, receipt_id, line_id, text, Box(x, y, width, height), 0.95, status=status, **kw)


def word(line_id: int, word_id: int, text: str, x: float, y: float, width: float = 0.1, height: float = 0.02,
         status: Status = Status.NONE) -> Item:
    return Item(IMAGE, 1, line_id, text, Box(x, y, width, height), 0.9, word_id=word_id, status=status)


def receipt(lines: list[Item], merchant: str = "Corner Market", receipt_id: int = 1, image_id: str = IMAGE) -> Receipt:
    return Receipt(image_id, receipt_id, merchant, lines=lines)
