/* The weight ring of the decode step's persistent kernel (decode_layers_cuda.cu, ZGPT_DECODE_LAYERS=3): one
 * block per SM, whose producer warp streams the block's share of every product's weights, in the order the
 * block uses them, into a ring of shared-memory stages (cp.async.bulk, completion on mbarriers), while its
 * 8 consumer warps run the layers' phases behind grid barriers. The weights depend on nothing the step
 * computes, so the stream never waits for a barrier: it runs ahead by the ring's size and keeps DRAM busy
 * across the barriers, the input staging and the LayerNorms, where v0.21's form (=1, =2: weights loaded by
 * the consumers, two batches before each barrier) left it idle.
 *
 * A stage holds one k segment of one column group: the group's 8 weight rows, ZGC_RING_SEGK values of each
 * (a row's bytes padded to ZGC_RING_ROWB: the two rows a quarter-warp's 16-byte loads touch fall in distinct
 * banks). Consumer warp w takes the 32-value chunks w, w + 8, w + 16, w + 24 of each segment, in segment
 * order: the chunks v2's warp w takes (gemv2.cuh), in v2's order, with the same mma and the same fixed order
 * of the group's sums, so the same bits as the per-op kernels (the op test checks). sm_90 only (bulk copies
 * with mbarrier completion); the host side declines elsewhere.
 * Measured (v0.22, H100, XL): bitwise right, and slower than the per-op kernels (step graph B=1 2.600 ms
 * against 2.274, B=8 4.423 against 3.137), while the same stream alone (bench/decode_barrier.cu's ring line)
 * beats a kernel per product (1.180 against 1.334 ms): the consumers set the pace here. Off by default. */
#ifndef ZGPT_BACKEND_CUDA_DECODE_RING_CUH
#define ZGPT_BACKEND_CUDA_DECODE_RING_CUH

#include "backend/cuda/gemv2.cuh"

#define ZGC_RING_SEGK 1024                              /* k values of a row per stage: 32 chunks */
#define ZGC_RING_ROWB (ZGC_RING_SEGK * 2 + 64)          /* a row's bytes in a stage (16-bit types), padded */
#define ZGC_RING_STAGE (ZGC_GEMV2_COLS * ZGC_RING_ROWB) /* 16,896 bytes */
#define ZGC_RING_MAX_STAGES 12
#define ZGC_RING_CONSUMERS ZGC_GEMV_THREADS        /* warps 0-7 */
#define ZGC_RING_THREADS (ZGC_RING_CONSUMERS + 32) /* + the producer warp */
#define ZGC_RING_BAR 3 /* the consumers' named barrier (1 and 2: decode attention's halves) */

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define ZGC_SM90_ONLY(stmt) stmt
#else
#define ZGC_SM90_ONLY(stmt) __trap()
#endif

__device__ __forceinline__ unsigned zgc_smem_addr(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void zgc_mbar_init(uint64_t *b, unsigned count) {
    ZGC_SM90_ONLY(asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(zgc_smem_addr(b)), "r"(count)
                               : "memory"));
}
/* the producer's arrival, with the bytes the stage's copies will complete */
__device__ __forceinline__ void zgc_mbar_expect(uint64_t *b, unsigned bytes) {
    ZGC_SM90_ONLY(
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(zgc_smem_addr(b)), "r"(bytes)
                     : "memory"));
}
__device__ __forceinline__ void zgc_mbar_arrive(uint64_t *b) {
    ZGC_SM90_ONLY(asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(zgc_smem_addr(b)) : "memory"));
}
/* returns once the barrier's phase of this parity has completed */
__device__ __forceinline__ void zgc_mbar_wait(uint64_t *b, unsigned parity) {
    unsigned ok = 0;
    do {
        ZGC_SM90_ONLY(asm volatile("{\n\t.reg .pred p;\n\t"
                                   "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
                                   "selp.u32 %0, 1, 0, p;\n}\n"
                                   : "=r"(ok)
                                   : "r"(zgc_smem_addr(b)), "r"(parity)
                                   : "memory"));
    } while (!ok);
}
/* bytes (a multiple of 16) global -> shared by the TMA unit, completing on mbarrier b */
__device__ __forceinline__ void zgc_bulk_g2s(void *dst, const void *src, unsigned bytes, uint64_t *b) {
    ZGC_SM90_ONLY(
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                         zgc_smem_addr(dst)),
                     "l"(src), "r"(bytes), "r"(zgc_smem_addr(b))
                     : "memory"));
}
__device__ __forceinline__ void zgc_ring_sync() {
    asm volatile("bar.sync %0, %1;\n" ::"n"(ZGC_RING_BAR), "n"(ZGC_RING_CONSUMERS) : "memory");
}

/* The ring kernel's profile (ZGPT_DECODE_RING_PROF=1, an A/B aid: where a block's time goes): per block, SM
 * cycles (clock64) summed over launches into ZGC_RP_N slots by consumer thread 0 (warp 0: the consumers meet
 * at named barriers, so one warp's waits are the block's) and the producer thread. Each mark (lap) adds the
 * cycles since the thread's previous mark to a category, so every cycle is counted once; ZGC_RP_NS: the
 * consumers' time in ns (globaltimer), which turns cycles into time. Reported by zgc_ring_prof_report. */
enum {
    ZGC_RP_BAR,   /* in grid barriers */
    ZGC_RP_STAGE, /* staging the input rows (+ LayerNorm) after a barrier */
    ZGC_RP_FULL,  /* waiting for a stage of weights */
    ZGC_RP_MMA,   /* a stage's products, to the warp's release of it */
    ZGC_RP_EPI,   /* group epilogues (the block's sum, bias, residual, stores) */
    ZGC_RP_ATT,   /* attention: its staging before the barrier, its items after */
    ZGC_RP_OTHER, /* the rest: phase starts (shared memory free, LayerNorm parameters), the end */
    ZGC_RP_CONS,  /* the consumers in all */
    ZGC_RP_EMPTY, /* the producer waiting for a free stage (the ring full: the consumers behind) */
    ZGC_RP_ISSUE, /* the producer issuing its copies */
    ZGC_RP_NS,    /* the consumers in all, ns */
    ZGC_RP_N
};
struct zgc_ring_prof {
    unsigned long long *s;           /* this block's slots; NULL: this thread records nothing */
    long long last;                  /* the thread's previous mark */
    long long acc[ZGC_RP_N];         /* in registers (every lap's k is a constant): added to s once, at the end */
    __device__ void lap(int k) {
        if (s) {
            long long n = clock64();
            acc[k] += n - last;
            last = n;
        }
    }
    __device__ void flush() {
        if (s)
            for (int k = 0; k < ZGC_RP_N; k++) s[k] += (unsigned long long)acc[k];
    }
};
__device__ __forceinline__ unsigned long long zgc_globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

/* The ring's position, walked identically by the producer and the consumers. */
struct zgc_ring {
    char *buf; /* stages x ZGC_RING_STAGE */
    uint64_t *full, *empty;
    int stages, slot;
    unsigned parity;
    __device__ void advance() {
        if (++slot == stages) {
            slot = 0;
            parity ^= 1u;
        }
    }
};

/* A product's walk over block bid's column groups (g = bid, bid + nblk, ...) and each group's k segments. */
struct zgc_ring_walk {
    int groups, ng, nv, nch, nseg;
    __device__ zgc_ring_walk(int K, int OC, int bid, int nblk) {
        groups = OC / ZGC_GEMV2_COLS;
        ng = bid < groups ? (groups - 1 - bid) / nblk + 1 : 0;
        nv = K / 8; /* 16-byte vectors of a row (16-bit types) */
        nch = (nv + 3) / 4;
        nseg = (nch + 31) / 32;
    }
};

/* Producer (one thread): every stage of product w (OC, K) for block bid of nblk, into the ring. */
template <typename T>
__device__ __forceinline__ void zgc_ring_produce(zgc_ring &rg, const T *w, int K, int OC, int bid, int nblk,
                                                 zgc_ring_prof &pf) {
    const zgc_ring_walk wk(K, OC, bid, nblk);
    const size_t rowb = (size_t)K * sizeof(T);
    for (int gi = 0; gi < wk.ng; gi++) {
        const char *g0 = reinterpret_cast<const char *>(w) + (size_t)(bid + gi * nblk) * ZGC_GEMV2_COLS * rowb;
        for (int s = 0; s < wk.nseg; s++) {
            size_t off = (size_t)s * ZGC_RING_SEGK * sizeof(T);
            unsigned bytes = (unsigned)min((size_t)ZGC_RING_SEGK * sizeof(T), rowb - off);
            pf.lap(ZGC_RP_ISSUE);
            zgc_mbar_wait(&rg.empty[rg.slot], rg.parity ^ 1u); /* the first pass finds every stage free */
            pf.lap(ZGC_RP_EMPTY);
            zgc_mbar_expect(&rg.full[rg.slot], ZGC_GEMV2_COLS * bytes);
            char *st = rg.buf + (size_t)rg.slot * ZGC_RING_STAGE;
            for (int r = 0; r < ZGC_GEMV2_COLS; r++)
                zgc_bulk_g2s(st + r * ZGC_RING_ROWB, g0 + r * rowb + off, bytes, &rg.full[rg.slot]);
            rg.advance();
        }
    }
}

/* Consumers (threads 0..255): v2's product (zgc_gemv2_run) with the weights from the ring. xs_raw: the work
 * memory (input rows, LayerNorm parameters); wait(): the grid barrier, after the LayerNorm's parameters are
 * in flight. The same chunks, mma, order of sums and epilogue as v2, so the same bits. */
template <typename T, bool LN, typename Wait>
__device__ __forceinline__ void zgc_ring_consume(const zgc_gemv2_op<T> &a, zgc_ring &rg, int bid, int nblk,
                                                 int4 *xs_raw, zgc_gemv2_red &red, zgc_ring_prof &pf,
                                                 Wait wait) {
    constexpr int W = ZGC_GEMV_WARPS, G = ZGC_GEMV2_COLS;
    const int N = a.N, C = a.C, OC = a.OC;
    const zgc_ring_walk wk(C, OC, bid, nblk);
    const int nv = wk.nv, xstride = zgc_gemv2_xstride(nv);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, r = lane / 4, q = lane % 4;
    const int4 zero = make_int4(0, 0, 0, 0);
    if (LN) zgc_gemv2_ln_params<T>(a, xs_raw, nv, ZGC_RING_CONSUMERS);
    wait(); /* marks its own laps */
    zgc_gemv2_stage_rows<T, LN>(a, xs_raw, nv, ZGC_RING_CONSUMERS, [] { zgc_ring_sync(); });
    pf.lap(ZGC_RP_STAGE);
    const int on = (int)threadIdx.x / G, oc = (int)threadIdx.x % G;
    for (int gi = 0; gi < wk.ng; gi++) {
        const int g = bid + gi * nblk, o = g * G + oc;
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}, eb = 0.0f, er = 0.0f;
        if (on < N && o < OC) {
            eb = a.bias ? zgc_to_f(a.bias[o]) : 0.0f;
            er = a.residual ? zgc_to_f(__ldcg(a.residual + (size_t)on * OC + o)) : 0.0f;
        }
        for (int s = 0; s < wk.nseg; s++) {
            zgc_mbar_wait(&rg.full[rg.slot], rg.parity);
            pf.lap(ZGC_RP_FULL);
            const char *st = rg.buf + (size_t)rg.slot * ZGC_RING_STAGE + r * ZGC_RING_ROWB;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int cl = warp + W * u, c = 32 * s + cl; /* the chunk in the segment, in the row */
                if (c < wk.nch) {
                    const int j = 4 * c + q;
                    const int4 xv = r < N && j < nv ? xs_raw[(size_t)r * xstride + j] : zero;
                    const int4 wv = j < nv ? *reinterpret_cast<const int4 *>(st + (4 * cl + q) * 16) : zero;
                    uint32_t a1[4] = {(uint32_t)xv.x, 0u, (uint32_t)xv.y, 0u};
                    uint32_t a2[4] = {(uint32_t)xv.z, 0u, (uint32_t)xv.w, 0u};
                    zgc_mma<T>::run(d, a1, (uint32_t)wv.x, (uint32_t)wv.y);
                    zgc_mma<T>::run(d, a2, (uint32_t)wv.z, (uint32_t)wv.w);
                }
            }
            __syncwarp();
            if (lane == 0) zgc_mbar_arrive(&rg.empty[rg.slot]); /* this warp is done with the stage */
            rg.advance();
            pf.lap(ZGC_RP_MMA);
        }
        /* the group's 8 warp fragments, in warp order (v2's epilogue) */
        const int p = gi & 1;
        red[p][warp][lane][0] = d[0];
        red[p][warp][lane][1] = d[1];
        zgc_ring_sync();
        if (on < N && o < OC) zgc_gemv2_store<T>(red[p], on, oc, o, OC, eb, er, a.out, a.pre_gelu);
        pf.lap(ZGC_RP_EPI);
    }
}

/* The consumers' grid barrier: a counter that only grows within a launch (arrival n of barrier k waits for
 * nblk * (k + 1)); the last block to leave the kernel puts it back to 0 (zgc_ring_exit). */
__device__ __forceinline__ void zgc_ring_grid_sync(unsigned *ctr, unsigned target) {
    zgc_ring_sync();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(ctr, 1u);
        unsigned v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(ctr) : "memory");
        } while (v < target);
        __threadfence();
    }
    zgc_ring_sync();
}
__device__ __forceinline__ void zgc_ring_exit(unsigned *ctr, unsigned *done, unsigned nblk) {
    if (threadIdx.x != 0) return;
    __threadfence();
    if (atomicAdd(done, 1u) == nblk - 1) { /* every block has passed its last barrier */
        atomicExch(ctr, 0u);
        atomicExch(done, 0u);
    }
}

#endif
