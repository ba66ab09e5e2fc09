#!/usr/bin/env bash
# SIGTERM / SIGINT: the run saves a checkpoint at the next iteration boundary and exits cleanly; the
# checkpoint resumes.
TEST_NAME=train_signal
source "$(dirname "$0")/train_common.inc"

for sig in TERM INT; do
    out=run_$sig
    "$ZGPT" train --config tiny.json --set out_dir=$out --set max_iters=100000 --set eval_interval=100000 > $out.log 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        [ -f $out/metrics.jsonl ] && [ "$(grep -c '"loss"' $out/metrics.jsonl)" -ge 3 ] && break
        sleep 0.1
    done
    kill -$sig $pid
    rc=0
    wait $pid || rc=$?
    [ "$rc" -eq 0 ] || fail "SIG$sig: exit status $rc: $(cat $out.log)"
    grep -q "SIG$sig received: saving a checkpoint" $out.log || fail "SIG$sig: no message: $(cat $out.log)"
    tag=$(cat $out/latest)
    n=${tag#iter_}
    [ "$n" -ge 3 ] || fail "SIG$sig: latest is $tag"
    last=$(grep -c '"loss"' $out/metrics.jsonl)
    [ "$last" -eq "$n" ] || fail "SIG$sig: checkpoint $tag but $last training lines"
    "$ZGPT" train --config tiny.json --set out_dir=$out --set max_iters=$((n + 1)) --set eval_interval=100000 --resume > $out.2.log \
        || fail "SIG$sig: resume failed: $(cat $out.2.log)"
    grep -q "resuming at iter $n" $out.2.log || fail "SIG$sig: did not resume at $n"
    echo "ok SIG$sig: stopped at $tag and resumed"
done
echo "train_signal: ok"
