#!/usr/bin/env python3
"""Independent reader of zgpt's TensorBoard event files (python3 stdlib only).

Parses the TFRecord framing, checks both masked CRC32C of every record, decodes the Event / Summary
protobufs by hand (field numbers from TensorFlow's event.proto and summary.proto), and compares the
scalars with metrics.jsonl:

  tb_read.py RUN_DIR METRICS_JSONL LOG_INTERVAL [--csv CSV_DIR]

Every training line of metrics.jsonl whose iteration is a multiple of LOG_INTERVAL must have its
values under the train/* tags, every evaluation line under eval/*, and nothing else may be there.
A step written again (a resumed run) replaces the earlier value from that step on, as TensorBoard's
reader does. Exit 0 when everything agrees, 1 with the first difference."""
import glob
import json
import math
import os
import struct
import sys

TRAIN = {"train/loss": "loss", "train/lr": "lr", "train/grad_norm": "grad_norm", "train/loss_scale": "loss_scale",
         "train/tokens_per_sec": "tokens_per_sec", "train/mfu": "mfu", "train/peak_memory_bytes": "peak_memory_bytes"}
EVAL = {"eval/train_loss": "train_loss", "eval/val_loss": "val_loss"}


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    data = open(path, "rb").read()
    off = 0
    while off < len(data):
        if off + 12 > len(data):
            raise ValueError(f"{path}: truncated header at {off}")
        (n,) = struct.unpack_from("<Q", data, off)
        (hcrc,) = struct.unpack_from("<I", data, off + 8)
        if masked(crc32c(data[off:off + 8])) != hcrc:
            raise ValueError(f"{path}: bad length CRC at {off}")
        body = data[off + 12:off + 12 + n]
        if len(body) != n or off + 16 + n > len(data):
            raise ValueError(f"{path}: truncated record at {off}")
        (dcrc,) = struct.unpack_from("<I", data, off + 12 + n)
        if masked(crc32c(body)) != dcrc:
            raise ValueError(f"{path}: bad data CRC at {off}")
        yield body
        off += 16 + n


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return v, i


def fields(b):
    """(field number, wire type, value) of one message; values are ints or bytes."""
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        elif wt == 2:
            n, i = varint(b, i)
            v = b[i:i + n]
            i += n
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        else:
            raise ValueError(f"wire type {wt}")
        if i > len(b):
            raise ValueError("message overruns its buffer")
        yield f, wt, v


def read_run(run_dir):
    files = sorted(glob.glob(os.path.join(run_dir, "*tfevents*")))
    if not files:
        raise ValueError(f"no event files in {run_dir}")
    scalars, texts = {}, {}
    for path in files:
        first = True
        for rec in records(path):
            ev = {"step": 0}
            for f, wt, v in fields(rec):
                if f == 1 and wt == 1:
                    ev["wall_time"] = struct.unpack("<d", v)[0]
                elif f == 2 and wt == 0:
                    ev["step"] = v
                elif f == 3 and wt == 2:
                    ev["file_version"] = v.decode()
                elif f == 5 and wt == 2:
                    ev["summary"] = v
            if first and ev.get("file_version") != "brain.Event:2":
                raise ValueError(f"{path}: the first event is not file_version brain.Event:2")
            first = False
            if not (ev.get("wall_time", 0) > 1e9):
                raise ValueError(f"{path}: event without a plausible wall_time")
            for f, wt, val in fields(ev.get("summary", b"")):
                if f != 1:
                    continue
                tag, simple, plugin, strings = None, None, None, []
                for g, wt2, x in fields(val):
                    if g == 1:
                        tag = x.decode()
                    elif g == 2 and wt2 == 5:
                        simple = struct.unpack("<f", x)[0]
                    elif g == 9:
                        for h, _, pd in fields(x):
                            if h == 1:
                                plugin = dict((k, y) for k, _, y in fields(pd)).get(1, b"").decode()
                    elif g == 8:
                        tensor = list(fields(x))
                        if (1, 0, 7) not in tensor:
                            raise ValueError(f"{tag}: text tensor is not DT_STRING")
                        strings += [y.decode() for k, _, y in tensor if k == 8]
                step = ev["step"]
                if simple is not None:
                    series = scalars.setdefault(tag, [])
                    # a repeated or earlier step replaces the values from there on (TensorBoard's purge)
                    series[:] = [(s, v) for s, v in series if s < step]
                    series.append((step, simple))
                elif plugin == "text":
                    texts[tag] = strings
                else:
                    raise ValueError(f"value '{tag}' is neither a scalar nor text")
    return scalars, texts


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def close_f32(a, b):
    # metrics.jsonl holds 9 significant digits of a double; TensorBoard the float32 of that double
    return a == b or abs(a - b) <= 2.5e-7 * max(abs(a), abs(b))


def main():
    args = sys.argv[1:]
    csv_dir = None
    if "--csv" in args:
        k = args.index("--csv")
        csv_dir = args[k + 1]
        del args[k:k + 2]
    run_dir, metrics_path, log_interval = args[0], args[1], int(args[2])
    lines = [json.loads(l) for l in open(metrics_path) if l.strip()]
    want = {}
    for m in lines:
        tags = EVAL if "val_loss" in m else TRAIN
        if "val_loss" not in m and (m["iter"] % log_interval != 0 or m.get("loss") is None):
            if m.get("skipped") and m["iter"] % log_interval == 0:
                want.setdefault("train/loss_scale", []).append((m["iter"], m["loss_scale"]))
            continue
        for tag, key in tags.items():
            if key in m:
                want.setdefault(tag, []).append((m["iter"], m[key]))
    scalars, texts = read_run(run_dir)
    if "config" not in texts or not any("max_iters" in t for t in texts["config"]):
        print("FAIL: no 'config' text summary holding the config")
        return 1
    if set(scalars) != set(want):
        print(f"FAIL: tags {sorted(scalars)} != expected {sorted(want)}")
        return 1
    n = 0
    for tag, exp in want.items():
        got = scalars[tag]
        if [s for s, _ in got] != [s for s, _ in exp]:
            print(f"FAIL: {tag}: steps {[s for s, _ in got]} != metrics.jsonl {[s for s, _ in exp]}")
            return 1
        for (s, g), (_, e) in zip(got, exp):
            if not close_f32(g, f32(e)):
                print(f"FAIL: {tag} at step {s}: event file {g!r} != metrics.jsonl {e!r}")
                return 1
            n += 1
    if csv_dir is not None:
        for tag, exp in want.items():
            path = os.path.join(csv_dir, tag.replace("/", "_") + ".csv")
            rows = [l.rstrip("\n").split(",") for l in open(path)]
            if rows[0] != ["step", tag.split("/")[-1]]:
                print(f"FAIL: {path}: header {rows[0]}")
                return 1
            got = [(int(a), float(b)) for a, b in rows[1:]]
            if [s for s, _ in got] != [s for s, _ in exp] or not all(
                    math.isclose(g, e, rel_tol=1e-8) for (_, g), (_, e) in zip(got, exp)):
                print(f"FAIL: {path}: {got} != metrics.jsonl {exp}")
                return 1
    print(f"ok: {sum(1 for _ in glob.glob(os.path.join(run_dir, '*tfevents*')))} event file(s), {len(want)} tags, "
          f"{n} scalars equal to metrics.jsonl{', CSV too' if csv_dir else ''}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError, IndexError, KeyError) as e:
        print(f"FAIL: {e}")
        sys.exit(1)
