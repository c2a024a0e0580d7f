#!/usr/bin/env bash
# Sets up (first run only) and runs lint, type checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
scripts/system_deps.sh
# One torch thread per process: on a 2-core machine two threads per test process fight the
# other processes the suite starts (servers, subprocess CLIs) and run several times slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest -q "$@"
