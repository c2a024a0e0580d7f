"""The red-flag safety screen that runs on every patient answer: rules first, the model second.

Rules run regardless of the model, so an emergency is caught even when the model is down, weak or
wrong. A rule fires on a sentence about the patient now: mentions that are negated ("no chest
pain"), historical ("the chest pain I had last year is gone") or about someone else ("my father
had a stroke") do not fire. A caregiver speaking for a child ("my baby has a fever") does.
The model check, when enabled, can add a red flag the rules missed; it can never remove one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from tools.models.protocol import ChatMessage, ChatModel, ChatRequest

ESCALATION_MESSAGE = (
    "Thank you for telling me. What you describe needs urgent attention. Please call your local "
    "emergency number (911 in the US) or go to the nearest emergency department now. If you are "
    "thinking about harming yourself, you can also call or text 988 (US) right away. "
    "This intake is stopping here so you can get help, and your care team will see what you told me."
)


class RedFlag(BaseModel):
    """A red flag found in one patient answer."""

    category: str = Field(description="e.g. 'cardiac', 'stroke', 'self_harm'.")
    description: str = Field(description="What the clinician should know, without a diagnosis.")
    turn_id: str
    evidence: str = Field(description="The sentence of the answer that raised it.")
    detected_by: str = Field(description="'rules' or the model id.")


@dataclass(frozen=True)
class _Rule:
    """Fires when every one of its patterns matches a sentence."""

    category: str
    description: str
    patterns: tuple[re.Pattern[str], ...]

    def matches(self, sentence: str) -> bool:
        return all(p.search(sentence) for p in self.patterns)

    def trigger_start(self, sentence: str) -> int:
        """Where the first of its patterns starts: negation is judged on the words before it."""
        return min(m.start() for p in self.patterns if (m := p.search(sentence)))


def _has(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.I) for p in patterns)


_CHEST = r"\b(chest|ches)\s*(pain|pressure|tightness|hurts?|ache|discomfort)|\bpain in (my|the) chest"
_BREATH = r"\b(short(ness)? of breath|can'?t (catch my )?breathe?|breathless|struggling to breathe|sweat(y|ing)|clammy)"

_RULES: tuple[_Rule, ...] = (
    _Rule("cardiac", "Chest pain with breathlessness or sweating", _has(_CHEST, _BREATH)),
    _Rule(
        "cardiac",
        "Crushing or radiating chest pain",
        _has(_CHEST, r"\b(crushing|radiat\w*|spreads? to (my )?(left )?(arm|jaw|neck|back))"),
    ),
    _Rule(
        "stroke",
        "Possible stroke signs (face droop, arm weakness, speech trouble, sudden vision loss)",
        _has(
            r"\b(face (is )?droop\w*|droop\w* (face|mouth|on one side)|slurr\w* (speech|words)|"
            r"speech (is )?slurred|can'?t (lift|raise|move) (my|one|his|her) (arm|leg)|"
            r"sudden(ly)? (numb\w*|weak\w*) on one side|one side of (my|the) (face|body) (is )?(numb|weak)|"
            r"sudden(ly)? (lost|loss of|can'?t see)\w* ?(vision|sight)?|worst headache of (my|her|his) life)"
        ),
    ),
    _Rule(
        "self_harm",
        "Suicidal thoughts or self-harm",
        _has(
            r"\b(kill(ing)? my ?self|suicid\w*|end (my|it) (life|all)|want to die|better off dead|"
            r"hurt(ing)? my ?self|harm(ing)? my ?self|cut(ting)? my ?self|take my (own )?life|"
            r"no reason to live|overdos\w*)"
        ),
    ),
    _Rule(
        "anaphylaxis",
        "Possible anaphylaxis (throat or tongue swelling, trouble breathing after exposure)",
        _has(
            r"\b(throat (is )?(closing|swelling|swollen|tight)|tongue (is )?(swelling|swollen)|"
            r"lips? (are |is )?(swelling|swollen) and|can'?t swallow|anaphyla\w*)"
        ),
    ),
    _Rule(
        "bleeding",
        "Severe bleeding",
        _has(
            r"\b(won'?t stop bleeding|can'?t stop (the )?bleeding|bleeding (heavily|a lot|badly|profusely)|"
            r"heavy bleeding|(vomit\w*|cough\w*|throw\w* up) (up )?blood|blood in (my )?(vomit|stool)|"
            r"soaking (a|through) (pad|towel)s?)"
        ),
    ),
    _Rule(
        "infant_fever",
        "Fever in an infant under 3 months",
        _has(
            r"\b(fever|temperature (of|is) (100\.4|38|39|40)|hot to the touch)",
            r"\b(newborn|(\d|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)[- ](week|day)[- ]old|"
            r"(1|2|one|two)[- ]month[- ]old|infant)",
        ),
    ),
    _Rule(
        "breathing",
        "Severe trouble breathing",
        _has(r"\b(can'?t breathe|cannot breathe|gasping|turning blue|blue lips|choking)"),
    ),
    _Rule(
        "neuro",
        "Loss of consciousness or seizure",
        _has(r"\b(passed out|fainted|lost consciousness|unconscious|seizure|convuls\w*|unresponsive)"),
    ),
)

_NEGATION = re.compile(
    r"\b(no|not|never|without|denies|deny|don'?t|doesn'?t|didn'?t|haven'?t|hasn'?t|isn'?t|none|nothing like)\b"
    r"[^.;,]{0,40}$",
    re.I,
)
_HISTORICAL = re.compile(
    r"\b(last (year|month|summer|winter|spring|fall)|years ago|months ago|used to|in the past|"
    r"(is|are|has|have) (all )?(gone|resolved|better)|went away|back in \d{4}|as a (child|kid)|"
    r"long time ago|when i was (young|little|a kid))\b",
    re.I,
)
_OTHER_PERSON = re.compile(
    r"^\s*(my|his|her|our) (mother|mom|mum|father|dad|brother|sister|friend|wife|husband|partner|"
    r"uncle|aunt|grandmother|grandma|grandfather|grandpa|cousin|neighbou?r|colleague|coworker)\b"
    r"|\b(mother|mom|mum|father|dad|brother|sister|uncle|aunt|grandmother|grandfather) (had|has|died)\b",
    re.I,
)
_SENTENCES = re.compile(r"(?<=[.!?;])\s+|\n+|\bbut\b", re.I)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(text) if s and s.strip()]


def _applies_to_patient_now(sentence: str, rule: _Rule) -> bool:
    if _HISTORICAL.search(sentence) or _OTHER_PERSON.search(sentence):
        return False
    return not _NEGATION.search(sentence[: rule.trigger_start(sentence)])


def screen_rules(answer: str, turn_id: str) -> list[RedFlag]:
    """Red flags the rules find in one answer (one per category)."""
    found: dict[str, RedFlag] = {}
    for sentence in _sentences(answer):
        for rule in _RULES:
            if rule.category in found or not rule.matches(sentence):
                continue
            if _applies_to_patient_now(sentence, rule):
                found[rule.category] = RedFlag(
                    category=rule.category,
                    description=rule.description,
                    turn_id=turn_id,
                    evidence=sentence[:300],
                    detected_by="rules",
                )
    return list(found.values())


class SafetyAssessment(BaseModel):
    """The model's second opinion on one answer."""

    red_flag: bool = Field(description="True only if the answer describes a possible emergency happening now.")
    category: str = Field(default="", max_length=40)
    reason: str = Field(default="", max_length=200)


SAFETY_SYSTEM = (
    "You screen a patient's message in a pre-visit intake for emergencies happening now: chest pain "
    "with breathlessness or sweating, stroke signs, suicidal thoughts or self-harm, anaphylaxis, severe "
    "bleeding, fever in an infant under 3 months, severe trouble breathing, loss of consciousness. "
    "Negated, past or third-person mentions are not emergencies. Do not diagnose. Reply with JSON only."
)


async def screen_model(model: ChatModel, question: str, answer: str, turn_id: str) -> list[RedFlag]:
    """The model check; raises `ModelError` for the caller to record."""
    request = ChatRequest(
        task="safety.check",
        messages=[
            ChatMessage(role="system", content=SAFETY_SYSTEM),
            ChatMessage(role="user", content=f"Question: {question}\nPatient: {answer[:1500]}"),
        ],
        max_new_tokens=96,
    )
    reply = await model.complete(request, SafetyAssessment)
    if not reply.value.red_flag:
        return []
    return [
        RedFlag(
            category=reply.value.category or "model",
            description=reply.value.reason or "The model check judged this answer a possible emergency.",
            turn_id=turn_id,
            evidence=answer[:300],
            detected_by=reply.model_id,
        )
    ]
