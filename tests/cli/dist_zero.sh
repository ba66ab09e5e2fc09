#!/usr/bin/env bash
# ZeRO stages 0-3 over 1-4 MPI ranks against a one-process reference with the same global batch
# (tests/unit/test_zero.c does the comparison inside every rank).
set -u
. "$ZGPT_SRC/tests/mpi/mpirun.sh"
command -v "$MPIRUN" >/dev/null || { echo "SKIP: no mpirun"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# test_zero: synthetic layered model; test_zero_gpt2: the real GPT-2 + CPU backend through its hooks.
for t in test_zero test_zero_gpt2; do
  T="$ZGPT_BUILD/$t"
  [ -x "$T" ] || fail "missing $T"
  for np in 1 2 3 4; do
    timeout 600 "$MPIRUN" -np $np "${MPIRUN_ARGS[@]}" "$T" > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "$t on $np ranks"; }
    [ "$(grep -c ', 0 failed' "$tmp/out")" = $np ] || { cat "$tmp/out"; fail "$t, $np ranks: not all passed"; }
    grep -q "world size $np (" "$tmp/out" || fail "$t, $np ranks: wrong world size"
    echo "ok $t: ZeRO stages 0-3 on $np rank(s) match one process"
  done
done
echo "PASS dist_zero"
