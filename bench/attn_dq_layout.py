#!/usr/bin/env python3
"""Where cuDNN's deterministic attention backward keeps dS in its workspace (docs/PERFORMANCE.md v0.27).

Input: the files gpu_test_ops_cuda's attention_dq_layout writes with ZG_DQ_DUMP=prefix (and ZG_DQ_SHAPE=B,T,C,NH):
prefix.<dtype>.ws (the workspace after the backward, float32, NaN where nothing was written) and prefix.<dtype>.ref
(the fp64 dS, (B, NH, T, T), the softmax scale applied). Prints, per candidate layout, the share of dS's lower
triangle found at the place the layout says (within 0.2% of max |dS|); the one zgpt's dQ kernel reads is `frag`.
Usage: attn_dq_layout.py prefix.fp16 B T NH   (numpy)
"""
import sys

import numpy as np


def frag(r, c):
    """position of (key r, query c) inside a 16x16 sub-tile stored as dS^T's mma A fragments (lane 4k+q: 8 values)"""
    return ((r % 8) * 4 + (c % 8) // 2) * 8 + ((r // 8) + 2 * (c // 8)) * 2 + (c % 2)


LAYOUTS = {
    "frag": lambda i, j, T: (j // 16) * 16 * T + (i // 16) * 256 + frag(j % 16, i % 16),
    "row-major": lambda i, j, T: i * T + j,
    "transposed": lambda i, j, T: j * T + i,
    "key panels of 64": lambda i, j, T: (j // 64) * T * 64 + i * 64 + j % 64,
    "64x64 tiles": lambda i, j, T: ((i // 64) * (T // 64) + j // 64) * 4096 + (i % 64) * 64 + j % 64,
}


def main():
    pre, B, T, NH = sys.argv[1], *map(int, sys.argv[2:5])
    ws = np.fromfile(pre + ".ws", dtype=np.float32).astype(np.float64)
    ref = np.fromfile(pre + ".ref").reshape(B, NH, T, T)
    I, J = np.nonzero(np.tril(np.ones((T, T), bool)))
    tol = 2e-3 * np.abs(ref).max()
    for base in (0, 64):  # elements before dS: none, or 128 bytes of 16-bit elements
        for name, off in LAYOUTS.items():
            ok = sum(np.sum(np.abs(ws[base + (b * NH + h) * T * T + off(I, J, T)] - ref[b, h, I, J]) <= tol)
                     for b in range(B) for h in range(NH))
            print(f"dS at {2 * base:3d} bytes, {name:18s}: {ok / (B * NH * len(I)):.4f} of the lower triangle")


if __name__ == "__main__":
    main()
