#!/usr/bin/env bash
# zgpt sample: reproducible for a seed, per-sample seeds independent of --num-samples, greedy, bad input; a model
# vocabulary padded past the tokenizer's (nanoGPT's 50304) draws real tokens only.
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
# ragged prompts in one batch (--prompt-file: one a line, an empty line starts from <|endoftext|>):
# row i equals its prompt sampled alone with seed + i, greedy and sampled
printf 'KING:\nFirst Citizen:\n\nWe are accounted poor citizens, the patricians good.\n' > prompts.txt
for mode in "--temperature 0" "--top-k 20 --top-p 0.9"; do
  # shellcheck disable=SC2086 # $mode is several options
  "${S[@]}" --prompt-file prompts.txt --seed 21 $mode > rag.txt 2> rag.err || fail "ragged batch: $(cat rag.err)"
  [ "$(grep -c '^---------------$' rag.txt)" -eq 4 ] || fail "expected 4 samples from 4 prompts: $(cat rag.txt)"
  grep -qE "^zgpt sample: 4 rows, .* tokens/s; steady state [0-9.]+ ms/step = [0-9.]+ tokens/s$" rag.err ||
    fail "no timing line: $(cat rag.err)"
  # the time split (KV cache, prompt = its forward + the first draw, start: 1 step, the CPU records nothing,
  # then the steady state) adds up to the headline's total, and its steps to the headline's decode steps
  grep -qE "^zgpt sample: time split: KV cache [0-9.]+ s; prompt [0-9.]+ s \(forward [0-9.]+ s, first draw [0-9.]+ s\); start [0-9.]+ s for 1 steps \(launched directly\); steady state [0-9.]+ s for [0-9]+ steps$" rag.err ||
    fail "no time split line: $(cat rag.err)"
  awk '/^zgpt sample: 4 rows/ {for (i = 1; i < NF; i++) {if ($i == "in") tot = $(i + 1); if ($i == "decode") n = $(i - 1) + 0}}
    /^zgpt sample: time split/ {sum = $7 + $10 + $20; k = $23; pd = $10 - $13 - $17; for (i = 1; i < NF; i++) if ($i == "state") {sum += $(i + 1); k += $(i + 4)}}
    END {d = tot - sum; if (d < 0) d = -d; if (pd < 0) pd = -pd; exit !(tot > 0 && d <= 0.002 && pd <= 0.0002 && n > 1 && k == n)}' rag.err ||
    fail "the time split does not add up to the total (time or steps), or the prompt to its forward and draw: $(cat rag.err)"
  grep -q "^zgpt sample: model loaded in [0-9.]* s (cpu, fp32)$" rag.err || fail "no load line: $(cat rag.err)"
  n=0
  while IFS= read -r line; do
    # shellcheck disable=SC2086
    "${S[@]}" ${line:+--prompt "$line"} --seed $((21 + n)) $mode > one.txt 2>/dev/null
    awk -v k=$n 'BEGIN {RS = "\n---------------\n"} NR == k + 1 {print}' rag.txt > rag_row.txt
    awk 'BEGIN {RS = "\n---------------\n"} NR == 1 {print}' one.txt | cmp -s - rag_row.txt ||
      fail "row $n of the ragged batch ($mode) differs from its prompt alone: $(cat rag_row.txt) / $(cat one.txt)"
    n=$((n + 1))
  done < prompts.txt
done
# --num-samples with a prompt file: rows prompt-major, row i uses seed + i
"${S[@]}" --prompt-file prompts.txt --num-samples 2 --seed 21 --temperature 0 > rag2.txt 2>/dev/null
[ "$(grep -c '^---------------$' rag2.txt)" -eq 8 ] || fail "expected 8 samples from 4 prompts x 2"
expect_fail "both prompts" "--prompt and --prompt-file together" "$ZGPT" sample --model out --prompt a --prompt-file prompts.txt
expect_fail "missing prompt file" "--prompt-file" "$ZGPT" sample --model out --prompt-file nope.txt
: > empty.txt
expect_fail "empty prompt file" "no lines" "$ZGPT" sample --model out --prompt-file empty.txt
expect_fail "bad top-p" "--top-p 1.5" "$ZGPT" sample --model out --top-p 1.5
expect_fail "negative temperature" "--temperature" "$ZGPT" sample --model out --temperature -1
expect_fail "too long" "exceeds the model's block_size 32" "$ZGPT" sample --model out --max-new-tokens 100
expect_fail "missing model" "not found" "$ZGPT" sample --model nope
# a vocabulary padded past the tokenizer's (nanoGPT's 50304): a note, and every drawn id is a real token
"$ZGPT" train --config tiny.json --set out_dir=out_v --set vocab_size=50304 --set max_iters=2 > /dev/null
"$ZGPT" sample --model out_v --max-new-tokens 24 --seed 9 --temperature 2 > pv.txt 2> pv.err || fail "padded vocabulary: $(cat pv.err)"
grep -q "note: the model's vocabulary has 50304 ids, the tokenizer's 50257" pv.err || fail "no padded-vocabulary note: $(cat pv.err)"
echo "sample_cli: ok"
