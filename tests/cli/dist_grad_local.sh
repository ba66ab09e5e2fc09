#!/usr/bin/env bash
# grad_accum_local_layers (issue 22) through `zgpt train` and `zgpt plan` on 2 MPI ranks, accumulation 4
# (micro-batch 2 x 4 x 2 ranks = 16 sequences per step), the 3-layer model of dist_common.inc:
#  - bad values (-2, n_layer + 1, a string) stop zgpt with one error line naming the key;
#  - where the key has nothing to do (stage 1, one process, accumulation 1) a given value (-1 too) prints
#    one note saying why; without the key nothing is said; with ZeRO-Offload on 2 ranks it applies;
#  - stage 2: -1 (auto) and 3 (= n_layer) follow 0 (every micro-step reduces everything) within
#    fp32 reduction-order tolerance (the sums over micro-steps and over ranks happen in another order), and
#    the banner says what each micro-step reduces;
#  - resume with layers held back (N = 2 at stage 2, N = 1 at stage 3) is bitwise: 8 iterations straight ==
#    4 + --resume + 4 (losses, model.bin, optimizer shards): the persistent buffers hold nothing between
#    steps;
#  - zgpt plan --json reports the schedule and counts the persistent buffers;
#  - carried reductions (ZGPT_REDUCE_CARRY) are said by the banner and the plan; a bad value is refused.
# The engine-level checks (reductions per micro-step, allocated == planned on every rank) are in
# tests/unit/test_zero_gpt2.c (local_layers), run on 1-4 ranks by dist_zero.sh.
TEST_NAME=dist_grad_local
source "$(dirname "$0")/dist_common.inc"
LTOL=1e-4 WTOL=2e-4
G=(--set train_batch_size=16 --set max_iters=6 --set eval_interval=3)
run() { # run NAME ARGS...: zgpt train on d.json with a deadline; fails the test on error
    local name=$1
    shift
    timeout 300 "$ZGPT" train --config d.json --set out_dir=$name "$@" > $name.log 2> $name.err ||
        fail "$name: $(tail -5 $name.err $name.log)"
}

# 1. bad values: one line naming the key (one process: the check does not depend on the world size)
expect_fail "grad_accum_local_layers=-2" "grad_accum_local_layers" \
    "$ZGPT" train --config d.json --set out_dir=bad1 --set max_iters=0 --set grad_accum_local_layers=-2
expect_fail "grad_accum_local_layers=4 (3 layers)" "grad_accum_local_layers is 4; allowed.*0 .. 3|1 .. 3" \
    "$ZGPT" train --config d.json --set out_dir=bad2 --set max_iters=0 --set grad_accum_local_layers=4
expect_fail "grad_accum_local_layers=\"two\"" "grad_accum_local_layers" \
    "$ZGPT" train --config d.json --set out_dir=bad3 --set max_iters=0 --set 'grad_accum_local_layers="two"'
sed 's/"zero_optimization"/"grad_accum_local_layers": 9, "zero_optimization"/' d.json > bad.json
expect_fail "plan, grad_accum_local_layers 9" "grad_accum_local_layers is 9" "$ZGPT" plan bad.json --nproc 2

# 2. nothing to do: a set value says why in one line; the default is silent
note_of() { grep -c "note: grad_accum_local_layers" "$1.log" || true; }
run idle_s1 "${G[@]}" --set max_iters=0 --nproc 2 --set zero_optimization.stage=1 --set grad_accum_local_layers=2
grep -q "note: grad_accum_local_layers 2: ZeRO stages 0-1 already accumulate" idle_s1.log || fail "stage 1: no note: $(cat idle_s1.log)"
run idle_one "${G[@]}" --set max_iters=0 --set grad_accum_local_layers=1
grep -q "note: grad_accum_local_layers 1: one process reduces no gradients" idle_one.log || fail "one process: no note: $(cat idle_one.log)"
run idle_a1 --set train_batch_size=4 --set max_iters=0 --nproc 2 --set grad_accum_local_layers=0
grep -q "note: grad_accum_local_layers 0: gradient accumulation is 1" idle_a1.log || fail "accumulation 1: no note: $(cat idle_a1.log)"
# ZeRO-Offload on 2 ranks holds back as without (its pieces go to the host as the last micro-step reduces them)
run off3 "${G[@]}" --set max_iters=0 --nproc 2 --set zero_optimization.offload_optimizer.device=cpu --set grad_accum_local_layers=3
grep -q "gradients: the embeddings + ln_f and layers 0-2 accumulate locally" off3.log || fail "offload: banner: $(cat off3.log)"
[ "$(note_of off3)" = 0 ] || fail "offload: a note: $(cat off3.log)"
run idle_def "${G[@]}" --set max_iters=0 --nproc 2 --set zero_optimization.stage=1
[ "$(note_of idle_def)" = 0 ] || fail "the default printed a note: $(cat idle_def.log)"
run idle_auto "${G[@]}" --set max_iters=0 --nproc 2 --set zero_optimization.stage=1 --set grad_accum_local_layers=-1
grep -q "note: grad_accum_local_layers -1: ZeRO stages 0-1" idle_auto.log || fail "-1 given at stage 1: no note: $(cat idle_auto.log)"
for n in idle_s1 idle_one idle_a1; do [ "$(note_of $n)" = 1 ] || fail "$n: expected one note: $(cat $n.log)"; done
echo "ok a value given where it has nothing to do says why, once (-1 too); the default says nothing"

# 3. stage 2: -1 and n_layer against 0, with the banner's account of the reductions (stage 3's gradient
# path is stage 2's; tests/unit/test_zero_gpt2.c compares both stages, with and without overlap_comm)
SECONDS=0
run s2_0 "${G[@]}" --nproc 2 --set grad_accum_local_layers=0
grep -q "gradients: every micro-step reduces all of them" s2_0.log || fail "0: banner: $(cat s2_0.log)"
for v in -1 3; do
    run s2_$v "${G[@]}" --nproc 2 --set grad_accum_local_layers=$v
    losses_close s2_0/metrics.jsonl s2_$v/metrics.jsonl 6 $LTOL
    weights_close model s2_0/final/model.bin s2_$v/final/model.bin $WTOL
    want="the embeddings + ln_f accumulate locally over the 4 micro-steps"
    [ $v = 3 ] && want="the embeddings + ln_f and layers 0-2 accumulate locally over the 4 micro-steps"
    grep -q "gradients: $want" s2_$v.log || fail "s2_$v: banner: $(grep gradients: s2_$v.log)"
done
echo "ok stage 2: grad_accum_local_layers -1 and 3 follow 0 (${SECONDS} s)"

# 4. bitwise resume with layers held back
for case in "2 2" "3 1"; do
    set -- $case
    stage=$1 v=$2
    S=("${G[@]}" --nproc 2 --set zero_optimization.stage=$stage --set grad_accum_local_layers=$v)
    run st$stage "${S[@]}"
    run sp$stage "${S[@]}" --set max_iters=3
    timeout 300 "$ZGPT" train --config d.json --set out_dir=sp$stage "${S[@]}" --resume > sp${stage}b.log 2>&1 ||
        fail "resume: $(tail -5 sp${stage}b.log)"
    grep -q "resuming at iter 3" sp${stage}b.log || fail "did not resume at iter 3: $(cat sp${stage}b.log)"
    losses_same st$stage/metrics.jsonl sp$stage/metrics.jsonl
    cmp st$stage/final/model.bin sp$stage/final/model.bin || fail "stage $stage, N=$v: weights differ after resume"
    for f in st$stage/final/optim_*.bin; do
        cmp "$f" sp$stage/final/$(basename "$f") || fail "stage $stage, N=$v: $(basename "$f") differs after resume"
    done
    echo "ok stage $stage, grad_accum_local_layers $v: 6 straight == 3 + resume + 3, bitwise"
done

# 5. zgpt plan: the schedule and the persistent buffers (fp32 on the CPU: 4 bytes per element). Without
# overlap_comm and with buckets smaller than a layer the pool holds 2 of the 3 layers, so holding back layer 0 adds its buffer (with more it
# would take the place of pool buffers: 3 local layers leave the pool none)
plan_json() { # plan_json V KEY: KEY of `zgpt plan --json` for grad_accum_local_layers V on 2 ranks
    sed "s/\"train_batch_size\": 8,/\"train_batch_size\": 16, \"grad_accum_local_layers\": $1,/; s/\"stage\": 2,/\"stage\": 2, \"overlap_comm\": false,/; s/\"reduce_bucket_size\": 20011/\"reduce_bucket_size\": 5003/" d.json > p$1.json
    "$ZGPT" plan p$1.json --nproc 2 --device cpu --json | python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$2"
}
[ "$(plan_json 3 'd["local_layers"], d["local_embeddings"], d["grad_accum"]')" = "(3, True, 4)" ] || fail "plan: schedule"
[ "$(plan_json 3 'd["reduced_elems_per_step"] == 3 * d["reduced_elems_per_micro_step"] + d["num_params"]')" = True ] ||
    fail "plan: per step"
[ "$(plan_json 0 'd["reduced_elems_per_micro_step"] == d["num_params"] and d["local_layer_bytes"] == 0')" = True ] ||
    fail "plan: 0 reduces everything"
g0=$(plan_json 0 'd["ranks"][0]["grads"]') g1=$(plan_json 1 'd["ranks"][0]["grads"]') lb=$(plan_json 1 'd["local_layer_bytes"]')
[ "$lb" -gt 0 ] && [ "$g1" -eq $((g0 + lb)) ] || fail "plan: the persistent buffer is not counted ($g0 -> $g1, layer $lb)"
"$ZGPT" plan p3.json --nproc 2 --device cpu | grep -q "the embeddings + ln_f and layers 0-2 of 3 accumulate locally" ||
    fail "plan text: $("$ZGPT" plan p3.json --nproc 2 --device cpu)"
echo "ok zgpt plan: the schedule, and the $lb bytes of a persistent layer buffer per rank counted ($g0 -> $g1 gradient bytes)"

# 6. carried reductions (ZGPT_REDUCE_CARRY; overlap_comm, the default): the banner and the plan say so, 0 says
# each micro-step waits, a malformed value is refused in one line (the bits are test_zero_gpt2's reduce_carry)
grep -q "gradients: each micro-step but a step's last leaves its last reductions running under the next" s2_0.log ||
    fail "banner: carried reductions not said: $(grep gradients: s2_0.log)"
carried() { "$ZGPT" plan pc.json --nproc 2 --device cpu --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["carried_reductions"])'; }
sed 's/"train_batch_size": 8,/"train_batch_size": 16,/' d.json > pc.json
[ "$(carried)" = True ] || fail "plan: overlap_comm and accumulation 4, yet no carried reductions"
[ "$(ZGPT_REDUCE_CARRY=0 carried)" = False ] || fail "plan: ZGPT_REDUCE_CARRY=0, yet carried"
[ "$(plan_json 3 'd["carried_reductions"]')" = False ] || fail "plan: overlap_comm false, yet carried"
"$ZGPT" plan pc.json --nproc 2 --device cpu | grep -q "carried reductions: each micro-step but a step's last" ||
    fail "plan text: carried reductions not said"
ZGPT_REDUCE_CARRY=0 run c0 "${G[@]}" --set max_iters=0 --nproc 2
grep -q "gradients: each micro-step waits for its reductions (ZGPT_REDUCE_CARRY=0)" c0.log || fail "c0: $(grep gradients: c0.log)"
expect_fail "ZGPT_REDUCE_CARRY=maybe" "ZGPT_REDUCE_CARRY=maybe: use 1" \
    env ZGPT_REDUCE_CARRY=maybe "$ZGPT" plan pc.json --nproc 2 --device cpu
echo "ok carried reductions: said by the banner and the plan, off with ZGPT_REDUCE_CARRY=0, a bad value refused"
echo "dist_grad_local: ok"
