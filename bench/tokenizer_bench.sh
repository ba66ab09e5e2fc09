#!/usr/bin/env bash
# Single-threaded GPT-2 encoding speed of zgpt, tiktoken (npm; tiktoken's Rust core as WASM) and
# js-tiktoken (pure JS) on the same text in the same run, in MB/s (10^6 bytes per second).
#
#   bench/tokenizer_bench.sh [FILE]      (default: data/tinyshakespeare/input.txt)
#
# zgpt: `zgpt tokenize --stats` times the encoding alone (vocabulary loading and I/O excluded, as for
# the npm packages). Two numbers: "cold" is one pass over the text in a fresh process (empty word
# cache), the median of RUNS runs; "repeated" encodes the text REPEAT times back to back in one call
# (median of 3 calls), like the npm packages, which encode the text again and again for BENCH_SECONDS
# after a warm-up (tests/js/bench.mjs): that is the like-for-like comparison. The speed-ups are given for both; on a
# busy machine the short cold runs are the noisier number. Env: ZGPT (binary; default build/zgpt),
# RUNS (default 7), REPEAT (default 20), BENCH_SECONDS (default 3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
file="${1:-$root/data/tinyshakespeare/input.txt}"
zgpt="${ZGPT:-$root/build/zgpt}"
runs="${RUNS:-7}"
repeat="${REPEAT:-20}"
secs="${BENCH_SECONDS:-3}"
[ -x "$zgpt" ] || { echo "error: $zgpt is not built; build zgpt first or set ZGPT" >&2; exit 1; }
[ -f "$file" ] || { echo "error: $file does not exist" >&2; exit 1; }
[ -d "$root/tests/js/node_modules/tiktoken" ] ||
  { echo "error: tests/js/node_modules is missing; run scripts/install-deps.sh" >&2; exit 1; }

bytes=$(wc -c <"$file")
echo "text: $file ($bytes bytes); $(nproc) CPUs, single-threaded encoders"
speeds=()
tokens=""
for _ in $(seq "$runs"); do
  line=$("$zgpt" tokenize --stats --input "$file" 2>&1 >/dev/null)
  speeds+=("$(sed -E 's/.*: ([0-9.]+) MB\/s.*/\1/' <<<"$line")")
  tokens=$(sed -E 's/.*-> ([0-9]+) tokens.*/\1/' <<<"$line")
done
zg=$(printf '%s\n' "${speeds[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
printf '%-22s %8.2f MB/s  (%s tokens; median of %s runs: %s)\n' "zgpt (cold, 1 pass)" "$zg" "$tokens" "$runs" "${speeds[*]}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for _ in $(seq "$repeat"); do cat "$file"; done >"$tmp/repeated.txt"
rs=()
for _ in 1 2 3; do
  line=$("$zgpt" tokenize --stats --input "$tmp/repeated.txt" 2>&1 >/dev/null)
  rs+=("$(sed -E 's/.*: ([0-9.]+) MB\/s.*/\1/' <<<"$line")")
done
zr=$(printf '%s\n' "${rs[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
printf '%-22s %8.2f MB/s  (%s passes in one call; median of 3 calls: %s)\n' "zgpt (repeated)" "$zr" "$repeat" "${rs[*]}"

ref=$(node "$root/tests/js/bench.mjs" "$file" "$secs")
while read -r name mbps n; do
  printf '%-22s %8.2f MB/s  (%s tokens)\n' "$name" "$mbps" "$n"
  [ "$n" = "$tokens" ] || echo "warning: $name gave $n tokens, zgpt $tokens" >&2
done <<<"$ref"
tk=$(awk '$1 == "tiktoken" {print $2}' <<<"$ref")
jt=$(awk '$1 == "js-tiktoken" {print $2}' <<<"$ref")
awk -v z="$zg" -v r="$zr" -v t="$tk" -v j="$jt" 'BEGIN {
  printf "zgpt / tiktoken: %.1fx cold, %.1fx repeated (target >= 5x); zgpt / js-tiktoken: %.1fx cold, %.1fx repeated\n",
         z / t, r / t, z / j, r / j
  printf "zgpt %s the 5 MB/s target (cold)\n", (z >= 5 ? "meets" : "MISSES") }'
