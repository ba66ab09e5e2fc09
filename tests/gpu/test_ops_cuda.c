/* Every op of the CUDA backend against fp64 host references on fresh random inputs, with every
 * output poisoned (NaN) beforehand, in fp32, bf16 and fp16 (per-dtype tolerances on the relative
 * norm error ||out - ref|| / ||ref||). The inputs the references see are the device's rounded
 * values (read back with download_f32), so only the op's own error is measured.
 *
 *   gpu_test_ops_cuda            correctness (ctest -L gpu)
 *   gpu_test_ops_cuda --bench    per-op kernel times (CUDA events, median) for GPT-2 124M and XL shapes
 *                                (ZG_BENCH_ONLY=attn: attention on both paths, LayerNorm bandwidth) */
#include "backend/backend.h"
#include "backend/cuda/backend_cuda.h"
#include "core/error.h"
#include "testutil.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t g_rng = 0x5eed1234abcdULL;
static zg_backend *g_be[3]; /* fp32, bf16, fp16 */

static const char *dt_name(zg_dtype dt) { return dt == ZG_F32 ? "fp32" : (dt == ZG_BF16 ? "bf16" : "fp16"); }
/* observed maxima on an H200: fp32 3.4e-6, bf16 2.9e-3, fp16 3.6e-4 (output rounding) */
static double tol_of(zg_dtype dt) { return dt == ZG_F32 ? 2e-5 : (dt == ZG_BF16 ? 8e-3 : 1.5e-3); }

/* random device buffer; host gets the rounded values */
static void *dev_rand(zg_backend *be, zg_dtype dt, size_t n, float amp, float *host) {
    float *h = host ? host : malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = amp * zt_rand_uniform(&g_rng);
    void *d = be->ops->alloc(be, n * (dt == ZG_F32 ? 4 : 2), "test buffer");
    ZT_CHECK(d != NULL);
    be->ops->upload_f32(be, d, dt, h, n);
    be->ops->download_f32(be, h, d, dt, n);
    if (!host) free(h);
    return d;
}

static void *dev_nan(zg_backend *be, zg_dtype dt, size_t n) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    void *d = be->ops->alloc(be, n * (dt == ZG_F32 ? 4 : 2), "test output");
    be->ops->upload_f32(be, d, dt, h, n);
    free(h);
    return d;
}

static void poison(zg_backend *be, void *d, zg_dtype dt, size_t n) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    be->ops->upload_f32(be, d, dt, h, n);
    free(h);
}

/* a large random buffer without generating every value on the host: a 4M-element random block
 * copied over it (benchmarks only) */
static void *dev_big(zg_backend *be, zg_dtype dt, size_t n, float amp) {
    size_t blk = (size_t)4 << 20, es = dt == ZG_F32 ? 4 : 2;
    void *src = dev_rand(be, dt, blk, amp, NULL);
    void *d = be->ops->alloc(be, n * es, "benchmark buffer");
    ZT_CHECK(d != NULL);
    for (size_t off = 0; off < n; off += blk)
        be->ops->copy(be, (char *)d + off * es, src, (n - off < blk ? n - off : blk) * es);
    be->ops->dealloc(be, src);
    return d;
}

static float *dl(zg_backend *be, const void *d, zg_dtype dt, size_t n) {
    float *h = malloc(n * sizeof(float) + 1);
    be->ops->download_f32(be, h, d, dt, n);
    return h;
}

static void check_rel_print(int print, const char *what, zg_dtype dt, const float *out, const double *ref, size_t n,
                            double tol) {
    double num = 0, den = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) bad++;
        double d = out[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    double rel = sqrt(num / (den > 0 ? den : 1e-300));
    int ok = bad == 0 && rel <= tol;
    if (print || !ok)
        printf("  %-40s %s  rel err %.3e (tol %.1e)%s\n", what, dt_name(dt), rel, tol, bad ? "  NON-FINITE" : "");
    ZT_CHECK_MSG(ok, "%s %s: relative error %.3e > %.1e or %zu non-finite of %zu", what, dt_name(dt), rel, tol, bad, n);
}
static void check_rel(const char *what, zg_dtype dt, const float *out, const double *ref, size_t n, double tol) {
    check_rel_print(1, what, dt, out, ref, n, tol);
}
/* the same check, printing only a failure */
static void check_rel_quiet(const char *what, zg_dtype dt, const float *out, const double *ref, size_t n, double tol) {
    check_rel_print(0, what, dt, out, ref, n, tol);
}

static double gelu_d(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad_d(double x) {
    double k = 0.7978845608028654, u = k * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * k * (1 + 3 * 0.044715 * x * x);
}

/* n token ids from host memory into a new device array */
static int32_t *dev_tokens_upload(zg_backend *be, const int32_t *host, int n) {
    int32_t *d = be->ops->alloc(be, (size_t)n * 4, "tokens");
    be->ops->upload(be, d, host, (size_t)n * 4);
    return d;
}

static int32_t *dev_tokens(zg_backend *be, int n, int V, int32_t *host) {
    for (int i = 0; i < n; i++) host[i] = (int32_t)(zt_rand_u64(&g_rng) % (uint64_t)V);
    return dev_tokens_upload(be, host, n);
}

/* ---- casts, upload/download ------------------------------------------------------------------ */

static void test_casts(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        size_t n = 1000003;
        float *h = malloc(n * 4), *back;
        for (size_t i = 0; i < n; i++) h[i] = 3.f * zt_rand_uniform(&g_rng);
        for (int s = 0; s < 3; s++) {
            zg_dtype st = (zg_dtype)s;
            void *d = be->ops->alloc(be, n * 4, "cast src");
            be->ops->upload_f32(be, d, st, h, n);
            back = dl(be, d, st, n);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                float want = st == ZG_F32 ? h[i]
                                          : (st == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(h[i]))
                                                           : zg_f16_to_f32(zg_f32_to_f16(h[i])));
                if (back[i] != want) bad++;
            }
            ZT_CHECK_MSG(bad == 0, "upload_f32/download_f32 %s: %zu of %zu differ from host rounding", dt_name(st), bad,
                         n);
            for (int t = 0; t < 3; t++) {
                zg_dtype tt = (zg_dtype)t;
                void *o = dev_nan(be, tt, n);
                be->ops->cast(be, o, tt, d, st, n);
                float *c = dl(be, o, tt, n);
                size_t bad2 = 0;
                for (size_t i = 0; i < n; i++) {
                    float want = tt == ZG_F32 ? back[i]
                                              : (tt == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(back[i]))
                                                               : zg_f16_to_f32(zg_f32_to_f16(back[i])));
                    if (c[i] != want) bad2++;
                }
                ZT_CHECK_MSG(bad2 == 0, "cast %s -> %s: %zu of %zu wrong", dt_name(st), dt_name(tt), bad2, n);
                free(c);
                be->ops->dealloc(be, o);
            }
            free(back);
            be->ops->dealloc(be, d);
        }
        free(h);
    }
    printf("  casts and fp32 transfers: exact against host rounding\n");
}

/* ---- embeddings ----------------------------------------------------------------------------- */

/* Token distributions for the embedding tests: the backward sums each token's rows in chunks of 32
 * sorted rows (runs inside a chunk, crossing one boundary, spanning many chunks, whole chunks). */
enum { TOK_FEW_IDS, TOK_SKEWED, TOK_ONE_ID, TOK_CASES };
static int32_t *dev_tokens_case(zg_backend *be, int n, int kind, int32_t *host) {
    if (kind == TOK_FEW_IDS) return dev_tokens(be, n, 20, host); /* few distinct ids: runs of ~5 */
    for (int i = 0; i < n; i++) {
        uint64_t r = zt_rand_u64(&g_rng);
        /* skewed: 60% one id (a run over ~20 chunks), 5% another (~2 chunks), the rest spread like text */
        host[i] = kind == TOK_ONE_ID ? 17 : r % 100 < 60 ? 7 : r % 100 < 65 ? 40 : (int32_t)((r >> 8) % 63);
    }
    return dev_tokens_upload(be, host, n);
}

static void test_encoder(void) {
    for (int di = 0; di < 3 * TOK_CASES; di++) {
        zg_backend *be = g_be[di % 3];
        int kind = di / 3;
        zg_dtype dt = be->act_dtype;
        int B = kind == TOK_FEW_IDS ? 3 : 4, T = kind == TOK_FEW_IDS ? 37 : 257, C = 96, Vp = 64, maxT = 300;
        int N = B * T;
        int32_t *tok = malloc(N * 4);
        float *wte = malloc((size_t)Vp * C * 4), *wpe = malloc((size_t)maxT * C * 4);
        int32_t *dtok = dev_tokens_case(be, N, kind, tok);
        void *dwte_ = dev_rand(be, dt, (size_t)Vp * C, 1.f, wte), *dwpe_ = dev_rand(be, dt, (size_t)maxT * C, 1.f, wpe);
        void *out = dev_nan(be, dt, (size_t)N * C);
        be->ops->encoder_forward(be, out, dtok, dwte_, dwpe_, B, T, C);
        float *o = dl(be, out, dt, (size_t)N * C);
        double *ref = malloc((size_t)N * C * 8);
        for (int i = 0; i < N; i++)
            for (int c = 0; c < C; c++)
                ref[(size_t)i * C + c] = (double)wte[(size_t)tok[i] * C + c] + wpe[(size_t)(i % T) * C + c];
        check_rel("encoder_forward", dt, o, ref, (size_t)N * C, tol_of(dt));
        /* backward: dwte, dwpe accumulate (start from random values) */
        float *dout = malloc((size_t)N * C * 4);
        void *ddout = dev_rand(be, dt, (size_t)N * C, 1.f, dout);
        float *gte = malloc((size_t)Vp * C * 4), *gpe = malloc((size_t)maxT * C * 4);
        void *dgte = dev_rand(be, dt, (size_t)Vp * C, 0.5f, gte), *dgpe = dev_rand(be, dt, (size_t)maxT * C, 0.5f, gpe);
        be->ops->encoder_backward(be, dgte, dgpe, ddout, dtok, B, T, C);
        double *rte = malloc((size_t)Vp * C * 8), *rpe = malloc((size_t)maxT * C * 8);
        for (size_t i = 0; i < (size_t)Vp * C; i++) rte[i] = gte[i];
        for (size_t i = 0; i < (size_t)maxT * C; i++) rpe[i] = gpe[i];
        for (int i = 0; i < N; i++)
            for (int c = 0; c < C; c++) {
                rte[(size_t)tok[i] * C + c] += dout[(size_t)i * C + c];
                rpe[(size_t)(i % T) * C + c] += dout[(size_t)i * C + c];
            }
        float *ote = dl(be, dgte, dt, (size_t)Vp * C), *ope = dl(be, dgpe, dt, (size_t)maxT * C);
        static const char *kinds[TOK_CASES] = {"20 ids", "skewed: 60% one id", "one id"};
        char name[96];
        snprintf(name, sizeof name, "encoder_backward dwte (%s, N=%d)", kinds[kind], N);
        check_rel(name, dt, ote, rte, (size_t)Vp * C, tol_of(dt));
        check_rel("encoder_backward dwpe", dt, ope, rpe, (size_t)maxT * C, tol_of(dt));
        /* deterministic: the same inputs give bitwise the same dwte */
        void *dgte2 = dev_rand(be, dt, (size_t)Vp * C, 0.5f, NULL);
        be->ops->upload_f32(be, dgte2, dt, gte, (size_t)Vp * C);
        be->ops->encoder_backward(be, dgte2, dgpe, ddout, dtok, B, T, C);
        float *ote2 = dl(be, dgte2, dt, (size_t)Vp * C);
        ZT_CHECK_MSG(memcmp(ote, ote2, (size_t)Vp * C * 4) == 0, "encoder_backward (%s, %s) not deterministic",
                     kinds[kind], dt_name(dt));
        free(ote2);
        be->ops->dealloc(be, dgte2);
        free(tok);
        free(wte);
        free(wpe);
        free(o);
        free(ref);
        free(dout);
        free(gte);
        free(gpe);
        free(rte);
        free(rpe);
        free(ote);
        free(ope);
        be->ops->dealloc(be, dtok);
        be->ops->dealloc(be, dwte_);
        be->ops->dealloc(be, dwpe_);
        be->ops->dealloc(be, out);
        be->ops->dealloc(be, ddout);
        be->ops->dealloc(be, dgte);
        be->ops->dealloc(be, dgpe);
    }
}

/* ---- LayerNorm ------------------------------------------------------------------------------- */

static void ln_ref(double *out, double *mean, double *rstd, const float *x, const float *w, const float *b, int N,
                   int C) {
    for (int i = 0; i < N; i++) {
        const float *r = x + (size_t)i * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += r[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (r[c] - m) * (r[c] - m);
        v /= C;
        double rs = 1.0 / sqrt(v + 1e-5);
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = (r[c] - m) * rs * w[c] + b[c];
        mean[i] = m;
        rstd[i] = rs;
    }
}

/* xhat of element k = (i, c) in the input form (from_y 0) or the output form (0 where w == 0) */
static double ln_ref_xhat(const float *src, const float *w, const float *b, const float *mean, const float *rstd,
                          int from_y, int i, int c, size_t k) {
    if (from_y) return w[c] != 0.f ? ((double)src[k] - b[c]) / w[c] : 0.0;
    return (src[k] - (double)mean[i]) * rstd[i];
}

/* LayerNorm backward reference in fp64: rdi = dinp0 + ..., rdw = dw0 + ..., rdb = db0 + ... (N,C), (C).
 * Input form (from_y 0): xhat = (src - mean) * rstd with src = x. Output form (from_y 1): xhat =
 * (src - b) / w with src = y, 0 where w == 0 (mean unused). */
static void ln_bwd_ref(double *rdi, double *rdw, double *rdb, const float *dinp0, const float *dw0, const float *db0,
                       const float *dout, const float *src, const float *w, const float *b, const float *mean,
                       const float *rstd, int from_y, int N, int C) {
    for (int c = 0; c < C; c++) {
        rdw[c] = dw0[c];
        rdb[c] = db0[c];
    }
    for (int i = 0; i < N; i++) {
        double s1 = 0, s2 = 0;
        for (int c = 0; c < C; c++) {
            size_t k = (size_t)i * C + c;
            double xh = ln_ref_xhat(src, w, b, mean, rstd, from_y, i, c, k), dn = (double)dout[k] * w[c];
            s1 += dn;
            s2 += dn * xh;
        }
        s1 /= C;
        s2 /= C;
        for (int c = 0; c < C; c++) {
            size_t k = (size_t)i * C + c;
            double xh = ln_ref_xhat(src, w, b, mean, rstd, from_y, i, c, k), dn = (double)dout[k] * w[c];
            rdi[k] = dinp0[k] + rstd[i] * (dn - s1 - xh * s2);
            rdw[c] += dout[k] * xh;
            rdb[c] += dout[k];
        }
    }
}

static size_t count_nonfinite(const float *v, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(v[i]);
    return bad;
}

/* variant: NULL = the default kernels (row groups: 16-bit C % 8 == 0 up to C = 4096, fp32 C % 4 == 0 up to
 * 2048; 96 -> 1 warp per row, 768 -> 2, 1600 -> 4 (fp32: 8), 2056 -> 8 (fp32: the warp kernels); the
 * backward with asynchronous next-row copies), "group" = the same without those copies, "warp" =
 * ZGPT_LN=warp, the warp-per-row kernels (16-bit C % 8 == 0 and C <= 2048: the register-resident ones, 768:
 * 3 vectors per lane, 1600: 7, 96: 1; 2056 (9 vectors per lane) the vector fallback; fp32 96, 100, 768
 * register, 1600, 2056 fallback). 100 and 37 (C % 8 != 0) take the scalar kernels either way. */
static void test_layernorm_variant(const char *variant) {
    if (variant != NULL)
        setenv("ZGPT_LN", variant, 1);
    else
        unsetenv("ZGPT_LN");
    /* Each shape runs the backward in both forms (from x and mean/rstd; from y, b and rstd). */
    int shapes[][2] = {{4096, 768}, {1000, 1600}, {67, 96}, {33, 1600}, {16, 768}, {9, 100}, {5, 37}, {7, 2056}};
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        for (int si = 0; si < nshapes; si++) {
            int N = shapes[si][0], C = shapes[si][1];
            size_t nc = (size_t)N * C;
            float *a = malloc(nc * 4), *w = malloc(C * 4), *bias = malloc(C * 4);
            void *da = dev_rand(be, dt, nc, 2.f, a);
            void *dw = dev_rand(be, dt, C, 1.5f, w), *dbias = dev_rand(be, dt, C, 0.5f, bias);
            float *mean_d = be->ops->alloc(be, N * 4, "mean"), *rstd_d = be->ops->alloc(be, N * 4, "rstd");
            void *out = dev_nan(be, dt, nc);
            double *ref = malloc(nc * 8), *rm = malloc(N * 8), *rr = malloc(N * 8);
            char name[96];
            /* plain */
            be->ops->layernorm_forward(be, out, mean_d, rstd_d, da, dw, dbias, N, C);
            ln_ref(ref, rm, rr, a, w, bias, N, C);
            float *o = dl(be, out, dt, nc), *om = dl(be, mean_d, ZG_F32, N), *orr = dl(be, rstd_d, ZG_F32, N);
            snprintf(name, sizeof name, "layernorm_forward%s%s N=%d C=%d", variant ? " ZGPT_LN=" : "",
                     variant ? variant : "", N, C);
            check_rel(name, dt, o, ref, nc, tol_of(dt));
            check_rel("  mean", dt, om, rm, N, 1e-5);
            check_rel("  rstd", dt, orr, rr, N, 1e-4);
            free(o);
            free(om);
            free(orr);
            /* statistics not wanted */
            poison(be, out, dt, nc);
            be->ops->layernorm_forward(be, out, NULL, NULL, da, dw, dbias, N, C);
            o = dl(be, out, dt, nc);
            check_rel("  without mean/rstd", dt, o, ref, nc, tol_of(dt));
            free(o);
            /* backward from the reference statistics of x = a */
            float *fm = malloc(N * 4), *fr = malloc(N * 4);
            for (int i = 0; i < N; i++) {
                fm[i] = (float)rm[i];
                fr[i] = (float)rr[i];
            }
            be->ops->upload(be, mean_d, fm, N * 4);
            be->ops->upload(be, rstd_d, fr, N * 4);
            float *dout = malloc(nc * 4), *dinp0 = malloc(nc * 4), *dw0 = malloc(C * 4), *db0 = malloc(C * 4);
            void *ddout = dev_rand(be, dt, nc, 1.f, dout), *ddinp = dev_rand(be, dt, nc, 0.3f, dinp0);
            void *ddw = dev_rand(be, dt, C, 0.3f, dw0), *ddb = dev_rand(be, dt, C, 0.3f, db0);
            be->ops->layernorm_backward(be, ddinp, ddw, ddb, ddout, da, NULL, dw, NULL, mean_d, rstd_d, N, C);
            double *rdi = malloc(nc * 8), *rdw = malloc(C * 8), *rdb = malloc(C * 8);
            ln_bwd_ref(rdi, rdw, rdb, dinp0, dw0, db0, dout, a, w, NULL, fm, fr, 0, N, C);
            float *odi = dl(be, ddinp, dt, nc), *odw = dl(be, ddw, dt, C), *odb = dl(be, ddb, dt, C);
            snprintf(name, sizeof name, "layernorm_backward dinp N=%d C=%d", N, C);
            check_rel(name, dt, odi, rdi, nc, tol_of(dt));
            check_rel("  dw", dt, odw, rdw, C, tol_of(dt));
            check_rel("  db", dt, odb, rdb, C, tol_of(dt));
            free(odi);
            free(odw);
            free(odb);
            /* backward from the output (memory-efficient form): y = the forward's output as stored in
             * dt, with weights |w| in [0.5, 1.5] of random sign (xhat = (y - b) / w: bounded away from
             * 0 so y's rounding is not blown up), rstd the reference statistics (rstd_d still holds
             * them: this forward writes none), mean not passed. Against the fp64 reference of the same
             * formula on the downloaded y (the op's own error), and against the input-form reference
             * (adds y's rounding: 5x the tolerance in bf16/fp16). */
            float *wy = malloc(C * 4);
            for (int c = 0; c < C; c++) {
                float mag = 1.f + 0.5f * zt_rand_uniform(&g_rng);
                wy[c] = zt_rand_uniform(&g_rng) < 0.f ? -mag : mag;
            }
            void *dwy = be->ops->alloc(be, C * (dt == ZG_F32 ? 4 : 2), "weights away from 0");
            be->ops->upload_f32(be, dwy, dt, wy, C);
            be->ops->download_f32(be, wy, dwy, dt, C);
            void *yd = dev_nan(be, dt, nc);
            be->ops->layernorm_forward(be, yd, NULL, NULL, da, dwy, dbias, N, C);
            float *yh = dl(be, yd, dt, nc);
            float *dinp1 = malloc(nc * 4), *dw1 = malloc(C * 4), *db1 = malloc(C * 4);
            void *ddinp1 = dev_rand(be, dt, nc, 0.3f, dinp1);
            void *ddw1 = dev_rand(be, dt, C, 0.3f, dw1), *ddb1 = dev_rand(be, dt, C, 0.3f, db1);
            be->ops->layernorm_backward(be, ddinp1, ddw1, ddb1, ddout, NULL, yd, dwy, dbias, NULL, rstd_d, N, C);
            ln_bwd_ref(rdi, rdw, rdb, dinp1, dw1, db1, dout, yh, wy, bias, NULL, fr, 1, N, C);
            odi = dl(be, ddinp1, dt, nc);
            odw = dl(be, ddw1, dt, C);
            odb = dl(be, ddb1, dt, C);
            snprintf(name, sizeof name, "layernorm_backward from y dinp N=%d C=%d", N, C);
            check_rel(name, dt, odi, rdi, nc, tol_of(dt));
            check_rel("  dw", dt, odw, rdw, C, tol_of(dt));
            check_rel("  db", dt, odb, rdb, C, tol_of(dt));
            double tol_x = dt == ZG_F32 ? tol_of(dt) : 5 * tol_of(dt);
            ln_bwd_ref(rdi, rdw, rdb, dinp1, dw1, db1, dout, a, wy, NULL, fm, fr, 0, N, C);
            check_rel("  dinp vs input form", dt, odi, rdi, nc, tol_x);
            check_rel("  dw vs input form", dt, odw, rdw, C, tol_x);
            check_rel("  db vs input form", dt, odb, rdb, C, tol_x);
            free(odi);
            free(odw);
            free(odb);
            /* a weight of exactly 0 (column C/2): y = b there, xhat taken as 0; everything finite and
             * as the reference with that rule */
            int cz = C / 2;
            wy[cz] = 0.f;
            be->ops->upload_f32(be, dwy, dt, wy, C);
            poison(be, yd, dt, nc);
            be->ops->layernorm_forward(be, yd, NULL, NULL, da, dwy, dbias, N, C);
            free(yh);
            yh = dl(be, yd, dt, nc);
            be->ops->upload_f32(be, ddinp1, dt, dinp1, nc);
            be->ops->upload_f32(be, ddw1, dt, dw1, C);
            be->ops->upload_f32(be, ddb1, dt, db1, C);
            be->ops->layernorm_backward(be, ddinp1, ddw1, ddb1, ddout, NULL, yd, dwy, dbias, NULL, rstd_d, N, C);
            odi = dl(be, ddinp1, dt, nc);
            odw = dl(be, ddw1, dt, C);
            odb = dl(be, ddb1, dt, C);
            size_t nonfin = count_nonfinite(odi, nc) + count_nonfinite(odw, C) + count_nonfinite(odb, C);
            ZT_CHECK_MSG(nonfin == 0, "layernorm_backward from y, w[%d] = 0, %s N=%d C=%d: %zu non-finite outputs", cz,
                         dt_name(dt), N, C, nonfin);
            ln_bwd_ref(rdi, rdw, rdb, dinp1, dw1, db1, dout, yh, wy, bias, NULL, fr, 1, N, C);
            check_rel("  w = 0 column: dinp", dt, odi, rdi, nc, tol_of(dt));
            check_rel("  w = 0 column: dw", dt, odw, rdw, C, tol_of(dt));
            check_rel("  w = 0 column: db", dt, odb, rdb, C, tol_of(dt));
            free(odi);
            free(odw);
            free(odb);
            free(wy);
            free(yh);
            free(dinp1);
            free(dw1);
            free(db1);
            void *ptrs1[] = {dwy, yd, ddinp1, ddw1, ddb1};
            for (size_t k = 0; k < sizeof ptrs1 / sizeof ptrs1[0]; k++) be->ops->dealloc(be, ptrs1[k]);
            free(rdi);
            free(rdw);
            free(rdb);
            free(fm);
            free(fr);
            free(dout);
            free(dinp0);
            free(dw0);
            free(db0);
            free(a);
            free(w);
            free(bias);
            free(ref);
            free(rm);
            free(rr);
            void *ptrs[] = {da, dw, dbias, mean_d, rstd_d, out, ddout, ddinp, ddw, ddb};
            for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
        }
    }
    unsetenv("ZGPT_LN");
}

/* GPT-2 XL's LayerNorm shape (N = 16384, C = 1600, bf16): the backward twice from the same state gives
 * bitwise the same dinp, dw, db (bitwise resume), on both kernel families */
static void test_layernorm_deterministic(const char *variant) {
    zg_backend *be = g_be[1];
    zg_dtype dt = be->act_dtype;
    int N = 16384, C = 1600;
    size_t nc = (size_t)N * C;
    if (variant != NULL)
        setenv("ZGPT_LN", variant, 1);
    else
        unsetenv("ZGPT_LN");
    void *x = dev_rand(be, dt, nc, 2.f, NULL), *dout = dev_rand(be, dt, nc, 1.f, NULL), *y = dev_nan(be, dt, nc);
    void *w = dev_rand(be, dt, C, 1.f, NULL), *b = dev_rand(be, dt, C, 0.2f, NULL);
    float *mean = be->ops->alloc(be, N * 4, "mean"), *rstd = be->ops->alloc(be, N * 4, "rstd");
    be->ops->layernorm_forward(be, y, mean, rstd, x, w, b, N, C);
    float *res[2][3];
    for (int r = 0; r < 2; r++) {
        void *di = dev_rand(be, dt, nc, 0.f, NULL), *dw = dev_rand(be, dt, C, 0.f, NULL),
             *db = dev_rand(be, dt, C, 0.f, NULL);
        be->ops->layernorm_backward(be, di, dw, db, dout, x, NULL, w, NULL, mean, rstd, N, C);
        res[r][0] = dl(be, di, dt, nc), res[r][1] = dl(be, dw, dt, C), res[r][2] = dl(be, db, dt, C);
        be->ops->dealloc(be, di);
        be->ops->dealloc(be, dw);
        be->ops->dealloc(be, db);
    }
    ZT_CHECK_MSG(memcmp(res[0][0], res[1][0], nc * 4) == 0 && memcmp(res[0][1], res[1][1], C * 4) == 0 &&
                     memcmp(res[0][2], res[1][2], C * 4) == 0,
                 "layernorm_backward%s%s at N=%d C=%d is not deterministic", variant ? " ZGPT_LN=" : "",
                 variant ? variant : "", N, C);
    size_t bad = count_nonfinite(res[0][0], nc) + count_nonfinite(res[0][1], C) + count_nonfinite(res[0][2], C);
    ZT_CHECK_MSG(bad == 0, "layernorm_backward at N=%d C=%d: %zu non-finite values", N, C, bad);
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 3; k++) free(res[r][k]);
    void *ptrs[] = {x, dout, y, w, b, mean, rstd};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    unsetenv("ZGPT_LN");
}

static void test_layernorm(void) {
    test_layernorm_variant(NULL);
    test_layernorm_variant("group");
    test_layernorm_variant("warp");
    test_layernorm_deterministic(NULL);
    test_layernorm_deterministic("warp");
}

/* ---- matmul ---------------------------------------------------------------------------------- */

/* Residual add in the matmul epilogue, at shapes with a small output and a long reduction (where
 * cuBLASLt likes split-K): the result must be the residual plus the product rounded ONCE. A split-K
 * reduction done in the output type would add each partial product to the large residual in
 * bf16/fp16 and lose the small contributions (the layer outputs vanish into the residual stream).
 * Allowed: 1 ulp of the output type. */
static void test_matmul_residual_rounding(void) {
    /* the last two: few rows (the decode products' kernel, gemv_cuda.cu) */
    int shapes[][3] = {{512, 512, 128}, {512, 128, 128}, {256, 2048, 64}, {8, 2048, 64}, {1, 6400, 160}};
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int di = 1; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        int mant = dt == ZG_BF16 ? 7 : 10;
        for (int si = 0; si < nshapes; si++) {
            int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
            size_t nin = (size_t)N * C, nw = (size_t)OC * C, nout = (size_t)N * OC;
            float *inp = malloc(nin * 4), *w = malloc(nw * 4), *bias = malloc(OC * 4), *res = malloc(nout * 4);
            /* products ~0.3 (several ulps of the residual), each split-K partial a fraction of that */
            void *din = dev_rand(be, dt, nin, 1.f, inp), *dwt = dev_rand(be, dt, nw, 0.9f / sqrtf((float)C), w);
            void *db = dev_rand(be, dt, OC, 0.01f, bias);
            for (size_t i = 0; i < nout; i++) res[i] = 8.f + 4.f * zt_rand_uniform(&g_rng); /* large: 8 +- 4 */
            void *dres = be->ops->alloc(be, nout * 2, "residual");
            be->ops->upload_f32(be, dres, dt, res, nout);
            be->ops->download_f32(be, res, dres, dt, nout);
            void *out = dev_nan(be, dt, nout);
            be->ops->matmul_forward(be, out, NULL, din, dwt, db, dres, N, C, OC);
            float *o = dl(be, out, dt, nout);
            size_t bad = 0;
            double worst = 0;
            for (int i = 0; i < N; i++)
                for (int k = 0; k < OC; k++) {
                    double r = bias[k] + res[(size_t)i * OC + k];
                    for (int c = 0; c < C; c++) r += (double)inp[(size_t)i * C + c] * w[(size_t)k * C + c];
                    double ulp = ldexp(1.0, (int)floor(log2(fabs(r))) - mant);
                    double e = fabs(o[(size_t)i * OC + k] - r) / ulp;
                    if (!(e <= 1.0)) bad++;
                    if (e > worst || e != e) worst = e;
                }
            printf("  matmul + residual rounding N=%d C=%d OC=%d %s: worst %.2f ulp\n", N, C, OC, dt_name(dt), worst);
            ZT_CHECK_MSG(bad == 0,
                         "matmul_forward + residual %s N=%d C=%d OC=%d: %zu of %zu outputs off by more than "
                         "1 ulp (worst %.2f): the residual is not added once in fp32",
                         dt_name(dt), N, C, OC, bad, nout, worst);
            free(inp);
            free(w);
            free(bias);
            free(res);
            free(o);
            void *ptrs[] = {din, dwt, db, dres, out};
            for (size_t k = 0; k < 5; k++) be->ops->dealloc(be, ptrs[k]);
        }
    }
}

#define ZGC_TEST_FEW_ROWS 8
static void test_matmul(void) {
    /* N <= 8 runs the few-row kernels (gemv_cuda.cu): 1 row (warp per column), 8 and 5 rows (the
     * tensor-core form in bf16/fp16), output counts that are not multiples of 8 or 16 columns per block,
     * C = 264 (33 vectors: a last chunk of one vector), C = 100 (rows not whole 16-byte vectors in
     * bf16/fp16: cuBLASLt) */
    int shapes[][3] = {{77, 64, 96},   {128, 768, 2304}, {130, 256, 1024}, {1, 1600, 203},
                       {8, 256, 1000}, {5, 264, 40},     {3, 100, 64}};
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        for (int si = 0; si < nshapes; si++) {
            int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
            /* 0: bias, 1: no bias, 2: bias + gelu, 3: bias + residual, 4: residual (no bias),
             * 5: bias + residual in place (residual == out). 3-5 are forward-only (their backward is
             * that of 0 and 1). */
            static const char *vname[6] = {"bias",          "nobias",   "gelu",
                                           "bias+residual", "residual", "bias+residual inplace"};
            for (int variant = 0; variant < 6; variant++) {
                size_t nin = (size_t)N * C, nw = (size_t)OC * C, nout = (size_t)N * OC;
                int has_bias = variant != 1 && variant != 4, has_res = variant >= 3;
                float *inp = malloc(nin * 4), *w = malloc(nw * 4), *bias = malloc(OC * 4);
                float *resh = has_res ? malloc(nout * 4) : NULL;
                float amp = 1.f / sqrtf((float)C);
                void *dinp_ = dev_rand(be, dt, nin, 1.f, inp), *dw_ = dev_rand(be, dt, nw, 2 * amp, w);
                void *dbias_ = has_bias ? dev_rand(be, dt, OC, 0.5f, bias) : NULL;
                void *dres = has_res ? dev_rand(be, dt, nout, 1.f, resh) : NULL;
                void *out = variant == 5 ? dres : dev_nan(be, dt, nout),
                     *pre = variant == 2 ? dev_nan(be, dt, nout) : NULL;
                be->ops->matmul_forward(be, out, pre, dinp_, dw_, dbias_, dres, N, C, OC);
                double *rpre = malloc(nout * 8), *rout = malloc(nout * 8);
                for (int i = 0; i < N; i++)
                    for (int o = 0; o < OC; o++) {
                        double s = has_bias ? bias[o] : 0;
                        for (int c = 0; c < C; c++) s += (double)inp[(size_t)i * C + c] * w[(size_t)o * C + c];
                        rpre[(size_t)i * OC + o] = s;
                        if (has_res) s += resh[(size_t)i * OC + o];
                        rout[(size_t)i * OC + o] = variant == 2 ? gelu_d(s) : s;
                    }
                char name[96];
                snprintf(name, sizeof name, "matmul_forward %s N=%d C=%d OC=%d", vname[variant], N, C, OC);
                float *o = dl(be, out, dt, nout);
                check_rel(name, dt, o, rout, nout, tol_of(dt));
                float *prh = NULL;
                if (pre) {
                    prh = dl(be, pre, dt, nout);
                    check_rel("  pre_gelu", dt, prh, rpre, nout, tol_of(dt));
                }
                /* forward only: the residual variants, and few rows (the decode products: no backward) */
                if (has_res || N <= ZGC_TEST_FEW_ROWS) {
                    if (has_res && variant != 5) { /* the residual input is left as it was */
                        float *rh2 = dl(be, dres, dt, nout);
                        ZT_CHECK_MSG(memcmp(rh2, resh, nout * 4) == 0, "matmul_forward modified its residual input");
                        free(rh2);
                    }
                    if (variant != 5) be->ops->dealloc(be, out);
                    if (pre) be->ops->dealloc(be, pre);
                    free(prh);
                    if (has_res) be->ops->dealloc(be, dres);
                    be->ops->dealloc(be, dinp_);
                    be->ops->dealloc(be, dw_);
                    if (dbias_) be->ops->dealloc(be, dbias_);
                    free(inp);
                    free(w);
                    free(bias);
                    free(resh);
                    free(rpre);
                    free(rout);
                    free(o);
                    continue;
                }
                /* backward: for the gelu variant the product's input gradient goes through gelu'(gelu_inp)
                 * where gelu_inp (N,C) is a separate random tensor */
                float *dout = malloc(nout * 4), *gin = malloc(nin * 4), *dw0 = malloc(nw * 4), *db0 = malloc(OC * 4);
                void *ddout = dev_rand(be, dt, nout, 1.f, dout);
                void *dgin = variant == 2 ? dev_rand(be, dt, nin, 2.f, gin) : NULL;
                void *ddinp = dev_nan(be, dt, nin);
                void *ddw = dev_rand(be, dt, nw, 0.5f, dw0);
                void *ddb = variant == 1 ? NULL : dev_rand(be, dt, OC, 0.5f, db0);
                be->ops->matmul_backward(be, ddinp, ddw, ddb, ddout, dinp_, dw_, dgin, N, C, OC);
                double *rdi = malloc(nin * 8), *rdw = malloc(nw * 8), *rdb = malloc(OC * 8);
                for (int i = 0; i < N; i++)
                    for (int c = 0; c < C; c++) {
                        double s = 0;
                        for (int k = 0; k < OC; k++) s += (double)dout[(size_t)i * OC + k] * w[(size_t)k * C + c];
                        rdi[(size_t)i * C + c] = variant == 2 ? s * gelu_grad_d(gin[(size_t)i * C + c]) : s;
                    }
                for (int k = 0; k < OC; k++) {
                    double sb = db0[k];
                    for (int i = 0; i < N; i++) sb += dout[(size_t)i * OC + k];
                    rdb[k] = sb;
                    for (int c = 0; c < C; c++) {
                        double s = dw0[(size_t)k * C + c];
                        for (int i = 0; i < N; i++) s += (double)dout[(size_t)i * OC + k] * inp[(size_t)i * C + c];
                        rdw[(size_t)k * C + c] = s;
                    }
                }
                float *odi = dl(be, ddinp, dt, nin), *odw = dl(be, ddw, dt, nw);
                snprintf(name, sizeof name, "matmul_backward dinp%s", variant == 2 ? " (dgelu)" : "");
                check_rel(name, dt, odi, rdi, nin, tol_of(dt));
                check_rel("  dw (accumulated)", dt, odw, rdw, nw, tol_of(dt));
                if (ddb) {
                    float *odb = dl(be, ddb, dt, OC);
                    check_rel("  dbias (accumulated)", dt, odb, rdb, OC, tol_of(dt));
                    free(odb);
                }
                /* dinp == NULL skips the input gradient; dw accumulates again */
                be->ops->matmul_backward(be, NULL, ddw, NULL, ddout, dinp_, dw_, NULL, N, C, OC);
                float *odw2 = dl(be, ddw, dt, nw);
                for (size_t k = 0; k < nw; k++) rdw[k] = 2 * rdw[k] - dw0[k];
                check_rel("  dw twice, dinp=NULL", dt, odw2, rdw, nw, tol_of(dt));
                if (ddb) { /* dw == NULL: only the bias gradient accumulates */
                    be->ops->matmul_backward(be, NULL, NULL, ddb, ddout, dinp_, dw_, NULL, N, C, OC);
                    float *odb2 = dl(be, ddb, dt, OC);
                    for (int k = 0; k < OC; k++) rdb[k] = 2 * rdb[k] - db0[k];
                    check_rel("  dbias twice, dw=NULL", dt, odb2, rdb, OC, tol_of(dt));
                    free(odb2);
                }
                free(odw2);
                free(odi);
                free(odw);
                free(rdi);
                free(rdw);
                free(rdb);
                free(dout);
                free(gin);
                free(dw0);
                free(db0);
                free(inp);
                free(w);
                free(bias);
                free(rpre);
                free(rout);
                free(o);
                free(prh);
                void *ptrs[] = {dinp_, dw_, dbias_, out, pre, ddout, dgin, ddinp, ddw, ddb};
                for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++)
                    if (ptrs[k]) be->ops->dealloc(be, ptrs[k]);
            }
        }
    }
}

static void test_gelu_residual(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        size_t n = 100003;
        float *a = malloc(n * 4), *b = malloc(n * 4);
        void *da = dev_rand(be, dt, n, 4.f, a), *db = dev_rand(be, dt, n, 4.f, b), *out = dev_nan(be, dt, n);
        double *ref = malloc(n * 8);
        be->ops->gelu_forward(be, out, da, n);
        for (size_t i = 0; i < n; i++) ref[i] = gelu_d(a[i]);
        float *o = dl(be, out, dt, n);
        check_rel("gelu_forward", dt, o, ref, n, tol_of(dt));
        free(o);
        poison(be, out, dt, n);
        be->ops->residual_forward(be, out, da, db, n);
        for (size_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
        o = dl(be, out, dt, n);
        check_rel("residual_forward", dt, o, ref, n, tol_of(dt));
        free(o);
        free(a);
        free(b);
        free(ref);
        be->ops->dealloc(be, da);
        be->ops->dealloc(be, db);
        be->ops->dealloc(be, out);
    }
}

/* ---- attention ------------------------------------------------------------------------------- */

/* fp64 reference: out (B,T,C), P kept per (b,h) for backward; dqkv (B,T,3C). */
static void attn_ref(double *out, double *dqkv, const float *qkv, const float *dout, int B, int T, int C, int NH) {
    int hs = C / NH;
    double sc = 1.0 / sqrt((double)hs);
    double *P = malloc((size_t)T * T * 8), *dP = malloc((size_t)T * 8);
    size_t ld = (size_t)3 * C;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *base = qkv + (size_t)b * T * ld + (size_t)h * hs;
            for (int i = 0; i < T; i++) {
                double mx = -1e300;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < hs; d++) s += (double)base[i * ld + d] * base[j * ld + C + d];
                    P[(size_t)i * T + j] = s * sc;
                    if (s * sc > mx) mx = s * sc;
                }
                double sum = 0;
                for (int j = 0; j <= i; j++) {
                    P[(size_t)i * T + j] = exp(P[(size_t)i * T + j] - mx);
                    sum += P[(size_t)i * T + j];
                }
                for (int j = 0; j <= i; j++) P[(size_t)i * T + j] /= sum;
                for (int d = 0; d < hs; d++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += P[(size_t)i * T + j] * base[j * ld + 2 * C + d];
                    out[((size_t)b * T + i) * C + h * hs + d] = o;
                }
            }
            if (!dqkv) continue;
            double *dbase = dqkv + (size_t)b * T * ld + (size_t)h * hs;
            const float *dob = dout + (size_t)b * T * C + (size_t)h * hs;
            for (int i = 0; i < T; i++)
                for (int d = 0; d < hs; d++) {
                    dbase[i * ld + d] = 0;
                    dbase[i * ld + C + d] = 0;
                    dbase[i * ld + 2 * C + d] = 0;
                }
            for (int i = 0; i < T; i++) {
                double dsum = 0;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < hs; d++) s += (double)dob[(size_t)i * C + d] * base[j * ld + 2 * C + d];
                    dP[j] = s;
                    dsum += P[(size_t)i * T + j] * s;
                }
                for (int j = 0; j <= i; j++) {
                    double p = P[(size_t)i * T + j], ds = p * (dP[j] - dsum) * sc;
                    for (int d = 0; d < hs; d++) {
                        dbase[i * ld + d] += ds * base[j * ld + C + d];
                        dbase[j * ld + C + d] += ds * base[i * ld + d];
                        dbase[j * ld + 2 * C + d] += p * dob[(size_t)i * C + d];
                    }
                }
            }
        }
    free(P);
    free(dP);
}

/* ZGPT_ATTENTION for the next attention calls: "own" (zgpt's kernels) or "cudnn" */
static void attn_path(const char *path) { setenv("ZGPT_ATTENTION", path, 1); }

/* Whether cuDNN must have run `calls` attention calls in this dtype: built with cuDNN, bf16/fp16 (fp32
 * stays on zgpt's kernels). Then a fallback (a plan that did not build) fails the test. */
static void attn_check_cudnn_ran(zg_backend *be, long before, long calls, const char *what) {
#ifdef ZGPT_WITH_CUDNN
    if (be->act_dtype == ZG_F32) return;
    long ran = zg_backend_cuda_cudnn_attention_calls(be) - before;
    ZT_CHECK_MSG(ran == calls,
                 "%s: cuDNN ran %ld of %ld attention calls (see the note above: its plan did not build "
                 "or run, zgpt's kernels ran instead)",
                 what, ran, calls);
#else
    (void)be, (void)before, (void)calls, (void)what;
#endif
}

/* forward by fwd_path, backward by bwd_path, both against the fp64 reference (the saved statistics are
 * the same format on either path, so the paths pair freely) */
static void attn_check_paths(zg_backend *be, const char *fwd_path, const char *bwd_path, int B, int T, int C, int NH,
                             void *dqkv_in, void *ddout, const double *rout, const double *rd) {
    zg_dtype dt = be->act_dtype;
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    void *out = dev_nan(be, dt, no);
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "attention stats");
    void *dqkv = dev_nan(be, dt, nqkv);
    char name[128];
    long c0 = zg_backend_cuda_cudnn_attention_calls(be);
    attn_path(fwd_path);
    if (strcmp(fwd_path, "own") == 0) {
        /* the 16-rows-per-warp forward tiling (tuning knob) first, then the default */
        setenv("ZGPT_ATTN_FWD_MT", "1", 1);
        be->ops->attention_forward(be, out, stats, dqkv_in, B, T, C, NH);
        unsetenv("ZGPT_ATTN_FWD_MT");
        float *o1 = dl(be, out, dt, no);
        snprintf(name, sizeof name, "attention_forward own (MT=1) B=%d T=%d", B, T);
        check_rel(name, dt, o1, rout, no, tol_of(dt));
        free(o1);
        poison(be, out, dt, no);
    }
    be->ops->attention_forward(be, out, stats, dqkv_in, B, T, C, NH);
    float *o = dl(be, out, dt, no);
    snprintf(name, sizeof name, "attention_forward %s B=%d T=%d C=%d NH=%d", fwd_path, B, T, C, NH);
    check_rel(name, dt, o, rout, no, tol_of(dt));
    attn_path(bwd_path);
    be->ops->attention_backward(be, dqkv, ddout, dqkv_in, out, stats, B, T, C, NH);
    long want = (strcmp(fwd_path, "cudnn") == 0) + (strcmp(bwd_path, "cudnn") == 0);
    attn_check_cudnn_ran(be, c0, want, name);
    float *g = dl(be, dqkv, dt, nqkv);
    /* check q, k, v parts separately */
    const char *part[3] = {"dq", "dk", "dv"};
    for (int p = 0; p < 3; p++) {
        size_t n = (size_t)B * T * C;
        float *go = malloc(n * 4);
        double *gr = malloc(n * 8);
        for (size_t r = 0; r < (size_t)B * T; r++)
            for (int c = 0; c < C; c++) {
                go[r * C + c] = g[r * 3 * C + p * C + c];
                gr[r * C + c] = rd[r * 3 * C + p * C + c];
            }
        snprintf(name, sizeof name, "  %s (backward %s after forward %s)", part[p], bwd_path, fwd_path);
        check_rel(name, dt, go, gr, n, dt == ZG_F32 ? 1e-4 : tol_of(dt));
        free(go);
        free(gr);
    }
    unsetenv("ZGPT_ATTENTION");
    free(o);
    free(g);
    be->ops->dealloc(be, out);
    be->ops->dealloc(be, stats);
    be->ops->dealloc(be, dqkv);
}

static void test_attention(void) {
    /* B, T, C, NH: odd T, hs 64 (incl. C=1600/NH=25), hs 128, hs 32 (scalar path), T=1024 */
    int shapes[][4] = {{2, 77, 192, 3}, {1, 130, 1600, 25}, {1, 200, 256, 2}, {2, 65, 96, 3}, {1, 1024, 128, 2}};
    /* forward path, backward path: each alone, then mixed (cuDNN's and zgpt's statistics agree) */
    const char *paths[][2] = {{"own", "own"}, {"cudnn", "cudnn"}, {"cudnn", "own"}, {"own", "cudnn"}};
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        for (int si = 0; si < 5; si++) {
            int B = shapes[si][0], T = shapes[si][1], C = shapes[si][2], NH = shapes[si][3];
            if (dt == ZG_F32 && T > 512) continue; /* fp32 uses the scalar path, covered by smaller shapes */
            size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
            float *qkv = malloc(nqkv * 4), *dout = malloc(no * 4);
            void *dqkv_in = dev_rand(be, dt, nqkv, 2.f, qkv);
            void *ddout = dev_rand(be, dt, no, 1.f, dout);
            double *rout = malloc(no * 8), *rd = malloc(nqkv * 8);
            attn_ref(rout, rd, qkv, dout, B, T, C, NH);
            for (int pi = 0; pi < (dt == ZG_F32 ? 2 : 4); pi++)
                attn_check_paths(be, paths[pi][0], paths[pi][1], B, T, C, NH, dqkv_in, ddout, rout, rd);
            free(rout);
            free(rd);
            free(qkv);
            free(dout);
            be->ops->dealloc(be, dqkv_in);
            be->ops->dealloc(be, ddout);
        }
    }
}

/* GPT-2 XL's training shape (many more blocks than fit on the GPU at once), on each path: the backward
 * is deterministic (two runs bitwise equal, which bitwise resume relies on) and finite; cuDNN's output
 * and gradients agree with zgpt's kernels' within bf16 rounding. */
static void test_attention_large(void) {
    zg_backend *be = g_be[1]; /* bf16 */
    zg_dtype dt = be->act_dtype;
    int B = 16, T = 1024, C = 1600, NH = 25;
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    void *qkv = dev_rand(be, dt, nqkv, 2.f, NULL);
    void *dout = dev_rand(be, dt, no, 1.f, NULL);
    void *out = dev_nan(be, dt, no);
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "attention stats");
    void *g1 = dev_nan(be, dt, nqkv), *g2 = dev_nan(be, dt, nqkv);
    float *own_out = NULL, *own_g = NULL;
    const char *paths[2] = {"own", "cudnn"};
    for (int pi = 0; pi < 2; pi++) {
        long c0 = zg_backend_cuda_cudnn_attention_calls(be);
        attn_path(paths[pi]);
        poison(be, out, dt, no);
        poison(be, g1, dt, nqkv);
        poison(be, g2, dt, nqkv);
        be->ops->attention_forward(be, out, stats, qkv, B, T, C, NH);
        be->ops->attention_backward(be, g1, dout, qkv, out, stats, B, T, C, NH);
        be->ops->attention_backward(be, g2, dout, qkv, out, stats, B, T, C, NH);
        if (pi == 1) attn_check_cudnn_ran(be, c0, 3, "attention at GPT-2 XL's training shape");
        float *o = dl(be, out, dt, no), *a = dl(be, g1, dt, nqkv), *b = dl(be, g2, dt, nqkv);
        ZT_CHECK_MSG(memcmp(a, b, nqkv * 4) == 0, "attention backward (%s) is not deterministic at B=%d T=%d C=%d",
                     paths[pi], B, T, C);
        if (pi == 0) {
            /* every kernel variant (ZGPT_ATTN_BWD) computes the same products in the same order */
            const char *vars[] = {"aa", "bb", "cc", "dd", "ad", "cb"};
            for (int v = 0; v < 6; v++) {
                setenv("ZGPT_ATTN_BWD", vars[v], 1);
                poison(be, g2, dt, nqkv);
                be->ops->attention_backward(be, g2, dout, qkv, out, stats, B, T, C, NH);
                float *c = dl(be, g2, dt, nqkv);
                ZT_CHECK_MSG(memcmp(a, c, nqkv * 4) == 0, "attention backward variant %s differs from the default",
                             vars[v]);
                free(c);
            }
            unsetenv("ZGPT_ATTN_BWD");
        }
        size_t bad = 0;
        for (size_t i = 0; i < nqkv; i++) bad += !isfinite(a[i]);
        for (size_t i = 0; i < no; i++) bad += !isfinite(o[i]);
        ZT_CHECK_MSG(bad == 0, "attention (%s) at B=%d T=%d C=%d: %zu non-finite values", paths[pi], B, T, C, bad);
        if (pi == 0) {
            own_out = o, own_g = a;
        } else {
            double *ro = malloc(no * 8), *rg = malloc(nqkv * 8);
            for (size_t i = 0; i < no; i++) ro[i] = own_out[i];
            for (size_t i = 0; i < nqkv; i++) rg[i] = own_g[i];
            /* two bf16 results of the same math: twice the one-sided tolerance */
            check_rel("attention_forward XL B=16: cuDNN vs zgpt's kernels", dt, o, ro, no, 2 * tol_of(dt));
            check_rel("attention_backward XL B=16: cuDNN vs zgpt's kernels", dt, a, rg, nqkv, 2 * tol_of(dt));
            free(ro);
            free(rg);
            free(o);
            free(a);
        }
        free(b);
    }
    unsetenv("ZGPT_ATTENTION");
    free(own_out);
    free(own_g);
    void *ptrs[] = {qkv, dout, out, stats, g1, g2};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
}

/* The KV cache over a sequence of Ttot positions (23 without decode) run as chunks 0..9, 10..20 (11),
 * 21, 22 through attention_forward_cached; with decode, positions 10..Ttot-1 go one at a time through
 * attention_decode (the position in device memory) instead, and the last one runs twice (the same
 * bits: the split over positions and its combine have a fixed order). */
static void attention_cached_case(int decode, int Ttot, int maxT) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        int B = 2, C = 128, NH = 2, hs = C / NH;
        int32_t *dpos = be->ops->alloc(be, 2 * sizeof(int32_t), "pos");
        size_t nqkv = (size_t)B * Ttot * 3 * C;
        float *qkv = malloc(nqkv * 4);
        for (size_t i = 0; i < nqkv; i++) qkv[i] = 2.f * zt_rand_uniform(&g_rng);
        /* round through the device dtype */
        void *tmp = be->ops->alloc(be, nqkv * 4, "tmp");
        be->ops->upload_f32(be, tmp, dt, qkv, nqkv);
        be->ops->download_f32(be, qkv, tmp, dt, nqkv);
        be->ops->dealloc(be, tmp);
        double *ref = malloc((size_t)B * Ttot * C * 8);
        attn_ref(ref, NULL, qkv, NULL, B, Ttot, C, NH);
        void *kc = dev_nan(be, dt, (size_t)B * NH * maxT * hs), *vc = dev_nan(be, dt, (size_t)B * NH * maxT * hs);
        int chunks[][2] = {{0, 10}, {10, 11}, {21, 1}, {22, 1}};
        int ndec = Ttot - 9, (*decode_chunks)[2] = malloc((size_t)ndec * sizeof *decode_chunks);
        decode_chunks[0][0] = 0, decode_chunks[0][1] = 10;
        for (int k = 1; k < ndec; k++) decode_chunks[k][0] = 9 + k, decode_chunks[k][1] = 1;
        int(*run)[2] = decode ? decode_chunks : chunks, nrun = decode ? ndec : 4;
        for (int k = 0; k < nrun; k++) {
            int pos = run[k][0], Tn = run[k][1];
            size_t n3 = (size_t)B * Tn * 3 * C, n1 = (size_t)B * Tn * C;
            float *part = malloc(n3 * 4);
            for (int b = 0; b < B; b++)
                memcpy(part + (size_t)b * Tn * 3 * C, qkv + ((size_t)b * Ttot + pos) * 3 * C, (size_t)Tn * 3 * C * 4);
            void *dpart = be->ops->alloc(be, n3 * 4, "qkv chunk");
            be->ops->upload_f32(be, dpart, dt, part, n3);
            void *out = dev_nan(be, dt, n1);
            if (decode && pos > 0) {
                int p2[2] = {pos, pos + 1};
                be->ops->upload(be, dpos, p2, sizeof p2);
                be->ops->attention_decode(be, out, dpart, kc, vc, dpos, B, maxT, C, NH);
                if (k == nrun - 1) {
                    void *again = dev_nan(be, dt, n1);
                    be->ops->attention_decode(be, again, dpart, kc, vc, dpos, B, maxT, C, NH);
                    float *o1 = dl(be, out, dt, n1), *o2 = dl(be, again, dt, n1);
                    ZT_CHECK_MSG(memcmp(o1, o2, n1 * 4) == 0, "attention_decode %s at pos %d: two runs differ",
                                 dt_name(dt), pos);
                    free(o1);
                    free(o2);
                    be->ops->dealloc(be, again);
                }
            } else {
                be->ops->attention_forward_cached(be, out, dpart, kc, vc, B, Tn, pos, maxT, C, NH);
            }
            float *o = dl(be, out, dt, n1);
            double *r = malloc(n1 * 8);
            for (int b = 0; b < B; b++)
                for (int t = 0; t < Tn; t++)
                    for (int c = 0; c < C; c++)
                        r[((size_t)b * Tn + t) * C + c] = ref[((size_t)b * Ttot + pos + t) * C + c];
            char name[96];
            snprintf(name, sizeof name, "%s pos=%d Tn=%d",
                     decode && pos > 0 ? "attention_decode" : "attention_forward_cached", pos, Tn);
            if (!decode || pos == 0 || k >= nrun - 3 || k % 64 == 0) /* the long run: a few lines */
                check_rel(name, dt, o, r, n1, tol_of(dt));
            else
                check_rel_quiet(name, dt, o, r, n1, tol_of(dt));
            free(part);
            free(o);
            free(r);
            be->ops->dealloc(be, dpart);
            be->ops->dealloc(be, out);
        }
        /* the cache holds k, v of all 23 positions in (B,NH,maxT,hs) */
        float *kh = dl(be, kc, dt, (size_t)B * NH * maxT * hs);
        size_t bad = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < Ttot; t++)
                    for (int d = 0; d < hs; d++)
                        if (kh[(((size_t)b * NH + h) * maxT + t) * hs + d] !=
                            qkv[((size_t)b * Ttot + t) * 3 * C + C + h * hs + d])
                            bad++;
        ZT_CHECK_MSG(bad == 0, "kv cache %s: %zu wrong key entries", dt_name(dt), bad);
        free(kh);
        free(qkv);
        free(ref);
        be->ops->dealloc(be, kc);
        be->ops->dealloc(be, vc);
        be->ops->dealloc(be, dpos);
        free(decode_chunks);
    }
}

static void test_attention_cached(void) { attention_cached_case(0, 23, 40); }

/* ---- classifier ------------------------------------------------------------------------------- */

static void test_classifier(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        int N = 37, V = di == 2 ? 997 : 1000, Vp = di == 2 ? 1001 : 1024; /* fp16: odd Vp (scalar path) */
        size_t n = (size_t)N * Vp;
        float *lg = malloc(n * 4);
        void *dl_ = dev_rand(be, dt, n, 8.f, lg);
        int32_t *tg = malloc(N * 4);
        for (int i = 0; i < N; i++) tg[i] = (i % 7 == 3) ? -1 : (int32_t)(zt_rand_u64(&g_rng) % V);
        int32_t *dtg = be->ops->alloc(be, N * 4, "targets");
        be->ops->upload(be, dtg, tg, N * 4);
        float *losses = be->ops->alloc(be, N * 4, "losses");
        float nanv[37];
        for (int i = 0; i < N; i++) nanv[i] = NAN;
        be->ops->upload(be, losses, nanv, N * 4);
        float dloss = 1.f / N;
        be->ops->classifier(be, losses, dl_, dtg, N, V, Vp, dloss);
        double *rl = malloc(N * 8), *rg = malloc(n * 8);
        for (int i = 0; i < N; i++) {
            const float *x = lg + (size_t)i * Vp;
            double mx = -1e300, s = 0;
            for (int j = 0; j < V; j++)
                if (x[j] > mx) mx = x[j];
            for (int j = 0; j < V; j++) s += exp(x[j] - mx);
            double lse = mx + log(s);
            rl[i] = tg[i] < 0 ? 0 : lse - x[tg[i]];
            for (int j = 0; j < Vp; j++)
                rg[(size_t)i * Vp + j] = (tg[i] < 0 || j >= V) ? 0 : (exp(x[j] - lse) - (j == tg[i])) * dloss;
        }
        float *ol = dl(be, losses, ZG_F32, N), *og = dl(be, dl_, dt, n);
        check_rel("classifier losses", dt, ol, rl, N, dt == ZG_F32 ? 1e-5 : 2e-3);
        check_rel("classifier dlogits", dt, og, rg, n, tol_of(dt));
        size_t badpad = 0;
        for (int i = 0; i < N; i++)
            for (int j = V; j < Vp; j++)
                if (og[(size_t)i * Vp + j] != 0.f) badpad++;
        ZT_CHECK_MSG(badpad == 0, "classifier: %zu padded gradients not zero", badpad);
        /* dloss = 0: logits unchanged, losses written */
        be->ops->upload_f32(be, dl_, dt, lg, n);
        be->ops->upload(be, losses, nanv, N * 4);
        be->ops->classifier(be, losses, dl_, dtg, N, V, Vp, 0.f);
        float *ol2 = dl(be, losses, ZG_F32, N), *og2 = dl(be, dl_, dt, n);
        check_rel("classifier losses (dloss=0)", dt, ol2, rl, N, dt == ZG_F32 ? 1e-5 : 2e-3);
        ZT_CHECK_MSG(memcmp(og2, lg, n * 4) == 0, "classifier with dloss=0 modified the logits");
        free(ol);
        free(og);
        free(ol2);
        free(og2);
        free(lg);
        free(tg);
        free(rl);
        free(rg);
        be->ops->dealloc(be, dl_);
        be->ops->dealloc(be, dtg);
        be->ops->dealloc(be, losses);
    }
}

/* ---- optimizer, norms ---------------------------------------------------------------------------- */

/* Lamb (DeepSpeed's FusedLamb, backend.h) in every dtype against a double reference per segment:
 * moments, ||p|| and ||u|| over the segment, the clamped trust ratio, the bias-corrected step; one
 * segment all zero (ratio 1), one empty, the clamps binding on others; then without bias correction
 * and with eps inside the square root. */
static void test_lamb(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->param_dtype;
        size_t n = 300001;
        zg_segment segs[5] = {
            {0, 1000, 0.1f}, {1000, 0, 0.f}, {1000, 200000, 0.f}, {201000, 4000, 0.f}, {205000, 95001, 0.05f}};
        for (int variant = 0; variant < 2; variant++) {
            float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
            void *dg = dev_rand(be, be->grad_dtype, n, 0.1f, g);
            for (size_t i = 0; i < n; i++) p[i] = 0.5f * zt_rand_uniform(&g_rng);
            for (size_t i = 201000; i < 205000; i++) p[i] = 0.f; /* ||p|| = 0: ratio 1 */
            void *dp = be->ops->alloc(be, n * (dt == ZG_F32 ? 4 : 2), "lamb params");
            be->ops->upload_f32(be, dp, dt, p, n);
            float *dmaster = NULL;
            if (dt != ZG_F32) {
                dmaster = be->ops->alloc(be, n * 4, "master");
                be->ops->upload(be, dmaster, p, n * 4);
            } else {
                be->ops->download_f32(be, p, dp, dt, n);
            }
            float *dm = dev_rand(be, ZG_F32, n, 0.01f, m), *dv = dev_rand(be, ZG_F32, n, 0.01f, v);
            for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
            be->ops->upload(be, dv, v, n * 4);
            zg_adamw_args a;
            memset(&a, 0, sizeof a);
            a.param = dp;
            a.master = dmaster;
            a.grad = dg;
            a.m = dm;
            a.v = dv;
            a.segs = segs;
            a.n_segs = 5;
            a.lr = 2e-2f;
            a.beta1 = 0.9f;
            a.beta2 = 0.999f;
            a.eps = 1e-6f;
            a.step = 3;
            a.grad_scale = 0.5f;
            a.lamb = 1;
            a.max_coeff = 0.6f; /* binds on the 0.5-amplitude segments with small updates */
            a.min_coeff = 0.05f;
            a.no_bias_correction = variant;
            a.eps_inside_sqrt = variant;
            be->ops->adamw(be, &a);
            double *rp = malloc(n * 8), *rm = malloc(n * 8), *rv = malloc(n * 8);
            double bc1 = variant ? 1 : 1 - pow(0.9, 3), bc2 = variant ? 1 : 1 - pow(0.999, 3);
            double step = 2e-2 * sqrt(bc2) / bc1;
            for (int s = 0; s < 5; s++) {
                size_t lo = segs[s].offset, hi = lo + segs[s].count;
                double wd = segs[s].weight_decay, w2 = 0, u2 = 0;
                for (size_t i = lo; i < hi; i++) {
                    double gg = g[i] * 0.5;
                    rm[i] = 0.9 * m[i] + 0.1 * gg;
                    rv[i] = 0.999 * v[i] + 0.001 * gg * gg;
                    double u = rm[i] / (variant ? sqrt(rv[i] + 1e-6) : sqrt(rv[i]) + 1e-6) + wd * p[i];
                    w2 += (double)p[i] * p[i];
                    u2 += u * u;
                }
                double c = 1;
                if (w2 > 0 && u2 > 0) c = fmin(fmax(sqrt(w2) / sqrt(u2), 0.05), 0.6);
                for (size_t i = lo; i < hi; i++)
                    rp[i] = p[i] - step * c * (rm[i] / (variant ? sqrt(rv[i] + 1e-6) : sqrt(rv[i]) + 1e-6) + wd * p[i]);
            }
            float *op = dl(be, dmaster ? (void *)dmaster : dp, ZG_F32, n);
            float *om = dl(be, dm, ZG_F32, n), *ov = dl(be, dv, ZG_F32, n);
            check_rel(variant ? "lamb params (no bias corr., eps in sqrt)" : "lamb params (fp32 master)", dt, op, rp, n,
                      1e-6);
            check_rel("lamb m", dt, om, rm, n, 1e-6);
            check_rel("lamb v", dt, ov, rv, n, 1e-6);
            free(op);
            free(om);
            free(ov);
            free(rp);
            free(rm);
            free(rv);
            free(p);
            free(g);
            free(m);
            free(v);
            be->ops->dealloc(be, dp);
            be->ops->dealloc(be, dg);
            be->ops->dealloc(be, dm);
            be->ops->dealloc(be, dv);
            if (dmaster) be->ops->dealloc(be, dmaster);
        }
    }
}

static void test_optimizer(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->param_dtype;
        size_t n = 300001;
        zg_segment segs[4] = {{0, 1000, 0.1f}, {1000, 0, 0.f}, {1000, 200000, 0.f}, {201000, 99001, 0.05f}};
        float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
        void *dp = dev_rand(be, dt, n, 1.f, p), *dg = dev_rand(be, be->grad_dtype, n, 0.1f, g);
        float *dm = dev_rand(be, ZG_F32, n, 0.01f, m), *dv = dev_rand(be, ZG_F32, n, 0.01f, v);
        for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        be->ops->upload(be, dv, v, n * 4);
        float *dmaster = NULL;
        if (dt != ZG_F32) {
            dmaster = be->ops->alloc(be, n * 4, "master");
            be->ops->upload(be, dmaster, p, n * 4);
        }
        zg_adamw_args a = {dp, dmaster, dg, dm, dv, segs, 4, 1e-2f, 0.9f, 0.95f, 1e-8f,
                           3,  0.5f,    0,  0,  0,  0,    0, 0,     0,    NULL};
        if (di == 0) {
            be->ops->adamw(be, &a);
        } else { /* in two parts (segments [0, 3) then [3, 4)), as ZeRO-2 updates slot by slot */
            a.seg_end = 3;
            be->ops->adamw(be, &a);
            a.seg_begin = 3;
            a.seg_end = 4;
            be->ops->adamw(be, &a);
        }
        double *rp = malloc(n * 8), *rm = malloc(n * 8), *rv = malloc(n * 8);
        for (int s = 0; s < 4; s++)
            for (size_t i = segs[s].offset; i < segs[s].offset + segs[s].count; i++) {
                double gg = g[i] * 0.5, pp = p[i];
                pp -= 1e-2 * segs[s].weight_decay * pp;
                rm[i] = 0.9 * m[i] + 0.1 * gg;
                rv[i] = 0.95 * v[i] + 0.05 * gg * gg;
                pp -= 1e-2 * (rm[i] / (1 - pow(0.9, 3))) / (sqrt(rv[i] / (1 - pow(0.95, 3))) + 1e-8);
                rp[i] = pp;
            }
        float *op = dl(be, dmaster ? (void *)dmaster : dp, ZG_F32 == dt || dmaster ? ZG_F32 : dt, n);
        float *om = dl(be, dm, ZG_F32, n), *ov = dl(be, dv, ZG_F32, n);
        check_rel("adamw params (fp32 master)", dt, op, rp, n, 1e-6);
        check_rel("adamw m", dt, om, rm, n, 1e-6);
        check_rel("adamw v", dt, ov, rv, n, 1e-6);
        if (dmaster) {
            float *lp = dl(be, dp, dt, n);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                float want =
                    dt == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(op[i])) : zg_f16_to_f32(zg_f32_to_f16(op[i]));
                if (lp[i] != want) bad++;
            }
            ZT_CHECK_MSG(bad == 0, "adamw %s: %zu low-precision params are not the rounded master", dt_name(dt), bad);
            free(lp);
        }
        /* sum_squares and scale */
        double ss = be->ops->sum_squares(be, dg, be->grad_dtype, n), rss = 0;
        for (size_t i = 0; i < n; i++) rss += (double)g[i] * g[i];
        printf("  %-40s %s  %.9g vs %.9g\n", "sum_squares", dt_name(dt), ss, rss);
        ZT_NEAR(ss, rss, 0, 1e-5);
        /* unaligned start (scalar path) */
        size_t es = dt == ZG_F32 ? 4 : 2;
        double ssu = be->ops->sum_squares(be, (char *)dg + es, be->grad_dtype, n - 1);
        ZT_NEAR(ssu, rss - (double)g[0] * g[0], 0, 1e-5);
        be->ops->scale(be, dg, be->grad_dtype, n, 0.25f);
        float *gs = dl(be, dg, be->grad_dtype, n);
        double *rg = malloc(n * 8);
        for (size_t i = 0; i < n; i++) rg[i] = g[i] * 0.25;
        check_rel("scale", dt, gs, rg, n, 1e-7);
        /* non-finite detection */
        be->ops->upload_f32(be, (char *)dg + 12345 * (dt == ZG_F32 ? 4 : 2), be->grad_dtype, (float[]){INFINITY}, 1);
        double ssi = be->ops->sum_squares(be, dg, be->grad_dtype, n);
        ZT_CHECK_MSG(!isfinite(ssi), "sum_squares with an inf element returned %g", ssi);
        be->ops->upload_f32(be, (char *)dg + 12345 * (dt == ZG_F32 ? 4 : 2), be->grad_dtype, (float[]){NAN}, 1);
        ssi = be->ops->sum_squares(be, dg, be->grad_dtype, n);
        ZT_CHECK_MSG(!isfinite(ssi), "sum_squares with a NaN element returned %g", ssi);
        free(gs);
        free(rg);
        free(op);
        free(om);
        free(ov);
        free(p);
        free(g);
        free(m);
        free(v);
        free(rp);
        free(rm);
        free(rv);
        be->ops->dealloc(be, dp);
        be->ops->dealloc(be, dg);
        be->ops->dealloc(be, dm);
        be->ops->dealloc(be, dv);
        if (dmaster) be->ops->dealloc(be, dmaster);
    }
}

static void test_memory(void) {
    zg_backend *be = g_be[1];
    size_t before = be->bytes_in_use;
    void *p = be->ops->alloc(be, 1 << 20, "a 1 MiB test buffer");
    ZT_CHECK(p != NULL);
    ZT_CHECK(be->bytes_in_use == before + (1 << 20));
    ZT_CHECK(be->bytes_peak >= be->bytes_in_use);
    be->ops->dealloc(be, p);
    ZT_CHECK(be->bytes_in_use == before);
    /* an impossible allocation fails with a message naming what and the advice */
    void *q = be->ops->alloc(be, (size_t)1 << 50, "the impossible test buffer");
    ZT_CHECK(q == NULL);
    const char *msg = zg_error_message();
    printf("  OOM message: %s\n", msg);
    ZT_CHECK(strstr(msg, "the impossible test buffer") != NULL);
    ZT_CHECK(strstr(msg, "micro-batch") != NULL);
    ZT_CHECK(be->bytes_in_use == before);
    /* the backend still works afterwards */
    void *r = be->ops->alloc(be, 4096, "after OOM");
    ZT_CHECK(r != NULL);
    be->ops->zero(be, r, 4096);
    be->ops->synchronize(be);
    be->ops->dealloc(be, r);
}

/* Host staging memory, the copy stream and events: a D2H copy ordered after a compute-stream op sees
 * its result; an H2D copy that the compute stream waits for is seen by the next op; pinned and plain
 * host blocks are counted and released. n floats: 16 MiB (cudaHostAlloc) and 80 MiB (from 64 MiB up a
 * registered huge-page mapping, backend/host_pages.h): both page-locked for the driver. */
static void host_copies(size_t n) {
    zg_backend *be = g_be[0];
    size_t host0 = be->host_bytes_in_use;
    float *hp = be->ops->host_alloc(be, n * 4, 1, "a pinned test block");
    float *hq = be->ops->host_alloc(be, n * 4, 0, "a plain test block");
    ZT_CHECK(hp != NULL && hq != NULL && ((uintptr_t)hp % 64) == 0);
    struct cudaPointerAttributes attr;
    ZT_CHECK(cudaPointerGetAttributes(&attr, hp) == cudaSuccess && attr.type == cudaMemoryTypeHost);
    ZT_CHECK(cudaPointerGetAttributes(&attr, hp + n - 1) == cudaSuccess && attr.type == cudaMemoryTypeHost);
    ZT_CHECK(be->host_bytes_in_use == host0 + 2 * n * 4 && be->host_bytes_peak >= be->host_bytes_in_use);
    for (size_t i = 0; i < n; i++) hq[i] = (float)(i % 1000);
    float *d = be->ops->alloc(be, n * 4, "copy test");
    be->ops->upload(be, d, hq, n * 4);
    zg_event *computed = be->ops->event_create(be), *copied = be->ops->event_create(be);
    be->ops->scale(be, d, ZG_F32, n, 2.0f); /* queued on the compute stream */
    be->ops->event_record(be, computed, ZG_STREAM_COMPUTE);
    be->ops->stream_wait(be, ZG_STREAM_COPY, computed);
    be->ops->copy_async(be, hp, d, n * 4, ZG_COPY_D2H);
    be->ops->event_record(be, copied, ZG_STREAM_COPY);
    be->ops->event_synchronize(be, copied);
    ZT_CHECK(be->ops->event_query(be, copied) == 1);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += hp[i] != 2.0f * (float)(i % 1000);
    ZT_CHECK_MSG(bad == 0, "%zu of %zu elements of the D2H copy missed the scale before it", bad, n);
    /* H2D on the copy stream, then the compute stream waits and scales it */
    for (size_t i = 0; i < n; i++) hp[i] = 1.0f;
    be->ops->copy_async(be, d, hp, n * 4, ZG_COPY_H2D);
    be->ops->event_record(be, copied, ZG_STREAM_COPY);
    be->ops->stream_wait(be, ZG_STREAM_COMPUTE, copied);
    be->ops->scale(be, d, ZG_F32, n, 3.0f);
    be->ops->download(be, hq, d, n * 4);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += hq[i] != 3.0f;
    ZT_CHECK_MSG(bad == 0, "%zu of %zu elements: the compute stream did not wait for the H2D copy", bad, n);
    be->ops->event_destroy(be, computed);
    be->ops->event_destroy(be, copied);
    be->ops->dealloc(be, d);
    be->ops->host_free(be, hp);
    be->ops->host_free(be, hq);
    ZT_CHECK(be->host_bytes_in_use == host0);
}

static void test_host_copies(void) {
    host_copies((size_t)4 << 20);  /* 16 MiB: long enough that an unordered copy would race */
    host_copies((size_t)20 << 20); /* 80 MiB */
}

/* ---- benchmark ---------------------------------------------------------------------------------- */

typedef struct {
    zg_backend *be;
    cudaEvent_t e0, e1;
} bench_ctx;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* ZG_BENCH_REPS=n (1..15) times each op n times after no warm-up: for profilers (ncu), which
 * should see every kernel once */
#define BENCH_REPS 15
static int bench_reps(void) {
    const char *r = getenv("ZG_BENCH_REPS");
    int n = r ? atoi(r) : BENCH_REPS;
    return n >= 1 && n <= BENCH_REPS ? n : BENCH_REPS;
}
/* med = median ms of reps timed runs of the statement(s) (after 2 warm-ups when reps is the full count) */
#define BENCH_TIME(ctx, med, reps, ...)                                                                                \
    do {                                                                                                               \
        float ms_[BENCH_REPS];                                                                                         \
        int reps_ = (reps);                                                                                            \
        cudaStream_t st_ = zg_backend_cuda_stream((ctx)->be);                                                          \
        for (int w_ = 0; w_ < (reps_ == BENCH_REPS ? 2 : 0); w_++) { __VA_ARGS__; }                                    \
        for (int r_ = 0; r_ < reps_; r_++) {                                                                           \
            cudaEventRecord((ctx)->e0, st_);                                                                           \
            __VA_ARGS__;                                                                                               \
            cudaEventRecord((ctx)->e1, st_);                                                                           \
            cudaEventSynchronize((ctx)->e1);                                                                           \
            cudaEventElapsedTime(&ms_[r_], (ctx)->e0, (ctx)->e1);                                                      \
        }                                                                                                              \
        qsort(ms_, reps_, sizeof(float), cmp_float);                                                                   \
        (med) = ms_[reps_ / 2];                                                                                        \
    } while (0)
#define BENCH(ctx, label, flops, bytes, ...)                                                                           \
    do {                                                                                                               \
        float med_;                                                                                                    \
        BENCH_TIME(ctx, med_, bench_reps(), __VA_ARGS__);                                                              \
        printf("| %-34s | %9.3f | %8.1f | %8.0f |\n", label, med_,                                                     \
               (flops) > 0 ? (double)(flops) / (med_ * 1e-3) / 1e12 : 0.0,                                             \
               (bytes) > 0 ? (double)(bytes) / (med_ * 1e-3) / 1e9 : 0.0);                                             \
    } while (0)
/* the median alone, as a table cell */
#define BENCH_QUIET(ctx, ...)                                                                                          \
    do {                                                                                                               \
        float med_;                                                                                                    \
        BENCH_TIME(ctx, med_, BENCH_REPS, __VA_ARGS__);                                                                \
        printf("| %.3f ", med_);                                                                                       \
        fflush(stdout);                                                                                                \
    } while (0)

/* The matmuls of one layer with the heuristic's k-th candidate algorithm (ZGPT_MATMUL_ALGO=k, read
 * when a plan is made, so each k gets a fresh backend): is the heuristic's first choice the fastest? */
static void bench_matmul_algos(int B, int T, int C) {
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
        void *x = dev_big(be, ZG_BF16, (size_t)N * C, 1.f), *x2 = dev_big(be, ZG_BF16, (size_t)N * C, 1.f);
        void *y = dev_big(be, ZG_BF16, (size_t)N * C, 1.f);
        void *h4 = dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f), *h4b = dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f);
        void *w = dev_big(be, ZG_BF16, (size_t)4 * C * C, 0.02f), *dw = dev_big(be, ZG_BF16, (size_t)4 * C * C, 0.02f);
        void *bias = dev_big(be, ZG_BF16, (size_t)4 * C, 0.02f), *dbias = dev_big(be, ZG_BF16, (size_t)4 * C, 0.02f);
        printf("| %d ", k);
        fflush(stdout);
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, h4, NULL, x, w, bias, NULL, N, C, 3 * C));
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, y, NULL, x, w, bias, x2, N, C, C));
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, h4, h4b, x, w, bias, NULL, N, C, 4 * C));
        BENCH_QUIET(&ctx, be->ops->matmul_forward(be, y, NULL, h4, w, bias, x2, N, 4 * C, C));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, x2, dw, dbias, h4, x, w, NULL, N, C, 3 * C));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, x2, dw, dbias, y, x, w, NULL, N, C, C));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, x2, dw, dbias, h4, x, w, NULL, N, C, 4 * C));
        BENCH_QUIET(&ctx, be->ops->matmul_backward(be, h4b, dw, dbias, y, h4, w, h4, N, 4 * C, C));
        printf("|\n");
        void *ptrs[] = {x, x2, y, h4, h4b, w, dw, bias, dbias};
        for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) be->ops->dealloc(be, ptrs[i]);
        cudaEventDestroy(ctx.e0);
        cudaEventDestroy(ctx.e1);
        zg_backend_destroy(be);
    }
    unsetenv("ZGPT_MATMUL_ALGO");
}

static void bench_config(zg_backend *be, const char *name, int B, int T, int C, int NH, int L) {
    bench_ctx ctx = {be, NULL, NULL};
    cudaEventCreate(&ctx.e0);
    cudaEventCreate(&ctx.e1);
    int N = B * T, V = 50257, Vp = 50304;
    size_t es = 2;
    printf("\n### %s: B=%d T=%d C=%d NH=%d (bf16)\n\n", name, B, T, C, NH);
    printf("| op | ms (median) | TFLOP/s | GB/s |\n|---|---|---|---|\n");
    float *h;
    void *x = dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *x2 = dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *y = dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *qkv = dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL);
    void *dqkv = dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL);
    void *h4 = dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f);
    void *h4b = dev_big(be, ZG_BF16, (size_t)N * 4 * C, 1.f);
    void *w = dev_rand(be, ZG_BF16, (size_t)4 * C * C, 0.02f, NULL);
    void *dw = dev_rand(be, ZG_BF16, (size_t)4 * C * C, 0.02f, NULL);
    void *bias = dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    void *dbias = dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    float *mean = be->ops->alloc(be, (size_t)N * 4, "mean"), *rstd = be->ops->alloc(be, (size_t)N * 4, "rstd");
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "stats");
    int32_t *tokh = malloc((size_t)N * 4);
    int32_t *tok = dev_tokens(be, N, V, tokh);
    void *wte = dev_big(be, ZG_BF16, (size_t)Vp * C, 0.02f);
    void *dwte = dev_big(be, ZG_BF16, (size_t)Vp * C, 0.02f);
    void *wpe = dev_rand(be, ZG_BF16, (size_t)T * C, 0.02f, NULL);
    void *dwpe = dev_rand(be, ZG_BF16, (size_t)T * C, 0.02f, NULL);
    double nc = (double)N * C;
    BENCH(&ctx, "encoder_forward", 0, nc * es * 3, be->ops->encoder_forward(be, x, tok, wte, wpe, B, T, C));
    BENCH(&ctx, "encoder_backward", 0, nc * es * 3, be->ops->encoder_backward(be, dwte, dwpe, x, tok, B, T, C));
    /* text-like: real text repeats a few ids a lot (Tiny Shakespeare: "\n" ~10%, "," ~5%) */
    for (int i = 0; i < N; i++) tokh[i] = i % 10 == 0 ? 198 : i % 20 == 1 ? 11 : tokh[i];
    int32_t *tok_text = dev_tokens_upload(be, tokh, N);
    BENCH(&ctx, "encoder_backward (10% one id, 5% another)", 0, nc * es * 3,
          be->ops->encoder_backward(be, dwte, dwpe, x, tok_text, B, T, C));
    be->ops->dealloc(be, tok_text);
    BENCH(&ctx, "layernorm_forward", 0, nc * es * 2,
          be->ops->layernorm_forward(be, y, mean, rstd, x, bias, dbias, N, C));
    BENCH(&ctx, "layernorm_forward (no mean/rstd)", 0, nc * es * 2,
          be->ops->layernorm_forward(be, y, NULL, NULL, x, bias, dbias, N, C));
    BENCH(&ctx, "layernorm_backward", 0, nc * es * 4,
          be->ops->layernorm_backward(be, x2, dw, dbias, y, x, NULL, bias, NULL, mean, rstd, N, C));
    /* the same bytes (dout, y, dinp read, dinp written); x stands in for y, the bias 16-byte aligned
     * (C * 2 bytes past bias: a multiple of 16 for C % 8 == 0) */
    BENCH(&ctx, "layernorm_backward (from output)", 0, nc * es * 4,
          be->ops->layernorm_backward(be, x2, dw, dbias, y, NULL, x, bias, (const char *)bias + (size_t)C * es, NULL,
                                      rstd, N, C));
    double f;
    f = 2.0 * N * C * 3 * C;
    BENCH(&ctx, "matmul fwd qkv (C->3C, bias)", f, 0,
          be->ops->matmul_forward(be, qkv, NULL, x, w, bias, NULL, N, C, 3 * C));
    BENCH(&ctx, "matmul bwd qkv (dinp, dw, dbias)", 2 * f, 0,
          be->ops->matmul_backward(be, x2, dw, dbias, qkv, x, w, NULL, N, C, 3 * C));
    f = 2.0 * N * C * C;
    BENCH(&ctx, "matmul fwd attproj (C->C)", f, 0, be->ops->matmul_forward(be, y, NULL, x, w, bias, NULL, N, C, C));
    BENCH(&ctx, "matmul fwd attproj + residual", f, 0, be->ops->matmul_forward(be, y, NULL, x, w, bias, x2, N, C, C));
    BENCH(&ctx, "matmul bwd attproj", 2 * f, 0, be->ops->matmul_backward(be, x2, dw, dbias, y, x, w, NULL, N, C, C));
    f = 2.0 * N * C * 4 * C;
    BENCH(&ctx, "matmul fwd fc (C->4C, bias+gelu)", f, 0,
          be->ops->matmul_forward(be, h4, h4b, x, w, bias, NULL, N, C, 4 * C));
    BENCH(&ctx, "matmul fwd fc (bias only, no gelu)", f, 0,
          be->ops->matmul_forward(be, h4, NULL, x, w, bias, NULL, N, C, 4 * C));
    BENCH(&ctx, "matmul bwd fc", 2 * f, 0, be->ops->matmul_backward(be, x2, dw, dbias, h4, x, w, NULL, N, C, 4 * C));
    BENCH(&ctx, "matmul bwd fc (no dbias)", 2 * f, 0,
          be->ops->matmul_backward(be, x2, dw, NULL, h4, x, w, NULL, N, C, 4 * C));
    BENCH(&ctx, "matmul bwd fc (dinp only)", f, 0,
          be->ops->matmul_backward(be, x2, NULL, NULL, h4, x, w, NULL, N, C, 4 * C));
    BENCH(&ctx, "matmul fwd fcproj (4C->C)", f, 0,
          be->ops->matmul_forward(be, y, NULL, h4, w, bias, NULL, N, 4 * C, C));
    BENCH(&ctx, "matmul fwd fcproj + residual", f, 0,
          be->ops->matmul_forward(be, y, NULL, h4, w, bias, x2, N, 4 * C, C));
    BENCH(&ctx, "matmul bwd fcproj (dgelu)", 2 * f, 0,
          be->ops->matmul_backward(be, h4b, dw, dbias, y, h4, w, h4, N, 4 * C, C));
    BENCH(&ctx, "matmul bwd fcproj (no dgelu)", 2 * f, 0,
          be->ops->matmul_backward(be, h4b, dw, dbias, y, h4, w, NULL, N, 4 * C, C));
    BENCH(&ctx, "gelu_forward (4C)", 0, nc * 4 * es * 2, be->ops->gelu_forward(be, h4b, h4, (size_t)N * 4 * C));
    BENCH(&ctx, "residual_forward", 0, nc * es * 3, be->ops->residual_forward(be, x2, x, y, (size_t)N * C));
    double af = 2.0 * B * NH * (double)T * T * (C / NH); /* causal: half of 4*B*NH*T*T*hs */
    setenv("ZGPT_ATTN_FWD_MT", "1", 1);
    BENCH(&ctx, "attention_forward (16 rows/warp)", af, 0, be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
    unsetenv("ZGPT_ATTN_FWD_MT");
    attn_path("own");
    BENCH(&ctx, "attention_forward", af, 0, be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
    BENCH(&ctx, "attention_backward", 2.5 * af, 0,
          be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
    attn_path("cudnn");
    BENCH(&ctx, "attention_forward (cuDNN)", af, 0, be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
    BENCH(&ctx, "attention_backward (cuDNN)", 2.5 * af, 0,
          be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
    attn_path("own");
    if (bench_reps() == BENCH_REPS) /* the backward kernels' variants (ZGPT_ATTN_BWD, dK/dV then dQ) */
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
    void *logits = dev_big(be, ZG_BF16, (size_t)N * Vp, 2.f);
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
          be->ops->matmul_backward(be, x2, dwte, NULL, logits, x, wte, NULL, N, C, Vp));
    be->ops->dealloc(be, logits);
    /* optimizer over the whole model */
    size_t P = (size_t)Vp * C + (size_t)1024 * C + (size_t)L * (12 * (size_t)C * C + 13 * (size_t)C) + 2 * C;
    void *pp = dev_big(be, ZG_BF16, P, 0.02f), *gg = dev_big(be, ZG_BF16, P, 0.001f);
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
#define ZG_HBM_NOMINAL_GBS 4800.0 /* H200 datasheet: 4.8 TB/s */
static void bench_attn_ln(zg_backend *be, int B, int T, int C, int NH) {
    bench_ctx ctx = {be, NULL, NULL};
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
    BENCH_TIME(&ctx, copy_ms, bench_reps(), be->ops->copy(be, c1, c0, cb));
    double copy_gbs = 2.0 * cb / (copy_ms * 1e-3) / 1e9;
    printf("| device-to-device copy (1 GiB) | %9.3f | | %8.0f |\n", copy_ms, copy_gbs);
    be->ops->dealloc(be, c0);
    be->ops->dealloc(be, c1);
    void *qkv = dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL),
         *dqkv = dev_rand(be, ZG_BF16, (size_t)N * 3 * C, 1.f, NULL);
    void *x = dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL), *y = dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *dx = dev_rand(be, ZG_BF16, (size_t)N * C, 1.f, NULL);
    void *w = dev_rand(be, ZG_BF16, (size_t)C, 1.f, NULL), *bb = dev_rand(be, ZG_BF16, (size_t)C, 0.1f, NULL);
    void *dw = dev_rand(be, ZG_BF16, (size_t)C, 0.1f, NULL), *db = dev_rand(be, ZG_BF16, (size_t)C, 0.1f, NULL);
    float *mean = be->ops->alloc(be, (size_t)N * 4, "mean"), *rstd = be->ops->alloc(be, (size_t)N * 4, "rstd");
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "stats");
    double af = 2.0 * B * NH * (double)T * T * (C / NH);
    float ms[2][2];
    const char *paths[2] = {"own", "cudnn"};
    for (int p = 0; p < 2; p++) {
        attn_path(paths[p]);
        long k0 = zg_backend_cuda_cudnn_attention_calls(be);
        size_t in_use0 = be->bytes_in_use;
        BENCH_TIME(&ctx, ms[p][0], bench_reps(), be->ops->attention_forward(be, y, stats, qkv, B, T, C, NH));
        BENCH_TIME(&ctx, ms[p][1], bench_reps(), be->ops->attention_backward(be, dqkv, x, qkv, y, stats, B, T, C, NH));
        int ran = zg_backend_cuda_cudnn_attention_calls(be) > k0; /* cuDNN actually ran (else it fell back) */
        printf("| attention_forward (%s) | %9.3f | %8.1f | |\n", paths[p], ms[p][0], af / (ms[p][0] * 1e-3) / 1e12);
        printf("| attention_backward (%s) | %9.3f | %8.1f | |\n", paths[p], ms[p][1],
               2.5 * af / (ms[p][1] * 1e-3) / 1e12);
        printf("ATTN %s fwd_ms %.4f bwd_ms %.4f cudnn_ran %d\n", paths[p], ms[p][0], ms[p][1], ran);
        /* what the path keeps allocated (cuDNN: its workspace, grown to the backward plan's need) */
        printf("ATTN %s kept_MiB %.1f\n", paths[p], ((double)be->bytes_in_use - (double)in_use0) / 1048576.0);
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
        BENCH_TIME(&ctx, lf, bench_reps(), be->ops->layernorm_forward(be, y, mean, rstd, x, w, bb, N, C));
        BENCH_TIME(&ctx, lb, bench_reps(),
                   be->ops->layernorm_backward(be, dx, dw, db, y, x, NULL, w, NULL, mean, rstd, N, C));
        BENCH_TIME(&ctx, lby, bench_reps(),
                   be->ops->layernorm_backward(be, dx, dw, db, y, NULL, x, w, bb, NULL, rstd, N, C));
        const char *ln_name[3] = {"layernorm_forward", "layernorm_backward", "layernorm_backward (from output)"};
        const char *key[3] = {"fwd", "bwd", "bwd_y"};
        float ln_ms[3] = {lf, lb, lby};
        double ln_bytes[3] = {fb, bwb, bwb + 2.0 * C * es};
        for (int i = 0; i < 3; i++) {
            double gbs = ln_bytes[i] / (ln_ms[i] * 1e-3) / 1e9;
            printf("| %s%s%s | %9.3f | | %8.0f |\n", ln_name[i], v ? " ZGPT_LN=" : "", v ? lnv[v] : "", ln_ms[i], gbs);
            printf("LN%s %s ms %.4f MB %.1f GBs %.0f pct_nominal %.1f pct_copy %.1f\n", v ? lnv[v] : "", key[i],
                   ln_ms[i], ln_bytes[i] / 1e6, gbs, 100 * gbs / ZG_HBM_NOMINAL_GBS, 100 * gbs / copy_gbs);
        }
    }
    unsetenv("ZGPT_LN");
    printf("COPY GBs %.0f pct_nominal %.1f\n", copy_gbs, 100 * copy_gbs / ZG_HBM_NOMINAL_GBS);
    void *ptrs[] = {qkv, dqkv, x, y, dx, w, bb, dw, db, mean, rstd, stats};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    cudaEventDestroy(ctx.e0);
    cudaEventDestroy(ctx.e1);
}

/* The few-row kernels (ZGPT_GEMV=v1: the tensor-core form from 2 rows, the warp per column at 1; simt:
 * the warp per column at every row count; v2; cublaslt) at 1..8 rows against the fp64 product, with bias
 * + residual and with GELU (pre-GELU too), each within the dtype's tolerance: GPT-2 XL's four products at
 * 1, 2, 3 and 8 rows, and odd shapes (output counts that are not multiples of 8 or 16, rows of 1 and 33
 * 16-byte vectors, a column count below one group). v2's bits do not depend on its grid or prefetch
 * (ZGPT_GEMV_GRID=1, ZGPT_GEMV_PREFETCH=0) and are the same on a second run. The fused LayerNorm forms:
 * layernorm_matmul, layernorm_matmul_simt, layernorm_matmul_v2. */
static void test_gemv_forms(void) {
    static const int shapes[][3] = {{1, 1600, 4800}, {8, 1600, 4800}, {1, 1600, 1600}, {3, 1600, 1600}, {2, 1600, 6400},
                                    {8, 1600, 6400}, {1, 6400, 1600}, {8, 6400, 1600}, {2, 1600, 48},   {7, 512, 333},
                                    {8, 6400, 40},   {3, 264, 21},    {1, 8, 5},       {5, 1608, 77},   {4, 2056, 130}};
    static const char *const forms[4] = {"v1", "simt", "v2", "cublaslt"};
    for (int di = 1; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
            size_t nin = (size_t)N * C, nout = (size_t)N * OC;
            float *x = malloc(nin * 4), *w = malloc((size_t)OC * C * 4), *bias = malloc(OC * 4),
                  *res = malloc(nout * 4);
            void *dx = dev_rand(be, dt, nin, 2.f, x), *dw = dev_rand(be, dt, (size_t)OC * C, 1.f / sqrtf((float)C), w),
                 *dbias = dev_rand(be, dt, OC, 0.5f, bias), *dres = dev_rand(be, dt, nout, 1.f, res);
            double *ref = malloc(nout * 8), *refp = malloc(nout * 8), *refg = malloc(nout * 8);
            for (int i = 0; i < N; i++)
                for (int o = 0; o < OC; o++) {
                    double a = bias[o];
                    for (int c = 0; c < C; c++) a += (double)x[(size_t)i * C + c] * w[(size_t)o * C + c];
                    ref[(size_t)i * OC + o] = a + res[(size_t)i * OC + o];
                    refp[(size_t)i * OC + o] = a;
                    refg[(size_t)i * OC + o] = gelu_d(a);
                }
            void *out = dev_nan(be, dt, nout), *pre = dev_nan(be, dt, nout), *out2 = dev_nan(be, dt, nout);
            for (int form = 0; form < 4; form++) {
                setenv("ZGPT_GEMV", forms[form], 1);
                poison(be, out, dt, nout);
                poison(be, pre, dt, nout);
                poison(be, out2, dt, nout);
                be->ops->matmul_forward(be, out, NULL, dx, dw, dbias, dres, N, C, OC);
                be->ops->matmul_forward(be, out2, pre, dx, dw, dbias, NULL, N, C, OC);
                float *h = dl(be, out, dt, nout), *hg = dl(be, out2, dt, nout), *hp = dl(be, pre, dt, nout);
                char name[96];
                snprintf(name, sizeof name, "few-row %s N=%d C=%d OC=%d bias+residual", forms[form], N, C, OC);
                check_rel(name, dt, h, ref, nout, tol_of(dt));
                snprintf(name, sizeof name, "few-row %s N=%d C=%d OC=%d gelu", forms[form], N, C, OC);
                check_rel_quiet(name, dt, hg, refg, nout, tol_of(dt));
                snprintf(name, sizeof name, "few-row %s N=%d C=%d OC=%d pre-gelu", forms[form], N, C, OC);
                check_rel_quiet(name, dt, hp, refp, nout, tol_of(dt));
                if (form == 2) { /* v2: the same bits again, with one block per SM, without the prefetch */
                    static const char *const knob[3][2] = {
                        {NULL, NULL}, {"ZGPT_GEMV_GRID", "1"}, {"ZGPT_GEMV_PREFETCH", "0"}};
                    for (int k = 0; k < 3; k++) {
                        if (knob[k][0]) setenv(knob[k][0], knob[k][1], 1);
                        poison(be, out2, dt, nout);
                        be->ops->matmul_forward(be, out2, NULL, dx, dw, dbias, dres, N, C, OC);
                        float *h2 = dl(be, out2, dt, nout);
                        ZT_CHECK_MSG(memcmp(h, h2, nout * 4) == 0, "few-row v2 %s N=%d C=%d OC=%d: %s%s%s changes bits",
                                     dt_name(dt), N, C, OC, knob[k][0] ? knob[k][0] : "a second run",
                                     knob[k][0] ? "=" : "", knob[k][0] ? knob[k][1] : "");
                        free(h2);
                        if (knob[k][0]) unsetenv(knob[k][0]);
                    }
                }
                free(h);
                free(hg);
                free(hp);
            }
            void *host[] = {x, w, bias, res, ref, refp, refg};
            for (size_t k = 0; k < sizeof host / sizeof host[0]; k++) free(host[k]);
            void *ptrs[] = {dx, dw, dbias, dres, out, pre, out2};
            for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
        }
    }
    unsetenv("ZGPT_GEMV");
}

/* layernorm_matmul_forward (the decode step's LayerNorm fused into the few-row product) against the fp64
 * LayerNorm then product, and against the two ops run apart (layernorm_forward, matmul_forward); with GELU
 * and without; C = 1600 at 8 rows in fp32 exceeds the fused form's shared memory (the two ops run). */
static void test_layernorm_matmul(void) {
    int shapes[][3] = {{1, 1600, 333}, {8, 256, 1000}, {8, 1600, 64}, {20, 128, 96}};
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            for (int gelu = 0; gelu < 2; gelu++) {
                int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
                size_t nin = (size_t)N * C, nout = (size_t)N * OC;
                float *x = malloc(nin * 4), *g = malloc(C * 4), *bb = malloc(C * 4), *w = malloc((size_t)OC * C * 4),
                      *bias = malloc(OC * 4);
                void *dx = dev_rand(be, dt, nin, 2.f, x), *dg = dev_rand(be, dt, C, 1.f, g),
                     *db = dev_rand(be, dt, C, 0.5f, bb);
                void *dw = dev_rand(be, dt, (size_t)OC * C, 2.f / sqrtf((float)C), w),
                     *dbias = dev_rand(be, dt, OC, 0.5f, bias);
                for (int c = 0; c < C; c++) g[c] += 1.0f; /* gains around 1 */
                be->ops->upload_f32(be, dg, dt, g, C);
                be->ops->download_f32(be, g, dg, dt, C);
                void *out = dev_nan(be, dt, nout), *pre = gelu ? dev_nan(be, dt, nout) : NULL,
                     *ln = dev_nan(be, dt, nin);
                void *out2 = dev_nan(be, dt, nout), *pre2 = gelu ? dev_nan(be, dt, nout) : NULL;
                be->ops->layernorm_matmul_forward(be, out, pre, ln, dx, dg, db, dw, dbias, N, C, OC);
                be->ops->layernorm_forward(be, ln, NULL, NULL, dx, dg, db, N, C);
                be->ops->matmul_forward(be, out2, pre2, ln, dw, dbias, NULL, N, C, OC);
                double *xh = malloc(nin * 8), *mean = malloc(N * 8), *rstd = malloc(N * 8), *ref = malloc(nout * 8);
                ln_ref(xh, mean, rstd, x, g, bb, N, C);
                for (int i = 0; i < N; i++)
                    for (int o = 0; o < OC; o++) {
                        double s = bias[o];
                        for (int c = 0; c < C; c++) s += xh[(size_t)i * C + c] * w[(size_t)o * C + c];
                        ref[(size_t)i * OC + o] = gelu ? gelu_d(s) : s;
                    }
                float *h1 = dl(be, out, dt, nout), *h2 = dl(be, out2, dt, nout);
                char name[96];
                snprintf(name, sizeof name, "layernorm_matmul_forward%s N=%d C=%d OC=%d", gelu ? " gelu" : "", N, C,
                         OC);
                check_rel(name, dt, h1, ref, nout, tol_of(dt));
                double *r2 = malloc(nout * 8);
                for (size_t i = 0; i < nout; i++) r2[i] = h2[i];
                check_rel("  against the two ops", dt, h1, r2, nout, tol_of(dt));
                printf("    bitwise the two ops' result: %s\n", memcmp(h1, h2, nout * 4) == 0 ? "yes" : "no");
                void *host[] = {r2, h1, h2, x, g, bb, w, bias, xh, mean, rstd, ref};
                for (size_t k = 0; k < sizeof host / sizeof host[0]; k++) free(host[k]);
                void *ptrs[] = {dx, dg, db, dw, dbias, out, pre, ln, out2, pre2};
                for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++)
                    if (ptrs[k]) be->ops->dealloc(be, ptrs[k]);
            }
        }
    }
}

/* layernorm_matmul with the warp-per-column few-row kernel at every row count (ZGPT_GEMV=simt) */
static void test_layernorm_matmul_simt(void) {
    setenv("ZGPT_GEMV", "simt", 1);
    test_layernorm_matmul();
    unsetenv("ZGPT_GEMV");
}

/* layernorm_matmul, matmul (every epilogue, the residual in place) and the residual's single rounding
 * with v2 for every few-row product (ZGPT_GEMV=v2; fp32 runs v1's warp per column) */
static void test_layernorm_matmul_v2(void) {
    setenv("ZGPT_GEMV", "v2", 1);
    test_layernorm_matmul();
    unsetenv("ZGPT_GEMV");
}
static void test_matmul_v2(void) {
    setenv("ZGPT_GEMV", "v2", 1);
    test_matmul();
    test_matmul_residual_rounding();
    unsetenv("ZGPT_GEMV");
}

/* ---- generation: the sample op against the CPU's, decode attention, decode_advance under a graph ---- */

/* The CUDA sample op's ids against the CPU op's on the same logits (the device's rounded values), for
 * the 9 rows at once (B=9), the first 8 (B=8) and each row alone (B=1), over many counters, with each
 * sampler: the cluster kernel with the binned top-p (ZGPT_SAMPLE=cluster; sm_90+, else the one-block
 * kernel runs), with and without PDL, the cluster kernel with v0.13's radix top-p (cluster-v13), the
 * one-block kernel with the row's z staged in shared memory (ZGPT_DECODE=new) and the one reading the
 * logits on every pass (old). */
enum { SAMPLE_B = 9, SAMPLE_V = 50257, SAMPLE_VP = 50304 };
static void sample_check(const char *what, const zg_sample_row *rows, const float *lg, int counters) {
    enum { B = SAMPLE_B, V = SAMPLE_V, Vp = SAMPLE_VP };
    zg_backend *cpu;
    zg_backend_config cc = {"cpu", -1, ZG_F32};
    ZT_CHECK(zg_backend_cpu_create(&cpu, &cc) == 0);
    static const struct {
        const char *sample, *decode, *pdl;
    } var[] = {{"cluster", "new", NULL},
               {"cluster", "new", "0"},
               {"cluster-v13", "new", NULL},
               {"block", "new", NULL},
               {"block", "old", NULL}};
    for (int vi = 0; vi < (int)(sizeof var / sizeof var[0]) * 3; vi++) {
        int di = vi % 3, k = vi / 3;
        setenv("ZGPT_SAMPLE", var[k].sample, 1);
        setenv("ZGPT_DECODE", var[k].decode, 1);
        if (var[k].pdl)
            setenv("ZGPT_PDL", var[k].pdl, 1);
        else
            unsetenv("ZGPT_PDL");
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        size_t es = dt == ZG_F32 ? 4 : 2;
        void *dlg = be->ops->alloc(be, (size_t)B * Vp * es, "logits");
        be->ops->upload_f32(be, dlg, dt, lg, (size_t)B * Vp);
        float *hl = dl(be, dlg, dt, (size_t)B * Vp); /* what the device holds */
        zg_sample_row *drows = be->ops->alloc(be, B * sizeof *rows, "rows");
        be->ops->upload(be, drows, rows, B * sizeof *rows);
        int32_t *dids = be->ops->alloc(be, B * sizeof(int32_t), "ids"), *dctr = be->ops->alloc(be, 4, "counter");
        int mismatches = 0, distinct = 0;
        for (int c = 0; c < counters; c++) {
            int32_t gpu[B], one[B], eight[B], ref[B], prev[B];
            be->ops->upload(be, dctr, &c, 4);
            be->ops->sample(be, dids, dlg, drows, dctr, B, V, Vp);
            be->ops->download(be, gpu, dids, sizeof gpu);
            for (int b = 0; b < B; b++) /* each row alone: B = 1 */
                be->ops->sample(be, dids + b, (char *)dlg + (size_t)b * Vp * es, drows + b, dctr, 1, V, Vp);
            be->ops->download(be, one, dids, sizeof one);
            be->ops->sample(be, dids, dlg, drows, dctr, 8, V, Vp); /* the first 8 rows: B = 8 */
            be->ops->download(be, eight, dids, 8 * sizeof(int32_t));
            eight[B - 1] = one[B - 1];
            cpu->ops->sample(cpu, ref, hl, rows, &c, B, V, Vp);
            for (int b = 0; b < B; b++) {
                if ((gpu[b] != ref[b] || one[b] != ref[b] || eight[b] != ref[b]) && mismatches++ < 5)
                    fprintf(stderr, "  %s %s row %d counter %d: cuda B=9 %d, B=1 %d, B=8 %d; cpu %d\n", what,
                            dt_name(dt), b, c, gpu[b], one[b], eight[b], ref[b]);
                if (c > 0) distinct += gpu[b] != prev[b];
                prev[b] = gpu[b];
            }
        }
        ZT_CHECK_MSG(mismatches == 0,
                     "%s %s ZGPT_SAMPLE=%s ZGPT_DECODE=%s ZGPT_PDL=%s: %d of %d token ids differ from the CPU op", what,
                     dt_name(dt), var[k].sample, var[k].decode, var[k].pdl ? var[k].pdl : "(unset)", mismatches,
                     B * counters);
        ZT_CHECK(distinct > counters); /* sampled rows do move with the counter */
        free(hl);
        be->ops->dealloc(be, dlg);
        be->ops->dealloc(be, drows);
        be->ops->dealloc(be, dids);
        be->ops->dealloc(be, dctr);
    }
    unsetenv("ZGPT_SAMPLE");
    unsetenv("ZGPT_PDL");
    setenv("ZGPT_DECODE", "new", 1); /* the tests' setting (main) */
    zg_backend_destroy(cpu);
}

/* greedy, top-k (with many ties: radix selection down to the id bits), top-p, both, and temperatures */
static void test_sample(void) {
    enum { B = SAMPLE_B, V = SAMPLE_V, Vp = SAMPLE_VP };
    /* inv_temperature, top_k, top_p, seed */
    zg_sample_row rows[B] = {
        {0.0f, 0, 1.0f, 0, 11},       {1.0f, 1, 1.0f, 0, 12},   {1.25f, 200, 1.0f, 0, 13},
        {1.0f, 0, 0.9f, 0, 14},       {0.77f, 50, 0.8f, 0, 15}, {1.0f, 0, 1.0f, 0, 16},
        {1.43f, V + 10, 1.0f, 0, 17}, {1.0f, 3, 0.01f, 0, 18},  {1.0f, 1000, 0.95f, 0, 1ull << 40}};
    float *lg = malloc((size_t)B * Vp * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Vp; i++) {
            float x = 4.0f * zt_rand_uniform(&g_rng);
            if (b == 2 || b == 8) x = roundf(x * 4.0f) / 4.0f; /* 33 distinct values: ties everywhere */
            if (b == 5) x = 0.5f;                              /* all equal */
            lg[(size_t)b * Vp + i] = x;
        }
    sample_check("sample", rows, lg, 40);
    free(lg);
}

/* top-p (the cluster kernel's binned rounds: their bins, the span of d, the crossing d's ties in id
 * order) at p 0.1, 0.5, 0.9, 0.95 and 1.0, alone and under top-k, at T 0.7 and 1.0, over logits like
 * the bench's (uniform, rounded to the activation dtype: ties at every value), GPT-2's (negative, skewed),
 * coarse ties, all equal, and a few tied leaders; three draws of the rows' logit kinds, 16 counters each. */
static void test_sample_top_p(void) {
    enum { B = SAMPLE_B, Vp = SAMPLE_VP };
    zg_sample_row rows[B] = {{1.0f, 0, 0.1f, 0, 21},         {1.0f / 0.7f, 0, 0.5f, 0, 22}, {1.0f, 0, 0.9f, 0, 23},
                             {1.0f / 0.7f, 0, 0.95f, 0, 24}, {1.0f, 0, 1.0f, 0, 25},        {1.0f, 200, 0.9f, 0, 26},
                             {1.0f / 0.7f, 50, 0.5f, 0, 27}, {1.0f, 0, 0.9f, 0, 28},        {1.0f, 1000, 0.95f, 0, 29}};
    float *lg = malloc((size_t)B * Vp * sizeof(float));
    for (int trial = 0; trial < 3; trial++) {
        for (int b = 0; b < B; b++) {
            int kind = (b + trial) % 6;
            for (int i = 0; i < Vp; i++) {
                float u = zt_rand_uniform(&g_rng), x = 3.0f * u;     /* kind 0: the bench's logits */
                if (kind == 1) x = -60.0f + 3.0f * u + 2.0f * u * u; /* GPT-2-like */
                if (kind == 2) x = roundf(16.0f * u) / 4.0f;         /* 33 values */
                if (kind == 3) x = 0.5f;                             /* all equal */
                if (kind == 4) x = i % 5 == 0 ? 6.0f : 4.0f * u;     /* a fifth of the ids tied in the lead */
                if (kind == 5) x = 1e-3f * u;                        /* across zero */
                lg[(size_t)b * Vp + i] = x;
            }
        }
        sample_check("sample top-p", rows, lg, 16);
    }
    free(lg);
}

/* ZGPT_SAMPLE naming no sampler: the sample op stops the process with one line naming the value (exit
 * 1) instead of running some sampler. In a child forked before this process touches CUDA (a child must
 * not use a context its parent made), which makes its own backend. */
static void test_sample_bad_env(void) {
    int fds[2];
    ZT_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    ZT_CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        setenv("ZGPT_SAMPLE", "clutser", 1);
        zg_backend *be = NULL;
        zg_backend_config cfg = {"cuda", -1, ZG_BF16};
        if (zg_backend_cuda_create(&be, &cfg) != 0) _exit(3);
        zg_sample_row row = {1.0f, 0, 0.9f, 0, 1};
        void *lg = be->ops->alloc(be, 64 * 2, "logits");
        zg_sample_row *drow = be->ops->alloc(be, sizeof row, "rows");
        int32_t *ids = be->ops->alloc(be, 8, "ids"), *ctr = be->ops->alloc(be, 8, "counter");
        be->ops->upload(be, drow, &row, sizeof row);
        be->ops->sample(be, ids, lg, drow, ctr, 1, 50, 64);
        _exit(0); /* ran a sampler: the parent's checks fail */
    }
    close(fds[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t got;
    while (n < sizeof buf - 1 && (got = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)got;
    buf[n] = 0;
    close(fds[0]);
    int st = 0;
    ZT_CHECK(waitpid(pid, &st, 0) == pid);
    ZT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "ZGPT_SAMPLE=clutser: status %d, stderr: %s", st, buf);
    const char *line = strstr(buf, "ZGPT_SAMPLE=clutser");
    ZT_CHECK_MSG(line != NULL && strstr(line, "block, cluster or cluster-v13") != NULL &&
                     strchr(line, '\n') == strrchr(buf, '\n'),
                 "ZGPT_SAMPLE=clutser: not refused in one line naming it: %s", buf);
}

/* Vocabularies smaller than the multi-block sampler's blocks per row (blocks with no ids, one id each)
 * and a few hundred: the CUDA op's ids are the CPU's, both samplers. */
static void test_sample_small(void) {
    zg_backend *cpu;
    zg_backend_config cc = {"cpu", -1, ZG_F32};
    ZT_CHECK(zg_backend_cpu_create(&cpu, &cc) == 0);
    enum { B = 4, COUNTERS = 25 };
    zg_sample_row rows[B] = {
        {0.0f, 0, 1.0f, 0, 3}, {1.0f, 3, 1.0f, 0, 4}, {0.8f, 0, 0.7f, 0, 5}, {1.3f, 0, 1.0f, 0, 6}};
    static const int Vs[][2] = {{1, 8}, {7, 8}, {13, 16}, {300, 304}};
    static const char *const samplers[2] = {"cluster", "block"};
    zg_backend *be = g_be[1];
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++)
        for (int si = 0; si < 2; si++) {
            setenv("ZGPT_SAMPLE", samplers[si], 1);
            int V = Vs[vi][0], Vp = Vs[vi][1], mismatches = 0;
            float *lg = malloc((size_t)B * Vp * sizeof(float));
            for (int i = 0; i < B * Vp; i++) lg[i] = roundf(8.0f * zt_rand_uniform(&g_rng)) / 4.0f;
            void *dlg = be->ops->alloc(be, (size_t)B * Vp * 2, "logits");
            be->ops->upload_f32(be, dlg, ZG_BF16, lg, (size_t)B * Vp);
            float *hl = dl(be, dlg, ZG_BF16, (size_t)B * Vp);
            zg_sample_row *drows = be->ops->alloc(be, sizeof rows, "rows");
            be->ops->upload(be, drows, rows, sizeof rows);
            int32_t *dids = be->ops->alloc(be, sizeof(int32_t) * B, "ids"), *dctr = be->ops->alloc(be, 4, "counter");
            for (int c = 0; c < COUNTERS; c++) {
                int32_t gpu[B], ref[B];
                be->ops->upload(be, dctr, &c, 4);
                be->ops->sample(be, dids, dlg, drows, dctr, B, V, Vp);
                be->ops->download(be, gpu, dids, sizeof gpu);
                cpu->ops->sample(cpu, ref, hl, rows, &c, B, V, Vp);
                for (int b = 0; b < B; b++) mismatches += gpu[b] != ref[b] || gpu[b] < 0 || gpu[b] >= V;
            }
            ZT_CHECK_MSG(mismatches == 0, "sample V=%d ZGPT_SAMPLE=%s: %d of %d ids differ from the CPU op", V,
                         samplers[si], mismatches, B * COUNTERS);
            free(lg);
            free(hl);
            void *ptrs[] = {dlg, drows, dids, dctr};
            for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
        }
    unsetenv("ZGPT_SAMPLE");
    zg_backend_destroy(cpu);
}

/* A decode step of a small GPT-2-shaped model (4 layers, C 768, the GPT-2 vocabulary), as generation
 * records it: encoder at the device position, per layer the fused LayerNorm + qkv product, decode
 * attention, projection + residual, LayerNorm + fc + GELU, fc projection + residual, then ln_f, the LM
 * head, a top-k 50 draw and decode_advance; `steps` replays of one recorded graph (or direct launches)
 * from position 0. Returns the (B,maxT) tokens and the last hidden state (B,C) (bf16 bits as floats). */
static void pdl_decode_run(zg_backend *be, int B, int graph, int steps, int32_t *seq_out, float *x_out) {
    enum { NL = 4, C = 768, NH = 12, V = 50257, Vp = 50304, maxT = 48 };
    const zg_backend_ops *op = be->ops;
    uint64_t rng = 0x1234abcdULL; /* the same weights for every run */
    uint64_t keep = g_rng;
    g_rng = rng;
    size_t lw = (size_t)12 * C * C, kvn = (size_t)B * maxT * C;
    void *wts = dev_rand(be, ZG_BF16, NL * lw, 0.03f, NULL), *wte = dev_rand(be, ZG_BF16, (size_t)Vp * C, 0.05f, NULL);
    void *wpe = dev_rand(be, ZG_BF16, (size_t)maxT * C, 0.3f, NULL);
    void *kc = dev_rand(be, ZG_BF16, NL * kvn, 1.f, NULL), *vc = dev_rand(be, ZG_BF16, NL * kvn, 1.f, NULL);
    void *gain = dev_rand(be, ZG_BF16, (size_t)4 * C, 1.f, NULL),
         *bias = dev_rand(be, ZG_BF16, (size_t)4 * C, 0.1f, NULL);
    g_rng = keep;
    void *x = dev_nan(be, ZG_BF16, (size_t)B * C), *y = dev_nan(be, ZG_BF16, (size_t)B * C),
         *ln = dev_nan(be, ZG_BF16, (size_t)B * C), *qkv = dev_nan(be, ZG_BF16, (size_t)B * 3 * C),
         *att = dev_nan(be, ZG_BF16, (size_t)B * C), *h = dev_nan(be, ZG_BF16, (size_t)B * 4 * C),
         *pre = dev_nan(be, ZG_BF16, (size_t)B * 4 * C), *logits = dev_nan(be, ZG_BF16, (size_t)B * Vp);
    int32_t *seq = calloc((size_t)B * maxT, sizeof(int32_t)), plen[8], pos[2] = {0, 1};
    zg_sample_row rows[8];
    for (int b = 0; b < B; b++) {
        seq[(size_t)b * maxT] = 464 + 97 * b;
        plen[b] = 1 + (b % 3); /* rows 1, 2: prompt tokens kept (0 here) at positions 1, 2 */
        zg_sample_row r = {1.0f / 0.9f, 50, 1.0f, 0, (uint64_t)(77 + b)};
        rows[b] = r;
    }
    int32_t *dseq = op->alloc(be, (size_t)B * maxT * 4, "seq"), *dplen = op->alloc(be, (size_t)B * 4, "plen"),
            *dtok = op->alloc(be, (size_t)B * 4, "tok"), *dpos = op->alloc(be, 8, "pos"),
            *dids = op->alloc(be, (size_t)B * 4, "ids");
    zg_sample_row *drows = op->alloc(be, (size_t)B * sizeof *rows, "rows");
    op->upload(be, dseq, seq, (size_t)B * maxT * 4);
    op->upload(be, dplen, plen, (size_t)B * 4);
    op->upload(be, dpos, pos, sizeof pos);
    op->upload(be, drows, rows, (size_t)B * sizeof *rows);
    for (int b = 0; b < B; b++) op->upload(be, dtok + b, &seq[(size_t)b * maxT], 4);
        /* the prefetches as gpt2.c issues them: before each product, the next product's weights */
#define PDL_STEP()                                                                                                     \
    do {                                                                                                               \
        op->prefetch(be, wts, (size_t)3 * C * C * 2);                                                                  \
        op->encoder_forward_at(be, x, dtok, wte, wpe, dpos, B, C);                                                     \
        for (int l = 0; l < NL; l++) {                                                                                 \
            char *wl = (char *)wts + (size_t)l * lw * 2;                                                               \
            op->prefetch(be, wl + (size_t)3 * C * C * 2, (size_t)C * C * 2);                                           \
            op->layernorm_matmul_forward(be, qkv, NULL, ln, x, gain, bias, wl, bias, B, C, 3 * C);                     \
            op->attention_decode(be, att, qkv, (char *)kc + (size_t)l * kvn * 2, (char *)vc + (size_t)l * kvn * 2,     \
                                 dpos, B, maxT, C, NH);                                                                \
            op->prefetch(be, wl + (size_t)4 * C * C * 2, (size_t)4 * C * C * 2);                                       \
            op->matmul_forward(be, y, NULL, att, wl + (size_t)3 * C * C * 2, bias, x, B, C, C);                        \
            op->prefetch(be, wl + (size_t)8 * C * C * 2, (size_t)4 * C * C * 2);                                       \
            op->layernorm_matmul_forward(be, h, pre, ln, y, gain, bias, wl + (size_t)4 * C * C * 2, bias, B, C,        \
                                         4 * C);                                                                       \
            if (l + 1 < NL) op->prefetch(be, wl + lw * 2, (size_t)3 * C * C * 2);                                      \
            op->matmul_forward(be, x, NULL, h, wl + (size_t)8 * C * C * 2, bias, y, B, 4 * C, C);                      \
        }                                                                                                              \
        op->layernorm_forward(be, ln, NULL, NULL, x, gain, bias, B, C);                                                \
        op->matmul_forward(be, logits, NULL, ln, wte, NULL, NULL, B, C, Vp);                                           \
        op->sample(be, dids, logits, drows, dpos + 1, B, V, Vp);                                                       \
        op->decode_advance(be, dseq, dtok, dpos, dids, dplen, B, maxT);                                                \
    } while (0)
    PDL_STEP(); /* plans and scratch made outside any recording, as generation does */
    zg_graph *g = NULL;
    if (graph) {
        ZT_CHECK(op->graph_begin(be) == 0);
        PDL_STEP();
        g = op->graph_end(be);
        ZT_CHECK(g != NULL);
    }
    for (int k = 1; k < steps; k++) {
        if (g)
            op->graph_launch(be, g);
        else
            PDL_STEP();
    }
#undef PDL_STEP
    if (g) op->graph_destroy(be, g);
    op->download(be, seq_out, dseq, (size_t)B * maxT * 4);
    be->ops->download_f32(be, x_out, x, ZG_BF16, (size_t)B * C);
    void *ptrs[] = {wts, wte, wpe, kc,     vc,   gain,  bias, x,    y,    ln,   qkv,
                    att, h,   pre, logits, dseq, dplen, dtok, dpos, dids, drows};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) op->dealloc(be, ptrs[k]);
    free(seq);
}

/* PDL (the decode step's kernels starting while the previous one ends) changes no bit: the tokens of 40
 * steps and the last hidden state with ZGPT_PDL=0 and unset, through a recorded graph and through direct
 * launches, at B=1 and B=8, with the kernels generation picks (ZGPT_DECODE unset) and with the new
 * kernels everywhere (ZGPT_DECODE=new: the few-row product at 8 rows) and with v2's few-row products
 * (ZGPT_GEMV=v2: weights loaded and prefetched before the PDL wait); the multi-block sampler and the
 * one-block one give the same tokens too. */
static void test_decode_pdl(void) {
    zg_backend *be = g_be[1];
    enum { STEPS = 40, maxT = 48, C = 768 };
    static const int Bs[2] = {1, 8};
    static const char *const decs[3] = {NULL, "new", NULL}, *const gemvs[3] = {NULL, NULL, "v2"};
    for (int bi = 0; bi < 2; bi++)
        for (int di = 0; di < 3; di++) {
            int B = Bs[bi];
            if (decs[di])
                setenv("ZGPT_DECODE", decs[di], 1);
            else
                unsetenv("ZGPT_DECODE");
            if (gemvs[di])
                setenv("ZGPT_GEMV", gemvs[di], 1);
            else
                unsetenv("ZGPT_GEMV");
            /* runs: PDL on graph, PDL off graph, PDL on direct, PDL off direct, one-block sampler graph, and
             * the L2 prefetch branch (ZGPT_DECODE_PREFETCH) 1 graph, 2 graph, 1 direct */
            enum { RUNS = 8 };
            int32_t *seq[RUNS];
            float *x[RUNS];
            for (int r = 0; r < RUNS; r++) {
                seq[r] = malloc((size_t)B * maxT * 4);
                x[r] = malloc((size_t)B * C * 4);
                setenv("ZGPT_PDL", r == 1 || r == 3 ? "0" : "1", 1);
                setenv("ZGPT_SAMPLE", r == 4 ? "block" : "cluster", 1);
                setenv("ZGPT_DECODE_PREFETCH", r == 5 || r == 7 ? "1" : (r == 6 ? "2" : "0"), 1);
                pdl_decode_run(be, B, r != 2 && r != 3 && r != 7, STEPS, seq[r], x[r]);
            }
            unsetenv("ZGPT_DECODE_PREFETCH");
            static const char *const names[RUNS] = {"PDL graph",
                                                    "no PDL graph",
                                                    "PDL direct",
                                                    "no PDL direct",
                                                    "one-block sampler graph",
                                                    "prefetch graph",
                                                    "prefetch evict_last graph",
                                                    "prefetch direct"};
            int moved = 0;
            for (int b = 0; b < B; b++)
                for (int t = 4; t < STEPS; t++) moved += seq[0][(size_t)b * maxT + t] != seq[0][(size_t)b * maxT + 3];
            ZT_CHECK_MSG(moved > 0, "B=%d: the draws never change (the test would not see a difference)", B);
            for (int r = 1; r < RUNS; r++) {
                ZT_CHECK_MSG(memcmp(seq[0], seq[r], (size_t)B * maxT * 4) == 0,
                             "decode B=%d ZGPT_DECODE=%s ZGPT_GEMV=%s: tokens of '%s' differ from '%s'", B,
                             decs[di] ? decs[di] : "(unset)", gemvs[di] ? gemvs[di] : "(unset)", names[r], names[0]);
                ZT_CHECK_MSG(memcmp(x[0], x[r], (size_t)B * C * 4) == 0,
                             "decode B=%d ZGPT_DECODE=%s ZGPT_GEMV=%s: hidden state of '%s' differs from '%s'", B,
                             decs[di] ? decs[di] : "(unset)", gemvs[di] ? gemvs[di] : "(unset)", names[r], names[0]);
            }
            printf("  B=%d ZGPT_DECODE=%s ZGPT_GEMV=%s: %d steps, tokens and hidden state bitwise across PDL on/off, "
                   "graph/direct, both samplers, L2 prefetch off/1/2\n",
                   B, decs[di] ? decs[di] : "(unset)", gemvs[di] ? gemvs[di] : "(unset)", STEPS);
            for (int r = 0; r < RUNS; r++) free(seq[r]), free(x[r]);
        }
    unsetenv("ZGPT_PDL");
    unsetenv("ZGPT_SAMPLE");
    unsetenv("ZGPT_GEMV");
    setenv("ZGPT_DECODE", "new", 1);
}

/* encoder_forward_at at a position held in device memory against encoder_forward (exact), and
 * attention_decode through the KV-cache case against the fp64 reference. */
static void test_decode_ops(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = g_be[di];
        zg_dtype dt = be->act_dtype;
        int B = 3, C = 128, maxT = 40, Vp = 64;
        /* encoder: at position 7 == encoder_forward with wpe from row 7 */
        void *wte = dev_rand(be, dt, (size_t)Vp * C, 1.0f, NULL), *wpe = dev_rand(be, dt, (size_t)maxT * C, 1.0f, NULL);
        int32_t tok[3] = {5, 63, 0}, pos[2] = {7, 8};
        int32_t *dtok = be->ops->alloc(be, sizeof tok, "tokens"), *dpos = be->ops->alloc(be, sizeof pos, "pos");
        be->ops->upload(be, dtok, tok, sizeof tok);
        be->ops->upload(be, dpos, pos, sizeof pos);
        void *o1 = dev_nan(be, dt, (size_t)B * C), *o2 = dev_nan(be, dt, (size_t)B * C);
        be->ops->encoder_forward_at(be, o1, dtok, wte, wpe, dpos, B, C);
        be->ops->encoder_forward(be, o2, dtok, wte, (char *)wpe + (size_t)7 * C * (dt == ZG_F32 ? 4 : 2), B, 1, C);
        float *h1 = dl(be, o1, dt, (size_t)B * C), *h2 = dl(be, o2, dt, (size_t)B * C);
        ZT_CHECK_MSG(memcmp(h1, h2, (size_t)B * C * 4) == 0, "encoder_forward_at %s differs from encoder_forward",
                     dt_name(dt));
        free(h1);
        free(h2);
        void *ptrs[] = {wte, wpe, dtok, dpos, o1, o2};
        for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    }
    /* 23 positions: one chunk of the split kernel; 200 (cache 300): four chunks, then a partial one;
     * under ZGPT_DECODE=new, old and auto (unset: the selection generation runs) */
    static const char *const vars[3] = {"new", "old", NULL};
    for (int v = 0; v < 3; v++) {
        if (vars[v])
            setenv("ZGPT_DECODE", vars[v], 1);
        else
            unsetenv("ZGPT_DECODE");
        printf("  ZGPT_DECODE=%s\n", vars[v] ? vars[v] : "(unset)");
        attention_cached_case(1, 23, 40);
        attention_cached_case(1, 200, 300);
    }
    setenv("ZGPT_DECODE", "new", 1);
}

/* decode_advance recorded once as a graph and replayed: the position moves on the device, rows keep
 * their prompt tokens until their prompt ends, then take the draws. */
static void test_decode_graph(void) {
    zg_backend *be = g_be[1];
    enum { B = 3, maxT = 8 };
    int32_t seq[B * maxT] = {0}, plen[B] = {1, 4, 2}, ids[B] = {101, 102, 103}, pos[2] = {0, 1};
    for (int b = 0; b < B; b++)
        for (int t = 0; t < plen[b]; t++) seq[b * maxT + t] = 10 * (b + 1) + t;
    int32_t *dseq = be->ops->alloc(be, sizeof seq, "seq"), *dplen = be->ops->alloc(be, sizeof plen, "plen");
    int32_t *dids = be->ops->alloc(be, sizeof ids, "ids"), *dpos = be->ops->alloc(be, sizeof pos, "pos");
    int32_t *dtok = be->ops->alloc(be, sizeof ids, "tokens");
    be->ops->upload(be, dseq, seq, sizeof seq);
    be->ops->upload(be, dplen, plen, sizeof plen);
    be->ops->upload(be, dids, ids, sizeof ids);
    be->ops->upload(be, dpos, pos, sizeof pos);
    ZT_CHECK(be->ops->graph_begin(be) == 0);
    be->ops->decode_advance(be, dseq, dtok, dpos, dids, dplen, B, maxT);
    zg_graph *g = be->ops->graph_end(be);
    ZT_CHECK(g != NULL);
    be->ops->download(be, pos, dpos, sizeof pos);
    ZT_CHECK_MSG(pos[0] == 0, "recording ran the op (pos %d)", pos[0]);
    for (int k = 0; k < 5 && g; k++) be->ops->graph_launch(be, g);
    int32_t tok[B];
    be->ops->download(be, seq, dseq, sizeof seq);
    be->ops->download(be, pos, dpos, sizeof pos);
    be->ops->download(be, tok, dtok, sizeof tok);
    ZT_CHECK(pos[0] == 5 && pos[1] == 6);
    for (int b = 0; b < B; b++) {
        for (int t = 1; t <= 5; t++) {
            int want = t < plen[b] ? 10 * (b + 1) + t : ids[b];
            ZT_CHECK_MSG(seq[b * maxT + t] == want, "row %d position %d: %d, expected %d", b, t, seq[b * maxT + t],
                         want);
        }
        ZT_CHECK(tok[b] == seq[b * maxT + 5]);
    }
    be->ops->graph_destroy(be, g);
    void *ptrs[] = {dseq, dplen, dids, dpos, dtok};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
}

/* A bad ZGPT_DECODE_PREFETCH is refused when the backend is made, in one line naming the value. */
static void test_decode_prefetch_env(void) {
    setenv("ZGPT_DECODE_PREFETCH", "yes", 1);
    zg_backend *be = NULL;
    zg_backend_config cfg = {"cuda", -1, ZG_BF16};
    int rc = zg_backend_cuda_create(&be, &cfg);
    unsetenv("ZGPT_DECODE_PREFETCH");
    ZT_CHECK_MSG(rc != 0 && be == NULL, "ZGPT_DECODE_PREFETCH=yes was accepted");
    if (be) zg_backend_destroy(be);
    const char *msg = zg_error_message();
    ZT_CHECK_MSG(strstr(msg, "ZGPT_DECODE_PREFETCH=yes") != NULL && strchr(msg, '\n') == NULL,
                 "the refusal does not name the value in one line: %s", msg);
    zg_error_clear();
}

/* ZGPT_DECODE=old|new: the decode path's earlier kernels or the new ones (every op runs both; new with the
 * binned top-p, ZGPT_SAMPLE=cluster, which is opt-in until measured; the (v13) rows keep v0.13's); the step
 * graph also runs auto (the per-shape selection generation uses) and gemv / split (one new kernel family
 * alone: which one a difference comes from), and auto without PDL (nopdl), with the one-block sampler
 * (block), and with neither (v012: what generation ran before PDL and the multi-block sampler). "old" runs
 * without PDL and with the one-block sampler: the kernels as v0.11 launched them. gemv8: auto with the
 * few-row products (the tensor-core form from 2 rows) up to 8 rows (ZGPT_GEMV_MAX_N=8). v1 / v2: auto
 * with every few-row product in that kernel (ZGPT_GEMV); v2g1: v2 with one block per SM, v2nopf: v2
 * without the L2 prefetch before the PDL wait. */
/* ZGPT_GEMV's kernels for the few-row products (cuda_internal.h, zgc_gemv_pick) and v2's A/B knobs */
enum { GEMV_KINDS = 5 };
static const struct {
    const char *name, *gemv, *grid, *prefetch; /* NULL: unset */
} gemv_kind[GEMV_KINDS] = {{"cublaslt", "cublaslt", NULL, NULL},
                           {"v1", "v1", NULL, NULL},
                           {"v2", "v2", NULL, NULL},
                           {"v2g1", "v2", "1", NULL},
                           {"v2nopf", "v2", NULL, "0"}};
enum { DEC_VARIANTS = 15 };
static const struct {
    const char *name, *decode, *pdl, *sample, *gemv_max_n, *prefetch; /* NULL: unset */
    int gemv;                                                         /* gemv_kind index; -1: ZGPT_GEMV unset */
} dec_variant[DEC_VARIANTS] = {
    {"old", "old", "0", "block", NULL, NULL, -1},   {"new", "new", NULL, "cluster", NULL, NULL, -1},
    {"auto", NULL, NULL, NULL, NULL, NULL, -1},     {"gemv", "gemv", NULL, NULL, NULL, NULL, -1},
    {"split", "split", NULL, NULL, NULL, NULL, -1}, {"nopdl", NULL, "0", NULL, NULL, NULL, -1},
    {"block", NULL, NULL, "block", NULL, NULL, -1}, {"v012", NULL, "0", "block", NULL, NULL, -1},
    {"gemv8", NULL, NULL, NULL, "8", NULL, -1},     {"pf", NULL, NULL, NULL, NULL, "1", -1},
    {"pflast", NULL, NULL, NULL, NULL, "2", -1},    {"v1", NULL, NULL, NULL, NULL, NULL, 1},
    {"v2", NULL, NULL, NULL, NULL, NULL, 2},        {"v2g1", NULL, NULL, NULL, NULL, NULL, 3},
    {"v2nopf", NULL, NULL, NULL, NULL, NULL, 4}};
static void dec_env(const char *name, const char *value) {
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}
/* the ZGPT_GEMV this process started with: gemv_env(-1) restores it, so that gpu_validate's check of a bad
 * value (ZGPT_GEMV=bogus on the bench) reaches the first product instead of being unset before it */
static const char *g_gemv0;
static void gemv_env(int k) {
    dec_env("ZGPT_GEMV", k >= 0 ? gemv_kind[k].gemv : g_gemv0);
    dec_env("ZGPT_GEMV_GRID", k >= 0 ? gemv_kind[k].grid : NULL);
    dec_env("ZGPT_GEMV_PREFETCH", k >= 0 ? gemv_kind[k].prefetch : NULL);
}
static const char *dec_label(char *buf, size_t n, const char *op, int v) {
    dec_env("ZGPT_DECODE", dec_variant[v].decode);
    dec_env("ZGPT_PDL", dec_variant[v].pdl);
    dec_env("ZGPT_SAMPLE", dec_variant[v].sample);
    dec_env("ZGPT_GEMV_MAX_N", dec_variant[v].gemv_max_n);
    dec_env("ZGPT_DECODE_PREFETCH", dec_variant[v].prefetch);
    gemv_env(dec_variant[v].gemv);
    snprintf(buf, n, "%s (%s)", op, dec_variant[v].name);
    return buf;
}
static void dec_unset(void) {
    unsetenv("ZGPT_DECODE_PREFETCH");
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
    void *wts = dev_big(be, ZG_BF16, NL * lw, 0.02f), *kc = dev_big(be, ZG_BF16, NL * kvn, 1.f),
         *vc = dev_big(be, ZG_BF16, NL * kvn, 1.f);
    void *x = dev_rand(be, ZG_BF16, (size_t)B * C, 1.f, NULL), *ln = dev_rand(be, ZG_BF16, (size_t)B * C, 1.f, NULL);
    void *qkv = dev_rand(be, ZG_BF16, (size_t)B * 3 * C, 1.f, NULL),
         *att = dev_rand(be, ZG_BF16, (size_t)B * C, 1.f, NULL);
    void *h = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *pre = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *gain = dev_rand(be, ZG_BF16, (size_t)4 * C, 1.f, NULL),
         *bias = dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    const zg_backend_ops *op = be->ops;
    /* with the prefetches as gpt2.c issues them (each acts only under ZGPT_DECODE_PREFETCH=1|2: pf, pflast) */
#define DEC_STEP()                                                                                                     \
    do {                                                                                                               \
        op->prefetch(be, wts, (size_t)3 * C * C * 2);                                                                  \
        for (int l = 0; l < NL; l++) {                                                                                 \
            char *wl = (char *)wts + (size_t)l * lw * 2;                                                               \
            void *wqkv = wl, *wproj = wl + (size_t)3 * C * C * 2, *wfc = wl + (size_t)4 * C * C * 2,                   \
                 *wfp = wl + (size_t)8 * C * C * 2;                                                                    \
            op->prefetch(be, wproj, (size_t)C *C * 2);                                                                 \
            op->layernorm_matmul_forward(be, qkv, NULL, ln, x, gain, bias, wqkv, bias, B, C, 3 * C);                   \
            op->attention_decode(be, att, qkv, (char *)kc + (size_t)l * kvn * 2, (char *)vc + (size_t)l * kvn * 2,     \
                                 pos, B, maxT, C, NH);                                                                 \
            op->prefetch(be, wfc, (size_t)4 * C * C * 2);                                                              \
            op->matmul_forward(be, x, NULL, att, wproj, bias, x, B, C, C);                                             \
            op->prefetch(be, wfp, (size_t)4 * C * C * 2);                                                              \
            op->layernorm_matmul_forward(be, h, pre, ln, x, gain, bias, wfc, bias, B, C, 4 * C);                       \
            if (l + 1 < NL) op->prefetch(be, wl + lw * 2, (size_t)3 * C * C * 2);                                      \
            op->matmul_forward(be, x, NULL, h, wfp, bias, x, B, 4 * C, C);                                             \
        }                                                                                                              \
        op->layernorm_forward(be, ln, NULL, NULL, x, gain, bias, B, C);                                                \
        op->matmul_forward(be, logits, NULL, ln, wte, NULL, NULL, B, C, Vp);                                           \
        op->sample(be, ids, logits, drows, pos + 1, B, V, Vp);                                                         \
    } while (0)
    float step_ms[DEC_VARIANTS] = {0};
    for (int v = 0; v < DEC_VARIANTS; v++) {
        char lab[96];
        dec_label(lab, sizeof lab, "decode step graph, 48 layers + head + top-k", v);
        DEC_STEP(); /* plans and scratch made outside the recording, as generation does */
        ZT_CHECK(op->graph_begin(be) == 0);
        DEC_STEP();
        zg_graph *g = op->graph_end(be);
        ZT_CHECK(g != NULL);
        if (g) {
            float med;
            BENCH_TIME(ctx, med, bench_reps(), op->graph_launch(be, g));
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
    void *wts = dev_big(be, ZG_BF16, NL * lw, 0.02f);
    void *x = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *y = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *pre = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *res = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *ln = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *gain = dev_rand(be, ZG_BF16, (size_t)4 * C, 1.f, NULL),
         *bias = dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
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
            BENCH_TIME(ctx, med, bench_reps(), {
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
        BENCH_TIME(ctx, med, bench_reps(), op->graph_launch(be, g));
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
static void bench_decode(zg_backend *be, int B, int L) {
    bench_ctx ctx = {be, NULL, NULL};
    cudaEventCreate(&ctx.e0);
    cudaEventCreate(&ctx.e1);
    int C = 1600, NH = 25, hs = C / NH, V = 50257, Vp = 50304, maxT = 1024;
    printf("\n### decode step ops, GPT-2 XL: B=%d, %d cached positions (bf16)\n\n", B, L);
    printf("| op | ms (median) | TFLOP/s | GB/s |\n|---|---|---|---|\n");
    void *x = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL),
         *y = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *pre = dev_rand(be, ZG_BF16, (size_t)B * 4 * C, 1.f, NULL);
    void *w = dev_rand(be, ZG_BF16, (size_t)4 * C * C, 0.02f, NULL),
         *bias = dev_rand(be, ZG_BF16, (size_t)4 * C, 0.02f, NULL);
    void *wte = dev_big(be, ZG_BF16, (size_t)Vp * C, 0.02f);
    void *logits = dev_rand(be, ZG_BF16, (size_t)B * Vp, 3.f, NULL);
    void *kc = dev_big(be, ZG_BF16, (size_t)B * NH * maxT * hs, 1.f),
         *vc = dev_big(be, ZG_BF16, (size_t)B * NH * maxT * hs, 1.f);
    void *qkv = dev_rand(be, ZG_BF16, (size_t)B * 3 * C, 1.f, NULL);
    int32_t hpos[2] = {L - 1, L}, *pos = be->ops->alloc(be, sizeof hpos, "pos"),
            *ids = be->ops->alloc(be, B * 4, "ids");
    be->ops->upload(be, pos, hpos, sizeof hpos);
    zg_sample_row *rows = malloc((size_t)B * sizeof *rows),
                  *drows = be->ops->alloc(be, (size_t)B * sizeof *rows, "rows");
    double wb = 2.0 * C * C;
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
    /* the step's draw: T=0.8, top-k 200 */
    for (int b = 0; b < B; b++) {
        zg_sample_row r = {1.0f / 0.8f, 200, 1.0f, 0, (uint64_t)b};
        rows[b] = r;
    }
    be->ops->upload(be, drows, rows, (size_t)B * sizeof *rows);
    bench_gemv(&ctx, B);
    bench_decode_step(&ctx, B, wte, logits, drows, ids, pos);
    void *ptrs[] = {x, y, pre, w, bias, wte, logits, kc, vc, qkv, pos, ids, drows};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    free(rows);
    cudaEventDestroy(ctx.e0);
    cudaEventDestroy(ctx.e1);
}

/* ZG_BENCH_ONLY=124m|xl16|xl8|survey|attn|decode runs only that part (default: all) */
static int bench_part(const char *name) {
    const char *o = getenv("ZG_BENCH_ONLY");
    return o == NULL || o[0] == 0 || strcmp(o, name) == 0;
}

static void run_bench(void) {
    zg_backend *be = g_be[1];
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    if (bench_part("124m")) bench_config(be, "GPT-2 124M", 16, 1024, 768, 12, 12);
    if (bench_part("xl16")) bench_config(be, "GPT-2 XL", 16, 1024, 1600, 25, 48);
    if (bench_part("xl8")) bench_config(be, "GPT-2 XL", 8, 1024, 1600, 25, 48);
    if (bench_part("survey")) bench_matmul_algos(16, 1024, 1600);
    if (bench_part("attn")) bench_attn_ln(be, 16, 1024, 1600, 25);
    if (bench_part("decode")) {
        bench_decode(be, 1, 512);
        bench_decode(be, 8, 512);
    }
}

int main(int argc, char **argv) {
    int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    g_gemv0 = getenv("ZGPT_GEMV") ? strdup(getenv("ZGPT_GEMV")) : NULL;
    if (!bench) zt_run("sample_bad_env", test_sample_bad_env); /* first: before this process touches CUDA */
    if (zg_backend_cuda_device_count() <= 0) {
        fprintf(stderr, "no CUDA device visible: this test needs a GPU\n");
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        zg_backend_config cfg = {"cuda", -1, (zg_dtype)i};
        if (zg_backend_cuda_create(&g_be[i], &cfg) != 0) {
            zg_error_print();
            return 1;
        }
    }
    if (bench) {
        run_bench();
    } else {
        /* the new decode kernels at every shape they take (unset, generation's default, picks per shape:
         * the few-row product only at 1 row), so N = 2..8 keep exercising gemv_cuda.cu */
        setenv("ZGPT_DECODE", "new", 1);
        zt_run("casts", test_casts);
        zt_run("memory", test_memory);
        zt_run("host_copies", test_host_copies);
        zt_run("encoder", test_encoder);
        zt_run("layernorm", test_layernorm);
        zt_run("matmul", test_matmul);
        zt_run("layernorm_matmul", test_layernorm_matmul);
        zt_run("layernorm_matmul_simt", test_layernorm_matmul_simt);
        zt_run("layernorm_matmul_v2", test_layernorm_matmul_v2);
        zt_run("matmul_v2", test_matmul_v2);
        zt_run("gemv_forms", test_gemv_forms);
        zt_run("matmul_residual_rounding", test_matmul_residual_rounding);
        zt_run("gelu_residual", test_gelu_residual);
        zt_run("attention", test_attention);
        zt_run("attention_large", test_attention_large);
        zt_run("attention_cached", test_attention_cached);
        zt_run("classifier", test_classifier);
        zt_run("optimizer", test_optimizer);
        zt_run("lamb", test_lamb);
        zt_run("sample", test_sample);
        zt_run("sample_top_p", test_sample_top_p);
        zt_run("sample_small", test_sample_small);
        zt_run("decode_pdl", test_decode_pdl);
        zt_run("decode_ops", test_decode_ops);
        zt_run("decode_graph", test_decode_graph);
        zt_run("decode_prefetch_env", test_decode_prefetch_env);
    }
    for (int i = 0; i < 3; i++) zg_backend_destroy(g_be[i]);
    return zt_finish();
}
