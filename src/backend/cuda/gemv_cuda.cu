/* matmul_forward for a few rows (N <= ZGC_GEMV_MAX_N: one decode step's batch): out (N,OC) =
 * inp (N,C) @ w (OC,C)^T + bias + residual, or pre_gelu = that and out = gelu(pre_gelu).
 * With so few rows the product is a read of the weights; cuBLASLt's tiles leave most SMs idle at
 * these shapes (about 1 TB/s on the H200 at GPT-2 XL's). Three generations of kernels (zgc_gemv_pick in
 * cuda_internal.h chooses; ZGPT_GEMV=cublaslt|v1|simt|v2|v3 for A/B runs):
 *   v1 (v0.11-v0.13): one warp per output column at 1 row, the tensor-core form below from 2 rows;
 *   v2 (v0.14): one tensor-core kernel for 1..8 rows, sized for the whole GPU and for PDL (below);
 *   v3 (v0.18): v2's arithmetic over a shared-memory ring of weights filled before the PDL wait (below).
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
 * instruction to its last. The grid is at most ZGC_GEMV2_BLOCKS_PER_SM blocks per SM (one wave, no cold
 * second wave; a third of an SM's registers per block, so a block of the next product fits beside two
 * running ones and PDL can start its loads early). Before the PDL wait each block loads its first two
 * batches, copies the LayerNorm's parameters to shared memory (cp.async) and prefetches the first
 * ZGC_GEMV2_PREFETCH_BYTES of its groups to L2 (a group's 8 rows are one contiguous range:
 * cp.async.bulk.prefetch on sm_90); after it the N input rows are staged in shared memory once per block
 * (cp.async, all in flight; LayerNorm: warp n then normalises row n there with the warp LayerNorm kernel's
 * arithmetic, so the values are layernorm_forward's). A group's 8 warp fragments are added in warp order
 * in shared memory, then bias, GELU or residual (loaded when the group starts), one thread per output:
 * a fixed order whatever the grid, so the same bits on every run, not v1's bits (another order of sums). */
#define ZGC_GEMV2_COLS 8          /* output columns of a group: the mma's n */
#define ZGC_GEMV2_UNROLL 4        /* chunks per buffer and lane (two buffers) */
#define ZGC_GEMV2_BLOCKS_PER_SM 2 /* the grid's cap per SM (ZGPT_GEMV_GRID=1..3 for A/B runs) */
/* registers for 3 blocks per SM (<= 85 a thread): two of this product's blocks leave room for one of
 * the next product's, which PDL starts early */
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

template <typename T, bool LN>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS, ZGC_GEMV2_MIN_BLOCKS)
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
template <>
__global__ void zgc_gemv2_kernel<float, true>(float *, float *, const float *, const float *, const float *,
                                              const float *, const float *, const float *, int, int, int, int) {}
template <>
__global__ void zgc_gemv2_kernel<float, false>(float *, float *, const float *, const float *, const float *,
                                               const float *, const float *, const float *, int, int, int, int) {}

/* v2's dynamic shared memory: the N input rows, and with the LayerNorm its gains and biases */
static size_t zgc_gemv2_smem(int N, int C, size_t es, bool ln) {
    int nv = (int)((size_t)C * es / 16);
    return ((size_t)N * (size_t)zgc_gemv2_xstride(nv) + (ln ? 2 * (size_t)nv : 0)) * 16;
}

/* ---- v3: v2's arithmetic over weights staged in shared memory, deep before the PDL wait -------------
 * Where v2 left the decode step (v0.15-v0.16): the 48 x 4 products chained in a graph read 2.95 GB in
 * 1.62 ms on the H200 (1.8 TB/s, 38% of HBM) and 1.77 ms on the H100, against ~0.8 ms at a copy's rate.
 * Counting the gap: ~3-4 us per product beyond its bytes. A product cannot start its arithmetic before the
 * one before it has completed (its input row), and v2 has only its first two batches in flight when it
 * waits: 32 KB in registers per block, one of its two blocks per SM resident early (the SM's registers),
 * so DRAM idles from the previous product's tail to this one's first uses (staging the input, the
 * LayerNorm), every product.
 * v3 stages the weights in shared memory with cp.async: a ring of ZGC_GEMV3_MAX_STAGES slots of 16.5 KB
 * per block, one block per SM (grid = SMs), at most ZGC_GEMV3_SMEM bytes a block so that the next
 * product's block fits beside a running one (two per SM). Before the PDL wait a block fills its whole
 * ring (~84 KB: ~11 MB across an H200, most of a 15-20 MB product), so the next product's weights stream
 * while this one finishes; after the wait it computes from shared memory while the ring refills.
 * Block b owns the output rows [b*OC/G, (b+1)*OC/G) (G blocks), one contiguous weight range (bytes within
 * one row of each other across blocks: v2's 8-column groups left 24% of the work on the busiest block at
 * qkv and fc). Its rows are taken in groups of 8 from its first (the last group may be short), each group
 * in slabs of ZGC_GEMV3_SLAB input positions; an item = (group, slab) = one ring slot (8 rows x 2 KB, the
 * row stride padded by 64 bytes so a quarter-warp's two rows fall in different banks).
 * The arithmetic is v2's, in v2's order: warp w takes the 32-position chunks c = w (mod 8) of each row in
 * increasing order (a slab holds 32 chunks, so the chunk's warp does not change across slabs), lane 4r+q
 * the 16-byte vector 4c+q of weight row r and of input row r, two mma per chunk accumulating in d across
 * the group's slabs, then the 8 warps' fragments added in warp order, + bias, then GELU or + residual:
 * the same bits as v2 for every shape and grid (the op tests check it). One __syncthreads per item: after
 * it, the slot of the item before is refilled (every thread is past its use) with the item NS slots on. */
#define ZGC_GEMV3_SLAB 1024                           /* input positions per slot row (16-bit: 2 KB) */
#define ZGC_GEMV3_ROW_BYTES (ZGC_GEMV3_SLAB * 2 + 64) /* a slot row: 2 KB + 64 bytes (banks) */
#define ZGC_GEMV3_SLOT_BYTES (ZGC_GEMV2_COLS * ZGC_GEMV3_ROW_BYTES)
#define ZGC_GEMV3_MAX_STAGES 13
#define ZGC_GEMV3_MIN_STAGES 3
/* a block's shared memory (dynamic + static), KiB: two blocks and their 1 KB reserves within an H100/H200
 * SM's 228 KB, so the next product's block is resident beside the running one. ZGPT_GEMV3_KB=48..227
 * for A/B runs (above 113: one block per SM, a deeper ring, no early start beside the running product) */
#define ZGC_GEMV3_KB 100
#define ZGC_GEMV3_STATIC (ZGC_GEMV_WARPS * 32 * 2 * sizeof(float))

/* v3's dynamic shared memory without the ring: the N input rows, and with the LayerNorm its parameters */
static size_t zgc_gemv3_extra(int N, int C, size_t es, bool ln) { return zgc_gemv2_smem(N, C, es, ln); }
/* ring slots that fit beside the extra (0: v3 does not fit this product) */
static size_t zgc_gemv3_budget(void) {
    const char *v = getenv("ZGPT_GEMV3_KB");
    if (v == NULL || *v == '\0') return (size_t)ZGC_GEMV3_KB * 1024;
    char *end;
    long kb = strtol(v, &end, 10);
    if (*end != '\0' || kb < 48 || kb > 227)
        ZG_FATAL("ZGPT_GEMV3_KB=%s: expected a block's shared memory in KiB from 48 to 227 (unset: %d)", v,
                 ZGC_GEMV3_KB);
    return (size_t)kb * 1024;
}
static int zgc_gemv3_stages(int N, int C, size_t es, bool ln) {
    size_t extra = zgc_gemv3_extra(N, C, es, ln) + ZGC_GEMV3_STATIC, budget = zgc_gemv3_budget();
    if (extra >= budget) return 0;
    size_t ns = (budget - extra) / ZGC_GEMV3_SLOT_BYTES;
    if (ns > ZGC_GEMV3_MAX_STAGES) ns = ZGC_GEMV3_MAX_STAGES;
    return ns < ZGC_GEMV3_MIN_STAGES ? 0 : (int)ns;
}

/* cp.async.wait_group with a count known at run time (the ring's depth): at most n groups in flight */
__device__ __forceinline__ void zgc_gemv3_wait(int n) {
    switch (n) {
    case 1: zgc_cp_wait<1>(); break;
    case 2: zgc_cp_wait<2>(); break;
    case 3: zgc_cp_wait<3>(); break;
    case 4: zgc_cp_wait<4>(); break;
    case 5: zgc_cp_wait<5>(); break;
    case 6: zgc_cp_wait<6>(); break;
    case 7: zgc_cp_wait<7>(); break;
    case 8: zgc_cp_wait<8>(); break;
    case 9: zgc_cp_wait<9>(); break;
    case 10: zgc_cp_wait<10>(); break;
    case 11: zgc_cp_wait<11>(); break;
    case 12: zgc_cp_wait<12>(); break;
    case 13: zgc_cp_wait<13>(); break;
    default: zgc_cp_wait<0>(); break; /* stricter is always correct */
    }
}

template <typename T, bool LN>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS, 2)
    zgc_gemv3_kernel(T *out, T *pre_gelu, const T *inp, const T *lnw, const T *lnb, const T *w, const T *bias,
                     const T *residual, int N, int C, int OC, int NS) {
    constexpr int W = ZGC_GEMV_WARPS, G = ZGC_GEMV2_COLS, SV = ZGC_GEMV3_SLAB * 2 / 16; /* vectors per slab row */
    /* NS ring slots, then the N input rows (row stride zgc_gemv2_xstride vectors), then (LN) gains, biases */
    extern __shared__ int4 smem3[];
    __shared__ float red[W][32][2];
    char *ring = reinterpret_cast<char *>(smem3);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, r = lane / 4, q = lane % 4;
    int nv = (int)(C * sizeof(T) / 16), xstride = zgc_gemv2_xstride(nv);
    int4 *xs = reinterpret_cast<int4 *>(ring + (size_t)NS * ZGC_GEMV3_SLOT_BYTES);
    int4 *lnws = xs + (size_t)N * xstride, *lnbs = lnws + nv;
    /* this block's rows; every block has at least one (G <= OC) */
    int r0 = (int)((long long)blockIdx.x * OC / gridDim.x), r1 = (int)((long long)(blockIdx.x + 1) * OC / gridDim.x);
    int ns = (nv + SV - 1) / SV;              /* slabs per row */
    int items = ((r1 - r0 + G - 1) / G) * ns; /* (group, slab) pairs */
    const int4 zero = make_int4(0, 0, 0, 0);
    /* item it's 8 rows x one slab into slot `slot` (rows past r1 and vectors past the row left alone:
     * their lanes read zeros, below) */
    auto fill = [&](int it, int slot) {
        int g = it / ns, s = it - g * ns, rows = min(G, r1 - r0 - g * G), v0 = s * SV, sv = min(SV, nv - v0);
        const int4 *src = reinterpret_cast<const int4 *>(w) + (size_t)(r0 + g * G) * nv + v0;
        char *dst = ring + (size_t)slot * ZGC_GEMV3_SLOT_BYTES;
        /* thread t: vector t % SV of rows t / SV, + 256 / SV, ... (SV a power of two: no division) */
        int j = (int)threadIdx.x % SV;
        if (j < sv)
            for (int rr = (int)threadIdx.x / SV; rr < rows; rr += ZGC_GEMV_THREADS / SV)
                zgc_cp_async16(dst + (size_t)rr * ZGC_GEMV3_ROW_BYTES + (size_t)j * 16, src + (size_t)rr * nv + j);
    };
    /* before the wait: the LayerNorm's parameters (the oldest group), then the whole ring. Nothing earlier
     * in the stream writes either; the groups complete in order, so wait<k> below counts slots only */
    if (LN) {
        for (int i = threadIdx.x; i < nv; i += blockDim.x) {
            zgc_cp_async16(lnws + i, reinterpret_cast<const int4 *>(lnw) + i);
            zgc_cp_async16(lnbs + i, reinterpret_cast<const int4 *>(lnb) + i);
        }
        zgc_cp_commit();
    }
    for (int i = 0; i < NS; i++) {
        if (i < items) fill(i, i);
        zgc_cp_commit(); /* empty past the last item: group i is item i */
    }
    zgc_pdl_wait(); /* inp, residual and out belong to the kernels before */
    zgc_pdl_trigger();
    /* the N input rows (a few KB, in L2): plain loads, all issued before the stores */
    {
        const int4 *xg = reinterpret_cast<const int4 *>(inp);
        int total = N * nv;
        for (int i0 = threadIdx.x; i0 < total; i0 += 4 * blockDim.x) {
            int4 v[4];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int i = i0 + u * (int)blockDim.x;
                v[u] = i < total ? xg[i] : zero;
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int i = i0 + u * (int)blockDim.x;
                if (i < total) {
                    int n = i / nv;
                    xs[(size_t)n * xstride + (i - n * nv)] = v[u];
                }
            }
        }
    }
    if (LN) zgc_gemv3_wait(NS); /* all but the NS newest (the ring): the parameters */
    __syncthreads();
    if (LN) { /* warp n normalises row n in place, as v2 does */
        if (warp < N) {
            int4 *row = xs + (size_t)warp * xstride;
            zgc_gemv_ln_row<T>(reinterpret_cast<zgc_vec<T> *>(row), reinterpret_cast<const T *>(row),
                               reinterpret_cast<const T *>(lnws), reinterpret_cast<const T *>(lnbs), C);
        }
        __syncthreads();
    }
    int on = (int)threadIdx.x / G, oc = (int)threadIdx.x % G; /* the output this thread stores per group */
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}, eb = 0.0f, er = 0.0f;
    for (int it = 0; it < items; it++) {
        /* item it has landed once all but NS - 2 groups have (NS - 1 at it = 0): before this wait the groups
         * are (the parameters,) the NS fills and one refill per iteration from 1 to it - 1, and item k is
         * the k-th of the ring's groups (item k >= NS comes with iteration k - NS + 1's refill) */
        zgc_gemv3_wait(it == 0 ? NS - 1 : NS - 2);
        __syncthreads();
        if (it >= 1) { /* every thread is past item it - 1: its slot takes item it - 1 + NS */
            if (it - 1 + NS < items) fill(it - 1 + NS, (it - 1) % NS);
            zgc_cp_commit(); /* (empty past the last item) */
        }
        int g = it / ns, s = it - g * ns, o = r0 + g * G + oc;
        if (s == 0 && on < N && o < r1) { /* the epilogue's operands, loading beside the group */
            eb = bias ? zgc_to_f(bias[o]) : 0.0f;
            er = residual ? zgc_to_f(residual[(size_t)on * OC + o]) : 0.0f;
        }
        const char *slot = ring + (size_t)(it % NS) * ZGC_GEMV3_SLOT_BYTES + (size_t)r * ZGC_GEMV3_ROW_BYTES;
        int v0 = s * SV, sv = min(SV, nv - v0), rowok = r0 + g * G + r < r1;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int jl = 4 * (warp + W * u) + q; /* vector in the slab; chunk warp + W u of 32 */
            if (4 * (warp + W * u) < sv) {   /* the chunk holds data (the whole warp agrees) */
                bool in = jl < sv;
                int4 wv = in && rowok ? *reinterpret_cast<const int4 *>(slot + (size_t)jl * 16) : zero;
                int4 xv = r < N && in ? xs[(size_t)r * xstride + v0 + jl] : zero;
                uint32_t a1[4] = {(uint32_t)xv.x, 0u, (uint32_t)xv.y, 0u};
                uint32_t a2[4] = {(uint32_t)xv.z, 0u, (uint32_t)xv.w, 0u};
                zgc_mma<T>::run(d, a1, (uint32_t)wv.x, (uint32_t)wv.y);
                zgc_mma<T>::run(d, a2, (uint32_t)wv.z, (uint32_t)wv.w);
            }
        }
        if (s == ns - 1) { /* the group is done: d[0], d[1] = (input row r, columns 2q, 2q + 1) */
            red[warp][lane][0] = d[0];
            red[warp][lane][1] = d[1];
            d[0] = d[1] = d[2] = d[3] = 0.0f;
            __syncthreads(); /* red is written again at the next group's end, after the next item's barrier */
            if (on < N && o < r1) {
                int src = on * 4 + oc / 2, k = oc % 2;
                float sum = 0.0f;
#pragma unroll
                for (int wi = 0; wi < W; wi++) sum += red[wi][src][k];
                sum += eb;
                size_t i = (size_t)on * OC + o;
                if (pre_gelu) {
                    pre_gelu[i] = zgc_from_f<T>(sum);
                    out[i] = zgc_from_f<T>(zgc_gelu(sum));
                } else {
                    out[i] = zgc_from_f<T>(sum + er);
                }
            }
        }
    }
    zgc_cp_wait<0>(); /* nothing of this block's may still be landing when it exits */
}
/* fp32 has no such mma: v1's warp per column runs instead */
template <>
__global__ void zgc_gemv3_kernel<float, true>(float *, float *, const float *, const float *, const float *,
                                              const float *, const float *, const float *, int, int, int, int) {}
template <>
__global__ void zgc_gemv3_kernel<float, false>(float *, float *, const float *, const float *, const float *,
                                               const float *, const float *, const float *, int, int, int, int) {}

static bool zgc_gemv_aligned(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* The kernel for this product (ZGC_GEMV_*; ZGC_GEMV_CUBLASLT: the caller runs cuBLASLt / the two ops).
 * fp32 has no tensor-core form: v1's warp per column; v2 where its input stage (and, ln, the LayerNorm parameters) fits; else v1. */
static int zgc_gemv_fits(zg_backend *be, const void *inp, const void *w, int N, int C, int OC, bool ln) {
    size_t es = zgc_dtype_bytes(be->act_dtype);
    int kind = zgc_gemv_pick(N);
    if (kind < 0)
        ZG_FATAL("ZGPT_GEMV=%s: not a product kernel (cublaslt, v1, simt, v2 or v3; unset: the per-shape choice)",
                 getenv("ZGPT_GEMV"));
    if (kind == ZGC_GEMV_CUBLASLT || !(N >= 1 && N <= ZGC_GEMV_MAX_N && OC >= 1 && ((size_t)C * es) % 16 == 0 &&
                                       zgc_gemv_aligned(inp) && zgc_gemv_aligned(w)))
        return ZGC_GEMV_CUBLASLT;
    if (be->act_dtype == ZG_F32) return ZGC_GEMV_V1_SIMT;
    if (kind == ZGC_GEMV_V3 && zgc_gemv3_stages(N, C, es, ln) == 0) kind = ZGC_GEMV_V2; /* the ring does not fit */
    if (kind == ZGC_GEMV_V2 && zgc_gemv2_smem(N, C, es, ln) > ZGC_GEMV2_MAX_SMEM) return ZGC_GEMV_V1;
    return kind;
}

/* v2's A/B knobs, read per launch (neither changes a bit of the result): ZGPT_GEMV_GRID=1..3 blocks per
 * SM in the grid (default ZGC_GEMV2_BLOCKS_PER_SM), ZGPT_GEMV_PREFETCH=0|1 (the L2 prefetch before the
 * wait; default 0: v0.15 measured the XL step at B=1 2.393 ms without it, 2.432 ms with it). A digit outside lo..hi, or anything else, is refused. */
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
    int bps = zgc_gemv2_knob("ZGPT_GEMV_GRID", 1, 3, ZGC_GEMV2_BLOCKS_PER_SM);
    unsigned cap = (unsigned)(bps * (im->num_sms > 0 ? im->num_sms : 1));
    unsigned blocks = groups < cap ? groups : cap;
    size_t smem = zgc_gemv2_smem(N, C, zgc_dtype_bytes(be->act_dtype), lnw != NULL);
    int pf = zgc_gemv2_knob("ZGPT_GEMV_PREFETCH", 0, 1, 0) ? ZGC_GEMV2_PREFETCH_BYTES : 0;
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = lnw ? zgc_gemv2_kernel<T, true> : zgc_gemv2_kernel<T, false>;
        if (smem > 48 * 1024 - sizeof(float) * 2 * ZGC_GEMV_WARPS * 32 * 2) /* past the default: opt in */
            ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        zgc_launch(be, kern, dim3(blocks), dim3(ZGC_GEMV_THREADS), smem, 0, (T *)out, (T *)pre_gelu, (const T *)inp,
                   (const T *)lnw, (const T *)lnb, (const T *)w, (const T *)bias, (const T *)residual, N, C, OC, pf);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

static void zgc_gemv3_launch(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *lnw,
                             const void *lnb, const void *w, const void *bias, const void *residual, int N, int C,
                             int OC) {
    zgc_impl *im = zgc_get(be);
    size_t es = zgc_dtype_bytes(be->act_dtype);
    int ns = zgc_gemv3_stages(N, C, es, lnw != NULL); /* >= ZGC_GEMV3_MIN_STAGES: zgc_gemv_fits checked */
    unsigned sms = (unsigned)(im->num_sms > 0 ? im->num_sms : 1);
    /* ZGPT_GEMV_GRID=1..3 blocks per SM (default 1), for A/B runs as with v2 */
    unsigned per = (unsigned)zgc_gemv2_knob("ZGPT_GEMV_GRID", 1, 3, 1);
    unsigned blocks = (unsigned)OC < per * sms ? (unsigned)OC : per * sms; /* every block owns at least one row */
    size_t smem = (size_t)ns * ZGC_GEMV3_SLOT_BYTES + zgc_gemv3_extra(N, C, es, lnw != NULL);
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = lnw ? zgc_gemv3_kernel<T, true> : zgc_gemv3_kernel<T, false>;
        ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        /* the whole of the SM's 228 KB as shared memory: two of these blocks (consecutive products) fit */
        ZG_CUDA_CHECK(
            cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
        zgc_launch(be, kern, dim3(blocks), dim3(ZGC_GEMV_THREADS), smem, 0, (T *)out, (T *)pre_gelu, (const T *)inp,
                   (const T *)lnw, (const T *)lnb, (const T *)w, (const T *)bias, (const T *)residual, N, C, OC, ns);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

static void zgc_gemv_launch(zg_backend *be, int kind, void *out, void *pre_gelu, const void *inp, const void *lnw,
                            const void *lnb, const void *w, const void *bias, const void *residual, int N, int C,
                            int OC) {
    if (kind == ZGC_GEMV_V3) {
        zgc_gemv3_launch(be, out, pre_gelu, inp, lnw, lnb, w, bias, residual, N, C, OC);
        return;
    }
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
        (kind == ZGC_GEMV_V2 || kind == ZGC_GEMV_V3 || smem + 4096 <= 48 * 1024) && zgc_gemv_aligned(lnw) &&
        zgc_gemv_aligned(lnb)) {
        zgc_gemv_launch(be, kind, out, pre_gelu, inp, lnw, lnb, w, bias, NULL, N, C, OC);
        return;
    }
    zg_layernorm_matmul_compose(be, out, pre_gelu, ln, inp, lnw, lnb, w, bias, N, C, OC);
}
