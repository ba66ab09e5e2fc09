#!/usr/bin/env bash
# Real DeepSpeed configs (tests/fixtures/ds_configs, sources in its README.md), each used unchanged
# with --deepspeed beside a small config that sets the model shape and the data: every one either
# trains two iterations on the CPU, or is refused with the one line its row of expected.tsv names
# (zgpt's "not supported" line, or DeepSpeed's own refusal). Prints the counts.
TEST_NAME=ds_configs
source "$(dirname "$0")/train_common.inc"
FIX="$ZGPT_SRC/tests/fixtures/ds_configs"
export OMP_NUM_THREADS=1 # a model this small runs fastest on one thread (87 runs, about a second each)
cat > small.json <<'JSON'
{"data": "data", "init_from": "scratch", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16,
 "max_iters": 2, "eval_interval": 2, "eval_iters": 1, "log_interval": 1, "save_checkpoints": false,
 "device": "cpu", "seed": 3}
JSON
trained=0 refused=0 n=0
while IFS=$'\t' read -r file outcome pattern sets; do
    case "$file" in '#'* | '') continue ;; esac
    [ -f "$FIX/$file" ] || fail "expected.tsv names $file, which is not in $FIX"
    n=$((n + 1))
    [ "$pattern" != - ] || pattern=""
    args=(train --config small.json --deepspeed "$FIX/$file" --set "out_dir=o_$n")
    # --set words: global batches too large for a CPU test
    [ "$sets" = - ] || for s in $sets; do args+=(--set "$s"); done
    if [ "$outcome" = trains ]; then
        "$ZGPT" "${args[@]}" > "t_$n.log" 2>&1 || fail "$file did not train: $(tail -3 "t_$n.log")"
        grep -q '^iter 1: loss' "t_$n.log" || fail "$file: no second iteration: $(tail -3 "t_$n.log")"
        [ -z "$pattern" ] || grep -qE -- "$pattern" "t_$n.log" || fail "$file: no line matching '$pattern' at start"
        trained=$((trained + 1))
    else
        expect_fail "$file" "$pattern" "$ZGPT" "${args[@]}" > /dev/null
        refused=$((refused + 1))
    fi
done < "$FIX/expected.tsv"
# every fixture has a row
for f in "$FIX"/*.json; do
    grep -q "^$(basename "$f")	" "$FIX/expected.tsv" || fail "$(basename "$f") has no row in expected.tsv"
done
[ "$n" -ge 80 ] || fail "only $n configs"
echo "ds_configs: $n real DeepSpeed configs: $trained train, $refused refused with one line"
