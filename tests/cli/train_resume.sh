#!/usr/bin/env bash
# Resume continues exactly: 2N iterations straight == N + resume + N (same per-iteration losses in
# metrics.jsonl, byte-identical final weights); continual learning from a checkpoint's weights.
TEST_NAME=train_resume
source "$(dirname "$0")/train_common.inc"

"$ZGPT" train --config tiny.json --set out_dir=straight > straight.log
"$ZGPT" train --config tiny.json --set out_dir=split --set max_iters=3 > split1.log
[ "$(cat split/latest)" = "iter_3" ] || fail "latest should name iter_3, got $(cat split/latest)"
"$ZGPT" train --config tiny.json --set out_dir=split --resume > split2.log
grep -q "resuming at iter 3" split2.log || fail "resume did not start at iter 3: $(cat split2.log)"
losses straight/metrics.jsonl > a.txt
losses split/metrics.jsonl > b.txt
[ "$(wc -l < a.txt)" -eq 6 ] || fail "expected 6 training lines, got $(wc -l < a.txt)"
diff a.txt b.txt || fail "per-iteration losses differ between the straight and the resumed run"
cmp straight/final/model.bin split/final/model.bin || fail "final weights differ"
cmp straight/final/optim_*.bin split/final/optim_*.bin || fail "final optimizer state differs"
grep -q '"train_loss"' split/metrics.jsonl || fail "no evaluation lines in metrics.jsonl"
grep -q "^step 0: train loss [0-9.]*, val loss [0-9.]*$" straight.log || fail "no 'step 0' evaluation line"
grep -qE "^iter 2: loss [0-9.]+, time [0-9]+ ms, lr [0-9.e+-]+, tok/s [0-9]+" straight.log || fail "no iter line"
# loss fell
first=$(head -1 a.txt | cut -d' ' -f2); last=$(tail -1 a.txt | cut -d' ' -f2)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "loss did not fall ($first -> $last)"

# init_from resume is the same as --resume; a finished run resumed with more iterations goes on
"$ZGPT" train --config tiny.json --set out_dir=split --set init_from=resume --set max_iters=8 > split3.log
grep -q "resuming at iter 6" split3.log || fail "init_from resume did not resume: $(cat split3.log)"
[ "$(cat split/latest)" = "iter_8" ] || fail "latest should be iter_8"

# continual learning: weights from a checkpoint, fresh optimizer, new lr and out_dir
"$ZGPT" train --config tiny.json --set out_dir=cont --set init_from=straight/final --set learning_rate=0.001 \
    --set max_iters=2 --set eval_interval=2 > cont.log 2> cont.err
grep -q "step 0: train loss" cont.log || fail "continual run did not evaluate at 0"
grep -q "note: init_from 'straight/final' is a zgpt checkpoint: its weights are loaded, not its optimizer state.*use --resume" \
    cont.err || fail "the fresh optimizer is not said: $(cat cont.err)"
step=$(grep -oE '"optimizer_step":[[:space:]]*[0-9]+' cont/final/state.json | grep -oE '[0-9]+$')
[ "$step" = 2 ] || fail "continual learning should start a fresh optimizer (step 2, got $step)"
# the continued run starts from the trained weights: its first loss is far below a fresh model's
c0=$(losses cont/metrics.jsonl | head -1 | cut -d' ' -f2)
awk -v a="$first" -v b="$c0" 'BEGIN { exit !(b < a - 0.1) }' || fail "continual run did not start from the checkpoint ($c0 vs $first)"

# retention: keep_last_k iter_N folders plus best and final
"$ZGPT" train --config tiny.json --set out_dir=keep --set max_iters=6 --set eval_interval=1 --set keep_last_k=2 \
    --set always_save_checkpoint=true > keep.log
n=$(ls -d keep/iter_* | wc -l)
[ "$n" -eq 2 ] || fail "keep_last_k=2 left $n iter_N folders: $(ls keep)"
[ -f keep/best/manifest.json ] && [ -f keep/final/manifest.json ] || fail "best/final missing: $(ls keep)"
ls -a keep | grep -q partial && fail "a partial folder was left behind"
echo "train_resume: ok"
