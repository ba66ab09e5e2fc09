#!/usr/bin/env bash
# --model / init_from read torch.save checkpoints (tests/fixtures/torch_tiny, made by scripts/make_torch_fixture.py
# with torch 2.11 from hf_tiny): transformers' pytorch_model.bin, nanoGPT's ckpt.pt and its out_dir, a bf16 state
# dict with "module." names; eval equals the safetensors fixture's (bf16: within rounding), export from ckpt.pt
# gives the same model, the zip64 form reads the same, and the refused forms (a strided view, the legacy format,
# a deflated archive, DeepSpeed ZeRO-3's empty model states, garbage) say what to do in one line; DeepSpeed ZeRO-2
# model states (written without torch by tests/hub/fake_torch_save.py) load through its checkpoint folder.
set -euo pipefail
: "${ZGPT:?}" "${ZGPT_SRC:?}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zgpt-torch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
source "$ZGPT_SRC/tests/cli/checks.inc"
FIX=$ZGPT_SRC/tests/fixtures/hf_tiny
TT=$ZGPT_SRC/tests/fixtures/torch_tiny
python3 -c "
import random, struct
random.seed(7)
open('val.bin', 'wb').write(struct.pack('<1000H', *[random.randrange(500) for _ in range(1000)]))"
ev() { "$ZGPT" eval --model "$1" --data val.bin --full --json --device cpu; }
ev "hf:$FIX" > ref.json
for m in "$TT/hf_bin" "hf:$TT/hf_bin/pytorch_model.bin" "$TT/nano" "$TT/nano/ckpt.pt" "hf:$TT/nano"; do
    ev "$m" > got.json 2> err.txt || fail "$m: $(cat err.txt)"
    cmp ref.json got.json || fail "$m: $(cat got.json) against $(cat ref.json)"
    echo "ok $m"
done
# nanoGPT's bias=False: loaded with biases 0, said in a note
ev "$TT/nano_nobias" > nb.json 2> nb.err || fail "bias=False: $(cat nb.err)"
grep -q "note: .*nanoGPT model with bias=False.*loaded as 0" nb.err || fail "bias=False: no note: $(cat nb.err)"
echo "ok bias=False: $(cat nb.json)"
# the same archive in zip64 form (every size and offset in zip64 fields, a zip64 end record), and deflated
python3 - "$TT/nano/ckpt.pt" <<'PY'
import sys, zipfile
src = zipfile.ZipFile(sys.argv[1])
for out, method in (("z64", zipfile.ZIP_STORED), ("deflated", zipfile.ZIP_DEFLATED)):
    zipfile.ZIP64_LIMIT = 1 << 10 if out == "z64" else (1 << 31) - 1
    import os; os.makedirs(out, exist_ok=True)
    with zipfile.ZipFile(f"{out}/ckpt.pt", "w", compression=method) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info.filename))
PY
grep -q $'PK\x06\x06' z64/ckpt.pt || fail "z64/ckpt.pt has no zip64 end record"
ev z64 > z64.json && cmp ref.json z64.json || fail "zip64 form: $(cat z64.json)"
echo "ok zip64 form"
# a bf16 state dict without config.json: the config from hf_tiny's folder (copied beside it)
mkdir bf && cp "$TT/plain_bf16.bin" bf/ && cp "$FIX/config.json" bf/
ev bf/plain_bf16.bin > bf.json 2> err.txt || fail "bf16 .bin: $(cat err.txt)"
python3 -c "
import json, sys
a, b = json.load(open('ref.json'))['loss'], json.load(open('bf.json'))['loss']
sys.exit(0 if abs(a - b) <= 2e-2 * abs(a) else 1)" || fail "bf16 .bin: $(cat bf.json) against $(cat ref.json)"
echo "ok bf16 state dict: $(cat bf.json)"
# export from nanoGPT's ckpt.pt: a Hugging Face folder with the same loss
"$ZGPT" export --model "$TT/nano/ckpt.pt" --out exp > /dev/null || fail "export from ckpt.pt"
ev "hf:$WORK/exp" > exp.json && cmp ref.json exp.json || fail "export from ckpt.pt: $(cat exp.json)"
# refused, one line each
mkdir nc && cp "$TT/noncontig.pt" nc/ && cp "$FIX/config.json" nc/
one_error "strided view" "is not contiguous .*contiguous\(\)" "$ZGPT" eval --model nc/noncontig.pt --data val.bin --device cpu
mkdir lg && cp "$TT/legacy.pt" lg/ && cp "$FIX/config.json" lg/
one_error "legacy format" "legacy format of PyTorch < 1.6" "$ZGPT" eval --model lg/legacy.pt --data val.bin --device cpu
one_error "deflated" "records are compressed" "$ZGPT" eval --model deflated --data val.bin --device cpu
# DeepSpeed ZeRO-3's model states (written without torch by tests/hub/fake_torch_save.py): empty placeholders, so
# the error says to run zero_to_fp32; a DeepSpeed tag folder finds its mp_rank_00_model_states.pt
mkdir -p ds/global_step100 && python3 "$ZGPT_SRC/tests/hub/fake_torch_save.py" zero3 ds/global_step100/mp_rank_00_model_states.pt
one_error "ZeRO-3 model states" "DeepSpeed ZeRO-3 checkpoint .*zero_to_fp32" "$ZGPT" eval --model ds/global_step100 --data val.bin --device cpu
# ZeRO 0-2's model states hold the module's weights: hf_tiny's, through the save_checkpoint folder and the tag
mkdir -p ds2/global_step7 && cp "$FIX/config.json" ds2/global_step7/ && printf 'global_step7' > ds2/latest
python3 "$ZGPT_SRC/tests/hub/fake_torch_save.py" zero2 ds2/global_step7/mp_rank_00_model_states.pt "$FIX/model.safetensors"
for m in ds2 ds2/global_step7; do
    ev "$m" > d.json 2> err.txt && cmp ref.json d.json || fail "DeepSpeed model states via $m: $(cat d.json err.txt)"
    echo "ok DeepSpeed ZeRO-2 model states via $m"
done
printf 'global_step100\n' > ds/latest # DeepSpeed's save_checkpoint folder: `latest` names the tag
one_error "DeepSpeed checkpoint folder" "global_step100/mp_rank_00_model_states.pt: .*ZeRO-3" "$ZGPT" eval --model ds --data val.bin --device cpu
printf 'PK\003\004garbage' > lg/bad.pt
one_error "not a zip" "not a zip archive|truncated|corrupt" "$ZGPT" eval --model lg/bad.pt --data val.bin --device cpu
echo "torch_import: ok"
