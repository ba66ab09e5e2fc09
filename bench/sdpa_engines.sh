#!/usr/bin/env bash
# The cuDNN engine configs offered for zgpt's SDPA graphs on a described GPU, on a machine without one
# (bench/sdpa_engines.cu). Needs build-dev's libzgpt_lib.a built with CUDA and cuDNN.
# usage: bench/sdpa_engines.sh [DEVICE.json [CC_MAJOR [B [NH [T]]]]]
#   default: bench/devices/h100_sxm.json, 9, GPT-2 XL's B=16 NH=25 (T=1024)
# bench/devices/h100_sxm.json: an H100 SXM's properties as cudaGetDeviceProperties reports them (132 SMs, 227 KiB
# shared memory a block opt-in, 50 MiB L2, 1.98 GHz, 2.619 GHz memory), written by hand under the key names cuDNN
# 9.19's parser asks for (its error names a missing key); h200_sxm.json: the same with the H200's memory (141 GB,
# ~3.2 GHz) and PCI id.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cuda="${CUDA_HOME:-/usr/local/cuda}"
build="${ZG_BUILD:-$root/build-dev}"
out="${TMPDIR:-/tmp}/zgpt-sdpa-engines"
mkdir -p "$out"
[ -f "$build/libzgpt_lib.a" ] || { echo "sdpa_engines: $build/libzgpt_lib.a missing (cmake --build $build)" >&2; exit 1; }
"$cuda/bin/nvcc" -O1 -std=c++17 -arch=sm_90 -DZGPT_WITH_CUDA -DZGPT_WITH_CUDNN -I"$root/src" -o "$out/sdpa_engines" \
    "$root/bench/sdpa_engines.cu" "$build/libzgpt_lib.a" -L"$cuda/lib64" -lcudnn -lcublasLt -lcublas -lgomp -lopenblas \
    -lm -Xlinker -rpath="$cuda/lib64"
# cuDNN opens libcuda.so.1 to check a config: without a GPU, the toolkit's stub (its calls fail; the checks pass)
[ -e "$out/libcuda.so.1" ] || ln -s "$cuda/lib64/stubs/libcuda.so" "$out/libcuda.so.1"
LD_LIBRARY_PATH="$out${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$out/sdpa_engines" \
    "${1:-$root/bench/devices/h100_sxm.json}" "${2:-9}" "${3:-16}" "${4:-25}" "${5:-1024}"
