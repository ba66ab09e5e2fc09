/* GPT-2 ops on the CPU in fp32: OpenBLAS sgemm for every matrix product (linear layers and the
 * attention products), OpenMP loops for the element-wise and row-wise work.
 *
 * Threads: one OpenMP pool does all the work. OpenBLAS is set to one thread while the backend
 * exists, and every product is split into per-thread sgemm calls (mm_split; attention by (b,h)). */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* The clamps in exp_fast are float compares; GCC only if-converts (and so vectorises) loops with
 * them when compares may be assumed not to trap. zgpt never enables floating-point exceptions, so
 * this changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#define LN_EPS 1e-5f
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

/* Hot element-wise loops are built for AVX-512, AVX2 and baseline x86-64 and picked at load time
 * (GCC function multi-versioning): the default build targets baseline x86-64 (SSE2). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CPU_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_MULTIVERSION
#endif

/* ---- embeddings --------------------------------------------------------------------------------- */

void cpu_encoder_forward(zg_backend *be, void *out_, const int32_t *tokens, const void *wte_, const void *wpe_, int B,
                         int T, int C) {
    (void)be;
    float *out = out_;
    const float *wte = wte_, *wpe = wpe_;
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        int t = bt % T;
        const float *we = wte + (size_t)tokens[bt] * C;
        const float *pe = wpe + (size_t)t * C;
        float *o = out + (size_t)bt * C;
        for (int c = 0; c < C; c++) o[c] = we[c] + pe[c];
    }
}

void cpu_encoder_backward(zg_backend *be, void *dwte_, void *dwpe_, const void *dout_, const int32_t *tokens, int B,
                          int T, int C) {
    (void)be;
    float *dwte = dwte_, *dwpe = dwpe_;
    const float *dout = dout_;
    /* Each thread owns a block of channels, so the scatter into dwte (repeated tokens) is race-free
     * and the summation order is fixed (deterministic). */
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int c0 = (int)((long)C * id / nth), c1 = (int)((long)C * (id + 1) / nth);
        for (int bt = 0; bt < B * T; bt++) {
            int t = bt % T;
            const float *d = dout + (size_t)bt * C;
            float *we = dwte + (size_t)tokens[bt] * C;
            float *pe = dwpe + (size_t)t * C;
            for (int c = c0; c < c1; c++) {
                we[c] += d[c];
                pe[c] += d[c];
            }
        }
    }
}

/* ---- LayerNorm ---------------------------------------------------------------------------------- */

CPU_MULTIVERSION
static void layernorm_row(float *o, float *mean, float *rstd, const float *x, const float *w, const float *b, int C) {
    float m = 0.0f;
    for (int c = 0; c < C; c++) m += x[c];
    m /= (float)C;
    float v = 0.0f;
    for (int c = 0; c < C; c++) {
        float d = x[c] - m;
        v += d * d;
    }
    v /= (float)C; /* biased variance, as torch.nn.LayerNorm */
    float s = 1.0f / sqrtf(v + LN_EPS);
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
    if (mean) *mean = m; /* statistics may be skipped (inference) */
    if (rstd) *rstd = s;
}

void cpu_layernorm_forward(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                           const void *b, int N, int C) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        layernorm_row((float *)out + (size_t)i * C, mean ? mean + i : NULL, rstd ? rstd + i : NULL,
                      (const float *)inp + (size_t)i * C, w, b, C);
}

/* sum[c0, c1) += column sums of those columns of rows (N,C), each column's rows added in row order into sum itself:
 * a bias gradient (cpu_matmul_backward's dbias, layernorm_backward's dsum_in / dsum_out) over one thread's columns */
static void column_sums_span(float *sum, const float *rows, int N, int C, int c0, int c1) {
    for (int i = 0; i < N && c1 > c0; i++) {
        const float *r = rows + (size_t)i * C;
#pragma omp simd
        for (int c = c0; c < c1; c++) sum[c] += r[c];
    }
}

/* sum (C) += column sums of rows (N,C), the columns split over the threads */
static void column_sums_add(float *sum, const float *rows, int N, int C) {
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        column_sums_span(sum, rows, N, C, (int)((long)C * id / nth), (int)((long)C * (id + 1) / nth));
    }
}

void cpu_layernorm_backward(zg_backend *be, void *dinp_, void *dw_, void *db_, const void *dout_, const void *x_,
                            const void *y_, const void *w_, const void *b_, const float *mean, const float *rstd, int N,
                            int C, void *dsum_in, void *dsum_out) {
    float *dinp = dinp_, *dw = dw_, *db = db_;
    if (dsum_in) column_sums_add(dsum_in, dinp, N, C);
    const float *dout = dout_, *w = w_, *b = b_;
    /* Input form: xhat = (x - mean) * rstd. Output form (x NULL): xhat = (y - b) / w, the reciprocal
     * taken once per column (0 where w is 0: that column's input cannot be recovered). */
    const float *src = x_ ? (const float *)x_ : (const float *)y_;
    int from_y = x_ == NULL;
    zg_layernorm_backward_check(x_, y_, b_, mean);
    int nth = omp_get_max_threads();
    /* Per-thread partial sums of dw and db (2C floats each), added up in thread order afterwards so
     * the result does not depend on scheduling; with the output form, 1/w (C) after them. */
    float *part = cpu_scratch(be, (size_t)nth * 2 * C + (from_y ? (size_t)C : 0));
    memset(part, 0, (size_t)nth * 2 * C * sizeof(float));
    float *invw = part + (size_t)nth * 2 * C;
    if (from_y)
        for (int c = 0; c < C; c++) invw[c] = w[c] != 0.0f ? 1.0f / w[c] : 0.0f;
#pragma omp parallel num_threads(nth)
    {
        int id = omp_get_thread_num();
        float *pdw = part + (size_t)id * 2 * C, *pdb = pdw + C;
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            const float *x = src + (size_t)i * C, *d = dout + (size_t)i * C;
            float *dx = dinp + (size_t)i * C;
            float m = from_y ? 0.0f : mean[i], s = rstd[i];
            /* dnorm = dout * w; dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
            float dmean = 0.0f, dnm = 0.0f;
            for (int c = 0; c < C; c++) {
                float nrm = from_y ? (x[c] - b[c]) * invw[c] : (x[c] - m) * s;
                float dn = d[c] * w[c];
                dmean += dn;
                dnm += dn * nrm;
                pdw[c] += d[c] * nrm;
                pdb[c] += d[c];
            }
            dmean /= (float)C;
            dnm /= (float)C;
            for (int c = 0; c < C; c++) {
                float nrm = from_y ? (x[c] - b[c]) * invw[c] : (x[c] - m) * s;
                dx[c] += (d[c] * w[c] - dmean - nrm * dnm) * s;
            }
        }
    }
    for (int id = 0; id < nth; id++) {
        const float *pdw = part + (size_t)id * 2 * C, *pdb = pdw + C;
        for (int c = 0; c < C; c++) {
            dw[c] += pdw[c];
            db[c] += pdb[c];
        }
    }
    if (dsum_out) column_sums_add(dsum_out, dinp, N, C);
}

/* ---- matrix products ---------------------------------------------------------------------------- */

/* exp(x) without a libm call, so loops over it vectorise (libm's expf/tanhf are scalar calls and
 * made GELU and the softmaxes a visible share of a CPU step). x = k ln2 + r with |r| <= ln2/2;
 * exp(r) by a degree-6 polynomial (Cephes' expf coefficients), 2^k by building the exponent bits.
 * Relative error about 2e-7 (1-2 ulp); NaN stays NaN; inputs are clamped to [-87.3, 88] (results
 * from ~1e-38 to ~1.7e38). k comes from the "add 1.5*2^23" rounding trick, so no float->int
 * conversion can overflow. */
static inline float exp_fast(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.0f ? 88.0f : x;       /* k <= 127: 2^k stays finite */
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
    float t = x * 1.44269504088896341f + magic;
    uint32_t tb;
    memcpy(&tb, &t, 4);
    float k = t - magic;
    float r = x - k * 0.693359375f; /* ln2 split in two parts for an exact first product */
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t kb = (tb - 0x4B400000u + 127u) << 23; /* (k + 127) in the exponent field */
    float scale;
    memcpy(&scale, &kb, 4);
    return p * scale;
}

/* GELU (tanh form) written with the logistic function: 0.5 x (1 + tanh(u)) = x * s, s = 1 / (1 + e),
 * e = exp(-2u), u = sqrt(2/pi) (x + 0.044715 x^3). No 1 + tanh cancellation for negative x, and
 * 1 - s = e * s keeps the gradient accurate where s is near 1. */
static inline float gelu_tanh(float x) {
    float u = GELU_K * (x + 0.044715f * x * x * x);
    return x / (1.0f + exp_fast(-2.0f * u));
}

/* d gelu / dx = s + x * 2 s (1 - s) * du/dx */
static inline float gelu_tanh_grad(float x) {
    float u = GELU_K * (x + 0.044715f * x * x * x);
    float e = exp_fast(-2.0f * u);
    float sg = 1.0f / (1.0f + e);
    float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
    return sg + 2.0f * x * (e * sg) * sg * du;
}

/* out[i] = (bias ? r[i] += bias[i] : r[i]), then g[i] = gelu(r[i]) when g: one row block. */
CPU_MULTIVERSION
static void bias_gelu_span(float *r, float *g, const float *bias, int n) {
    if (bias)
#pragma omp simd
        for (int i = 0; i < n; i++) r[i] += bias[i];
    if (g)
#pragma omp simd
        for (int i = 0; i < n; i++) g[i] = gelu_tanh(r[i]);
}

/* d[i] *= gelu'(x[i]) */
CPU_MULTIVERSION
static void gelu_grad_span(float *d, const float *x, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) d[i] *= gelu_tanh_grad(x[i]);
}

/* Work split for the matrix products. OpenBLAS runs single-threaded (the backend sets it at creation)
 * and each OpenMP thread multiplies its own block of the output: rows when there are enough, else
 * columns. One thread pool for everything means no BLAS worker threads spinning against the OpenMP
 * loops on few cores, and bias/GELU run on each block while it is still in cache. */
typedef struct {
    int by_rows;
    int b0, b1; /* [b0, b1) rows or columns of the output */
} mm_block;

/* This thread's block of a (rows, cols) output; call inside a parallel region. */
static mm_block mm_split(int rows, int cols) {
    int nth = omp_get_num_threads(), id = omp_get_thread_num();
    mm_block blk;
    blk.by_rows = rows >= 16 * nth;
    int n = blk.by_rows ? rows : cols;
    blk.b0 = (int)((long)n * id / nth);
    blk.b1 = (int)((long)n * (id + 1) / nth);
    return blk;
}

void cpu_matmul_forward(zg_backend *be, void *out_, void *pre_gelu_, const void *inp_, const void *w_,
                        const void *bias_, const void *residual_, int N, int C, int OC) {
    (void)be;
    float *out = out_, *pre = pre_gelu_;
    const float *bias = bias_, *inp = inp_, *w = w_, *res = residual_;
    if (res && pre)
        ZG_FATAL("matmul_forward (cpu): residual and pre_gelu together are not supported (N=%d C=%d OC=%d)", N, C, OC);
    float *dst = pre ? pre : out;
#pragma omp parallel
    {
        /* dst (N,OC) = inp (N,C) @ w (OC,C)^T [+ residual (N,OC)], this thread's block. The residual
         * is copied into the block first and sgemm adds to it (beta = 1); in place (res == out) it
         * is already there. */
        mm_block k = mm_split(N, OC);
        int r0 = k.by_rows ? k.b0 : 0, r1 = k.by_rows ? k.b1 : N;
        int o0 = k.by_rows ? 0 : k.b0, o1 = k.by_rows ? OC : k.b1;
        if (r1 > r0 && o1 > o0) {
            if (res && res != out)
                for (int i = r0; i < r1; i++)
                    memcpy(out + (size_t)i * OC + o0, res + (size_t)i * OC + o0, (size_t)(o1 - o0) * sizeof(float));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, o1 - o0, C, 1.0f, inp + (size_t)r0 * C, C,
                        w + (size_t)o0 * C, C, res ? 1.0f : 0.0f, dst + (size_t)r0 * OC + o0, OC);
            for (int i = r0; i < r1 && (bias || pre); i++)
                bias_gelu_span(dst + (size_t)i * OC + o0, pre ? out + (size_t)i * OC + o0 : NULL,
                               bias ? bias + o0 : NULL, o1 - o0);
        }
    }
}

void cpu_matmul_backward(zg_backend *be, void *dinp_, void *dw_, void *dbias_, const void *dout_, const void *inp_,
                         const void *w_, const void *gelu_inp_, int N, int C, int OC, int dw_overwrite) {
    (void)be;
    float *dinp = dinp_, *dbias = dbias_, *dw = dw_;
    const float *dout = dout_, *gelu_inp = gelu_inp_, *inp = inp_, *w = w_;
#pragma omp parallel
    {
        if (dinp && w) {
            /* dinp (N,C) = dout (N,OC) @ w (OC,C), then * gelu'(gelu_inp) on the same block */
            mm_block k = mm_split(N, C);
            int r0 = k.by_rows ? k.b0 : 0, r1 = k.by_rows ? k.b1 : N;
            int c0 = k.by_rows ? 0 : k.b0, c1 = k.by_rows ? C : k.b1;
            if (r1 > r0 && c1 > c0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, c1 - c0, OC, 1.0f,
                            dout + (size_t)r0 * OC, OC, w + c0, C, 0.0f, dinp + (size_t)r0 * C + c0, C);
                for (int i = r0; i < r1 && gelu_inp; i++)
                    gelu_grad_span(dinp + (size_t)i * C + c0, gelu_inp + (size_t)i * C + c0, (size_t)(c1 - c0));
            }
        }
        /* dw (OC,C) += (dw_overwrite: =) dout^T (OC,N) @ inp (N,C) and dbias (OC) += column sums of dout, over
         * this thread's rows [o0, o1) of dw (columns of dout) */
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int o0 = (int)((long)OC * id / nth), o1 = (int)((long)OC * (id + 1) / nth);
        if (o1 > o0) {
            if (dw)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o1 - o0, C, N, 1.0f, dout + o0, OC, inp, C,
                            dw_overwrite ? 0.0f : 1.0f, dw + (size_t)o0 * C, C);
            if (dbias) column_sums_span(dbias, dout, N, OC, o0, o1);
        }
    }
}

void cpu_gelu_forward(zg_backend *be, void *out_, const void *inp_, size_t n) {
    (void)be;
    float *out = out_;
    const float *inp = inp_;
    /* chunks of 4096 so the multi-versioned span function is called rarely */
    size_t nchunk = (n + 4095) / 4096;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nchunk; k++) {
        size_t i0 = k * 4096, len = n - i0 < 4096 ? n - i0 : 4096;
        memcpy(out + i0, inp + i0, len * sizeof(float));
        bias_gelu_span(out + i0, out + i0, NULL, (int)len);
    }
}

void cpu_residual_forward(zg_backend *be, void *out_, const void *a_, const void *b_, size_t n) {
    (void)be;
    float *out = out_;
    const float *a = a_, *b = b_;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---- attention ---------------------------------------------------------------------------------- */

size_t cpu_attention_stats_bytes(zg_backend *be, int B, int T, int NH) {
    (void)be;
    return (size_t)B * NH * T * T * sizeof(float); /* probabilities P (B,NH,T,T) */
}

/* Attention is B*NH independent small problems ((T,hs) x (hs,T) products). Multi-threaded sgemm on
 * each is mostly overhead, so the (b,h) pairs are spread over OpenMP threads and each thread runs
 * single-threaded sgemm on its own pairs (OpenBLAS is set to one thread for the duration and
 * restored after). Causal attention does not need the part of S = Q K^T above the diagonal: rows
 * [t0, t1) only use keys 0..t1-1, so the products run on blocks of ATT_BLOCK queries against the
 * keys they can see. */
#define ATT_BLOCK 64

static int blas_threads_single(void) {
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return saved;
}

/* One (b,h) forward: S = scale Q K^T (causal blocks), P = softmax(S) in place, O = P V. */
CPU_MULTIVERSION
static void attention_forward_head(float *P, float *o, const float *q, int T, int C, int hs, float scale) {
    int C3 = 3 * C;
    const float *k = q + C, *v = q + 2 * C;
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, hs, scale, q + (size_t)t0 * C3, C3, k, C3,
                    0.0f, P + (size_t)t0 * T, T);
    }
    /* causal softmax, row t sees 0..t; the masked part is set to 0 so P V needs no mask */
    for (int t = 0; t < T; t++) {
        float *p = P + (size_t)t * T;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j <= t; j++) mx = p[j] > mx ? p[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= t; j++) {
            p[j] = exp_fast(p[j] - mx);
            sum += p[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= t; j++) p[j] *= inv;
        for (int j = t + 1; j < T; j++) p[j] = 0.0f;
    }
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, 1.0f, P + (size_t)t0 * T, T, v, C3,
                    0.0f, o + (size_t)t0 * C, C);
    }
}

void cpu_attention_forward(zg_backend *be, void *out_, void *stats, const void *qkv_, int B, int T, int C, int NH) {
    (void)be;
    float *out = out_, *P = stats;
    const float *qkv = qkv_;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    int saved = blas_threads_single();
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        attention_forward_head(P + (size_t)bh * T * T, out + (size_t)b * T * C + (size_t)h * hs,
                               qkv + (size_t)b * T * 3 * C + (size_t)h * hs, T, C, hs, scale);
    }
    openblas_set_num_threads(saved);
}

/* Zeroes the (T, hs) block of a strided (ld) matrix. */
static void zero_block(float *p, int T, int hs, int ld) {
    for (int t = 0; t < T; t++) memset(p + (size_t)t * ld, 0, (size_t)hs * sizeof(float));
}

/* One (b,h) backward. P (T,T) probabilities, dP (T,T) scratch, q/dq point at the head's q columns
 * of qkv/dqkv rows (k at +C, v at +2C), dO at the head's columns of dout (B,T,C). */
CPU_MULTIVERSION
static void attention_backward_head(float *dq, float *dP, const float *P, const float *q, const float *dO, int T, int C,
                                    int hs, float scale) {
    int C3 = 3 * C;
    const float *k = q + C, *v = q + 2 * C;
    float *dk = dq + C, *dv = dq + 2 * C;
    zero_block(dv, T, hs, C3);
    zero_block(dk, T, hs, C3);
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        /* dP[t0:t1, 0:t1] = dO[t0:t1] V[0:t1]^T;  dV[0:t1] += P[t0:t1, 0:t1]^T dO[t0:t1] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, hs, 1.0f, dO + (size_t)t0 * C, C, v, C3, 0.0f,
                    dP + (size_t)t0 * T, T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hs, t1 - t0, 1.0f, P + (size_t)t0 * T, T,
                    dO + (size_t)t0 * C, C, 1.0f, dv, C3);
    }
    /* softmax backward in place: dS = P (dP - sum_j P dP), zero above the diagonal */
    for (int t = 0; t < T; t++) {
        const float *p = P + (size_t)t * T;
        float *d = dP + (size_t)t * T;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j <= t; j++) dot += p[j] * d[j];
        for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
        for (int j = t + 1; j < T; j++) d[j] = 0.0f;
    }
    for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
        int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
        const float *dS = dP + (size_t)t0 * T;
        /* dQ[t0:t1] = scale dS[t0:t1, 0:t1] K[0:t1];  dK[0:t1] += scale dS[t0:t1, 0:t1]^T Q[t0:t1] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, scale, dS, T, k, C3, 0.0f,
                    dq + (size_t)t0 * C3, C3);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hs, t1 - t0, scale, dS, T, q + (size_t)t0 * C3, C3,
                    1.0f, dk, C3);
    }
}

void cpu_attention_backward(zg_backend *be, void *dqkv_, const void *dout_, const void *qkv_, const void *out,
                            const void *stats, int B, int T, int C, int NH) {
    (void)out;
    float *dqkv = dqkv_;
    const float *dout = dout_, *qkv = qkv_, *P = stats;
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    float *dP = cpu_scratch(be, (size_t)B * NH * T * T);
    int saved = blas_threads_single();
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        size_t qoff = (size_t)b * T * 3 * C + (size_t)h * hs;
        attention_backward_head(dqkv + qoff, dP + (size_t)bh * T * T, P + (size_t)bh * T * T, qkv + qoff,
                                dout + (size_t)b * T * C + (size_t)h * hs, T, C, hs, scale);
    }
    openblas_set_num_threads(saved);
}

void cpu_attention_forward_cached(zg_backend *be, void *out_, const void *qkv_, void *kcache_, void *vcache_, int B,
                                  int Tn, int pos, int maxT, int C, int NH) {
    (void)be;
    float *out = out_, *kc = kcache_, *vc = vcache_;
    const float *qkv = qkv_;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    /* append the new keys/values: cache (B,NH,maxT,hs) */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Tn; i++) {
            const float *row = qkv + ((size_t)b * Tn + i) * C3;
            for (int h = 0; h < NH; h++) {
                size_t dst = (((size_t)b * NH + h) * maxT + pos + i) * hs;
                memcpy(kc + dst, row + C + (size_t)h * hs, (size_t)hs * sizeof(float));
                memcpy(vc + dst, row + 2 * C + (size_t)h * hs, (size_t)hs * sizeof(float));
            }
        }
    int L = pos + Tn;
#pragma omp parallel
    {
        float *sc = malloc((size_t)L * sizeof(float));
        if (sc == NULL) ZG_FATAL("out of memory for %d attention scores", L);
#pragma omp for collapse(3) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < Tn; i++) {
                    const float *q = qkv + ((size_t)b * Tn + i) * C3 + (size_t)h * hs;
                    const float *K = kc + ((size_t)b * NH + h) * maxT * hs;
                    const float *Vv = vc + ((size_t)b * NH + h) * maxT * hs;
                    int n = pos + i + 1; /* causal: positions 0..pos+i */
                    float mx = -INFINITY;
                    for (int j = 0; j < n; j++) {
                        float s = 0.0f;
                        for (int d = 0; d < hs; d++) s += q[d] * K[(size_t)j * hs + d];
                        sc[j] = s * scale;
                        mx = sc[j] > mx ? sc[j] : mx;
                    }
                    float sum = 0.0f;
                    for (int j = 0; j < n; j++) {
                        sc[j] = exp_fast(sc[j] - mx);
                        sum += sc[j];
                    }
                    float *o = out + ((size_t)b * Tn + i) * C + (size_t)h * hs;
                    for (int d = 0; d < hs; d++) o[d] = 0.0f;
                    for (int j = 0; j < n; j++) {
                        float p = sc[j] / sum;
                        for (int d = 0; d < hs; d++) o[d] += p * Vv[(size_t)j * hs + d];
                    }
                }
        free(sc);
    }
}

/* ---- classifier --------------------------------------------------------------------------------- */

/* One row of the classifier (exp loops over the whole vocabulary: the largest non-BLAS work). */
CPU_MULTIVERSION
static void classifier_row(float *x, float *loss, int tgt, int V, int Vp, float dloss) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    /* double accumulation: V terms (50257) of size <= 1 */
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < V; j++) sum += (double)exp_fast(x[j] - mx);
    float lse = mx + (float)log(sum);
    if (loss) *loss = lse - x[tgt];
    if (dloss != 0.0f) {
        float scale = (float)(dloss / sum);
#pragma omp simd
        for (int j = 0; j < V; j++) x[j] = exp_fast(x[j] - mx) * scale;
        x[tgt] -= dloss;
        for (int j = V; j < Vp; j++) x[j] = 0.0f;
    }
}

void cpu_classifier(zg_backend *be, float *losses, void *logits_, const int32_t *targets, int N, int V, int Vp,
                    float dloss) {
    (void)be;
    float *logits = logits_;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        float *x = logits + (size_t)i * Vp;
        int tgt = targets[i];
        if (tgt < 0) {
            if (losses) losses[i] = 0.0f;
            if (dloss != 0.0f) memset(x, 0, (size_t)Vp * sizeof(float));
            continue;
        }
        classifier_row(x, losses ? losses + i : NULL, tgt, V, Vp, dloss);
    }
}
