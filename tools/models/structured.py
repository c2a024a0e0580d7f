"""Turning model text into a validated pydantic object: strip, extract, validate, repair once.

Every backend shares this so that a garbled reply is handled the same way whatever produced it:
the thinking block MedGemma emits is removed first (kept apart as hidden reasoning), code fences
and chatter around the JSON are dropped, and a reply that still fails validation gets exactly one
repair round in which the model sees the validation error. A second failure is a typed
`StructuredOutputError`, which the graph turns into a flag instead of a crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache

from pydantic import ValidationError

from tools.models.protocol import ChatMessage, ChatRequest, SchemaT, StructuredOutputError, StructuredReply

_THINKING = re.compile(r"<unused94>(?:thought)?(.*?)(?:<unused95>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class SplitReply:
    """A reply with its hidden reasoning separated from the answer."""

    answer: str
    thinking: str


def split_thinking(text: str) -> SplitReply:
    """Separate MedGemma's `<unused94>thought ... <unused95>` block from the answer."""
    thoughts = [m.group(1).strip() for m in _THINKING.finditer(text)]
    return SplitReply(answer=_THINKING.sub("", text).strip(), thinking="\n".join(t for t in thoughts if t))


def extract_json(text: str) -> str:
    """The first balanced JSON object in `text`, or the stripped text when there is none."""
    answer = split_thinking(text).answer
    fenced = _FENCE.search(answer)
    if fenced:
        answer = fenced.group(1).strip()
    start = answer.find("{")
    if start < 0:
        return answer
    depth = 0
    in_string = False
    escaped = False
    for index in range(start, len(answer)):
        char = answer[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return answer[start : index + 1]
    return answer[start:]


def parse_reply(text: str, schema: type[SchemaT]) -> SchemaT:
    """Validate `text` against `schema`; raises `ValidationError` or `ValueError`."""
    candidate = extract_json(text)
    try:
        # strict=False: a raw control character inside a string (a tab, or a byte xgrammar's string
        # rule lets through) is not worth a repair round.
        data = json.loads(candidate, strict=False)
    except json.JSONDecodeError as exc:
        raise ValueError(f"reply is not valid JSON ({exc.msg} at char {exc.pos}): {candidate[:200]!r}") from exc
    return schema.model_validate(data)


def describe_error(exc: Exception) -> str:
    """A short, model-readable account of why a reply was rejected."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()]
        return "; ".join(parts[:5])
    return str(exc)


def repair_request(request: ChatRequest, bad_reply: str, error: str) -> ChatRequest:
    """The one repair round: the model sees its reply and why it was rejected."""
    messages = [
        *request.messages,
        ChatMessage(role="assistant", content=bad_reply[:2000]),
        ChatMessage(
            role="user",
            content=(
                f"That reply was rejected: {error}. Reply again with only one JSON object that matches "
                "the required schema, nothing else."
            ),
        ),
    ]
    return request.model_copy(update={"messages": messages, "task": f"{request.task}#repair"})


THINKING_INSTRUCTION = "SYSTEM INSTRUCTION: think silently if needed."


def with_thinking_instruction(request: ChatRequest) -> list[ChatMessage]:
    """The request's messages, with MedGemma's thinking switch first when the request asks for thinking.

    The instruction opens the system text (merged into the first user turn by Gemma's template),
    so it is part of the stable prompt prefix and does not defeat prefix caching.
    """
    if not request.thinking:
        return list(request.messages)
    return [ChatMessage(role="system", content=THINKING_INSTRUCTION), *request.messages]


@dataclass(frozen=True)
class Attempt:
    """What one generation produced."""

    text: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    notes: tuple[str, ...] = ()


async def validate_with_repair(
    request: ChatRequest,
    schema: type[SchemaT],
    generate: Callable[[ChatRequest], Awaitable[Attempt]],
) -> tuple[SchemaT, list[Attempt], bool]:
    """Generate, validate, repair once; returns (value, attempts, repaired)."""
    attempts: list[Attempt] = []
    errors: list[str] = []
    current = request
    for round_index in range(2):
        attempt = await generate(current)
        attempts.append(attempt)
        try:
            return parse_reply(attempt.text, schema), attempts, round_index > 0
        except (ValidationError, ValueError) as exc:
            errors.append(describe_error(exc))
            current = repair_request(request, attempt.text, errors[-1])
    raise StructuredOutputError(request.task, errors, [a.text for a in attempts])


@cache
def _reply_type(schema: type[SchemaT]) -> type[StructuredReply[SchemaT]]:
    """`StructuredReply[schema]`, made once: pydantic keeps parametrized models only weakly, and
    making one again costs more than the rest of a scripted reply."""
    return StructuredReply[schema]  # type: ignore[valid-type]


async def complete_with_repair(
    request: ChatRequest,
    schema: type[SchemaT],
    generate: Callable[[ChatRequest], Awaitable[Attempt]],
    model_id: str,
) -> StructuredReply[SchemaT]:
    """What every backend's `complete` returns: the validated value and what it cost."""
    value, attempts, repaired = await validate_with_repair(request, schema, generate)
    thinking = split_thinking(attempts[-1].text).thinking
    return _reply_type(schema)(
        value=value,
        raw=attempts[-1].text,
        model_id=model_id,
        repaired=repaired,
        prompt_tokens=sum(a.prompt_tokens for a in attempts),
        output_tokens=sum(a.output_tokens for a in attempts),
        thinking=thinking or None,
        notes=list(dict.fromkeys(note for a in attempts for note in a.notes)),
    )
