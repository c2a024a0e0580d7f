"""MedGemma's loading and decoding path, on tiny random Gemma 3 checkpoints saved like the real ones.

The real ids (google/medgemma-27b-it, -4b-it, -27b-text-it) go through the same `load` call; the
GPU module tests/gpu/test_medgemma_gpu.py runs them where they exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.model_fixtures import tiny_gemma_multimodal, tiny_gemma_text
from tools.models import hub
from tools.models.hub import PretrainedLoader
from tools.models.protocol import ChatMessage, ChatModel, ChatRequest, ModelUnavailableError, StreamingChatModel
from tools.models.structured import THINKING_INSTRUCTION
from tools.models.transformers_backend import TransformersChatModel

__all__ = ["tiny_gemma_multimodal", "tiny_gemma_text"]  # fixtures used by name below

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
CHEST_XRAY = IMAGES / "cxr_nih_00000001_000_cardiomegaly.png"
PHOTO = IMAGES / "small_rgb.jpeg"


class Question(BaseModel):
    """Short enough that the grammar always closes it well inside the token budget."""

    question: str = Field(min_length=1, max_length=30)


class Pain(BaseModel):
    score: int = Field(ge=0, le=10)
    where: str = Field(max_length=20)


def _request(
    text: str, *, images: list[str] | None = None, thinking: bool = False, max_new_tokens: int = 160
) -> ChatRequest:
    return ChatRequest(
        task="test.medgemma",
        messages=[
            ChatMessage(role="system", content="You are a clinic intake assistant. Reply with JSON only."),
            ChatMessage(role="user", content=text, images=images or []),
        ],
        max_new_tokens=max_new_tokens,
        thinking=thinking,
    )


@pytest.fixture(scope="module")
def text_model(tiny_gemma_text: Path) -> TransformersChatModel:
    return TransformersChatModel.load(str(tiny_gemma_text), model_id="tiny-gemma3-text")


@pytest.fixture(scope="module")
def multimodal_model(tiny_gemma_multimodal: Path) -> TransformersChatModel:
    return TransformersChatModel.load(str(tiny_gemma_multimodal), model_id="tiny-gemma3-multimodal")


class _RecordingGenerate:
    """Wraps a model's `generate` to see what it was given (and optionally force tokens first)."""

    def __init__(self, model: TransformersChatModel, forced: list[int] | None = None) -> None:
        self.inner: Any = model._model
        self.original = self.inner.generate
        self.forced = forced or []
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.forced:
            kwargs["logits_processor"].append(_ForceFirst(self.forced, int(kwargs["input_ids"].shape[1])))
        return self.original(**kwargs)


class _ForceFirst:
    """Stands in for weights that think: the first tokens are forced, then the model is free."""

    def __init__(self, tokens: list[int], prompt_length: int) -> None:
        self.tokens = tokens
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.prompt_length
        if step < len(self.tokens):
            forced = torch.full_like(scores, float("-inf"))
            forced[:, self.tokens[step]] = 0.0
            return forced
        return scores


# --- loading: the config decides the classes ----------------------------------------------------


def test_text_only_checkpoint_loads_as_a_causal_lm(text_model: TransformersChatModel) -> None:
    loaded = text_model.loaded
    assert loaded is not None
    assert loaded.auto_class == "AutoModelForCausalLM"
    assert not loaded.multimodal and not text_model.multimodal
    assert type(text_model._model).__name__ == "Gemma3ForCausalLM"
    assert loaded.preprocessor_class == "TokenizersBackend"
    assert loaded.dtype == "float32" and loaded.device == "cpu" and loaded.quantization == "none"
    assert text_model.merges_system_role  # Gemma: no system role, strict alternation
    assert isinstance(text_model, ChatModel) and isinstance(text_model, StreamingChatModel)


def test_multimodal_checkpoint_loads_image_text_to_text_with_its_processor(
    multimodal_model: TransformersChatModel,
) -> None:
    loaded = multimodal_model.loaded
    assert loaded is not None
    assert loaded.auto_class == "AutoModelForImageTextToText"
    assert loaded.multimodal and multimodal_model.multimodal
    assert type(multimodal_model._model).__name__ == "Gemma3ForConditionalGeneration"
    assert loaded.preprocessor_class == "Gemma3Processor"
    assert type(multimodal_model._processor.image_processor).__name__ == "Gemma3ImageProcessorPil"


def test_the_name_alone_does_not_decide(tiny_gemma_text: Path) -> None:
    """A text-only checkpoint under a multimodal-sounding id still loads as a causal LM."""
    model = TransformersChatModel.load(str(tiny_gemma_text), model_id="google/medgemma-4b-it")
    assert model.loaded is not None and model.loaded.auto_class == "AutoModelForCausalLM"


# --- decoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["text_model", "multimodal_model"])
async def test_replies_are_schema_valid_json(which: str, request: pytest.FixtureRequest) -> None:
    model: TransformersChatModel = request.getfixturevalue(which)
    for schema in (Question, Pain):
        reply = await model.complete(_request("Where does it hurt, and how much?"), schema)
        assert isinstance(reply.value, schema)
        assert json.loads(reply.raw) == reply.value.model_dump()  # random weights, grammar-shaped output
        assert reply.thinking is None and not reply.repaired
        assert 0 < reply.output_tokens <= 160 and reply.prompt_tokens > 0


def test_gemma_prompt_alternates_roles_and_merges_the_system_text(text_model: TransformersChatModel) -> None:
    prompt = text_model.render_prompt(
        [
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hello."),
            ChatMessage(role="assistant", content="When did it start?"),
            ChatMessage(role="user", content="Monday."),
        ]
    )
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nHello.<end_of_turn>\n"
        "<start_of_turn>model\nWhen did it start?<end_of_turn>\n"
        "<start_of_turn>user\nMonday.<end_of_turn>\n<start_of_turn>model\n"
    )


async def test_thinking_is_asked_for_stripped_and_kept_apart(
    text_model: TransformersChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer: Any = text_model._tokenizer
    thought = tokenizer.encode("thought The patient means the head.", add_special_tokens=False)
    forced = [tokenizer.convert_tokens_to_ids("<unused94>"), *thought, tokenizer.convert_tokens_to_ids("<unused95>")]
    recorder = _RecordingGenerate(text_model, forced)
    monkeypatch.setattr(text_model._model, "generate", recorder)

    reply = await text_model.complete(_request("Where does it hurt?", thinking=True), Question)

    prompt_ids = recorder.calls[0]["input_ids"][0].tolist()
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=False)
    assert prompt.startswith(f"<bos><start_of_turn>user\n{THINKING_INSTRUCTION}\n\nYou are a clinic")
    assert reply.raw.startswith("<unused94>thought The patient means the head.<unused95>")
    assert reply.thinking == "The patient means the head."
    assert isinstance(reply.value, Question)
    assert "<unused9" not in reply.value.question and "patient means" not in reply.value.question


async def test_without_thinking_the_marker_cannot_be_written(
    text_model: TransformersChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grammar alone decides the first token when thinking is off: forcing the marker is masked."""
    start = text_model._tokenizer.convert_tokens_to_ids("<unused94>")
    generated: list[list[int]] = []
    recorder = _RecordingGenerate(text_model)

    def spy(**kwargs: Any) -> Any:
        output = recorder(**kwargs)
        generated.append(output[0, kwargs["input_ids"].shape[1] :].tolist())
        return output

    monkeypatch.setattr(text_model._model, "generate", spy)
    reply = await text_model.complete(_request("Where?"), Question)
    assert start not in generated[0]
    assert reply.thinking is None and json.loads(reply.raw)


async def test_a_multimodal_model_receives_the_image(
    multimodal_model: TransformersChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _RecordingGenerate(multimodal_model)
    monkeypatch.setattr(multimodal_model._model, "generate", recorder)
    reply = await multimodal_model.complete(
        _request("What does this image show?", images=[str(CHEST_XRAY), str(PHOTO)]), Question
    )
    call = recorder.calls[0]
    assert tuple(call["pixel_values"].shape) == (2, 3, 28, 28)
    image_token = multimodal_model._tokenizer.convert_tokens_to_ids("<image_soft_token>")
    assert call["input_ids"][0].tolist().count(image_token) == 2 * 4
    assert "token_type_ids" in call
    assert isinstance(reply.value, Question) and reply.notes == []


async def test_a_text_only_model_leaves_images_out_and_says_so(
    text_model: TransformersChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _RecordingGenerate(text_model)
    monkeypatch.setattr(text_model._model, "generate", recorder)
    reply = await text_model.complete(_request("What does this show?", images=[str(CHEST_XRAY)]), Question)
    assert "pixel_values" not in recorder.calls[0]
    assert reply.notes == ["1 image(s) not shown: tiny-gemma3-text is a text-only model"]


async def test_an_unreadable_image_is_left_out_with_a_note(
    multimodal_model: TransformersChatModel, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    reply = await multimodal_model.complete(_request("Look.", images=[str(broken), str(PHOTO)]), Question)
    assert isinstance(reply.value, Question)
    assert len(reply.notes) == 1 and reply.notes[0].startswith("image broken.png not shown: unreadable")


async def test_streaming_hands_over_the_text_as_it_is_written(text_model: TransformersChatModel) -> None:
    deltas: list[str] = []
    reply = await text_model.complete_streaming(_request("Where does it hurt?"), Question, deltas.append)
    assert len(deltas) > 1
    assert "".join(deltas) == reply.raw


# --- bad input: missing weights, no network, out of memory ---------------------------------------


def test_missing_weights_offline_name_the_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub, "hub_cache_dir", lambda: str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelUnavailableError) as caught:
        TransformersChatModel.load("google/medgemma-4b-it")
    message = str(caught.value)
    assert "google/medgemma-4b-it is not on this machine and HF_HUB_OFFLINE is set" in message
    assert "`huggingface-cli download google/medgemma-4b-it`" in message
    assert str(tmp_path / "hf" / "hub") in message and "HF_HOME" in message
    assert "transformers:/path/to/that/directory" in message


def test_missing_weights_without_network_name_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout_s=2.0: False)  # the edge: no hub from here
    with pytest.raises(ModelUnavailableError, match="the Hugging Face hub cannot be reached") as caught:
        TransformersChatModel.load("google/medgemma-27b-text-it")
    assert "huggingface-cli download google/medgemma-27b-text-it" in str(caught.value)


def test_a_missing_local_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="No checkpoint directory at"):
        TransformersChatModel.load(str(tmp_path / "medgemma-4b-it"))


class _OutOfMemory(PretrainedLoader):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def model(self, auto_class: Any, target: str, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        "torch.OutOfMemoryError",
        "RuntimeError",
        "MemoryError",
    ],
)
def test_out_of_memory_on_load_suggests_the_smaller_option(tiny_gemma_multimodal: Path, error: str) -> None:
    import torch

    raised: BaseException = {
        "torch.OutOfMemoryError": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        "RuntimeError": RuntimeError("CUDA error: out of memory"),
        "MemoryError": MemoryError(),
    }[error]
    with pytest.raises(ModelUnavailableError) as caught:
        TransformersChatModel.load(
            str(tiny_gemma_multimodal), model_id="google/medgemma-27b-it", loader=_OutOfMemory(raised)
        )
    message = str(caught.value)
    assert message.startswith("Out of memory loading google/medgemma-27b-it (it needs about 61 GB at bf16)")
    assert "PREVISIT_MODEL_QUANTIZE=4bit" in message
    assert "transformers:google/medgemma-4b-it" in message


def test_other_load_errors_are_not_called_out_of_memory(tiny_gemma_text: Path) -> None:
    with pytest.raises(ModelUnavailableError) as caught:
        TransformersChatModel.load(str(tiny_gemma_text), loader=_OutOfMemory(RuntimeError("size mismatch for lm_head")))
    assert "Out of memory" not in str(caught.value) and "size mismatch" in str(caught.value)


def test_four_bit_needs_bitsandbytes_and_says_so(tiny_gemma_text: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(ModelUnavailableError, match="4-bit loading needs bitsandbytes"):
        TransformersChatModel.load(str(tiny_gemma_text), quantization="4bit")


def test_a_corrupt_checkpoint_is_named_not_a_traceback(tiny_gemma_text: Path, tmp_path: Path) -> None:
    import shutil

    garbled = tmp_path / "garbled-config"
    garbled.mkdir()
    (garbled / "config.json").write_text("{not json")
    with pytest.raises(ModelUnavailableError, match=f"Could not read the checkpoint at {garbled}"):
        TransformersChatModel.load(str(garbled))

    truncated = tmp_path / "truncated-weights"
    shutil.copytree(tiny_gemma_text, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelUnavailableError, match=f"Could not load {truncated}"):
        TransformersChatModel.load(str(truncated))
