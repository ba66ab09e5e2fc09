#!/usr/bin/env bash
# The README's main job on the default corpus (Tiny Shakespeare shipped in data/).
set -euo pipefail
ZGPT=${1:-build/zgpt}
cd "$(dirname "$0")/.."
OUT=${ZGPT_DEMO_OUT:-out/shakespeare}
"$ZGPT" prepare --input data/tinyshakespeare/input.txt --out "$OUT/data"
