"""Scenario files: a patient, a reason for visit, a simulated patient's hidden facts, expectations.

Scenarios are YAML so that clinicians and researchers can write them; they are validated here,
and a bad file gets an error naming the file and the field, never a traceback.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agents.coverage import IntakeElement
from agents.simulated_patient import HiddenFact, PatientBrief
from agents.summary_schema import FlagKind, Severity, StopReason
from graphs.images import ScheduledImage
from graphs.patient_message import ImageAttachment


class ScenarioError(Exception):
    """A scenario file that cannot be used, with the file and field named."""


class ExpectedFlag(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FlagKind
    contains: str | None = Field(default=None, description="Text the flag's message must contain.")
    severity: Severity | None = Field(default=None, description="The severity it must have.")
    evidence: list[str] = Field(
        default_factory=list, description="Sources ('turn-3', 'AllergyIntolerance/abc') its evidence must include."
    )


class Expectations(BaseModel):
    """What a run of this scenario must produce."""

    model_config = ConfigDict(extra="forbid")

    summary_contains: list[str] = Field(default_factory=list, description="Facts the summary must state.")
    summary_lacks: list[str] = Field(
        default_factory=list, description="Text that must not appear (entered-in-error entries, removed claims)."
    )
    flags: list[ExpectedFlag] = Field(default_factory=list, description="Flags the summary must raise.")
    absent_flags: list[FlagKind] = Field(default_factory=list, description="Kinds of flag it must not raise.")
    red_flag: bool = Field(default=False, description="Whether the intake must stop for a red flag.")
    max_questions: int | None = Field(default=None, ge=0, description="At most this many questions.")
    stop_reason: StopReason | None = None


class ScenarioImage(BaseModel):
    """An image the simulated patient attaches: at a turn number, or with the first answer about an element."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="Relative to the scenario file (or absolute).")
    at_turn: int | None = Field(default=None, ge=1)
    at_element: IntakeElement | None = None
    modality: str | None = Field(default=None, description="Label set to triage with; None detects it.")

    @model_validator(mode="after")
    def _one_moment(self) -> ScenarioImage:
        if (self.at_turn is None) == (self.at_element is None):
            raise ValueError("give exactly one of at_turn or at_element")
        return self


class Evaluation(BaseModel):
    """What only the evaluation may see: never the interviewer, never the simulated patient."""

    model_config = ConfigDict(extra="forbid")

    correct_diagnosis: str | None = Field(default=None, description="The source's diagnosis, for scoring only.")
    objective_for_doctor: str | None = Field(default=None, description="The source's task statement.")


class Scenario(BaseModel):
    """One intake to simulate."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str
    source: str = Field(description="Where the case comes from, with its licence.")
    patient_id: str = Field(min_length=1, description="Patient id or identifier in the record source.")
    reason_for_visit: str | None = None
    persona: str = Field(default="", description="Who the simulated patient is (age, who is speaking).")
    facts: list[HiddenFact] = Field(min_length=1)
    scripted_answers: dict[IntakeElement, str] = Field(
        default_factory=dict, description="Exact answers per intake element; other questions use the facts."
    )
    model_script: dict[str, list[str | dict[str, Any]]] = Field(
        default_factory=dict, description="Recorded model replies per task, for the scripted backend."
    )
    max_questions: int = Field(default=20, ge=0, le=200)
    visit_date: date | None = Field(
        default=None, description="When the intake takes place, for judging stale record values (default: today)."
    )
    simulated_patient: Literal["facts", "model", "embedding"] = Field(
        default="facts",
        description="Who answers: the fact patient, a model persona, or the embedding (semantic retrieval) patient.",
    )
    expect: Expectations = Field(default_factory=Expectations)
    exam_findings: dict[str, Any] = Field(
        default_factory=dict, description="Physical examination findings, available on request; never spoken."
    )
    test_results: dict[str, Any] = Field(
        default_factory=dict, description="Test results, available on request; never spoken by the patient."
    )
    evaluation: Evaluation | None = Field(default=None, description="For scoring only (e.g. the true diagnosis).")
    images: list[ScenarioImage] = Field(default_factory=list, description="Images the simulated patient attaches.")

    def scheduled_images(self) -> tuple[ScheduledImage, ...]:
        """The attachment schedule the intake context carries (paths as resolved when the file was loaded)."""
        return tuple(
            ScheduledImage(
                attachment=ImageAttachment(path=i.path, filename=Path(i.path).name, modality=i.modality),
                at_turn=i.at_turn,
                at_element=i.at_element,
            )
            for i in self.images
        )

    def brief(self) -> PatientBrief:
        """What the simulated patient may know (never the expectations)."""
        return PatientBrief(id=self.id, persona=self.persona, facts=self.facts, scripted_answers=self.scripted_answers)

    @field_validator("facts", mode="before")
    @classmethod
    def _facts_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ScenarioError(f"{file}: no such scenario file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{file}: cannot be read ({exc})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ScenarioError(f"{file}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise ScenarioError(f"{file}: a scenario must be a mapping of fields, got {type(raw).__name__}")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '(root)'}': {err['msg']}" for err in exc.errors()
        )
        raise ScenarioError(f"{file}: invalid scenario: {problems}") from exc
    return _with_resolved_images(scenario, file)


def _with_resolved_images(scenario: Scenario, file: Path) -> Scenario:
    """Image paths made absolute against the scenario's folder; a missing image is named with its field."""
    resolved = []
    for index, image in enumerate(scenario.images):
        path = (file.parent / image.path).resolve()
        if not path.is_file():
            raise ScenarioError(f"{file}: field 'images.{index}.path': no such image file {image.path!r} ({path})")
        resolved.append(image.model_copy(update={"path": str(path)}))
    return scenario.model_copy(update={"images": resolved}) if resolved else scenario
