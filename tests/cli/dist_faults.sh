#!/usr/bin/env bash
# Faults under MPI (issue 4, "Tests" and "Checkpoints across ranks"):
#  1. kill -9 of one rank mid-training: the job ends within seconds, non-zero, naming the rank; no
#     worker is left behind.
#  2. kill -9 of the whole job (launcher, mpirun, every rank) while a sharded checkpoint is being
#     written (the job is frozen with SIGSTOP once out_dir/.partial.iter_N exists, so the kill provably
#     lands mid-save): `latest` still names the previous complete checkpoint, and --resume continues
#     bit-identically to an uninterrupted run. Then kill -9 of rank 0 alone (the committing rank)
#     mid-save: the job ends, naming rank 0, and `latest` again names a complete checkpoint.
#  3. One rank fails to write its shard (a full disk, simulated on rank 1 only): every rank reports
#     the failure, `latest` does not move, no partial folder is left, and --resume works.
#  4. A corrupted optimizer shard (one flipped byte), a truncated one and a missing one are detected
#     by the manifest's checksum/size with a one-line error naming the file, on resume (1 process and
#     2 ranks) and on export.
# Skipped (with a message) in a build without MPI.
TEST_NAME=dist_faults
source "$(dirname "$0")/dist_common.inc"
. "$ZGPT_SRC/tests/mpi/mpirun.sh"
ENDED_WITHIN=20   # seconds: the launcher's grace period is 5 s

# wait_end PID: waits for the job, sets $st and $took; kills it (and fails) after 120 s
wait_end() {
    local i start=$SECONDS
    for i in $(seq 1 1200); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$1" 2>/dev/null; then
        kill -9 $(descendants "$1") "$1" 2>/dev/null
        fail "the job did not end within 120 s (hang)"
    fi
    st=0; wait "$1" || st=$?
    took=$((SECONDS - start))
}

# find_partial OUT: the name of a .partial.iter_N folder in OUT (a save in progress), or nothing
find_partial() { local d; for d in "$1"/.partial.iter_*; do [ -d "$d" ] && { echo "${d##*/}"; return 0; }; done; return 0; }

# ---- 1. kill -9 one rank mid-training -------------------------------------------------------------
token="kill-rank-$$"
"$ZGPT" train --config d.json --set out_dir=$token --set max_iters=100000 --set eval_interval=100000 \
    --set train_batch_size=12 --nproc 3 > $token.log 2> $token.err &
job=$!
wait_lines $token/metrics.jsonl 3 $job
victim=$(rank_pid $job 1) || fail "cannot find the process of rank 1 below $job: $(ps -ef --forest)"
kill -9 "$victim"
wait_end $job
[ $st -ne 0 ] || fail "kill -9 of rank 1: exit status 0"
[ $took -le $ENDED_WITHIN ] || fail "kill -9 of rank 1: the job took $took s to end"
grep -q "zgpt: error: rank 1 of 3 failed (killed by signal 9" $token.err || fail "kill -9 of rank 1: rank not named: $(cat $token.err)"
sleep 0.5
if pgrep -f -- "$token" > /dev/null; then fail "workers left running after kill -9 of rank 1: $(pgrep -af -- "$token")"; fi
echo "ok kill -9 of rank 1 of 3 ends the job in $took s with status $st: $(grep 'rank 1 of 3' $token.err)"

# the same under a bare mpirun (a cluster job without zgpt's launcher): mpirun ends the job
token="kill-mpirun-$$"
"$MPIRUN" -np 2 "${MPIRUN_ARGS[@]}" "$ZGPT" train --config d.json --set out_dir=$token --set max_iters=100000 \
    --set eval_interval=100000 > $token.log 2>&1 &
job=$!
wait_lines $token/metrics.jsonl 3 $job
victim=$(rank_pid $job 1) || fail "cannot find the process of rank 1 below mpirun $job"
kill -9 "$victim"
wait_end $job
[ $st -ne 0 ] && [ $took -le $ENDED_WITHIN ] || fail "kill -9 of rank 1 under mpirun: status $st after $took s"
sleep 0.5
if pgrep -f -- "$token" > /dev/null; then fail "workers left running under mpirun: $(pgrep -af -- "$token")"; fi
grep -qE "rank 1 .*exited on signal 9|signal 9 \(Killed\)" $token.log || fail "mpirun did not name rank 1: $(cat $token.log)"
echo "ok kill -9 of rank 1 under a bare mpirun ends the job in $took s with status $st"

# ---- 2. kill -9 during a checkpoint save ---------------------------------------------------------
# Every iteration evaluates and saves (2 ranks, stage 2: model.bin + 2 optimizer shards, ~21 MB with fsyncs).
save_args=(--set eval_interval=1 --set eval_iters=1 --set always_save_checkpoint=true --set keep_last_k=3
           --set zero_optimization.stage=2 --nproc 2)
out=crash
"$ZGPT" train --config d.json --set out_dir=$out --set max_iters=100000 "${save_args[@]}" > $out.log 2> $out.err &
job=$!
wait_lines $out/metrics.jsonl 2 $job
pids="$job $(descendants $job)"   # launcher, mpirun, the ranks
[ "$(echo $pids | wc -w)" -ge 4 ] || fail "expected the launcher, mpirun and 2 ranks: $pids"
hit=""
deadline=$((SECONDS + 90))
while [ $SECONDS -lt $deadline ]; do
    kill -0 $job 2>/dev/null || fail "the run ended: $(tail -5 $out.err)"
    partial=$(find_partial $out)
    [ -n "$partial" ] || continue
    kill -STOP $pids 2>/dev/null
    if [ -d "$out/$partial" ]; then hit=$partial; break; fi
    kill -CONT $pids 2>/dev/null   # the save finished before the freeze: try the next one
done
[ -n "$hit" ] || { kill -9 $pids 2>/dev/null; fail "never caught a save in progress"; }
n=${hit#.partial.iter_}
disown $job   # no "Killed" job report from bash
kill -9 $pids
sleep 0.5
[ -d "$out/$hit" ] || fail "the partial folder vanished"
echo "   killed the whole job (-9) while $out/$hit held: $(cd $out/$hit && ls | tr '\n' ' ')"
[ "$(cat $out/latest)" = "iter_$((n - 1))" ] || fail "latest names $(cat $out/latest), expected iter_$((n - 1)) (the save of iter_$n was interrupted)"
[ -f "$out/iter_$((n - 1))/manifest.json" ] || fail "the checkpoint latest names is incomplete: $(ls $out/iter_$((n - 1)))"
end=$((n + 2))
"$ZGPT" train --config d.json --set out_dir=straight --set max_iters=$end "${save_args[@]}" > straight.log 2> straight.err \
    || fail "straight run: $(tail -5 straight.err)"
timeout 300 "$ZGPT" train --config d.json --set out_dir=$out --set max_iters=$end "${save_args[@]}" --resume > $out.2.log 2> $out.2.err \
    || fail "resume after a kill during a save: $(tail -5 $out.2.err)"
grep -q "resuming at iter $((n - 1))" $out.2.log || fail "did not resume at iter $((n - 1)): $(cat $out.2.log)"
ls -a $out | grep -q '^\.partial' && fail "the stale partial folder was not removed: $(ls -a $out)"
losses_same straight/metrics.jsonl $out/metrics.jsonl
cmp straight/final/model.bin $out/final/model.bin || fail "resumed after the crash: final weights differ from the uninterrupted run"
echo "ok kill -9 during the save of iter_$n: latest still iter_$((n - 1)); --resume continues bit-identically"

# kill -9 of rank 0 alone while it commits: the launcher ends the job; latest is complete
out=crash0
"$ZGPT" train --config d.json --set out_dir=$out --set max_iters=100000 "${save_args[@]}" > $out.log 2> $out.err &
job=$!
wait_lines $out/metrics.jsonl 3 $job
r0=$(rank_pid $job 0) || fail "cannot find rank 0"
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ] && [ -z "$(find_partial $out)" ]; do :; done
kill -9 $r0
wait_end $job
[ $st -ne 0 ] && [ $took -le $ENDED_WITHIN ] || fail "kill -9 of rank 0 mid-save: status $st after $took s"
grep -q "zgpt: error: rank 0 of 2 failed (killed by signal 9" $out.err || fail "rank 0 not named: $(cat $out.err)"
tag=$(cat $out/latest)
timeout 300 "$ZGPT" train --config d.json --set out_dir=$out --set max_iters=$((${tag#iter_} + 1)) "${save_args[@]}" --resume \
    > $out.2.log 2> $out.2.err || fail "resume after rank 0 was killed mid-save: $(tail -5 $out.2.err)"
grep -q "resuming at iter ${tag#iter_}" $out.2.log || fail "did not resume at $tag"
echo "ok kill -9 of rank 0 during a save ends the job in $took s; latest ($tag) resumes"

# ---- 3. one rank cannot write its shard: latest moves only when every rank succeeded --------------
# Rank 1's shard of this model is 64 + 877217 x 8 bytes; it may write two of them, the third fails.
shard=$((64 + (NPARAMS - (NPARAMS + 1) / 2) * 8))
[ "$(stat -c %s straight/final/optim_$(((NPARAMS + 1) / 2))_${NPARAMS}.bin)" -eq $shard ] || fail "unexpected shard size"
out=full
timeout 300 "$MPIRUN" -np 2 "${MPIRUN_ARGS[@]}" bash -c '[ "$OMPI_COMM_WORLD_RANK" = 1 ] && export ZGPT_TEST_FAIL_WRITE_AFTER='$((shard * 5 / 2))'; exec "$@"' \
    zgpt "$ZGPT" train --config d.json --set out_dir=$out --set max_iters=6 --set eval_interval=2 --set zero_optimization.stage=2 \
    > $out.log 2>&1 && fail "a failed shard write on rank 1 did not fail the run: $(cat $out.log)"
grep -q "No space left on device" $out.log || fail "no message about the failed write: $(cat $out.log)"
grep -q "saving checkpoint $out/iter_6 failed" $out.log || fail "no message naming the failed checkpoint: $(cat $out.log)"
[ "$(cat $out/latest)" = iter_4 ] || fail "latest moved to $(cat $out/latest) though rank 1 failed to write iter_6"
[ ! -e $out/iter_6 ] || fail "an iter_6 folder exists: $(ls $out/iter_6)"
ls -a $out | grep -q '^\.partial' && fail "a partial folder was left behind: $(ls -a $out)"
timeout 300 "$ZGPT" train --config d.json --set out_dir=$out --set max_iters=6 --set eval_interval=2 --nproc 2 --resume \
    > $out.2.log 2>&1 || fail "resume after the failed save: $(tail -5 $out.2.log)"
grep -q "resuming at iter 4" $out.2.log || fail "did not resume at iter 4"
echo "ok a failed shard write on rank 1 leaves latest at iter_4 and no partial folder: $(grep -m1 'No space' $out.log)"

# ---- 4. corrupted / truncated / missing shards ---------------------------------------------------
timeout 300 "$ZGPT" train --config d.json --set out_dir=c --set max_iters=2 --set eval_interval=2 --nproc 2 > c.log 2>&1 \
    || fail "2-rank run: $(tail -5 c.log)"
f=optim_$(((NPARAMS + 1) / 2))_${NPARAMS}.bin
[ -f c/iter_2/$f ] || fail "no $f: $(ls c/iter_2)"
cp -r c c_trunc; cp -r c c_missing
printf '\x5a' | dd of=c/iter_2/$f bs=1 seek=$((64 + 4 * 300001)) conv=notrunc status=none
expect_fail "corrupted shard, resume on 1 process" "c/iter_2/$f' fails its checksum" \
    "$ZGPT" train --config d.json --set out_dir=c --set max_iters=4 --resume
expect_fail "corrupted shard, export" "c/iter_2/$f' fails its checksum" "$ZGPT" export --model c --out hf_c
timeout 120 "$ZGPT" train --config d.json --set out_dir=c --set max_iters=4 --nproc 2 --resume > c2.log 2> c2.err && fail "2 ranks resumed from a corrupted shard"
grep -q "c/iter_2/$f' fails its checksum" c2.err || fail "2 ranks: the message does not name the file: $(cat c2.err)"
# the launcher's report names a rank and shows its error line whole (no mpirun tags, not "(no output)")
grep -A8 "^zgpt: error: rank [01] of 2 failed" c2.err | grep -q "^    zgpt\[rank [01]\]: error: checkpoint file 'c/iter_2/$f' fails its checksum" \
    || fail "2 ranks: the failure report lacks the rank's error line: $(cat c2.err)"
grep -q '<stderr>:' c2.err && fail "mpirun's output tags leaked into the messages: $(cat c2.err)"
echo "ok a corrupted shard on 2 ranks: $(grep -m1 "fails its checksum" c2.err)"
# The launcher reassembles each rank's lines from mpirun's --tag-output stream, where Open MPI tags
# every chunk it reads: a line written in two write() calls ("zgpt[rank 0]: error: " + message, as
# unbuffered stderr does) can arrive split, with another rank's line in between. A stand-in mpirun
# ($ZGPT_MPIRUN) replays such a stream, so this does not depend on timing.
cat > fake-mpirun <<'SH'
#!/bin/sh
printf '[1,0]<stdout>:iter 0: loss 10.8\n' >&1
printf '[1,0]<stderr>:zgpt[rank 0]: error: [1,1]<stderr>:zgpt[rank 1]: error: [1,0]<stderr>:checkpoint file x fails its checksum\n' >&2
printf '[1,1]<stderr>:checkpoint file y fails its checksum\n' >&2
exit 1
SH
chmod +x fake-mpirun
ZGPT_MPIRUN=$PWD/fake-mpirun timeout 60 "$ZGPT" train --config d.json --set out_dir=fake --nproc 2 > fake.log 2> fake.err \
    && fail "a failing (stand-in) mpirun gave status 0"
grep -qx "iter 0: loss 10.8" fake.log || fail "stdout line not passed through: $(cat fake.log)"
grep -qx "zgpt\[rank 0\]: error: checkpoint file x fails its checksum" fake.err || fail "rank 0's split line not reassembled: $(cat fake.err)"
grep -qx "zgpt\[rank 1\]: error: checkpoint file y fails its checksum" fake.err || fail "rank 1's split line not reassembled: $(cat fake.err)"
grep -q '<stderr>:' fake.err && fail "mpirun's tags leaked: $(cat fake.err)"
grep -A1 "^zgpt: error: rank 0 of 2 failed" fake.err | grep -qx "    zgpt\[rank 0\]: error: checkpoint file x fails its checksum" \
    || fail "the report does not show the failing rank's line: $(cat fake.err)"
echo "ok interleaved, split output of two ranks is reassembled per rank"

truncate -s -4 c_trunc/iter_2/$f
expect_fail "truncated shard" "c_trunc/iter_2/$f' has [0-9]+ bytes, the manifest says" \
    "$ZGPT" train --config d.json --set out_dir=c_trunc --set max_iters=4 --resume
rm c_missing/iter_2/$f
expect_fail "missing shard" "'$f' is missing" "$ZGPT" train --config d.json --set out_dir=c_missing --set max_iters=4 --resume
echo "dist_faults: ok"
