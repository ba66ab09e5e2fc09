/* The attention backward's dQ kernel over the causal half of cuDNN's dS workspace (device code; the host side and
 * the why are in attention_dq_cuda.cu; bench/attn_dq_probe.cu times its forms alone).
 *
 * dS layout (cuDNN 9, hs 64; PERFORMANCE.md v0.27): per (b, h), T^2 elements stored as dS^T's mma.sync A
 * fragments: key groups of 16 (16 T elements each) -> query sub-tiles of 16 (256 elements) -> lane 4k+q's 8
 * values (key k, queries 2q, 2q+1; key k+8, the same; key k, queries 2q+8, 2q+9; key k+8, the same). So one
 * (key group, query sub-tile) block is 512 contiguous bytes, and lane l's 16 bytes of it are its 4 registers of
 * dS^T's fragment. movmatrix.trans turns each 8x8 piece into dS's (queries x keys): the A fragment of
 * dQ = dS K with no trip through shared memory.
 *
 * Block = WARPS warps = 16 WARPS MPW query rows of one (b, h) (warp w: MPW sub-tiles of 16 rows); key tiles of 64,
 * STAGES stages of (each thread's own 16-byte pieces of dS, K [64][HS+8]) copied with cp.async STAGES-1 tiles
 * ahead (a thread reads back only its own dS copies; the barrier is for K). mma.sync m16n8k16 with fp32
 * accumulation, keys in order (deterministic). A warp reads and sums only the key groups at or below its
 * diagonal; in the diagonal group the values above it are zeroed in registers, so whatever the workspace holds
 * there is never summed. Grid T / (16 WARPS MPW) x B*NH blocks in one dimension (the order: below).
 * attention_dq_cuda.cu runs 4 warps, 3 stages, MPW 1, no L2 hint: the other forms measured no faster
 * (bench/attn_dq_probe.cu, PERFORMANCE.md v0.28).
 *
 * dq[b, i, h, :] = alpha * sum_{j <= i} ds[b, h, i, j] * k[b, j, h, :]; k = qkv + C and dq = dqkv, rows 3C apart. */
#ifndef ZG_BACKEND_CUDA_ATTENTION_DQ_CUH
#define ZG_BACKEND_CUDA_ATTENTION_DQ_CUH

#include "backend/cuda/mma_tiles.cuh"

/* Shared memory of one block: STAGES x (dS: 4 key groups x WARPS * MPW sub-tiles x 256 elements; K [64][HS + 8]) */
template <int HS, int WARPS, int STAGES, int MPW = 1> constexpr size_t zgc_dq_smem_bytes() {
    return (size_t)STAGES * (4 * WARPS * MPW * 256 + 64 * (HS + 8)) * 2;
}

/* v's two 16-bit halves (columns col, col+1 of a fragment row) kept where the column is at most the row */
__device__ __forceinline__ uint32_t zgc_dq_causal(uint32_t v, int row, int col) {
    return v & ((col <= row ? 0x0000FFFFu : 0u) | (col + 1 <= row ? 0xFFFF0000u : 0u));
}

/* cp.async with the L2's 256-byte prefetch hint (the sector's neighbours fetched with it) */
__device__ __forceinline__ void zgc_cp_async16_l2(void *smem, const void *gmem) {
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(smem);
    ZGC_SM80_ONLY(asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem)
                               : "memory"));
}

template <typename T, int HS, int WARPS, int STAGES, int MPW = 1, bool HINT = false>
__global__ void __launch_bounds__(WARPS * 32)
    zgc_att_dq_kernel(T *dq, const T *ds, const T *k, int NH, int BNH, int T_len, int C, int group, float alpha) {
    constexpr int NT = WARPS * 32, SUBS = WARPS * MPW, ROWS = 16 * SUBS, LDK = HS + 8, DSE = 4 * SUBS * 256;
    constexpr int STAGE = DSE + 64 * LDK;
    static_assert(ROWS % 64 == 0, "a block's rows cover whole key tiles");
    extern __shared__ __align__(16) unsigned char zgc_dq_smem[];
    T *sm = reinterpret_cast<T *>(zgc_dq_smem);
    /* the block's (row tile, head): heads in groups of `group`, each group's tiles heaviest first across its heads,
     * so that the last blocks to start are light ones (no long tail) while a group's K stays in L2 */
    const int nm = T_len / ROWS, g0 = (int)blockIdx.x / (group * nm) * group, gn = min(group, BNH - g0);
    const int r = (int)blockIdx.x - g0 * nm, mt = nm - 1 - r / gn, bh = g0 + r % gn, b = bh / NH, h = bh % NH;
    const int warp = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31;
    const int ntiles = (mt + 1) * (ROWS / 64);
    /* this warp's query sub-tiles (16 rows each): sub0 .. sub0 + MPW - 1; sub-tile s's diagonal is key group s */
    const int sub0 = (mt * WARPS + warp) * MPW, last = sub0 + MPW - 1;
    const size_t ld = (size_t)3 * C;
    /* this warp's run of key group g: ds_w + g * 16 T (MPW x 512 bytes); lane's 16 bytes of sub-tile i at + i * 256 */
    const T *ds_w = ds + (size_t)bh * T_len * T_len + (size_t)sub0 * 256 + (size_t)lane * 8;
    const T *kb = k + (size_t)b * T_len * ld + (size_t)h * HS;
    /* a stage: dS [4 key groups][SUBS sub-tiles][256] (a thread's own 16 bytes at [u][warp * MPW + i][lane * 8]),
     * then K [64][LDK] */
    auto load = [&](int nt, int stage) {
        T *raw = sm + stage * STAGE, *sk = raw + DSE;
#pragma unroll
        for (int u = 0; u < 4; u++)
#pragma unroll
            for (int i = 0; i < MPW; i++)
                if (nt * 4 + u <= sub0 + i) { /* at or below the diagonal */
                    T *dst = &raw[((u * SUBS + warp * MPW + i) * 32 + lane) * 8];
                    const T *src = ds_w + (size_t)(nt * 4 + u) * 16 * T_len + i * 256;
                    if (HINT)
                        zgc_cp_async16_l2(dst, src);
                    else
                        zgc_cp_async16(dst, src);
                }
        for (int i = (int)threadIdx.x; i < 64 * (HS / 8); i += NT) {
            int r = i / (HS / 8), c = (i % (HS / 8)) * 8;
            zgc_cp_async16(&sk[r * LDK + c], kb + (size_t)(nt * 64 + r) * ld + c);
        }
    };
    float acc[MPW][HS / 8][4];
#pragma unroll
    for (int i = 0; i < MPW; i++)
#pragma unroll
        for (int j = 0; j < HS / 8; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
    /* cuDNN may launch its dQ kernel as a programmatic dependent of the main one; in that node's place this
     * kernel waits for it too (at once when launched without the attribute) */
    zgc_pdl_wait();
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ntiles) load(s, s);
        zgc_cp_commit();
    }
    const int fk = lane >> 2, fc = 2 * (lane & 3); /* this lane's fragment row and first column */
    for (int nt = 0; nt < ntiles; nt++) {
        zgc_cp_wait<STAGES - 2>(); /* tile nt's copies of this thread are in */
        __syncthreads();           /* ... and everyone's (K); the stage refilled below is free */
        if (nt + STAGES - 1 < ntiles) load(nt + STAGES - 1, (nt + STAGES - 1) % STAGES);
        zgc_cp_commit();
        if (nt * 4 > last) continue; /* above this warp's diagonal (the block's last tiles, for some warps) */
        const T *raw = sm + (nt % STAGES) * STAGE, *sk = raw + DSE;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int kg = nt * 4 + u; /* the key group */
            if (kg > last) break;
            uint32_t a[MPW][4];
#pragma unroll
            for (int i = 0; i < MPW; i++) {
                if (kg > sub0 + i) continue;
                uint4 v = *reinterpret_cast<const uint4 *>(&raw[((u * SUBS + warp * MPW + i) * 32 + lane) * 8]);
                /* dS^T's pieces (keys 0-7 | 8-15) x (queries 0-7 | 8-15) = x, y, z, w; transposed, they are dS's
                 * A fragment pieces (queries 0-7, keys 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15) = x', z', y', w' */
                a[i][0] = zgc_movmatrix_t(v.x), a[i][1] = zgc_movmatrix_t(v.z);
                a[i][2] = zgc_movmatrix_t(v.y), a[i][3] = zgc_movmatrix_t(v.w);
                if (kg == sub0 + i) { /* the diagonal 16 x 16: keys after the query row are not summed */
                    a[i][0] = zgc_dq_causal(a[i][0], fk, fc);
                    a[i][1] = zgc_dq_causal(a[i][1], fk + 8, fc);
                    a[i][2] = zgc_dq_causal(a[i][2], fk, fc + 8);
                    a[i][3] = zgc_dq_causal(a[i][3], fk + 8, fc + 8);
                }
            }
#pragma unroll
            for (int dn = 0; dn < HS / 8; dn += 2) {
                uint32_t bf[4];
                zgc_ldsm_bt_x4<LDK>(bf, sk, u * 16, dn * 8, lane);
#pragma unroll
                for (int i = 0; i < MPW; i++) {
                    if (kg > sub0 + i) continue;
                    zgc_mma<T>::run(acc[i][dn], a[i], bf[0], bf[1]);
                    zgc_mma<T>::run(acc[i][dn + 1], a[i], bf[2], bf[3]);
                }
            }
        }
    }
    zgc_cp_wait<0>(); /* no copy outlives the block (the last commits were empty) */
#pragma unroll
    for (int i = 0; i < MPW; i++) {
        T *o = dq + ((size_t)b * T_len + (size_t)(sub0 + i) * 16 + fk) * ld + (size_t)h * HS + fc;
#pragma unroll
        for (int dn = 0; dn < HS / 8; dn++) {
            *reinterpret_cast<uint32_t *>(o + dn * 8) = zgc_mma<T>::pack(acc[i][dn][0] * alpha, acc[i][dn][1] * alpha);
            *reinterpret_cast<uint32_t *>(o + 8 * ld + dn * 8) =
                zgc_mma<T>::pack(acc[i][dn][2] * alpha, acc[i][dn][3] * alpha);
        }
    }
}

#endif
