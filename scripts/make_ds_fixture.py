#!/usr/bin/env python3
"""Writes tests/fixtures/ds_real: checkpoints written by DeepSpeed itself (engine.save_checkpoint), for the reader
of ds_checkpoint.c, beside the fp32 weights DeepSpeed's own API reports for the same engine.

Run where torch, transformers and a GPU are (the device): DeepSpeed's Python sources on PYTHONPATH (a checkout's
deepspeed/ with op_builder/ and accelerator/ copied in for their symlinks; no build, no ops compiled):
    PYTHONPATH=DS_SRC python3 scripts/make_ds_fixture.py OUTDIR
Packages DeepSpeed imports but this run does not use (hjson, cpuinfo, psutil, msgpack, einops) are stood in for
when they are not installed, and the script says which.

A tiny GPT-2 (2 layers, n_embd 32, 2 heads, vocab 300, 32 positions; seed 5) is trained 3 steps (bf16, micro-batch
2, torch's AdamW in nanoGPT's two groups: 2-D weights decayed, the rest not), one process, then saved:
  s0/  bf16 at ZeRO stage 0: DeepSpeed's bf16 optimizer, no param_shapes (zgpt reads the module, with a note)
  s1/  ZeRO-1 (with bf16 DeepSpeed takes its bf16 optimizer: bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt)
  s2/  ZeRO-2
  s3/  ZeRO-3
each holding latest, global_step3/, config.json (the model's, for zgpt) and ref.safetensors: every parameter's fp32
master from deepspeed.utils.safe_get_full_fp32_param (the engine's own, not the checkpoint's), under the model's
names, lm_head left out (tied). ZeRO 1-3's fp32 weights are the masters; stage 0's module is their bf16 copy."""
import importlib
import json
import os
import shutil
import sys
import types


def stand_in(name, **attrs):
    try:
        importlib.import_module(name)
        return
    except Exception:
        pass
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    print(f"note: {name} is not installed; a stand-in is used (not needed by this run)", file=sys.stderr)


class _Mem:
    total, available, used, free, percent = 128 << 30, 100 << 30, 28 << 30, 100 << 30, 20.0


stand_in("hjson", load=lambda f, **k: json.load(f, **k), loads=lambda s, **k: json.loads(s, **k), dump=json.dump,
         dumps=json.dumps)
stand_in("cpuinfo", get_cpu_info=lambda: {"arch": "X86_64", "flags": ["avx2", "avx512f"], "vendor_id_raw": "x"})
stand_in("psutil", virtual_memory=lambda: _Mem(), swap_memory=lambda: _Mem(), cpu_count=lambda logical=True: 16)
stand_in("msgpack")
stand_in("einops")
for k, v in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517"), ("RANK", "0"), ("WORLD_SIZE", "1"),
             ("LOCAL_RANK", "0"), ("DS_ACCELERATOR", "cuda")):
    os.environ.setdefault(k, v)

import torch  # noqa: E402
import deepspeed  # noqa: E402
from deepspeed.utils import safe_get_full_fp32_param  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=300, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0,
                 attn_pdrop=0.0)
for stage in (0, 1, 2, 3):
    torch.manual_seed(5)
    model = GPT2LMHeadModel(cfg)
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for _, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=3e-3,
                            betas=(0.9, 0.95))
    ds_config = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
                 "zero_optimization": {"stage": stage}, "gradient_clipping": 1.0, "steps_per_print": 1000,
                 "zero_allow_untested_optimizer": True}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_config)
    g = torch.Generator().manual_seed(9)
    for step in range(3):
        x = torch.randint(0, cfg.vocab_size, (2, 32), generator=g).to(engine.device)
        loss = engine(x, labels=x).loss
        engine.backward(loss)
        engine.step()
        print(f"stage {stage} step {step} loss {loss.item():.5f}")
    d = os.path.join(out, f"s{stage}")
    engine.save_checkpoint(d, client_state={"iter_num": 3})
    ref = {}
    for name, p in engine.module.named_parameters():
        full = safe_get_full_fp32_param(p)
        if full is None:  # the bf16 optimizer at stage 0 keeps no per-parameter mapping: the module is the weights
            full = p.detach().float()
        ref[name] = full.detach().float().cpu().contiguous()
    save_file(ref, os.path.join(d, "ref.safetensors"), metadata={"format": "pt"})
    cfg.to_json_file(os.path.join(d, "config.json"))
    print(f"stage {stage}: {sorted(os.listdir(os.path.join(d, 'global_step3')))}")
    del engine, opt, model
    torch.cuda.empty_cache()
for junk in ("zero_to_fp32.py",):
    for stage in (0, 1, 2, 3):
        p = os.path.join(out, f"s{stage}", junk)
        if os.path.exists(p):
            os.remove(p)  # DeepSpeed's own script, copied beside each checkpoint; not a fixture
shutil.rmtree(os.path.join(out, "__pycache__"), ignore_errors=True)
