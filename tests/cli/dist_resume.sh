#!/usr/bin/env bash
# Resume under MPI (issue 4, "Tests" and "Checkpoints across ranks"):
#  - bitwise at the same world size and stage: 20 iterations straight == 10 + --resume + 10, with
#    identical per-iteration losses, byte-identical final model.bin and optimizer shards (2 ranks at
#    stage 2; 4 ranks at stage 3, uneven shards);
#  - universal resume across world sizes and stages, no conversion step: 4 ranks stage 2 -> 2 ranks
#    stage 1 -> 1 process, and 1 process -> 4 ranks stage 3 (under a bare mpirun) -> 2 ranks stage 0,
#    each within fp32 reduction-order tolerance of the uninterrupted one-process run.
# Skipped (with a message) in a build without MPI.
TEST_NAME=dist_resume
source "$(dirname "$0")/dist_common.inc"
. "$ZGPT_SRC/tests/mpi/mpirun.sh"   # MPIRUN, MPIRUN_ARGS for the bare-mpirun leg
LTOL=1e-4 WTOL=2e-4
run() { # run NAME ARGS...: zgpt train with a deadline; fails the test on error
    local name=$1; shift
    timeout 300 "$ZGPT" train --config d.json "$@" > $name.log 2> $name.err || fail "$name: $(tail -5 $name.err $name.log)"
}

for case in "2 2" "4 3"; do
    set -- $case; np=$1 stage=$2
    SECONDS=0
    run st_$np --set out_dir=st_$np --set zero_optimization.stage=$stage --nproc $np
    run sp_${np}a --set out_dir=sp_$np --set zero_optimization.stage=$stage --nproc $np --set max_iters=10
    [ "$(cat sp_$np/latest)" = iter_10 ] || fail "latest should name iter_10, got $(cat sp_$np/latest)"
    run sp_${np}b --set out_dir=sp_$np --set zero_optimization.stage=$stage --nproc $np --resume
    grep -q "resuming at iter 10" sp_${np}b.log || fail "$np ranks: did not resume at iter 10: $(cat sp_${np}b.log)"
    [ "$(metric sp_$np/metrics.jsonl loss | wc -l)" -eq 20 ] || fail "$np ranks: expected 20 training lines"
    losses_same st_$np/metrics.jsonl sp_$np/metrics.jsonl
    cmp st_$np/final/model.bin sp_$np/final/model.bin || fail "$np ranks stage $stage: final weights differ after resume"
    for f in st_$np/final/optim_*.bin; do
        cmp "$f" sp_$np/final/$(basename "$f") || fail "$np ranks stage $stage: optimizer shard $(basename "$f") differs"
    done
    [ "$(ls st_$np/final/optim_*.bin | wc -l)" -eq $np ] || fail "expected $np shards: $(ls st_$np/final)"
    echo "ok $np ranks, stage $stage: 20 straight == 10 + resume + 10, bitwise (${SECONDS} s)"
done

# The uninterrupted reference: one process, 30 iterations.
run ref --set out_dir=ref --set max_iters=30
# 4 ranks stage 2 -> 2 ranks stage 1 -> 1 process
SECONDS=0
run u1 --set out_dir=u --set max_iters=10 --set zero_optimization.stage=2 --nproc 4
[ "$(ls u/iter_10/optim_*.bin | wc -l)" -eq 4 ] || fail "4 ranks at stage 2 should write 4 shards: $(ls u/iter_10)"
run u2 --set out_dir=u --set max_iters=20 --set zero_optimization.stage=1 --nproc 2 --resume
grep -q "resuming at iter 10" u2.log || fail "4 -> 2 ranks did not resume at 10: $(cat u2.log)"
[ "$(ls u/iter_20/optim_*.bin | wc -l)" -eq 2 ] || fail "2 ranks at stage 1 should write 2 shards: $(ls u/iter_20)"
run u3 --set out_dir=u --set max_iters=30 --resume
grep -q "resuming at iter 20" u3.log || fail "2 ranks -> 1 process did not resume at 20: $(cat u3.log)"
losses_close ref/metrics.jsonl u/metrics.jsonl 30 $LTOL
weights_close model ref/final/model.bin u/final/model.bin $WTOL
echo "ok 4 ranks stage 2 -> 2 ranks stage 1 -> 1 process continues the uninterrupted run (${SECONDS} s)"

# 1 process -> 4 ranks stage 3 (started by a bare mpirun, as on a cluster) -> 2 ranks stage 0
SECONDS=0
run v1 --set out_dir=v --set max_iters=10
timeout 300 "$MPIRUN" -np 4 "${MPIRUN_ARGS[@]}" "$ZGPT" train --config d.json --set out_dir=v --set max_iters=20 \
    --set zero_optimization.stage=3 --resume > v2.log 2>&1 || fail "1 process -> mpirun -np 4 stage 3: $(tail -5 v2.log)"
grep -q "4 ranks (ZeRO stage 3)" v2.log || fail "mpirun -np 4: not 4 ranks at stage 3: $(head -3 v2.log)"
grep -q "resuming at iter 10" v2.log || fail "1 process -> 4 ranks did not resume at 10"
run v3 --set out_dir=v --set max_iters=30 --set zero_optimization.stage=0 --nproc 2 --resume
grep -q "resuming at iter 20" v3.log || fail "4 ranks stage 3 -> 2 ranks stage 0 did not resume at 20"
[ "$(ls v/iter_30/optim_*.bin | wc -l)" -eq 1 ] || fail "stage 0 should write one optimizer file: $(ls v/iter_30)"
losses_close ref/metrics.jsonl v/metrics.jsonl 30 $LTOL
weights_close model ref/final/model.bin v/final/model.bin $WTOL
echo "ok 1 process -> 4 ranks stage 3 (mpirun) -> 2 ranks stage 0 continues the uninterrupted run (${SECONDS} s)"
echo "dist_resume: ok"
