#!/usr/bin/env python3
"""transformers' `generate` timed on the GPU machine, the peer of `zgpt sample` (scripts/gpu_validate.sh,
phase gen).

Builds a random GPT2LMHeadModel of the given shape (default GPT-2 XL), saves it as a Hugging Face folder
(safetensors, fp32) for zgpt to load the same weights, then times model.generate (do_sample with top_k,
max_new_tokens = min_new_tokens = --new, so a drawn <|endoftext|> does not end it early) for each
dtype and batch size, the model load excluded (one short warm-up call first). Prints one line per run:
  hf generate dtype=fp32 B=1 new=512 seconds=11.2 tokens_per_s=45.7

usage: hf_generate.py --out DIR --prompt-ids "464 3616 286" [--B 1,8] [--new 512] [--top-k 200]
                      [--dtypes fp32,bf16] [--layers 48 --heads 25 --embd 1600]"""
import argparse, time
import torch
from transformers import GPT2Config, GPT2LMHeadModel

p = argparse.ArgumentParser()
p.add_argument('--out', required=True)
p.add_argument('--prompt-ids', required=True)
p.add_argument('--B', default='1,8')
p.add_argument('--new', type=int, default=512)
p.add_argument('--top-k', type=int, default=200)
p.add_argument('--dtypes', default='fp32,bf16')
p.add_argument('--layers', type=int, default=48)
p.add_argument('--heads', type=int, default=25)
p.add_argument('--embd', type=int, default=1600)
a = p.parse_args()

torch.manual_seed(0)
cfg = GPT2Config(n_layer=a.layers, n_head=a.heads, n_embd=a.embd, n_positions=1024, vocab_size=50257)
with torch.device('cuda'):
    model = GPT2LMHeadModel(cfg)
model.eval()
model.save_pretrained(a.out, safe_serialization=True, max_shard_size='20GB')  # one file: zgpt reads model.safetensors
print(f'saved {a.out}', flush=True)

prompt = [int(x) for x in a.prompt_ids.split()]
dtypes = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
for name in a.dtypes.split(','):
    m = model.to(dtypes[name])
    for B in [int(x) for x in a.B.split(',')]:
        ids = torch.tensor([prompt] * B, device='cuda')
        kw = dict(do_sample=True, top_k=a.top_k, temperature=0.8, pad_token_id=50256)
        with torch.no_grad():
            m.generate(ids, max_new_tokens=8, min_new_tokens=8, **kw)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = m.generate(ids, max_new_tokens=a.new, min_new_tokens=a.new, **kw)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        new = (out.shape[1] - len(prompt)) * B
        print(f'hf generate dtype={name} B={B} new={a.new} seconds={dt:.3f} tokens_per_s={new / dt:.1f}', flush=True)
