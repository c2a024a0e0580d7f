"""Medication names: RxNorm displays and patients' words reduced to ingredient sets.

Reconciliation compares medications by what is in them, not by how they are written: the record
says "Fexofenadine hydrochloride 30 MG Oral Tablet", the patient says "Allegra", and both are
``{"fexofenadine"}``. This module does that reduction, by code:

- `parse_medication_name` reads an RxNorm display string ("Acetaminophen 325 MG / HYDROcodone
  Bitartrate 7.5 MG Oral Tablet", "Errin 28 Day Pack", "NDA020800 0.3 ML Epinephrine 1 MG/ML
  Auto-Injector") into its ingredients (lower-case, salts such as hydrochloride taken off) and
  its brand, if it names one.
- `find_terms` finds names from a vocabulary in free text, whole words only, longest match first,
  tolerating a typo in longer names ("Zyrtek", "ibuprofin", "metforman").
- `medication_vocabulary` is the vocabulary for medications: brands, ingredients and their other
  names, over-the-counter medicines and supplements, and what patients call medicines by their use
  ("water pill": a drug class), from ``agents/data/brand_ingredients.yaml``; plus the names in a
  patient's record.

Nothing here calls a model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Generic, Literal, TypeVar

import yaml

from tools.fhir.record import RecordMedication

V = TypeVar("V")

TermKind = Literal["brand", "ingredient", "supplement", "record", "class"]

_SALTS = frozenset(
    {
        "hydrochloride",
        "hcl",
        "dihydrochloride",
        "sodium",
        "disodium",
        "potassium",
        "calcium",
        "magnesium",
        "bitartrate",
        "tartrate",
        "maleate",
        "succinate",
        "hydrobromide",
        "bromide",
        "propionate",
        "dipropionate",
        "sulfate",
        "citrate",
        "besylate",
        "mesylate",
        "fumarate",
        "acetate",
        "phosphate",
        "monohydrate",
        "dihydrate",
        "trihydrate",
        "anhydrous",
        "furoate",
        "xinafoate",
        "valerate",
        "hyclate",
        "tromethamine",
        "chloride",
        "nitrate",
        "lactate",
        "gluconate",
        "carbonate",
        "oxide",
        "hydroxide",
    }
)

# Words of an RxNorm display that are quantities, units or packaging, never part of a name.
_UNIT_WORDS = frozenset(
    {"mg", "ml", "mcg", "hr", "unt", "actuat", "meq", "g", "l", "%", "day", "pack", "mg/ml", "mg/hr", "mg/actuat"}
)
_APPLICATION_NUMBER = re.compile(r"^(NDA|ANDA|BLA)\d+$", re.I)
_NUMBER = re.compile(r"^\d+(\.\d+)?(/\w+)?$")
_BRACKET = re.compile(r"\[([^\]]+)\]")
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*")
_BREAK = re.compile(r"[!?;,:()\n]|\w{4,}\.|\.(?!\s)")

MAX_TERM_WORDS = 5
"""Longest name, in words, that `find_terms` looks for."""

# Common words that sit one typo away from a name in the vocabularies: never read as a typo.
FUZZY_STOPWORDS = frozenset(
    {
        "aspiring",
        "allergic",
        "allergies",
        "allergy",
        "alleged",
        "calling",
        "dancing",
        "address",
        "another",
        "anymore",
        "animals",
        "clarity",
        "clearing",
        "control",
        "morning",
        "evening",
        "nothing",
        "something",
        "anything",
        "everything",
        "breathing",
        "medicine",
        "medicines",
        "vitamin",
        "vitamins",
        "started",
        "stopped",
        "tablets",
        "tablet",
        "pills",
        "inhaler",
        "currently",
        "remember",
        "because",
        "before",
        "better",
        "letter",
        "mother",
        "father",
        "brother",
        "sister",
        "pressure",
        # found by checking the vocabularies against a list of 20,000 common English words
        "ability",
        "ambient",
        "augmented",
        "biotic",
        "collage",
        "concert",
        "concerts",
        "creator",
        "florent",
        "gaelic",
        "heater",
        "lyrical",
        "lyrics",
        "magnetism",
        "metadata",
        "seasonal",
        "seasonally",
        "singular",
    }
)


_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=65536)
def compact(text: str) -> str:
    """The matching key of a name: lower-case letters and digits only ("St. John's-Wort" -> "stjohnswort").

    Memoized: matching asks for the key of every word window of every answer, many times over."""
    if text.isascii():
        return _NOT_ALNUM.sub("", text.lower())
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed.lower() if c.isascii() and c.isalnum())


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (a transposition counts once), or `limit + 1` when above `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[len(b)] if previous[len(b)] <= limit else limit + 1


def typo_allowance(key: str) -> int:
    """Typos a name of this length may carry and still match: none under 6 letters, 1 under 9, else 2."""
    if len(key) >= 9:
        return 2
    if len(key) >= 6:
        return 1
    return 0


@dataclass(frozen=True)
class Hit(Generic[V]):
    """A vocabulary name found in text: where, the words as written, and what it stands for."""

    start: int
    end: int
    text: str
    key: str
    values: tuple[V, ...]
    fuzzy: bool = False


class Vocabulary(Generic[V]):
    """Names (matched by their `compact` key) to what they stand for; a key may stand for several values."""

    def __init__(self, entries: Iterable[tuple[str, V]] = ()) -> None:
        self._values: dict[str, list[V]] = {}
        # Single-word names that may match with typos, by first letter and length: a typo search
        # looks only at names within two letters of the word's length.
        self._by_shape: dict[tuple[str, int], tuple[str, ...]] = {}
        self._typos: dict[str, str | None] = {}  # fuzzy_key's answers so far; reset by add()
        for name, value in entries:
            self.add(name, value)

    def add(self, name: str, value: V) -> None:
        key = compact(name)
        if not key:
            return
        self._typos = {}
        values = self._values.get(key)
        if values is None:
            self._values[key] = [value]
        elif value not in values:
            self._values[key] = [*values, value]  # copy on write: copies share their lists
        if typo_allowance(key) and " " not in name.strip() and "-" not in name:
            shape = (key[0], len(key))
            alike = self._by_shape.get(shape)
            if alike is None:
                self._by_shape[shape] = (key,)
            elif key not in alike:
                self._by_shape[shape] = (*alike, key)

    def copy(self) -> Vocabulary[V]:
        """A vocabulary to extend without touching this one (the shared tables stay as read)."""
        clone: Vocabulary[V] = Vocabulary()
        clone._values = dict(self._values)
        clone._by_shape = dict(self._by_shape)
        return clone

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def get(self, key: str) -> tuple[V, ...]:
        return tuple(self._values.get(key, ()))

    def keys(self) -> list[str]:
        return list(self._values)

    def fuzzy_key(self, word_key: str) -> str | None:
        """The single-word name `word_key` is a typo of, if exactly one is closest."""
        if word_key in FUZZY_STOPWORDS or not typo_allowance(word_key) or word_key.isdigit():
            return None
        if word_key not in self._typos:
            if len(self._typos) >= 4096:  # shared tables serve a long-running service: stay bounded
                self._typos = {}
            self._typos[word_key] = self._closest(word_key)
        return self._typos[word_key]

    def _closest(self, word_key: str) -> str | None:
        best: list[tuple[int, str]] = []
        reach = typo_allowance(word_key)
        candidates = (
            key
            for length in range(len(word_key) - reach, len(word_key) + reach + 1)
            for key in self._by_shape.get((word_key[0], length), ())
        )
        for key in candidates:
            allowed = min(typo_allowance(key), typo_allowance(word_key))
            distance = edit_distance(word_key, key, allowed)
            if distance <= allowed:
                best.append((distance, key))
        if not best:
            return None
        best.sort()
        if len(best) > 1 and best[0][0] == best[1][0]:
            return None  # ambiguous typo: read nothing rather than guess
        return best[0][1]


def find_terms(text: str, vocabulary: Vocabulary[V], *, fuzzy: bool = True) -> list[Hit[V]]:
    """Names of `vocabulary` in `text`, left to right, whole words, the longest name at each place.

    A name matches exactly (spaces, hyphens and punctuation aside: "Epi-Pen" is "epipen") or, for a
    single word of 6 letters or more, with one typo (9 or more: two) and the same first letter.
    """
    tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    hits: list[Hit[V]] = []
    index = 0
    while index < len(tokens):
        found: Hit[V] | None = None
        for width in range(min(MAX_TERM_WORDS, len(tokens) - index), 0, -1):
            start, end = tokens[index][0], tokens[index + width - 1][1]
            span = text[start:end]
            if width > 1 and _BREAK.search(span):
                continue  # a name does not run across punctuation ("St. John's wort" aside)
            key = compact(span)
            if key in vocabulary:
                found = Hit(start, end, span, key, vocabulary.get(key))
                index += width
                break
        if found is None and fuzzy:
            start, end = tokens[index]
            near = vocabulary.fuzzy_key(compact(text[start:end]))
            if near is not None:
                found = Hit(start, end, text[start:end], near, vocabulary.get(near), fuzzy=True)
            index += 1
        elif found is None:
            index += 1
        if found is not None:
            hits.append(found)
    return hits


@dataclass(frozen=True)
class MedicationName:
    """What a medication name stands for."""

    display: str
    ingredients: frozenset[str]
    brand: str | None = None


@dataclass(frozen=True)
class MedicationTerm:
    """One name in the medication vocabulary."""

    label: str
    ingredients: frozenset[str]
    kind: TermKind
    otc: bool


@dataclass(frozen=True)
class DrugClass:
    """What patients call medicines by their use ("water pill"), and the ingredients it covers."""

    name: str
    phrases: tuple[str, ...]
    ingredients: frozenset[str]


@dataclass(frozen=True)
class NameTables:
    """The contents of ``brand_ingredients.yaml``, normalised."""

    brands: dict[str, frozenset[str]]
    brand_labels: dict[str, str]
    synonyms: dict[str, str]
    otc_ingredients: frozenset[str]
    supplements: dict[str, str]
    keep_whole: frozenset[str]
    ingredients: frozenset[str] = field(default_factory=frozenset)
    spelled: tuple[tuple[str, str, TermKind], ...] = ()
    """(name as written in the file, canonical ingredient, kind) for every synonym and supplement name."""
    classes: tuple[DrugClass, ...] = ()


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of strings")
    return [v.strip().lower() for v in value if v.strip()]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping")
    return {str(k): v for k, v in value.items()}


def read_data_file(name: str) -> dict[str, Any]:
    """A YAML file of ``agents/data`` as a mapping."""
    text = resources.files("agents.data").joinpath(name).read_text(encoding="utf-8")
    return _mapping(yaml.safe_load(text), name)


@cache
def name_tables() -> NameTables:
    """The brand, synonym, OTC and supplement tables (read once)."""
    data = read_data_file("brand_ingredients.yaml")
    brands: dict[str, frozenset[str]] = {}
    labels: dict[str, str] = {}
    for brand, ingredients in _mapping(data.get("brands"), "brands").items():
        brands[compact(brand)] = frozenset(_string_list(ingredients, f"brands.{brand}"))
        labels[compact(brand)] = brand
    synonyms: dict[str, str] = {}
    spelled: list[tuple[str, str, TermKind]] = []
    for ingredient, others in _mapping(data.get("ingredient_synonyms") or {}, "ingredient_synonyms").items():
        for other in _string_list(others, f"ingredient_synonyms.{ingredient}"):
            synonyms[compact(other)] = ingredient.lower()
            spelled.append((other, ingredient.lower(), "ingredient"))
    supplements: dict[str, str] = {}
    for canonical, others in _mapping(data.get("supplements") or {}, "supplements").items():
        for other in [canonical.lower(), *_string_list(others, f"supplements.{canonical}")]:
            supplements.setdefault(compact(other), canonical.lower())
            spelled.append((other, canonical.lower(), "supplement"))
    otc = frozenset(_string_list(data.get("otc_ingredients"), "otc_ingredients"))
    keep = frozenset(compact(k) for k in _string_list(data.get("keep_whole"), "keep_whole"))
    all_ingredients = frozenset().union(*brands.values(), otc, synonyms.values())
    classes = []
    for item in data.get("drug_classes") or []:
        entry = _mapping(item, "drug_classes entry")
        name = str(entry.get("name", "")).strip().lower()
        if not name:
            raise ValueError("every drug_classes entry needs a name")
        phrases = tuple(_string_list(entry.get("phrases"), f"drug_classes.{name}.phrases"))
        members = frozenset(_string_list(entry.get("ingredients"), f"drug_classes.{name}.ingredients"))
        classes.append(DrugClass(name=name, phrases=phrases, ingredients=members))
    all_ingredients = all_ingredients.union(*(c.ingredients for c in classes))
    return NameTables(brands, labels, synonyms, otc, supplements, keep, all_ingredients, tuple(spelled), tuple(classes))


def canonical_ingredient(words: str) -> str:
    """'Fexofenadine hydrochloride' -> 'fexofenadine'; 'paracetamol' -> 'acetaminophen'."""
    tables = name_tables()
    text = " ".join(words.lower().split())
    key = compact(text)
    if key in tables.synonyms:
        return tables.synonyms[key]
    if key in tables.supplements:
        return tables.supplements[key]
    if key in tables.keep_whole:
        return text
    kept = [w for w in text.split() if w not in _SALTS]
    name = " ".join(kept) if kept else text
    return tables.synonyms.get(compact(name), name)


def _component_words(component: str) -> list[str]:
    """The name words of one ' / ' part of an RxNorm display: leading quantities dropped, up to the strength."""
    words = component.split()
    while words and (_APPLICATION_NUMBER.match(words[0]) or _NUMBER.match(words[0]) or words[0].lower() in _UNIT_WORDS):
        words.pop(0)
    name: list[str] = []
    for word in words:
        if _NUMBER.match(word) or word.lower() in _UNIT_WORDS:
            break
        name.append(word)
    return name


def parse_medication_name(display: str) -> MedicationName:
    """An RxNorm display (or any medication name) as ingredients and brand.

    "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet" -> {metformin};
    "Yaz 28 Day Pack" -> {drospirenone, ethinyl estradiol}, brand "yaz";
    "Fexofenadine 180 MG Oral Tablet [Allegra]" -> {fexofenadine}, brand "allegra".
    """
    tables = name_tables()
    brand: str | None = None
    bracket = _BRACKET.search(display)
    if bracket and compact(bracket.group(1)) in tables.brands:
        brand = tables.brand_labels[compact(bracket.group(1))]
    text = _BRACKET.sub(" ", display)
    ingredients: set[str] = set()
    for component in re.split(r"\s+/\s+", text):
        words = _component_words(component)
        if not words:
            continue
        joined = " ".join(words)
        key = compact(joined)
        if key in tables.brands:
            brand = brand or tables.brand_labels[key]
            ingredients |= tables.brands[key]
            continue
        head = compact(words[0])
        if len(words) > 1 and head in tables.brands:  # "Liletta Intrauterine System"
            brand = brand or tables.brand_labels[head]
            ingredients |= tables.brands[head]
            continue
        ingredients.add(canonical_ingredient(joined))
    if not ingredients and brand:
        ingredients |= tables.brands[compact(brand)]
    return MedicationName(display=display, ingredients=frozenset(ingredients), brand=brand)


def is_otc(ingredients: Iterable[str]) -> bool:
    """True when every ingredient is sold over the counter or is a supplement."""
    tables = name_tables()
    names = list(ingredients)
    supplements = set(tables.supplements.values())
    return bool(names) and all(i in tables.otc_ingredients or i in supplements for i in names)


def _term(label: str, ingredients: frozenset[str], kind: TermKind) -> MedicationTerm:
    return MedicationTerm(label=label, ingredients=ingredients, kind=kind, otc=is_otc(ingredients))


@cache
def _base_vocabulary() -> tuple[tuple[str, MedicationTerm], ...]:
    tables = name_tables()
    entries: list[tuple[str, MedicationTerm]] = []
    for key, ingredients in tables.brands.items():
        entries.append((tables.brand_labels[key], _term(tables.brand_labels[key], ingredients, "brand")))
    for ingredient in sorted(tables.ingredients):
        entries.append((ingredient, _term(ingredient, frozenset({ingredient}), "ingredient")))
    for name, canonical, kind in tables.spelled:
        entries.append((name, _term(canonical, frozenset({canonical}), kind)))
    for drug_class in tables.classes:
        term = MedicationTerm(label=drug_class.name, ingredients=drug_class.ingredients, kind="class", otc=False)
        entries += [(phrase, term) for phrase in drug_class.phrases]
    return tuple(entries)


def record_aliases(medication: RecordMedication) -> list[str]:
    """Names a record medication may be called by besides its ingredients and brand: the first word
    of its display when that is neither a number nor an ingredient ("NDA020800")."""
    words = medication.name.split()
    if words and not _NUMBER.match(words[0]) and words[0].lower() not in _UNIT_WORDS:
        return [words[0]]
    return []


def medication_vocabulary(medications: Sequence[RecordMedication] = ()) -> Vocabulary[MedicationTerm]:
    """Every medication name the tables know, plus the ingredients, brands and display heads of
    `medications` (a record's), each standing for its ingredient set."""
    vocabulary = _table_vocabulary().copy()
    for medication in medications:
        parsed = parse_medication_name(medication.name)
        if not parsed.ingredients:
            continue
        for ingredient in parsed.ingredients:
            if compact(ingredient) not in vocabulary:
                vocabulary.add(ingredient, _term(ingredient, frozenset({ingredient}), "ingredient"))
        for alias in [*([parsed.brand] if parsed.brand else []), *record_aliases(medication)]:
            if compact(alias) not in vocabulary:
                vocabulary.add(alias, _term(alias.lower(), parsed.ingredients, "record"))
    return vocabulary


@cache
def _table_vocabulary() -> Vocabulary[MedicationTerm]:
    """The tables' names, built once; never extended in place (`medication_vocabulary` copies it)."""
    return Vocabulary(_base_vocabulary())


def ingredients_of(name: str, vocabulary: Vocabulary[MedicationTerm] | None = None) -> frozenset[str]:
    """The ingredients a free-text medication name stands for ("Tylenol PM" -> acetaminophen, ...):
    the names the vocabulary finds in it, else the name read as an RxNorm display."""
    found = find_terms(name, vocabulary or _table_vocabulary())
    if found:
        return frozenset().union(*(t.ingredients for hit in found for t in hit.values))
    return parse_medication_name(name).ingredients


def same_medication(reported: frozenset[str], recorded: frozenset[str]) -> bool:
    """Whether a reported ingredient set names the recorded product: the same set, or a shared
    prescription ingredient ("hydrocodone" names Norco; "Tylenol" does not name Norco)."""
    if not reported or not recorded:
        return False
    if reported == recorded:
        return True
    shared = reported & recorded
    return any(not is_otc([i]) for i in shared)
