"""MedGemma end to end on a CUDA GPU with the real weights; skipped without CUDA or without the weights.

Run on a GPU machine that has the weights in its Hugging Face cache (HF_HOME) or under
PREVISIT_MEDGEMMA_DIR/<name> (e.g. $PREVISIT_MEDGEMMA_DIR/medgemma-4b-it):

    HF_HUB_OFFLINE=1 pytest -q tests/gpu

The tiny random Gemma 3 checkpoints also run here on the GPU (bf16, device_map="auto"), so the
device path is exercised on any CUDA machine even without the real weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

torch = pytest.importorskip("torch")

from tests.model_fixtures import tiny_gemma_multimodal, tiny_gemma_text  # noqa: E402
from tools.models.model_choice import MEDGEMMA_4B, MEDGEMMA_27B, MEDGEMMA_27B_TEXT, choose_model, probe_gpu  # noqa: E402
from tools.models.protocol import ChatMessage, ChatRequest  # noqa: E402
from tools.models.transformers_backend import TransformersChatModel  # noqa: E402

__all__ = ["tiny_gemma_multimodal", "tiny_gemma_text"]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

IMAGE = Path(__file__).resolve().parents[3] / "shared" / "data" / "images" / "cxr_nih_00000001_000_cardiomegaly.png"


class Question(BaseModel):
    question: str = Field(min_length=3, max_length=200)


class Finding(BaseModel):
    description: str = Field(max_length=300)
    is_chest_xray: bool


def _weights(model_id: str) -> str | None:
    """A local directory or a cached hub id for `model_id`, or None when the weights are not here."""
    root = os.environ.get("PREVISIT_MEDGEMMA_DIR")
    if root and (Path(root) / model_id.split("/")[-1] / "config.json").is_file():
        return str(Path(root) / model_id.split("/")[-1])
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model_id, "config.json")
    return model_id if isinstance(found, str) else None


def _request(text: str, *, images: list[str] | None = None, thinking: bool = False) -> ChatRequest:
    return ChatRequest(
        task="gpu.medgemma",
        messages=[
            ChatMessage(role="system", content="You are a clinic intake assistant. Reply with JSON only."),
            ChatMessage(role="user", content=text, images=images or []),
        ],
        max_new_tokens=128,
        thinking=thinking,
    )


@pytest.mark.parametrize("which", ["tiny_gemma_text", "tiny_gemma_multimodal"])
async def test_tiny_gemma3_on_the_gpu_in_bf16(which: str, request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(which)
    model = TransformersChatModel.load(str(directory), device="auto", model_id=which)
    assert model.loaded is not None and model.loaded.dtype == "bfloat16"
    assert next(model._model.parameters()).device.type == "cuda"
    reply = await model.complete(_request("Where does it hurt?"), Question)
    assert isinstance(reply.value, Question)


def test_auto_choice_on_this_gpu() -> None:
    gpu = probe_gpu()
    assert gpu is not None and gpu.total_bytes > 0
    choice = choose_model(gpu, quantization_available=False)
    print(f"\n{choice.spec}: {choice.reason}")
    assert choice.reason


@pytest.mark.parametrize("model_id", [MEDGEMMA_4B, MEDGEMMA_27B_TEXT, MEDGEMMA_27B])
async def test_real_medgemma_end_to_end(model_id: str) -> None:
    source = _weights(model_id)
    if source is None:
        pytest.skip(f"{model_id} weights are not on this machine")
    gpu = probe_gpu()
    needed = {MEDGEMMA_4B: 12, MEDGEMMA_27B_TEXT: 61, MEDGEMMA_27B: 61}[model_id]
    if gpu is None or gpu.free_bytes < needed * 10**9:
        pytest.skip(f"{model_id} needs about {needed} GB of free GPU memory in bf16")
    model = TransformersChatModel.load(source, device="auto", model_id=model_id)
    assert model.loaded is not None
    assert model.loaded.multimodal == (model_id != MEDGEMMA_27B_TEXT)

    reply = await model.complete(_request("The patient has a headache. Ask when it started."), Question)
    assert "?" in reply.value.question and json.loads(reply.raw)

    thought = await model.complete(_request("Ask one question about chest pain.", thinking=True), Question)
    assert "<unused9" not in thought.value.question

    if model.multimodal:
        seen = await model.complete(_request("Describe this image briefly.", images=[str(IMAGE)]), Finding)
        assert seen.value.is_chest_xray and seen.notes == []

    # Prefix reuse gives the same greedy answer as a cold cache.
    follow_up = _request("The patient has a headache since Monday. Ask where it hurts.")
    warm = model.generate_sync(follow_up, Question).text
    cache = model.prefix_cache
    assert cache is not None
    cache.clear()
    assert model.generate_sync(follow_up, Question).text == warm
