"""PyTorch reference timings of causal attention (SDPA: flash / cuDNN backends) at the GPT-2 shapes
that gpu_test_ops_cuda --bench times, for the attention rows of docs/CUDA.md. Run on the same card,
in the same call. Prints median ms and TFLOP/s (causal FLOPs: fwd 2*B*NH*T^2*hs, bwd 2.5x)."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn, reps=15):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


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
    main()
