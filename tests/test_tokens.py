"""cl100k_base counts built offline from the packaged file, and the cut at a token boundary."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from embedding_assets.domain import tokens
from embedding_assets.domain.batching import queue_cycles


@pytest.fixture
def no_network(monkeypatch, tmp_path: Path) -> list[str]:
    """Every connection, name lookup or URL opened is refused and recorded; tiktoken's cache dir is empty."""
    attempts: list[str] = []

    def refuse(what: str):
        def blocked(*args, **kwargs):
            attempts.append(f"{what} {args[1:] if what == 'connect' else args}")
            raise OSError(f"network is off in this test: {what}")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    return attempts


def test_the_encoding_is_built_and_counts_without_touching_the_network(no_network, tmp_path):
    tokens.cl100k.cache_clear()
    counter = tokens.cl100k()
    # The known cl100k ids of "hello world", and counts that bytes would overstate.
    assert counter.count("hello world") == 2
    assert counter.count("TOTAL 12.99") == 5
    assert counter.count("<|endoftext|>") == 7  # special-token text is plain text: never raises, billed as text
    assert counter.count("") == 0
    assert no_network == []
    assert not (tmp_path / "tiktoken-cache").exists(), "tiktoken's download cache was used"


def test_a_file_that_is_not_the_pinned_one_is_refused(monkeypatch):
    tokens.cl100k.cache_clear()
    monkeypatch.setattr(tokens, "CL100K_SHA256", "0" * 64)
    try:
        with pytest.raises(tokens.EncodingFileError, match="sha256"):
            tokens.cl100k()
    finally:
        tokens.cl100k.cache_clear()


@pytest.mark.parametrize("text", ["TOTAL 12.99 café " * 3000, "\U0001f600" * 9000, "é" * 20_000, "x" * 100_000])
def test_fit_cuts_at_a_token_boundary_to_the_longest_prefix_within_the_limit(text):
    counter = tokens.cl100k()
    fitted = counter.fit(text, 8192)
    assert fitted.truncated and text.startswith(fitted.text)
    assert fitted.tokens == counter.count(fitted.text) <= 8192
    assert counter.count(text[:len(fitted.text) + 1]) > 8192 or len(fitted.text) == len(text)


def test_fit_leaves_text_within_the_limit_as_it_is():
    fitted = tokens.cl100k().fit("MILK 3.99", 8192)
    assert (fitted.text, fitted.truncated, fitted.tokens) == ("MILK 3.99", False, 7)


def test_queue_cycles_fill_the_limit_in_order():
    assert queue_cycles([], 10) == 0
    assert queue_cycles([4, 4, 4, 4, 4], None) == 1
    assert queue_cycles([4, 4, 4, 4, 4], 10) == 3
    assert queue_cycles([10, 1, 9, 1], 10) == 3
