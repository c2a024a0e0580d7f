#!/usr/bin/env bash
# Sets up (first run only) and runs a simulated intake of a fixture patient on the embedded
# defaults: a local FHIR sandbox (SEKMET on 127.0.0.1) loaded with the fixture bundles, the small
# SmolLM2 demo model, sessions in ./.previsit; the summary is written back to the sandbox.
# The sandbox is stopped again on exit. Extra arguments go to `previsit simulate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
previsit=.venv/bin/previsit
scenario="${1:-fixtures/scenarios/synthea-malik-ward-bruising-polypharmacy.yaml}"
"$previsit" sandbox up
trap '"$previsit" sandbox down >/dev/null 2>&1 || true' EXIT
"$previsit" sandbox load fixtures/fhir/synthea/*.json fixtures/fhir/agentclinic/*.json
"$previsit" simulate "$scenario" --fhir-base sandbox --writeback "${@:2}"
