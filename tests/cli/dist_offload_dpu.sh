#!/usr/bin/env bash
# ZeRO-Offload's delayed parameter update (zero_optimization.offload_optimizer.delayed_param_update,
# src/train/zero_offload.h) on CPU ranks. The host AdamW of step t runs on a thread while step t+1's
# micro-steps run on the weights updated through step t-1; every evaluation, checkpoint and the end
# flush it (the weights made current). So:
#  - a flush every step (eval_interval 1) IS the run without the delay, bitwise (losses, weights, shards);
#  - without flushes the losses equal the undelayed run's at iteration 0 only (iteration 1 already sees
#    the initial weights again), and with delayed_param_update_warmup 2 up to iteration 2; the run
#    still trains (its last loss below its first);
#  - resume at 1 and 2 ranks, stages 1-3: 4 iterations straight == 2 + resume + 2 (the save at 2 is
#    an evaluation, which the straight run flushes at too), bitwise;
#  - the banner and plan name it; delayed_param_update without offload_optimizer cpu is refused.
# (The delay off is the existing path: tests/cli/dist_offload.sh.)
TEST_NAME=dist_offload_dpu
source "$(dirname "$0")/dist_common.inc"
OFF=(--set zero_optimization.offload_optimizer.device=cpu)
DPU=("${OFF[@]}" --set zero_optimization.offload_optimizer.delayed_param_update=true)
# first_diff A B: the first iteration whose training loss differs (none: "none")
first_diff() {
    paste <(metric "$1" loss) <(metric "$2" loss) | awk '$1 != $3 { print "bad"; exit } $2 != $4 { print $1; f = 1; exit }
        END { if (!f) print "none" }'
}

SECONDS=0
# a flush every step == no delay
run4 n --set out_dir=n --set eval_interval=1 --nproc 2 "${OFF[@]}"
run4 f --set out_dir=f --set eval_interval=1 --nproc 2 "${DPU[@]}"
grep -q "delayed parameter update after 0 steps" f.log || fail "the banner does not name the delay: $(head -3 f.log)"
grep -q "delayed parameter update" n.log && fail "the run without the delay names it: $(head -3 n.log)"
same_run n f
echo "ok 2 ranks, stage 2: the delay flushed every step == no delay, bitwise (${SECONDS} s)"

# the delay acts, and trains
SECONDS=0
run4 u --set out_dir=u --set max_iters=10 --set eval_interval=100 --nproc 2 "${OFF[@]}"
run4 d --set out_dir=d --set max_iters=10 --set eval_interval=100 --nproc 2 "${DPU[@]}"
[ "$(first_diff u/metrics.jsonl d/metrics.jsonl)" = 1 ] \
    || fail "the delayed run should first differ at iteration 1, got $(first_diff u/metrics.jsonl d/metrics.jsonl): $(paste <(metric u/metrics.jsonl loss) <(metric d/metrics.jsonl loss))"
run4 w --set out_dir=w --set max_iters=10 --set eval_interval=100 --nproc 2 "${DPU[@]}" \
    --set zero_optimization.offload_optimizer.delayed_param_update_warmup=2
[ "$(first_diff u/metrics.jsonl w/metrics.jsonl)" = 3 ] \
    || fail "with a warm-up of 2 steps the first difference should be at iteration 3, got $(first_diff u/metrics.jsonl w/metrics.jsonl)"
python3 - d/metrics.jsonl <<'PY' || fail "the delayed run does not train: $(metric d/metrics.jsonl loss)"
import json, sys
l = [json.loads(x)["loss"] for x in open(sys.argv[1]) if '"loss": ' in x and '"val_loss"' not in x]
assert len(l) == 10 and sum(l[-3:]) / 3 < sum(l[:3]) / 3 - 0.05, l
PY
echo "ok the delay acts (differs from iteration 1; warm-up 2: from 3) and trains: $(metric d/metrics.jsonl loss | head -1) .. $(metric d/metrics.jsonl loss | tail -1) (${SECONDS} s)"

# bitwise resume with the delay, 1 and 2 ranks, stages 1-3
SECONDS=0
for np in 1 2; do
    for stage in 1 2 3; do
        t=s${np}_$stage
        run4 $t --set out_dir=$t --nproc $np --set zero_optimization.stage=$stage "${DPU[@]}"
        run4 ${t}a --set out_dir=${t}r --set max_iters=2 --nproc $np --set zero_optimization.stage=$stage "${DPU[@]}"
        run4 ${t}b --set out_dir=${t}r --nproc $np --set zero_optimization.stage=$stage --resume "${DPU[@]}"
        grep -q "resuming at iter 2" ${t}b.log || fail "$t did not resume at 2: $(cat ${t}b.log)"
        same_run $t ${t}r
    done
done
echo "ok resume with the delay (2 + 2 == 4) at 1 and 2 ranks, stages 1-3: bitwise (${SECONDS} s)"

python3 - <<'PY' > dp.json
import json
d = json.load(open("d.json"))
d["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "delayed_param_update": True}
print(json.dumps(d))
PY
"$ZGPT" plan dp.json --nproc 2 > plan.txt 2>&1 || fail "plan: $(cat plan.txt)"
grep -q "delayed parameter update: step t's host AdamW overlaps step t+1" plan.txt || fail "plan: $(cat plan.txt)"
expect_fail no-offload "delayed_param_update needs offload_optimizer \"device\": \"cpu\"" \
    "$ZGPT" train --config d.json --set max_iters=1 --set out_dir=x1 \
    --set zero_optimization.offload_optimizer.delayed_param_update=true
echo "PASS dist_offload_dpu"
