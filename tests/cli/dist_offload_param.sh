#!/usr/bin/env bash
# offload_param {"device": "cpu"} (issue 18) on CPU ranks. Only where the stage-3 parameter shard lives
# changes (host memory; each layer's part copied into its gather slot before use); the arithmetic is
# stage 3's, so every run must be BITWISE the stage-3 run without it:
#  - 1 and 2 ranks: offload_param alone (the GPU optimizer's step goes through the slot buffers and
#    back) and with offload_optimizer (the host AdamW updates the host shard in place): identical
#    per-iteration losses, model.bin and optimizer shards; the banner names the offload;
#  - resume: offload_param -> none -> offload_param at 2 ranks, bitwise the straight run; a 2-rank
#    offload_param checkpoint resumed at 1 rank (stage 3 + offload_param) against the same 2-rank
#    checkpoint resumed at 1 rank without it: bitwise;
#  - plan --json: host bytes grow by the parameter shard, GPU bytes shrink by it;
#  - refusals: offload_param at stage 2, nvme, host memory short (with the numbers).
TEST_NAME=dist_offload_param
source "$(dirname "$0")/dist_common.inc"
S3=(--set zero_optimization.stage=3)
OP=(--set zero_optimization.offload_param.device=cpu --set zero_optimization.offload_param.pin_memory=true)
OO=(--set zero_optimization.offload_optimizer.device=cpu)

SECONDS=0
for np in 1 2; do
    run4 n$np --set out_dir=n$np "${S3[@]}" --nproc $np "${OO[@]}"
    run4 p$np --set out_dir=p$np "${S3[@]}" --nproc $np "${OP[@]}" "${OO[@]}"
    grep -q "ZeRO-Offload at stage 3: optimizer state and AdamW on the CPU; parameters in host memory, each layer uploaded before use (offload_param)" \
        p$np.log || fail "$np ranks: the banner does not name offload_param: $(head -3 p$np.log)"
    same_run n$np p$np
    echo "ok $np rank(s), stage 3: offload_param + offload_optimizer == offload_optimizer alone, bitwise"
    [ $np -eq 1 ] && continue # one process without offload_optimizer runs stage 0: compared below at 2 ranks
done
run4 g2 --set out_dir=g2 "${S3[@]}" --nproc 2
run4 q2 --set out_dir=q2 "${S3[@]}" --nproc 2 "${OP[@]}"
grep -q "ZeRO-Offload at stage 3: parameters in host memory, each layer uploaded before use (offload_param), .* of host memory per rank, the state pinned" \
    q2.log || fail "the banner does not name offload_param: $(head -3 q2.log)"
grep -q "ZeRO-Offload" g2.log && fail "stage 3 without offload names it: $(head -3 g2.log)"
same_run g2 q2
echo "ok 2 ranks, stage 3: offload_param with the GPU optimizer == no offload, bitwise (${SECONDS} s)"
# one process: stage 3 over a communicator of one, the GPU optimizer through the slots
SECONDS=0
run4 q1 --set out_dir=q1 "${S3[@]}" "${OP[@]}"
grep -q "ZeRO-Offload at stage 3: parameters in host memory" q1.log || fail "one process: $(head -3 q1.log)"
same_run p1 q1
echo "ok 1 rank: offload_param alone == offload_param + offload_optimizer, bitwise (${SECONDS} s)"

# resume across offload_param on/off, and 2 ranks -> 1 rank
SECONDS=0
run4 ra --set out_dir=r1 "${S3[@]}" --set max_iters=2 --nproc 2 "${OP[@]}"
cp -r r1 r4
run4 rb --set out_dir=r1 "${S3[@]}" --set max_iters=3 --nproc 2 --resume
run4 rc --set out_dir=r1 "${S3[@]}" --nproc 2 --resume "${OP[@]}"
grep -q "resuming at iter 3" rc.log || fail "offload_param did not resume at 3: $(cat rc.log)"
same_run g2 r1
echo "ok resume offload_param -> none -> offload_param: bitwise the straight run (${SECONDS} s)"
SECONDS=0
cp -r r4 r5
run4 rd --set out_dir=r4 "${S3[@]}" --resume "${OP[@]}" "${OO[@]}"
run4 re --set out_dir=r5 "${S3[@]}" --resume "${OO[@]}"
grep -q "resuming at iter 2" rd.log || fail "1 rank did not resume at 2: $(cat rd.log)"
losses_same r4/metrics.jsonl r5/metrics.jsonl
cmp r4/final/model.bin r5/final/model.bin || fail "2 -> 1 rank: offload_param changed the weights"
[ "$(ls r4/final/optim_*.bin | wc -l)" -eq 1 ] || fail "1 rank should write 1 shard: $(ls r4/final)"
echo "ok a 2-rank offload_param checkpoint resumed on 1 rank, with offload_param == without (${SECONDS} s)"

# plan --json: the parameter shard moves from the GPU column to the host one
python3 - <<'PY' > dq.json
import json
d = json.load(open("d.json"))
d["zero_optimization"]["stage"] = 3
d["zero_optimization"]["offload_param"] = {"device": "cpu"}
print(json.dumps(d))
PY
python3 - <<'PY' > dr.json
import json
d = json.load(open("d.json"))
d["zero_optimization"]["stage"] = 3
print(json.dumps(d))
PY
for dev in cpu cuda; do
    "$ZGPT" plan dq.json --nproc 2 --device $dev --json > plan_off.json || fail "plan --json with offload_param"
    "$ZGPT" plan dr.json --nproc 2 --device $dev --json > plan_on.json || fail "plan --json"
    python3 - plan_off.json plan_on.json $NPARAMS $dev <<'PY' || fail "plan numbers ($dev)"
import json, sys
off, on, n, dev = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3]), sys.argv[4]
assert off["stage"] == 3 and off["offload_param"] == "cpu" and on["offload_param"] == "none", (off, on)
p = 4 if dev == "cpu" else 2
k = (n + 1) // 2
for a, b in zip(off["ranks"], on["ranks"]):
    kr = k if a["rank"] == 0 else n - k
    assert a["host"] == kr * p and b["host"] == 0, (a, b)      # the shard, on the host
    assert a["params"] == b["params"] - kr * p, (a, b)         # and no longer on the device
    assert a["total"] == b["total"] - kr * p, (a, b)
assert off["host_bytes_per_rank"] == on["host_bytes_per_rank"] + k * p
assert off["gpu_bytes_per_rank"] == on["gpu_bytes_per_rank"] - k * p
PY
done
"$ZGPT" plan dq.json --nproc 2 > plan.txt || fail "plan"
grep -q "offload_param cpu" plan.txt || fail "plan does not name offload_param: $(cat plan.txt)"
echo "ok plan: the parameter shard on the host (gpu_bytes_per_rank - shard, host_bytes_per_rank + shard)"

# refusals
TRAIN=("$ZGPT" train --config d.json --set max_iters=1)
expect_fail stage2 "offload_param \"device\": \"cpu\" needs ZeRO stage 3 \(zero_optimization.stage is 2" "${TRAIN[@]}" \
    --set out_dir=x1 --set zero_optimization.offload_param.device=cpu
expect_fail nvme "offload_param \"device\": \"nvme\" is not supported by zgpt" "${TRAIN[@]}" --set out_dir=x2 \
    "${S3[@]}" --set zero_optimization.offload_param.device=nvme
ZGPT_TEST_HOST_AVAILABLE_BYTES=1000000 expect_fail host-memory \
    "ZeRO-Offload needs 0.01 GiB of host memory \(0.01 GiB per rank x 1 rank on this machine: the parameter shard; \+ 0.01 GiB of the trainer's fp32 parameters\) but only 0.00 GiB is available.*remove offload_param" \
    "${TRAIN[@]}" --set out_dir=x3 "${S3[@]}" "${OP[@]}"
[ ! -e x3/latest ] || fail "a refused run left a checkpoint"
echo "PASS dist_offload_param"
