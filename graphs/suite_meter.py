"""Measuring one simulated intake from the outside: model tokens and calls, time per patient turn.

The meters wrap the model and the simulated patient of one run, so a model shared by many
concurrent intakes is still counted per intake, and the graph needs no timing code of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agents.coverage import IntakeElement
from agents.simulated_patient import PatientResponder
from tools.models.protocol import ChatModel, ChatRequest, SchemaT, StructuredReply

Clock = Callable[[], float]


class MeteredModel:
    """A `ChatModel` that counts the calls, prompt tokens and output tokens of one intake."""

    def __init__(self, inner: ChatModel) -> None:
        self._inner = inner
        self.calls = 0
        self.prompt_tokens = 0
        self.output_tokens = 0

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def is_demo(self) -> bool:
        return self._inner.is_demo

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        self.calls += 1
        reply = await self._inner.complete(request, schema)
        self.prompt_tokens += reply.prompt_tokens
        self.output_tokens += reply.output_tokens
        return reply


class TimedPatient:
    """A `PatientResponder` that times the intake's side of every turn.

    A turn's latency runs from the moment the patient's previous answer was handed back (or the
    intake started, for the first question) to the moment the next question reaches the patient:
    safety screen, coverage and the interviewer's model call, never the patient's own thinking.
    """

    def __init__(self, inner: PatientResponder, clock: Clock = time.perf_counter) -> None:
        self._inner = inner
        self._clock = clock
        self._ready_since = clock()
        self.latencies_s: list[float] = []

    def restart(self) -> None:
        """Start the first turn's clock now (when the intake really starts)."""
        self._ready_since = self._clock()

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        self.latencies_s.append(self._clock() - self._ready_since)
        try:
            return await self._inner.answer(question, element, turn_index)
        finally:
            self._ready_since = self._clock()
