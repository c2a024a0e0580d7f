// The clinician's session list (and a form to start an intake and get the patient's link).
import { ApiError, el } from "/static/api.js";
import { asClinician, handleAuthError, requireKey, wireSignOut } from "/static/clinician-auth.js";

const $ = (id) => document.getElementById(id);
let call = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

const STATUS_WORDS = {
  awaiting_answer: "In progress",
  finished: "Finished",
  escalated: "Escalated (red flag)",
  ended: "Ended early",
};

function formatTime(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

function row(item) {
  const link = el("a", { href: `/clinician/sessions/${encodeURIComponent(item.session_id || item.id)}` }, item.patient_id);
  return el(
    "tr",
    {},
    el("td", {}, link),
    el("td", { text: STATUS_WORDS[item.status] || item.status }),
    el("td", {}, item.red_flag ? el("span", { class: "tag danger", text: "⚠ Red flag" }) : "None"),
    el("td", { text: String(item.questions_asked ?? "") }),
    el("td", {}, item.approved ? el("span", { class: "tag ok", text: "✓ Approved" }) : "Not yet"),
    el("td", { text: formatTime(item.updated_at) }),
  );
}

async function loadSessions() {
  showError("");
  try {
    const { sessions } = await call("/api/sessions");
    $("sessions-body").replaceChildren(...sessions.map(row));
    $("sessions-table").hidden = sessions.length === 0;
    $("sessions-empty").hidden = sessions.length !== 0;
  } catch (err) {
    if (!handleAuthError(err)) showError(`Could not load the sessions: ${err.detail || err.message}`);
  }
}

async function createSession(event) {
  event.preventDefault();
  const patientId = $("patient-id").value.trim();
  const reason = $("reason").value.trim();
  const result = $("create-result");
  if (!patientId) {
    result.replaceChildren(el("p", { class: "notice error", text: "Enter the patient's id." }));
    $("patient-id").focus();
    return;
  }
  result.replaceChildren(el("p", { text: "Starting the intake…" }));
  try {
    const created = await call("/api/sessions", {
      method: "POST",
      json: { patient_id: patientId, reason_for_visit: reason || null },
    });
    const url = new URL(created.patient_url, window.location.origin).href;
    result.replaceChildren(
      el(
        "div",
        { class: "notice ok" },
        el("p", { text: "Intake started. Send the patient this private link (it works only for this intake):" }),
        el("label", { for: "patient-link", text: "Patient link" }),
        el("input", { id: "patient-link", type: "text", readonly: true, value: url }),
        el("p", {}, el("a", { href: `/clinician/sessions/${encodeURIComponent(created.session_id)}` }, "Open this session")),
      ),
    );
    await loadSessions();
  } catch (err) {
    if (handleAuthError(err)) return;
    const message = err instanceof ApiError && err.status === 404 ? "No patient with that id was found." : err.detail || err.message;
    result.replaceChildren(el("p", { class: "notice error", text: `Could not start the intake: ${message}` }));
  }
}

async function start() {
  wireSignOut();
  call = asClinician(await requireKey());
  $("sign-out").hidden = false;
  $("sessions").hidden = false;
  $("create").hidden = false;
  $("reload").addEventListener("click", loadSessions);
  $("create-form").addEventListener("submit", createSession);
  await loadSessions();
}

start();
