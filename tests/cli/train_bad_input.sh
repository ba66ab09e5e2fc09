#!/usr/bin/env bash
# Bad input to 'zgpt train': each case is a one-line error, a non-zero exit, and no damage to the last
# good checkpoint.
TEST_NAME=train_bad_input
source "$(dirname "$0")/train_common.inc"

expect_fail "key typo" "unknown key 'max_iter'; did you mean 'max_iters'" \
    "$ZGPT" train --config tiny.json --set max_iter=3
echo '{"out_dir": "o", "data": "data", "lerning_rate": 0.1}' > typo.json
expect_fail "key typo in file" "typo.json.*'lerning_rate'.*'learning_rate'" "$ZGPT" train --config typo.json
expect_fail "wrong type" "max_iters.*abc" "$ZGPT" train --config tiny.json --set max_iters=abc
echo '{"train_batch_size": 10, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2}' > ds.json
expect_fail "inconsistent batch" "train_batch_size 10 != train_micro_batch_size_per_gpu 4" \
    "$ZGPT" train --config tiny.json --set batch_size=4 --deepspeed ds.json
echo '{"gradient_accumulation_steps": 3}' > ds2.json
expect_fail "DeepSpeed file disagrees" "gradient_accumulation_steps.*agree" \
    "$ZGPT" train --config tiny.json --deepspeed ds2.json
echo '{"out_dir": "o",' > broken.json
expect_fail "invalid JSON" "broken.json.*invalid JSON" "$ZGPT" train --config broken.json
expect_fail "missing config" "cannot open.*nope.json" "$ZGPT" train --config nope.json
expect_fail "data shorter than block_size+1" "data" \
    "$ZGPT" train --config tiny.json --set block_size=8192 --set out_dir=o_short
[ ! -e o_short/latest ] || fail "a failed start wrote a checkpoint"
expect_fail "missing data" "no_such_data" "$ZGPT" train --config tiny.json --set data=no_such_data --set out_dir=o_nd
expect_fail "nothing to resume" "nothing to resume" "$ZGPT" train --config tiny.json --set out_dir=empty --resume
expect_fail "bad --nproc" "--nproc 0: must be >= 1" "$ZGPT" train --config tiny.json --nproc 0
expect_fail "bad --gpus" "--gpus" "$ZGPT" train --config tiny.json --gpus 0
ZGPT_STEP_GRAPH=yes expect_fail "bad ZGPT_STEP_GRAPH" "ZGPT_STEP_GRAPH=yes: use 1 .* or 0" \
    "$ZGPT" train --config tiny.json --set out_dir=o_sg --set max_iters=2
mkdir -p models
ZGPT_MODELS=$PWD/models HF_HUB_OFFLINE=1 HF_HUB_CACHE=$PWD/hub expect_fail "named model without files" \
    "gpt2 weights are not in .*models/gpt2; .*hub/models--openai-community--gpt2 \(main\); .*hub/models--gpt2 \(main\); HF_HUB_OFFLINE is set.*zgpt download gpt2" \
    "$ZGPT" train --config tiny.json --set init_from=gpt2 --set out_dir=o_named

# a good run to damage
"$ZGPT" train --config tiny.json --set max_iters=3 > good.log
[ "$(cat out/latest)" = iter_3 ] || fail "setup run did not save iter_3"
expect_fail "out_dir already used" "already holds a run.*--resume" "$ZGPT" train --config tiny.json
expect_fail "shape differs" "n_layer=1 but the config says n_layer=2" \
    "$ZGPT" train --config tiny.json --set n_layer=2 --resume

# NaN loss: stop with advice, keep iter_3 as latest and intact
ZGPT_TEST_NAN_AT_ITER=4 expect_fail "NaN loss" "nan at iter 4.*learning rate.*out/iter_3 is untouched" \
    "$ZGPT" train --config tiny.json --set max_iters=6 --resume
[ "$(cat out/latest)" = iter_3 ] || fail "latest moved after the NaN"
# full disk in the middle of the next checkpoint (the first ~20 MB checkpoint fits, the second does not)
ZGPT_TEST_FAIL_WRITE_AFTER=9000000 expect_fail "disk full" "out/iter_3 is intact.*No space left on device" \
    "$ZGPT" train --config tiny.json --set max_iters=6 --resume
[ "$(cat out/latest)" = iter_3 ] || fail "latest moved after the failed save"
[ ! -e out/iter_6 ] || fail "a half-written iter_6 exists"
ls -a out | grep -q partial && fail "a partial folder was left behind: $(ls -a out)"
ls out/iter_3 | grep -q tmp && fail "temporary files left in iter_3"
# the last good checkpoint still resumes
"$ZGPT" train --config tiny.json --set max_iters=4 --set eval_interval=4 --resume > again.log || fail "resume after failures"
grep -q "resuming at iter 3" again.log || fail "did not resume from iter_3"

# corrupt checkpoints
cp -r out/iter_4 c1
printf '\x01' | dd of=c1/model.bin bs=1 seek=1000 conv=notrunc status=none
expect_fail "checksum mismatch" "c1/model.bin.*checksum" "$ZGPT" train --config tiny.json --set init_from=c1 --set out_dir=o_c1
cp -r out/iter_4 c2
truncate -s 1000 c2/optim_*.bin
expect_fail "truncated checkpoint" "c2/optim_.*bytes.*manifest says" "$ZGPT" train --config tiny.json --set init_from=c2 --set out_dir=o_c2
cp -r out/iter_4 c3
rm c3/manifest.json
expect_fail "no manifest" "c3.*neither a zgpt checkpoint" "$ZGPT" train --config tiny.json --set init_from=c3 --set out_dir=o_c3
cp -r out/iter_4 c4
echo '{"format": "zgpt-checkpoint", "version": 1, "files": [' > c4/manifest.json
expect_fail "corrupt manifest" "c4/manifest.json.*corrupt" "$ZGPT" train --config tiny.json --set init_from=c4 --set out_dir=o_c4
# the damaged copies never touched the original
"$ZGPT" train --config tiny.json --set max_iters=5 --set eval_interval=5 --resume > again2.log || fail "resume from iter_4"
echo "train_bad_input: ok"
