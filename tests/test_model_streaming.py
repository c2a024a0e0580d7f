"""Streaming the interviewer's question: field extraction, and custom events out of the intake graph.

The graph forwards the question's text as LangGraph custom stream events
``{"event": "question_delta", "turn": n, "text": delta}``; the pending question in state (after the
checks, perhaps the template instead) remains the one asked.
"""

from __future__ import annotations

import json
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graphs.context import IntakeContext
from graphs.intake import compile_intake_graph
from graphs.state import IntakeInput
from tools.fhir.memory_source import InMemoryRecordSource
from tools.fhir.record import PatientRecord
from tools.models.protocol import StreamingChatModel
from tools.models.scripted import ScriptedChatModel, StreamingScriptedChatModel
from tools.models.streaming import JsonFieldStream


def _stream(text: str, chunk: int) -> list[str]:
    out: list[str] = []
    field = JsonFieldStream("question", out.append)
    for start in range(0, len(text), chunk):
        field.feed(text[start : start + chunk])
    return out


def test_the_field_text_is_decoded_as_it_grows() -> None:
    raw = json.dumps({"question": 'Is it "sharp" or dull?\nAnd where — café? \u00e9'})
    for chunk in (1, 2, 3, 7, 1000):
        pieces = _stream(raw, chunk)
        assert "".join(pieces) == 'Is it "sharp" or dull?\nAnd where — café? é'
        assert all(pieces)
    assert len(_stream(raw, 1)) > 10


def test_an_escape_cut_between_deltas_is_held_back() -> None:
    pieces = _stream('{"question": "a\\u00e9b"}', 1)
    assert "".join(pieces) == "aéb" and "\\" not in "".join(pieces)


def test_thinking_and_other_fields_are_never_streamed() -> None:
    raw = (
        '<unused94>thought The "question": "secret" is private<unused95>'
        '{"other": "x", "question": "When did it start?", "after": "y"}'
    )
    pieces = _stream(raw, 4)
    assert "".join(pieces) == "When did it start?"


def test_a_reply_without_the_field_streams_nothing() -> None:
    assert _stream('{"answer": "no"}', 3) == []
    assert _stream("<unused94>thought still thinking", 3) == []


ONSET = "When did the headache first start?"


async def _first_turn_events(model: Any, record: PatientRecord) -> tuple[list[dict[str, Any]], str, Any]:
    graph = compile_intake_graph(InMemorySaver())
    context = IntakeContext(record_source=InMemoryRecordSource([record]), model=model)
    config: dict[str, Any] = {"configurable": {"thread_id": "stream-1"}}
    custom: list[dict[str, Any]] = []
    question = ""
    async for mode, chunk in graph.astream(
        IntakeInput(patient_id="p-1", reason_for_visit="Headaches"),
        config,
        context=context,
        stream_mode=["custom", "updates"],
    ):
        if mode == "custom":
            custom.append(chunk)
        elif "__interrupt__" in chunk:
            question = chunk["__interrupt__"][0].value["question"]
    return custom, question, (graph, context, config)


async def test_the_graph_streams_question_deltas_as_custom_events(lisinopril_record: PatientRecord) -> None:
    model = StreamingScriptedChatModel(
        {
            "interviewer.ask:chief_complaint": [{"question": "What brings you in today?"}],
            "interviewer.ask:onset": [{"question": ONSET}],
        },
        chunk_chars=4,
    )
    assert isinstance(model, StreamingChatModel)
    custom, question, (graph, context, config) = await _first_turn_events(model, lisinopril_record)
    assert question == "What brings you in today?"
    assert {e["event"] for e in custom} == {"question_delta"} and {e["turn"] for e in custom} == {1}
    assert "".join(e["text"] for e in custom) == question
    assert len(custom) > 3

    second: list[dict[str, Any]] = []
    async for mode, chunk in graph.astream(
        Command(resume="Headaches."), config, context=context, stream_mode=["custom", "updates"]
    ):
        if mode == "custom":
            second.append(chunk)
    assert {e["turn"] for e in second} == {2}
    assert "".join(e["text"] for e in second) == ONSET


async def test_a_rejected_phrasing_streams_but_the_template_is_asked(lisinopril_record: PatientRecord) -> None:
    model = StreamingScriptedChatModel(
        {"interviewer.ask:chief_complaint": [{"question": "It sounds like a migraine, doesn't it?"}]}
    )
    custom, question, _ = await _first_turn_events(model, lisinopril_record)
    assert "".join(e["text"] for e in custom) == "It sounds like a migraine, doesn't it?"
    assert question == "You're coming in about headaches; in your own words, what has been going on?"


async def test_a_model_that_cannot_stream_sends_no_deltas(lisinopril_record: PatientRecord) -> None:
    model = ScriptedChatModel({"interviewer.ask:chief_complaint": [{"question": "What brings you in today?"}]})
    assert not isinstance(model, StreamingChatModel)
    custom, question, _ = await _first_turn_events(model, lisinopril_record)
    assert custom == [] and question == "What brings you in today?"
