#!/usr/bin/env bash
# zgpt sample: reproducible for a seed, per-sample seeds independent of --num-samples, greedy, bad input.
TEST_NAME=sample_cli
source "$(dirname "$0")/train_common.inc"
"$ZGPT" train --config tiny.json --set max_iters=3 > train.log
S=("$ZGPT" sample --model out --max-new-tokens 12)
"${S[@]}" --prompt "KING:" --seed 5 > a1.txt
"${S[@]}" --prompt "KING:" --seed 5 > a2.txt
cmp a1.txt a2.txt || fail "same seed, different text"
"${S[@]}" --prompt "KING:" --seed 6 > b.txt
cmp -s a1.txt b.txt && fail "different seeds gave the same text"
grep -q "^KING:" a1.txt || fail "sample does not start with the prompt: $(cat a1.txt)"
grep -q "^---------------$" a1.txt || fail "no separator line"
# sample i uses seed + i, whatever the batch: sample 0 of two == the single sample
"${S[@]}" --prompt "KING:" --seed 5 --num-samples 2 > two.txt
[ "$(grep -c '^---------------$' two.txt)" -eq 2 ] || fail "expected 2 samples: $(cat two.txt)"
head -n "$(wc -l < a1.txt)" two.txt | cmp - a1.txt || fail "sample 0 of a batch of 2 differs from the single sample"
# greedy is deterministic whatever the seed; top-k 1 is greedy too
"${S[@]}" --prompt "KING:" --temperature 0 --seed 1 > g1.txt
"${S[@]}" --prompt "KING:" --temperature 0 --seed 2 > g2.txt
"${S[@]}" --prompt "KING:" --top-k 1 --seed 3 > g3.txt
cmp g1.txt g2.txt || fail "greedy depends on the seed"
cmp g1.txt g3.txt || fail "top-k 1 differs from greedy"
"${S[@]}" --top-p 0.9 --seed 4 > p.txt   # no prompt: starts from <|endoftext|>
[ -s p.txt ] || fail "empty output without a prompt"
expect_fail "bad top-p" "--top-p 1.5" "$ZGPT" sample --model out --top-p 1.5
expect_fail "negative temperature" "--temperature" "$ZGPT" sample --model out --temperature -1
expect_fail "too long" "exceeds the model's block_size 32" "$ZGPT" sample --model out --max-new-tokens 100
expect_fail "missing model" "not found" "$ZGPT" sample --model nope
echo "sample_cli: ok"
