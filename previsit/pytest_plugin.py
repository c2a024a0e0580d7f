"""pytest plugin: every ``*.scenario.yaml`` under the test paths is a scenario test.

Registered through the ``pytest11`` entry point, so installing previsit is enough. Importing this
module stays cheap (the graph and the models load only when a scenario file is collected), because
pytest imports it in every test session of the environment.

Settings (pytest.ini / pyproject ``[tool.pytest.ini_options]``):

- ``previsit_model``: the model spec scenario files run with (default ``scripted``: their recorded replies);
- ``previsit_min_fact_recall``: fail a scenario whose fact recall is below this fraction (default: not checked);
- ``previsit_fact_matching``: ``exact`` (default, fast) or ``embedding`` (MiniLM, as suites score).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from graphs.metrics import FactMatcher

SUFFIX = ".scenario.yaml"
_MATCHER = pytest.StashKey["FactMatcher"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("previsit_model", "model spec scenario files run with", default="scripted")
    parser.addini("previsit_min_fact_recall", "minimum fact recall of a scenario file (0-1)", default="")
    parser.addini("previsit_fact_matching", "exact or embedding", default="exact")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUFFIX):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def _matcher(config: pytest.Config) -> FactMatcher:
    """One matcher per test session (the sentence encoder is loaded once, if asked for)."""
    from graphs.metrics import FactMatcher

    if _MATCHER not in config.stash:
        embedder = None
        if str(config.getini("previsit_fact_matching")).strip() == "embedding":
            from agents.sentence_embeddings import load_minilm

            embedder = load_minilm()
        config.stash[_MATCHER] = FactMatcher(embedder)
    return config.stash[_MATCHER]


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        yield ScenarioItem.from_parent(self, name=self.path.name.removesuffix(SUFFIX))


class ScenarioItem(pytest.Item):
    """One scenario file run through the real graph; fails with the scenario's review note."""

    def runtest(self) -> None:
        from previsit.testing import ScenarioTestFailure, check_scenario

        config = self.config
        minimum = str(config.getini("previsit_min_fact_recall")).strip()
        run = asyncio.run(
            check_scenario(
                self.path,
                model=str(config.getini("previsit_model")),
                matcher=_matcher(config),
                min_fact_recall=float(minimum) if minimum else None,
            )
        )
        if run.problems:
            raise ScenarioTestFailure(run.report())

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | Any:
        from graphs.scenario import ScenarioError
        from previsit.testing import ScenarioTestFailure

        if isinstance(excinfo.value, ScenarioTestFailure | ScenarioError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.name}"
