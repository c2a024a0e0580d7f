"""Prefix reuse: an intake's next prompt only encodes what was appended, and greedy output does not change.

Checked on the tiny random Gemma 3 checkpoints (sliding-window layers, prompts far past the window)
and on SmolLM2-135M-Instruct's real weights, with the interviewer's real prompts turn after turn,
two sessions interleaved, under the JSON grammar.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agents.coverage import IntakeElement
from agents.interviewer import build_request
from tests.model_fixtures import tiny_gemma_multimodal, tiny_gemma_text
from tools.models.prefix_cache import PrefixCache, common_prefix_length
from tools.models.protocol import ChatRequest
from tools.models.transformers_backend import TransformersChatModel, load_demo_model

__all__ = ["tiny_gemma_multimodal", "tiny_gemma_text"]

CHART = "- Active medication: Lisinopril 10 MG Oral Tablet [MedicationRequest/m-1]\n- Allergy: Penicillin [a-1]"
ELEMENTS = [IntakeElement.ONSET, IntakeElement.LOCATION, IntakeElement.SEVERITY, IntakeElement.MEDICATIONS]
ANSWERS = ["Since Monday morning.", "Behind my eyes.", "About a seven.", "Yes, still taking it."]


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=24)


def _turns(reason: str) -> list[ChatRequest]:
    """The interviewer's prompts for successive turns of one intake."""
    requests = []
    conversation: list[tuple[str, str]] = []
    for index, element in enumerate(ELEMENTS):
        requests.append(build_request(element, "What about it?", CHART, conversation, reason))
        conversation.append((f"Question {index + 1}?", ANSWERS[index]))
    return requests


def _run(model: TransformersChatModel, requests: list[ChatRequest], max_new_tokens: int) -> list[str]:
    limited = [r.model_copy(update={"max_new_tokens": max_new_tokens}) for r in requests]
    return [model.generate_sync(r, Question).text for r in limited]


# --- the cache itself ----------------------------------------------------------------------------


class _FakeCache:
    """Holds a length, like a KV cache's sequence dimension."""

    def __init__(self, length: int) -> None:
        self.length = length

    def get_seq_length(self) -> int:
        return self.length


def _fake_crop(cache: _FakeCache, keep: int) -> _FakeCache:
    return _FakeCache(keep)


def _cache(**kwargs: int) -> PrefixCache:
    return PrefixCache(crop=_fake_crop, **kwargs)


def test_the_longest_shared_prefix_is_taken_and_cut_back() -> None:
    cache = _cache()
    cache.put([1, 2, 3, 4, 5], _FakeCache(5))
    cache.put([1, 2, 9], _FakeCache(3))
    taken = cache.take([1, 2, 3, 4, 7, 8])
    assert taken.reused_tokens == 4 and taken.cache.length == 4 and taken.source == (1, 2, 3, 4, 5)
    assert len(cache) == 2  # the entry itself is untouched: a view was cut


def test_at_least_one_token_is_left_to_encode() -> None:
    cache = _cache()
    cache.put([1, 2, 3], _FakeCache(3))
    taken = cache.take([1, 2, 3])
    assert taken.reused_tokens == 2 and taken.cache.length == 2


def test_a_continued_conversation_replaces_its_entry_another_keeps_it() -> None:
    cache = _cache()
    cache.put([1, 2, 3, 4, 5, 6], _FakeCache(6))
    same_session = cache.take([1, 2, 3, 4, 5, 7])
    cache.put([1, 2, 3, 4, 5, 7, 8], _FakeCache(7), continued=same_session)
    assert len(cache) == 1
    other_session = cache.take([1, 2, 9, 9])  # shares only the instructions
    cache.put([1, 2, 9, 9, 10], _FakeCache(5), continued=other_session)
    assert len(cache) == 2


def test_no_shared_prefix_is_a_miss() -> None:
    cache = _cache()
    cache.put([1, 2, 3], _FakeCache(3))
    assert cache.take([4, 5, 6]).cache is None
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)


def test_memory_is_bounded_by_entries_and_tokens() -> None:
    cache = _cache(max_entries=2, max_tokens=10)
    cache.put([1, 1, 1], _FakeCache(3))
    cache.put([2, 2, 2], _FakeCache(3))
    cache.put([3, 3, 3], _FakeCache(3))
    assert len(cache) == 2 and cache.take([1, 1, 1, 0]).cache is None  # the oldest left
    cache.put([4] * 8, _FakeCache(8))
    assert cache.cached_tokens <= 10
    cache.put([5] * 11, _FakeCache(11))  # larger than the whole budget: not kept
    assert cache.take([5] * 12).cache is None


def test_a_cache_that_cannot_be_cut_is_a_miss() -> None:
    def stuck(cache: _FakeCache, keep: int) -> _FakeCache:
        raise ValueError("cannot cut a DynamicSlidingWindowLayer back to a prefix")

    cache = PrefixCache(crop=stuck)
    cache.put([1, 2, 3, 4], _FakeCache(4))
    assert cache.take([1, 2, 3, 9]).cache is None


def test_a_real_cache_view_leaves_the_entry_intact() -> None:
    import torch
    from transformers import DynamicCache

    from tools.models.prefix_cache import view_crop

    full = DynamicCache()
    keys = torch.arange(2 * 6 * 4, dtype=torch.float32).reshape(1, 2, 6, 4)
    full.update(keys, keys.clone(), 0)
    view = view_crop(full, 4)
    assert view.get_seq_length() == 4 and full.get_seq_length() == 6
    view.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), 0)
    assert view.get_seq_length() == 5 and full.get_seq_length() == 6
    assert torch.equal(full.layers[0].keys, keys)  # appending to the view never wrote into the entry


def test_each_interviewer_prompt_extends_the_previous_one(tiny_gemma_text: Path) -> None:
    model = TransformersChatModel.load(str(tiny_gemma_text), model_id="tiny", reuse_prefix=False)
    tokenizer: Any = model._tokenizer
    prompts = [tokenizer(model.render_prompt(r.messages))["input_ids"] for r in _turns("Headache")]
    for before, after in itertools.pairwise(prompts):
        shared = common_prefix_length(before, after)
        not_reused = tokenizer.decode(before[shared:])
        assert "Next topic" in not_reused  # only the earlier prompt's last instruction is not reused
        assert "Patient:" not in not_reused and "Chart" not in not_reused and "Question" not in not_reused
        assert len(after) > len(before)


# --- real generation -------------------------------------------------------------------------------


def _check_same_output(
    with_reuse: TransformersChatModel, without: TransformersChatModel, *, turns: int = 4, max_new_tokens: int = 48
) -> None:
    session_a, session_b = _turns("Headache")[:turns], _turns("Sore knee after a fall")[:turns]
    interleaved = [r for pair in zip(session_a, session_b, strict=True) for r in pair]
    expected = _run(without, interleaved, max_new_tokens)
    assert _run(with_reuse, interleaved, max_new_tokens) == expected
    cache = with_reuse.prefix_cache
    assert cache is not None and cache.hits >= len(interleaved) - 2
    assert with_reuse.prompt_tokens_total == without.prompt_tokens_total
    assert with_reuse.prompt_tokens_encoded < 0.5 * without.prompt_tokens_encoded
    assert all(text.lstrip().startswith("{") for text in expected)  # grammar-shaped (cut at the token cap)


@pytest.mark.parametrize("which", ["tiny_gemma_text", "tiny_gemma_multimodal"])
def test_reuse_gives_identical_output_on_gemma3(which: str, request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(which)
    with_reuse = TransformersChatModel.load(str(directory), model_id=which)
    without = TransformersChatModel.load(str(directory), model_id=which, reuse_prefix=False)
    assert without.prefix_cache is None
    _check_same_output(with_reuse, without, turns=3, max_new_tokens=24)


@pytest.mark.slow
def test_reuse_gives_identical_output_on_smollm2(request: pytest.FixtureRequest) -> None:
    models_root = Path(request.config.cache.mkdir("models"))
    with_reuse = load_demo_model(cache_dir=models_root)
    without: Any = load_demo_model(cache_dir=models_root)
    without._prefix_cache = None
    _check_same_output(with_reuse, without, turns=3, max_new_tokens=16)
