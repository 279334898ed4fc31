"""The offline embedding model behind the local provider.

Model: wordllama's l2_supercat_256, a static token-embedding table that ships
in the wheel. wordllama's own `load()` looks in the wrong folder and may try
the network, so the weights and tokenizer are read straight from the package
directory, once per process. Embeddings are the mean of the input's token
vectors, L2-normalised: what `WordLlamaInference.embed(norm=True)` computes,
but pooled over the concatenated token ids rather than a padded batch, so
memory follows the number of tokens rather than batch size x longest input,
and the one tokenisation also gives the usage counts.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedding_assets.domain.settings import LOCAL_NATIVE_DIMENSIONS
from embedding_assets.domain.tokens import Fitted

MODEL = "wordllama-l2-supercat-256"
# Named in the domain, so that settings refuse a larger EMBEDDING_DIMENSIONS at load.
NATIVE_DIMENSIONS = LOCAL_NATIVE_DIMENSIONS

_POOL_TOKENS = 32_768


class WordLlamaModel:
    """The static embedding table and its tokenizer."""

    def __init__(self, table: np.ndarray, tokenizer: Any) -> None:
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.tokenizer = tokenizer

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.intp) for e in encodings]

    def count(self, text: str) -> int:
        """Tokens as this model bills them in `usage`: the pipeline's budgets and cuts use its own count."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def fit(self, text: str, max_tokens: int) -> Fitted:
        """`text`, or its longest prefix within `max_tokens`, cut where a token ends in the original text."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= max_tokens:
            return Fitted(text, len(encoding.ids), False)
        cut = text[:encoding.offsets[max_tokens - 1][1]]
        tokens = self.count(cut)
        while tokens > max_tokens:  # byte-fallback tokens of one character share its offsets
            cut = cut[:-1]
            tokens = self.count(cut)
        return Fitted(cut, tokens, True)

    def pool(self, token_ids: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length mean token vectors; each input must have at least one token.

        Inputs are pooled in groups of at most _POOL_TOKENS gathered token
        vectors (or one longer input), which bounds the working memory.
        """
        out = np.empty((len(token_ids), self.table.shape[1]), dtype=np.float32)
        start = 0
        while start < len(token_ids):
            stop, tokens = start + 1, len(token_ids[start])
            while stop < len(token_ids) and tokens + len(token_ids[stop]) <= _POOL_TOKENS:
                tokens += len(token_ids[stop])
                stop += 1
            group = token_ids[start:stop]
            lengths = np.array([len(ids) for ids in group], dtype=np.intp)
            offsets = np.concatenate(([0], np.cumsum(lengths[:-1])))
            sums = np.add.reduceat(self.table[np.concatenate(group)], offsets, axis=0)
            out[start:stop] = sums / lengths[:, None].astype(np.float32)
            start = stop
        return normalise(out)


_model: WordLlamaModel | None = None
_model_lock = threading.Lock()


def load_model() -> WordLlamaModel:
    """The process-wide model, read from the installed wordllama package on first use."""
    global _model
    with _model_lock:
        if _model is None:
            from safetensors import safe_open
            from tokenizers import Tokenizer

            spec = importlib.util.find_spec("wordllama")
            if spec is None or not spec.submodule_search_locations:
                raise RuntimeError("the wordllama package is not installed")
            package = Path(next(iter(spec.submodule_search_locations)))
            weights = package / "weights" / "l2_supercat_256.safetensors"
            tokenizer = package / "tokenizers" / "l2_supercat_tokenizer_config.json"
            with safe_open(str(weights), framework="np", device="cpu") as f:
                table = f.get_tensor("embedding.weight")
            _model = WordLlamaModel(table, Tokenizer.from_file(str(tokenizer)))
        return _model


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=vectors, where=norms > 0)


def truncate(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """OpenAI-style `dimensions`: keep the leading components and re-normalise."""
    if dimensions == vectors.shape[1]:
        return vectors
    return normalise(np.array(vectors[:, :dimensions]))


def check_dimensions(dimensions: Any) -> int:
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= NATIVE_DIMENSIONS:
        raise ValueError(f"dimensions must be an integer from 1 to {NATIVE_DIMENSIONS}, got {dimensions!r}")
    return dimensions
