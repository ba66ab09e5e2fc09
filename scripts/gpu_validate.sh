#!/usr/bin/env bash
# GPU validation for issue 5 (and a 2-GPU check for issue 6 when two GPUs are visible), in one run on
# the GPU machine. Builds, then runs, each phase under its own time limit, logging to $LOG_DIR:
#   ops      every CUDA op against fp64 references (tests/gpu/test_ops_cuda.c)
#   parity   the whole model against HF transformers, GPT-2 XL-shaped random model (fp32, bf16)
#   curve    200 iterations of a small model on Tiny Shakespeare: CUDA fp32 and bf16 vs the CPU fp32 curve
#   resume   bitwise resume on the GPU (bf16): 2N straight == N + resume + N
#   fp16     dynamic loss scaling adapts (starts at 2^32: overflow -> skip + lower, then grows)
#   bench    zgpt bench vs the PyTorch peer on the same card: GPT-2 124M and XL, B=16, T=1024
#   benchxl  the same for GPT-2 XL (last: the slowest)
#   multi    (2+ GPUs) --gpus 2 ZeRO stages 0-3 against 1 GPU with the same global batch, resume at the
#            same and another GPU count, a killed worker
#   xlstart  seconds from `zgpt train` (GPT-2 XL) to the first finished step
#   guide    (2+ GPUs) the DeepSpeed guide's GPT-2 XL configuration (ZeRO-2, 1 x 32), bf16 and fp16
#   zero2xl  (2+ GPUs) GPT-2 XL ZeRO-2 at micro-batch 16
# usage: scripts/gpu_validate.sh [phases...]   (default: all). Prints a summary table at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RESULTS=${OUT:-/tmp}
LOG_DIR=$(mktemp -d /tmp/zgpt-val-logs.XXXXXX)
PHASES=${*:-"build ops parity curve resume fp16 bench multi xlstart guide zero2xl demo benchxl"}
SUMMARY="$RESULTS/gpu-validate-summary.txt"
: > "$SUMMARY"
# Each note also re-packs the logs, so a run stopped at its time limit still returns them.
note() { echo "$*" | tee -a "$SUMMARY"; tar -C "$LOG_DIR" -czf "$RESULTS/gpu-validate-logs.tgz" . 2>/dev/null; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
ZGPT=$ROOT/build-gpu/zgpt
W=$(mktemp -d /tmp/zgpt-val.XXXXXX)
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
note "card: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1), GPUs visible: $NGPU"

if has build; then
  t0=$(date +%s)
  if bash scripts/device-build.sh build-gpu > "$LOG_DIR/build.log" 2>&1; then note "build: ok ($(( $(date +%s) - t0 )) s)"; else note "build: FAILED"; tail -30 "$LOG_DIR/build.log"; exit 1; fi
fi
source scripts/device-env.sh

if has ops; then
  if timeout 150 build-gpu/gpu_test_ops_cuda > "$LOG_DIR/ops.log" 2>&1; then r=ok; else r=FAILED; fi
  note "ops: $r ($(tail -1 "$LOG_DIR/ops.log"))"
fi

if has parity; then
  if timeout 200 python3 tests/parity/hf_parity.py --dump build-gpu/parity_hf_dump --B 2 --T 64 \
       --precisions fp32,bf16 --work "$W/parity" > "$LOG_DIR/parity.log" 2>&1; then r=ok; else r=FAILED; fi
  rm -rf "$W/parity"
  note "parity (GPT-2 XL shape vs transformers): $r"; grep -E "^(ok|FAIL) " "$LOG_DIR/parity.log" | tee -a "$SUMMARY" >/dev/null
fi

# A small from-scratch model on Tiny Shakespeare (prepared once).
small_cfg() { # $1 out_dir, then extra --set pairs
  local out=$1; shift
  echo --config configs/shakespeare_small.json --set data="$W/data" --set out_dir="$out" --set max_iters=200 \
       --set eval_interval=50 --set eval_iters=10 --set log_interval=10 --set lr_decay_iters=200 "$@"
}
if has curve || has resume || has fp16 || has multi; then
  "$ZGPT" prepare --input data/tinyshakespeare/input.txt --out "$W/data" > "$LOG_DIR/prepare.log" 2>&1
fi
vals() { grep '"val_loss"' "$1/metrics.jsonl" | sed -E 's/.*"val_loss": ([0-9.eE+-]+).*/\1/' | tr '\n' ' '; }
maxdiff() { paste <(echo "$1" | tr ' ' '\n') <(echo "$2" | tr ' ' '\n') | awk 'NF==2 {d=$1-$2; if (d<0) d=-d; if (d>m) m=d} END {printf "%.5f", m}'; }

if has curve; then
  timeout 120 "$ZGPT" train $(small_cfg "$W/cpu" --set log_interval=1) --device cpu > "$LOG_DIR/curve_cpu.log" 2>&1
  timeout 120 "$ZGPT" train $(small_cfg "$W/g32" --set dtype=fp32 --set log_interval=1) --device cuda > "$LOG_DIR/curve_gpu_fp32.log" 2>&1
  timeout 120 "$ZGPT" train $(small_cfg "$W/g16" --set dtype=bf16 --set log_interval=1) --device cuda > "$LOG_DIR/curve_gpu_bf16.log" 2>&1
  c=$(vals "$W/cpu"); g=$(vals "$W/g32"); b=$(vals "$W/g16")
  note "curve val loss CPU fp32 : $c"
  note "curve val loss CUDA fp32: $g (max |diff| vs CPU $(maxdiff "$c" "$g"))"
  note "curve val loss CUDA bf16: $b (max |diff| vs CPU $(maxdiff "$c" "$b"))"
  # Criteria. Training at peak lr amplifies any change in summation order (CPU vs GPU fp32 agree to
  # 4 decimals for the first 30 iterations, then drift apart by up to ~0.1 at step 50 and re-converge),
  # so: (1) CUDA fp32 per-iteration train losses equal the CPU's within 2e-3 for iterations 0-30;
  # (2) the bf16 val curve stays within 0.1 of the CPU fp32 curve at every evaluation and ends within 0.05.
  tl() { grep -E '^iter ([0-9]|[12][0-9]|30):' "$1" | sed -E 's/^iter ([0-9]+): loss ([0-9.]+).*/\2/'; }
  early=$(maxdiff "$(tl "$LOG_DIR/curve_cpu.log" | tr '\n' ' ')" "$(tl "$LOG_DIR/curve_gpu_fp32.log" | tr '\n' ' ')")
  d16=$(maxdiff "$c" "$b")
  end16=$(maxdiff "$(echo $c | awk '{print $NF}')" "$(echo $b | awk '{print $NF}')")
  n=$(echo "$c" | wc -w)
  note "curve: fp32 iters 0-30 max |diff| $early; bf16 val max |diff| $d16, final $end16"
  if [ "$n" -ge 4 ] && awk -v e="$early" -v b="$d16" -v f="$end16" 'BEGIN{exit !(e < 0.002 && b < 0.1 && f < 0.05)}'; then
    note "curve: ok"; else note "curve: FAILED"; fi
  # eval and sample on the GPU, from the bf16 run's checkpoint: the same loss as the CPU's eval of it,
  # and samples reproducible for a seed.
  ec=$("$ZGPT" eval --model "$W/g16" --data "$W/data/val_000000.bin" --full --json --device cpu 2>&1 | tail -1)
  eg=$("$ZGPT" eval --model "$W/g16" --data "$W/data/val_000000.bin" --full --json --device cuda 2>&1 | tail -1)
  s1=$("$ZGPT" sample --model "$W/g16" --prompt "ROMEO:" --max-new-tokens 40 --seed 7 --device cuda 2>&1)
  s2=$("$ZGPT" sample --model "$W/g16" --prompt "ROMEO:" --max-new-tokens 40 --seed 7 --device cuda 2>&1)
  echo "$s1" > "$LOG_DIR/sample_gpu.log"
  note "eval --full: cpu $ec; cuda $eg"
  if [ -n "$s1" ] && [ "$s1" = "$s2" ]; then note "sample on cuda: reproducible for a seed: ok"; else note "sample on cuda: FAILED"; fi
fi

if has resume; then
  timeout 90 "$ZGPT" train $(small_cfg "$W/rs" --set max_iters=40 --set eval_interval=20) --device cuda > "$LOG_DIR/resume_straight.log" 2>&1
  timeout 90 "$ZGPT" train $(small_cfg "$W/rp" --set max_iters=20 --set eval_interval=20) --device cuda > "$LOG_DIR/resume_a.log" 2>&1
  timeout 90 "$ZGPT" train $(small_cfg "$W/rp" --set max_iters=40 --set eval_interval=20) --device cuda --resume > "$LOG_DIR/resume_b.log" 2>&1
  l1=$(grep '"loss": [0-9]' "$W/rs/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  l2=$(grep '"loss": [0-9]' "$W/rp/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  if [ -n "$l1" ] && [ "$l1" = "$l2" ] && cmp -s "$W/rs/final/model.bin" "$W/rp/final/model.bin"; then
    note "resume (CUDA bf16, 40 = 20 + resume + 20): ok, identical losses and byte-identical final weights"
  else note "resume: FAILED"; diff <(echo "$l1") <(echo "$l2") | head -5 | tee -a "$SUMMARY"; fi
fi

if has fp16; then
  timeout 90 "$ZGPT" train $(small_cfg "$W/f16" --set max_iters=60 --set fp16.enabled=true --set fp16.loss_scale=0 \
      --set fp16.initial_scale_power=32 --set fp16.loss_scale_window=10 --set fp16.hysteresis=1) --device cuda > "$LOG_DIR/fp16.log" 2>&1
  rc=$?
  down=$(grep -c "loss scale .* -> " "$LOG_DIR/fp16.log")
  last=$(grep -E '"val_loss"' "$W/f16/metrics.jsonl" | tail -1)
  note "fp16 dynamic loss scale: exit $rc, $down overflow/lower events; last eval $last"
  if [ "$rc" = 0 ] && [ "$down" -ge 1 ]; then note "fp16: ok"; else note "fp16: FAILED"; tail -5 "$LOG_DIR/fp16.log" | tee -a "$SUMMARY"; fi
  grep -m3 "loss scale" "$LOG_DIR/fp16.log" | tee -a "$SUMMARY" >/dev/null
fi

if has bench; then
  TB=.bench/torch_gpt2_baseline.py
  timeout 120 "$ZGPT" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 > "$LOG_DIR/bench_zgpt_124m.log" 2>&1
  note "zgpt 124M B=16: $(grep -E '^(tokens/s|ms/step|MFU|peak memory)' "$LOG_DIR/bench_zgpt_124m.log" | tr '\n' ';')"
  [ -f $TB ] && timeout 200 python3 $TB --B 16 --steps 20 > "$LOG_DIR/bench_torch_124m.log" 2>&1
  note "torch 124M B=16: $(tail -1 "$LOG_DIR/bench_torch_124m.log")"
fi

if has multi && [ "$NGPU" -ge 2 ]; then
  # Same global batch (16 sequences) on 1 GPU (2 micro-steps of 8) and 2 GPUs (8 each), 100 iterations.
  # "bf16 noise" is measured here: the largest gap between the 1-GPU bf16 and fp32 val curves.
  mcfg() { echo --config configs/shakespeare_small.json --set data="$W/data" --set out_dir="$1" --set max_iters=100 \
      --set eval_interval=25 --set eval_iters=8 --set log_interval=10 --set lr_decay_iters=100 \
      --set train_batch_size=16 --set batch_size=8 --set gradient_accumulation_steps=auto; }
  timeout 90 "$ZGPT" train $(mcfg "$W/m1f") --set dtype=fp32 --gpus 1 > "$LOG_DIR/multi_1_fp32.log" 2>&1
  timeout 90 "$ZGPT" train $(mcfg "$W/m1") --set dtype=bf16 --gpus 1 > "$LOG_DIR/multi_1.log" 2>&1
  ref=$(vals "$W/m1"); noise=$(maxdiff "$ref" "$(vals "$W/m1f")")
  tol=$(awk -v n="$noise" 'BEGIN{printf "%.4f", 2*n + 0.02}')
  note "multi: 1 GPU bf16 val $ref; bf16 noise (vs fp32) $noise -> tolerance $tol"
  mok=1
  counts="2"; [ "$NGPU" -ge 4 ] && counts="2 4"
  for ng in $counts; do
    for st in 0 1 2 3; do
      # micro-batch 16/ng x ng GPUs = the same 16 sequences per step as 1 GPU x 8 x 2 micro-steps
      timeout 90 "$ZGPT" train $(mcfg "$W/m${ng}s$st") --set batch_size=$((16 / ng)) --set dtype=bf16 \
          --set zero_optimization.stage=$st --gpus $ng > "$LOG_DIR/multi_${ng}_s$st.log" 2>&1
      rc=$?; v=$(vals "$W/m${ng}s$st"); d=$(maxdiff "$ref" "$v")
      note "multi: $ng GPUs stage $st: exit $rc, val $v (max |diff| $d), $(grep 'peak cuda memory' "$LOG_DIR/multi_${ng}_s$st.log")"
      { [ "$rc" = 0 ] && [ "$(echo "$v" | wc -w)" -ge 4 ] && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } || mok=0
    done
  done
  # bitwise resume at the same GPU count (2 GPUs, stage 2): 100 straight == 50 + resume + 50
  # keep_last_k 10: the cross-count resume below starts from iter_50 of this run
  timeout 90 "$ZGPT" train $(mcfg "$W/m2r") --set dtype=bf16 --set zero_optimization.stage=2 --set max_iters=50 --set keep_last_k=10 --gpus 2 > "$LOG_DIR/multi_r1.log" 2>&1
  timeout 90 "$ZGPT" train $(mcfg "$W/m2r") --set dtype=bf16 --set zero_optimization.stage=2 --set keep_last_k=10 --gpus 2 --resume > "$LOG_DIR/multi_r2.log" 2>&1
  la=$(grep '"loss": [0-9]' "$W/m2s2/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  lb=$(grep '"loss": [0-9]' "$W/m2r/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  if [ -n "$la" ] && [ "$la" = "$lb" ] && cmp -s "$W/m2s2/final/model.bin" "$W/m2r/final/model.bin"; then
    note "multi: resume on 2 GPUs (stage 2, 100 = 50 + resume + 50): ok, identical losses, byte-identical weights"
  else note "multi: resume on 2 GPUs: FAILED"; mok=0; fi
  # resume on another GPU count and stage: 50 iterations on 2 GPUs stage 2 (above), the rest on 1 GPU stage 1
  cp -r "$W/m2r" "$W/m21" 2>/dev/null; rm -rf "$W/m21/final" "$W/m21/iter_100"; echo iter_50 > "$W/m21/latest"
  timeout 90 "$ZGPT" train $(mcfg "$W/m21") --set dtype=bf16 --set zero_optimization.stage=1 --gpus 1 --resume > "$LOG_DIR/multi_r21.log" 2>&1
  rc=$?; v=$(vals "$W/m21" | awk '{print $NF}'); d=$(maxdiff "$(echo $ref | awk '{print $NF}')" "$v")
  note "multi: 2 GPUs (stage 2) -> resume on 1 GPU (stage 1): exit $rc, final val $v vs 1-GPU run (|diff| $d)"
  { [ "$rc" = 0 ] && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } || mok=0
  # a dead worker ends the job promptly, naming the rank
  ( timeout 100 "$ZGPT" train $(mcfg "$W/mk") --set max_iters=100000 --set save_checkpoints=false --gpus 2 > "$LOG_DIR/multi_kill.log" 2>&1; echo "exit $?" >> "$LOG_DIR/multi_kill.log" ) &
  sleep 12; victim=$(pgrep -f "out_dir=$W/mk" | tail -1); t0=$(date +%s); kill -9 "$victim" 2>/dev/null
  wait; t1=$(date +%s)
  kmsg=$(grep -E "rank [0-9]+" "$LOG_DIR/multi_kill.log" | tail -2 | tr '\n' ' ')
  note "multi: kill -9 of one worker (pid $victim): job ended in $((t1 - t0)) s, $(tail -1 "$LOG_DIR/multi_kill.log"); message: $kmsg"
  { [ $((t1 - t0)) -le 60 ] && grep -qE "exit [1-9]" "$LOG_DIR/multi_kill.log"; } || mok=0
  [ "$mok" = 1 ] && note "multi: ok" || note "multi: FAILED"
fi

# GPT-2 XL from scratch on Tiny Shakespeare with the DeepSpeed guide's settings.
xlcfg() { echo --config configs/gpt2xl_finetune.json --deepspeed configs/ds_config_zero2.json --set init_from=scratch \
    --set n_layer=48 --set n_head=25 --set n_embd=1600 --set data="$W/data" --set out_dir="$1" --set save_checkpoints=false \
    --set eval_iters=1 --set eval_interval=1000 --set log_interval=1; }
if has xlstart; then
  t0=$(date +%s.%N)
  timeout 120 "$ZGPT" train $(xlcfg "$W/xs") --set max_iters=1 --set fp16.enabled=false --set bf16.enabled=true \
      --set gradient_accumulation_steps=1 --set train_micro_batch_size_per_gpu=16 --device cuda 2>&1 | \
    while IFS= read -r line; do echo "$line"; case "$line" in "iter 0:"*) echo "FIRST_STEP_AT $(date +%s.%N)";; esac; done > "$LOG_DIR/xlstart.log"
  t1=$(grep FIRST_STEP_AT "$LOG_DIR/xlstart.log" | awk '{print $2}')
  note "xlstart: GPT-2 XL (B=16, T=1024, bf16, from scratch, eval of 1+1 batches at iter 0): first step finished $(awk -v a="$t0" -v b="${t1:-0}" 'BEGIN{printf "%.1f", b-a}') s after 'zgpt train' started"
fi
if has guide && [ "$NGPU" -ge 2 ]; then
  for prec in bf16 fp16; do
    if [ $prec = bf16 ]; then pp="--set fp16.enabled=false --set bf16.enabled=true"; else pp=""; fi
    timeout 150 "$ZGPT" train $(xlcfg "$W/g_$prec") $pp --set max_iters=3 --gpus $NGPU > "$LOG_DIR/guide_$prec.log" 2>&1
    note "guide (XL, $NGPU GPUs, ZeRO-2, micro-batch 1 x accumulation 32, $prec): exit $?; $(grep -E '^iter [12]:' "$LOG_DIR/guide_$prec.log" | tr '\n' ' '); $(grep 'peak cuda memory' "$LOG_DIR/guide_$prec.log")"
  done
fi
if has zero2xl && [ "$NGPU" -ge 2 ]; then
  timeout 150 "$ZGPT" train $(xlcfg "$W/z2") --set fp16.enabled=false --set bf16.enabled=true --set gradient_accumulation_steps=1 \
      --set train_micro_batch_size_per_gpu=16 --set max_iters=6 --gpus $NGPU > "$LOG_DIR/zero2xl.log" 2>&1
  note "zero2xl (XL, $NGPU GPUs, ZeRO-2, micro-batch 16, bf16): exit $?; $(grep -E '^iter [345]:' "$LOG_DIR/zero2xl.log" | tr '\n' ' '); $(grep 'peak cuda memory' "$LOG_DIR/zero2xl.log")"
fi
if has demo; then
  ZGPT_DEMO_OUT="$W/demo" timeout 200 bash scripts/demo.sh "$ZGPT" > "$LOG_DIR/demo.log" 2>&1
  note "demo (scripts/demo.sh, the README's main job): exit $?; $(grep -E '^(demo: training on|val loss:)' "$LOG_DIR/demo.log" | tr '\n' ' ')"
fi
if has zbench; then
  timeout 120 "$ZGPT" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 --no-profile > "$LOG_DIR/zbench.log" 2>&1
  note "zgpt 124M B=16 (regression check): $(grep -E '^(tokens/s|ms/step|peak memory)' "$LOG_DIR/zbench.log" | tr '\n' ';')"
fi
if has benchxl; then
  TB=.bench/torch_gpt2_baseline.py
  timeout 150 "$ZGPT" bench --model gpt2-xl --batch 16 --seq 1024 --device cuda --steps 6 --warmup 2 --no-profile > "$LOG_DIR/bench_zgpt_xl.log" 2>&1
  note "zgpt XL B=16: $(grep -E '^(tokens/s|ms/step|MFU|peak memory)|error' "$LOG_DIR/bench_zgpt_xl.log" | tr '\n' ';')"
  [ -f $TB ] && timeout 240 python3 $TB --layers 48 --heads 25 --embd 1600 --B 16 --steps 8 > "$LOG_DIR/bench_torch_xl.log" 2>&1
  note "torch XL B=16: $(tail -1 "$LOG_DIR/bench_torch_xl.log")"
fi
rm -rf "$W" "$LOG_DIR"
echo "==== summary ===="; cat "$SUMMARY"
