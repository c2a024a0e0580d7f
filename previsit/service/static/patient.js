// The patient chat page: one question at a time, answers streamed back, a banner on a red flag.
// The session token arrives in the URL fragment (never sent to the server in a URL), is kept in
// sessionStorage for this tab and sent as a Bearer header.
import { ApiError, apiFetch, el, postEventStream, sessionIdFromPath } from "/static/api.js";

const sessionId = sessionIdFromPath(window.location.pathname);
const storageKey = `previsit.patient.${sessionId}`;
const $ = (id) => document.getElementById(id);

const ui = {
  messages: $("messages"),
  announcer: $("announcer"),
  error: $("error"),
  emergency: $("emergency"),
  emergencyMessage: $("emergency-message"),
  progressBar: $("progress-bar"),
  progressText: $("progress-text"),
  form: $("composer"),
  answer: $("answer"),
  send: $("send"),
  finish: $("finish"),
  image: $("image"),
  upload: $("upload"),
  uploadResult: $("upload-result"),
};

const page = { token: null, state: null, busy: false, lastQuestion: null };

function readToken() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    sessionStorage.setItem(storageKey, fromUrl);
    // Drop the token from the address bar and the history entry.
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return fromUrl || sessionStorage.getItem(storageKey);
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

function explain(err, { upload = false } = {}) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err.message || err}. Please try again.`;
  switch (err.status) {
    case 0:
      return err.detail;
    case 401:
      return "This link has expired or is not valid. Please ask your clinic for a new link.";
    case 403:
      return "This link belongs to a different conversation. Please use the link your clinic sent you.";
    case 404:
      return "We could not find this conversation. Please check the link your clinic sent you.";
    case 409:
      if (err.type.endsWith("/session-ended")) return "This conversation has already ended. Thank you.";
      if (err.type.endsWith("/turn-mismatch")) {
        return "That question was already answered (perhaps in another tab or window). Here is the latest question.";
      }
      return "We are still processing your previous message. Please wait a moment and try again.";
    case 413:
      return upload ? "That file is too large. Please choose a smaller photo." : "That message is too long. Please shorten it.";
    case 422:
      return upload ? `We could not read that file as an image. ${err.detail}` : `That could not be sent: ${err.detail}`;
    default:
      return `Something went wrong (${err.status}${err.title ? `: ${err.title}` : ""}). Please try again.`;
  }
}

function canAnswer(state) {
  return Boolean(state) && state.status === "awaiting_answer" && !state.red_flag;
}

function setBusy(busy) {
  page.busy = busy;
  ui.messages.setAttribute("aria-busy", busy ? "true" : "false");
  const open = !busy && canAnswer(page.state);
  for (const control of [ui.answer, ui.send, ui.finish, ui.image, ui.upload]) control.disabled = !open;
}

function bubble(kind, who, text, extra = []) {
  return el("li", { class: `bubble ${kind}` }, el("span", { class: "who", text: who }), text, ...extra);
}

function attachments(images) {
  return (images || []).map((image) =>
    el("span", { class: "attachment", text: `Photo attached: ${image.filename || "image"}` }),
  );
}

function renderProgress(state) {
  const p = state.progress || { asked: 0, max_questions: 0, covered: 0, total: 0 };
  ui.progressBar.max = Math.max(1, p.total || 1);
  ui.progressBar.value = Math.min(p.covered || 0, ui.progressBar.max);
  const done = state.status !== "awaiting_answer";
  ui.progressText.textContent = done
    ? `${p.asked} questions answered · ${p.covered} of ${p.total} topics covered`
    : `Question ${Math.max(p.asked, 1)} of up to ${p.max_questions} · ${p.covered} of ${p.total} topics covered`;
}

function renderMessages(state) {
  const items = [];
  const turns = state.turns || [];
  for (const turn of turns) {
    if (turn.question) items.push(bubble("question", "Question", turn.question));
    const answered = (turn.answer !== null && turn.answer !== undefined && turn.answer !== "") || (turn.images || []).length;
    if (answered) items.push(bubble("answer", "You", turn.answer || "", attachments(turn.images)));
  }
  const current = state.status === "awaiting_answer" ? state.question : null;
  const last = turns[turns.length - 1];
  const shown = last && last.question === current?.text && !last.answer && !(last.images || []).length;
  if (current && !shown) items.push(bubble("question", "Question", current.text));
  if (state.status !== "awaiting_answer" && !state.red_flag && state.patient_message) {
    items.push(bubble("closing", "Thank you", state.patient_message));
  }
  ui.messages.replaceChildren(...items);
}

function render(state, { focus = true } = {}) {
  page.state = state;
  renderProgress(state);
  renderMessages(state);
  if (state.red_flag || state.status === "escalated") {
    ui.emergencyMessage.textContent =
      state.patient_message || "Your answer may describe an emergency. Call your local emergency number or go to the nearest emergency department now.";
    ui.emergency.hidden = false;
  }
  const question = state.status === "awaiting_answer" && state.question ? state.question.text : null;
  if (question && question !== page.lastQuestion) ui.announcer.textContent = question;
  else if (state.red_flag) ui.announcer.textContent = "";
  else if (state.status !== "awaiting_answer" && state.patient_message) ui.announcer.textContent = state.patient_message;
  page.lastQuestion = question;
  // Nothing more to answer: the answer box and photo upload go away (the closing words or banner stay).
  ui.form.hidden = state.status !== "awaiting_answer" || Boolean(state.red_flag);
  setBusy(false);
  // Focus follows the conversation after a turn, not on first load (the intro is read first).
  if (!focus) return;
  if (canAnswer(state)) ui.answer.focus();
  else if (!ui.emergency.hidden) ui.emergency.focus();
}

async function refresh(options = {}) {
  render(await apiFetch(`/api/sessions/${encodeURIComponent(sessionId)}`, page.token), options);
}

/** Post an answer (JSON) or a photo (multipart) and stream the interviewer's reply into the page. */
async function submitTurn(body, { upload = false, pendingText = "", pendingImage = null } = {}) {
  showError("");
  setBusy(true);
  const path = `/api/sessions/${encodeURIComponent(sessionId)}/${upload ? "images" : "messages"}`;
  const pending = bubble("answer", "You", pendingText, pendingImage ? attachments([{ filename: pendingImage }]) : []);
  ui.messages.append(pending);
  let streaming = null;
  let finalState = null;
  try {
    await postEventStream(path, page.token, body, (event, data) => {
      if (event === "question_delta") {
        if (!streaming) {
          streaming = bubble("question streaming", "Question", "");
          ui.messages.append(streaming);
        }
        streaming.append(document.createTextNode(data && typeof data === "object" ? data.text || "" : String(data)));
      } else if (event === "state") {
        finalState = data;
      } else if (event === "error") {
        const problem = data && typeof data === "object" ? data : {};
        throw new ApiError(problem.status || 500, problem.title, problem.detail || String(data), problem.type);
      }
    });
    if (!finalState) throw new ApiError(502, "Incomplete reply", "The reply ended early.");
    render(finalState);
    return true;
  } catch (err) {
    pending.remove();
    streaming?.remove();
    showError(explain(err, { upload }));
    if (err instanceof ApiError && err.status === 401) sessionStorage.removeItem(storageKey);
    // The turn may still have gone through (or the session may have ended): show the truth.
    try {
      await refresh();
    } catch {
      setBusy(false);
    }
    if (err instanceof ApiError && [401, 403, 404].includes(err.status)) setBusy(true);
    return false;
  }
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (page.busy) return;
  const text = ui.answer.value.trim();
  if (!text) {
    showError("Please type an answer first.");
    ui.answer.focus();
    return;
  }
  // The question number makes a retried answer idempotent: the server never records it twice.
  const turn = page.state?.question?.turn;
  if (await submitTurn(turn ? { text, turn } : { text }, { pendingText: text })) ui.answer.value = "";
});

ui.answer.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.form.requestSubmit();
  }
});

ui.upload.addEventListener("click", async () => {
  if (page.busy) return;
  const file = ui.image.files && ui.image.files[0];
  if (!file) {
    ui.uploadResult.textContent = "Choose a photo first.";
    ui.image.focus();
    return;
  }
  const text = ui.answer.value.trim();
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("text", text);
  ui.uploadResult.textContent = `Sending ${file.name}…`;
  const ok = await submitTurn(form, { upload: true, pendingText: text, pendingImage: file.name });
  if (!ok) {
    ui.uploadResult.textContent = "The photo was not sent.";
    return;
  }
  ui.answer.value = "";
  ui.image.value = "";
  const images = (page.state.turns || []).flatMap((turn) => turn.images || []);
  const received = images.filter((image) => image.filename === file.name).pop();
  ui.uploadResult.textContent =
    received && received.error
      ? `We received ${file.name} but could not read it: ${received.error}`
      : `Photo received: ${file.name}. Your care team will look at it.`;
});

ui.finish.addEventListener("click", async () => {
  if (page.busy) return;
  showError("");
  setBusy(true);
  try {
    render(await apiFetch(`/api/sessions/${encodeURIComponent(sessionId)}/end`, page.token, { method: "POST" }));
  } catch (err) {
    showError(explain(err));
    setBusy(false);
  }
});

async function start() {
  page.token = readToken();
  if (!page.token) {
    ui.progressText.textContent = "";
    showError("This page needs the full link your clinic sent you (it ends with a private code). Please open that link again.");
    return;
  }
  try {
    await refresh({ focus: false });
  } catch (err) {
    ui.progressText.textContent = "";
    showError(explain(err));
    if (err instanceof ApiError && err.status === 401) sessionStorage.removeItem(storageKey);
  }
}

start();
