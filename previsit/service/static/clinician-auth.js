// The clinician key: typed once into a login form, kept in sessionStorage (this tab only, gone when
// it closes), sent as a Bearer header. A key the server refuses is dropped and the form shown again.
import { ApiError, apiFetch } from "/static/api.js";

const KEY = "previsit.clinicianKey";
const NAME = "previsit.clinicianName";

export const clinicianKey = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(NAME);
  },
};

/**
 * apiFetch bound to the clinician's key; the name typed at sign-in (if any) goes in
 * X-Clinician-Name, which the API records as who edited or approved. Header values must be
 * Latin-1, so any other character is percent-encoded.
 */
export function asClinician(key) {
  const name = sessionStorage.getItem(NAME);
  const header = name ? name.replace(/[^\x20-\x7e\xa0-\xff]/gu, (c) => encodeURIComponent(c)) : null;
  return (path, options = {}) => {
    const headers = new Headers(options.headers || {});
    if (header) headers.set("X-Clinician-Name", header);
    return apiFetch(path, key, { ...options, headers });
  };
}

/**
 * Resolve with a working key: the stored one, or one typed into the login form (#login) and
 * checked against the API. The form and its error live in the page's HTML.
 */
export function requireKey() {
  const section = document.getElementById("login");
  const form = document.getElementById("login-form");
  const input = document.getElementById("clinician-key");
  const error = document.getElementById("login-error");
  const stored = clinicianKey.get();
  if (stored) return Promise.resolve(stored);
  section.hidden = false;
  input.focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      error.hidden = true;
      if (!key) {
        error.textContent = "Enter your clinician key.";
        error.hidden = false;
        input.focus();
        return;
      }
      try {
        await apiFetch("/api/sessions", key);
      } catch (err) {
        error.textContent =
          err instanceof ApiError && err.status === 401
            ? "That key was not accepted. Check it and try again."
            : `Could not sign in: ${err.detail || err.message}`;
        error.hidden = false;
        input.focus();
        return;
      }
      clinicianKey.set(key);
      const name = document.getElementById("clinician-name")?.value.trim();
      if (name) sessionStorage.setItem(NAME, name.slice(0, 100));
      input.value = "";
      section.hidden = true;
      resolve(key);
    });
  });
}

/** Wire the sign-out button: forget the key and reload to the login form. */
export function wireSignOut() {
  const button = document.getElementById("sign-out");
  button.hidden = !clinicianKey.get();
  button.addEventListener("click", () => {
    clinicianKey.clear();
    window.location.assign("/clinician");
  });
}

/** A 401 on any later call means the key stopped working: forget it and show the form again. */
export function handleAuthError(err) {
  if (err instanceof ApiError && err.status === 401) {
    clinicianKey.clear();
    window.location.assign("/clinician");
    return true;
  }
  return false;
}
