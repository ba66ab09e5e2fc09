#!/usr/bin/env bash
# Stopping and continuing zgpt jobs under a real Slurm (issue 23), with scripts/train.sbatch on 2 CPU
# ranks; slurm_common.inc starts the cluster:
#  - `scancel --signal=TERM JOB` (the ranks get SIGTERM) and `scancel --batch --signal=TERM JOB` (the
#    batch shell gets it, as with `sbatch --signal=B:TERM@T`): a checkpoint at the iteration the run
#    stopped at, the job COMPLETED with exit code 0 and not requeued; a run resumed from it continues
#    the uninterrupted run (the same losses);
#  - the time limit (`--time=1 --signal=B:USR1@50`): the ranks save, the job requeues itself and the
#    next run resumes from that checkpoint by itself (no iteration lost or repeated);
#  - `scontrol requeue JOB` (what preemption with PreemptMode=REQUEUE does): Slurm's SIGTERM makes the
#    ranks save, the requeued job resumes from `latest` by itself and continues the uninterrupted run.
# Skipped, with the reason, where the cluster cannot run (see slurm_common.inc).
TEST_NAME=slurm_signal
source "$(dirname "$0")/slurm_common.inc"
LONG=(--set max_iters=100000 --set eval_interval=100000) # runs until stopped; no periodic checkpoint

# saved_iters LOG: the iterations at which the runs in LOG saved on a signal ("SIGTERM received: saving a
# checkpoint at iter N ..."), in order; resumed_iters LOG: those they resumed at; stopped_at: the last save
saved_iters() { sed -nE 's/.*received: saving a checkpoint at iter ([0-9]+).*/\1/p' "$1"; }
resumed_iters() { sed -nE 's/^resuming at iter ([0-9]+) from.*/\1/p' "$1"; }
stopped_at() { saved_iters "$1" | tail -1; }
# continues OUT K: OUT's K training losses equal those of an uninterrupted --nproc 2 run of K iterations
continues() {
    timeout 300 "$ZGPT" train --config d.json --set out_dir=$1.ref --set max_iters=$2 --set eval_interval=100000 \
        --nproc 2 > $1.ref.log 2>&1 || fail "reference for $1: $(tail -5 $1.ref.log)"
    losses_same $1.ref/metrics.jsonl $1/metrics.jsonl
}

# The time-limit job runs in the background of the other cases: Slurm checks time limits every 30 s,
# so its signal comes 10-40 s after the start.
tl=$(submit -N 1 -n 2 --time=1 --signal=B:USR1@50 -o tl.out "$JOB_SCRIPT" d.json tl "${LONG[@]}") || fail "sbatch tl"
T0=$(date +%s)

for how in steps batch; do
    SECONDS=0
    out=stop_$how
    job=$(submit -N 1 -n 2 -o $out.out "$JOB_SCRIPT" d.json $out "${LONG[@]}") || fail "sbatch $out"
    wait_lines $out/metrics.jsonl 3 120
    if [ $how = steps ]; then scancel --signal=TERM $job; else scancel --batch --signal=TERM $job; fi
    state=$(finished $job 60)
    [ "$state" = COMPLETED ] || fail "$out: the job ended $state: $(tail -8 $out.out)"
    [ "$(job_field $job ExitCode)" = 0:0 ] || fail "$out: exit code $(job_field $job ExitCode)"
    [ "$(job_field $job Restarts)" = 0 ] || fail "$out: the job was requeued"
    n=$(stopped_at $out.out)
    [ -n "$n" ] || fail "$out: no 'saving a checkpoint at iter' line: $(tail -8 $out.out)"
    [ "$(cat $out/latest)" = iter_$n ] || fail "$out: latest is $(cat $out/latest), the run stopped at $n"
    [ "$(contiguous $out/metrics.jsonl)" = $n ] || fail "$out: checkpoint at $n but other training lines"
    timeout 300 "$ZGPT" train --config d.json --set out_dir=$out --set max_iters=$((n + 2)) --set eval_interval=100000 \
        --nproc 2 --resume > $out.resume.log 2>&1 || fail "$out: resume: $(tail -5 $out.resume.log)"
    grep -q "resuming at iter $n " $out.resume.log || fail "$out: did not resume at $n: $(head -4 $out.resume.log)"
    continues $out $((n + 2))
    echo "ok scancel$([ $how = batch ] && echo ' --batch') --signal=TERM: checkpoint iter_$n, job COMPLETED 0:0; --resume continues the straight run (${SECONDS} s)"
done

# scontrol requeue: Slurm sends the ranks SIGTERM, they save; the job comes back and resumes
SECONDS=0
job=$(submit -N 1 -n 2 -o rq.out "$JOB_SCRIPT" d.json rq "${LONG[@]}") || fail "sbatch rq"
wait_lines rq/metrics.jsonl 3 120
scontrol requeue $job
wait_grep rq.out "received: saving a checkpoint at iter" 60
n=$(stopped_at rq.out)
wait_grep rq.out "resuming at iter $n from" 60
grep -q -F "restart 1, 2 ranks on 1 node(s), resuming from rq/iter_$n" rq.out || fail "rq: $(grep 'zgpt job' rq.out)"
wait_lines rq/metrics.jsonl $((n + 3)) 120
scancel --batch --signal=TERM $job
state=$(finished $job 60)
[ "$state" = COMPLETED ] || fail "rq: the requeued job ended $state: $(tail -8 rq.out)"
k=$(contiguous rq/metrics.jsonl)
[ "$k" = "$(stopped_at rq.out)" ] || fail "rq: the second run stopped at $(stopped_at rq.out) but logged $k iterations"
continues rq $k
echo "ok scontrol requeue: saved at iter $n, requeued, resumed by itself, $k iterations the same as straight (${SECONDS} s)"

# the time limit: USR1 50 s before it; the ranks save; the job requeues itself and resumes. By now
# the job may have been through several runs, each ending at its own warning.
wait_grep tl.out "time limit near: checkpoint saved, requeueing" 150
# no more warnings from here on, so that this test can end the job
scontrol update JobId=$tl TimeLimit=10 || fail "tl: cannot extend the time limit"
for attempt in 1 2 3; do
    wait_state $tl 60 RUNNING
    r=$(job_field $tl Restarts)
    [ "$r" -ge 1 ] || fail "tl: running again without a requeue"
    for i in $(seq 1 240); do [ "$(grep -c '^resuming at iter' tl.out)" -ge "$r" ] && break; sleep 0.25; done
    [ "$(grep -c '^resuming at iter' tl.out)" -ge "$r" ] || fail "tl: run $r did not resume: $(grep -v '^iter' tl.out | tail -5)"
    m=$(resumed_iters tl.out | tail -1)
    wait_lines tl/metrics.jsonl $((m + 2)) 120
    scancel --batch --signal=TERM $tl
    wait_state $tl 60 COMPLETED PENDING
    [ "$(job_field $tl JobState)" = COMPLETED ] && break # else a warning sent before the update requeued it
done
[ "$(job_field $tl JobState)" = COMPLETED ] || fail "tl: not ended: $(grep -v '^iter' tl.out | tail -8)"
# every run after the first resumed at the iteration the run before it saved at
saved=$(saved_iters tl.out)
resumed=$(resumed_iters tl.out)
runs=$(echo "$saved" | wc -l)
[ "$runs" -ge 2 ] && [ "$(echo "$resumed" | wc -l)" = $((runs - 1)) ] || fail "tl: $(grep -v '^iter' tl.out)"
[ "$(echo "$saved" | head -n $((runs - 1)))" = "$resumed" ] \
    || fail "tl: saved at $(echo $saved) but resumed at $(echo $resumed)"
[ "$(grep -c 'time limit near: checkpoint saved, requeueing' tl.out)" = $((runs - 1)) ] || fail "tl: $(grep 'zgpt job' tl.out)"
n=$(echo "$saved" | head -1)
k=$(contiguous tl/metrics.jsonl)
[ "$k" = "$(echo "$saved" | tail -1)" ] || fail "tl: the last run saved at $(echo "$saved" | tail -1) but $k iterations are logged"
echo "ok --time=1 --signal=B:USR1@50: saved at iter $n before the limit, requeued itself $((runs - 1)) time(s), each run resumed where the last saved (iterations $(echo $saved | tr ' ' ',')); 0..$((k - 1)) once each ($(( $(date +%s) - T0 )) s since submission)"
echo "slurm_signal: ok"
