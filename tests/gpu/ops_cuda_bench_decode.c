/* gpu_test_ops_cuda, benchmarks of one decode step's ops and of the few-row products, per kernel variant
 * (--bench with ZG_BENCH_ONLY=decode). */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ZGPT_DECODE=old|new: the decode path's earlier kernels or the new ones (every op runs both; new with the
 * binned top-p, ZGPT_SAMPLE=cluster, which is opt-in until measured; the (v13) rows keep v0.13's); the step
 * graph also runs auto (the per-shape selection generation uses) and gemv / split (one new kernel family
 * alone: which one a difference comes from), and auto without PDL (nopdl), with the one-block sampler
 * (block), and with neither (v012: what generation ran before PDL and the multi-block sampler). "old" runs
 * without PDL and with the one-block sampler: the kernels as v0.11 launched them. gemv8: auto with the
 * few-row products (the tensor-core form from 2 rows) up to 8 rows (ZGPT_GEMV_MAX_N=8). v1 / v2: auto
 * with every few-row product in that kernel (ZGPT_GEMV); v2g1: v2 with one block per SM, v2nopf: v2
 * without the L2 prefetch before the PDL wait (v2 and v2g1 with it; auto was v2nopf from v0.15 to v0.19).
 * comb2: auto with split attention's combine as a kernel of its own (ZGPT_DECODE_COMBINE=kernel, v0.15's
 * form; v012 runs it too). oneblk: auto with decode attention one block per (row, head) at every B
 * (ZGPT_DECODE=oneblock: auto's rule at B=8 before v0.18). Grids (ZGPT_GEMV_GRID, blocks per SM) and
 * register budgets (ZGPT_GEMV_MINB): v2g3 = v2nopf at 3 blocks per SM (auto since v0.20: fc's 800 column
 * groups 3 to a block instead of 8 blocks doing a fourth), v2nopf keeps v0.19's 2; v2g3r: 3 per SM with
 * registers for 4 (64 a thread: a block of the next product fits beside 3 running ones, for PDL's early
 * start); v2g4: 4 per SM with registers for 4 (no room left for the next product's blocks); v2g3pf: auto's v2
 * (ZGPT_GEMV unset) with the 64 KB L2 prefetch before the wait (ZGPT_GEMV_PREFETCH=1). The deal of column groups
 * over v2's blocks: even (v2even) the even deal at every N (ZGPT_GEMV_EVEN=1; auto's at N <= 4 since v0.24), wave
 * (v2wave) never (ZGPT_GEMV_EVEN=0: auto before v0.24, every block of one wave), even2 (v2even2) the even deal
 * over at most 2 blocks per SM. shallow (v2shallow): without v0.24's deep form (8 chunks a buffer at 2 blocks per
 * SM for grids of at most 2 per SM: ZGPT_GEMV_DEEP=0); v2 .. v2g4 are the forms before it (ZGPT_GEMV_DEEP=0). (deep6,
 * 6 chunks a buffer for every product at 3 blocks per SM, lost in v0.24's only call: 2.063 ms against 1.919 at B=1,
 * H200; removed.) (layers, layers2, layerspf
 * and layers3, the 48 layers as one persistent kernel, went with that kernel in v0.22 and v0.23; pf and pflast,
 * the L2 prefetch branch, in v0.23.) */
/* ZGPT_GEMV's kernels for the few-row products (cuda_internal.h, zgc_gemv_pick) and v2's A/B knobs */
enum { GEMV_KINDS = 13 };
static const struct {
    const char *name, *gemv, *grid, *minb, *prefetch, *even, *deep; /* NULL: unset */
} gemv_kind[GEMV_KINDS] = {{"cublaslt", "cublaslt", NULL, NULL, NULL, NULL, NULL},
                           {"v1", "v1", NULL, NULL, NULL, NULL, NULL},
                           {"v2", "v2", "2", NULL, "1", NULL, "0"},
                           {"v2g1", "v2", "1", NULL, "1", NULL, "0"},
                           {"v2nopf", "v2", "2", NULL, "0", NULL, "0"},
                           {"v2g3", "v2", "3", "3", "0", NULL, "0"},
                           {"v2g3r", "v2", "3", "4", "0", NULL, "0"},
                           {"v2g4", "v2", "4", "4", "0", NULL, "0"},
                           {"v2g3pf", NULL, NULL, NULL, "1", NULL, NULL},
                           {"v2even", NULL, NULL, NULL, NULL, "1", NULL},
                           {"v2wave", NULL, NULL, NULL, NULL, "0", NULL},
                           {"v2even2", NULL, "2", NULL, NULL, "1", NULL},
                           {"v2shallow", NULL, NULL, NULL, NULL, NULL, "0"}};
enum { DEC_VARIANTS = 22 };
static const struct {
    const char *name, *decode, *pdl, *sample, *gemv_max_n, *combine; /* NULL: unset */
    int gemv;                                                        /* gemv_kind index; -1: ZGPT_GEMV unset */
} dec_variant[DEC_VARIANTS] = {{"old", "old", "0", "block", NULL, NULL, -1},
                               {"new", "new", NULL, "cluster", NULL, NULL, -1},
                               {"auto", NULL, NULL, NULL, NULL, NULL, -1},
                               {"gemv", "gemv", NULL, NULL, NULL, NULL, -1},
                               {"split", "split", NULL, NULL, NULL, NULL, -1},
                               {"nopdl", NULL, "0", NULL, NULL, NULL, -1},
                               {"block", NULL, NULL, "block", NULL, NULL, -1},
                               {"v012", NULL, "0", "block", NULL, "kernel", -1},
                               {"gemv8", NULL, NULL, NULL, "8", NULL, -1},
                               {"v1", NULL, NULL, NULL, NULL, NULL, 1},
                               {"v2", NULL, NULL, NULL, NULL, NULL, 2},
                               {"v2g1", NULL, NULL, NULL, NULL, NULL, 3},
                               {"v2nopf", NULL, NULL, NULL, NULL, NULL, 4},
                               {"comb2", NULL, NULL, NULL, NULL, "kernel", -1},
                               {"oneblk", "oneblock", NULL, NULL, NULL, NULL, -1},
                               {"v2g3", NULL, NULL, NULL, NULL, NULL, 5},
                               {"v2g3r", NULL, NULL, NULL, NULL, NULL, 6},
                               {"v2g4", NULL, NULL, NULL, NULL, NULL, 7},
                               {"even", NULL, NULL, NULL, NULL, NULL, 9},
                               {"wave", NULL, NULL, NULL, NULL, NULL, 10},
                               {"even2", NULL, NULL, NULL, NULL, NULL, 11},
                               {"shallow", NULL, NULL, NULL, NULL, NULL, 12}};
static void dec_env(const char *name, const char *value) {
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}
/* the ZGPT_GEMV this process started with: gemv_env(-1) restores it, so that gpu_validate's check of a bad
 * value (ZGPT_GEMV=bogus on the bench) reaches the first product instead of being unset before it */
const char *oc_gemv0;
static void gemv_env(int k) {
    dec_env("ZGPT_GEMV", k >= 0 ? gemv_kind[k].gemv : oc_gemv0);
    dec_env("ZGPT_GEMV_GRID", k >= 0 ? gemv_kind[k].grid : NULL);
    dec_env("ZGPT_GEMV_MINB", k >= 0 ? gemv_kind[k].minb : NULL);
    dec_env("ZGPT_GEMV_PREFETCH", k >= 0 ? gemv_kind[k].prefetch : NULL);
    dec_env("ZGPT_GEMV_EVEN", k >= 0 ? gemv_kind[k].even : NULL);
    dec_env("ZGPT_GEMV_DEEP", k >= 0 ? gemv_kind[k].deep : NULL);
}
static const char *dec_label(char *buf, size_t n, const char *op, int v) {
    dec_env("ZGPT_DECODE", dec_variant[v].decode);
    dec_env("ZGPT_PDL", dec_variant[v].pdl);
    dec_env("ZGPT_SAMPLE", dec_variant[v].sample);
    dec_env("ZGPT_GEMV_MAX_N", dec_variant[v].gemv_max_n);
    dec_env("ZGPT_DECODE_COMBINE", dec_variant[v].combine);
    gemv_env(dec_variant[v].gemv);
    snprintf(buf, n, "%s (%s)", op, dec_variant[v].name);
    return buf;
}
/* ZG_DEC_VARS="auto v2g4 ...": only those step-graph variants, and none of the per-op rows or product tables
 * (a short device call); unset: everything */
static int dec_only(void) {
    const char *v = getenv("ZG_DEC_VARS");
    return v != NULL && *v != '\0';
}
static int dec_wanted(const char *name) { return zt_env_selects("ZG_DEC_VARS", name); }
static void dec_unset(void) {
    unsetenv("ZGPT_DECODE_COMBINE");
    unsetenv("ZGPT_GEMV_MAX_N");
    unsetenv("ZGPT_DECODE");
    unsetenv("ZGPT_PDL");
    unsetenv("ZGPT_SAMPLE");
    gemv_env(-1);
}
/* one row per variant, old then new */
#define BENCH_DEC(ctx, op, flops, bytes, ...)                                                                          \
    do {                                                                                                               \
        char lab_[64];                                                                                                 \
        for (int v_ = 0; v_ < 2;                                                                                       \
             v_++) { /* the variant's environment before the timing (BENCH reads its label after) */                   \
            dec_label(lab_, sizeof lab_, op, v_);                                                                      \
            BENCH(ctx, lab_, flops, bytes, __VA_ARGS__);                                                               \
        }                                                                                                              \
        dec_unset();                                                                                                   \
    } while (0)

/* The decode step of GPT-2 XL as generation records it (a graph of 48 layers' LayerNorms, products,
 * decode attention and residual adds, the final LayerNorm, the LM head and a top-k 200 draw), each
 * layer with its own weights and KV cache (so nothing is served from L2 that generation would read
 * from DRAM). ms per replay, and the tokens/s that gives, per ZGPT_DECODE variant. */
static void bench_decode_step(bench_ctx *ctx, int B, void *wte, void *logits, const zg_sample_row *drows, int32_t *ids,
                              int32_t *pos) {
    zg_backend *be = ctx->be;
    enum { NL = 48 };
    int C = 1600, NH = 25, hs = C / NH, V = 50257, Vp = 50304, maxT = 1024;
    size_t lw = (size_t)12 * C * C, kvn = (size_t)B * NH * maxT * hs;
    void *wts = oc_dev_big(be, ZG_BF16, NL * lw, 0.02f), *kc = oc_dev_big(be, ZG_BF16, NL * kvn, 1.f),
         *vc = oc_dev_big(be, ZG_BF16, NL * kvn, 1.f);
    void *x = oc_dev_rand(be, ZG_BF16, (size_t)B * C, 1.f, NULL),
         *ln = oc_dev_rand(be, ZG_BF16, (size_t)B * C, 1.f, NULL);
    void *qkv = oc_dev_rand(be, ZG_BF16, (size_t)B * 3 * C, 1.f, NULL),
         *att = oc_dev_rand(be, ZG_BF16, (size_t)B * C, 1.f, NULL);
    void *h = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *pre = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *gain = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 1.f, NULL),
         *bias = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    const zg_backend_ops *op = be->ops;
#define DEC_STEP()                                                                                                     \
    do {                                                                                                               \
        for (int l = 0; l < NL; l++) {                                                                                 \
            char *wl = (char *)wts + (size_t)l * lw * 2;                                                               \
            void *wqkv = wl, *wproj = wl + (size_t)3 * C * C * 2, *wfc = wl + (size_t)4 * C * C * 2,                   \
                 *wfp = wl + (size_t)8 * C * C * 2;                                                                    \
            op->layernorm_matmul_forward(be, qkv, NULL, ln, x, gain, bias, wqkv, bias, B, C, 3 * C);                   \
            op->attention_decode(be, att, qkv, (char *)kc + (size_t)l * kvn * 2, (char *)vc + (size_t)l * kvn * 2,     \
                                 pos, B, maxT, C, NH);                                                                 \
            op->matmul_forward(be, x, NULL, att, wproj, bias, x, B, C, C);                                             \
            op->layernorm_matmul_forward(be, h, pre, ln, x, gain, bias, wfc, bias, B, C, 4 * C);                       \
            op->matmul_forward(be, x, NULL, h, wfp, bias, x, B, 4 * C, C);                                             \
        }                                                                                                              \
        op->layernorm_forward(be, ln, NULL, NULL, x, gain, bias, B, C);                                                \
        op->matmul_forward(be, logits, NULL, ln, wte, NULL, NULL, B, C, Vp);                                           \
        op->sample(be, ids, logits, drows, pos + 1, B, V, Vp);                                                         \
    } while (0)
    float step_ms[DEC_VARIANTS] = {0};
    for (int v = 0; v < DEC_VARIANTS; v++) {
        if (!dec_wanted(dec_variant[v].name)) continue;
        char lab[96];
        dec_label(lab, sizeof lab, "decode step graph, 48 layers + head + top-k", v);
        DEC_STEP(); /* plans and scratch made outside the recording, as generation does */
        ZT_CHECK(op->graph_begin(be) == 0);
        DEC_STEP();
        zg_graph *g = op->graph_end(be);
        ZT_CHECK(g != NULL);
        if (g) {
            float med;
            BENCH_TIME(ctx, med, oc_bench_reps(), op->graph_launch(be, g));
            step_ms[v] = med;
            printf("| %-34s | %9.3f | %8.0f tok/s | %8.0f |\n", lab, med, B / (med * 1e-3),
                   (double)(NL * lw + (size_t)Vp * C) * 2 / (med * 1e-3) / 1e9);
            op->graph_destroy(be, g);
        }
    }
#undef DEC_STEP
    dec_unset();
    /* for scripts/gpu_validate.sh's decode phase */
    for (int v = 0; v < DEC_VARIANTS; v++)
        if (dec_wanted(dec_variant[v].name)) /* a variant not run has no line: gpu_validate says n/a */
            printf("\nDECSTEP B=%d %s ms %.4f tok_s %.1f", B, dec_variant[v].name, step_ms[v],
                   step_ms[v] > 0 ? B / (step_ms[v] * 1e-3) : 0.0);
    printf("\n");
    void *ptrs[] = {wts, kc, vc, x, ln, qkv, att, h, pre, gain, bias};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
}

/* The four products of a GPT-2 XL layer at B rows (bf16) with each ZGPT_GEMV kernel: alone (each timed
 * run reads the next of 48 layers' weights, 2.95 GB in all, so nothing comes from L2 that a decode step
 * reads from DRAM) and chained (a graph of the 48 layers' four products, the LayerNorms fused in front of
 * qkv and fc as the step runs them, no attention: what the step's products cost back to back). GB/s =
 * weight bytes / time. Table rows, and GEMV / GEMVCHAIN lines for scripts/gpu_validate.sh's decode phase. */
static void bench_gemv(bench_ctx *ctx, int B) {
    zg_backend *be = ctx->be;
    const zg_backend_ops *op = be->ops;
    enum { NL = 48, C = 1600 };
    size_t lw = (size_t)12 * C * C;
    void *wts = oc_dev_big(be, ZG_BF16, NL * lw, 0.02f);
    void *x = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *y = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *pre = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *res = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *ln = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *gain = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 1.f, NULL),
         *bias = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    static const struct {
        const char *key, *name;
        int cin, cout, off, gelu, residual; /* sizes in units of C; off: the weight's offset in C * C */
    } sh[4] = {{"qkv", "qkv", 1, 3, 0, 0, 0},
               {"proj", "attn proj + residual", 1, 1, 3, 0, 1},
               {"fc", "fc + GELU", 1, 4, 4, 1, 0},
               {"fcproj", "fc proj + residual", 4, 1, 8, 0, 1}};
    printf("\n| few-row product, B=%d, XL | ms (median) | | GB/s |\n|---|---|---|---|\n", B);
    int layer = 0;
    for (int si = 0; si < 4; si++)
        for (int k = 0; k < GEMV_KINDS; k++) {
            gemv_env(k);
            int Ci = sh[si].cin * C, OC = sh[si].cout * C;
            float med;
            BENCH_TIME(ctx, med, oc_bench_reps(), {
                const char *wl = (const char *)wts + (size_t)(layer++ % NL) * lw * 2 + (size_t)sh[si].off * C * C * 2;
                op->matmul_forward(be, y, sh[si].gelu ? pre : NULL, x, wl, bias, sh[si].residual ? res : NULL, B, Ci,
                                   OC);
            });
            double gbs = 2.0 * Ci * OC / (med * 1e-3) / 1e9;
            printf("| %s alone (%s) | %9.4f | | %8.0f |\n", sh[si].name, gemv_kind[k].name, med, gbs);
            printf("GEMV B=%d %s %s ms %.4f GBs %.0f\n", B, sh[si].key, gemv_kind[k].name, med, gbs);
        }
#define GEMV_CHAIN()                                                                                                   \
    do {                                                                                                               \
        for (int l = 0; l < NL; l++) {                                                                                 \
            char *wl = (char *)wts + (size_t)l * lw * 2;                                                               \
            op->layernorm_matmul_forward(be, y, NULL, ln, x, gain, bias, wl, bias, B, C, 3 * C);                       \
            op->matmul_forward(be, x, NULL, res, wl + (size_t)3 * C * C * 2, bias, x, B, C, C);                        \
            op->layernorm_matmul_forward(be, y, pre, ln, x, gain, bias, wl + (size_t)4 * C * C * 2, bias, B, C,        \
                                         4 * C);                                                                       \
            op->matmul_forward(be, x, NULL, y, wl + (size_t)8 * C * C * 2, bias, x, B, 4 * C, C);                      \
        }                                                                                                              \
    } while (0)
    for (int k = 0; k < GEMV_KINDS; k++) {
        gemv_env(k);
        GEMV_CHAIN(); /* plans made outside the recording */
        ZT_CHECK(op->graph_begin(be) == 0);
        GEMV_CHAIN();
        zg_graph *g = op->graph_end(be);
        ZT_CHECK(g != NULL);
        if (g == NULL) continue;
        float med;
        BENCH_TIME(ctx, med, oc_bench_reps(), op->graph_launch(be, g));
        double gbs = (double)NL * lw * 2 / (med * 1e-3) / 1e9;
        printf("| 48 x 4 products chained, graph (%s) | %9.4f | | %8.0f |\n", gemv_kind[k].name, med, gbs);
        printf("GEMVCHAIN B=%d %s ms %.4f GBs %.0f\n", B, gemv_kind[k].name, med, gbs);
        op->graph_destroy(be, g);
    }
#undef GEMV_CHAIN
    gemv_env(-1);
    void *ptrs[] = {wts, x, y, pre, res, ln, gain, bias};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) op->dealloc(be, ptrs[k]);
}

/* One token's decode-step ops at GPT-2 XL shapes (bf16): the products read the whole weight matrix for
 * B rows (GB/s = weight bytes / time: the bandwidth bound of generation), decode attention over L
 * cached positions, and the sample op over the 50257 logits of each row; each op with ZGPT_DECODE=old
 * and =new (the earlier and the current kernels), then the whole step as a graph. */
void oc_bench_decode(zg_backend *be, int B, int L) {
    bench_ctx ctx = {be, NULL, NULL};
    cudaEventCreate(&ctx.e0);
    cudaEventCreate(&ctx.e1);
    int C = 1600, NH = 25, hs = C / NH, V = 50257, Vp = 50304, maxT = 1024;
    printf("\n### decode step ops, GPT-2 XL: B=%d, %d cached positions (bf16)\n\n", B, L);
    printf("| op | ms (median) | TFLOP/s | GB/s |\n|---|---|---|---|\n");
    void *x = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *y = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *pre = oc_dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *w = oc_dev_rand(be, ZG_BF16, (size_t)4 * C * C, 0.02f, NULL),
         *bias = oc_dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    void *wte = oc_dev_big(be, ZG_BF16, (size_t)Vp * C, 0.02f);
    void *logits = oc_dev_rand(be, ZG_BF16, (size_t)B * Vp, 3.f, NULL);
    void *kc = oc_dev_big(be, ZG_BF16, (size_t)B * NH * maxT * hs, 1.f),
         *vc = oc_dev_big(be, ZG_BF16, (size_t)B * NH * maxT * hs, 1.f);
    void *qkv = oc_dev_rand(be, ZG_BF16, (size_t)B * 3 * C, 1.f, NULL);
    int32_t hpos[2] = {L - 1, L}, *pos = be->ops->alloc(be, sizeof hpos, "pos"),
            *ids = be->ops->alloc(be, B * 4, "ids");
    be->ops->upload(be, pos, hpos, sizeof hpos);
    zg_sample_row *rows = malloc((size_t)B * sizeof *rows),
                  *drows = be->ops->alloc(be, (size_t)B * sizeof *rows, "rows");
    double wb = 2.0 * C * C;
    if (!dec_only()) { /* the per-op rows and the product tables */
        BENCH(&ctx, "layernorm fwd", 0, (double)B * C * 4,
              be->ops->layernorm_forward(be, y, NULL, NULL, x, bias, bias, B, C));
        BENCH_DEC(&ctx, "matmul qkv (weights read)", 2.0 * B * 3 * wb / 2, 3 * wb,
                  be->ops->matmul_forward(be, y, NULL, x, w, bias, NULL, B, C, 3 * C));
        BENCH_DEC(&ctx, "matmul attn proj + residual", 2.0 * B * wb / 2, wb,
                  be->ops->matmul_forward(be, y, NULL, x, w, bias, pre, B, C, C));
        BENCH_DEC(&ctx, "layernorm + matmul qkv", 2.0 * B * 3 * wb / 2, 3 * wb,
                  be->ops->layernorm_matmul_forward(be, y, NULL, pre, x, bias, bias, w, bias, B, C, 3 * C));
        BENCH_DEC(&ctx, "layernorm + matmul fc + GELU", 2.0 * B * 4 * wb / 2, 4 * wb,
                  be->ops->layernorm_matmul_forward(be, y, pre, qkv, x, bias, bias, w, bias, B, C, 4 * C));
        BENCH_DEC(&ctx, "matmul fc + GELU", 2.0 * B * 4 * wb / 2, 4 * wb,
                  be->ops->matmul_forward(be, y, pre, x, w, bias, NULL, B, C, 4 * C));
        BENCH_DEC(&ctx, "matmul fc proj + residual", 2.0 * B * 4 * wb / 2, 4 * wb,
                  be->ops->matmul_forward(be, y, NULL, pre, w, bias, x, B, 4 * C, C));
        BENCH_DEC(&ctx, "attention_decode", 0, 2.0 * B * NH * L * hs * 2,
                  be->ops->attention_decode(be, y, qkv, kc, vc, pos, B, maxT, C, NH));
        BENCH_DEC(&ctx, "lm head (wte read)", 2.0 * B * C * Vp, 2.0 * Vp * C,
                  be->ops->matmul_forward(be, logits, NULL, x, wte, NULL, NULL, B, C, Vp));
        const struct {
            const char *name;
            float t;
            int k;
            float p;
        } cases[] = {{"sample greedy", 0.0f, 0, 1.0f},
                     {"sample T=0.8 top-k 200", 0.8f, 200, 1.0f},
                     {"sample top-p 0.9", 1.0f, 0, 0.9f},
                     {"sample T=0.7 top-k 200 top-p 0.95", 0.7f, 200, 0.95f},
                     {"sample all (no cut)", 1.0f, 0, 1.0f}};
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            for (int b = 0; b < B; b++) {
                zg_sample_row r = {cases[c].t > 0 ? 1.0f / cases[c].t : 0.0f, cases[c].k, cases[c].p, 0, (uint64_t)b};
                rows[b] = r;
            }
            be->ops->upload(be, drows, rows, (size_t)B * sizeof *rows);
            BENCH_DEC(&ctx, cases[c].name, 0, (double)B * Vp * 2,
                      be->ops->sample(be, ids, logits, drows, pos + 1, B, V, Vp));
            if (cases[c].p < 1.0f) { /* top-p on the cluster kernel with v0.13's radix selection: (new)'s A/B */
                char lab[64];
                snprintf(lab, sizeof lab, "%s (v13)", cases[c].name);
                setenv("ZGPT_DECODE", "new", 1);
                setenv("ZGPT_SAMPLE", "cluster-v13", 1);
                BENCH(&ctx, lab, 0, (double)B * Vp * 2, be->ops->sample(be, ids, logits, drows, pos + 1, B, V, Vp));
                dec_unset();
            }
        }
        bench_gemv(&ctx, B);
    }
    /* the step's draw: T=0.8, top-k 200 */
    for (int b = 0; b < B; b++) {
        zg_sample_row r = {1.0f / 0.8f, 200, 1.0f, 0, (uint64_t)b};
        rows[b] = r;
    }
    be->ops->upload(be, drows, rows, (size_t)B * sizeof *rows);
    bench_decode_step(&ctx, B, wte, logits, drows, ids, pos);
    void *ptrs[] = {x, y, pre, w, bias, wte, logits, kc, vc, qkv, pos, ids, drows};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    free(rows);
    cudaEventDestroy(ctx.e0);
    cudaEventDestroy(ctx.e1);
}
