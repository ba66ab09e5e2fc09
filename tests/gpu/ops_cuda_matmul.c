/* gpu_test_ops_cuda, matmuls with their fused epilogues, the few-row (gemv) forms and LayerNorm fused into them. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- matmul ---------------------------------------------------------------------------------- */

/* Residual add in the matmul epilogue, at shapes with a small output and a long reduction (where
 * cuBLASLt likes split-K): the result must be the residual plus the product rounded ONCE. A split-K
 * reduction done in the output type would add each partial product to the large residual in
 * bf16/fp16 and lose the small contributions (the layer outputs vanish into the residual stream).
 * Allowed: 1 ulp of the output type. */
void oc_test_matmul_residual_rounding(void) {
    /* the last two: few rows (the decode products' kernel, gemv_cuda.cu) */
    int shapes[][3] = {{512, 512, 128}, {512, 128, 128}, {256, 2048, 64}, {8, 2048, 64}, {1, 6400, 160}};
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int di = 1; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        int mant = dt == ZG_BF16 ? 7 : 10;
        for (int si = 0; si < nshapes; si++) {
            int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
            size_t nin = (size_t)N * C, nw = (size_t)OC * C, nout = (size_t)N * OC;
            float *inp = malloc(nin * 4), *w = malloc(nw * 4), *bias = malloc(OC * 4), *res = malloc(nout * 4);
            /* products ~0.3 (several ulps of the residual), each split-K partial a fraction of that */
            void *din = oc_dev_rand(be, dt, nin, 1.f, inp), *dwt = oc_dev_rand(be, dt, nw, 0.9f / sqrtf((float)C), w);
            void *db = oc_dev_rand(be, dt, OC, 0.01f, bias);
            for (size_t i = 0; i < nout; i++) res[i] = 8.f + 4.f * zt_rand_uniform(&oc_rng); /* large: 8 +- 4 */
            void *dres = be->ops->alloc(be, nout * 2, "residual");
            be->ops->upload_f32(be, dres, dt, res, nout);
            be->ops->download_f32(be, res, dres, dt, nout);
            void *out = oc_dev_nan(be, dt, nout);
            be->ops->matmul_forward(be, out, NULL, din, dwt, db, dres, N, C, OC);
            float *o = oc_dl(be, out, dt, nout);
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
            printf("  matmul + residual rounding N=%d C=%d OC=%d %s: worst %.2f ulp\n", N, C, OC, oc_dt_name(dt),
                   worst);
            ZT_CHECK_MSG(bad == 0,
                         "matmul_forward + residual %s N=%d C=%d OC=%d: %zu of %zu outputs off by more than "
                         "1 ulp (worst %.2f): the residual is not added once in fp32",
                         oc_dt_name(dt), N, C, OC, bad, nout, worst);
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
void oc_test_matmul(void) {
    /* N <= 8 runs the few-row kernels (gemv_cuda.cu): 1 row (warp per column), 8 and 5 rows (the
     * tensor-core form in bf16/fp16), output counts that are not multiples of 8 or 16 columns per block,
     * C = 264 (33 vectors: a last chunk of one vector), C = 100 (rows not whole 16-byte vectors in
     * bf16/fp16: cuBLASLt); OC = 203 with 40 rows: the bias gradient's scalar reduction (OC not whole
     * 16-byte vectors), where the others take the vector form (ZGPT_BGRAD=off makes every bias gradient
     * take a reduction kernel, bf16 the epilogue's vector in the activation dtype) */
    int shapes[][3] = {{77, 64, 96},   {128, 768, 2304}, {130, 256, 1024}, {1, 1600, 203},
                       {8, 256, 1000}, {5, 264, 40},     {3, 100, 64},     {40, 96, 203}};
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
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
                void *dinp_ = oc_dev_rand(be, dt, nin, 1.f, inp), *dw_ = oc_dev_rand(be, dt, nw, 2 * amp, w);
                void *dbias_ = has_bias ? oc_dev_rand(be, dt, OC, 0.5f, bias) : NULL;
                void *dres = has_res ? oc_dev_rand(be, dt, nout, 1.f, resh) : NULL;
                void *out = variant == 5 ? dres : oc_dev_nan(be, dt, nout),
                     *pre = variant == 2 ? oc_dev_nan(be, dt, nout) : NULL;
                be->ops->matmul_forward(be, out, pre, dinp_, dw_, dbias_, dres, N, C, OC);
                double *rpre = malloc(nout * 8), *rout = malloc(nout * 8);
                for (int i = 0; i < N; i++)
                    for (int o = 0; o < OC; o++) {
                        double s = has_bias ? bias[o] : 0;
                        for (int c = 0; c < C; c++) s += (double)inp[(size_t)i * C + c] * w[(size_t)o * C + c];
                        rpre[(size_t)i * OC + o] = s;
                        if (has_res) s += resh[(size_t)i * OC + o];
                        rout[(size_t)i * OC + o] = variant == 2 ? oc_gelu_d(s) : s;
                    }
                char name[96];
                snprintf(name, sizeof name, "matmul_forward %s N=%d C=%d OC=%d", vname[variant], N, C, OC);
                float *o = oc_dl(be, out, dt, nout);
                oc_check_rel(name, dt, o, rout, nout, oc_tol_of(dt));
                float *prh = NULL;
                if (pre) {
                    prh = oc_dl(be, pre, dt, nout);
                    oc_check_rel("  pre_gelu", dt, prh, rpre, nout, oc_tol_of(dt));
                }
                /* forward only: the residual variants, and few rows (the decode products: no backward) */
                if (has_res || N <= ZGC_TEST_FEW_ROWS) {
                    if (has_res && variant != 5) { /* the residual input is left as it was */
                        float *rh2 = oc_dl(be, dres, dt, nout);
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
                void *ddout = oc_dev_rand(be, dt, nout, 1.f, dout);
                void *dgin = variant == 2 ? oc_dev_rand(be, dt, nin, 2.f, gin) : NULL;
                void *ddinp = oc_dev_nan(be, dt, nin);
                void *ddw = oc_dev_rand(be, dt, nw, 0.5f, dw0);
                void *ddb = variant == 1 ? NULL : oc_dev_rand(be, dt, OC, 0.5f, db0);
                be->ops->matmul_backward(be, ddinp, ddw, ddb, ddout, dinp_, dw_, dgin, N, C, OC, 0);
                double *rdi = malloc(nin * 8), *rdw = malloc(nw * 8), *rdb = malloc(OC * 8);
                for (int i = 0; i < N; i++)
                    for (int c = 0; c < C; c++) {
                        double s = 0;
                        for (int k = 0; k < OC; k++) s += (double)dout[(size_t)i * OC + k] * w[(size_t)k * C + c];
                        rdi[(size_t)i * C + c] = variant == 2 ? s * oc_gelu_grad_d(gin[(size_t)i * C + c]) : s;
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
                float *odi = oc_dl(be, ddinp, dt, nin), *odw = oc_dl(be, ddw, dt, nw);
                snprintf(name, sizeof name, "matmul_backward dinp%s", variant == 2 ? " (dgelu)" : "");
                oc_check_rel(name, dt, odi, rdi, nin, oc_tol_of(dt));
                oc_check_rel("  dw (accumulated)", dt, odw, rdw, nw, oc_tol_of(dt));
                if (ddb) {
                    float *odb = oc_dl(be, ddb, dt, OC);
                    oc_check_rel("  dbias (accumulated)", dt, odb, rdb, OC, oc_tol_of(dt));
                    free(odb);
                }
                /* dinp == NULL skips the input gradient; dw accumulates again */
                be->ops->matmul_backward(be, NULL, ddw, NULL, ddout, dinp_, dw_, NULL, N, C, OC, 0);
                float *odw2 = oc_dl(be, ddw, dt, nw);
                for (size_t k = 0; k < nw; k++) rdw[k] = 2 * rdw[k] - dw0[k];
                oc_check_rel("  dw twice, dinp=NULL", dt, odw2, rdw, nw, oc_tol_of(dt));
                /* dw_overwrite: dw = the product alone, whatever dw held (the sums above), and bitwise what adding it
                 * to zeros gives (a gradient the engine zeroed: gpt2_model.grads_zero) */
                be->ops->matmul_backward(be, NULL, ddw, NULL, ddout, dinp_, dw_, NULL, N, C, OC, 1);
                float *odw3 = oc_dl(be, ddw, dt, nw);
                for (size_t k = 0; k < nw; k++) rdw[k] = (rdw[k] - dw0[k]) / 2;
                oc_check_rel("  dw overwritten", dt, odw3, rdw, nw, oc_tol_of(dt));
                be->ops->zero(be, ddw, nw * zg_dtype_size(dt));
                be->ops->matmul_backward(be, NULL, ddw, NULL, ddout, dinp_, dw_, NULL, N, C, OC, 0);
                float *odw4 = oc_dl(be, ddw, dt, nw);
                ZT_CHECK_MSG(memcmp(odw3, odw4, nw * 4) == 0,
                             "matmul_backward N=%d C=%d OC=%d: dw overwritten is not bitwise dw added to zeros", N, C,
                             OC);
                free(odw3);
                free(odw4);
                if (ddb) { /* dw == NULL: only the bias gradient accumulates */
                    be->ops->matmul_backward(be, NULL, NULL, ddb, ddout, dinp_, dw_, NULL, N, C, OC, 0);
                    float *odb2 = oc_dl(be, ddb, dt, OC);
                    for (int k = 0; k < OC; k++) rdb[k] = 2 * rdb[k] - db0[k];
                    oc_check_rel("  dbias twice, dw=NULL", dt, odb2, rdb, OC, oc_tol_of(dt));
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

void oc_test_gelu_residual(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        size_t n = 100003;
        float *a = malloc(n * 4), *b = malloc(n * 4);
        void *da = oc_dev_rand(be, dt, n, 4.f, a), *db = oc_dev_rand(be, dt, n, 4.f, b), *out = oc_dev_nan(be, dt, n);
        double *ref = malloc(n * 8);
        be->ops->gelu_forward(be, out, da, n);
        for (size_t i = 0; i < n; i++) ref[i] = oc_gelu_d(a[i]);
        float *o = oc_dl(be, out, dt, n);
        oc_check_rel("gelu_forward", dt, o, ref, n, oc_tol_of(dt));
        free(o);
        oc_poison(be, out, dt, n);
        be->ops->residual_forward(be, out, da, db, n);
        for (size_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
        o = oc_dl(be, out, dt, n);
        oc_check_rel("residual_forward", dt, o, ref, n, oc_tol_of(dt));
        free(o);
        free(a);
        free(b);
        free(ref);
        be->ops->dealloc(be, da);
        be->ops->dealloc(be, db);
        be->ops->dealloc(be, out);
    }
}

/* The few-row kernels (ZGPT_GEMV=v1: the tensor-core form from 2 rows, the warp per column at 1; simt:
 * the warp per column at every row count; v2; cublaslt) at 1..8 rows against the fp64 product, with bias
 * + residual and with GELU (pre-GELU too), each within the dtype's tolerance: GPT-2 XL's four products at
 * 1, 2, 3 and 8 rows, and odd shapes (output counts that are not multiples of 8 or 16, rows of 1 and 33
 * 16-byte vectors, a column count below one group). v2's bits do not depend on its grid, register budget,
 * prefetch, deal or loads in flight (ZGPT_GEMV_GRID=1, 2 and 4: 4 is capped to what the SM holds with 74-76
 * registers a thread; ZGPT_GEMV_MINB=4, the 64-register form; ZGPT_GEMV_PREFETCH=0; ZGPT_GEMV_EVEN=0 and 1;
 * ZGPT_GEMV_DEEP=0) and are the same on a second run. The fused LayerNorm forms:
 * layernorm_matmul, layernorm_matmul_simt, layernorm_matmul_v2. */
void oc_test_gemv_forms(void) {
    static const int shapes[][3] = {{1, 1600, 4800}, {8, 1600, 4800}, {1, 1600, 1600}, {3, 1600, 1600}, {2, 1600, 6400},
                                    {8, 1600, 6400}, {1, 6400, 1600}, {8, 6400, 1600}, {2, 1600, 48},   {7, 512, 333},
                                    {8, 6400, 40},   {3, 264, 21},    {1, 8, 5},       {5, 1608, 77},   {4, 2056, 130}};
    static const char *const forms[4] = {"v1", "simt", "v2", "cublaslt"};
    for (int di = 1; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
            size_t nin = (size_t)N * C, nout = (size_t)N * OC;
            float *x = malloc(nin * 4), *w = malloc((size_t)OC * C * 4), *bias = malloc(OC * 4),
                  *res = malloc(nout * 4);
            void *dx = oc_dev_rand(be, dt, nin, 2.f, x),
                 *dw = oc_dev_rand(be, dt, (size_t)OC * C, 1.f / sqrtf((float)C), w),
                 *dbias = oc_dev_rand(be, dt, OC, 0.5f, bias), *dres = oc_dev_rand(be, dt, nout, 1.f, res);
            double *ref = malloc(nout * 8), *refp = malloc(nout * 8), *refg = malloc(nout * 8);
            for (int i = 0; i < N; i++)
                for (int o = 0; o < OC; o++) {
                    double a = bias[o];
                    for (int c = 0; c < C; c++) a += (double)x[(size_t)i * C + c] * w[(size_t)o * C + c];
                    ref[(size_t)i * OC + o] = a + res[(size_t)i * OC + o];
                    refp[(size_t)i * OC + o] = a;
                    refg[(size_t)i * OC + o] = oc_gelu_d(a);
                }
            void *out = oc_dev_nan(be, dt, nout), *pre = oc_dev_nan(be, dt, nout), *out2 = oc_dev_nan(be, dt, nout);
            for (int form = 0; form < 4; form++) {
                setenv("ZGPT_GEMV", forms[form], 1);
                oc_poison(be, out, dt, nout);
                oc_poison(be, pre, dt, nout);
                oc_poison(be, out2, dt, nout);
                be->ops->matmul_forward(be, out, NULL, dx, dw, dbias, dres, N, C, OC);
                be->ops->matmul_forward(be, out2, pre, dx, dw, dbias, NULL, N, C, OC);
                float *h = oc_dl(be, out, dt, nout), *hg = oc_dl(be, out2, dt, nout), *hp = oc_dl(be, pre, dt, nout);
                char name[96];
                snprintf(name, sizeof name, "few-row %s N=%d C=%d OC=%d bias+residual", forms[form], N, C, OC);
                oc_check_rel(name, dt, h, ref, nout, oc_tol_of(dt));
                snprintf(name, sizeof name, "few-row %s N=%d C=%d OC=%d gelu", forms[form], N, C, OC);
                oc_check_rel_quiet(name, dt, hg, refg, nout, oc_tol_of(dt));
                snprintf(name, sizeof name, "few-row %s N=%d C=%d OC=%d pre-gelu", forms[form], N, C, OC);
                oc_check_rel_quiet(name, dt, hp, refp, nout, oc_tol_of(dt));
                if (form == 2) { /* v2: the same bits again, with other grids and registers, without the prefetch */
                    static const char *const knob[][2] = {{NULL, NULL},
                                                          {"ZGPT_GEMV_GRID", "1"},
                                                          {"ZGPT_GEMV_GRID", "2"},
                                                          {"ZGPT_GEMV_GRID", "4"},
                                                          {"ZGPT_GEMV_MINB", "4"},
                                                          {"ZGPT_GEMV_PREFETCH", "0"},
                                                          {"ZGPT_GEMV_EVEN", "0"},
                                                          {"ZGPT_GEMV_EVEN", "1"},
                                                          {"ZGPT_GEMV_DEEP", "0"}};
                    for (size_t k = 0; k < sizeof knob / sizeof knob[0]; k++) {
                        if (knob[k][0]) setenv(knob[k][0], knob[k][1], 1);
                        oc_poison(be, out2, dt, nout);
                        be->ops->matmul_forward(be, out2, NULL, dx, dw, dbias, dres, N, C, OC);
                        float *h2 = oc_dl(be, out2, dt, nout);
                        ZT_CHECK_MSG(memcmp(h, h2, nout * 4) == 0, "few-row v2 %s N=%d C=%d OC=%d: %s%s%s changes bits",
                                     oc_dt_name(dt), N, C, OC, knob[k][0] ? knob[k][0] : "a second run",
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
void oc_test_layernorm_matmul(void) {
    int shapes[][3] = {{1, 1600, 333}, {8, 256, 1000}, {8, 1600, 64}, {20, 128, 96}};
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            for (int gelu = 0; gelu < 2; gelu++) {
                int N = shapes[si][0], C = shapes[si][1], OC = shapes[si][2];
                size_t nin = (size_t)N * C, nout = (size_t)N * OC;
                float *x = malloc(nin * 4), *g = malloc(C * 4), *bb = malloc(C * 4), *w = malloc((size_t)OC * C * 4),
                      *bias = malloc(OC * 4);
                void *dx = oc_dev_rand(be, dt, nin, 2.f, x), *dg = oc_dev_rand(be, dt, C, 1.f, g),
                     *db = oc_dev_rand(be, dt, C, 0.5f, bb);
                void *dw = oc_dev_rand(be, dt, (size_t)OC * C, 2.f / sqrtf((float)C), w),
                     *dbias = oc_dev_rand(be, dt, OC, 0.5f, bias);
                for (int c = 0; c < C; c++) g[c] += 1.0f; /* gains around 1 */
                be->ops->upload_f32(be, dg, dt, g, C);
                be->ops->download_f32(be, g, dg, dt, C);
                void *out = oc_dev_nan(be, dt, nout), *pre = gelu ? oc_dev_nan(be, dt, nout) : NULL,
                     *ln = oc_dev_nan(be, dt, nin);
                void *out2 = oc_dev_nan(be, dt, nout), *pre2 = gelu ? oc_dev_nan(be, dt, nout) : NULL;
                be->ops->layernorm_matmul_forward(be, out, pre, ln, dx, dg, db, dw, dbias, N, C, OC);
                be->ops->layernorm_forward(be, ln, NULL, NULL, dx, dg, db, N, C);
                be->ops->matmul_forward(be, out2, pre2, ln, dw, dbias, NULL, N, C, OC);
                double *xh = malloc(nin * 8), *mean = malloc(N * 8), *rstd = malloc(N * 8), *ref = malloc(nout * 8);
                oc_ln_ref(xh, mean, rstd, x, g, bb, N, C);
                for (int i = 0; i < N; i++)
                    for (int o = 0; o < OC; o++) {
                        double s = bias[o];
                        for (int c = 0; c < C; c++) s += xh[(size_t)i * C + c] * w[(size_t)o * C + c];
                        ref[(size_t)i * OC + o] = gelu ? oc_gelu_d(s) : s;
                    }
                float *h1 = oc_dl(be, out, dt, nout), *h2 = oc_dl(be, out2, dt, nout);
                char name[96];
                snprintf(name, sizeof name, "layernorm_matmul_forward%s N=%d C=%d OC=%d", gelu ? " gelu" : "", N, C,
                         OC);
                oc_check_rel(name, dt, h1, ref, nout, oc_tol_of(dt));
                double *r2 = malloc(nout * 8);
                for (size_t i = 0; i < nout; i++) r2[i] = h2[i];
                oc_check_rel("  against the two ops", dt, h1, r2, nout, oc_tol_of(dt));
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
void oc_test_layernorm_matmul_simt(void) {
    setenv("ZGPT_GEMV", "simt", 1);
    oc_test_layernorm_matmul();
    unsetenv("ZGPT_GEMV");
}

/* layernorm_matmul, matmul (every epilogue, the residual in place) and the residual's single rounding
 * with v2 for every few-row product (ZGPT_GEMV=v2; fp32 runs v1's warp per column) */
void oc_test_layernorm_matmul_v2(void) {
    setenv("ZGPT_GEMV", "v2", 1);
    oc_test_layernorm_matmul();
    unsetenv("ZGPT_GEMV");
}
void oc_test_matmul_v2(void) {
    setenv("ZGPT_GEMV", "v2", 1);
    oc_test_matmul();
    oc_test_matmul_residual_rounding();
    unsetenv("ZGPT_GEMV");
}

/* cuBLASLt's start-up on a thread (ZGPT_LT_WARMUP, matmul_cuda.cu): a backend destroyed at once (its
 * warm-up possibly still running: the end waits for it) leaves nothing behind; a process that exits right
 * after creating its backend (an error path that stops zgpt during the model's load) ends with its own
 * exit status, not a signal (exit waits for the warm-up: matmul_cuda.cu); and a product through cuBLASLt (64 rows: not a few-row kernel's) gives the
 * same bits with the warm-up on (the default) and off, in each dtype. */
void oc_test_lt_warmup(void) {
    char self[4096], cmd[4200];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1); /* this binary (a shell's would be the shell) */
    ZT_CHECK(len > 0);
    self[len > 0 ? len : 0] = '\0';
    snprintf(cmd, sizeof cmd, "OC_EXIT_AFTER_CREATE=1 '%s' > /dev/null 2>&1", self);
    for (int i = 0; len > 0 && i < 5; i++) { /* the exit race it guards against showed once in 3 (v0.24) */
        int st = system(cmd);
        ZT_CHECK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 3,
                     "a process that exits while its warm-up runs ended with status %d (want exit 3)", st);
    }
    static const zg_dtype dts[3] = {ZG_F32, ZG_BF16, ZG_F16};
    enum { N = 64, C = 256, OC = 384 };
    float *x = malloc((size_t)N * C * 4), *w = malloc((size_t)OC * C * 4);
    for (size_t i = 0; i < (size_t)N * C; i++) x[i] = zt_rand_uniform(&oc_rng);
    for (size_t i = 0; i < (size_t)OC * C; i++) w[i] = 0.06f * zt_rand_uniform(&oc_rng);
    for (int di = 0; di < 3; di++) {
        float *got[2] = {NULL, NULL};
        for (int on = 0; on < 2; on++) {
            setenv("ZGPT_LT_WARMUP", on ? "1" : "0", 1);
            zg_backend_config cfg = {"cuda", -1, dts[di]};
            zg_backend *be = NULL;
            ZT_CHECK(zg_backend_cuda_create(&be, &cfg) == 0 && be != NULL);
            if (be) zg_backend_destroy(be); /* at once: the end waits for the warm-up */
            be = NULL;
            ZT_CHECK(zg_backend_cuda_create(&be, &cfg) == 0 && be != NULL);
            if (be == NULL) continue;
            size_t es = dts[di] == ZG_F32 ? 4 : 2;
            void *dx = be->ops->alloc(be, (size_t)N * C * es, "test"),
                 *dw = be->ops->alloc(be, (size_t)OC * C * es, "test"),
                 *dout = be->ops->alloc(be, (size_t)N * OC * es, "test");
            be->ops->upload_f32(be, dx, dts[di], x, (size_t)N * C);
            be->ops->upload_f32(be, dw, dts[di], w, (size_t)OC * C);
            be->ops->matmul_forward(be, dout, NULL, dx, dw, NULL, NULL, N, C, OC);
            got[on] = oc_dl(be, dout, dts[di], (size_t)N * OC);
            zg_backend_destroy(be);
        }
        if (got[0] && got[1])
            ZT_CHECK_MSG(memcmp(got[0], got[1], (size_t)N * OC * 4) == 0, "%s: ZGPT_LT_WARMUP=0 and =1 differ",
                         oc_dt_name(dts[di]));
        free(got[0]);
        free(got[1]);
    }
    unsetenv("ZGPT_LT_WARMUP");
    free(x);
    free(w);
}
