"""The HTTP API, specified through httpx against the ASGI app on real databases (SQLite and Postgres)."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from previsit.service.tokens import issue_token
from tests.conftest import RECORDS, REPO_ROOT
from tests.postgres_fixture import postgres_db, postgres_server  # noqa: F401 - fixtures
from tests.service_support import (
    ANSWERS,
    CLINICIAN,
    KARENA,
    MALIK,
    PROBLEM,
    GatedModel,
    make_config,
    parse_sse,
    patient_headers,
    running,
)
from tools.fhir.bundle_source import BundleRecordSource
from tools.models.protocol import ChatRequest, SchemaT, StructuredReply
from tools.models.scripted import StreamingScriptedChatModel


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "sessions.sqlite")
    url: str = request.getfixturevalue("postgres_db")
    return url


def _png(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_an_intake_runs_from_creation_to_a_summary_in_three_formats(tmp_path: Path, db: str) -> None:
    async with running(make_config(tmp_path, db)) as api:
        created = await api.create(reason_for_visit="easy bruising")
        first = created["state"]
        assert created["patient_url"] == f"/patient/{created['session_id']}#token={created['patient_token']}"
        assert first["status"] == "awaiting_answer"
        assert first["question"]["turn"] == 1 and first["question"]["text"]
        assert first["progress"] == {"asked": 1, "max_questions": 4, "covered": 0, "total": first["progress"]["total"]}
        assert first["review"] is None

        finished = await api.finish(created)
        assert [t["answer"] for t in finished["turns"]] == ANSWERS[:4]
        assert finished["question"] is None and finished["patient_message"]
        session_id = created["session_id"]

        as_patient = await api.state(session_id, patient_headers(created))
        assert as_patient["status"] == "finished" and as_patient["review"] is None
        assert (await api.state(session_id))["review"] == {
            "approved_at": None,
            "approved_by": None,
            "clinician_note": None,
            "edits": [],
            "writebacks": [],
            "escalated_by_clinician": False,
        }

        summary = await api.client.get(f"/api/sessions/{session_id}/summary", headers=CLINICIAN)
        assert summary.status_code == 200 and summary.json()["patient_id"] == MALIK
        assert summary.json()["questions_asked"] == 4
        markdown = await api.client.get(f"/api/sessions/{session_id}/summary?format=markdown", headers=CLINICIAN)
        assert markdown.headers["content-type"].startswith("text/markdown")
        assert markdown.text.startswith("# Pre-visit summary: Malik Ward")
        fhir = await api.client.get(f"/api/sessions/{session_id}/summary?format=fhir", headers=CLINICIAN)
        bundle = fhir.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
        assert "Composition" in {e["resource"]["resourceType"] for e in bundle["entry"]}

        listed = await api.client.get("/api/sessions", headers=CLINICIAN)
        [item] = listed.json()["sessions"]
        assert item["session_id"] == session_id and item["status"] == "finished"
        assert item["questions_asked"] == 4 and item["red_flag"] is False and item["approved"] is False


async def test_a_session_survives_a_restart_of_the_service(tmp_path: Path, db: str) -> None:
    config = make_config(tmp_path, db)
    async with running(config) as api:
        created = await api.create()
        assert (await api.answer(created, ANSWERS[0], turn=1)).status_code == 200
    async with running(config) as api:  # a new app on the same database: nothing in memory carried over
        state = await api.state(created["session_id"], patient_headers(created))
        assert state["question"]["turn"] == 2 and state["turns"][0]["answer"] == ANSWERS[0]
        finished = await api.finish({**created, "state": state})
        assert len(finished["turns"]) == 4


class CrashingModel(GatedModel):
    """Crashes (not a model error the graph falls back from) while `crash` is set: a dying model server."""

    crash = False

    async def complete(self, request: ChatRequest, schema: type[SchemaT]) -> StructuredReply[SchemaT]:
        if self.crash:
            raise RuntimeError("the model server went away")
        return await super().complete(request, schema)


async def test_a_turn_cut_short_keeps_the_answer_and_the_next_read_finishes_the_step(tmp_path: Path) -> None:
    model = CrashingModel()
    async with running(make_config(tmp_path), model=model) as api:
        created = await api.create()
        model.crash = True
        failed = await api.answer(created, ANSWERS[0], turn=1)
        assert failed.status_code == 500 and failed.headers["content-type"] == PROBLEM
        assert "model server" not in failed.text  # no internals in the problem
        view = await api.sessions.inspect(created["session_id"])
        assert view.status == "in_progress" and view.state is not None and len(view.state.turns) == 1
        model.crash = False
        state = await api.state(created["session_id"], patient_headers(created))
        assert state["question"]["turn"] == 2 and [t["answer"] for t in state["turns"]] == [ANSWERS[0]]
        assert (await api.answer(created, ANSWERS[1], turn=2)).status_code == 200


async def test_two_tabs_posting_at_once_one_wins_the_other_gets_409_and_nothing_is_lost(
    tmp_path: Path, db: str
) -> None:
    model = GatedModel()
    async with running(make_config(tmp_path, db), model=model) as api:
        created = await api.create()
        bystander = await api.create(KARENA)
        before = await api.state(bystander["session_id"])

        model.gate.clear()  # the next turn waits inside the interviewer until the gate opens
        first = asyncio.create_task(api.answer(created, "first tab"))
        second = asyncio.create_task(api.answer(created, "second tab"))
        done, _ = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        loser = done.pop().result()
        assert loser.status_code == 409
        assert loser.headers["content-type"] == PROBLEM and loser.headers["retry-after"] == "1"
        assert loser.json()["type"].endswith("/session-busy")
        model.gate.set()
        assert sorted([(await first).status_code, (await second).status_code]) == [200, 409]

        state = await api.state(created["session_id"])
        assert [t["answer"] for t in state["turns"]] in (["first tab"], ["second tab"])
        assert state["question"]["turn"] == 2
        retry = await api.answer(created, "the losing tab again")
        assert retry.status_code == 200 and len(retry.json()["turns"]) == 2
        assert await api.state(bystander["session_id"]) == before


async def test_a_retried_answer_is_recorded_once_and_a_stale_one_is_refused(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        created = await api.create()
        once = await api.answer(created, ANSWERS[0], turn=1)
        again = await api.answer(created, ANSWERS[0], turn=1)
        assert again.status_code == 200 and again.json() == once.json()
        assert len(again.json()["turns"]) == 1
        stale = await api.answer(created, "something else", turn=1)
        assert stale.status_code == 409 and stale.json()["type"].endswith("/turn-mismatch")
        ahead = await api.answer(created, "too soon", turn=5)
        assert ahead.status_code == 409
        assert len((await api.state(created["session_id"]))["turns"]) == 1


async def test_the_reply_streams_as_server_sent_events_ending_with_the_state(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        created = await api.create()
        response = await api.client.post(
            f"/api/sessions/{created['session_id']}/messages",
            json={"text": ANSWERS[0], "turn": 1},
            headers={**patient_headers(created), "Accept": "text/event-stream"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)
        names = [name for name, _ in events]
        assert names[-1] == "state" and set(names[:-1]) <= {"question_delta"}
        state = events[-1][1]
        assert state["question"]["turn"] == 2 and state["turns"][0]["answer"] == ANSWERS[0]
        deltas = "".join(data["text"] for name, data in events if name == "question_delta")
        assert not deltas or deltas.strip() == state["question"]["text"].strip()

        ended = await api.client.post(f"/api/sessions/{created['session_id']}/end", headers=CLINICIAN)
        assert ended.status_code == 200
        summary = (await api.client.get(f"/api/sessions/{created['session_id']}/summary", headers=CLINICIAN)).json()
        assert summary["stop_reason"] == "ended_by_clinician" and summary["questions_asked"] == 1
        refused = await api.client.post(
            f"/api/sessions/{created['session_id']}/messages",
            json={"text": "hello?"},
            headers={**patient_headers(created), "Accept": "text/event-stream"},
        )
        assert refused.status_code == 409 and refused.headers["content-type"] == PROBLEM


async def test_a_streaming_model_s_question_arrives_as_deltas_before_the_state(tmp_path: Path) -> None:
    model = StreamingScriptedChatModel(
        {"interviewer.ask": [{"question": "When did this start, and did it come on suddenly or gradually?"}] * 4}
    )
    async with running(make_config(tmp_path), model=model) as api:
        created = await api.create()
        response = await api.client.post(
            f"/api/sessions/{created['session_id']}/messages",
            json={"text": ANSWERS[0], "turn": 1},
            headers={**patient_headers(created), "Accept": "text/event-stream"},
        )
        events = parse_sse(response.text)
        deltas = [data for name, data in events if name == "question_delta"]
        assert len(deltas) > 1 and {d["turn"] for d in deltas} == {2}
        assert [name for name, _ in events][-1] == "state"
        question = events[-1][1]["question"]
        assert question["turn"] == 2 and "".join(d["text"] for d in deltas) == question["text"]


async def test_a_message_to_an_ended_session_is_a_409_and_the_summary_covers_what_was_said(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        created = await api.create()
        await api.answer(created, ANSWERS[0], turn=1)
        ended = await api.client.post(f"/api/sessions/{created['session_id']}/end", headers=patient_headers(created))
        assert ended.status_code == 200
        assert ended.json()["status"] == "ended" and ended.json()["question"] is None
        refused = await api.answer(created, "one more thing")
        assert refused.status_code == 409 and refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"].endswith("/session-ended") and refused.json()["status"] == 409
        again = await api.client.post(f"/api/sessions/{created['session_id']}/end", headers=CLINICIAN)
        assert again.status_code == 409
        summary = (await api.client.get(f"/api/sessions/{created['session_id']}/summary", headers=CLINICIAN)).json()
        assert summary["stop_reason"] == "patient_ended" and summary["questions_asked"] == 1
        assert len((await api.state(created["session_id"]))["turns"]) == 1


async def test_escalation_stops_the_intake_by_a_red_flag_or_by_the_clinician(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        flagged = await api.create()
        state = (await api.answer(flagged, "I have crushing chest pain spreading to my left arm right now")).json()
        assert state["status"] == "escalated" and state["red_flag"] is True
        assert "emergency" in state["patient_message"]

        sent_back = await api.create()
        escalated = await api.client.post(f"/api/sessions/{sent_back['session_id']}/escalate", headers=CLINICIAN)
        assert escalated.status_code == 200
        assert escalated.json()["status"] == "escalated" and escalated.json()["red_flag"] is False
        assert "care team" in escalated.json()["patient_message"]
        assert escalated.json()["turns"] == [] and escalated.json()["question"] is None
        summary = (await api.client.get(f"/api/sessions/{sent_back['session_id']}/summary", headers=CLINICIAN)).json()
        assert summary["stop_reason"] == "escalated_by_clinician" and summary["questions_asked"] == 0
        assert "Not covered: chief complaint (a clinician escalated the intake first)." in [
            flag["message"] for flag in summary["flags"]
        ]
        assert (await api.answer(sent_back, "hello")).status_code == 409
        by_patient = await api.client.post(
            f"/api/sessions/{sent_back['session_id']}/escalate", headers=patient_headers(sent_back)
        )
        assert by_patient.status_code == 401


async def test_an_ehr_launch_names_the_patient_and_must_come_from_the_configured_server(tmp_path: Path) -> None:
    # The EHR itself is not here: records come from the fixture bundles, the launch names the server.
    config = make_config(tmp_path, fhir_base="https://ehr.example/fhir")
    async with running(config, record_sources=lambda _: BundleRecordSource(RECORDS)) as api:
        launch = {"iss": "https://ehr.example/fhir", "patient": MALIK, "encounter": "enc-1"}
        created = await api.client.post("/api/sessions", json={"launch": launch}, headers=CLINICIAN)
        assert created.status_code == 201, created.text
        [item] = (await api.client.get("/api/sessions", headers=CLINICIAN)).json()["sessions"]
        assert item["patient_id"] == MALIK
        elsewhere = await api.client.post(
            "/api/sessions", json={"launch": {**launch, "iss": "https://other.example/fhir"}}, headers=CLINICIAN
        )
        assert elsewhere.status_code == 422 and elsewhere.headers["content-type"] == PROBLEM
        mismatch = await api.client.post(
            "/api/sessions", json={"patient_id": KARENA, "launch": launch}, headers=CLINICIAN
        )
        assert mismatch.status_code == 422
        nobody = await api.client.post("/api/sessions", json={}, headers=CLINICIAN)
        assert nobody.status_code == 422
        assert len((await api.client.get("/api/sessions", headers=CLINICIAN)).json()["sessions"]) == 1


async def test_tokens_open_only_their_own_session_until_they_expire(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        mine, theirs = await api.create(), await api.create(KARENA)
        sid = mine["session_id"]

        async def status_with(headers: dict[str, str]) -> tuple[int, str]:
            response = await api.client.get(f"/api/sessions/{sid}", headers=headers)
            return response.status_code, response.headers["content-type"]

        assert await status_with(patient_headers(mine)) == (200, "application/json")
        assert await status_with(patient_headers(theirs)) == (403, PROBLEM)
        assert await status_with({}) == (401, PROBLEM)
        assert await status_with({"Authorization": "Bearer v1.forged.signature"}) == (401, PROBLEM)
        tampered = mine["patient_token"][:-2] + ("AA" if not mine["patient_token"].endswith("AA") else "BB")
        assert await status_with({"Authorization": f"Bearer {tampered}"}) == (401, PROBLEM)
        record = await api.sessions.store.get(sid)
        assert record is not None
        secret = api.config.secret.get_secret_value()
        expired = issue_token(secret, sid, record.token_nonce, ttl_s=60, now=time.time() - 3600)
        response = await api.client.get(f"/api/sessions/{sid}", headers={"Authorization": f"Bearer {expired}"})
        assert response.status_code == 401 and "expired" in response.json()["detail"]
        revoked = issue_token(secret, sid, "another-nonce", ttl_s=60)
        assert await status_with({"Authorization": f"Bearer {revoked}"}) == (401, PROBLEM)
        other_secret = issue_token("not-the-server-secret", sid, record.token_nonce, ttl_s=60)
        assert await status_with({"Authorization": f"Bearer {other_secret}"}) == (401, PROBLEM)

        # Clinician endpoints take only the clinician key; the key also reads patient endpoints.
        assert await status_with(CLINICIAN) == (200, "application/json")
        for headers in ({}, patient_headers(mine), {"Authorization": "Bearer wrong-key"}):
            listed = await api.client.get("/api/sessions", headers=headers)
            assert listed.status_code == 401 and listed.headers["content-type"] == PROBLEM
            summary = await api.client.get(f"/api/sessions/{sid}/summary", headers=headers)
            assert summary.status_code == 401
        # A patient answers only with their own token, never with the clinician key.
        assert (await api.answer({**mine, "patient_token": theirs["patient_token"]}, "hi")).status_code == 403
        assert (
            await api.client.post(f"/api/sessions/{sid}/messages", json={"text": "x"}, headers=CLINICIAN)
        ).status_code == 401
        assert len((await api.state(sid))["turns"]) == 0


async def _chunks(total: int, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"\0" * min(size, total - sent)
        sent += size


async def test_a_50_mb_upload_is_refused_with_413_and_nothing_is_stored(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        created = await api.create()
        sid = created["session_id"]
        url = f"/api/sessions/{sid}/images"
        big = b"\x89PNG\r\n\x1a\n" + b"\0" * (50 * 1024 * 1024)
        declared = await api.client.post(
            url, files={"file": ("big.png", big, "image/png")}, headers=patient_headers(created)
        )
        assert declared.status_code == 413 and declared.headers["content-type"] == PROBLEM
        # Without a Content-Length (chunked), the body is cut off as it streams past the limit.
        boundary = "previsit-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()

        async def body() -> AsyncIterator[bytes]:
            yield head + b"\x89PNG\r\n\x1a\n"
            async for chunk in _chunks(50 * 1024 * 1024):
                yield chunk
            yield f"\r\n--{boundary}--\r\n".encode()

        streamed = await api.client.post(
            url,
            content=body(),
            headers={**patient_headers(created), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert streamed.status_code == 413 and streamed.headers["content-type"] == PROBLEM
        uploads = tmp_path / "uploads"
        assert not uploads.exists() or not any(uploads.rglob("*"))
        state = await api.state(sid)
        assert state["turns"] == [] and state["question"]["turn"] == 1

        too_long = await api.client.post(
            f"/api/sessions/{sid}/messages",
            content=b'{"text": "' + b"a" * (300 * 1024) + b'"}',
            headers={**patient_headers(created), "Content-Type": "application/json"},
        )
        assert too_long.status_code == 413 and too_long.headers["content-type"] == PROBLEM


async def test_an_image_answer_is_stored_under_a_random_name_and_shown_to_clinicians_only(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        created = await api.create()
        sid = created["session_id"]
        not_image = await api.client.post(
            f"/api/sessions/{sid}/images",
            files={"file": ("notes.png", b"%PDF-1.4 not an image", "image/png")},
            headers=patient_headers(created),
        )
        assert not_image.status_code == 422 and not_image.json()["type"].endswith("/not-an-image")
        damaged = await api.client.post(
            f"/api/sessions/{sid}/images",
            files={"file": ("cut.png", _png()[:40], "image/png")},
            headers=patient_headers(created),
        )
        assert damaged.status_code == 422
        assert (await api.state(sid))["turns"] == []

        png = _png()
        response = await api.client.post(
            f"/api/sessions/{sid}/images",
            files={"file": ("../../etc/rash.png", png, "image/png")},
            data={"text": "here is the bruise", "modality": "dermatology"},
            headers=patient_headers(created),
        )
        assert response.status_code == 200, response.text
        turn = response.json()["turns"][0]
        assert turn["answer"] == "here is the bruise"
        [image] = turn["images"]
        assert image["filename"] == "../../etc/rash.png" and image["turn_id"] == "turn-1"
        assert image["triage"] is None  # patients never see triage
        [stored] = list((tmp_path / "uploads" / sid).iterdir())
        assert stored.name != "rash.png" and stored.read_bytes() == png
        fetched = await api.client.get(f"/api/sessions/{sid}/images/{image['id']}", headers=CLINICIAN)
        assert fetched.status_code == 200 and fetched.content == png
        assert fetched.headers["content-type"] == "image/png"
        hidden = await api.client.get(f"/api/sessions/{sid}/images/{image['id']}", headers=patient_headers(created))
        assert hidden.status_code == 401
        # The intake recorded the attachment; the default triage model is not on this machine, and it says so.
        [seen] = (await api.state(sid))["turns"][0]["images"]
        assert seen["ref"] == "image-1" and seen["status"] == "triage_failed"
        assert "huggingface-cli download google/medsiglip-448" in seen["error"]
        assert image["status"] is None and image["error"] is None  # the patient's view carries none of it

        dicom = (REPO_ROOT / "fixtures" / "images" / "encapsulated_cxr.dcm").read_bytes()
        response = await api.client.post(
            f"/api/sessions/{sid}/images",
            files={"file": ("chest.dcm", dicom, "application/octet-stream")},
            headers=patient_headers(created),
        )
        assert response.status_code == 200, response.text
        [scan] = response.json()["turns"][1]["images"]
        rendered = await api.client.get(f"/api/sessions/{sid}/images/{scan['id']}", headers=CLINICIAN)
        assert rendered.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(rendered.content)).size[0] > 0


async def test_errors_are_problem_details(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        checks = [
            await api.client.get("/api/sessions/no-such-session", headers=CLINICIAN),
            await api.client.post("/api/sessions", json={"reason_for_visit": 3}, headers=CLINICIAN),
            await api.client.post("/api/sessions", json={"patient_id": "nobody-like-this"}, headers=CLINICIAN),
            await api.client.get("/api/nothing-here"),
            await api.client.post(
                "/api/sessions", content=b"{not json", headers={**CLINICIAN, "Content-Type": "application/json"}
            ),
        ]
        assert [r.status_code for r in checks] == [404, 422, 422, 404, 422]
        for response in checks:
            assert response.headers["content-type"] == PROBLEM
            body = response.json()
            assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == response.status_code
        created = await api.create()
        early = await api.client.get(f"/api/sessions/{created['session_id']}/summary", headers=CLINICIAN)
        assert early.status_code == 409 and early.json()["type"].endswith("/no-summary")


async def test_docs_are_served_from_the_package_without_a_cdn_and_cors_is_closed(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as api:
        docs = await api.client.get("/docs")
        assert docs.status_code == 200
        assert "cdn" not in docs.text.lower() and "https://" not in docs.text
        assets = await api.client.get("/docs/assets/swagger-ui-bundle.js")
        assert assets.status_code == 200 and len(assets.content) > 100_000
        schema = (await api.client.get("/openapi.json")).json()
        assert "/api/sessions/{session_id}/messages" in schema["paths"]
        preflight = await api.client.options(
            "/api/sessions",
            headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
    async with running(make_config(tmp_path, cors_origins=["https://portal.example"])) as api:
        preflight = await api.client.options(
            "/api/sessions",
            headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://portal.example"


async def test_logs_carry_no_patient_words_tokens_or_query_strings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="previsit")
    secret_words = "my neighbour Rumpelstiltskin bruised me"
    async with running(make_config(tmp_path)) as api:
        created = await api.create()
        await api.answer(created, secret_words)
        await api.client.get(f"/api/sessions/{created['session_id']}?token={created['patient_token']}")
        await api.client.post(f"/api/sessions/{created['session_id']}/end", headers=CLINICIAN)
    # The service's own loggers, at every level (the test client's httpx log is not the server's).
    text = "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("previsit"))
    assert f"/api/sessions/{created['session_id']}/messages 200" in text
    assert "Rumpelstiltskin" not in text and created["patient_token"] not in text and "token=" not in text
    assert "Malik" not in text and CLINICIAN["Authorization"].split()[1] not in text


async def test_an_uploaded_image_is_triaged_by_the_configured_model_and_the_signal_reaches_clinicians_only(
    tmp_path: Path, tiny_siglip_dir: Path
) -> None:
    """The service loads the triage model named in the settings (the tiny SigLIP through the real loading path)."""
    config = make_config(tmp_path)
    settings = config.settings.model_copy(update={"image_model": str(tiny_siglip_dir)})
    config = config.model_copy(update={"settings": settings})
    async with running(config) as api:
        created = await api.create()
        sid = created["session_id"]
        xray = (REPO_ROOT / "fixtures" / "images" / "cxr_nih_00000001_000_cardiomegaly.png").read_bytes()
        response = await api.client.post(
            f"/api/sessions/{sid}/images",
            files={"file": ("chest.png", xray, "image/png")},
            data={"text": "my chest x-ray from last week", "modality": "chest_xray"},
            headers=patient_headers(created),
        )
        assert response.status_code == 200, response.text
        patient_view = response.json()
        assert patient_view["turns"][0]["images"][0]["triage"] is None
        assert "triage" not in str(patient_view.get("question") or "").lower()

        [seen] = (await api.state(sid))["turns"][0]["images"]
        assert seen["status"] == "triaged", seen
        assert seen["triage"]

        finished = await api.finish({**created, "state": patient_view})
        assert finished["status"] == "finished"
        markdown = await api.client.get(f"/api/sessions/{sid}/summary?format=markdown", headers=CLINICIAN)
        assert "Image triage signal (not a diagnosis)" in markdown.text
        assert "image-1" in markdown.text
