"""Loading a transformers checkpoint (MedGemma or any chat model) the way the real ids need.

The same code path serves a hub id (``google/medgemma-27b-it``), a local checkpoint directory and
the tiny random Gemma 3 models the tests build: the checkpoint's config decides the classes
(`Gemma3ForConditionalGeneration` and other configs with a vision tower load through
`AutoModelForImageTextToText` + `AutoProcessor`, the rest through `AutoModelForCausalLM` +
`AutoTokenizer`), never the name alone.

Failures a clinic will meet are turned into messages that say what to do: weights that are not
on disk while the hub is out of reach name the download command and where the files must go; a
load that runs out of memory names the smaller option.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel

from tools.models.model_choice import GB, MEDGEMMA_4B, VARIANTS, Quantization
from tools.models.protocol import ModelUnavailableError

AutoClass = Literal["AutoModelForCausalLM", "AutoModelForImageTextToText"]

_TRUE = {"1", "true", "yes", "on"}


class LoadedCheckpoint(BaseModel):
    """What was loaded and how: the record a caller (and a test) checks."""

    model_id: str
    source: str
    multimodal: bool
    auto_class: AutoClass
    preprocessor_class: str
    dtype: str
    device: str
    quantization: Quantization
    local_files_only: bool


class PretrainedLoader:
    """The `from_pretrained` calls, in one place: the seam where a test makes a load run out of memory."""

    def config(self, target: str, **kwargs: Any) -> Any:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(target, **kwargs)

    def tokenizer(self, target: str, **kwargs: Any) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(target, **kwargs)

    def processor(self, target: str, **kwargs: Any) -> Any:
        from transformers import AutoProcessor

        make: Any = AutoProcessor.from_pretrained  # untyped in transformers
        return make(target, **kwargs)

    def model(self, auto_class: AutoClass, target: str, **kwargs: Any) -> Any:
        import transformers

        return getattr(transformers, auto_class).from_pretrained(target, **kwargs)


def hub_cache_dir() -> str:
    """Where `huggingface_hub` looks for downloaded weights (follows HF_HOME / HF_HUB_CACHE)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return str(Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")


def offline_by_configuration() -> bool:
    """True when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE say never to touch the network."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """A TCP connect to the hub endpoint: cheap, and enough to tell an air-gapped machine."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def is_local_path(source: str) -> bool:
    """A directory on disk, or text that can only mean one (``./x``, ``/x``, ``~/x``, ``a/b/c``)."""
    if Path(source).expanduser().exists():
        return True
    return source.startswith(("/", "./", "../", "~")) or source.count("/") > 1 or (os.sep != "/" and os.sep in source)


def download_hint(model_id: str) -> str:
    """What to run, and where the files must end up, for weights that are not on this machine."""
    gated = " (MedGemma is gated: accept its terms on the model page and run `huggingface-cli login` first)"
    return (
        f"Download it on a machine with network access: `huggingface-cli download {model_id}`"
        f"{gated if model_id.startswith('google/medgemma') else ''}; then copy the Hugging Face cache to "
        f"{hub_cache_dir()} on this machine (or point HF_HOME at the copy), or save the checkpoint to a "
        f"directory and use transformers:/path/to/that/directory."
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM (torch.OutOfMemoryError is a RuntimeError), a CPU MemoryError, or a wrapped one."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_out_of_memory(cause)


def out_of_memory_message(model_id: str, quantization: Quantization, exc: BaseException) -> str:
    variant = VARIANTS.get(model_id)
    needs = ""
    if variant is not None:
        needs = f" (it needs about {variant.needs_gb(quantization):.0f} GB"
        needs += " with 4-bit weights)" if quantization == "4bit" else " at bf16)"
    free = _free_gpu_text()
    options = []
    if quantization != "4bit":
        options.append(f"4-bit weights (PREVISIT_MODEL_QUANTIZE=4bit, needs bitsandbytes): transformers:{model_id}")
    if model_id != MEDGEMMA_4B:
        options.append(f"the smaller model: transformers:{MEDGEMMA_4B}")
    options.append("model: auto, which picks what fits")
    return (
        f"Out of memory loading {model_id}{needs}{free}: {type(exc).__name__}: {str(exc)[:200]}. "
        f"Try {'; or '.join(options)}."
    )


def _free_gpu_text() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            return f"; the GPU has {free / GB:.1f} of {total / GB:.1f} GB free"
    except Exception:  # reporting must never hide the real error
        return ""
    return ""


def is_multimodal_config(config: Any) -> bool:
    """A config with a vision tower (Gemma3ForConditionalGeneration and kin)."""
    if getattr(config, "vision_config", None) is not None:
        return True
    architectures = getattr(config, "architectures", None) or []
    return any("ConditionalGeneration" in a or "ImageTextToText" in a for a in architectures)


def _quantization_config(quantization: Quantization) -> Any:
    if quantization != "4bit":
        return None
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelUnavailableError(
            "4-bit loading needs bitsandbytes and a CUDA GPU: pip install bitsandbytes "
            "(or unset PREVISIT_MODEL_QUANTIZE)"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise ModelUnavailableError("4-bit loading needs a CUDA GPU; none is visible (unset PREVISIT_MODEL_QUANTIZE)")
    make: Any = BitsAndBytesConfig
    return make(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )


def load_checkpoint(
    source: str,
    *,
    dtype: Any,
    device: str,
    quantization: Quantization = "none",
    loader: PretrainedLoader | None = None,
    model_id: str | None = None,
    progress: Any = None,
) -> tuple[Any, Any, Any | None, LoadedCheckpoint]:
    """(model, tokenizer, processor or None, record) for a hub id or a local checkpoint directory."""
    calls = loader or PretrainedLoader()
    report = progress or (lambda _message: None)
    name = model_id or source
    local = is_local_path(source)
    target = str(Path(source).expanduser()) if local else source
    if local and not Path(target).is_dir():
        raise ModelUnavailableError(f"No checkpoint directory at {target} (expected config.json and weights there)")

    local_only = local or offline_by_configuration()
    try:
        config = calls.config(target, local_files_only=True)
        local_only = True
    except (OSError, ValueError) as exc:
        if local:
            raise ModelUnavailableError(f"Could not read the checkpoint at {target}: {exc}") from exc
        if local_only or not hub_reachable():
            why = "HF_HUB_OFFLINE is set" if local_only else "the Hugging Face hub cannot be reached"
            raise ModelUnavailableError(f"{source} is not on this machine and {why}. {download_hint(source)}") from exc
        report(f"{source} is not cached locally: downloading from the hub")
        try:
            config = calls.config(target)
        except (OSError, ValueError) as download_exc:
            raise ModelUnavailableError(
                f"Could not fetch {source} from the hub: {download_exc}. {download_hint(source)}"
            ) from download_exc

    multimodal = is_multimodal_config(config)
    auto_class: AutoClass = "AutoModelForImageTextToText" if multimodal else "AutoModelForCausalLM"
    options: dict[str, Any] = {"local_files_only": local_only} if not local else {}
    quantization_config = _quantization_config(quantization)
    load_kwargs: dict[str, Any] = {**options, "dtype": dtype}
    if quantization_config is not None:
        load_kwargs["quantization_config"] = quantization_config
        load_kwargs["device_map"] = "auto"
    elif device == "auto":
        load_kwargs["device_map"] = "auto"

    processor: Any | None = None
    try:
        if multimodal:
            report(f"Loading the processor for {name} (multimodal: {type(config).__name__})")
            processor = calls.processor(target, **options)
            tokenizer = processor.tokenizer
        else:
            report(f"Loading the tokenizer for {name}")
            tokenizer = calls.tokenizer(target, **options)
        label = "4-bit NF4" if quantization == "4bit" else str(dtype).removeprefix("torch.")
        report(f"Loading weights for {name} ({label}, {device}) with {auto_class}")
        model = calls.model(auto_class, target, **load_kwargs)
        if "device_map" not in load_kwargs and device != "cpu":
            model = model.to(device)
    except ModelUnavailableError:
        raise
    except Exception as exc:  # corrupt weights raise library-specific errors (SafetensorError, ...)
        if is_out_of_memory(exc):
            raise ModelUnavailableError(out_of_memory_message(name, quantization, exc)) from exc
        hint = "" if local else f" {download_hint(source)}"
        raise ModelUnavailableError(f"Could not load {source}: {type(exc).__name__}: {exc}.{hint}") from exc

    record = LoadedCheckpoint(
        model_id=name,
        source=target,
        multimodal=multimodal,
        auto_class=auto_class,
        preprocessor_class=type(processor if processor is not None else tokenizer).__name__,
        dtype=str(dtype).removeprefix("torch."),
        device=device,
        quantization=quantization,
        local_files_only=local_only,
    )
    return model, tokenizer, processor, record
