#!/usr/bin/env bash
# Builds zgpt with the GPU tests on a CUDA machine that has no package manager access
# (see scripts/device-deps.sh). Usage: scripts/device-build.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/device-env.sh
B=${1:-build-gpu}
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DZGPT_GPU_TESTS=ON -DZGPT_CUDA_ARCHS=90 >"$B.cmake.log" 2>&1 || { cat "$B.cmake.log"; exit 1; }
cmake --build "$B" -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\] (Building|Linking)' || true
test -x "$B/zgpt"
