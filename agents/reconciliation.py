"""Medication, allergy and condition reconciliation: the record against what the patient said.

Reconciliation is by code first. The model, when one is used, only reads the patient's free text
into structured claims (`PatientClaims`); every claim is then re-checked here:

- a claim is kept only when the thing it names actually occurs in the answer of the turn it cites
  (a brand for a generic or a typo counts: "Alegra" supports a claim of "fexofenadine"); otherwise
  it is dropped and listed in `Reconciliation.rejected_claims` with the reason;
- a claim is matched to the record by RxNorm code when it carries one and the code agrees with
  the name, else by ingredient set (`agents.medication_names`); allergies by SNOMED code or
  substance synonyms ("Allergy to nut" and "peanuts"); conditions by code or synonyms
  ("Hypertension" and "high blood pressure"), both from ``agents/data/clinical_synonyms.yaml``;
- a denial (of an allergy, a condition, or of allergies altogether) is kept only when the answer
  carries a negation, because a wrong denial would hide something from the clinician.

`extract_claims_by_rules` reads the same claims without a model, and `reconcile` with no claims
uses it. A blanket answer ("yes, I still take all of those") to a question that listed the
record's medications or allergies confirms the ones the question named; that is read from the
question and answer by code, whoever wrote the claims.

Nothing here diagnoses: lines say what the record lists and what the patient said, side by side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field

from agents.coverage import IntakeElement
from agents.medication_names import (
    Hit,
    MedicationTerm,
    V,
    Vocabulary,
    compact,
    find_terms,
    ingredients_of,
    is_otc,
    medication_vocabulary,
    parse_medication_name,
    read_data_file,
    same_medication,
)
from agents.transcript import Turn, excerpt
from tools.fhir.record import PatientRecord, RecordAllergy, RecordCondition, RecordMedication
from tools.models.protocol import ChatMessage, ChatModel, ChatRequest, ModelError

# --------------------------------------------------------------------------------------------
# Claims: what the patient said, as structured data (filled by a model or by the rules here)
# --------------------------------------------------------------------------------------------

ClaimStatus = Literal["taking", "stopped", "taking_differently", "unsure"]

MAX_MEDICATION_CLAIMS = 20
MAX_ALLERGY_CLAIMS = 15
MAX_CONDITION_CLAIMS = 15


class MedicationClaim(BaseModel):
    """A medicine the patient mentioned."""

    name: str = Field(min_length=1, max_length=40, description="The medicine as the patient said it.")
    status: ClaimStatus = Field(description="What the patient said about taking it.")
    detail: str = Field(default="", max_length=60, description="How they take it, e.g. 'only at night'.")
    turn_id: str = Field(min_length=1, max_length=12, description="The turn whose answer names it.")
    code: str = Field(default="", max_length=12, description="RxNorm code, only if copied from the record list.")


class AllergyClaim(BaseModel):
    """An allergy the patient mentioned (or said they no longer have)."""

    substance: str = Field(min_length=1, max_length=40, description="What they react to, in their words.")
    reaction: str = Field(default="", max_length=40, description="What happens, in their words.")
    denied: bool = Field(default=False, description="True when the patient says they are NOT allergic to it.")
    turn_id: str = Field(min_length=1, max_length=12)


class ConditionClaim(BaseModel):
    """A health condition the patient mentioned about themselves."""

    name: str = Field(min_length=1, max_length=40, description="The condition in the patient's words.")
    denied: bool = Field(default=False, description="True when the patient says they do NOT have it.")
    turn_id: str = Field(min_length=1, max_length=12)


class PatientClaims(BaseModel):
    """What the patient's answers say about medications, allergies and conditions."""

    medications: list[MedicationClaim] = Field(default_factory=list, max_length=MAX_MEDICATION_CLAIMS)
    allergies: list[AllergyClaim] = Field(default_factory=list, max_length=MAX_ALLERGY_CLAIMS)
    denies_allergies: bool = Field(default=False, description="True when the patient says they have no allergies.")
    conditions: list[ConditionClaim] = Field(default_factory=list, max_length=MAX_CONDITION_CLAIMS)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------

MedicationStatus = Literal[
    "confirmed", "stopped", "taking_differently", "not_discussed", "patient_reported_only", "unsure"
]
AllergyStatus = Literal["confirmed", "denied_by_patient", "not_discussed", "patient_reported_only"]
ConditionStatus = Literal["confirmed", "denied_by_patient", "not_discussed", "patient_reported_only"]
MatchedBy = Literal["code", "ingredients", "drug_class", "synonyms", "question_listing"]


class MedicationLine(BaseModel):
    """One active record medication, or one medication the patient reports that the record lacks."""

    record_ref: str | None = Field(description="The active record entry; None for a patient-reported medication.")
    name: str = Field(description="The record's display, or the patient's words for a reported medication.")
    ingredients: list[str] = Field(default_factory=list)
    status: MedicationStatus
    reported_status: ClaimStatus | None = Field(default=None, description="What the patient said, if anything.")
    detail: str | None = Field(default=None, description="How the patient says they take it, when it differs.")
    patient_words: str | None = Field(default=None, description="Exact substring of the answer it rests on.")
    turn_ids: list[str] = Field(default_factory=list)
    otc_or_supplement: bool = False
    matched_by: MatchedBy | None = None
    inactive_record_refs: list[str] = Field(
        default_factory=list, description="Record entries for the same medicine that are not active (stopped, ...)."
    )


class AllergyLine(BaseModel):
    """One active record allergy, or one allergy the patient reports that the record lacks."""

    record_ref: str | None
    substance: str
    status: AllergyStatus
    reactions: list[str] = Field(default_factory=list, description="Reactions as the patient described them.")
    record_reactions: list[str] = Field(default_factory=list)
    criticality: str | None = None
    patient_words: str | None = None
    turn_ids: list[str] = Field(default_factory=list)
    matched_by: MatchedBy | None = None
    inactive_record_refs: list[str] = Field(default_factory=list)


class ConditionLine(BaseModel):
    """One active record condition, or one condition the patient reports that the record lacks."""

    record_ref: str | None
    name: str
    status: ConditionStatus
    patient_words: str | None = None
    turn_ids: list[str] = Field(default_factory=list)
    matched_by: MatchedBy | None = None
    inactive_record_refs: list[str] = Field(default_factory=list)


class Reconciliation(BaseModel):
    """The record and the patient's words, side by side, with what was dropped and why."""

    medications: list[MedicationLine] = Field(default_factory=list)
    allergies: list[AllergyLine] = Field(default_factory=list)
    conditions: list[ConditionLine] = Field(default_factory=list)
    rejected_claims: list[str] = Field(default_factory=list, description="Claims dropped by the code re-check.")
    notes: list[str] = Field(default_factory=list, description="Parts of kept claims that were set aside.")


# --------------------------------------------------------------------------------------------
# Synonym groups (allergens, conditions)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynonymGroup:
    name: str
    codes: frozenset[str]
    terms: tuple[str, ...]


def _groups(data: dict[str, Any], section: str) -> tuple[SynonymGroup, ...]:
    raw = data.get(section) or []
    if not isinstance(raw, list):
        raise ValueError(f"clinical_synonyms.yaml: {section} must be a list")
    groups = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"clinical_synonyms.yaml: every {section} entry needs a name")
        terms = tuple(str(t).lower() for t in item.get("terms") or [])
        codes = frozenset(str(c) for c in item.get("codes") or [])
        groups.append(SynonymGroup(name=item["name"], codes=codes, terms=terms))
    return tuple(groups)


@cache
def allergen_groups() -> tuple[SynonymGroup, ...]:
    return _groups(read_data_file("clinical_synonyms.yaml"), "allergens")


@cache
def condition_groups() -> tuple[SynonymGroup, ...]:
    return _groups(read_data_file("clinical_synonyms.yaml"), "conditions")


_QUALIFIERS = re.compile(
    r"\((animal|substance|disorder|finding|situation|morphologic abnormality)\)|"
    r"\b(allergy|allergies|allergic disposition|hypersensitivity|intolerance)( to)?\b",
    re.I,
)


def allergen_name(substance: str) -> str:
    """'Allergy to mould' -> 'mould'; 'Dander (animal) allergy' -> 'dander'."""
    return " ".join(_QUALIFIERS.sub(" ", substance).split()).lower() or substance.lower()


def condition_name(name: str) -> str:
    """'Chronic sinusitis (disorder)' -> 'chronic sinusitis'."""
    return " ".join(_QUALIFIERS.sub(" ", name).split()).lower() or name.lower()


def _entry_groups(code: str | None, name: str, groups: Sequence[SynonymGroup]) -> set[str]:
    key = compact(name)
    return {g.name for g in groups if (code and code in g.codes) or any(compact(t) == key for t in g.terms)}


def _group_vocabulary(groups: Sequence[SynonymGroup]) -> Vocabulary[str]:
    return Vocabulary((term, group.name) for group in groups for term in group.terms)


@cache
def _allergen_vocabulary() -> Vocabulary[str]:
    """The synonym table's allergens, built once; copied before a record's names are added."""
    return _group_vocabulary(allergen_groups())


@cache
def _condition_vocabulary() -> Vocabulary[str]:
    return _group_vocabulary(condition_groups())


def _extended(base: Vocabulary[str], extra: Iterable[tuple[str, str]]) -> Vocabulary[str]:
    vocabulary = base.copy()
    for term, group_name in extra:
        vocabulary.add(term, group_name)
    return vocabulary


# --------------------------------------------------------------------------------------------
# Text: sentences, clauses and cues
# --------------------------------------------------------------------------------------------

_SENTENCE_BREAK = re.compile(r"(?<![Ss]t\.)(?<!Dr\.)(?<!Mr\.)(?<!Ms\.)(?<!Mrs\.)(?<=[.!?;])\s+|\n+")
_CLAUSE_BREAK = re.compile(
    r",?\s+(?:but|though|although|however|whereas)\s+|"
    r",\s*(?:and\s+|so\s+)?(?=(?:i|i'm|i've|i'd|it|it's|that|that's|they|they're|he|she|we)\b)|"
    r"\s+and\s+(?=(?:i|i'm|i've|i'd)\b)|\s*[:;]\s*|\s+-+\s+",
    re.I,
)


def _pieces(text: str, pattern: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    position = start
    for match in pattern.finditer(text, start, end):
        spans.append((position, match.start()))
        position = match.end()
    spans.append((position, end))
    stripped = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if b - trail > a + lead:
            stripped.append((a + lead, b - trail))
    return stripped


def sentence_spans(text: str) -> list[tuple[int, int]]:
    return _pieces(text, _SENTENCE_BREAK, 0, len(text))


def clause_spans(text: str, sentence: tuple[int, int]) -> list[tuple[int, int]]:
    return _pieces(text, _CLAUSE_BREAK, sentence[0], sentence[1])


@dataclass(frozen=True)
class _Place:
    """Where a mention sits: its sentence and clause (spans of the answer) and the clause index."""

    sentence: tuple[int, int]
    clause: tuple[int, int]
    clauses: tuple[tuple[int, int], ...]
    clause_index: int


def _place(text: str, start: int) -> _Place:
    for sentence in sentence_spans(text):
        if sentence[0] <= start < sentence[1]:
            clauses = tuple(clause_spans(text, sentence))
            for index, clause in enumerate(clauses):
                if clause[0] <= start < clause[1] or (index + 1 < len(clauses) and start < clauses[index + 1][0]):
                    return _Place(sentence, clause, clauses, index)
            return _Place(sentence, sentence, (sentence,), 0)
    whole = (0, len(text))
    return _Place(whole, whole, (whole,), 0)


_STOP_BEFORE = re.compile(
    r"(\b(except( for)?|other than|apart from|aside from)|(^|[\s,])not)\s+((the|my|that|those|any)\s+)?$", re.I
)
_INSTEAD_BEFORE = re.compile(r"\binstead of\s+((the|my|that|those)\s+)?$", re.I)
_NOT_EVERY_DAY = re.compile(
    r"\b(not (every ?day|daily|regularly|every time)|"
    r"(don'?t|do not) take (it|them|that|those) (every ?day|daily|regularly))\b",
    re.I,
)
_STOPPED = re.compile(
    r"\b(stopped|stop(ping)? (taking|using|it|them|that)|no longer|"
    r"not (taking|on|using) (it|them|that|those|the|my|any)|"
    r"(don'?t|do not|didn'?t|did not|never) (take|use|took|used)|quit|ran out|run out|gave up|given up|"
    r"discontinued|came off|come off|went off|(i'?m|i am) off|haven'?t (been )?(taken|taking|had|used)|"
    r"not anymore|none of|used to (take|be on|use)|finished (it|them|the|my|that)|completed (it|the|my))\b",
    re.I,
)
_DIFFERENTLY = re.compile(
    r"(?<!\bthe )\bonly\b|\bhalf\b|\bsometimes\b|\boccasionally\b|\bevery other\b|\bskip(s|ped|ping)?\b|"
    r"\bless often\b|\bmore often\b|\bextra (dose|pill|tablet|one|puff)s?\b|\bdouble (dose|up|the)\b|"
    r"\bwhen i remember\b|"
    r"\bonce in a while\b|\bon and off\b|\boff and on\b|\bnow and then\b|\bcut (it|them|the \w+) in half\b|"
    r"\binstead\b|\blower dose\b|\bhigher dose\b|\bhalf (a|the) dose\b",
    re.I,
)
_UNSURE = re.compile(
    r"\b(not sure|unsure|i think|maybe|might be|can'?t remember|don'?t remember|don'?t know|not certain|i guess)\b",
    re.I,
)
_FREQUENCIES: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"\b(four|4) times\b|\bevery 6 hours\b|\bqid\b", re.I), 4.0),
    (re.compile(r"\b(three|3) times\b|\bevery 8 hours\b|\btid\b", re.I), 3.0),
    (re.compile(r"\btwice\b|\b(two|2) times\b|\bevery 12 hours\b|\bbid\b", re.I), 2.0),
    (re.compile(r"\bonce a week\b|\bweekly\b|\bonce every week\b", re.I), 1 / 7),
    (re.compile(r"\bonce\b|\bone time\b|\bevery ?day\b|\bdaily\b|\bevery (morning|night|evening)\b", re.I), 1.0),
)


def _per_day(text: str | None) -> float | None:
    if not text:
        return None
    for pattern, per_day in _FREQUENCIES:
        if pattern.search(text):
            return per_day
    return None


_CONNECTOR = re.compile(r",\s*(?:and|or|plus|&)?\s*|\s+(?:and|or|plus|&)\s+", re.I)
_LIST_FILLER = re.compile(r"^\W*((the|my|a|an|some|also|too|then)\s+)*\W*$", re.I)


def _cue_status(text: str, dosage: str | None) -> ClaimStatus | None:
    """The status a piece of text gives, if it carries a cue."""
    if _NOT_EVERY_DAY.search(text):
        return "taking_differently"
    if _STOPPED.search(text):
        return "stopped"
    if _DIFFERENTLY.search(text):
        return "taking_differently"
    reported, recorded = _per_day(text), _per_day(dosage)
    if reported is not None and recorded is not None and abs(reported - recorded) > 1e-6:
        return "taking_differently"
    if _UNSURE.search(text):
        return "unsure"
    return None


def _mention_parts(answer: str, clause: tuple[int, int], hits: Sequence[Hit[Any]]) -> list[tuple[str, str]]:
    """The words each mention of a clause owns, before and after it: from the list connector
    before it (", and") to the one after it."""
    leads: list[str] = []
    trails: list[str] = []
    for index, hit in enumerate(hits):
        if index == 0:
            leads.append(answer[clause[0] : hit.start])
        if index + 1 < len(hits):
            between = answer[hit.end : hits[index + 1].start]
            connector = _CONNECTOR.search(between)
            if connector:
                trails.append(between[: connector.start()])
                leads.append(between[connector.end() :])
            else:
                trails.append(between)
                leads.append("")
        else:
            trails.append(answer[hit.end : clause[1]])
    return list(zip(leads, trails, strict=True))


def _clause_statuses(
    answer: str,
    clause: tuple[int, int],
    hits: Sequence[Hit[Any]],
    next_clause: tuple[int, int] | None,
    dosages: Sequence[str | None],
) -> list[ClaimStatus]:
    """The status each mention of one clause gets from the words around it.

    Each mention owns the words from the list connector before it (", and") to the one after it:
    "I only take the Benadryl at night, and metformin twice a day" gives "only" to Benadryl alone.
    A mention with no cue of its own, joined to the previous one by a bare connector, inherits a
    cue that stood before it ("I stopped the naproxen and the ibuprofen"); the last
    mention may take its cue from the next clause when that names nothing ("The Errin, I stopped it").
    """
    parts = _mention_parts(answer, clause, hits)
    leads = [lead for lead, _ in parts]
    trails = [trail for _, trail in parts]
    statuses: list[ClaimStatus] = []
    from_lead: list[bool] = []
    for index, hit in enumerate(hits):
        before = answer[clause[0] : hit.start]
        lead, trail = leads[index], _INSTEAD_BEFORE.sub("", re.sub(r"\binstead of\b.*$", "", trails[index]))
        if _INSTEAD_BEFORE.search(before):
            statuses.append("taking_differently")
            from_lead.append(True)
            continue
        if _STOP_BEFORE.search(before):
            statuses.append("stopped")
            from_lead.append(True)
            continue
        status = _cue_status(lead, dosages[index])
        came_from_lead = status is not None
        if status is None:
            status = _cue_status(trail, dosages[index])
        coordinated = index > 0 and _LIST_FILLER.match(lead) and _LIST_FILLER.match(trails[index - 1])
        if status is None and coordinated and from_lead[index - 1]:
            status, came_from_lead = statuses[index - 1], True
        if status is None and index == len(hits) - 1 and next_clause is not None:
            status = _cue_status(answer[next_clause[0] : next_clause[1]], dosages[index])
        statuses.append(status or "taking")
        from_lead.append(came_from_lead)
    return statuses


_AFFIRM = re.compile(
    r"^\W*(yes|yeah|yep|yup|ya|correct|right(?! now)|that'?s (right|correct|it|all)|sure|i do|i still do|"
    r"same|all (of )?(them|those|these)|both|exactly)\b",
    re.I,
)
_ALL = re.compile(
    r"\b(all (of )?(them|those|these|three|four|five|of the above)|both( of (them|those))?|everything (on|in) (the|my) "
    r"(list|record|chart)|(nothing|no) change(s|d)?|the same( as before)?|"
    r"still (take|taking|on|have) (them|those|these|all|both|everything)|as (listed|prescribed)|"
    r"that'?s (all )?(right|correct|still true|accurate))\b",
    re.I,
)
_NONE_OF = re.compile(
    r"\b(none of (them|those|these)|not (taking |on )?any of (them|those|these)|stopped (them all|all of (them|those|"
    r"these)|everything|both|them|those)|(don'?t|do not) take (them|those|these|any of (them|those|these))|"
    r"no longer (take|taking|on) (them|those|any))\b",
    re.I,
)
_BARE_NO = re.compile(r"^\W*(no|nope|nah)\W*$", re.I)
_BARE_UNSURE = re.compile(
    r"^\W*(i'?m )?(not sure|unsure|i don'?t know|don'?t know|dunno|no idea|i can'?t remember|can'?t remember)\W*$", re.I
)

BlanketKind = Literal["affirm", "deny", "unsure"]


def blanket_answer(answer: str, names_something: Callable[[str], bool] | None = None) -> tuple[BlanketKind, str] | None:
    """A blanket answer to a question that listed things: 'yes, all of those' / 'none of them' /
    'not sure', with the words it rests on (an exact substring of the answer).

    A leading "yes" counts only when its sentence names nothing itself (`names_something`): "Yes,
    I take the Allegra" speaks for the Allegra, not for everything the question listed.
    """
    spans = sentence_spans(answer)
    if not spans:
        return None

    def clause_of(span: tuple[int, int], position: int) -> str:
        """The sentence up to the end of the clause at `position` ("Yes, I still take all of those")."""
        for clause in clause_spans(answer, span):
            if clause[0] <= position < clause[1]:
                return answer[span[0] : clause[1]]
        return answer[span[0] : span[1]]

    for span in spans:
        match = _NONE_OF.search(answer, span[0], span[1])
        if match:
            return "deny", clause_of(span, match.start())
    first = answer[spans[0][0] : spans[0][1]]
    if _BARE_UNSURE.match(answer) or _BARE_NO.match(answer):
        return "unsure", first
    for span in spans:
        match = _ALL.search(answer, span[0], span[1])
        if match:
            return "affirm", clause_of(span, match.start())
    if _AFFIRM.match(first) and not (names_something and names_something(first)):
        return "affirm", clause_of(spans[0], spans[0][0])
    return None


# Allergy cues.
_ALLERGY_CUE = re.compile(
    r"\b(allerg\w*|reaction|react\w*|hives|rash|swell\w*|swollen|anaphyla\w*|gives me|makes me|break(s)? out|"
    r"broke out|can'?t (take|eat|have|tolerate)|intoleran\w*|sensitive to)\b",
    re.I,
)
# A medicine named as an allergy: "allergic to penicillin (and amoxicillin)", "penicillin gives me
# hives", "sulfa allergy"; not "Claritin when my allergies act up" or "Tylenol gives me relief".
_ALLERGY_BEFORE = re.compile(
    r"\b((allergic|allergy|allergies|reactions?|sensitive|sensitivity|intolerant|intolerance) to|"
    r"can'?t (take|tolerate)|couldn'?t (take|tolerate)|react(s|ed)? badly to)\b",
    re.I,
)
_ALLERGY_AFTER = re.compile(
    r"^\W*(allergy|allergies|intolerance|reaction)\b|"
    r"^\W*(\w+\W+){0,2}(gives?|gave|makes?|made|causes?|caused|brings? out|brought out) (me|him|her|them)\b"
    r".*\b(hives|rash|swell\w*|swollen|itch\w*|breath\w*|anaphyla\w*|throat|reaction|break out|sick|vomit\w*|"
    r"throw up|nause\w*)",
    re.I,
)
_TAKING_BEFORE = re.compile(r"\b(take|takes|taking|took|use|uses|using|on|carry|carries|have|got)\b", re.I)


def _is_drug_allergy(answer: str, hit: Hit[Any], clause: tuple[int, int], allergy_turn: bool) -> bool:
    """Whether a medicine named in `clause` is named as an allergy (in an answer to the allergy
    question, any medicine not named as taken is)."""
    before, after = answer[clause[0] : hit.start], answer[hit.end : clause[1]]
    if _ALLERGY_BEFORE.search(before) or _ALLERGY_AFTER.search(after):
        return True
    return allergy_turn and not _TAKING_BEFORE.search(before)


_ALLERGY_NEGATION = re.compile(
    r"\b(not allergic|no longer|outgr[eo]w\w*|grew out|not (a|an) (problem|issue)|no (problem|issue|reaction)s?|"
    r"fine with|(don'?t|do not|never) (have|had|get|got) (an? |any )?(allerg\w*|problem|issue|reaction)|"
    r"never (been )?allergic|not really|no allerg\w*|(isn'?t|is not|wasn'?t) (an |a )?(real )?allergy|"
    r"tolerate[sd]? (it|them) (fine|ok|okay|now)|can (eat|have|take) (it|them|\w+) (now|fine|again|no problem))\b",
    re.I,
)
_POSITIVE_BEFORE = re.compile(r"\b(besides|other than|except( for)?|apart from|aside from|just|only)\b", re.I)
_DENY_LEADING = re.compile(r"^\W*(no|nope|none|nah|nothing|not that i know( of)?)\b", re.I)
_DENY_EXPLICIT = re.compile(
    r"\b(no (known )?(drug |food |medication |medicine )?allerg\w*|not allergic to anything|(i'?m|i am) not allergic|"
    r"nkda|nka|(don'?t|do not) have any( allerg\w*)?|none that i know of|never had any)\b",
    re.I,
)


def _denies_allergies(sentence: str, question_lists_allergies: bool) -> bool:
    """Whether a sentence (naming no allergen) says the patient has no allergies at all.

    "No others" / "nothing else" is not a denial. After a question that listed the record's
    allergies ("... is that still right, and are there any others?") a bare "No." could answer
    either half, so only an explicit denial ("I'm not allergic to anything") counts there.
    """
    if _NO_OTHERS.search(sentence):
        return False
    if _DENY_EXPLICIT.search(sentence):
        return True
    return bool(_DENY_LEADING.match(sentence)) and not question_lists_allergies


_NO_OTHERS = re.compile(r"\b(other|others|else|new|more|additional|besides|further)\b", re.I)
_REACTIONS = re.compile(
    r"\b(hives|rash(es)?|itch(y|ing|iness)?|swell(ing|s)?|swollen|anaphyla\w*|wheez\w*|sneez\w*|runny nose|"
    r"stuffy nose|congest\w*|watery eyes|itchy eyes|trouble breathing|short(ness)? of breath|can'?t breathe|"
    r"throat (clos\w*|swell\w*|tight\w*)|vomit\w*|throw(ing)? up|nause\w*|diarrh\w*|"
    r"stomach (ache|upset|pain|cramps)|cramp\w*|headaches?|dizz\w*|blisters?|tingl\w*|puffy)\b",
    re.I,
)
_CONDITION_NEGATION = re.compile(
    r"\b(no|not|never (had|been)|(don'?t|do not|doesn'?t|does not) have|(haven'?t|have not|hasn'?t) (had|got|been)|"
    r"no history of|without|denies|deny|no longer have|not (a|an))\s+(\w+\s+){0,2}$",
    re.I,
)
_NEGATION_WORD = re.compile(
    r"\b(no|not|never|don'?t|doesn'?t|haven'?t|hasn'?t|without|deny|denies|outgr[eo]w\w*)\b", re.I
)
_FAMILY = re.compile(
    r"\b(my|his|her|our|their) (mother|mom|mum|father|dad|parents?|brothers?|sisters?|siblings?|grand\w+|aunts?|"
    r"uncles?|cousins?|family|relatives?)\b|\bruns in (the|my) family\b",
    re.I,
)


def _reactions_in(text: str) -> list[str]:
    return list(dict.fromkeys(m.group(0).lower() for m in _REACTIONS.finditer(text)))


# --------------------------------------------------------------------------------------------
# Rules: claims without a model
# --------------------------------------------------------------------------------------------


@dataclass
class _Vocabularies:
    medications: Vocabulary[MedicationTerm]
    allergens: Vocabulary[str]
    conditions: Vocabulary[str]
    record_allergen_groups: dict[str, set[str]] = field(default_factory=dict)
    record_condition_groups: dict[str, set[str]] = field(default_factory=dict)


def _vocabularies(record: PatientRecord | None) -> _Vocabularies:
    medications = medication_vocabulary(record.medications if record else ())
    allergy_extra: list[tuple[str, str]] = []
    allergy_groups: dict[str, set[str]] = {}
    condition_extra: list[tuple[str, str]] = []
    condition_groups_of: dict[str, set[str]] = {}
    if record:
        for allergy in record.allergies:
            name = allergen_name(allergy.substance)
            groups = _entry_groups(allergy.code, name, allergen_groups()) | _entry_groups(
                allergy.code, allergy.substance, allergen_groups()
            )
            if not groups:
                groups = {f"record:{name}"}
                allergy_extra.append((name, f"record:{name}"))
            allergy_groups[allergy.ref] = groups
        for condition in record.conditions:
            name = condition_name(condition.name)
            groups = _entry_groups(condition.code, name, condition_groups()) | _entry_groups(
                condition.code, condition.name, condition_groups()
            )
            if not groups:
                groups = {f"record:{name}"}
                condition_extra.append((name, f"record:{name}"))
            condition_groups_of[condition.ref] = groups
    return _Vocabularies(
        medications=medications,
        allergens=_extended(_allergen_vocabulary(), allergy_extra),
        conditions=_extended(_condition_vocabulary(), condition_extra),
        record_allergen_groups=allergy_groups,
        record_condition_groups=condition_groups_of,
    )


def _dosage_for(record: PatientRecord | None, ingredients: frozenset[str]) -> str | None:
    if record is None:
        return None
    for medication in record.active_medications:
        if same_medication(ingredients, parse_medication_name(medication.name).ingredients):
            return medication.dosage
    return None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _hit_ingredients(hit: Hit[MedicationTerm]) -> frozenset[str]:
    return frozenset().union(*(term.ingredients for term in hit.values))


def _medication_hits(answer: str, vocabularies: _Vocabularies) -> list[Hit[MedicationTerm]]:
    return find_terms(answer, vocabularies.medications)


def _medication_claims(turn: Turn, record: PatientRecord | None, vocabularies: _Vocabularies) -> list[MedicationClaim]:
    answer = turn.answer
    allergy_turn = turn.element == IntakeElement.ALLERGIES
    kept: list[Hit[MedicationTerm]] = []
    for hit in _medication_hits(answer, vocabularies):
        place = _place(answer, hit.start)
        # "I'm allergic to penicillin" names a drug but is not about taking it; an EpiPen
        # mentioned with allergies is still a medicine the patient carries.
        epinephrine = any(t.ingredients == {"epinephrine"} for t in hit.values)
        allergy = _is_drug_allergy(answer, hit, place.clause, allergy_turn and not epinephrine)
        if not allergy:
            kept.append(hit)
    by_clause: dict[tuple[int, int], list[Hit[MedicationTerm]]] = {}
    places: dict[tuple[int, int], _Place] = {}
    for hit in kept:
        place = _place(answer, hit.start)
        by_clause.setdefault(place.clause, []).append(hit)
        places[place.clause] = place
    mentioned = set(by_clause)
    claims = []
    for clause, hits in by_clause.items():
        place = places[clause]
        following = place.clause_index + 1
        next_clause = place.clauses[following] if following < len(place.clauses) else None
        if next_clause in mentioned:
            next_clause = None
        dosages = [_dosage_for(record, _hit_ingredients(h)) for h in hits]
        statuses = _clause_statuses(answer, clause, hits, next_clause, dosages)
        for hit, status in zip(hits, statuses, strict=True):
            claims.append(
                MedicationClaim(
                    name=_clip(hit.text, 40),
                    status=status,
                    detail=_clip(answer[clause[0] : clause[1]], 60) if status != "taking" else "",
                    turn_id=turn.id,
                )
            )
    return claims


def _allergy_claims(turn: Turn, vocabularies: _Vocabularies) -> tuple[list[AllergyClaim], bool]:
    """Allergy claims of one turn, and whether it denies allergies altogether."""
    answer = turn.answer
    allergy_turn = turn.element == IntakeElement.ALLERGIES
    allergen_hits = find_terms(answer, vocabularies.allergens)
    drug_hits: list[Hit[MedicationTerm]] = []
    for hit in find_terms(answer, vocabularies.medications):
        if any(a.start <= hit.start < a.end for a in allergen_hits):
            continue
        epinephrine = any(t.ingredients == {"epinephrine"} for t in hit.values)
        if _is_drug_allergy(answer, hit, _place(answer, hit.start).clause, allergy_turn and not epinephrine):
            drug_hits.append(hit)
    every: list[Hit[Any]] = [*allergen_hits, *drug_hits]
    listed = bool(find_terms(turn.question, vocabularies.allergens, fuzzy=False))
    claims: list[AllergyClaim] = []
    denies = False
    for sentence_span in sentence_spans(answer):
        sentence = answer[sentence_span[0] : sentence_span[1]]
        if not (allergy_turn or _ALLERGY_CUE.search(sentence)):
            continue
        mentions: list[Hit[Any]] = sorted(
            (h for h in every if sentence_span[0] <= h.start < sentence_span[1]),
            key=lambda h: h.start,
        )
        if not mentions:
            if allergy_turn and _denies_allergies(sentence, listed):
                denies = True
            continue
        for hit in mentions:
            place = _place(answer, hit.start)
            clause = answer[place.clause[0] : place.clause[1]]
            in_clause = [h for h in mentions if place.clause[0] <= h.start < place.clause[1]]
            lead, trail = _mention_parts(answer, place.clause, in_clause)[in_clause.index(hit)]
            lead = _CONNECTOR.split(lead)[-1]  # "I get a rash, and penicillin ...": the rash is not penicillin's
            reactions = _reactions_in(f"{lead} {trail}")
            if not reactions and len(mentions) == 1:
                reactions = _reactions_in(sentence)
            before = answer[place.clause[0] : hit.start]
            denied = bool(_ALLERGY_NEGATION.search(clause)) and not _POSITIVE_BEFORE.search(before)
            claims.append(
                AllergyClaim(
                    substance=_clip(hit.text, 40),
                    reaction=_clip(", ".join(reactions), 40),
                    denied=denied,
                    turn_id=turn.id,
                )
            )
    return claims, denies


def _condition_claims(turn: Turn, vocabularies: _Vocabularies) -> list[ConditionClaim]:
    answer = turn.answer
    claims = []
    for hit in find_terms(answer, vocabularies.conditions):
        place = _place(answer, hit.start)
        sentence = answer[place.sentence[0] : place.sentence[1]]
        before = answer[place.clause[0] : hit.start]
        if _FAMILY.search(sentence) or _UNSURE.search(before):
            continue
        if turn.element != IntakeElement.HISTORY and not _FOR_CONDITION.search(before):
            continue  # outside the history answer only "(metformin) for my sugar" speaks of a condition
        claims.append(
            ConditionClaim(name=_clip(hit.text, 40), denied=bool(_CONDITION_NEGATION.search(before)), turn_id=turn.id)
        )
    return claims


_FOR_CONDITION = re.compile(r"\bfor (my|the|his|her|their|our)\s+(\w+\s+)?$", re.I)
_CLAIM_ELEMENTS = (IntakeElement.MEDICATIONS, IntakeElement.ALLERGIES, IntakeElement.HISTORY)


def extract_claims_by_rules(record: PatientRecord | None, turns: Sequence[Turn]) -> PatientClaims:
    """The claims a patient's answers make, read by rules (no model).

    Medications: record ingredients and brands, and every brand, ingredient, over-the-counter
    medicine and supplement the name tables know, in any answer (typos tolerated), with a status
    from the clause around the mention. Allergies: allergen and drug names in the answers to the
    allergy question, and in any sentence that speaks of an allergy or reaction elsewhere; denials.
    Conditions: condition synonyms in the answer to the history question, and elsewhere only as
    "for my ..." ("metformin for my sugar"); not in sentences about relatives. Lists are cut at
    the schema's limits.
    """
    vocabularies = _vocabularies(record)
    medications: list[MedicationClaim] = []
    allergies: list[AllergyClaim] = []
    conditions: list[ConditionClaim] = []
    denies = False
    for turn in turns:
        if not turn.answer.strip():
            continue
        medications += _medication_claims(turn, record, vocabularies)
        found, denied_all = _allergy_claims(turn, vocabularies)
        allergies += found
        denies = denies or denied_all
        conditions += _condition_claims(turn, vocabularies)
    return PatientClaims(
        medications=medications[:MAX_MEDICATION_CLAIMS],
        allergies=allergies[:MAX_ALLERGY_CLAIMS],
        denies_allergies=denies,
        conditions=conditions[:MAX_CONDITION_CLAIMS],
    )


# --------------------------------------------------------------------------------------------
# The model: reads free text into claims
# --------------------------------------------------------------------------------------------

CLAIMS_SYSTEM = (
    "You read a patient's answers from a pre-visit intake and list what they say about their medicines, "
    "allergies and health conditions. Use only the patient's own answers: never add anything they did not "
    "say, never diagnose, never guess. For each medicine: the name exactly as the patient wrote it, status "
    "(taking, stopped, taking_differently, unsure), a short detail of how they take it if it differs, and "
    "the id of the turn whose answer names it; copy an RxNorm code only when the medicine is one of the "
    "record medicines listed. For each allergy: the substance as the patient wrote it, the reaction in their "
    "words, denied=true only if they say they are NOT allergic to it, and the turn id. Set denies_allergies "
    "only if the patient says they have no allergies at all. Conditions: only the patient's own, with "
    "denied=true if they say they do not have it. Reply with JSON only: "
    '{"medications": [{"name": "...", "status": "taking", "detail": "", "turn_id": "turn-1", "code": ""}], '
    '"allergies": [{"substance": "...", "reaction": "", "denied": false, "turn_id": "turn-2"}], '
    '"denies_allergies": false, "conditions": [{"name": "...", "denied": false, "turn_id": "turn-3"}]}'
)


def claim_turns(turns: Sequence[Turn], record: PatientRecord | None = None) -> list[Turn]:
    """The turns worth reading for claims: answers to the medication, allergy and history
    questions, and any other answer that names a medicine or speaks of an allergy."""
    vocabulary = medication_vocabulary(record.medications if record else ())
    return [
        t
        for t in turns
        if t.answer.strip()
        and (t.element in _CLAIM_ELEMENTS or _ALLERGY_CUE.search(t.answer) or find_terms(t.answer, vocabulary))
    ]


def claims_request(turns: Sequence[Turn], record: PatientRecord | None = None) -> ChatRequest:
    listed = "\n".join(f"- {m.name} (RxNorm {m.code})" for m in record.active_medications if m.code) if record else ""
    transcript = "\n".join(f"[{t.id}] Q: {t.question}\n[{t.id}] A: {excerpt(t.answer, 600)}" for t in turns)
    return ChatRequest(
        task="reconcile.claims",
        messages=[
            ChatMessage(role="system", content=CLAIMS_SYSTEM),
            ChatMessage(
                role="user",
                content=f"Record medicines:\n{listed or '- none listed'}\n\nAnswers:\n{transcript}\n\n"
                "List the patient's claims.",
            ),
        ],
        max_new_tokens=512,
    )


async def extract_claims(model: ChatModel, turns: Sequence[Turn], record: PatientRecord | None = None) -> PatientClaims:
    """The model's reading of the answers into claims (task ``reconcile.claims``); raises
    `ModelError`. No model call when no answer is about medicines, allergies or history.
    The claims are not trusted: `reconcile` re-checks each against the answer it cites."""
    relevant = claim_turns(turns, record)
    if not relevant:
        return PatientClaims()
    reply = await model.complete(claims_request(relevant, record), PatientClaims)
    return reply.value


async def reconcile_with_model(
    model: ChatModel | None, record: PatientRecord | None, turns: Sequence[Turn]
) -> tuple[Reconciliation, ModelError | None]:
    """Reconciliation from the model's claims and the rules' together, both re-checked; with no
    model, or when the model fails, from the rules' alone (the error is returned for the caller to
    record, and noted in the result)."""
    rules = extract_claims_by_rules(record, turns)
    if model is None:
        return reconcile(record, turns, rules), None
    try:
        claims = await extract_claims(model, turns, record)
    except ModelError as exc:
        result = reconcile(record, turns, rules)
        result.notes.append(f"model claims unavailable ({type(exc).__name__}); reconciled from rules alone")
        return result, exc
    return reconcile(record, turns, [claims, rules]), None


# --------------------------------------------------------------------------------------------
# The re-check and the reconciliation
# --------------------------------------------------------------------------------------------


@dataclass
class _Evidence:
    """A verified claim about one thing, with where in the answer it rests."""

    status: str
    turn_id: str
    words: str
    detail: str = ""
    matched_by: MatchedBy | None = None
    reactions: list[str] = field(default_factory=list)


@dataclass
class _Reported:
    """A thing the patient reports that no active record entry matches."""

    name: str
    identity: Any
    evidence: list[_Evidence] = field(default_factory=list)


def _words_at(answer: str, start: int) -> str:
    place = _place(answer, start)
    return answer[place.clause[0] : place.clause[1]]


def _occurs(name: str, answer: str) -> int | None:
    """Where `name` occurs in `answer` as whole words (one typo tolerated in a long single word)."""
    key = compact(name)
    if not key:
        return None
    vocabulary: Vocabulary[str] = Vocabulary([(name, key)])
    found = find_terms(answer, vocabulary)
    return found[0].start if found else None


def _pick(answer: str, supporting: Sequence[Hit[V]], name: str, denied: bool) -> Hit[V]:
    """The mention a claim rests on: the one written as the claim names it, and for a denial one
    in a sentence that denies something."""

    def rank(hit: Hit[V]) -> tuple[int, int, int]:
        place = _place(answer, hit.start)
        negated = bool(_NEGATION_WORD.search(answer[place.sentence[0] : place.sentence[1]]))
        return (0 if hit.key == compact(name) else 1, 0 if negated == denied else 1, hit.start)

    return min(supporting, key=rank)


_MEDICATION_PRECEDENCE = {"stopped": 0, "taking_differently": 1, "taking": 2, "unsure": 3}
_CLAIM_STATUS: dict[str, ClaimStatus] = {
    "taking": "taking",
    "stopped": "stopped",
    "taking_differently": "taking_differently",
    "unsure": "unsure",
}
_LINE_STATUS: dict[str, MedicationStatus] = {
    "taking": "confirmed",
    "stopped": "stopped",
    "taking_differently": "taking_differently",
    "unsure": "unsure",
}


def _best(evidence: list[_Evidence], precedence: dict[str, int]) -> _Evidence:
    return min(evidence, key=lambda e: precedence.get(e.status, 99))


class _Reconciler:
    def __init__(self, record: PatientRecord | None, turns: Sequence[Turn]) -> None:
        self.record = record
        self.turns = {t.id: t for t in turns}
        self.turn_list = list(turns)
        self.vocabularies = _vocabularies(record)
        self.rejected: list[str] = []
        self.notes: list[str] = []
        medications = record.medications if record else []
        self.medication_ingredients = {m.ref: parse_medication_name(m.name).ingredients for m in medications}
        self.active_medications = record.active_medications if record else []
        self.medication_evidence: dict[str, list[_Evidence]] = {m.ref: [] for m in self.active_medications}
        self.reported_medications: dict[frozenset[str], _Reported] = {}
        self.active_allergies = record.active_allergies if record else []
        self.allergy_evidence: dict[str, list[_Evidence]] = {a.ref: [] for a in self.active_allergies}
        self.reported_allergies: dict[frozenset[str], _Reported] = {}
        self.active_conditions = record.active_conditions if record else []
        self.condition_evidence: dict[str, list[_Evidence]] = {c.ref: [] for c in self.active_conditions}
        self.reported_conditions: dict[frozenset[str], _Reported] = {}
        self.denies_allergies: _Evidence | None = None

    # ---- medications --------------------------------------------------------------------

    def _names_medication(self, text: str) -> bool:
        return bool(find_terms(text, self.vocabularies.medications))

    def _names_allergen(self, text: str) -> bool:
        return bool(self._allergy_mentions(text))

    def _listed_medications(self, turn: Turn) -> list[RecordMedication]:
        hits = find_terms(turn.question, self.vocabularies.medications, fuzzy=False)
        named = [_hit_ingredients(h) for h in hits]
        return [
            m
            for m in self.active_medications
            if any(same_medication(n, self.medication_ingredients[m.ref]) for n in named)
        ]

    def _turn_for(self, kind: str, label: str, turn_id: str) -> Turn | None:
        turn = self.turns.get(turn_id)
        if turn is None:
            self.rejected.append(f"{kind} {label!r}: cites {turn_id!r}, which is not in the transcript")
        return turn

    def medication_claim(self, claim: MedicationClaim) -> None:
        turn = self._turn_for("medication", claim.name, claim.turn_id)
        if turn is None:
            return
        answer = turn.answer
        claimed = ingredients_of(claim.name, self.vocabularies.medications)
        hits = find_terms(answer, self.vocabularies.medications)
        supporting = [h for h in hits if _hit_ingredients(h) & claimed or h.key == compact(claim.name)]
        identity: frozenset[str]
        drug_class: str | None = None
        if supporting:
            hit = _pick(answer, supporting, claim.name, claim.status == "stopped")
            identity, start, said = _hit_ingredients(hit), hit.start, hit.text
            drug_class = next((t.label for t in hit.values if t.kind == "class"), None)
        else:
            position = _occurs(claim.name, answer)
            if position is None:
                blanket = blanket_answer(answer, self._names_medication)
                listed = self._listed_medications(turn) if blanket else []
                if any(same_medication(claimed, self.medication_ingredients[m.ref]) for m in listed):
                    return  # a blanket answer about a listed medicine: read from the question below
                self.rejected.append(f"medication {claim.name!r} ({turn.id}): the patient's answer does not name it")
                return
            identity, start, said = claimed or frozenset({claim.name.lower()}), position, claim.name
        evidence = _Evidence(
            status=claim.status, turn_id=turn.id, words=_words_at(answer, start), detail=claim.detail.strip()
        )
        targets: list[RecordMedication] = []
        if claim.code:
            by_code = [m for m in self.active_medications if m.code == claim.code]
            agreeing = [m for m in by_code if self.medication_ingredients[m.ref] & identity]
            if agreeing:
                targets, evidence.matched_by = agreeing, "code"
            elif by_code or any(m.code == claim.code for m in (self.record.medications if self.record else [])):
                self.notes.append(
                    f"medication {claim.name!r} ({turn.id}): RxNorm {claim.code} names a different record "
                    "medicine; matched by name instead"
                )
            else:
                self.notes.append(f"medication {claim.name!r} ({turn.id}): RxNorm {claim.code} is not in the record")
        if not targets and drug_class is not None:
            # "my water pill": every active record medicine of the class; the patient did not name it
            targets = [m for m in self.active_medications if self.medication_ingredients[m.ref] & identity]
            evidence.matched_by = "drug_class" if targets else None
            identity = frozenset({f"class:{drug_class}"})
        elif not targets:
            exact = [m for m in self.active_medications if self.medication_ingredients[m.ref] == identity]
            targets = exact or [
                m for m in self.active_medications if same_medication(identity, self.medication_ingredients[m.ref])
            ]
            evidence.matched_by = "ingredients" if targets else None
        if targets:
            for medication in targets:
                self.medication_evidence[medication.ref].append(evidence)
        else:
            reported = self.reported_medications.setdefault(identity, _Reported(name=said, identity=identity))
            reported.evidence.append(evidence)

    def medication_blankets(self) -> None:
        for turn in self.turn_list:
            if turn.element != IntakeElement.MEDICATIONS or not turn.answer.strip():
                continue
            listed = self._listed_medications(turn)
            blanket = blanket_answer(turn.answer, self._names_medication) if listed else None
            if blanket is None:
                continue
            kind, words = blanket
            status = {"affirm": "taking", "deny": "stopped", "unsure": "unsure"}[kind]
            for medication in listed:
                if any(e.turn_id == turn.id for e in self.medication_evidence[medication.ref]):
                    continue  # named in the answer itself: that reading stands
                self.medication_evidence[medication.ref].append(
                    _Evidence(status=status, turn_id=turn.id, words=words, matched_by="question_listing")
                )

    def medication_lines(self) -> list[MedicationLine]:
        lines = []
        inactive = [m for m in (self.record.medications if self.record else []) if m not in self.active_medications]
        for medication in self.active_medications:
            ingredients = self.medication_ingredients[medication.ref]
            evidence = self.medication_evidence[medication.ref]
            line = MedicationLine(
                record_ref=medication.ref,
                name=medication.name,
                ingredients=sorted(ingredients),
                status="not_discussed",
                otc_or_supplement=is_otc(ingredients),
            )
            if evidence:
                best = _best(evidence, _MEDICATION_PRECEDENCE)
                line.status = _LINE_STATUS[best.status]
                line.reported_status = _CLAIM_STATUS[best.status]
                line.detail = best.detail or None
                line.patient_words = best.words
                line.turn_ids = list(dict.fromkeys(e.turn_id for e in evidence))
                line.matched_by = best.matched_by
            lines.append(line)
        for reported in self.reported_medications.values():
            best = _best(reported.evidence, _MEDICATION_PRECEDENCE)
            identity: frozenset[str] = reported.identity
            if any(i.startswith("class:") for i in identity):
                identity = frozenset()  # "my water pill" that matches nothing in the record: unknown drug
            lines.append(
                MedicationLine(
                    record_ref=None,
                    name=reported.name,
                    ingredients=sorted(identity),
                    status="patient_reported_only",
                    reported_status=_CLAIM_STATUS[best.status],
                    detail=best.detail or None,
                    patient_words=best.words,
                    turn_ids=list(dict.fromkeys(e.turn_id for e in reported.evidence)),
                    otc_or_supplement=is_otc(identity),
                    inactive_record_refs=[
                        m.ref for m in inactive if same_medication(identity, self.medication_ingredients[m.ref])
                    ],
                )
            )
        return lines

    # ---- allergies ----------------------------------------------------------------------

    def _allergen_identity(self, hits: Sequence[Hit[Any]]) -> frozenset[str]:
        """Group names (and 'drug:<ingredient>' keys) a set of mentions stands for."""
        names: set[str] = set()
        for hit in hits:
            for value in hit.values:
                if isinstance(value, MedicationTerm):
                    names |= {f"drug:{i}" for i in value.ingredients}
                else:
                    names.add(str(value))
        return frozenset(names)

    def _record_allergy_identity(self, allergy: RecordAllergy) -> frozenset[str]:
        groups = set(self.vocabularies.record_allergen_groups.get(allergy.ref, set()))
        found = find_terms(allergen_name(allergy.substance), self.vocabularies.medications, fuzzy=False)
        groups |= {f"drug:{i}" for h in found for t in h.values for i in t.ingredients}
        return frozenset(groups)

    def _allergy_mentions(self, text: str) -> list[Hit[Any]]:
        allergen_hits: list[Hit[Any]] = list(find_terms(text, self.vocabularies.allergens))
        drug_hits = [
            h
            for h in find_terms(text, self.vocabularies.medications)
            if not any(a.start <= h.start < a.end for a in allergen_hits)
        ]
        return sorted([*allergen_hits, *drug_hits], key=lambda h: h.start)

    def allergy_claim(self, claim: AllergyClaim) -> None:
        turn = self._turn_for("allergy", claim.substance, claim.turn_id)
        if turn is None:
            return
        answer = turn.answer
        claimed = self._allergen_identity(self._allergy_mentions(claim.substance))
        mentions = self._allergy_mentions(answer)
        supporting = [h for h in mentions if self._allergen_identity([h]) & claimed]
        if supporting:
            hit = _pick(answer, supporting, claim.substance, claim.denied)
            identity, start = self._allergen_identity([hit]), hit.start
        else:
            position = _occurs(claim.substance, answer)
            if position is None:
                if self._blanket_covers_allergy(turn, claimed):
                    return
                self.rejected.append(f"allergy {claim.substance!r} ({turn.id}): the patient's answer does not name it")
                return
            identity, start = claimed or frozenset({f"text:{compact(claim.substance)}"}), position
        place = _place(answer, start)
        sentence = answer[place.sentence[0] : place.sentence[1]]
        if claim.denied and not (_ALLERGY_NEGATION.search(sentence) or _NEGATION_WORD.search(sentence)):
            self.rejected.append(
                f"allergy {claim.substance!r} ({turn.id}): claimed as denied, but the answer carries no denial"
            )
            return
        reactions: list[str] = []
        dropped: list[str] = []
        said = {compact(r)[:4]: r for r in _reactions_in(answer)}
        for part in (r.strip() for r in claim.reaction.split(",")):
            if not part:
                continue
            if _occurs(part, answer) is not None:
                reactions.append(part)
                continue
            # "sneezing" for "sneeze": kept in the patient's own word
            same = [said[compact(r)[:4]] for r in _reactions_in(part) if compact(r)[:4] in said]
            if same:
                reactions += same
            else:
                dropped.append(part)
        if dropped:
            self.notes.append(
                f"allergy {claim.substance!r} ({turn.id}): reaction {', '.join(dropped)!r} is not in the answer; "
                "left out"
            )
        reactions = list(dict.fromkeys(reactions))
        evidence = _Evidence(
            status="denied" if claim.denied else "confirmed",
            turn_id=turn.id,
            words=answer[place.clause[0] : place.clause[1]],
            reactions=reactions,
            matched_by="synonyms",
        )
        targets = [a for a in self.active_allergies if self._record_allergy_identity(a) & identity]
        for allergy in targets:
            self.allergy_evidence[allergy.ref].append(evidence)
        if not targets and not claim.denied:
            name = hit.text if supporting else claim.substance
            reported = self.reported_allergies.setdefault(identity, _Reported(name=name, identity=identity))
            reported.evidence.append(evidence)

    def _listed_allergies(self, turn: Turn) -> list[RecordAllergy]:
        named = self._allergen_identity([h for h in self._allergy_mentions(turn.question) if not h.fuzzy])
        return [a for a in self.active_allergies if self._record_allergy_identity(a) & named]

    def _blanket_covers_allergy(self, turn: Turn, claimed: frozenset[str]) -> bool:
        if turn.element != IntakeElement.ALLERGIES or blanket_answer(turn.answer, self._names_allergen) is None:
            return False
        return any(self._record_allergy_identity(a) & claimed for a in self._listed_allergies(turn))

    def denial(self, claims: PatientClaims) -> None:
        if not claims.denies_allergies:
            return
        for turn in self.turn_list:
            if turn.element != IntakeElement.ALLERGIES and not _ALLERGY_CUE.search(turn.answer):
                continue
            for span in sentence_spans(turn.answer):
                sentence = turn.answer[span[0] : span[1]]
                listed = bool(find_terms(turn.question, self.vocabularies.allergens, fuzzy=False))
                if (
                    _denies_allergies(sentence, listed)
                    and not self._allergy_mentions(sentence)
                    and (turn.element == IntakeElement.ALLERGIES or re.search(r"allerg", sentence, re.I))
                ):
                    if self.denies_allergies is None:
                        self.denies_allergies = _Evidence(status="denied", turn_id=turn.id, words=sentence)
                    return
        self.rejected.append("denies_allergies: no answer says the patient has no allergies")

    def allergy_blankets(self) -> None:
        for turn in self.turn_list:
            if turn.element != IntakeElement.ALLERGIES or not turn.answer.strip():
                continue
            listed = self._listed_allergies(turn)
            blanket = blanket_answer(turn.answer, self._names_allergen) if listed else None
            if blanket is None or blanket[0] != "affirm":
                continue
            for allergy in listed:
                if any(e.turn_id == turn.id for e in self.allergy_evidence[allergy.ref]):
                    continue
                self.allergy_evidence[allergy.ref].append(
                    _Evidence(status="confirmed", turn_id=turn.id, words=blanket[1], matched_by="question_listing")
                )

    def allergy_lines(self) -> list[AllergyLine]:
        lines = []
        inactive = [a for a in (self.record.allergies if self.record else []) if a not in self.active_allergies]
        for allergy in self.active_allergies:
            evidence = self.allergy_evidence[allergy.ref]
            line = AllergyLine(
                record_ref=allergy.ref,
                substance=allergy.substance,
                status="not_discussed",
                record_reactions=list(allergy.reactions),
                criticality=allergy.criticality,
            )
            confirming = [e for e in evidence if e.status == "confirmed"]
            chosen = confirming or evidence  # a confirmation outweighs a denial: the allergy stays listed
            if chosen:
                line.status = "confirmed" if confirming else "denied_by_patient"
                line.patient_words = chosen[0].words
                line.matched_by = chosen[0].matched_by
                line.reactions = list(dict.fromkeys(r for e in chosen for r in e.reactions))
                line.turn_ids = list(dict.fromkeys(e.turn_id for e in evidence))
            elif self.denies_allergies is not None:
                line.status = "denied_by_patient"
                line.patient_words = self.denies_allergies.words
                line.turn_ids = [self.denies_allergies.turn_id]
            lines.append(line)
        for reported in self.reported_allergies.values():
            identity: frozenset[str] = reported.identity
            lines.append(
                AllergyLine(
                    record_ref=None,
                    substance=reported.name,
                    status="patient_reported_only",
                    reactions=list(dict.fromkeys(r for e in reported.evidence for r in e.reactions)),
                    patient_words=reported.evidence[0].words,
                    turn_ids=list(dict.fromkeys(e.turn_id for e in reported.evidence)),
                    inactive_record_refs=[a.ref for a in inactive if self._record_allergy_identity(a) & identity],
                )
            )
        return lines

    # ---- conditions ---------------------------------------------------------------------

    def _condition_identity(self, text: str) -> tuple[frozenset[str], list[Hit[str]]]:
        hits = find_terms(text, self.vocabularies.conditions)
        return frozenset(v for h in hits for v in h.values), hits

    def condition_claim(self, claim: ConditionClaim) -> None:
        turn = self._turn_for("condition", claim.name, claim.turn_id)
        if turn is None:
            return
        answer = turn.answer
        claimed, _ = self._condition_identity(claim.name)
        hits = find_terms(answer, self.vocabularies.conditions)
        supporting = [h for h in hits if set(h.values) & claimed]
        if supporting:
            hit = _pick(answer, supporting, claim.name, claim.denied)
            identity, start = frozenset(hit.values), hit.start
        else:
            position = _occurs(claim.name, answer)
            if position is None:
                self.rejected.append(f"condition {claim.name!r} ({turn.id}): the patient's answer does not name it")
                return
            identity, start = claimed or frozenset({f"text:{compact(claim.name)}"}), position
        place = _place(answer, start)
        sentence = answer[place.sentence[0] : place.sentence[1]]
        if claim.denied and not _NEGATION_WORD.search(sentence):
            self.rejected.append(
                f"condition {claim.name!r} ({turn.id}): claimed as denied, but the answer carries no denial"
            )
            return
        evidence = _Evidence(
            status="denied" if claim.denied else "confirmed",
            turn_id=turn.id,
            words=answer[place.clause[0] : place.clause[1]],
            matched_by="synonyms",
        )
        targets = [
            c for c in self.active_conditions if self.vocabularies.record_condition_groups.get(c.ref, set()) & identity
        ]
        for condition in targets:
            self.condition_evidence[condition.ref].append(evidence)
        if not targets and not claim.denied:
            name = hit.text if supporting else claim.name
            reported = self.reported_conditions.setdefault(identity, _Reported(name=name, identity=identity))
            reported.evidence.append(evidence)

    def condition_lines(self) -> list[ConditionLine]:
        lines = []
        inactive: list[RecordCondition] = [
            c for c in (self.record.conditions if self.record else []) if c not in self.active_conditions
        ]
        for condition in self.active_conditions:
            evidence = self.condition_evidence[condition.ref]
            line = ConditionLine(record_ref=condition.ref, name=condition.name, status="not_discussed")
            confirming = [e for e in evidence if e.status == "confirmed"]
            chosen = confirming or evidence
            if chosen:
                line.status = "confirmed" if confirming else "denied_by_patient"
                line.patient_words = chosen[0].words
                line.matched_by = chosen[0].matched_by
                line.turn_ids = list(dict.fromkeys(e.turn_id for e in evidence))
            lines.append(line)
        for reported in self.reported_conditions.values():
            identity: frozenset[str] = reported.identity
            lines.append(
                ConditionLine(
                    record_ref=None,
                    name=reported.name,
                    status="patient_reported_only",
                    patient_words=reported.evidence[0].words,
                    turn_ids=list(dict.fromkeys(e.turn_id for e in reported.evidence)),
                    inactive_record_refs=[
                        c.ref
                        for c in inactive
                        if self.vocabularies.record_condition_groups.get(c.ref, set()) & identity
                    ],
                )
            )
        return lines


def reconcile(
    record: PatientRecord | None,
    turns: Sequence[Turn],
    claims: PatientClaims | Sequence[PatientClaims] | None = None,
) -> Reconciliation:
    """The record's active medications, allergies and conditions against the patient's answers.

    `claims` are what a model (`extract_claims`) or the rules (`extract_claims_by_rules`) read from
    the answers; several sets may be given (a model's and the rules'), and None means the rules'.
    Each claim is re-checked against the answer it cites before it counts (see the module notes).
    """
    if claims is None:
        claim_sets: list[PatientClaims] = [extract_claims_by_rules(record, turns)]
    elif isinstance(claims, PatientClaims):
        claim_sets = [claims]
    else:
        claim_sets = list(claims)
    reconciler = _Reconciler(record, turns)
    for claim_set in claim_sets:
        for medication in claim_set.medications:
            reconciler.medication_claim(medication)
        for allergy in claim_set.allergies:
            reconciler.allergy_claim(allergy)
        reconciler.denial(claim_set)
        for condition in claim_set.conditions:
            reconciler.condition_claim(condition)
    reconciler.medication_blankets()
    reconciler.allergy_blankets()
    return Reconciliation(
        medications=reconciler.medication_lines(),
        allergies=reconciler.allergy_lines(),
        conditions=reconciler.condition_lines(),
        rejected_claims=list(dict.fromkeys(reconciler.rejected)),
        notes=list(dict.fromkeys(reconciler.notes)),
    )
