"""Tiny random Gemma 3 checkpoints, built from config and saved like real ones.

No model hub is reachable here, so the MedGemma loading path is exercised on checkpoints that
have MedGemma's *shape* (the same classes, config layout, processor and special tokens) with a few
thousand random weights: a text-only `Gemma3ForCausalLM` (like medgemma-27b-text-it) and a
multimodal `Gemma3ForConditionalGeneration` with a `Gemma3Processor` (like medgemma-4b-it and
-27b-it). They are written with `save_pretrained` and read back by the backend through exactly the
`from_pretrained` calls the real ids use.

The tokenizer is a small byte-level BPE trained here with the `tokenizers` library, carrying
Gemma's special tokens (turn markers, the thinking markers, the image tokens) and Gemma's chat
template. Sliding-window attention is kept (window 16, one sliding and one global layer), so
prefix-cache reuse is tested past the window, as MedGemma's 1024-token window will be.

Test modules import the fixtures they use (`from tests.model_fixtures import tiny_gemma_text`);
the checkpoints are built once per session under pytest's base temp directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.models.transformers_backend import GEMMA_CHAT_TEMPLATE

SPECIAL_TOKENS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<unused94>",
    "<unused95>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
IMAGE_SIZE = 28
PATCH_SIZE = 14
TOKENS_PER_IMAGE = 4
SLIDING_WINDOW = 16

_CORPUS = [
    "You are a friendly clinic intake assistant. Ask exactly one short question about the topic.",
    "The patient reports a throbbing headache since Monday morning, worse in bright light.",
    "What brings you in today? When did it start? Where exactly is it? How bad is it from 0 to 10?",
    '{"question": "Where does it hurt?"} {"text": "ok", "score": 7, "severity": "moderate"}',
    "Your record lists lisinopril; are you still taking it? Any allergies to medicines or foods?",
    "user model system thought Reason for visit Chart Conversation so far Next topic",
]


def _train_tokenizer(directory: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(_CORPUS * 10, trainer)
    make: Any = PreTrainedTokenizerFast
    fast = make(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    fast.chat_template = GEMMA_CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return fast


def _text_config(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "sliding_window": SLIDING_WINDOW,
        "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
    }


def build_tiny_gemma_text(directory: Path) -> Path:
    """A text-only Gemma 3 checkpoint (the medgemma-27b-text-it layout)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = _train_tokenizer(directory)
    torch.manual_seed(1)
    make: Any = Gemma3TextConfig
    model = Gemma3ForCausalLM(make(**_text_config(tokenizer)))
    model.save_pretrained(directory)
    return directory


def build_tiny_gemma_multimodal(directory: Path) -> Path:
    """A multimodal Gemma 3 checkpoint with its processor (the medgemma-4b-it / -27b-it layout)."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        SiglipVisionConfig,
    )

    tokenizer = _train_tokenizer(directory)
    torch.manual_seed(2)
    make_vision: Any = SiglipVisionConfig
    vision = make_vision(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    make_config: Any = Gemma3Config
    config = make_config(
        text_config=_text_config(tokenizer),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    Gemma3ForConditionalGeneration(config).save_pretrained(directory)
    make_images: Any = Gemma3ImageProcessorPil
    make_processor: Any = Gemma3Processor
    processor = make_processor(
        image_processor=make_images(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        image_seq_length=TOKENS_PER_IMAGE,
        chat_template=GEMMA_CHAT_TEMPLATE,
    )
    processor.save_pretrained(directory)
    return directory


def _built(factory: pytest.TempPathFactory, name: str, build: Any) -> Path:
    directory = factory.getbasetemp() / name
    if not (directory / "config.json").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        build(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gemma_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny text-only Gemma 3 checkpoint."""
    return _built(tmp_path_factory, "tiny-gemma3-text", build_tiny_gemma_text)


@pytest.fixture(scope="session")
def tiny_gemma_multimodal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny multimodal Gemma 3 checkpoint (model, tokenizer, processor)."""
    return _built(tmp_path_factory, "tiny-gemma3-multimodal", build_tiny_gemma_multimodal)
