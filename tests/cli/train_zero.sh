#!/usr/bin/env bash
# The trainer on several ranks (--nproc, MPI) with the ZeRO engine: same losses as one process for the
# same global batch, and checkpoints that resume on another world size. Skipped (with a message) in a
# build without MPI.
TEST_NAME=train_zero
source "$(dirname "$0")/train_common.inc"
cat > z.json <<'JSON'
{"out_dir": "one", "data": "data", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32,
 "train_batch_size": 8, "train_micro_batch_size_per_gpu": 2, "max_iters": 4, "eval_interval": 2, "eval_iters": 2,
 "log_interval": 1, "learning_rate": 0.003, "seed": 11, "device": "cpu",
 "zero_optimization": {"stage": 2, "reduce_bucket_size": 100000, "allgather_bucket_size": 300000}}
JSON
if ! "$ZGPT" train --config z.json --set out_dir=probe --set max_iters=0 --nproc 2 > probe.log 2>&1; then
    if grep -q "needs MPI" probe.log; then echo "SKIP: this build has no MPI ($(cat probe.log))"; exit 0; fi
    fail "--nproc 2: $(cat probe.log)"
fi
close() { # the per-iteration losses of two runs agree to fp32 reduction-order tolerance
    paste <(losses "$1") <(losses "$2") | awk -v n="$3" '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-4) bad = 1; c++ }
        END { exit bad || c != n }' || fail "losses differ: $1 vs $2: $(paste <(losses "$1") <(losses "$2"))"
}
"$ZGPT" train --config z.json > one.log
for stage in 1 2 3; do
    "$ZGPT" train --config z.json --set out_dir=two_s$stage --set zero_optimization.stage=$stage --nproc 2 > two_s$stage.log \
        || fail "stage $stage on 2 ranks: $(tail -3 two_s$stage.log)"
    close one/metrics.jsonl two_s$stage/metrics.jsonl 4
    grep -q "2 ranks (ZeRO stage $stage).*; communicator mpi$" two_s$stage.log || fail "no rank/stage/communicator line: $(head -3 two_s$stage.log)"
done
ls two_s2/iter_4/optim_*.bin | wc -l | grep -qx 2 || fail "stage 2 on 2 ranks should write 2 optimizer shards: $(ls two_s2/iter_4)"
# universal resume: 2 ranks stage 2 -> 1 process, and 1 process -> 2 ranks stage 1
"$ZGPT" train --config z.json --set out_dir=mix --set max_iters=2 --nproc 2 > mix1.log
"$ZGPT" train --config z.json --set out_dir=mix --resume > mix2.log || fail "2 -> 1 resume: $(tail -3 mix2.log)"
grep -q "resuming at iter 2" mix2.log || fail "2 -> 1 did not resume at 2"
close one/metrics.jsonl mix/metrics.jsonl 4
"$ZGPT" train --config z.json --set out_dir=mix2 --set max_iters=2 > mix3.log
"$ZGPT" train --config z.json --set out_dir=mix2 --set zero_optimization.stage=1 --nproc 2 --resume > mix4.log \
    || fail "1 -> 2 resume: $(tail -3 mix4.log)"
close one/metrics.jsonl mix2/metrics.jsonl 4
# stage 3 (sharded parameters) on 2 ranks -> stage 2 on 4 ranks
"$ZGPT" train --config z.json --set out_dir=mix3 --set max_iters=2 --set zero_optimization.stage=3 --nproc 2 > mix5.log \
    || fail "stage 3 on 2 ranks: $(tail -3 mix5.log)"
ls mix3/iter_2/optim_*.bin | wc -l | grep -qx 2 || fail "stage 3 on 2 ranks should write 2 optimizer shards"
"$ZGPT" train --config z.json --set out_dir=mix3 --set zero_optimization.stage=2 --nproc 4 --resume > mix6.log \
    || fail "2 ranks stage 3 -> 4 ranks stage 2 resume: $(tail -3 mix6.log)"
close one/metrics.jsonl mix3/metrics.jsonl 4
echo "train_zero: ok"
