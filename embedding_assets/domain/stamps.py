"""Time stamps and content stamps in the forms every store and record agree on.

Timestamps are ISO-8601 in UTC with the `+00:00` offset, because the seed's
DynamoDB table compares lock expiry as a string and the form must not vary.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
