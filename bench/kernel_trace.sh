#!/usr/bin/env bash
# Per-kernel GPU timeline of any CUDA program through CUPTI (bench/kernel_trace.c, LD_PRELOAD).
# usage: bench/kernel_trace.sh build [OUTDIR]          compile OUTDIR/libzg_kernel_trace.so
#        bench/kernel_trace.sh run OUT.csv -- CMD...   run CMD traced into OUT.csv (builds the .so if missing)
# OUTDIR: $1, else $ZG_TRACE_DIR, else build-gpu (relative to the repository root); $CUDA_HOME (default
# /usr/local/cuda) picks the CUPTI. Summaries: python3 bench/kernel_trace.py summarize|compare ...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cuda="${CUDA_HOME:-/usr/local/cuda}"
usage() { sed -n '3,4s/^# //p' "$0" >&2; exit 2; }

trace_build() {
  local out="${1:-${ZG_TRACE_DIR:-$root/build-gpu}}"
  mkdir -p "$out"
  local lib="$cuda/targets/x86_64-linux/lib:$cuda/lib64"
  # Same line as the comment at the top of kernel_trace.c, with the paths made configurable.
  cc -O2 -shared -fPIC -o "$out/libzg_kernel_trace.so" "$root/bench/kernel_trace.c" -I"$cuda/include" \
     -L"$cuda/targets/x86_64-linux/lib" -L"$cuda/lib64" -lcupti -lpthread -Wl,-rpath,"$cuda/lib64:$cuda/targets/x86_64-linux/lib"
  echo "$out/libzg_kernel_trace.so"
}

[ $# -ge 1 ] || usage
case "$1" in
build)
  [ $# -le 2 ] || usage
  trace_build "${2:-}"
  ;;
run)
  [ $# -ge 4 ] && [ "$3" = "--" ] || usage
  out="$2"; shift 3
  so="${ZG_TRACE_DIR:-$root/build-gpu}/libzg_kernel_trace.so"
  [ -f "$so" ] || trace_build >/dev/null
  # Absolute, because CMD may change directory; truncated, because the tracer appends.
  case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
  : >"$out"
  LD_PRELOAD="$so${LD_PRELOAD:+:$LD_PRELOAD}" ZG_TRACE_OUT="$out" "$@"
  ;;
*) usage ;;
esac
