#!/usr/bin/env python3
"""Where a training step's GPU time goes, kernel by kernel, in zgpt and in a PyTorch peer.

Both sides are reduced to one CSV format, one line a GPU activity: kind,start_ns,end_ns,stream_id,"name"
(kind K kernel, C memcpy, S memset):
  zgpt:  bench/kernel_trace.sh run z.csv -- build-gpu/zgpt bench ...      (CUPTI, bench/kernel_trace.c)
  torch: python3 bench/kernel_trace.py torch peer.py --out t.csv [--skip-steps K] -- ARGS...

  python3 bench/kernel_trace.py summarize z.csv --step-ms 123.4 [--last-ms W] [--label zgpt] [--top 25]
  python3 bench/kernel_trace.py compare z.csv t.csv --step-ms-a 123.4 --step-ms-b 130.2 [--labels zgpt,torch]
  python3 bench/kernel_trace.py selftest

A summary looks only at the tail of the trace (the last W ms, default the last 40% of the kernels' span),
so warm-up and autotuning stay out, and scales it to one step with the step time the caller measured:
per step = window figure * step_ms / window wall.  Standard library only (torch only for `torch`).
"""
import argparse
import csv
import json
import os
import re
import runpy
import sys
import tempfile

# Kernel categories: case-insensitive regex on the name, first match wins. Attention comes before matmul
# because FlashAttention's kernel names carry cutlass template arguments. The zgc_* names are zgpt's own
# kernels (src/backend/cuda) that the generic words miss. Memcpy/memset go by kind, not by name.
CATEGORIES = [
    ("attention", r"fmha|flash|sdpa|cudnn|attn|attention|cudnn_generated|zgc_att_"),
    ("matmul", r"gemm|cutlass|sm90_xmma|cublas|nvjet|xmma|gemv|triton_tem"),
    ("layernorm", r"layernorm|layer_norm|zgc_ln"),
    ("classifier/loss", r"classifier|cross_entropy|log_?softmax|softmax|nll"),
    ("norm", r"sum_squares|sumsq|norm"),  # before optimizer: torch's clip_grad_norm_ runs multi_tensor kernels
    ("optimizer", r"adam|lamb|multi_tensor|optimizer"),
    ("encoder/embedding", r"encoder|embedding|index_?select"),
    ("elementwise/fused", r"triton|elementwise|vectorized|residual|gelu|copy|cast|bias|zgc_scale|iota"),
]
CATEGORY_RES = [(c, re.compile(r, re.I)) for c, r in CATEGORIES]
CATEGORY_NAMES = [c for c, _ in CATEGORIES] + ["memcpy", "memset", "other"]
DEFAULT_TAIL = 0.4  # share of the kernels' span that a summary looks at when --last-ms is not given


def category(kind, name):
    if kind == "C":
        return "memcpy"
    if kind == "S":
        return "memset"
    for c, rx in CATEGORY_RES:
        if rx.search(name):
            return c
    return "other"


def read_trace(path):
    """Records (kind, start_ns, end_ns, stream, name); a header or broken line is skipped."""
    recs = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 5 or row[0] not in ("K", "C", "S"):
                continue
            try:
                s, e, st = int(row[1]), int(row[2]), int(row[3])
            except ValueError:
                continue
            if e < s or (s == 0 and e == 0):  # CUPTI: both 0 when no timestamps could be taken
                continue
            recs.append((row[0], s, e, st, ",".join(row[4:])))
    return recs


def clean_name(name):
    return name.replace('"', ";").replace(",", ";").replace("\n", ";")


def write_trace(path, recs):
    with open(path, "w") as f:
        for k, s, e, st, name in recs:
            f.write(f'{k},{s},{e},{st},"{clean_name(name)}"\n')


def union_ns(intervals):
    """Length of the union of (start, end) intervals, and the positive gaps between its pieces."""
    total, gaps, cur_s, cur_e = 0, [], None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
                gaps.append(s - cur_e)
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total, gaps


def short_name(name, n=48):
    """A kernel's name without its template arguments and parameter list, for the gap table."""
    return re.split(r"[<(]", name, maxsplit=1)[0][:n] or name[:n]


def gap_pairs(kern):
    """GPU idle between kernels (any stream), attributed to the kernel that ended last before it and the one
    that starts it: {(before, after): [count, ns]} and the list of gap lengths."""
    pairs, last_end, last_name = {}, None, None
    for _, s, e, _, name in sorted(kern, key=lambda r: r[1]):
        if last_end is not None and s > last_end:
            g = pairs.setdefault((short_name(last_name), short_name(name)), [0, 0])
            g[0] += 1
            g[1] += s - last_end
        if last_end is None or e > last_end:
            last_end, last_name = e, name
    return pairs


def summarize(recs, step_ms, last_ms=None):
    kern = [r for r in recs if r[0] == "K"]
    if not kern:
        raise SystemExit("kernel_trace: no kernel records in the trace")
    t0, t1 = min(r[1] for r in kern), max(r[2] for r in kern)
    ws = t1 - last_ms * 1e6 if last_ms is not None else t1 - DEFAULT_TAIL * (t1 - t0)
    win = [r for r in recs if r[1] >= ws]
    wk = [r for r in win if r[0] == "K"]
    if not wk:
        raise SystemExit("kernel_trace: no kernel starts in the window; widen --last-ms")
    wall = max(r[2] for r in win) - min(r[1] for r in win)
    busy, gaps = union_ns((r[1], r[2]) for r in wk)  # gaps: GPU idle between kernels, any stream
    busy_all, _ = union_ns((r[1], r[2]) for r in win)
    cats = {c: [0, 0] for c in CATEGORY_NAMES}
    names = {}
    for k, s, e, _, name in win:
        c = cats[category(k, name)]
        c[0] += 1
        c[1] += e - s
        n = names.setdefault((k, name), [0, 0])
        n[0] += 1
        n[1] += e - s
    return {
        "window_start_ns": ws, "wall_ns": wall, "busy_ns": busy, "busy_all_ns": busy_all,
        "idle_ns": wall - busy, "kernels": len(wk), "gaps": len(gaps),
        "mean_gap_ns": sum(gaps) / len(gaps) if gaps else 0.0, "categories": cats, "names": names,
        "gap_pairs": gap_pairs(wk), "gap_pairs_all": gap_pairs(win), "gap_sizes": sorted(gaps),
        "step_ms": step_ms, "scale": step_ms / (wall / 1e6) if wall > 0 else 0.0,
        "tail": f"last {last_ms:g} ms" if last_ms is not None else f"last {DEFAULT_TAIL:.0%} of kernel span",
    }


def table(rows, left=1):
    """Aligned plain-text table: the first `left` columns left-aligned, the rest right-aligned."""
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[i]) if i < left else c.rjust(w[i]) for i, c in enumerate(r)).rstrip()
                     for r in rows)


def ms(ns):
    return f"{ns / 1e6:.3f}"


def print_summary(st, label, top):
    sc = st["scale"]
    print(f"== {label}: window {ms(st['wall_ns'])} ms ({st['tail']}), step {st['step_ms']:g} ms"
          f" -> {1 / sc if sc else 0:.2f} steps in window")
    rows = [["", "window ms", "per step ms", "% of step", "count/step"]]

    def row(name, ns, count=None):
        rows.append([name, ms(ns), ms(ns * sc), f"{100 * ns / st['wall_ns']:.1f}" if st["wall_ns"] else "-",
                     f"{count * sc:.1f}" if count is not None else ""])

    row("wall", st["wall_ns"])
    row("GPU busy (kernels)", st["busy_ns"], st["kernels"])
    row("GPU busy (all kinds)", st["busy_all_ns"])
    row("idle (wall - busy)", st["idle_ns"])
    rows.append(["mean gap between kernels", f"{st['mean_gap_ns'] / 1e3:.2f} us", "", "", f"{st['gaps'] * sc:.1f}"])
    rows.append(["-- category (summed time)", "", "", "", ""])
    for c in CATEGORY_NAMES:
        n, ns = st["categories"][c]
        if n:
            row(c, ns, n)
    print(table(rows))
    names = sorted(st["names"].items(), key=lambda kv: -kv[1][1])[:top]
    rows = [["kind", "name", "count", "window ms", "per step ms", "mean us"]]
    for (k, name), (n, ns) in names:
        rows.append([k, name[:100], str(n), ms(ns), ms(ns * sc), f"{ns / n / 1e3:.2f}"])
    print(f"-- top {len(names)} by total time")
    print(table(rows, left=2))
    gs = st["gap_sizes"]
    if gs:
        # the idle's shape: many short launch gaps, or a few long waits (a host sync, a copy)
        q = [gs[min(len(gs) - 1, int(f * len(gs)))] / 1e3 for f in (0.5, 0.9, 0.99)]
        long_ns = sum(g for g in gs if g >= 20e3)
        print(f"-- idle between kernels: {len(gs)} gaps, median {q[0]:.2f} us, p90 {q[1]:.2f}, p99 {q[2]:.2f},"
              f" max {gs[-1] / 1e3:.2f}; gaps >= 20 us: {ms(long_ns)} ms of {ms(sum(gs))} ms in the window")
        # kernels alone, then with copies and memsets as neighbours (is a library's memset what stands between two
        # kernels?)
        for key, what in (("gap_pairs", "kernel pairs"),
                          ("gap_pairs_all", "pairs of any activity (kernels, copies, memsets)")):
            pairs = sorted(st[key].items(), key=lambda kv: -kv[1][1])[:top]
            rows = [["before", "after", "gaps", "window ms", "per step ms", "mean us"]]
            for (a, b), (n, ns) in pairs:
                rows.append([a, b, str(n), ms(ns), ms(ns * sc), f"{ns / n / 1e3:.2f}"])
            print(f"-- top {len(pairs)} {what} by idle between them")
            print(table(rows, left=2))


def print_compare(a, b, la, lb):
    print(f"== per step: {la} (step {a['step_ms']:g} ms, window {ms(a['wall_ns'])} ms) vs "
          f"{lb} (step {b['step_ms']:g} ms, window {ms(b['wall_ns'])} ms)")
    rows = [["ms per step", la, lb, f"{la} - {lb}"]]

    def row(name, va, vb, fmt="{:.3f}"):
        rows.append([name, fmt.format(va), fmt.format(vb), fmt.format(va - vb)])

    for key, name in (("wall_ns", "wall"), ("busy_ns", "GPU busy (kernels)"),
                      ("busy_all_ns", "GPU busy (all kinds)"), ("idle_ns", "idle (wall - busy)")):
        row(name, a[key] * a["scale"] / 1e6, b[key] * b["scale"] / 1e6)
    row("kernels per step", a["kernels"] * a["scale"], b["kernels"] * b["scale"], "{:.1f}")
    row("mean gap between kernels (us)", a["mean_gap_ns"] / 1e3, b["mean_gap_ns"] / 1e3, "{:.2f}")
    rows.append(["-- category (summed time)", "", "", ""])
    for c in CATEGORY_NAMES:
        if a["categories"][c][0] or b["categories"][c][0]:
            row(c, a["categories"][c][1] * a["scale"] / 1e6, b["categories"][c][1] * b["scale"] / 1e6)
    print(table(rows))


def chrome_to_records(trace):
    """GPU activities of a PyTorch (Kineto) chrome trace: ts/dur are microseconds, tid is the stream."""
    kinds = {"kernel": "K", "gpu_memcpy": "C", "gpu_memset": "S"}
    recs = []
    for ev in trace.get("traceEvents", []):
        k = kinds.get(ev.get("cat", "").lower())
        if not k or ev.get("ph") != "X" or "ts" not in ev:
            continue
        s = int(round(float(ev["ts"]) * 1000))
        e = s + int(round(float(ev.get("dur", 0)) * 1000))
        stream = (ev.get("args") or {}).get("stream", ev.get("tid", 0))
        if not isinstance(stream, int):
            digits = re.findall(r"\d+", str(stream))
            stream = int(digits[-1]) if digits else 0
        recs.append((k, s, e, stream, ev.get("name", "")))
    recs.sort(key=lambda r: r[1])
    return recs


def cmd_torch(args):
    import torch
    from torch.profiler import ProfilerActivity, profile

    script = os.path.abspath(args.script)
    prof = profile(activities=[ProfilerActivity.CUDA])
    state = {"steps": 0, "on": False}

    def start():
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a clean edge: nothing of the skipped steps is still running
        prof.start()
        state["on"] = True

    if args.skip_steps > 0:
        # Steps are counted by torch.optim optimizer steps (global post-hook): the script needs no changes.
        def hook(opt, a, kw):
            state["steps"] += 1
            if state["steps"] == args.skip_steps and not state["on"]:
                start()

        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(hook)
    else:
        start()
    sys.argv = [script] + args.script_args
    sys.path.insert(0, os.path.dirname(script))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush()
    if not state["on"]:
        print(f"kernel_trace: {state['steps']} optimizer steps seen, fewer than --skip-steps "
              f"{args.skip_steps}: nothing traced", file=sys.stderr)
        return code or 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    prof.stop()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            recs = chrome_to_records(json.load(f))
    write_trace(args.out, recs)
    print(f"kernel_trace: {len(recs)} GPU records -> {args.out}", file=sys.stderr)
    return code


def cmd_summarize(args):
    print_summary(summarize(read_trace(args.trace), args.step_ms, args.last_ms),
                  args.label or os.path.basename(args.trace), args.top)
    return 0


def cmd_compare(args):
    la, lb = (args.labels.split(",", 1) if args.labels else
              [os.path.basename(args.a), os.path.basename(args.b)])
    print_compare(summarize(read_trace(args.a), args.step_ms_a, args.last_ms_a),
                  summarize(read_trace(args.b), args.step_ms_b, args.last_ms_b), la, lb)
    return 0


def cmd_selftest(_args):
    us = 1000  # the synthetic trace is written in microseconds, stored in ns
    recs = [  # stream 7: two matmuls and a layernorm; stream 8: attention overlapping the first matmul
        ("K", 0, 100, 7, "sm90_xmma_gemm_bf16bf16_bf16f32"),
        ("K", 50, 120, 8, "pytorch_flash::flash_fwd_kernel<Flash_kernel_traits<cutlass::bfloat16_t>>"),
        ("K", 150, 250, 7, 'nvjet_tst_"odd",name'),
        ("S", 260, 270, 8, "Memset"),
        ("K", 300, 400, 7, "zgc_layernorm_fwd_kernel"),
        ("C", 400, 430, 9, "Memcpy DtoH"),
    ]
    recs = [(k, s * us, e * us, st, n) for k, s, e, st, n in recs]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.csv")
        with open(path, "w") as f:
            f.write("kind,start_ns,end_ns,stream_id,name\n")  # a header is tolerated
        with open(path, "a") as f:
            f.write("K,0,0,7,\"no timestamps\"\n")  # dropped like CUPTI's zero timestamps
        with open(path, "a") as f:
            for k, s, e, st, n in recs:
                f.write(f'{k},{s},{e},{st},"{clean_name(n)}"\n')
        back = read_trace(path)
        assert len(back) == 6 and back[2][4] == "nvjet_tst_;odd;;name", back
        # Whole trace: kernels cover [0,120] u [150,250] u [300,400] = 320 us of 430 us wall.
        st = summarize(back, step_ms=0.86, last_ms=1.0)
        assert st["wall_ns"] == 430 * us and st["busy_ns"] == 320 * us and st["idle_ns"] == 110 * us, st
        assert st["busy_all_ns"] == 360 * us and st["kernels"] == 4
        assert st["gaps"] == 2 and st["mean_gap_ns"] == 40 * us, st
        # the gap after the flash kernel (it ended last, at 120) before nvjet, then nvjet -> layernorm
        assert st["gap_pairs"] == {("pytorch_flash::flash_fwd_kernel", "nvjet_tst_;odd;;name"): [1, 30 * us],
                                   ("nvjet_tst_;odd;;name", "zgc_layernorm_fwd_kernel"): [1, 50 * us]}, st["gap_pairs"]
        assert st["gap_sizes"] == [30 * us, 50 * us]
        # with the memset and the copy as neighbours: nvjet -> memset (10 us), memset -> layernorm (30 us)
        assert st["gap_pairs_all"] == {("pytorch_flash::flash_fwd_kernel", "nvjet_tst_;odd;;name"): [1, 30 * us],
                                       ("nvjet_tst_;odd;;name", "Memset"): [1, 10 * us],
                                       ("Memset", "zgc_layernorm_fwd_kernel"): [1, 30 * us]}, st["gap_pairs_all"]
        assert abs(st["scale"] - 2.0) < 1e-12
        cats = {c: v[1] for c, v in st["categories"].items() if v[0]}
        assert cats == {"matmul": 200 * us, "attention": 70 * us, "layernorm": 100 * us,
                        "memset": 10 * us, "memcpy": 30 * us}, cats
        # Default window: the last 40% of the kernels' span [0,400] starts at 240 us.
        st2 = summarize(back, step_ms=1.0)
        assert st2["wall_ns"] == 170 * us and st2["busy_ns"] == 100 * us and st2["kernels"] == 1, st2
        assert st2["gaps"] == 0 and st2["categories"]["memset"] == [1, 10 * us]
        # The PyTorch side: chrome trace -> the same records.
        chrome = {"traceEvents": [
            {"ph": "X", "cat": "kernel", "name": "ampere_sgemm, x", "pid": 0, "tid": 7, "ts": 10.5, "dur": 2.25,
             "args": {"stream": 7}},
            {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "tid": 7, "ts": 20,
             "dur": 1, "args": {"stream": 7}},
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "tid": 1, "ts": 9, "dur": 5},
            {"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)", "tid": "stream 9", "ts": 30, "dur": 0.5},
        ]}
        tpath = os.path.join(tmp, "torch.csv")
        write_trace(tpath, chrome_to_records(chrome))
        assert read_trace(tpath) == [("K", 10500, 12750, 7, "ampere_sgemm; x"),
                                     ("C", 20000, 21000, 7, "Memcpy HtoD (Pageable -> Device)"),
                                     ("S", 30000, 30500, 9, "Memset (Device)")], read_trace(tpath)
        # The commands themselves, end to end.
        assert main(["summarize", path, "--step-ms", "0.86", "--last-ms", "1", "--label", "synthetic", "--top", "3"]) == 0
        assert main(["compare", path, tpath, "--step-ms-a", "0.86", "--step-ms-b", "0.02", "--last-ms-a", "1",
                     "--last-ms-b", "1", "--labels", "zgpt,torch"]) == 0
    print("kernel_trace selftest: OK")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summarize", help="per-step breakdown of one trace")
    s.add_argument("trace")
    s.add_argument("--step-ms", type=float, required=True, help="the measured step time")
    s.add_argument("--last-ms", type=float, help="window: the last W ms (default: last 40%% of the kernel span)")
    s.add_argument("--label")
    s.add_argument("--top", type=int, default=25)
    s.set_defaults(fn=cmd_summarize)
    c = sub.add_parser("compare", help="two traces side by side, per step")
    c.add_argument("a")
    c.add_argument("b")
    for x in ("a", "b"):
        c.add_argument(f"--step-ms-{x}", type=float, required=True)
        c.add_argument(f"--last-ms-{x}", type=float)
    c.add_argument("--labels", help="a,b")
    c.set_defaults(fn=cmd_compare)
    t = sub.add_parser("torch", help="run a PyTorch script under torch.profiler, write the CSV")
    t.add_argument("script")
    t.add_argument("--out", required=True)
    t.add_argument("--skip-steps", type=int, default=0, help="start tracing after K optimizer steps")
    t.epilog = "everything after -- goes to the script as its sys.argv[1:]"
    t.set_defaults(fn=cmd_torch)
    sub.add_parser("selftest").set_defaults(fn=cmd_selftest)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Split at "--" by hand: argparse's REMAINDER would also swallow --out and --skip-steps.
    cut = argv.index("--") if "--" in argv else len(argv)
    a = p.parse_args(argv[:cut])
    a.script_args = argv[cut + 1:]
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
