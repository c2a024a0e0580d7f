"""Benchmark: full record retrieval from a FHIR server, three ways, and the chart context built from it.

    python -m tools.fhir.bench [--bundle FILE] [--fhir-base URL] [--repeat N] [--model SPEC]

Without ``--fhir-base`` it starts the embedded sandbox (SEKMET) on a free loopback port in a
temporary directory, loads the bundle (default: the Synthea fixture with the most resources) and
stops the server by PID at the end. It prints, for the patient in the bundle:

- retrieval time (median and best of ``--repeat``), requests, pages and resources for sequential
  per-type searches, concurrent per-type searches and ``Patient/$everything``;
- chart-context build time at the 2,000-token budget;
- the chart context's tokens against the raw record's (its resources as JSON), counted with the
  model's tokenizer (``--model demo`` loads SmolLM2's; ``none``, the default, counts words).

It prints numbers; it asserts nothing (the tests do that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from previsit import sandbox
from previsit.config import DEFAULT_RECORDS_DIR, Settings, build_model
from tools.fhir.chart_context import build_chart_context
from tools.fhir.client import FhirClient
from tools.fhir.record import PatientRecord
from tools.fhir.resources import RECORD_RESOURCE_TYPES
from tools.fhir.server_source import FhirRecordSource, Strategy

BUDGET = 2000


def _largest_bundle() -> Path:
    def size(path: Path) -> int:
        return len(json.loads(path.read_text(encoding="utf-8")).get("entry") or [])

    return max((DEFAULT_RECORDS_DIR / "synthea").glob("*.json"), key=size)


def _patient_key(bundle: dict[str, Any], path: Path) -> str:
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Patient":
            for identifier in resource.get("identifier") or []:
                if identifier.get("system") == "https://github.com/synthetichealth/synthea":
                    return str(identifier["value"])
            return str(resource.get("id") or path.stem)
    raise SystemExit(f"{path} holds no Patient")


async def _time_strategy(
    base: str, key: str, strategy: Strategy, concurrency: int, repeat: int
) -> tuple[list[float], FhirRecordSource, PatientRecord]:
    times: list[float] = []
    source = FhirRecordSource(base, strategy=strategy, concurrency=concurrency, record_deadline_s=300)
    record = await source.fetch_record(key)  # warm-up (capabilities, connections)
    for _ in range(repeat):
        started = time.perf_counter()
        record = await source.fetch_record(key)
        times.append(time.perf_counter() - started)
    return times, source, record


async def _run(base: str, key: str, repeat: int, raw_text: str, count: Callable[[str], int], counter: str) -> None:
    print(f"server {base}, patient {key}, {repeat} timed runs each (after one warm-up)\n")
    print(f"{'retrieval':<34} {'median s':>9} {'best s':>8} {'requests':>9} {'pages':>6} {'resources':>10}")
    record: PatientRecord | None = None
    for label, strategy, concurrency in (
        ("sequential per-type searches", "search", 1),
        ("concurrent per-type searches (8)", "search", 8),
        ("Patient/$everything", "everything", 1),
    ):
        times, source, record = await _time_strategy(base, key, strategy, concurrency, repeat)  # type: ignore[arg-type]
        stats = source.last_fetch
        print(
            f"{label:<34} {statistics.median(times):>9.3f} {min(times):>8.3f} {stats.requests:>9} "
            f"{stats.pages:>6} {stats.resources:>10}"
        )
    assert record is not None
    builds: list[float] = []
    chart = None
    for _ in range(max(repeat, 5)):
        started = time.perf_counter()
        chart = build_chart_context(record, BUDGET, count)
        builds.append(time.perf_counter() - started)
    assert chart is not None
    raw_tokens = count(raw_text)
    print(f"\nchart context at a {BUDGET}-token budget: built in {statistics.median(builds) * 1000:.1f} ms (median)")
    print(f"  lines {len(chart.lines)}, omitted {chart.omitted}, tokens {chart.tokens_used} ({counter})")
    print(f"  raw record (its {record_resource_count(raw_text)} record resources as JSON): {raw_tokens} tokens")
    print(f"  context / raw: {chart.tokens_used / max(raw_tokens, 1):.2%}")


def record_resource_count(raw_text: str) -> int:
    return len(json.loads(raw_text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.fhir.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="Synthea transaction bundle (default: the largest fixture)")
    parser.add_argument("--fhir-base", help="use this server (the bundle must be loaded there already)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model", default="none", help="tokenizer to count with: none (words) or demo, ...")
    args = parser.parse_args(argv)

    path = args.bundle or _largest_bundle()
    bundle = json.loads(path.read_text(encoding="utf-8"))
    key = _patient_key(bundle, path)
    raw = [e["resource"] for e in bundle.get("entry") or [] if e["resource"]["resourceType"] in RECORD_RESOURCE_TYPES]
    raw_text = json.dumps(raw)
    model = build_model(args.model, Settings.from_env())
    count: Callable[[str], int] = model.count_tokens if model else (lambda text: len(text.split()))
    counter = f"{model.model_id} tokenizer" if model else "words"
    print(f"bundle {path.name}: {len(bundle.get('entry') or [])} resources, {path.stat().st_size / 1e6:.1f} MB")

    if args.fhir_base:
        asyncio.run(_run(args.fhir_base, key, args.repeat, raw_text, count, counter))
        return
    with tempfile.TemporaryDirectory(prefix="previsit-bench-") as tmp:
        started = time.perf_counter()
        info, seconds = sandbox.start(Path(tmp), port=sandbox.free_port())
        print(f"sandbox up in {seconds:.2f} s ({time.perf_counter() - started:.2f} s with settings)")
        try:

            async def load() -> None:
                began = time.perf_counter()
                async with FhirClient(info.base_url, timeout_s=120) as client:
                    (result,) = await sandbox.load_bundles(client, [path])
                print(f"loaded {result.created} resources in {time.perf_counter() - began:.2f} s\n")

            asyncio.run(load())
            asyncio.run(_run(info.base_url, key, args.repeat, raw_text, count, counter))
        finally:
            sandbox.stop(Path(tmp))


if __name__ == "__main__":
    main()
