#!/usr/bin/env bash
# Bad input to zgpt prepare and to the shard reader (through 'zgpt prepare --check', which opens the
# splits exactly as training does): each gives a non-zero exit and ONE line naming the path or value,
# and nothing is left that looks like a complete prepared folder.
set -uo pipefail
: "${ZGPT:?set ZGPT to the zgpt binary}" "${ZGPT_SRC:?set ZGPT_SRC to the repository root}"
tmp=$(mktemp -d)
trap 'chmod -R u+rwx "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
in="$ZGPT_SRC/data/tinyshakespeare/input.txt"

# expect_error NAME SUBSTRING... -- command: exit != 0, exactly one line on stderr with every substring.
expect_error() {
  local name=$1; shift
  local subs=()
  while [ "$1" != "--" ]; do subs+=("$1"); shift; done
  shift
  "$@" >"$tmp/stdout" 2>"$tmp/stderr"
  local rc=$?
  [ $rc -ne 0 ] || fail "$name: exit status 0"
  [ "$(wc -l <"$tmp/stderr")" -eq 1 ] || fail "$name: expected one line on stderr, got: $(cat "$tmp/stderr")"
  grep -q '^zgpt: error: ' "$tmp/stderr" || fail "$name: no 'zgpt: error:' line: $(cat "$tmp/stderr")"
  for s in "${subs[@]}"; do
    grep -qF -- "$s" "$tmp/stderr" || fail "$name: message lacks '$s': $(cat "$tmp/stderr")"
  done
  echo "ok   $name: $(cat "$tmp/stderr")"
}
# No prepared folder may look complete after a failure.
expect_no_output() {
  [ ! -e "$1/meta.json" ] || fail "$1/meta.json exists after a failed run"
  ! ls "$1"/*.bin >/dev/null 2>&1 || fail "shards left in $1: $(ls "$1")"
}

# ---- prepare: inputs and options ----
expect_error missing-file "$tmp/nope.txt" "does not exist" -- "$ZGPT" prepare --input "$tmp/nope.txt" --out "$tmp/o1"
[ ! -e "$tmp/o1" ] || fail "missing-file: the output folder was created"

: >"$tmp/empty.txt"
expect_error empty-file "$tmp/empty.txt" "empty input" -- "$ZGPT" prepare --input "$tmp/empty.txt" --out "$tmp/o2"
expect_no_output "$tmp/o2"
mkdir -p "$tmp/notxt" && echo "text" >"$tmp/notxt/readme.md"
expect_error folder-without-txt "$tmp/notxt" "no *.txt" -- "$ZGPT" prepare --input "$tmp/notxt" --out "$tmp/o3"
expect_no_output "$tmp/o3"

for v in 0 1 1.5 -0.1; do
  expect_error "val-fraction-$v" "--val-fraction $v" "(0, 1)" -- "$ZGPT" prepare --input "$in" --out "$tmp/o4" --val-fraction "$v"
done
expect_error val-fraction-text "--val-fraction" "'abc'" -- "$ZGPT" prepare --input "$in" --out "$tmp/o4" --val-fraction abc
expect_no_output "$tmp/o4"
expect_error shard-tokens "--shard-tokens 0" -- "$ZGPT" prepare --input "$in" --out "$tmp/o4" --shard-tokens 0
expect_error unknown-option "--val-fraction" "--val-frac" -- "$ZGPT" prepare --input "$in" --out "$tmp/o4" --val-frac 0.2
expect_error no-input "--input" -- "$ZGPT" prepare --out "$tmp/o4"

# An unreadable folder below an input folder. root reads anything, so drop to 'nobody' for this one.
mkdir -p "$tmp/corpus/locked" && cp "$in" "$tmp/corpus/a.txt" && echo "hidden" >"$tmp/corpus/locked/b.txt"
chmod 000 "$tmp/corpus/locked"
mkdir -p "$tmp/w" && chmod 777 "$tmp/w" && chmod 755 "$tmp"
run_as_user=()
if [ "$(id -u)" -eq 0 ]; then
  if command -v setpriv >/dev/null; then
    run_as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  else
    echo "skip unreadable-folder: running as root without setpriv"
  fi
fi
# 'nobody' must be able to reach the test folder (a /tmp that is not world-searchable is the machine's
# setting, not zgpt's): said, and skipped, rather than failing
if [ ${#run_as_user[@]} -gt 0 ] && ! "${run_as_user[@]}" test -x "$tmp/w"; then
  echo "skip unreadable-folder: user nobody cannot reach $tmp ($(stat -c '%A' "$(dirname "$tmp")") on $(dirname "$tmp"))"
  run_as_user=()
  [ "$(id -u)" -eq 0 ] && skip_unreadable=1
fi
if [ -z "${skip_unreadable:-}" ] && { [ "$(id -u)" -ne 0 ] || [ ${#run_as_user[@]} -gt 0 ]; }; then
  expect_error unreadable-folder "$tmp/corpus/locked" "cannot read folder" -- \
    "${run_as_user[@]}" "$ZGPT" prepare --input "$tmp/corpus" --out "$tmp/w/o5"
  expect_no_output "$tmp/w/o5"
fi
chmod 755 "$tmp/corpus/locked"

# ---- shards: a good folder, then damaged copies ----
"$ZGPT" prepare --input "$in" --out "$tmp/good" >/dev/null || fail "preparing the good folder"
damaged() { rm -rf "$tmp/$1" && cp -r "$tmp/good" "$tmp/$1" && echo "$tmp/$1"; }

d=$(damaged magic)
printf 'X' | dd of="$d/train_000000.bin" bs=1 seek=0 conv=notrunc status=none
expect_error bad-magic "$d/train_000000.bin" "bad magic" -- "$ZGPT" prepare --check "$d"

d=$(damaged truncated)
truncate -s -3 "$d/val_000000.bin"
expect_error truncated-body "$d/val_000000.bin" "truncated" -- "$ZGPT" prepare --check "$d"

d=$(damaged checksum)
printf '\x55' | dd of="$d/train_000000.bin" bs=1 seek=5000 conv=notrunc status=none
expect_error wrong-checksum "$d/train_000000.bin" "checksum mismatch" -- "$ZGPT" prepare --check "$d"

d=$(damaged short)
expect_error shorter-than-T "$d/val_000000.bin" "block size + 1 = 40001" -- "$ZGPT" prepare --check "$d" --block-size 40000

d=$(damaged nometa)
rm "$d/meta.json"
expect_error no-meta "$d" "did not finish" -- "$ZGPT" prepare --check "$d"

# Token ids >= the vocabulary, in nanoGPT's header-less format (ids 0xffff = 65535).
mkdir -p "$tmp/nano"
head -c 8192 /dev/zero >"$tmp/nano/train.bin"
{ head -c 4000 /dev/zero; printf '\xff\xff'; head -c 4000 /dev/zero; } >"$tmp/nano/val.bin"
expect_error ids-over-vocab "$tmp/nano/val.bin" "token id 65535 at position 2000" ">= vocab_size 50257" -- \
  "$ZGPT" prepare --check "$tmp/nano" --block-size 64
head -c 8002 /dev/zero >"$tmp/nano/val.bin"
"$ZGPT" prepare --check "$tmp/nano" --block-size 64 >/dev/null || fail "nanoGPT train.bin/val.bin are not accepted"

# ---- an interrupted run: killed once its first shards exist; nothing looks complete ----
for i in $(seq 20); do cat "$in"; done >"$tmp/big.txt"
"$ZGPT" prepare --input "$tmp/big.txt" --out "$tmp/killed" --shard-tokens 100000 --threads 1 >/dev/null 2>&1 &
pid=$!
for i in $(seq 1000); do [ -e "$tmp/killed/train_000001.bin" ] && break; sleep 0.01; done
if kill -9 $pid 2>/dev/null; then
  wait $pid 2>/dev/null
  [ ! -e "$tmp/killed/meta.json" ] || fail "interrupted run: meta.json exists"
  expect_error interrupted "$tmp/killed" "did not finish" -- "$ZGPT" prepare --check "$tmp/killed"
  # A new run into the folder completes it and clears the dead run's temporary files.
  "$ZGPT" prepare --input "$in" --out "$tmp/killed" >/dev/null || fail "re-run after the interruption"
  ! ls "$tmp/killed" | grep -q tmp || fail "temporary files of the killed run remain: $(ls "$tmp/killed")"
  [ ! -e "$tmp/killed/train_000001.bin" ] || fail "shards of the killed run remain"
  "$ZGPT" prepare --check "$tmp/killed" >/dev/null || fail "the re-run folder does not check"
else
  wait $pid
  echo "skip interrupted: prepare finished before it could be killed"
fi

[ $failures -eq 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "prepare_errors: ok"
