"""Receipt fields a query can name by what they are rather than by what they say.

"company name" shares no word or meaning with "KEDAI MAJU JAYA SDN BHD", so
neither keywords nor the vectors find merchant rows for it (precision@10 0.0
in every mode on labelled receipts, real and generated). What receipts share
is layout: the merchant's name heads the receipt. A query that only names
such a field is answered from the receipt's top rows (the `row` index
formatting records on each line vector, 0 at the top), ranked as usual
within them. A query with any other word ("company no", "store address")
is searched as written.
"""

from __future__ import annotations

import re

# field -> (the nouns that name it, how many rows from the top it lives in)
HEADER_FIELDS: dict[str, tuple[frozenset[str], int]] = {
    "merchant": (frozenset({"company", "merchant", "store", "shop", "vendor", "seller", "business", "retailer",
                            "outlet", "restaurant"}), 1),
}
# Words a field query may carry besides the field's nouns.
_FILLER = frozenset({"name", "names", "the", "of", "s", "what", "which", "is"})
_WORDS = re.compile(r"[a-z]+")


def header_rows(query: str) -> int | None:
    """How many top rows hold the field the query names, or None when it asks for anything else."""
    words = set(_WORDS.findall(query.lower()))
    for nouns, rows in HEADER_FIELDS.values():
        if words & nouns and not words - nouns - _FILLER:
            return rows
    return None
