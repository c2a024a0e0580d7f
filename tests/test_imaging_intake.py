"""Images in the conversation: attached, recorded with provenance, triaged for the clinician, never for the patient.

The graph is the real compiled intake graph; live turns resume with a `PatientMessage` exactly as
the HTTP service sends it; the triager is the tiny random SigLIP loaded through the real loading
path, or a triager whose model cannot load.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from agents.summary_schema import SourceRef, Statement
from agents.verifier import verify_summary
from graphs.context import IntakeContext
from graphs.intake import compile_intake_graph
from graphs.patient_message import ImageAttachment, PatientMessage
from graphs.render import render_html
from graphs.render_fhir import render_fhir_bundle
from graphs.scenario import ScenarioError, load_scenario
from graphs.scenario_run import run_scenario
from graphs.state import IntakeInput, IntakeOutput
from tests.conftest import FIXTURES, RECORDS, SCENARIOS
from tools.fhir.bundle_source import BundleRecordSource
from tools.fhir.memory_source import InMemoryRecordSource
from tools.fhir.record import PatientRecord
from tools.imaging.triage import LazyTriager, SiglipTriager
from tools.models.scripted import ScriptedChatModel

CXR = FIXTURES / "images" / "cxr_nih_00000001_000_cardiomegaly.png"
XRAY_SCENARIO = SCENARIOS / "synthea-ned-hintz-cough-sends-chest-xray.yaml"
TRIAGE_WORDS = ("triage", "cardiomegaly", "effusion", "image-1", "signal")


@pytest.fixture
def triager(tiny_siglip_dir: Path) -> SiglipTriager:
    return SiglipTriager.load(str(tiny_siglip_dir), local_files_only=True)


def _patient_never_sees_triage(output: IntakeOutput) -> None:
    spoken = [t.question for t in output.turns] + [output.patient_message or ""]
    for text in spoken:
        assert not any(word in text.lower() for word in TRIAGE_WORDS), text


async def test_a_scenario_image_is_triaged_cited_and_rendered_for_the_clinician_only(triager: SiglipTriager) -> None:
    scenario = load_scenario(XRAY_SCENARIO)
    output = await run_scenario(
        scenario, BundleRecordSource(RECORDS), ScriptedChatModel(scenario.model_script), image_triager=triager
    )
    [image] = output.images
    assert image.id == "image-1" and image.turn_id == "turn-1" and image.status == "triaged"
    assert image.sha256 == hashlib.sha256(CXR.read_bytes()).hexdigest()
    assert image.triage is not None and image.triage.modality == "chest_xray" and not image.triage.modality_detected

    summary = output.summary
    assert summary is not None
    [finding] = summary.image_findings  # survived the verifier
    assert finding.sources == [SourceRef(kind="image", ref="image-1")]
    assert "Image triage signal (not a diagnosis)" in finding.text
    assert not any("image" in s.text.lower() for s in summary.removed_statements)
    assert "## Image triage signals" in output.markdown
    assert f"image 'cxr_nih_00000001_000_cardiomegaly.png' sent at turn-1, PNG 512x512, sha256 {image.sha256[:12]}" in (
        output.markdown
    )
    assert "was not triaged" not in output.markdown
    _patient_never_sees_triage(output)

    page = render_html(summary, output.turns, output.images)
    assert "Image triage signals" in page and image.sha256[:12] in page
    bundle = render_fhir_bundle(summary, output.turns, "s-1")
    composition = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Composition")
    section = next(s for s in composition["section"] if s["title"] == "Image triage signals")
    assert "not a diagnosis" in section["text"]["div"] and "image-1" in section["text"]["div"]


async def test_without_a_triager_the_image_is_kept_and_flagged_untriaged() -> None:
    scenario = load_scenario(XRAY_SCENARIO)
    output = await run_scenario(scenario, BundleRecordSource(RECORDS), ScriptedChatModel(scenario.model_script))
    [image] = output.images
    assert image.status == "not_triaged" and image.sha256 is not None
    assert output.summary is not None and output.summary.image_findings == []
    [flag] = [f for f in output.summary.flags if "image-1" in f.message]
    assert flag.kind == "low_confidence" and SourceRef(kind="image", ref="image-1") in flag.evidence


async def _live_intake(context: IntakeContext, first: PatientMessage) -> IntakeOutput:
    graph = compile_intake_graph(InMemorySaver())
    config: dict[str, Any] = {"configurable": {"thread_id": "img"}}
    result = await graph.ainvoke(IntakeInput(patient_id="p-1", max_questions=3), config, context=context)
    reply: Any = first.model_dump()
    while result.get("__interrupt__"):
        result = await graph.ainvoke(Command(resume=reply), config, context=context)
        reply = "No."
    return IntakeOutput.model_validate(result)


async def test_a_corrupt_upload_is_flagged_and_the_intake_goes_on(
    tmp_path: Path, triager: SiglipTriager, lisinopril_record: PatientRecord
) -> None:
    good = tmp_path / "upload-1.bin"
    shutil.copy(CXR, good)
    broken = tmp_path / "upload-2.bin"
    broken.write_bytes(CXR.read_bytes()[:5000])
    message = PatientMessage(
        text="My chest feels tight when I climb stairs.",
        images=[
            ImageAttachment(path=str(good), filename="xray.png", modality="chest_xray"),
            ImageAttachment(path=str(broken), filename="photo.png"),
        ],
    )
    context = IntakeContext(record_source=InMemoryRecordSource([lisinopril_record]), image_triager=triager)
    output = await _live_intake(context, message)

    assert len(output.turns) == 3  # the interview went on after the bad file
    assert [(i.id, i.filename, i.status) for i in output.images] == [
        ("image-1", "xray.png", "triaged"),
        ("image-2", "photo.png", "unreadable"),
    ]
    assert output.images[1].error is not None and "truncated" in output.images[1].error
    assert output.summary is not None
    [unreadable] = [f for f in output.summary.flags if "image-2" in f.message]
    assert unreadable.severity == "medium" and "could not be read" in unreadable.message
    assert len(output.summary.image_findings) == 1
    _patient_never_sees_triage(output)


async def test_a_triage_model_that_cannot_load_becomes_a_flag(tmp_path: Path, lisinopril_record: PatientRecord) -> None:
    warnings: list[str] = []
    missing = tmp_path / "no-model-here"
    missing.mkdir()
    lazy = LazyTriager(
        lambda: SiglipTriager.load(str(missing), local_files_only=True), str(missing), on_unavailable=warnings.append
    )
    context = IntakeContext(record_source=InMemoryRecordSource([lisinopril_record]), image_triager=lazy)
    message = PatientMessage(text="A rash on my arm.", images=[ImageAttachment(path=str(CXR))])
    output = await _live_intake(context, message)
    [image] = output.images
    assert image.status == "triage_failed" and image.filename == CXR.name
    assert output.summary is not None
    [flag] = [f for f in output.summary.flags if "image-1" in f.message]
    assert "could not be triaged" in flag.message and "huggingface-cli download" in flag.message
    assert len(warnings) == 1


async def test_the_verifier_removes_a_statement_citing_an_image_that_was_never_sent(triager: SiglipTriager) -> None:
    scenario = load_scenario(XRAY_SCENARIO)
    output = await run_scenario(
        scenario, BundleRecordSource(RECORDS), ScriptedChatModel(scenario.model_script), image_triager=triager
    )
    assert output.summary is not None
    invented = Statement(
        text="Image triage signal: mass", sources=[SourceRef(kind="image", ref="image-9")], origin="model"
    )
    tampered = output.summary.model_copy(update={"image_findings": [*output.summary.image_findings, invented]})
    record = await BundleRecordSource(RECORDS).fetch_record(scenario.patient_id)
    checked = verify_summary(tampered, output.turns, record, output.images)
    assert invented in checked.removed_statements
    assert len(checked.image_findings) == 1
    assert any("image-9, which is not an image attached" in f.message for f in checked.flags)


def test_scenario_images_resolve_against_the_file_and_missing_ones_are_named(tmp_path: Path) -> None:
    scenario = load_scenario(XRAY_SCENARIO)
    [scheduled] = scenario.scheduled_images()
    assert Path(scheduled.attachment.path) == CXR.resolve()
    text = XRAY_SCENARIO.read_text()
    moved = tmp_path / "moved.yaml"
    moved.write_text(text)
    with pytest.raises(ScenarioError, match=r"field 'images\.0\.path': no such image file"):
        load_scenario(moved)
    both = tmp_path / "both.yaml"
    both.write_text(text.replace("at_element: chief_complaint", "at_element: chief_complaint\n    at_turn: 2"))
    with pytest.raises(ScenarioError, match="exactly one of at_turn or at_element"):
        load_scenario(both)


async def test_image_records_survive_a_restart_through_the_sqlite_checkpointer(
    tmp_path: Path, triager: SiglipTriager, lisinopril_record: PatientRecord
) -> None:
    from graphs.checkpoint import open_checkpointer
    from graphs.session import inspect_session
    from tools.imaging.records import ImageRecord
    from tools.imaging.triage import TriageResult

    context = IntakeContext(record_source=InMemoryRecordSource([lisinopril_record]), image_triager=triager)
    config: dict[str, Any] = {"configurable": {"thread_id": "restart"}}
    message = PatientMessage(text="A cough.", images=[ImageAttachment(path=str(CXR), modality="chest_xray")])
    async with open_checkpointer(tmp_path) as saver:
        graph = compile_intake_graph(saver)
        await graph.ainvoke(IntakeInput(patient_id="p-1", max_questions=3), config, context=context)
        await graph.ainvoke(Command(resume=message.model_dump()), config, context=context)
    async with open_checkpointer(tmp_path, create=False) as saver:  # a new process, in effect
        view = await inspect_session(compile_intake_graph(saver), "restart")
    assert view.state is not None
    [image] = view.state.images
    assert isinstance(image, ImageRecord) and isinstance(image.triage, TriageResult)
    assert image.triage.probabilities[0].probability > 0


def test_chat_attaches_images_and_an_unloadable_image_model_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from previsit.cli import main

    lines = [
        f"/attach {CXR} chest_xray",
        "/attach does-not-exist.png",
        "A cough for three weeks.",
        "that's all",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    monkeypatch.setenv("PREVISIT_IMAGE_MODEL", str(tmp_path / "no-model"))
    code = main(
        [
            "chat",
            "--patient",
            "e4b9259d-0f54-48d1-a35d-b526729a4dfe",
            "--model",
            "none",
            "--max-questions",
            "3",
            "--data-dir",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "will be sent with your next answer" in captured.out
    assert "no such file" in captured.out
    assert "cannot load image triage model" in captured.err and "kept untriaged and flagged" in captured.err
    summary = (tmp_path / "out").rglob("summary.md")
    text = next(summary).read_text()
    assert "image-1 'cxr_nih_00000001_000_cardiomegaly.png' (sent at turn-1) could not be triaged" in text


def test_a_scheduled_image_comes_once_at_its_turn_or_at_the_first_question_about_its_element() -> None:
    from agents.coverage import IntakeElement
    from agents.transcript import Turn
    from graphs.images import ScheduledImage, scheduled_for

    by_turn = ScheduledImage(attachment=ImageAttachment(path="/a.png"), at_turn=2)
    by_element = ScheduledImage(attachment=ImageAttachment(path="/b.png"), at_element=IntakeElement.LOCATION)
    schedule = [by_turn, by_element]
    asked_location = Turn(
        id="turn-1",
        index=1,
        element=IntakeElement.LOCATION,
        question="Where?",
        question_source="template",
        answer="",
        answer_chars=0,
    )
    assert scheduled_for(schedule, 1, IntakeElement.LOCATION, []) == [by_element.attachment]
    assert scheduled_for(schedule, 2, IntakeElement.LOCATION, [asked_location]) == [by_turn.attachment]
    assert scheduled_for(schedule, 3, IntakeElement.ONSET, [asked_location]) == []
