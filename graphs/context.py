"""Run-time context of the intake graph: the things that are swapped at their edges.

None of this is checkpointed: a resumed session is given its context again (built from the
session's persisted input), so a model, a record source or a simulated patient can be anything
that honours its protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from agents.simulated_patient import PatientResponder
from graphs.images import ScheduledImage
from tools.fhir.record import RecordSource
from tools.imaging.triage import ImageTriager
from tools.models.protocol import ChatModel


@dataclass(frozen=True)
class IntakeTuning:
    """The interview's knobs from configuration, for runners that build their own context (suites)."""

    max_attempts_per_element: int = 2
    chart_token_budget: int = 2000
    safety_model_check: bool = False
    stale_after_days: int = 365


@dataclass(frozen=True)
class IntakeContext:
    """What the nodes need besides the state."""

    record_source: RecordSource
    """Where the chart comes from (fixture bundles by default, a FHIR server later)."""

    model: ChatModel | None = None
    """The chat model; None runs the deterministic interview alone (template questions, no narrative)."""

    patient: PatientResponder | None = None
    """A simulated patient; None means a live patient, asked through `interrupt()`."""

    max_attempts_per_element: int = 2
    """How often an element is asked before it is left as missing."""

    chart_token_budget: int = 2000
    """Tokens of chart context a prompt may hold, counted with the model's tokenizer."""

    safety_model_check: bool = False
    """Ask the model for a second opinion on red flags after the rules (it can add, never remove)."""

    stale_after_days: int = 365
    """A record value older than this is flagged as stale."""

    today: date | None = None
    """The date staleness is judged against; None means the real today (tests fix it)."""

    image_triager: ImageTriager | None = None
    """Triages attached images (MedSigLIP); None records them untriaged, with a flag saying so."""

    scheduled_images: tuple[ScheduledImage, ...] = ()
    """Simulations only: images the simulated patient attaches, by turn or element (from the scenario)."""
