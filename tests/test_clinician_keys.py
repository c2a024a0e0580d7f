"""Named clinician keys: each clinician gets a key of their own, the service stores only its digest,
and what that key approves or edits is recorded under that clinician's name, whatever header the
request carries. Once named keys exist, the shared key is off unless it is set on purpose."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from previsit.config import Settings
from previsit.service.clinician_keys import ClinicianKeysError, add_clinician_key, load_clinician_keys
from previsit.service.config import load_service_config, named_keys_file
from tests.cli_support import run_previsit
from tests.service_support import ANSWERS, CLINICIAN, CLINICIAN_KEY, MALIK, PROBLEM, running


def test_a_new_key_is_returned_once_and_only_its_digest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    alice = add_clinician_key(path, "Dr Alice Ng")
    bob = add_clinician_key(path, "Bob (nurse)")
    text = path.read_text()
    assert alice not in text and bob not in text
    assert f"Dr Alice Ng: sha256:{hashlib.sha256(alice.encode()).hexdigest()}" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = load_clinician_keys(path)
    assert keys.name_for(alice) == "Dr Alice Ng" and keys.name_for(bob) == "Bob (nurse)"
    assert keys.name_for(alice + "x") is None and keys.name_for("") is None
    with pytest.raises(ClinicianKeysError, match="already has a key"):
        add_clinician_key(path, "Dr Alice Ng")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("alice", "expected 'name: sha256:<hex>'"),
        ("alice:", "expected 'name: sha256:<hex>'"),
        ("alice: short", "shorter than 16 characters"),
        ("alice: sha256:abc", "64 lowercase hex digits"),
        ("alice: a-long-enough-plaintext-key\nalice: another-long-enough-key", "'alice' is listed twice"),
        ("alice: a-long-enough-plaintext-key\nbob: a-long-enough-plaintext-key", "same key as 'alice'"),
    ],
)
def test_a_bad_keys_file_names_the_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# clinic keys\n\n{line}\n")
    with pytest.raises(ClinicianKeysError) as error:
        load_clinician_keys(path)
    assert problem in str(error.value)
    assert f"{path}:{len(line.splitlines()) + 2}" in str(error.value)


def test_plaintext_keys_and_comments_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("carol: a-long-enough-plaintext-key   # until the clinic rotates it\n")
    assert load_clinician_keys(path).name_for("a-long-enough-plaintext-key") == "carol"


def test_a_keys_file_named_in_the_environment_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "keys"
    with pytest.raises(ClinicianKeysError, match=f"{missing}: cannot read the clinician keys file"):
        load_service_config(Settings(data_dir=tmp_path), environ={"PREVISIT_CLINICIAN_KEYS_FILE": str(missing)})


async def test_a_named_key_is_recorded_as_its_clinician_and_turns_the_shared_key_off(tmp_path: Path) -> None:
    alice = add_clinician_key(named_keys_file(tmp_path), "Dr Alice Ng")
    config = load_service_config(Settings(data_dir=tmp_path, model="none", max_questions=3), environ={})
    assert config.clinician_key is None and not (tmp_path / "clinician_key").exists()
    as_alice = {"Authorization": f"Bearer {alice}", "X-Clinician-Name": "Someone Else"}
    async with running(config) as api:
        refused = await api.client.post("/api/sessions", json={"patient_id": MALIK}, headers=CLINICIAN)
        assert refused.status_code == 401 and refused.headers["content-type"] == PROBLEM
        created = await api.client.post("/api/sessions", json={"patient_id": MALIK}, headers=as_alice)
        assert created.status_code == 201, created.text
        session = created.json()
        state = session["state"]
        for text in ANSWERS:
            if state["status"] != "awaiting_answer":
                break
            reply = await api.answer(session, text, turn=state["question"]["turn"])
            state = reply.json()
        approval = await api.client.post(f"/api/sessions/{session['session_id']}/approve", headers=as_alice)
        assert approval.status_code == 200 and approval.json()["approved_by"] == "Dr Alice Ng"


async def test_the_shared_key_set_on_purpose_works_beside_named_keys(tmp_path: Path) -> None:
    bob = add_clinician_key(named_keys_file(tmp_path), "Bob")
    settings = Settings(data_dir=tmp_path, model="none", max_questions=3)
    config = load_service_config(settings, environ={"PREVISIT_CLINICIAN_KEY": CLINICIAN_KEY})
    async with running(config) as api:
        for headers in (CLINICIAN, {"Authorization": f"Bearer {bob}"}):
            listed = await api.client.get("/api/sessions", headers=headers)
            assert listed.status_code == 200, listed.text


def test_the_cli_makes_keys_and_serve_refuses_a_broken_keys_file(tmp_path: Path) -> None:
    made = run_previsit("clinician-key", "Dr Alice Ng", data_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert load_clinician_keys(named_keys_file(tmp_path)).name_for(key) == "Dr Alice Ng"
    again = run_previsit("clinician-key", "Dr Alice Ng", data_dir=tmp_path)
    assert again.returncode == 2 and "already has a key" in again.stderr

    with named_keys_file(tmp_path).open("a") as handle:
        handle.write("no colon here\n")
    broken = run_previsit("serve", "--port", "1", data_dir=tmp_path)
    assert broken.returncode == 2
    assert f"{named_keys_file(tmp_path)}:2: expected 'name: sha256:<hex>'" in broken.stderr
