#!/usr/bin/env bash
# Communicator collectives over 2-4 MPI ranks, zgpt's launcher (--nproc re-exec under mpirun, forked
# workers), and the failure paths: a rank that exits, one killed by SIGKILL, one that never joins a
# collective (timeout), Ctrl-C. Every failing job must end quickly with a message naming the rank.
set -u
. "$ZGPT_SRC/tests/mpi/mpirun.sh"
T="$ZGPT_BUILD/test_comm"
[ -x "$T" ] || fail "missing $T"
command -v "$MPIRUN" >/dev/null || { echo "SKIP: no mpirun"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

for np in 2 3 4; do
  timeout 300 "$MPIRUN" -np $np "${MPIRUN_ARGS[@]}" "$T" > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "collectives on $np ranks"; }
  n_ok=$(grep -c ", 0 failed" "$tmp/out")
  [ "$n_ok" = "$np" ] || { cat "$tmp/out"; fail "expected $np passing ranks, got $n_ok"; }
  grep -q "$np rank(s), mpi communicator" "$tmp/out" || fail "not the MPI communicator on $np ranks"
done
echo "ok collectives on 2, 3, 4 ranks"

# zgpt's launcher: --nproc re-runs the program under mpirun; output passes through untagged.
timeout 300 "$T" --nproc 3 > "$tmp/out" 2> "$tmp/err" || { cat "$tmp/out" "$tmp/err"; fail "--nproc 3"; }
[ "$(grep -c ', 0 failed' "$tmp/out")" = 3 ] || fail "--nproc 3: not 3 passing ranks"
grep -q '^\[1,' "$tmp/out" && fail "mpirun's output tags leaked through"
echo "ok launcher --nproc 3"

# elapsed SECONDS CMD...: runs CMD, stores its status in $st and stderr in $tmp/err
run_timed() {
  local start=$(date +%s)
  timeout 120 "$@" > "$tmp/out" 2> "$tmp/err"; st=$?
  took=$(( $(date +%s) - start ))
}

run_timed "$T" --nproc 3 --die 1
[ $st -ne 0 ] || fail "dying rank: exit status 0"
[ $st -ne 124 ] || fail "dying rank: the job hung"
[ $took -le 30 ] || fail "dying rank: took $took s"
grep -q "rank 1 of 3 failed" "$tmp/err" || { cat "$tmp/err"; fail "dying rank not named"; }
grep -q "    zgpt\[rank 1\]: error: rank 1 dying on purpose" "$tmp/err" || { cat "$tmp/err"; fail "its last lines not shown"; }
echo "ok a rank that exits ends the job in ${took}s, named"

run_timed "$T" --nproc 3 --kill 2
[ $st -ne 0 ] && [ $st -ne 124 ] || fail "killed rank: status $st"
[ $took -le 30 ] || fail "killed rank: took $took s"
grep -q "rank 2 of 3 failed (killed by signal 9" "$tmp/err" || { cat "$tmp/err"; fail "killed rank not named"; }
echo "ok kill -9 of a rank ends the job in ${took}s, named"

ZGPT_COMM_TIMEOUT=3 run_timed "$T" --nproc 2 --hang 1
[ $st -ne 0 ] && [ $st -ne 124 ] || fail "hung collective: status $st"
[ $took -le 40 ] || fail "hung collective: took $took s"
grep -q "rank 0: all_reduce(sum) timed out after 3 s" "$tmp/err" || { cat "$tmp/err"; fail "timeout message"; }
echo "ok a collective a rank never joins times out in ${took}s"

# Directly under mpirun (no zgpt launcher): the timeout still ends the job.
start=$(date +%s)
ZGPT_COMM_TIMEOUT=2 timeout 120 "$MPIRUN" -np 3 "${MPIRUN_ARGS[@]}" "$T" --hang 2 > "$tmp/out" 2>&1; st=$?
took=$(( $(date +%s) - start ))
[ $st -ne 0 ] && [ $st -ne 124 ] && [ $took -le 40 ] || fail "mpirun + hang: status $st after $took s"
grep -q "timed out after 2 s" "$tmp/out" || { cat "$tmp/out"; fail "mpirun + hang: message"; }
echo "ok timeout under a plain mpirun"

# Forked workers (the --gpus launcher's machinery, without GPUs).
ZGPT_LAUNCH_FORK_TEST=3 run_timed "$T" --fork-die 1
[ $st -ne 0 ] && [ $st -ne 124 ] && [ $took -le 20 ] || fail "fork launcher: status $st after $took s"
grep -q "rank 1 of 3 failed (exit status 3)" "$tmp/err" || { cat "$tmp/err"; fail "fork launcher: rank not named"; }
echo "ok fork launcher stops the others in ${took}s"

# Ctrl-C: the launcher forwards it; every worker ends; nothing is left behind.
for mode in fork mpi; do
  token="ctrlc-$$-$mode"
  if [ $mode = fork ]; then
    ZGPT_LAUNCH_FORK_TEST=2 "$T" --sleep --token "$token" > "$tmp/out" 2> "$tmp/err" & pid=$!
  else
    "$T" --nproc 2 --sleep --token "$token" > "$tmp/out" 2> "$tmp/err" & pid=$!
  fi
  for i in $(seq 1 100); do [ "$(grep -c sleeping "$tmp/out")" = 2 ] && break; sleep 0.1; done
  kill -INT $pid
  start=$(date +%s); wait $pid; st=$?; took=$(( $(date +%s) - start ))
  [ $st -eq 130 ] || { cat "$tmp/err"; fail "Ctrl-C ($mode): status $st"; }
  [ $took -le 15 ] || fail "Ctrl-C ($mode): took $took s"
  sleep 0.5
  if pgrep -f -- "$token" >/dev/null; then fail "Ctrl-C ($mode): workers left running"; fi
  grep -q "stopped by Interrupt" "$tmp/err" || fail "Ctrl-C ($mode): message"
  echo "ok Ctrl-C ($mode) stops all workers in ${took}s"
done
echo "PASS dist_comm"
