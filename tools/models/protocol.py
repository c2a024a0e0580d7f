"""The chat-model protocol every backend implements.

Graph nodes never see raw text from a model: they ask for a pydantic schema and get a validated
object back, or a typed failure they can turn into a flag. Keeping the protocol this small is what
lets the scripted backend, the transformers backend (MedGemma, small CPU models) and an
OpenAI-compatible server slot in behind the same call.

Exception hierarchy::

    ModelError                    anything a backend could not deliver
    ├── ModelUnavailableError     the backend cannot run at all (weights missing, server down)
    ├── ScriptExhaustedError      a scripted backend has no reply left for this task
    └── StructuredOutputError     the reply failed schema validation, and so did its one repair
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant"]

SchemaT = TypeVar("SchemaT", bound=BaseModel)


class ChatMessage(BaseModel):
    """One message of a prompt, in the role vocabulary every chat template understands."""

    role: Role
    content: str
    images: list[str] = Field(
        default_factory=list,
        description="Image file paths shown with this message; only multimodal models see them.",
    )


class ChatRequest(BaseModel):
    """A structured-output request.

    `task` names the agent call (``interviewer.ask:onset``, ``summarizer.hpi``); the scripted
    backend replays replies by it, and logs and benchmarks group by it.
    """

    task: str
    messages: list[ChatMessage]
    max_new_tokens: int = Field(default=256, ge=1, le=8192)
    thinking: bool = Field(
        default=False,
        description="Let the model reason before answering (MedGemma); the reasoning is kept apart, never shown.",
    )


class StructuredReply(BaseModel, Generic[SchemaT]):
    """A validated reply plus what it took to get it."""

    value: SchemaT
    raw: str = Field(description="The model's text as it came, thinking block included.")
    model_id: str
    repaired: bool = Field(default=False, description="True when the first reply failed validation.")
    prompt_tokens: int = 0
    output_tokens: int = 0
    thinking: str | None = Field(
        default=None,
        description="Hidden reasoning the model wrote before its answer: for audit logs only, never for the "
        "patient or the summary text.",
    )
    notes: list[str] = Field(default_factory=list, description="What the backend changed or dropped (e.g. images).")


class ModelError(Exception):
    """A backend could not deliver a validated reply."""


class ModelUnavailableError(ModelError):
    """The backend cannot run: weights missing, wrong configuration, server unreachable."""


class ScriptExhaustedError(ModelError):
    """A scripted backend was asked for a task it has no reply left for."""


class StructuredOutputError(ModelError):
    """The reply failed validation twice (the reply and its one repair)."""

    def __init__(self, task: str, errors: list[str], raw: list[str]) -> None:
        self.task = task
        self.errors = errors
        self.raw = raw
        super().__init__(f"{task}: model reply failed validation after one repair: {errors[-1]}")


@runtime_checkable
class ChatModel(Protocol):
    """What every backend offers the agents."""

    @property
    def model_id(self) -> str:
        """A name that says which model wrote a reply (shown in summaries and logs)."""
        ...

    @property
    def is_demo(self) -> bool:
        """True for small demo models whose output must be labelled as such."""
        ...

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        """Return a reply validated against `schema`, or raise a `ModelError`."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes with this model's tokenizer (chart-context budgets use it)."""
        ...


TextCallback = Callable[[str], None]


@runtime_checkable
class StreamingChatModel(ChatModel, Protocol):
    """A backend that can hand over the reply's text while it is being written.

    `on_text` receives raw text deltas of the first attempt, as the model writes them (thinking
    block included, if any); it is called on the event loop's thread. The return value is the same
    validated reply `complete` gives, so a streamed reply that fails validation is still repaired
    or rejected like any other: callers must treat streamed text as provisional.
    """

    async def complete_streaming(
        self, request: ChatRequest, schema: type[SchemaT], on_text: TextCallback
    ) -> StructuredReply[SchemaT]:
        """Like `complete`, calling `on_text(delta)` as text arrives."""
        ...
