"""The interviewer: one short question per turn, aimed at the element the coverage tracker picks.

Code chooses *what* to ask (the next open intake element) and writes a record-aware template
question; the model only phrases it, seeing the chart context and the conversation so far. A
phrasing that is not one short question, or that drifts into diagnosis or reassurance, is
discarded for the template. So even a weak model cannot derail the interview.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from agents.coverage import ELEMENT_LABELS, IntakeElement
from tools.fhir.record import PatientRecord
from tools.models.protocol import ChatMessage, ChatModel, ChatRequest, StreamingChatModel
from tools.models.streaming import JsonFieldStream

MAX_QUESTION_CHARS = 240
MAX_QUESTION_WORDS = 40


class InterviewerQuestion(BaseModel):
    """What the model returns: the question to put to the patient."""

    question: str = Field(min_length=3, max_length=MAX_QUESTION_CHARS)


class ProposedQuestion(BaseModel):
    """The question the graph will ask, and who wrote it."""

    element: IntakeElement
    text: str
    source: Literal["model", "template"]
    rejected_reason: str | None = Field(default=None, description="Why a model phrasing was discarded.")


INTERVIEWER_SYSTEM = (
    "You are a friendly clinic intake assistant talking with a patient before their appointment. "
    "Ask exactly ONE short, plain-language question about the topic you are given. "
    "Never diagnose, never suggest what the patient has, never reassure or give medical advice. "
    "When the chart lists something relevant, confirm it instead of asking from scratch. "
    'Reply with JSON only: {"question": "..."}'
)

_FORBIDDEN = re.compile(
    r"\b((?<!do )(?<!did )(?<!have )(?<!if )(?<!when )you (probably |likely |might |may |could )?"
    r"(have|had|are suffering)|"
    r"diagnos\w*|sounds like|"
    r"it'?s (probably|likely|nothing)|don'?t worry|nothing to worry|no need to worry|you'?ll be fine|"
    r"i('m| am) sure it'?s|could be (a|an)\b|might be (a|an)\b|likely (a|an)\b|you should take)",
    re.I,
)


def _short_name(name: str) -> str:
    """'Fexofenadine hydrochloride 30 MG Oral Tablet' -> 'fexofenadine hydrochloride'."""
    words = []
    for word in re.sub(r"\[.*?\]|\(.*?\)", "", name).split():
        if re.match(r"^\d", word) or word.upper() in {"MG", "ML", "MCG", "HR", "UNT", "ACTUAT"}:
            break
        words.append(word)
    return (" ".join(words[:3]) or name).lower()


def _allergen(substance: str) -> str:
    """'Allergy to mould' -> 'mould'; 'Dander (animal) allergy' -> 'animal dander'."""
    text = re.sub(r"\b(allergy|allergic disposition|hypersensitivity)( to)?\b", "", substance, flags=re.I)
    text = re.sub(r"(\w+) \((\w+)\)", r"\2 \1", text)
    return " ".join(text.split()).lower() or substance.lower()


def _listing(names: list[str], limit: int = 4) -> str:
    unique = list(dict.fromkeys(names))
    shown = unique[:limit]
    more = len(unique) - len(shown)
    text = ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1]
    return f"{text} and {more} more" if more > 0 else text


def template_question(element: IntakeElement, record: PatientRecord | None, reason: str | None) -> str:
    """A good question for `element` that needs no model; uses the chart where it helps."""
    meds = [_short_name(m.name) for m in record.active_medications] if record else []
    allergies = [_allergen(a.substance) for a in record.active_allergies] if record else []
    conditions = [re.sub(r"\s*\((disorder|finding)\)", "", c.name) for c in record.active_conditions] if record else []
    match element:
        case IntakeElement.CHIEF_COMPLAINT:
            if reason:
                topic = reason.strip().rstrip(".").lower()
                return f"You're coming in about {topic}; in your own words, what has been going on?"
            return "What is the main reason for your visit today?"
        case IntakeElement.ONSET:
            return "When did this start, and did it come on suddenly or gradually?"
        case IntakeElement.LOCATION:
            return "Where exactly is it?"
        case IntakeElement.DURATION:
            return "How long does it last when it happens, or has it been there the whole time?"
        case IntakeElement.CHARACTER:
            return "How would you describe what it feels like?"
        case IntakeElement.AGGRAVATING_RELIEVING:
            return "Is there anything that makes it better or worse?"
        case IntakeElement.RADIATION:
            return "Does it spread or move anywhere else?"
        case IntakeElement.TIMING:
            return "Is it there all the time, or does it come and go?"
        case IntakeElement.SEVERITY:
            return "On a scale of 0 to 10, how bad is it at its worst?"
        case IntakeElement.MEDICATIONS:
            if meds:
                return (
                    f"Your record lists {_listing(meds)}; are you still taking these, and anything else, "
                    "including over-the-counter medicines or supplements?"
                )
            return "What medicines do you take, including over-the-counter medicines and supplements?"
        case IntakeElement.ALLERGIES:
            if allergies:
                listed = _listing(allergies)
                return f"Your record lists allergies to {listed}; is that still right, and are there any others?"
            return "Do you have any allergies to medicines, foods or anything else?"
        case IntakeElement.HISTORY:
            if conditions:
                return (
                    f"Your record lists {_listing([c.lower() for c in conditions])}; is there anything else "
                    "in your health history we should know about?"
                )
            return "Do you have any ongoing health conditions or past operations we should know about?"
        case IntakeElement.PATIENT_CONCERNS:
            return "What worries you most about this, or what would you like to ask the doctor?"


def _same_question(a: str, b: str) -> bool:
    return re.sub(r"\W+", " ", a).strip().lower() == re.sub(r"\W+", " ", b).strip().lower()


def question_problem(text: str, asked: Sequence[str] = ()) -> str | None:
    """Why a model phrasing cannot be asked as it is, or None when it can."""
    stripped = text.strip()
    if any(_same_question(stripped, earlier) for earlier in asked):
        return "repeats an earlier question"
    if len(stripped) < 3:
        return "empty question"
    if len(stripped) > MAX_QUESTION_CHARS or len(stripped.split()) > MAX_QUESTION_WORDS:
        return "too long for one short question"
    if stripped.count("?") != 1 or not stripped.endswith("?"):
        return "not exactly one question"
    if _FORBIDDEN.search(stripped):
        return "diagnosis, reassurance or advice"
    return None


def build_request(
    element: IntakeElement,
    template: str,
    chart: str,
    conversation: list[tuple[str, str]],
    reason: str | None,
    turn_images: Mapping[int, list[str]] | None = None,
) -> ChatRequest:
    """The prompt, laid out so that each turn's prompt extends the previous one.

    Stable first: the instructions, then the visit reason and chart, then every earlier turn as
    an assistant question and the patient's answer. Only the last message carries what changes
    each turn (the next topic and its template question). So turn n+1's prompt starts with all of
    turn n's prompt except that last instruction: a KV cache (the transformers backend's prefix
    cache, vLLM's prefix caching) serves everything up to the newest answer.

    `turn_images` (conversation index -> image file paths) puts the images a patient attached on
    that answer's message, so a multimodal model sees each image beside the words it came with;
    a text-only backend leaves them out and says so. Triage results never go in: the interviewer
    must not steer the patient by them.
    """
    context = (
        f"Reason for visit on the booking: {reason or 'not given'}\n"
        f"Chart (each line cites its record entry):\n{chart or '(no record available)'}"
    )
    ask = (
        f"Next topic: {ELEMENT_LABELS[element]}.\n"
        f"A suitable question would be: {template}\n"
        "Write the one question to ask now."
    )
    messages = [ChatMessage(role="system", content=INTERVIEWER_SYSTEM)]
    if not conversation:
        messages.append(ChatMessage(role="user", content=f"{context}\n\n{ask}"))
    else:
        messages.append(ChatMessage(role="user", content=f"{context}\n\nThe interview so far follows."))
        for index, (question, answer) in enumerate(conversation):
            messages.append(ChatMessage(role="assistant", content=question))
            said = f"Patient: {answer[:600]}"
            last = index == len(conversation) - 1
            images = list((turn_images or {}).get(index, []))
            messages.append(ChatMessage(role="user", content=f"{said}\n\n{ask}" if last else said, images=images))
    return ChatRequest(task=f"interviewer.ask:{element.value}", messages=messages, max_new_tokens=96)


async def propose_question(
    model: ChatModel | None,
    element: IntakeElement,
    record: PatientRecord | None,
    chart: str,
    conversation: list[tuple[str, str]],
    reason: str | None,
    on_question_delta: Callable[[str], None] | None = None,
    turn_images: Mapping[int, list[str]] | None = None,
) -> ProposedQuestion:
    """The next question; raises `ModelError` only through the caller's choice to record it.

    Model failures propagate so the graph can record them; a phrasing that fails the checks is
    replaced by the template here. With `on_question_delta` and a streaming model, the question's
    text is passed on as the model writes it; it is provisional: the returned question (checked,
    perhaps the template instead) is the one asked.
    """
    template = template_question(element, record, reason)
    if model is None:
        return ProposedQuestion(element=element, text=template, source="template")
    request = build_request(element, template, chart, conversation, reason, turn_images)
    if on_question_delta is not None and isinstance(model, StreamingChatModel):
        field = JsonFieldStream("question", on_question_delta)
        reply = await model.complete_streaming(request, InterviewerQuestion, field.feed)
    else:
        reply = await model.complete(request, InterviewerQuestion)
    text = " ".join(reply.value.question.split())
    problem = question_problem(text, [question for question, _ in conversation])
    if problem:
        return ProposedQuestion(element=element, text=template, source="template", rejected_reason=problem)
    return ProposedQuestion(element=element, text=text, source="model")
