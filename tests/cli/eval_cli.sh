#!/usr/bin/env bash
# zgpt eval: --full windows exactly as defined (count of targets), batch-size independence, JSON,
# agreement with an exported copy, bad input.
TEST_NAME=eval_cli
source "$(dirname "$0")/train_common.inc"
[ -n "$VAL_TOKENS" ] || fail "could not read the val token count from prepare"
"$ZGPT" train --config tiny.json --set max_iters=3 > train.log
VAL=data/val_000000.bin
"$ZGPT" eval --model out --data $VAL --full --json --batch 1 > e1.json
"$ZGPT" eval --model out/latest_is_not_a_dir 2>/dev/null && fail "bogus model accepted"
"$ZGPT" eval --model out/iter_3 --data $VAL --full --json --batch 5 > e5.json
"$ZGPT" eval --model out --data $VAL --full --json --seq 16 --batch 7 > e16.json
tok() { sed -E 's/.*"tokens": ([0-9]+).*/\1/' "$1"; }
los() { sed -E 's/.*"loss": ([^,]+),.*/\1/' "$1"; }
# windows k with kT+T+1 <= n: floor((n-1)/T) windows of T targets
[ "$(tok e1.json)" -eq $(( (VAL_TOKENS - 1) / 32 * 32 )) ] || fail "T=32: $(tok e1.json) targets for $VAL_TOKENS tokens"
[ "$(tok e16.json)" -eq $(( (VAL_TOKENS - 1) / 16 * 16 )) ] || fail "T=16: $(tok e16.json) targets"
awk -v a="$(los e1.json)" -v b="$(los e5.json)" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 * a) }' \
    || fail "loss depends on --batch: $(cat e1.json) vs $(cat e5.json)"
grep -qE '^\{"loss": [0-9.]+, "perplexity": [0-9.]+, "tokens": [0-9]+\}$' e1.json || fail "bad JSON: $(cat e1.json)"
# perplexity = exp(loss)
awk -v l="$(los e1.json)" -v p="$(sed -E 's/.*"perplexity": ([^,]+),.*/\1/' e1.json)" \
    'BEGIN { d = exp(l) - p; if (d < 0) d = -d; exit !(d <= 1e-4 * p) }' || fail "perplexity != exp(loss)"
# the full-file loss agrees with the trainer's val estimate at the same weights to within sampling noise
val=$(grep '"val_loss"' out/metrics.jsonl | tail -1 | sed -E 's/.*"val_loss": ([0-9.]+).*/\1/')
awk -v a="$(los e1.json)" -v b="$val" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.5) }' \
    || fail "eval loss $(los e1.json) far from the trainer's val loss $val"
# random windows (default) and a folder
"$ZGPT" eval --model out --data data --iters 3 --batch 2 > r.txt
grep -qE "^loss [0-9.]+, perplexity [0-9.]+ over 192 tokens" r.txt || fail "random-window eval: $(cat r.txt)"

# bad input
printf 'To be, or not.' > short.txt
"$ZGPT" prepare --input short.txt --out short --val-fraction 0.5 > /dev/null
expect_fail "data shorter than seq+1" "fewer than --seq 32 \\+ 1" "$ZGPT" eval --model out --data short/val_000000.bin --full
expect_fail "seq too long" "--seq 64 exceeds the model's block_size 32" "$ZGPT" eval --model out --data $VAL --seq 64
expect_fail "missing model" "model 'nope' not found" "$ZGPT" eval --model nope --data $VAL
expect_fail "missing data" "cannot open.*missing.bin|missing.bin" "$ZGPT" eval --model out --data missing.bin --full
expect_fail "full on a folder" "--full needs one token file" "$ZGPT" eval --model out --data data --full
# bench on the trained checkpoint: the report's lines are there and the numbers are positive
"$ZGPT" bench --model out --batch 2 --seq 32 --steps 2 --warmup 1 --json > bench.txt
for k in "tokens/s: [0-9]" "ms/step: [0-9]" "MFU: [0-9.]+% of" "peak memory: backend" "matmul +[0-9.]+ +[0-9.]+"; do
    grep -qE "$k" bench.txt || fail "bench output lacks '$k': $(cat bench.txt)"
done
grep -qE '^\{"tokens_per_sec": [0-9.]+, "ms_per_step": [0-9.]+' bench.txt || fail "bench JSON: $(tail -1 bench.txt)"
expect_fail "bench seq too long" "--seq 64 exceeds" "$ZGPT" bench --model out --seq 64
# one precision rule: eval computes in fp32 by default (the exported model's loss in transformers);
# --dtype bf16 on the CPU is said, not silently dropped; a bad --dtype is refused
"$ZGPT" eval --model out --data data --iters 1 --batch 2 > p32.txt 2> p32.err
grep -q ", fp32, random windows" p32.txt || fail "eval's default precision: $(cat p32.txt)"
[ ! -s p32.err ] || fail "eval fp32 printed a note: $(cat p32.err)"
"$ZGPT" eval --model out --data data --iters 1 --batch 2 --dtype bf16 --device cpu > pb.txt 2> pb.err
grep -q "note: the CPU backend computes in fp32; --dtype bf16 applies on CUDA" pb.err || fail "no CPU note: $(cat pb.err)"
cmp <(sed 's/,.*//' p32.txt) <(sed 's/,.*//' pb.txt) || fail "the CPU's bf16 request changed the loss"
expect_fail "bad --dtype" "--dtype: .*fp64" "$ZGPT" eval --model out --data data --dtype fp64
echo "eval_cli: ok"
