"""A tiny random SigLIP checkpoint, written to disk, for tests and benchmarks where no weights can be had.

It is saved with `save_pretrained` and read back through the very `AutoModel` / `AutoProcessor`
path that loads `google/medsiglip-448`, so the loading code under test is the real one. Its scores
are random numbers: useful for plumbing, shapes, caching and speed, never for judging triage quality.
The tokenizer is a word-level `tokenizers` model over the shipped label prompts (the real one is
SentencePiece, which would need the real vocabulary file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tools.imaging.labels import load_label_sets

TINY_TEXT_LENGTH = 16


def _vocabulary(label_dir: Path | None) -> dict[str, int]:
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2}
    for label_set in load_label_sets(label_dir).values():
        texts = [label_set.modality_prompt, *(label.prompt for label in label_set.labels)]
        for word in re.findall(r"\w+|[^\w\s]", " ".join(texts).lower()):
            vocab.setdefault(word, len(vocab))
    return vocab


def tiny_siglip_config(image_size: int = 32, vocab_size: int = 256) -> Any:
    from transformers import SiglipConfig

    return SiglipConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": TINY_TEXT_LENGTH,
            "pad_token_id": 0,
            "bos_token_id": None,
            "eos_token_id": 2,
        },
        vision_config={
            "image_size": image_size,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
    )


def medsiglip_shaped_config(vocab_size: int = 256) -> Any:
    """The vision tower of medsiglip-448 (SigLIP so400m, 448 px, patch 14) with a small text tower:
    the image cost per picture is the real one; the text tower only matters without the cache."""
    from transformers import SiglipConfig

    return SiglipConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "max_position_embeddings": 64,
            "projection_size": 1152,
            "pad_token_id": 0,
            "bos_token_id": None,
            "eos_token_id": 2,
        },
        vision_config={
            "image_size": 448,
            "patch_size": 14,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
        },
    )


def write_tiny_siglip(
    target: Path, *, seed: int = 0, label_dir: Path | None = None, config: Any = None, text_length: int | None = None
) -> Path:
    """Build a random SigLIP (tiny unless `config` says otherwise) with a processor and save both to `target`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SiglipModel, SiglipProcessor
    from transformers.models.siglip import SiglipImageProcessorPil

    config = config if config is not None else tiny_siglip_config()
    vocab = _vocabulary(label_dir)
    if len(vocab) > config.text_config.vocab_size:
        raise ValueError(f"the label prompts need {len(vocab)} words, the config has {config.text_config.vocab_size}")
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    length = text_length or config.text_config.max_position_embeddings
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", eos_token="</s>", model_max_length=length
    )
    size = config.vision_config.image_size
    image_processor = SiglipImageProcessorPil(size={"height": size, "width": size})
    torch.manual_seed(seed)
    model = SiglipModel(config)
    with torch.no_grad():  # random init gives scale=bias=random; use SigLIP's trained-looking values
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(-1.0)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=fast)  # type: ignore[no-untyped-call]
    processor.save_pretrained(target)
    return target
