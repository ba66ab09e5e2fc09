#!/usr/bin/env bash
# zgpt tokenize / detokenize: the output format, exact round trips of any bytes, and bad input
# (one-line errors naming the value, non-zero exit, nothing written to stdout).
set -euo pipefail
: "${ZGPT:?set ZGPT to the zgpt binary}" "${ZGPT_SRC:?set ZGPT_SRC to the repository root}"
fx="$ZGPT_SRC/tests/fixtures/tokenizer"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# The vendored vocabulary is OpenAI's, byte for byte (sha256 published in the issue and README).
(cd "$ZGPT_SRC/data/tokenizer/gpt2" && grep -q 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783 SHA256SUMS &&
  grep -q 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5 SHA256SUMS &&
  sha256sum --quiet -c SHA256SUMS) || fail "data/tokenizer/gpt2 does not match its sha256 sums"
echo "ok: vendored vocabulary checksums"

# Format: decimal ids, single spaces, one newline at the end.
printf 'Hello world' | "$ZGPT" tokenize >"$tmp/out"
[ "$(cat "$tmp/out")" = "15496 995" ] || fail "Hello world -> '$(cat "$tmp/out")', expected '15496 995'"
[ "$(tail -c 1 "$tmp/out" | od -An -c | tr -d ' ')" = '\n' ] || fail "output does not end with a newline"
grep -qE '^[0-9]+( [0-9]+)*$' "$tmp/out" || fail "output is not ids separated by single spaces"
# Special token only when allowed.
[ "$(printf '<|endoftext|>' | "$ZGPT" tokenize --allow-special)" = "50256" ] || fail "--allow-special"
[ "$(printf '<|endoftext|>' | "$ZGPT" tokenize)" = "27 91 437 1659 5239 91 29" ] || fail "ordinary <|endoftext|>"
[ "$(printf '<|endoftext|>' | "$ZGPT" tokenize | "$ZGPT" detokenize)" = "<|endoftext|>" ] || fail "decode special"
echo "ok: format and special token"

# Round trips: stdin and --input, valid and invalid UTF-8, empty input.
for f in "$fx/stress.txt" "$fx/invalid_utf8.bin" "$fx/ws_diverge.txt" "$ZGPT_SRC/data/tinyshakespeare/input.txt"; do
  "$ZGPT" tokenize --input "$f" >"$tmp/ids"
  "$ZGPT" detokenize --input "$tmp/ids" >"$tmp/back"
  cmp -s "$f" "$tmp/back" || fail "round trip of $(basename "$f") changed the bytes"
  "$ZGPT" tokenize <"$f" | "$ZGPT" detokenize | cmp -s "$f" - || fail "stdin round trip of $(basename "$f")"
done
head -c 200000 /dev/urandom >"$tmp/random.bin"
"$ZGPT" tokenize --input "$tmp/random.bin" | "$ZGPT" detokenize | cmp -s "$tmp/random.bin" - || fail "random bytes"
: >"$tmp/empty"
[ "$("$ZGPT" tokenize --input "$tmp/empty" | od -An -c | tr -d ' ')" = '\n' ] || fail "empty input: expected a lone newline"
[ "$(printf '\n' | "$ZGPT" detokenize | wc -c)" -eq 0 ] || fail "empty id list: expected no bytes"
echo "ok: round trips"

# Both vocabulary layouts on the command line.
mkdir "$tmp/hf"
cp "$ZGPT_SRC/data/tokenizer/gpt2/encoder.json" "$tmp/hf/vocab.json"
cp "$ZGPT_SRC/data/tokenizer/gpt2/vocab.bpe" "$tmp/hf/merges.txt"
"$ZGPT" tokenize --tokenizer "$tmp/hf" --input "$fx/stress.txt" | cmp -s - "$fx/stress.tokens" || fail "HF layout"
echo "ok: --tokenizer with the Hugging Face layout"

expect_error() { # what pattern command...
  local what=$1 pat=$2; shift 2
  set +e
  "$@" >"$tmp/so" 2>"$tmp/se"
  local rc=$?
  set -e
  [ $rc -ne 0 ] || fail "$what: exit status 0"
  [ ! -s "$tmp/so" ] || fail "$what: wrote to stdout: $(head -c 100 "$tmp/so")"
  [ "$(wc -l <"$tmp/se")" -eq 1 ] || fail "$what: error is not one line: $(cat "$tmp/se")"
  grep -qF -- "$pat" "$tmp/se" || fail "$what: error '$(cat "$tmp/se")' does not name '$pat'"
  echo "ok: $what -> $(cat "$tmp/se")"
}
printf '15496 50257 995\n' >"$tmp/bad_ids"
expect_error "id out of range" "50257" "$ZGPT" detokenize --input "$tmp/bad_ids"
grep -q "50257 tokens" "$tmp/se" || fail "out-of-range error does not give the vocabulary size"
printf '15496 99999999999999999999\n' >"$tmp/bad_ids"
expect_error "huge id" "99999999999999999999" "$ZGPT" detokenize --input "$tmp/bad_ids"
printf '15496 12x 995\n' >"$tmp/bad_ids"
expect_error "not a number" "12x" "$ZGPT" detokenize --input "$tmp/bad_ids"
printf -- '-5\n' >"$tmp/bad_ids"
expect_error "negative id" "-5" "$ZGPT" detokenize --input "$tmp/bad_ids"
expect_error "missing input" "$tmp/nope.txt" "$ZGPT" tokenize --input "$tmp/nope.txt"
expect_error "input is a folder" "$tmp" "$ZGPT" tokenize --input "$tmp"
expect_error "missing tokenizer folder" "$tmp/novocab" "$ZGPT" tokenize --tokenizer "$tmp/novocab" --input "$fx/special.txt"
expect_error "folder without vocabulary" "$tmp/hf/.." "$ZGPT" detokenize --tokenizer "$tmp/hf/.." --input "$tmp/ids"
mkdir "$tmp/broken"
printf '{"a": 0, ' >"$tmp/broken/encoder.json"
cp "$ZGPT_SRC/data/tokenizer/gpt2/vocab.bpe" "$tmp/broken/"
expect_error "unparseable vocabulary" "$tmp/broken/encoder.json" "$ZGPT" tokenize --tokenizer "$tmp/broken" --input "$fx/special.txt"
expect_error "unknown option" "--allow-special" "$ZGPT" tokenize --allow-specail
"$ZGPT" tokenize --help | grep -q -- "--allow-special" || fail "tokenize --help does not list --allow-special"
"$ZGPT" detokenize --help | grep -q -- "--input" || fail "detokenize --help does not list --input"
echo "ok: all"
