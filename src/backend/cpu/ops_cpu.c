/* GPT-2 ops on the CPU in fp32: OpenBLAS sgemm for every matrix product (linear layers and the
 * attention products), OpenMP loops for the element-wise and row-wise work.
 *
 * sgemm is only called from serial code: the pthread OpenBLAS threads each call itself, and calling
 * it from inside an OpenMP region would oversubscribe the cores. */
#include "backend/cpu/cpu_internal.h"

#include "core/error.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-5f
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

/* ---- embeddings --------------------------------------------------------------------------------- */

void cpu_encoder_forward(zg_backend *be, void *out_, const int32_t *tokens, const void *wte_, const void *wpe_,
                         int B, int T, int C) {
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
    *mean = m;
    *rstd = s;
}

void cpu_layernorm_forward(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                           const void *b, int N, int C) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        layernorm_row((float *)out + (size_t)i * C, mean + i, rstd + i, (const float *)inp + (size_t)i * C, w, b, C);
}

void cpu_residual_layernorm_forward(zg_backend *be, void *residual, void *out, float *mean, float *rstd,
                                    const void *a, const void *b, const void *w, const void *bias, int N, int C) {
    (void)be;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        float *r = (float *)residual + (size_t)i * C;
        const float *x = (const float *)a + (size_t)i * C, *y = (const float *)b + (size_t)i * C;
        for (int c = 0; c < C; c++) r[c] = x[c] + y[c];
        layernorm_row((float *)out + (size_t)i * C, mean + i, rstd + i, r, w, bias, C);
    }
}

void cpu_layernorm_backward(zg_backend *be, void *dinp_, void *dw_, void *db_, const void *dout_, const void *inp_,
                            const void *w_, const float *mean, const float *rstd, int N, int C) {
    float *dinp = dinp_, *dw = dw_, *db = db_;
    const float *dout = dout_, *inp = inp_, *w = w_;
    int nth = omp_get_max_threads();
    /* Per-thread partial sums of dw and db (2C floats each), added up in thread order afterwards so
     * the result does not depend on scheduling. */
    float *part = cpu_scratch(be, (size_t)nth * 2 * C);
    memset(part, 0, (size_t)nth * 2 * C * sizeof(float));
#pragma omp parallel num_threads(nth)
    {
        int id = omp_get_thread_num();
        float *pdw = part + (size_t)id * 2 * C, *pdb = pdw + C;
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *d = dout + (size_t)i * C;
            float *dx = dinp + (size_t)i * C;
            float m = mean[i], s = rstd[i];
            /* dnorm = dout * w; dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)) */
            float dmean = 0.0f, dnm = 0.0f;
            for (int c = 0; c < C; c++) {
                float nrm = (x[c] - m) * s;
                float dn = d[c] * w[c];
                dmean += dn;
                dnm += dn * nrm;
                pdw[c] += d[c] * nrm;
                pdb[c] += d[c];
            }
            dmean /= (float)C;
            dnm /= (float)C;
            for (int c = 0; c < C; c++) {
                float nrm = (x[c] - m) * s;
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
}

/* ---- matrix products ---------------------------------------------------------------------------- */

static inline float gelu_tanh(float x) {
    float u = GELU_K * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}

static inline float gelu_tanh_grad(float x) {
    float u = GELU_K * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
}

void cpu_matmul_forward(zg_backend *be, void *out_, void *pre_gelu_, const void *inp, const void *w, const void *bias_,
                        int N, int C, int OC) {
    (void)be;
    float *out = out_, *pre = pre_gelu_;
    const float *bias = bias_;
    float *dst = pre ? pre : out;
    /* dst (N,OC) = inp (N,C) @ w (OC,C)^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, w, C, 0.0f, dst, OC);
    if (bias == NULL && pre == NULL) return;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        float *r = dst + (size_t)i * OC;
        if (bias)
            for (int o = 0; o < OC; o++) r[o] += bias[o];
        if (pre) {
            float *g = out + (size_t)i * OC;
            for (int o = 0; o < OC; o++) g[o] = gelu_tanh(r[o]);
        }
    }
}

void cpu_matmul_backward(zg_backend *be, void *dinp_, void *dw, void *dbias_, const void *dout_, const void *inp,
                         const void *w, const void *gelu_inp_, int N, int C, int OC) {
    float *dinp = dinp_, *dbias = dbias_;
    const float *dout = dout_, *gelu_inp = gelu_inp_;
    if (dinp && w) {
        /* dinp (N,C) = dout (N,OC) @ w (OC,C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C, 0.0f, dinp, C);
        if (gelu_inp) {
            size_t n = (size_t)N * C;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n; i++) dinp[i] *= gelu_tanh_grad(gelu_inp[i]);
        }
    }
    /* dw (OC,C) += dout^T (OC,N) @ inp (N,C) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dw, C);
    if (dbias) {
        /* Column sums of dout (N,OC): threads own column blocks, rows read in order. */
#pragma omp parallel
        {
            int nth = omp_get_num_threads(), id = omp_get_thread_num();
            int o0 = (int)((long)OC * id / nth), o1 = (int)((long)OC * (id + 1) / nth);
            for (int i = 0; i < N; i++) {
                const float *r = dout + (size_t)i * OC;
                for (int o = o0; o < o1; o++) dbias[o] += r[o];
            }
        }
    }
    (void)be;
}

void cpu_gelu_forward(zg_backend *be, void *out_, const void *inp_, size_t n) {
    (void)be;
    float *out = out_;
    const float *inp = inp_;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = gelu_tanh(inp[i]);
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

/* Causal attention does not need the part of S = Q K^T above the diagonal: rows [t0, t1) of S only
 * use keys 0..t1-1. The products run on row blocks of ATT_BLOCK queries against the keys they can
 * see, which skips ~(1 - (n+1)/(2n)) of the work for n blocks. */
#define ATT_BLOCK 64

void cpu_attention_forward(zg_backend *be, void *out_, void *stats, const void *qkv_, int B, int T, int C, int NH) {
    (void)be;
    float *out = out_, *P = stats;
    const float *qkv = qkv_;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    /* S (T,T) = scale * Q (T,hs) @ K (T,hs)^T per (b,h); Q and K are strided views of qkv rows. */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            float *S = P + ((size_t)b * NH + h) * T * T;
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, hs, scale, q + (size_t)t0 * C3, C3,
                            q + C, C3, 0.0f, S + (size_t)t0 * T, T);
            }
        }
    /* causal softmax, row t sees 0..t; the masked part is set to 0 so P @ V needs no mask */
    long rows = (long)B * NH * T;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int t = (int)(r % T);
        float *p = P + (size_t)r * T;
        float mx = -INFINITY;
        for (int j = 0; j <= t; j++) mx = p[j] > mx ? p[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j <= t; j++) {
            p[j] = expf(p[j] - mx);
            sum += p[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= t; j++) p[j] *= inv;
        for (int j = t + 1; j < T; j++) p[j] = 0.0f;
    }
    /* out (T,hs) = P (T,T) @ V (T,hs) per (b,h), into the head's columns of out (B,T,C) */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *v = qkv + (size_t)b * T * C3 + 2 * C + (size_t)h * hs;
            const float *Pb = P + ((size_t)b * NH + h) * T * T;
            float *o = out + (size_t)b * T * C + (size_t)h * hs;
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, 1.0f, Pb + (size_t)t0 * T, T,
                            v, C3, 0.0f, o + (size_t)t0 * C, C);
            }
        }
}

/* Zeroes the (T, hs) block of a strided (ld) matrix. */
static void zero_block(float *p, int T, int hs, int ld) {
    for (int t = 0; t < T; t++) memset(p + (size_t)t * ld, 0, (size_t)hs * sizeof(float));
}

void cpu_attention_backward(zg_backend *be, void *dqkv_, const void *dout_, const void *qkv_, const void *out,
                            const void *stats, int B, int T, int C, int NH) {
    (void)out;
    float *dqkv = dqkv_;
    const float *dout = dout_, *qkv = qkv_, *P = stats;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *dP = cpu_scratch(be, (size_t)B * NH * T * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t bh = (size_t)b * NH + h;
            const float *v = qkv + (size_t)b * T * C3 + 2 * C + (size_t)h * hs;
            const float *dO = dout + (size_t)b * T * C + (size_t)h * hs;
            float *dv = dqkv + (size_t)b * T * C3 + 2 * C + (size_t)h * hs;
            zero_block(dv, T, hs, C3);
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                /* dP[t0:t1, 0:t1] = dO[t0:t1] @ V[0:t1]^T;  dV[0:t1] += P[t0:t1, 0:t1]^T @ dO[t0:t1] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t1 - t0, t1, hs, 1.0f, dO + (size_t)t0 * C, C, v,
                            C3, 0.0f, dP + bh * T * T + (size_t)t0 * T, T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hs, t1 - t0, 1.0f, P + bh * T * T + (size_t)t0 * T,
                            T, dO + (size_t)t0 * C, C, 1.0f, dv, C3);
            }
        }
    /* softmax backward in place: dS = P * (dP - sum_j P dP), zero above the diagonal */
    long rows = (long)B * NH * T;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int t = (int)(r % T);
        const float *p = P + (size_t)r * T;
        float *d = dP + (size_t)r * T;
        float dot = 0.0f;
        for (int j = 0; j <= t; j++) dot += p[j] * d[j];
        for (int j = 0; j <= t; j++) d[j] = p[j] * (d[j] - dot);
        for (int j = t + 1; j < T; j++) d[j] = 0.0f;
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t bh = (size_t)b * NH + h;
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            float *dq = dqkv + (size_t)b * T * C3 + (size_t)h * hs;
            zero_block(dq + C, T, hs, C3);
            for (int t0 = 0; t0 < T; t0 += ATT_BLOCK) {
                int t1 = t0 + ATT_BLOCK < T ? t0 + ATT_BLOCK : T;
                const float *dS = dP + bh * T * T + (size_t)t0 * T;
                /* dQ[t0:t1] = scale * dS[t0:t1, 0:t1] @ K[0:t1];  dK[0:t1] += scale * dS[t0:t1, 0:t1]^T @ Q[t0:t1] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t1 - t0, hs, t1, scale, dS, T, q + C, C3, 0.0f,
                            dq + (size_t)t0 * C3, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t1, hs, t1 - t0, scale, dS, T, q + (size_t)t0 * C3,
                            C3, 1.0f, dq + C, C3);
            }
        }
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
                        sc[j] = expf(sc[j] - mx);
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
        float mx = -INFINITY;
        for (int j = 0; j < V; j++) mx = x[j] > mx ? x[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < V; j++) sum += expf(x[j] - mx);
        float lse = mx + (float)log(sum);
        if (losses) losses[i] = lse - x[tgt];
        if (dloss != 0.0f) {
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < V; j++) x[j] = expf(x[j] - mx) * inv * dloss;
            x[tgt] -= dloss;
            for (int j = V; j < Vp; j++) x[j] = 0.0f;
        }
    }
}
