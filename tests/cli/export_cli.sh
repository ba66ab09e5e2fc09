#!/usr/bin/env bash
# zgpt export: a Hugging Face folder that zgpt reads back with the same loss (fp32 exactly, bf16 close),
# fine-tuning from the exported folder, bad input.
TEST_NAME=export_cli
source "$(dirname "$0")/train_common.inc"
"$ZGPT" train --config tiny.json --set max_iters=3 > train.log
VAL=data/val_000000.bin
"$ZGPT" export --model out --out hf32 > x.log
[ -f hf32/model.safetensors ] && [ -f hf32/config.json ] || fail "export wrote $(ls hf32)"
grep -qE '"n_layer":[[:space:]]*1,' hf32/config.json || fail "config.json lacks n_layer: $(cat hf32/config.json)"
"$ZGPT" export --model out --out hf16 --dtype bf16 > /dev/null
ev() { "$ZGPT" eval --model "$1" --data $VAL --full --json --batch 8 | sed -E 's/.*"loss": ([^,]+),.*/\1/'; }
a=$(ev out); b=$(ev hf:hf32); c=$(ev hf16)
[ "$a" = "$b" ] || fail "fp32 export changes the loss: $a vs $b"
awk -v a="$a" -v c="$c" 'BEGIN { d = a - c; if (d < 0) d = -d; exit !(d < 0.01 * a) }' || fail "bf16 export: $c vs $a"
[ "$(stat -c %s hf16/model.safetensors)" -lt "$(stat -c %s hf32/model.safetensors)" ] || fail "bf16 file not smaller"
# fine-tune from the exported folder (continual learning from a HF model)
"$ZGPT" train --config tiny.json --set out_dir=ft --set init_from=hf:hf32 --set max_iters=1 --set eval_interval=1 > ft.log
grep -q "step 0: train loss" ft.log || fail "fine-tuning from hf:hf32 failed: $(cat ft.log)"
# a shorter block_size crops the position embeddings
"$ZGPT" train --config tiny.json --set out_dir=ft16 --set init_from=hf:hf32 --set block_size=16 --set max_iters=1 > ft16.log
grep -q "block_size 16" ft16.log || fail "block_size crop: $(cat ft16.log)"
expect_fail "bad dtype" "--dtype" "$ZGPT" export --model out --out x --dtype int8
expect_fail "missing model" "not found" "$ZGPT" export --model nope --out x
expect_fail "missing --out" "needs --model SRC and --out DIR" "$ZGPT" export --model out
echo "export_cli: ok"
