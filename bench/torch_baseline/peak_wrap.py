"""Runs a PyTorch peer script in this process and, when it ends, prints its peak of
torch.cuda.max_memory_allocated() to three decimals (the peer prints one: "maxmem 42.8 GiB" cannot tell
42.76 from 42.84, and the memory goals compare zgpt's peak with it).

    python3 bench/torch_baseline/peak_wrap.py .bench/torch_gpt2_baseline.py --layers 48 ... --B 8

The script runs as __main__ with its own arguments; nothing of it is changed."""
import runpy
import sys

import torch

if len(sys.argv) < 2:
    sys.exit("usage: peak_wrap.py SCRIPT [ARGS...]")
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    if torch.cuda.is_available():
        print(f"PEAK max_memory_allocated {torch.cuda.max_memory_allocated() / 2**30:.3f} GiB "
              f"({torch.cuda.max_memory_allocated()} bytes)", flush=True)
