#!/usr/bin/env bash
# Installs the Debian packages the test suite needs and pip cannot give: PostgreSQL (the LangGraph
# Postgres checkpointer's multi-worker tests) and Chromium (the browser tests; Playwright drives
# Debian's /usr/bin/chromium because browsers cannot be downloaded at run time).
# Safe to run again: it installs only what is missing. Needs root (or sudo) the first time.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "system_deps: missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3; do
  if $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    exit 0
  fi
  echo "system_deps: apt-get failed (attempt $attempt), retrying" >&2
  sleep 5
done
echo "system_deps: could not install ${missing[*]}; the tests that need them will fail" >&2
exit 1
