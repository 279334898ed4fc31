"""Synthetic receipts, so the pipeline can be run and measured without real OCR data.

The output imitates what the OCR step produces for a printed till receipt,
because the pipeline's context building (neighbouring lines, the price on the
same row, the merchant name) only gets exercised by data shaped like that:

* text runs top to bottom in a single column; y = 0 is the receipt's bottom,
  so the first line has the largest y;
* an item and its price are two separate lines on one visual row, the price
  right-aligned and slightly off in y, but always with its vertical centre
  inside the item line's box;
* ids follow reading order (top to bottom, left before right), words split
  each line's box by character count;
* amounts are consistent (items sum to the subtotal, subtotal + tax = total),
  so tests and demos can check an answer rather than eyeball it.

Everything comes from one `random.Random(seed)`, so a seed names a data set.
"""

from __future__ import annotations

import datetime as dt
import gc
import random
import re
import uuid
from collections.abc import Sequence

from embedding_assets.domain.models import Box, Item, Receipt

# name, category; the web domain is derived from the name.
MERCHANTS: tuple[tuple[str, str], ...] = (
    ("FRESH FIELDS MARKET", "grocery"),
    ("GREEN VALLEY GROCERS", "grocery"),
    ("SUNRISE FOODS", "grocery"),
    ("CORNER PANTRY", "grocery"),
    ("DAILY GRIND CAFE", "cafe"),
    ("HARBOR COFFEE CO", "cafe"),
    ("MAPLE LEAF BAKERY", "cafe"),
    ("BOLT & BEAM HARDWARE", "hardware"),
    ("TRUE NORTH HOME SUPPLY", "hardware"),
    ("KEYSTONE LUMBER", "hardware"),
    ("WELLSPRING PHARMACY", "pharmacy"),
    ("CITYCARE DRUG", "pharmacy"),
    ("BRIGHTSIDE HEALTH MART", "pharmacy"),
    ("QUICKFILL FUEL", "gas"),
    ("SUMMIT GAS & GO", "gas"),
    ("PRAIRIE STOP", "gas"),
    ("LUCKY DRAGON KITCHEN", "restaurant"),
    ("BELLA NOTTE TRATTORIA", "restaurant"),
    ("THE COPPER SKILLET", "restaurant"),
    ("TACO LOCO", "restaurant"),
)

# city, state, zip, area code, sales tax in thousandths of a percent (8250 = 8.25 %).
CITIES: tuple[tuple[str, str, str, str, int], ...] = (
    ("PORTLAND", "OR", "97205", "503", 0),
    ("AUSTIN", "TX", "78701", "512", 8250),
    ("DENVER", "CO", "80202", "303", 8810),
    ("SEATTLE", "WA", "98101", "206", 10350),
    ("MADISON", "WI", "53703", "608", 5500),
    ("COLUMBUS", "OH", "43215", "614", 7750),
    ("RALEIGH", "NC", "27601", "919", 7250),
    ("PHOENIX", "AZ", "85004", "602", 8600),
    ("ATLANTA", "GA", "30303", "404", 8900),
    ("BOISE", "ID", "83702", "208", 6000),
    ("NASHVILLE", "TN", "37203", "615", 9250),
    ("SACRAMENTO", "CA", "95814", "916", 8750),
    ("MINNEAPOLIS", "MN", "55401", "612", 8025),
    ("RICHMOND", "VA", "23219", "804", 6000),
    ("ALBANY", "NY", "12207", "518", 8000),
)

STREETS = (
    "MAIN ST", "OAK AVE", "MARKET ST", "ELM ST", "BROADWAY", "2ND AVE", "PINE ST",
    "LAKE SHORE DR", "HIGHLAND BLVD", "RIVER RD", "CEDAR LN", "WASHINGTON AVE",
    "PARK PL", "MILL RD", "SUNSET BLVD", "COLLEGE AVE", "5TH ST",
)

# name, lowest and highest unit price in cents, whether it is bought in multiples.
CATALOG: dict[str, tuple[tuple[str, int, int, bool], ...]] = {
    "grocery": (
        ("WHOLE MILK 1 GAL", 329, 449, False), ("LARGE EGGS 12CT", 249, 599, False),
        ("SOURDOUGH BREAD", 349, 599, False), ("BANANAS", 25, 39, True),
        ("GALA APPLES", 79, 129, True), ("BABY SPINACH 5OZ", 299, 449, False),
        ("CHEDDAR CHEESE 8OZ", 279, 499, False), ("GROUND BEEF 1LB", 499, 799, False),
        ("CHICKEN BREAST", 699, 1299, False), ("ORANGE JUICE 52OZ", 349, 549, False),
        ("GREEK YOGURT", 99, 179, True), ("PENNE PASTA 16OZ", 129, 249, True),
        ("TOMATO SAUCE", 99, 219, True), ("COFFEE BEANS 12OZ", 799, 1399, False),
        ("PAPER TOWELS 6PK", 699, 1199, False), ("AVOCADO", 89, 199, True),
        ("BUTTER UNSALTED", 399, 649, False), ("SPARKLING WATER 12PK", 449, 699, False),
    ),
    "cafe": (
        ("LATTE 16OZ", 450, 595, True), ("CAPPUCCINO", 395, 525, True),
        ("DRIP COFFEE 12OZ", 225, 325, True), ("COLD BREW", 395, 495, True),
        ("CHAI LATTE", 425, 550, True), ("DOUBLE ESPRESSO", 295, 375, True),
        ("BUTTER CROISSANT", 325, 425, True), ("BLUEBERRY MUFFIN", 295, 395, True),
        ("BAGEL CREAM CHEESE", 350, 475, True), ("AVOCADO TOAST", 895, 1195, False),
        ("BREAKFAST SANDWICH", 695, 925, True), ("OAT MILK", 75, 95, True),
        ("EXTRA SHOT", 75, 125, True), ("HOT CHOCOLATE", 375, 475, True),
        ("CINNAMON SCONE", 325, 395, True),
    ),
    "hardware": (
        ("HAMMER 16OZ CLAW", 1499, 2499, False), ("WOOD SCREWS #8 1LB", 699, 999, True),
        ("DRYWALL ANCHORS 20PK", 499, 799, True), ("PAINT BRUSH 2IN", 399, 899, True),
        ("INTERIOR PAINT 1GAL", 2999, 4599, True), ("PAINTERS TAPE 1.88IN", 599, 899, True),
        ("LED BULB 60W 4PK", 799, 1499, True), ("EXTENSION CORD 25FT", 1299, 2199, False),
        ("PVC PIPE 1/2IN 10FT", 349, 599, True), ("WD-40 12OZ", 599, 899, False),
        ("SANDPAPER 120 GRIT", 499, 799, True), ("DUCT TAPE SILVER", 599, 999, True),
        ("WORK GLOVES L", 899, 1699, False), ("TAPE MEASURE 25FT", 999, 1999, False),
        ("CAULK WHITE 10OZ", 449, 799, True),
    ),
    "pharmacy": (
        ("IBUPROFEN 200MG 100CT", 599, 1099, False), ("ACETAMINOPHEN 500MG", 549, 999, False),
        ("VITAMIN D3 2000IU", 799, 1399, False), ("ALLERGY RELIEF 24HR", 1299, 2499, False),
        ("TOOTHPASTE MINT 4OZ", 299, 599, True), ("DENTAL FLOSS", 249, 449, True),
        ("SHAMPOO 12OZ", 499, 899, False), ("HAND SANITIZER 8OZ", 199, 399, True),
        ("BANDAGES 30CT", 349, 599, False), ("COUGH DROPS", 249, 399, True),
        ("SUNSCREEN SPF 50", 899, 1499, False), ("FACIAL TISSUE", 149, 299, True),
        ("LIP BALM", 199, 399, True), ("COTTON SWABS 300CT", 299, 499, False),
        ("GREETING CARD", 299, 699, True),
    ),
    "gas": (
        ("BOTTLED WATER 1L", 149, 249, True), ("ENERGY DRINK 16OZ", 249, 399, True),
        ("POTATO CHIPS", 179, 299, True), ("BEEF JERKY", 599, 999, False),
        ("CANDY BAR", 129, 229, True), ("COFFEE 20OZ", 179, 299, False),
        ("CAR WASH DELUXE", 1000, 1500, False), ("WINDSHIELD FLUID", 399, 599, False),
        ("ICE 10LB BAG", 299, 449, False), ("SPEARMINT GUM", 149, 249, True),
        ("HOT DOG", 199, 299, True), ("SUNFLOWER SEEDS", 149, 249, False),
        ("MOTOR OIL 5W-30", 799, 1199, False), ("PHONE CHARGER", 999, 1999, False),
    ),
    "restaurant": (
        ("CHEESEBURGER", 1199, 1599, True), ("FRENCH FRIES", 399, 599, True),
        ("CAESAR SALAD", 899, 1299, True), ("FISH TACOS", 1299, 1699, True),
        ("MARGHERITA PIZZA", 1399, 1899, True), ("CHICKEN WINGS 10PC", 1199, 1599, True),
        ("PAD THAI", 1299, 1599, True), ("SPRING ROLLS", 599, 899, True),
        ("ICED TEA", 275, 395, True), ("SODA", 250, 350, True),
        ("DRAFT BEER", 600, 900, True), ("HOUSE RED WINE", 900, 1300, True),
        ("TIRAMISU", 795, 995, True), ("SOUP OF THE DAY", 595, 795, True),
        ("KIDS MEAL", 695, 895, True),
    ),
}

FUELS = (("UNLEADED 87", 2899, 3999), ("PLUS 89", 3099, 4299), ("PREMIUM 93", 3399, 4699), ("DIESEL", 3499, 4799))

RETURN_POLICY = {
    "grocery": ("RETURNS ACCEPTED WITHIN 30 DAYS", "100% SATISFACTION GUARANTEED"),
    "cafe": ("ASK US ABOUT OUR REWARDS", "NO REFUNDS ON OPENED DRINKS"),
    "hardware": ("RETURNS WITHIN 90 DAYS WITH RECEIPT", "SPECIAL ORDERS ARE FINAL SALE"),
    "pharmacy": ("NO RETURNS ON PRESCRIPTIONS", "RETURNS WITHIN 30 DAYS WITH RECEIPT"),
    "gas": ("NO REFUNDS ON FUEL", "RETURNS WITHIN 7 DAYS WITH RECEIPT"),
    "restaurant": ("GRATUITY NOT INCLUDED", "ALL SALES FINAL"),
}

THANKS = ("THANK YOU FOR SHOPPING WITH US", "THANK YOU! PLEASE COME AGAIN", "THANK YOU", "THANKS FOR VISITING")
CARDS = ("VISA", "MASTERCARD", "AMEX", "DISCOVER", "DEBIT")
NAMES = ("MARIA", "JAMES", "ANNA", "DEVON", "PRIYA", "LUIS", "KATE", "SAM", "NINA", "OMAR")

# A row is (kind, left text, right text or None); kind places the left text:
# "L" flush left, "I" indented detail, "T" totals label, "C" centred.
Row = tuple[str, str, str | None]


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _percent(thousandths: int) -> str:
    return f"{thousandths / 1000:.3f}".rstrip("0").rstrip(".")


def _domain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()) + ".com"


def _items(rng: random.Random, category: str) -> tuple[list[Row], int, int]:
    """Item rows, units sold and their sum; detail rows carry no price, as on real tills."""
    inline_qty = category in ("cafe", "restaurant")
    rows: list[Row] = []
    units = total = 0
    count = rng.randint(3, 15)
    if category == "gas":
        fuel, low, high = rng.choice(FUELS)
        gallons = rng.randint(3000, 18000)  # thousandths of a gallon
        per_gallon = rng.randint(low, high)  # thousandths of a dollar, 3459 = 3.459
        cents = (gallons * per_gallon + 5_000) // 10_000
        rows.append(("L", fuel, _money(cents)))
        rows.append(("I", f"{gallons / 1000:.3f} GAL @ {per_gallon / 1000:.3f}/GAL", None))
        units += 1
        total += cents
        count -= 1
    catalog = CATALOG[category]
    for name, low, high, multiples in rng.sample(catalog, min(count, len(catalog))):
        unit = rng.randint(low, high)
        qty = rng.choice((2, 2, 2, 3, 4, 6)) if multiples and rng.random() < 0.3 else 1
        cents = unit * qty
        units += qty
        total += cents
        if inline_qty:
            rows.append(("L", f"{qty} {name}", _money(cents)))
        else:
            rows.append(("L", name, _money(cents)))
            if qty > 1:
                rows.append(("I", f"{qty} @ {_money(unit)}", None))
    return rows, units, total


def _rows(rng: random.Random, merchant: str, category: str) -> list[Row | None]:
    """One receipt's text, top to bottom; None is an empty row."""
    city, state, zip_code, area, tax_rate = rng.choice(CITIES)
    rows: list[Row | None] = [("C", merchant, None)]
    if rng.random() < 0.4:
        rows.append(("C", f"STORE #{rng.randint(100, 9999)}", None))
    street = f"{rng.randint(1, 9999)} {rng.choice(('', '', 'N ', 'S ', 'E ', 'W '))}{rng.choice(STREETS)}"
    if rng.random() < 0.2:
        street += f" STE {rng.randint(1, 400)}"
    rows.append(("C", street, None))
    rows.append(("C", f"{city}, {state} {zip_code[:3]}{rng.randint(0, 99):02d}", None))
    exchange, number = rng.randint(200, 999), rng.randint(0, 9999)
    rows.append(("C", rng.choice((
        f"({area}) {exchange}-{number:04d}", f"{area}-{exchange}-{number:04d}", f"TEL {area}.{exchange}.{number:04d}",
    )), None))
    rows.append(None)

    when = dt.datetime(2022, 1, 1) + dt.timedelta(days=rng.randrange(3 * 365), minutes=rng.randint(6 * 60, 22 * 60))
    date = when.strftime(rng.choice(("%m/%d/%Y", "%m/%d/%y", "%Y-%m-%d")))
    time = when.strftime(rng.choice(("%I:%M %p", "%H:%M", "%H:%M:%S")))
    if rng.random() < 0.5:
        rows.append(("L", date, time))
    else:
        rows.append(("L", f"{date} {time}", None))
    if category == "restaurant":
        rows.append(("L", f"SERVER: {rng.choice(NAMES)}", f"TABLE {rng.randint(1, 40)}"))
        rows.append(("L", f"GUESTS: {rng.randint(1, 6)}", None))
    elif category == "cafe":
        rows.append(("C", f"ORDER #{rng.randint(1, 999)}", None))
    else:
        rows.append(("L", f"REG {rng.randint(1, 12)} TRN {rng.randint(1000, 9999)}", f"CSHR {rng.choice(NAMES)}"))
    rows.append(None)

    item_rows, units, subtotal = _items(rng, category)
    rows += item_rows
    if rng.random() < 0.5:
        rows.append(None)
    tax = (subtotal * tax_rate + 50_000) // 100_000
    dollar = "$" if rng.random() < 0.3 else ""
    rows.append(("T", "SUBTOTAL", _money(subtotal)))
    rows.append(("T", rng.choice(("TAX", f"TAX {_percent(tax_rate)}%", "SALES TAX")), _money(tax)))
    rows.append(("T", "TOTAL", dollar + _money(subtotal + tax)))
    rows.append(None)

    total = subtotal + tax
    if rng.random() < 0.15:
        tendered = -(-total // 2000) * 2000
        rows.append(("T", "CASH", _money(tendered)))
        rows.append(("T", "CHANGE", _money(tendered - total)))
    else:
        rows.append(("L", f"{rng.choice(CARDS)} ****{rng.randint(0, 9999):04d}", _money(total)))
        rows.append(("L", f"AUTH CODE {rng.randint(0, 999999):06d}", "APPROVED"))
    if category not in ("cafe", "restaurant"):
        rows.append(("L", f"ITEMS SOLD: {units}", None))
    rows.append(None)

    thanks = rng.choice(THANKS)
    rows.append(("C", thanks if thanks != "THANK YOU" else f"THANK YOU FOR VISITING {merchant}", None))
    rows.append(("C", rng.choice(RETURN_POLICY[category]), None))
    domain = _domain(merchant)
    if rng.random() < 0.5:
        rows.append(("C", "TELL US HOW WE DID", None))
        rows.append(("C", f"www.{domain}/survey", None))
    else:
        rows.append(("C", f"WWW.{domain.upper()}", None))
    return rows


def _receipt(rng: random.Random, image_id: str, receipt_id: int) -> Receipt:
    merchant, category = rng.choice(MERCHANTS)
    return lay_out(rng, image_id, receipt_id, merchant, _rows(rng, merchant, category))[0]


def lay_out(rng: random.Random, image_id: str, receipt_id: int, merchant: str,
            rows: Sequence[Row | None]) -> tuple[Receipt, list[int]]:
    """Lay the rows out on the page, and say which row each line came from.

    The printer's character width and margins vary per receipt.
    """
    origin: list[int] = []
    char_w = rng.uniform(0.019, 0.0225)
    top, bottom = rng.uniform(0.02, 0.04), rng.uniform(0.02, 0.04)
    pitch = (1 - top - bottom) / len(rows)
    height = min(0.03, 0.78 * pitch)
    label_x = rng.choice((0.05, 0.4))
    rand = rng.random
    receipt = Receipt(image_id=image_id, receipt_id=receipt_id, merchant_name=merchant)
    lines, words = receipt.lines, receipt.words

    def place(text: str, x: float, y: float, w: float, h: float) -> None:
        line_id = len(lines)
        origin.append(row_index)
        conf = round(0.85 + 0.15 * rand(), 2)
        lines.append(Item(image_id, receipt_id, line_id, text, Box(x, y, w, h), conf))
        per_char = w / len(text)
        start = 0
        # Texts are built with single spaces, so offsets follow from the word lengths.
        for word_id, word in enumerate(text.split(" ")):
            size = len(word)
            word_conf = round(conf + 0.06 * rand() - 0.03, 2)
            if word_conf > 1.0:
                word_conf = 1.0
            word_box = Box(x + start * per_char, y, size * per_char, h)
            words.append(Item(image_id, receipt_id, line_id, word, word_box, word_conf, word_id))
            start += size + 1

    # Jitter below is rand() - 0.5, i.e. uniform in [-0.5, 0.5), times its range.
    row_index = 0
    for i, row in enumerate(rows):
        if row is None:
            continue
        row_index = i
        kind, left, right = row
        h = height * (0.95 + 0.1 * rand())
        y = 1 - top - i * pitch - height + (rand() - 0.5) * 0.1 * height
        right_x = 1.0
        if right is not None:
            rh = height * (0.95 + 0.1 * rand())
            rw = len(right) * char_w * (0.97 + 0.06 * rand())
            right_x = 0.95 + (rand() - 0.5) * 0.02 - rw
            # The price's centre stays within a quarter of the item line's height of its centre.
            ry = y + h / 2 + (rand() - 0.5) * 0.5 * h - rh / 2
        w = len(left) * char_w * (0.97 + 0.06 * rand())
        if kind == "C":
            w = min(w, 0.92)
            x = 0.5 - w / 2 + (rand() - 0.5) * 0.02
        else:
            x = (0.05 if kind == "L" else 0.09 if kind == "I" else label_x) + (rand() - 0.5) * 0.02
            w = min(w, min(right_x - 0.03, 0.97) - x)
        place(left, x, y, w, h)
        if right is not None:
            place(right, right_x, ry, rw, rh)
    return receipt, origin


def generate_receipts(n: int, seed: int = 7) -> list[Receipt]:
    """`n` receipts; about one image in ten holds two receipts, as with photos of a stack.

    The cyclic garbage collector is paused meanwhile: the result is over a
    hundred acyclic objects per receipt, and rescanning them as they pile up
    roughly doubled the run time.
    """
    rng = random.Random(seed)
    out: list[Receipt] = []
    paused = gc.isenabled()
    gc.disable()
    try:
        while len(out) < n:
            image_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            on_image = 2 if n - len(out) >= 2 and rng.random() < 0.1 else 1
            out.extend(_receipt(rng, image_id, receipt_id) for receipt_id in range(1, on_image + 1))
    finally:
        if paused:
            gc.enable()
    return out
