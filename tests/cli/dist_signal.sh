#!/usr/bin/env bash
# Stopping a job of several processes (issue 16):
#  1. SIGTERM (and Ctrl-C) to `zgpt train --nproc 2`: the workers make a coordinated save at the next
#     iteration boundary and the command exits 0 (mpirun used to kill the ranks about a second after
#     the launcher forwarded the signal, so nothing was saved); --resume then continues bit-identically
#     to a run that was never stopped.
#  2. A worker that stops making progress (SIGSTOP) ends the job through ZGPT_COMM_TIMEOUT, and the
#     launcher names IT (the rank that never arrived), not the healthy rank that timed out waiting;
#     no process is left behind.
#  3. Resuming with another number of processes, when the config derives the global batch, says that
#     the global batch changed and how to keep it.
TEST_NAME=dist_signal
source "$(dirname "$0")/dist_common.inc"
N=12
"$ZGPT" train --config d.json --set out_dir=whole --set max_iters=$N --nproc 2 > whole.log 2>&1 || fail "whole: $(tail -5 whole.log)"

# ---- 1. SIGTERM / SIGINT: a coordinated save, exit 0, bitwise resume ------------------------------
for sig in TERM INT; do
    out=stop$sig
    "$ZGPT" train --config d.json --set out_dir=$out --set max_iters=$N --nproc 2 > $out.log 2> $out.err &
    job=$!
    wait_lines $out/metrics.jsonl 2 $job
    kill -$sig $job
    st=0; wait $job || st=$?
    [ $st -eq 0 ] || fail "SIG$sig: status $st: $(tail -5 $out.err)"
    grep -q "SIGUSR1 received: saving a checkpoint at iter" $out.log || fail "SIG$sig: no save: $(tail -5 $out.log)"
    grep -q "stopped by .*; all 2 workers ended cleanly" $out.err || fail "SIG$sig: launcher message: $(cat $out.err)"
    at=$(cat $out/latest)
    [ -n "$at" ] && [ -f $out/$at/manifest.json ] || fail "SIG$sig: no complete checkpoint: $(ls $out)"
    "$ZGPT" train --config d.json --set out_dir=$out --set max_iters=$N --nproc 2 --resume > $out.r.log 2>&1 ||
        fail "SIG$sig: resume: $(tail -5 $out.r.log)"
    losses_same whole/metrics.jsonl $out/metrics.jsonl
    cmp whole/final/model.bin $out/final/model.bin || fail "SIG$sig: final weights differ from the uninterrupted run"
    echo "ok SIG$sig to --nproc 2: saved $at, exit 0; resumed bit-identically to $N iterations"
done

# ---- 2. a stopped worker is named --------------------------------------------------------------
token="stopped-$$"
ZGPT_COMM_TIMEOUT=5 "$ZGPT" train --config d.json --set out_dir=$token --set max_iters=100000 --set eval_interval=100000 \
    --nproc 2 > $token.log 2> $token.err &
job=$!
wait_lines $token/metrics.jsonl 3 $job
victim=$(rank_pid $job 1) || fail "cannot find rank 1 below $job"
kill -STOP "$victim"
start=$SECONDS
for i in $(seq 1 600); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
if kill -0 $job 2>/dev/null; then kill -9 $(descendants $job) $job; kill -CONT "$victim"; fail "the job hung after SIGSTOP of rank 1"; fi
st=0; wait $job || st=$?
took=$((SECONDS - start))
[ $st -eq 1 ] || fail "SIGSTOP: status $st"
grep -q "zgpt: error: rank 1 of 2 stopped making progress: .*when rank 0 gave up waiting for it (ZGPT_COMM_TIMEOUT); its process was stopped" $token.err ||
    fail "SIGSTOP: the stopped rank is not named: $(cat $token.err)"
grep -q "rank 0 of 2 failed" $token.err && fail "SIGSTOP: the healthy rank is blamed: $(cat $token.err)"
sleep 0.5
if pgrep -f -- "$token" > /dev/null; then fail "SIGSTOP: processes left: $(pgrep -af -- "$token")"; fi
echo "ok SIGSTOP of rank 1 ends the job in $took s, naming rank 1: $(grep 'stopped making progress' $token.err)"

# ---- 3. another rank count changes a derived global batch: said out loud ------------------------
sed -e 's/"train_batch_size": 8, //' -e 's/"train_micro_batch_size_per_gpu": 2/"batch_size": 2, "gradient_accumulation_steps": 2/' \
    d.json > derived.json
"$ZGPT" train --config derived.json --set out_dir=gb --set max_iters=2 --nproc 2 > gb.log 2>&1 || fail "gb: $(tail -3 gb.log)"
"$ZGPT" train --config derived.json --set out_dir=gb --set max_iters=3 --resume > gb1.log 2>&1 || fail "gb resume: $(tail -3 gb1.log)"
grep -q "warning: the checkpoint was trained with a global batch of 8 sequences (micro-batch 2 x accumulation 2 x 2 ranks); this run uses 4 .*set train_batch_size=8" gb1.log ||
    fail "no global batch warning: $(cat gb1.log)"
echo "ok resuming on another rank count: $(grep 'global batch' gb1.log)"
echo "PASS dist_signal"
