/* The LayerNorm row-group kernels' shared pieces (layernorm_cuda.cu's forward, layernorm_backward_cuda.cu's
 * backward): the row-group geometry, the A/B switches, the resident grid. */
#ifndef ZG_BACKEND_CUDA_LAYERNORM_CUH
#define ZG_BACKEND_CUDA_LAYERNORM_CUH

#include "backend/cuda/cuda_internal.h"

/* ---- row-group kernels (the default where they apply) ------------------------------------------
 * One row per group of RG = 32 << rgw_log2 threads (rgw_log2 0..3, chosen per call so RG * 2 vectors
 * cover the row), 256-thread blocks of 256 / RG groups, a persistent grid (the resident blocks) that
 * steps through the rows. A thread owns the 16-byte vectors t and t + RG of every row it visits (the
 * same columns each time), so w and b stay in its registers across rows, and the dw/db partials of the
 * backward accumulate in registers (no per-element shared-memory read-modify-write, no spills). The
 * row sums cross the group's warps through shared memory (one block barrier per sum). All loads of a row
 * are issued together. The forward keeps the group's next two rows loading while it reduces the current
 * one (55-61 registers without w and b, which it reads from L1 per row: 4 blocks, 8 row groups per SM
 * at C = 1600, ~51 KB of loads in flight per SM). (The warp-per-row kernels: ZGPT_LN=warp, for A/B.) */
#define ZGC_LNG_THREADS 256
#define ZGC_LNG_NV 2

/* rgw_log2 for a row of nv vectors, or -1 when 256 threads x 2 vectors do not cover it */
static inline int zgc_lng_rgw_log2(int nv) {
    for (int l = 0; l <= 3; l++)
        if ((32 << l) * ZGC_LNG_NV >= nv) return l;
    return -1;
}

/* the sum of a row group's per-warp values r[w0 .. w0 + nw) in warp order (deterministic) */
__device__ __forceinline__ float zgc_lng_group_sum(const float *r, int w0, int nw) {
    float s = 0.f;
    for (int j = 0; j < nw; j++) s += r[w0 + j];
    return s;
}

/* this thread's part of a row moment over its vectors: sum of x (SQ false, mu 0) or of (x - mu)^2 */
template <bool SQ, typename T>
__device__ __forceinline__ float zgc_lng_moment(const zgc_vec<T> *r, float mu, int t, int rg, int nv) {
    constexpr int VW = 16 / sizeof(T);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < ZGC_LNG_NV; i++)
        if (t + rg * i < nv)
#pragma unroll
            for (int e = 0; e < VW; e++) {
                float d = zgc_to_f(r[i].v[e]) - mu;
                s += SQ ? d * d : d;
            }
    return s;
}

/* The kernels ZGPT_LN picks (zgc_ln_mode, cuda_internal.h; a value it refuses never reaches here: backend creation
 * fails). Row groups for the backward unless "warp": */
static inline int zgc_lng_wanted(void) { return zgc_ln_mode() != ZGC_LN_WARP; }
/* The forward's row-group kernel only when asked for (ZGPT_LN=group): on the H200 at XL's shape the warp
 * kernels' forward measured 0.0406-0.0412 ms against 0.0548-0.0572 ms (two calls, docs/PERFORMANCE.md
 * v0.10), while the row-group backward beat the warp backward 0.085-0.088 ms to 0.120-0.122 ms. */
static inline int zgc_lng_fwd_wanted(void) { return zgc_ln_mode() == ZGC_LN_GROUP; }
/* the row-group backward copies the next row while one is processed, except under "group" */
static inline bool zgc_lng_async(void) { return zgc_ln_mode() != ZGC_LN_GROUP; }

/* the resident blocks of a kernel (one wave), at most `most`, at least 1 */
static inline int zgc_lng_grid(zg_backend *be, const void *kernel, size_t smem, int most) {
    int per_sm = 0;
    ZG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, ZGC_LNG_THREADS, smem));
    int grid = per_sm * zgc_get(be)->num_sms;
    if (grid > most) grid = most;
    return grid < 1 ? 1 : grid;
}

#endif
