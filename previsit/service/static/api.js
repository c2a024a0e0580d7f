// Shared by every page: authorised fetch, problem-details errors, server-sent events over fetch.
// Plain ES module, no dependencies; the token or key is passed in, never read from a global.

/** An HTTP error carrying the RFC 9457 problem details the API answers with. */
export class ApiError extends Error {
  constructor(status, title, detail, type) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title || "";
    this.detail = detail || "";
    this.type = type || "about:blank";
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (body && typeof body === "object") {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? "");
    return new ApiError(response.status, body.title, detail, body.type);
  }
  return new ApiError(response.status, response.statusText, "", undefined);
}

/** fetch() with a Bearer credential; resolves to parsed JSON (or text), rejects with ApiError. */
export async function apiFetch(path, credential, options = {}) {
  const headers = new Headers(options.headers || {});
  if (credential) headers.set("Authorization", `Bearer ${credential}`);
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    options = { ...options, body: JSON.stringify(options.json) };
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "Network error", "The server could not be reached. Check your connection and try again.");
  }
  if (!response.ok) throw await errorFrom(response);
  if (options.raw) return response;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/**
 * Incremental parser for the text/event-stream format (WHATWG HTML, "server-sent events").
 * Feed it decoded text chunks in any split; it returns the complete events seen so far.
 */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.event = "";
    this.data = [];
  }

  push(chunk) {
    this.buffer += chunk;
    const events = [];
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A lone trailing "\r" may be the first half of "\r\n": wait for the next chunk.
      if (this.buffer[newline] === "\r" && newline === this.buffer.length - 1) break;
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      const line = this.buffer.slice(0, newline);
      this.buffer = this.buffer.slice(newline + width);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  /** Whatever a stream that ended without a final blank line still held. */
  finish() {
    const events = this.buffer ? this.push("\n") : [];
    const last = this.line("");
    return last ? [...events, last] : events;
  }

  line(line) {
    if (line === "") {
      if (this.data.length === 0) {
        this.event = "";
        return null;
      }
      const event = { event: this.event || "message", data: this.data.join("\n") };
      this.event = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    return null;
  }
}

/**
 * POST and read the reply as server-sent events, calling onEvent(name, parsedData) for each.
 * Resolves when the stream ends; rejects with ApiError for an HTTP error before the stream.
 */
export async function postEventStream(path, credential, body, onEvent) {
  const headers = { Accept: "text/event-stream" };
  if (!(body instanceof FormData)) headers["Content-Type"] = "application/json";
  const response = await apiFetch(path, credential, {
    method: "POST",
    headers,
    body: body instanceof FormData ? body : JSON.stringify(body),
    raw: true,
  });
  const type = response.headers.get("Content-Type") || "";
  if (!type.includes("text/event-stream")) {
    // A server that answered with plain JSON: treat it as the final state.
    onEvent("state", await response.json());
    return;
  }
  const parser = new SseParser();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const dispatch = (events) => {
    for (const { event, data } of events) {
      let parsed = data;
      try {
        parsed = JSON.parse(data);
      } catch {
        parsed = data;
      }
      onEvent(event, parsed);
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    dispatch(parser.push(value));
  }
  dispatch(parser.finish());
}

/** Create an element with attributes and children; text is always set as text, never as HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The session id from a path such as /patient/<id> or /clinician/sessions/<id>. */
export function sessionIdFromPath(pathname) {
  const parts = pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[parts.length - 1] || "");
}
