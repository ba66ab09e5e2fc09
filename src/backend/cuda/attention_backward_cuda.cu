/* Fused causal self-attention's backward, FlashAttention-2 style (the design, layout and statistics: attention_cuda.cu's
 * header; the shared pieces: attention.cuh): the row sums D = rowsum(dout * out), then two tensor-core kernels, dK/dV
 * by key tiles and dQ by query tiles, instead of atomics, so the gradients are deterministic; the scalar path for fp32
 * or other head sizes. cuDNN's fused backward (attention_cudnn.cu) runs first where it can. */
#include "backend/cuda/attention.cuh"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- mma helpers ------------------------------------------------------------------------------- */

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
        /* the variants by letter, 'a' to 'd' (above): fragments kept, blocks per SM */
        typedef void (*launch_fn)(zg_backend *, void *, const void *, const void *, const float *, const float *, int,
                                  int, int, int, float, float);
        static const launch_fn dkv[4] = {
            zgc_flash_bwd_dkv_launch<T, HS, false, 3>, zgc_flash_bwd_dkv_launch<T, HS, true, 3>,
            zgc_flash_bwd_dkv_launch<T, HS, true, 2>, zgc_flash_bwd_dkv_launch<T, HS, false, 2>};
        static const launch_fn dq[4] = {
            zgc_flash_bwd_dq_launch<T, HS, false, 3>, zgc_flash_bwd_dq_launch<T, HS, true, 3>,
            zgc_flash_bwd_dq_launch<T, HS, true, 2>, zgc_flash_bwd_dq_launch<T, HS, false, 2>};
        dkv[zgc_att_bwd_variant(0) - 'a'](be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
        dq[zgc_att_bwd_variant(1) - 'a'](be, dqkv, dout, qkv, lse, D, B, T_len, C, NH, scale_log2, scale);
    }
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
