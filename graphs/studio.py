"""The entry point `langgraph.json` gives LangGraph's CLI and Studio.

The LangGraph server brings its own checkpointer and passes no previsit context, so this graph is
bound to one built from the environment (PREVISIT_MODEL, PREVISIT_RECORDS_DIR); it defaults to the
deterministic interview so Studio starts instantly. A live patient answers each interrupt in
Studio with the answer text as the resume value.
"""

from __future__ import annotations

import os
from dataclasses import asdict

from graphs.context import IntakeContext
from graphs.intake import compile_intake_graph
from graphs.session import IntakeGraph
from previsit.config import Settings, build_model, build_record_source


def make_graph() -> IntakeGraph:
    """The intake graph bound to a context built from the environment."""
    settings = Settings.from_env(model=os.environ.get("PREVISIT_MODEL", "none"))
    context = IntakeContext(
        record_source=build_record_source(settings),
        model=build_model(settings.model, settings),
        **asdict(settings.tuning()),
    )
    return compile_intake_graph(bound_context=context)
