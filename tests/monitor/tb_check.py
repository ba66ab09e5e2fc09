#!/usr/bin/env python3
"""TensorBoard's own reader against metrics.jsonl (for the GPU machine, where tensorboard is installed):

  tb_check.py RUN_DIR METRICS_JSONL [LOG_INTERVAL]

Loads RUN_DIR with tensorboard's EventAccumulator and checks that every scalar tag holds the values
of metrics.jsonl (train/* at multiples of LOG_INTERVAL, eval/* at each evaluation) and that the
config text is there. Exit 0 when they agree, 1 otherwise."""
import json
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator, TENSORS

TRAIN = {"train/loss": "loss", "train/lr": "lr", "train/grad_norm": "grad_norm", "train/loss_scale": "loss_scale",
         "train/tokens_per_sec": "tokens_per_sec", "train/mfu": "mfu", "train/peak_memory_bytes": "peak_memory_bytes"}
EVAL = {"eval/train_loss": "train_loss", "eval/val_loss": "val_loss"}


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main():
    run_dir, metrics_path = sys.argv[1], sys.argv[2]
    log_interval = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    want = {}
    for line in open(metrics_path):
        if not line.strip():
            continue
        m = json.loads(line)
        is_eval = "val_loss" in m
        if not is_eval and m["iter"] % log_interval:
            continue
        # an fp16 step skipped on overflow logs only its (lowered) loss scale
        tags = EVAL if is_eval else {"train/loss_scale": "loss_scale"} if m.get("loss") is None else TRAIN
        for tag, key in tags.items():
            if key in m:
                want.setdefault(tag, []).append((m["iter"], m[key]))
    acc = EventAccumulator(run_dir, size_guidance={TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    bad = 0
    if set(tags["scalars"]) != set(want):
        print(f"FAIL: scalar tags {sorted(tags['scalars'])} != expected {sorted(want)}")
        bad = 1
    for tag, exp in want.items():
        if tag not in tags["scalars"]:
            continue
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        if [s for s, _ in got] != [s for s, _ in exp]:
            print(f"FAIL: {tag}: steps {[s for s, _ in got]} != {[s for s, _ in exp]}")
            bad = 1
            continue
        for (s, g), (_, e) in zip(got, exp):
            if not (g == f32(e) or abs(g - e) <= 2.5e-7 * max(abs(g), abs(e))):
                print(f"FAIL: {tag} step {s}: {g!r} != {e!r}")
                bad = 1
    if "config" not in tags.get("tensors", []):
        print(f"FAIL: no 'config' text summary (tensor tags: {tags.get('tensors')})")
        bad = 1
    else:
        text = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
        if "max_iters" not in text:
            print("FAIL: the config text lacks max_iters")
            bad = 1
    if not bad:
        print(f"ok: EventAccumulator read {len(want)} scalar tags equal to {metrics_path} and the config text")
    return bad


if __name__ == "__main__":
    sys.exit(main())
