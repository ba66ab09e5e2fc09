#!/usr/bin/env bash
# zgpt prepare on Tiny Shakespeare: nanoGPT's exact token counts, byte-identical re-runs (also with
# one thread and with small shards), stale shards removed, and the folder passes --check.
set -euo pipefail
: "${ZGPT:?set ZGPT to the zgpt binary}" "${ZGPT_SRC:?set ZGPT_SRC to the repository root}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
in="$ZGPT_SRC/data/tinyshakespeare/input.txt"

"$ZGPT" prepare --input "$in" --out "$tmp/a" >"$tmp/out.txt"
cat "$tmp/out.txt"
grep -Eq '"train_tokens":[[:space:]]*301966,' "$tmp/a/meta.json" || fail "train_tokens is not 301966"
grep -Eq '"val_tokens":[[:space:]]*36059,' "$tmp/a/meta.json" || fail "val_tokens is not 36059"
grep -Eq '"vocab_size":[[:space:]]*50257,' "$tmp/a/meta.json" || fail "vocab_size is not 50257"
grep -q 'train: 301966 tokens in 1 shard' "$tmp/out.txt" || fail "statistics do not show the train tokens"
grep -q 'val:   36059 tokens in 1 shard' "$tmp/out.txt" || fail "statistics do not show the val tokens"
grep -q 'MB/s' "$tmp/out.txt" || fail "statistics do not show the speed"
# header (64 bytes) + uint16 tokens
[ "$(stat -c %s "$tmp/a/train_000000.bin")" -eq $((64 + 2 * 301966)) ] || fail "train shard size"
[ "$(stat -c %s "$tmp/a/val_000000.bin")" -eq $((64 + 2 * 36059)) ] || fail "val shard size"

# Re-running rewrites identically; one thread gives the same bytes as all cores.
cp -r "$tmp/a" "$tmp/first"
"$ZGPT" prepare --input "$in" --out "$tmp/a" >/dev/null
"$ZGPT" prepare --input "$in" --out "$tmp/serial" --threads 1 >/dev/null
for f in train_000000.bin val_000000.bin meta.json; do
  cmp "$tmp/first/$f" "$tmp/a/$f" || fail "second run changed $f"
done
for f in train_000000.bin val_000000.bin; do
  cmp "$tmp/first/$f" "$tmp/serial/$f" || fail "--threads 1 gives a different $f"
done

# Small shards hold the same token stream; a later run with big shards removes the extra ones.
"$ZGPT" prepare --input "$in" --out "$tmp/a" --shard-tokens 100000 >/dev/null
[ "$(ls "$tmp/a" | grep -c '^train_.*\.bin$')" -eq 4 ] || fail "expected 4 train shards of 100000 tokens"
for i in 0 1 2 3; do tail -c +65 "$tmp/a/train_00000$i.bin"; done >"$tmp/stream.bin"
tail -c +65 "$tmp/first/train_000000.bin" | cmp - "$tmp/stream.bin" || fail "sharded stream differs"
"$ZGPT" prepare --input "$in" --out "$tmp/a" >/dev/null
[ ! -e "$tmp/a/train_000001.bin" ] || fail "stale shard train_000001.bin was left behind"
cmp "$tmp/first/meta.json" "$tmp/a/meta.json" || fail "meta.json differs after the stale-shard run"
! ls "$tmp/a" | grep -q tmp || fail "temporary files left: $(ls "$tmp/a")"

"$ZGPT" prepare --check "$tmp/a" --block-size 1024 | grep -q 'ok: train 301966 tokens, val 36059 tokens' ||
  fail "--check does not accept the folder"
echo "prepare_shakespeare: ok"
