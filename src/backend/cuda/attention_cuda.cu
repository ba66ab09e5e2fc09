/* Fused causal self-attention (FlashAttention-2 style): the (B,NH,T,T) matrix is never stored.
 *
 * Layout: qkv (B,T,3C), row = [q (NH,hs) | k (NH,hs) | v (NH,hs)]; out (B,T,C).
 * stats (B,NH,T) fp32: per-row natural log-sum-exp of the scaled scores (cuDNN's own statistics, so that its
 * forward and backward need no conversion),
 *   lse[r] = ln(sum_j exp(s[r,j])),  s = (q . k) / sqrt(hs).
 * The kernels work in base 2 (exp2 is one instruction): s2 = s log2(e), lse2 = lse log2(e), P = exp2(s2 - lse2);
 * the forward writes lse2 ln(2), the backward reads lse log2(e).
 *
 * Tensor-core path (bf16/fp16, hs = 64 or 128): mma.sync m16n8k16 with fp32 accumulation.
 *   forward:      block = 4 warps = 64 query rows of one (b,h); loop over 64-key tiles up to the
 *                 diagonal; S, online softmax and O stay in registers (P reused as the A operand).
 *   backward dKV: block = 64 keys of one (b,h); loop over query tiles from the diagonal on;
 *                 dV += P^T dO, dK += dS^T Q (each warp owns 16 keys).
 *   backward dQ:  block = 64 queries; loop over key tiles up to the diagonal; dQ += dS K.
 *   Two backward kernels instead of atomics keep the gradients deterministic.
 * Scalar path (fp32 or other head sizes): the same math, one warp per row (tests, fallback). */
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/mma_tiles.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ZGC_LOG2E 1.4426950408889634f
#define ZGC_LN2 0.69314718055994531f
#define ZGC_ATT_BQ 64
#define ZGC_ATT_BK 64
#define ZGC_ATT_THREADS 128

/* The tensor-core kernels use sm_80+ instructions (mma.sync bf16, ldmatrix, cp.async): ZGC_SM80_ONLY
 * (cuda_internal.h) makes them traps in a device pass for an older architecture, and
 * zgc_attention_check_arch() refuses to create the backend (see CMake's CUDA_ARCHITECTURES). */

__global__ void zgc_arch_probe_kernel() {}

int zgc_attention_check_arch(void) {
    cudaFuncAttributes fa;
    ZG_CUDA_CHECK(cudaFuncGetAttributes(&fa, zgc_arch_probe_kernel));
    if (fa.binaryVersion < 80 || fa.ptxVersion < 80)
        return zg_errorf("the CUDA kernels were compiled for sm_%d (PTX %d), below the sm_80 this backend needs: "
                         "configure with -DCMAKE_CUDA_ARCHITECTURES=90 (or the GPU's own) and rebuild",
                         fa.binaryVersion, fa.ptxVersion);
    return 0;
}

size_t zgc_attention_stats_bytes(zg_backend *be, int B, int T, int NH) {
    (void)be;
    return (size_t)B * NH * T * sizeof(float);
}

/* ---- mma helpers (zgc_mma: cuda_internal.h; the ldmatrix loads: mma_tiles.cuh) ----------------- */

/* Asynchronous copy of rows [r0, r0+64) x hs of one head from global (row stride ld elements)
 * into a padded shared tile [64][HS+8]; rows >= T are zero-filled (cp.async with source size 0).
 * 16-byte vectors; the caller commits and waits. */
template <int HS, typename T>
__device__ __forceinline__ void zgc_load_tile_async(T *sh, const T *g, size_t ld, int r0, int T_len) {
    constexpr int VEC = 8, PER_ROW = HS / VEC, LD = HS + 8;
    for (int i = threadIdx.x; i < 64 * PER_ROW; i += ZGC_ATT_THREADS) {
        int r = i / PER_ROW, c = (i % PER_ROW) * VEC;
        bool ok = r0 + r < T_len;
        const T *src = g + (size_t)(ok ? r0 + r : 0) * ld + c;
        uint32_t dst = (uint32_t)__cvta_generic_to_shared(&sh[r * LD + c]);
        int sz = ok ? 16 : 0;
        ZGC_SM80_ONLY(asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(sz)));
    }
}

/* acc[8][4] (16 rows x 64 cols) += A (16 x HS, rows arow0.. of tile Asm) * Bsm^T where Bsm is
 * [64][HS] (row n = column n of the product, k contiguous). */
template <int HS, int LD, typename T>
__device__ __forceinline__ void zgc_mma_abt(float acc[8][4], const uint32_t (*af)[4], const T *Bsm, int lane) {
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk += 2)
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t b[4];
            zgc_ldsm_b_x4<LD>(b, Bsm, j * 8, kk * 16, lane);
            zgc_mma<T>::run(acc[j], af[kk], b[0], b[1]);
            zgc_mma<T>::run(acc[j], af[kk + 1], b[2], b[3]);
        }
}

/* out[HS/8][4] (16 x HS) += P (16 x 64, C fragments in p[8][4], converted to A) * Bsm (64 x HS, row-major) */
template <int HS, int LD, typename T>
__device__ __forceinline__ void zgc_mma_pv(float out[HS / 8][4], const float p[8][4], const T *Bsm, int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t pa[4];
        pa[0] = zgc_mma<T>::pack(p[2 * kk][0], p[2 * kk][1]);
        pa[1] = zgc_mma<T>::pack(p[2 * kk][2], p[2 * kk][3]);
        pa[2] = zgc_mma<T>::pack(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        pa[3] = zgc_mma<T>::pack(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
        for (int dn = 0; dn < HS / 8; dn += 2) {
            uint32_t b[4];
            zgc_ldsm_bt_x4<LD>(b, Bsm, kk * 16, dn * 8, lane);
            zgc_mma<T>::run(out[dn], pa, b[0], b[1]);
            zgc_mma<T>::run(out[dn + 1], pa, b[2], b[3]);
        }
    }
}

/* ---- block order ----------------------------------------------------------------------------- */

/* Block -> (bh, tile rank) for a grid of (B*NH, tiles) blocks, launched in linear order (x fastest).
 * Heads go in groups of ZGC_ATT_GROUP, all tiles of a group's heads together, heaviest tile rank
 * first within the group: the blocks resident at once (~400) then read the Q/K/V/dO rows of a few
 * dozen heads (~0.5 MB each in GPT-2 XL's backward), which stay in L2 for all of their tiles. With
 * tiles outermost (the earlier order) they read ~400 heads', evicted before the next tile came. */
#define ZGC_ATT_GROUP 16
__device__ __forceinline__ void zgc_att_block(int &bh, int &rank) {
    int nbh = (int)gridDim.x, ntiles = (int)gridDim.y;
    int lin = (int)(blockIdx.y * gridDim.x + blockIdx.x);
    int grp = lin / (ZGC_ATT_GROUP * ntiles), r = lin % (ZGC_ATT_GROUP * ntiles);
    int gh = min(ZGC_ATT_GROUP, nbh - grp * ZGC_ATT_GROUP); /* heads in this (maybe last, smaller) group */
    rank = r / gh;
    bh = grp * ZGC_ATT_GROUP + r % gh;
}

/* ---- forward (tensor cores) -------------------------------------------------------------------- */

/* MT m-tiles (16 rows each) per warp share every B fragment loaded from shared memory:
 * acc[MT][8][4] += A[MT] (16 x HS each) * Bsm^T, Bsm [64][HS] (k contiguous). */
template <int HS, int LD, typename T, int MT>
__device__ __forceinline__ void zgc_mma_abt_mt(float (*acc)[8][4], const uint32_t (*af)[HS / 16][4], const T *Bsm,
                                               int lane) {
#pragma unroll
    for (int kk = 0; kk < HS / 16; kk += 2)
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t b[4];
            zgc_ldsm_b_x4<LD>(b, Bsm, j * 8, kk * 16, lane);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                zgc_mma<T>::run(acc[mt][j], af[mt][kk], b[0], b[1]);
                zgc_mma<T>::run(acc[mt][j], af[mt][kk + 1], b[2], b[3]);
            }
        }
}

/* out[MT][HS/8][4] += P[MT] (16 x 64 each, C fragments) * Bsm (64 x HS, row-major) */
template <int HS, int LD, typename T, int MT>
__device__ __forceinline__ void zgc_mma_pv_mt(float (*out)[HS / 8][4], const float (*p)[8][4], const T *Bsm, int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        uint32_t pa[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            pa[mt][0] = zgc_mma<T>::pack(p[mt][2 * kk][0], p[mt][2 * kk][1]);
            pa[mt][1] = zgc_mma<T>::pack(p[mt][2 * kk][2], p[mt][2 * kk][3]);
            pa[mt][2] = zgc_mma<T>::pack(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
            pa[mt][3] = zgc_mma<T>::pack(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dn = 0; dn < HS / 8; dn += 2) {
            uint32_t b[4];
            zgc_ldsm_bt_x4<LD>(b, Bsm, kk * 16, dn * 8, lane);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                zgc_mma<T>::run(out[mt][dn], pa[mt], b[0], b[1]);
                zgc_mma<T>::run(out[mt][dn + 1], pa[mt], b[2], b[3]);
            }
        }
    }
}

/* Forward. Block = 4 warps = BQ = 64*MT query rows (warp w: rows w*16*MT .. +16*MT); key tiles of 64.
 * smem: Q [BQ][HS+8], then two stages of (K [64][HS+8], V [64][HS+8]); K/V of tile kt+1 are copied
 * (cp.async) while tile kt is computed. */
template <typename T, int HS, int MT>
__global__ void __launch_bounds__(ZGC_ATT_THREADS)
    zgc_flash_fwd_kernel(T *out, float *lse, const T *qkv, int NH, int T_len, int C, float scale_log2) {
    constexpr int LD = HS + 8, TILE = 64 * LD, BQ = 64 * MT;
    extern __shared__ __align__(16) unsigned char zgc_smem[];
    T *Qs = reinterpret_cast<T *>(zgc_smem);
    T *KV = Qs + MT * TILE; /* stage s: K at KV + 2*s*TILE, V at KV + (2*s+1)*TILE */
    int nq = (T_len + BQ - 1) / BQ;
    int bh, rank;
    zgc_att_block(bh, rank);
    int qt = nq - 1 - rank; /* heaviest tiles first */
    int b = bh / NH, h = bh % NH;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    size_t ld = (size_t)3 * C;
    const T *qbase = qkv + (size_t)b * T_len * ld + (size_t)h * HS;
    const T *kbase = qbase + C, *vbase = qbase + 2 * C;
    int q0 = qt * BQ;
    int nk = (min(q0 + BQ, T_len) + 63) / 64; /* key tiles up to the last row's diagonal */

#pragma unroll
    for (int mt = 0; mt < MT; mt++) zgc_load_tile_async<HS>(Qs + mt * TILE, qbase, ld, q0 + mt * 64, T_len);
    zgc_load_tile_async<HS>(KV, kbase, ld, 0, T_len);
    zgc_load_tile_async<HS>(KV + TILE, vbase, ld, 0, T_len);
    zgc_cp_commit();

    uint32_t qf[MT][HS / 16][4];
    float o[MT][HS / 8][4];
    float m_r[MT][2], l_r[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int j = 0; j < HS / 8; j++) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
        m_r[mt][0] = m_r[mt][1] = -INFINITY;
        l_r[mt][0] = l_r[mt][1] = 0.f;
    }
    int wrow0 = q0 + warp * 16 * MT; /* first row of this warp */
    int row_a = wrow0 + g;           /* rows of this thread: row_a + mt*16 + {0, 8} */

    for (int kt = 0; kt < nk; kt++) {
        if (kt + 1 < nk) {
            T *nkp = KV + 2 * ((kt + 1) & 1) * TILE;
            zgc_load_tile_async<HS>(nkp, kbase, ld, (kt + 1) * 64, T_len);
            zgc_load_tile_async<HS>(nkp + TILE, vbase, ld, (kt + 1) * 64, T_len);
        }
        zgc_cp_commit();
        zgc_cp_wait<1>();
        __syncthreads();
        if (kt == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kk = 0; kk < HS / 16; kk++)
                    zgc_load_a<LD>(qf[mt][kk], Qs, warp * 16 * MT + mt * 16, kk * 16, lane);
        }
        /* warp-uniform: skip a key tile entirely above this warp's rows */
        if (kt * 64 <= wrow0 + 16 * MT - 1) {
            const T *Ks = KV + 2 * (kt & 1) * TILE, *Vs = Ks + TILE;
            float s[MT][8][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < 8; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
            zgc_mma_abt_mt<HS, LD, T, MT>(s, qf, Ks, lane);
            bool diag = kt * 64 + 63 > wrow0; /* the tile may cross this warp's diagonal */
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                /* the row maximum of the raw scores (scale_log2 > 0 commutes with max); only a tile
                 * that crosses the diagonal is masked (warp-uniform branch: the others skip the index
                 * arithmetic), and the scale goes into the exponent's FFMA below */
                float mx[2] = {-INFINITY, -INFINITY};
                if (diag) {
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int col = kt * 64 + j * 8 + 2 * t + (e & 1);
                            int row = row_a + mt * 16 + (e >> 1) * 8;
                            if (col > row) s[mt][j][e] = -INFINITY;
                            mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][j][e]);
                        }
                } else {
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[mt][j][e]);
                }
                float corr[2];
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                    float mn = fmaxf(m_r[mt][r], mx[r] * scale_log2);
                    corr[r] = exp2f(m_r[mt][r] - mn);
                    m_r[mt][r] = mn;
                    l_r[mt][r] *= corr[r];
                }
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float p = exp2f(fmaf(s[mt][j][e], scale_log2, -m_r[mt][e >> 1]));
                        s[mt][j][e] = p;
                        l_r[mt][e >> 1] += p;
                    }
#pragma unroll
                for (int j = 0; j < HS / 8; j++) {
                    o[mt][j][0] *= corr[0];
                    o[mt][j][1] *= corr[0];
                    o[mt][j][2] *= corr[1];
                    o[mt][j][3] *= corr[1];
                }
            }
            zgc_mma_pv_mt<HS, LD, T, MT>(o, s, Vs, lane);
        }
        __syncthreads(); /* this stage is refilled by the next iteration's copy */
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float l = l_r[mt][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            int row = row_a + mt * 16 + r * 8;
            if (row >= T_len) continue;
            float inv = 1.f / l;
            T *orow = out + ((size_t)b * T_len + row) * C + (size_t)h * HS;
#pragma unroll
            for (int dn = 0; dn < HS / 8; dn++)
                *reinterpret_cast<uint32_t *>(&orow[dn * 8 + 2 * t]) =
                    zgc_mma<T>::pack(o[mt][dn][2 * r] * inv, o[mt][dn][2 * r + 1] * inv);
            if (t == 0) lse[((size_t)bh) * T_len + row] = (m_r[mt][r] + log2f(l)) * ZGC_LN2;
        }
}

/* ---- backward: D = rowsum(dout * out) ---------------------------------------------------------- */

/* D (B,NH,T): one warp per (b, t, h) (any head size, any alignment). */
template <typename T>
__global__ void zgc_att_bwd_d_kernel(float *D, const T *dout, const T *out, int B, int NH, int T_len, int C) {
    int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (w >= B * T_len * NH) return;
    int h = w % NH, bt = w / NH, b = bt / T_len, tt = bt % T_len;
    int hs = C / NH;
    size_t base = (size_t)bt * C + (size_t)h * hs;
    float s = 0.f;
    for (int d = lane; d < hs; d += 32) s += zgc_to_f(dout[base + d]) * zgc_to_f(out[base + d]);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) D[((size_t)b * NH + h) * T_len + tt] = s;
}

/* The same with 16-byte loads: a row of hs elements is 2^lpr_log2 lanes of one 16-byte vector each
 * (hs = 64 in bf16: 8 lanes, 4 rows per warp), reduced with shuffles inside the lane group. The
 * one-warp-per-row kernel reads 2 bytes per lane per load (hs = 64: 4 loads of 64 bytes per row)
 * and leaves most of each warp idle; this one moves the same 2 x (N, C) bytes in full sectors. */
template <typename T>
__global__ void zgc_att_bwd_d_vec_kernel(float *D, const T *dout, const T *out, int B, int NH, int T_len, int C,
                                         int lpr_log2) {
    constexpr int VW = 16 / sizeof(T);
    size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t w = gid >> lpr_log2, rows = (size_t)B * T_len * NH;
    int sub = (int)(gid & ((1u << lpr_log2) - 1));
    int h = (int)(w % NH);
    size_t bt = w / NH;
    float s = 0.f;
    if (w < rows) { /* no early return: every lane takes part in the shuffles */
        size_t off = bt * C + (size_t)h * (C / NH) + (size_t)sub * VW;
        uint4 a = *reinterpret_cast<const uint4 *>(dout + off), o = *reinterpret_cast<const uint4 *>(out + off);
        const T *ae = reinterpret_cast<const T *>(&a), *oe = reinterpret_cast<const T *>(&o);
#pragma unroll
        for (int e = 0; e < VW; e++) s += zgc_to_f(ae[e]) * zgc_to_f(oe[e]);
    }
    for (int m = (1 << lpr_log2) >> 1; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    if (w < rows && sub == 0) D[((bt / T_len) * NH + h) * T_len + bt % T_len] = s;
}

/* ---- backward dK, dV (tensor cores) ----------------------------------------------------------- */

/* smem: K, V [64][HS+8]; two stages of (Q, dO [64][HS+8]); two stages of (lse, D [64]).
 * KEEP: the warp's K and V A fragments (16 keys x HS each, 2*HS/4 registers) are loaded once and
 * kept across the query tiles instead of reloaded from shared memory for every tile. MINB: blocks
 * per SM the registers are budgeted for (launch bounds): 3 caps them at 168, 2 at 255. */
template <typename T, int HS, bool KEEP, int MINB>
__global__ void __launch_bounds__(ZGC_ATT_THREADS, MINB)
    zgc_flash_bwd_dkv_kernel(T *dqkv, const T *qkv, const T *dout, const float *lse, const float *Dg, int NH, int T_len,
                             int C, float scale_log2, float scale) {
    constexpr int LD = HS + 8, TILE = 64 * LD;
    extern __shared__ __align__(16) unsigned char zgc_smem[];
    T *Ks = reinterpret_cast<T *>(zgc_smem);
    T *Vs = Ks + TILE;
    T *QD = Vs + TILE;                                    /* stage s: Q at QD + 2*s*TILE, dO at QD + (2*s+1)*TILE */
    float *LS = reinterpret_cast<float *>(QD + 4 * TILE); /* stage s: lse at LS + 128*s, D at LS + 128*s + 64 */
    int nq = (T_len + ZGC_ATT_BQ - 1) / ZGC_ATT_BQ;
    int bh, kt; /* small kt = most query tiles: heaviest first */
    zgc_att_block(bh, kt);
    int b = bh / NH, h = bh % NH;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    size_t ld = (size_t)3 * C;
    const T *qbase = qkv + (size_t)b * T_len * ld + (size_t)h * HS;
    const T *kbase = qbase + C, *vbase = qbase + 2 * C;
    const T *dobase = dout + (size_t)b * T_len * C + (size_t)h * HS;
    const float *lse_bh = lse + (size_t)bh * T_len, *D_bh = Dg + (size_t)bh * T_len;

    zgc_load_tile_async<HS>(Ks, kbase, ld, kt * ZGC_ATT_BK, T_len);
    zgc_load_tile_async<HS>(Vs, vbase, ld, kt * ZGC_ATT_BK, T_len);
    zgc_load_tile_async<HS>(QD, qbase, ld, kt * ZGC_ATT_BQ, T_len);
    zgc_load_tile_async<HS>(QD + TILE, dobase, (size_t)C, kt * ZGC_ATT_BQ, T_len);
    zgc_cp_commit();
    for (int i = threadIdx.x; i < 64; i += ZGC_ATT_THREADS) {
        int q = kt * ZGC_ATT_BQ + i;
        LS[i] = q < T_len ? lse_bh[q] * ZGC_LOG2E : INFINITY; /* P = 0 for padding rows */
        LS[64 + i] = q < T_len ? D_bh[q] : 0.f;
    }
    float dk[HS / 8][4], dv[HS / 8][4];
#pragma unroll
    for (int j = 0; j < HS / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[j][e] = dv[j][e] = 0.f;
    int key_a = kt * ZGC_ATT_BK + warp * 16 + g; /* keys of this thread: key_a, key_a + 8 */
    uint32_t kf[HS / 16][4], vf[HS / 16][4];     /* without KEEP: reloaded per tile, short-lived */

    for (int qt = kt; qt < nq; qt++) {
        int st_ = (qt - kt) & 1;
        if (qt + 1 < nq) {
            int ns = st_ ^ 1;
            zgc_load_tile_async<HS>(QD + 2 * ns * TILE, qbase, ld, (qt + 1) * ZGC_ATT_BQ, T_len);
            zgc_load_tile_async<HS>(QD + (2 * ns + 1) * TILE, dobase, (size_t)C, (qt + 1) * ZGC_ATT_BQ, T_len);
            for (int i = threadIdx.x; i < 64; i += ZGC_ATT_THREADS) {
                int q = (qt + 1) * ZGC_ATT_BQ + i;
                LS[128 * ns + i] = q < T_len ? lse_bh[q] * ZGC_LOG2E : INFINITY;
                LS[128 * ns + 64 + i] = q < T_len ? D_bh[q] : 0.f;
            }
        }
        zgc_cp_commit();
        zgc_cp_wait<1>();
        __syncthreads();
        const T *Qs = QD + 2 * st_ * TILE, *dOs = Qs + TILE;
        const float *lse_s = LS + 128 * st_, *D_s = lse_s + 64;
        bool load_frags = !KEEP || qt == kt; /* K, V are in shared memory from the first wait on */
        /* S^T (16 keys x 64 queries) = K_w Q^T */
        float st[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.f;
        if (load_frags)
#pragma unroll
            for (int kk = 0; kk < HS / 16; kk++) zgc_load_a<LD>(kf[kk], Ks, warp * 16, kk * 16, lane);
        zgc_mma_abt<HS, LD, T>(st, kf, Qs, lane);
        /* P^T = exp2(S^T * scale_log2 - lse[q]), causal: query >= key, which only the diagonal tile
         * (qt == kt, block-uniform) can violate: the other tiles skip the index arithmetic */
        if (qt == kt) {
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int qi = j * 8 + 2 * t + (e & 1);
                    int key = key_a + (e >> 1) * 8;
                    float p = exp2f(st[j][e] * scale_log2 - lse_s[qi]);
                    st[j][e] = (qt * ZGC_ATT_BQ + qi >= key) ? p : 0.f;
                }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[j][e] = exp2f(st[j][e] * scale_log2 - lse_s[j * 8 + 2 * t + (e & 1)]);
        }
        /* dV += P^T dO */
        zgc_mma_pv<HS, LD, T>(dv, st, dOs, lane);
        /* dP^T (16 keys x 64 queries) = V_w dO^T */
        float dpt[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.f;
        if (load_frags)
#pragma unroll
            for (int kk = 0; kk < HS / 16; kk++) zgc_load_a<LD>(vf[kk], Vs, warp * 16, kk * 16, lane);
        zgc_mma_abt<HS, LD, T>(dpt, vf, dOs, lane);
        /* dS^T = P^T (dP^T - D[q]); dK += dS^T Q */
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int qi = j * 8 + 2 * t + (e & 1);
                st[j][e] = st[j][e] * (dpt[j][e] - D_s[qi]);
            }
        zgc_mma_pv<HS, LD, T>(dk, st, Qs, lane);
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int key = key_a + r * 8;
        if (key >= T_len) continue;
        T *row = dqkv + ((size_t)b * T_len + key) * ld + (size_t)h * HS;
#pragma unroll
        for (int dn = 0; dn < HS / 8; dn++) {
            *reinterpret_cast<uint32_t *>(&row[C + dn * 8 + 2 * t]) =
                zgc_mma<T>::pack(dk[dn][2 * r] * scale, dk[dn][2 * r + 1] * scale);
            *reinterpret_cast<uint32_t *>(&row[2 * C + dn * 8 + 2 * t]) =
                zgc_mma<T>::pack(dv[dn][2 * r], dv[dn][2 * r + 1]);
        }
    }
}

/* ---- backward dQ (tensor cores) ------------------------------------------------------------------ */

/* smem: Q, dO [64][HS+8]; two stages of (K, V [64][HS+8]). KEEP, MINB: as for the dK/dV kernel,
 * for the warp's Q and dO fragments. */
template <typename T, int HS, bool KEEP, int MINB>
__global__ void __launch_bounds__(ZGC_ATT_THREADS, MINB)
    zgc_flash_bwd_dq_kernel(T *dqkv, const T *qkv, const T *dout, const float *lse, const float *Dg, int NH, int T_len,
                            int C, float scale_log2, float scale) {
    constexpr int LD = HS + 8, TILE = 64 * LD;
    extern __shared__ __align__(16) unsigned char zgc_smem[];
    T *Qs = reinterpret_cast<T *>(zgc_smem);
    T *dOs = Qs + TILE;
    T *KV = dOs + TILE;
    int nq = (T_len + ZGC_ATT_BQ - 1) / ZGC_ATT_BQ;
    int bh, rank;
    zgc_att_block(bh, rank);
    int qt = nq - 1 - rank;
    int b = bh / NH, h = bh % NH;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    size_t ld = (size_t)3 * C;
    const T *qbase = qkv + (size_t)b * T_len * ld + (size_t)h * HS;
    const T *kbase = qbase + C, *vbase = qbase + 2 * C;
    const T *dobase = dout + (size_t)b * T_len * C + (size_t)h * HS;
    int row_a = qt * ZGC_ATT_BQ + warp * 16 + g;
    float lse_r[2], D_r[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int q = row_a + 8 * r;
        lse_r[r] = q < T_len ? lse[(size_t)bh * T_len + q] * ZGC_LOG2E : INFINITY;
        D_r[r] = q < T_len ? Dg[(size_t)bh * T_len + q] : 0.f;
    }
    zgc_load_tile_async<HS>(Qs, qbase, ld, qt * ZGC_ATT_BQ, T_len);
    zgc_load_tile_async<HS>(dOs, dobase, (size_t)C, qt * ZGC_ATT_BQ, T_len);
    zgc_load_tile_async<HS>(KV, kbase, ld, 0, T_len);
    zgc_load_tile_async<HS>(KV + TILE, vbase, ld, 0, T_len);
    zgc_cp_commit();
    float dq[HS / 8][4];
#pragma unroll
    for (int j = 0; j < HS / 8; j++) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.f;
    uint32_t qf[HS / 16][4], dof[HS / 16][4];

    for (int kt = 0; kt <= qt; kt++) {
        if (kt + 1 <= qt) {
            T *nk = KV + 2 * ((kt + 1) & 1) * TILE;
            zgc_load_tile_async<HS>(nk, kbase, ld, (kt + 1) * ZGC_ATT_BK, T_len);
            zgc_load_tile_async<HS>(nk + TILE, vbase, ld, (kt + 1) * ZGC_ATT_BK, T_len);
        }
        zgc_cp_commit();
        zgc_cp_wait<1>();
        __syncthreads();
        const T *Ks = KV + 2 * (kt & 1) * TILE, *Vs = Ks + TILE;
        bool load_frags = !KEEP || kt == 0;
        float s[8][4], dp[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
            dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.f;
        }
        if (load_frags)
#pragma unroll
            for (int kk = 0; kk < HS / 16; kk++) zgc_load_a<LD>(qf[kk], Qs, warp * 16, kk * 16, lane);
        zgc_mma_abt<HS, LD, T>(s, qf, Ks, lane);
        if (load_frags)
#pragma unroll
            for (int kk = 0; kk < HS / 16; kk++) zgc_load_a<LD>(dof[kk], dOs, warp * 16, kk * 16, lane);
        zgc_mma_abt<HS, LD, T>(dp, dof, Vs, lane);
        if (kt == qt) { /* the diagonal tile (block-uniform): the only one with keys after a query */
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int key = kt * ZGC_ATT_BK + j * 8 + 2 * t + (e & 1);
                    int row = row_a + (e >> 1) * 8;
                    float p = exp2f(s[j][e] * scale_log2 - lse_r[e >> 1]);
                    if (key > row) p = 0.f;
                    s[j][e] = p * (dp[j][e] - D_r[e >> 1]); /* dS */
                }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[j][e] = exp2f(s[j][e] * scale_log2 - lse_r[e >> 1]) * (dp[j][e] - D_r[e >> 1]);
        }
        zgc_mma_pv<HS, LD, T>(dq, s, Ks, lane);
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = row_a + r * 8;
        if (row >= T_len) continue;
        T *qrow = dqkv + ((size_t)b * T_len + row) * ld + (size_t)h * HS;
#pragma unroll
        for (int dn = 0; dn < HS / 8; dn++)
            *reinterpret_cast<uint32_t *>(&qrow[dn * 8 + 2 * t]) =
                zgc_mma<T>::pack(dq[dn][2 * r] * scale, dq[dn][2 * r + 1] * scale);
    }
}

/* ---- scalar path (fp32, any head size <= 256) ---------------------------------------------------- */

#define ZGC_SC_MAXD 8 /* hs <= 32 * 8 */

/* One warp per (b, h, query row): online softmax over keys 0..row. */
template <typename T>
__global__ void zgc_att_fwd_scalar_kernel(T *out, float *lse, const T *qkv, int B, int NH, int T_len, int C,
                                          float scale_log2) {
    int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (w >= B * NH * T_len) return;
    int row = w % T_len, bh = w / T_len, b = bh / NH, h = bh % NH;
    int hs = C / NH;
    size_t ld = (size_t)3 * C;
    const T *base = qkv + (size_t)b * T_len * ld + (size_t)h * hs;
    float q[ZGC_SC_MAXD], o[ZGC_SC_MAXD];
#pragma unroll
    for (int i = 0; i < ZGC_SC_MAXD; i++) {
        int d = lane + 32 * i;
        q[i] = d < hs ? zgc_to_f(base[(size_t)row * ld + d]) : 0.f;
        o[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int j = 0; j <= row; j++) {
        const T *k = base + (size_t)j * ld + C;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < ZGC_SC_MAXD; i++) {
            int d = lane + 32 * i;
            if (d < hs) s += q[i] * zgc_to_f(k[d]);
        }
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        s *= scale_log2;
        float mn = fmaxf(m, s), corr = exp2f(m - mn), p = exp2f(s - mn);
        l = l * corr + p;
        m = mn;
        const T *v = base + (size_t)j * ld + 2 * C;
#pragma unroll
        for (int i = 0; i < ZGC_SC_MAXD; i++) {
            int d = lane + 32 * i;
            o[i] = o[i] * corr + (d < hs ? p * zgc_to_f(v[d]) : 0.f);
        }
    }
    T *orow = out + ((size_t)b * T_len + row) * C + (size_t)h * hs;
#pragma unroll
    for (int i = 0; i < ZGC_SC_MAXD; i++) {
        int d = lane + 32 * i;
        if (d < hs) orow[d] = zgc_from_f<T>(o[i] / l);
    }
    if (lane == 0) lse[(size_t)bh * T_len + row] = (m + log2f(l)) * ZGC_LN2;
}

/* One warp per (b, h, row). mode 0: row is a query, dq = scale * sum_j dS[row,j] k_j.
 * mode 1: row is a key, dk = scale * sum_{q>=row} dS[q,row] q_q, dv = sum_q P[q,row] dO_q. */
template <typename T>
__global__ void zgc_att_bwd_scalar_kernel(T *dqkv, const T *qkv, const T *dout, const float *lse, const float *Dg,
                                          int B, int NH, int T_len, int C, float scale_log2, float scale, int mode) {
    int w = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (w >= B * NH * T_len) return;
    int row = w % T_len, bh = w / T_len, b = bh / NH, h = bh % NH;
    int hs = C / NH;
    size_t ld = (size_t)3 * C;
    const T *base = qkv + (size_t)b * T_len * ld + (size_t)h * hs;
    const T *dob = dout + (size_t)b * T_len * C + (size_t)h * hs;
    float x[ZGC_SC_MAXD], y[ZGC_SC_MAXD], acc1[ZGC_SC_MAXD], acc2[ZGC_SC_MAXD];
    /* mode 0: x = q_row, y = dO_row; mode 1: x = k_row, y = v_row */
#pragma unroll
    for (int i = 0; i < ZGC_SC_MAXD; i++) {
        int d = lane + 32 * i;
        bool ok = d < hs;
        x[i] = ok ? zgc_to_f(base[(size_t)row * ld + (mode ? C : 0) + d]) : 0.f;
        y[i] = ok ? (mode ? zgc_to_f(base[(size_t)row * ld + 2 * C + d]) : zgc_to_f(dob[(size_t)row * C + d])) : 0.f;
        acc1[i] = acc2[i] = 0.f;
    }
    int j0 = mode ? row : 0, j1 = mode ? T_len - 1 : row;
    for (int j = j0; j <= j1; j++) {
        /* the partner row j: mode 0 -> key j (k_j, v_j); mode 1 -> query j (q_j, dO_j) */
        float s = 0.f, dp = 0.f;
#pragma unroll
        for (int i = 0; i < ZGC_SC_MAXD; i++) {
            int d = lane + 32 * i;
            if (d >= hs) continue;
            if (mode == 0) {
                s += x[i] * zgc_to_f(base[(size_t)j * ld + C + d]);
                dp += y[i] * zgc_to_f(base[(size_t)j * ld + 2 * C + d]);
            } else {
                s += x[i] * zgc_to_f(base[(size_t)j * ld + d]);
                dp += y[i] * zgc_to_f(dob[(size_t)j * C + d]);
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            s += __shfl_xor_sync(0xffffffffu, s, off);
            dp += __shfl_xor_sync(0xffffffffu, dp, off);
        }
        int qrow = mode ? j : row;
        float p = exp2f(s * scale_log2 - lse[(size_t)bh * T_len + qrow] * ZGC_LOG2E);
        float ds = p * (dp - Dg[(size_t)bh * T_len + qrow]);
#pragma unroll
        for (int i = 0; i < ZGC_SC_MAXD; i++) {
            int d = lane + 32 * i;
            if (d >= hs) continue;
            if (mode == 0) {
                acc1[i] += ds * zgc_to_f(base[(size_t)j * ld + C + d]);
            } else {
                acc1[i] += ds * zgc_to_f(base[(size_t)j * ld + d]);
                acc2[i] += p * zgc_to_f(dob[(size_t)j * C + d]);
            }
        }
    }
    T *r = dqkv + ((size_t)b * T_len + row) * ld + (size_t)h * hs;
#pragma unroll
    for (int i = 0; i < ZGC_SC_MAXD; i++) {
        int d = lane + 32 * i;
        if (d >= hs) continue;
        if (mode == 0) {
            r[d] = zgc_from_f<T>(acc1[i] * scale);
        } else {
            r[C + d] = zgc_from_f<T>(acc1[i] * scale);
            r[2 * C + d] = zgc_from_f<T>(acc2[i]);
        }
    }
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

/* The tensor-core kernels need 16-byte aligned rows (16-byte vector loads). */
static int zgc_att_use_mma(zg_backend *be, int hs, const void *p0, const void *p1, const void *p2) {
    uintptr_t a = (uintptr_t)p0 | (uintptr_t)p1 | (uintptr_t)p2;
    return be->act_dtype != ZG_F32 && (hs == 64 || hs == 128) && (a % 16) == 0;
}

template <typename T, int HS, int MT>
static void zgc_flash_fwd_launch_mt(zg_backend *be, void *out, float *lse, const void *qkv, int B, int T_len, int C,
                                    int NH, float scale_log2) {
    zgc_impl *im = zgc_get(be);
    size_t smem = (size_t)(MT + 4) * 64 * (HS + 8) * sizeof(T);
    ZG_CUDA_CHECK(
        cudaFuncSetAttribute(zgc_flash_fwd_kernel<T, HS, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid((unsigned)(B * NH), (unsigned)((T_len + 64 * MT - 1) / (64 * MT)));
    zgc_flash_fwd_kernel<T, HS, MT>
        <<<grid, ZGC_ATT_THREADS, smem, im->stream>>>((T *)out, lse, (const T *)qkv, NH, T_len, C, scale_log2);
    ZG_CUDA_LAUNCH_CHECK();
}

/* hs 64: 32 rows per warp (MT=2) by default; ZGPT_ATTN_FWD_MT=1 selects 16 (a tuning knob). */
template <typename T, int HS>
static void zgc_flash_fwd_launch(zg_backend *be, void *out, float *lse, const void *qkv, int B, int T_len, int C,
                                 int NH, float scale_log2) {
    const char *mt = getenv("ZGPT_ATTN_FWD_MT");
    if (HS <= 64 && !(mt != NULL && mt[0] == '1'))
        zgc_flash_fwd_launch_mt<T, HS, 2>(be, out, lse, qkv, B, T_len, C, NH, scale_log2);
    else
        zgc_flash_fwd_launch_mt<T, HS, 1>(be, out, lse, qkv, B, T_len, C, NH, scale_log2);
}

template <typename T, int HS, bool KEEP, int MINB>
static void zgc_flash_bwd_dkv_launch(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const float *lse,
                                     const float *D, int B, int T_len, int C, int NH, float scale_log2, float scale) {
    dim3 grid((unsigned)(B * NH), (unsigned)((T_len + ZGC_ATT_BQ - 1) / ZGC_ATT_BQ));
    size_t smem = (size_t)6 * 64 * (HS + 8) * sizeof(T) + 4 * 64 * sizeof(float);
    ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_flash_bwd_dkv_kernel<T, HS, KEEP, MINB>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    zgc_flash_bwd_dkv_kernel<T, HS, KEEP, MINB><<<grid, ZGC_ATT_THREADS, smem, zgc_get(be)->stream>>>(
        (T *)dqkv, (const T *)qkv, (const T *)dout, lse, D, NH, T_len, C, scale_log2, scale);
    ZG_CUDA_LAUNCH_CHECK();
}

template <typename T, int HS, bool KEEP, int MINB>
static void zgc_flash_bwd_dq_launch(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const float *lse,
                                    const float *D, int B, int T_len, int C, int NH, float scale_log2, float scale) {
    dim3 grid((unsigned)(B * NH), (unsigned)((T_len + ZGC_ATT_BQ - 1) / ZGC_ATT_BQ));
    size_t smem = (size_t)6 * 64 * (HS + 8) * sizeof(T);
    ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_flash_bwd_dq_kernel<T, HS, KEEP, MINB>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    zgc_flash_bwd_dq_kernel<T, HS, KEEP, MINB><<<grid, ZGC_ATT_THREADS, smem, zgc_get(be)->stream>>>(
        (T *)dqkv, (const T *)qkv, (const T *)dout, lse, D, NH, T_len, C, scale_log2, scale);
    ZG_CUDA_LAUNCH_CHECK();
}

/* The backward kernels' variant for hs = 64, one letter per kernel (dK/dV, then dQ), from the tuning
 * knob ZGPT_ATTN_BWD (e.g. "bb"): 'a' = fragments reloaded per tile, 3 blocks per SM (the v0.5
 * kernels), 'b' = fragments kept, 3 blocks per SM, 'c' = fragments kept, 2 blocks per SM, 'd' =
 * fragments reloaded, 2 blocks per SM. All give bitwise the same gradients (the same products in the
 * same order). hs = 128 reloads with 1 block per SM (its accumulators alone need most of the registers). */
#define ZGC_ATT_BWD_DEFAULT "bb"
static char zgc_att_bwd_variant(int which) {
    const char *v = getenv("ZGPT_ATTN_BWD");
    if (v == NULL || strlen(v) != 2) v = ZGC_ATT_BWD_DEFAULT;
    char c = v[which];
    return (c >= 'a' && c <= 'd') ? c : ZGC_ATT_BWD_DEFAULT[which];
}

template <typename T, int HS>
static void zgc_flash_bwd_launch(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const float *lse,
                                 const float *D, int B, int T_len, int C, int NH, float scale_log2, float scale) {
    if constexpr (HS > 64) {
        zgc_flash_bwd_dkv_launch<T, HS, false, 1>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
        zgc_flash_bwd_dq_launch<T, HS, false, 1>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
    } else {
        switch (zgc_att_bwd_variant(0)) {
        case 'a':
            zgc_flash_bwd_dkv_launch<T, HS, false, 3>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        case 'b':
            zgc_flash_bwd_dkv_launch<T, HS, true, 3>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        case 'c':
            zgc_flash_bwd_dkv_launch<T, HS, true, 2>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        default:
            zgc_flash_bwd_dkv_launch<T, HS, false, 2>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        }
        switch (zgc_att_bwd_variant(1)) {
        case 'a':
            zgc_flash_bwd_dq_launch<T, HS, false, 3>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        case 'b':
            zgc_flash_bwd_dq_launch<T, HS, true, 3>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        case 'c':
            zgc_flash_bwd_dq_launch<T, HS, true, 2>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        default:
            zgc_flash_bwd_dq_launch<T, HS, false, 2>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            break;
        }
    }
}

static void zgc_att_check_shape(int C, int NH) {
    if (NH <= 0 || C % NH != 0) ZG_FATAL("attention: C=%d is not a multiple of NH=%d", C, NH);
    if (C / NH > 32 * ZGC_SC_MAXD) ZG_FATAL("attention: head size %d > %d is not supported", C / NH, 32 * ZGC_SC_MAXD);
}

void zgc_attention_forward(zg_backend *be, void *out, void *stats, const void *qkv, int B, int T_len, int C, int NH) {
    zgc_impl *im = zgc_get(be);
    zgc_att_check_shape(C, NH);
    int hs = C / NH;
    float scale_log2 = ZGC_LOG2E / sqrtf((float)hs);
    float *lse = (float *)stats;
    if (zgc_attention_cudnn_forward(be, out, lse, qkv, B, T_len, C, NH)) return;
    if (zgc_att_use_mma(be, hs, out, qkv, qkv)) {
        if (be->act_dtype == ZG_BF16) {
            if (hs == 64)
                zgc_flash_fwd_launch<__nv_bfloat16, 64>(be, out, lse, qkv, B, T_len, C, NH, scale_log2);
            else
                zgc_flash_fwd_launch<__nv_bfloat16, 128>(be, out, lse, qkv, B, T_len, C, NH, scale_log2);
        } else {
            if (hs == 64)
                zgc_flash_fwd_launch<__half, 64>(be, out, lse, qkv, B, T_len, C, NH, scale_log2);
            else
                zgc_flash_fwd_launch<__half, 128>(be, out, lse, qkv, B, T_len, C, NH, scale_log2);
        }
        return;
    }
    size_t rows = (size_t)B * NH * T_len;
    unsigned blocks = (unsigned)((rows + 7) / 8);
    ZGC_DISPATCH(be->act_dtype, T,
                 (zgc_att_fwd_scalar_kernel<T>
                  <<<blocks, 256, 0, im->stream>>>((T *)out, lse, (const T *)qkv, B, NH, T_len, C, scale_log2)));
    ZG_CUDA_LAUNCH_CHECK();
}

void zgc_attention_backward(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                            const void *stats, int B, int T_len, int C, int NH) {
    zgc_impl *im = zgc_get(be);
    zgc_att_check_shape(C, NH);
    int hs = C / NH;
    float scale = 1.f / sqrtf((float)hs), scale_log2 = ZGC_LOG2E * scale;
    const float *lse = (const float *)stats;
    if (zgc_attention_cudnn_backward(be, dqkv, dout, qkv, out, lse, B, T_len, C, NH)) return;
    size_t rows = (size_t)B * NH * T_len;
    float *D = (float *)zgc_scratch(be, ZGC_SCR_ATT_D, rows * 4, "attention backward row sums");
    size_t vw = 16 / zg_dtype_size(be->act_dtype);
    int lpr_log2 = -1; /* lanes per row for the 16-byte kernel: hs / vw, a power of two <= 32 */
    for (int l = 0; l <= 5; l++)
        if ((size_t)hs == vw << l) lpr_log2 = l;
    if (lpr_log2 >= 0 && C % (int)vw == 0 && (((uintptr_t)dout | (uintptr_t)out) % 16) == 0) {
        size_t threads = rows << lpr_log2;
        ZGC_DISPATCH(be->act_dtype, T,
                     (zgc_att_bwd_d_vec_kernel<T><<<(unsigned)((threads + 255) / 256), 256, 0, im->stream>>>(
                         D, (const T *)dout, (const T *)out, B, NH, T_len, C, lpr_log2)));
    } else {
        ZGC_DISPATCH(be->act_dtype, T,
                     (zgc_att_bwd_d_kernel<T><<<(unsigned)((rows + 7) / 8), 256, 0, im->stream>>>(
                         D, (const T *)dout, (const T *)out, B, NH, T_len, C)));
    }
    ZG_CUDA_LAUNCH_CHECK();
    if (zgc_att_use_mma(be, hs, dqkv, dout, qkv)) {
        if (be->act_dtype == ZG_BF16) {
            if (hs == 64)
                zgc_flash_bwd_launch<__nv_bfloat16, 64>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2,
                                                        scale);
            else
                zgc_flash_bwd_launch<__nv_bfloat16, 128>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2,
                                                         scale);
        } else {
            if (hs == 64)
                zgc_flash_bwd_launch<__half, 64>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
            else
                zgc_flash_bwd_launch<__half, 128>(be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
        }
        return;
    }
    unsigned blocks = (unsigned)((rows + 7) / 8);
    for (int mode = 0; mode < 2; mode++) {
        ZGC_DISPATCH(be->act_dtype, T,
                     (zgc_att_bwd_scalar_kernel<T><<<blocks, 256, 0, im->stream>>>((T *)dqkv, (const T *)qkv,
                                                                                   (const T *)dout, lse, D, B, NH,
                                                                                   T_len, C, scale_log2, scale, mode)));
        ZG_CUDA_LAUNCH_CHECK();
    }
}

/* ---- KV-cache attention (sampling) ------------------------------------------------------------- */

/* k, v of the Tn new positions -> kcache/vcache (B,NH,maxT,hs) at pos.. */
template <typename T>
__global__ void zgc_kv_append_kernel(T *kc, T *vc, const T *qkv, int B, int Tn, int pos, int maxT, int C, int NH) {
    int hs = C / NH;
    size_t n = (size_t)B * Tn * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % C);
        int bt = (int)(i / C), b = bt / Tn, tn = bt % Tn;
        int h = c / hs, d = c % hs;
        size_t src = (size_t)bt * 3 * C + c;
        size_t dst = (((size_t)b * NH + h) * maxT + pos + tn) * hs + d;
        kc[dst] = qkv[src + C];
        vc[dst] = qkv[src + 2 * C];
    }
}

/* One block per (b, h, new position i): scores over keys 0..pos+i in shared memory. */
template <typename T>
__global__ void zgc_att_cached_kernel(T *out, const T *qkv, const T *kc, const T *vc, int Tn, int pos, int maxT, int C,
                                      int NH, float scale) {
    extern __shared__ float sc[]; /* (pos + Tn) scores, then reduction scratch */
    __shared__ float red[32];
    int i = blockIdx.x % Tn, bh = blockIdx.x / Tn, b = bh / NH, h = bh % NH;
    int hs = C / NH, L = pos + i + 1;
    const T *q = qkv + ((size_t)b * Tn + i) * 3 * C + (size_t)h * hs;
    const T *kb = kc + (size_t)bh * maxT * hs, *vb = vc + (size_t)bh * maxT * hs;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        float s = 0.f;
        for (int d = 0; d < hs; d++) s += zgc_to_f(q[d]) * zgc_to_f(kb[(size_t)j * hs + d]);
        sc[j] = s * scale;
    }
    __syncthreads();
    float m = -INFINITY;
    for (int j = threadIdx.x; j < L; j += blockDim.x) m = fmaxf(m, sc[j]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
    __syncthreads();
    m = -INFINITY;
    for (int k = 0; k < (int)(blockDim.x / 32); k++) m = fmaxf(m, red[k]);
    __syncthreads();
    float s = 0.f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        float p = __expf(sc[j] - m);
        sc[j] = p;
        s += p;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
    __syncthreads();
    s = 0.f;
    for (int k = 0; k < (int)(blockDim.x / 32); k++) s += red[k];
    float inv = 1.f / s;
    T *o = out + ((size_t)b * Tn + i) * C + (size_t)h * hs;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < L; j++) acc += sc[j] * zgc_to_f(vb[(size_t)j * hs + d]);
        o[d] = zgc_from_f<T>(acc * inv);
    }
}

void zgc_attention_forward_cached(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, int B, int Tn,
                                  int pos, int maxT, int C, int NH) {
    zgc_impl *im = zgc_get(be);
    zgc_att_check_shape(C, NH);
    if (pos < 0 || pos + Tn > maxT) ZG_FATAL("attention_forward_cached: pos %d + Tn %d > maxT %d", pos, Tn, maxT);
    int hs = C / NH;
    size_t n = (size_t)B * Tn * C;
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    size_t smem = (size_t)(pos + Tn) * sizeof(float);
    ZGC_DISPATCH(be->act_dtype, T, {
        zgc_kv_append_kernel<T>
            <<<blocks, 256, 0, im->stream>>>((T *)kcache, (T *)vcache, (const T *)qkv, B, Tn, pos, maxT, C, NH);
        ZG_CUDA_LAUNCH_CHECK();
        if (smem > 48 * 1024)
            ZG_CUDA_CHECK(
                cudaFuncSetAttribute(zgc_att_cached_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        zgc_att_cached_kernel<T><<<(unsigned)(B * NH * Tn), 128, smem, im->stream>>>(
            (T *)out, (const T *)qkv, (const T *)kcache, (const T *)vcache, Tn, pos, maxT, C, NH,
            1.f / sqrtf((float)hs));
        ZG_CUDA_LAUNCH_CHECK();
    });
}
