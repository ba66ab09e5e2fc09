/* The few-row product's v2 form (gemv_cuda.cu) as a device function of its own: zgc_gemv2_run over the
 * column groups of block `bid` of `nblk`, with `wait()` where the kernel waits for the previous kernel (PDL).
 * Also the fused LayerNorm of a few rows (v1 and v2) and v2's host-side sizes and A/B knobs. */
#ifndef ZGPT_BACKEND_CUDA_GEMV2_CUH
#define ZGPT_BACKEND_CUDA_GEMV2_CUH

#include "backend/cuda/cuda_internal.h"

#define ZGC_GEMV_THREADS 256
#define ZGC_GEMV_WARPS (ZGC_GEMV_THREADS / 32)

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
 * nothing to specialise. A block of 8 warps owns column groups g = bid, bid + nblk, ... (block bid of nblk; 8
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
/* ... and the deep form's: twice the bytes in flight per warp (121-125 registers: 2 blocks per SM), for grids of
 * at most 2 blocks per SM (XL: the two projections, 200 column groups each). The fc projection's 200 blocks of
 * 102 KB streamed at ~2.2 TB/s where the products of 267-300 blocks reached 2.7-3.2 (v0.24's timeline, H100):
 * too few bytes in flight. With the deep form the XL step graph went 1.919-1.924 -> 1.811-1.815 ms at B=1 and
 * 2.992-3.000 -> 2.931-2.935 at B=8 (H200). The chunk order of a warp's sums does not depend on the unroll
 * (chunk warp + W*k, k = 0, 1, ...), so neither do the bits. */
#define ZGC_GEMV2_UNROLL_DEEP 8
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
/* the even deal of column groups over blocks (zgc_gemv2_launch) up to this many rows: measured better at 1
 * row, slightly worse at 8 (v0.24); 2..7 not measured */
#define ZGC_GEMV2_EVEN_MAX_N 4

/* L2 prefetch of bytes (a multiple of 16) from p (16-byte aligned), by the calling thread */
__device__ __forceinline__ void zgc_gemv2_prefetch(const char *p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#else
    for (unsigned off = 0; off < bytes; off += 128) zgc_prefetch_l2(p + off);
#endif
}

/* One product for zgc_gemv2_run: out (N,OC) = [LN](inp (N,C)) @ w (OC,C)^T + bias, then GELU (pre_gelu
 * non-NULL: the sum stored there too) or + residual (may be NULL, may be out). pf_bytes: the L2 prefetch
 * before the wait (0: none). prof (ZGPT_GEMV_PROF=1, else NULL): 4 global timestamps per block, written by
 * its thread 0: the block's start, the end of its wait, of its input stage, and its end. */
template <typename T> struct zgc_gemv2_op {
    T *out, *pre_gelu;
    const T *inp, *lnw, *lnb, *w, *bias, *residual;
    int N, C, OC, pf_bytes;
    unsigned long long *prof;
};

/* A group's output (input row on, column o of OC; oc = o % 8) from its 8 warps' fragments red, summed in warp
 * order (the fixed order whatever the grid), + the bias eb, then GELU (pre_gelu non-NULL: the sum stored there
 * too) or + the residual er. */
template <typename T>
__device__ __forceinline__ void zgc_gemv2_store(const float (*red)[32][2], int on, int oc, int o, int OC, float eb,
                                                float er, T *out, T *pre_gelu) {
    int src = on * 4 + oc / 2, k = oc % 2;
    float s = 0.0f;
#pragma unroll
    for (int wi = 0; wi < ZGC_GEMV_WARPS; wi++) s += red[wi][src][k];
    s += eb;
    size_t i = (size_t)on * OC + o;
    if (pre_gelu) {
        pre_gelu[i] = zgc_from_f<T>(s);
        out[i] = zgc_from_f<T>(zgc_gelu(s));
    } else {
        out[i] = zgc_from_f<T>(s + er);
    }
}

/* v2's input stage in shared memory xs_raw: the N input rows (row stride zgc_gemv2_xstride(nv) vectors), then
 * (LN) the gains and the biases, by the whole block.
 * zgc_gemv2_ln_params, before the wait: the LayerNorm's parameters (no earlier kernel writes them);
 * zgc_gemv2_stage_rows, after it: the rows, every copy in flight at once, then warp n normalises row n in
 * place (each vector read, then written, by one lane). */
template <typename T>
__device__ __forceinline__ void zgc_gemv2_ln_params(const zgc_gemv2_op<T> &a, int4 *xs_raw, int nv) {
    int4 *lnws = xs_raw + (size_t)a.N * zgc_gemv2_xstride(nv), *lnbs = lnws + nv;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        zgc_cp_async16(lnws + i, reinterpret_cast<const int4 *>(a.lnw) + i);
        zgc_cp_async16(lnbs + i, reinterpret_cast<const int4 *>(a.lnb) + i);
    }
    zgc_cp_commit();
}
template <typename T, bool LN>
__device__ __forceinline__ void zgc_gemv2_stage_rows(const zgc_gemv2_op<T> &a, int4 *xs_raw, int nv) {
    const int N = a.N, xstride = zgc_gemv2_xstride(nv), warp = threadIdx.x / 32;
    const int4 *xg = reinterpret_cast<const int4 *>(a.inp);
    for (int i = threadIdx.x; i < N * nv; i += blockDim.x) {
        int n = i / nv;
        zgc_cp_async16(xs_raw + (size_t)n * xstride + (i - n * nv), xg + i);
    }
    zgc_cp_commit();
    zgc_cp_wait<0>();
    __syncthreads();
    if (LN) {
        const int4 *lnws = xs_raw + (size_t)N * xstride, *lnbs = lnws + nv;
        if (warp < N) {
            int4 *row = xs_raw + (size_t)warp * xstride;
            zgc_gemv_ln_row<T>(reinterpret_cast<zgc_vec<T> *>(row), reinterpret_cast<const T *>(row),
                               reinterpret_cast<const T *>(lnws), reinterpret_cast<const T *>(lnbs), a.C);
        }
        __syncthreads();
    }
}

/* The shared memory zgc_gemv2_run takes: xs_raw (dynamic: zgc_gemv2_smem bytes) and red, the fragments of
 * two column groups (W x 32 x 2 floats each). Inputs (the kernels before wrote them) are read through L2
 * (cp.async.cg, ld.cg). */
typedef float zgc_gemv2_red[2][ZGC_GEMV_WARPS][32][2];
template <typename T, bool LN, int U, typename Wait>
__device__ __forceinline__ void zgc_gemv2_run(const zgc_gemv2_op<T> &a, int bid, int nblk, int4 *xs_raw,
                                              zgc_gemv2_red &red, Wait wait) {
    constexpr int W = ZGC_GEMV_WARPS, G = ZGC_GEMV2_COLS;
    const int N = a.N, C = a.C, OC = a.OC;
    const T *bias = a.bias, *residual = a.residual;
    T *out = a.out, *pre_gelu = a.pre_gelu;
    /* xs_raw: N input rows (row stride zgc_gemv2_xstride vectors), then (LN) the gains and the biases */
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, r = lane / 4, q = lane % 4;
    int nv = (int)(C * sizeof(T) / 16), nch = (nv + 3) / 4, xstride = zgc_gemv2_xstride(nv);
    int groups = (OC + G - 1) / G;
    int nb = ((nch + W - 1) / W + U - 1) / U; /* batches per group (the same for every warp) */
    int ng = bid < groups ? (groups - 1 - bid) / nblk + 1 : 0;
    int items = ng * nb;
    const int4 zero = make_int4(0, 0, 0, 0);
    const int4 *wv = reinterpret_cast<const int4 *>(a.w);
    unsigned long long *prof = a.prof != nullptr && threadIdx.x == 0 ? a.prof + (size_t)bid * 4 : nullptr;
    if (prof) prof[0] = zgc_globaltimer();
    /* item it: group bid + (it / nb) * nblk, this warp's chunks of batch it % nb */
    auto load = [&](int4(&buf)[U], int it) {
        int o = (bid + (it / nb) * nblk) * G + r, b = it % nb;
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
    if (LN) zgc_gemv2_ln_params<T>(a, xs_raw, nv);
    /* the block's first groups into L2 (a group's rows are one contiguous range), 16 KB per lane of warp 0 */
    if (warp == 0 && a.pf_bytes > 0) {
        const size_t rowb = (size_t)C * sizeof(T);
        size_t done = 0;
        for (int gi = 0; gi < ng && done < (size_t)a.pf_bytes; gi++) {
            int g = bid + gi * nblk, rows = min(G, OC - g * G);
            size_t bytes = (size_t)rows * rowb;
            const char *base = reinterpret_cast<const char *>(a.w) + (size_t)g * G * rowb;
            for (size_t off = (size_t)lane * 16384; off < bytes; off += 32 * 16384)
                zgc_gemv2_prefetch(base + off, (unsigned)min((size_t)16384, bytes - off));
            done += bytes;
        }
    }
    wait(); /* inp, residual and out belong to the kernels before */
    if (prof) prof[1] = zgc_globaltimer();
    zgc_gemv2_stage_rows<T, LN>(a, xs_raw, nv);
    if (prof) prof[2] = zgc_globaltimer();
    /* the output this thread stores at each group's end: (input row t / 8, column t % 8) */
    int on = (int)threadIdx.x / G, oc = (int)threadIdx.x % G;
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}, eb = 0.0f, er = 0.0f;
    /* item it from buf; then buf refills with item it + 2 (two buffers by name, no copies: a register
     * copy would wait for the loads in flight) */
    auto step = [&](int4(&buf)[U], int it) {
        int gi = it / nb, b = it % nb, g = bid + gi * nblk, o = g * G + oc;
        if (b == 0 && on < N && o < OC) { /* the epilogue's operands, loading beside the group */
            eb = bias ? zgc_to_f(bias[o]) : 0.0f;
            er = residual ? zgc_to_f(__ldcg(residual + (size_t)on * OC + o)) : 0.0f;
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
            if (on < N && o < OC) zgc_gemv2_store<T>(red[p], on, oc, o, OC, eb, er, out, pre_gelu);
        }
    };
    for (int it = 0; it < items; it += 2) {
        step(bufa, it);
        if (it + 1 < items) step(bufb, it + 1);
    }
    if (prof) prof[3] = zgc_globaltimer();
}

/* 16-byte aligned: what the few-row kernels' vector loads and cp.async need of every operand */
static inline bool zgc_gemv_aligned(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* v2's dynamic shared memory: the N input rows, and with the LayerNorm its gains and biases */
static inline size_t zgc_gemv2_smem(int N, int C, size_t es, bool ln) {
    int nv = (int)((size_t)C * es / 16);
    return ((size_t)N * (size_t)zgc_gemv2_xstride(nv) + (ln ? 2 * (size_t)nv : 0)) * 16;
}

/* v2's A/B knobs, read per launch (none changes a bit of the result): ZGPT_GEMV_GRID=1..4 blocks per
 * SM in the grid (default ZGC_GEMV2_BLOCKS_PER_SM), ZGPT_GEMV_MINB=3|4 the register budget (default
 * ZGC_GEMV2_MIN_BLOCKS), ZGPT_GEMV_PREFETCH=0|1 (the L2 prefetch before the wait; default 0: v0.15 measured
 * the XL step at B=1 2.393 ms without it, 2.432 ms with it). A digit outside lo..hi, or anything else, is
 * refused. */
static inline int zgc_gemv2_knob(const char *name, int lo, int hi, int dflt) {
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') return dflt;
    if (v[1] != '\0' || v[0] < '0' + lo || v[0] > '0' + hi)
        ZG_FATAL("%s=%s: expected one digit from %d to %d (unset: %d)", name, v, lo, hi, dflt);
    return v[0] - '0';
}

#endif
