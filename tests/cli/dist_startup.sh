#!/usr/bin/env bash
# The start-up deadline (src/dist/startup.h): a 2-rank `mpirun zgpt train` whose rank 1 is stopped
# before it ever reaches MPI_Init (SIGSTOP in the shell that would exec it):
#  - rank 0 ends within ZGPT_STARTUP_TIMEOUT with one line naming the rank and the step it waited in
#    (MPI_Init_thread), the job exits non-zero and no process of it is left;
#  - SIGTERM to rank 0 while it waits there ends it after the 10 s grace (the trainer's handler only
#    sets a flag read at iteration boundaries: before the guard, the rank ignored it);
#  - a ZGPT_STARTUP_TIMEOUT that is not a number of seconds is refused, naming the variable.
TEST_NAME=dist_startup
source "$(dirname "$0")/train_common.inc"
source "$ZGPT_SRC/tests/mpi/mpirun.sh"
command -v "$MPIRUN" > /dev/null || { echo "SKIP: no mpirun"; exit 0; }
"$ZGPT" train --config tiny.json --set out_dir=probe --set max_iters=0 --nproc 2 > probe.log 2>&1 \
    || { grep -q "needs MPI" probe.log && { echo "SKIP: this build has no MPI"; exit 0; }; fail "--nproc 2: $(cat probe.log)"; }

TOKEN="startup-$$"
# stalled_job OUT ENV...: mpirun -np 2 in the background (pid in $job); rank 1 stops before exec'ing zgpt
stalled_job() {
    local out=$1
    shift
    env "$@" timeout 120 "$MPIRUN" -np 2 "${MPIRUN_ARGS[@]}" sh -c \
        'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then kill -STOP $$; fi; exec "$0" "$@"' \
        "$ZGPT" train --config tiny.json --set out_dir=$TOKEN-$out > $out.log 2>&1 &
    job=$!
}
# leftovers: processes of this test's jobs still alive (their command line holds the token)
leftovers() { pgrep -f -- "out_dir=$TOKEN-" || true; }
# rank0_pid: the zgpt process of rank 0 of this test's job
rank0_pid() {
    local p
    for p in $(pgrep -f -- "out_dir=$TOKEN-"); do
        [ "$(cat /proc/$p/comm 2> /dev/null)" = zgpt ] || continue
        tr '\0' '\n' < /proc/$p/environ 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=0" && { echo "$p"; return 0; }
    done
    return 1
}
no_leftovers() {
    local i
    for i in $(seq 1 50); do [ -z "$(leftovers)" ] && return 0; sleep 0.2; done
    fail "$1: processes left behind: $(ps -o pid,stat,args -p "$(leftovers | paste -sd,)")"
}
trap 'for p in $(leftovers); do kill -9 $p 2> /dev/null; done; rm -rf "$WORK"' EXIT

# 1. a rank that never reaches MPI_Init: the others end at the deadline, naming themselves and the step
SECONDS=0
stalled_job stall ZGPT_STARTUP_TIMEOUT=3
rc=0
wait $job || rc=$?
took=$SECONDS
[ $rc -ne 0 ] || fail "stalled start-up: exit status 0: $(cat stall.log)"
[ $rc -ne 124 ] || fail "stalled start-up: still running after 120 s (no deadline): $(cat stall.log)"
[ $took -le 40 ] || fail "stalled start-up: took $took s with ZGPT_STARTUP_TIMEOUT=3"
grep -q "zgpt\[rank 0\]: fatal: .*rank 0 of 2 (mpirun): start-up did not finish within 3 s: still waiting in MPI_Init_thread.*; check that every rank was started" stall.log \
    || fail "stalled start-up: no line naming rank 0 and MPI_Init_thread: $(cat stall.log)"
[ "$(grep -c 'start-up did not finish' stall.log)" = 1 ] || fail "stalled start-up: expected one such line: $(cat stall.log)"
no_leftovers "stalled start-up"
echo "ok a rank stopped before MPI_Init: rank 0 ended in $took s (exit $rc): $(grep -o 'rank 0 of 2.*MPI_Init_thread' stall.log)"

# 2. SIGTERM during start-up ends the rank promptly (the deadline is far away)
stalled_job term ZGPT_STARTUP_TIMEOUT=100
p=""
for i in $(seq 1 100); do p=$(rank0_pid) && break; sleep 0.1; done
[ -n "$p" ] || fail "SIGTERM: rank 0 never started: $(cat term.log)"
sleep 1 # inside MPI_Init, waiting for rank 1
SECONDS=0
kill -TERM $p
for i in $(seq 1 250); do kill -0 $p 2> /dev/null || break; sleep 0.1; done
kill -0 $p 2> /dev/null && fail "SIGTERM: rank 0 still running 25 s later (ignored during start-up)"
took=$SECONDS
rc=0
wait $job || rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "SIGTERM: job exit status $rc: $(cat term.log)"
grep -q "rank 0 of 2 (mpirun): SIGTERM during start-up, still waiting in MPI_Init_thread" term.log \
    || fail "SIGTERM: no line naming the signal and the step: $(cat term.log)"
no_leftovers "SIGTERM during start-up"
echo "ok SIGTERM during MPI_Init: rank 0 ended in $took s, job exit $rc"

# 3. a bound that is not a number of seconds
rc=0
ZGPT_STARTUP_TIMEOUT=soon timeout 120 "$MPIRUN" -np 2 "${MPIRUN_ARGS[@]}" "$ZGPT" train --config tiny.json \
    --set out_dir=$TOKEN-bad > bad.log 2>&1 || rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "ZGPT_STARTUP_TIMEOUT=soon: exit status $rc"
grep -q "error: ZGPT_STARTUP_TIMEOUT='soon' is not a number of seconds > 0" bad.log || fail "ZGPT_STARTUP_TIMEOUT=soon: $(cat bad.log)"
[ ! -e $TOKEN-bad/metrics.jsonl ] || fail "ZGPT_STARTUP_TIMEOUT=soon: training started"
echo "ok ZGPT_STARTUP_TIMEOUT=soon: $(grep -m1 -o "ZGPT_STARTUP_TIMEOUT='soon'.*" bad.log)"
echo "dist_startup: ok"
