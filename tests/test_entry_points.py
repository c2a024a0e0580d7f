"""Entry points a user meets first: `--help`, configuration, and the LangGraph CLI's graph."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from graphs.intake import compile_intake_graph
from previsit.cli import build_parser, main
from previsit.config import Settings
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("command", ["simulate", "chat", "sessions", "resume", "show"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--data-dir" in capsys.readouterr().out


def test_the_top_level_help_says_what_previsit_is_not(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "never diagnoses" in capsys.readouterr().out


def test_settings_take_env_then_flags(tmp_path: Path) -> None:
    env = {"PREVISIT_MODEL": "none", "PREVISIT_MAX_QUESTIONS": "7", "PREVISIT_DATA_DIR": str(tmp_path)}
    settings = Settings.from_env(env, max_questions=None)
    assert (settings.model, settings.max_questions, settings.data_dir) == ("none", 7, tmp_path)
    assert Settings.from_env(env, max_questions=3).max_questions == 3
    assert Settings.from_env({}).model == "demo"


def test_langgraph_json_points_at_a_factory_for_the_intake_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.loads((REPO_ROOT / "langgraph.json").read_text())
    path, _, attribute = config["graphs"]["intake"].partition(":")
    module_name = Path(path).with_suffix("").as_posix().lstrip("./").replace("/", ".")
    monkeypatch.delenv("PREVISIT_MODEL", raising=False)
    graph = getattr(importlib.import_module(module_name), attribute)()
    expected = compile_intake_graph().get_graph().draw_mermaid()
    assert graph.get_graph().draw_mermaid() == expected
