"""Scoring a finished intake against its scenario: fact recall, unsupported statements, flags, red flags.

Every metric here is defined, with its matching rule and the measurements behind its threshold, in
docs/metrics.md; this module is the executable form of that page. Scoring is synchronous and
CPU-bound (sentence embeddings): callers that serve an event loop run `score_intake` in a thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from agents.sentence_embeddings import SentenceEmbedder, cosine
from agents.summary_schema import ClinicianSummary, FlagKind, Statement, UncertaintyFlag
from graphs.scenario import ExpectedFlag, Scenario
from graphs.state import IntakeOutput

DEFAULT_FACT_THRESHOLD = 0.75
"""Cosine similarity (all-MiniLM-L6-v2) at which a summary sentence states a hidden fact; see docs/metrics.md."""

_NOT_ASSERTING_KINDS: frozenset[FlagKind] = frozenset(("unsupported", "missing"))
"""Flags whose messages quote what the summary does NOT assert: removed statements, uncovered elements."""

_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_STOPWORDS = frozenset(
    (
        "a an and are as at be been but by did do does for from had has have he her him his i im i'm in is it "
        "its me my of on or she that the their them they this to was were with you your our we us "
        "also about just so very really quite bit some any there these those then than too"
    ).split()
)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        (
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty"
        ).split()
    )
}


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _tokens(text: str) -> list[str]:
    return [_NUMBER_WORDS.get(w, w) for w in _WORD.findall(text.lower().replace("'", ""))]


def content_words(text: str) -> set[str]:
    """Stemmed words that carry the fact (stopwords out; number words written as digits)."""
    return {_stem(w) for w in _tokens(text) if w not in _STOPWORDS}


def numbers(text: str) -> set[str]:
    """The numbers a text states, number words included ('ten days' -> {'10'})."""
    return {w for w in _tokens(text) if _NUMBER.match(w)}


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: for containment checks."""
    return " ".join(_tokens(text))


_PERSON = re.compile(
    r"\b(?:i'm|i've|i'd|i'll|i|me|my|mine|myself|he|she|him|her|his|hers|he's|she's|himself|herself)\b", re.I
)


def neutral_form(text: str) -> str:
    """The text with personal pronouns dropped, as it is embedded for matching.

    A fact is in the patient's voice ("my head") and a summary in the clinician's ("her head");
    all-MiniLM-L6-v2 weighs that difference heavily (0.66 for a verbatim third-person rewrite), so
    both sides lose their pronouns before they are compared (0.81 for the same pair).
    """
    return " ".join(_PERSON.sub(" ", text).split())


def sentences(text: str) -> list[str]:
    """A statement split at sentence (and clause-joining semicolon) boundaries."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


MatchRule = Literal["contained", "content_words", "embedding"]


class FactMatch(BaseModel):
    """How one hidden fact fared against the summary."""

    fact: str
    found: bool
    rule: MatchRule | None = Field(default=None, description="The rule that found it, None when missed.")
    similarity: float | None = Field(
        default=None, description="Best cosine similarity to a summary sentence (None without an embedder)."
    )
    best_text: str | None = Field(default=None, description="The summary text that matched or came closest.")


def summary_units(summary: ClinicianSummary) -> list[str]:
    """The summary text a fact may be found in: every statement kept, and flag messages that assert.

    Statements come from `ClinicianSummary.statements()` (red flags, chief complaint, HPI items and
    narrative, pertinent positives and negatives, review of systems, medications, allergies,
    history, social and family history, image findings, concerns), whatever their source: a fact
    the record states is as present as one the patient said. Flag messages count (a conflict flag
    quotes both answers) except `unsupported` ones, which quote statements the verifier removed, and
    `missing` ones, which name what was not covered.
    """
    texts = [s.text for s in summary.statements()]
    texts += [f.message for f in summary.flags if f.kind not in _NOT_ASSERTING_KINDS]
    return list(dict.fromkeys(t for t in texts if t.strip()))


class FactMatcher:
    """Decides which hidden facts a summary states: exact rules first, then sentence embeddings.

    A fact is found when (1) its normalised text is contained in one summary unit, or (2) one unit
    holds all its content words and numbers, or (3) with an embedder, some summary sentence (or
    whole unit) has cosine similarity >= `threshold` to the fact AND the unit it belongs to states
    every number the fact states (embeddings barely see numbers: "10 mg" and "20 mg" embed alike).
    Without an embedder only rules (1) and (2) apply.
    """

    def __init__(self, embedder: SentenceEmbedder | None, threshold: float = DEFAULT_FACT_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"a similarity threshold must be in (0, 1], got {threshold}")
        self.embedder = embedder
        self.threshold = threshold

    def _exact(self, fact: str, units: Sequence[str]) -> tuple[MatchRule, str] | None:
        wanted = normalise(fact)
        for unit in units:
            if wanted and wanted in normalise(unit):
                return "contained", unit
        words, nums = content_words(fact), numbers(fact)
        if not words:
            return None
        for unit in units:
            if words <= content_words(unit) and nums <= numbers(unit):
                return "content_words", unit
        return None

    def match_texts(self, facts: Sequence[str], units: Sequence[str]) -> list[FactMatch]:
        """One `FactMatch` per fact, in order, against the given summary units."""
        candidates: list[tuple[str, str]] = []  # (text to embed, the unit it comes from)
        for unit in units:
            candidates.append((unit, unit))
            parts = sentences(unit)
            if len(parts) > 1:
                candidates += [(p, unit) for p in parts]
        fact_vectors: list[list[float]] = []
        candidate_vectors: list[list[float]] = []
        if self.embedder is not None and facts and candidates:
            vectors = self.embedder.embed([neutral_form(t) for t in (*facts, *(c for c, _ in candidates))])
            fact_vectors, candidate_vectors = vectors[: len(facts)], vectors[len(facts) :]
        results: list[FactMatch] = []
        for index, fact in enumerate(facts):
            exact = self._exact(fact, units)
            if not fact_vectors:
                results.append(
                    FactMatch(fact=fact, found=exact is not None, rule=exact[0] if exact else None,
                              best_text=exact[1] if exact else None)
                )  # fmt: skip
                continue
            scored = sorted(
                ((cosine(fact_vectors[index], v), c) for v, c in zip(candidate_vectors, candidates, strict=True)),
                key=lambda s: -s[0],
            )
            similarity, (best_sentence, _) = scored[0]
            if exact is not None:
                results.append(
                    FactMatch(fact=fact, found=True, rule=exact[0], similarity=round(similarity, 4), best_text=exact[1])
                )
                continue
            nums = numbers(fact)
            hit = next(((s, c) for s, c in scored if s >= self.threshold and nums <= numbers(c[1])), None)
            if hit is not None:
                results.append(
                    FactMatch(fact=fact, found=True, rule="embedding", similarity=round(hit[0], 4), best_text=hit[1][0])
                )
            else:
                results.append(
                    FactMatch(fact=fact, found=False, similarity=round(similarity, 4), best_text=best_sentence)
                )
        return results

    def match(self, facts: Sequence[str], summary: ClinicianSummary | None) -> list[FactMatch]:
        """One `FactMatch` per fact against `summary` (every fact missed when there is no summary)."""
        return self.match_texts(facts, summary_units(summary) if summary is not None else [])


class RunStats(BaseModel):
    """What a suite runner measured while the intake ran (the metrics do not measure time themselves)."""

    wall_s: float
    turn_latencies_s: list[float] = Field(
        default_factory=list, description="Per patient turn: question asked -> next question ready."
    )
    prompt_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0


class IntakeScore(BaseModel):
    """One intake's scores; every metric is defined in docs/metrics.md."""

    scenario_id: str
    fact_recall: float | None = Field(description="Found facts / hidden facts; None when there are no facts.")
    facts_total: int
    facts_found: int
    missed_facts: list[str] = Field(description="The hidden facts' texts not found in the summary.")
    unsupported_rate: float | None = Field(description="Unsupported / all distinct statements; None if none.")
    statements_total: int
    unsupported_statements: int
    flag_precision: float | None
    flag_recall: float | None
    flags_expected: int
    flags_raised: int = Field(description="Raised flags the scenario judges: matched, or of a kind it forbids.")
    flags_matched: int
    red_flag_expected: bool
    red_flag_raised: bool
    questions_asked: int
    stop_reason: str | None
    # Beyond the contract: the detail a reader needs to see why a score is what it is.
    fact_matches: list[FactMatch] = Field(default_factory=list)
    flags_total: int = Field(default=0, description="Every flag in the summary, judged or not.")
    missed_flags: list[str] = Field(default_factory=list, description="Expected flags no raised flag matched.")
    unexpected_flags: list[str] = Field(default_factory=list, description="Raised flags of a forbidden kind.")


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _describe(expected: ExpectedFlag) -> str:
    text: str = expected.kind
    if expected.contains:
        text += f" containing {expected.contains!r}"
    if expected.severity:
        text += f" of severity {expected.severity}"
    if expected.evidence:
        text += f" citing {', '.join(expected.evidence)}"
    return text


def flag_satisfies(flag: UncertaintyFlag, expected: ExpectedFlag) -> bool:
    """Whether a raised flag is the expected one: same kind, and every attribute the expectation gives."""
    if flag.kind != expected.kind:
        return False
    if expected.contains and expected.contains.lower() not in flag.message.lower():
        return False
    if expected.severity and flag.severity != expected.severity:
        return False
    refs = {e.ref for e in flag.evidence}
    return all(ref in refs for ref in expected.evidence)


def _max_matching(expected: list[ExpectedFlag], raised: list[UncertaintyFlag]) -> dict[int, int]:
    """A maximum one-to-one matching, expected index -> raised index (augmenting paths; lists are short)."""
    owner: dict[int, int] = {}

    def assign(e: int, seen: set[int]) -> bool:
        for r, flag in enumerate(raised):
            if r in seen or not flag_satisfies(flag, expected[e]):
                continue
            seen.add(r)
            if r not in owner or assign(owner[r], seen):
                owner[r] = e
                return True
        return False

    for e in range(len(expected)):
        assign(e, set())
    return {e: r for r, e in owner.items()}


def expected_flags(scenario: Scenario) -> tuple[list[ExpectedFlag], set[FlagKind]]:
    """The flags a run must raise and the kinds it must not, the red-flag expectation folded in."""
    wanted = list(scenario.expect.flags)
    forbidden: set[FlagKind] = set(scenario.expect.absent_flags)
    if scenario.expect.red_flag and not any(f.kind == "red_flag" for f in wanted):
        wanted.append(ExpectedFlag(kind="red_flag"))
    if not scenario.expect.red_flag:
        forbidden.add("red_flag")
    return wanted, forbidden


def _distinct(statements: Sequence[Statement]) -> set[tuple[str, tuple[str, ...]]]:
    return {(s.text, tuple(sorted(f"{r.kind}:{r.ref}" for r in s.sources))) for s in statements}


def score_intake(scenario: Scenario, output: IntakeOutput, matcher: FactMatcher) -> IntakeScore:
    """Every metric of one finished intake of `scenario` (blocking: embeddings run on this thread)."""
    summary = output.summary
    facts = [f.text for f in scenario.facts]
    matches = matcher.match(facts, summary)
    found = sum(m.found for m in matches)

    kept = _distinct(summary.statements()) if summary else set()
    removed = _distinct(summary.removed_statements) - kept if summary else set()
    statements_total = len(kept) + len(removed)

    wanted, forbidden = expected_flags(scenario)
    raised = list(summary.flags) if summary else []
    pairs = _max_matching(wanted, raised)
    matched_raised = set(pairs.values())
    unexpected = [f for i, f in enumerate(raised) if i not in matched_raised and f.kind in forbidden]
    judged = len(pairs) + len(unexpected)

    red_flag_raised = bool(output.red_flags) or output.stop_reason == "red_flag"
    return IntakeScore(
        scenario_id=scenario.id,
        fact_recall=_ratio(found, len(facts)),
        facts_total=len(facts),
        facts_found=found,
        missed_facts=[m.fact for m in matches if not m.found],
        unsupported_rate=_ratio(len(removed), statements_total),
        statements_total=statements_total,
        unsupported_statements=len(removed),
        flag_precision=_ratio(len(pairs), judged),
        flag_recall=_ratio(len(pairs), len(wanted)),
        flags_expected=len(wanted),
        flags_raised=judged,
        flags_matched=len(pairs),
        red_flag_expected=scenario.expect.red_flag,
        red_flag_raised=red_flag_raised,
        questions_asked=summary.questions_asked if summary else len(output.turns),
        stop_reason=output.stop_reason,
        fact_matches=matches,
        flags_total=len(raised),
        missed_flags=[_describe(w) for i, w in enumerate(wanted) if i not in pairs],
        unexpected_flags=[f"{f.kind}: {f.message[:160]}" for f in unexpected],
    )
