#!/usr/bin/env bash
# TensorBoard / CSV monitors: DeepSpeed's tensorboard and csv_monitor sections write event files and
# CSV series that an independent reader (tests/monitor/tb_read.py: TFRecord CRCs, protobuf decoded by
# hand) finds equal to metrics.jsonl; DeepSpeed's defaults; wandb; resume; bad values.
TEST_NAME=monitor_tb
source "$(dirname "$0")/train_common.inc"
READ="python3 $ZGPT_SRC/tests/monitor/tb_read.py"

# 1. --set of the section keys, log_interval 2, CSV under its own job name
"$ZGPT" train --config tiny.json --set log_interval=2 --set tensorboard.enabled=true --set tensorboard.output_path=tb \
    --set tensorboard.job_name=run1 --set csv_monitor.enabled=true --set csv_monitor.output_path=csv \
    --set csv_monitor.job_name=c1 > t1.log
ls tb/run1/events.out.tfevents.* > /dev/null || fail "no event file under tb/run1"
$READ tb/run1 out/metrics.jsonl 2 --csv csv/c1 || fail "event files / CSV differ from metrics.jsonl"
grep -qE "^iter 4: loss [0-9.]+, .*, eta [0-9]+s$" t1.log || fail "iteration line without ETA: $(grep '^iter 4' t1.log)"
# a damaged record is caught by the reader (so the check above can fail)
f=$(ls tb/run1/events.out.tfevents.*)
cp "$f" damaged.bin
printf '\x01' | dd of="$f" bs=1 seek=40 conv=notrunc status=none
$READ tb/run1 out/metrics.jsonl 2 > bad.txt && fail "the reader accepted a damaged event file"
grep -q "CRC" bad.txt || fail "damaged file: $(cat bad.txt)"
cp damaged.bin "$f"

# 2. a DeepSpeed file with only "enabled": output_path "" is the current folder, job DeepSpeedJobName
cat > ds.json <<'JSON'
{"train_micro_batch_size_per_gpu": 2, "tensorboard": {"enabled": true}, "csv_monitor": {"enabled": true, "output_path": ""}}
JSON
rm -rf out
"$ZGPT" train --config tiny.json --deepspeed ds.json > t2.log
ls DeepSpeedJobName/events.out.tfevents.* > /dev/null || fail "no event file in ./DeepSpeedJobName"
$READ DeepSpeedJobName out/metrics.jsonl 1 --csv DeepSpeedJobName || fail "DeepSpeed defaults"

# 3. resume: the event files and CSV series of both runs read as the one run metrics.jsonl describes
rm -rf out tb csv DeepSpeedJobName
MON=(--set tensorboard.enabled=true --set tensorboard.output_path=tb --set csv_monitor.enabled=true --set csv_monitor.output_path=csv)
"$ZGPT" train --config tiny.json --set max_iters=4 --set eval_interval=2 "${MON[@]}" > r1.log
# a run that went past its last checkpoint (iterations 4.. of this series are dropped on resume)
echo "5,99" >> csv/DeepSpeedJobName/train_loss.csv
sleep 1 # a new event file name (seconds in the name)
"$ZGPT" train --config tiny.json --set eval_interval=2 --resume "${MON[@]}" > r2.log
[ "$(ls tb/DeepSpeedJobName/ | wc -l)" -eq 2 ] || fail "expected one event file per run: $(ls tb/DeepSpeedJobName)"
$READ tb/DeepSpeedJobName out/metrics.jsonl 1 --csv csv/DeepSpeedJobName || fail "resumed run"
grep -q "^5,99" csv/DeepSpeedJobName/train_loss.csv && fail "stale CSV row kept after resume"

# 4. wandb: TensorBoard under out_dir/tensorboard/<run name> and the upload command
rm -rf out
"$ZGPT" train --config tiny.json --set wandb_log=true --set wandb_project=proj --set wandb_run_name=r7 > w.log
grep -qF "wandb sync --sync-tensorboard --project proj out/tensorboard/r7" w.log || fail "wandb line: $(grep wandb w.log)"
[ "$(grep -c wandb w.log)" -eq 1 ] || fail "expected one wandb line"
$READ out/tensorboard/r7 out/metrics.jsonl 1 || fail "wandb's TensorBoard output"
rm -rf out
cat > dsw.json <<'JSON'
{"wandb": {"enabled": true, "project": "p2", "team": "t2", "group": "g"}, "tensorboard": {"enabled": true, "output_path": "tbw"}}
JSON
"$ZGPT" train --config tiny.json --deepspeed dsw.json > w2.log
grep -qF "wandb sync --sync-tensorboard --project p2 --entity t2 tbw/DeepSpeedJobName" w2.log || fail "wandb + tensorboard: $(cat w2.log)"

# 5. bad values: one line naming the key
rm -rf out
touch afile
expect_fail "enabled not a bool" "tensorboard.enabled' has value \"maybe\"" "$ZGPT" train --config tiny.json \
    --deepspeed <(echo '{"tensorboard": {"enabled": "maybe"}}')
expect_fail "unknown monitor key" "unknown key 'csv_monitor.job'; did you mean 'csv_monitor.job_name'" \
    "$ZGPT" train --config tiny.json --set csv_monitor.job=x
expect_fail "output_path is a file" "tensorboard.output_path.*afile" "$ZGPT" train --config tiny.json \
    --set tensorboard.enabled=true --set tensorboard.output_path=afile
[ ! -e out/latest ] || fail "a failed setup left a checkpoint"
# 6. progress of long work when stderr is a log (plain lines; ZGPT_PROGRESS_INTERVAL=0 prints each update)
rm -rf out
ZGPT_PROGRESS_INTERVAL=0 "$ZGPT" train --config tiny.json --set max_iters=3 > p.log 2> p.err
grep -qE "^save out/iter_3/model.bin: .* \(100%\), .*/s, done in" p.err || fail "no checkpoint save progress: $(cat p.err)"
ZGPT_PROGRESS_INTERVAL=0 "$ZGPT" eval --model out --data data/val_000000.bin --full > /dev/null 2> pe.err
grep -qE "^load out/iter_3/model.bin: " pe.err || fail "no checkpoint load progress: $(cat pe.err)"
ZGPT_PROGRESS_INTERVAL=0 "$ZGPT" train --config tiny.json --set max_iters=4 --resume > pr.log 2> pr.err
# fp32 on the CPU: no master to load first; Adam's moments are read in the background (no progress
# line of their own), which the resume's timing lines report
grep -qE "^resume: the Adam moments \([0-9.]+ GB\) are read in the background" pr.log || fail "no optimizer-state load report: $(cat pr.log pr.err)"
grep -qE "^resume: parameters ready in [0-9.]+ s; optimizer state ready in" pr.log || fail "no optimizer-state timing: $(cat pr.log)"
grep -qE "^eval: [0-9]+ / [0-9]+ tokens \([0-9]+%\), [0-9.]+[MG]? tokens/s, ETA " pe.err || fail "no eval progress: $(cat pe.err)"
ZGPT_PROGRESS_INTERVAL=0 "$ZGPT" export --model out --out hfout > /dev/null 2> px.err
grep -qE "^write hfout/model.safetensors: .*done in" px.err || fail "no export progress: $(cat px.err)"
ZGPT_PROGRESS_INTERVAL=0 "$ZGPT" prepare --input corpus.txt --out data2 > /dev/null 2> pp.err
grep -qE "^prepare: .* / .*\(100%\).*done in" pp.err || fail "no prepare progress: $(cat pp.err)"
# without the override nothing short is printed into a log
"$ZGPT" eval --model out --data data/val_000000.bin --full > /dev/null 2> quiet.err
[ ! -s quiet.err ] || fail "progress lines for a short eval: $(cat quiet.err)"
echo "monitor_tb: ok"
