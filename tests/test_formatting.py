from embedding_assets.domain.formatting import (
    EDGE,
    clean_text,
    item_keys_of_vector,
    line_requests,
    visual_rows,
    word_requests,
)
from embedding_assets.domain.models import Status
from embedding_assets.domain.tokens import cl100k
from tests.support import fit, line, word


def test_rows_group_by_vertical_centre_transitively_and_order_top_down_left_right():
    items = [
        line(0, "STORE", 0.3, 0.90),
        line(1, "MILK", 0.05, 0.80),
        line(2, "3.99", 0.80, 0.805),  # centre inside MILK's box
        line(3, "TOTAL", 0.05, 0.70),
        line(4, "7.98", 0.80, 0.705),  # centre inside TOTAL's box
        line(5, "USD", 0.60, 0.714),  # centre inside 7.98's box only: joins transitively
    ]
    rows = visual_rows(items)
    assert [[it.text for it in row] for row in rows] == [["STORE"], ["MILK", "3.99"], ["TOTAL", "USD", "7.98"]]


def test_lines_far_apart_vertically_are_separate_rows():
    rows = visual_rows([line(0, "A", 0.05, 0.50), line(1, "B", 0.6, 0.53)])
    assert len(rows) == 2


def test_line_request_per_row_with_context_and_edges():
    items = [line(0, "STORE", 0.3, 0.9), line(1, "MILK", 0.05, 0.8), line(2, "3.99", 0.8, 0.805),
             line(3, "TOTAL", 0.05, 0.7)]
    built = line_requests(items, "Corner Market", fit(), "context3")
    assert [r.input for r in built.requests] == [
        f"{EDGE}\nSTORE\nMILK 3.99",
        "STORE\nMILK 3.99\nTOTAL",
        f"MILK 3.99\nTOTAL\n{EDGE}",
    ]
    milk = built.requests[1]
    assert milk.custom_id.endswith("#LINE#00001")
    assert len(milk.item_keys) == 2 and milk.item_keys[1].endswith("#LINE#00002")
    assert milk.metadata["row_line_ids"] == "1,2"
    assert milk.metadata["merchant_name"] == "Corner Market"
    assert all(isinstance(v, (str, int, float, bool)) for v in milk.metadata.values())


def test_only_rows_with_unembedded_lines_are_sent_but_embedded_rows_stay_context():
    items = [line(0, "STORE", 0.3, 0.9, status=Status.SUCCESS), line(1, "MILK", 0.05, 0.8),
             line(2, "TOTAL", 0.05, 0.7, status=Status.SUCCESS)]
    built = line_requests(items, None, fit(), "context3")
    assert [r.input for r in built.requests] == ["STORE\nMILK\nTOTAL"]
    assert "merchant_name" not in built.requests[0].metadata
    assert built.requests[0].metadata["row"] == 1, "rows count from the top, sent or not"


def test_empty_and_noise_lines_are_never_sent_and_get_a_reason():
    items = [line(0, "  \u200b ", 0.3, 0.9), line(1, "MILK", 0.05, 0.8), line(2, "x", 0.05, 0.7, is_noise=True)]
    built = line_requests(items, None, fit())
    assert [r.input for r in built.requests] == ["milk"]
    assert set(built.noise.values()) == {"empty text after cleaning", "marked is_noise"}


def test_clean_text_drops_control_and_zero_width_characters():
    assert clean_text("TO\u200bTAL\x00 \t 9.99\n") == "TOTAL 9.99"


def test_long_input_is_cut_to_the_token_bound_at_a_token_boundary_and_counted():
    text = "TOTAL 12.99 café " * 2000
    built = line_requests([line(0, text, 0.05, 0.5)], None, fit(100))
    request = built.requests[0]
    sent = text.strip().lower()
    assert request.truncated and sent.startswith(request.input)
    assert request.tokens == cl100k().count(request.input) == 100
    # Far more than 100 bytes: the cut is in tokens, not bytes.
    assert len(request.input.encode()) > 200
    short = line_requests([line(0, "MILK 3.99", 0.05, 0.5)], None, fit(100)).requests[0]
    assert not short.truncated and short.tokens == cl100k().count(short.input)


def test_word_input_has_two_neighbours_each_side_on_the_visual_line():
    words = [word(0, i, t, 0.05 + 0.15 * i, 0.5) for i, t in enumerate(["ORGANIC", "WHOLE", "MILK", "1", "GAL"])]
    words.append(word(1, 0, "TOTAL", 0.05, 0.3))
    built = word_requests(words, None, fit(), "context5")
    inputs = {r.custom_id.rsplit("#", 1)[1]: r.input for r in built.requests if "#LINE#00000" in r.custom_id}
    assert inputs["00000"] == f"{EDGE} {EDGE} ORGANIC WHOLE MILK"
    assert inputs["00002"] == "ORGANIC WHOLE MILK 1 GAL"
    assert inputs["00004"] == f"MILK 1 GAL {EDGE} {EDGE}"
    alone = [r for r in built.requests if "#LINE#00001" in r.custom_id][0]
    assert alone.input == f"{EDGE} {EDGE} TOTAL {EDGE} {EDGE}"


def test_by_default_a_row_vector_stands_for_the_rows_own_text_lower_cased():
    items = [line(0, "STORE", 0.3, 0.9), line(1, "TOTAL AMOUNT", 0.05, 0.8), line(2, "12.00", 0.8, 0.805)]
    built = line_requests(items, None, fit())
    assert [r.input for r in built.requests] == ["store", "total amount 12.00"]
    assert built.requests[1].metadata["text"] == "TOTAL AMOUNT 12.00"
    assert {r.metadata["recipe"] for r in built.requests} == {"row-lower"}


def test_by_default_a_word_vector_stands_for_the_word_alone_lower_cased():
    words = [word(0, i, t, 0.05 + 0.15 * i, 0.5) for i, t in enumerate(["GRAND", "TOTAL", "9.99"])]
    built = word_requests(words, None, fit())
    assert [r.input for r in built.requests] == ["grand", "total", "9.99"]
    assert built.requests[1].metadata["text"] == "TOTAL" and built.requests[1].metadata["recipe"] == "word-lower"


def test_vector_stands_for_every_line_of_its_row():
    meta = {"image_id": "img", "receipt_id": 2, "row_line_ids": "3,4"}
    assert item_keys_of_vector("IMAGE#img#RECEIPT#00002#LINE#00003", meta) == [
        "IMAGE#img#RECEIPT#00002#LINE#00003", "IMAGE#img#RECEIPT#00002#LINE#00004"]
    assert item_keys_of_vector("w", {}) == ["w"]
