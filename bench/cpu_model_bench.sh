#!/usr/bin/env bash
# GPT-2 CPU forward+backward benchmark with the per-op split.
# usage: bench/cpu_model_bench.sh [model=gpt2|gpt2-medium|...|L:H:C] [B=4] [T=256] [steps=3]
# Threads: OMP_NUM_THREADS (default: all cores). Prints ms/step, tokens/s, GFLOP/s, memory and the
# per-op split of one profiled step.
# Builds zgpt_lib in $BUILD (default build-bench, CPU only) and links bench/cpu_model_bench.c to it.
set -euo pipefail
source "$(dirname "$0")/bench_build.inc"
bench_build cpu_model_bench
exec "$build/cpu_model_bench" "$@"
