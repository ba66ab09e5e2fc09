/* The causal self-attention kernels' shared pieces (attention_cuda.cu's forward and KV-cache attention,
 * attention_backward_cuda.cu's backward): tile geometry, the asynchronous tile copy, the block order, the
 * scalar path's head-size limit and the dispatch rules both directions apply. The layout, the statistics and
 * the design are in attention_cuda.cu's header. */
#ifndef ZG_BACKEND_CUDA_ATTENTION_CUH
#define ZG_BACKEND_CUDA_ATTENTION_CUH

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/mma_tiles.cuh"

#define ZGC_LOG2E 1.4426950408889634f
#define ZGC_LN2 0.69314718055994531f
#define ZGC_ATT_BQ 64
#define ZGC_ATT_BK 64
#define ZGC_ATT_THREADS 128
#define ZGC_SC_MAXD 8 /* the scalar path: hs <= 32 * 8 */

/* The tensor-core kernels use sm_80+ instructions (mma.sync bf16, ldmatrix, cp.async): ZGC_SM80_ONLY
 * (cuda_internal.h) makes them traps in a device pass for an older architecture, and
 * zgc_attention_check_arch() refuses to create the backend (see CMake's CUDA_ARCHITECTURES). */

/* ---- the tile copy (zgc_mma: cuda_internal.h; the ldmatrix loads: mma_tiles.cuh) --------------- */

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

/* ---- dispatch rules ------------------------------------------------------------------------------ */

/* The tensor-core kernels need 16-byte aligned rows (16-byte vector loads). */
static inline int zgc_att_use_mma(zg_backend *be, int hs, const void *p0, const void *p1, const void *p2) {
    uintptr_t a = (uintptr_t)p0 | (uintptr_t)p1 | (uintptr_t)p2;
    return be->act_dtype != ZG_F32 && (hs == 64 || hs == 128) && (a % 16) == 0;
}

static inline void zgc_att_check_shape(int C, int NH) {
    if (NH <= 0 || C % NH != 0) ZG_FATAL("attention: C=%d is not a multiple of NH=%d", C, NH);
    if (C / NH > 32 * ZGC_SC_MAXD) ZG_FATAL("attention: head size %d > %d is not supported", C / NH, 32 * ZGC_SC_MAXD);
}

#endif
