/* gpu_test_ops_cuda, the optimizer steps (AdamW, Lamb) and the norms they use. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- optimizer, norms ---------------------------------------------------------------------------- */

/* Lamb (DeepSpeed's FusedLamb, backend.h) in every dtype against a double reference per segment:
 * moments, ||p|| and ||u|| over the segment, the clamped trust ratio, the bias-corrected step; one
 * segment all zero (ratio 1), one empty, the clamps binding on others; then without bias correction
 * and with eps inside the square root; then in two calls as a ZeRO shard's cut tensors take it
 * (ops->lamb_sums over segments 2-3, their sums given back to adamw, which must not update their moments
 * again): the same reference, and the sums against it, bitwise the same when computed twice. */
void oc_test_lamb(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->param_dtype;
        size_t n = 300001;
        zg_segment segs[5] = {
            {0, 1000, 0.1f}, {1000, 0, 0.f}, {1000, 200000, 0.f}, {201000, 4000, 0.f}, {205000, 95001, 0.05f}};
        for (int variant = 0; variant < 3; variant++) {
            int alt = variant == 1; /* no bias correction, eps inside the square root */
            float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
            void *dg = oc_dev_rand(be, be->grad_dtype, n, 0.1f, g);
            for (size_t i = 0; i < n; i++) p[i] = 0.5f * zt_rand_uniform(&oc_rng);
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
            float *dm = oc_dev_rand(be, ZG_F32, n, 0.01f, m), *dv = oc_dev_rand(be, ZG_F32, n, 0.01f, v);
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
            a.no_bias_correction = alt;
            a.eps_inside_sqrt = alt;
            double sums[4], given[10];
            if (variant == 2) { /* segments 2-3's first pass apart, their sums given to the update */
                a.seg_begin = 2;
                a.seg_end = 4;
                be->ops->lamb_sums(be, &a, sums);
                /* the sums are added in block order (no atomics): the same inputs give the same bits */
                double again[4];
                be->ops->upload(be, dm, m, n * 4);
                be->ops->upload(be, dv, v, n * 4);
                be->ops->lamb_sums(be, &a, again);
                ZT_CHECK_MSG(memcmp(again, sums, sizeof sums) == 0, "%s lamb_sums not reproducible: %.17g %.17g",
                             zg_dtype_name(dt), sums[0], again[0]);
                for (int k = 0; k < 10; k++) given[k] = -1.0;
                memcpy(given + 4, sums, sizeof sums);
                a.seg_begin = a.seg_end = 0;
                a.lamb_sums = given;
            }
            be->ops->adamw(be, &a);
            double *rp = malloc(n * 8), *rm = malloc(n * 8), *rv = malloc(n * 8);
            double bc1 = alt ? 1 : 1 - pow(0.9, 3), bc2 = alt ? 1 : 1 - pow(0.999, 3);
            double step = 2e-2 * sqrt(bc2) / bc1;
            for (int s = 0; s < 5; s++) {
                size_t lo = segs[s].offset, hi = lo + segs[s].count;
                double wd = segs[s].weight_decay, w2 = 0, u2 = 0;
                for (size_t i = lo; i < hi; i++) {
                    double gg = g[i] * 0.5;
                    rm[i] = 0.9 * m[i] + 0.1 * gg;
                    rv[i] = 0.999 * v[i] + 0.001 * gg * gg;
                    double u = rm[i] / (alt ? sqrt(rv[i] + 1e-6) : sqrt(rv[i]) + 1e-6) + wd * p[i];
                    w2 += (double)p[i] * p[i];
                    u2 += u * u;
                }
                if (variant == 2 && (s == 2 || s == 3)) {
                    double gw = sums[2 * (s - 2)], gu = sums[2 * (s - 2) + 1];
                    ZT_CHECK_MSG(fabs(gw - w2) <= 1e-5 * w2 + 1e-30 && fabs(gu - u2) <= 1e-5 * u2 + 1e-30,
                                 "%s lamb_sums segment %d: %g %g against %g %g", zg_dtype_name(dt), s, gw, gu, w2, u2);
                }
                double c = 1;
                if (w2 > 0 && u2 > 0) c = fmin(fmax(sqrt(w2) / sqrt(u2), 0.05), 0.6);
                for (size_t i = lo; i < hi; i++)
                    rp[i] = p[i] - step * c * (rm[i] / (alt ? sqrt(rv[i] + 1e-6) : sqrt(rv[i]) + 1e-6) + wd * p[i]);
            }
            float *op = oc_dl(be, dmaster ? (void *)dmaster : dp, ZG_F32, n);
            float *om = oc_dl(be, dm, ZG_F32, n), *ov = oc_dl(be, dv, ZG_F32, n);
            const char *what[3] = {"lamb params (fp32 master)", "lamb params (no bias corr., eps in sqrt)",
                                   "lamb params (segments 2-3 given their sums)"};
            oc_check_rel(what[variant], dt, op, rp, n, 1e-6);
            oc_check_rel("lamb m", dt, om, rm, n, 1e-6);
            oc_check_rel("lamb v", dt, ov, rv, n, 1e-6);
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

void oc_test_optimizer(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->param_dtype;
        size_t n = 300001;
        zg_segment segs[4] = {{0, 1000, 0.1f}, {1000, 0, 0.f}, {1000, 200000, 0.f}, {201000, 99001, 0.05f}};
        float *p = malloc(n * 4), *g = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
        void *dp = oc_dev_rand(be, dt, n, 1.f, p), *dg = oc_dev_rand(be, be->grad_dtype, n, 0.1f, g);
        float *dm = oc_dev_rand(be, ZG_F32, n, 0.01f, m), *dv = oc_dev_rand(be, ZG_F32, n, 0.01f, v);
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
        float *op = oc_dl(be, dmaster ? (void *)dmaster : dp, ZG_F32 == dt || dmaster ? ZG_F32 : dt, n);
        float *om = oc_dl(be, dm, ZG_F32, n), *ov = oc_dl(be, dv, ZG_F32, n);
        oc_check_rel("adamw params (fp32 master)", dt, op, rp, n, 1e-6);
        oc_check_rel("adamw m", dt, om, rm, n, 1e-6);
        oc_check_rel("adamw v", dt, ov, rv, n, 1e-6);
        if (dmaster) {
            float *lp = oc_dl(be, dp, dt, n);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                float want =
                    dt == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(op[i])) : zg_f16_to_f32(zg_f32_to_f16(op[i]));
                if (lp[i] != want) bad++;
            }
            ZT_CHECK_MSG(bad == 0, "adamw %s: %zu low-precision params are not the rounded master", oc_dt_name(dt),
                         bad);
            free(lp);
        }
        /* sum_squares and scale */
        double ss = be->ops->sum_squares(be, dg, be->grad_dtype, n), rss = 0;
        for (size_t i = 0; i < n; i++) rss += (double)g[i] * g[i];
        printf("  %-40s %s  %.9g vs %.9g\n", "sum_squares", oc_dt_name(dt), ss, rss);
        ZT_NEAR(ss, rss, 0, 1e-5);
        /* unaligned start (scalar path) */
        size_t es = dt == ZG_F32 ? 4 : 2;
        double ssu = be->ops->sum_squares(be, (char *)dg + es, be->grad_dtype, n - 1);
        ZT_NEAR(ssu, rss - (double)g[0] * g[0], 0, 1e-5);
        be->ops->scale(be, dg, be->grad_dtype, n, 0.25f);
        float *gs = oc_dl(be, dg, be->grad_dtype, n);
        double *rg = malloc(n * 8);
        for (size_t i = 0; i < n; i++) rg[i] = g[i] * 0.25;
        oc_check_rel("scale", dt, gs, rg, n, 1e-7);
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
