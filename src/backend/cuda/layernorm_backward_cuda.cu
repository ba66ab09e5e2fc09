/* CUDA LayerNorm backward, from the input or from the output (memory_efficient_layernorm), with the column sums of
 * its dinp as given and as left (the projections' bias gradients) where asked for. */
#include "backend/cuda/layernorm.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LayerNorm backward. Each block (ZGC_LN_WARPS warps) takes rows blockIdx.x*W + warp, stepping by
 * gridDim.x*W; each warp accumulates its own dw/db partials in shared memory (lane owns columns
 * c = lane mod 32, so no atomics), then the block sums its warps in order and writes
 * part (gridDim.x, 2C): deterministic. dinp (N,C) += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)),
 * dnorm = dout * w; dw (C) += sum over rows of dout * xhat, db (C) += sum over rows of dout.
 *
 * xhat (the normalized input) comes in one of two forms, chosen per call:
 *  - input form: xhat = (x - mean) * rstd, from the forward's input x (N,C) and its statistics;
 *  - output form (fromy, x == NULL): xhat = (y - b) * invw, invw = 1/w (0 where w == 0), from the
 *    forward's output y (N,C) and the bias b (C); the row means are not used (Apex/Megatron's
 *    memory-efficient LayerNorm: the model keeps y, which the next matmul needs anyway, and need not
 *    keep x). dnorm * xhat = dout * (y - b) exactly (where w == 0, y == b when b is in y's dtype,
 *    as the vector kernels require, so both are 0), so the row sums need no reciprocal; dw and dinp
 *    do. Both forms move the same bytes per row (dout, x or y, dinp read, dinp written; w and b are
 *    C-vectors that stay in L1/L2). */
#define ZGC_LN_WARPS 4

/* 1/w for the output form; 0 where w is exactly 0 (a denormal w counts as 0: this file builds with
 * flush-to-zero): y = b there, the column's input cannot be recovered and its xhat is taken as 0
 * (dw gets 0, dinp only the row terms). Approximate (MUFU.RCP, ~1 ulp of fp32): y is stored in
 * bf16/fp16, whose rounding dominates. */
__device__ __forceinline__ float zgc_ln_invw(float w) { return w != 0.f ? __fdividef(1.f, w) : 0.f; }

/* Scalar fallback (any C, any alignment, parameters in another dtype than activations).
 * src (N,C) is x (input form) or y (fromy); b (C) is read only when fromy; mean only when not. */
template <typename TA, typename TP>
__global__ void zgc_layernorm_bwd_kernel(TA *dinp, float *part, const TA *dout, const TA *src, const TP *w, const TP *b,
                                         const float *mean, const float *rstd, bool fromy, int N, int C) {
    extern __shared__ float sh[]; /* (warps, 2C): dw (C), db (C) per warp */
    for (int c = threadIdx.x; c < ZGC_LN_WARPS * 2 * C; c += blockDim.x) sh[c] = 0.f;
    __syncthreads();
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *mine = sh + (size_t)wid * 2 * C;
    for (int row = blockIdx.x * ZGC_LN_WARPS + wid; row < N; row += gridDim.x * ZGC_LN_WARPS) {
        size_t base = (size_t)row * C;
        float mu = fromy ? 0.f : mean[row], rs = rstd[row];
        float s1 = 0.f, s2 = 0.f;
        /* xhat here from invw in both passes (not dout * (y - b) for s2): with parameters in another
         * dtype than y, y = b is not exact where w = 0, and that column's xhat must be 0 */
        for (int c = lane; c < C; c += 32) {
            float wc = zgc_to_f(w[c]), v = zgc_to_f(src[base + c]);
            float xh = fromy ? (v - zgc_to_f(b[c])) * zgc_ln_invw(wc) : (v - mu) * rs;
            float dn = zgc_to_f(dout[base + c]) * wc;
            s1 += dn;
            s2 += dn * xh;
        }
        s1 = zgc_warp_sum(s1) / C;
        s2 = zgc_warp_sum(s2) / C;
        for (int c = lane; c < C; c += 32) {
            float wc = zgc_to_f(w[c]), v = zgc_to_f(src[base + c]);
            float xh = fromy ? (v - zgc_to_f(b[c])) * zgc_ln_invw(wc) : (v - mu) * rs;
            float d = zgc_to_f(dout[base + c]);
            float dn = d * wc;
            mine[c] += d * xh;
            mine[C + c] += d;
            dinp[base + c] = zgc_from_f<TA>(zgc_to_f(dinp[base + c]) + rs * (dn - s1 - xh * s2));
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < ZGC_LN_WARPS; k++) s += sh[(size_t)k * 2 * C + c];
        part[(size_t)blockIdx.x * 2 * C + c] = s;
    }
}

/* The same as zgc_layernorm_bwd_kernel with 16-byte loads/stores (C a multiple of the vector
 * width, rows, w and b 16-byte aligned, parameters in the activation dtype). Lane owns vectors
 * lane, lane + 32, ... of each row, so its dw/db slots in shared memory are private. fromy is
 * warp-uniform: one branch per vector, not per element. */
template <typename T>
__global__ void zgc_layernorm_bwd_vec_kernel(T *dinp, float *part, const T *dout, const T *src, const T *w, const T *b,
                                             const float *mean, const float *rstd, bool fromy, int N, int C) {
    constexpr int VW = 16 / sizeof(T);
    typedef zgc_vec<T> V;
    extern __shared__ float sh[];
    for (int c = threadIdx.x; c < ZGC_LN_WARPS * 2 * C; c += blockDim.x) sh[c] = 0.f;
    __syncthreads();
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *mine = sh + (size_t)wid * 2 * C;
    int nv = C / VW;
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(b);
    for (int row = blockIdx.x * ZGC_LN_WARPS + wid; row < N; row += gridDim.x * ZGC_LN_WARPS) {
        const V *dv = reinterpret_cast<const V *>(dout + (size_t)row * C);
        const V *xv = reinterpret_cast<const V *>(src + (size_t)row * C);
        V *gv = reinterpret_cast<V *>(dinp + (size_t)row * C);
        float mu = fromy ? 0.f : mean[row], rs = rstd[row];
        float s1 = 0.f, s2 = 0.f;
        for (int k = lane; k < nv; k += 32) {
            V d = dv[k], x = xv[k], ww = wv[k];
            if (fromy) {
                V bb = bv[k];
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float dd = zgc_to_f(d.v[e]);
                    s1 += dd * zgc_to_f(ww.v[e]);
                    s2 += dd * (zgc_to_f(x.v[e]) - zgc_to_f(bb.v[e])); /* = dnorm * xhat */
                }
            } else {
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float dn = zgc_to_f(d.v[e]) * zgc_to_f(ww.v[e]);
                    s1 += dn;
                    s2 += dn * (zgc_to_f(x.v[e]) - mu) * rs;
                }
            }
        }
        s1 = zgc_warp_sum(s1) / C;
        s2 = zgc_warp_sum(s2) / C;
        for (int k = lane; k < nv; k += 32) {
            V d = dv[k], x = xv[k], ww = wv[k], gi = gv[k], go;
            V bb = fromy ? bv[k] : ww; /* ww: a placeholder the input form does not read */
#pragma unroll
            for (int e = 0; e < VW; e++) {
                float wf = zgc_to_f(ww.v[e]), dd = zgc_to_f(d.v[e]);
                float xh =
                    fromy ? (zgc_to_f(x.v[e]) - zgc_to_f(bb.v[e])) * zgc_ln_invw(wf) : (zgc_to_f(x.v[e]) - mu) * rs;
                float dn = dd * wf;
                mine[k * VW + e] += dd * xh;
                mine[C + k * VW + e] += dd;
                go.v[e] = zgc_from_f<T>(zgc_to_f(gi.v[e]) + rs * (dn - s1 - xh * s2));
            }
            gv[k] = go;
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < ZGC_LN_WARPS; k++) s += sh[(size_t)k * 2 * C + c];
        part[(size_t)blockIdx.x * 2 * C + c] = s;
    }
}

/* Register-resident variant: NV = the most 16-byte vectors a lane owns in a row (ceil(C/VW/32)).
 * The row's dout and x (or y) vectors stay in registers between the two passes, so device memory
 * sees each input once. The lane's dw/db partial sums (its columns are the same for every row) stay
 * in registers until the end (SACC = false), or, for wide rows where 2*NV*VW more registers would
 * cut the resident warps (C = 1600: 255 registers, 8 warps per SM), in the warp's own shared-memory
 * slots (SACC = true), laid out [e * nv + k] for vector k, element e so a warp's accesses are
 * consecutive words (no bank conflicts). Each lane owns its slots: no atomics, deterministic.
 * FROMY (a template parameter, so the input form compiles to the same code as before the output
 * form existed) selects the output form: src is y, b (C) is read (one more 16-byte L1 load per
 * vector in each pass), mean is not, and the second pass takes one reciprocal per element (a
 * predicated MUFU.RCP): w's vector is reloaded per row from L1 anyway, and keeping 1/w across rows
 * would cost NV*VW more registers, or, as C floats of shared memory beside the partials, the 4th
 * resident block at C = 1600 (4 x 57.6 KB > 228 KB).
 * Registers (ptxas, sm_90, launch_bounds(128, 4) caps them at 128), input / output form:
 * bf16 C = 1600 (NV 7, SACC) 128 / 128 with 40 / 46 bytes of spill stores and 76 / 88 of spill
 * loads (16-bit halves of the row's vectors parked in L1 between the passes: the input form
 * spilled the same before); bf16 C = 768 (NV 3, register accumulators) 128 / 128, no spills;
 * fp16 NV 7 114 / 119, NV 3 125 / 126, no spills. bf16 converts to fp32 with integer shifts/masks
 * that keep more live values than fp16's conversions. Timed (H200, bf16, B*T = 16384): C = 768
 * 0.051 / 0.052 ms, C = 1600 0.115 / 0.125 ms (the output form's extra per-element instructions:
 * b's conversion, the reciprocal and its zero test). */
template <typename T, int NV, bool SACC, bool FROMY>
__global__ void __launch_bounds__(ZGC_LN_WARPS * 32, 4)
    zgc_layernorm_bwd_reg_kernel(T *dinp, float *part, const T *dout, const T *src, const T *w, const T *b,
                                 const float *mean, const float *rstd, int N, int C) {
    constexpr int VW = 16 / sizeof(T);
    constexpr int NA = SACC ? 1 : NV; /* register accumulators (unused with SACC) */
    typedef zgc_vec<T> V;
    extern __shared__ float sh[]; /* (warps, 2C) */
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    int nv = C / VW;
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(b);
    float *mine = sh + (size_t)wid * 2 * C;
    float dwa[NA][VW], dba[NA][VW];
#pragma unroll
    for (int i = 0; i < NA; i++)
#pragma unroll
        for (int e = 0; e < VW; e++) dwa[i][e] = dba[i][e] = 0.f;
    if (SACC)
        for (int i = 0; i < NV; i++) {
            int k = lane + 32 * i;
            if (k < nv)
                for (int e = 0; e < VW; e++) mine[e * nv + k] = mine[C + e * nv + k] = 0.f;
        }
    for (int row = blockIdx.x * ZGC_LN_WARPS + wid; row < N; row += gridDim.x * ZGC_LN_WARPS) {
        const V *dv = reinterpret_cast<const V *>(dout + (size_t)row * C);
        const V *xv = reinterpret_cast<const V *>(src + (size_t)row * C);
        V *gv = reinterpret_cast<V *>(dinp + (size_t)row * C);
        float mu = FROMY ? 0.f : mean[row], rs = rstd[row];
        V d[NV], x[NV]; /* x: the row of x, or of y with FROMY */
        float s1 = 0.f, s2 = 0.f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int k = lane + 32 * i;
            if (k < nv) {
                d[i] = dv[k];
                x[i] = xv[k];
                V ww = wv[k];
                if (FROMY) {
                    V bb = bv[k];
#pragma unroll
                    for (int e = 0; e < VW; e++) {
                        float dd = zgc_to_f(d[i].v[e]);
                        s1 += dd * zgc_to_f(ww.v[e]);
                        s2 += dd * (zgc_to_f(x[i].v[e]) - zgc_to_f(bb.v[e])); /* = dnorm * xhat */
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < VW; e++) {
                        float dn = zgc_to_f(d[i].v[e]) * zgc_to_f(ww.v[e]);
                        s1 += dn;
                        s2 += dn * (zgc_to_f(x[i].v[e]) - mu) * rs;
                    }
                }
            }
        }
        s1 = zgc_warp_sum(s1) / C;
        s2 = zgc_warp_sum(s2) / C;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int k = lane + 32 * i;
            if (k < nv) {
                V ww = wv[k], gi = gv[k], go;
                V bb = FROMY ? bv[k] : ww; /* ww: a placeholder the input form does not read */
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float xh = FROMY ? (zgc_to_f(x[i].v[e]) - zgc_to_f(bb.v[e])) * zgc_ln_invw(zgc_to_f(ww.v[e]))
                                     : (zgc_to_f(x[i].v[e]) - mu) * rs;
                    float dd = zgc_to_f(d[i].v[e]);
                    if (SACC) {
                        mine[e * nv + k] += dd * xh;
                        mine[C + e * nv + k] += dd;
                    } else {
                        dwa[i][e] += dd * xh;
                        dba[i][e] += dd;
                    }
                    go.v[e] = zgc_from_f<T>(zgc_to_f(gi.v[e]) + rs * (dd * zgc_to_f(ww.v[e]) - s1 - xh * s2));
                }
                gv[k] = go;
            }
        }
    }
    if (!SACC) {
#pragma unroll
        for (int i = 0; i < NA; i++) {
            int k = lane + 32 * i;
            if (k < nv)
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    mine[k * VW + e] = dwa[i][e];
                    mine[C + k * VW + e] = dba[i][e];
                }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
        int cc = c < C ? c : c - C;
        int at = SACC ? (c - cc) + (cc % VW) * nv + cc / VW : c; /* where column c's partial lives */
        float sum = 0.f;
        for (int k = 0; k < ZGC_LN_WARPS; k++) sum += sh[(size_t)k * 2 * C + at];
        part[(size_t)blockIdx.x * 2 * C + c] = sum;
    }
}

/* Launches one wave (the resident blocks), at most nblocks; returns the grid size used. */
template <typename T, int NV, bool FROMY>
static int zgc_ln_bwd_reg_launch_form(zg_backend *be, void *dinp, float *part, const void *dout, const void *src,
                                      const void *w, const void *b, const float *mean, const float *rstd, int N, int C,
                                      int nblocks, size_t smem) {
    constexpr bool SACC = NV >= 4; /* register accumulators would need 2*NV*VW >= 64 more registers */
    if (smem > 48 * 1024)
        ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_layernorm_bwd_reg_kernel<T, NV, SACC, FROMY>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    ZG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, zgc_layernorm_bwd_reg_kernel<T, NV, SACC, FROMY>, ZGC_LN_WARPS * 32, smem));
    int grid = per_sm * zgc_get(be)->num_sms;
    if (grid < 1) grid = 1;
    if (grid > nblocks) grid = nblocks;
    zgc_layernorm_bwd_reg_kernel<T, NV, SACC, FROMY><<<grid, ZGC_LN_WARPS * 32, smem, zgc_get(be)->stream>>>(
        (T *)dinp, part, (const T *)dout, (const T *)src, (const T *)w, (const T *)b, mean, rstd, N, C);
    return grid;
}

/* fromy (run time) -> FROMY (compile time) */
template <typename T, int NV>
static int zgc_ln_bwd_reg_launch(zg_backend *be, void *dinp, float *part, const void *dout, const void *src,
                                 const void *w, const void *b, const float *mean, const float *rstd, bool fromy, int N,
                                 int C, int nblocks, size_t smem) {
    if (fromy)
        return zgc_ln_bwd_reg_launch_form<T, NV, true>(be, dinp, part, dout, src, w, b, mean, rstd, N, C, nblocks,
                                                       smem);
    return zgc_ln_bwd_reg_launch_form<T, NV, false>(be, dinp, part, dout, src, w, b, mean, rstd, N, C, nblocks, smem);
}

/* The row's dout, src and dinp vectors this thread owns -> its slots of a staging area (3 arrays of C),
 * asynchronously (cp.async: no registers held while in flight). Each thread later reads back only what it
 * copied itself, so no barrier is needed, only zgc_cp_wait. The row's statistics (mean: the input form; rstd) go
 * to the thread's own two floats st (each thread copies the values it will read): loaded when the row was
 * processed, they were a dependent global load after the wait, ahead of the row sums (the input form's s2 needs
 * both), which is the input form's 10 us a call at XL B=16 over the output form (v0.37). */
template <typename T, bool FROMY>
__device__ __forceinline__ void zgc_lng_stage_row(T *stage, float *st, const T *dout, const T *src, const T *dinp,
                                                  const float *mean, const float *rstd, int row, int C, int t, int rg,
                                                  int nv) {
    constexpr int VW = 16 / sizeof(T);
    size_t base = (size_t)row * C;
    if (!FROMY) zgc_cp_async4(st, mean + row);
    zgc_cp_async4(st + 1, rstd + row);
#pragma unroll
    for (int i = 0; i < ZGC_LNG_NV; i++) {
        int k = t + rg * i;
        if (k < nv) {
            zgc_cp_async16(stage + k * VW, dout + base + k * VW);
            zgc_cp_async16(stage + C + k * VW, src + base + k * VW);
            zgc_cp_async16(stage + 2 * C + k * VW, dinp + base + k * VW);
        }
    }
}

/* dinp (N,C) += ..., part (gridDim.x, P*C) = this block's dw | db partial sums: the row-group form (see
 * above the forward's). The thread's dw/db partials for its columns stay in registers over all its rows;
 * at the end the block's groups are added in group order (deterministic). SUMS (P = 4): also the column
 * sums of dinp as read and as written (layernorm_backward's dsum_in / dsum_out: the projections' bias
 * gradients), the values exactly those stored. Their running sums live in the group's partials slots in
 * shared memory (each thread only its own columns: no barrier): in registers beside dw's and db's they
 * spilled (ptxas: 64-150 bytes at bf16, the kernel already at 128 registers). FROMY: the output form (src =
 * y, b read, mean not). ASYNC: the group's next row (dout, src, dinp) is copied into shared memory
 * (cp.async, double-buffered) while the current one is processed, so loads stay in flight without
 * holding registers; else each row is loaded when its turn comes (ZGPT_LN=group, for A/B).
 * Dynamic shared memory: [ASYNC: groups x 2 slots x 3 arrays x C of T] then groups x P*C floats (the
 * groups' partials), then [ASYNC: 2 slots x 2 floats a thread: its row's mean and rstd]. */
template <typename T, bool FROMY, bool ASYNC, bool SUMS>
__global__ void __launch_bounds__(ZGC_LNG_THREADS, 2)
    zgc_layernorm_bwd_grp_kernel(T *__restrict__ dinp, float *__restrict__ part, const T *__restrict__ dout,
                                 const T *__restrict__ src, const T *__restrict__ w, const T *__restrict__ b,
                                 const float *__restrict__ mean, const float *__restrict__ rstd, int N, int C,
                                 int rgw_log2) {
    constexpr int VW = 16 / sizeof(T), NV = ZGC_LNG_NV, NB = FROMY ? NV : 1, P = SUMS ? 4 : 2;
    typedef zgc_vec<T> V;
    extern __shared__ __align__(16) float sh_lng[];
    __shared__ float red[2][2][ZGC_LNG_THREADS / 32]; /* [iteration parity][s1 | s2][warp] */
    int rg = 32 << rgw_log2, groups = ZGC_LNG_THREADS >> (5 + rgw_log2);
    int g = threadIdx.x >> (5 + rgw_log2), t = threadIdx.x & (rg - 1);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, w0 = g << rgw_log2, nw = 1 << rgw_log2;
    int nv = C / VW;
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(b);
    V wr[NV], br[NB];
    float dwa[NV][VW], dba[NV][VW];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int k = t + rg * i;
        if (k < nv) {
            wr[i] = wv[k];
            if (FROMY) br[i < NB ? i : 0] = bv[k];
        }
#pragma unroll
        for (int e = 0; e < VW; e++) dwa[i][e] = dba[i][e] = 0.f;
    }
    int stride = gridDim.x * groups, slot = 0;
    T *stage = reinterpret_cast<T *>(sh_lng); /* this group's slots: stage + (g * 2 + slot) * 3C */
    float *psh = sh_lng + (ASYNC ? (size_t)groups * 6 * C * sizeof(T) / sizeof(float) : 0);
    /* SUMS: this group's running sums, dsum_in's at [0, C) and dsum_out's at [C, 2C) (VW floats a vector: 16-byte
     * aligned, as C is a multiple of VW) */
    float *ssh = psh + (size_t)g * P * C + 2 * C;
    /* ASYNC: this thread's copies of its rows' (mean, rstd), a pair per slot */
    float *stsh = psh + (size_t)groups * P * C + threadIdx.x * 4;
    if (SUMS)
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int k = t + rg * i;
            if (k < nv)
#pragma unroll
                for (int e = 0; e < VW; e += 4) {
                    *reinterpret_cast<float4 *>(ssh + k * VW + e) = make_float4(0.f, 0.f, 0.f, 0.f);
                    *reinterpret_cast<float4 *>(ssh + C + k * VW + e) = make_float4(0.f, 0.f, 0.f, 0.f);
                }
        }
    if (ASYNC) {
        if (blockIdx.x * groups + g < N)
            zgc_lng_stage_row<T, FROMY>(stage + (size_t)(g * 2) * 3 * C, stsh, dout, src, dinp, mean, rstd,
                                        blockIdx.x * groups + g, C, t, rg, nv);
        zgc_cp_commit();
    }
    int par = 0;
    for (int r0 = blockIdx.x * groups; r0 < N; r0 += stride, par ^= 1) {
        int row = r0 + g;
        bool act = row < N;
        V d[NV], x[NV], gi[NV];
        float mu = 0.f, rs = 0.f, s1 = 0.f, s2 = 0.f;
        if (ASYNC) {
            /* the next row into the other slot, then wait for this row's copies (all but the newest group) */
            if (row + stride < N)
                zgc_lng_stage_row<T, FROMY>(stage + (size_t)(g * 2 + (slot ^ 1)) * 3 * C, stsh + 2 * (slot ^ 1), dout,
                                            src, dinp, mean, rstd, row + stride, C, t, rg, nv);
            zgc_cp_commit();
            zgc_cp_wait<1>();
        }
        const V *gv = NULL; /* this row's dinp as given */
        if (act) {
            const V *dv, *xv;
            if (ASYNC) {
                dv = reinterpret_cast<const V *>(stage + (size_t)(g * 2 + slot) * 3 * C);
                xv = dv + nv, gv = dv + 2 * nv;
            } else {
                dv = reinterpret_cast<const V *>(dout + (size_t)row * C);
                xv = reinterpret_cast<const V *>(src + (size_t)row * C);
                gv = reinterpret_cast<const V *>(dinp + (size_t)row * C);
            }
            /* all three rows at once: dinp does not depend on the row sums (ASYNC: dinp's is read from the staged
             * copy when it is used, which keeps registers free; the slot is rewritten only in the next iteration) */
#pragma unroll
            for (int i = 0; i < NV; i++) {
                int k = t + rg * i;
                if (k < nv) {
                    d[i] = dv[k], x[i] = xv[k];
                    if (!ASYNC) gi[i] = gv[k];
                }
            }
            if (ASYNC) {
                if (!FROMY) mu = stsh[2 * slot];
                rs = stsh[2 * slot + 1];
            } else {
                if (!FROMY) mu = mean[row];
                rs = rstd[row];
            }
#pragma unroll
            for (int i = 0; i < NV; i++)
                if (t + rg * i < nv)
#pragma unroll
                    for (int e = 0; e < VW; e++) {
                        float dd = zgc_to_f(d[i].v[e]), dn = dd * zgc_to_f(wr[i].v[e]);
                        s1 += dn;
                        /* dnorm * xhat; the output form's = dout * (y - b) exactly (see above) */
                        s2 += FROMY ? dd * (zgc_to_f(x[i].v[e]) - zgc_to_f(br[i < NB ? i : 0].v[e]))
                                    : dn * (zgc_to_f(x[i].v[e]) - mu) * rs;
                    }
        }
        s1 = zgc_warp_sum(s1);
        s2 = zgc_warp_sum(s2);
        if (lane == 0) red[par][0][warp] = s1, red[par][1][warp] = s2;
        __syncthreads();
        /* red[par] is rewritten two iterations on, after the next barrier, which every reader passed */
        s1 = zgc_lng_group_sum(red[par][0], w0, nw) / C;
        s2 = zgc_lng_group_sum(red[par][1], w0, nw) / C;
        if (act) {
            V *go = reinterpret_cast<V *>(dinp + (size_t)row * C);
#pragma unroll
            for (int i = 0; i < NV; i++) {
                int k = t + rg * i;
                if (k < nv) {
                    V o, gin = ASYNC ? gv[k] : gi[i];
#pragma unroll
                    for (int e = 0; e < VW; e++) {
                        float wf = zgc_to_f(wr[i].v[e]), dd = zgc_to_f(d[i].v[e]);
                        float xh = FROMY ? (zgc_to_f(x[i].v[e]) - zgc_to_f(br[i < NB ? i : 0].v[e])) * zgc_ln_invw(wf)
                                         : (zgc_to_f(x[i].v[e]) - mu) * rs;
                        dwa[i][e] += dd * xh;
                        dba[i][e] += dd;
                        o.v[e] = zgc_from_f<T>(zgc_to_f(gin.v[e]) + rs * (dd * wf - s1 - xh * s2));
                    }
                    go[k] = o;
                    if (SUMS)
#pragma unroll
                        for (int e = 0; e < VW; e += 4) {
                            float4 *qi = reinterpret_cast<float4 *>(ssh + k * VW + e), *qo = qi + C / 4;
                            float4 a = *qi, b = *qo;
                            a.x += zgc_to_f(gin.v[e]), a.y += zgc_to_f(gin.v[e + 1]);
                            a.z += zgc_to_f(gin.v[e + 2]), a.w += zgc_to_f(gin.v[e + 3]);
                            b.x += zgc_to_f(o.v[e]), b.y += zgc_to_f(o.v[e + 1]);
                            b.z += zgc_to_f(o.v[e + 2]), b.w += zgc_to_f(o.v[e + 3]);
                            *qi = a, *qo = b;
                        }
                }
            }
        }
        slot ^= 1;
    }
    if (ASYNC) zgc_cp_wait<0>();
    /* the block's partials: groups 1.. through shared memory, added to group 0's in group order */
    float *pb = part + (size_t)blockIdx.x * P * C;
    if (g > 0)
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int k = t + rg * i;
            if (k < nv)
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float *q = psh + (size_t)g * P * C + k * VW + e; /* (SUMS: the sums are there already) */
                    q[0] = dwa[i][e];
                    q[C] = dba[i][e];
                }
        }
    __syncthreads();
    if (g == 0)
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int k = t + rg * i;
            if (k < nv)
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float a = dwa[i][e], c = dba[i][e], si = 0.f, so = 0.f;
                    if (SUMS) si = ssh[k * VW + e], so = ssh[C + k * VW + e];
                    for (int gg = 1; gg < groups; gg++) {
                        const float *q = psh + (size_t)gg * P * C + k * VW + e;
                        a += q[0];
                        c += q[C];
                        if (SUMS) si += q[2 * C], so += q[3 * C];
                    }
                    pb[k * VW + e] = a;
                    pb[C + k * VW + e] = c;
                    if (SUMS) pb[2 * C + k * VW + e] = si, pb[3 * C + k * VW + e] = so;
                }
        }
}

/* Launches one wave of the row-group backward; returns the grid (the partial rows written). */
template <typename T, bool FROMY, bool ASYNC, bool SUMS>
static int zgc_ln_bwd_grp_launch_form(zg_backend *be, void *dinp, const void *dout, const void *src, const void *w,
                                      const void *b, const float *mean, const float *rstd, int N, int C, int rgw_log2,
                                      float **part_out) {
    int groups = ZGC_LNG_THREADS >> (5 + rgw_log2), P = SUMS ? 4 : 2;
    /* partials: at most 32 KB (64 KB with SUMS); staging (ASYNC): at most 48 KB (256 threads x 2 vectors x 3
     * arrays x 2 slots) and 4 KB of the rows' statistics */
    size_t smem = (size_t)groups * P * C * sizeof(float) +
                  (ASYNC ? (size_t)groups * 6 * C * sizeof(T) + ZGC_LNG_THREADS * 4 * sizeof(float) : 0);
    const void *kernel = (const void *)zgc_layernorm_bwd_grp_kernel<T, FROMY, ASYNC, SUMS>;
    if (smem + 1024 > 48 * 1024) /* with the kernel's static shared memory (red), past the default 48 KB */
        ZG_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int grid = zgc_lng_grid(be, kernel, smem, (N + groups - 1) / groups);
    float *part = (float *)zgc_scratch(be, ZGC_SCR_LN, (size_t)grid * P * C * 4, "layernorm-gradient partial sums");
    zgc_layernorm_bwd_grp_kernel<T, FROMY, ASYNC, SUMS><<<grid, ZGC_LNG_THREADS, smem, zgc_get(be)->stream>>>(
        (T *)dinp, part, (const T *)dout, (const T *)src, (const T *)w, (const T *)b, mean, rstd, N, C, rgw_log2);
    *part_out = part;
    return grid;
}

/* the row-group backward for run-time (fromy, async, sums): its forms by FROMY * 4 + ASYNC * 2 + SUMS */
template <typename T>
static int zgc_ln_bwd_grp_launch(zg_backend *be, bool fromy, bool async, bool sums, void *dinp, const void *dout,
                                 const void *src, const void *w, const void *b, const float *mean, const float *rstd,
                                 int N, int C, int rgw_log2, float **part_out) {
    typedef int (*form_fn)(zg_backend *, void *, const void *, const void *, const void *, const void *, const float *,
                           const float *, int, int, int, float **);
    static const form_fn forms[8] = {
        zgc_ln_bwd_grp_launch_form<T, false, false, false>, zgc_ln_bwd_grp_launch_form<T, false, false, true>,
        zgc_ln_bwd_grp_launch_form<T, false, true, false>,  zgc_ln_bwd_grp_launch_form<T, false, true, true>,
        zgc_ln_bwd_grp_launch_form<T, true, false, false>,  zgc_ln_bwd_grp_launch_form<T, true, false, true>,
        zgc_ln_bwd_grp_launch_form<T, true, true, false>,   zgc_ln_bwd_grp_launch_form<T, true, true, true>};
    return forms[(fromy ? 4 : 0) + (async ? 2 : 0) + (sums ? 1 : 0)](be, dinp, dout, src, w, b, mean, rstd, N, C,
                                                                     rgw_log2, part_out);
}

/* dw (C) += sum over blocks of part[:, c]; db likewise. Block (8, 64): 8 columns (a 32-byte sector of
 * each partial row), 64 threads splitting the nblocks partial rows (thread y takes rows y, y+64, ...)
 * into 4 running sums each (rows y + 64*(4i+j) go to sum j), so that at the row-group kernel's 264 rows
 * (GPT-2 XL on 132 SMs) every load of a thread is in flight at once; then the 64 sums of a column meet in
 * a fixed tree in shared memory: a fixed order, so deterministic. C/8 blocks (200 at C = 1600) where 32
 * columns x 32 threads gave C/32 (50) on as many SMs: 7.33 us a call at XL against 7.55-7.94 (ncu, H100,
 * caches flushed; docs/PERFORMANCE.md v0.24). One thread per column summing every row serially was slower
 * still. */
#define ZGC_LN_RED_X 8
#define ZGC_LN_RED_Y 64
/* where the reduction's P sums go: dw, db, then (P = 4) dsum_in, dsum_out; a NULL one is skipped */
template <typename TG> struct zgc_ln_dst { TG *p[4]; };
/* dst.p[q] (C) += sum over blocks of part[:, q*C + c], q < P */
template <typename TG, int P>
__global__ void __launch_bounds__(ZGC_LN_RED_X *ZGC_LN_RED_Y)
    zgc_layernorm_bwd_reduce_kernel(zgc_ln_dst<TG> dst, const float *part, int nblocks, int C) {
    __shared__ float sh[P][ZGC_LN_RED_Y][ZGC_LN_RED_X + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int c = blockIdx.x * ZGC_LN_RED_X + tx;
    float a[P][4];
#pragma unroll
    for (int q = 0; q < P; q++) a[q][0] = a[q][1] = a[q][2] = a[q][3] = 0.f;
    if (c < C)
        for (int k0 = ty; k0 < nblocks; k0 += 4 * ZGC_LN_RED_Y)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int k = k0 + j * ZGC_LN_RED_Y;
                if (k < nblocks)
#pragma unroll
                    for (int q = 0; q < P; q++) a[q][j] += part[(size_t)k * P * C + (size_t)q * C + c];
            }
#pragma unroll
    for (int q = 0; q < P; q++) sh[q][ty][tx] = (a[q][0] + a[q][1]) + (a[q][2] + a[q][3]);
    __syncthreads();
#pragma unroll
    for (int h = ZGC_LN_RED_Y / 2; h > 0; h >>= 1) {
        if (ty < h)
#pragma unroll
            for (int q = 0; q < P; q++) sh[q][ty][tx] += sh[q][ty + h][tx];
        __syncthreads();
    }
    if (ty == 0 && c < C)
#pragma unroll
        for (int q = 0; q < P; q++)
            if (dst.p[q] != NULL) dst.p[q][c] = zgc_from_f<TG>(zgc_to_f(dst.p[q][c]) + sh[q][0][tx]);
}
/* the launch of zgc_layernorm_bwd_reduce_kernel over the nblocks partial rows of 2 (dw, db) or 4 (and dsum_in,
 * dsum_out: sums != 0) sums */
static void zgc_ln_bwd_reduce(zg_backend *be, void *dw, void *db, void *dsum_in, void *dsum_out, int sums,
                              const float *part, int nblocks, int C) {
    dim3 grid((C + ZGC_LN_RED_X - 1) / ZGC_LN_RED_X), block(ZGC_LN_RED_X, ZGC_LN_RED_Y);
    cudaStream_t st = zgc_get(be)->stream;
    ZGC_DISPATCH(be->grad_dtype, TG, {
        zgc_ln_dst<TG> d = {{(TG *)dw, (TG *)db, (TG *)dsum_in, (TG *)dsum_out}};
        if (sums)
            zgc_layernorm_bwd_reduce_kernel<TG, 4><<<grid, block, 0, st>>>(d, part, nblocks, C);
        else
            zgc_layernorm_bwd_reduce_kernel<TG, 2><<<grid, block, 0, st>>>(d, part, nblocks, C);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

/* dsum (C) += column sums of rows (N,C) by a pass of their own (matmul_backward's bias gradient) */
static void zgc_ln_column_sums(zg_backend *be, void *dsum, const void *rows, int N, int C) {
    if (dsum != NULL) zgc_matmul_backward(be, NULL, NULL, dsum, rows, NULL, NULL, NULL, N, 0, C, 0);
}

/* The warp-per-row and generic kernels (where the row-group one does not apply, or ZGPT_LN=warp): dinp, dw, db. */
static void zgc_ln_bwd_warp(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *src,
                            const void *w, const void *b, const float *mean, const float *rstd, bool fromy, int N,
                            int C) {
    zgc_impl *im = zgc_get(be);
    int nblocks = im->num_sms * 4;
    if (nblocks > (N + ZGC_LN_WARPS - 1) / ZGC_LN_WARPS) nblocks = (N + ZGC_LN_WARPS - 1) / ZGC_LN_WARPS;
    if (nblocks < 1) nblocks = 1;
    float *part = (float *)zgc_scratch(be, ZGC_SCR_LN, (size_t)nblocks * 2 * C * 4, "layernorm-gradient partial sums");
    size_t smem = (size_t)ZGC_LN_WARPS * 2 * C * 4;
    int used = nblocks; /* blocks that wrote partial sums */
    size_t vw = 16 / zgc_dtype_bytes(be->act_dtype);
    /* b is read as 16-byte vectors only in the output form (the input form may pass NULL or anything) */
    uintptr_t al = (uintptr_t)dinp | (uintptr_t)dout | (uintptr_t)src | (uintptr_t)w | (fromy ? (uintptr_t)b : 0);
    int nvl = (int)((C / (int)vw + 31) / 32); /* vectors per lane */
    if (be->param_dtype == be->act_dtype && C % vw == 0 && al % 16 == 0 && nvl >= 1 && nvl <= 8) {
        ZGC_DISPATCH(be->act_dtype, T, {
            /* the warp kernel's forms by vectors per lane */
            typedef int (*reg_fn)(zg_backend *, void *, float *, const void *, const void *, const void *, const void *,
                                  const float *, const float *, bool, int, int, int, size_t);
            static const reg_fn forms[8] = {zgc_ln_bwd_reg_launch<T, 1>, zgc_ln_bwd_reg_launch<T, 2>,
                                            zgc_ln_bwd_reg_launch<T, 3>, zgc_ln_bwd_reg_launch<T, 4>,
                                            zgc_ln_bwd_reg_launch<T, 5>, zgc_ln_bwd_reg_launch<T, 6>,
                                            zgc_ln_bwd_reg_launch<T, 7>, zgc_ln_bwd_reg_launch<T, 8>};
            used = forms[nvl - 1](be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem);
        });
    } else if (be->param_dtype == be->act_dtype && C % vw == 0 && al % 16 == 0) {
        ZGC_DISPATCH(be->act_dtype, T, {
            if (smem > 48 * 1024)
                ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_layernorm_bwd_vec_kernel<T>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            zgc_layernorm_bwd_vec_kernel<T><<<nblocks, ZGC_LN_WARPS * 32, smem, im->stream>>>(
                (T *)dinp, part, (const T *)dout, (const T *)src, (const T *)w, (const T *)b, mean, rstd, fromy, N, C);
        });
    } else {
        ZGC_DISPATCH_ALL(be->act_dtype, TA, TP, {
            if (smem > 48 * 1024)
                ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_layernorm_bwd_kernel<TA, TP>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            zgc_layernorm_bwd_kernel<TA, TP><<<nblocks, ZGC_LN_WARPS * 32, smem, im->stream>>>(
                (TA *)dinp, part, (const TA *)dout, (const TA *)src, (const TP *)w, (const TP *)b, mean, rstd, fromy, N,
                C);
        });
    }
    ZG_CUDA_LAUNCH_CHECK();
    zgc_ln_bwd_reduce(be, dw, db, NULL, NULL, 0, part, used, C);
}

/* x (N,C) with mean and rstd (input form), or x == NULL and y (N,C) with b (C) and rstd (output
 * form, mean unused); see the comment above zgc_layernorm_bwd_kernel. */
void zgc_layernorm_backward(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *x,
                            const void *y, const void *w, const void *b, const float *mean, const float *rstd, int N,
                            int C, void *dsum_in, void *dsum_out) {
    bool fromy = x == NULL;
    const void *src = fromy ? y : x; /* (N,C): the rows xhat is computed from */
    zg_layernorm_backward_check(x, y, b, mean);
    size_t vwg = 16 / zgc_dtype_bytes(be->act_dtype);
    uintptr_t alg = (uintptr_t)dinp | (uintptr_t)dout | (uintptr_t)src | (uintptr_t)w | (fromy ? (uintptr_t)b : 0);
    int rgw = zgc_lng_rgw_log2(C / (int)vwg);
    bool group = be->param_dtype == be->act_dtype && C % (int)vwg == 0 && C >= (int)vwg && alg % 16 == 0 && rgw >= 0 &&
                 N > 0 && zgc_lng_wanted();
    /* the sums in the row-group kernel (as it reads and writes dinp), else by passes of their own around the op */
    bool sums =
        group && (dsum_in != NULL || dsum_out != NULL) && zgc_ln_sums_env() != 0 && be->grad_dtype == be->act_dtype;
    if (!sums) zgc_ln_column_sums(be, dsum_in, dinp, N, C);
    if (group) {
        float *part = NULL;
        int used = 0;
        bool async = zgc_lng_async();
        ZGC_DISPATCH(be->act_dtype, T, {
            used =
                zgc_ln_bwd_grp_launch<T>(be, fromy, async, sums, dinp, dout, src, w, b, mean, rstd, N, C, rgw, &part);
        });
        ZG_CUDA_LAUNCH_CHECK();
        zgc_ln_bwd_reduce(be, dw, db, dsum_in, dsum_out, sums, part, used, C);
    } else {
        zgc_ln_bwd_warp(be, dinp, dw, db, dout, src, w, b, mean, rstd, fromy, N, C);
    }
    if (!sums) zgc_ln_column_sums(be, dsum_out, dinp, N, C);
}
