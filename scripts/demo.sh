#!/usr/bin/env bash
# The README's main job: prepare Tiny Shakespeare (shipped in data/), train a small GPT-2 from
# scratch for a few minutes (on all GPUs when there are any, else on the CPU), check that the
# validation loss clearly fell, and print samples from the trained model.
#   scripts/demo.sh [path/to/zgpt]      (default: build/zgpt; ZGPT_DEMO_OUT picks the output folder)
set -euo pipefail
ZGPT=${1:-build/zgpt}
if [ -x "$ZGPT" ]; then ZGPT=$(cd "$(dirname "$ZGPT")" && pwd)/$(basename "$ZGPT"); fi
cd "$(dirname "$0")/.."
OUT=${ZGPT_DEMO_OUT:-out/shakespeare}

"$ZGPT" prepare --input data/tinyshakespeare/input.txt --out "$OUT/data"
rm -rf "$OUT/run" # a fresh run every time (zgpt refuses to overwrite a run without --resume)
# Where to train: every GPU when the build has CUDA and GPUs are visible (one process each, as
# deepspeed --num_gpus), else the CPU.
where=(--device cpu)
if "$ZGPT" --version | grep -q '^  cuda  *runtime' && command -v nvidia-smi >/dev/null 2>&1 &&
   [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -ge 1 ]; then
    where=(--gpus all)
fi
echo "demo: training on ${where[*]}"
"$ZGPT" train --config configs/shakespeare_small.json --set data="$OUT/data" --set out_dir="$OUT/run" "${where[@]}"

first=$(grep '"val_loss"' "$OUT/run/metrics.jsonl" | head -1 | sed -E 's/.*"val_loss": ([0-9.]+).*/\1/')
last=$(grep '"val_loss"' "$OUT/run/metrics.jsonl" | tail -1 | sed -E 's/.*"val_loss": ([0-9.]+).*/\1/')
echo
echo "val loss: $first at step 0 -> $last at the end"
if ! awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 2.0) }'; then
    echo "demo: the val loss did not fall clearly ($first -> $last)" >&2
    exit 1
fi
echo
"$ZGPT" eval --model "$OUT/run" --data "$OUT/data/val_000000.bin" --full
echo
"$ZGPT" sample --model "$OUT/run" --prompt "ROMEO:" --num-samples 3 --max-new-tokens 48 --seed 1337
