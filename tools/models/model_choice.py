"""Which MedGemma a machine can run, and why: the `model: auto` decision.

The decision is a pure function of the free GPU memory (and whether 4-bit quantisation is
installed), so it is tested with given numbers and no GPU. Memory figures are the weights alone
(decimal GB, from parameter counts) plus a working allowance for the KV cache and activations of
an intake-length context; docs/models.md explains them.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, Field

GB = 1_000_000_000

Quantization = Literal["none", "4bit"]

MEDGEMMA_27B = "google/medgemma-27b-it"
MEDGEMMA_4B = "google/medgemma-4b-it"
MEDGEMMA_27B_TEXT = "google/medgemma-27b-text-it"
DEFAULT_MEDGEMMA = MEDGEMMA_27B


class ModelVariant(BaseModel):
    """A MedGemma checkpoint and what it takes to hold it in GPU memory."""

    model_id: str
    multimodal: bool
    params_billion: float
    bf16_gb: float = Field(description="Weights at bfloat16.")
    nf4_gb: float = Field(description="Weights with 4-bit NF4 linear layers (embeddings and vision tower stay bf16).")
    working_gb: float = Field(description="KV cache and activations for an intake (about 8k tokens) on top.")
    kv_mb_per_token: float = Field(description="bf16 KV cache per token with every layer caching the full context.")

    def needs_gb(self, quantization: Quantization) -> float:
        return (self.nf4_gb if quantization == "4bit" else self.bf16_gb) + self.working_gb


VARIANTS: dict[str, ModelVariant] = {
    v.model_id: v
    for v in (
        # 62 layers, hidden 5376, 16 KV heads x 128, vocab 262k; SigLIP-400M vision tower.
        ModelVariant(
            model_id=MEDGEMMA_27B,
            multimodal=True,
            params_billion=27.4,
            bf16_gb=54.8,
            nf4_gb=17.0,
            working_gb=6.0,
            kv_mb_per_token=0.51,
        ),
        ModelVariant(
            model_id=MEDGEMMA_27B_TEXT,
            multimodal=False,
            params_billion=27.0,
            bf16_gb=54.0,
            nf4_gb=16.2,
            working_gb=6.0,
            kv_mb_per_token=0.51,
        ),
        # 34 layers, hidden 2560, 4 KV heads x 256, vocab 262k; SigLIP-400M vision tower.
        ModelVariant(
            model_id=MEDGEMMA_4B,
            multimodal=True,
            params_billion=4.3,
            bf16_gb=8.6,
            nf4_gb=3.9,
            working_gb=2.5,
            kv_mb_per_token=0.14,
        ),
    )
}

AUTO_ORDER: tuple[tuple[str, Quantization], ...] = (
    (MEDGEMMA_27B, "none"),
    (MEDGEMMA_27B, "4bit"),
    (MEDGEMMA_4B, "none"),
    (MEDGEMMA_4B, "4bit"),
)


class GpuMemory(BaseModel):
    """What `torch.cuda.mem_get_info` reported for one device."""

    device: str = "cuda:0"
    free_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)


class ModelChoice(BaseModel):
    """The outcome of `model: auto`: what to load, how, and the reasoning in words."""

    kind: Literal["medgemma", "demo"]
    model_id: str | None = Field(default=None, description="The MedGemma id; None for the CPU demo model.")
    quantization: Quantization = "none"
    device: str = "cpu"
    reason: str
    considered: list[str] = Field(default_factory=list, description="Each option tried and whether it fit.")

    @property
    def spec(self) -> str:
        """The model spec this choice stands for (``transformers:<id>`` or ``demo``)."""
        return f"transformers:{self.model_id}" if self.kind == "medgemma" and self.model_id else "demo"


def _gb(value: float) -> str:
    return f"{value:.1f} GB"


def choose_model(gpu: GpuMemory | None, *, quantization_available: bool) -> ModelChoice:
    """27B when it fits the GPU (bf16, then 4-bit), else 4B (bf16, then 4-bit), else the CPU demo model."""
    if gpu is None:
        return ModelChoice(
            kind="demo",
            reason="no CUDA GPU found: using the small CPU demo model (SmolLM2-135M), not a clinical model",
        )
    free = gpu.free_bytes / GB
    considered: list[str] = []
    for model_id, quantization in AUTO_ORDER:
        variant = VARIANTS[model_id]
        label = f"{model_id} ({'4-bit' if quantization == '4bit' else 'bf16'})"
        if quantization == "4bit" and not quantization_available:
            considered.append(f"{label}: skipped, bitsandbytes is not installed")
            continue
        needed = variant.needs_gb(quantization)
        if needed <= free:
            considered.append(f"{label}: needs ~{_gb(needed)}, fits")
            return ModelChoice(
                kind="medgemma",
                model_id=model_id,
                quantization=quantization,
                device="auto",
                reason=(
                    f"{gpu.device} has {_gb(free)} free of {_gb(gpu.total_bytes / GB)}; {label} needs about "
                    f"{_gb(needed)} ({_gb(needed - variant.working_gb)} weights + {_gb(variant.working_gb)} working)"
                ),
                considered=considered,
            )
        considered.append(f"{label}: needs ~{_gb(needed)}, only {_gb(free)} free")
    return ModelChoice(
        kind="demo",
        reason=f"{gpu.device} has only {_gb(free)} free, too little for any MedGemma: using the small CPU demo model",
        considered=considered,
    )


def probe_gpu() -> GpuMemory | None:
    """Free and total memory of the first CUDA device, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    return GpuMemory(device="cuda:0", free_bytes=int(free), total_bytes=int(total))


def quantization_available() -> bool:
    """True when bitsandbytes is importable (4-bit loading needs it and a CUDA GPU)."""
    return importlib.util.find_spec("bitsandbytes") is not None
