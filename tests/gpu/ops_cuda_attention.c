/* gpu_test_ops_cuda, attention forward/backward on every path, at large shapes and against a KV cache. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
void oc_attn_path(const char *path) { setenv("ZGPT_ATTENTION", path, 1); }

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
    void *out = oc_dev_nan(be, dt, no);
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "attention stats");
    void *dqkv = oc_dev_nan(be, dt, nqkv);
    char name[128];
    long c0 = zg_backend_cuda_cudnn_attention_calls(be), q0 = zg_backend_cuda_cudnn_attention_dq_calls(be);
    oc_attn_path(fwd_path);
    if (strcmp(fwd_path, "own") == 0) {
        /* the 16-rows-per-warp forward tiling (tuning knob) first, then the default */
        setenv("ZGPT_ATTN_FWD_MT", "1", 1);
        be->ops->attention_forward(be, out, stats, dqkv_in, B, T, C, NH);
        unsetenv("ZGPT_ATTN_FWD_MT");
        float *o1 = oc_dl(be, out, dt, no);
        snprintf(name, sizeof name, "attention_forward own (MT=1) B=%d T=%d", B, T);
        oc_check_rel(name, dt, o1, rout, no, oc_tol_of(dt));
        free(o1);
        oc_poison(be, out, dt, no);
    }
    be->ops->attention_forward(be, out, stats, dqkv_in, B, T, C, NH);
    float *o = oc_dl(be, out, dt, no);
    snprintf(name, sizeof name, "attention_forward %s B=%d T=%d C=%d NH=%d", fwd_path, B, T, C, NH);
    oc_check_rel(name, dt, o, rout, no, oc_tol_of(dt));
    oc_attn_path(bwd_path);
    be->ops->attention_backward(be, dqkv, ddout, dqkv_in, out, stats, B, T, C, NH);
    long want = (strcmp(fwd_path, "cudnn") == 0) + (strcmp(bwd_path, "cudnn") == 0);
    attn_check_cudnn_ran(be, c0, want, name);
#ifdef ZGPT_WITH_CUDNN
    /* cuDNN's backward takes zgpt's dQ kernel over the causal half of its dS wherever that kernel fits (bf16 and
     * fp16, T a multiple of 64, hs 64), else cuDNN's own product */
    int dq_fits = dt != ZG_F32 && T % 64 == 0 && C / NH == 64;
    long dq_ran = zg_backend_cuda_cudnn_attention_dq_calls(be) - q0;
    ZT_CHECK_MSG(dq_ran == (strcmp(bwd_path, "cudnn") == 0 && dq_fits),
                 "%s: zgpt's dQ kernel ran %ld times (fits: %d; see a note above when its check failed)", name, dq_ran,
                 dq_fits);
#endif
    float *g = oc_dl(be, dqkv, dt, nqkv);
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
        oc_check_rel(name, dt, go, gr, n, dt == ZG_F32 ? 1e-4 : oc_tol_of(dt));
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

void oc_test_attention(void) {
    /* B, T, C, NH: odd T, hs 64 (incl. C=1600/NH=25), hs 128, hs 32 (scalar path), T=1024 (cuDNN with zgpt's dQ
     * kernel), hs 128 with T a multiple of 64 (cuDNN's own dQ product: that layout differs) */
    int shapes[][4] = {{2, 77, 192, 3}, {1, 130, 1600, 25}, {1, 200, 256, 2},
                       {2, 65, 96, 3},  {1, 1024, 128, 2},  {2, 192, 256, 2}};
    /* forward path, backward path: each alone, then mixed (cuDNN's and zgpt's statistics agree) */
    const char *paths[][2] = {{"own", "own"}, {"cudnn", "cudnn"}, {"cudnn", "own"}, {"own", "cudnn"}};
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        for (int si = 0; si < (int)(sizeof shapes / sizeof shapes[0]); si++) {
            int B = shapes[si][0], T = shapes[si][1], C = shapes[si][2], NH = shapes[si][3];
            if (dt == ZG_F32 && T > 512) continue; /* fp32 uses the scalar path, covered by smaller shapes */
            size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
            float *qkv = malloc(nqkv * 4), *dout = malloc(no * 4);
            void *dqkv_in = oc_dev_rand(be, dt, nqkv, 2.f, qkv);
            void *ddout = oc_dev_rand(be, dt, no, 1.f, dout);
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
void oc_test_attention_large(void) {
    zg_backend *be = oc_be[1]; /* bf16 */
    zg_dtype dt = be->act_dtype;
    int B = 16, T = 1024, C = 1600, NH = 25;
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    void *qkv = oc_dev_rand(be, dt, nqkv, 2.f, NULL);
    void *dout = oc_dev_rand(be, dt, no, 1.f, NULL);
    void *out = oc_dev_nan(be, dt, no);
    void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "attention stats");
    void *g1 = oc_dev_nan(be, dt, nqkv), *g2 = oc_dev_nan(be, dt, nqkv);
    float *own_out = NULL, *own_g = NULL;
    const char *paths[2] = {"own", "cudnn"};
    for (int pi = 0; pi < 2; pi++) {
        long c0 = zg_backend_cuda_cudnn_attention_calls(be);
        oc_attn_path(paths[pi]);
        oc_poison(be, out, dt, no);
        oc_poison(be, g1, dt, nqkv);
        oc_poison(be, g2, dt, nqkv);
        be->ops->attention_forward(be, out, stats, qkv, B, T, C, NH);
        be->ops->attention_backward(be, g1, dout, qkv, out, stats, B, T, C, NH);
        be->ops->attention_backward(be, g2, dout, qkv, out, stats, B, T, C, NH);
        if (pi == 1) attn_check_cudnn_ran(be, c0, 3, "attention at GPT-2 XL's training shape");
        float *o = oc_dl(be, out, dt, no), *a = oc_dl(be, g1, dt, nqkv), *b = oc_dl(be, g2, dt, nqkv);
        ZT_CHECK_MSG(memcmp(a, b, nqkv * 4) == 0, "attention backward (%s) is not deterministic at B=%d T=%d C=%d",
                     paths[pi], B, T, C);
#ifdef ZGPT_WITH_CUDNN
        if (pi == 1) {
            /* the workspace in lent memory (ops->scratch_lend: the model lends its dead logits, B*T*Vp):
             * the same bits; a loan too small for it is not used */
            size_t lend_bytes = (size_t)B * T * 50304 * zg_dtype_size(dt), small = (size_t)1 << 20;
            void *lend = oc_dev_nan(be, dt, lend_bytes / zg_dtype_size(dt));
            for (int k = 0; k < 2; k++) {
                long l0 = zg_backend_cuda_cudnn_attention_lent_calls(be);
                oc_poison(be, g2, dt, nqkv);
                be->ops->scratch_lend(be, lend, k == 0 ? lend_bytes : small);
                be->ops->attention_backward(be, g2, dout, qkv, out, stats, B, T, C, NH);
                be->ops->scratch_lend(be, NULL, 0);
                float *c = oc_dl(be, g2, dt, nqkv);
                ZT_CHECK_MSG(memcmp(a, c, nqkv * 4) == 0, "attention backward in lent memory (%zu bytes) differs",
                             k == 0 ? lend_bytes : small);
                ZT_CHECK_MSG(zg_backend_cuda_cudnn_attention_lent_calls(be) - l0 == (k == 0 ? 1 : 0),
                             "the lent memory (%zu bytes) was %s", k == 0 ? lend_bytes : small,
                             k == 0 ? "not used" : "used though too small");
                free(c);
            }
            be->ops->dealloc(be, lend);
            /* recorded (the model's step graph): the backward's graph added as a child node, for buffers seen
             * before (g2) and new ones (g3: recorded while the stream records); the same bits as run directly */
            void *g3 = oc_dev_nan(be, dt, nqkv);
            for (int k = 0; k < 2; k++) {
                void *dst = k == 0 ? g2 : g3;
                oc_poison(be, dst, dt, nqkv);
                long q0 = zg_backend_cuda_cudnn_attention_dq_calls(be);
                ZT_CHECK(be->ops->graph_begin(be) == 0);
                be->ops->attention_backward(be, dst, dout, qkv, out, stats, B, T, C, NH);
                zg_graph *gr = be->ops->graph_end(be);
                ZT_CHECK_MSG(gr != NULL, "recording the attention backward failed: %s", zg_error_message());
                if (gr == NULL) continue;
                be->ops->graph_launch(be, gr);
                be->ops->graph_launch(be, gr);
                float *c = oc_dl(be, dst, dt, nqkv);
                ZT_CHECK_MSG(memcmp(a, c, nqkv * 4) == 0, "attention backward recorded (%s buffers) differs",
                             k == 0 ? "known" : "new");
                ZT_CHECK_MSG(zg_backend_cuda_cudnn_attention_dq_calls(be) - q0 == 1,
                             "zgpt's dQ kernel not recorded (%s buffers)", k == 0 ? "known" : "new");
                be->ops->graph_destroy(be, gr);
                free(c);
            }
            /* cuDNN's own dQ product (ZGPT_SDPA_DQ=cudnn): the same dK and dV bits, dQ within bf16 rounding */
            setenv("ZGPT_SDPA_DQ", "cudnn", 1);
            oc_poison(be, g3, dt, nqkv);
            be->ops->attention_backward(be, g3, dout, qkv, out, stats, B, T, C, NH);
            unsetenv("ZGPT_SDPA_DQ");
            float *c = oc_dl(be, g3, dt, nqkv);
            size_t kv_diff = 0;
            double *rq = malloc(no * 8);
            float *cq = malloc(no * 4);
            for (size_t r = 0; r < (size_t)B * T; r++)
                for (int j = 0; j < C; j++) {
                    kv_diff += memcmp(&a[r * 3 * C + C + j], &c[r * 3 * C + C + j], 4) != 0;
                    kv_diff += memcmp(&a[r * 3 * C + 2 * C + j], &c[r * 3 * C + 2 * C + j], 4) != 0;
                    rq[r * C + j] = c[r * 3 * C + j], cq[r * C + j] = a[r * 3 * C + j];
                }
            ZT_CHECK_MSG(kv_diff == 0, "dK/dV with cuDNN's dQ product differ in %zu values", kv_diff);
            oc_check_rel("attention dQ XL B=16: zgpt's causal product vs cuDNN's", dt, cq, rq, no, 2 * oc_tol_of(dt));
            free(rq);
            free(cq);
            free(c);
            be->ops->dealloc(be, g3);
        }
#endif
        if (pi == 0) {
            /* every kernel variant (ZGPT_ATTN_BWD) computes the same products in the same order */
            const char *vars[] = {"aa", "bb", "cc", "dd", "ad", "cb"};
            for (int v = 0; v < 6; v++) {
                setenv("ZGPT_ATTN_BWD", vars[v], 1);
                oc_poison(be, g2, dt, nqkv);
                be->ops->attention_backward(be, g2, dout, qkv, out, stats, B, T, C, NH);
                float *c = oc_dl(be, g2, dt, nqkv);
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
            oc_check_rel("attention_forward XL B=16: cuDNN vs zgpt's kernels", dt, o, ro, no, 2 * oc_tol_of(dt));
            oc_check_rel("attention_backward XL B=16: cuDNN vs zgpt's kernels", dt, a, rg, nqkv, 2 * oc_tol_of(dt));
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

/* What zgpt's dQ kernel (attention_dq_cuda.cu) reads: after cuDNN's deterministic backward its workspace holds,
 * 128 bytes in, dS (the softmax scale applied) per (b, h) in T*T elements of the activations' dtype, as dS^T's
 * mma.sync A fragments: key groups of 16 (16*T elements each), in each the query sub-tiles of 16 (256 elements),
 * in each the 32 lanes' 8 elements: lane 4k+q holds (key k, queries 2q, 2q+1), (key k+8, the same), (key k,
 * queries 2q+8, 2q+9), (key k+8, the same). Found on cuDNN 9 (PERFORMANCE.md v0.27) and checked here against fp64
 * (cuDNN's own dQ product; the workspace in lent memory filled with NaN before). The backend checks its dQ
 * against cuDNN's at each shape's first call; this test says why when that fails. ZG_DQ_DUMP writes the
 * workspace for a look at a layout that moved. */
static size_t attn_ds_at(int i, int j, int T) {
    int r = j % 16, c = i % 16, lane = (r % 8) * 4 + (c % 8) / 2, reg = r / 8 + 2 * (c / 8);
    return 64 + (size_t)(j / 16) * 16 * T + (size_t)(i / 16) * 256 + (size_t)lane * 8 + reg * 2 + c % 2;
}

void oc_test_attention_dq_layout(void) {
#ifdef ZGPT_WITH_CUDNN
    for (int di = 1; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        int B = 2, T = 128, C = 128, NH = 2;
        /* ZG_DQ_SHAPE=B,T,C,NH another shape; ZG_DQ_DUMP=prefix writes the workspace (float32) and the fp64 dS
         * (float64) to prefix.<dtype>.ws / .ref for a look at a layout that moved */
        const char *shp = getenv("ZG_DQ_SHAPE"), *dump = getenv("ZG_DQ_DUMP");
        if (shp != NULL) sscanf(shp, "%d,%d,%d,%d", &B, &T, &C, &NH);
        int hs = C / NH;
        size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nds = (size_t)B * NH * T * T;
        float *qkv = malloc(nqkv * 4), *dout = malloc(no * 4);
        void *dqkv_in = oc_dev_rand(be, dt, nqkv, 2.f, qkv), *ddout = oc_dev_rand(be, dt, no, 1.f, dout);
        void *out = oc_dev_nan(be, dt, no), *dqkv = oc_dev_nan(be, dt, nqkv);
        void *stats = be->ops->alloc(be, be->ops->attention_stats_bytes(be, B, T, NH), "attention stats");
        size_t lend_n = nds + ((size_t)1 << 20);
        void *lend = oc_dev_nan(be, dt, lend_n);
        oc_attn_path("cudnn");
        setenv("ZGPT_SDPA_DQ", "cudnn", 1);
        long l0 = zg_backend_cuda_cudnn_attention_lent_calls(be);
        be->ops->attention_forward(be, out, stats, dqkv_in, B, T, C, NH);
        be->ops->scratch_lend(be, lend, lend_n * 2);
        be->ops->attention_backward(be, dqkv, ddout, dqkv_in, out, stats, B, T, C, NH);
        be->ops->scratch_lend(be, NULL, 0);
        unsetenv("ZGPT_SDPA_DQ");
        unsetenv("ZGPT_ATTENTION");
        ZT_CHECK_MSG(zg_backend_cuda_cudnn_attention_lent_calls(be) - l0 == 1,
                     "cuDNN's backward did not run in the loan");
        size_t wsn = lend_n < 2 * nds + 65536 ? lend_n : 2 * nds + 65536; /* dS's size, twice, and a margin */
        float *ws = oc_dl(be, lend, dt, wsn);
        /* fp64 dS */
        double *ref = calloc(nds, 8), *P = malloc((size_t)T * 8), sc = 1.0 / sqrt((double)hs), mref = 0, mdiff = 0;
        size_t ld = (size_t)3 * C, upper_nan = 0, upper_zero = 0, upper = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < T; i++) {
                    const float *q = qkv + ((size_t)b * T + i) * ld + h * hs,
                                *dO = dout + ((size_t)b * T + i) * C + h * hs;
                    double mx = -1e300, sum = 0, D = 0;
                    for (int j = 0; j <= i; j++) {
                        const float *k = qkv + ((size_t)b * T + j) * ld + C + h * hs;
                        double s2 = 0;
                        for (int d = 0; d < hs; d++) s2 += (double)q[d] * k[d];
                        P[j] = s2 * sc;
                        mx = P[j] > mx ? P[j] : mx;
                    }
                    for (int j = 0; j <= i; j++) sum += (P[j] = exp(P[j] - mx));
                    double *row = ref + (((size_t)b * NH + h) * T + i) * T;
                    for (int j = 0; j <= i; j++) {
                        const float *v = qkv + ((size_t)b * T + j) * ld + 2 * C + h * hs;
                        double dp = 0;
                        for (int d = 0; d < hs; d++) dp += (double)dO[d] * v[d];
                        P[j] /= sum;
                        row[j] = dp; /* dP for now */
                        D += P[j] * dp;
                    }
                    for (int j = 0; j <= i; j++) row[j] = P[j] * (row[j] - D) * sc;
                    for (int j = 0; j < T; j++) {
                        float w = ws[((size_t)b * NH + h) * T * T + attn_ds_at(i, j, T)];
                        if (j > i) {
                            upper++, upper_nan += isnan(w), upper_zero += w == 0.f;
                            continue;
                        }
                        double d = fabs(w - row[j]);
                        mdiff = !(d <= mdiff) ? d : mdiff;
                        mref = fabs(row[j]) > mref ? fabs(row[j]) : mref;
                    }
                }
        printf("    %s: dS in cuDNN's workspace: max |difference| %.3g of max |dS| %.3g; above the diagonal %zu of %zu "
               "not written (NaN), %zu zero\n",
               oc_dt_name(dt), mdiff, mref, upper_nan, upper, upper_zero);
        if (dump != NULL) {
            char fn[512];
            snprintf(fn, sizeof fn, "%s.%s.ws", dump, oc_dt_name(dt));
            FILE *f = fopen(fn, "wb");
            if (f != NULL) fwrite(ws, 4, wsn, f), fclose(f);
            snprintf(fn, sizeof fn, "%s.%s.ref", dump, oc_dt_name(dt));
            if ((f = fopen(fn, "wb")) != NULL) fwrite(ref, 8, nds, f), fclose(f);
            snprintf(fn, sizeof fn, "%s.%s.qkv", dump, oc_dt_name(dt));
            if ((f = fopen(fn, "wb")) != NULL) fwrite(qkv, 4, nqkv, f), fclose(f);
            snprintf(fn, sizeof fn, "%s.%s.dout", dump, oc_dt_name(dt));
            if ((f = fopen(fn, "wb")) != NULL) fwrite(dout, 4, no, f), fclose(f);
        }
        int ok = mdiff <= 0.02 * mref;
        ZT_CHECK_MSG(
            ok, "%s: cuDNN's workspace does not hold dS as dS^T's fragments 128 bytes in (ZG_DQ_DUMP=prefix writes it)",
            oc_dt_name(dt));
        free(ws), free(ref), free(P), free(qkv), free(dout);
        void *bufs[] = {dqkv_in, ddout, out, dqkv, stats, lend};
        for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) be->ops->dealloc(be, bufs[k]);
    }
#endif
}

/* The KV cache over a sequence of Ttot positions (23 without decode) run as chunks 0..9, 10..20 (11),
 * 21, 22 through attention_forward_cached; with decode, positions 10..Ttot-1 go one at a time through
 * attention_decode (the position in device memory) instead, and the last one runs twice (the same
 * bits: the split over positions and its combine have a fixed order). */
void oc_attention_cached_case(int decode, int Ttot, int maxT) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        int B = 2, C = 128, NH = 2, hs = C / NH;
        int32_t *dpos = be->ops->alloc(be, 2 * sizeof(int32_t), "pos");
        size_t nqkv = (size_t)B * Ttot * 3 * C;
        float *qkv = malloc(nqkv * 4);
        for (size_t i = 0; i < nqkv; i++) qkv[i] = 2.f * zt_rand_uniform(&oc_rng);
        /* round through the device dtype */
        void *tmp = be->ops->alloc(be, nqkv * 4, "tmp");
        be->ops->upload_f32(be, tmp, dt, qkv, nqkv);
        be->ops->download_f32(be, qkv, tmp, dt, nqkv);
        be->ops->dealloc(be, tmp);
        double *ref = malloc((size_t)B * Ttot * C * 8);
        attn_ref(ref, NULL, qkv, NULL, B, Ttot, C, NH);
        void *kc = oc_dev_nan(be, dt, (size_t)B * NH * maxT * hs), *vc = oc_dev_nan(be, dt, (size_t)B * NH * maxT * hs);
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
            void *out = oc_dev_nan(be, dt, n1);
            if (decode && pos > 0) {
                int p2[2] = {pos, pos + 1};
                be->ops->upload(be, dpos, p2, sizeof p2);
                be->ops->attention_decode(be, out, dpart, kc, vc, dpos, B, maxT, C, NH);
                if (k == nrun - 1) {
                    /* the same bits again, with the split kernel's combine as a kernel of its own, and fused
                     * once more (its counters back at 0 after every launch) */
                    static const char *const comb[2] = {"kernel", "fused"};
                    float *o1 = oc_dl(be, out, dt, n1);
                    for (int c = 0; c < 2; c++) {
                        setenv("ZGPT_DECODE_COMBINE", comb[c], 1);
                        void *again = oc_dev_nan(be, dt, n1);
                        be->ops->attention_decode(be, again, dpart, kc, vc, dpos, B, maxT, C, NH);
                        float *o2 = oc_dl(be, again, dt, n1);
                        ZT_CHECK_MSG(memcmp(o1, o2, n1 * 4) == 0,
                                     "attention_decode %s at pos %d: a run with ZGPT_DECODE_COMBINE=%s differs",
                                     oc_dt_name(dt), pos, comb[c]);
                        free(o2);
                        be->ops->dealloc(be, again);
                    }
                    unsetenv("ZGPT_DECODE_COMBINE");
                    free(o1);
                }
            } else {
                be->ops->attention_forward_cached(be, out, dpart, kc, vc, B, Tn, pos, maxT, C, NH);
            }
            float *o = oc_dl(be, out, dt, n1);
            double *r = malloc(n1 * 8);
            for (int b = 0; b < B; b++)
                for (int t = 0; t < Tn; t++)
                    for (int c = 0; c < C; c++)
                        r[((size_t)b * Tn + t) * C + c] = ref[((size_t)b * Ttot + pos + t) * C + c];
            char name[96];
            snprintf(name, sizeof name, "%s pos=%d Tn=%d",
                     decode && pos > 0 ? "attention_decode" : "attention_forward_cached", pos, Tn);
            if (!decode || pos == 0 || k >= nrun - 3 || k % 64 == 0) /* the long run: a few lines */
                oc_check_rel(name, dt, o, r, n1, oc_tol_of(dt));
            else
                oc_check_rel_quiet(name, dt, o, r, n1, oc_tol_of(dt));
            free(part);
            free(o);
            free(r);
            be->ops->dealloc(be, dpart);
            be->ops->dealloc(be, out);
        }
        /* the cache holds k, v of all 23 positions in (B,NH,maxT,hs) */
        float *kh = oc_dl(be, kc, dt, (size_t)B * NH * maxT * hs);
        size_t bad = 0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < Ttot; t++)
                    for (int d = 0; d < hs; d++)
                        if (kh[(((size_t)b * NH + h) * maxT + t) * hs + d] !=
                            qkv[((size_t)b * Ttot + t) * 3 * C + C + h * hs + d])
                            bad++;
        ZT_CHECK_MSG(bad == 0, "kv cache %s: %zu wrong key entries", oc_dt_name(dt), bad);
        free(kh);
        free(qkv);
        free(ref);
        be->ops->dealloc(be, kc);
        be->ops->dealloc(be, vc);
        be->ops->dealloc(be, dpos);
        free(decode_chunks);
    }
}

void oc_test_attention_cached(void) { oc_attention_cached_case(0, 23, 40); }
