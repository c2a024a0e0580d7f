"""An OpenAI-compatible chat server as a backend: vLLM, TGI, llama.cpp's server, Ollama, Vertex AI.

One `POST {base_url}/chat/completions` per attempt, asking for the pydantic schema's JSON schema
the way the server understands it (`structured`):

* ``response_format`` (default): ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``
  - OpenAI, vLLM, llama.cpp's server, Ollama, Vertex AI's OpenAI-compatible endpoints;
* ``guided_json``: a top-level ``guided_json`` schema (older vLLM, TGI-style guided decoding);
* ``json_schema``: a top-level ``json_schema`` (llama.cpp's native field);
* ``none``: the schema is only described in the prompt (servers without constrained decoding).

Whatever the server does, the reply is validated and repaired once by the shared path
(tools/models/structured.py), so a garbled reply becomes a repaired value or a typed failure.
Network faults are retried with exponential backoff (connect errors, timeouts, 429 honouring
Retry-After, 5xx); a server that stays unreachable is a `ModelUnavailableError` naming the URL.
The API key comes from the environment and never appears in a repr, a log line or an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import mimetypes
import os
import random
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, SecretStr

from tools.models.protocol import (
    ChatMessage,
    ChatRequest,
    ModelError,
    ModelUnavailableError,
    SchemaT,
    StructuredReply,
    TextCallback,
)
from tools.models.structured import Attempt, complete_with_repair, with_thinking_instruction

StructuredMode = Literal["response_format", "guided_json", "json_schema", "none"]

API_KEY_VARIABLES = ("PREVISIT_OPENAI_API_KEY", "OPENAI_API_KEY")
CHARS_PER_TOKEN_ESTIMATE = 4  # English text with a modern BPE tokenizer: roughly 4 characters a token
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0


class OpenAISettings(BaseModel):
    """Where the server is and how to talk to it."""

    base_url: str = Field(description="The API root, e.g. http://127.0.0.1:8000/v1 (before /chat/completions).")
    model: str = Field(default="default", description="The served model name (vLLM: --served-model-name).")
    api_key: SecretStr | None = Field(default=None, repr=False)
    structured: StructuredMode = "response_format"
    timeout_s: float = Field(default=120.0, gt=0, description="Time limit of reading one reply.")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0, description="First retry delay; doubles each retry, with jitter.")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy, like the transformers backend.")

    @classmethod
    def from_env(
        cls, base_url: str, model: str | None = None, environ: Mapping[str, str] | None = None
    ) -> OpenAISettings:
        """Settings for `base_url`; the model, key and structured mode from PREVISIT_OPENAI_* variables."""
        env = os.environ if environ is None else environ
        key = next((env[name] for name in API_KEY_VARIABLES if env.get(name)), None)
        values: dict[str, Any] = {
            "base_url": base_url,
            "model": model or env.get("PREVISIT_OPENAI_MODEL") or "default",
            "api_key": key,
        }
        if env.get("PREVISIT_OPENAI_STRUCTURED"):
            values["structured"] = env["PREVISIT_OPENAI_STRUCTURED"]
        if env.get("PREVISIT_OPENAI_TIMEOUT_S"):
            values["timeout_s"] = env["PREVISIT_OPENAI_TIMEOUT_S"]
        return cls.model_validate(values)


def parse_model_spec(target: str) -> tuple[str, str | None]:
    """``<base_url>[#<model>]`` -> (base_url, model or None)."""
    base_url, _, model = target.partition("#")
    if not base_url.startswith(("http://", "https://")):
        raise ModelUnavailableError(
            f"openai:{target}: the server URL must start with http:// or https:// (e.g. openai:http://127.0.0.1:8000/v1)"
        )
    return base_url.rstrip("/"), model or None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        from datetime import UTC, datetime

        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))


def image_part(path: str) -> dict[str, Any]:
    """An `image_url` content part carrying the file as a data URI."""
    file = Path(path)
    data = file.read_bytes()
    if not data:
        raise ValueError("empty file")
    mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    encoded = base64.b64encode(data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}


def wire_messages(messages: list[ChatMessage], notes: list[str]) -> list[dict[str, Any]]:
    """Messages in the OpenAI wire format; a message with images becomes text + image_url parts."""
    wire: list[dict[str, Any]] = []
    for message in messages:
        if not message.images:
            wire.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
        for path in message.images:
            try:
                parts.append(image_part(path))
            except (OSError, ValueError) as exc:
                notes.append(f"image {Path(path).name} not sent: unreadable ({exc})")
        wire.append({"role": message.role, "content": parts})
    return wire


class _StreamCut(Exception):
    """The server closed a stream before its end marker."""


class OpenAICompatibleChatModel:
    """The `ChatModel` and `StreamingChatModel` protocols over an OpenAI-compatible HTTP server."""

    def __init__(self, settings: OpenAISettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        """`transport` replaces the network (tests: `httpx.MockTransport` serves both the async calls
        and the synchronous `/tokenize`)."""
        self._settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._tokenize_available: bool | None = None
        self._token_counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"OpenAICompatibleChatModel(base_url={self._settings.base_url!r}, model={self._settings.model!r})"

    @property
    def model_id(self) -> str:
        return f"{self._settings.model} via {self._settings.base_url}"

    @property
    def is_demo(self) -> bool:
        return False

    @property
    def settings(self) -> OpenAISettings:
        return self._settings

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._settings.api_key is not None:
            headers["Authorization"] = f"Bearer {self._settings.api_key.get_secret_value()}"
        return headers

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._settings.timeout_s, connect=self._settings.connect_timeout_s)

    def _http(self) -> httpx.AsyncClient:
        """One client per event loop (an httpx client must not cross loops)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(transport=self._transport, timeout=self._timeout())
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- request body --------------------------------------------------------------------------

    def request_body(
        self, request: ChatRequest, schema: type[BaseModel], *, stream: bool, notes: list[str]
    ) -> dict[str, Any]:
        """The JSON body of one chat-completions call."""
        json_schema = schema.model_json_schema()
        messages = with_thinking_instruction(request)
        mode = self._settings.structured
        if mode == "none":
            messages = [
                *messages,
                ChatMessage(
                    role="system",
                    content=f"Reply with one JSON object that matches this JSON schema: {json.dumps(json_schema)}",
                ),
            ]
        body: dict[str, Any] = {
            "model": self._settings.model,
            "messages": wire_messages(messages, notes),
            "max_tokens": request.max_new_tokens,
            "temperature": self._settings.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if mode == "response_format":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": json_schema, "strict": True},
            }
        elif mode == "guided_json":
            body["guided_json"] = json_schema
        elif mode == "json_schema":
            body["json_schema"] = json_schema
        return body

    # --- transport with retries ----------------------------------------------------------------

    async def _backoff(self, attempt: int, retry_after: float | None) -> None:
        delay = retry_after if retry_after is not None else self._settings.backoff_s * (2**attempt)
        await asyncio.sleep(delay * (1.0 if retry_after is not None else 0.5 + random.random() / 2))

    def _status_error(self, response: httpx.Response) -> ModelError:
        excerpt = response.text[:300] if not response.is_stream_consumed or response.is_closed else ""
        if response.status_code in (401, 403):
            return ModelUnavailableError(
                f"{self._settings.base_url} refused the request ({response.status_code}): check "
                f"{' or '.join(API_KEY_VARIABLES)}"
            )
        if response.status_code == 404:
            return ModelUnavailableError(
                f"{self._settings.base_url}/chat/completions not found (404) for model {self._settings.model!r}: "
                f"check the URL (it usually ends in /v1) and PREVISIT_OPENAI_MODEL. {excerpt}"
            )
        if response.status_code in (400, 422) and self._settings.structured != "none":
            return ModelError(
                f"{self._settings.base_url} rejected the request ({response.status_code}): {excerpt}. If the server "
                "does not take structured output this way, set PREVISIT_OPENAI_STRUCTURED "
                "(response_format, guided_json, json_schema or none)"
            )
        return ModelError(f"{self._settings.base_url} answered {response.status_code}: {excerpt}")

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._settings.base_url}/chat/completions"
        last: str = ""
        for attempt in range(self._settings.max_retries + 1):
            retry_after: float | None = None
            try:
                response = await self._http().post(url, json=body, headers=self._headers())
            except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in RETRY_STATUSES:
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                elif response.status_code >= 400:
                    raise self._status_error(response)
                else:
                    try:
                        data = response.json()
                    except ValueError as exc:
                        raise ModelError(f"{url} sent a body that is not JSON: {response.text[:200]!r}") from exc
                    if not isinstance(data, dict):
                        raise ModelError(f"{url} sent JSON that is not an object: {response.text[:200]!r}")
                    return data
            if attempt < self._settings.max_retries:
                await self._backoff(attempt, retry_after)
        raise ModelUnavailableError(
            f"The model server at {self._settings.base_url} did not answer after "
            f"{self._settings.max_retries + 1} tries ({last})"
        )

    async def _stream_lines(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """SSE data lines of a streamed call; the connection attempt is retried like `_post`."""
        url = f"{self._settings.base_url}/chat/completions"
        last = ""
        for attempt in range(self._settings.max_retries + 1):
            retry_after: float | None = None
            try:
                async with self._http().stream("POST", url, json=body, headers=self._headers()) as response:
                    if response.status_code in RETRY_STATUSES:
                        await response.aread()
                        last = f"HTTP {response.status_code}"
                        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                    elif response.status_code >= 400:
                        await response.aread()
                        raise self._status_error(response)
                    else:
                        done = False
                        try:
                            async for line in response.aiter_lines():
                                if not line.startswith("data:"):
                                    continue
                                data = line[5:].strip()
                                if data == "[DONE]":
                                    done = True
                                    break
                                yield data
                        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.TimeoutException) as exc:
                            raise _StreamCut(f"{type(exc).__name__}: {exc}") from exc
                        if not done:
                            raise _StreamCut("the stream ended without [DONE]")
                        return
            except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                last = f"{type(exc).__name__}: {exc}"  # before any text arrived: safe to try again
            if attempt < self._settings.max_retries:
                await self._backoff(attempt, retry_after)
        raise ModelUnavailableError(
            f"The model server at {self._settings.base_url} did not answer after "
            f"{self._settings.max_retries + 1} tries ({last})"
        )

    # --- one attempt ---------------------------------------------------------------------------

    async def _attempt(self, request: ChatRequest, schema: type[BaseModel]) -> Attempt:
        notes: list[str] = []
        data = await self._post(self.request_body(request, schema, stream=False, notes=notes))
        try:
            message = data["choices"][0]["message"]
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelError(f"{self._settings.base_url} sent no choices[0].message: {json.dumps(data)[:200]}") from exc
        reasoning = message.get("reasoning_content") if isinstance(message, dict) else None
        if reasoning:  # servers that split reasoning out (vLLM reasoning parsers): keep it as thinking
            text = f"<unused94>thought\n{reasoning}<unused95>{text}"
        usage = data.get("usage") or {}
        return Attempt(
            text=str(text),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            notes=tuple(notes),
        )

    async def _streamed_attempt(self, request: ChatRequest, schema: type[BaseModel], on_text: TextCallback) -> Attempt:
        notes: list[str] = []
        body = self.request_body(request, schema, stream=True, notes=notes)
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        try:
            async for data in self._stream_lines(body):
                try:
                    chunk = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        pieces.append(delta)
                        on_text(delta)
        except _StreamCut as exc:
            # The streamed text was provisional; ask again without streaming for the real reply.
            fallback = await self._attempt(request, schema)
            return Attempt(
                text=fallback.text,
                prompt_tokens=fallback.prompt_tokens,
                output_tokens=fallback.output_tokens,
                notes=(*notes, *fallback.notes, f"stream interrupted ({exc}); reply fetched again without streaming"),
            )
        return Attempt(
            text="".join(pieces),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            notes=tuple(notes),
        )

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        async def generate(current: ChatRequest) -> Attempt:
            return await self._attempt(current, schema)

        return await complete_with_repair(request, schema, generate, self.model_id)

    async def complete_streaming(
        self, request: ChatRequest, schema: type[SchemaT], on_text: TextCallback
    ) -> StructuredReply[SchemaT]:
        """`complete`, streaming the first attempt's text (SSE) to `on_text`."""
        first = True

        async def generate(current: ChatRequest) -> Attempt:
            nonlocal first
            if first:
                first = False
                return await self._streamed_attempt(current, schema, on_text)
            return await self._attempt(current, schema)

        return await complete_with_repair(request, schema, generate, self.model_id)

    # --- token counts --------------------------------------------------------------------------

    def _tokenize_url(self) -> str:
        root = self._settings.base_url
        return root[: -len("/v1")] + "/tokenize" if root.endswith("/v1") else root + "/tokenize"

    def count_tokens(self, text: str) -> int:
        """The server's own count (``/tokenize``: llama.cpp, vLLM) when it offers one, else an estimate.

        The estimate is ``ceil(characters / 4)``, close for English with modern tokenizers; it is
        used for chart-context budgets only, never for billing or limits a server enforces.
        """
        if not text:
            return 0
        cached = self._token_counts.get(text)
        if cached is not None:
            return cached
        count: int | None = None
        sync_transport = self._transport if isinstance(self._transport, httpx.BaseTransport) else None
        if self._tokenize_available is not False and (self._transport is None or sync_transport is not None):
            count = self._server_count(text, sync_transport)
        if count is None:
            count = math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)
        if len(self._token_counts) < 4096:
            self._token_counts[text] = count
        return count

    def _server_count(self, text: str, transport: httpx.BaseTransport | None) -> int | None:
        try:
            with httpx.Client(transport=transport, timeout=httpx.Timeout(5.0, connect=2.0)) as client:
                response = client.post(
                    self._tokenize_url(),
                    json={"content": text, "prompt": text, "model": self._settings.model, "add_special": False},
                    headers=self._headers(),
                )
        except httpx.HTTPError:
            self._tokenize_available = False
            return None
        if response.status_code != 200:
            self._tokenize_available = False
            return None
        try:
            data = response.json()
        except ValueError:
            self._tokenize_available = False
            return None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        count = data.get("count") if isinstance(data, dict) else None
        if isinstance(count, int):
            self._tokenize_available = True
            return count
        if isinstance(tokens, list):
            self._tokenize_available = True
            return len(tokens)
        self._tokenize_available = False
        return None


def build_openai_model(target: str, environ: Mapping[str, str] | None = None) -> OpenAICompatibleChatModel:
    """The backend for the model spec ``openai:<base_url>[#<model>]``."""
    base_url, model = parse_model_spec(target)
    return OpenAICompatibleChatModel(OpenAISettings.from_env(base_url, model, environ))
