/* CPU backend ops: forward values against direct formulas, and every backward op against central
 * finite differences of its forward (loss = sum(out * R) for a fixed random R, accumulated in
 * double). Also the accumulate/overwrite conventions of backend.h, AdamW against torch's formula,
 * the KV-cache attention against full attention, casts, and the fp32-only refusal. */
#include "backend/backend.h"
#include "backend/cpu/cpu_internal.h"
#include "backend/host_pages.h"
#include "core/error.h"
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zg_backend *BE;
static uint64_t RNG = 42;

static float *rand_buf(size_t n, float scale) {
    float *p = malloc(n * sizeof(float));
    if (p == NULL) abort();
    for (size_t i = 0; i < n; i++) p[i] = scale * zt_rand_uniform(&RNG);
    return p;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Loss of the op under test at the current inputs. */
typedef double (*loss_fn)(void *ctx);

/* Compares analytic gradient g of x (n elements) with central differences of f on up to 24
 * elements (all when n is small). */
static void fd_check(const char *what, float *x, const float *g, size_t n, loss_fn f, void *ctx, float eps, double atol,
                     double rtol) {
    size_t stride = n <= 24 ? 1 : n / 24;
    double worst = 0.0;
    for (size_t i = 0; i < n; i += stride) {
        float keep = x[i];
        x[i] = keep + eps;
        double lp = f(ctx);
        x[i] = keep - eps;
        double lm = f(ctx);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * eps);
        double err = fabs(fd - g[i]);
        double lim = atol + rtol * fabs(fd);
        if (err / lim > worst) worst = err / lim;
        ZT_CHECK_MSG(err <= lim, "%s[%zu]: analytic %.6g, finite difference %.6g", what, i, g[i], fd);
    }
    printf("  %-28s worst error / tolerance %.3f\n", what, worst);
}

/* ---- layernorm ---------------------------------------------------------------------------------- */

typedef struct {
    int N, C;
    float *inp, *w, *b, *out, *mean, *rstd, *R;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    BE->ops->layernorm_forward(BE, c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C);
    return dot(c->out, c->R, (size_t)c->N * c->C);
}

static void test_layernorm(void) {
    ln_ctx c = {5, 24, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t nc = (size_t)c.N * c.C;
    c.inp = rand_buf(nc, 2.0f);
    c.w = rand_buf(c.C, 1.0f);
    /* |w| in [0.25, 1]: the output form below divides by w */
    for (int k = 0; k < c.C; k++) c.w[k] = (c.w[k] >= 0 ? 0.25f : -0.25f) + 0.75f * c.w[k];
    c.b = rand_buf(c.C, 1.0f);
    c.out = rand_buf(nc, 1.0f);
    c.mean = rand_buf(c.N, 1.0f);
    c.rstd = rand_buf(c.N, 1.0f);
    c.R = rand_buf(nc, 1.0f);
    ln_loss(&c);
    /* forward against the formula */
    for (int i = 0; i < c.N; i++) {
        double m = 0, v = 0;
        for (int k = 0; k < c.C; k++) m += c.inp[i * c.C + k];
        m /= c.C;
        for (int k = 0; k < c.C; k++) v += (c.inp[i * c.C + k] - m) * (c.inp[i * c.C + k] - m);
        v /= c.C;
        for (int k = 0; k < c.C; k++)
            ZT_NEAR(c.out[i * c.C + k], (c.inp[i * c.C + k] - m) / sqrt(v + 1e-5) * c.w[k] + c.b[k], 1e-5, 1e-5);
    }
    /* backward: dinp accumulates onto a pre-filled buffer, dw/db accumulate too */
    float *dinp = rand_buf(nc, 1.0f), *dw = rand_buf(c.C, 1.0f), *db = rand_buf(c.C, 1.0f);
    float *dinp0 = malloc(nc * 4), *dw0 = malloc(c.C * 4), *db0 = malloc(c.C * 4);
    memcpy(dinp0, dinp, nc * 4);
    memcpy(dw0, dw, c.C * 4);
    memcpy(db0, db, c.C * 4);
    /* with the column sums of dinp before and after (the projections' bias gradients): they accumulate too, with
     * the bits of matmul_backward's dbias over the same rows */
    float *si = rand_buf(c.C, 1.0f), *so = rand_buf(c.C, 1.0f), *ri = malloc(c.C * 4), *ro = malloc(c.C * 4);
    memcpy(ri, si, c.C * 4);
    memcpy(ro, so, c.C * 4);
    BE->ops->matmul_backward(BE, NULL, NULL, ri, dinp0, NULL, NULL, NULL, c.N, 0, c.C, 0);
    BE->ops->layernorm_backward(BE, dinp, dw, db, c.R, c.inp, NULL, c.w, c.b, c.mean, c.rstd, c.N, c.C, si, so);
    BE->ops->matmul_backward(BE, NULL, NULL, ro, dinp, NULL, NULL, NULL, c.N, 0, c.C, 0);
    ZT_CHECK_MSG(memcmp(si, ri, c.C * 4) == 0, "layernorm_backward dsum_in differs from matmul_backward's dbias");
    ZT_CHECK_MSG(memcmp(so, ro, c.C * 4) == 0, "layernorm_backward dsum_out differs from matmul_backward's dbias");
    free(si), free(so), free(ri), free(ro);
    for (size_t i = 0; i < nc; i++) dinp[i] -= dinp0[i];
    for (int i = 0; i < c.C; i++) {
        dw[i] -= dw0[i];
        db[i] -= db0[i];
    }
    fd_check("layernorm dinp", c.inp, dinp, nc, ln_loss, &c, 1e-2f, 2e-3, 2e-2);
    fd_check("layernorm dw", c.w, dw, c.C, ln_loss, &c, 1e-2f, 2e-3, 2e-2);
    fd_check("layernorm db", c.b, db, c.C, ln_loss, &c, 1e-2f, 2e-3, 2e-2);

    /* statistics not wanted (inference): the same output, mean/rstd NULL */
    float *o2 = malloc(nc * 4);
    ln_loss(&c);
    BE->ops->layernorm_forward(BE, o2, NULL, NULL, c.inp, c.w, c.b, c.N, c.C);
    ZT_CHECK_MSG(memcmp(o2, c.out, nc * 4) == 0, "layernorm_forward without mean/rstd differs");
    free(o2);

    /* The output form (x NULL: xhat = (y - b) / w, mean unused) gives the input form's gradients up to
     * the rounding of y; it also accumulates. */
    float *ei = calloc(nc, 4), *ew = calloc(c.C, 4), *eb = calloc(c.C, 4);
    float *fi = calloc(nc, 4), *fw = calloc(c.C, 4), *fb = calloc(c.C, 4);
    BE->ops->layernorm_backward(BE, ei, ew, eb, c.R, c.inp, NULL, c.w, c.b, c.mean, c.rstd, c.N, c.C, NULL, NULL);
    BE->ops->layernorm_backward(BE, fi, fw, fb, c.R, NULL, c.out, c.w, c.b, NULL, c.rstd, c.N, c.C, NULL, NULL);
    for (size_t i = 0; i < nc; i++) ZT_NEAR(fi[i], ei[i], 1e-5, 1e-4);
    for (int k = 0; k < c.C; k++) {
        ZT_NEAR(fw[k], ew[k], 1e-5, 1e-4);
        ZT_NEAR(fb[k], eb[k], 1e-6, 1e-6);
    }
    BE->ops->layernorm_backward(BE, fi, fw, fb, c.R, NULL, c.out, c.w, c.b, NULL, c.rstd, c.N, c.C, NULL, NULL);
    for (int k = 0; k < c.C; k++) ZT_NEAR(fw[k], 2.0 * ew[k], 1e-5, 1e-4);
    /* a weight of exactly 0: its column's input is lost (xhat taken as 0), but nothing is inf or NaN */
    float keep = c.w[3];
    c.w[3] = 0.0f;
    ln_loss(&c);
    memset(fi, 0, nc * 4), memset(fw, 0, c.C * 4), memset(fb, 0, c.C * 4);
    BE->ops->layernorm_backward(BE, fi, fw, fb, c.R, NULL, c.out, c.w, c.b, NULL, c.rstd, c.N, c.C, NULL, NULL);
    int finite = 1;
    for (size_t i = 0; i < nc; i++) finite &= isfinite(fi[i]) != 0;
    for (int k = 0; k < c.C; k++) finite &= isfinite(fw[k]) && isfinite(fb[k]);
    ZT_CHECK_MSG(finite, "layernorm_backward from the output with a zero weight gave inf/NaN");
    ZT_CHECK_MSG(fw[3] == 0.0f, "zero-weight column: dw %g, expected 0 (xhat not recoverable)", (double)fw[3]);
    c.w[3] = keep;
    free(ei), free(ew), free(eb), free(fi), free(fw), free(fb);
    free(dinp), free(dw), free(db), free(dinp0), free(dw0), free(db0);
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.mean), free(c.rstd), free(c.R);
}

/* ---- matmul (+ GELU) ---------------------------------------------------------------------------- */

typedef struct {
    int N, C, H, OC;
    float *x, *w1, *b1, *pre, *y, *w2, *b2, *z, *R;
    int gelu;
} mm_ctx;

/* gelu = 0: z = x @ w1^T + b1 (N,H). gelu = 1: z = gelu(x @ w1^T + b1) @ w2^T + b2 (N,OC). */
static double mm_loss(void *p) {
    mm_ctx *c = p;
    if (!c->gelu) {
        BE->ops->matmul_forward(BE, c->z, NULL, c->x, c->w1, c->b1, NULL, c->N, c->C, c->H);
        return dot(c->z, c->R, (size_t)c->N * c->H);
    }
    BE->ops->matmul_forward(BE, c->y, c->pre, c->x, c->w1, c->b1, NULL, c->N, c->C, c->H);
    BE->ops->matmul_forward(BE, c->z, NULL, c->y, c->w2, c->b2, NULL, c->N, c->H, c->OC);
    return dot(c->z, c->R, (size_t)c->N * c->OC);
}

static double gelu_ref(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
}

static void test_matmul(void) {
    mm_ctx c = {6, 8, 12, 5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    c.x = rand_buf((size_t)c.N * c.C, 1.0f);
    c.w1 = rand_buf((size_t)c.H * c.C, 0.5f);
    c.b1 = rand_buf(c.H, 0.5f);
    c.pre = rand_buf((size_t)c.N * c.H, 1.0f);
    c.y = rand_buf((size_t)c.N * c.H, 1.0f);
    c.w2 = rand_buf((size_t)c.OC * c.H, 0.5f);
    c.b2 = rand_buf(c.OC, 0.5f);
    c.z = rand_buf((size_t)c.N * c.H, 1.0f);
    c.R = rand_buf((size_t)c.N * c.H, 1.0f);
    /* plain matmul: forward against the formula */
    mm_loss(&c);
    for (int i = 0; i < c.N; i++)
        for (int o = 0; o < c.H; o++) {
            double s = c.b1[o];
            for (int k = 0; k < c.C; k++) s += (double)c.x[i * c.C + k] * c.w1[o * c.C + k];
            ZT_NEAR(c.z[i * c.H + o], s, 1e-5, 1e-5);
        }
    /* fused residual: out = x @ w1^T (+ b1) + res, with and without bias, and in place (res == out) */
    {
        size_t nz = (size_t)c.N * c.H;
        float *res = rand_buf(nz, 1.0f), *o = malloc(nz * 4);
        for (int variant = 0; variant < 3; variant++) { /* 0: bias, 1: no bias, 2: bias, in place */
            const float *bias = variant == 1 ? NULL : c.b1;
            if (variant == 2) memcpy(o, res, nz * 4);
            BE->ops->matmul_forward(BE, o, NULL, c.x, c.w1, bias, variant == 2 ? o : res, c.N, c.C, c.H);
            for (int i = 0; i < c.N; i++)
                for (int k = 0; k < c.H; k++) {
                    double s = (double)res[i * c.H + k] + (bias ? bias[k] : 0.0);
                    for (int j = 0; j < c.C; j++) s += (double)c.x[i * c.C + j] * c.w1[k * c.C + j];
                    ZT_NEAR(o[i * c.H + k], s, 1e-5, 1e-5);
                }
        }
        free(res), free(o);
    }
    float *dx = rand_buf((size_t)c.N * c.C, 1.0f), *dw = calloc((size_t)c.H * c.C, 4), *db = calloc(c.H, 4);
    BE->ops->matmul_backward(BE, dx, dw, db, c.R, c.x, c.w1, NULL, c.N, c.C, c.H, 0); /* dx overwritten */
    fd_check("matmul dinp", c.x, dx, (size_t)c.N * c.C, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    fd_check("matmul dweight", c.w1, dw, (size_t)c.H * c.C, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    fd_check("matmul dbias", c.b1, db, c.H, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    /* dw and dbias accumulate: a second call doubles them */
    float *dw2 = malloc((size_t)c.H * c.C * 4);
    memcpy(dw2, dw, (size_t)c.H * c.C * 4);
    BE->ops->matmul_backward(BE, NULL, dw, db, c.R, c.x, c.w1, NULL, c.N, c.C, c.H, 0);
    ZT_NEAR(dw[3], 2.0 * dw2[3], 1e-6, 1e-5);
    /* dw_overwrite: the product alone whatever dw held, bitwise the first call's (which added it to zeros) */
    BE->ops->matmul_backward(BE, NULL, dw, NULL, c.R, c.x, c.w1, NULL, c.N, c.C, c.H, 1);
    ZT_CHECK(memcmp(dw, dw2, (size_t)c.H * c.C * 4) == 0);
    free(dw2);

    /* GELU matmul chain: gradients through matmul_backward(gelu_inp) */
    c.gelu = 1;
    mm_loss(&c);
    for (int i = 0; i < c.N * c.H; i++) ZT_NEAR(c.y[i], gelu_ref(c.pre[i]), 1e-6, 1e-5);
    float *dy = malloc((size_t)c.N * c.H * 4), *dw2b = calloc((size_t)c.OC * c.H, 4), *db2 = calloc(c.OC, 4);
    memset(dw, 0, (size_t)c.H * c.C * 4);
    memset(db, 0, c.H * 4);
    BE->ops->matmul_backward(BE, dy, dw2b, db2, c.R, c.y, c.w2, c.pre, c.N, c.H, c.OC, 0);
    BE->ops->matmul_backward(BE, dx, dw, db, dy, c.x, c.w1, NULL, c.N, c.C, c.H, 0);
    fd_check("matmul+gelu dinp", c.x, dx, (size_t)c.N * c.C, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    fd_check("matmul+gelu dweight", c.w1, dw, (size_t)c.H * c.C, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    fd_check("matmul+gelu dbias", c.b1, db, c.H, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    fd_check("matmul(after gelu) dweight", c.w2, dw2b, (size_t)c.OC * c.H, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    fd_check("matmul(after gelu) dbias", c.b2, db2, c.OC, mm_loss, &c, 1e-2f, 1e-3, 1e-2);
    /* GELU over extreme and tiny inputs (the CPU's exp/tanh are its own polynomial), NaN stays NaN */
    {
        float xs[10] = {-100.0f, -20.0f, -3.0f, -1e-4f, 0.0f, 1e-6f, 0.5f, 4.0f, 100.0f, NAN}, ys[10];
        BE->ops->gelu_forward(BE, ys, xs, 10);
        for (int i = 0; i < 9; i++) ZT_NEAR(ys[i], gelu_ref(xs[i]), 1e-7, 2e-6);
        ZT_CHECK(isnan(ys[9]));
        /* its derivative through matmul_backward: N = 1, OC = 1, w = ones, dout = 1 -> dinp = gelu'(x) */
        float ones[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, one = 1.0f, dw[10] = {0}, dx[10];
        BE->ops->matmul_backward(BE, dx, dw, NULL, &one, ys, ones, xs, 1, 10, 1, 0);
        for (int i = 0; i < 9; i++) {
            double x = xs[i], k = sqrt(2.0 / 3.14159265358979323846), u = k * (x + 0.044715 * x * x * x);
            double th = tanh(u);
            double want = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * k * (1 + 3 * 0.044715 * x * x);
            ZT_NEAR(dx[i], want, 1e-6, 2e-5);
        }
        ZT_CHECK(isnan(dx[9]));
    }
    /* gelu_forward (recompute path) equals the fused one */
    float *g2 = malloc((size_t)c.N * c.H * 4);
    BE->ops->gelu_forward(BE, g2, c.pre, (size_t)c.N * c.H);
    ZT_CHECK(memcmp(g2, c.y, (size_t)c.N * c.H * 4) == 0);
    free(g2), free(dy), free(dw2b), free(db2), free(dx), free(dw), free(db);
    free(c.x), free(c.w1), free(c.b1), free(c.pre), free(c.y), free(c.w2), free(c.b2), free(c.z), free(c.R);
}

/* ---- attention ---------------------------------------------------------------------------------- */

typedef struct {
    int B, T, C, NH;
    float *qkv, *out, *stats, *R;
} att_ctx;

static double att_loss(void *p) {
    att_ctx *c = p;
    BE->ops->attention_forward(BE, c->out, c->stats, c->qkv, c->B, c->T, c->C, c->NH);
    return dot(c->out, c->R, (size_t)c->B * c->T * c->C);
}

/* T above the CPU's 64-query block exercises the blocked causal products (a partial last block too). */
static void attention_case(int B, int T, int C, int NH, int check_cache) {
    att_ctx c = {B, T, C, NH, NULL, NULL, NULL, NULL};
    size_t nqkv = (size_t)c.B * c.T * 3 * c.C, nout = (size_t)c.B * c.T * c.C;
    c.qkv = rand_buf(nqkv, 1.0f);
    c.out = rand_buf(nout, 1.0f);
    c.R = rand_buf(nout, 1.0f);
    c.stats = malloc(BE->ops->attention_stats_bytes(BE, c.B, c.T, c.NH));
    att_loss(&c);
    /* forward against a direct double computation */
    int hs = c.C / c.NH;
    for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.NH; h++)
            for (int t = 0; t < c.T; t++) {
                const float *q = c.qkv + ((size_t)b * c.T + t) * 3 * c.C + h * hs;
                double s[256], mx = -1e30, sum = 0;
                for (int j = 0; j <= t; j++) {
                    const float *k = c.qkv + ((size_t)b * c.T + j) * 3 * c.C + c.C + h * hs;
                    s[j] = dot(q, k, hs) / sqrt((double)hs);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j <= t; j++) sum += (s[j] = exp(s[j] - mx));
                for (int d = 0; d < hs; d++) {
                    double o = 0;
                    for (int j = 0; j <= t; j++)
                        o += s[j] / sum * c.qkv[((size_t)b * c.T + j) * 3 * c.C + 2 * c.C + h * hs + d];
                    ZT_NEAR(c.out[((size_t)b * c.T + t) * c.C + h * hs + d], o, 1e-5, 1e-5);
                }
            }
    float *dqkv = rand_buf(nqkv, 1.0f); /* overwritten */
    BE->ops->attention_backward(BE, dqkv, c.R, c.qkv, c.out, c.stats, c.B, c.T, c.C, c.NH);
    fd_check("attention dqkv", c.qkv, dqkv, nqkv, att_loss, &c, 1e-2f, 1e-3, 1e-2);
    /* a denser check of the last rows (keys/values of late positions only reach late queries) */
    fd_check("attention dqkv (last row)", c.qkv + nqkv - 3 * c.C, dqkv + nqkv - 3 * c.C, 3 * c.C, att_loss, &c, 1e-2f,
             1e-3, 1e-2);
    /* an early row of batch 0: its keys/values are seen by the queries of every later block */
    size_t r10 = (size_t)(c.T > 10 ? 10 : 0) * 3 * c.C;
    fd_check("attention dqkv (row 10)", c.qkv + r10, dqkv + r10, 3 * c.C, att_loss, &c, 1e-2f, 1e-3, 1e-2);

    /* KV cache: feeding the sequence in chunks (3, then 1, then 3 positions) gives the same outputs */
    att_loss(&c); /* outputs at the unperturbed inputs (fd_check leaves the last perturbation's) */
    if (!check_cache) {
        free(dqkv), free(c.qkv), free(c.out), free(c.R), free(c.stats);
        return;
    }
    int maxT = 8;
    float *kc = calloc((size_t)c.B * maxT * c.C, 4), *vc = calloc((size_t)c.B * maxT * c.C, 4);
    int chunks[3] = {3, 1, 3}, pos = 0;
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        int Tn = chunks[k];
        float *q = malloc((size_t)c.B * Tn * 3 * c.C * 4), *o = malloc((size_t)c.B * Tn * c.C * 4);
        for (int b = 0; b < c.B; b++)
            memcpy(q + (size_t)b * Tn * 3 * c.C, c.qkv + ((size_t)b * c.T + pos) * 3 * c.C, (size_t)Tn * 3 * c.C * 4);
        BE->ops->attention_forward_cached(BE, o, q, kc, vc, c.B, Tn, pos, maxT, c.C, c.NH);
        for (int b = 0; b < c.B; b++)
            for (int i = 0; i < Tn * c.C; i++) {
                double e = fabs(o[(size_t)b * Tn * c.C + i] - c.out[((size_t)b * c.T + pos) * c.C + i]);
                worst = e > worst ? e : worst;
            }
        pos += Tn;
        free(q), free(o);
    }
    ZT_CHECK_MSG(worst < 1e-5, "cached attention differs from full attention by %.3g", worst);
    free(kc), free(vc), free(dqkv), free(c.qkv), free(c.out), free(c.R), free(c.stats);
}

static void test_attention(void) {
    attention_case(2, 7, 12, 3, 1);
    attention_case(1, 150, 8, 2, 0);
}

/* ---- classifier --------------------------------------------------------------------------------- */

typedef struct {
    int N, V, Vp;
    float *logits, *work, *losses;
    int32_t *targets;
} cls_ctx;

static double cls_loss(void *p) {
    cls_ctx *c = p;
    memcpy(c->work, c->logits, (size_t)c->N * c->Vp * 4);
    BE->ops->classifier(BE, c->losses, c->work, c->targets, c->N, c->V, c->Vp, 0.0f);
    double s = 0;
    for (int i = 0; i < c->N; i++) s += c->losses[i];
    return s;
}

static void test_classifier(void) {
    cls_ctx c = {4, 10, 16, NULL, NULL, NULL, NULL};
    size_t n = (size_t)c.N * c.Vp;
    c.logits = rand_buf(n, 3.0f);
    for (int i = 0; i < c.N; i++)
        for (int j = c.V; j < c.Vp; j++) c.logits[i * c.Vp + j] = 100.0f; /* padded columns must not matter */
    c.work = malloc(n * 4);
    c.losses = malloc(c.N * 4);
    int32_t targets[4] = {3, 9, -1, 0};
    c.targets = targets;
    cls_loss(&c);
    for (int i = 0; i < c.N; i++) {
        if (targets[i] < 0) {
            ZT_CHECK(c.losses[i] == 0.0f);
            continue;
        }
        double s = 0;
        for (int j = 0; j < c.V; j++) s += exp(c.logits[i * c.Vp + j]);
        ZT_NEAR(c.losses[i], log(s) - c.logits[i * c.Vp + targets[i]], 1e-5, 1e-5);
    }
    float *grad = malloc(n * 4);
    memcpy(grad, c.logits, n * 4);
    float dloss = 0.7f;
    BE->ops->classifier(BE, NULL, grad, c.targets, c.N, c.V, c.Vp, dloss);
    for (size_t i = 0; i < n; i++) grad[i] /= dloss;
    fd_check("classifier dlogits", c.logits, grad, n, cls_loss, &c, 1e-2f, 1e-3, 1e-2);
    int pad_zero = 1;
    for (int i = 0; i < c.N; i++)
        for (int j = c.V; j < c.Vp; j++) pad_zero &= grad[i * c.Vp + j] == 0.0f;
    ZT_CHECK_MSG(pad_zero, "padded logit columns got a gradient");
    /* a NaN logit gives a NaN loss (how a diverged run is detected), large logits stay finite */
    c.logits[1 * c.Vp + 2] = NAN;
    c.logits[3 * c.Vp + 1] = 1e4f;
    cls_loss(&c);
    ZT_CHECK(isnan(c.losses[1]) && isfinite(c.losses[3]) && isfinite(c.losses[0]));
    free(grad), free(c.logits), free(c.work), free(c.losses);
}

/* ---- encoder, residual -------------------------------------------------------------------------- */

typedef struct {
    int B, T, C;
    int32_t *tok;
    float *wte, *wpe, *out, *R;
} enc_ctx;

static double enc_loss(void *p) {
    enc_ctx *c = p;
    BE->ops->encoder_forward(BE, c->out, c->tok, c->wte, c->wpe, c->B, c->T, c->C);
    return dot(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_encoder_residual(void) {
    int32_t tok[8] = {1, 4, 1, 2, 4, 4, 0, 3}; /* repeated tokens: the scatter must add up */
    enc_ctx c = {2, 4, 6, tok, NULL, NULL, NULL, NULL};
    int V = 5;
    c.wte = rand_buf((size_t)V * c.C, 1.0f);
    c.wpe = rand_buf((size_t)c.T * c.C, 1.0f);
    c.out = malloc((size_t)c.B * c.T * c.C * 4);
    c.R = rand_buf((size_t)c.B * c.T * c.C, 1.0f);
    enc_loss(&c);
    ZT_NEAR(c.out[(1 * 4 + 2) * 6 + 5], c.wte[0 * 6 + 5] + c.wpe[2 * 6 + 5], 1e-7, 0); /* tok[6] = 0 */
    float *dwte = calloc((size_t)V * c.C, 4), *dwpe = calloc((size_t)c.T * c.C, 4);
    BE->ops->encoder_backward(BE, dwte, dwpe, c.R, c.tok, c.B, c.T, c.C);
    fd_check("encoder dwte", c.wte, dwte, (size_t)V * c.C, enc_loss, &c, 1e-2f, 1e-4, 1e-3);
    fd_check("encoder dwpe", c.wpe, dwpe, (size_t)c.T * c.C, enc_loss, &c, 1e-2f, 1e-4, 1e-3);
    /* residual: out = a + b; its backward is the identity on both inputs, checked as a FD of the sum */
    float *a = rand_buf(48, 1.0f), *b = rand_buf(48, 1.0f), *o = malloc(48 * 4);
    BE->ops->residual_forward(BE, o, a, b, 48);
    int ok = 1;
    for (int i = 0; i < 48; i++) ok &= o[i] == a[i] + b[i];
    ZT_CHECK(ok);
    free(a), free(b), free(o), free(dwte), free(dwpe), free(c.wte), free(c.wpe), free(c.out), free(c.R);
}

/* ---- optimizer and buffer ops ------------------------------------------------------------------- */

static void test_adamw(void) {
    size_t n = 10;
    float *p = rand_buf(n, 1.0f), *m = calloc(n, 4), *v = calloc(n, 4);
    /* the same updates through the master-weight path: fp32 master + a separate parameter copy */
    float *mp = malloc(n * 4), *master = malloc(n * 4), *m2 = calloc(n, 4), *v2 = calloc(n, 4);
    memcpy(master, p, n * 4);
    double pr[10], mr[10] = {0}, vr[10] = {0};
    for (size_t i = 0; i < n; i++) pr[i] = p[i];
    zg_segment segs[2] = {{0, 6, 0.1f}, {6, 4, 0.0f}};
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gs = 0.5f;
    for (int step = 1; step <= 3; step++) {
        float *g = rand_buf(n, 1.0f);
        zg_adamw_args a = {p, NULL, g, m, v, segs, 2, lr, b1, b2, eps, step, gs, 0, 0, 0, 0, 0, 0, 0, NULL};
        BE->ops->adamw(BE, &a);
        zg_adamw_args a2 = {mp, master, g, m2, v2, segs, 2, lr, b1, b2, eps, step, gs, 0, 0, 0, 0, 0, 0, 0, NULL};
        BE->ops->adamw(BE, &a2);
        for (size_t i = 0; i < n; i++) {
            double wd = i < 6 ? 0.1 : 0.0, gg = (double)g[i] * gs;
            pr[i] -= lr * wd * pr[i]; /* decoupled decay first, as torch.optim.AdamW */
            mr[i] = b1 * mr[i] + (1 - b1) * gg;
            vr[i] = b2 * vr[i] + (1 - b2) * gg * gg;
            pr[i] -= lr * (mr[i] / (1 - pow(b1, step))) / (sqrt(vr[i] / (1 - pow(b2, step))) + eps);
        }
        free(g);
    }
    for (size_t i = 0; i < n; i++) ZT_NEAR(p[i], pr[i], 1e-6, 1e-5);
    for (size_t i = 0; i < n; i++) ZT_NEAR(mp[i], pr[i], 1e-6, 1e-5);
    for (size_t i = 0; i < n; i++) ZT_CHECK(mp[i] == master[i]);
    free(mp), free(master), free(m2), free(v2);
    /* sum_squares and scale */
    ZT_NEAR(BE->ops->sum_squares(BE, p, ZG_F32, n), dot(p, p, n), 1e-9, 1e-6);
    float keep = p[3];
    BE->ops->scale(BE, p, ZG_F32, n, 2.0f);
    ZT_NEAR(p[3], 2.0 * keep, 0, 1e-7);
    p[4] = NAN;
    ZT_CHECK(!isfinite(BE->ops->sum_squares(BE, p, ZG_F32, n)));
    free(p), free(m), free(v);
}

static void test_casts(void) {
    float src[6] = {1.0f, -2.5f, 3.14159265f, 65504.0f, 1e-7f, 0.0f};
    uint16_t h[6];
    float back[6];
    BE->ops->cast(BE, h, ZG_F16, src, ZG_F32, 6);
    BE->ops->cast(BE, back, ZG_F32, h, ZG_F16, 6);
    ZT_CHECK(back[0] == 1.0f && back[1] == -2.5f && back[3] == 65504.0f && back[5] == 0.0f);
    ZT_NEAR(back[2], 3.140625, 0, 1e-7);      /* nearest fp16 */
    ZT_NEAR(back[4], 1.1920929e-07, 0, 1e-6); /* fp16 subnormal 2^-23 */
    BE->ops->cast(BE, h, ZG_BF16, src, ZG_F32, 6);
    BE->ops->cast(BE, back, ZG_F32, h, ZG_BF16, 6);
    ZT_CHECK(back[0] == 1.0f && back[1] == -2.5f);
    ZT_NEAR(back[2], 3.140625, 0, 1e-7);
    ZT_CHECK(zg_f32_to_f16(1e6f) == 0x7c00); /* overflow to inf */
    ZT_CHECK(isnan(zg_bf16_to_f32(zg_f32_to_bf16(NAN))));
}

/* Host staging memory, copy_async and events on the CPU: copies happen at once, events are always
 * reached, host blocks are counted apart from backend memory. */
static void test_host_copies(void) {
    size_t host0 = BE->host_bytes_in_use, dev0 = BE->bytes_in_use;
    float *h = BE->ops->host_alloc(BE, 1000 * sizeof(float), 1, "test block");
    ZT_CHECK(h != NULL && ((uintptr_t)h % 64) == 0 && h[999] == 0.0f);
    ZT_CHECK(BE->host_bytes_in_use == host0 + 4000 && BE->bytes_in_use == dev0 && BE->host_bytes_peak >= 4000);
    float *d = BE->ops->alloc(BE, 1000 * sizeof(float), "device block");
    for (int i = 0; i < 1000; i++) d[i] = (float)i;
    zg_event *ev = BE->ops->event_create(BE);
    ZT_CHECK(ev != NULL && BE->ops->event_query(BE, ev) == 1);
    BE->ops->event_record(BE, ev, ZG_STREAM_COMPUTE);
    BE->ops->stream_wait(BE, ZG_STREAM_COPY, ev);
    BE->ops->copy_async(BE, h, d, 1000 * sizeof(float), ZG_COPY_D2H);
    BE->ops->event_record(BE, ev, ZG_STREAM_COPY);
    BE->ops->event_synchronize(BE, ev);
    ZT_CHECK(BE->ops->event_query(BE, ev) == 1 && h[0] == 0.0f && h[999] == 999.0f);
    h[5] = -1.0f;
    BE->ops->copy_async(BE, d, h, 1000 * sizeof(float), ZG_COPY_H2D);
    ZT_CHECK(d[5] == -1.0f);
    BE->ops->event_destroy(BE, ev);
    BE->ops->dealloc(BE, d);
    BE->ops->host_free(BE, h);
    BE->ops->host_free(BE, NULL);
    ZT_CHECK(BE->host_bytes_in_use == host0);
}

/* The huge-page mapping behind CUDA's large pinned blocks (backend/host_pages.h): 2 MiB aligned, its
 * length rounded up, resident and zeroed, writable to the end. */
static void test_host_pages(void) {
    size_t bytes = ZG_HOST_PAGES_MIN + 1;
    ZT_CHECK(zg_host_pages_len(bytes) == ZG_HOST_PAGES_MIN + ZG_HOST_PAGES_ALIGN);
    ZT_CHECK(zg_host_pages_len(ZG_HOST_PAGES_ALIGN) == ZG_HOST_PAGES_ALIGN);
    unsigned char *p = zg_host_pages_map(bytes);
    ZT_CHECK(p != NULL && ((uintptr_t)p % ZG_HOST_PAGES_ALIGN) == 0);
    if (!p) return;
    size_t len = zg_host_pages_len(bytes);
    int zero = 1;
    for (size_t i = 0; i < len; i += 4093) zero &= p[i] == 0;
    ZT_CHECK(zero && p[len - 1] == 0);
    memset(p + len - 4096, 0xab, 4096);
    ZT_CHECK(p[len - 1] == 0xab);
    zg_host_pages_unmap(p, bytes);
}

/* host_alloc on several threads at once (the checkpoint snapshot is reserved on a thread of its own
 * while the trainer allocates): the counts stay exact. Real blocks, then the accounting alone in a
 * tight loop (where lost updates of a plain += show within a few thousand rounds). */
static void *host_alloc_churn(void *arg) {
    (void)arg;
    for (int i = 0; i < 200; i++) BE->ops->host_free(BE, BE->ops->host_alloc(BE, 4096 + (size_t)i, 1, "churn"));
    _Alignas(64) unsigned char block[ZG_HOST_HEADER + 64];
    int pinned;
    for (int i = 0; i < 3000000; i++) zg_host_block_unwrap(BE, zg_host_block_wrap(BE, block, 64, 0), &pinned, NULL);
    return NULL;
}

static void test_host_alloc_threads(void) {
    size_t host0 = BE->host_bytes_in_use;
    pthread_t t[4];
    for (int i = 0; i < 4; i++) ZT_CHECK(pthread_create(&t[i], NULL, host_alloc_churn, NULL) == 0);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    ZT_CHECK(BE->host_bytes_in_use == host0 && BE->host_bytes_peak >= host0 + 64);
}

static void test_refuses_low_precision(void) {
    zg_backend *be = NULL;
    zg_backend_config cfg = {"cpu", -1, ZG_BF16};
    ZT_CHECK(zg_backend_create(&be, &cfg) == -1 && be == NULL);
    ZT_CHECK(strstr(zg_error_message(), "bf16") != NULL && strstr(zg_error_message(), "fp32") != NULL);
    cfg.device = "tpu";
    cfg.precision = ZG_F32;
    ZT_CHECK(zg_backend_create(&be, &cfg) == -1 && strstr(zg_error_message(), "tpu") != NULL);
    zg_dtype dt;
    ZT_CHECK(zg_dtype_parse("bfloat16", &dt) == 0 && dt == ZG_BF16);
    ZT_CHECK(zg_dtype_parse("fp8", &dt) == -1 && strstr(zg_error_message(), "fp8") != NULL);
}

/* The host AdamW's 16-bit conversions on one instruction set against the library's scalar ones:
 * every fp16 value widened (NaNs with their payload and signalling bit); narrowed: every fp16 value's
 * exact float, the float midpoints between neighbours (ties to even) and one ulp either side, float
 * denormals, overflow to inf, NaNs of every kind (the canonical sign | 0x7e00), and a sweep of all
 * floats in steps of 4093 ulps; bf16 the same sweep plus its own ties. Lengths that are not a multiple
 * of the vector width exercise the scalar tails. */
static int host_conv_isa_ok(zg_host_isa isa) {
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof *h), *back = malloc(4 * N * sizeof *back);
    float *f = malloc(N * sizeof *f), *probe = malloc(4 * N * sizeof *probe);
    int ok = 1;
    for (uint32_t i = 0; i < N; i++) h[i] = (uint16_t)i;
    zg_host_widen16(isa, f, h, N - 3, 0);
    for (uint32_t i = 0; i < N - 3; i++) {
        float r = zg_f16_to_f32((uint16_t)i);
        ok &= memcmp(&r, &f[i], 4) == 0;
    }
    zg_host_widen16(isa, f, h, N, 1);
    for (uint32_t i = 0; i < N; i++) {
        float r = zg_bf16_to_f32((uint16_t)i);
        ok &= memcmp(&r, &f[i], 4) == 0;
    }
    for (uint32_t i = 0; i < N; i++) {
        uint16_t nx = (uint16_t)(i + 1);
        float mid = (float)(((double)zg_f16_to_f32((uint16_t)i) + (double)zg_f16_to_f32(nx)) / 2.0);
        probe[4 * i] = zg_f16_to_f32((uint16_t)i);
        probe[4 * i + 1] = mid;
        probe[4 * i + 2] = nextafterf(mid, INFINITY);
        probe[4 * i + 3] = nextafterf(mid, -INFINITY);
    }
    zg_host_narrow16(isa, back, probe, 4 * N - 5, 0);
    for (uint32_t i = 0; i < 4 * N - 5; i++) ok &= back[i] == zg_f32_to_f16(probe[i]);
    /* bf16 ties: the midpoints between neighbouring bf16 values, and one ulp either side */
    for (uint32_t i = 0; i < N; i++) {
        uint32_t lo = i << 16, b[3] = {lo | 0x8000u, lo | 0x8001u, lo | 0x7fffu};
        for (int k = 0; k < 3; k++) memcpy(&probe[3 * i + (uint32_t)k], &b[k], 4);
    }
    zg_host_narrow16(isa, back, probe, 3 * N, 1);
    for (uint32_t i = 0; i < 3 * N; i++) ok &= back[i] == zg_f32_to_bf16(probe[i]);
    uint32_t nans[6] = {0x7f800001u, 0xff800001u, 0x7fc00000u, 0xffffffffu, 0x7fbfffffu, 0x7fe01234u};
    float special[24] = {1e-45f, -1e-40f, 65519.0f, 65520.0f, -1e30f, INFINITY, NAN, -0.0f, -INFINITY, 5.96e-8f};
    for (int i = 0; i < 6; i++) memcpy(&special[10 + i], &nans[i], 4);
    for (int i = 16; i < 24; i++) special[i] = special[i - 16] * -0.5f;
    for (int bf = 0; bf <= 1; bf++) {
        uint16_t out[24];
        zg_host_narrow16(isa, out, special, 24, bf);
        for (int i = 0; i < 24; i++) ok &= out[i] == (bf ? zg_f32_to_bf16(special[i]) : zg_f32_to_f16(special[i]));
    }
    for (uint64_t u = 0; u <= 0xffffffffu; u += 4093u * N) {
        for (uint32_t k = 0; k < N; k++) {
            uint32_t b = (uint32_t)(u + (uint64_t)k * 4093u);
            memcpy(&probe[k], &b, 4);
        }
        zg_host_narrow16(isa, back, probe, N, 0);
        for (uint32_t k = 0; k < N; k++) ok &= back[k] == zg_f32_to_f16(probe[k]);
        zg_host_narrow16(isa, back, probe, N, 1);
        for (uint32_t k = 0; k < N; k++) ok &= back[k] == zg_f32_to_bf16(probe[k]);
    }
    free(h), free(back), free(f), free(probe);
    return ok;
}

static void test_host_f16_conversions(void) {
    static const char *names[ZG_HOST_ISA_COUNT] = {"baseline", "avx2+f16c", "avx512f"};
    int tested = 0;
    for (int isa = 0; isa < ZG_HOST_ISA_COUNT; isa++) {
        if (!zg_host_isa_supported((zg_host_isa)isa)) continue;
        int ok = host_conv_isa_ok((zg_host_isa)isa);
        if (!ok) fprintf(stderr, "  16-bit conversions differ from the scalar ones on %s\n", names[isa]);
        ZT_CHECK(ok);
        tested++;
    }
    ZT_CHECK(tested >= 1 && zg_host_isa_supported(ZG_HOST_ISA_BASE));
    fprintf(stderr, "  16-bit conversions checked on %d instruction set(s); the AdamW uses %s\n", tested,
            names[zg_host_isa_best()]);
}

/* zg_host_round16 (the checkpoint's rebuild of 16-bit parameters from fp32 master weights) against the
 * scalar round trip, over values of every magnitude (fp16 subnormals, overflow to infinity, ties) and a
 * length that is not a multiple of the conversions' chunk */
static void test_host_round16(void) {
    enum { N = 5000 };
    float *x = malloc(N * sizeof *x), *want = malloc(N * sizeof *want);
    for (int bf = 0; bf < 2; bf++) {
        uint32_t r = 12345;
        for (int i = 0; i < N; i++) {
            r = r * 1664525u + 1013904223u;
            float m = (float)(r >> 8) / (float)(1u << 24) - 0.5f;
            x[i] = ldexpf(m, (int)(r % 48) - 30); /* 2^-31 .. 2^17: below fp16's subnormals to beyond its max */
            if (i % 97 == 0) x[i] = 1.0f + ldexpf(1.0f, -11) * (float)(i % 3); /* fp16 ties and neighbours */
            want[i] = bf ? zg_bf16_to_f32(zg_f32_to_bf16(x[i])) : zg_f16_to_f32(zg_f32_to_f16(x[i]));
        }
        zg_host_round16(x, N, bf);
        int bad = 0;
        for (int i = 0; i < N; i++) bad += memcmp(&x[i], &want[i], sizeof(float)) != 0;
        ZT_CHECK_MSG(bad == 0, "zg_host_round16 (%s): %d of %d values differ from the scalar round trip",
                     bf ? "bf16" : "fp16", bad, N);
    }
    free(x);
    free(want);
}

int main(void) {
    zg_backend_config cfg = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&BE, &cfg) != 0) {
        zg_error_print();
        return 1;
    }
    zt_run("host_pages", test_host_pages);
    zt_run("host_alloc_threads", test_host_alloc_threads);
    zt_run("layernorm", test_layernorm);
    zt_run("matmul", test_matmul);
    zt_run("attention", test_attention);
    zt_run("classifier", test_classifier);
    zt_run("encoder_residual", test_encoder_residual);
    zt_run("adamw", test_adamw);
    zt_run("host_f16_conversions", test_host_f16_conversions);
    zt_run("host_round16", test_host_round16);
    zt_run("casts", test_casts);
    zt_run("host_copies", test_host_copies);
    zt_run("refuses_low_precision", test_refuses_low_precision);
    zg_backend_destroy(BE);
    return zt_finish();
}
