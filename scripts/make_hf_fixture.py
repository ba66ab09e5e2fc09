#!/usr/bin/env python3
"""Writes tests/fixtures/hf_tiny/: a small random GPT-2 in Hugging Face format and what
transformers computes with it, so tests/unit/test_gpt2_hf.c can hold zgpt to HF exactly.

Needs torch, transformers and safetensors (run it on the device machine). Output folder (argv[1],
default tests/fixtures/hf_tiny):
  model.safetensors, config.json   GPT2LMHeadModel.save_pretrained (fp32)
  grads.safetensors                d loss / d parameter under the same keys and layouts as
                                   model.safetensors (Conv1D (in, out)); wte holds both the
                                   embedding and the tied LM-head gradient
  expected.safetensors             inputs, targets (int32, (B, T); target -1 = ignored),
                                   logits (B, T, V) fp32, loss (1,), adamw_losses (10,)
The model is deliberately non-trivial: LayerNorm weights 1 + N(0, 0.1), biases N(0, 0.05),
weights N(0, 0.08) so attention is far from uniform.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

B, T = 2, 16
VOCAB, N_POS, N_EMBD, N_LAYER, N_HEAD = 500, 32, 64, 2, 4
ADAM_STEPS = 10


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/hf_tiny"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1234)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=N_POS, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    try:  # eager attention: the plain softmax(QK^T/sqrt(hs))V reference
        model = GPT2LMHeadModel(cfg, attn_implementation="eager").float()
    except (TypeError, ValueError):
        model = GPT2LMHeadModel(cfg).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.05 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    model.eval()  # no dropout anyway (p = 0); eval keeps it explicit
    model.save_pretrained(out, safe_serialization=True)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)

    g = torch.Generator().manual_seed(99)
    inputs = torch.randint(0, VOCAB, (B, T), generator=g, dtype=torch.int64)
    targets = torch.randint(0, VOCAB, (B, T), generator=g, dtype=torch.int64)
    targets[1, 5] = -1  # an ignored position

    def loss_of(m):
        logits = m(input_ids=inputs).logits
        return logits, F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-1)

    logits, loss = loss_of(model)
    model.zero_grad()
    loss.backward()
    grads = {}
    state_keys = set(model.state_dict().keys())
    for name, p in model.named_parameters():
        if name.startswith("lm_head"):
            continue
        assert name in state_keys, name
        grads[name] = p.grad.detach().clone().contiguous()
    save_file(grads, os.path.join(out, "grads.safetensors"), metadata={"format": "pt"})

    # AdamW as zgpt configures it: decay on 2-D matrices except wpe; same batch every step.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "wpe" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    losses = []
    for _ in range(ADAM_STEPS):
        opt.zero_grad(set_to_none=True)
        _, l = loss_of(model)
        l.backward()
        opt.step()
        losses.append(l.item())

    expected = {
        "inputs": inputs.to(torch.int32).contiguous(),
        "targets": targets.to(torch.int32).contiguous(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().reshape(1).float(),
        "adamw_losses": torch.tensor(losses, dtype=torch.float32),
    }
    save_file(expected, os.path.join(out, "expected.safetensors"), metadata={"format": "pt"})
    print(json.dumps({"loss": loss.item(), "adamw_losses": losses}))
    for f in sorted(os.listdir(out)):
        print(f, os.path.getsize(os.path.join(out, f)))


if __name__ == "__main__":
    main()
