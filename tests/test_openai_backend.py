"""The OpenAI-compatible backend against a fake server that speaks the wire format (tests/openai_fake_server.py).

Faults a real server will not produce on demand (a 500 then success, 429 with Retry-After, a
stream cut mid-way, garbled JSON) are planned here through `httpx.MockTransport`; "server down"
uses a real closed port on 127.0.0.1. tests/test_openai_llama_server.py runs the same backend
against a real llama.cpp server (structured output, streaming, /tokenize, an intake, a killed
server) when its binary is present (scripts/build_llama_server.sh).
"""

from __future__ import annotations

import base64
import json
import math
import socket
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, Field

from tests.openai_fake_server import FakeOpenAIServer, Step
from tools.models.openai_backend import (
    OpenAICompatibleChatModel,
    OpenAISettings,
    build_openai_model,
    parse_model_spec,
    retry_after_seconds,
)
from tools.models.protocol import (
    ChatMessage,
    ChatModel,
    ChatRequest,
    ModelError,
    ModelUnavailableError,
    StreamingChatModel,
    StructuredOutputError,
)
from tools.models.streaming import JsonFieldStream
from tools.models.structured import THINKING_INSTRUCTION

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
BASE = "http://model.test/v1"


class Question(BaseModel):
    question: str = Field(min_length=3, max_length=200)


def _request(text: str = "Ask about the headache.", **kwargs: object) -> ChatRequest:
    return ChatRequest(
        task="interviewer.ask:onset",
        messages=[ChatMessage(role="system", content="Reply with JSON."), ChatMessage(role="user", content=text)],
        **kwargs,  # type: ignore[arg-type]
    )


def _model(server: FakeOpenAIServer, **settings: object) -> OpenAICompatibleChatModel:
    values = {"base_url": BASE, "model": "medgemma", "backoff_s": 0.0, **settings}
    return OpenAICompatibleChatModel(OpenAISettings.model_validate(values), transport=server.transport())


GOOD = '{"question": "When did the headache start?"}'


# --- the request on the wire ---------------------------------------------------------------------


async def test_structured_reply_with_response_format_and_usage() -> None:
    server = FakeOpenAIServer(Step(text=GOOD))
    model = _model(server)
    reply = await model.complete(_request(max_new_tokens=64), Question)
    assert reply.value == Question(question="When did the headache start?")
    assert reply.model_id == "medgemma via http://model.test/v1"
    assert reply.prompt_tokens == 7 and reply.output_tokens == math.ceil(len(GOOD) / 4)  # the server's usage
    body = server.chat_calls[0].body
    assert body["model"] == "medgemma" and body["max_tokens"] == 64 and body["temperature"] == 0.0
    assert body["stream"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Question", "schema": Question.model_json_schema(), "strict": True},
    }
    assert body["messages"] == [
        {"role": "system", "content": "Reply with JSON."},
        {"role": "user", "content": "Ask about the headache."},
    ]
    assert isinstance(model, ChatModel) and isinstance(model, StreamingChatModel)


@pytest.mark.parametrize(
    ("mode", "field"),
    [("guided_json", "guided_json"), ("json_schema", "json_schema")],
)
async def test_guided_json_fields_for_other_servers(mode: str, field: str) -> None:
    server = FakeOpenAIServer(Step(text=GOOD))
    await _model(server, structured=mode).complete(_request(), Question)
    body = server.chat_calls[0].body
    assert body[field] == Question.model_json_schema()
    assert "response_format" not in body


async def test_without_constrained_decoding_the_schema_is_in_the_prompt() -> None:
    server = FakeOpenAIServer(Step(text=f"Sure! ```json\n{GOOD}\n```"))
    reply = await _model(server, structured="none").complete(_request(), Question)
    assert reply.value.question == "When did the headache start?"
    body = server.chat_calls[0].body
    assert "response_format" not in body and "guided_json" not in body
    assert json.dumps(Question.model_json_schema()) in body["messages"][-1]["content"]


async def test_images_go_as_data_uris_and_thinking_as_the_instruction() -> None:
    server = FakeOpenAIServer(Step(text=GOOD, reasoning="Onset matters for headache."))
    photo = IMAGES / "small_rgb.jpeg"
    request = ChatRequest(
        task="t",
        messages=[ChatMessage(role="user", content="What is this?", images=[str(photo)])],
        thinking=True,
    )
    reply = await _model(server).complete(request, Question)
    messages = server.chat_calls[0].body["messages"]
    assert messages[0] == {"role": "system", "content": THINKING_INSTRUCTION}
    text, image = messages[1]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert image["type"] == "image_url"
    prefix = "data:image/jpeg;base64,"
    assert image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"][len(prefix) :]) == photo.read_bytes()
    assert reply.thinking == "Onset matters for headache."
    assert "Onset" not in reply.value.question


async def test_an_unreadable_image_is_left_out_with_a_note(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    server = FakeOpenAIServer(Step(text=GOOD))
    request = ChatRequest(task="t", messages=[ChatMessage(role="user", content="See", images=[str(empty)])])
    reply = await _model(server).complete(request, Question)
    assert server.chat_calls[0].body["messages"][0]["content"] == [{"type": "text", "text": "See"}]
    assert reply.notes == ["image empty.png not sent: unreadable (empty file)"]


# --- streaming --------------------------------------------------------------------------------------


async def test_streaming_delivers_deltas_and_the_validated_reply() -> None:
    server = FakeOpenAIServer(Step(text=GOOD))
    deltas: list[str] = []
    question: list[str] = []
    field = JsonFieldStream("question", question.append)

    def on_text(delta: str) -> None:
        deltas.append(delta)
        field.feed(delta)

    reply = await _model(server).complete_streaming(_request(), Question, on_text)
    assert "".join(deltas) == GOOD and len(deltas) == math.ceil(len(GOOD) / 4)
    assert "".join(question) == "When did the headache start?" and len(question) > 3
    assert reply.value.question == "When did the headache start?"
    assert reply.output_tokens == len(deltas)  # from the final usage chunk
    body = server.chat_calls[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_a_stream_cut_midway_is_fetched_again_without_streaming() -> None:
    server = FakeOpenAIServer(Step(text=GOOD, cut_after_chunks=3), Step(text=GOOD))
    deltas: list[str] = []
    reply = await _model(server).complete_streaming(_request(), Question, deltas.append)
    assert "".join(deltas) == GOOD[:12]  # what arrived before the cut: provisional
    assert reply.value.question == "When did the headache start?"
    assert [c.body["stream"] for c in server.chat_calls] == [True, False]
    assert len(reply.notes) == 1 and reply.notes[0].startswith("stream interrupted (RemoteProtocolError")


# --- faults -----------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_server_down_is_model_unavailable_after_retries() -> None:
    port = _closed_port()
    model = OpenAICompatibleChatModel(
        OpenAISettings(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.0, connect_timeout_s=1.0)
    )
    with pytest.raises(ModelUnavailableError) as caught:
        await model.complete(_request(), Question)
    assert f"The model server at http://127.0.0.1:{port}/v1 did not answer after 3 tries (ConnectError" in str(
        caught.value
    )
    await model.aclose()


async def test_a_500_is_retried_then_succeeds() -> None:
    server = FakeOpenAIServer(Step(status=500), Step(status=503), Step(text=GOOD))
    reply = await _model(server).complete(_request(), Question)
    assert reply.value.question == "When did the headache start?"
    assert len(server.chat_calls) == 3


async def test_429_waits_as_long_as_retry_after_says() -> None:
    server = FakeOpenAIServer(Step(status=429, headers={"Retry-After": "0.3"}), Step(text=GOOD))
    reply = await _model(server).complete(_request(), Question)
    assert reply.value.question.startswith("When")
    first, second = server.chat_calls
    assert second.at - first.at >= 0.3


def test_retry_after_reads_seconds_and_dates_and_is_capped() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("9999") == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.ConnectError, httpx.RemoteProtocolError])
async def test_timeouts_and_broken_connections_are_retried(error: type[httpx.HTTPError]) -> None:
    server = FakeOpenAIServer(Step(raise_error=error), Step(text=GOOD))
    reply = await _model(server).complete(_request(), Question)
    assert reply.value.question.startswith("When") and len(server.chat_calls) == 2


async def test_a_server_that_keeps_failing_gives_up_with_the_reason() -> None:
    server = FakeOpenAIServer(*(Step(status=502) for _ in range(3)))
    with pytest.raises(ModelUnavailableError, match=r"did not answer after 3 tries \(HTTP 502"):
        await _model(server, max_retries=2).complete(_request(), Question)


async def test_a_garbled_reply_is_repaired_once() -> None:
    server = FakeOpenAIServer(Step(text='{"question": "When did'), Step(text=GOOD))
    reply = await _model(server).complete(_request(), Question)
    assert reply.repaired and reply.value.question.startswith("When")
    repair_messages = server.chat_calls[1].body["messages"]
    assert repair_messages[-2] == {"role": "assistant", "content": '{"question": "When did'}
    assert repair_messages[-1]["content"].startswith("That reply was rejected: reply is not valid JSON")


async def test_garbled_twice_is_a_typed_failure_not_a_crash() -> None:
    server = FakeOpenAIServer(Step(text="I cannot help with that."), Step(text='{"question": ""}'))
    with pytest.raises(StructuredOutputError) as caught:
        await _model(server).complete(_request(), Question)
    assert caught.value.task == "interviewer.ask:onset" and len(caught.value.raw) == 2


async def test_a_reply_without_choices_is_a_model_error() -> None:
    server = FakeOpenAIServer()
    server.handle = lambda request: httpx.Response(200, json={"object": "error"})  # type: ignore[method-assign]
    with pytest.raises(ModelError, match="sent no choices"):
        await _model(server).complete(_request(), Question)


async def test_a_rejected_schema_suggests_the_structured_switch() -> None:
    server = FakeOpenAIServer(Step(status=400))
    with pytest.raises(ModelError, match="set PREVISIT_OPENAI_STRUCTURED"):
        await _model(server).complete(_request(), Question)


# --- the API key ------------------------------------------------------------------------------------


async def test_the_api_key_comes_from_the_environment_and_is_never_shown() -> None:
    secret = "sk-test-very-secret-123"
    settings = OpenAISettings.from_env(BASE, None, {"OPENAI_API_KEY": secret, "PREVISIT_OPENAI_MODEL": "mg"})
    assert settings.model == "mg"
    server = FakeOpenAIServer(Step(text=GOOD), Step(status=401))
    model = OpenAICompatibleChatModel(settings.model_copy(update={"backoff_s": 0.0}), transport=server.transport())
    await model.complete(_request(), Question)
    assert server.chat_calls[0].headers["authorization"] == f"Bearer {secret}"
    with pytest.raises(ModelUnavailableError) as caught:
        await model.complete(_request(), Question)
    for text in (repr(model), repr(settings), str(settings), str(caught.value), settings.model_dump_json()):
        assert secret not in text
    assert "PREVISIT_OPENAI_API_KEY or OPENAI_API_KEY" in str(caught.value)
    preferred = OpenAISettings.from_env(BASE, None, {"OPENAI_API_KEY": "a", "PREVISIT_OPENAI_API_KEY": "b"})
    assert preferred.api_key is not None and preferred.api_key.get_secret_value() == "b"


# --- token counts and the model spec ----------------------------------------------------------------


def test_count_tokens_asks_the_server_then_falls_back_to_the_estimate() -> None:
    server = FakeOpenAIServer()
    model = _model(server)
    assert model.count_tokens("one two three four five") == 5
    assert server.seen[-1].path == "/tokenize"
    assert model.count_tokens("") == 0
    without = _model(FakeOpenAIServer(tokenize=False))
    assert without.count_tokens("x" * 41) == 11  # ceil(41 / 4)


def test_model_spec_names_the_server_and_model() -> None:
    assert parse_model_spec("http://127.0.0.1:8000/v1#google/medgemma-27b-it") == (
        "http://127.0.0.1:8000/v1",
        "google/medgemma-27b-it",
    )
    assert parse_model_spec("https://host/v1/") == ("https://host/v1", None)
    with pytest.raises(ModelUnavailableError, match="must start with http"):
        parse_model_spec("127.0.0.1:8000")
    model = build_openai_model("http://127.0.0.1:8000/v1", {"PREVISIT_OPENAI_MODEL": "served"})
    assert model.model_id == "served via http://127.0.0.1:8000/v1"
