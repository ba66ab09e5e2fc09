#!/usr/bin/env python3
"""Checks zgpt's Hugging Face exports with transformers (run where torch + transformers exist).

usage: check_hf_export.py EXPORT_DIR [FIXTURE_DIR=tests/fixtures/hf_tiny]
EXPORT_DIR is written by test_gpt2_hf with ZGPT_HF_EXPORT_DIR set: fixture_{fp32,fp16,bf16}/ (the
HF fixture imported into zgpt and exported again), random_fp32/ (a zgpt-initialised model) and
random_logits.safetensors (zgpt's logits of the fixture inputs for it). Each folder must load with
GPT2LMHeadModel.from_pretrained with no missing or unexpected keys and give the logits expected:
fp32 to 1e-5 of the largest logit, fp16/bf16 within their rounding. Exits non-zero on a mismatch.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel


def logits_of(folder, inputs):
    model, info = GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    loaded_dtype = str(next(model.parameters()).dtype)
    model = model.float().eval()
    with torch.no_grad():
        return model(input_ids=inputs).logits, bad, loaded_dtype


def main():
    exp_dir = sys.argv[1]
    fix = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/hf_tiny"
    expected = load_file(os.path.join(fix, "expected.safetensors"))
    inputs = expected["inputs"].long()
    ref = expected["logits"]
    ok = True
    report = {}
    limits = {"fp32": 1e-5, "fp16": 5e-3, "bf16": 4e-2}
    for dt, lim in limits.items():
        got, bad, loaded_dtype = logits_of(os.path.join(exp_dir, "fixture_" + dt), inputs)
        err = (got - ref).abs().max().item() / ref.abs().max().item()
        report["fixture_" + dt] = {"max_rel_err": err, "limit": lim, "loading_problems": bad, "dtype": loaded_dtype}
        ok &= err <= lim and not bad
    zref = load_file(os.path.join(exp_dir, "random_logits.safetensors"))["logits"]
    got, bad, loaded_dtype = logits_of(os.path.join(exp_dir, "random_fp32"), inputs)
    err = (got - zref).abs().max().item() / zref.abs().max().item()
    report["random_fp32"] = {"max_rel_err": err, "limit": 1e-5, "loading_problems": bad, "dtype": loaded_dtype}
    ok &= err <= 1e-5 and not bad
    print(json.dumps(report, indent=1))
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
