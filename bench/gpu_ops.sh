#!/usr/bin/env bash
# Builds the CUDA op tests on the GPU machine and runs them (and/or the per-op benchmark).
# Usage: bench/gpu_ops.sh [test|bench|all] [BUILD_DIR]
#   test   correctness of every CUDA op against fp64 references (ctest -L gpu, test_ops_cuda only)
#   bench  per-op kernel times for GPT-2 124M / XL shapes (CUDA events, medians)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
rc=0
B=${2:-build-gpu}
if [ -f scripts/device-env.sh ] && [ -d .devdeps ]; then source scripts/device-env.sh; fi
# CMAKE_CUDA_ARCHITECTURES on the command line: the target must get sm_90 (see docs/CUDA.md).
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DZGPT_GPU_TESTS=ON -DZGPT_MPI=OFF -DZGPT_CUDA_ARCHS=90 \
      -DCMAKE_CUDA_ARCHITECTURES=90 >"$B.cmake.log" 2>&1 || { cat "$B.cmake.log"; exit 1; }
cmake --build "$B" -j"$(nproc)" --target gpu_test_ops_cuda 2>&1 | grep -Ev '^\[ *[0-9]+%\] (Building|Linking)' || true
test -x "$B/gpu_test_ops_cuda"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
if [ "$mode" = test ] || [ "$mode" = all ]; then
  "$B/gpu_test_ops_cuda" || { echo "GPU OP TESTS FAILED"; rc=1; }
fi
if [ "$mode" = bench ] || [ "$mode" = all ]; then
  "$B/gpu_test_ops_cuda" --bench
  if [ -n "${ZG_TORCH_SDPA:-}" ]; then python3 bench/torch_baseline/sdpa_bench.py || true; fi
fi
exit $rc
