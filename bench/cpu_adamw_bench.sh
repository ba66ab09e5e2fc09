#!/usr/bin/env bash
# The CPU backend's AdamW (and ZeRO-Offload's host Lamb) against the host's memory bandwidth
# (bench/cpu_adamw_bench.c), and, when
# PyTorch is installed, torch.optim.AdamW(fused=True) on the same number of fp32 CPU parameters.
# usage: bench/cpu_adamw_bench.sh [N=1558611200] [reps=7]
# Builds zgpt_lib in $BUILD (default build-bench, CPU only) and links the bench to it.
set -euo pipefail
source "$(dirname "$0")/bench_build.inc"
n=${1:-1558611200}
reps=${2:-7}
bench_build cpu_adamw_bench
"$build/cpu_adamw_bench" "$n" "$reps"
if python3 -c 'import torch' 2>/dev/null; then
python3 - "$n" "$reps" <<'PY'
import statistics, sys, time, torch
n, reps = int(sys.argv[1]), int(sys.argv[2])
p = torch.nn.Parameter(torch.randn(n) * 0.1)
p.grad = torch.randn(n) * 0.01
opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
ts = []
for r in range(reps + 1):
    t0 = time.perf_counter(); opt.step(); dt = time.perf_counter() - t0
    if r: ts.append(dt)
s = statistics.median(ts)
print(f"torch AdamW(fused=True): {n} parameters, {torch.get_num_threads()} threads: {s:.3f} s per update "
      f"(median of {reps}), {n / s:.3g} parameters/s, {28 * n / s / 1e9:.1f} GB/s (28 B/parameter)")
PY
fi
