"""The OpenAI-compatible backend against a real llama.cpp server serving SmolLM2's GGUF on loopback.

The server binary is ``$PREVISIT_LLAMA_SERVER``, else ``.previsit/bin/llama-server`` (what
scripts/build_llama_server.sh builds), else ``llama-server`` on PATH; without one these tests are
skipped and the backend is covered by the wire-format fake in tests/test_openai_backend.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from pydantic import BaseModel, Field

from graphs.context import IntakeContext
from graphs.intake import compile_intake_graph
from graphs.state import IntakeInput, IntakeOutput
from tools.fhir.memory_source import InMemoryRecordSource
from tools.fhir.record import PatientRecord
from tools.models.local_weights import smollm2_135m_instruct
from tools.models.openai_backend import OpenAICompatibleChatModel, OpenAISettings
from tools.models.protocol import ChatMessage, ChatRequest, ModelUnavailableError
from tools.models.streaming import JsonFieldStream

BUILT = Path(__file__).resolve().parent.parent / ".previsit" / "bin" / "llama-server"


def _binary() -> str | None:
    """$PREVISIT_LLAMA_SERVER, else what scripts/build_llama_server.sh built, else llama-server on PATH."""
    for candidate in (os.environ.get("PREVISIT_LLAMA_SERVER"), str(BUILT)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("llama-server")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_binary() is None, reason="no llama-server binary (scripts/build_llama_server.sh)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _running_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """llama-server on a free loopback port serving SmolLM2's GGUF; stopped by its PID afterwards."""
    binary = _binary()
    assert binary is not None
    port = _free_port()
    command = [binary, "--model", str(smollm2_135m_instruct().path), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--ctx-size", "4096", "--threads", "2", "--no-webui"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    log.seek(0)
                    stderr = log.read().decode(errors="replace")
                    pytest.fail(f"llama-server exited with {process.returncode}: {stderr[-2000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail("llama-server did not become healthy in 120 s")
            yield f"{base}/v1", process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with _running_server() as (base_url, _process):
        yield base_url


class Question(BaseModel):
    question: str = Field(min_length=3, max_length=160)


class Pain(BaseModel):
    score: int = Field(ge=0, le=10)
    where: str = Field(max_length=40)


def _model(base_url: str, structured: str = "response_format") -> OpenAICompatibleChatModel:
    return OpenAICompatibleChatModel(
        OpenAISettings.model_validate({"base_url": base_url, "model": "smollm2", "structured": structured})
    )


def _request(text: str) -> ChatRequest:
    return ChatRequest(
        task="server.test",
        messages=[
            ChatMessage(role="system", content="You are a clinic intake assistant. Reply only with JSON."),
            ChatMessage(role="user", content=text),
        ],
        max_new_tokens=64,
    )


@pytest.mark.parametrize("structured", ["response_format", "json_schema"])
async def test_structured_replies_from_a_real_server(llama_server: str, structured: str) -> None:
    model = _model(llama_server, structured)
    reply = await model.complete(_request("My knee hurts, 6 out of 10. Give score and where."), Pain)
    assert isinstance(reply.value, Pain) and 0 <= reply.value.score <= 10
    assert reply.prompt_tokens > 0 and reply.output_tokens > 0
    await model.aclose()


async def test_streaming_from_a_real_server(llama_server: str) -> None:
    model = _model(llama_server)
    deltas: list[str] = []
    question: list[str] = []
    field = JsonFieldStream("question", question.append)

    def on_text(delta: str) -> None:
        deltas.append(delta)
        field.feed(delta)

    reply = await model.complete_streaming(_request("Ask the patient when the headache began."), Question, on_text)
    assert len(deltas) > 2 and "".join(deltas) == reply.raw
    assert "".join(question) == reply.value.question
    await model.aclose()


def test_token_counts_come_from_the_server(llama_server: str) -> None:
    model = _model(llama_server)
    count = model.count_tokens("The patient reports a throbbing headache since Monday.")
    assert model._tokenize_available is True
    assert 5 < count < 30


async def test_an_intake_through_the_server(llama_server: str, lisinopril_record: PatientRecord) -> None:
    model = _model(llama_server)
    graph = compile_intake_graph(InMemorySaver())
    context = IntakeContext(record_source=InMemoryRecordSource([lisinopril_record]), model=model)
    config: dict[str, Any] = {"configurable": {"thread_id": "llama-1"}}
    result = await graph.ainvoke(IntakeInput(patient_id="p-1", max_questions=3), config, context=context)
    answers = iter(["Headaches since Monday.", "Behind my eyes.", "About a six."])
    while result.get("__interrupt__"):
        result = await graph.ainvoke(Command(resume=next(answers)), config, context=context)
    output = IntakeOutput.model_validate(result)
    assert len(output.turns) == 3 and output.summary is not None
    assert output.summary.model_id == model.model_id
    await model.aclose()


async def test_a_killed_server_is_model_unavailable_not_a_crash() -> None:
    with _running_server() as (base_url, process):
        model = OpenAICompatibleChatModel(
            OpenAISettings.model_validate({"base_url": base_url, "model": "smollm2", "max_retries": 1, "backoff_s": 0})
        )
        assert (await model.complete(_request("Ask about sleep."), Question)).value.question
        process.kill()  # SIGKILL by PID: no goodbye
        process.wait()
        with pytest.raises(ModelUnavailableError, match=f"The model server at {base_url} did not answer after 2 tries"):
            await model.complete(_request("Ask about sleep."), Question)
        await model.aclose()
