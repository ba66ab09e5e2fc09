#!/usr/bin/env bash
# --model / init_from / export read llm.c's model files (written without torch by tests/hub/make_llmc_model.py from
# hf_tiny, as llm.c's train_gpt2.py write_model writes them): fp32 (version 3) gives the safetensors fixture's loss
# exactly, bf16 (version 5) within rounding; an llm.c output_log_dir gives its newest step that has a DONE_ marker
# (an unfinished later step is passed over); export makes a Hugging Face folder of the same model, and
# export --format llmc writes llm.c's bytes exactly. Refused in one
# line: another version, a truncated file, an impossible header; --resume on llm.c's folder names init_from.
set -euo pipefail
: "${ZGPT:?}" "${ZGPT_SRC:?}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zgpt-llmc.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
source "$ZGPT_SRC/tests/cli/checks.inc"
FIX=$ZGPT_SRC/tests/fixtures/hf_tiny
mk() { python3 "$ZGPT_SRC/tests/hub/make_llmc_model.py" "$FIX/model.safetensors" "$FIX/config.json" "$@"; }
python3 -c "
import random, struct
random.seed(7)
open('val.bin', 'wb').write(struct.pack('<1000H', *[random.randrange(500) for _ in range(1000)]))"
ev() { "$ZGPT" eval --model "$1" --data val.bin --full --json --device cpu; }
ev "hf:$FIX" > ref.json
mk fp32.bin
ev fp32.bin > got.json 2> err.txt || fail "fp32: $(cat err.txt)"
cmp ref.json got.json || fail "fp32 (version 3): $(cat got.json) against $(cat ref.json)"
echo "ok llm.c fp32 model file: $(cat got.json)"
mk bf16.bin --dtype bfloat16
[ "$(stat -c %s bf16.bin)" -lt "$(stat -c %s fp32.bin)" ] || fail "bf16 file not smaller"
ev bf16.bin > bf.json 2> err.txt || fail "bf16: $(cat err.txt)"
python3 -c "
import json, sys
a, b = json.load(open('ref.json'))['loss'], json.load(open('bf.json'))['loss']
sys.exit(0 if a != b and abs(a - b) <= 2e-2 * abs(a) else 1)" || fail "bf16 (version 5): $(cat bf.json) against $(cat ref.json)"
echo "ok llm.c bf16 model file: $(cat bf.json)"
# an output_log_dir: step 5 complete (DONE_00000005), step 10 written but not finished (no DONE, truncated)
mkdir log && cp fp32.bin log/model_00000005.bin && touch log/DONE_00000005 log/state_00000005_00000.bin
head -c 5000 fp32.bin > log/model_00000010.bin
ev log > got.json 2> err.txt && cmp ref.json got.json || fail "log dir: $(cat got.json err.txt)"
echo "ok llm.c output_log_dir: the newest complete step"
# export: a Hugging Face folder with the same loss
"$ZGPT" export --model log/model_00000005.bin --out exp > /dev/null 2>&1 || fail "export from llm.c"
ev "hf:$WORK/exp" > exp.json && cmp ref.json exp.json || fail "export from llm.c: $(cat exp.json)"
echo "ok export from llm.c"
# export --format llmc: byte for byte what llm.c's write_model writes (fp32 and bf16); fp16 has no llm.c form
for dt in fp32 bf16; do
    "$ZGPT" export --model "hf:$FIX" --out "x_$dt.bin" --format llmc --dtype $dt > /dev/null || fail "export llmc $dt"
    cmp "x_$dt.bin" "$dt.bin" || fail "export --format llmc --dtype $dt differs from llm.c's write_model"
done
echo "ok export --format llmc: the bytes of llm.c's write_model (fp32, bf16)"
one_error "export --format llmc --dtype fp16" "llm.c's model files are fp32 .* or bf16" \
    "$ZGPT" export --model "hf:$FIX" --out x16.bin --format llmc --dtype fp16
[ ! -e x16.bin ] || fail "a refused export wrote x16.bin"
E() { "$ZGPT" eval --model "$1" --data val.bin --device cpu; }
mk v4.bin --version 4
one_error "another version" "llm.c model version 4 is not one zgpt reads" E v4.bin
head -c 100000 fp32.bin > cut.bin
one_error "a truncated file" "cut.bin: 100000 bytes, but its header's GPT-2 .* needs 540672" E cut.bin
python3 - fp32.bin heads.bin <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<i", b, 20, 5)  # 5 heads do not divide 64 channels
open(sys.argv[2], "wb").write(b)
PY
one_error "an impossible header" "impossible shape .*5 heads, 64 channels" E heads.bin
cat > run.json <<'JSON'
{"out_dir": "log", "data": "data", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32, "device": "cpu"}
JSON
one_error "--resume on llm.c's folder" "llm.c's output folder.*init_from 'log/model_00000005.bin'" \
    "$ZGPT" train --config run.json --resume
echo "all llm.c model checks passed"
