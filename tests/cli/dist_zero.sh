#!/usr/bin/env bash
# ZeRO stages 0-3 over 1-4 MPI ranks against a one-process reference with the same global batch
# (tests/unit/test_zero.c does the comparison inside every rank).
set -u
. "$ZGPT_SRC/tests/mpi/mpirun.sh"
T="$ZGPT_BUILD/test_zero"
[ -x "$T" ] || fail "missing $T"
command -v "$MPIRUN" >/dev/null || { echo "SKIP: no mpirun"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for np in 1 2 3 4; do
  timeout 600 "$MPIRUN" -np $np "${MPIRUN_ARGS[@]}" "$T" > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "test_zero on $np ranks"; }
  [ "$(grep -c ', 0 failed' "$tmp/out")" = $np ] || { cat "$tmp/out"; fail "$np ranks: not all passed"; }
  grep -q "world size $np (" "$tmp/out" || fail "$np ranks: wrong world size"
  echo "ok ZeRO stages 0-3 on $np rank(s)"
done
echo "PASS dist_zero"
