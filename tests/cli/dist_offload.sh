#!/usr/bin/env bash
# ZeRO-Offload (issue 18) on CPU ranks, where the backend's memory is host memory: the offloaded step is
# the same arithmetic through the host buffers (gradients copied out of the shard, the host AdamW over
# the shard slot by slot, the updated parameters copied back), so it must be BITWISE the run without
# offload:
#  - stages 1, 2, 3 on 2 ranks: identical per-iteration losses, model.bin and optimizer shards (the
#    CPU backend's AdamW and the host AdamW are one function, zg_host_adamw; cutting the update at the
#    layer slots does not change an elementwise update); the legacy cpu_offload: true likewise;
#  - resume: offload -> offload and no offload -> offload -> no offload, bitwise (the shard files hold
#    the same master/m/v); 2 ranks with offload -> 4 ranks stage 3 with offload within fp32
#    reduction-order tolerance of the straight run;
#  - one process with offload (the engine at the configured stage over a communicator of one) against
#    one process without (stage 0): BITWISE at stages 1-3, with gradient accumulation (4 micro-steps)
#    and with clipping on every step (on one rank the offload accumulates the gradients in the full
#    buffer as stage 0 does: zg_zero_grads_direct); ZGPT_OFFLOAD_STEP=v12 (v0.12's path: the layer pool
#    and the shard every micro-step, another fp32 summation order) within fp32 tolerance, and a bad
#    value of it refused;
#  - plan --json: gpu_bytes_per_rank / host_bytes_per_rank against the formulas;
#  - refusals: host memory short (ZGPT_TEST_HOST_AVAILABLE_BYTES), "nvmee", nvme,
#    offload at stage 0 (offload_param: dist_offload_param.sh). (Lamb with offload: dist_offload_lamb.sh.)
TEST_NAME=dist_offload
source "$(dirname "$0")/dist_common.inc"
LTOL=1e-4 WTOL=2e-4
OFF=(--set zero_optimization.offload_optimizer.device=cpu)

SECONDS=0
for stage in 1 2 3; do
    run4 n$stage --set out_dir=n$stage --set zero_optimization.stage=$stage --nproc 2
    run4 o$stage --set out_dir=o$stage --set zero_optimization.stage=$stage --nproc 2 "${OFF[@]}" \
        --set zero_optimization.offload_optimizer.pin_memory=true
    grep -q "ZeRO-Offload at stage $stage: optimizer state and AdamW on the CPU, .* of host memory per rank, the state pinned" o$stage.log \
        || fail "stage $stage: the banner does not name the offload: $(head -3 o$stage.log)"
    grep -q "ZeRO-Offload" n$stage.log && fail "stage $stage without offload names it: $(head -3 n$stage.log)"
    same_run n$stage o$stage
    echo "ok stage $stage, 2 ranks: offload_optimizer cpu == no offload, bitwise (losses, weights, shards)"
done
run4 legacy --set out_dir=legacy --set zero_optimization.stage=2 --nproc 2 --set zero_optimization.cpu_offload=true
grep -q "ZeRO-Offload at stage 2" legacy.log || fail "cpu_offload: true did not offload: $(head -3 legacy.log)"
same_run n2 legacy
echo "ok legacy cpu_offload: true == offload_optimizer cpu (${SECONDS} s)"

# resume (stage 2, 2 ranks): split at iteration 2 in every combination
SECONDS=0
run4 ra --set out_dir=r1 --set max_iters=2 --nproc 2 "${OFF[@]}"
cp -r r1 r3 # the same checkpoint, resumed on 4 ranks below
run4 rb --set out_dir=r1 --nproc 2 --resume "${OFF[@]}"
grep -q "resuming at iter 2" rb.log || fail "offload did not resume at 2: $(cat rb.log)"
same_run o2 r1
run4 rc --set out_dir=r2 --set max_iters=2 --nproc 2
run4 rd --set out_dir=r2 --set max_iters=3 --nproc 2 --resume "${OFF[@]}"
run4 re --set out_dir=r2 --nproc 2 --resume
same_run o2 r2
echo "ok resume offload -> offload and none -> offload -> none: bitwise the straight run (${SECONDS} s)"
SECONDS=0
run4 rg --set out_dir=r3 --nproc 4 --set zero_optimization.stage=3 --resume "${OFF[@]}"
grep -q "4 ranks (ZeRO stage 3) (ZeRO-Offload" rg.log || fail "4 ranks stage 3 with offload: $(head -3 rg.log)"
losses_close o2/metrics.jsonl r3/metrics.jsonl 4 $LTOL
weights_close model o2/final/model.bin r3/final/model.bin $WTOL
[ "$(ls r3/final/optim_*.bin | wc -l)" -eq 4 ] || fail "4 ranks should write 4 shards: $(ls r3/final)"
echo "ok 2 ranks offload -> 4 ranks stage 3 offload continues the run (${SECONDS} s)"

# one process (4 micro-steps per step): the same arithmetic as stage 0, so bitwise
SECONDS=0
run4 p0 --set out_dir=p0
for stage in 1 2 3; do
    run4 p$stage --set out_dir=p$stage --set zero_optimization.stage=$stage "${OFF[@]}"
    grep -q "ZeRO-Offload at stage $stage" p$stage.log || fail "one process did not offload at stage $stage: $(head -3 p$stage.log)"
    same_run p0 p$stage
done
echo "ok one process with offload (stages 1-3 over one rank) == the run without, bitwise (${SECONDS} s)"
SECONDS=0
run4 c0 --set out_dir=c0 --set gradient_clipping=0.05
run4 c2 --set out_dir=c2 --set gradient_clipping=0.05 "${OFF[@]}"
[ "$(grep -c '(clipped)' c2.log)" -eq 4 ] || fail "gradient_clipping 0.05 should clip every step: $(grep '^iter' c2.log)"
same_run c0 c2
ZGPT_OFFLOAD_STEP=v12 run4 v12 --set out_dir=v12 "${OFF[@]}"
grep -q "ZGPT_OFFLOAD_STEP=v12: ZeRO-Offload takes v0.12's step path" v12.log || fail "v12: no note: $(head -3 v12.log)"
losses_close p0/metrics.jsonl v12/metrics.jsonl 4 $LTOL
weights_close model p0/final/model.bin v12/final/model.bin $WTOL
ZGPT_OFFLOAD_STEP=v13 expect_fail v13 'ZGPT_OFFLOAD_STEP is "v13"; allowed: v12' "$ZGPT" train --config d.json \
    --set max_iters=1 --set out_dir=x7 "${OFF[@]}"
echo "ok one process: clipping on every step bitwise; v0.12's path within fp32 tolerance (${SECONDS} s)"

# plan --json: the GPU/host split of a rank's memory
python3 - <<'PY' > dp.json
import json
d = json.load(open("d.json"))
d["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
print(json.dumps(d))
PY
for dev in cpu cuda; do
    "$ZGPT" plan dp.json --nproc 2 --device $dev --json > plan_off.json || fail "plan --json with offload"
    "$ZGPT" plan d.json --nproc 2 --device $dev --json > plan_on.json || fail "plan --json"
    python3 - plan_off.json plan_on.json $NPARAMS $dev <<'PY' || fail "plan numbers ($dev)"
import json, sys
off, on, n, dev = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3]), sys.argv[4]
assert off["num_params"] == n and off["stage"] == 2 and off["offload_optimizer"] == "cpu", off
assert on["offload_optimizer"] == "none" and on["host_bytes_per_rank"] == 0, on
p = 4 if dev == "cpu" else 2                 # fp32 on the CPU, bf16 on cuda
k = (n + 1) // 2                             # rank 0's shard
for a, b in zip(off["ranks"], on["ranks"]):
    kr = k if a["rank"] == 0 else n - k
    assert a["optimizer"] == 0, a            # nothing of the optimizer on the device
    assert b["optimizer"] == kr * 4 * (2 if p == 4 else 3), b
    # host: fp32 master (or the fp32 parameters), m, v + the gradient and parameter staging of the shard
    assert a["host"] == kr * 4 * (2 if p == 4 else 3) + kr * 2 * p, a
    assert a["total"] == b["total"] - b["optimizer"], (a, b)
    assert a["checkpoint_snapshot"] == b["checkpoint_snapshot"] == b["optimizer"], (a, b)
assert off["gpu_bytes_per_rank"] == max(r["total"] for r in off["ranks"]) == off["ranks"][0]["total"]
assert off["host_bytes_per_rank"] == max(r["host"] for r in off["ranks"]) == off["ranks"][0]["host"] > 0
assert on["gpu_bytes_per_rank"] == on["ranks"][0]["total"]
PY
done
"$ZGPT" plan dp.json --nproc 2 > plan.txt || fail "plan"
grep -q "ZeRO-Offload (offload_optimizer cpu, pinned)" plan.txt || fail "plan does not name the offload: $(cat plan.txt)"
grep -q "GPU total        host" plan.txt || fail "plan has no host column: $(cat plan.txt)"
echo "ok plan: optimizer state on the host, gpu_bytes_per_rank / host_bytes_per_rank"

# refusals
TRAIN=("$ZGPT" train --config d.json --set max_iters=1)
ZGPT_TEST_HOST_AVAILABLE_BYTES=1000000 expect_fail host-memory \
    "ZeRO-Offload needs 0.03 GiB of host memory \(0.03 GiB per rank x 1 rank on this machine.*\+ 0.01 GiB of the trainer's fp32 parameters\) but only 0.00 GiB is available \(MemAvailable\)" \
    "${TRAIN[@]}" --set out_dir=x1 "${OFF[@]}"
[ ! -e x1/latest ] || fail "a refused run left a checkpoint"
expect_fail nvmee "zero_optimization.offload_optimizer.device.*nvmee" "${TRAIN[@]}" --set out_dir=x2 \
    --set zero_optimization.offload_optimizer.device=nvmee
expect_fail nvme "offload_optimizer \"device\": \"nvme\" is not supported by zgpt" "${TRAIN[@]}" --set out_dir=x3 \
    --set zero_optimization.offload_optimizer.device=nvme
expect_fail stage0 "offload_optimizer \"device\": \"cpu\" needs ZeRO stage 1, 2 or 3" "${TRAIN[@]}" --set out_dir=x5 \
    --set zero_optimization.stage=0 "${OFF[@]}"
echo "PASS dist_offload"
