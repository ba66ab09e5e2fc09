#!/usr/bin/env bash
# --model / init_from / export read DeepSpeed save_checkpoint folders as zero_to_fp32.py does: the fp32 master
# weights merged from the ranks' optimizer states (folders written without torch or DeepSpeed by
# tests/hub/fake_deepspeed.py from hf_tiny). ZeRO-1, ZeRO-2 (groups, padding, 3 ranks), ZeRO-3 (4 ranks, sub-groups,
# a view at an offset, the file's order rather than the model's, a frozen parameter), the bf16 optimizer, and ZeRO-2/3
# folders written by torch.save itself (tests/fixtures/ds_torch): each the
# safetensors fixture's loss exactly (the module's bf16 copies would give another). Without param_shapes: the
# module's bf16 weights, said in a note. A Trainer's checkpoint-N layout finds config.json above the tag folder.
# Broken folders (a rank's file missing, a stale extra rank, two kinds of files, model parallelism, shapes that do
# not match the partitions) end with one error line, and so does a DeepSpeed folder given as a run's out_dir. Two
# ranks that start from a folder say its note once.
set -euo pipefail
: "${ZGPT:?}" "${ZGPT_SRC:?}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zgpt-ds.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
source "$ZGPT_SRC/tests/cli/checks.inc"
FIX=$ZGPT_SRC/tests/fixtures/hf_tiny
GEN="python3 $ZGPT_SRC/tests/hub/fake_deepspeed.py"
python3 -c "
import random, struct
random.seed(7)
open('val.bin', 'wb').write(struct.pack('<1000H', *[random.randrange(500) for _ in range(1000)]))"
ev() { "$ZGPT" eval --model "$1" --data val.bin --full --json --device cpu; }
ev "hf:$FIX" > ref.json
# make NAME ARGS...: a save_checkpoint folder with hf_tiny's config.json in its tag folder
make() {
    local d=$1
    shift
    $GEN "$d" "$FIX/model.safetensors" "$@"
    cp "$FIX/config.json" "$d/global_step100/"
}
same() { # NAME NOTE-PATTERN MODEL...
    local name=$1 pat=$2
    shift 2
    for m in "$@"; do
        ev "$m" > got.json 2> err.txt || fail "$name ($m): $(cat err.txt)"
        cmp -s ref.json got.json || fail "$name ($m): $(cat got.json) against $(cat ref.json)"
        grep -qE -- "$pat" err.txt || fail "$name ($m): no note matching '$pat': $(cat err.txt)"
    done
    echo "ok $name: $(head -1 err.txt)"
}
make z2 --stage 2 --world 3 --groups 2
same "ZeRO-2, 3 ranks, 2 groups" "DeepSpeed ZeRO-2 checkpoint of 3 ranks.*fp32 master weights" z2 z2/global_step100 \
    z2/global_step100/mp_rank_00_model_states.pt
make z1 --stage 1 --world 2
same "ZeRO-1, 2 ranks" "DeepSpeed ZeRO-1 checkpoint of 2 ranks" z1
make z3 --stage 3 --world 4 --subgroups 3 --shuffle --frozen transformer.wpe.weight
[ -f z3/global_step100/zero_pp_rank_3_mp_rank_00_model_states.pt ] || fail "z3: no per-rank model states"
same "ZeRO-3, 4 ranks, 3 sub-groups, reversed order, wpe frozen" "DeepSpeed ZeRO-3 checkpoint of 4 ranks" z3
# the same layouts written by torch.save itself (tests/fixtures/ds_torch: torch 2.11, CUDA storages, views of padded
# storages, nn.Parameter; made on the device by scripts/gpu_validate.sh dsreal)
same "torch.save's ZeRO-2 (2 ranks, 2 groups)" "ZeRO-2 checkpoint of 2 ranks" "$ZGPT_SRC/tests/fixtures/ds_torch/zero2"
same "torch.save's ZeRO-3 (2 ranks, sub-groups, wpe frozen)" "ZeRO-3 checkpoint of 2 ranks" \
    "$ZGPT_SRC/tests/fixtures/ds_torch/zero3"
make z2f --stage 2 --world 2 --groups 2 --frozen transformer.ln_f.weight,transformer.h.0.ln_1.bias
same "ZeRO-2 with frozen parameters" "ZeRO-2 checkpoint of 2 ranks" z2f
make bf --stage 1 --world 2 --bf16-optimizer --groups 2
ls bf/global_step100/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt > /dev/null
same "the bf16 optimizer (bf16 with ZeRO-1)" "DeepSpeed bf16 optimizer checkpoint of 2 ranks" bf
# the Hugging Face Trainer's layout: checkpoint-N/{config.json, latest, global_stepN/}
$GEN trainer/checkpoint-100 "$FIX/model.safetensors" --stage 3 --world 2
cp "$FIX/config.json" trainer/checkpoint-100/
# ... and the Trainer's own 16-bit model.safetensors beside them: the fp32 masters win; hf: reads the file
python3 - "$FIX/model.safetensors" trainer/checkpoint-100/model.safetensors <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
hdr = json.loads(raw[8:8 + n])
meta, out, body = hdr.pop("__metadata__", {}), {}, b""
for k, v in hdr.items():
    b, e = v["data_offsets"]
    f = struct.unpack(f"<{(e - b) // 4}f", raw[8 + n + b:8 + n + e])
    h = b"".join(struct.pack("<H", (struct.unpack("<I", struct.pack("<f", x))[0] + 0x8000) >> 16) for x in f)
    out[k] = {"dtype": "BF16", "shape": v["shape"], "data_offsets": [len(body), len(body) + len(h)]}
    body += h
out["__metadata__"] = meta
j = json.dumps(out).encode()
j += b" " * (-len(j) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(j)) + j + body)
PY
same "config.json beside the tag folder (Trainer layout)" "ZeRO-3 checkpoint of 2 ranks" trainer/checkpoint-100 \
    trainer/checkpoint-100/global_step100
ev hf:trainer/checkpoint-100 > tb.json 2> /dev/null && ! cmp -s ref.json tb.json || fail "hf:checkpoint-N: $(cat tb.json)"
echo "ok hf:checkpoint-N reads the Trainer's bf16 model.safetensors: $(cat tb.json)"
# without param_shapes (bf16 without ZeRO): the module's bf16 weights, with a note; the loss within bf16 rounding
make np --stage 1 --world 2 --bf16-optimizer --no-param-shapes
ev np > np.json 2> err.txt || fail "no param_shapes: $(cat err.txt)"
grep -q "note: .*DeepSpeed saved no param_shapes.*16-bit" err.txt || fail "no param_shapes: no note: $(cat err.txt)"
! cmp -s ref.json np.json || fail "no param_shapes: the fp32 loss from bf16 weights?"
python3 -c "
import json, sys
a, b = json.load(open('ref.json'))['loss'], json.load(open('np.json'))['loss']
sys.exit(0 if abs(a - b) <= 2e-2 * abs(a) else 1)" || fail "no param_shapes: $(cat np.json) against $(cat ref.json)"
echo "ok no param_shapes: $(cat np.json)"
# export from ZeRO-3: a Hugging Face folder with the same loss; training starts from it (init_from)
"$ZGPT" export --model z3 --out exp > /dev/null 2>&1 || fail "export from ZeRO-3"
ev "hf:$WORK/exp" > exp.json && cmp ref.json exp.json || fail "export from ZeRO-3: $(cat exp.json)"
echo "ok export from ZeRO-3"
# refused, one line each, exit 1
E() { "$ZGPT" eval --model "$1" --data val.bin --device cpu; }
T=global_step100
cp -r z2 miss && rm miss/$T/zero_pp_rank_1_mp_rank_00_optim_states.pt
one_error "a rank's file missing" "rank 1's optimizer states .*missing \(2 of 3" E miss
cp -r z2 stale && cp stale/$T/zero_pp_rank_0_mp_rank_00_optim_states.pt stale/$T/zero_pp_rank_3_mp_rank_00_optim_states.pt
one_error "a stale extra rank" "run of 3 ranks, but the folder has optimizer states for 4" E stale
cp -r z2 mixed && cp bf/$T/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt mixed/$T/
one_error "two kinds of files" "two kinds .*bf16_zero_pp_rank" E mixed
cp -r z2 mp && cp mp/$T/zero_pp_rank_0_mp_rank_00_optim_states.pt mp/$T/zero_pp_rank_0_mp_rank_01_optim_states.pt
one_error "model parallel" "model-parallel DeepSpeed checkpoint" E mp
# model states from another run: param_shapes that do not match the partitions
make z3nf --stage 3 --world 4
cp -r z3 swap && cp z3nf/$T/zero_pp_rank_*_model_states.pt swap/$T/
one_error "ZeRO-3 shapes against partitions" "take [0-9]+ fp32 elements of each rank's partition, which holds [0-9]+" E swap
make z2g1 --stage 2 --world 3
cp -r z2 swap2 && cp z2g1/$T/mp_rank_00_model_states.pt swap2/$T/
one_error "ZeRO-2 group count" "2 fp32 groups, but the model states' param_shapes has 1" E swap2
# a damaged optimizer states file
cp -r z2 bad && head -c 3000 z2/$T/zero_pp_rank_2_mp_rank_00_optim_states.pt > bad/$T/zero_pp_rank_2_mp_rank_00_optim_states.pt
one_error "a truncated rank file" "zero_pp_rank_2_mp_rank_00_optim_states.pt" E bad
# ZeRO-3 model states without the optimizer states: the weights are not there
mkdir -p only/$T
cp z3/latest only/ && cp z3/$T/zero_pp_rank_0_mp_rank_00_model_states.pt "$FIX/config.json" only/$T/
one_error "ZeRO-3 model states alone" "DeepSpeed ZeRO-3 checkpoint .*optimizer states" E only
# a DeepSpeed folder as out_dir: neither resumed nor written into; the error says to start from its weights
cat > run.json <<'JSON'
{"out_dir": "z2", "data": "data", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32, "device": "cpu"}
JSON
one_error "--resume on a DeepSpeed folder" "DeepSpeed checkpoint folder .*cannot resume it.*init_from 'z2'" \
    "$ZGPT" train --config run.json --resume
one_error "a DeepSpeed folder as out_dir" "DeepSpeed checkpoint folder .*cannot write into it" \
    "$ZGPT" train --config run.json
# every rank of a run merges the checkpoint itself: the note is said once (a build without MPI skips this)
mkdir -p ids && cp val.bin ids/train.bin && cp val.bin ids/val.bin
cat > ds2.json <<'JSON'
{"out_dir": "ds2run", "data": "ids", "init_from": "z2", "block_size": 16, "train_batch_size": 4,
 "train_micro_batch_size_per_gpu": 2, "max_iters": 1, "eval_interval": 1, "eval_iters": 1, "log_interval": 1,
 "device": "cpu", "zero_optimization": {"stage": 1}}
JSON
if OMP_NUM_THREADS=1 "$ZGPT" train --config ds2.json --nproc 2 > ds2.log 2>&1; then
    n=$(grep -c "DeepSpeed ZeRO-2 checkpoint of 3 ranks" ds2.log || true)
    [ "$n" = 1 ] || fail "2 ranks from a DeepSpeed folder: the merge's note $n times (expected once): $(cat ds2.log)"
    grep -q "^iter 0: loss" ds2.log || fail "2 ranks from a DeepSpeed folder: no iteration: $(tail -5 ds2.log)"
    n=$(grep -c "note: init_from 'z2' is a DeepSpeed checkpoint: its weights are loaded, not its optimizer state" ds2.log || true)
    [ "$n" = 1 ] || fail "2 ranks from a DeepSpeed folder: the fresh optimizer said $n times (expected once): $(cat ds2.log)"
    echo "ok 2 ranks from a DeepSpeed folder: the merge's note once"
elif grep -q "needs MPI" ds2.log; then
    echo "skip 2 ranks from a DeepSpeed folder: this build has no MPI"
else
    fail "2 ranks from a DeepSpeed folder: $(tail -5 ds2.log)"
fi
echo "all DeepSpeed checkpoint checks passed"
