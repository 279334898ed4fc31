"""What the pipeline knows about OpenAI's embedding models without asking the network.

Kept apart from the provider so that settings are checked at load, with the
variable named, without importing the SDK.
"""

from __future__ import annotations

DEFAULT_MODEL = "text-embedding-3-small"
MAX_INPUT_TOKENS = 8192

NATIVE_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# ada-002 has one size and rejects a `dimensions` parameter, even its own.
FIXED_DIMENSIONS = frozenset({"text-embedding-ada-002"})

# The batch queue limit of usage tier 1, the lowest: no account is refused at this level.
DEFAULT_ENQUEUED_TOKENS: dict[str, int] = {
    "text-embedding-3-small": 3_000_000,
    "text-embedding-3-large": 3_000_000,
    "text-embedding-ada-002": 3_000_000,
}
FALLBACK_ENQUEUED_TOKENS = 3_000_000

# How long output and error files are kept after they are written (the API takes 1 hour to 30 days).
DEFAULT_OUTPUT_EXPIRES_AFTER_SECONDS = 7 * 24 * 3600
OUTPUT_EXPIRES_AFTER_RANGE = (3600, 30 * 24 * 3600)


def resolve_dimensions(model: str, dimensions: int | None) -> int:
    """The vector size a model will return; raises ValueError for a size it cannot give."""
    native = NATIVE_DIMENSIONS.get(model)
    if dimensions is None:
        if native is None:
            raise ValueError(f"model {model!r} has no known size here: set its dimensions")
        return native
    if dimensions < 1:
        raise ValueError(f"dimensions must be >= 1, got {dimensions}")
    if model in FIXED_DIMENSIONS and dimensions != native:
        raise ValueError(f"model {model!r} only returns {native} dimensions")
    if native is not None and dimensions > native:
        raise ValueError(f"model {model!r} returns at most {native} dimensions")
    return dimensions


def request_dimensions(model: str, dimensions: int) -> int | None:
    """`dimensions` for request bodies: omitted at the native size, which every model accepts."""
    return None if dimensions == NATIVE_DIMENSIONS.get(model) else dimensions


def enqueued_token_limit(model: str, configured: int | None) -> int:
    return configured or DEFAULT_ENQUEUED_TOKENS.get(model, FALLBACK_ENQUEUED_TOKENS)


def check_output_expiry(seconds: int) -> int:
    low, high = OUTPUT_EXPIRES_AFTER_RANGE
    if not low <= seconds <= high:
        raise ValueError(f"output files can be kept {low} to {high} seconds, not {seconds}")
    return seconds
