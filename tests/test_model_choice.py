"""`model: auto`: which MedGemma a GPU can hold, decided from given memory numbers (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from previsit.config import Settings, build_model
from tools.models import model_choice
from tools.models.model_choice import (
    GB,
    MEDGEMMA_4B,
    MEDGEMMA_27B,
    VARIANTS,
    GpuMemory,
    choose_model,
)
from tools.models.openai_backend import OpenAICompatibleChatModel
from tools.models.protocol import ModelUnavailableError


def _gpu(free_gb: float, total_gb: float = 80.0) -> GpuMemory:
    return GpuMemory(free_bytes=int(free_gb * GB), total_bytes=int(total_gb * GB))


def test_an_h100_runs_27b_in_bf16() -> None:
    choice = choose_model(_gpu(79.0), quantization_available=False)
    assert (choice.kind, choice.model_id, choice.quantization, choice.device) == (
        "medgemma",
        MEDGEMMA_27B,
        "none",
        "auto",
    )
    assert choice.spec == "transformers:google/medgemma-27b-it"
    assert choice.reason == (
        "cuda:0 has 79.0 GB free of 80.0 GB; google/medgemma-27b-it (bf16) needs about 60.8 GB "
        "(54.8 GB weights + 6.0 GB working)"
    )


def test_a_24_gb_card_runs_27b_in_4bit_when_bitsandbytes_is_there() -> None:
    choice = choose_model(_gpu(23.5, 24.0), quantization_available=True)
    assert (choice.model_id, choice.quantization) == (MEDGEMMA_27B, "4bit")
    assert choice.considered == [
        "google/medgemma-27b-it (bf16): needs ~60.8 GB, only 23.5 GB free",
        "google/medgemma-27b-it (4-bit): needs ~23.0 GB, fits",
    ]


def test_without_bitsandbytes_a_24_gb_card_gets_4b() -> None:
    choice = choose_model(_gpu(23.5, 24.0), quantization_available=False)
    assert (choice.model_id, choice.quantization) == (MEDGEMMA_4B, "none")
    assert "google/medgemma-27b-it (4-bit): skipped, bitsandbytes is not installed" in choice.considered


def test_a_small_card_gets_4b_in_4bit_or_the_demo_model() -> None:
    assert choose_model(_gpu(8.0, 8.0), quantization_available=True).quantization == "4bit"
    assert choose_model(_gpu(8.0, 8.0), quantization_available=True).model_id == MEDGEMMA_4B
    too_small = choose_model(_gpu(5.0, 6.0), quantization_available=True)
    assert too_small.kind == "demo" and too_small.spec == "demo"
    assert too_small.reason.startswith("cuda:0 has only 5.0 GB free, too little for any MedGemma")
    assert len(too_small.considered) == 4


def test_no_gpu_means_the_demo_model_and_says_it_is_not_clinical() -> None:
    choice = choose_model(None, quantization_available=True)
    assert choice.kind == "demo" and choice.device == "cpu"
    assert "not a clinical model" in choice.reason


def test_thresholds_follow_the_memory_table() -> None:
    needed = VARIANTS[MEDGEMMA_27B].needs_gb("none")
    assert choose_model(_gpu(needed), quantization_available=False).model_id == MEDGEMMA_27B
    assert choose_model(_gpu(needed - 0.1), quantization_available=False).model_id == MEDGEMMA_4B
    for variant in VARIANTS.values():
        assert variant.nf4_gb < variant.bf16_gb
        assert variant.bf16_gb == pytest.approx(2 * variant.params_billion, rel=0.01)  # two bytes a weight


@pytest.mark.slow
def test_auto_on_this_machine_loads_the_demo_model_and_says_why(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_choice, "probe_gpu", lambda: None)  # whatever this machine has
    models_root = Path(request.config.cache.mkdir("models"))
    lines: list[str] = []
    model = build_model("auto", Settings(data_dir=models_root.parent), progress=lines.append)
    assert model is not None and model.is_demo
    assert lines[0] == (
        "model: auto picked demo (none): no CUDA GPU found: using the small CPU demo model (SmolLM2-135M), "
        "not a clinical model"
    )


def test_model_specs_for_openai_and_bad_ones() -> None:
    settings = Settings()
    model = build_model("openai:http://127.0.0.1:9/v1#medgemma", settings)
    assert isinstance(model, OpenAICompatibleChatModel) and model.model_id == "medgemma via http://127.0.0.1:9/v1"
    with pytest.raises(ModelUnavailableError, match="must start with http"):
        build_model("openai:localhost:9", settings)
    with pytest.raises(ModelUnavailableError, match="Unknown model 'gpt'"):
        build_model("gpt", settings)


def test_transformers_without_an_id_means_medgemma_27b(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="huggingface-cli download google/medgemma-27b-it"):
        build_model("transformers", Settings())


def test_quantize_and_thinking_come_from_the_environment() -> None:
    settings = Settings.from_env({"PREVISIT_MODEL_QUANTIZE": "4bit", "PREVISIT_MODEL_THINKING": "1"})
    assert settings.model_quantize == "4bit" and settings.model_thinking
