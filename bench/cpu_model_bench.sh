#!/usr/bin/env bash
# GPT-2 CPU forward+backward benchmark with the per-op split.
# usage: bench/cpu_model_bench.sh [model=gpt2|gpt2-medium|...|L:H:C] [B=4] [T=256] [steps=3]
# Threads: OMP_NUM_THREADS (default: all cores). Prints ms/step, tokens/s, GFLOP/s, memory and the
# per-op split of one profiled step.
# Builds zgpt_lib in $BUILD (default build-bench, CPU only) and links bench/cpu_model_bench.c to it.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD:-$src/build-bench}"
cmake -S "$src" -B "$build" -DZGPT_CUDA=OFF -DZGPT_MPI=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target zgpt_lib -j"$(nproc)" >/dev/null
cc -O3 -std=c11 -D_POSIX_C_SOURCE=200809L -fopenmp -Wall -Wextra -I"$src/src" \
   "$src/bench/cpu_model_bench.c" "$build/libzgpt_lib.a" \
   $(pkg-config --cflags --libs openblas libcjson libxxhash libpcre2-8) $(pkg-config --libs libcurl 2>/dev/null || true) \
   -lm -lpthread -o "$build/cpu_model_bench"
exec "$build/cpu_model_bench" "$@"
