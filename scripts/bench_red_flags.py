"""Measure the red-flag rules: the confusion table on the labelled set, then screening speed.

    python scripts/bench_red_flags.py                      # fixtures/red_flags/messages.yaml
    python scripts/bench_red_flags.py --messages other.yaml --no-timing

Exits 1 if any expected-positive message is missed (the bar is zero misses).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from agents.safety import evaluate, load_red_flag_cases, screen_rules

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MESSAGES = ROOT / "fixtures" / "red_flags" / "messages.yaml"

# Answers built by repeating a unit: ordinary prose, and inputs shaped to stress the scope logic.
TIMED_UNITS = {
    "prose": "I have had a mild cough for a week and some tiredness, nothing else really. ",
    "negated mentions": "No chest pain, no shortness of breath. My father had a stroke years ago. ",
    "no punctuation": "no chest pain no shortness of breath my father had a stroke and ",
    "trigger words": "bleeding pregnant fever weeks old chest pain sweating ",
    "temperatures": "38.5 ",
}
SIZES = (1_000, 10_000, 50_000)


def _timed(answer: str, repeats: int) -> float:
    """Median seconds to screen `answer`."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        screen_rules(answer, "bench")
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=Path, default=DEFAULT_MESSAGES, help="labelled message set (YAML)")
    parser.add_argument("--no-timing", action="store_true", help="print the confusion table only")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs per answer (median reported)")
    args = parser.parse_args(argv)

    cases = load_red_flag_cases(args.messages)
    table = evaluate(cases)
    print(table.render())

    if not args.no_timing:
        per_message = [_timed(case.text, args.repeats) for case in cases]
        print(
            f"\nPer message: median {statistics.median(per_message) * 1e3:.2f} ms, max {max(per_message) * 1e3:.2f} ms"
        )
        print("\nAnswer screening time, median of runs (ms):")
        print(f"  {'answer':<18}" + "".join(f"{size // 1000:>7} KB" for size in SIZES))
        for name, unit in TIMED_UNITS.items():
            cells = []
            for size in SIZES:
                answer = (unit * (size // len(unit) + 1))[:size]
                cells.append(f"{_timed(answer, args.repeats) * 1e3:10.1f}")
            print(f"  {name:<18}" + "".join(cells))
    return 1 if table.fn else 0


if __name__ == "__main__":
    sys.exit(main())
