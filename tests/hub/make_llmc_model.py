#!/usr/bin/env python3
"""Writes a safetensors GPT-2 (Hugging Face's Conv1D layout) as llm.c's model file, as llm.c's train_gpt2.py
write_model does (python3 stdlib, no torch):

  make_llmc_model.py MODEL.safetensors CONFIG.json OUT.bin [--dtype float32|bfloat16] [--version N]

header: int32[256] = 20240326, version (3 fp32, 5 bf16), block_size, vocab_size, n_layer, n_head, n_embd, padded
vocab (a multiple of 128); then wte padded with zero rows, wpe, and each per-layer tensor stacked over the layers
in write_tensors' order, in nn.Linear's (out, in) layout (the Conv1D weights transposed). bf16 rounds to nearest
even, as torch's .to(torch.bfloat16). --version writes another header version (for the refusal tests)."""
import argparse
import json
import struct


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for k, v in header.items():
        assert v["dtype"] == "F32", k
        b, e = v["data_offsets"]
        vals = struct.unpack(f"<{(e - b) // 4}f", data[8 + n + b:8 + n + e])
        out[k if k.startswith("transformer.") else "transformer." + k] = (v["shape"], list(vals))
    return out


def transpose(shape, vals):
    r, c = shape
    return [c, r], [vals[i * c + j] for j in range(c) for i in range(r)]


def bf16(x):
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--version", type=int, default=None)
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    t = read_safetensors(a.model)
    L, V, C = cfg["n_layer"], cfg["vocab_size"], cfg["n_embd"]
    for k in list(t):
        if k.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")):
            t[k] = transpose(*t[k])
    Vp = (V + 127) // 128 * 128
    shape, wte = t["transformer.wte.weight"]
    t["transformer.wte.weight"] = ([Vp, C], wte + [0.0] * ((Vp - V) * C))
    order = ["transformer.wte.weight", "transformer.wpe.weight"]
    for name in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias"):
        order += [f"transformer.h.{i}.{name}" for i in range(L)]
    order += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    version = a.version if a.version is not None else (3 if a.dtype == "float32" else 5)
    header = [20240326, version, cfg["n_positions"], V, L, cfg["n_head"], C, Vp] + [0] * 248
    with open(a.out, "wb") as f:
        f.write(struct.pack("<256i", *header))
        for k in order:
            vals = t[k][1]
            if a.dtype == "float32":
                f.write(struct.pack(f"<{len(vals)}f", *vals))
            else:
                f.write(struct.pack(f"<{len(vals)}H", *[bf16(x) for x in vals]))


if __name__ == "__main__":
    main()
