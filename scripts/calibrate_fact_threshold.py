"""Measures where the fact-recall embedding threshold should sit; prints the numbers docs/metrics.md cites.

Every fixture scenario runs through the real intake graph (scripted backend, fact patient). The
summarizer's recorded HPI narrative statements are model-written paraphrases that cite the turns
they came from, which labels them:

* paraphrase:   a fact vs the narrative statements citing the turn where the patient said it
                (best sentence) -- the similarity a correct paraphrase gets;
* same-case:    the same fact vs the narrative statements of the same intake citing other turns
                (best sentence) -- a related statement about a different fact (hard negative);
* other-case:   a fact vs every sentence of every other scenario's summary (best) -- unrelated text.

Texts are embedded in the matcher's pronoun-free form (graphs.metrics.neutral_form). A few
hand-written clinician-style paraphrases (terser than the recorded ones) are scored too.
Usage: python scripts/calibrate_fact_threshold.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.sentence_embeddings import SentenceEmbedder, cosine, load_minilm  # noqa: E402
from graphs.metrics import DEFAULT_FACT_THRESHOLD, neutral_form, sentences, summary_units  # noqa: E402
from graphs.scenario import load_scenario  # noqa: E402
from graphs.scenario_run import run_scenario  # noqa: E402
from graphs.state import IntakeOutput  # noqa: E402
from tools.fhir.bundle_source import BundleRecordSource  # noqa: E402
from tools.models.scripted import ScriptedChatModel  # noqa: E402

HAND_WRITTEN = [  # (fact in the patient's voice, clinician-style paraphrase, related but different statement)
    ("I get chest pain when I climb stairs.", "Exertional chest pain on stairs.", "Chest pain at rest at night."),
    ("I've been coughing up yellow phlegm for a week.", "Productive cough with yellow sputum x1 week.", "Dry cough."),
    ("My ankles have been swelling by the evening.", "Bilateral ankle swelling, worse in the evenings.",
     "Ankle pain after a fall."),
    ("I feel sick after eating fatty food.", "Nausea after fatty meals.", "Vomiting blood."),
    ("I wake up at night needing to pee several times.", "Nocturia several times a night.", "Painful urination."),
    ("My son has had a barking cough since Tuesday.", "Barking cough for a few days.", "He has a runny nose."),
]  # fmt: skip


def _best_pair(fact_vector: list[float], texts: list[str], vectors: dict[str, list[float]]) -> tuple[float, str]:
    return max(((cosine(fact_vector, vectors[t]), t) for t in texts), default=(float("nan"), ""))


def _best(fact_vector: list[float], texts: list[str], vectors: dict[str, list[float]]) -> float:
    return _best_pair(fact_vector, texts, vectors)[0]


def _describe(name: str, values: list[float]) -> str:
    values = sorted(v for v in values if v == v)
    if not values:
        return f"{name:12s} n=0"
    q = statistics.quantiles(values, n=20) if len(values) > 1 else [values[0]] * 19
    return (
        f"{name:12s} n={len(values):3d}  min={values[0]:.3f}  p5={q[0]:.3f}  median={statistics.median(values):.3f}"
        f"  p95={q[-1]:.3f}  max={values[-1]:.3f}"
    )


async def _outputs() -> list[tuple[object, IntakeOutput]]:
    runs = []
    for path in sorted((ROOT / "fixtures" / "scenarios").glob("*.yaml")):
        scenario = load_scenario(path)
        source = BundleRecordSource(ROOT / "fixtures" / "fhir")
        runs.append((scenario, await run_scenario(scenario, source, ScriptedChatModel(scenario.model_script))))
    return runs


def _split(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(p for t in texts for p in [t, *sentences(t)]))


def main() -> None:
    embedder: SentenceEmbedder = load_minilm()
    runs = asyncio.run(_outputs())
    paraphrase: list[float] = []
    same_case: list[float] = []
    other_case: list[float] = []
    other_hits: list[str] = []
    all_texts: set[str] = set()
    per_run: list[tuple[list[str], dict[str, list[str]], list[str], list[str]]] = []
    for scenario, output in runs:
        assert output.summary is not None
        facts = [f.text for f in scenario.facts]  # type: ignore[attr-defined]
        answers = {t.id: t.answer for t in output.turns}
        narrative = [(s.text, {r.ref for r in s.sources}) for s in output.summary.hpi_narrative]
        by_fact: dict[str, list[str]] = {}
        for fact in facts:
            turns = {tid for tid, answer in answers.items() if fact.strip() in answer}
            by_fact[fact] = [text for text, refs in narrative if refs & turns]
        units = _split(summary_units(output.summary))
        per_run.append((facts, by_fact, [t for t, _ in narrative], units))
        all_texts.update(facts, units, *(_split(v) for v in by_fact.values()), _split([t for t, _ in narrative]))
    for fact, para, other in HAND_WRITTEN:
        all_texts.update((fact, para, other))
    ordered = sorted(all_texts)
    vectors = dict(zip(ordered, embedder.embed([neutral_form(t) for t in ordered]), strict=True))
    for index, (facts, by_fact, narrative, _) in enumerate(per_run):
        others = [u for j, run in enumerate(per_run) if j != index for u in run[3]]
        for fact in facts:
            cited = by_fact[fact]
            if cited:
                paraphrase.append(_best(vectors[fact], _split(cited), vectors))
                same_case.append(_best(vectors[fact], _split([t for t in narrative if t not in cited]), vectors))
            similarity, text = _best_pair(vectors[fact], others, vectors)
            other_case.append(similarity)
            if similarity >= DEFAULT_FACT_THRESHOLD:
                other_hits.append(f"  {similarity:.3f}  {fact!r} ~ {text!r}")
    print(
        f"all-MiniLM-L6-v2 cosine, {len(runs)} fixture scenarios, pronouns dropped; "
        f"current threshold {DEFAULT_FACT_THRESHOLD}"
    )
    print(_describe("paraphrase", paraphrase))
    print(_describe("same-case", same_case))
    print(_describe("other-case", other_case))
    print(f"other-case pairs at or above {DEFAULT_FACT_THRESHOLD}:", *other_hits, sep="\n")
    hand_pos = [cosine(vectors[f], vectors[p]) for f, p, _ in HAND_WRITTEN]
    hand_neg = [cosine(vectors[f], vectors[o]) for f, _, o in HAND_WRITTEN]
    print(_describe("hand para", hand_pos))
    print(_describe("hand other", hand_neg))
    for threshold in (0.55, 0.60, 0.65, 0.70, 0.75, 0.80):
        tp = sum(v >= threshold for v in paraphrase + hand_pos)
        fp_same = sum(v >= threshold for v in same_case + hand_neg if v == v)
        fp_other = sum(v >= threshold for v in other_case)
        print(
            f"threshold {threshold:.2f}: paraphrases found {tp}/{len(paraphrase) + len(hand_pos)}, "
            f"related-but-different above {fp_same}/{len(same_case) + len(hand_neg)}, "
            f"other-case above {fp_other}/{len(other_case)}"
        )


if __name__ == "__main__":
    main()
