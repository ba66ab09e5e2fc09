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
 *   Two backward kernels instead of atomics keep the gradients deterministic (attention_backward_cuda.cu;
 *   the pieces both directions share: attention.cuh).
 * Scalar path (fp32 or other head sizes): the same math, one warp per row (tests, fallback).
 * Also here: the KV-cache attention of sampling's prompt (zgc_attention_forward_cached). */
#include "backend/cuda/attention.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- scalar path (fp32, any head size <= 256) ---------------------------------------------------- */

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

/* ---- dispatch ------------------------------------------------------------------------------------ */

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
