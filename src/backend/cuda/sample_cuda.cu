/* The sample op on CUDA: one block per row, the logits read from the device (L2-resident: (B,Vp) in the
 * activation dtype), nothing copied to the host. The definition is backend/sample_math.h's, shared with
 * the CPU backend (which runs the same selection serially). The top-k and top-p boundaries are found by
 * radix selection on the 64-bit rank (key << 32 | ~id), four bits per pass from the top, no sorting:
 *   - "the first n" of the order are the ranks >= some threshold; the threshold for "the fewest first
 *     whose f reaches target" (f = 1 for top-k, the integer weight for top-p) is the largest x with
 *     sum{f : rank >= x} >= target, found digit by digit: per pass, every thread adds f of the
 *     candidates still sharing the chosen high digits into 16 register bins, the block adds the bins
 *     (integers: exact, in any order), and the digit is the largest whose bins from the top reach what
 *     is still missing. A bin holding one candidate ends the search (its digits so far separate it).
 *   - the draw: each thread sums the kept weights of a contiguous chunk of ids, a block scan gives each
 *     chunk its start, and the thread whose chunk holds x walks it in id order: the CPU's walk.
 * Integer sums make every step independent of the reduction order, so the token is the CPU's. */
#include "backend/cuda/cuda_internal.h"
#include "backend/sample_math.h"

#define ZGC_SAMPLE_THREADS 512
#define ZGC_SAMPLE_WARPS (ZGC_SAMPLE_THREADS / 32)

/* u64 sum or max over a warp, then over the block (every thread gets it); red holds one value per warp. */
template <bool MAX> __device__ __forceinline__ uint64_t zgc_u64_join(uint64_t a, uint64_t b) {
    return MAX ? (a > b ? a : b) : a + b;
}

template <bool MAX> __device__ __forceinline__ uint64_t zgc_warp_reduce_u64(uint64_t v) {
    for (int o = 16; o > 0; o >>= 1) v = zgc_u64_join<MAX>(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

template <bool MAX> __device__ uint64_t zgc_block_reduce_u64(uint64_t v, uint64_t *red) {
    v = zgc_warp_reduce_u64<MAX>(v);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    uint64_t s = 0;
    for (int w = 0; w < (int)blockDim.x / 32; w++) s = zgc_u64_join<MAX>(s, red[w]);
    __syncthreads();
    return s;
}

/* Exclusive scan of mine over the block's threads in thread order: *start = the sum of lower threads'
 * values; returns the block's total (every thread). scan holds one value per warp and is free again on
 * return. */
__device__ uint64_t zgc_block_exscan_u64(uint64_t mine, uint64_t *scan, uint64_t *start_out) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    uint64_t incl = mine;
    for (int o = 1; o < 32; o <<= 1) {
        uint64_t y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) scan[warp] = incl;
    __syncthreads();
    uint64_t start = incl - mine, total = 0;
    for (int w = 0; w < (int)blockDim.x / 32; w++) {
        if (w < warp) start += scan[w];
        total += scan[w];
    }
    __syncthreads(); /* scan is reused */
    *start_out = start;
    return total;
}

/* The candidate i of a row: its z (then its rank and its weight). STAGED: the row's z were computed
 * once into shared memory (zs), the same bits as computing them on every pass from the logits. */
template <typename T, bool STAGED = false> struct zgc_sample_row_view {
    const T *lg;
    const float *zs;
    float scale, zmax;
    __device__ __forceinline__ float z(int i) const { return STAGED ? zs[i] : zg_sample_z(zgc_to_f(lg[i]), scale); }
};

/* The largest x with sum{f_i : rank_i >= x, rank_i >= keep_from} >= target (f = 1, or the weight when
 * WEIGHTED); see the file comment. */
template <typename View, bool WEIGHTED>
__device__ uint64_t zgc_sample_select(const View &v, int V, uint64_t keep_from, uint64_t target, uint64_t (*bins)[16],
                                      uint32_t (*cnts)[16]) {
    uint64_t prefix = 0, above = 0;
    for (int level = 15; level >= 0; level--) {
        int shift = level * 4;
        uint64_t f[16];
        uint32_t c[16];
#pragma unroll
        for (int d = 0; d < 16; d++) f[d] = 0, c[d] = 0;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            float z = v.z(i);
            uint64_t rank = zg_sample_rank(z, i);
            /* the same high digits as the prefix chosen so far (shift + 4 == 64: every candidate) */
            bool in = rank >= keep_from && (shift + 4 == 64 || (rank >> (shift + 4)) == (prefix >> (shift + 4)));
            if (!in) continue;
            unsigned dig = (unsigned)(rank >> shift) & 15u;
            if (WEIGHTED) { /* counting (top-k) needs no weights: half the bins */
                uint64_t w = zg_sample_weight(z - v.zmax);
#pragma unroll
                for (int d = 0; d < 16; d++) f[d] += dig == (unsigned)d ? w : 0;
            }
#pragma unroll
            for (int d = 0; d < 16; d++) c[d] += dig == (unsigned)d ? 1u : 0u;
        }
#pragma unroll
        for (int d = 0; d < 16; d++) {
            if (WEIGHTED) f[d] = zgc_warp_reduce_u64<false>(f[d]);
            for (int o = 16; o > 0; o >>= 1) c[d] += __shfl_xor_sync(0xffffffffu, c[d], o);
        }
        int warp = threadIdx.x / 32;
        if (threadIdx.x % 32 == 0)
#pragma unroll
            for (int d = 0; d < 16; d++) bins[warp][d] = f[d], cnts[warp][d] = c[d];
        __syncthreads();
        /* every thread picks the digit the same way (the same sums) */
        uint64_t fs[16];
        uint32_t cs[16];
#pragma unroll
        for (int d = 0; d < 16; d++) {
            fs[d] = 0;
            cs[d] = 0;
            for (int w = 0; w < ZGC_SAMPLE_WARPS; w++) fs[d] += bins[w][d], cs[d] += cnts[w][d];
        }
        __syncthreads(); /* bins are rewritten by the next pass */
        if (zg_sample_select_step(fs, cs, WEIGHTED, target, shift, &above, &prefix)) break;
    }
    /* after an early end the prefix's low digits are 0: candidates below keep_from may share its high
     * digits, and they are not kept */
    return prefix > keep_from ? prefix : keep_from;
}

/* The kept weight W (every thread gets it): thread t sums the kept weights of ids [t*chunk, (t+1)*chunk)
 * (*mine) and an exclusive scan over the threads gives where its chunk starts (*start), in id order. */
template <typename View>
__device__ uint64_t zgc_sample_kept(const View &v, int V, uint64_t keep_from, uint64_t *scan, uint64_t *mine_out,
                                    uint64_t *start_out) {
    int chunk = (V + (int)blockDim.x - 1) / (int)blockDim.x;
    int lo = (int)threadIdx.x * chunk, hi = min(V, lo + chunk);
    uint64_t mine = 0;
    for (int i = lo; i < hi; i++) {
        float z = v.z(i);
        if (zg_sample_rank(z, i) >= keep_from) mine += zg_sample_weight(z - v.zmax);
    }
    *mine_out = mine;
    return zgc_block_exscan_u64(mine, scan, start_out);
}

template <typename T, bool STAGED>
__global__ void __launch_bounds__(ZGC_SAMPLE_THREADS)
    zgc_sample_kernel(int32_t *ids, const T *logits, const zg_sample_row *rows, const int32_t *counter, int V, int Vp) {
    extern __shared__ float zs[]; /* STAGED: the row's V values of z */
    __shared__ uint64_t red[ZGC_SAMPLE_WARPS];
    __shared__ uint64_t bins[ZGC_SAMPLE_WARPS][16];
    __shared__ uint32_t cnts[ZGC_SAMPLE_WARPS][16];
    __shared__ uint64_t scan[ZGC_SAMPLE_WARPS];
    zgc_pdl_wait(); /* the logits are the LM head's */
    zgc_pdl_trigger();
    int b = blockIdx.x;
    zg_sample_row r = rows[b];
    bool greedy = r.inv_temperature == 0.0f || r.top_k == 1;
    zgc_sample_row_view<T, STAGED> v;
    v.lg = logits + (size_t)b * Vp;
    v.zs = zs;
    v.scale = greedy ? 1.0f : r.inv_temperature;
    v.zmax = 0.0f;
    if (STAGED) { /* each later pass reads shared memory instead of waiting on global loads */
#pragma unroll 8
        for (int i = threadIdx.x; i < V; i += blockDim.x) zs[i] = zg_sample_z(zgc_to_f(v.lg[i]), v.scale);
        __syncthreads();
    }
    uint64_t best = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        uint64_t rk = zg_sample_rank(v.z(i), i);
        best = rk > best ? rk : best;
    }
    best = zgc_block_reduce_u64<true>(best, red);
    int best_id = (int)(0xffffffffu - (uint32_t)best);
    if (greedy) {
        if (threadIdx.x == 0) ids[b] = best_id;
        return;
    }
    v.zmax = v.z(best_id);
    uint64_t keep_from = 0;
    if (r.top_k > 0 && r.top_k < V)
        keep_from = zgc_sample_select<decltype(v), false>(v, V, 0, (uint64_t)r.top_k, bins, cnts);
    uint64_t mine, start;
    uint64_t W = zgc_sample_kept(v, V, keep_from, scan, &mine, &start);
    if (r.top_p < 1.0f && W > 0) {
        keep_from =
            zgc_sample_select<decltype(v), true>(v, V, keep_from, zg_sample_top_p_target(r.top_p, W), bins, cnts);
        W = zgc_sample_kept(v, V, keep_from, scan, &mine, &start);
    }
    if (W == 0) { /* every weight rounded to 0 (infinite or NaN logits): the first candidate */
        if (threadIdx.x == 0) ids[b] = best_id;
        return;
    }
    uint64_t x = zg_sample_scale(zg_sample_random(r.seed, (uint32_t)*counter), W);
    int chunk = (V + (int)blockDim.x - 1) / (int)blockDim.x;
    int lo = (int)threadIdx.x * chunk, hi = min(V, lo + chunk);
    if (mine > 0 && start <= x && x < start + mine) {
        uint64_t cum = start;
        for (int i = lo; i < hi; i++) {
            float z = v.z(i);
            if (zg_sample_rank(z, i) < keep_from) continue;
            cum += zg_sample_weight(z - v.zmax);
            if (cum > x) {
                ids[b] = i;
                break;
            }
        }
    }
}

/* ---- the multi-block sampler: a thread-block cluster per row (sm_90+) -----------------------------
 * The same definition and the same radix selection as the kernel above, with the row's candidates
 * split over the NB blocks of a cluster (block k: ids [k*slice, (k+1)*slice)), so that every pass runs
 * on NB SMs instead of one. Each block stages its slice's z and integer weights in shared memory once;
 * a pass's per-block sums (16 digit bins, a maximum, a kept weight) are exchanged through distributed
 * shared memory after one cluster barrier (a thread per block and bin reads them in parallel, shuffles add
 * them; integers: the same totals in any order, so the same cut
 * and the same token as the one-block kernel and the CPU). Exchange buffers alternate between two
 * slots, so one barrier per exchange suffices: a block writes slot p & 1 again only after the next
 * barrier, which every block reaches after it has read exchange p. A cluster barrier ends the kernel
 * (no block leaves while another may still read its shared memory). Passes whose digit is the same for
 * every id (bits of ~id above the highest bit of V - 1) are skipped: zg_sample_select_step would pick
 * digit 15 there without changing anything else (its bin holds every candidate still in the running). */
#include <cooperative_groups.h>

namespace zgc_cg = cooperative_groups;

/* The block's part of an exchange (two slots), and the cluster's totals (read after a block barrier). */
struct zgc_sample_xchg {
    uint64_t f[2][16];
    uint32_t c[2][16];
    uint64_t v[2];
    uint64_t tot_f[16];
    uint32_t tot_c[16];
    uint64_t tot_v, tot_before;
};

/* v (the block's value, the same in every thread) joined over the cluster's blocks in rank order: every
 * thread gets the total; with a sum, *before gets the sum over the blocks of lower rank. slot: this
 * thread's copy of the exchange counter (every thread of the cluster runs the same exchanges). */
template <bool MAX>
__device__ uint64_t zgc_cluster_join(zgc_cg::cluster_group &cl, zgc_sample_xchg *x, int &slot, uint64_t v,
                                     uint64_t *before) {
    int p = slot & 1;
    slot++;
    if (threadIdx.x == 0) x->v[p] = v;
    cl.sync();
    if (threadIdx.x < 32) { /* lane k reads block k's value (the remote loads in parallel), then a warp join */
        unsigned k = threadIdx.x, me = cl.block_rank();
        uint64_t o = k < cl.num_blocks() ? cl.map_shared_rank(x, k)->v[p] : 0; /* 0: neutral for both */
        uint64_t t = zgc_warp_reduce_u64<MAX>(o), bf = zgc_warp_reduce_u64<MAX>(k < me ? o : 0);
        if (k == 0) {
            x->tot_v = t;
            x->tot_before = bf;
        }
    }
    __syncthreads();
    uint64_t t = x->tot_v;
    if (before) *before = x->tot_before;
    __syncthreads(); /* tot_v is rewritten by the next exchange's thread 0 */
    return t;
}

/* The cluster's slice of a row: z (and the integer weights once the maximum is known) in shared memory. */
struct zgc_sample_slice {
    const float *zs;
    const uint64_t *ws;
    int lo, n; /* ids lo .. lo + n - 1 */
};

/* zgc_sample_select over the cluster's candidates (see the file comment and the kernel above). */
template <bool WEIGHTED>
__device__ uint64_t zgc_cluster_select(zgc_cg::cluster_group &cl, zgc_sample_xchg *x, int &slot,
                                       const zgc_sample_slice &sl, int V, uint64_t keep_from, uint64_t target,
                                       uint64_t (*bins)[16], uint32_t (*cnts)[16]) {
    uint64_t prefix = 0, above = 0;
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int level = 15; level >= 0; level--) {
        int shift = level * 4;
        if (zg_sample_digit_fixed(V, shift)) { /* digit 15 for every id: nothing to count */
            prefix |= (uint64_t)15 << shift;
            continue;
        }
        uint64_t f[16];
        uint32_t c[16];
#pragma unroll
        for (int d = 0; d < 16; d++) f[d] = 0, c[d] = 0;
        bool any = false;
        for (int i = threadIdx.x; i < sl.n; i += blockDim.x) {
            uint64_t rank = zg_sample_rank(sl.zs[i], sl.lo + i);
            bool in = rank >= keep_from && (shift + 4 == 64 || (rank >> (shift + 4)) == (prefix >> (shift + 4)));
            if (!in) continue;
            any = true;
            unsigned dig = (unsigned)(rank >> shift) & 15u;
            if (WEIGHTED) {
                uint64_t w = sl.ws[i];
#pragma unroll
                for (int d = 0; d < 16; d++) f[d] += dig == (unsigned)d ? w : 0;
            }
#pragma unroll
            for (int d = 0; d < 16; d++) c[d] += dig == (unsigned)d ? 1u : 0u;
        }
        if (__any_sync(0xffffffffu, any)) { /* late passes: most warps hold no candidate */
#pragma unroll
            for (int d = 0; d < 16; d++) {
                if (WEIGHTED) f[d] = zgc_warp_reduce_u64<false>(f[d]);
                for (int o = 16; o > 0; o >>= 1) c[d] += __shfl_xor_sync(0xffffffffu, c[d], o);
            }
        }
        if (lane == 0)
#pragma unroll
            for (int d = 0; d < 16; d++) bins[warp][d] = f[d], cnts[warp][d] = c[d];
        __syncthreads();
        int p = slot & 1;
        slot++;
        if (threadIdx.x < 16) {
            uint64_t fs = 0;
            uint32_t cs = 0;
            for (int w = 0; w < (int)blockDim.x / 32; w++) fs += bins[w][threadIdx.x], cs += cnts[w][threadIdx.x];
            x->f[p][threadIdx.x] = fs;
            x->c[p][threadIdx.x] = cs;
        }
        cl.sync(); /* the blocks' sums are out (and bins may be rewritten) */
        /* thread t = d * NB + k reads block k's bin d (16 * NB <= 256 loads in parallel); the NB threads of
         * a bin are consecutive lanes of one warp (NB a power of two <= 16) and add theirs by shuffles */
        unsigned nb = cl.num_blocks();
        if (threadIdx.x < 16 * nb) {
            unsigned d = threadIdx.x / nb, k = threadIdx.x % nb;
            const zgc_sample_xchg *o = cl.map_shared_rank(x, k);
            uint64_t fs = o->f[p][d];
            uint32_t cs = o->c[p][d];
            for (unsigned off = nb / 2; off > 0; off >>= 1) {
                fs += __shfl_xor_sync(0xffffffffu, fs, off);
                cs += __shfl_xor_sync(0xffffffffu, cs, off);
            }
            if (k == 0) {
                x->tot_f[d] = fs;
                x->tot_c[d] = cs;
            }
        }
        __syncthreads();
        uint64_t fs[16];
        uint32_t cs[16];
#pragma unroll
        for (int d = 0; d < 16; d++) fs[d] = x->tot_f[d], cs[d] = x->tot_c[d];
        /* tot_* are rewritten after the next pass's cluster barrier, which every thread reaches after this */
        if (zg_sample_select_step(fs, cs, WEIGHTED, target, shift, &above, &prefix)) break;
    }
    return prefix > keep_from ? prefix : keep_from;
}

/* The kept weight W over the cluster (every thread gets it): thread t of a block sums the kept weights of
 * its contiguous chunk of the block's ids (*mine), *start is where that chunk begins in the row's id
 * order (the blocks below, then the threads below). */
__device__ uint64_t zgc_cluster_kept(zgc_cg::cluster_group &cl, zgc_sample_xchg *x, int &slot,
                                     const zgc_sample_slice &sl, uint64_t keep_from, uint64_t *scan, uint64_t *mine_out,
                                     uint64_t *start_out) {
    int chunk = (sl.n + (int)blockDim.x - 1) / (int)blockDim.x;
    int lo = (int)threadIdx.x * chunk, hi = min(sl.n, lo + chunk);
    uint64_t mine = 0;
    for (int i = lo; i < hi; i++)
        if (zg_sample_rank(sl.zs[i], sl.lo + i) >= keep_from) mine += sl.ws[i];
    uint64_t start, below;
    uint64_t total = zgc_block_exscan_u64(mine, scan, &start);
    uint64_t W = zgc_cluster_join<false>(cl, x, slot, total, &below);
    *mine_out = mine;
    *start_out = below + start;
    return W;
}

/* ---- top-p in binned rounds (the cluster kernel's default; ZGPT_SAMPLE=cluster-v13: the radix selection
 * above, 4 bits and one cluster barrier per pass, up to 12 passes for a cut that ends among tied ids) ----
 * sample_math.h's "nucleus in binned rounds": a candidate's place is d = key(max z) - key(z). Per round
 * each block adds its candidates' weights into ZG_SAMPLE_NUCLEUS_BINS bins of the open range of d (with
 * the least and largest d per bin) by shared-memory atomics, one cluster barrier publishes them, thread
 * t adds bin t over the blocks (one 16-byte DSMEM load per block), a block scan finds the bin where the
 * running weight reaches the target (the first round's total is the kept weight W: no pass of its own).
 * A bin whose candidates share one d ends it (at most 4 rounds over the 32-bit d; bf16 logits usually
 * need 1-2, their keys' low 16 bits being equal). The crossing d's ties all weigh the same, so the
 * nucleus keeps its `take` first in id order; one more exchange of each block's weight before that d
 * and its tie count places every thread's chunk in id order for the draw, as zgc_cluster_kept does. */
struct __align__(16) zgc_nucleus_bin {
    unsigned long long mass;
    unsigned int dmin, dmax;
};
struct zgc_nucleus_xchg {
    zgc_nucleus_bin bin[2][ZG_SAMPLE_NUCLEUS_BINS]; /* two slots, alternating with the other exchanges */
    unsigned long long pick_before, pick_mass;      /* the round's crossing bin, for the whole block */
    unsigned int pick_dmin, pick_dmax, pick_bin;
};

/* The draw under top-p (and top-k: keep_from) over the cluster: returns -1 when a thread wrote the token
 * to *id_out, or best_id when every weight is 0 (the CPU's fallback). Every thread of the cluster calls
 * it and takes the same branches (the same totals). */
__device__ int32_t zgc_cluster_nucleus(zgc_cg::cluster_group &cl, zgc_sample_xchg *x, zgc_nucleus_xchg *nx, int &slot,
                                       const zgc_sample_slice &sl, uint64_t keep_from, float zmax, float top_p,
                                       uint64_t random, uint64_t *scan, uint64_t *red, int32_t *id_out,
                                       int32_t best_id) {
    const unsigned t = threadIdx.x, nb = cl.num_blocks();
    const uint32_t kmax = zg_sample_key(zmax);
    uint32_t lo = 0, hi = zg_sample_nucleus_span(zmax), dstar = 0;
    uint64_t above = 0, target = 0, group = 0;
    for (int round = 0;; round++) {
        int p = slot & 1, s = zg_sample_nucleus_shift(hi - lo);
        slot++;
        zgc_nucleus_bin *h = nx->bin[p];
        h[t].mass = 0;
        h[t].dmin = 0xffffffffu;
        h[t].dmax = 0;
        __syncthreads();
        for (int i = t; i < sl.n; i += blockDim.x) {
            uint64_t w = sl.ws[i];
            float z = sl.zs[i];
            uint32_t d = kmax - zg_sample_key(z);
            if (w == 0 || d < lo || d > hi || (keep_from != 0 && zg_sample_rank(z, sl.lo + i) < keep_from)) continue;
            zgc_nucleus_bin *bn = &h[(d - lo) >> s];
            atomicAdd(&bn->mass, (unsigned long long)w);
            atomicMin(&bn->dmin, d);
            atomicMax(&bn->dmax, d);
        }
        cl.sync(); /* every block's bins are out */
        uint64_t m = 0;
        uint32_t mn = 0xffffffffu, mx = 0;
#pragma unroll
        for (unsigned k = 0; k < 16; k++) /* the loads issue together */
            if (k < nb) {
                uint4 q = *reinterpret_cast<const uint4 *>(&cl.map_shared_rank(nx, k)->bin[p][t]);
                m += ((uint64_t)q.y << 32) | q.x;
                mn = min(mn, q.z);
                mx = max(mx, q.w);
            }
        uint64_t before, total = zgc_block_exscan_u64(m, scan, &before);
        if (round == 0) {
            if (total == 0) return best_id; /* every weight rounded to 0 (infinite or NaN logits) */
            target = zg_sample_top_p_target(top_p, total);
        }
        uint64_t need = target - above; /* >= 1, and the open range holds at least that much */
        bool hit = m > 0 && before < need && before + m >= need;
        if (hit) {
            nx->pick_bin = t;
            nx->pick_before = before;
            nx->pick_mass = m;
            nx->pick_dmin = mn;
            nx->pick_dmax = mx;
        }
        /* A bin always crosses (integer sums, the same in every block) and 4 rounds end a 32-bit span; were
         * either ever false, the loop would spin on cluster barriers forever and hang the GPU: a launch
         * error instead. The condition is the same in every block. */
        if (!__syncthreads_or(hit) || round >= 4) __trap();
        /* pick_* are rewritten only after the next round's scan, whose barriers every thread passes after this */
        uint32_t c = nx->pick_bin, pmn = nx->pick_dmin, pmx = nx->pick_dmax;
        above += nx->pick_before;
        if (pmn == pmx) {
            dstar = pmn;
            group = nx->pick_mass;
            break;
        }
        lo += c << s;
        uint64_t top = (uint64_t)lo + (1ull << s) - 1;
        hi = top < hi ? (uint32_t)top : hi;
    }
    /* the kept candidates: key above K, and the first `take` of K's ties in id order. Thread t's chunk of
     * its block's ids: the weight above K and the count of ties */
    const uint32_t K = kmax - dstar;
    int chunk = (sl.n + (int)blockDim.x - 1) / (int)blockDim.x;
    int a = (int)t * chunk, e = min(sl.n, a + chunk);
    uint64_t heavier = 0, ties = 0;
    for (int i = a; i < e; i++) {
        float z = sl.zs[i];
        if (keep_from != 0 && zg_sample_rank(z, sl.lo + i) < keep_from) continue;
        uint32_t key = zg_sample_key(z);
        if (key > K) heavier += sl.ws[i];
        ties += key == K;
    }
    uint64_t tie_start, block_ties = zgc_block_exscan_u64(ties, scan, &tie_start);
    uint64_t block_heavier = zgc_block_reduce_u64<false>(heavier, red);
    int p = slot & 1;
    slot++;
    if (t == 0) {
        x->f[p][0] = block_heavier;
        x->f[p][1] = block_ties;
    }
    cl.sync();
    if (t < 32) { /* lane k: block k's kept weight; the blocks below this one, the total, the tie rule */
        unsigned k = t, me = cl.block_rank();
        uint64_t bh = 0, bt = 0;
        if (k < nb) {
            const zgc_sample_xchg *o = cl.map_shared_rank(x, k);
            bh = o->f[p][0];
            bt = o->f[p][1];
        }
        uint64_t incl = bt;
        for (int o = 1; o < 32; o <<= 1) {
            uint64_t y = __shfl_up_sync(0xffffffffu, incl, o);
            if ((int)k >= o) incl += y;
        }
        uint64_t all_ties = __shfl_sync(0xffffffffu, incl, 31), tie_before = incl - bt;
        uint64_t take = zg_sample_nucleus_take(target - above, group, all_ties), w = group / all_ties;
        uint64_t kept = bh + w * (take > tie_before ? min(take - tie_before, bt) : 0);
        uint64_t W = zgc_warp_reduce_u64<false>(kept), below = zgc_warp_reduce_u64<false>(k < me ? kept : 0);
        uint64_t my_ties_before = __shfl_sync(0xffffffffu, tie_before, me);
        if (k == 0) {
            x->tot_f[0] = below;
            x->tot_f[1] = W;
            x->tot_f[2] = my_ties_before;
            x->tot_f[3] = w;
            x->tot_f[4] = take;
        }
    }
    __syncthreads();
    uint64_t below = x->tot_f[0], W = x->tot_f[1], tie0 = x->tot_f[2] + tie_start, w = x->tot_f[3], take = x->tot_f[4];
    uint64_t mine = heavier + w * (take > tie0 ? min(take - tie0, ties) : 0), start;
    zgc_block_exscan_u64(mine, scan, &start);
    start += below;
    uint64_t xr = zg_sample_scale(random, W);
    if (mine > 0 && start <= xr && xr < start + mine) { /* this chunk holds the draw: the CPU's walk */
        uint64_t cum = start, tie = tie0;
        for (int i = a; i < e; i++) {
            float z = sl.zs[i];
            if (keep_from != 0 && zg_sample_rank(z, sl.lo + i) < keep_from) continue;
            uint32_t key = zg_sample_key(z);
            if (key < K || (key == K && tie++ >= take)) continue;
            cum += sl.ws[i];
            if (cum > xr) {
                *id_out = sl.lo + i;
                break;
            }
        }
    }
    return -1;
}

/* 256 threads, at most 128 registers each: two blocks fit an SM, so that a GPC of 8 free SMs can take a
 * cluster of 16 and B = 8 rows' clusters run at once */
#define ZGC_SAMPLE_CLUSTER_THREADS 256
static_assert(ZGC_SAMPLE_CLUSTER_THREADS == ZG_SAMPLE_NUCLEUS_BINS, "the nucleus rounds take a bin per thread");
template <typename T, bool NUCLEUS>
__global__ void __launch_bounds__(ZGC_SAMPLE_CLUSTER_THREADS, 2)
    zgc_sample_cluster_kernel(int32_t *ids, const T *logits, const zg_sample_row *rows, const int32_t *counter, int V,
                              int Vp, int slice) {
    extern __shared__ uint64_t stage[]; /* slice weights, then slice z */
    __shared__ uint64_t red[ZGC_SAMPLE_WARPS];
    __shared__ uint64_t bins[ZGC_SAMPLE_WARPS][16];
    __shared__ uint32_t cnts[ZGC_SAMPLE_WARPS][16];
    __shared__ uint64_t scan[ZGC_SAMPLE_WARPS];
    __shared__ zgc_sample_xchg x;
    __shared__ zgc_nucleus_xchg nx; /* the binned top-p rounds (NUCLEUS) */
    zgc_cg::cluster_group cl = zgc_cg::this_cluster();
    int slot = 0;
    zgc_pdl_wait(); /* the logits are the LM head's */
    zgc_pdl_trigger();
    int b = blockIdx.y;
    zg_sample_row r = rows[b];
    bool greedy = r.inv_temperature == 0.0f || r.top_k == 1;
    float scale = greedy ? 1.0f : r.inv_temperature;
    const T *lg = logits + (size_t)b * Vp;
    uint64_t *ws = stage;
    float *zs = reinterpret_cast<float *>(stage + slice);
    zgc_sample_slice sl;
    sl.lo = (int)cl.block_rank() * slice;
    sl.n = max(0, min(V - sl.lo, slice));
    sl.zs = zs;
    sl.ws = ws;
    uint64_t best = 0;
    for (int i = threadIdx.x; i < sl.n; i += blockDim.x) {
        float z = zg_sample_z(zgc_to_f(lg[sl.lo + i]), scale);
        zs[i] = z;
        uint64_t rk = zg_sample_rank(z, sl.lo + i);
        best = rk > best ? rk : best;
    }
    best = zgc_block_reduce_u64<true>(best, red); /* its barriers also publish zs */
    best = zgc_cluster_join<true>(cl, &x, slot, best, NULL);
    int best_id = (int)(0xffffffffu - (uint32_t)best);
    int32_t out = best_id;
    if (!greedy) {
        float zmax = zg_sample_z(zgc_to_f(lg[best_id]), scale); /* the bits staged by its block */
        for (int i = threadIdx.x; i < sl.n; i += blockDim.x) ws[i] = zg_sample_weight(zs[i] - zmax);
        __syncthreads();
        uint64_t keep_from = 0;
        if (r.top_k > 0 && r.top_k < V)
            keep_from = zgc_cluster_select<false>(cl, &x, slot, sl, V, 0, (uint64_t)r.top_k, bins, cnts);
        if (NUCLEUS && r.top_p < 1.0f) { /* drawn (-1), or best_id when every weight is 0 */
            out = zgc_cluster_nucleus(cl, &x, &nx, slot, sl, keep_from, zmax, r.top_p,
                                      zg_sample_random(r.seed, (uint32_t)*counter), scan, red, ids + b, best_id);
        } else {
            uint64_t mine, start;
            uint64_t W = zgc_cluster_kept(cl, &x, slot, sl, keep_from, scan, &mine, &start);
            if (r.top_p < 1.0f && W > 0) {
                keep_from = zgc_cluster_select<true>(cl, &x, slot, sl, V, keep_from, zg_sample_top_p_target(r.top_p, W),
                                                     bins, cnts);
                W = zgc_cluster_kept(cl, &x, slot, sl, keep_from, scan, &mine, &start);
            }
            if (W > 0) {  /* else every weight rounded to 0 (infinite or NaN logits): the first candidate */
                out = -1; /* written below by the one thread whose chunk holds the draw */
                uint64_t xr = zg_sample_scale(zg_sample_random(r.seed, (uint32_t)*counter), W);
                int chunk = (sl.n + (int)blockDim.x - 1) / (int)blockDim.x;
                int lo = (int)threadIdx.x * chunk, hi = min(sl.n, lo + chunk);
                if (mine > 0 && start <= xr && xr < start + mine) {
                    uint64_t cum = start;
                    for (int i = lo; i < hi; i++) {
                        if (zg_sample_rank(zs[i], sl.lo + i) < keep_from) continue;
                        cum += ws[i];
                        if (cum > xr) {
                            ids[b] = sl.lo + i;
                            break;
                        }
                    }
                }
            }
        }
    }
    if (out >= 0 && cl.block_rank() == 0 && threadIdx.x == 0) ids[b] = out;
    cl.sync(); /* no block leaves while another may still read its shared memory */
}

/* ZGPT_SAMPLE picks the sampler (read per launch: A/B runs in one process): "block" the one-block kernel,
 * "cluster" the cluster kernel with top-p in binned rounds, "cluster-v13" the cluster kernel with v0.13's
 * radix top-p; unset: the cluster kernel with v0.13's top-p where it runs (the binned rounds are opt-in until
 * measured on a GPU), except under ZGPT_DECODE=old (the earlier kernels everywhere). All give the same ids (sample_math.h's definition). Anything else stops zgpt with one line. */
enum { ZGC_SAMPLE_AUTO = 0, ZGC_SAMPLE_BLOCK, ZGC_SAMPLE_CLUSTER, ZGC_SAMPLE_CLUSTER_V13 };
static int zgc_sample_mode(void) {
    static const struct {
        const char *name;
        int mode;
    } modes[] = {{"block", ZGC_SAMPLE_BLOCK}, {"cluster", ZGC_SAMPLE_CLUSTER}, {"cluster-v13", ZGC_SAMPLE_CLUSTER_V13}};
    const char *v = getenv("ZGPT_SAMPLE");
    if (v == NULL || v[0] == 0) return ZGC_SAMPLE_AUTO;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(v, modes[i].name) == 0) return modes[i].mode;
    ZG_FATAL("ZGPT_SAMPLE=%s: not a sampler; use block, cluster or cluster-v13 (or unset it)", v);
}

/* Blocks per row for the cluster kernel at this V (16 where the GPU schedules such clusters, else 8), or
 * 0: the one-block kernel runs (before sm_90, or not wanted). Sets the kernels' attributes. */
template <typename T>
static unsigned zgc_sample_cluster_blocks(zg_backend *be, int mode, int B, int V, size_t *smem_out) {
    zgc_impl *im = zgc_get(be);
    bool wanted = mode == ZGC_SAMPLE_CLUSTER || mode == ZGC_SAMPLE_CLUSTER_V13 ||
                  (mode == ZGC_SAMPLE_AUTO && zgc_decode_mode() != ZGC_DEC_OLD);
    if (im->cc_major < 9 || !wanted) return 0;
    if (im->sample_v == V) { /* the kernel's attributes were set then */
        if (im->sample_nb == 0) return 0;
        *smem_out = (size_t)((V + im->sample_nb - 1) / im->sample_nb) * (sizeof(uint64_t) + sizeof(float));
        return (unsigned)im->sample_nb;
    }
    static const unsigned sizes[2] = {16, 8};
    im->sample_v = V;
    im->sample_nb = 0;
    for (int k = 0; k < 2; k++) {
        unsigned nb = sizes[k];
        int slice = (V + (int)nb - 1) / (int)nb;
        size_t smem = (size_t)slice * (sizeof(uint64_t) + sizeof(float));
        /* both top-p forms: the same shared memory (the occupancy below holds for both) */
        decltype(&zgc_sample_cluster_kernel<T, true>) kerns[2] = {zgc_sample_cluster_kernel<T, true>,
                                                                  zgc_sample_cluster_kernel<T, false>};
        auto kern = kerns[0];
        bool set = true;
        for (int f = 0; f < 2; f++)
            set = set &&
                  cudaFuncSetAttribute(kerns[f], cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
                  cudaFuncSetAttribute(kerns[f], cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) == cudaSuccess;
        if (!set) {
            (void)cudaGetLastError();
            continue;
        }
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(nb, (unsigned)B);
        cfg.blockDim = dim3(ZGC_SAMPLE_CLUSTER_THREADS);
        cfg.dynamicSmemBytes = smem;
        cudaLaunchAttribute at;
        at.id = cudaLaunchAttributeClusterDimension;
        at.val.clusterDim.x = nb;
        at.val.clusterDim.y = 1;
        at.val.clusterDim.z = 1;
        cfg.attrs = &at;
        cfg.numAttrs = 1;
        int clusters = 0;
        if (cudaOccupancyMaxActiveClusters(&clusters, kern, &cfg) != cudaSuccess) {
            (void)cudaGetLastError();
            continue;
        }
        if (clusters >= 1) {
            im->sample_nb = (int)nb;
            *smem_out = smem;
            return nb;
        }
    }
    return 0;
}

void zgc_sample(zg_backend *be, int32_t *ids, const void *logits, const zg_sample_row *rows, const int32_t *counter,
                int B, int V, int Vp) {
    zgc_impl *im = zgc_get(be);
    if (B < 1) return;
    ZGC_DISPATCH(be->act_dtype, T, {
        size_t csmem = 0;
        int mode = zgc_sample_mode();
        unsigned nb = zgc_sample_cluster_blocks<T>(be, mode, B, V, &csmem);
        if (nb > 0) {
            int slice = (V + (int)nb - 1) / (int)nb;
            /* the binned top-p only when asked for (ZGPT_SAMPLE=cluster) until it has run on a GPU: unset
             * keeps v0.13's measured radix top-p (docs/CUDA.md) */
            auto kern =
                mode == ZGC_SAMPLE_CLUSTER ? zgc_sample_cluster_kernel<T, true> : zgc_sample_cluster_kernel<T, false>;
            zgc_launch(be, kern, dim3(nb, (unsigned)B), dim3(ZGC_SAMPLE_CLUSTER_THREADS), csmem, nb, ids,
                       (const T *)logits, rows, counter, V, Vp, slice);
        } else {
            /* the one-block kernel; the row's z in shared memory when they fit beside the kernel's own
             * (V = 50257: 196 KiB of the H100/H200's 227 KiB), only with ZGPT_DECODE=new (it timed slower
             * alone on the H200); otherwise every pass reads the logits */
            int optin = 0;
            ZG_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, im->device));
            size_t smem = (size_t)V * sizeof(float);
            cudaFuncAttributes fa;
            ZG_CUDA_CHECK(cudaFuncGetAttributes(&fa, zgc_sample_kernel<T, true>));
            if (zgc_decode_staged_sample() && smem + fa.sharedSizeBytes <= (size_t)optin) {
                ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_sample_kernel<T, true>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
                zgc_launch(be, zgc_sample_kernel<T, true>, dim3((unsigned)B), dim3(ZGC_SAMPLE_THREADS), smem, 0, ids,
                           (const T *)logits, rows, counter, V, Vp);
            } else {
                zgc_launch(be, zgc_sample_kernel<T, false>, dim3((unsigned)B), dim3(ZGC_SAMPLE_THREADS), 0, 0, ids,
                           (const T *)logits, rows, counter, V, Vp);
            }
        }
    });
    ZG_CUDA_LAUNCH_CHECK();
}
