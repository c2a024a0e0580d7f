// The clinician review page: red flags and uncertainties first, then the summary whose every
// statement opens its sources, the transcript, images with triage signals, edits, approval and
// write-back (enabled only once approved).
import { ApiError, el, sessionIdFromPath } from "/static/api.js";
import { asClinician, handleAuthError, requireKey, wireSignOut } from "/static/clinician-auth.js";

const sessionId = sessionIdFromPath(window.location.pathname);
const base = `/api/sessions/${encodeURIComponent(sessionId)}`;
const $ = (id) => document.getElementById(id);
const page = { key: null, state: null, summary: null, approved: false, turns: new Map(), images: new Map() };
let disclosureCount = 0;

// The summary body in reading order (ClinicianSummary.sections()), by JSON field name.
const SECTIONS = [
  ["chief_complaint", "Chief complaint"],
  ["hpi", "History of present illness"],
  ["hpi_narrative", "HPI narrative"],
  ["pertinent_positives", "Pertinent positives"],
  ["pertinent_negatives", "Pertinent negatives"],
  ["medications", "Medications"],
  ["allergies", "Allergies"],
  ["history", "Relevant history"],
  ["social_history", "Social history"],
  ["family_history", "Family history"],
  ["image_findings", "Image triage signals"],
  ["patient_concerns", "Patient's concerns and questions"],
];
const SECTION_TITLES = { ...Object.fromEntries(SECTIONS), red_flags: "Red flags" };
const ORIGIN_WORDS = {
  patient_words: "patient's words",
  record: "from the record",
  reconciled: "record and patient side by side",
  model: "written by the model, checked against sources",
};
const FLAG_WORDS = {
  red_flag: "Red flag",
  conflict: "Conflict",
  unverified: "Unverified",
  missing: "Missing",
  stale: "Stale record value",
  low_confidence: "Low confidence",
  unsupported: "Unsupported",
  record_unavailable: "Record unavailable",
};
const SEVERITIES = [
  ["high", "High severity"],
  ["medium", "Medium severity"],
  ["low", "Low severity"],
];
const STATUS_WORDS = {
  awaiting_answer: "In progress",
  finished: "Finished",
  escalated: "Escalated (red flag)",
  ended: "Ended early",
};

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function problemText(err) {
  if (err instanceof ApiError) return `${err.title || `HTTP ${err.status}`}${err.detail ? `: ${err.detail}` : ""}`;
  return String(err.message || err);
}

// ---- sources -------------------------------------------------------------------------------------

function turnLabel(ref) {
  const number = /^turn-(\d+)$/.exec(ref);
  return number ? `turn ${number[1]}` : ref;
}

function triageList(triage) {
  if (!triage || typeof triage !== "object") return null;
  const items = [];
  const add = (label, value) => items.push(el("li", {}, `${label}: ${value}`));
  for (const [name, value] of Object.entries(triage)) {
    if (Array.isArray(value)) {
      for (const entry of value) {
        if (entry && typeof entry === "object" && "label" in entry) {
          const score = typeof entry.score === "number" ? ` (${Math.round(entry.score * 100)}%)` : "";
          items.push(el("li", {}, `${entry.label}${score}`));
        } else add(name, JSON.stringify(entry));
      }
    } else if (value !== null && typeof value === "object") add(name, JSON.stringify(value));
    else if (value !== null && value !== undefined && value !== "") add(name.replaceAll("_", " "), value);
  }
  return el(
    "div",
    { class: "triage" },
    el("p", { class: "triage-label", text: "Triage signal, not a diagnosis" }),
    el("ul", {}, items),
  );
}

function sourceItem(source) {
  if (source.kind === "patient") {
    const turn = page.turns.get(source.ref);
    if (!turn) return el("li", {}, `Patient answer (${turnLabel(source.ref)}), not in the transcript`);
    return el(
      "li",
      {},
      el("span", {}, "Patient answer, "),
      el("a", { href: `#${source.ref}` }, turnLabel(source.ref)),
      el("blockquote", {}, el("p", { class: "q", text: `Q: ${turn.question || ""}` }), el("p", { text: `A: ${turn.answer || ""}` })),
    );
  }
  if (source.kind === "image") {
    const image = page.images.get(source.ref);
    return el(
      "li",
      {},
      `Image ${image ? image.filename : source.ref}`,
      image && image.triage ? triageList(image.triage) : null,
    );
  }
  return el("li", {}, "Record entry ", el("code", { text: source.ref }));
}

/** A "Sources" button that shows or hides the cited turns and record entries (a disclosure). */
function disclosure(label, sources) {
  const id = `sources-${++disclosureCount}`;
  const panel = el("div", { id, class: "sources", hidden: true }, el("ul", { class: "sources" }, sources.map(sourceItem)));
  const button = el("button", {
    type: "button",
    class: "secondary",
    "aria-expanded": "false",
    "aria-controls": id,
    text: `${label} (${sources.length})`,
  });
  button.addEventListener("click", () => {
    const open = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(open));
    panel.hidden = !open;
  });
  return [button, panel];
}

// ---- statements and editing ----------------------------------------------------------------------

function review() {
  return page.state?.review || {};
}

/** Statements whose text a clinician wrote, by section: marked "Edited by clinician". */
function editedIndex() {
  const edited = new Set();
  for (const edit of review().edits || []) if (edit.text !== null) edited.add(`${edit.section}:${edit.text}`);
  return edited;
}

function statementItem(statement, section, index, edited, prefix = "") {
  const text = el("span", { class: "statement-text" }, prefix, statement.text);
  const origin = el("span", { class: "origin", text: ` (${ORIGIN_WORDS[statement.origin] || statement.origin})` });
  const mark = edited.has(`${section}:${statement.text}`) ? el("span", { class: "tag", text: "Edited by clinician" }) : null;
  const [sourcesButton, sourcesPanel] = disclosure("Sources", statement.sources || []);
  const editButton = el("button", { type: "button", class: "secondary", text: "Edit" });
  const item = el(
    "li",
    { "data-section": section, "data-index": String(index) },
    text,
    origin,
    " ",
    mark,
    el("span", { class: "actions-inline" }, sourcesButton, editButton),
    sourcesPanel,
  );
  editButton.addEventListener("click", () => openEditor(item, statement, section, index, editButton));
  return item;
}

function openEditor(item, statement, section, index, editButton) {
  if (item.querySelector(".editor")) return;
  const id = `edit-${section}-${index}`;
  const area = el("textarea", { id, rows: "2" });
  area.value = statement.text;
  const status = el("p", { role: "status" });
  const close = () => {
    editor.remove();
    editButton.focus();
  };
  const save = async (text) => {
    status.textContent = "Saving…";
    try {
      page.summary = await page.call(`${base}/summary?format=json`, {
        method: "PATCH",
        json: { clinician_note: null, edits: [{ section, index, text }] },
      });
      await reloadState();
      renderSummary();
      $("decision-result").replaceChildren(el("p", { text: text === null ? "Statement removed." : "Statement saved." }));
    } catch (err) {
      if (!handleAuthError(err)) status.textContent = `Not saved: ${problemText(err)}`;
    }
  };
  const editor = el(
    "div",
    { class: "editor" },
    el("label", { for: id, text: "Edit statement" }),
    area,
    el(
      "div",
      { class: "row" },
      el("button", { type: "button", text: "Save", onclick: () => save(area.value.trim() || null) }),
      el("button", { type: "button", class: "secondary", text: "Remove statement", onclick: () => save(null) }),
      el("button", { type: "button", class: "secondary", text: "Cancel", onclick: close }),
    ),
    status,
  );
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
  item.append(editor);
  area.focus();
}

// ---- rendering -----------------------------------------------------------------------------------

function renderOverview() {
  const s = page.summary;
  const state = page.state;
  const patientId = s?.patient_id || page.patientId || "";
  $("patient-heading").textContent = s?.patient_name || `Patient ${patientId}`.trim();
  const rows = [
    ["Patient id", patientId],
    ["Reason for visit", s ? s.reason_for_visit || "Not given" : null],
    ["Status", STATUS_WORDS[state.status] || state.status],
    ["Questions asked", String(s?.questions_asked ?? state.progress?.asked ?? "")],
  ];
  if (s) {
    rows.push(["Stopped because", String(s.stop_reason).replaceAll("_", " ")]);
    rows.push(["Model", s.model_id]);
    rows.push(["Generated", new Date(s.generated_at).toLocaleString()]);
  }
  $("meta").replaceChildren(
    ...rows.filter(([, value]) => value).flatMap(([term, value]) => [el("dt", { text: term }), el("dd", { text: value })]),
  );
  $("demo-warning").hidden = !s?.demo_model;
  $("overview").hidden = false;
}

function renderAttention() {
  const s = page.summary;
  const edited = editedIndex();
  const redFlags = s.red_flags || [];
  $("red-flags").replaceChildren(
    redFlags.length
      ? el(
          "ul",
          { class: "statements" },
          redFlags.map((st, i) => statementItem(st, "red_flags", i, edited, [el("span", { class: "tag danger", text: "⚠ Red flag" }), " "])),
        )
      : el("p", { text: "No red flags." }),
  );
  const flags = s.flags || [];
  const groups = SEVERITIES.map(([severity, title]) => {
    const members = flags.filter((flag) => flag.severity === severity);
    if (!members.length) return null;
    return el(
      "div",
      { class: "severity-group", "data-severity": severity },
      el("h4", { text: `${title} (${members.length})` }),
      el(
        "ul",
        { class: "flags" },
        members.map((flag) =>
          el(
            "li",
            {},
            el("span", { class: `tag ${severity}`, text: FLAG_WORDS[flag.kind] || flag.kind }),
            " ",
            flag.message,
            flag.evidence && flag.evidence.length
              ? el("span", { class: "actions-inline" }, ...disclosure("Evidence", flag.evidence))
              : null,
          ),
        ),
      ),
    );
  }).filter(Boolean);
  $("uncertainties").replaceChildren(...(groups.length ? groups : [el("p", { text: "No uncertainties flagged." })]));
  $("attention").hidden = false;
}

function renderSections() {
  const s = page.summary;
  const edited = editedIndex();
  const blocks = [];
  for (const [field, title] of SECTIONS) {
    let items = [];
    if (field === "chief_complaint") {
      if (s.chief_complaint) items = [statementItem(s.chief_complaint, field, 0, edited)];
    } else if (field === "hpi") {
      items = (s.hpi || []).map((h, i) =>
        statementItem(h.statement, field, i, edited, el("strong", { text: `${String(h.element).replaceAll("_", " ")}: ` })),
      );
    } else {
      items = (s[field] || []).map((st, i) => statementItem(st, field, i, edited));
    }
    if (!items.length) continue;
    const headingId = `section-${field}`;
    blocks.push(
      el(
        "section",
        { "aria-labelledby": headingId, "data-field": field },
        el("h3", { id: headingId, text: title }),
        el("ul", { class: "statements" }, items),
      ),
    );
  }
  $("sections").replaceChildren(...(blocks.length ? blocks : [el("p", { text: "The summary has no statements." })]));
  $("summary").hidden = false;
}

function renderEdits() {
  const edits = review().edits || [];
  $("edit-log").replaceChildren(
    edits.length
      ? el(
          "ul",
          {},
          edits.map((edit) =>
            el(
              "li",
              {},
              `${SECTION_TITLES[edit.section] || edit.section}, statement ${edit.index + 1}: ` +
                `${edit.text === null ? "removed" : `“${edit.text}”`}` +
                (edit.by ? ` by ${edit.by}` : "") +
                (edit.at ? ` at ${new Date(edit.at).toLocaleString()}` : ""),
            ),
          ),
        )
      : el("p", { text: "No edits yet." }),
  );
  const note = $("clinician-note");
  if (document.activeElement !== note) note.value = review().clinician_note || "";
  $("edits").hidden = false;
}

function renderSummary() {
  renderOverview();
  renderAttention();
  renderSections();
  renderEdits();
  setApproved(Boolean(page.state.approved), review().approved_at);
}

function renderTranscript() {
  const turns = page.state.turns || [];
  $("transcript").replaceChildren(
    ...turns.map((turn, i) =>
      el(
        "li",
        { id: turn.id || `turn-${i + 1}`, tabindex: "-1" },
        el("p", { class: "q", text: `Q: ${turn.question || ""}` }),
        el("p", { text: `A: ${turn.answer || "(no answer)"}` }),
        (turn.images || []).length ? el("p", { class: "hint", text: `Images: ${turn.images.map((im) => im.filename).join(", ")}` }) : null,
      ),
    ),
  );
  $("transcript-section").hidden = false;
}

/** The image bytes (fetched with the key, so never in a URL) as a blob: URL and its type. */
async function imageBlob(image) {
  const response = await page.call(`${base}/images/${encodeURIComponent(image.id)}`, { raw: true });
  const blob = await response.blob();
  return { url: URL.createObjectURL(blob), type: blob.type };
}

function preview(figure, image, { url, type }) {
  const shown = type.startsWith("image/") && !type.includes("dicom");
  figure.prepend(
    shown
      ? el("img", { src: url, alt: `Patient image ${image.filename}` })
      : el("p", { class: "hint", text: `No preview in the browser for this file type (${type || "unknown"}).` }),
    el("a", { href: url, download: image.filename, text: `Download ${image.filename}` }),
  );
}

function renderImages() {
  const images = [...page.images.values()];
  if (!images.length) {
    $("images-section").hidden = true;
    return;
  }
  $("images").replaceChildren(
    ...images.map((image) => {
      const figure = el("figure", {});
      const caption = el(
        "figcaption",
        {},
        el("p", { text: `${image.filename} (${turnLabel(image.turn_id || "")})` }),
        image.error ? el("p", { class: "notice error", text: `Could not be read: ${image.error}` }) : null,
        image.triage ? triageList(image.triage) : el("p", { class: "hint", text: "No triage signal." }),
      );
      imageBlob(image)
        .then((blob) => preview(figure, image, blob))
        .catch((err) => figure.prepend(el("p", { class: "hint", text: `Image not shown: ${problemText(err)}` })));
      figure.append(caption);
      return el("li", {}, figure);
    }),
  );
  $("images-section").hidden = false;
}

function setApproved(approved, at) {
  page.approved = approved;
  const approve = $("approve");
  approve.disabled = approved;
  approve.textContent = approved ? "Approved" : "Approve summary";
  $("writeback").disabled = !approved;
  $("writeback-hint").textContent = approved
    ? `Approved${at ? ` ${new Date(at).toLocaleString()}` : ""}. The summary can now be written back.`
    : "Write-back is available once the summary is approved.";
}

// ---- actions -------------------------------------------------------------------------------------

async function approve() {
  const result = $("decision-result");
  try {
    const answer = await page.call(`${base}/approve`, { method: "POST" });
    setApproved(true, answer.approved_at);
    result.replaceChildren(el("p", { class: "notice ok", text: "Summary approved." }));
    $("writeback").focus();
  } catch (err) {
    if (!handleAuthError(err)) result.replaceChildren(el("p", { class: "notice error", text: `Not approved: ${problemText(err)}` }));
  }
}

async function writeBack() {
  const result = $("decision-result");
  const button = $("writeback");
  button.disabled = true;
  result.replaceChildren(el("p", { text: "Writing back…" }));
  try {
    const answer = await page.call(`${base}/writeback`, { method: "POST" });
    const written = answer.written || [];
    const present = answer.already_present || [];
    result.replaceChildren(
      el(
        "div",
        { class: "notice ok", id: "writeback-result" },
        el("p", { text: `Written back: ${written.length} new, ${present.length} already in the record.` }),
        written.length ? el("ul", {}, written.map((ref) => el("li", {}, el("code", { text: ref })))) : null,
        present.length ? el("p", { class: "hint", text: `Already present: ${present.join(", ")}` }) : null,
        (answer.notes || []).length ? el("ul", {}, answer.notes.map((note) => el("li", { text: note }))) : null,
      ),
    );
  } catch (err) {
    if (!handleAuthError(err)) result.replaceChildren(el("p", { class: "notice error", text: `Not written back: ${problemText(err)}` }));
  } finally {
    button.disabled = !page.approved;
  }
}

async function saveNote(event) {
  event.preventDefault();
  const status = $("note-status");
  status.textContent = "Saving…";
  try {
    page.summary = await page.call(`${base}/summary?format=json`, {
      method: "PATCH",
      json: { clinician_note: $("clinician-note").value.trim(), edits: [] },  // "" clears the note
    });
    await reloadState();
    renderSummary();
    status.textContent = "Note saved.";
  } catch (err) {
    if (!handleAuthError(err)) status.textContent = `Not saved: ${problemText(err)}`;
  }
}

/** Fetch a rendering with the key (so never a plain link) and hand it to the browser as a file. */
async function download(format, filename, type) {
  const status = $("download-status");
  status.textContent = "";
  try {
    const response = await page.call(`${base}/summary?format=${format}`, { raw: true });
    const url = URL.createObjectURL(new Blob([await response.blob()], { type }));
    const link = el("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } catch (err) {
    if (!handleAuthError(err)) status.textContent = `Download failed: ${problemText(err)}`;
  }
}

// ---- start ---------------------------------------------------------------------------------------

/** The session list is the one place that names the patient before a summary exists. */
async function patientIdFromList() {
  try {
    const { sessions } = await page.call("/api/sessions");
    return sessions.find((item) => item.session_id === sessionId)?.patient_id || "";
  } catch {
    return "";
  }
}

async function reloadState() {
  page.state = await page.call(base);
  page.turns = new Map((page.state.turns || []).map((turn, i) => [turn.id || `turn-${i + 1}`, turn]));
  page.images = new Map((page.state.turns || []).flatMap((turn) => turn.images || []).map((image) => [image.id, image]));
}

async function load() {
  $("loading").hidden = false;
  try {
    await reloadState();
  } catch (err) {
    $("loading").hidden = true;
    if (!handleAuthError(err)) showError(`Could not load this intake: ${problemText(err)}`);
    return;
  }
  setApproved(Boolean(page.state.approved), review().approved_at);
  try {
    page.summary = await page.call(`${base}/summary?format=json`);
  } catch (err) {
    if (handleAuthError(err)) return;
    page.summary = null;
    const pending = $("pending");
    pending.textContent =
      err instanceof ApiError && err.status === 409
        ? "The intake is still in progress: the summary appears when the patient has finished."
        : `The summary could not be loaded: ${problemText(err)}`;
    pending.hidden = false;
    page.patientId = await patientIdFromList();
  }
  const last = (review().writebacks || []).at(-1);
  if (last) {
    const when = new Date(last.at).toLocaleString();
    const counts = `${last.written.length} new, ${last.already_present.length} already present`;
    $("decision-result").replaceChildren(el("p", { text: `Last written back ${when}: ${counts}.` }));
  }
  $("loading").hidden = true;
  if (page.summary) {
    renderSummary();
    $("decision").hidden = false;
  } else renderOverview();
  renderTranscript();
  renderImages();
}

async function start() {
  wireSignOut();
  page.key = await requireKey();
  page.call = asClinician(page.key);
  $("sign-out").hidden = false;
  $("approve").addEventListener("click", approve);
  $("writeback").addEventListener("click", writeBack);
  $("note-form").addEventListener("submit", saveNote);
  $("download-markdown").addEventListener("click", () =>
    download("markdown", `previsit-${sessionId}.md`, "text/markdown"),
  );
  $("download-fhir").addEventListener("click", () =>
    download("fhir", `previsit-${sessionId}-bundle.json`, "application/fhir+json"),
  );
  await load();
}

start();
