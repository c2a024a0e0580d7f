"""Review and write-back through the API, against a real FHIR server (SEKMET on a loopback port).

The service reads the chart from the server and writes the approved summary back to it: edits are
kept beside the original, approval gates write-back, an edit withdraws approval, and a second
write-back creates nothing new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from previsit import sandbox
from tests.conftest import RECORDS
from tests.service_support import CLINICIAN, MALIK, make_config, running
from tools.fhir.auth import NoAuth
from tools.fhir.client import FhirClient

REVIEWER = {**CLINICIAN, "X-Clinician-Name": "Dr Test"}


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("sekmet-service")
    info, _ = sandbox.start(data_dir, port=sandbox.free_port())
    try:

        async def load() -> None:
            async with FhirClient(info.base_url, auth=NoAuth(), timeout_s=60) as client:
                bundle = next((RECORDS / "synthea").glob(f"*_{MALIK}.json"))
                [result] = await sandbox.load_bundles(client, [bundle])
                assert result.error is None, result.error

        asyncio.run(load())
        yield info.base_url
    finally:
        assert sandbox.stop(data_dir) is not None


async def test_edit_approve_and_write_back_to_a_real_fhir_server(tmp_path: Path, fhir_server: str) -> None:
    config = make_config(tmp_path, fhir_base=fhir_server)
    config = config.model_copy(update={"settings": config.settings.model_copy(update={"fhir_base": fhir_server})})
    async with running(config) as api:
        created = await api.create(reason_for_visit="easy bruising")
        await api.finish(created)
        sid = created["session_id"]
        base = f"/api/sessions/{sid}"

        refused = await api.client.post(f"{base}/writeback", headers=REVIEWER)
        assert refused.status_code == 409 and refused.json()["type"].endswith("/not-approved")

        original = (await api.client.get(f"{base}/summary", headers=REVIEWER)).json()
        assert len(original["medications"]) >= 2, "the fixture patient has several medications"
        patch = {
            "clinician_note": "Reviewed with the patient by phone.",
            "edits": [
                {"section": "Medications", "index": 0, "text": "Warfarin as listed (clinician checked)"},
                {"section": "medications", "index": 1, "text": None},
            ],
        }
        edited = await api.client.patch(f"{base}/summary", json=patch, headers=REVIEWER)
        assert edited.status_code == 200, edited.text
        meds = edited.json()["medications"]
        assert meds[0]["text"] == "Warfarin as listed (clinician checked)"
        assert meds[0]["sources"] == original["medications"][0]["sources"]
        assert len(meds) == len(original["medications"]) - 1
        kept = (await api.client.get(f"{base}/summary?version=original", headers=REVIEWER)).json()
        assert kept["medications"] == original["medications"]
        bad = await api.client.patch(
            f"{base}/summary", json={"edits": [{"section": "medications", "index": 99, "text": "x"}]}, headers=REVIEWER
        )
        assert bad.status_code == 422
        unknown = await api.client.patch(
            f"{base}/summary", json={"edits": [{"section": "horoscope", "index": 0, "text": "x"}]}, headers=REVIEWER
        )
        assert unknown.status_code == 422

        approval = await api.client.post(f"{base}/approve", headers=REVIEWER)
        assert approval.status_code == 200 and approval.json()["approved_by"] == "Dr Test"
        review = (await api.state(sid))["review"]
        assert [(e["section"], e["index"], e["by"]) for e in review["edits"]] == [
            ("medications", 0, "Dr Test"),
            ("medications", 1, "Dr Test"),
        ]
        assert review["clinician_note"] == "Reviewed with the patient by phone."
        markdown = (await api.client.get(f"{base}/summary?format=markdown", headers=REVIEWER)).text
        assert "Warfarin as listed (clinician checked)" in markdown and "## Clinician edits" in markdown
        assert "Approved by Dr Test" in markdown

        written = await api.client.post(f"{base}/writeback", headers=REVIEWER)
        assert written.status_code == 200, written.text
        first = written.json()
        assert first["written"] and not first["already_present"]
        composition = next(ref for ref in first["written"] if ref.startswith("Composition/"))
        async with FhirClient(fhir_server, auth=NoAuth(), timeout_s=30) as client:
            resource = await client.get_json(composition)
        assert "clinician checked" in str(resource)

        again = (await api.client.post(f"{base}/writeback", headers=REVIEWER)).json()
        assert again["written"] == [] and sorted(again["already_present"]) == sorted(first["written"])
        assert len((await api.state(sid))["review"]["writebacks"]) == 2

        await api.client.patch(
            f"{base}/summary",
            json={"edits": [{"section": "medications", "index": 0, "text": "changed"}]},
            headers=REVIEWER,
        )
        state = await api.state(sid)
        assert state["approved"] is False
        assert (await api.client.post(f"{base}/writeback", headers=REVIEWER)).status_code == 409


async def test_write_back_needs_a_configured_fhir_server(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        created = await api.create()
        await api.finish(created)
        base = f"/api/sessions/{created['session_id']}"
        assert (await api.client.post(f"{base}/approve", headers=CLINICIAN)).status_code == 200
        refused = await api.client.post(f"{base}/writeback", headers=CLINICIAN)
        assert refused.status_code == 409 and refused.json()["type"].endswith("/no-fhir")
