/* gpu_test_ops_cuda, LayerNorm forward/backward, its variants and their determinism. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- LayerNorm ------------------------------------------------------------------------------- */

void oc_ln_ref(double *out, double *mean, double *rstd, const float *x, const float *w, const float *b, int N, int C) {
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
 * 2048; 96 -> 1 warp per row, 768 -> 2, 1600 -> 4 (fp32: 8), 2056 -> 8 (fp32: the warp kernels), 7176 -> the warp
 * kernels; the backward with asynchronous next-row copies), "group" = the same without those copies, "warp" =
 * ZGPT_LN=warp, the warp-per-row kernels (16-bit C % 8 == 0 and C <= 2048: the register-resident ones, 768:
 * 3 vectors per lane, 1600: 7, 96: 1; 2056 (9 vectors per lane) and 7176 the vector fallback; fp32 96, 100, 768
 * register, 1600, 2056, 7176 fallback). 100 and 37 (C % 8 != 0) take the scalar kernels either way. */
/* r (C) = s0 + the column sums of rows (N,C) in fp64: layernorm_backward's dsum_in / dsum_out */
static void colsum_ref(double *r, const float *s0, const float *rows, int N, int C) {
    for (int c = 0; c < C; c++) r[c] = s0[c];
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) r[c] += rows[(size_t)i * C + c];
}
/* checks layernorm_backward's dsum_in (si, from si0) and dsum_out (so, from so0) against dinp as given (din0)
 * and as left (dinp, downloaded) */
static void check_sums(zg_backend *be, const char *form, void *si, const float *si0, void *so, const float *so0,
                       const float *din0, const float *dinp, int N, int C) {
    zg_dtype dt = be->act_dtype;
    double *r = malloc((size_t)C * 8);
    float *o;
    char name[64];
    if (si != NULL) { /* (NULL: not asked for) */
        o = oc_dl(be, si, dt, C);
        colsum_ref(r, si0, din0, N, C);
        snprintf(name, sizeof name, "  %s dsum_in", form);
        oc_check_rel(name, dt, o, r, C, oc_tol_of(dt));
        free(o);
    }
    o = oc_dl(be, so, dt, C);
    colsum_ref(r, so0, dinp, N, C);
    snprintf(name, sizeof name, "  %s dsum_out", form);
    oc_check_rel(name, dt, o, r, C, oc_tol_of(dt));
    free(o);
    free(r);
}

static void test_layernorm_variant(const char *variant) {
    if (variant != NULL)
        setenv("ZGPT_LN", variant, 1);
    else
        unsetenv("ZGPT_LN");
    /* Each shape runs the backward in both forms (from x and mean/rstd; from y, b and rstd). */
    int shapes[][2] = {{4096, 768}, {1000, 1600}, {67, 96},  {33, 1600}, {16, 768},
                       {9, 100},    {5, 37},      {7, 2056}, {3, 7176}};
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        for (int si = 0; si < nshapes; si++) {
            int N = shapes[si][0], C = shapes[si][1];
            size_t nc = (size_t)N * C;
            float *a = malloc(nc * 4), *w = malloc(C * 4), *bias = malloc(C * 4);
            void *da = oc_dev_rand(be, dt, nc, 2.f, a);
            void *dw = oc_dev_rand(be, dt, C, 1.5f, w), *dbias = oc_dev_rand(be, dt, C, 0.5f, bias);
            float *mean_d = be->ops->alloc(be, N * 4, "mean"), *rstd_d = be->ops->alloc(be, N * 4, "rstd");
            void *out = oc_dev_nan(be, dt, nc);
            double *ref = malloc(nc * 8), *rm = malloc(N * 8), *rr = malloc(N * 8);
            char name[96];
            /* plain */
            be->ops->layernorm_forward(be, out, mean_d, rstd_d, da, dw, dbias, N, C);
            oc_ln_ref(ref, rm, rr, a, w, bias, N, C);
            float *o = oc_dl(be, out, dt, nc), *om = oc_dl(be, mean_d, ZG_F32, N), *orr = oc_dl(be, rstd_d, ZG_F32, N);
            snprintf(name, sizeof name, "layernorm_forward%s%s N=%d C=%d", variant ? " ZGPT_LN=" : "",
                     variant ? variant : "", N, C);
            oc_check_rel(name, dt, o, ref, nc, oc_tol_of(dt));
            oc_check_rel("  mean", dt, om, rm, N, 1e-5);
            oc_check_rel("  rstd", dt, orr, rr, N, 1e-4);
            free(o);
            free(om);
            free(orr);
            /* statistics not wanted */
            oc_poison(be, out, dt, nc);
            be->ops->layernorm_forward(be, out, NULL, NULL, da, dw, dbias, N, C);
            o = oc_dl(be, out, dt, nc);
            oc_check_rel("  without mean/rstd", dt, o, ref, nc, oc_tol_of(dt));
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
            void *ddout = oc_dev_rand(be, dt, nc, 1.f, dout), *ddinp = oc_dev_rand(be, dt, nc, 0.3f, dinp0);
            void *ddw = oc_dev_rand(be, dt, C, 0.3f, dw0), *ddb = oc_dev_rand(be, dt, C, 0.3f, db0);
            /* with the column sums of dinp before and after (every other shape only the second: either may be
             * NULL) */
            float *si0 = malloc(C * 4), *so0 = malloc(C * 4);
            void *dsi = oc_dev_rand(be, dt, C, 0.3f, si0), *dso = oc_dev_rand(be, dt, C, 0.3f, so0);
            be->ops->layernorm_backward(be, ddinp, ddw, ddb, ddout, da, NULL, dw, NULL, mean_d, rstd_d, N, C,
                                        si % 2 ? NULL : dsi, dso);
            double *rdi = malloc(nc * 8), *rdw = malloc(C * 8), *rdb = malloc(C * 8);
            ln_bwd_ref(rdi, rdw, rdb, dinp0, dw0, db0, dout, a, w, NULL, fm, fr, 0, N, C);
            float *odi = oc_dl(be, ddinp, dt, nc), *odw = oc_dl(be, ddw, dt, C), *odb = oc_dl(be, ddb, dt, C);
            snprintf(name, sizeof name, "layernorm_backward dinp N=%d C=%d", N, C);
            oc_check_rel(name, dt, odi, rdi, nc, oc_tol_of(dt));
            oc_check_rel("  dw", dt, odw, rdw, C, oc_tol_of(dt));
            oc_check_rel("  db", dt, odb, rdb, C, oc_tol_of(dt));
            {
                float *nsi = oc_dl(be, dsi, dt, C);
                if (si % 2) ZT_CHECK_MSG(memcmp(nsi, si0, C * 4) == 0, "dsum_in NULL: a sum was written anyway");
                free(nsi);
                check_sums(be, "input form", si % 2 ? NULL : dsi, si0, dso, so0, dinp0, odi, N, C);
            }
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
                float mag = 1.f + 0.5f * zt_rand_uniform(&oc_rng);
                wy[c] = zt_rand_uniform(&oc_rng) < 0.f ? -mag : mag;
            }
            void *dwy = be->ops->alloc(be, C * (dt == ZG_F32 ? 4 : 2), "weights away from 0");
            be->ops->upload_f32(be, dwy, dt, wy, C);
            be->ops->download_f32(be, wy, dwy, dt, C);
            void *yd = oc_dev_nan(be, dt, nc);
            be->ops->layernorm_forward(be, yd, NULL, NULL, da, dwy, dbias, N, C);
            float *yh = oc_dl(be, yd, dt, nc);
            float *dinp1 = malloc(nc * 4), *dw1 = malloc(C * 4), *db1 = malloc(C * 4);
            void *ddinp1 = oc_dev_rand(be, dt, nc, 0.3f, dinp1);
            void *ddw1 = oc_dev_rand(be, dt, C, 0.3f, dw1), *ddb1 = oc_dev_rand(be, dt, C, 0.3f, db1);
            be->ops->upload_f32(be, dsi, dt, si0, C);
            be->ops->upload_f32(be, dso, dt, so0, C);
            be->ops->layernorm_backward(be, ddinp1, ddw1, ddb1, ddout, NULL, yd, dwy, dbias, NULL, rstd_d, N, C, dsi,
                                        dso);
            ln_bwd_ref(rdi, rdw, rdb, dinp1, dw1, db1, dout, yh, wy, bias, NULL, fr, 1, N, C);
            odi = oc_dl(be, ddinp1, dt, nc);
            odw = oc_dl(be, ddw1, dt, C);
            odb = oc_dl(be, ddb1, dt, C);
            snprintf(name, sizeof name, "layernorm_backward from y dinp N=%d C=%d", N, C);
            oc_check_rel(name, dt, odi, rdi, nc, oc_tol_of(dt));
            oc_check_rel("  dw", dt, odw, rdw, C, oc_tol_of(dt));
            oc_check_rel("  db", dt, odb, rdb, C, oc_tol_of(dt));
            check_sums(be, "output form", dsi, si0, dso, so0, dinp1, odi, N, C);
            be->ops->dealloc(be, dsi);
            be->ops->dealloc(be, dso);
            free(si0);
            free(so0);
            double tol_x = dt == ZG_F32 ? oc_tol_of(dt) : 5 * oc_tol_of(dt);
            ln_bwd_ref(rdi, rdw, rdb, dinp1, dw1, db1, dout, a, wy, NULL, fm, fr, 0, N, C);
            oc_check_rel("  dinp vs input form", dt, odi, rdi, nc, tol_x);
            oc_check_rel("  dw vs input form", dt, odw, rdw, C, tol_x);
            oc_check_rel("  db vs input form", dt, odb, rdb, C, tol_x);
            free(odi);
            free(odw);
            free(odb);
            /* a weight of exactly 0 (column C/2): y = b there, xhat taken as 0; everything finite and
             * as the reference with that rule */
            int cz = C / 2;
            wy[cz] = 0.f;
            be->ops->upload_f32(be, dwy, dt, wy, C);
            oc_poison(be, yd, dt, nc);
            be->ops->layernorm_forward(be, yd, NULL, NULL, da, dwy, dbias, N, C);
            free(yh);
            yh = oc_dl(be, yd, dt, nc);
            be->ops->upload_f32(be, ddinp1, dt, dinp1, nc);
            be->ops->upload_f32(be, ddw1, dt, dw1, C);
            be->ops->upload_f32(be, ddb1, dt, db1, C);
            be->ops->layernorm_backward(be, ddinp1, ddw1, ddb1, ddout, NULL, yd, dwy, dbias, NULL, rstd_d, N, C, NULL,
                                        NULL);
            odi = oc_dl(be, ddinp1, dt, nc);
            odw = oc_dl(be, ddw1, dt, C);
            odb = oc_dl(be, ddb1, dt, C);
            size_t nonfin = count_nonfinite(odi, nc) + count_nonfinite(odw, C) + count_nonfinite(odb, C);
            ZT_CHECK_MSG(nonfin == 0, "layernorm_backward from y, w[%d] = 0, %s N=%d C=%d: %zu non-finite outputs", cz,
                         oc_dt_name(dt), N, C, nonfin);
            ln_bwd_ref(rdi, rdw, rdb, dinp1, dw1, db1, dout, yh, wy, bias, NULL, fr, 1, N, C);
            oc_check_rel("  w = 0 column: dinp", dt, odi, rdi, nc, oc_tol_of(dt));
            oc_check_rel("  w = 0 column: dw", dt, odw, rdw, C, oc_tol_of(dt));
            oc_check_rel("  w = 0 column: db", dt, odb, rdb, C, oc_tol_of(dt));
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
    zg_backend *be = oc_be[1];
    zg_dtype dt = be->act_dtype;
    int N = 16384, C = 1600;
    size_t nc = (size_t)N * C;
    if (variant != NULL)
        setenv("ZGPT_LN", variant, 1);
    else
        unsetenv("ZGPT_LN");
    void *x = oc_dev_rand(be, dt, nc, 2.f, NULL), *dout = oc_dev_rand(be, dt, nc, 1.f, NULL),
         *y = oc_dev_nan(be, dt, nc);
    void *w = oc_dev_rand(be, dt, C, 1.f, NULL), *b = oc_dev_rand(be, dt, C, 0.2f, NULL);
    float *mean = be->ops->alloc(be, N * 4, "mean"), *rstd = be->ops->alloc(be, N * 4, "rstd");
    be->ops->layernorm_forward(be, y, mean, rstd, x, w, b, N, C);
    float *res[2][5];
    for (int r = 0; r < 2; r++) {
        void *di = oc_dev_rand(be, dt, nc, 0.f, NULL), *dw = oc_dev_rand(be, dt, C, 0.f, NULL),
             *db = oc_dev_rand(be, dt, C, 0.f, NULL), *si = oc_dev_rand(be, dt, C, 0.f, NULL),
             *so = oc_dev_rand(be, dt, C, 0.f, NULL);
        be->ops->copy(be, di, dout, nc * zg_dtype_size(dt)); /* a nonzero dinp to start from: dsum_in is not 0 */
        be->ops->layernorm_backward(be, di, dw, db, dout, x, NULL, w, NULL, mean, rstd, N, C, si, so);
        res[r][0] = oc_dl(be, di, dt, nc), res[r][1] = oc_dl(be, dw, dt, C), res[r][2] = oc_dl(be, db, dt, C);
        res[r][3] = oc_dl(be, si, dt, C), res[r][4] = oc_dl(be, so, dt, C);
        void *ptrs[] = {di, dw, db, si, so};
        for (int k = 0; k < 5; k++) be->ops->dealloc(be, ptrs[k]);
    }
    ZT_CHECK_MSG(memcmp(res[0][0], res[1][0], nc * 4) == 0 && memcmp(res[0][1], res[1][1], C * 4) == 0 &&
                     memcmp(res[0][2], res[1][2], C * 4) == 0 && memcmp(res[0][3], res[1][3], C * 4) == 0 &&
                     memcmp(res[0][4], res[1][4], C * 4) == 0,
                 "layernorm_backward%s%s at N=%d C=%d is not deterministic", variant ? " ZGPT_LN=" : "",
                 variant ? variant : "", N, C);
    size_t bad = count_nonfinite(res[0][0], nc) + count_nonfinite(res[0][1], C) + count_nonfinite(res[0][2], C);
    ZT_CHECK_MSG(bad == 0, "layernorm_backward at N=%d C=%d: %zu non-finite values", N, C, bad);
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 5; k++) free(res[r][k]);
    void *ptrs[] = {x, dout, y, w, b, mean, rstd};
    for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
    unsetenv("ZGPT_LN");
}

void oc_test_layernorm(void) {
    test_layernorm_variant(NULL);
    test_layernorm_variant("group");
    test_layernorm_variant("warp");
    /* the column sums by passes of their own (the A/B form) */
    setenv("ZGPT_LN_SUMS", "separate", 1);
    test_layernorm_variant(NULL);
    unsetenv("ZGPT_LN_SUMS");
    test_layernorm_deterministic(NULL);
    test_layernorm_deterministic("warp");
}
