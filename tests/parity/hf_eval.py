#!/usr/bin/env python3
"""The mean next-token loss of a Hugging Face folder in transformers (fp32, TF32 off) over the windows
`zgpt eval --full --seq T` uses: window k has inputs tokens[kT .. kT+T-1] and targets
tokens[kT+1 .. kT+T] for every k with kT+T+1 <= n. Tokens: a header-less uint16 file (nanoGPT's .bin).
Prints: hf eval loss=2.123456789 tokens=N   (scripts/gpu_validate.sh, phase evalhf)

usage: hf_eval.py --model DIR --tokens FILE --seq T [--device cuda]"""
import argparse
import numpy as np
import torch
from transformers import GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument('--model', required=True)
p.add_argument('--tokens', required=True)
p.add_argument('--seq', type=int, required=True)
p.add_argument('--device', default='cuda')
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
