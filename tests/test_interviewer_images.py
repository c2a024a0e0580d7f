"""A multimodal interviewer sees the images a patient attached, beside the answer they came with.

The model is the scenario's scripted backend behind a recorder (a fake that keeps every request),
so the test reads the prompts the interviewer actually sent; triage results must never be in them.
"""

from __future__ import annotations

from pathlib import Path

from graphs.scenario import load_scenario
from graphs.scenario_run import run_scenario
from tests.conftest import RECORDS, SCENARIOS
from tools.fhir.bundle_source import BundleRecordSource
from tools.imaging.triage import SiglipTriager
from tools.models.protocol import ChatRequest, SchemaT, StructuredReply
from tools.models.scripted import ScriptedChatModel

NED_XRAY = SCENARIOS / "synthea-ned-hintz-cough-sends-chest-xray.yaml"


class RecordingModel:
    """The scripted backend, keeping every request it was sent."""

    def __init__(self, inner: ScriptedChatModel) -> None:
        self.inner = inner
        self.requests: list[ChatRequest] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def is_demo(self) -> bool:
        return False

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        self.requests.append(request)
        return await self.inner.complete(request, schema)


def _interviewer_requests(model: RecordingModel) -> list[ChatRequest]:
    return [r for r in model.requests if r.task.startswith("interviewer.ask")]


async def test_the_image_rides_on_the_answer_it_was_sent_with_in_every_later_question(tiny_siglip_dir: Path) -> None:
    scenario = load_scenario(NED_XRAY)
    model = RecordingModel(ScriptedChatModel(scenario.model_script))
    triager = SiglipTriager.load(str(tiny_siglip_dir), local_files_only=True)
    output = await run_scenario(scenario, BundleRecordSource(RECORDS), model, image_triager=triager)

    [image] = output.images
    assert image.status == "triaged" and image.turn_id == "turn-1"
    asks = _interviewer_requests(model)
    assert len(asks) == len(output.turns) >= 3
    assert all(not any(m.images for m in request.messages) for request in asks[:1])  # nothing sent yet
    for request in asks[1:]:
        with_images = [m for m in request.messages if m.images]
        assert [m.images for m in with_images] == [[image.path]]
        assert with_images[0].role == "user" and with_images[0].content.startswith(
            f"Patient: {output.turns[0].answer[:40]}"
        )
    prompts = "\n".join(m.content for request in asks for m in request.messages).lower()
    assert "triage" not in prompts and "cardiomegaly" not in prompts


async def test_an_unreadable_attachment_is_never_put_in_front_of_the_model(tmp_path: Path) -> None:
    scenario = load_scenario(NED_XRAY)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    scenario = scenario.model_copy(update={"images": [scenario.images[0].model_copy(update={"path": str(broken)})]})
    model = RecordingModel(ScriptedChatModel(scenario.model_script))
    output = await run_scenario(scenario, BundleRecordSource(RECORDS), model)

    [image] = output.images
    assert image.status == "unreadable"
    assert all(not m.images for request in _interviewer_requests(model) for m in request.messages)
