#!/usr/bin/env bash
# zgpt export of sharded checkpoints (issue 4, "Checkpoints across ranks"; DeepSpeed's zero_to_fp32):
# a checkpoint written by 2 ranks at stage 2 and by 4 ranks at stage 3 (uneven shards) exports to the
# same Hugging Face weights as the one-process run (within fp32 reduction-order tolerance), every
# tensor present with HF's shapes, the LM head tied to wte (tie_word_embeddings, no separate
# lm_head), and the exported folder evaluates to the same loss as the checkpoint itself. The
# manifest lists every file (model.bin, one optimizer shard per rank, state.json) with its size.
# Skipped (with a message) in a build without MPI.
TEST_NAME=dist_export
source "$(dirname "$0")/dist_common.inc"
WTOL=2e-4
VAL=data/val_000000.bin
ev() { "$ZGPT" eval --model "$1" --data $VAL --full --json --batch 8 | sed -E 's/.*"loss": ([^,]+),.*/\1/'; }

"$ZGPT" train --config d.json > one.log || fail "one process: $(tail -3 one.log)"
"$ZGPT" export --model one --out hf_one > x.log || fail "export of the one-process run: $(cat x.log)"
python3 - hf_one <<'PY' || fail "the one-process export is not a GPT-2 HF folder"
import json, struct, sys
d = sys.argv[1]
cfg = json.load(open(d + "/config.json"))
assert cfg["tie_word_embeddings"] is True and cfg["n_layer"] == 3 and cfg["n_embd"] == 34 and cfg["vocab_size"] == 50257, cfg
b = open(d + "/model.safetensors", "rb").read()
h = json.loads(b[8:8 + struct.unpack_from("<Q", b, 0)[0]]); h.pop("__metadata__", None)
assert h["transformer.wte.weight"]["shape"] == [50257, 34], h["transformer.wte.weight"]   # = the tied LM head
assert "lm_head.weight" not in h                      # tied: HF rebuilds it from wte, as for OpenAI's gpt2
assert h["transformer.h.2.attn.c_attn.weight"]["shape"] == [34, 102]                    # Conv1D (in, out)
assert len(h) == 2 + 3 * 12 + 2, sorted(h)
PY
for case in "2 2" "4 3"; do
    set -- $case; np=$1 stage=$2 out=s${1}_$2
    SECONDS=0
    timeout 300 "$ZGPT" train --config d.json --set out_dir=$out --set zero_optimization.stage=$stage --nproc $np \
        > $out.log 2> $out.err || fail "$np ranks stage $stage: $(tail -5 $out.err)"
    ls $out/final/optim_*.bin | wc -l | grep -qx $np || fail "$out: expected $np optimizer shards: $(ls $out/final)"
    # the manifest lists exactly the folder's files, each with its size
    python3 - $out/final <<'PY' || fail "$out: manifest does not match the folder"
import json, os, sys
d = sys.argv[1]
m = json.load(open(d + "/manifest.json"))
listed = {f["name"]: f["size"] for f in m["files"]}
files = sorted(f for f in os.listdir(d) if f != "manifest.json")
assert sorted(listed) == files, (sorted(listed), files)
for f in files: assert os.path.getsize(os.path.join(d, f)) == listed[f], f
assert all(len(f["xxh3"]) == 16 for f in m["files"])
PY
    # export the run's out_dir (its latest) and one of its checkpoint folders
    "$ZGPT" export --model $out --out hf_$out > x.log || fail "export of $out: $(cat x.log)"
    grep -q "exported checkpoint $out/iter_20" x.log || fail "export did not read $out/iter_20: $(cat x.log)"
    "$ZGPT" export --model $out/iter_10 --out hf_${out}_10 > /dev/null || fail "export of $out/iter_10"
    "$ZGPT" export --model one/iter_10 --out hf_one_10 > /dev/null || fail "export of one/iter_10"
    weights_close hf hf_one/model.safetensors hf_$out/model.safetensors $WTOL
    weights_close hf hf_one_10/model.safetensors hf_${out}_10/model.safetensors $WTOL
    cmp hf_one/config.json hf_$out/config.json || fail "config.json differs"
    # the export is exactly the checkpoint (same loss through the tied head), and close to one process'
    a=$(ev $out); b=$(ev hf:hf_$out); c=$(ev hf:hf_one)
    [ "$a" = "$b" ] || fail "$out: the export changes the loss: $a vs $b"
    awk -v a="$b" -v c="$c" 'BEGIN { d = a - c; if (d < 0) d = -d; exit !(d < 1e-4) }' || fail "$out: export loss $b vs one process $c"
    # bf16 export of the sharded checkpoint: same loss within bf16 rounding
    "$ZGPT" export --model $out --out hf16_$out --dtype bf16 > /dev/null || fail "bf16 export of $out"
    d16=$(ev hf16_$out)
    awk -v a="$a" -v c="$d16" 'BEGIN { d = a - c; if (d < 0) d = -d; exit !(d < 0.01 * a) }' || fail "bf16 export: $d16 vs $a"
    echo "ok $np ranks stage $stage: export == one process' export (loss $b vs $c) (${SECONDS} s)"
done
echo "dist_export: ok"
