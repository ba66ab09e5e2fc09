"""PyTorch reference timings of causal attention (SDPA: flash / cuDNN backends) at the GPT-2 shapes
that gpu_test_ops_cuda --bench times, for the attention rows of docs/CUDA.md. Run on the same card,
in the same call. Prints median ms and TFLOP/s (causal FLOPs: fwd 2*B*NH*T^2*hs, bwd 2.5x).

`sdpa_bench.py xl16` (scripts/gpu_validate.sh phase attn): only GPT-2 XL's training shape (B=16, T=1024,
NH=25, hs=64, bf16) on the cuDNN backend, q, k, v as strided views of one packed (B, T, 3, NH, hs) tensor
(the layout zgpt's attention reads), and one line `SDPA cudnn xl16 fwd_ms F bwd_ms B` (medians after
warm-up, CUDA events; the backward is fwd+bwd minus fwd), `SDPA cudnn xl16 stream fwd_ms F bwd_ms B` (20 calls
back to back between two events, the backward alone over a retained forward graph: the GPU's time per call,
without the host's dispatch); then `SDPA cudnn-det xl16 ...` with
torch.use_deterministic_algorithms(True), or the reason torch refused it."""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn, reps=15, n=1):
    """Median ms per call of reps timings, each of n calls between one pair of CUDA events (after 3 warm-ups).
    n = 1 also counts the host's dispatch before the kernels start (Python, the cuDNN graph cache), which moves
    with the host's CPU; with the calls back to back (bench_stream) the host runs ahead of the GPU."""
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / n)
    ts.sort()
    return ts[len(ts) // 2]


def bench_stream(fn):
    """The GPU's time per call: 20 calls back to back, the median of 7 such timings."""
    return bench(fn, reps=7, n=20)


def xl16():
    B, T, NH, hs = 16, 1024, 25, 64
    qkv = torch.randn(B, T, 3, NH, hs, device="cuda", dtype=torch.bfloat16)
    q, k, v = (qkv[:, :, i].transpose(1, 2).detach().requires_grad_(True) for i in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        g = torch.randn_like(o)
        tf = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        # autograd.grad: the gradients are returned, not accumulated into .grad (no extra adds timed)
        tfb = bench(lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), g))
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    print(f"SDPA cudnn xl16 fwd_ms {tf:.4f} bwd_ms {tfb - tf:.4f}")
    # back to back, and the backward alone (one forward kept, its graph retained): no subtraction
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        sf = bench_stream(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        sb = bench_stream(lambda: torch.autograd.grad(o, (q, k, v), g, retain_graph=True))
    print(f"SDPA cudnn xl16 stream fwd_ms {sf:.4f} bwd_ms {sb:.4f}")
    # zgpt's backward must be deterministic (bitwise resume); is torch's? The same timing with
    # torch.use_deterministic_algorithms(True): either the same kernels (torch's default is deterministic),
    # slower ones (it was not), or a refusal (torch has no deterministic cuDNN attention backward)
    try:
        torch.use_deterministic_algorithms(True)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            tfd = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
            tfbd = bench(lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), g))
        print(f"SDPA cudnn-det xl16 fwd_ms {tfd:.4f} bwd_ms {tfbd - tfd:.4f}")
    except Exception as e:  # no deterministic implementation
        print(f"SDPA cudnn-det xl16 refused: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    finally:
        torch.use_deterministic_algorithms(False)


def main():
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    for name, B, T, NH, hs in [("124M", 16, 1024, 12, 64), ("XL", 16, 1024, 25, 64), ("XL", 8, 1024, 25, 64)]:
        q, k, v = (torch.randn(B, NH, T, hs, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        fl = 2.0 * B * NH * T * T * hs
        for be_name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
            try:
                with sdpa_kernel(be):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    g = torch.randn_like(o)
                    tf = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                    tfb = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g))
                tb = tfb - tf
                print(f"| torch SDPA {be_name} {name} B={B} | fwd {tf:.3f} ms {fl / tf / 1e9:.1f} TFLOP/s"
                      f" | bwd {tb:.3f} ms {2.5 * fl / tb / 1e9:.1f} TFLOP/s |")
            except Exception as e:  # a backend may be unavailable
                print(f"| torch SDPA {be_name} {name}: unavailable ({type(e).__name__}) |")


if __name__ == "__main__":
    if sys.argv[1:] == ["xl16"]:
        xl16()
    else:
        main()
