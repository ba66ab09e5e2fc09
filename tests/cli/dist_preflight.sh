#!/usr/bin/env bash
# The launcher's checks before it starts the workers (zg_train_preflight, zg_launch_opts.preflight): under
# --nproc N a mistake every rank would make is said once, in one message, and no worker starts:
#  - a config error: one 'zgpt: error' line block, not one per rank plus the launcher's failure report; the
#    config's problems and a malformed environment variable in the same message;
#  - several problems that depend on the launch (the batch for N processes, a missing data path, out_dir
#    against --resume, a malformed ZGPT_REDUCE_CARRY / ZGPT_OFFLOAD_STEP) in one message that counts them;
#  - --resume with nothing to resume, and a fresh run into an out_dir that holds one;
#  - the same through the forked launcher (ZGPT_LAUNCH_FORK_TEST);
#  - the workers' stdin is /dev/null: a run inside `while read ...; done < list` leaves the list alone;
#  - init_from a hub repo (tests/hub/fake_hub.py on 127.0.0.1): downloaded once, by the launcher, before the
#    workers start; an unreachable hub is said once.
# And a DeepSpeed config giving all three batch keys for its launch (train_batch_size = micro-batch x
# accumulation x processes) loads and trains on 2 ranks, `zgpt plan` takes it (without --nproc: for the 2
# processes it implies), and one or three processes refuse it naming their count.
TEST_NAME=dist_preflight
source "$(dirname "$0")/dist_common.inc"
N2=(--nproc 2)

# one_error NAME PATTERN CMD...: expect_fail, and nothing from a rank (no worker started)
one_error() {
    local name=$1 pat=$2
    shift 2
    expect_fail "$name" "$pat" "$@" > /dev/null
    if grep -qE "rank [0-9]|zgpt\[rank" err.txt out.txt; then fail "$name: a worker ran: $(cat err.txt)"; fi
    grep -q "^training:" out.txt && fail "$name: training started: $(cat out.txt)"
    echo "ok $name: $(head -1 err.txt)"
}

one_error "bad key, 2 ranks" "unknown key 'bogus_key'" \
    "$ZGPT" train --config d.json --set out_dir=p1 --set bogus_key=1 "${N2[@]}"
one_error "nothing to resume, 2 ranks" "nothing to resume in out_dir 'p2'" \
    "$ZGPT" train --config d.json --set out_dir=p2 --resume "${N2[@]}"

# all three batch keys for 2 processes: 8 = 2 x 2 x 2
B3=(--set train_batch_size=8 --set train_micro_batch_size_per_gpu=2 --set gradient_accumulation_steps=2)
timeout 300 "$ZGPT" train --config d.json --set out_dir=b3 --set max_iters=2 "${B3[@]}" "${N2[@]}" > b3.log 2> b3.err ||
    fail "three batch keys, 2 ranks: $(tail -3 b3.err b3.log)"
grep -q "micro-batch 2 x accumulation 2 x 2 ranks" b3.log || fail "three batch keys: banner: $(grep training: b3.log)"
# five problems at once, 3 ranks: each named, counted in one message
ZGPT_REDUCE_CARRY=maybe ZGPT_OFFLOAD_STEP=v13 one_error "five problems, 3 ranks" "5 problems before starting 3 workers" \
    "$ZGPT" train --config d.json --set out_dir=b3 --set data=no_such_data \
    --set train_batch_size=12 --set train_micro_batch_size_per_gpu=3 --nproc 3
for pat in "train_batch_size 12 is not divisible by train_micro_batch_size_per_gpu 3 x 3 process" \
    "data path 'no_such_data' does not exist" "out_dir 'b3' already holds a run" \
    "ZGPT_REDUCE_CARRY=maybe" 'ZGPT_OFFLOAD_STEP is "v13"'; do
    grep -qF -- "$pat" err.txt || fail "five problems: '$pat' not said: $(cat err.txt)"
done
[ "$(wc -l < err.txt)" -eq 6 ] || fail "five problems: expected 6 lines: $(cat err.txt)"
[ ! -e no_such_data ] || fail "five problems: something created no_such_data"

# the config's own problems and the environment's in the same message (two config problems, one variable)
ZGPT_OFFLOAD_STEP=v13 one_error "config and environment, 2 ranks" "3 problems before starting 2 workers" \
    "$ZGPT" train --config d.json --set out_dir=p4 --set bogus_key=1 --set max_iters=-5 "${N2[@]}"
for pat in "unknown key 'bogus_key'" "max_iters" 'ZGPT_OFFLOAD_STEP is "v13"'; do
    grep -qF -- "$pat" err.txt || fail "config and environment: '$pat' not said: $(cat err.txt)"
done
[ "$(wc -l < err.txt)" -eq 4 ] || fail "config and environment: expected 4 lines: $(cat err.txt)"

# the forked launcher's path checks too
ZGPT_LAUNCH_FORK_TEST=2 one_error "forked launcher" "ZGPT_REDUCE_CARRY=2" \
    env ZGPT_REDUCE_CARRY=2 "$ZGPT" train --config d.json --set out_dir=p3

one_error "out_dir holds a run, 2 ranks" "out_dir 'b3' already holds a run" \
    "$ZGPT" train --config d.json --set out_dir=b3 "${B3[@]}" "${N2[@]}"
sed 's/"train_batch_size": 8,/"train_batch_size": 8, "gradient_accumulation_steps": 2,/' d.json > d3.json
"$ZGPT" plan d3.json --nproc 2 > plan.txt 2>&1 || fail "plan of three batch keys, 2 ranks: $(cat plan.txt)"
"$ZGPT" plan d3.json > plan0.txt 2>&1 || fail "plan of three batch keys without --nproc: $(cat plan0.txt)"
grep -q "^  2 ranks," plan0.txt || fail "plan without --nproc: not the 2 ranks the batch keys imply: $(head -3 plan0.txt)"
expect_fail "plan, three batch keys, --nproc 3" "train_batch_size 8 != .* x 3 process" "$ZGPT" plan d3.json --nproc 3 > /dev/null
expect_fail "three batch keys, 1 process" "train_batch_size 8 != .* x 1 process" \
    "$ZGPT" train --config d.json --set out_dir=b1 "${B3[@]}" > /dev/null
expect_fail "three batch keys, 3 processes" "train_batch_size 8 != .* x 3 process" \
    "$ZGPT" train --config d.json --set out_dir=b1 "${B3[@]}" --nproc 3 > /dev/null
# the workers get no stdin: a caller's list read line by line survives a run (mpirun would read it all)
printf 'first\nsecond\n' > list.txt
( timeout 300 "$ZGPT" train --config d.json --set out_dir=stdin --set max_iters=1 "${N2[@]}" > stdin.log 2>&1 ||
      fail "stdin run: $(tail -3 stdin.log)"
  cat > rest.txt ) < list.txt
[ "$(cat rest.txt)" = "$(printf 'first\nsecond')" ] || fail "a --nproc run consumed its caller's stdin: '$(cat rest.txt)'"
echo "ok stdin left to the caller"
# init_from a hub repo: the launcher downloads it once (the fake hub of tests/hub, on 127.0.0.1), then the
# workers read the cache; with the hub unreachable the launcher says so once and starts nothing
if "$ZGPT" --version | grep -q "libcurl  not compiled in"; then
    echo "SKIP hub part: no libcurl"
else
    timeout 300 python3 "$ZGPT_SRC/tests/hub/fake_hub.py" --repo "org/tiny=$ZGPT_SRC/tests/fixtures/hf_tiny" \
        --port-file port --log hub.log > /dev/null &
    hub=$!
    trap 'kill $hub 2>/dev/null || true; rm -rf "$WORK"' EXIT
    for _ in $(seq 100); do [ -s port ] && break; sleep 0.1; done
    [ -s port ] || fail "the fake hub did not start"
    H=(env HF_HOME="$WORK/hf" ZGPT_MODELS="$WORK/models" HF_ENDPOINT="http://127.0.0.1:$(cat port)")
    python3 -c "
import random, struct
random.seed(5)
import os
os.makedirs('ids', exist_ok=True)
for split in ('train', 'val'):
    open('ids/%s.bin' % split, 'wb').write(struct.pack('<4000H', *[random.randrange(500) for _ in range(4000)]))"
    cat > hub.json <<'JSON'
{"data": "ids", "init_from": "org/tiny", "block_size": 16, "train_batch_size": 4, "train_micro_batch_size_per_gpu": 2,
 "max_iters": 2, "eval_interval": 2, "eval_iters": 1, "log_interval": 1, "device": "cpu",
 "zero_optimization": {"stage": 2}}
JSON
    # an mpirun that notes whether the weights were in the cache when it started (the launcher's download)
    cat > mpirun_probe.sh <<PROBE
#!/usr/bin/env bash
if [ -n "\$(find "$WORK/hf" -name model.safetensors 2>/dev/null)" ]; then touch "$WORK/cached_at_launch"; fi
exec "${ZGPT_MPIRUN:-mpirun}" "\$@"
PROBE
    chmod +x mpirun_probe.sh
    "${H[@]}" ZGPT_MPIRUN="$WORK/mpirun_probe.sh" timeout 300 "$ZGPT" train --config hub.json --set out_dir=hub \
        "${N2[@]}" > hub_run.log 2>&1 || fail "init_from org/tiny, 2 ranks: $(tail -5 hub_run.log)"
    [ -e cached_at_launch ] || fail "init_from org/tiny: the weights were not in the cache when mpirun started"
    grep -q '^iter 1: loss' hub_run.log || fail "init_from org/tiny: no second iteration: $(tail -3 hub_run.log)"
    gets=$(grep -c "^GET /cdn/" hub.log || true)
    [ "$gets" = 1 ] || fail "the weights were fetched $gets times (expected once, by the launcher): $(cat hub.log)"
    echo "ok init_from org/tiny on 2 ranks: one download ($(grep -c . hub.log) requests)"
    kill $hub 2>/dev/null || true
    wait $hub 2>/dev/null || true
    one_error "hub unreachable, 2 ranks" "init_from 'org/tiny'.*cannot reach" \
        "${H[@]}" HF_HOME="$WORK/hf2" "$ZGPT" train --config hub.json --set out_dir=hub2 "${N2[@]}"
fi
echo "dist_preflight: ok"
