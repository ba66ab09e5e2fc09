#!/usr/bin/env bash
# zgpt under a real Slurm (issue 23), on CPU ranks; slurm_common.inc starts the cluster (2 nodes):
#  - `srun -n 2 zgpt train` inside an allocation (salloc, one rank per node) gives the same
#    per-iteration losses and byte-identical final weights as `--nproc 2`;
#  - scripts/train.sbatch (the job script of docs/DISTRIBUTED.md) on 2 nodes x 2 tasks: the same as
#    `--nproc 4`;
#  - two job steps running at the same time in one allocation, each with its own out_dir: each the
#    same as `--nproc 2`;
#  - a rank killed with SIGKILL (as by the OOM killer; Slurm cannot cancel one task of a step) ends the
#    job within seconds, FAILED, and the job log names the task, which is the rank;
#  - a task stopped before MPI_Init: rank 0 ends at ZGPT_STARTUP_TIMEOUT naming itself, nothing left;
#  - srun without PMIx (--mpi=none): one line per rank saying to use srun --mpi=pmix;
#  - docs/DISTRIBUTED.md shows scripts/train.sbatch as it is.
# Skipped, with the reason, where the cluster cannot run (see slurm_common.inc).
TEST_NAME=slurm_train
source "$(dirname "$0")/slurm_common.inc"

# docs/DISTRIBUTED.md shows the job script this test runs: the copy there must be the file
awk '/^<!-- scripts\/train.sbatch -->$/ { on = 1; next } on && /^```bash$/ { body = 1; next }
     body && /^```$/ { exit } body' "$ZGPT_SRC/docs/DISTRIBUTED.md" > doc_script.txt
cmp -s doc_script.txt "$JOB_SCRIPT" || fail "docs/DISTRIBUTED.md's copy of scripts/train.sbatch differs from the file: $(diff doc_script.txt "$JOB_SCRIPT" | head -5)"

SECONDS=0
for n in 2 4; do
    timeout 300 "$ZGPT" train --config d.json --set out_dir=ref$n --nproc $n > ref$n.log 2>&1 \
        || fail "--nproc $n: $(tail -5 ref$n.log)"
done
echo "ok references: --nproc 2 and --nproc 4 (${SECONDS} s)"

# same_run REF OUT: the same losses, line by line, and byte-identical final weights
same_run() {
    losses_same $1/metrics.jsonl $2/metrics.jsonl
    cmp $1/final/model.bin $2/final/model.bin || fail "$2: final weights differ from $1"
}

# srun inside an allocation: one rank on each node
SECONDS=0
across_nodes timeout 300 salloc -Q -N 2 -n 2 -J zgpt-salloc \
    srun --mpi=pmix "$ZGPT" train --config d.json --set out_dir=srun2 > srun2.log 2>&1 \
    || fail "salloc + srun -n 2: $(tail -8 srun2.log)"
grep -q "x 2 ranks (ZeRO stage 2)" srun2.log || fail "srun -n 2: not 2 ranks: $(head -3 srun2.log)"
same_run ref2 srun2
echo "ok salloc -N 2 -n 2 + srun -n 2 --mpi=pmix: the same losses and weights as --nproc 2 (${SECONDS} s)"

# the documented job script, 2 nodes x 2 tasks
SECONDS=0
job=$(across_nodes submit -N 2 --ntasks-per-node=2 -o job4.out "$JOB_SCRIPT" d.json job4) || fail "sbatch train.sbatch"
# On failure the whole job log (Open MPI's backtrace of a crashed rank is in it) and the daemons' last lines:
# CI9 once saw a rank end with a segfault here, and tail -8 showed only srun's lines.
[ "$(finished $job 300)" = COMPLETED ] || fail "train.sbatch (2 x 2) ended $(job_field $job JobState): $(tail -60 job4.out; slurm_logs)"
grep -qF "restart 0, 4 ranks on 2 node(s)" job4.out || fail "train.sbatch: $(head -3 job4.out)"
grep -q "srun exited with status 0" job4.out || fail "train.sbatch: $(tail -5 job4.out)"
same_run ref4 job4
echo "ok sbatch -N 2 --ntasks-per-node=2 scripts/train.sbatch: the same losses and weights as --nproc 4 (${SECONDS} s)"

# two job steps at once in one allocation (one node, 4 CPUs), each with its own out_dir
SECONDS=0
cat > steps.sh <<'EOF'
#!/bin/bash
srun --exact -n 2 --mpi=pmix "$ZGPT" train --config d.json --set out_dir=stepA > stepA.log 2>&1 &
a=$!
srun --exact -n 2 --mpi=pmix "$ZGPT" train --config d.json --set out_dir=stepB > stepB.log 2>&1 &
b=$!
ra=0 rb=0
wait $a || ra=$?
wait $b || rb=$?
echo "steps exited with $ra and $rb"
[ $ra = 0 ] && [ $rb = 0 ]
EOF
job=$(submit -N 1 -n 4 -o steps.out steps.sh) || fail "sbatch steps.sh"
most=0
for i in $(seq 1 1200); do
    s=$(job_field $job JobState)
    [ "$s" = PENDING ] || [ "$s" = RUNNING ] || break
    k=$(squeue -h -s -j $job -o %i 2> /dev/null | grep -c "^$job\.[0-9]*$" || true)
    [ "$k" -gt "$most" ] && most=$k
    sleep 0.25
done
wait_state $job 60 COMPLETED
[ "$most" = 2 ] || fail "the two steps never ran at the same time (at most $most step(s) seen)"
grep -q "steps exited with 0 and 0" steps.out || fail "steps: $(cat steps.out stepA.log stepB.log | tail -10)"
same_run ref2 stepA
same_run ref2 stepB
echo "ok two job steps at once in one allocation, out_dirs stepA and stepB: each the same as --nproc 2 (${SECONDS} s)"

# a rank that dies ends the job, named in the job log
SECONDS=0
job=$(across_nodes submit -N 2 --ntasks-per-node=1 -o kill.out "$JOB_SCRIPT" d.json kill \
    --set max_iters=100000 --set eval_interval=100000) || fail "sbatch kill"
wait_lines kill/metrics.jsonl 3 120
pid=$(rank_task $job 1) || fail "no zgpt process of task 1 in job $job"
kill -9 $pid
t0=$SECONDS
wait_state $job 60 FAILED
took=$((SECONDS - t0))
[ $took -le 30 ] || fail "the job took $took s to end after rank 1 was killed"
grep -q "task 1: Killed" kill.out || fail "the job log does not name task 1: $(tail -8 kill.out)"
grep -q "srun exited with status 0" kill.out && fail "srun reported success after a rank was killed"
echo "ok kill -9 of rank 1: job FAILED $took s later, the log says '$(grep -m1 'task 1: Killed' kill.out)'"

# a task that never reaches MPI_Init (stopped in the shell that would exec zgpt): rank 0 ends at the
# start-up deadline naming itself, the step fails, nothing is left (before: rank 0 waited in MPI_Init
# for good and ignored SIGTERM)
SECONDS=0
rc=0
ZGPT_STARTUP_TIMEOUT=5 timeout 120 salloc -Q -N 1 -n 2 srun --mpi=pmix sh -c \
    'if [ "$SLURM_PROCID" = 1 ]; then kill -STOP $$; fi; exec "$0" "$@"' \
    "$ZGPT" train --config d.json --set out_dir=stall > stall.log 2>&1 || rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "srun, task 1 stopped before MPI_Init: exit status $rc: $(cat stall.log)"
[ $SECONDS -le 60 ] || fail "srun, task 1 stopped before MPI_Init: took $SECONDS s with ZGPT_STARTUP_TIMEOUT=5"
grep -q "rank 0 of 2 (srun): start-up did not finish within 5 s: still waiting in MPI_Init_thread" stall.log \
    || fail "srun, task 1 stopped before MPI_Init: no line naming rank 0: $(cat stall.log)"
[ -z "$(slurm_strays)" ] || fail "srun, task 1 stopped before MPI_Init: left $(slurm_strays | tr '\n' ' ')"
echo "ok srun, task 1 stopped before MPI_Init: ended in $SECONDS s, '$(grep -o 'rank 0 of 2 (srun).*MPI_Init_thread' stall.log)'"

# srun without PMIx: a clear error from every rank, not Open MPI's page of advice
rc=0
timeout 120 salloc -Q -N 1 -n 2 srun --mpi=none "$ZGPT" train --config d.json --set out_dir=nopmi > nopmi.log 2>&1 || rc=$?
[ $rc -ne 0 ] || fail "srun --mpi=none: expected a failure: $(cat nopmi.log)"
[ "$(grep -c 'zgpt: error: srun started rank [01] of 2 without PMIx.*srun --mpi=pmix' nopmi.log)" = 2 ] \
    || fail "srun --mpi=none: expected one error line per rank: $(cat nopmi.log)"
grep -q "OPAL ERROR\|MPI_Init" nopmi.log && fail "srun --mpi=none: MPI was initialised anyway: $(cat nopmi.log)"
[ ! -e nopmi/metrics.jsonl ] || fail "srun --mpi=none: training started"
echo "ok srun --mpi=none: $(grep -m1 'zgpt: error' nopmi.log)"
echo "slurm_train: ok"
