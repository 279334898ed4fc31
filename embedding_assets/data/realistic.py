"""Labelled receipts in the style of real scanned till receipts, for retrieval measurements.

Shaped after public scanned-receipt sets (Malaysian and US tills): upper-case
OCR text, company names like `XYZ SDN BHD` with registration and GST ids,
multi-row addresses, varied labels for the same field (TOTAL / TOTAL AMOUNT /
NETT TOTAL / AMOUNT DUE; GST / SST / VAT / TAX; CASH / TENDERED; CHANGE /
BALANCE), ROUNDING rows, dates in several formats, rows that also say TOTAL
without being the total (TOTAL QTY, TOTAL DISCOUNT), occasional OCR
misspellings (T0TAL, CHANCE) and labels whose value was printed on its own row.

Each row carries its role (merchant, regno (company registration), taxid, address, phone, date, item,
subtotal, tax, rounding, total, cash, change, card, footer, other), so a
search can be scored against what a person asking for "total" wants.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid

from embedding_assets.data.demo import lay_out
from embedding_assets.domain.models import Receipt

# kind (as in demo.Row), left text, right text or None, role
LabelledRow = tuple[str, str, str | None, str]

PREFIX = ("KEDAI", "RESTORAN", "SYARIKAT", "PERNIAGAAN", "", "", "", "")
NAMES = (
    "UNIHAKKA",
    "MR D.I.Y.",
    "GARDENIA",
    "SANYU",
    "BOOK TA.K",
    "AEON",
    "TF VALUE-MART",
    "POPULAR BOOK",
    "OJC MARKETING",
    "LIGHTROOM GALLERY",
    "YONG CEN ENTERPRISE",
    "GOLDEN KEY MAKER",
    "SEN LEE HENG",
    "SWC ENTERPRISE",
    "WAN YANG",
    "KIM HOCK",
    "HON HWA HARDWARE",
    "BEMED",
    "ZHI PIN",
    "SEGI CAFE",
    "PASARAYA BORONG PINTAR",
    "99 SPEED MART",
    "FAMILYMART",
    "GUARDIAN",
    "ECONSAVE",
    "CROSS CHANNEL",
    "FRESH FIELDS MARKET",
    "KEYSTONE LUMBER",
    "HARBOR COFFEE",
    "LUCKY DRAGON KITCHEN",
    "SUNRISE FOODS",
    "MAPLE LEAF BAKERY",
    "TACO LOCO",
    "CITYCARE DRUG",
    "SUMMIT GAS",
    "THE COPPER SKILLET",
)
SUFFIX = ("SDN BHD", "SDN. BHD.", "ENTERPRISE", "TRADING", "(M) SDN BHD", "RESTAURANT", "S/B", "", "CO", "LLC", "INC")
STREETS = (
    "JALAN PERMAS 10/7",
    "JLN KAPAR",
    "JALAN SS 2/24",
    "LOT 1851-A & 1851-B, JALAN KPB 6",
    "JALAN TUN RAZAK",
    "NO 12, JALAN USJ 10/1D",
    "MAIN ST",
    "OAK AVE",
    "JALAN MERANTI",
    "LORONG BAYAN",
    "PERSIARAN SUBANG",
    "JALAN BUNGA RAYA",
    "BROADWAY",
    "HIGHLAND BLVD",
)
AREAS = (
    "TAMAN DAYA",
    "BANDAR BARU SRI PETALING",
    "KAWASAN PERINDUSTRIAN BALAKONG",
    "TAMAN MOLEK",
    "SETAPAK",
    "TAMAN UNIVERSITI",
    "BANDAR PUTERI",
    "TAMAN SRI GOMBAK",
    "DOWNTOWN",
    "SS 15",
)
CITIES = (
    ("81750", "MASAI", "JOHOR"),
    ("47300", "PETALING JAYA", "SELANGOR"),
    ("43300", "SERI KEMBANGAN", "SELANGOR"),
    ("53300", "KUALA LUMPUR", "W.P."),
    ("68100", "BATU CAVES", "SELANGOR"),
    ("97205", "PORTLAND", "OR"),
    ("81300", "SKUDAI", "JOHOR"),
    ("40150", "SHAH ALAM", "SELANGOR"),
    ("78701", "AUSTIN", "TX"),
)
ITEMS = (
    "KF MODELLING CLAY KIDDY FISH",
    "SUNLIGHT LEMON 900G",
    "GARDENIA CLASSIC 400G",
    "MILO 1KG",
    "A4 PAPER 80GSM",
    "RICE 5KG",
    "MINERAL WATER 1.5L",
    "NASI LEMAK",
    "TEH TARIK",
    "KOPI O",
    "ROTI CANAI",
    "MEE GORENG",
    "CHICKEN RICE",
    "ICE LEMON TEA",
    "PEN BLUE 0.7",
    "SCREW 8X1",
    "PVC PIPE 1/2",
    "TOOTHPASTE 150G",
    "DETTOL 500ML",
    "NOTEBOOK A5",
    "BATTERY AA 4S",
    "LED BULB 9W",
    'PAINT BRUSH 2"',
    "EGG GRADE A 30S",
    "SUGAR 1KG",
    "COOKING OIL 5KG",
    "LATTE",
    "CAPPUCCINO",
    "WHOLE MILK 1 GAL",
    "BANANAS",
    "CHEESEBURGER",
    "FRENCH FRIES",
    "PLASTIC BAG",
    "SOY SAUCE",
    "DUCT TAPE",
    "ALCOHOL SWAB",
    "CASHEW NUT 200G",
    "KEY CUTTING",
)
TOTAL_WORDS = (
    "TOTAL",
    "TOTAL",
    "TOTAL AMOUNT",
    "GRAND TOTAL",
    "NETT TOTAL",
    "AMOUNT DUE",
    "TOTAL (RM)",
    "TOTAL INCL. GST",
    "ROUNDED TOTAL (RM)",
    "TOTAL AMT",
    "NET TOTAL",
    "TOTAL RM",
    "TOTAL SALES",
)
SUB_WORDS = ("SUB TOTAL", "SUBTOTAL", "SUB-TOTAL", "TOTAL SALES (EXCLUDING GST)", "TOTAL EXCL. GST", "AMOUNT")
CASH_WORDS = ("CASH", "CASH", "CASH TENDERED", "CASH RM", "TENDERED", "PAYMENT")
CHANGE_WORDS = ("CHANGE", "CHANGE", "CHANGE DUE", "BALANCE", "CHANGE (RM)")
FOOTERS = (
    "THANK YOU",
    "THANK YOU. PLEASE COME AGAIN.",
    "GOODS SOLD ARE NOT RETURNABLE",
    "*** THANK YOU ***",
    "PLEASE KEEP THIS RECEIPT",
    "EXCHANGE WITHIN 7 DAYS WITH RECEIPT",
    "THIS IS A COMPUTER GENERATED INVOICE",
    "HAVE A NICE DAY",
    "GST SUMMARY INCLUDED",
)
MISSPELL = {
    "TOTAL": ("TOTA1", "T0TAL", "TOTAI"),
    "CASH": ("CASN", "CA5H"),
    "CHANGE": ("CHANCE", "CHANGF"),
    "DATE": ("DAT E", "0ATE"),
    "GST": ("G5T", "GS T"),
    "AMOUNT": ("AMOUNI", "AM0UNT"),
}


def _money(c: int) -> str:
    return f"{c // 100}.{c % 100:02d}"


def _noisy(rng: random.Random, text: str, p: float = 0.04) -> str:
    for word, bad in MISSPELL.items():
        if word in text and rng.random() < p:
            text = text.replace(word, rng.choice(bad), 1)
    return text


def receipt_rows(rng: random.Random) -> tuple[str, list[LabelledRow]]:
    """One receipt's rows top to bottom, each with its role; the merchant name first."""
    malaysian = rng.random() < 0.75
    lower = rng.random() < 0.12  # some printers use mixed case
    name = " ".join(p for p in (rng.choice(PREFIX) if malaysian else "", rng.choice(NAMES), rng.choice(SUFFIX)) if p)
    rows: list[LabelledRow] = []

    def add(kind: str, left: str, right: str | None, role: str) -> None:
        left = _noisy(rng, left.title() if lower else left)
        right = _noisy(rng, right) if right else right
        if right and kind == "T" and rng.random() < 0.06:  # split row: value printed on its own row
            rows.append((kind, left, None, role))
            rows.append(("T", right, None, role))
        else:
            rows.append((kind, left, right, role))

    add("C", name, None, "merchant")
    if malaysian and rng.random() < 0.7:
        add(
            "C",
            rng.choice(
                (
                    f"({rng.randint(100000, 999999)}-{rng.choice('AHKMPTUVWX')})",
                    f"CO REG NO: {rng.randint(100000, 999999)}-{rng.choice('AKMPTV')}",
                    f"COMPANY NO. {rng.randint(100000, 999999)}-X",
                )
            ),
            None,
            "regno",
        )
    if malaysian and rng.random() < 0.6:
        add(
            "C",
            rng.choice(("GST ID NO:", "GST REG NO:", "GST NO:", "SST ID:")) + f" {rng.randint(0, 10**12):012d}",
            None,
            "taxid",
        )
    street = rng.choice(STREETS)
    lot = rng.choice(("NO ", "LOT ", "", "NO. ")) + str(rng.randint(1, 300)) + rng.choice((",", "", "-A,"))
    postcode, city, state = rng.choice(CITIES)
    address = [f"{lot} {street},", f"{rng.choice(AREAS)},", f"{postcode} {city}, {state}."]
    if rng.random() < 0.3:
        address = [f"{lot} {street}, {rng.choice(AREAS)},", f"{postcode} {city}, {state}."]
    if rng.random() < 0.05:
        address[0] = "ADDRESS: " + address[0]
    for part in address:
        add("C", part, None, "address")
    phone = rng.choice(("03-", "07-", "012-", "(503) ", "016-")) + f"{rng.randint(1000000, 99999999)}"
    ptext = rng.choice(("TEL: ", "TEL : ", "TEL NO: ", "PHONE: ", "TEL.", "H/P: ", "", "", "T: ")) + phone
    if rng.random() < 0.4:
        ptext += f" FAX: 03-{rng.randint(1000000, 99999999)}"
    add("C", ptext, None, "phone")
    if malaysian:
        add(
            "C", rng.choice(("TAX INVOICE", "SIMPLIFIED TAX INVOICE", "RECEIPT", "CASH BILL", "INVOICE")), None, "other"
        )
    when = dt.datetime(2017, 1, 1) + dt.timedelta(days=rng.randrange(900), minutes=rng.randint(400, 1300))
    date = when.strftime(
        rng.choice(("%d/%m/%Y", "%d-%m-%Y", "%d/%m/%y", "%d %b %Y", "%d.%m.%Y", "%Y-%m-%d", "%m/%d/%Y"))
    ).upper()
    time = when.strftime(rng.choice(("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M:%S %p")))
    layout = rng.random()
    inv = (
        f"{rng.choice(('INV NO:', 'INVOICE NO:', 'RECEIPT #', 'BILL NO:', 'DOC NO:', 'TRANS:'))} "
        f"{rng.choice(('CS', 'T', 'OR', ''))}{rng.randint(1000, 99999999)}"
    )
    if layout < 0.35:
        add("L", f"DATE: {date}", f"TIME: {time}", "date")
        add("L", inv, None, "other")
    elif layout < 0.55:
        add("L", inv, f"DATE: {date}", "other")
        rows[-1] = (*rows[-1][:3], "date")
        add("L", f"CASHIER: {rng.choice(('ADMIN', 'SITI', 'LEE', '01'))}", time, "other")
    elif layout < 0.8:
        add("L", f"{date} {time}", None, "date")
        add("L", inv, None, "other")
    else:
        add("L", inv, None, "other")
        add("L", rng.choice(("DATE", "DATE:", "Date :", "TRX DATE:")) + f" {date}", None, "date")
        add("L", f"CASHIER: {rng.choice(('ADMIN', 'SITI', 'LEE', '01'))}", None, "other")
    if rng.random() < 0.4:
        add("L", rng.choice(("DESCRIPTION QTY PRICE AMOUNT", "ITEM QTY U/P TOTAL", "QTY DESC AMT(RM)")), None, "other")
    subtotal = 0
    for _ in range(rng.randint(1, 12)):
        qty, unit = rng.randint(1, 5), rng.randint(50, 9000)
        subtotal += qty * unit
        code = rng.choice((" SR", " ZR", "", ""))
        if rng.random() < 0.35:
            add("L", rng.choice(ITEMS), None, "item")
            add("I", f"{qty} X {_money(unit)}", _money(qty * unit) + code, "item")
        else:
            add(
                "L",
                f"{rng.choice(ITEMS)}" + (f" {qty}" if rng.random() < 0.5 else ""),
                _money(qty * unit) + code,
                "item",
            )
    if rng.random() < 0.4:
        add(
            "T",
            rng.choice(("TOTAL QTY:", "ITEM COUNT", "NO. OF ITEMS", "TOTAL ITEMS", "TOTAL QUANTITY")),
            str(rng.randint(1, 30)),
            "other",
        )
    if rng.random() < 0.25:
        add(
            "T",
            rng.choice(("TOTAL DISCOUNT", "TOTAL SAVINGS", "DISCOUNT", "MEMBER DISC")),
            _money(rng.randint(10, 500)),
            "other",
        )
    rate = rng.choice((6, 6, 6, 0, 10, 8))
    tax = (subtotal * rate + 50) // 100
    total = subtotal + tax
    rounded = (total + 2) // 5 * 5
    if rng.random() < 0.7:
        add("T", rng.choice(SUB_WORDS), _money(subtotal), "subtotal")
    tw = rng.choice(
        ("GST @6%", "GST 6%", "TOTAL GST", "SST 6%", "SERVICE TAX 6%", "VAT", "TAX", "SALES TAX", "GST", "TAX 8%")
    )
    add("T", tw, _money(tax), "tax")
    if rounded != total and rng.random() < 0.7:
        add(
            "T",
            rng.choice(("ROUNDING", "ROUNDING ADJ", "ROUNDING ADJUSTMENT", "RND ADJ")),
            f"{'-' if rounded < total else ''}0.0{abs(rounded - total)}",
            "rounding",
        )
    else:
        rounded = total
    add("T", rng.choice(TOTAL_WORDS), _money(rounded), "total")
    if rng.random() < 0.55:
        tendered = -(-rounded // 1000) * 1000
        add("T", rng.choice(CASH_WORDS), _money(tendered), "cash")
        add("T", rng.choice(CHANGE_WORDS), _money(tendered - rounded), "change")
    else:
        add(
            "L",
            rng.choice(("VISA", "MASTERCARD", "CREDIT CARD", "DEBIT", "E-WALLET")) + f" ****{rng.randint(0, 9999):04d}",
            _money(rounded),
            "card",
        )
    if malaysian and rate == 6 and rng.random() < 0.5:
        add("L", "GST SUMMARY AMOUNT(RM) TAX(RM)", None, "tax")
        add("L", f"SR @ 6% {_money(subtotal)}", _money(tax), "tax")
    for _ in range(rng.randint(1, 3)):
        add("C", rng.choice(FOOTERS), None, "footer")
    return name, rows


def labelled_receipts(n: int, seed: int = 7) -> list[tuple[Receipt, dict[int, str]]]:
    """`n` receipts, each with the role of every line by line id."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, rows = receipt_rows(rng)
        image_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        receipt, origin = lay_out(rng, image_id, 1, name, [row[:3] for row in rows])
        out.append((receipt, {line_id: rows[row][3] for line_id, row in enumerate(origin)}))
    return out
