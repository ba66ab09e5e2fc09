/* matmul_forward for a few rows (N <= ZGC_GEMV_MAX_N: one decode step's batch): out (N,OC) =
 * inp (N,C) @ w (OC,C)^T + bias + residual, or pre_gelu = that and out = gelu(pre_gelu).
 * With so few rows the product is a read of the weights; cuBLASLt's tiles leave most SMs idle at
 * these shapes (about 1 TB/s on the H200 at GPT-2 XL's). Two generations of kernels (zgc_gemv_pick in
 * cuda_internal.h chooses; ZGPT_GEMV=cublaslt|v1|simt|v2 for A/B runs):
 *   v1 (v0.11-v0.13): one warp per output column at 1 row, the tensor-core form below from 2 rows;
 *   v2 (v0.14): one tensor-core kernel for 1..8 rows, sized for the whole GPU and for PDL (below).
 * All of them add the bias and the residual in fp32 and round once (as cuBLASLt's epilogue does with
 * beta = 1), reduce in a fixed order (the same inputs give the same bits), and are launched with PDL
 * (zgc_launch): weights are no earlier kernel's output, so their first loads (and L2 prefetches) are
 * issued before the wait for the previous kernel; only the input rows, the residual and the outputs
 * wait.
 *
 * v1's warp per column: its lanes stream w's row o with 16-byte loads (consecutive lanes, consecutive
 * vectors: whole 512-byte lines per warp load), each weight vector is used against all N input rows
 * (read through L1, where the few rows stay), and the lanes' fp32 partial sums meet in a fixed shuffle
 * tree. Grid: OC / 8 blocks of 8 warps (200 blocks at OC = 1600, 6288 for the LM head), no split of C. */
#include "backend/cuda/cuda_internal.h"

#define ZGC_GEMV_THREADS 256
#define ZGC_GEMV_WARPS (ZGC_GEMV_THREADS / 32)
/* vectors a lane loads before it uses them (memory-level parallelism) */
#define ZGC_GEMV_UNROLL 8

/* The LayerNorm of row n (C values) into xs (shared, act dtype), by one warp: the warp kernel's arithmetic
 * (layernorm_cuda.cu: the same per-lane vectors and order of sums, the same expression), so xs holds the
 * values layernorm_forward would have stored. */
template <typename T> __device__ void zgc_gemv_ln_row(zgc_vec<T> *xs, const T *x, const T *lnw, const T *lnb, int C) {
    constexpr int E = 16 / sizeof(T);
    int lane = threadIdx.x % 32, nv = C / E;
    const zgc_vec<T> *xv = reinterpret_cast<const zgc_vec<T> *>(x);
    const zgc_vec<T> *wv = reinterpret_cast<const zgc_vec<T> *>(lnw), *bv = reinterpret_cast<const zgc_vec<T> *>(lnb);
    float s = 0.f;
    for (int k = lane; k < nv; k += 32) {
        zgc_vec<T> r = xv[k];
#pragma unroll
        for (int e = 0; e < E; e++) s += zgc_to_f(r.v[e]);
    }
    float mu = zgc_warp_sum(s) / C;
    float v = 0.f;
    for (int k = lane; k < nv; k += 32) {
        zgc_vec<T> r = xv[k];
#pragma unroll
        for (int e = 0; e < E; e++) {
            float d = zgc_to_f(r.v[e]) - mu;
            v += d * d;
        }
    }
    float rs = rsqrtf(zgc_warp_sum(v) / C + 1e-5f);
    for (int k = lane; k < nv; k += 32) {
        zgc_vec<T> r = xv[k], ww = wv[k], bb = bv[k], o;
#pragma unroll
        for (int e = 0; e < E; e++)
            o.v[e] = zgc_from_f<T>((zgc_to_f(r.v[e]) - mu) * rs * zgc_to_f(ww.v[e]) + zgc_to_f(bb.v[e]));
        xs[k] = o;
    }
}

/* out[i] (and pre_gelu[i]) from the fp32 sum s of output i (bias added): GELU, or + the residual (which
 * may be out: read before the write); rounded once. */
template <typename T>
__device__ __forceinline__ void zgc_gemv_store(T *out, T *pre_gelu, const T *residual, size_t i, float s) {
    if (pre_gelu) {
        pre_gelu[i] = zgc_from_f<T>(s);
        out[i] = zgc_from_f<T>(zgc_gelu(s));
    } else {
        if (residual) s += zgc_to_f(residual[i]);
        out[i] = zgc_from_f<T>(s);
    }
}

/* LN: the input rows are first normalised into shared memory (warp n: row n), while the first weight
 * vectors are already loading; then every warp reads its rows from there. */
template <typename T, bool LN>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS)
    zgc_gemv_kernel(T *out, T *pre_gelu, const T *inp, const T *lnw, const T *lnb, const T *w, const T *bias,
                    const T *residual, int N, int C, int OC) {
    constexpr int E = 16 / sizeof(T);
    extern __shared__ int4 xs_raw[]; /* LN: N rows of C / E vectors */
    zgc_vec<T> *xs = reinterpret_cast<zgc_vec<T> *>(xs_raw);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int o = blockIdx.x * ZGC_GEMV_WARPS + warp;
    int nv = C / E;
    bool active = o < OC;
    const int4 *wr = reinterpret_cast<const int4 *>(w + (size_t)(active ? o : 0) * C);
    int4 raw[ZGC_GEMV_UNROLL] = {};
    /* the first vectors of the row: weights are read once per step, so streamed past L1 */
#pragma unroll
    for (int u = 0; u < ZGC_GEMV_UNROLL; u++) {
        int j = lane + 32 * u;
        if (active && j < nv) raw[u] = __ldcs(wr + j);
    }
    /* the rest of the row into L2 (the first batch covers 32 * UNROLL vectors): weights are no earlier
     * kernel's output, so this and the loads above run before the wait, while the previous kernel ends */
    if (active)
        for (size_t off = (size_t)(32 * ZGC_GEMV_UNROLL + 8 * lane) * 16; off < (size_t)nv * 16; off += 32 * 128)
            zgc_prefetch_l2(reinterpret_cast<const char *>(wr) + off);
    zgc_pdl_wait(); /* inp, residual and out belong to the kernels before */
    zgc_pdl_trigger();
    const zgc_vec<T> *x = reinterpret_cast<const zgc_vec<T> *>(inp);
    if (LN) {
        if (warp < N) zgc_gemv_ln_row<T>(xs + (size_t)warp * nv, inp + (size_t)warp * C, lnw, lnb, C);
        __syncthreads();
        x = xs;
    }
    if (!active) return; /* no barriers below: a whole warp leaves */
    float acc[ZGC_GEMV_MAX_N];
#pragma unroll
    for (int n = 0; n < ZGC_GEMV_MAX_N; n++) acc[n] = 0.0f;
    for (int j0 = lane; j0 < nv; j0 += 32 * ZGC_GEMV_UNROLL) {
        if (j0 != lane) /* the first batch is in raw already */
#pragma unroll
            for (int u = 0; u < ZGC_GEMV_UNROLL; u++) {
                int j = j0 + 32 * u;
                if (j < nv) raw[u] = __ldcs(wr + j);
            }
#pragma unroll
        for (int u = 0; u < ZGC_GEMV_UNROLL; u++) {
            int j = j0 + 32 * u;
            if (j >= nv) break;
            zgc_vec<T> wv;
            memcpy(&wv, &raw[u], sizeof wv);
            float wf[E];
#pragma unroll
            for (int e = 0; e < E; e++) wf[e] = zgc_to_f(wv.v[e]);
#pragma unroll
            for (int n = 0; n < ZGC_GEMV_MAX_N; n++) {
                if (n >= N) break;
                zgc_vec<T> xv = x[(size_t)n * nv + j];
#pragma unroll
                for (int e = 0; e < E; e++) acc[n] = fmaf(wf[e], zgc_to_f(xv.v[e]), acc[n]);
            }
        }
    }
#pragma unroll
    for (int n = 0; n < ZGC_GEMV_MAX_N; n++) acc[n] = zgc_warp_sum(acc[n]); /* every lane: the same sums */
    if (lane != 0) return;
    float b = bias ? zgc_to_f(bias[o]) : 0.0f;
#pragma unroll
    for (int n = 0; n < ZGC_GEMV_MAX_N; n++) {
        if (n >= N) break;
        zgc_gemv_store(out, pre_gelu, residual, (size_t)n * OC + o, acc[n] + b);
    }
}

/* ---- the tensor-core form (16-bit types, 2..8 rows) ---------------------------------------------
 * The warp-per-column kernel above costs, per 16-byte weight vector and lane, N input-vector loads and
 * 8N conversions and FMAs: at 8 rows it is issue-bound (the H200's B=8 step took 7.1 ms with it against
 * cuBLASLt's 3.5). Here mma.sync m16n8k16 does the multiply-adds: its n = 8 is the batch. A block of 8
 * warps owns 16 output columns; the input dimension is cut into chunks of 32 (warp w takes chunks w,
 * w + 8, ...). In a chunk, lane l = 4r + q loads one 16-byte vector (8 consecutive k from 32c + 8q) of
 * weight rows r and r + 8 and of input row r, and the two mma of the chunk take k's 4 words in order:
 * the first mma's k slots (2q, 2q+1, 2q+8, 2q+9) hold k = 32c + 8q + (0, 1, 2, 3), the second's + (4..7).
 * The same lane holds the same k for the weight (A) and the input (B) fragment, and a k slot is the same
 * k in every lane of its column group q, so each mma is an exact 16-deep dot product. No data is
 * shuffled: the loads are the warp-per-column kernel's 16-byte vectors. The 8 warps' fragments meet in
 * shared memory and are added in warp order; bias, GELU, residual as above. Fixed chunks, fixed order: the
 * same inputs give the same bits (not the same bits as the kernel above: another order of sums). */
#define ZGC_GEMV_MMA_COLS 16
#define ZGC_GEMV_MMA_UNROLL 4
template <typename T, bool LN>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS)
    zgc_gemv_mma_kernel(T *out, T *pre_gelu, const T *inp, const T *lnw, const T *lnb, const T *w, const T *bias,
                        const T *residual, int N, int C, int OC) {
    constexpr int E = 16 / sizeof(T);
    extern __shared__ int4 xs_raw[]; /* LN: N rows of C / E vectors */
    __shared__ float red[ZGC_GEMV_WARPS][32][4];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, r = lane / 4, q = lane % 4;
    int o0 = blockIdx.x * ZGC_GEMV_MMA_COLS, nv = C / E, nch = (nv + 3) / 4;
    int oa = o0 + r, ob = o0 + r + 8;
    const int4 *wa = reinterpret_cast<const int4 *>(w + (size_t)(oa < OC ? oa : 0) * C);
    const int4 *wb = reinterpret_cast<const int4 *>(w + (size_t)(ob < OC ? ob : 0) * C);
    int4 ra[ZGC_GEMV_MMA_UNROLL], rb[ZGC_GEMV_MMA_UNROLL];
    const int4 zero = make_int4(0, 0, 0, 0);
    /* the first chunks' weights before the wait: no earlier kernel writes them */
#pragma unroll
    for (int u = 0; u < ZGC_GEMV_MMA_UNROLL; u++) {
        int j = 4 * (warp + ZGC_GEMV_WARPS * u) + q;
        ra[u] = oa < OC && j < nv ? __ldcs(wa + j) : zero;
        rb[u] = ob < OC && j < nv ? __ldcs(wb + j) : zero;
    }
    /* the rest of the block's 16 rows into L2 (16 threads a row, one 128-byte line each per step) */
    {
        int pr = o0 + (int)threadIdx.x % ZGC_GEMV_MMA_COLS;
        const char *row = reinterpret_cast<const char *>(w + (size_t)(pr < OC ? pr : 0) * C);
        size_t first = (size_t)ZGC_GEMV_WARPS * ZGC_GEMV_MMA_UNROLL * 64; /* bytes the first batch covers */
        if (pr < OC)
            for (size_t off = first + (threadIdx.x / ZGC_GEMV_MMA_COLS) * 128; off < (size_t)nv * 16;
                 off += (ZGC_GEMV_THREADS / ZGC_GEMV_MMA_COLS) * 128)
                zgc_prefetch_l2(row + off);
    }
    zgc_pdl_wait(); /* inp, residual and out belong to the kernels before */
    zgc_pdl_trigger();
    const int4 *x = reinterpret_cast<const int4 *>(inp);
    if (LN) {
        zgc_vec<T> *xs = reinterpret_cast<zgc_vec<T> *>(xs_raw);
        if (warp < N) zgc_gemv_ln_row<T>(xs + (size_t)warp * nv, inp + (size_t)warp * C, lnw, lnb, C);
        __syncthreads();
        x = xs_raw;
    }
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int c0 = warp; c0 < nch; c0 += ZGC_GEMV_WARPS * ZGC_GEMV_MMA_UNROLL) {
        if (c0 != warp) /* the first batch is in ra, rb already */
#pragma unroll
            for (int u = 0; u < ZGC_GEMV_MMA_UNROLL; u++) {
                int j = 4 * (c0 + ZGC_GEMV_WARPS * u) + q;
                ra[u] = oa < OC && j < nv ? __ldcs(wa + j) : zero;
                rb[u] = ob < OC && j < nv ? __ldcs(wb + j) : zero;
            }
#pragma unroll
        for (int u = 0; u < ZGC_GEMV_MMA_UNROLL; u++) {
            int c = c0 + ZGC_GEMV_WARPS * u;
            if (c >= nch) break;
            int j = 4 * c + q;
            int4 xv = r < N && j < nv ? x[(size_t)r * nv + j] : zero;
            uint32_t a1[4] = {(uint32_t)ra[u].x, (uint32_t)rb[u].x, (uint32_t)ra[u].y, (uint32_t)rb[u].y};
            uint32_t a2[4] = {(uint32_t)ra[u].z, (uint32_t)rb[u].z, (uint32_t)ra[u].w, (uint32_t)rb[u].w};
            zgc_mma<T>::run(d, a1, (uint32_t)xv.x, (uint32_t)xv.y);
            zgc_mma<T>::run(d, a2, (uint32_t)xv.z, (uint32_t)xv.w);
        }
    }
    /* d: (column o0 + r, rows 2q, 2q + 1) and (column o0 + r + 8, the same rows) */
#pragma unroll
    for (int k = 0; k < 4; k++) red[warp][lane][k] = d[k];
    __syncthreads();
    int t = threadIdx.x;
    if (t >= ZGC_GEMV_MMA_COLS * 8) return; /* no barriers below */
    int ol = t / 8, n = t % 8, o = o0 + ol;
    if (o >= OC || n >= N) return;
    int src = (ol % 8) * 4 + n / 2, k = (ol >= 8 ? 2 : 0) + n % 2;
    float s = 0.0f;
    for (int wi = 0; wi < ZGC_GEMV_WARPS; wi++) s += red[wi][src][k];
    zgc_gemv_store(out, pre_gelu, residual, (size_t)n * OC + o, s + (bias ? zgc_to_f(bias[o]) : 0.0f));
}
/* fp32 has no such mma: the warp-per-column kernel */
template <>
__global__ void zgc_gemv_mma_kernel<float, true>(float *, float *, const float *, const float *, const float *,
                                                 const float *, const float *, const float *, int, int, int) {}
template <>
__global__ void zgc_gemv_mma_kernel<float, false>(float *, float *, const float *, const float *, const float *,
                                                  const float *, const float *, const float *, int, int, int) {}

/* ---- v2: one tensor-core kernel for 1..8 rows (16-bit types) -------------------------------------
 * Counting v1 against the H200 (132 SMs, ~4.8 TB/s: ~36 bytes/ns per SM; ~1 us of DRAM latency under
 * load, so ~4 MB in flight across the GPU, ~30 KB per SM, keep it busy):
 *  - occupancy and PDL: v1's blocks (256 threads, ~80 registers) fill an SM at 3 blocks, and its grids
 *    are 1.1-6 waves (qkv 600 blocks, fc 800). A kernel launched early by PDL can only become resident
 *    beside the running one where registers are free, so with full SMs PDL hides the launch but not the
 *    first loads; and each later wave starts with a cold DRAM round trip (and, fused, a LayerNorm);
 *  - the fused LayerNorm: one warp per row normalises the rows while the other 7 wait at a barrier, in
 *    every block: 600-800 times per product instead of once per SM;
 *  - at 8 rows the warp per column spends 8N conversions + FMAs and N input loads per 16-byte weight
 *    vector (issue-bound: the B=8 step took 7.1 ms); v1's tensor-core form fixes the issue count but
 *    its grids are OC / 16 blocks: 100 blocks for the projections (OC = 1600) on 132 SMs, each warp
 *    with 8 KB of a 205 KB block tile in flight, loads and uses not overlapped.
 * v2: mma.sync m16n8k16 with the batch as m (rows >= N are zero) and 8 output columns as n, so the
 * instructions per weight byte do not depend on N (per 512-byte chunk of 8 columns x 32 k and warp:
 * one 16-byte load per lane, one shared-memory load of the input, two mma): one kernel for 1..8 rows,
 * nothing to specialise. A block of 8 warps owns column groups g = blockIdx.x, + gridDim.x, ... (8
 * columns each); in a group warp w takes the 32-k chunks w, w + 8, ... as v1's tensor-core form does
 * (lane 4r + q loads 8 consecutive k from 32c + 8q of weight row 8g + r and of input row r; the two mma
 * take the words in order as k slots (2q, 2q+1, 2q+8, 2q+9), the same k for both fragments). Each lane
 * has two named buffers of ZGC_GEMV2_UNROLL chunks, each refilled with the batch after next (the next
 * group's, across groups) right after its use, so a warp keeps 2-4 KB in flight from its first
 * instruction to its last. The grid is at most ZGC_GEMV2_BLOCKS_PER_SM blocks per SM and at most what
 * the SM holds at once (one wave, no cold second wave); registers for 3 resident blocks per SM (MINB 3,
 * <= 85 a thread) or 4 (MINB 4, 64 a thread: a block of the next product fits beside 3 running ones, so
 * PDL can start its loads early). Before the PDL wait each block loads its first two
 * batches, copies the LayerNorm's parameters to shared memory (cp.async) and prefetches the first
 * ZGC_GEMV2_PREFETCH_BYTES of its groups to L2 (a group's 8 rows are one contiguous range:
 * cp.async.bulk.prefetch on sm_90); after it the N input rows are staged in shared memory once per block
 * (cp.async, all in flight; LayerNorm: warp n then normalises row n there with the warp LayerNorm kernel's
 * arithmetic, so the values are layernorm_forward's). A group's 8 warp fragments are added in warp order
 * in shared memory, then bias, GELU or residual (loaded when the group starts), one thread per output:
 * a fixed order whatever the grid, so the same bits on every run, not v1's bits (another order of sums). */
#define ZGC_GEMV2_COLS 8   /* output columns of a group: the mma's n */
#define ZGC_GEMV2_UNROLL 4 /* chunks per buffer and lane (two buffers) */
/* the grid's cap per SM: 3 since v0.20 (2 before; v0.20's decode bench, H100: B=1 step graph 2.122 against
 * 2.244 ms, B=8 equal; ZGPT_GEMV_GRID=1..4 for A/B runs) */
#define ZGC_GEMV2_BLOCKS_PER_SM 3
/* the register budget: blocks per SM the kernel's registers allow (ZGPT_GEMV_MINB=3|4 for A/B runs; 3: the
 * kernel takes 74-76 registers, 4: 64, no spills at sm_90) */
#define ZGC_GEMV2_MIN_BLOCKS 3
#define ZGC_GEMV2_PREFETCH_BYTES (64 * 1024)
/* input rows in shared memory: a row stride of 16-byte vectors that is 4 mod 8 (64 bytes mod 128), so
 * the two rows a quarter-warp's 16-byte loads touch fall in different banks */
static __host__ __device__ inline int zgc_gemv2_xstride(int nv) { return nv + ((12 - nv % 8) % 8); }
/* the largest dynamic shared memory (input rows, LayerNorm parameters): two blocks with their 4 KB of
 * fragments and 1 KB reserved each still fit an H100/H200 SM's 228 KB (8 rows of C = 6400: 100.5 KB) */
#define ZGC_GEMV2_MAX_SMEM (108 * 1024)

/* L2 prefetch of bytes (a multiple of 16) from p (16-byte aligned), by the calling thread */
__device__ __forceinline__ void zgc_gemv2_prefetch(const char *p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#else
    for (unsigned off = 0; off < bytes; off += 128) zgc_prefetch_l2(p + off);
#endif
}

template <typename T, bool LN, int MINB>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS, MINB)
    zgc_gemv2_kernel(T *out, T *pre_gelu, const T *inp, const T *lnw, const T *lnb, const T *w, const T *bias,
                     const T *residual, int N, int C, int OC, int pf_bytes) {
    constexpr int U = ZGC_GEMV2_UNROLL, W = ZGC_GEMV_WARPS, G = ZGC_GEMV2_COLS;
    /* N input rows (row stride zgc_gemv2_xstride vectors), then (LN) the gains and the biases */
    extern __shared__ int4 xs_raw[];
    __shared__ float red[2][W][32][2];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, r = lane / 4, q = lane % 4;
    int nv = (int)(C * sizeof(T) / 16), nch = (nv + 3) / 4, xstride = zgc_gemv2_xstride(nv);
    int groups = (OC + G - 1) / G;
    int nb = ((nch + W - 1) / W + U - 1) / U; /* batches per group (the same for every warp) */
    int ng = (int)blockIdx.x < groups ? (groups - 1 - (int)blockIdx.x) / (int)gridDim.x + 1 : 0;
    int items = ng * nb;
    const int4 zero = make_int4(0, 0, 0, 0);
    const int4 *wv = reinterpret_cast<const int4 *>(w);
    /* item it: group blockIdx.x + (it / nb) * gridDim.x, this warp's chunks of batch it % nb */
    auto load = [&](int4(&buf)[U], int it) {
        int o = ((int)blockIdx.x + (it / nb) * (int)gridDim.x) * G + r, b = it % nb;
        const int4 *wr = wv + (size_t)(o < OC ? o : 0) * nv;
#pragma unroll
        for (int u = 0; u < U; u++) {
            int j = 4 * (warp + W * (b * U + u)) + q;
            buf[u] = o < OC && j < nv ? __ldcs(wr + j) : zero;
        }
    };
    /* two batches in flight before the wait: no earlier kernel writes the weights (nor the LayerNorm's
     * parameters, staged now too) */
    int4 bufa[U], bufb[U];
    if (items > 0) load(bufa, 0);
    if (items > 1) load(bufb, 1);
    int4 *lnws = xs_raw + (size_t)N * xstride, *lnbs = lnws + nv;
    if (LN) {
        for (int i = threadIdx.x; i < nv; i += blockDim.x) {
            zgc_cp_async16(lnws + i, reinterpret_cast<const int4 *>(lnw) + i);
            zgc_cp_async16(lnbs + i, reinterpret_cast<const int4 *>(lnb) + i);
        }
        zgc_cp_commit();
    }
    /* the block's first groups into L2 (a group's rows are one contiguous range), 16 KB per lane of warp 0 */
    if (warp == 0 && pf_bytes > 0) {
        const size_t rowb = (size_t)C * sizeof(T);
        size_t done = 0;
        for (int gi = 0; gi < ng && done < (size_t)pf_bytes; gi++) {
            int g = (int)blockIdx.x + gi * (int)gridDim.x, rows = min(G, OC - g * G);
            size_t bytes = (size_t)rows * rowb;
            const char *base = reinterpret_cast<const char *>(w) + (size_t)g * G * rowb;
            for (size_t off = (size_t)lane * 16384; off < bytes; off += 32 * 16384)
                zgc_gemv2_prefetch(base + off, (unsigned)min((size_t)16384, bytes - off));
            done += bytes;
        }
    }
    zgc_pdl_wait(); /* inp, residual and out belong to the kernels before */
    zgc_pdl_trigger();
    /* the input rows into shared memory, every copy in flight at once */
    const int4 *xg = reinterpret_cast<const int4 *>(inp);
    for (int i = threadIdx.x; i < N * nv; i += blockDim.x) {
        int n = i / nv;
        zgc_cp_async16(xs_raw + (size_t)n * xstride + (i - n * nv), xg + i);
    }
    zgc_cp_commit();
    zgc_cp_wait<0>();
    __syncthreads();
    if (LN) { /* warp n normalises row n in place (each vector read, then written, by one lane) */
        if (warp < N) {
            int4 *row = xs_raw + (size_t)warp * xstride;
            zgc_gemv_ln_row<T>(reinterpret_cast<zgc_vec<T> *>(row), reinterpret_cast<const T *>(row),
                               reinterpret_cast<const T *>(lnws), reinterpret_cast<const T *>(lnbs), C);
        }
        __syncthreads();
    }
    /* the output this thread stores at each group's end: (input row t / 8, column t % 8) */
    int on = (int)threadIdx.x / G, oc = (int)threadIdx.x % G;
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}, eb = 0.0f, er = 0.0f;
    /* item it from buf; then buf refills with item it + 2 (two buffers by name, no copies: a register
     * copy would wait for the loads in flight) */
    auto step = [&](int4(&buf)[U], int it) {
        int gi = it / nb, b = it % nb, g = (int)blockIdx.x + gi * (int)gridDim.x, o = g * G + oc;
        if (b == 0 && on < N && o < OC) { /* the epilogue's operands, loading beside the group */
            eb = bias ? zgc_to_f(bias[o]) : 0.0f;
            er = residual ? zgc_to_f(residual[(size_t)on * OC + o]) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = warp + W * (b * U + u); /* the same for the whole warp */
            if (c < nch) {
                int j = 4 * c + q;
                int4 xv = r < N && j < nv ? xs_raw[(size_t)r * xstride + j] : zero;
                /* a: input rows (m; rows 8-15 and >= N zero), b: the group's 8 weight rows (n) */
                uint32_t a1[4] = {(uint32_t)xv.x, 0u, (uint32_t)xv.y, 0u};
                uint32_t a2[4] = {(uint32_t)xv.z, 0u, (uint32_t)xv.w, 0u};
                zgc_mma<T>::run(d, a1, (uint32_t)buf[u].x, (uint32_t)buf[u].y);
                zgc_mma<T>::run(d, a2, (uint32_t)buf[u].z, (uint32_t)buf[u].w);
            }
        }
        if (it + 2 < items) load(buf, it + 2);
        if (b == nb - 1) { /* the group is done: d[0], d[1] = (input row r, columns 2q, 2q + 1) */
            int p = gi & 1;
            red[p][warp][lane][0] = d[0];
            red[p][warp][lane][1] = d[1];
            d[0] = d[1] = d[2] = d[3] = 0.0f;
            __syncthreads(); /* red[p] is read below and written again two groups later, after the next one */
            if (on < N && o < OC) {
                int src = on * 4 + oc / 2, k = oc % 2;
                float s = 0.0f;
#pragma unroll
                for (int wi = 0; wi < W; wi++) s += red[p][wi][src][k];
                s += eb;
                size_t i = (size_t)on * OC + o;
                if (pre_gelu) {
                    pre_gelu[i] = zgc_from_f<T>(s);
                    out[i] = zgc_from_f<T>(zgc_gelu(s));
                } else {
                    out[i] = zgc_from_f<T>(s + er);
                }
            }
        }
    };
    for (int it = 0; it < items; it += 2) {
        step(bufa, it);
        if (it + 1 < items) step(bufb, it + 1);
    }
}
/* fp32 has no such mma: v1's warp per column runs instead */
#define ZGC_GEMV2_NO_F32(LN, MINB)                                                                                     \
    template <>                                                                                                        \
    __global__ void zgc_gemv2_kernel<float, LN, MINB>(float *, float *, const float *, const float *, const float *,   \
                                                      const float *, const float *, const float *, int, int, int,      \
                                                      int) {}
ZGC_GEMV2_NO_F32(true, 3)
ZGC_GEMV2_NO_F32(false, 3)
ZGC_GEMV2_NO_F32(true, 4)
ZGC_GEMV2_NO_F32(false, 4)
#undef ZGC_GEMV2_NO_F32

static bool zgc_gemv_aligned(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* v2's dynamic shared memory: the N input rows, and with the LayerNorm its gains and biases */
static size_t zgc_gemv2_smem(int N, int C, size_t es, bool ln) {
    int nv = (int)((size_t)C * es / 16);
    return ((size_t)N * (size_t)zgc_gemv2_xstride(nv) + (ln ? 2 * (size_t)nv : 0)) * 16;
}

/* The kernel for this product (ZGC_GEMV_*; ZGC_GEMV_CUBLASLT: the caller runs cuBLASLt / the two ops).
 * fp32 has no tensor-core form: v1's warp per column; v2 where its input stage (and, ln, the LayerNorm parameters) fits; else v1. */
static int zgc_gemv_fits(zg_backend *be, const void *inp, const void *w, int N, int C, int OC, bool ln) {
    size_t es = zgc_dtype_bytes(be->act_dtype);
    int kind = zgc_gemv_pick(N, C, OC);
    if (kind < 0)
        ZG_FATAL("ZGPT_GEMV=%s: not a product kernel (cublaslt, v1, simt or v2; unset: the per-shape choice)",
                 getenv("ZGPT_GEMV"));
    if (kind == ZGC_GEMV_CUBLASLT || !(N >= 1 && N <= ZGC_GEMV_MAX_N && OC >= 1 && ((size_t)C * es) % 16 == 0 &&
                                       zgc_gemv_aligned(inp) && zgc_gemv_aligned(w)))
        return ZGC_GEMV_CUBLASLT;
    if (be->act_dtype == ZG_F32) return ZGC_GEMV_V1_SIMT;
    if (kind == ZGC_GEMV_V2 && zgc_gemv2_smem(N, C, es, ln) > ZGC_GEMV2_MAX_SMEM) return ZGC_GEMV_V1;
    return kind;
}

/* v2's A/B knobs, read per launch (none changes a bit of the result): ZGPT_GEMV_GRID=1..4 blocks per
 * SM in the grid (default ZGC_GEMV2_BLOCKS_PER_SM), ZGPT_GEMV_MINB=3|4 the register budget (default
 * ZGC_GEMV2_MIN_BLOCKS), ZGPT_GEMV_PREFETCH=0|1 (the L2 prefetch before the wait; default 0: v0.15 measured
 * the XL step at B=1 2.393 ms without it, 2.432 ms with it). A digit outside lo..hi, or anything else, is
 * refused. */
static int zgc_gemv2_knob(const char *name, int lo, int hi, int dflt) {
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') return dflt;
    if (v[1] != '\0' || v[0] < '0' + lo || v[0] > '0' + hi)
        ZG_FATAL("%s=%s: expected one digit from %d to %d (unset: %d)", name, v, lo, hi, dflt);
    return v[0] - '0';
}

static void zgc_gemv2_launch(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *lnw,
                             const void *lnb, const void *w, const void *bias, const void *residual, int N, int C,
                             int OC) {
    zgc_impl *im = zgc_get(be);
    unsigned groups = (unsigned)((OC + ZGC_GEMV2_COLS - 1) / ZGC_GEMV2_COLS);
    int bps = zgc_gemv2_knob("ZGPT_GEMV_GRID", 1, 4, ZGC_GEMV2_BLOCKS_PER_SM);
    int minb = zgc_gemv2_knob("ZGPT_GEMV_MINB", 3, 4, ZGC_GEMV2_MIN_BLOCKS);
    size_t smem = zgc_gemv2_smem(N, C, zgc_dtype_bytes(be->act_dtype), lnw != NULL);
    int pf = zgc_gemv2_knob("ZGPT_GEMV_PREFETCH", 0, 1, 0) ? ZGC_GEMV2_PREFETCH_BYTES : 0;
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = minb == 4 ? (lnw ? zgc_gemv2_kernel<T, true, 4> : zgc_gemv2_kernel<T, false, 4>)
                              : (lnw ? zgc_gemv2_kernel<T, true, 3> : zgc_gemv2_kernel<T, false, 3>);
        if (smem > 48 * 1024 - sizeof(float) * 2 * ZGC_GEMV_WARPS * 32 * 2) /* past the default: opt in */
            ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        /* one wave: no more blocks per SM than it holds at once (large input stages: 2, or 1) */
        int fit = 0;
        ZG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kern, ZGC_GEMV_THREADS, smem));
        if (fit >= 1 && fit < bps) bps = fit;
        unsigned cap = (unsigned)(bps * (im->num_sms > 0 ? im->num_sms : 1));
        unsigned blocks = groups < cap ? groups : cap;
        zgc_launch(be, kern, dim3(blocks), dim3(ZGC_GEMV_THREADS), smem, 0, (T *)out, (T *)pre_gelu, (const T *)inp,
                   (const T *)lnw, (const T *)lnb, (const T *)w, (const T *)bias, (const T *)residual, N, C, OC, pf);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

static void zgc_gemv_launch(zg_backend *be, int kind, void *out, void *pre_gelu, const void *inp, const void *lnw,
                            const void *lnb, const void *w, const void *bias, const void *residual, int N, int C,
                            int OC) {
    if (kind == ZGC_GEMV_V2) {
        zgc_gemv2_launch(be, out, pre_gelu, inp, lnw, lnb, w, bias, residual, N, C, OC);
        return;
    }
    unsigned blocks = (unsigned)((OC + ZGC_GEMV_WARPS - 1) / ZGC_GEMV_WARPS);
    size_t smem = lnw ? (size_t)N * C * zgc_dtype_bytes(be->act_dtype) : 0;
    bool mma = kind == ZGC_GEMV_V1 && N >= 2; /* fp32: zgc_gemv_fits says V1_SIMT */
    if (mma) blocks = (unsigned)((OC + ZGC_GEMV_MMA_COLS - 1) / ZGC_GEMV_MMA_COLS);
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = mma ? (lnw ? zgc_gemv_mma_kernel<T, true> : zgc_gemv_mma_kernel<T, false>)
                        : (lnw ? zgc_gemv_kernel<T, true> : zgc_gemv_kernel<T, false>);
        zgc_launch(be, kern, dim3(blocks), dim3(ZGC_GEMV_THREADS), smem, 0, (T *)out, (T *)pre_gelu, (const T *)inp,
                   (const T *)lnw, (const T *)lnb, (const T *)w, (const T *)bias, (const T *)residual, N, C, OC);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

int zgc_gemv_forward(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                     const void *residual, int N, int C, int OC) {
    int kind = zgc_gemv_fits(be, inp, w, N, C, OC, false);
    if (kind == ZGC_GEMV_CUBLASLT) return 0;
    zgc_gemv_launch(be, kind, out, pre_gelu, inp, NULL, NULL, w, bias, residual, N, C, OC);
    return 1;
}

/* v1: the normalised rows fit the default 48 KiB of shared memory beside the tensor-core form's 4 KiB
 * of fragments (C = 1600: 8 rows in bf16 take 25.6 KB); v2: zgc_gemv_fits checked its stage. The
 * LayerNorm parameters are whole 16-byte vectors (in the parameter dtype, which is the activations'). */
void zgc_layernorm_matmul_forward(zg_backend *be, void *out, void *pre_gelu, void *ln, const void *inp, const void *lnw,
                                  const void *lnb, const void *w, const void *bias, int N, int C, int OC) {
    size_t smem = (size_t)N * C * zgc_dtype_bytes(be->act_dtype);
    int kind = zgc_gemv_fits(be, inp, w, N, C, OC, true);
    if (kind != ZGC_GEMV_CUBLASLT && be->param_dtype == be->act_dtype &&
        (kind == ZGC_GEMV_V2 || smem + 4096 <= 48 * 1024) && zgc_gemv_aligned(lnw) && zgc_gemv_aligned(lnb)) {
        zgc_gemv_launch(be, kind, out, pre_gelu, inp, lnw, lnb, w, bias, NULL, N, C, OC);
        return;
    }
    zg_layernorm_matmul_compose(be, out, pre_gelu, ln, inp, lnw, lnb, w, bias, N, C, OC);
}
