/* Split decode attention's pieces as device functions (decode_cuda.cu has the design and the kernels): one
 * chunk of ZGC_DEC_CHUNK cached positions of one (row, head), and the combine of a (row, head)'s chunks, run
 * by a group of threads (G: zgc_dec_block, the whole block). The group's thread count fixes every order of
 * sums. (v0.21-v0.22's persistent decode kernel also ran them on 128-thread parts of a block; removed.) */
#ifndef ZGPT_BACKEND_CUDA_DECODE_ATTN_CUH
#define ZGPT_BACKEND_CUDA_DECODE_ATTN_CUH

#include "backend/cuda/cuda_internal.h"

#define ZGC_DEC_MAX_HS 256
/* positions per chunk (a chunk's scores live in shared memory) */
#define ZGC_DEC_CHUNK 64
#define ZGC_DEC_SPLIT_THREADS 128
#define ZGC_DEC_SPLIT_WARPS (ZGC_DEC_SPLIT_THREADS / 32)

/* The threads of a block: thread ids 0..blockDim.x-1, __syncthreads. */
struct zgc_dec_block {
    __device__ int tid() const { return (int)threadIdx.x; }
    __device__ int size() const { return (int)blockDim.x; }
    __device__ void sync() const { __syncthreads(); }
};

/* Max / sum of v over the group's warps (every thread of the group gets it); red holds a float per warp
 * and is free again on return. */
template <typename G> __device__ __forceinline__ float zgc_dec_group_max(G g, float v, float *red) {
    v = zgc_warp_max(v);
    if (g.tid() % 32 == 0) red[g.tid() / 32] = v;
    g.sync();
    v = -INFINITY;
    for (int w = 0; w < g.size() / 32; w++) v = fmaxf(v, red[w]);
    g.sync();
    return v;
}
template <typename G> __device__ __forceinline__ float zgc_dec_group_sum(G g, float v, float *red) {
    v = zgc_warp_sum(v);
    if (g.tid() % 32 == 0) red[g.tid() / 32] = v;
    g.sync();
    v = 0.0f;
    for (int w = 0; w < g.size() / 32; w++) v += red[w];
    g.sync();
    return v;
}

/* One score: q (shared, fp32, scaled) . k row (hs), 16-byte loads when VEC. */
template <typename T, bool VEC> __device__ __forceinline__ float zgc_dec_dot(const float *q, const T *k, int hs) {
    float s = 0.0f;
    if (VEC) {
        constexpr int E = 16 / sizeof(T);
        for (int d = 0; d < hs; d += E) {
            zgc_vec<T> kv = *reinterpret_cast<const zgc_vec<T> *>(k + d);
#pragma unroll
            for (int e = 0; e < E; e++) s += q[d + e] * zgc_to_f(kv.v[e]);
        }
    } else {
        for (int d = 0; d < hs; d++) s += q[d] * zgc_to_f(k[d]);
    }
    return s;
}

/* p V over positions [j0, j1) of one (row, head): warp w of the group takes positions j0 + w, j0 + w +
 * WARPS, ..., lane takes channels lane, lane + 32, ...; the warps' sums meet in part (fixed order) and
 * store(d, total) runs once per channel d. sc[j - j0] holds the weights; V row j is at vb + (j - j0) * vs
 * (the cache: vb at row j0, vs = hs; or the chunk's rows staged in shared memory); part is WARPS x
 * ZGC_DEC_MAX_HS floats. Ends with the barrier that frees part. */
template <typename T, int WARPS, typename G, typename Store>
__device__ void zgc_dec_pv(G g, const float *sc, const T *vb, int vs, int j0, int j1, int hs,
                           float (*part)[ZGC_DEC_MAX_HS], Store store) {
    int lane = g.tid() % 32, warp = g.tid() / 32;
    float acc[ZGC_DEC_MAX_HS / 32];
#pragma unroll
    for (int k = 0; k < ZGC_DEC_MAX_HS / 32; k++) acc[k] = 0.0f;
    for (int j = j0 + warp; j < j1; j += WARPS) {
        float p = sc[j - j0];
        const T *vr = vb + (size_t)(j - j0) * vs;
#pragma unroll
        for (int k = 0; k < ZGC_DEC_MAX_HS / 32; k++) {
            int d = lane + 32 * k;
            if (d < hs) acc[k] += p * zgc_to_f(vr[d]);
        }
    }
#pragma unroll
    for (int k = 0; k < ZGC_DEC_MAX_HS / 32; k++) {
        int d = lane + 32 * k;
        if (d < hs) part[warp][d] = acc[k];
    }
    g.sync();
    for (int d = g.tid(); d < hs; d += g.size()) {
        float s = 0.0f;
        for (int w = 0; w < WARPS; w++) s += part[w][d];
        store(d, s);
    }
    g.sync();
}

/* out (b, h) = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s over the chunks s up to position t, in
 * order; thread d of the group for channels d, d + size, ... The partials are other blocks' stores: read
 * through L2 (ld.cg), never a line this SM's L1 may hold from before. BATCH: the reads go out
 * ZGC_DEC_COMBINE_BATCH chunks at a time, all in flight before the first is used, where one chunk at a time
 * left a chain of dependent L2 reads (v0.23's timeline, H100, XL B=1: attention 9.85 -> 6.22 us a layer, the
 * step 2.28 -> 2.15 ms); it takes registers (147 against 40 for the split kernel), which cost occupancy where
 * the grid is several waves (B=8: the step 3.13 -> 3.22 ms), so the split kernel batches only where rows x
 * heads fit the SMs once (zgc_attention_decode_split). Either way the sums keep their order: the same bits. */
#define ZGC_DEC_COMBINE_BATCH 16
template <typename T, bool BATCH, typename G>
__device__ __forceinline__ void zgc_dec_combine(G g, T *out, const float *accs, const float *ml, int t, int S, int bh,
                                                int b, int h, int C, int hs) {
    constexpr int NB = BATCH ? ZGC_DEC_COMBINE_BATCH : 1;
    int n = t / ZGC_DEC_CHUNK + 1; /* chunks holding positions 0..t */
    const float *mlb = ml + (size_t)bh * S * 2;
    float M = -INFINITY;
    for (int s0 = 0; s0 < n; s0 += NB) {
        float mv[NB];
#pragma unroll
        for (int i = 0; i < NB; i++) mv[i] = s0 + i < n ? __ldcg(mlb + 2 * (s0 + i)) : -INFINITY;
#pragma unroll
        for (int i = 0; i < NB; i++) M = fmaxf(M, mv[i]);
    }
    for (int d = g.tid(); d < hs; d += g.size()) {
        float num = 0.0f, den = 0.0f;
        for (int s0 = 0; s0 < n; s0 += NB) {
            float mv[NB], lv[NB], av[NB];
#pragma unroll
            for (int i = 0; i < NB; i++)
                if (s0 + i < n) {
                    mv[i] = __ldcg(mlb + 2 * (s0 + i));
                    lv[i] = __ldcg(mlb + 2 * (s0 + i) + 1);
                    av[i] = __ldcg(accs + ((size_t)bh * S + s0 + i) * hs + d);
                }
#pragma unroll
            for (int i = 0; i < NB; i++)
                if (s0 + i < n) {
                    float f = __expf(mv[i] - M);
                    den += f * lv[i];
                    num += f * av[i];
                }
        }
        out[(size_t)b * C + (size_t)h * hs + d] = zgc_from_f<T>(num / den);
    }
}

/* One layer's split decode attention: out (B,C), per (row, head) and chunk the fp32 partials accs
 * (B*NH, S, hs) and ml (B*NH, S, 2) (S = ceil(maxT / CHUNK)), the fused combine's counters (B*NH, 0 between
 * launches), qkv (B,3C), the layer's caches kc, vc (B,NH,maxT,hs). */
template <typename T> struct zgc_dec_att_op {
    T *out;
    float *accs, *ml;
    unsigned *counts;
    const T *qkv;
    T *kc, *vc;
    int maxT, C, NH, S;
    float scale;
};
/* The scratch of a launch's split attention: the partials (accs, then ml) and the combine's counters (0
 * when made; every launch leaves them at 0). The first decode step runs before a graph is recorded, so the
 * buffers exist (and keep their sizes) by then. */
static inline void zgc_dec_scratch(zg_backend *be, int rowheads, int S, int hs, float **accs, float **ml,
                                   unsigned **counts) {
    size_t parts = (size_t)rowheads * S;
    *accs = (float *)zgc_scratch(be, ZGC_SCR_DECODE, parts * (hs + 2) * sizeof(float), "decode attention");
    *ml = *accs + parts * hs;
    *counts = (unsigned *)zgc_scratch_zeroed(be, ZGC_SCR_DECODE_COUNT, (size_t)rowheads * sizeof(unsigned),
                                             "decode attention counters");
}

/* A group's shared memory for one chunk: scores, q, the p V partials, a reduction slot per warp, the
 * fused combine's flag, and (VEC) the chunk's K and V rows (CHUNK each, row stride hs + 16 bytes). */
struct zgc_dec_smem {
    float *sc;                     /* ZGC_DEC_CHUNK */
    float *qs;                     /* ZGC_DEC_MAX_HS */
    float (*part)[ZGC_DEC_MAX_HS]; /* ZGC_DEC_SPLIT_WARPS rows */
    float *red;                    /* ZGC_DEC_SPLIT_WARPS */
    int *last;                     /* 1 */
    void *kv;                      /* VEC: 2 * ZGC_DEC_CHUNK * (hs * sizeof(T) + 16) bytes */
};
/* the K and V rows' staging (bytes) */
static __host__ __device__ inline size_t zgc_dec_kv_bytes(int hs, size_t es) {
    return 2 * (size_t)ZGC_DEC_CHUNK * ((size_t)hs * es + 16);
}

/* Before the wait (VEC): the chunk's cached K and V rows (positions before t, written by earlier steps,
 * long complete) into shared memory (cp.async; row stride hs + 16 bytes, so the 8 rows a quarter-warp's
 * 16-byte score loads touch fall in different banks). */
template <typename T, bool VEC, typename G>
__device__ __forceinline__ void zgc_dec_chunk_stage(G g, const zgc_dec_att_op<T> &a, const zgc_dec_smem &sm, int bh,
                                                    int s, int t) {
    int hs = a.C / a.NH, L = t + 1, j0 = s * ZGC_DEC_CHUNK, j1 = min(L, j0 + ZGC_DEC_CHUNK);
    if (!VEC || j0 >= L) return;
    constexpr int E = 16 / sizeof(T);
    int rs = hs + E, nr = min(j1, t) - j0, vpr = hs / E; /* rows j0 .. min(j1, t) - 1 come from the cache */
    const T *kb = a.kc + (size_t)bh * a.maxT * hs, *vb = a.vc + (size_t)bh * a.maxT * hs;
    T *ks = reinterpret_cast<T *>(sm.kv), *vsm = ks + (size_t)ZGC_DEC_CHUNK * rs;
    for (int i = g.tid(); i < nr * vpr; i += g.size()) {
        int r = i / vpr, v = i - r * vpr;
        zgc_cp_async16(ks + (size_t)r * rs + v * E, kb + (size_t)(j0 + r) * hs + v * E);
        zgc_cp_async16(vsm + (size_t)r * rs + v * E, vb + (size_t)(j0 + r) * hs + v * E);
    }
    zgc_cp_commit();
}

/* After the wait: chunk s of (row, head) bh over positions [s*CHUNK, min(t + 1, (s+1)*CHUNK)); writes
 * ml[bh][s] = (m, l) and accs[bh][s][0..hs). The chunk holding t first puts the new k, v into the cache
 * (the only chunk that reads them). FUSED: the last of the (row, head)'s chunks to finish combines (the
 * threadfence-reduction pattern; its counter back to 0 once it has seen it; BATCH: zgc_dec_combine's). After
 * the wait only q and the new position's k, v (qkv, written by the kernel or phase before: read through L2)
 * are read from memory. */
template <typename T, bool VEC, bool FUSED, bool BATCH, typename G>
__device__ void zgc_dec_chunk_run(G g, const zgc_dec_att_op<T> &a, const zgc_dec_smem &sm, int bh, int s, int t) {
    int NH = a.NH, C = a.C, b = bh / NH, h = bh % NH, hs = C / NH, L = t + 1, S = a.S;
    int j0 = s * ZGC_DEC_CHUNK, j1 = min(L, j0 + ZGC_DEC_CHUNK);
    if (j0 >= L) return; /* past the position: the combine does not read this chunk */
    T *kb = a.kc + (size_t)bh * a.maxT * hs, *vb = a.vc + (size_t)bh * a.maxT * hs;
    constexpr int E = 16 / sizeof(T);
    int rs = hs + E;
    T *ks = reinterpret_cast<T *>(sm.kv), *vsm = ks + (size_t)ZGC_DEC_CHUNK * rs;
    const T *row = a.qkv + (size_t)b * 3 * C;
    bool mine = t < j1; /* this chunk holds the new position */
    for (int d = g.tid(); d < hs; d += g.size()) {
        if (mine) {
            T kn = __ldcg(row + C + h * hs + d), vn = __ldcg(row + 2 * C + h * hs + d);
            kb[(size_t)t * hs + d] = kn;
            vb[(size_t)t * hs + d] = vn;
            if (VEC) {
                ks[(size_t)(t - j0) * rs + d] = kn;
                vsm[(size_t)(t - j0) * rs + d] = vn;
            }
        }
        sm.qs[d] = zgc_to_f(__ldcg(row + h * hs + d)) * a.scale;
    }
    if (VEC) zgc_cp_wait<0>();
    g.sync();
    /* K and V rows of the chunk: staged (row j at (j - j0) * rs) or the cache itself */
    const T *kr0 = VEC ? ks : kb + (size_t)j0 * hs, *vr0 = VEC ? vsm : vb + (size_t)j0 * hs;
    int krs = VEC ? rs : hs;
    float m = -INFINITY;
    for (int j = j0 + g.tid(); j < j1; j += g.size()) {
        float sj = zgc_dec_dot<T, VEC>(sm.qs, kr0 + (size_t)(j - j0) * krs, hs);
        sm.sc[j - j0] = sj;
        m = fmaxf(m, sj);
    }
    m = zgc_dec_group_max(g, m, sm.red);
    float l = 0.0f;
    for (int j = j0 + g.tid(); j < j1; j += g.size()) {
        float p = __expf(sm.sc[j - j0] - m);
        sm.sc[j - j0] = p;
        l += p;
    }
    l = zgc_dec_group_sum(g, l, sm.red); /* its barriers also publish sc */
    size_t at = (size_t)bh * S + s;
    float *acc = a.accs + at * hs;
    zgc_dec_pv<T, ZGC_DEC_SPLIT_WARPS>(g, sm.sc, vr0, krs, j0, j1, hs, sm.part, [&](int d, float v) { acc[d] = v; });
    if (g.tid() == 0) {
        a.ml[2 * at] = m;
        a.ml[2 * at + 1] = l;
    }
    if (!FUSED) return;
    /* each thread's partial stores are made visible device-wide before thread 0 counts this chunk in */
    __threadfence();
    g.sync();
    if (g.tid() == 0) {
        unsigned n = (unsigned)(t / ZGC_DEC_CHUNK + 1);
        *sm.last = atomicAdd(&a.counts[bh], 1u) == n - 1;
        if (*sm.last) a.counts[bh] = 0; /* every chunk has counted: the next launch (or layer) starts from 0 */
    }
    g.sync();
    if (!*sm.last) return;
    __threadfence();
    zgc_dec_combine<T, BATCH>(g, a.out, a.accs, a.ml, t, S, bh, b, h, C, hs);
}

#endif
