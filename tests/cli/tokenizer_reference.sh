#!/usr/bin/env bash
# `zgpt tokenize` against tiktoken's GPT-2 encoding, live: js-tiktoken (and the npm tiktoken package,
# tiktoken's Rust core as WASM) encode the same files in this run, and the outputs must be identical.
# Corpora: Tiny Shakespeare (338,025 tokens), the stress corpus, the text with <|endoftext|> in both
# modes, the U+0085/U+FEFF file where only tiktoken is the reference (see make_fixtures.mjs), and
# random text made of edge-case fragments.
set -euo pipefail
: "${ZGPT:?set ZGPT to the zgpt binary}" "${ZGPT_SRC:?set ZGPT_SRC to the repository root}"
js="$ZGPT_SRC/tests/js"
fx="$ZGPT_SRC/tests/fixtures/tokenizer"
if ! command -v node >/dev/null 2>&1; then
  echo "FAIL: node is not installed; run scripts/install-deps.sh" >&2
  exit 1
fi
if [ ! -d "$js/node_modules/js-tiktoken" ] || [ ! -d "$js/node_modules/tiktoken" ]; then
  echo "FAIL: $js/node_modules lacks js-tiktoken/tiktoken; run scripts/install-deps.sh (npm ci in tests/js)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

compare() { # name file impl [--allow-special]
  local name=$1 file=$2 impl=$3; shift 3
  node "$js/encode.mjs" --impl "$impl" "$@" "$file" >"$tmp/ref"
  "$ZGPT" tokenize --input "$file" "$@" >"$tmp/got"
  if ! cmp -s "$tmp/ref" "$tmp/got"; then
    echo "FAIL: $name: zgpt tokenize differs from $impl" >&2
    tr ' ' '\n' <"$tmp/ref" >"$tmp/ref.l"; tr ' ' '\n' <"$tmp/got" >"$tmp/got.l"
    diff "$tmp/ref.l" "$tmp/got.l" | head -5 >&2 || true
    exit 1
  fi
  echo "ok: $name matches $impl ($(wc -w <"$tmp/got") tokens)"
}

shakes="$ZGPT_SRC/data/tinyshakespeare/input.txt"
for impl in js-tiktoken tiktoken; do
  compare "tinyshakespeare" "$shakes" "$impl"
  compare "stress" "$fx/stress.txt" "$impl"
  compare "special (ordinary)" "$fx/special.txt" "$impl"
  compare "special (allowed)" "$fx/special.txt" "$impl" --allow-special
done
compare "ws_diverge" "$fx/ws_diverge.txt" tiktoken
# Random glue of edge-case fragments (tests/js/random_text.mjs), a few fixed seeds.
for seed in 1 2 3; do
  node "$js/random_text.mjs" "$seed" 200000 >"$tmp/random_$seed.txt"
  compare "random text (seed $seed)" "$tmp/random_$seed.txt" js-tiktoken
  compare "random text (seed $seed)" "$tmp/random_$seed.txt" tiktoken
done

n=$("$ZGPT" tokenize --input "$shakes" | wc -w)
[ "$n" -eq 338025 ] || { echo "FAIL: Tiny Shakespeare gave $n tokens, expected 338025" >&2; exit 1; }
# The committed expected files are what the references give now (else re-run make_fixtures.mjs).
node "$js/encode.mjs" "$fx/stress.txt" | cmp -s - "$fx/stress.tokens" ||
  { echo "FAIL: tests/fixtures/tokenizer/stress.tokens is stale; run node tests/js/make_fixtures.mjs" >&2; exit 1; }
echo "ok: Tiny Shakespeare has 338025 tokens"
