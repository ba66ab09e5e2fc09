#!/usr/bin/env python3
"""The mean next-token loss of a Hugging Face folder in transformers (fp32, TF32 off) over the windows
`zgpt eval --full --seq T` uses: window k has inputs tokens[kT .. kT+T-1] and targets
tokens[kT+1 .. kT+T] for every k with kT+T+1 <= n. Tokens: a header-less uint16 file (nanoGPT's .bin).
Prints: hf eval loss=2.123456789 tokens=N   (scripts/gpu_validate.sh, phase evalhf)

With --save-sharded OUT, the model (as loaded) is also written to OUT by save_pretrained with
--max-shard-size (default 5MB): a sharded checkpoint (model.safetensors.index.json and its shards), which
`zgpt eval --model hf:OUT` must read to the same loss as the folder itself.

usage: hf_eval.py --model DIR --tokens FILE --seq T [--device cuda] [--save-sharded OUT [--max-shard-size S]]"""
import argparse
import numpy as np
import torch
from transformers import GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument('--model', required=True)
p.add_argument('--tokens', required=True)
p.add_argument('--seq', type=int, required=True)
p.add_argument('--device', default='cuda')
p.add_argument('--save-sharded')
p.add_argument('--max-shard-size', default='5MB')
a = p.parse_args()

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float32).to(a.device).eval()
tok = np.fromfile(a.tokens, dtype=np.uint16).astype(np.int64)
T, total, count = a.seq, 0.0, 0
with torch.no_grad():
    k = 0
    while k * T + T + 1 <= len(tok):
        w = torch.from_numpy(tok[k * T:k * T + T + 1]).to(a.device)
        logits = model(input_ids=w[None, :T]).logits[0].float()
        loss = torch.nn.functional.cross_entropy(logits, w[1:], reduction='sum')
        total += loss.double().item()
        count += T
        k += 1
print(f'hf eval loss={total / count:.9f} tokens={count}')
if a.save_sharded:
    model.to('cpu').save_pretrained(a.save_sharded, max_shard_size=a.max_shard_size, safe_serialization=True)
    print(f'hf saved sharded to {a.save_sharded} (max_shard_size {a.max_shard_size})')
