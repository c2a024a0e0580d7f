"""Reconciliation by code, checked on the real Synthea patients' medications and allergies.

Expectations are computed from the raw bundle JSON (read here with the json module) and from a
hand-written RxNorm-code -> ingredients table, not from the module under test.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.coverage import IntakeElement
from agents.interviewer import template_question
from agents.medication_names import (
    compact,
    find_terms,
    ingredients_of,
    is_otc,
    medication_vocabulary,
    name_tables,
    parse_medication_name,
    same_medication,
)
from agents.reconciliation import (
    AllergyLine,
    ConditionLine,
    MedicationLine,
    PatientClaims,
    Reconciliation,
    blanket_answer,
    claims_request,
    extract_claims,
    extract_claims_by_rules,
    reconcile,
    reconcile_with_model,
)
from agents.transcript import Turn
from tools.fhir.bundle_source import BundleRecordSource
from tools.fhir.record import PatientRecord
from tools.models.protocol import ModelError
from tools.models.scripted import ScriptedChatModel

REPO_ROOT = Path(__file__).resolve().parent.parent
RECORDS = REPO_ROOT / "fixtures" / "fhir"
SYNTHEA_DIR = RECORDS / "synthea"
BUNDLES = sorted(SYNTHEA_DIR.glob("*.json"))

# RxNorm code -> ingredients, written by hand from the RxNorm names; every medication code in the
# fixture bundles must be here (checked below), so this is an independent oracle for the parser.
INGREDIENTS_BY_RXNORM: dict[str, set[str]] = {
    "1736776": {"oxaliplatin"},
    "895994": {"fluticasone"},
    "1534809": {"ethinyl estradiol", "norelgestromin"},
    "745679": {"albuterol"},
    "860975": {"metformin"},
    "282464": {"acetaminophen"},
    "1043400": {"acetaminophen", "dextromethorphan", "doxylamine"},
    "857005": {"acetaminophen", "hydrocodone"},
    "1049221": {"acetaminophen", "oxycodone"},
    "313782": {"acetaminophen"},
    "562251": {"amoxicillin", "clavulanate"},
    "308182": {"amoxicillin"},
    "748962": {"norethindrone"},
    "309097": {"cefuroxime"},
    "477045": {"chlorpheniramine"},
    "197604": {"digoxin"},
    "831533": {"norethindrone"},
    "997488": {"fexofenadine"},
    "316049": {"hydrochlorothiazide"},
    "316052": {"hydrochlorothiazide"},
    "198405": {"ibuprofen"},
    "310965": {"ibuprofen"},
    "757594": {"norethindrone"},
    "1803932": {"leucovorin"},
    "1605257": {"levonorgestrel"},
    "665078": {"loratadine"},
    "1091392": {"methylphenidate"},
    "1870230": {"epinephrine"},
    "849574": {"naproxen"},
    "978950": {"dienogest", "estradiol"},
    "749762": {"levonorgestrel", "ethinyl estradiol"},
    "751905": {"norgestimate", "ethinyl estradiol"},
    "897718": {"verapamil"},
    "855332": {"warfarin"},
    "748856": {"drospirenone", "ethinyl estradiol"},
    "1014676": {"cetirizine"},
    "1049630": {"diphenhydramine"},
    "312617": {"prednisone"},
}

# ------------------------------------------------------------------------------------------
# Raw data, read independently
# ------------------------------------------------------------------------------------------


@functools.cache
def _bundle(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def bundle_path(first_name: str) -> Path:
    (path,) = [p for p in BUNDLES if p.name.startswith(first_name + "_")]
    return path


def uuid_of(path: Path) -> str:
    """The patient id a caller uses: the UUID at the end of the file name."""
    return path.stem.rsplit("_", 1)[1]


def raw(path: Path, kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in _bundle(path)["entry"] if e["resource"]["resourceType"] == kind]


def coding(resource: dict[str, Any], key: str) -> dict[str, str]:
    first: dict[str, str] = resource[key]["coding"][0]
    return first


def raw_medications(path: Path, status: str | None = None) -> list[dict[str, Any]]:
    return [m for m in raw(path, "MedicationRequest") if status is None or m["status"] == status]


def med_refs(path: Path, rxnorm: str, status: str) -> list[str]:
    return [
        f"MedicationRequest/{m['id']}"
        for m in raw_medications(path, status)
        if coding(m, "medicationCodeableConcept")["code"] == rxnorm
    ]


def allergy_ref(path: Path, snomed: str) -> str:
    (found,) = [a["id"] for a in raw(path, "AllergyIntolerance") if coding(a, "code")["code"] == snomed]
    return f"AllergyIntolerance/{found}"


def condition_ref(path: Path, snomed: str) -> str:
    found = [
        c["id"]
        for c in raw(path, "Condition")
        if coding(c, "code")["code"] == snomed and c["clinicalStatus"]["coding"][0]["code"] == "active"
    ]
    return f"Condition/{found[0]}"


def all_medication_displays() -> list[tuple[str, str, str]]:
    """(RxNorm code, display, status) of every MedicationRequest in the 12 bundles."""
    return sorted(
        {
            (
                coding(m, "medicationCodeableConcept")["code"],
                coding(m, "medicationCodeableConcept")["display"],
                m["status"],
            )
            for path in BUNDLES
            for m in raw_medications(path)
        }
    )


_SOURCE = BundleRecordSource(RECORDS)


async def record_of(first_name: str) -> tuple[PatientRecord, Path]:
    path = bundle_path(first_name)
    return await _SOURCE.fetch_record(uuid_of(path)), path


def turn(index: int, element: IntakeElement, answer: str, question: str = "") -> Turn:
    return Turn(
        id=f"turn-{index}",
        index=index,
        element=element,
        question=question or f"Question about {element.value}?",
        question_source="template",
        answer=answer,
        answer_chars=len(answer),
    )


def med(result: Reconciliation, ref: str) -> MedicationLine:
    (line,) = [m for m in result.medications if m.record_ref == ref]
    return line


def reported(result: Reconciliation, name: str) -> MedicationLine:
    (line,) = [m for m in result.medications if m.record_ref is None and m.name.lower() == name.lower()]
    return line


def allergy(result: Reconciliation, ref: str) -> AllergyLine:
    (line,) = [a for a in result.allergies if a.record_ref == ref]
    return line


def condition(result: Reconciliation, ref: str) -> ConditionLine:
    (line,) = [c for c in result.conditions if c.record_ref == ref]
    return line


def assert_words_are_the_patients(result: Reconciliation, turns: list[Turn]) -> None:
    """Every patient_words is an exact substring of an answer it cites."""
    answers = {t.id: t.answer for t in turns}
    for line in [*result.medications, *result.allergies, *result.conditions]:
        if line.patient_words is not None:
            assert line.turn_ids, line
            assert any(line.patient_words in answers[t] for t in line.turn_ids), line


# ------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------


def test_the_oracle_covers_every_medication_code_in_the_bundles() -> None:
    codes = {code for code, _, _ in all_medication_displays()}
    assert len(BUNDLES) == 12
    assert codes == set(INGREDIENTS_BY_RXNORM)


def test_every_medication_display_in_the_bundles_yields_its_ingredients() -> None:
    displays = all_medication_displays()
    active = [d for d in displays if d[2] == "active"]
    assert len(active) >= 15  # the active medications of all 12 patients, deduplicated
    for code, display, _ in displays:
        parsed = parse_medication_name(display)
        assert parsed.ingredients, display
        assert set(parsed.ingredients) == INGREDIENTS_BY_RXNORM[code], display


@pytest.mark.parametrize(
    ("display", "ingredients", "brand"),
    [
        ("Fexofenadine hydrochloride 30 MG Oral Tablet", {"fexofenadine"}, None),
        ("NDA020800 0.3 ML Epinephrine 1 MG/ML Auto-Injector", {"epinephrine"}, None),
        ("24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", {"metformin"}, None),
        ("Errin 28 Day Pack", {"norethindrone"}, "errin"),
        ("Acetaminophen 325 MG / HYDROcodone Bitartrate 7.5 MG Oral Tablet", {"acetaminophen", "hydrocodone"}, None),
        ("Yaz 28 Day Pack", {"drospirenone", "ethinyl estradiol"}, "yaz"),
        ("diphenhydrAMINE Hydrochloride 25 MG Oral Tablet", {"diphenhydramine"}, None),
        ("Liletta 52 MG Intrauterine System", {"levonorgestrel"}, "liletta"),
        ("Warfarin Sodium 5 MG Oral Tablet", {"warfarin"}, None),
        ("Fexofenadine 180 MG Oral Tablet [Allegra]", {"fexofenadine"}, "allegra"),
        ("Potassium Chloride 20 MEQ Extended Release Oral Tablet", {"potassium chloride"}, None),
        ("Levothyroxine Sodium 0.075 MG Oral Tablet", {"levothyroxine"}, None),
    ],
)
def test_parse_rxnorm_displays(display: str, ingredients: set[str], brand: str | None) -> None:
    parsed = parse_medication_name(display)
    assert set(parsed.ingredients) == ingredients
    assert parsed.brand == brand


def test_every_brand_in_the_bundles_is_in_the_brand_table() -> None:
    # Brand displays in RxNorm start with a capitalised name and have no ingredient strength:
    # "Errin 28 Day Pack", "Liletta 52 MG Intrauterine System".
    brand_display = re.compile(r"^([A-Z][a-z]+) \d+ (Day Pack|MG Intrauterine System)$")
    brands = {
        (m.group(1).lower(), code)
        for code, display, _ in all_medication_displays()
        if (m := brand_display.match(display))
    }
    assert {b for b, _ in brands} == {
        "errin",
        "camila",
        "jolivette",
        "yaz",
        "natazia",
        "seasonique",
        "trinessa",
        "liletta",
    }
    table = yaml.safe_load(resources.files("agents.data").joinpath("brand_ingredients.yaml").read_text("utf-8"))
    for brand, code in brands:
        assert set(table["brands"][brand]) == INGREDIENTS_BY_RXNORM[code], brand


@pytest.mark.parametrize(
    ("brand", "ingredients"),
    [
        ("Tylenol", {"acetaminophen"}),
        ("Advil", {"ibuprofen"}),
        ("Motrin", {"ibuprofen"}),
        ("Aleve", {"naproxen"}),
        ("Zyrtec", {"cetirizine"}),
        ("Claritin", {"loratadine"}),
        ("Allegra", {"fexofenadine"}),
        ("Benadryl", {"diphenhydramine"}),
        ("Coumadin", {"warfarin"}),
        ("Jantoven", {"warfarin"}),
        ("Lipitor", {"atorvastatin"}),
        ("Zestril", {"lisinopril"}),
        ("Prinivil", {"lisinopril"}),
        ("Glucophage", {"metformin"}),
        ("EpiPen", {"epinephrine"}),
        ("Lasix", {"furosemide"}),
        ("Norvasc", {"amlodipine"}),
        ("Synthroid", {"levothyroxine"}),
        ("Prilosec", {"omeprazole"}),
        ("Nexium", {"esomeprazole"}),
        ("Pepcid", {"famotidine"}),
        ("Xarelto", {"rivaroxaban"}),
        ("Eliquis", {"apixaban"}),
        ("Plavix", {"clopidogrel"}),
        ("Ventolin", {"albuterol"}),
        ("ProAir", {"albuterol"}),
        ("Singulair", {"montelukast"}),
        ("Zoloft", {"sertraline"}),
        ("Prozac", {"fluoxetine"}),
        ("Lexapro", {"escitalopram"}),
        ("Wellbutrin", {"bupropion"}),
        ("Norco", {"hydrocodone", "acetaminophen"}),
        ("Vicodin", {"hydrocodone", "acetaminophen"}),
        ("Errin", {"norethindrone"}),
        ("Camila", {"norethindrone"}),
        ("Yaz", {"drospirenone", "ethinyl estradiol"}),
        ("NyQuil", {"acetaminophen", "dextromethorphan", "doxylamine"}),
        ("Epi-Pen", {"epinephrine"}),
        ("paracetamol", {"acetaminophen"}),
    ],
)
def test_brand_and_common_names(brand: str, ingredients: set[str]) -> None:
    assert set(ingredients_of(brand)) == ingredients


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I take Alegra", {"fexofenadine"}),
        ("zyrtek at night", {"cetirizine"}),
        ("ibuprofin for my knee", {"ibuprofen"}),
        ("metforman with breakfast", {"metformin"}),
        ("claratin", {"loratadine"}),
        ("tylenal", {"acetaminophen"}),
        ("hydrochlorathiazide", {"hydrochlorothiazide"}),
        ("lisinipril", {"lisinopril"}),
        ("tumeric and ginko", {"turmeric", "ginkgo"}),
        ("a multi-vitamin and vitamin D3", {"multivitamin", "vitamin d"}),
        ("St. John's wort and fish oil", {"st john's wort", "fish oil"}),
        ("omega-3s and probiotics", {"fish oil", "probiotic"}),
    ],
)
def test_patient_text_tolerates_brands_typos_and_supplements(text: str, expected: set[str]) -> None:
    found = find_terms(text, medication_vocabulary())
    assert set().union(*(t.ingredients for h in found for t in h.values)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I'm allergic to cats and aspiring to eat better; my ability to walk is fine.",
        "Heather drove me here; the lyrics of that song, a concert, a singular feeling.",
        "I have no idea, nothing else really, my mother and father are healthy.",
        "Seasonal sniffles, the heater is broken, what a creator.",
    ],
)
def test_common_words_are_not_read_as_medicines(text: str) -> None:
    assert find_terms(text, medication_vocabulary()) == []


def test_short_names_need_an_exact_match() -> None:
    vocabulary = medication_vocabulary()
    assert find_terms("alive", vocabulary) == []  # Aleve
    assert find_terms("adult", vocabulary) == []  # Advil
    assert [h.key for h in find_terms("Aleve", vocabulary)] == ["aleve"]


def test_otc_and_supplements() -> None:
    for name in ("Tylenol", "Advil", "aspirin", "vitamin D", "fish oil", "multivitamin", "melatonin", "St John's wort"):
        assert is_otc(ingredients_of(name)), name
    for name in ("warfarin", "metformin", "Norco", "Yaz"):
        assert not is_otc(ingredients_of(name)), name
    tables = name_tables()
    for supplement in ("turmeric", "ginkgo", "iron", "calcium", "magnesium", "probiotic"):
        assert supplement in tables.supplements.values()


def test_same_medication_brand_generic_and_combinations() -> None:
    norco = parse_medication_name("Acetaminophen 325 MG / HYDROcodone Bitartrate 7.5 MG Oral Tablet").ingredients
    assert same_medication(ingredients_of("Vicodin"), norco)
    assert same_medication(ingredients_of("hydrocodone"), norco)  # the prescription ingredient names it
    assert not same_medication(ingredients_of("Tylenol"), norco)  # plain acetaminophen is another product
    fexofenadine = parse_medication_name("Fexofenadine hydrochloride 30 MG Oral Tablet").ingredients
    assert same_medication(ingredients_of("Allegra"), fexofenadine)
    assert not same_medication(ingredients_of("Zyrtec"), fexofenadine)


def test_data_files_are_package_data() -> None:
    data = resources.files("agents.data")
    assert data.joinpath("brand_ingredients.yaml").is_file()
    assert data.joinpath("clinical_synonyms.yaml").is_file()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"\*" = \[[^\]]*"\*\.yaml"', pyproject)
    assert (REPO_ROOT / "agents" / "data" / "__init__.py").is_file()


def test_every_brand_maps_to_known_ingredients_and_keys_are_unique() -> None:
    table = yaml.safe_load(resources.files("agents.data").joinpath("brand_ingredients.yaml").read_text("utf-8"))
    keys = [compact(b) for b in table["brands"]]
    assert len(keys) == len(set(keys))
    for brand, ingredients in table["brands"].items():
        assert ingredients and all(i == i.lower() for i in ingredients), brand


# ------------------------------------------------------------------------------------------
# Reconciliation on the Synthea patients (rules: no model)
# ------------------------------------------------------------------------------------------


async def test_bonnie_brand_names_stopped_pill_supplements_and_denied_allergies() -> None:
    record, path = await record_of("Bonnie")
    turns = [
        turn(
            1,
            IntakeElement.MEDICATIONS,
            "I take Allegra most days. I stopped the Errin last month, and I carry my EpiPen. "
            "Also vitamin D and fish oil, and Tylenol for headaches.",
        ),
        turn(2, IntakeElement.ALLERGIES, "No, I don't have any allergies."),
    ]
    result = reconcile(record, turns)

    fexofenadine = med(result, med_refs(path, "997488", "active")[0])
    assert (fexofenadine.status, fexofenadine.matched_by) == ("confirmed", "ingredients")
    assert fexofenadine.patient_words == "I take Allegra most days."
    (errin_ref,) = med_refs(path, "831533", "active")
    errin = med(result, errin_ref)
    assert errin.status == "stopped" and errin.turn_ids == ["turn-1"]
    assert errin.patient_words == "I stopped the Errin last month"
    assert med(result, med_refs(path, "1870230", "active")[0]).status == "confirmed"

    # One line per active record medication, then the patient's own.
    active = [f"MedicationRequest/{m['id']}" for m in raw_medications(path, "active")]
    assert [m.record_ref for m in result.medications if m.record_ref] == active
    for name, ingredient in (("vitamin D", "vitamin d"), ("fish oil", "fish oil"), ("Tylenol", "acetaminophen")):
        line = reported(result, name)
        assert line.status == "patient_reported_only" and line.otc_or_supplement
        assert line.ingredients == [ingredient]
    # The record has acetaminophen, stopped: the patient's Tylenol points at it.
    assert reported(result, "Tylenol").inactive_record_refs == med_refs(path, "313782", "stopped")

    # "No allergies" against three recorded ones: each is denied, none silently dropped.
    assert {a.record_ref for a in result.allergies} == {
        f"AllergyIntolerance/{a['id']}" for a in raw(path, "AllergyIntolerance")
    }
    assert all(a.status == "denied_by_patient" and a.turn_ids == ["turn-2"] for a in result.allergies)
    assert result.rejected_claims == []
    assert_words_are_the_patients(result, turns)


async def test_patria_only_at_night_typos_supplements_and_an_allergy_outgrown() -> None:
    record, path = await record_of("Patria")
    turns = [
        turn(
            1,
            IntakeElement.MEDICATIONS,
            "I only take the Benadryl at night, and metforman twice a day. "
            "I also take a multi-vitamin, tumeric and St. John's wort.",
        ),
        turn(
            2,
            IntakeElement.ALLERGIES,
            "Yes, that's right, but I'm not allergic to fish anymore, I outgrew it. Penicillin gives me hives.",
            question="Your record lists allergies to mould, house dust mite, grass pollen and fish; still right?",
        ),
        turn(3, IntakeElement.HISTORY, "My sugar is borderline. My mother had cancer."),
    ]
    result = reconcile(record, turns)

    benadryl = med(result, med_refs(path, "1049630", "active")[0])
    assert benadryl.status == "taking_differently"
    assert benadryl.detail is not None and "only" in benadryl.detail
    metformin = med(result, med_refs(path, "860975", "active")[0])
    assert metformin.status == "confirmed"  # "twice a day": the record gives no frequency to differ from
    assert [reported(result, n).ingredients for n in ("multi-vitamin", "tumeric", "St. John's wort")] == [
        ["multivitamin"],
        ["turmeric"],
        ["st john's wort"],
    ]

    assert allergy(result, allergy_ref(path, "417532002")).status == "denied_by_patient"  # fish
    for snomed in ("419474003", "232350006", "418689008"):  # mould, dust mite, grass pollen: listed, "yes"
        line = allergy(result, allergy_ref(path, snomed))
        assert (line.status, line.matched_by) == ("confirmed", "question_listing")
    assert allergy(result, allergy_ref(path, "91934008")).status == "not_discussed"  # nut: not in the question
    penicillin = [a for a in result.allergies if a.record_ref is None]
    assert [(a.substance, a.status, a.reactions) for a in penicillin] == [
        ("Penicillin", "patient_reported_only", ["hives"])
    ]
    # Penicillin named as an allergy is not a medicine the patient takes.
    assert not [m for m in result.medications if "penicillin" in m.ingredients]

    assert condition(result, condition_ref(path, "15777000")).status == "confirmed"  # prediabetes
    assert condition(result, condition_ref(path, "44054006")).status == "not_discussed"  # diabetes
    assert not [c for c in result.conditions if c.record_ref is None]  # the mother's cancer is not hers
    assert_words_are_the_patients(result, turns)


async def test_malik_coumadin_stopped_benadryl_aspirin_and_conditions() -> None:
    record, path = await record_of("Malik")
    turns = [
        turn(
            1,
            IntakeElement.MEDICATIONS,
            "I take my Coumadin every evening, the digoxin, and verapamil. I don't take the Benadryl anymore. "
            "I also take a baby aspirin.",
        ),
        turn(2, IntakeElement.HISTORY, "I have afib and I'm overweight. No diabetes."),
    ]
    result = reconcile(record, turns)
    for code in ("855332", "197604", "897718"):  # warfarin (as Coumadin), digoxin, verapamil
        assert med(result, med_refs(path, code, "active")[0]).status == "confirmed"
    benadryl = med(result, med_refs(path, "1049630", "active")[0])
    assert benadryl.status == "stopped" and benadryl.patient_words == "I don't take the Benadryl anymore."
    aspirin = reported(result, "baby aspirin")
    assert aspirin.otc_or_supplement and aspirin.ingredients == ["aspirin"]
    assert condition(result, condition_ref(path, "49436004")).status == "confirmed"  # atrial fibrillation
    assert condition(result, condition_ref(path, "162864005")).status == "confirmed"  # obesity
    assert not [c for c in result.conditions if c.record_ref is None]  # "no diabetes" reports nothing


async def test_kermit_blanket_yes_to_the_real_template_question_and_allergy_words() -> None:
    record, path = await record_of("Kermit")
    question = template_question(IntakeElement.MEDICATIONS, record, None)
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "Yes, I still take all of those.", question=question),
        turn(
            2,
            IntakeElement.ALLERGIES,
            "Peanuts and shellfish, shrimp makes my throat swell. I'm also allergic to latex.",
        ),
    ]
    result = reconcile(record, turns)
    # The template names the epinephrine pen by its RxNorm head ("nda020800"): still confirmed.
    for ref in [f"MedicationRequest/{m['id']}" for m in raw_medications(path, "active")]:
        line = med(result, ref)
        assert (line.status, line.matched_by, line.patient_words) == (
            "confirmed",
            "question_listing",
            "Yes, I still take all of those.",
        )
    assert allergy(result, allergy_ref(path, "91935009")).status == "confirmed"  # peanuts
    shellfish = allergy(result, allergy_ref(path, "300913006"))
    assert shellfish.status == "confirmed" and shellfish.reactions == ["throat swell"]
    assert allergy(result, allergy_ref(path, "91935009")).reactions == []
    assert allergy(result, allergy_ref(path, "424213003")).status == "not_discussed"  # bee venom
    (latex,) = [a for a in result.allergies if a.record_ref is None]
    assert (latex.substance, latex.status) == ("latex", "patient_reported_only")


async def test_blanket_none_of_them_stops_the_listed_medicines() -> None:
    record, path = await record_of("Kermit")
    question = "Your record lists loratadine and hydrochlorothiazide; are you still taking these?"
    result = reconcile(record, [turn(1, IntakeElement.MEDICATIONS, "No, none of them anymore.", question=question)])
    assert med(result, med_refs(path, "665078", "active")[0]).status == "stopped"
    assert med(result, med_refs(path, "316049", "active")[0]).status == "stopped"
    assert med(result, med_refs(path, "1870230", "active")[0]).status == "not_discussed"  # not in the question


async def test_a_yes_that_names_one_medicine_does_not_confirm_the_rest() -> None:
    record, path = await record_of("Kermit")
    question = "Your record lists loratadine and hydrochlorothiazide; are you still taking these?"
    result = reconcile(record, [turn(1, IntakeElement.MEDICATIONS, "Yes, the Claritin.", question=question)])
    assert med(result, med_refs(path, "665078", "active")[0]).status == "confirmed"
    assert med(result, med_refs(path, "316049", "active")[0]).status == "not_discussed"


async def test_no_answer_leaves_every_record_medication_not_discussed() -> None:
    record, path = await record_of("Gabriela")
    result = reconcile(record, [turn(1, IntakeElement.MEDICATIONS, "I walk every day and feel fine.")])
    assert [m.status for m in result.medications] == ["not_discussed"] * len(raw_medications(path, "active"))


async def test_man_drug_class_combination_product_and_family_history() -> None:
    record, path = await record_of("Man")
    turns = [
        turn(
            1,
            IntakeElement.MEDICATIONS,
            "I'm still getting the chemo infusions, and the hydrochlorathiazide for my blood pressure. "
            "I used to take Nyquil but stopped.",
        ),
        turn(2, IntakeElement.HISTORY, "I had my appendix out years ago. My father had colon cancer."),
    ]
    result = reconcile(record, turns)
    for code in ("1803932", "1736776"):  # leucovorin, oxaliplatin: "chemo" names a class, not a drug
        line = med(result, med_refs(path, code, "active")[0])
        assert (line.status, line.matched_by) == ("confirmed", "drug_class")
    hctz = med(result, med_refs(path, "316049", "active")[0])
    assert (hctz.status, hctz.matched_by) == ("confirmed", "ingredients")
    nyquil = reported(result, "Nyquil")
    assert nyquil.reported_status == "stopped"
    assert nyquil.inactive_record_refs == med_refs(path, "1043400", "stopped")  # the three-ingredient solution
    assert condition(result, condition_ref(path, "38341003")).status == "confirmed"  # "for my blood pressure"
    assert condition(result, condition_ref(path, "428251008")).status == "confirmed"  # appendectomy
    assert not [c for c in result.conditions if c.record_ref is None]


async def test_ossie_cats_dogs_pollen_and_an_allergy_denied() -> None:
    record, path = await record_of("Ossie")
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "Zyrtek every morning and the Epi-pen."),
        turn(
            2,
            IntakeElement.ALLERGIES,
            "Cats and dogs, and pollen in the spring. I'm not allergic to peanuts anymore though.",
        ),
    ]
    result = reconcile(record, turns)
    assert med(result, med_refs(path, "1014676", "active")[0]).status == "confirmed"  # cetirizine, misspelt
    assert med(result, med_refs(path, "1870230", "active")[0]).status == "confirmed"
    for snomed in ("232347008", "418689008", "419263009"):  # dander, grass pollen, tree pollen
        assert allergy(result, allergy_ref(path, snomed)).status == "confirmed"
    assert allergy(result, allergy_ref(path, "91935009")).status == "denied_by_patient"
    for snomed in ("300916003", "424213003", "419474003", "232350006"):  # latex, bee, mould, dust mite
        assert allergy(result, allergy_ref(path, snomed)).status == "not_discussed"


async def test_karena_inactive_soya_mold_spelling_and_the_iud() -> None:
    record, path = await record_of("Karena")
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "I have the Liletta IUD and take my water pill every morning."),
        turn(2, IntakeElement.ALLERGIES, "Mold and dust mites. Soy milk gives me a rash."),
    ]
    result = reconcile(record, turns)
    assert med(result, med_refs(path, "1605257", "active")[0]).status == "confirmed"
    hctz = med(result, med_refs(path, "316049", "active")[0])
    assert (hctz.status, hctz.matched_by) == ("confirmed", "drug_class")
    assert allergy(result, allergy_ref(path, "419474003")).status == "confirmed"  # "Allergy to mould" <- "Mold"
    assert allergy(result, allergy_ref(path, "232350006")).status == "confirmed"
    # The record's soya allergy is inactive, so soy is a patient-reported allergy that points at it.
    (soy,) = [a for a in result.allergies if a.record_ref is None]
    assert soy.status == "patient_reported_only" and soy.reactions == ["rash"]
    assert soy.inactive_record_refs == [allergy_ref(path, "714035009")]


async def test_jorge_caregiver_words_and_claritin_for_allergies_is_a_medicine() -> None:
    record, path = await record_of("Jorge")
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "He takes his Ritalin every school day and Claritin for his allergies."),
        turn(2, IntakeElement.ALLERGIES, "He's allergic to eggs, milk and bee stings."),
    ]
    result = reconcile(record, turns)
    assert med(result, med_refs(path, "1091392", "active")[0]).status == "confirmed"  # methylphenidate
    assert med(result, med_refs(path, "665078", "active")[0]).status == "confirmed"  # loratadine
    for snomed in ("91930004", "425525006", "424213003"):  # eggs, dairy, bee venom
        assert allergy(result, allergy_ref(path, snomed)).status == "confirmed"
    assert not [a for a in result.allergies if a.record_ref is None]


async def test_gerardo_inhalers_by_brand_and_by_class() -> None:
    record, path = await record_of("Gerardo")
    by_brand = reconcile(
        record, [turn(1, IntakeElement.MEDICATIONS, "Flovent every day, and ProAir only when he's wheezy.")]
    )
    assert med(by_brand, med_refs(path, "895994", "active")[0]).status == "confirmed"
    albuterol = med(by_brand, med_refs(path, "745679", "active")[0])
    assert albuterol.status == "taking_differently" and albuterol.matched_by == "ingredients"
    by_class = reconcile(record, [turn(1, IntakeElement.MEDICATIONS, "He uses his inhalers.")])
    for code in ("895994", "745679"):
        line = med(by_class, med_refs(path, code, "active")[0])
        assert (line.status, line.matched_by) == ("confirmed", "drug_class")
    assert med(by_class, med_refs(path, "1091392", "active")[0]).status == "not_discussed"


async def test_ned_has_no_active_medicines_and_reports_a_finished_antibiotic() -> None:
    record, path = await record_of("Ned")
    assert record.active_medications == []
    result = reconcile(record, [turn(1, IntakeElement.MEDICATIONS, "I finished the Augmentin last month.")])
    (line,) = result.medications
    assert (line.status, line.reported_status) == ("patient_reported_only", "stopped")
    assert line.inactive_record_refs == med_refs(path, "562251", "stopped")


async def test_norine_chlor_trimeton_and_wheat() -> None:
    record, path = await record_of("Norine")
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "Chlor-Trimeton sometimes, and I'm on Errin."),
        turn(2, IntakeElement.ALLERGIES, "Wheat, gluten makes me sick."),
    ]
    result = reconcile(record, turns)
    assert med(result, med_refs(path, "477045", "active")[0]).status == "taking_differently"
    assert med(result, med_refs(path, "831533", "active")[0]).status == "confirmed"
    assert med(result, med_refs(path, "316049", "active")[0]).status == "not_discussed"
    assert allergy(result, allergy_ref(path, "420174000")).status == "confirmed"


async def test_every_patient_confirms_every_active_medicine_by_generic_name() -> None:
    """For all 12 patients: an answer naming each active medicine's ingredients (from the oracle)
    confirms each one, and nothing is reported twice."""
    for path in BUNDLES:
        record = await _SOURCE.fetch_record(uuid_of(path))
        active = raw_medications(path, "active")
        names = [
            " and ".join(sorted(INGREDIENTS_BY_RXNORM[coding(m, "medicationCodeableConcept")["code"]])) for m in active
        ]
        answer = ("I take " + ", ".join(names) + ".") if names else "Nothing."
        result = reconcile(record, [turn(1, IntakeElement.MEDICATIONS, answer)])
        assert [(m.record_ref, m.status) for m in result.medications] == [
            (f"MedicationRequest/{m['id']}", "confirmed") for m in active
        ], path.name


async def test_rules_claims_cite_the_turn_and_use_the_patients_words() -> None:
    record, _ = await record_of("Bonnie")
    turns = [turn(1, IntakeElement.MEDICATIONS, "Allegra, and I quit the Errin.")]
    claims = extract_claims_by_rules(record, turns)
    assert [(c.name, c.status, c.turn_id) for c in claims.medications] == [
        ("Allegra", "taking", "turn-1"),
        ("Errin", "stopped", "turn-1"),
    ]


# ------------------------------------------------------------------------------------------
# The model reads claims; code re-checks them
# ------------------------------------------------------------------------------------------


async def test_model_claims_are_rechecked_against_the_answers() -> None:
    record, path = await record_of("Bonnie")
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "I take Allegra every day and stopped the Errin."),
        turn(2, IntakeElement.ALLERGIES, "Cats make me sneeze, and mold too."),
    ]
    reply = {
        "medications": [
            # brand vs generic: the patient said "Allegra"
            {"name": "fexofenadine", "status": "taking", "turn_id": "turn-1"},
            {"name": "Errin", "status": "stopped", "turn_id": "turn-1"},
            # never mentioned: the model made it up
            {"name": "lisinopril", "status": "taking", "turn_id": "turn-1"},
            # cites a turn that does not exist
            {"name": "Allegra", "status": "taking", "turn_id": "turn-9"},
        ],
        "allergies": [
            {"substance": "cat dander", "reaction": "sneezing, anaphylaxis", "turn_id": "turn-2"},
            {"substance": "mould", "denied": True, "turn_id": "turn-2"},
            {"substance": "peanuts", "turn_id": "turn-2"},
        ],
        "denies_allergies": True,
        "conditions": [{"name": "asthma", "turn_id": "turn-2"}],
    }
    model = ScriptedChatModel({"reconcile.claims": [reply]})
    claims = await extract_claims(model, turns, record)
    assert model.requests[0].task == "reconcile.claims"
    assert "997488" in model.requests[0].messages[1].content  # the record list, with RxNorm codes
    result = reconcile(record, turns, claims)

    fexofenadine = med(result, med_refs(path, "997488", "active")[0])
    assert fexofenadine.status == "confirmed" and fexofenadine.matched_by == "ingredients"
    assert fexofenadine.patient_words == "I take Allegra every day and stopped the Errin."
    assert med(result, med_refs(path, "831533", "active")[0]).status == "stopped"
    assert not [m for m in result.medications if m.record_ref is None]  # lisinopril is not kept
    assert any("'lisinopril' (turn-1): the patient's answer does not name it" in r for r in result.rejected_claims)
    assert any("turn-9" in r for r in result.rejected_claims)

    dander = allergy(result, allergy_ref(path, "232347008"))
    assert dander.status == "confirmed" and dander.patient_words == "Cats make me sneeze, and mold too."
    assert dander.reactions == ["sneeze"]  # the patient's word; "anaphylaxis" is not in the answer
    assert any("anaphylaxis" in n for n in result.notes)
    # "mould" claimed as denied, but the answer denies nothing: the denial is dropped.
    assert any("'mould' (turn-2): claimed as denied" in r for r in result.rejected_claims)
    assert any("'peanuts'" in r for r in result.rejected_claims)
    assert any(r.startswith("denies_allergies") for r in result.rejected_claims)
    assert any("'asthma'" in r for r in result.rejected_claims)
    assert allergy(result, allergy_ref(path, "91934008")).status == "not_discussed"  # nut: nothing said


async def test_model_rxnorm_code_is_used_when_it_agrees_with_the_name() -> None:
    record, path = await record_of("Bonnie")
    turns = [turn(1, IntakeElement.MEDICATIONS, "Just the Allegra.")]
    agreeing = PatientClaims.model_validate(
        {"medications": [{"name": "Allegra", "status": "taking", "turn_id": "turn-1", "code": "997488"}]}
    )
    assert med(reconcile(record, turns, agreeing), med_refs(path, "997488", "active")[0]).matched_by == "code"
    wrong = PatientClaims.model_validate(
        {"medications": [{"name": "Allegra", "status": "taking", "turn_id": "turn-1", "code": "1870230"}]}
    )
    result = reconcile(record, turns, wrong)
    assert med(result, med_refs(path, "997488", "active")[0]).matched_by == "ingredients"
    assert med(result, med_refs(path, "1870230", "active")[0]).status == "not_discussed"
    assert any("RxNorm 1870230" in n for n in result.notes)


async def test_model_claim_for_a_listed_medicine_on_a_blanket_yes_is_not_rejected() -> None:
    record, path = await record_of("Kermit")
    question = template_question(IntakeElement.MEDICATIONS, record, None)
    turns = [turn(1, IntakeElement.MEDICATIONS, "Yes, all of them.", question=question)]
    claims = PatientClaims.model_validate(
        {"medications": [{"name": "loratadine", "status": "taking", "turn_id": "turn-1"}]}
    )
    result = reconcile(record, turns, claims)
    assert result.rejected_claims == []
    assert med(result, med_refs(path, "665078", "active")[0]).matched_by == "question_listing"


async def test_model_and_rule_claims_together() -> None:
    record, path = await record_of("Malik")
    turns = [turn(1, IntakeElement.MEDICATIONS, "Coumadin and the digoxin. I stopped the Benadryl.")]
    model = PatientClaims.model_validate(
        {"medications": [{"name": "warfarin", "status": "taking", "turn_id": "turn-1"}]}
    )
    result = reconcile(record, turns, [model, extract_claims_by_rules(record, turns)])
    assert med(result, med_refs(path, "855332", "active")[0]).status == "confirmed"
    assert med(result, med_refs(path, "197604", "active")[0]).status == "confirmed"
    assert med(result, med_refs(path, "1049630", "active")[0]).status == "stopped"
    assert med(result, med_refs(path, "855332", "active")[0]).turn_ids == ["turn-1"]


async def test_extract_claims_raises_model_error_and_skips_irrelevant_transcripts() -> None:
    record, _ = await record_of("Bonnie")
    turns = [turn(1, IntakeElement.MEDICATIONS, "Allegra.")]
    with pytest.raises(ModelError):
        await extract_claims(ScriptedChatModel({}), turns, record)
    silent = ScriptedChatModel({})
    claims = await extract_claims(silent, [turn(1, IntakeElement.ONSET, "Two days ago.")], record)
    assert claims == PatientClaims() and silent.requests == []


async def test_garbled_model_reply_is_a_model_error() -> None:
    record, _ = await record_of("Bonnie")
    model = ScriptedChatModel({"reconcile.claims": ["not json", '{"medications": "nope"}']})
    with pytest.raises(ModelError):
        await extract_claims(model, [turn(1, IntakeElement.MEDICATIONS, "Allegra.")], record)


def test_claims_schema_is_small_for_a_grammar() -> None:
    schema = PatientClaims.model_json_schema()
    for definition in schema["$defs"].values():
        for name, field in definition["properties"].items():
            if field.get("type") == "string" and "enum" not in field:
                assert 0 < field["maxLength"] <= 60, name
    assert all(p.get("maxItems", 0) <= 20 for p in schema["properties"].values() if p.get("type") == "array")
    request = claims_request([turn(1, IntakeElement.MEDICATIONS, "Allegra.")])
    assert request.task == "reconcile.claims"


def test_reconcile_without_a_record_reports_everything_as_the_patients() -> None:
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "Lipitor and Eliquis."),
        turn(2, IntakeElement.ALLERGIES, "Allergic to sulfa drugs, I get a rash."),
    ]
    result = reconcile(None, turns)
    assert [(m.name, m.ingredients, m.status) for m in result.medications] == [
        ("Lipitor", ["atorvastatin"], "patient_reported_only"),
        ("Eliquis", ["apixaban"], "patient_reported_only"),
    ]
    assert [(a.substance, a.reactions) for a in result.allergies] == [("sulfa drugs", ["rash"])]


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ("Yes, I still take all of those.", "affirm"),
        ("Yep.", "affirm"),
        ("That's right, nothing has changed.", "affirm"),
        ("No, none of them anymore.", "deny"),
        ("Not sure.", "unsure"),
        ("No.", "unsure"),
        ("Right now I only take Allegra.", None),
        ("I take Allegra.", None),
    ],
)
def test_blanket_answers(answer: str, kind: str | None) -> None:
    found = blanket_answer(answer)
    assert (found[0] if found else None) == kind
    if found:
        assert found[1] in answer


async def test_a_bare_no_after_a_listing_question_is_not_a_denial() -> None:
    record, path = await record_of("Bonnie")
    listing = "Your record lists allergies to mould, animal dander and nut; is that still right, and any others?"
    for answer in ("No.", "No others.", "Nothing else, that's it."):
        result = reconcile(record, [turn(1, IntakeElement.ALLERGIES, answer, question=listing)])
        assert {a.status for a in result.allergies} == {"not_discussed"}, answer
    explicit = reconcile(record, [turn(1, IntakeElement.ALLERGIES, "I'm not allergic to anything.", question=listing)])
    assert {a.status for a in explicit.allergies} == {"denied_by_patient"}
    generic = reconcile(record, [turn(1, IntakeElement.ALLERGIES, "No.", question="Do you have any allergies?")])
    assert {a.status for a in generic.allergies} == {"denied_by_patient"}
    assert len(generic.allergies) == len(raw(path, "AllergyIntolerance"))


def test_hand_made_record_drug_allergy_by_class_and_brand(lisinopril_record: PatientRecord) -> None:
    turns = [
        turn(1, IntakeElement.MEDICATIONS, "Prinivil every morning."),
        turn(2, IntakeElement.ALLERGIES, "Amoxicillin gave me hives as a kid."),
    ]
    result = reconcile(lisinopril_record, turns)
    assert med(result, "MedicationRequest/m-1").status == "confirmed"
    penicillin = allergy(result, "AllergyIntolerance/a-1")
    assert (penicillin.status, penicillin.reactions, penicillin.record_reactions) == ("confirmed", ["hives"], ["hives"])
    assert not [m for m in result.medications if m.record_ref is None]  # the amoxicillin is an allergy


async def test_reconcile_with_model_falls_back_to_rules() -> None:
    record, path = await record_of("Bonnie")
    turns = [turn(1, IntakeElement.MEDICATIONS, "Alegra, and I quit the Errin.")]
    result, error = await reconcile_with_model(ScriptedChatModel({}), record, turns)
    assert isinstance(error, ModelError)
    assert any("model claims unavailable" in n for n in result.notes)
    assert med(result, med_refs(path, "997488", "active")[0]).status == "confirmed"
    assert med(result, med_refs(path, "831533", "active")[0]).status == "stopped"

    reply = {
        "medications": [{"name": "Allegra", "status": "taking_differently", "detail": "most days", "turn_id": "turn-1"}]
    }
    merged, error = await reconcile_with_model(ScriptedChatModel({"reconcile.claims": [reply]}), record, turns)
    assert error is None
    line = med(merged, med_refs(path, "997488", "active")[0])
    assert (line.status, line.detail) == ("taking_differently", "most days")
    assert med(merged, med_refs(path, "831533", "active")[0]).status == "stopped"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("I take Allegra but not Zyrtec.", [("Allegra", "taking"), ("Zyrtec", "stopped")]),
        ("Zyrtec, not Claritin.", [("Zyrtec", "taking"), ("Claritin", "stopped")]),
        ("I've taken Lipitor for more than 5 years.", [("Lipitor", "taking")]),
        ("Extra strength Tylenol when needed.", [("Tylenol", "taking")]),
        ("The Errin, I stopped it.", [("Errin", "stopped")]),
        ("I think I take Plavix.", [("Plavix", "unsure")]),
        ("I take Claritin instead of Zyrtec now.", [("Claritin", "taking"), ("Zyrtec", "taking_differently")]),
        ("Half a Xanax at bedtime and melatonin.", [("Xanax", "taking_differently"), ("melatonin", "taking")]),
        ("I stopped the naproxen and the ibuprofen last year.", [("naproxen", "stopped"), ("ibuprofen", "stopped")]),
        ("I ran out of Lasix, still on Norvasc.", [("Lasix", "stopped"), ("Norvasc", "taking")]),
        ("Eliquis, I don't take it every day.", [("Eliquis", "taking_differently")]),
    ],
)
def test_status_cues_belong_to_their_own_medicine(answer: str, expected: list[tuple[str, str]]) -> None:
    result = reconcile(None, [turn(1, IntakeElement.MEDICATIONS, answer)])
    assert [(m.name, m.reported_status) for m in result.medications] == expected


async def test_frequency_that_differs_from_the_record() -> None:
    record, path = await record_of("Karena")
    (ref,) = med_refs(path, "316049", "active")
    # The record gives no frequency for hydrochlorothiazide; a hand-set one shows the comparison.
    changed = record.model_copy(deep=True)
    for medication in changed.medications:
        if medication.ref == ref:
            medication.dosage = "1 dose once a day"
    turns = [turn(1, IntakeElement.MEDICATIONS, "Hydrochlorothiazide twice a day.")]
    assert med(reconcile(record, turns), ref).status == "confirmed"
    assert med(reconcile(changed, turns), ref).status == "taking_differently"
    same = [turn(1, IntakeElement.MEDICATIONS, "Hydrochlorothiazide every day.")]
    assert med(reconcile(changed, same), ref).status == "confirmed"
