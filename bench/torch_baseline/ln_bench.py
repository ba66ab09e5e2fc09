"""PyTorch's LayerNorm at GPT-2 XL's training shape (B*T = 16384 rows, C = 1600, bf16), beside a copy of the same
bytes, for issue 21's LayerNorm goal (>= 80% of the card's nominal memory bandwidth; scripts/gpu_validate.sh phase
attn). The question it answers: does any LayerNorm the peer runs reach that share at this size, and how far is a
plain copy from it?

Each figure is the GPU's time per call: 20 calls back to back between two CUDA events, the median of 7 such
timings (after 3 warm-ups), as zgpt's op bench times its `stream_ms`. Bytes are counted as zgpt's op bench counts
its own (the forward reads x and writes y: 2*N*C*2 plus the statistics; the backward reads dout, x and writes dx:
3*N*C*2, where zgpt's also reads and rewrites the residual gradient it accumulates into: 4*N*C*2). One line each:
  `LNTORCH <form> stream_ms <ms> MB <MB> GBs <GB/s>`
forms: eager_fwd (F.layer_norm), eager_bwd (autograd over a retained graph: dx, dw, db), compiled_fwd /
compiled_bwd (torch.compile of the same: Inductor's generated kernels, what the training peer runs), copy_fwd /
copy_bwd (y.copy_(x) of the forward's bytes, and of zgpt's backward's)."""
import torch
import torch.nn.functional as F

from sdpa_bench import bench_stream  # 20 calls back to back, the median of 7 (after 3 warm-ups)


def line(form, ms, nbytes):
    print(f"LNTORCH {form} stream_ms {ms:.4f} MB {nbytes / 1e6:.1f} GBs {nbytes / (ms * 1e-3) / 1e9:.0f}", flush=True)


def main():
    N, C, es = 16 * 1024, 1600, 2
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    x = torch.randn(N, C, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(C, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(C, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(N, C, device="cuda", dtype=torch.bfloat16)
    fwd_bytes = 2 * N * C * es + N * 8
    bwd_bytes = 3 * N * C * es + N * 8

    def ln(t, ww, bb):
        return F.layer_norm(t, (C,), ww, bb, 1e-5)

    line("eager_fwd", bench_stream(lambda: ln(x, w, b)), fwd_bytes)
    xr, wr, br = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    y = ln(xr, wr, br)
    line("eager_bwd", bench_stream(lambda: torch.autograd.grad(y, (xr, wr, br), g, retain_graph=True)), bwd_bytes)
    try:
        cln = torch.compile(ln)
        line("compiled_fwd", bench_stream(lambda: cln(x, w, b)), fwd_bytes)
        yc = cln(xr, wr, br)
        line("compiled_bwd", bench_stream(lambda: torch.autograd.grad(yc, (xr, wr, br), g, retain_graph=True)),
             bwd_bytes)
    except Exception as e:  # no compiler on this host: the eager figures stand alone
        print(f"LNTORCH compiled refused: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
    for form, nbytes in (("copy_fwd", 2 * N * C * es), ("copy_bwd", 4 * N * C * es)):
        src = torch.empty(nbytes // 2, device="cuda", dtype=torch.uint8)
        dst = torch.empty_like(src)
        line(form, bench_stream(lambda: dst.copy_(src)), nbytes)


if __name__ == "__main__":
    main()
