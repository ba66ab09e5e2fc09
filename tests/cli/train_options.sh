#!/usr/bin/env bash
# Training semantics: gradient accumulation is the gradient of the mean over the global batch (4x1 ==
# 2x2 micro-batches), DeepSpeed scheduler formulas reach the optimizer, early stopping, fp16 on the CPU.
TEST_NAME=train_options
source "$(dirname "$0")/train_common.inc"

"$ZGPT" train --config tiny.json --set out_dir=a41 --set batch_size=4 --set gradient_accumulation_steps=1 > a41.log
"$ZGPT" train --config tiny.json --set out_dir=a22 --set batch_size=2 --set gradient_accumulation_steps=2 > a22.log
"$ZGPT" train --config tiny.json --set out_dir=a14 --set batch_size=1 --set gradient_accumulation_steps=4 > a14.log
losses a41/metrics.jsonl > l41.txt
losses a22/metrics.jsonl > l22.txt
losses a14/metrics.jsonl > l14.txt
paste l41.txt l22.txt l14.txt | awk '{ for (i = 4; i <= 6; i += 2) { d = $2 - $i; if (d < 0) d = -d;
    if (d > 2e-4) { print "iter " $1 ": " $2 " vs " $i; bad = 1 } } } END { exit bad }' \
    || fail "accumulation changes the losses (4x1 vs 2x2 vs 1x4)"
[ "$(wc -l < l41.txt)" -eq 6 ] || fail "expected 6 iterations"

# wall_clock_breakdown (DeepSpeed key): a per-phase time line after each logged iteration; the losses
# are the same as without it
"$ZGPT" train --config tiny.json --set out_dir=wc --set batch_size=4 --set gradient_accumulation_steps=1 \
    --set wall_clock_breakdown=true > wc.log
[ "$(grep -c '^iter [0-9]*: time (ms, each phase synchronised) | data .* | forward .* | backward .* | optimizer' wc.log)" -eq 6 ] \
    || fail "wall_clock_breakdown: expected 6 breakdown lines: $(grep -m2 'time (ms' wc.log)"
losses wc/metrics.jsonl | cmp -s - l41.txt || fail "wall_clock_breakdown changed the losses"

# lm_head_chunks: the LM head over the micro-batch's rows in 3 chunks
# trains to the same losses as every row at once (only the wte gradient's summation order differs: fp32 rounding),
# evaluates the same, and resumes; a negative count is refused naming the key
"$ZGPT" train --config tiny.json --set out_dir=hc --set batch_size=4 --set gradient_accumulation_steps=1 \
    --set lm_head_chunks=3 > hc.log || fail "lm_head_chunks=3: $(tail -2 hc.log)"
losses hc/metrics.jsonl > lhc.txt
paste l41.txt lhc.txt | awk '{ d = $2 - $4; if (d < 0) d = -d; if (d > 1e-5) { print "iter " $1 ": " $2 " vs " $4; bad = 1 } }
    END { exit bad }' || fail "lm_head_chunks=3 changed the losses"
[ "$(wc -l < lhc.txt)" -eq 6 ] || fail "lm_head_chunks=3: expected 6 iterations"
if "$ZGPT" train --config tiny.json --set out_dir=hcbad --set lm_head_chunks=-1 > hcbad.log 2>&1; then
  fail "lm_head_chunks=-1 accepted"
fi
grep -q "lm_head_chunks" hcbad.log || fail "lm_head_chunks=-1: no message naming the key: $(cat hcbad.log)"
echo "ok lm_head_chunks=3: the same losses as every row at once; -1 refused"

# DeepSpeed WarmupDecayLR: lr(step) = max_lr * step / 2 for step < 2, then max_lr * (6 - step) / 4
cat > ds.json <<'JSON'
{"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
 "optimizer": {"type": "AdamW", "params": {"lr": 0.002, "betas": [0.9, 0.99], "weight_decay": 0.0}},
 "scheduler": {"type": "WarmupDecayLR",
               "params": {"warmup_min_lr": 0, "warmup_max_lr": 0.002, "warmup_num_steps": 2,
                          "warmup_type": "linear", "total_num_steps": 6}},
 "fp16": {"enabled": true, "initial_scale_power": 8},
 "zero_optimization": {"stage": 2, "overlap_comm": true},
 "steps_per_print": 10, "wall_clock_breakdown": false}
JSON
cat > tiny_ds.json <<'JSON'
{"out_dir": "out", "data": "data", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "max_iters": 6,
 "eval_interval": 3, "eval_iters": 2, "log_interval": 1, "seed": 11, "device": "cpu"}
JSON
"$ZGPT" train --config tiny_ds.json --deepspeed ds.json --set out_dir=sched > sched.log
grep -q "note: the CPU backend trains in fp32" sched.log || fail "no fp32 note for fp16 on the CPU: $(head -3 sched.log)"
want="0 0.001 0.002 0.0015 0.001 0.0005"
got=$(grep '"loss": [0-9]' sched/metrics.jsonl | sed -E 's/.*"lr": ([^,]+),.*/\1/' | tr '\n' ' ')
i=0
for w in $want; do
    g=$(echo "$got" | cut -d' ' -f$((i + 1)))
    awk -v a="$g" -v b="$w" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-9) }' || fail "lr at step $i: $g, want $w"
    i=$((i + 1))
done
# DeepSpeed's spellings of the options: --deepspeed_config is --deepspeed; the launcher's --num_gpus is --gpus (which
# asks for CUDA, so beside --device cpu it is refused as --gpus is)
"$ZGPT" train --config tiny_ds.json --deepspeed_config ds.json --set out_dir=sched2 > sched2.log
losses sched/metrics.jsonl > s1.txt
losses sched2/metrics.jsonl | cmp -s - s1.txt || fail "--deepspeed_config is not --deepspeed"
rc=0
"$ZGPT" train --config tiny_ds.json --num_gpus=1 --device cpu > ng.log 2>&1 || rc=$?
[ "$rc" -ne 0 ] && grep -q "gpus asks for GPUs but --device is 'cpu'" ng.log || fail "--num_gpus is not --gpus: $(cat ng.log)"

# early stopping: lr 0 never improves the val loss; patience 2 stops after two more evaluations
"$ZGPT" train --config tiny.json --set out_dir=early --set learning_rate=0 --set max_iters=50 --set eval_interval=2 \
    --set early_stopping_patience=2 > early.log
grep -q "early stopping: val loss has not improved for 2 evaluations" early.log || fail "no early stop: $(tail -3 early.log)"
[ "$(cat early/latest)" = iter_4 ] || fail "early stop should end at iter_4, latest is $(cat early/latest)"
[ -f early/final/manifest.json ] || fail "no final checkpoint after early stopping"
# the shipped configs validate: the GPT-2 XL fine-tune gets as far as looking for the weights, and the
# small Shakespeare config starts training
mkdir -p models
ZGPT_MODELS=$PWD/models HF_HUB_OFFLINE=1 HF_HUB_CACHE=$PWD/hub expect_fail "shipped gpt2-xl config" "gpt2-xl weights are not in" \
    "$ZGPT" train --config "$ZGPT_SRC/configs/gpt2xl_finetune.json" --deepspeed "$ZGPT_SRC/configs/ds_config_zero2.json"
"$ZGPT" train --config "$ZGPT_SRC/configs/shakespeare_small.json" --set data=data --set out_dir=small \
    --set max_iters=1 --set eval_iters=1 > small.log || fail "shakespeare_small.json: $(cat small.log)"
grep -q "n_layer 4, n_head 4, n_embd 128" small.log || fail "shakespeare_small.json shape: $(head -2 small.log)"
echo "train_options: ok"
