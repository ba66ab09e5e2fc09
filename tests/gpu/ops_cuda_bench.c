/* gpu_test_ops_cuda, benchmarks at training shapes: per-op times, the matmul algorithm survey, attention and
 * LayerNorm bandwidth (--bench; ZG_BENCH_ONLY=124m|xl16|xl8|survey|attn). */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The matmuls of one layer with the heuristic's k-th candidate algorithm (ZGPT_MATMUL_ALGO=k, read
 * when a plan is made, so each k gets a fresh backend): is the heuristic's first choice the fastest? */
void oc_bench_matmul_algos(int B, int T, int C) {
    int N = B * T;
    printf("\n### matmul algorithm survey: N=%d C=%d (bf16), ms per call by the heuristic's k-th candidate\n\n", N, C);
    printf("| k | qkv fwd | attproj fwd+res | fc fwd gelu | fcproj fwd+res | qkv bwd | attproj bwd | fc bwd | fcproj "
           "bwd dgelu |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < 8; k++) {
        char ks[8];
        snprintf(ks, sizeof ks, "%d", k);
        setenv("ZGPT_MATMUL_ALGO", ks, 1);
        zg_backend *be = NULL;
        zg_backend_config cfg = {"cuda", -1, ZG_BF16};
        if (zg_backend_cuda_create(&be, &cfg) != 0) {
            zg_error_print();
            break;
        }
        bench_ctx ctx = {be, NULL, NULL};
        cudaEventCreate(&ctx.e0);
        cudaEventCreate(&ctx.e1);
        void *x = oc_dev_big(be, ZG_BF16, (size_t)N * C, 1.f), *x2 = oc_dev_big(be, ZG_BF16, (size_t)N * C, 1.f);
        void *y = oc_dev_big(be, ZG_BF16, (size_t)N * C, 1.f);
        void *h4 = oc_dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f),
             *h4b = oc_dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f);
        void *w = oc_dev_big(be, ZG_BF16, (size_t)4 * C * C, 0.02f),
             *dw = oc_dev_big(be, ZG_BF16, (size_t)4 * C * C, 0.02f);
        void *bias = oc_dev_big(be, ZG_BF16, (size_t)4 * C, 0.02f),
             *dbias = oc_dev_big(be, ZG_BF16, (size_t)4 * C, 0.02f);
        printf("| %d ", k);
        fflush(stdout);
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, h4, NULL, x, w, bias, NULL, N, C, 3 * C));
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, y, NULL, x, w, bias, x2, N, C, C));
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, h4, h4b, x, w, bias, NULL, N, C, 4 * C));
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, y, NULL, h4, w, bias, x2, N, 4 * C, C));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, x2, dw, dbias, h4, x, w, NULL, N, C, 3 * C, 0));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, x2, dw, dbias, y, x, w, NULL, N, C, C, 0));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, x2, dw, dbias, h4, x, w, NULL, N, C, 4 * C, 0));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, h4b, dw, dbias, y, h4, w, h4, N, 4 * C, C, 0));
        printf("|\n");
        void *ptrs[] = {x, x2, y, h4, h4b, w, dw, bias, dbias};
        for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) be->ops->dealloc(be, ptrs[i]);
        cudaEventDestroy(ctx.e0);
        cudaEventDestroy(ctx.e1);
        zg_backend_destroy(be);
    }
    unsetenv("ZGPT_MATMUL_ALGO");
}

void oc_bench_config(zg_backend *be, const char *name, int B, int T, int C, int NH, int L) {
    bench_ctx ctx = {be, NULL, NULL};
    cudaEventCreate(&ctx.e0);
    cudaEventCreate(&ctx.e1);
    int N = B * T, V = 50257, Vp = 50304;
    size_t es = 2;
    printf("\n### %s: B=%d T=%d C=%d NH=%d (bf16)\n\n", name, B, T, C, NH);
    printf("| op | ms (median) | TFLOP/s | GB/s |\n|---|---|---|---|\n");
    float *h;
    void *x = oc_dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *x2 = oc_dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *y = oc_dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *qkv = oc_dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL);
    void *dqkv = oc_dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL);
    void *h4 = oc_dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f);
    void *h4b = oc_dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f);
    void *w = oc_dev_rand(be, ZG_BF16, (size_t)4 * C * C, 0.02f, NULL);
    void *dw = oc_dev_rand(be, ZG_BF16, (size_t)4 * C * C, 0.02f, NULL);
    void *bias = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    void *dbias = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    float *mean = be->ops->alloc(be, (size_t)N * 4, "mean"), *rstd = be->ops->alloc(be, (size_t)N * 4, "rstd");
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "stats");
    int32_t *tokh = malloc((size_t)N * 4);
    int32_t *tok = oc_dev_tokens(be, N, V, tokh);
    void *wte = oc_dev_big(be, ZG_BF16, (size_t)Vp * C, 0.02f);
    void *dwte = oc_dev_big(be, ZG_BF16, (size_t)Vp * C, 0.02f);
    void *wpe = oc_dev_rand(be, ZG_BF16, (size_t)T * C, 0.02f, NULL);
    void *dwpe = oc_dev_rand(be, ZG_BF16, (size_t)T * C, 0.02f, NULL);
    double nc = (double)N * C;
    BENCH(&ctx, "encoder_forward", 0, nc * es * 3, be->ops->encoder_forward(be, x, tok, wte, wpe, B, T, C));
    BENCH(&ctx, "encoder_backward", 0, nc * es * 3, be->ops->encoder_backward(be, dwte, dwpe, x, tok, B, T, C));
    /* text-like: real text repeats a few ids a lot (Tiny Shakespeare: "\n" ~10%, "," ~5%) */
    for (int i = 0; i < N; i++) tokh[i] = i % 10 == 0 ? 198 : i % 20 == 1 ? 11 : tokh[i];
    int32_t *tok_text = oc_dev_tokens_upload(be, tokh, N);
    BENCH(&ctx, "encoder_backward (10% one id, 5% another)", 0, nc * es * 3,
          be->ops->encoder_backward(be, dwte, dwpe, x, tok_text, B, T, C));
    be->ops->dealloc(be, tok_text);
    BENCH(&ctx, "layernorm_forward", 0, nc * es * 2,
          be->ops->layernorm_forward(be, y, mean, rstd, x, bias, dbias, N, C));
    BENCH(&ctx, "layernorm_forward (no mean/rstd)", 0, nc * es * 2,
          be->ops->layernorm_forward(be, y, NULL, NULL, x, bias, dbias, N, C));
    BENCH(&ctx, "layernorm_backward", 0, nc * es * 4,
          be->ops->layernorm_backward(be, x2, dw, dbias, y, x, NULL, bias, NULL, mean, rstd, N, C, NULL, NULL));
    /* the same bytes (dout, y, dinp read, dinp written); x stands in for y, the bias 16-byte aligned
     * (C * 2 bytes past bias: a multiple of 16 for C % 8 == 0) */
    BENCH(&ctx, "layernorm_backward (from output)", 0, nc * es * 4,
          be->ops->layernorm_backward(be, x2, dw, dbias, y, NULL, x, bias, (const char *)bias + (size_t)C * es, NULL,
                                      rstd, N, C, NULL, NULL));
    double f;
    f = 2.0 * N * C * 3 * C;
    BENCH(&ctx, "matmul fwd qkv (C->3C, bias)", f, 0,
          be->ops->matmul_forward(be, qkv, NULL, x, w, bias, NULL, N, C, 3 * C));
    BENCH(&ctx, "matmul bwd qkv (dinp, dw, dbias)", 2 * f, 0,
          be->ops->matmul_backward(be, x2, dw, dbias, qkv, x, w, NULL, N, C, 3 * C, 0));
    f = 2.0 * N * C * C;
    BENCH(&ctx, "matmul fwd attproj (C->C)", f, 0, be->ops->matmul_forward(be, y, NULL, x, w, bias, NULL, N, C, C));
    BENCH(&ctx, "matmul fwd attproj + residual", f, 0, be->ops->matmul_forward(be, y, NULL, x, w, bias, x2, N, C, C));
    BENCH(&ctx, "matmul bwd attproj", 2 * f, 0, be->ops->matmul_backward(be, x2, dw, dbias, y, x, w, NULL, N, C, C, 0));
    f = 2.0 * N * C * 4 * C;
    BENCH(&ctx, "matmul fwd fc (C->4C, bias+gelu)", f, 0,
          be->ops->matmul_forward(be, h4, h4b, x, w, bias, NULL, N, C, 4 * C));
    BENCH(&ctx, "matmul fwd fc (bias only, no gelu)", f, 0,
          be->ops->matmul_forward(be, h4, NULL, x, w, bias, NULL, N, C, 4 * C));
    BENCH(&ctx, "matmul bwd fc", 2 * f, 0, be->ops->matmul_backward(be, x2, dw, dbias, h4, x, w, NULL, N, C, 4 * C, 0));
    BENCH(&ctx, "matmul bwd fc (no dbias)", 2 * f, 0,
          be->ops->matmul_backward(be, x2, dw, NULL, h4, x, w, NULL, N, C, 4 * C, 0));
    BENCH(&ctx, "matmul bwd fc (dinp only)", f, 0,
          be->ops->matmul_backward(be, x2, NULL, NULL, h4, x, w, NULL, N, C, 4 * C, 0));
    BENCH(&ctx, "matmul fwd fcproj (4C->C)", f, 0,
          be->ops->matmul_forward(be, y, NULL, h4, w, bias, NULL, N, 4 * C, C));
    BENCH(&ctx, "matmul fwd fcproj + residual", f, 0,
          be->ops->matmul_forward(be, y, NULL, h4, w, bias, x2, N, 4 * C, C));
    BENCH(&ctx, "matmul bwd fcproj (dgelu)", 2 * f, 0,
          be->ops->matmul_backward(be, h4b, dw, dbias, y, h4, w, h4, N, 4 * C, C, 0));
    BENCH(&ctx, "matmul bwd fcproj (no dgelu)", 2 * f, 0,
          be->ops->matmul_backward(be, h4b, dw, dbias, y, h4, w, NULL, N, 4 * C, C, 0));
    BENCH(&ctx, "gelu_forward (4C)", 0, nc * 4 * es * 2, be->ops->gelu_forward(be, h4b, h4, (size_t)N * 4 * C));
    BENCH(&ctx, "residual_forward", 0, nc * es * 3, be->ops->residual_forward(be, x2, x, y, (size_t)N * C));
    double af = 2.0 * B * NH * (double)T * T * (C / NH); /* causal: half of 4*B*NH*T*T*hs */
    setenv("ZGPT_ATTN_FWD_MT", "1", 1);
    BENCH(&ctx, "attention_forward (16 rows/warp)", af, 0, be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
    unsetenv("ZGPT_ATTN_FWD_MT");
    oc_attn_path("own");
    BENCH(&ctx, "attention_forward", af, 0, be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
    BENCH(&ctx, "attention_backward", 2.5 * af, 0,
          be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
    oc_attn_path("cudnn");
    BENCH(&ctx, "attention_forward (cuDNN)", af, 0, be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
    BENCH(&ctx, "attention_backward (cuDNN)", 2.5 * af, 0,
          be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
    oc_attn_path("own");
    if (oc_bench_reps() == BENCH_REPS) /* the backward kernels' variants (ZGPT_ATTN_BWD, dK/dV then dQ) */
        for (int v = 0; v < 16; v++) {
            char var[3] = {(char)('a' + v / 4), (char)('a' + v % 4), 0}, lab2[64];
            setenv("ZGPT_ATTN_BWD", var, 1);
            snprintf(lab2, sizeof lab2, "attention_backward ZGPT_ATTN_BWD=%s", var);
            BENCH(&ctx, lab2, 2.5 * af, 0, be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
        }
    unsetenv("ZGPT_ATTN_BWD");
    unsetenv("ZGPT_ATTENTION");

    be->ops->dealloc(be, h4);
    be->ops->dealloc(be, h4b);
    void *logits = oc_dev_big(be, ZG_BF16, (size_t)N * Vp, 2.f);
    f = 2.0 * N * C * Vp;
    BENCH(&ctx, "matmul fwd lm_head (C->Vp)", f, 0,
          be->ops->matmul_forward(be, logits, NULL, x, wte, NULL, NULL, N, C, Vp));
    int32_t *tg = tok;
    float *losses = be->ops->alloc(be, (size_t)N * 4, "losses");
    BENCH(&ctx, "classifier (loss only, dloss=0)", 0, (double)N * Vp * es,
          be->ops->classifier(be, losses, logits, tg, N, V, Vp, 0.f));
    BENCH(&ctx, "classifier (fwd+grad, in place)", 0, (double)N * Vp * es * 3,
          be->ops->classifier(be, losses, logits, tg, N, V, Vp, 1.f / N));
    BENCH(&ctx, "matmul bwd lm_head (dinp, dwte)", 2 * f, 0,
          be->ops->matmul_backward(be, x2, dwte, NULL, logits, x, wte, NULL, N, C, Vp, 0));
    be->ops->dealloc(be, logits);
    /* optimizer over the whole model */
    size_t P = (size_t)Vp * C + (size_t)1024 * C + (size_t)L * (12 * (size_t)C * C + 13 * (size_t)C) + 2 * C;
    void *pp = oc_dev_big(be, ZG_BF16, P, 0.02f), *gg = oc_dev_big(be, ZG_BF16, P, 0.001f);
    float *master = be->ops->alloc(be, P * 4, "master"), *mm = be->ops->alloc(be, P * 4, "m"),
          *vv = be->ops->alloc(be, P * 4, "v");
    be->ops->zero(be, master, P * 4);
    be->ops->zero(be, mm, P * 4);
    be->ops->zero(be, vv, P * 4);
    zg_segment seg[2] = {{0, P / 2, 0.1f}, {P / 2, P - P / 2, 0.f}};
    zg_adamw_args a = {pp, master, gg, mm, vv, seg, 2, 1e-4f, 0.9f, 0.95f, 1e-8f, 1, 1.f, 0, 0, 0, 0, 0, 0, 0, NULL};
    char lab[64];
    snprintf(lab, sizeof lab, "adamw (%.0fM params)", P / 1e6);
    BENCH(&ctx, lab, 0, (double)P * (2 + 2 + 12 + 12), be->ops->adamw(be, &a));
    snprintf(lab, sizeof lab, "sum_squares (%.0fM, incl. sync)", P / 1e6);
    BENCH(&ctx, lab, 0, (double)P * 2, (void)be->ops->sum_squares(be, gg, ZG_BF16, P));
    (void)h;
    void *ptrs[] = {x,   x2,  y,    qkv, dqkv, w,      dw, bias, dbias,  mean, rstd, stats,
                    tok, wte, dwte, wpe, dwpe, losses, pp, gg,   master, mm,   vv};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    free(tokh);
    printf("\npeak backend memory: %.2f GiB\n", be->bytes_peak / 1073741824.0);
    cudaEventDestroy(ctx.e0);
    cudaEventDestroy(ctx.e1);
}

/* Issue 21's training-speed kernels at GPT-2 XL's training shape (B=16, T=1024, C=1600, NH=25, bf16):
 * attention forward/backward on zgpt's kernels and on cuDNN's fused attention, LayerNorm forward/backward
 * as a share of the card's memory bandwidth (nominal and a device-to-device copy's). Besides the table,
 * one `key value ...` line per result for scripts/gpu_validate.sh (phase attn). */
/* The card's nominal memory bandwidth in GB/s: its peak memory clock (kHz) x bus width (bits) x 2 (double data
 * rate) / 8 (H100 SXM: 3,352; H200: ~4,900, its datasheet 4,800), else the H200's datasheet figure, which issue 21's
 * goal names. */
static double hbm_nominal_gbs(zg_backend *be) {
    int clk = 0, width = 0;
    if (cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, be->device) != cudaSuccess ||
        cudaDeviceGetAttribute(&width, cudaDevAttrGlobalMemoryBusWidth, be->device) != cudaSuccess || clk <= 0 ||
        width <= 0)
        return 4800.0;
    return 2.0 * clk * 1e3 * width / 8.0 / 1e9;
}
void oc_bench_attn_ln(zg_backend *be, int B, int T, int C, int NH) {
    bench_ctx ctx = {be, NULL, NULL};
    const double nominal = hbm_nominal_gbs(be); /* GB/s */
    printf("HBM nominal_GBs %.0f\n", nominal);
    cudaEventCreate(&ctx.e0);
    cudaEventCreate(&ctx.e1);
    int N = B * T;
    double es = 2, nc = (double)N * C;
    printf("\n### issue 21 kernels: B=%d T=%d C=%d NH=%d (bf16)\n\n", B, T, C, NH);
    printf("| op | ms (median) | TFLOP/s | GB/s |\n|---|---|---|---|\n");
    /* the practical peak: a device-to-device copy of 1 GiB (read + write) */
    size_t cb = (size_t)1 << 30;
    void *c0 = be->ops->alloc(be, cb, "copy source"), *c1 = be->ops->alloc(be, cb, "copy destination");
    be->ops->zero(be, c0, cb);
    float copy_ms;
    BENCH_TIME(&ctx, copy_ms, oc_bench_reps(), be->ops->copy(be, c1, c0, cb));
    double copy_gbs = 2.0 * cb / (copy_ms * 1e-3) / 1e9;
    printf("| device-to-device copy (1 GiB) | %9.3f | | %8.0f |\n", copy_ms, copy_gbs);
    be->ops->dealloc(be, c0);
    be->ops->dealloc(be, c1);
    void *qkv = oc_dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL),
         *dqkv = oc_dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL);
    void *x = oc_dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL),
         *y = oc_dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *dx = oc_dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *w = oc_dev_rand(be, ZG_BF16, (size_t)C, 1.f, NULL), *bb = oc_dev_rand(be, ZG_BF16, (size_t)C, 0.1f, NULL);
    void *dw = oc_dev_rand(be, ZG_BF16, (size_t)C, 0.1f, NULL), *db = oc_dev_rand(be, ZG_BF16, (size_t)C, 0.1f, NULL);
    float *mean = be->ops->alloc(be, (size_t)N * 4, "mean"), *rstd = be->ops->alloc(be, (size_t)N * 4, "rstd");
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "stats");
    double af = 2.0 * B * NH * (double)T * T * (C / NH);
    float ms[3][2];
    /* cudnn-dq: cuDNN's path with cuDNN's own dense dQ product (ZGPT_SDPA_DQ=cudnn) instead of zgpt's kernel
     * over the causal half of its dS */
    const char *paths[3] = {"own", "cudnn", "cudnn-dq"};
    for (int p = 0; p < 3; p++) {
        oc_attn_path(p == 0 ? "own" : "cudnn");
        if (p == 2) setenv("ZGPT_SDPA_DQ", "cudnn", 1);
        long k0 = zg_backend_cuda_cudnn_attention_calls(be), q0 = zg_backend_cuda_cudnn_attention_dq_calls(be);
        size_t in_use0 = be->bytes_in_use;
        BENCH_TIME(&ctx, ms[p][0], oc_bench_reps(), be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
        BENCH_TIME(&ctx, ms[p][1], oc_bench_reps(),
                   be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
        int ran = zg_backend_cuda_cudnn_attention_calls(be) > k0; /* cuDNN actually ran (else it fell back) */
        float sf, sb; /* back to back (BENCH_STREAM), the figure torch's sdpa_bench.py prints beside it */
        BENCH_STREAM(&ctx, sf, 20, be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
        BENCH_STREAM(&ctx, sb, 20, be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
        printf("| attention_forward (%s) | %9.3f | %8.1f | |\n", paths[p], ms[p][0], af / (ms[p][0] * 1e-3) / 1e12);
        printf("| attention_backward (%s) | %9.3f | %8.1f | |\n", paths[p], ms[p][1],
               2.5 * af / (ms[p][1] * 1e-3) / 1e12);
        printf("ATTN %s fwd_ms %.4f bwd_ms %.4f cudnn_ran %d dq_kernel %d\n", paths[p], ms[p][0], ms[p][1], ran,
               zg_backend_cuda_cudnn_attention_dq_calls(be) > q0);
        printf("ATTN %s stream fwd_ms %.4f bwd_ms %.4f\n", paths[p], sf, sb);
        unsetenv("ZGPT_SDPA_DQ");
        /* what the path keeps allocated (cuDNN: its workspace, grown to the backward plan's need) */
        printf("ATTN %s kept_MiB %.1f\n", paths[p], ((double)be->bytes_in_use - (double)in_use0) / 1048576.0);
        fflush(stdout);
    }
    unsetenv("ZGPT_ATTENTION");
    /* LayerNorm bytes: forward reads x (and w, b), writes y, mean, rstd; backward (input form) reads dout,
     * x, w, mean, rstd and dinp, writes dinp (accumulated) and the per-block dw/db partials (small) */
    double fb = nc * es * 2 + (double)N * 8 + 2.0 * C * es, bwb = nc * es * 4 + (double)N * 8 + 3.0 * C * es;
    /* the default (row-group) kernels, then for comparison ZGPT_LN=group (the backward without its
     * asynchronous next-row copies) and =warp (the warp-per-row kernels) */
    const char *lnv[3] = {NULL, "group", "warp"};
    for (int v = 0; v < 3; v++) {
        if (v > 0) setenv("ZGPT_LN", lnv[v], 1);
        float lf, lb, lby;
        BENCH_TIME(&ctx, lf, oc_bench_reps(), be->ops->layernorm_forward(be, y, mean, rstd, x, w, bb, N, C));
        BENCH_TIME(&ctx, lb, oc_bench_reps(),
                   be->ops->layernorm_backward(be, dx, dw, db, y, x, NULL, w, NULL, mean, rstd, N, C, NULL, NULL));
        BENCH_TIME(&ctx, lby, oc_bench_reps(),
                   be->ops->layernorm_backward(be, dx, dw, db, y, NULL, x, w, bb, NULL, rstd, N, C, NULL, NULL));
        const char *ln_name[3] = {"layernorm_forward", "layernorm_backward", "layernorm_backward (from output)"};
        const char *key[3] = {"fwd", "bwd", "bwd_y"};
        float ln_ms[3] = {lf, lb, lby};
        double ln_bytes[3] = {fb, bwb, bwb + 2.0 * C * es};
        /* back to back (BENCH_STREAM): the GPU's time per call once the host runs ahead, as in a recorded step;
         * a single timed call also carries the launch after the first event (~5-8 us at this size) */
        float sf, sbk, sby;
        BENCH_STREAM(&ctx, sf, 20, be->ops->layernorm_forward(be, y, mean, rstd, x, w, bb, N, C));
        BENCH_STREAM(&ctx, sbk, 20,
                     be->ops->layernorm_backward(be, dx, dw, db, y, x, NULL, w, NULL, mean, rstd, N, C, NULL, NULL));
        BENCH_STREAM(&ctx, sby, 20,
                     be->ops->layernorm_backward(be, dx, dw, db, y, NULL, x, w, bb, NULL, rstd, N, C, NULL, NULL));
        float ln_sms[3] = {sf, sbk, sby};
        for (int i = 0; i < 3; i++) {
            double gbs = ln_bytes[i] / (ln_ms[i] * 1e-3) / 1e9, sgbs = ln_bytes[i] / (ln_sms[i] * 1e-3) / 1e9;
            printf("| %s%s%s | %9.3f | | %8.0f |\n", ln_name[i], v ? " ZGPT_LN=" : "", v ? lnv[v] : "", ln_ms[i], gbs);
            printf("LN%s %s ms %.4f MB %.1f GBs %.0f pct_nominal %.1f pct_copy %.1f\n", v ? lnv[v] : "", key[i],
                   ln_ms[i], ln_bytes[i] / 1e6, gbs, 100 * gbs / nominal, 100 * gbs / copy_gbs);
            printf("LN%s %s stream_ms %.4f GBs %.0f pct_nominal %.1f\n", v ? lnv[v] : "", key[i], ln_sms[i], sgbs,
                   100 * sgbs / nominal);
        }
    }
    unsetenv("ZGPT_LN");
    /* the backward with the projections' bias sums (dsum_in, dsum_out: LN2's in the model), in the row-group
     * kernel and by passes of their own around it (ZGPT_LN_SUMS=separate, v0.35's cost), beside the plain backward
     * (PERFORMANCE v0.36) */
    {
        void *si = be->ops->alloc(be, (size_t)C * 2, "dsum_in"), *so = be->ops->alloc(be, (size_t)C * 2, "dsum_out");
        be->ops->zero(be, si, (size_t)C * 2);
        be->ops->zero(be, so, (size_t)C * 2);
        float lp, lsf, lss;
        BENCH_TIME(&ctx, lp, oc_bench_reps(),
                   be->ops->layernorm_backward(be, dx, dw, db, y, x, NULL, w, NULL, mean, rstd, N, C, NULL, NULL));
        BENCH_TIME(&ctx, lsf, oc_bench_reps(),
                   be->ops->layernorm_backward(be, dx, dw, db, y, x, NULL, w, NULL, mean, rstd, N, C, si, so));
        setenv("ZGPT_LN_SUMS", "separate", 1);
        BENCH_TIME(&ctx, lss, oc_bench_reps(),
                   be->ops->layernorm_backward(be, dx, dw, db, y, x, NULL, w, NULL, mean, rstd, N, C, si, so));
        unsetenv("ZGPT_LN_SUMS");
        printf("| layernorm_backward + bias sums (fused / separate passes / no sums) | %9.4f / %.4f / %.4f | | |\n",
               lsf, lss, lp);
        printf("LNSUMS fused_ms %.4f separate_ms %.4f plain_ms %.4f\n", lsf, lss, lp);
        be->ops->dealloc(be, si);
        be->ops->dealloc(be, so);
    }
    printf("COPY GBs %.0f pct_nominal %.1f\n", copy_gbs, 100 * copy_gbs / nominal);
    /* the ceiling at LayerNorm's own size: a device-to-device copy moving the forward's bytes (x read, y
     * written: N*C*2 each) and the backward's (twice that), timed the same way; a 1 GiB copy hides the
     * launch and the ramp at both ends that a ~0.1 GB op pays */
    for (int i = 0; i < 2; i++) {
        size_t sb = (size_t)nc * (size_t)es * (size_t)(i + 1);
        void *s0 = be->ops->alloc(be, sb, "copy source"), *s1 = be->ops->alloc(be, sb, "copy destination");
        be->ops->zero(be, s0, sb);
        float sms;
        BENCH_TIME(&ctx, sms, oc_bench_reps(), be->ops->copy(be, s1, s0, sb));
        float stms;
        BENCH_STREAM(&ctx, stms, 20, be->ops->copy(be, s1, s0, sb));
        double sgbs = 2.0 * sb / (sms * 1e-3) / 1e9, stgbs = 2.0 * sb / (stms * 1e-3) / 1e9;
        printf("COPYLN %s stream_ms %.4f GBs %.0f pct_nominal %.1f\n", i ? "bwd" : "fwd", stms, stgbs,
               100 * stgbs / nominal);
        printf("| device-to-device copy (%.1f MB, LayerNorm %s's bytes) | %9.4f | | %8.0f |\n", 2.0 * sb / 1e6,
               i ? "backward" : "forward", sms, sgbs);
        printf("COPYLN %s ms %.4f MB %.1f GBs %.0f pct_nominal %.1f\n", i ? "bwd" : "fwd", sms, 2.0 * sb / 1e6, sgbs,
               100 * sgbs / nominal);
        be->ops->dealloc(be, s0);
        be->ops->dealloc(be, s1);
    }
    void *ptrs[] = {qkv, dqkv, x, y, dx, w, bb, dw, db, mean, rstd, stats};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    cudaEventDestroy(ctx.e0);
    cudaEventDestroy(ctx.e1);
}
