"""What every command module shares: the kinds a command may name, and JSON output."""

from __future__ import annotations

import json

from embedding_assets.domain.models import KINDS

KIND_CHOICES = KINDS


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))
