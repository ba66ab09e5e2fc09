#!/usr/bin/env python3
"""Splits a safetensors file into a sharded checkpoint the way transformers' save_pretrained does when the
weights exceed max_shard_size (python3 stdlib only), for zgpt's hub tests:

  shard_safetensors.py IN.safetensors OUTDIR --shards N

writes OUTDIR/model-0000k-of-0000N.safetensors (the tensors in file order, about the same bytes in each) and
OUTDIR/model.safetensors.index.json {"metadata": {"total_size": bytes}, "weight_map": {name: shard}}."""
import argparse
import json
import os
import struct


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    meta = header.pop("__metadata__", None)
    tensors = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return meta, [(k, v["dtype"], v["shape"], data[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
                  for k, v in tensors]


def write(path, tensors):
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for t in tensors:
            f.write(t[3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=2)
    a = ap.parse_args()
    _, tensors = read(a.src)
    total = sum(len(t[3]) for t in tensors)
    os.makedirs(a.out, exist_ok=True)
    shards, cur, size = [], [], 0
    for t in tensors:  # a new shard once this one holds its share of the bytes
        if cur and size + len(t[3]) > total / a.shards and len(shards) < a.shards - 1:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += len(t[3])
    shards.append(cur)
    n = len(shards)
    weight_map = {}
    for k, sh in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        write(os.path.join(a.out, name), sh)
        weight_map.update({t[0]: name for t in sh})
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
