#!/usr/bin/env bash
# zgpt plan: the guide's configuration (GPT-2 XL, 4 ranks, stage 2, micro-batch 1, fp16) against the
# ZeRO paper's 2Psi + 14Psi/N, uneven shards, JSON output, a config file, bad input.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

"$ZGPT" plan --model gpt2-xl --nproc 4 --stage 2 --micro-batch 1 --precision fp16 --json > "$tmp/p.json" || fail "plan --json"
python3 - "$tmp/p.json" <<'PY' || fail "plan numbers"
import json, sys
p = json.load(open(sys.argv[1]))
n, N = p["num_params"], p["nproc"]
assert n == 1557686400, n                      # GPT-2 XL with the padded vocabulary
assert p["stage"] == 2 and N == 4 and p["dtype"] == "fp16"
assert p["paper_model_state_bytes"] == 2 * n + 14 * n // 4
for r in p["ranks"]:
    assert r["params"] == 2 * n
    assert r["grad_shard"] == 2 * n // 4        # fp16 gradient shard
    assert r["optimizer"] == 12 * n // 4        # fp32 master + m + v of the shard
    assert r["params"] + r["grad_shard"] + r["optimizer"] == p["paper_model_state_bytes"]
    # no full gradient buffer: embeddings + ln_f + K layer buffers, K = min(48, ceil((layer + 3 bucket - 1) / layer));
    # the default bucket (5e8 elements) is lowered to the largest layer (30740800; zg_zero_opts_fit_model),
    # so K = 4: 4 of 48 layers instead of the whole gradient
    assert r["grads"] == 2 * (82128000 + 4 * 30740800), r
    assert r["grads"] < 2 * n // 6              # under a sixth of a full fp16 gradient buffer
    assert 0 < r["activations"] < 8 << 30
    assert r["total"] == sum(r[k] for k in ("params", "grads", "grad_shard", "optimizer", "comm", "activations"))
    assert r["checkpoint_snapshot"] == 12 * n // 4  # background saves: a host copy of the shard's master + m + v
assert p["checkpoint_bytes"] == 12 * n + 64 * 5  # 12 bytes per parameter: master + m + v; model.bin header only
PY
echo "ok GPT-2 XL, 4 ranks, stage 2: params + grad shard + optimizer == 2Psi + 14Psi/N; checkpoint 12 B/param"

# memory_efficient_layernorm: the residual stream is not kept per layer (2 buffers instead of 2L + 1),
# the same activations as recompute_layernorm; together they are refused.
for k in memory_efficient_layernorm recompute_layernorm; do
  echo "{\"init_from\": \"gpt2-xl\", \"train_micro_batch_size_per_gpu\": 1, \"fp16\": {\"enabled\": true}, \"$k\": true}" > "$tmp/$k.json"
  "$ZGPT" plan "$tmp/$k.json" --nproc 4 --stage 2 --json > "$tmp/$k.out" || fail "plan $k"
done
"$ZGPT" plan "$tmp/memory_efficient_layernorm.json" --nproc 4 --stage 2 | grep -q "activations: LayerNorm backward from output" \
  || fail "plan does not name memory_efficient_layernorm"
python3 - "$tmp/p.json" "$tmp/memory_efficient_layernorm.out" "$tmp/recompute_layernorm.out" <<'PY' || fail "memory_efficient_layernorm plan"
import json, sys
base, me, rl = (json.load(open(f))["ranks"][0]["activations"] for f in sys.argv[1:])
L, N, C = 48, 1024, 1600
assert base - me == (2 * L - 1) * N * C * 2, (base, me)
assert me == rl, (me, rl)
PY
echo '{"memory_efficient_layernorm": true, "recompute_layernorm": "ln1"}' > "$tmp/both.json"
if "$ZGPT" plan "$tmp/both.json" --model gpt2-xl > "$tmp/both.out" 2>&1; then fail "both LayerNorm savings accepted"; fi
grep -q "memory_efficient_layernorm" "$tmp/both.out" || fail "no message naming the key: $(cat "$tmp/both.out")"
echo "ok memory_efficient_layernorm: (2L - 1) x N x C fewer activation values, as recompute_layernorm; not both"

# lm_head_chunks: GPT-2 XL, micro-batch 8, bf16 on CUDA: auto runs the LM head in 2 chunks of 4096 rows, and the
# logits' region shrinks from 8192 x 50304 bf16 values to one chunk's logits or the backward's need, whichever is
# larger (its activation gradients 6 x 8192 x 1600 and cuDNN's workspace, estimated); 1 keeps every row's.
for k in 0 1; do
  echo "{\"init_from\": \"gpt2-xl\", \"train_micro_batch_size_per_gpu\": 8, \"bf16\": {\"enabled\": true}, \"lm_head_chunks\": $k}" > "$tmp/hc$k.json"
  "$ZGPT" plan "$tmp/hc$k.json" --json > "$tmp/hc$k.out" || fail "plan lm_head_chunks $k"
  "$ZGPT" plan "$tmp/hc$k.json" > "$tmp/hc$k.txt" || fail "plan lm_head_chunks $k (text)"
done
grep -q "LM head in 2 chunks of 4096 rows (lm_head_chunks 0, auto)" "$tmp/hc0.txt" || fail "plan does not print the chunks: $(cat "$tmp/hc0.txt")"
if grep -q "LM head in" "$tmp/hc1.txt"; then fail "lm_head_chunks 1 printed chunks"; fi
python3 - "$tmp/hc0.out" "$tmp/hc1.out" <<'PY' || fail "lm_head_chunks plan"
import json, sys
auto, whole = (json.load(open(f))["ranks"][0]["activations"] for f in sys.argv[1:])
N, C, V, NH, T = 8192, 1600, 50304, 25, 1024
need = 6 * N * C * 2 + 8 * NH * T * T * 2            # the gradients + dS at least
assert whole - auto >= N * V * 2 - need - (64 << 20), (whole, auto)
assert whole - auto <= N * V * 2 - need, (whole, auto)
PY
echo "ok lm_head_chunks: GPT-2 XL B=8 in 2 chunks, the logits' region down to the backward's need"

# Smaller buckets: stage 2 holds far less than a full gradient buffer; stage 3 holds far less than a
# full parameter copy (shard + embeddings + ln_f + 2 gathered layers).
cat > "$tmp/small.json" <<'JSON'
{"init_from": "gpt2-xl", "train_micro_batch_size_per_gpu": 1, "fp16": {"enabled": true},
 "zero_optimization": {"stage": 2, "reduce_bucket_size": 20000000, "allgather_bucket_size": 20000000}}
JSON
for st in 2 3; do
  "$ZGPT" plan "$tmp/small.json" --nproc 4 --stage $st --json > "$tmp/s$st.json" || fail "plan stage $st"
done
python3 - "$tmp/s2.json" "$tmp/s3.json" <<'PY' || fail "bucketed plan numbers"
import json, sys
layer, res = 30740800, 82128000            # GPT-2 XL: 12C^2 + 13C; wte + wpe + ln_f
for f in sys.argv[1:]:
    p = json.load(open(f))
    n, N = p["num_params"], p["nproc"]
    K = min(48, -(-(layer + 3 * 20000000 - 1) // layer))
    assert K == 3, K
    for r in p["ranks"]:
        assert r["grads"] == 2 * (res + K * layer), r
        assert r["grads"] < n                  # less than half of a full fp16 gradient buffer
        if p["stage"] == 3:
            assert r["params"] == 2 * (-(-n // N) + res + 2 * layer), r
            assert r["params"] < n             # less than half of a full fp16 parameter copy
        else:
            assert r["params"] == 2 * n
PY
echo "ok stage 2/3 with 2e7-element buckets: no full gradient buffer, no full parameter copy"

"$ZGPT" plan --model gpt2 --nproc 3 --stage 1 --device cpu --json > "$tmp/q.json" || fail "plan cpu"
python3 - "$tmp/q.json" <<'PY' || fail "uneven plan"
import json, sys
p = json.load(open(sys.argv[1]))
n, N = p["num_params"], p["nproc"]
S = -(-n // N)
sizes = [min(S, max(0, n - r * S)) for r in range(N)]
assert [r["optimizer"] for r in p["ranks"]] == [8 * s for s in sizes], (sizes, p["ranks"])
assert sum(sizes) == n
assert all(r["grad_shard"] == 0 and r["grads"] == 4 * n for r in p["ranks"])
PY
echo "ok uneven shards (n not divisible by 3)"

cat > "$tmp/cfg.json" <<'JSON'
{"init_from": "gpt2-xl", "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 32,
 "fp16": {"enabled": true}, "zero_optimization": {"stage": 2, "reduce_bucket_size": 200000000, "allgather_bucket_size": 200000000}}
JSON
"$ZGPT" plan "$tmp/cfg.json" --nproc 4 > "$tmp/out" || { cat "$tmp/out"; fail "plan CONFIG"; }
grep -q "4 ranks, ZeRO stage 2, fp16" "$tmp/out" || { cat "$tmp/out"; fail "config not applied"; }
# the config's bucket is read, and (above the largest layer) lowered to it, saying so
grep -q "reduce_bucket_size 200000000 lowered to 30740800" "$tmp/out" || { cat "$tmp/out"; fail "bucket size not applied"; }
grep -q "reduce 30740800, all-gather 200000000" "$tmp/out" || fail "all-gather bucket size not applied"

# the shipped guide configuration, DeepSpeed file unchanged: stage 2 and fp16 come from it
"$ZGPT" plan "$ZGPT_SRC/configs/gpt2xl_finetune.json" --deepspeed "$ZGPT_SRC/configs/ds_config_zero2.json" --nproc 4 \
    > "$tmp/guide" || { cat "$tmp/guide"; fail "plan --deepspeed"; }
grep -q "4 ranks, ZeRO stage 2, fp16" "$tmp/guide" || { cat "$tmp/guide"; fail "--deepspeed not applied"; }
"$ZGPT" plan --deepspeed "$ZGPT_SRC/configs/ds_config_zero2.json" > /dev/null 2> "$tmp/err" && fail "--deepspeed without CONFIG accepted"
grep -q "needs a training CONFIG" "$tmp/err" || fail "--deepspeed without CONFIG: $(cat "$tmp/err")"
grep -q "2Psi + 14Psi/N" "$tmp/out" || fail "paper formula missing"
echo "ok plan CONFIG --nproc 4"

"$ZGPT" plan --model gpt2 --nproc 0 2> "$tmp/err" && fail "--nproc 0 accepted"
grep -q "nproc" "$tmp/err" || fail "--nproc 0 message"
"$ZGPT" plan --model gpt2 --stage 5 2> "$tmp/err" && fail "--stage 5 accepted"
grep -q "stage" "$tmp/err" || fail "--stage 5 message"
echo "PASS dist_plan"
