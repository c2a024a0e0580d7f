"""Triage label sets: per modality, the findings to score and the prompts that describe them.

A clinic edits these files (or points `PREVISIT_IMAGE_LABELS` at its own folder of them), so they
are YAML, validated here, and a bad file gets an error naming the file and the field. Each set is
identified by its name, its version and a hash of its content: a result says exactly which
prompts and thresholds produced it, and cached text embeddings are keyed by that hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tools.imaging.errors import LabelSetError

DEFAULT_LABEL_DIR = Path(__file__).resolve().parent / "data" / "labels"


class TriageLabel(BaseModel):
    """One finding to score: its id, how a clinician reads it, and the text the model compares with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    display: str = Field(min_length=1)
    prompt: str = Field(min_length=3, description="Text the image is compared with (zero-shot).")


class LabelSet(BaseModel):
    """The labels of one modality and when a result is too weak or too close to call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$", description="The modality key, e.g. chest_xray.")
    version: str = Field(min_length=1)
    description: str = ""
    modality_prompt: str = Field(
        min_length=3, description="Describes an image of this modality, for detecting the modality."
    )
    low_confidence_below: float = Field(
        default=0.2, gt=0, lt=1, description="A top probability below this is a low-confidence signal."
    )
    ambiguous_margin: float = Field(
        default=0.05, ge=0, lt=1, description="Top two probabilities this close are an ambiguous signal."
    )
    labels: list[TriageLabel] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique_ids(self) -> LabelSet:
        ids = [label.id for label in self.labels]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate label ids: {', '.join(duplicates)}")
        return self

    @property
    def content_hash(self) -> str:
        """Changes whenever anything that shapes a result changes (prompts, thresholds)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_label_set(path: str | Path) -> LabelSet:
    """Read and validate one label-set file."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LabelSetError(f"{file}: no such label-set file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelSetError(f"{file}: cannot be read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise LabelSetError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise LabelSetError(f"{file}: a label set must be a mapping of fields, got {type(raw).__name__}")
    try:
        return LabelSet.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}" for err in exc.errors()
        )
        raise LabelSetError(f"{file}: invalid label set: {problems}") from exc


def load_label_sets(directory: str | Path | None = None) -> dict[str, LabelSet]:
    """Every `*.yaml` label set in `directory` (default: the ones shipped), by name."""
    folder = Path(directory) if directory is not None else DEFAULT_LABEL_DIR
    if not folder.is_dir():
        raise LabelSetError(f"{folder}: no such label-set folder")
    sets: dict[str, LabelSet] = {}
    for file in sorted(folder.glob("*.yaml")):
        label_set = load_label_set(file)
        if label_set.name in sets:
            raise LabelSetError(f"{file}: a second label set named {label_set.name!r} in {folder}")
        sets[label_set.name] = label_set
    if not sets:
        raise LabelSetError(f"{folder}: holds no label-set files (*.yaml)")
    return sets
