/* CUDA LayerNorm forward (its backward: layernorm_backward_cuda.cu). */
#include "backend/cuda/layernorm.cuh"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* ---- LayerNorm -------------------------------------------------------------------------------- */

/* Scalar fallback (any C, any alignment, parameters in another dtype than activations): one warp
 * per row, three passes over the row in device memory.
 * out (N,C) = (x - mean) * rstd * w + bias; mean, rstd (N) fp32, may be NULL. */
template <typename TA, typename TP>
__global__ void zgc_layernorm_fwd_kernel(TA *out, float *mean, float *rstd, const TA *x, const TP *w, const TP *bias,
                                         int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t base = (size_t)row * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += zgc_to_f(x[base + c]);
    float mu = zgc_warp_sum(s) / C;
    float v = 0.f;
    for (int c = lane; c < C; c += 32) {
        float d = zgc_to_f(x[base + c]) - mu;
        v += d * d;
    }
    float rs = rsqrtf(zgc_warp_sum(v) / C + 1e-5f);
    for (int c = lane; c < C; c += 32) {
        float y = (zgc_to_f(x[base + c]) - mu) * rs * zgc_to_f(w[c]) + zgc_to_f(bias[c]);
        out[base + c] = zgc_from_f<TA>(y);
    }
    if (lane == 0 && mean != NULL) mean[row] = mu; /* statistics may be skipped (inference) */
    if (lane == 0 && rstd != NULL) rstd[row] = rs;
}

/* Register-resident forward: one warp per row, lane owns the 16-byte vectors lane, lane + 32, ...
 * (NV = ceil(C/VW/32) of them at most, VW = 16/sizeof(T)). The row is read from device memory once
 * into registers; the mean pass, the variance pass over (x - mean) (two-pass, as the scalar kernel)
 * and the output all work from the registers, so the kernel moves 2*C*sizeof(T) bytes per row and
 * runs at memory bandwidth. Needs C % VW == 0, 16-byte aligned out/x/w/bias, parameters in T.
 * out (N,C), x (N,C), w (C), bias (C); mean, rstd (N) fp32, may be NULL.
 * Registers (ptxas, sm_90): bf16 46 at C = 768 (NV 3), 80 at C = 1600 (NV 7; the compiler keeps the
 * row converted to fp32), so 40 and 24 resident warps per SM: 60-77 KB of row loads can be in
 * flight per SM, above what HBM latency x bandwidth needs. Forcing 4 blocks/SM (64 registers)
 * spills for bf16 NV >= 6, so no min-blocks bound. 4 warps per block: a block retires when its
 * slowest row is done, so small blocks waste fewer idle warp slots. */
#define ZGC_LNF_WARPS 4
template <typename T, int NV>
__global__ void __launch_bounds__(ZGC_LNF_WARPS * 32)
    zgc_layernorm_fwd_reg_kernel(T *__restrict__ out, float *__restrict__ mean, float *__restrict__ rstd,
                                 const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ bias, int N,
                                 int C) {
    constexpr int VW = 16 / sizeof(T);
    typedef zgc_vec<T> V;
    zgc_pdl_wait(); /* launched with PDL (zgc_launch): x is the previous kernel's */
    zgc_pdl_trigger();
    int row = blockIdx.x * ZGC_LNF_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    int nv = C / VW;
    const V *xv = reinterpret_cast<const V *>(x + (size_t)row * C);
    V r[NV];
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int k = lane + 32 * i;
        if (k < nv) {
            r[i] = xv[k];
#pragma unroll
            for (int e = 0; e < VW; e++) s += zgc_to_f(r[i].v[e]);
        }
    }
    float mu = zgc_warp_sum(s) / C;
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int k = lane + 32 * i;
        if (k < nv)
#pragma unroll
            for (int e = 0; e < VW; e++) {
                float d = zgc_to_f(r[i].v[e]) - mu;
                v += d * d;
            }
    }
    float rs = rsqrtf(zgc_warp_sum(v) / C + 1e-5f);
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(bias);
    V *ov = reinterpret_cast<V *>(out + (size_t)row * C);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int k = lane + 32 * i;
        if (k < nv) {
            V ww = wv[k], bb = bv[k], o;
#pragma unroll
            for (int e = 0; e < VW; e++)
                o.v[e] = zgc_from_f<T>((zgc_to_f(r[i].v[e]) - mu) * rs * zgc_to_f(ww.v[e]) + zgc_to_f(bb.v[e]));
            ov[k] = o;
        }
    }
    if (lane == 0 && mean != NULL) mean[row] = mu; /* statistics may be skipped (inference) */
    if (lane == 0 && rstd != NULL) rstd[row] = rs;
}

template <typename T, int NV>
static void zgc_ln_fwd_reg_launch(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                                  const void *b, int N, int C) {
    unsigned blocks = (unsigned)((N + ZGC_LNF_WARPS - 1) / ZGC_LNF_WARPS);
    zgc_launch(be, zgc_layernorm_fwd_reg_kernel<T, NV>, dim3(blocks), dim3(ZGC_LNF_WARPS * 32), 0, 0, (T *)out, mean,
               rstd, (const T *)inp, (const T *)w, (const T *)b, N, C);
}

/* out (N,C) = (x - mean) * rstd * w + bias, the row-group form; mean, rstd may be NULL */
template <typename T>
__global__ void __launch_bounds__(ZGC_LNG_THREADS, 4)
    zgc_layernorm_fwd_grp_kernel(T *__restrict__ out, float *__restrict__ mean, float *__restrict__ rstd,
                                 const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ bias, int N,
                                 int C, int rgw_log2) {
    constexpr int VW = 16 / sizeof(T), NV = ZGC_LNG_NV;
    typedef zgc_vec<T> V;
    __shared__ float red[2][ZGC_LNG_THREADS / 32]; /* [mean | variance][warp] */
    zgc_pdl_wait();                                /* launched with PDL (zgc_launch): x is the previous kernel's */
    zgc_pdl_trigger();
    int rg = 32 << rgw_log2, groups = ZGC_LNG_THREADS >> (5 + rgw_log2);
    int g = threadIdx.x >> (5 + rgw_log2), t = threadIdx.x & (rg - 1);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, w0 = g << rgw_log2, nw = 1 << rgw_log2;
    int nv = C / VW;
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(bias);
    V cur[NV], nxt[NV], nxt2[NV]; /* this row, the group's next and the one after (two rows ahead) */
    int stride = gridDim.x * groups;
    int row = blockIdx.x * groups + g;
#pragma unroll
    for (int a = 0; a < 2; a++)
        if (row + a * stride < N) {
            const V *xv = reinterpret_cast<const V *>(x + (size_t)(row + a * stride) * C);
#pragma unroll
            for (int i = 0; i < NV; i++)
                if (t + rg * i < nv) (a == 0 ? cur : nxt)[i] = xv[t + rg * i];
        }
    /* the trip count is the block's (r0), so every thread reaches every barrier */
    for (int r0 = blockIdx.x * groups; r0 < N; r0 += stride) {
        row = r0 + g;
        bool act = row < N;
        if (row + 2 * stride < N) {
            const V *xv = reinterpret_cast<const V *>(x + (size_t)(row + 2 * stride) * C);
#pragma unroll
            for (int i = 0; i < NV; i++)
                if (t + rg * i < nv) nxt2[i] = xv[t + rg * i];
        }
        float s = act ? zgc_lng_moment<false>(cur, 0.f, t, rg, nv) : 0.f;
        s = zgc_warp_sum(s);
        if (lane == 0) red[0][warp] = s;
        __syncthreads();
        float mu = zgc_lng_group_sum(red[0], w0, nw) / C;
        float v = act ? zgc_lng_moment<true>(cur, mu, t, rg, nv) : 0.f;
        v = zgc_warp_sum(v);
        if (lane == 0) red[1][warp] = v;
        __syncthreads();
        /* red[0] is rewritten next iteration only after this barrier, which every reader of it passed */
        float rs = rsqrtf(zgc_lng_group_sum(red[1], w0, nw) / C + 1e-5f);
        if (act) {
            V *ov = reinterpret_cast<V *>(out + (size_t)row * C);
#pragma unroll
            for (int i = 0; i < NV; i++) {
                int k = t + rg * i;
                if (k < nv) {
                    V o, ww = wv[k], bb = bv[k]; /* L1 hits: w and b are the same every row */
#pragma unroll
                    for (int e = 0; e < VW; e++)
                        o.v[e] =
                            zgc_from_f<T>((zgc_to_f(cur[i].v[e]) - mu) * rs * zgc_to_f(ww.v[e]) + zgc_to_f(bb.v[e]));
                    ov[k] = o;
                }
            }
            if (t == 0 && mean != NULL) mean[row] = mu;
            if (t == 0 && rstd != NULL) rstd[row] = rs;
        }
#pragma unroll
        for (int i = 0; i < NV; i++) cur[i] = nxt[i], nxt[i] = nxt2[i];
    }
}

template <typename T>
static void zgc_ln_fwd_grp_launch(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                                  const void *b, int N, int C, int rgw_log2) {
    int groups = ZGC_LNG_THREADS >> (5 + rgw_log2);
    int grid = zgc_lng_grid(be, (const void *)zgc_layernorm_fwd_grp_kernel<T>, 0, (N + groups - 1) / groups);
    zgc_launch(be, zgc_layernorm_fwd_grp_kernel<T>, dim3((unsigned)grid), dim3(ZGC_LNG_THREADS), 0, 0, (T *)out, mean,
               rstd, (const T *)inp, (const T *)w, (const T *)b, N, C, rgw_log2);
}

void zgc_layernorm_forward(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                           const void *b, int N, int C) {
    zgc_impl *im = zgc_get(be);
    if (N <= 0) return;
    int vw = (int)(16 / zgc_dtype_bytes(be->act_dtype));
    uintptr_t al = (uintptr_t)out | (uintptr_t)inp | (uintptr_t)w | (uintptr_t)b;
    int nvl = (C / vw + 31) / 32; /* 16-byte vectors per lane */
    int rgw = zgc_lng_rgw_log2(C / vw);
    if (be->param_dtype == be->act_dtype && C % vw == 0 && al % 16 == 0 && rgw >= 0 && C >= vw &&
        zgc_lng_fwd_wanted()) {
        ZGC_DISPATCH(be->act_dtype, T, zgc_ln_fwd_grp_launch<T>(be, out, mean, rstd, inp, w, b, N, C, rgw));
    } else if (be->param_dtype == be->act_dtype && C % vw == 0 && al % 16 == 0 && nvl >= 1 && nvl <= 8) {
        ZGC_DISPATCH(be->act_dtype, T, {
            switch (nvl) {
            case 1: zgc_ln_fwd_reg_launch<T, 1>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 2: zgc_ln_fwd_reg_launch<T, 2>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 3: zgc_ln_fwd_reg_launch<T, 3>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 4: zgc_ln_fwd_reg_launch<T, 4>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 5: zgc_ln_fwd_reg_launch<T, 5>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 6: zgc_ln_fwd_reg_launch<T, 6>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 7: zgc_ln_fwd_reg_launch<T, 7>(be, out, mean, rstd, inp, w, b, N, C); break;
            default: zgc_ln_fwd_reg_launch<T, 8>(be, out, mean, rstd, inp, w, b, N, C); break;
            }
        });
    } else {
        unsigned blocks = (unsigned)((N + 7) / 8);
        ZGC_DISPATCH_ALL(be->act_dtype, TA, TP,
                         (zgc_layernorm_fwd_kernel<TA, TP><<<blocks, 256, 0, im->stream>>>(
                             (TA *)out, mean, rstd, (const TA *)inp, (const TP *)w, (const TP *)b, N, C)));
    }
    ZG_CUDA_LAUNCH_CHECK();
}
