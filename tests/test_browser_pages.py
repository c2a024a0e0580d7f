"""The web pages in a real browser: Playwright drives Debian's Chromium against the real app.

One uvicorn server (the app from `create_app`, deterministic `none` model) serves this module; its
records come from, and its write-back goes to, a real SEKMET FHIR sandbox on loopback. Sessions are
created through the API as a clinician would. A full-page screenshot of every page lands in
`test-artifacts/` (or `$PREVISIT_TEST_ARTIFACTS`) for a person to look at.

Browsers are never downloaded: the `playwright` package only drives `/usr/bin/chromium`
(`scripts/system_deps.sh` installs it). Without Chromium these tests skip, except under CI where
they fail, so a CI machine without a browser cannot pass silently.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from previsit import sandbox
from previsit.config import Settings
from previsit.service.app import create_app
from previsit.service.backend import open_backend
from previsit.service.config import load_service_config
from tests.conftest import FIXTURES, RECORDS, REPO_ROOT
from tools.fhir.auth import BearerTokenAuth
from tools.fhir.client import FhirClient

playwright_api = pytest.importorskip("playwright.sync_api")
Browser = playwright_api.Browser
Page = playwright_api.Page
expect = playwright_api.expect
expect.set_options(timeout=20_000)  # generous: CI machines and shared runners can be slow

CHROMIUM = os.environ.get("PREVISIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NED = "e4b9259d-0f54-48d1-a35d-b526729a4dfe"  # the smallest Synthea bundle: quick to load
NED_BUNDLE = next((RECORDS / "synthea").glob(f"*_{NED}.json"))
FHIR_TOKEN = "browser-" + secrets.token_urlsafe(16)
CLINICIAN_KEY = "clinician-" + secrets.token_urlsafe(16)
ANSWERS = [
    "I've been getting headaches on most days.",
    "They started about three weeks ago.",
    "Across my forehead and at the back of my head.\nSometimes down into my neck.",
    "A dull, heavy ache, about 6 out of 10.",
    "Lying down in a dark room helps a bit.",
    "No, I don't have any allergies.",
    "I want to know if my blood pressure is behind these headaches.",
]
UPLOAD_LIMIT = 1024 * 1024
EMERGENCY_ANSWER = "I have crushing chest pain spreading to my left arm and I can't breathe."

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/system_deps.sh", pytrace=False)
    pytest.skip(f"Chromium not found at {CHROMIUM} (scripts/system_deps.sh installs it)", allow_module_level=True)


@dataclass(frozen=True)
class Service:
    base_url: str
    fhir_base: str
    db: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {CLINICIAN_KEY}"}, timeout=60)

    def create_session(self, reason: str, max_questions: int = 5) -> dict[str, Any]:
        with self.api() as client:
            response = client.post(
                "/api/sessions", json={"patient_id": NED, "reason_for_visit": reason, "max_questions": max_questions}
            )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@pytest.fixture(scope="module")
def artifacts() -> Path:
    directory = Path(os.environ.get("PREVISIT_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def fhir_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("sekmet")
    info, _ = sandbox.start(
        data_dir, port=sandbox.free_port(), server_auth={"types": ["bearer"], "tokens": [FHIR_TOKEN]}
    )
    try:

        async def load() -> None:
            async with FhirClient(info.base_url, auth=BearerTokenAuth(FHIR_TOKEN), timeout_s=60) as client:
                results = await sandbox.load_bundles(client, [NED_BUNDLE])
            assert all(r.error is None for r in results), results

        # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, load()).result()
        yield info.base_url
    finally:
        assert sandbox.stop(data_dir) is not None


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, fhir_base: str) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=data_dir, model="none", fhir_base=fhir_base, fhir_token=FHIR_TOKEN)
    config = load_service_config(
        settings,
        fhir_base=fhir_base,
        environ={
            "PREVISIT_CLINICIAN_KEY": CLINICIAN_KEY,
            "PREVISIT_SERVICE_SECRET": secrets.token_urlsafe(32),
            # Small, so the too-large upload stays quick to send through the browser.
            "PREVISIT_SERVICE_UPLOAD_LIMIT": str(UPLOAD_LIMIT),
        },
    )
    port = sandbox.free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="previsit-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield Service(f"http://127.0.0.1:{port}", fhir_base, config.db)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (own sessionStorage) that fails the test on any console error or page error,
    which is also how a Content-Security-Policy violation would show."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield tab
    context.close()
    provoked = re.compile(r"Failed to load resource: the server responded with a status of (401|409|413|422)\b")
    assert [p for p in problems if not provoked.search(p)] == []  # only the refusals tests provoke on purpose


def screenshot(page: Page, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000


# A small, download-free stand-in for axe: the checks that catch most real regressions.
ACCESSIBILITY_AUDIT = """
() => {
  const problems = [];
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  for (const field of document.querySelectorAll("input, textarea, select")) {
    if (field.type === "hidden") continue;
    const named = field.labels?.length || field.getAttribute("aria-label") || field.getAttribute("aria-labelledby");
    if (!named) problems.push(`unlabelled ${field.tagName.toLowerCase()}#${field.id}`);
  }
  for (const img of document.querySelectorAll("img")) {
    if (!img.hasAttribute("alt")) problems.push(`img without alt: ${img.src}`);
  }
  for (const button of document.querySelectorAll("button, a[href]")) {
    const named = button.textContent.trim() || button.getAttribute("aria-label");
    if (visible(button) && !named) problems.push(`unnamed ${button.outerHTML}`);
  }
  if (!document.querySelector("main")) problems.push("no main landmark");
  if (!document.querySelector("body > header")) problems.push("no banner landmark");
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  if (!document.documentElement.lang) problems.push("no lang on html");
  const ids = [...document.querySelectorAll("[id]")].map((el) => el.id);
  for (const id of new Set(ids)) if (ids.filter((x) => x === id).length > 1) problems.push(`duplicate id ${id}`);
  for (const el of document.querySelectorAll("[aria-controls], [aria-labelledby], [aria-describedby]")) {
    for (const attr of ["aria-controls", "aria-labelledby", "aria-describedby"]) {
      for (const ref of (el.getAttribute(attr) || "").split(/\\s+/).filter(Boolean)) {
        if (!document.getElementById(ref)) problems.push(`${attr} points nowhere: ${ref}`);
      }
    }
  }
  // WCAG contrast of every visible text against the first opaque background behind it.
  const rgb = (value) => (value.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const bg = rgb(getComputedStyle(node).backgroundColor);
      if (bg.length === 3 || (bg.length === 4 && bg[3] === 1)) return bg.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const checked = new Set();
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || checked.has(el) || !visible(el)) continue;
    checked.add(el);
    const style = getComputedStyle(el);
    if (el.closest(".visually-hidden, .skip-link")) continue;
    const fg = lum(rgb(style.color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const text = el.textContent.trim().slice(0, 40);
    if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: "${text}"`);
  }
  return problems;
}
"""


def assert_accessible(page: Page) -> None:
    assert page.evaluate(ACCESSIBILITY_AUDIT) == []


def answer_until_done(page: Page, answers: list[str]) -> int:
    """Answer each open question by keyboard (Enter sends) until the closing message; returns turns."""
    turns = 0
    closing = page.locator(".bubble.closing")
    while not closing.is_visible():
        assert turns < len(answers), "the intake did not finish within the scripted answers"
        expect(page.locator("#answer")).to_be_enabled()
        asked = page.locator(".bubble.question").count()
        page.locator("#answer").fill(answers[turns])
        with page.expect_response(re.compile(r"/messages$")) as reply:
            page.locator("#answer").press("Enter")
        assert reply.value.status == 200
        assert reply.value.headers["content-type"].startswith("text/event-stream")
        turns += 1
        sent = page.locator(".bubble.answer").nth(turns - 1)
        expect(sent).to_contain_text(answers[turns - 1].split("\n")[0])
        page.wait_for_function(
            "(asked) => document.querySelectorAll('.bubble.question').length > asked"
            " || !!document.querySelector('.bubble.closing')",
            arg=asked,
        )
    return turns


def test_the_event_stream_parser_takes_chunks_split_anywhere(page: Page, service: Service) -> None:
    page.goto(f"{service.base_url}/clinician")
    events = page.evaluate(
        """async () => {
          const { SseParser } = await import("/static/api.js");
          const parser = new SseParser();
          const chunks = ["event: question_delta\\r", "\\ndata: {\\"text\\": \\"Hel",
                          "lo\\"}\\r\\n\\r\\n: keep-alive\\n",
                          "event: state\\ndata: line one\\ndata:line two\\n\\n", "data: unterminated"];
          const out = chunks.flatMap((chunk) => parser.push(chunk));
          return [...out, ...parser.finish()];
        }"""
    )
    assert events == [
        {"event": "question_delta", "data": '{"text": "Hello"}'},
        {"event": "state", "data": "line one\nline two"},
        {"event": "message", "data": "unterminated"},
    ]


def test_pages_are_served_with_a_strict_content_security_policy(service: Service) -> None:
    with httpx.Client(base_url=service.base_url) as client:
        for path in ("/patient/some-id", "/clinician", "/clinician/sessions/some-id"):
            response = client.get(path)
            assert response.status_code == 200
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert "<script" not in response.text.replace('<script type="module" src="/static/', "")
        assert client.get("/static/api.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/static/../pages.py").status_code == 404
        assert client.get("/static/%2e%2e/pages.py").status_code == 404


def test_a_patient_answers_every_question_and_sees_the_closing_message(
    page: Page, service: Service, artifacts: Path
) -> None:
    created = service.create_session("Headaches", max_questions=5)
    page.goto(service.base_url + created["patient_url"])
    first_question = created["state"]["question"]["text"]
    expect(page.locator(".bubble.question").first).to_contain_text(first_question)
    assert "token" not in page.url  # dropped from the address bar once read
    expect(page.locator("#progress-text")).to_contain_text("Question 1 of up to 5")
    assert_accessible(page)
    screenshot(page, artifacts, "patient-first-question")

    turns = answer_until_done(page, ANSWERS)

    assert turns >= 2
    expect(page.locator(".bubble.closing")).to_be_visible()
    expect(page.locator("#composer")).to_be_hidden()
    expect(page.locator("#answer")).to_be_disabled()
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#emergency")).to_be_hidden()
    expect(page.locator("#progress-text")).to_contain_text(f"{turns} questions answered")
    state = httpx.get(
        f"{service.base_url}/api/sessions/{created['session_id']}",
        headers={"Authorization": f"Bearer {created['patient_token']}"},
    ).json()
    assert state["status"] == "finished"
    expect(page.locator(".bubble.closing")).to_contain_text(state["patient_message"])
    assert [t["answer"] for t in state["turns"]] == ANSWERS[:turns]
    # A reload keeps the conversation: the token stayed in this tab's sessionStorage.
    page.reload()
    expect(page.locator(".bubble.answer")).to_have_count(turns)
    assert_accessible(page)
    screenshot(page, artifacts, "patient-finished")


def test_a_red_flag_answer_shows_the_emergency_banner_and_stops_the_chat(
    page: Page, service: Service, artifacts: Path
) -> None:
    created = service.create_session("Chest pain")
    page.goto(service.base_url + created["patient_url"])
    page.locator("#answer").fill(EMERGENCY_ANSWER)
    page.locator("#send").click()

    banner = page.get_by_role("alert").filter(has_text="Please seek emergency care now")
    expect(banner).to_be_visible()
    state = httpx.get(
        f"{service.base_url}/api/sessions/{created['session_id']}",
        headers={"Authorization": f"Bearer {created['patient_token']}"},
    ).json()
    assert state["red_flag"] and state["status"] == "escalated"
    expect(banner).to_contain_text(state["patient_message"])
    expect(page.locator("#composer")).to_be_hidden()
    for control in ("#answer", "#send", "#image", "#upload"):
        expect(page.locator(control)).to_be_disabled()
    assert_accessible(page)
    screenshot(page, artifacts, "patient-red-flag")


def test_keyboard_only_skip_link_type_and_enter(page: Page, service: Service) -> None:
    created = service.create_session("Headaches")
    page.goto(service.base_url + created["patient_url"])
    expect(page.locator(".bubble.question")).to_have_count(1)
    assert page.evaluate("document.activeElement === document.body")  # nothing grabs focus on load

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to your answer"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "answer"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"  # focus is visible
    page.keyboard.type("Since Monday")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("mostly in the mornings")
    page.keyboard.press("Enter")

    expect(page.locator(".bubble.answer")).to_contain_text("Since Monday\nmostly in the mornings")
    expect(page.locator(".bubble.question")).to_have_count(2)
    assert page.evaluate("document.activeElement.id") == "answer"  # ready for the next answer


def test_a_wrong_link_says_so_plainly(page: Page, service: Service) -> None:
    created = service.create_session("Headaches")
    page.goto(f"{service.base_url}/patient/{created['session_id']}#token=not-a-real-token")
    expect(page.locator("#error")).to_contain_text("expired or is not valid")
    expect(page.locator("#answer")).to_be_disabled()
    # The refused token was forgotten: a reload without one asks for the full link.
    page.goto(f"{service.base_url}/patient/{created['session_id']}")
    expect(page.locator("#error")).to_contain_text("needs the full link")


def _finished_session(service: Service) -> dict[str, Any]:
    created = service.create_session("Headaches", max_questions=4)
    headers = {"Authorization": f"Bearer {created['patient_token']}"}
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=60) as client:
        state = created["state"]
        for answer in ANSWERS:
            if state["status"] != "awaiting_answer":
                break
            response = client.post(f"/api/sessions/{created['session_id']}/messages", json={"text": answer})
            assert response.status_code == 200, response.text
            state = response.json()
    assert state["status"] == "finished", state
    return created


def test_a_clinician_reviews_flags_first_edits_approves_and_writes_back(
    page: Page, service: Service, artifacts: Path
) -> None:
    created = _finished_session(service)
    session_id = created["session_id"]

    page.goto(f"{service.base_url}/clinician")
    page.get_by_label("Clinician key").fill("wrong-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("not accepted")
    page.get_by_label("Clinician key").fill(CLINICIAN_KEY)
    page.get_by_label("Clinician key").press("Enter")
    row = page.locator("#sessions-body tr").filter(has=page.locator(f'a[href="/clinician/sessions/{session_id}"]'))
    expect(row).to_contain_text("Finished")
    # Starting an intake from the page gives the patient's private link.
    page.get_by_label("Patient id").fill(NED)
    page.get_by_label("Reason for visit (optional)").fill("Cough")
    page.get_by_role("button", name="Start intake").click()
    link = page.get_by_label("Patient link")
    expect(link).to_have_value(re.compile(rf"^{re.escape(service.base_url)}/patient/\w+#token=.+"))
    assert_accessible(page)
    screenshot(page, artifacts, "clinician-sessions")

    row.get_by_role("link").click()
    expect(page.locator("#summary")).to_be_visible()
    # Red flags and uncertainties come before the summary body, in the page and on screen.
    attention, summary = page.locator("#attention"), page.locator("#summary")
    assert attention.bounding_box()["y"] < summary.bounding_box()["y"]  # type: ignore[index]
    flags = httpx.get(
        f"{service.base_url}/api/sessions/{session_id}/summary",
        headers={"Authorization": f"Bearer {CLINICIAN_KEY}"},
    ).json()["flags"]
    for severity in {f["severity"] for f in flags}:
        group = page.locator(f'.severity-group[data-severity="{severity}"]')
        expect(group.locator("ul.flags > li")).to_have_count(sum(1 for f in flags if f["severity"] == severity))

    # A statement's sources open on click (a disclosure) and show the patient's own words.
    first = page.locator("#sections ul.statements > li").first
    sources = first.get_by_role("button", name=re.compile(r"^Sources"))
    expect(sources).to_have_attribute("aria-expanded", "false")
    sources.click()
    expect(sources).to_have_attribute("aria-expanded", "true")
    panel = page.locator(f"#{sources.get_attribute('aria-controls')}")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text(re.compile(r"A: |Record entry"))

    # Edit one statement inline, add a note.
    first.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit statement").fill("Headaches on most days for three weeks (clinician wording).")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#sections li").first).to_contain_text("(clinician wording)")
    expect(page.locator("#sections li").first).to_contain_text("Edited by clinician")
    expect(page.locator("#edit-log")).to_contain_text("clinician wording")
    page.get_by_label("Clinician note").fill("Check blood pressure at the visit.")
    page.get_by_role("button", name="Save note").click()
    expect(page.locator("#note-status")).to_have_text("Note saved.")
    with page.expect_download() as markdown:
        page.get_by_role("button", name="Download Markdown").click()
    text = Path(markdown.value.path()).read_text(encoding="utf-8")
    assert "(clinician wording)" in text and "Check blood pressure at the visit." in text
    with page.expect_download() as fhir:
        page.get_by_role("button", name="Download FHIR Bundle").click()
    assert json.loads(Path(fhir.value.path()).read_text(encoding="utf-8"))["resourceType"] == "Bundle"

    # Write-back is gated on approval; then it writes to the FHIR server.
    write = page.get_by_role("button", name="Write back to the record")
    expect(write).to_be_disabled()
    page.get_by_role("button", name="Approve summary").click()
    expect(write).to_be_enabled()
    write.click()
    result = page.locator("#writeback-result")
    expect(result).to_contain_text("Written back:")
    refs = [code.inner_text() for code in result.locator("code").all()]
    assert refs, "nothing was written"
    with httpx.Client(base_url=service.fhir_base, headers={"Authorization": f"Bearer {FHIR_TOKEN}"}) as fhir:
        for ref in refs:
            assert fhir.get(f"/{ref}").status_code == 200, ref
    assert_accessible(page)
    screenshot(page, artifacts, "clinician-review")


def test_the_review_of_an_escalated_intake_opens_with_its_red_flag(
    page: Page, service: Service, artifacts: Path
) -> None:
    created = service.create_session("Chest pain")
    response = httpx.post(
        f"{service.base_url}/api/sessions/{created['session_id']}/messages",
        json={"text": EMERGENCY_ANSWER},
        headers={"Authorization": f"Bearer {created['patient_token']}"},
        timeout=60,
    )
    assert response.json()["status"] == "escalated"

    page.goto(f"{service.base_url}/clinician/sessions/{created['session_id']}")
    page.get_by_label("Clinician key").fill(CLINICIAN_KEY)
    page.get_by_role("button", name="Sign in").click()
    red_flags = page.locator("#red-flags li")
    expect(red_flags.first).to_contain_text("Red flag")
    expect(page.locator('.severity-group[data-severity="high"] h4')).to_contain_text("High severity")
    assert page.evaluate(
        "document.querySelector('#red-flags li').compareDocumentPosition("
        "document.querySelector('#sections')) & Node.DOCUMENT_POSITION_FOLLOWING"
    )
    expect(page.locator("#transcript")).to_contain_text(EMERGENCY_ANSWER)
    assert_accessible(page)
    screenshot(page, artifacts, "clinician-review-red-flag")


def _hold_lock(db: str, session_id: str, owner: str, *, release: bool) -> None:
    """Take (or give back) a session's lease as another worker process would, through the same database."""

    async def run() -> None:
        async with open_backend(db) as backend:
            if release:
                await backend.store.release(session_id, owner)
            else:
                assert await backend.store.acquire(session_id, owner, 60.0)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def test_a_busy_session_asks_to_try_again_and_keeps_the_answer(page: Page, service: Service) -> None:
    created = service.create_session("Headaches")
    page.goto(service.base_url + created["patient_url"])
    expect(page.locator(".bubble.question")).to_have_count(1)
    _hold_lock(service.db, created["session_id"], "other-worker", release=False)

    page.locator("#answer").fill(ANSWERS[0])
    page.locator("#answer").press("Enter")
    expect(page.locator("#error")).to_contain_text("still processing your previous message")
    expect(page.locator("#answer")).to_have_value(ANSWERS[0])  # nothing the patient typed is lost
    expect(page.locator(".bubble.answer")).to_have_count(0)

    _hold_lock(service.db, created["session_id"], "other-worker", release=True)
    page.locator("#answer").press("Enter")
    expect(page.locator(".bubble.answer")).to_have_text(re.compile(re.escape(ANSWERS[0])))
    expect(page.locator(".bubble.question")).to_have_count(2)
    expect(page.locator("#error")).to_be_hidden()


def test_a_photo_reaches_the_clinician_with_its_triage_signal_and_never_the_patient(
    page: Page, browser: Browser, service: Service, artifacts: Path
) -> None:
    created = service.create_session("Rash")
    page.goto(service.base_url + created["patient_url"])
    page.get_by_label("Your answer").fill("Here is the rash on my arm.")
    page.get_by_label("Photo or image file").set_input_files(str(FIXTURES / "images" / "small_rgb.jpeg"))
    with page.expect_response(re.compile(r"/images$")) as reply:
        page.get_by_role("button", name="Send photo").click()
    assert reply.value.status == 200
    expect(page.locator("#upload-result")).to_contain_text("small_rgb.jpeg")
    expect(page.locator(".bubble.answer")).to_contain_text("Photo attached: small_rgb.jpeg")
    # The turn is done (triage included: the configured model is not on this machine) when the next question shows.
    expect(page.locator(".bubble.question")).to_have_count(2, timeout=60_000)
    assert "triage" not in page.locator("main").inner_text().lower()
    screenshot(page, artifacts, "patient-photo")

    # A clinician opens the intake while it is still in progress: transcript and image, no summary yet.
    clinician = browser.new_context(viewport={"width": 1000, "height": 800}).new_page()
    try:
        clinician.goto(f"{service.base_url}/clinician/sessions/{created['session_id']}")
        clinician.get_by_label("Clinician key").fill(CLINICIAN_KEY)
        clinician.get_by_role("button", name="Sign in").click()
        expect(clinician.locator("#pending")).to_contain_text("still in progress")
        expect(clinician.locator("#meta")).to_contain_text(NED)
        figure = clinician.locator("#images figure")
        expect(figure.get_by_role("img", name="Patient image small_rgb.jpeg")).to_be_visible()
        assert clinician.evaluate("document.querySelector('#images img').naturalWidth") > 0
        state = httpx.get(
            f"{service.base_url}/api/sessions/{created['session_id']}",
            headers={"Authorization": f"Bearer {CLINICIAN_KEY}"},
        ).json()
        image = state["turns"][0]["images"][0]
        if image["triage"]:
            expect(figure).to_contain_text("Triage signal, not a diagnosis")
        else:
            expect(figure).to_contain_text(image["error"] or "No triage signal")
        assert_accessible(clinician)
        screenshot(clinician, artifacts, "clinician-review-in-progress")
    finally:
        clinician.context.close()


def test_streamed_question_text_shows_while_the_turn_runs(page: Page, service: Service) -> None:
    """No backend here streams tokens (the `none` model answers whole), so the real server's reply is
    passed through with the next question sent ahead of it as `question_delta` chunks, the way a
    streaming model's reply arrives."""
    created = service.create_session("Headaches")
    page.goto(service.base_url + created["patient_url"])
    expect(page.locator(".bubble.question")).to_have_count(1)

    def with_deltas(route: Any) -> None:
        response = route.fetch()  # the real turn on the real server
        body = response.text()
        match = re.search(r"^event: state\r?\ndata: (.*)$", body, re.MULTILINE)
        assert match, body
        question = json.loads(match.group(1))["question"]
        chunks = [question["text"][i : i + 7] for i in range(0, len(question["text"]), 7)]
        deltas = "".join(
            f"event: question_delta\ndata: {json.dumps({'turn': question['turn'], 'text': c})}\n\n" for c in chunks
        )
        route.fulfill(response=response, body=deltas + body)

    page.route(re.compile(r"/messages$"), with_deltas)
    page.evaluate(
        """() => {
          window.streamed = [];
          new MutationObserver(() => {
            const bubble = document.querySelector(".bubble.streaming");
            if (bubble) window.streamed.push(bubble.textContent);
          }).observe(document.getElementById("messages"), { subtree: true, childList: true, characterData: true });
        }"""
    )
    page.locator("#answer").fill(ANSWERS[0])
    page.locator("#answer").press("Enter")

    expect(page.locator(".bubble.question")).to_have_count(2)
    expect(page.locator(".bubble.streaming")).to_have_count(0)  # replaced by the final state
    final = page.locator(".bubble.question").nth(1).inner_text()
    streamed = page.evaluate("window.streamed")
    assert streamed, "no streaming bubble was shown"
    assert any(final.split("\n")[-1] in text for text in streamed)


def test_a_second_tab_with_an_old_question_is_told_and_shown_the_latest(
    page: Page, browser: Browser, service: Service
) -> None:
    created = service.create_session("Headaches")
    other = browser.new_context().new_page()
    try:
        for tab in (page, other):
            tab.goto(service.base_url + created["patient_url"])
            expect(tab.locator(".bubble.question")).to_have_count(1)
        page.locator("#answer").fill(ANSWERS[0])
        page.locator("#answer").press("Enter")
        expect(page.locator(".bubble.question")).to_have_count(2)

        other.locator("#answer").fill("An answer typed in the old tab.")
        other.locator("#answer").press("Enter")
        expect(other.locator("#error")).to_contain_text("already answered")
        expect(other.locator(".bubble.answer")).to_have_text([re.compile(re.escape(ANSWERS[0]) + "$")])  # once
        expect(other.locator(".bubble.question")).to_have_count(2)
        expect(other.locator("#answer")).to_have_value("An answer typed in the old tab.")  # kept, not lost
    finally:
        other.context.close()


def test_a_photo_too_large_or_not_an_image_is_refused_plainly_and_loses_nothing(page: Page, service: Service) -> None:
    created = service.create_session("Rash")
    page.goto(service.base_url + created["patient_url"])
    page.get_by_label("Your answer").fill("It itches at night.")
    upload = page.get_by_label("Photo or image file")

    upload.set_input_files({"name": "notes.png", "mimeType": "image/png", "buffer": b"this is not a picture" * 50})
    page.get_by_role("button", name="Send photo").click()
    expect(page.locator("#error")).to_contain_text("could not read that file as an image")
    expect(page.locator("#upload-result")).to_have_text("The photo was not sent.")

    too_big = b"\xff\xd8\xff\xe0" + bytes(UPLOAD_LIMIT)  # JPEG magic, over the limit
    upload.set_input_files({"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": too_big})
    page.get_by_role("button", name="Send photo").click()
    expect(page.locator("#error")).to_contain_text("too large")

    expect(page.locator(".bubble.answer")).to_have_count(0)
    expect(page.locator(".bubble.question")).to_have_count(1)
    expect(page.get_by_label("Your answer")).to_have_value("It itches at night.")
    state = httpx.get(
        f"{service.base_url}/api/sessions/{created['session_id']}",
        headers={"Authorization": f"Bearer {CLINICIAN_KEY}"},
    ).json()
    assert state["turns"] == [] and state["status"] == "awaiting_answer"
