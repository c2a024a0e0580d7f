"""Findings read from the patient's own words: pertinent positives and negatives, review of systems,
social and family history, and contradictions between the patient's answers.

All by code over sentences of the transcript, so every finding quotes the sentence it came from
and cites its turn. A symptom both denied and affirmed in different answers is a contradiction the
clinician should clear up, not something previsit silently resolves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from agents.summary_schema import SourceRef, Statement, UncertaintyFlag
from agents.transcript import Turn

# symptom -> (review-of-systems group, pattern)
_SYMPTOMS: dict[str, tuple[str, str]] = {
    "fever": ("constitutional", r"fevers?|feverish|temperature|chills"),
    "fatigue": ("constitutional", r"tired(ness)?|fatigue[d]?|exhausted|no energy"),
    "weight loss": ("constitutional", r"(lost|losing) weight|weight loss"),
    "night sweats": ("constitutional", r"night sweats?"),
    "chest pain": ("cardiovascular", r"chest (pain|pressure|tightness)"),
    "palpitations": ("cardiovascular", r"palpitations?|(heart|it) (is )?racing|pounding heart|skipped beats?"),
    "leg swelling": (
        "cardiovascular",
        r"(swollen|swelling (in|of)( my)?) (legs?|ankles?|feet)|(legs?|ankles?|feet) (are )?swollen",
    ),
    "shortness of breath": ("respiratory", r"short(ness)? of breath|breathless|out of breath|trouble breathing"),
    "cough": ("respiratory", r"cough(ing)?"),
    "wheezing": ("respiratory", r"wheez(e|ing)"),
    "nausea": ("gastrointestinal", r"nause(a|ous)|queasy"),
    "vomiting": ("gastrointestinal", r"vomit(ing|ed)?|throw(ing)? up|threw up"),
    "diarrhea": ("gastrointestinal", r"diarrh(o)?ea|loose stools?"),
    "constipation": ("gastrointestinal", r"constipat(ed|ion)"),
    "abdominal pain": ("gastrointestinal", r"(stomach|belly|abdominal|tummy) (pain|ache|cramps?)|stomach ?ache"),
    "blood in stool": ("gastrointestinal", r"blood in (my )?(stool|poop)|black stools?"),
    "painful urination": (
        "genitourinary",
        r"(burning|pain(ful)?) (when|on) (peeing|urinating|urination)|painful urination",
    ),
    "headache": ("neurological", r"headaches?|migraines?"),
    "dizziness": ("neurological", r"dizz(y|iness)|light-?headed|vertigo|room spinning"),
    "numbness": ("neurological", r"numb(ness)?|tingl(e|ing)|pins and needles"),
    "weakness": ("neurological", r"weak(ness)?"),
    "vision changes": ("eyes", r"blurr(y|ed) vision|double vision|vision (changes?|loss)"),
    "rash": ("skin", r"rash(es)?|hives|itch(y|ing)"),
    "bruising": ("skin", r"bruis(e|es|ing)"),
    "joint pain": ("musculoskeletal", r"joint (pain|ache)s?|(knee|hip|wrist|elbow|shoulder) (pain|hurts?)"),
    "back pain": ("musculoskeletal", r"back (pain|ache)|backache"),
    "low mood": ("psychiatric", r"depress(ed|ion)|low mood|feeling down|hopeless"),
    "anxiety": ("psychiatric", r"anxi(ous|ety)|panic"),
    "sleep problems": ("psychiatric", r"(can'?t|trouble|problems?) sleep(ing)?|insomnia"),
}
_SYMPTOM_PATTERNS = {name: re.compile(rf"\b({pattern})\b", re.I) for name, (_, pattern) in _SYMPTOMS.items()}

_NEGATED_BEFORE = re.compile(
    r"\b(no|not|never|without|denies|deny|don'?t|dont|doesn'?t|didn'?t|haven'?t|hasn'?t|isn'?t|aren'?t|"
    r"none|nor|neither)\b[^.;!?]{0,30}$",
    re.I,
)
_PAST = re.compile(r"\b(years? ago|last year|used to|in the past|as a (child|kid)|went away|is gone|resolved)\b", re.I)
# An allergy's reaction ("penicillin gives me a rash") is allergy history, not a current symptom.
_ALLERGY_CONTEXT = re.compile(r"\ballerg\w*|\breaction\b", re.I)
_SOMEONE_ELSE = re.compile(
    r"\b(my|his|her) (mother|mom|mum|father|dad|brother|sister|grand\w+|aunt|uncle|son|daughter|wife|husband)\b", re.I
)

_SOCIAL = re.compile(
    r"\b(smok(e|es|ed|er|ing)|cigarettes?|vap(e|ing)|tobacco|alcohol|drink(s|ing)? (wine|beer|alcohol)|"
    r"(glass|glasses) of wine|beers?|(recreational|street|illegal) drugs|(use|do|take) drugs|marijuana|cannabis|"
    r"i work|my job|works? as|retired|unemployed|"
    r"live (alone|with)|living (alone|with)|exercise|married|divorced|widowed)\b",
    re.I,
)
_FAMILY = re.compile(
    r"\b(my|our) (mother|mom|mum|father|dad|brother|sister|grand(mother|father|ma|pa)|aunt|uncle|parents|"
    r"family)\b[^.;!?]{0,80}\b(had|has|have|died|passed|runs? in)\b|\bruns in (my|the) family\b",
    re.I,
)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")


@dataclass(frozen=True)
class _Mention:
    symptom: str
    negated: bool
    turn: Turn
    sentence: str


class Findings(BaseModel):
    """What the patient's answers say beyond the element each question aimed at."""

    pertinent_positives: list[Statement] = Field(default_factory=list)
    pertinent_negatives: list[Statement] = Field(default_factory=list)
    review_of_systems: dict[str, list[Statement]] = Field(default_factory=dict)
    social_history: list[Statement] = Field(default_factory=list)
    family_history: list[Statement] = Field(default_factory=list)
    contradictions: list[UncertaintyFlag] = Field(default_factory=list)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def _quote(turn: Turn, sentence: str) -> Statement:
    return Statement(text=sentence, sources=[SourceRef(kind="patient", ref=turn.id)], origin="patient_words")


def _mentions(turns: list[Turn]) -> list[_Mention]:
    found: list[_Mention] = []
    for turn in turns:
        for sentence in _sentences(turn.answer[:5000]):
            if _PAST.search(sentence) or _SOMEONE_ELSE.search(sentence) or _ALLERGY_CONTEXT.search(sentence):
                continue
            for name, pattern in _SYMPTOM_PATTERNS.items():
                match = pattern.search(sentence)
                if match:
                    negated = bool(_NEGATED_BEFORE.search(sentence[: match.start()]))
                    found.append(_Mention(name, negated, turn, sentence))
    return found


def extract_findings(turns: list[Turn]) -> Findings:
    """Findings from every answer, each quoting its sentence and citing its turn."""
    findings = Findings()
    seen: set[tuple[str, bool]] = set()
    mentions = _mentions(turns)
    for mention in mentions:
        key = (mention.symptom, mention.negated)
        if key in seen:
            continue
        seen.add(key)
        statement = _quote(mention.turn, mention.sentence)
        (findings.pertinent_negatives if mention.negated else findings.pertinent_positives).append(statement)
        system = _SYMPTOMS[mention.symptom][0]
        group = findings.review_of_systems.setdefault(system, [])
        if statement not in group:
            group.append(statement)
    for symptom in {m.symptom for m in mentions}:
        denied = [m for m in mentions if m.symptom == symptom and m.negated]
        affirmed = [m for m in mentions if m.symptom == symptom and not m.negated]
        turns_involved = {m.turn.id for m in denied} | {m.turn.id for m in affirmed}
        if denied and affirmed and len(turns_involved) > 1:
            findings.contradictions.append(
                UncertaintyFlag(
                    kind="conflict",
                    severity="medium",
                    message=f"The patient's answers disagree about {symptom}: "
                    f'"{denied[0].sentence[:120]}" ({denied[0].turn.id}) vs '
                    f'"{affirmed[0].sentence[:120]}" ({affirmed[0].turn.id}). Clarify at the visit.',
                    evidence=[
                        SourceRef(kind="patient", ref=denied[0].turn.id),
                        SourceRef(kind="patient", ref=affirmed[0].turn.id),
                    ],
                )
            )
    for turn in turns:
        for sentence in _sentences(turn.answer[:5000]):
            if _FAMILY.search(sentence):
                findings.family_history.append(_quote(turn, sentence))
            elif _SOCIAL.search(sentence):
                findings.social_history.append(_quote(turn, sentence))
    findings.contradictions.sort(key=lambda f: f.message)
    return findings
