"""A fake OpenAI-compatible server speaking the real wire format, for `httpx.MockTransport`.

It answers ``POST /v1/chat/completions`` (plain JSON, or Server-Sent Events when ``stream`` is
true: ``data: {chunk}`` lines with ``choices[0].delta.content``, a final usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``) and ``POST /tokenize`` (llama.cpp's
``{"tokens": [...]}``). Each chat call takes the next planned `Step`: a reply text, an HTTP error
status (with headers), a raised transport error, or a stream that breaks off part-way. Every
request is recorded with its arrival time.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Step:
    """What the server does with one chat-completions request."""

    text: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    raise_error: type[httpx.HTTPError] | None = None
    cut_after_chunks: int | None = None  # streaming: break the connection after this many chunks
    reasoning: str | None = None


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


def _chunks(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class FakeOpenAIServer:
    def __init__(self, *steps: Step, tokenize: bool = True, model: str = "fake-medgemma") -> None:
        self.steps: deque[Step] = deque(steps)
        self.seen: list[Seen] = []
        self.tokenize = tokenize
        self.model = model

    def plan(self, *steps: Step) -> None:
        self.steps.extend(steps)

    @property
    def chat_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/chat/completions")]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        self.seen.append(Seen(request.url.path, body, dict(request.headers), time.monotonic()))
        if request.url.path == "/tokenize":
            if not self.tokenize:
                return httpx.Response(404, json={"error": "not found"})
            return httpx.Response(200, json={"tokens": list(range(len(body["content"].split())))})
        if not request.url.path.endswith("/v1/chat/completions"):
            return httpx.Response(404, json={"error": {"message": f"no route {request.url.path}"}})
        if not self.steps:
            return httpx.Response(500, json={"error": {"message": "fake server has no step planned"}})
        step = self.steps.popleft()
        if step.raise_error is not None:
            raise step.raise_error("planned transport failure", request=request)
        if step.status != 200:
            return httpx.Response(step.status, headers=step.headers, json={"error": {"message": "planned"}})
        text = step.text or ""
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(_chunks(text)), "total_tokens": 0}
        if body.get("stream"):
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=self._sse(text, usage, body, step),
            )
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if step.reasoning:
            message["reasoning_content"] = step.reasoning
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            },
        )

    async def _sse(self, text: str, usage: dict[str, Any], body: dict[str, Any], step: Step) -> AsyncIterator[bytes]:
        def event(payload: dict[str, Any]) -> bytes:
            return f"data: {json.dumps(payload)}\n\n".encode()

        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": self.model}
        yield event({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
        for index, piece in enumerate(_chunks(text)):
            if step.cut_after_chunks is not None and index >= step.cut_after_chunks:
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
            yield event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        yield event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            yield event({**base, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"
