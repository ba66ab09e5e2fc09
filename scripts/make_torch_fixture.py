#!/usr/bin/env python3
"""Writes tests/fixtures/torch_tiny: the weights of tests/fixtures/hf_tiny as the torch.save files zgpt imports
(needs torch and transformers: run on the device, `python3 scripts/make_torch_fixture.py OUTDIR`):

  hf_bin/pytorch_model.bin + config.json   what transformers < 5's save_pretrained(safe_serialization=False)
                                           wrote: torch.save of the state dict, Conv1D layout, the tied
                                           lm_head.weight left out (transformers 5 writes safetensors only)
  hf_bin_sharded/                          the same state dict as transformers 4.x shards a .bin past its
                                           max_shard_size: pytorch_model-0000k-of-00002.bin +
                                           pytorch_model.bin.index.json (weight_map) + config.json
  nano/ckpt.pt                             a nanoGPT checkpoint: {"model": state dict in nn.Linear's (out, in)
                                           layout with "_orig_mod." prefixes (torch.compile), lm_head.weight the
                                           same tensor as wte, the causal-mask buffers; "optimizer": AdamW's state
                                           after one step; "model_args"; "iter_num"; "best_val_loss"; "config"}
  nano_nobias/ckpt.pt                      the same with nanoGPT's bias=False: no LayerNorm or Linear biases
                                           (model_args bias False; the other weights hf_tiny's)
  plain_bf16.bin                           torch.save of a bf16 state dict with "module." prefixes (a DeepSpeed /
                                           DDP model's, as zero_to_fp32-style tools write)
  noncontig.pt                             a state dict whose c_attn weight is a transposed view (refused)
  legacy.pt                                the pre-1.6 (not zip) format (refused)
Every file holds hf_tiny's values exactly (the bf16 one rounded to bf16)."""
import json
import os
import sys

import torch
from transformers import GPT2LMHeadModel

src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf_tiny")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
model = GPT2LMHeadModel.from_pretrained(src, torch_dtype=torch.float32)
cfg = model.config
conv = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
hf = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
os.makedirs(os.path.join(out, "hf_bin"), exist_ok=True)
cfg.to_json_file(os.path.join(out, "hf_bin", "config.json"))
torch.save(hf, os.path.join(out, "hf_bin", "pytorch_model.bin"))
sh = os.path.join(out, "hf_bin_sharded")
os.makedirs(sh, exist_ok=True)
cfg.to_json_file(os.path.join(sh, "config.json"))
keys = list(hf)
weight_map = {}
for k, part in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:])):
    name = f"pytorch_model-{k + 1:05d}-of-00002.bin"
    torch.save({n: hf[n] for n in part}, os.path.join(sh, name))
    weight_map.update({n: name for n in part})
with open(os.path.join(sh, "pytorch_model.bin.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": sum(v.numel() * v.element_size() for v in hf.values())},
               "weight_map": weight_map}, f, indent=2, sort_keys=True)
nano = {}
for k, v in hf.items():
    nano["_orig_mod." + k] = v.t().contiguous() if k.endswith(conv) else v.clone()
nano["_orig_mod.lm_head.weight"] = nano["_orig_mod.transformer.wte.weight"]  # tied: one storage
T = cfg.n_positions
for l in range(cfg.n_layer):
    nano[f"_orig_mod.transformer.h.{l}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
params = [torch.nn.Parameter(v.clone()) for v in hf.values()]
opt = torch.optim.AdamW(params, lr=1e-3)
for p in params:
    p.grad = torch.ones_like(p)
opt.step()
model_args = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.n_positions,
                  bias=True, vocab_size=cfg.vocab_size, dropout=0.0)
os.makedirs(os.path.join(out, "nano"), exist_ok=True)
torch.save({"model": nano, "optimizer": opt.state_dict(), "model_args": model_args, "iter_num": 5,
            "best_val_loss": torch.tensor(2.5), "config": {"out_dir": "out", "learning_rate": 6e-4, "compile": True,
                                                          "betas": (0.9, 0.95), "wandb_log": False, "note": None}},
           os.path.join(out, "nano", "ckpt.pt"))
os.makedirs(os.path.join(out, "nano_nobias"), exist_ok=True)
# every parameter bias goes; the causal-mask buffers (h.N.attn.bias) stay, as nanoGPT keeps them
nobias = {k: v for k, v in nano.items() if not k.endswith(".bias") or k.split(".")[-2] == "attn"}
torch.save({"model": nobias, "model_args": dict(model_args, bias=False), "iter_num": 5},
           os.path.join(out, "nano_nobias", "ckpt.pt"))
torch.save({"module." + k: v.to(torch.bfloat16) for k, v in hf.items()}, os.path.join(out, "plain_bf16.bin"))
bad = dict(hf)
key = "transformer.h.0.attn.c_attn.weight"
bad[key] = hf[key].t().contiguous().t()  # the same values, a transposed view of another layout
torch.save(bad, os.path.join(out, "noncontig.pt"))
torch.save(hf, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
print("wrote", sorted(os.listdir(out)), "torch", torch.__version__)
