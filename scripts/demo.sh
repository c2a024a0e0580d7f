#!/usr/bin/env bash
# Sets up (first run only) and runs a simulated intake of a fixture patient on the embedded
# defaults: records from fixtures/fhir, the small SmolLM2 demo model, sessions in ./.previsit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/previsit simulate "${1:-fixtures/scenarios/synthea-malik-ward-bruising-polypharmacy.yaml}" "${@:2}"
