"""A backend that replays scripted replies: for tests, recorded sessions and scenario files.

Replies are looked up by the request's task, most specific first: ``interviewer.ask:onset`` is
answered from the ``interviewer.ask:onset`` queue, then from ``interviewer.ask``. Each reply is
text (JSON as a model would write it, garbled on purpose if a test wants that) or a mapping that is
serialised to JSON. Replies go through the same validate-and-repair path as a real model, so a
scripted garbled reply exercises the real failure handling.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from tools.models.protocol import (
    ChatRequest,
    SchemaT,
    ScriptExhaustedError,
    StructuredReply,
    TextCallback,
)
from tools.models.structured import Attempt, complete_with_repair

ScriptedReply = str | Mapping[str, Any]


def _as_text(reply: ScriptedReply) -> str:
    return reply if isinstance(reply, str) else json.dumps(dict(reply))


class ScriptedChatModel:
    """Replays per-task queues of replies; every request is recorded for assertions."""

    def __init__(
        self,
        script: Mapping[str, Sequence[ScriptedReply]] | None = None,
        *,
        model_id: str = "scripted",
    ) -> None:
        self._queues: dict[str, deque[str]] = {
            task: deque(_as_text(reply) for reply in replies) for task, replies in (script or {}).items()
        }
        self._model_id = model_id
        self.requests: list[ChatRequest] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def is_demo(self) -> bool:
        return False

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def remaining(self, task: str) -> int:
        """Replies left for exactly `task` (tests use it to check a script was consumed)."""
        return len(self._queues.get(task, ()))

    def _next_reply(self, task: str) -> str:
        base = task.split("#", 1)[0]
        candidates = [task, base]
        while ":" in base or "." in base:
            base = base.rsplit(":", 1)[0] if ":" in base else base.rsplit(".", 1)[0]
            candidates.append(base)
        for key in candidates:
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        raise ScriptExhaustedError(f"no scripted reply left for task {task!r}")

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        async def generate(current: ChatRequest) -> Attempt:
            self.requests.append(current)
            text = self._next_reply(current.task)
            return Attempt(
                text=text,
                prompt_tokens=sum(len(m.content.split()) for m in current.messages),
                output_tokens=len(text.split()),
            )

        return await complete_with_repair(request, schema, generate, self._model_id)


class StreamingScriptedChatModel(ScriptedChatModel):
    """A scripted backend that also streams: each reply is handed over in `chunk_chars` pieces first.

    It stands in for a streaming server or model wherever a test needs the streamed path (the
    interviewer's question deltas) without weights or a network.
    """

    def __init__(
        self,
        script: Mapping[str, Sequence[ScriptedReply]] | None = None,
        *,
        model_id: str = "scripted (streaming)",
        chunk_chars: int = 5,
    ) -> None:
        super().__init__(script, model_id=model_id)
        self._chunk_chars = max(1, chunk_chars)

    async def complete_streaming(
        self, request: ChatRequest, schema: type[SchemaT], on_text: TextCallback
    ) -> StructuredReply[SchemaT]:
        first = True

        async def generate(current: ChatRequest) -> Attempt:
            nonlocal first
            self.requests.append(current)
            text = self._next_reply(current.task)
            if first:
                for start in range(0, len(text), self._chunk_chars):
                    on_text(text[start : start + self._chunk_chars])
                first = False
            return Attempt(text=text, output_tokens=len(text.split()))

        return await complete_with_repair(request, schema, generate, self._model_id)
