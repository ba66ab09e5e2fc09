/* The decode-step ops on CUDA: one new position per row, the position read from device memory (pos[0]),
 * so that a step recorded as a CUDA graph replays at the next position. Decode attention reads the
 * whole KV cache of a (row, head) once per step. It is split over the cached positions (as in
 * flash-decoding): one block per (row, head, chunk of ZGC_DEC_CHUNK positions), then a combine:
 *   - the new k, v go into the cache at pos[0] by the block whose chunk holds pos[0] (the only block
 *     that reads them: visible to it after a barrier);
 *   - scores: one thread per cached position, the key row read with 16-byte loads (hs 64 in bf16: one
 *     128-byte line per thread), q from shared memory;
 *   - the chunk's max m, sum l of e^(s - m) and unnormalised sum of e^(s - m) v go to a scratch
 *     buffer (p V: each warp sums a strided set of positions, lanes across the head's channels,
 *     coalesced rows of V, the warps' sums added in shared memory);
 *   - the combine rescales the chunks to their common max and adds them in chunk order, a thread per
 *     channel. It runs in the last of a (row, head)'s chunk blocks to finish (a counter per (row, head),
 *     back to 0 once that block has seen it): one kernel per layer instead of two, where each kernel
 *     boundary of the step's chain costs a few microseconds on data this small. ZGPT_DECODE_COMBINE=kernel
 *     runs it as a kernel of its own after the chunks (the A/B; the same arithmetic, the same bits).
 * The grid covers maxT (a replayed graph keeps its grid); chunks past pos[0] leave at once. The chunks
 * are fixed by position and every sum runs in a fixed order: the same inputs give the same bits.
 * The one-block-per-(row, head) kernel (all positions, one block) runs where its B*NH blocks fill the SMs
 * twice over, and with ZGPT_DECODE=old (zgc_decode_split: cuda_internal.h). Every kernel here is launched
 * with PDL (zgc_launch) and waits for the previous kernel before it reads anything. */
#include "backend/cuda/decode_attn.cuh"

#define ZGC_DEC_THREADS 256
#define ZGC_DEC_WARPS (ZGC_DEC_THREADS / 32)

/* out (B,C) = wte[tokens[b]] + wpe[pos[0]] */
template <typename T>
__global__ void zgc_encoder_at_kernel(T *out, const int32_t *tokens, const T *wte, const T *wpe, const int32_t *pos,
                                      int B, int C) {
    zgc_pdl_wait(); /* tokens and pos come from the previous step's decode_advance */
    zgc_pdl_trigger();
    size_t n = (size_t)B * C;
    const T *pe = wpe + (size_t)pos[0] * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int b = (int)(i / C), c = (int)(i % C);
        out[i] = zgc_from_f<T>(zgc_to_f(wte[(size_t)tokens[b] * C + c]) + zgc_to_f(pe[c]));
    }
}

void zgc_encoder_forward_at(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                            const int32_t *pos, int B, int C) {
    zgc_impl *im = zgc_get(be);
    unsigned blocks = zgc_blocks((size_t)B * C, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(be->act_dtype, T,
                 zgc_launch(be, zgc_encoder_at_kernel<T>, dim3(blocks), dim3(256), 0, 0, (T *)out, tokens,
                            (const T *)wte, (const T *)wpe, pos, B, C));
    ZG_CUDA_LAUNCH_CHECK();
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(ZGC_DEC_THREADS)
    zgc_att_decode_kernel(T *out, const T *qkv, T *kc, T *vc, const int32_t *pos, int maxT, int C, int NH,
                          float scale) {
    extern __shared__ float sc[]; /* maxT scores */
    __shared__ float qs[ZGC_DEC_MAX_HS];
    __shared__ float part[ZGC_DEC_WARPS][ZGC_DEC_MAX_HS];
    __shared__ float red[ZGC_DEC_WARPS];
    zgc_pdl_wait(); /* qkv is the previous kernel's */
    zgc_pdl_trigger();
    int bh = blockIdx.x, b = bh / NH, h = bh % NH, hs = C / NH;
    int t = pos[0], L = t + 1;
    const T *row = qkv + (size_t)b * 3 * C;
    T *kb = kc + (size_t)bh * maxT * hs, *vb = vc + (size_t)bh * maxT * hs;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        kb[(size_t)t * hs + d] = row[C + h * hs + d];
        vb[(size_t)t * hs + d] = row[2 * C + h * hs + d];
        qs[d] = zgc_to_f(row[h * hs + d]) * scale;
    }
    __syncthreads();
    float m = -INFINITY;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        float s = zgc_dec_dot<T, VEC>(qs, kb + (size_t)j * hs, hs);
        sc[j] = s;
        m = fmaxf(m, s);
    }
    m = zgc_dec_group_max(zgc_dec_block{}, m, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        float p = __expf(sc[j] - m);
        sc[j] = p;
        sum += p;
    }
    sum = zgc_dec_group_sum(zgc_dec_block{}, sum, red); /* its barriers also publish sc */
    float inv = 1.0f / sum;
    T *o = out + (size_t)b * C + (size_t)h * hs;
    zgc_dec_pv<T, ZGC_DEC_WARPS>(zgc_dec_block{}, sc, vb, hs, 0, L, hs, part,
                                 [&](int d, float v) { o[d] = zgc_from_f<T>(v * inv); });
}

/* One chunk of one (row, head) (decode_attn.cuh): block (bh, s). VEC: the chunk's cached K and V rows are
 * staged before the PDL wait, so the two DRAM round trips over the cache leave the step's critical path
 * (v0.18); pos[0] is read before the wait too (the previous step's decode_advance wrote it, kernels ago).
 * Every block waits, even one past the position (see zgc_pdl_on). */
template <typename T, bool VEC, bool FUSED, bool BATCH>
__global__ void __launch_bounds__(ZGC_DEC_SPLIT_THREADS)
    zgc_att_decode_split_kernel(zgc_dec_att_op<T> a, const int32_t *pos, unsigned long long *prof) {
    __shared__ float sc[ZGC_DEC_CHUNK];
    __shared__ float qs[ZGC_DEC_MAX_HS];
    __shared__ float part[ZGC_DEC_SPLIT_WARPS][ZGC_DEC_MAX_HS];
    __shared__ float red[ZGC_DEC_SPLIT_WARPS];
    __shared__ int last;
    extern __shared__ int4 kvs[]; /* VEC: K rows, then V rows, ZGC_DEC_CHUNK each */
    zgc_dec_smem sm = {sc, qs, part, red, &last, kvs};
    zgc_dec_block g;
    /* ZGPT_GEMV_PROF=1: start, wait over, end, end (gemv_cuda.cu's timeline) */
    if (prof != nullptr && threadIdx.x == 0)
        prof += ((size_t)blockIdx.y * gridDim.x + blockIdx.x) * 4;
    else
        prof = nullptr;
    if (prof) prof[0] = zgc_globaltimer();
    int bh = (int)blockIdx.x, s = (int)blockIdx.y, t = pos[0];
    zgc_dec_chunk_stage<T, VEC>(g, a, sm, bh, s, t);
    zgc_pdl_wait();
    zgc_pdl_trigger();
    if (prof) prof[1] = zgc_globaltimer();
    zgc_dec_chunk_run<T, VEC, FUSED, BATCH>(g, a, sm, bh, s, t);
    if (prof) prof[2] = prof[3] = zgc_globaltimer();
}
/* The combine as a kernel of its own (ZGPT_DECODE_COMBINE=kernel): one block per (row, head). */
template <typename T>
__global__ void zgc_att_decode_combine_kernel(T *out, const float *accs, const float *ml, const int32_t *pos, int S,
                                              int C, int NH) {
    zgc_pdl_wait();
    zgc_pdl_trigger();
    int bh = blockIdx.x;
    zgc_dec_combine<T, true>(zgc_dec_block{}, out, accs, ml, pos[0], S, bh, bh / NH, bh % NH, C, C / NH);
}

static void zgc_attention_decode_split(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache,
                                       const int32_t *pos, int B, int maxT, int C, int NH, bool vec) {
    int hs = C / NH, S = (maxT + ZGC_DEC_CHUNK - 1) / ZGC_DEC_CHUNK;
    float *accs, *ml;
    unsigned *counts;
    zgc_dec_scratch(be, B * NH, S, hs, &accs, &ml, &counts);
    int comb = zgc_decode_combine(); /* refused when the backend was made; set since: an A/B run's mistake */
    if (comb < 0) ZG_FATAL("ZGPT_DECODE_COMBINE=%s: expected fused or kernel", getenv("ZGPT_DECODE_COMBINE"));
    bool fused = comb == 1;
    dim3 grid((unsigned)(B * NH), (unsigned)S);
    unsigned cthreads = (unsigned)((hs + 31) / 32 * 32);
    float scale = 1.0f / sqrtf((float)hs);
    ZGC_DISPATCH(be->act_dtype, T, {
        /* the fused combine's reads batched where the grid is about one wave of the batched kernel (at most
         * 5/4 of what the SMs hold at once: GPT-2 XL at B=1, 400 blocks against 396, measured; B=8, 3,200
         * blocks, loses): its registers would cost a grid of several waves its occupancy (decode_attn.cuh,
         * zgc_dec_combine) */
        zgc_impl *im = zgc_get(be);
        if (im->dec_batch_hs != hs) {
            int per_sm = 0; /* a query that fails (a head's rows past 48 KB, no opt-in yet): no batch */
            if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                    &per_sm,
                    vec ? zgc_att_decode_split_kernel<T, true, true, true>
                        : zgc_att_decode_split_kernel<T, false, true, true>,
                    ZGC_DEC_SPLIT_THREADS, vec ? zgc_dec_kv_bytes(hs, sizeof(T)) : 0) != cudaSuccess) {
                (void)cudaGetLastError();
                per_sm = 0;
            }
            im->dec_batch_hs = hs;
            im->dec_batch_per_sm = per_sm;
        }
        bool batch = (size_t)grid.x * grid.y * 4 <= (size_t)im->dec_batch_per_sm * im->num_sms * 5;
        auto kern = fused ? (vec ? (batch ? zgc_att_decode_split_kernel<T, true, true, true>
                                          : zgc_att_decode_split_kernel<T, true, true, false>)
                                 : (batch ? zgc_att_decode_split_kernel<T, false, true, true>
                                          : zgc_att_decode_split_kernel<T, false, true, false>))
                          : (vec ? zgc_att_decode_split_kernel<T, true, false, false>
                                 : zgc_att_decode_split_kernel<T, false, false, false>);
        /* vec: the chunk's K and V rows staged (row stride hs + 16 bytes); past 48 KB with the kernel's static
         * arrays (sc, qs, part, red, last) the dynamic part needs the opt-in (hs above 162 in 16-bit types) */
        size_t smem = vec ? zgc_dec_kv_bytes(hs, sizeof(T)) : 0;
        size_t stat =
            sizeof(float) * (ZGC_DEC_CHUNK + ZGC_DEC_MAX_HS * (1 + ZGC_DEC_SPLIT_WARPS) + ZGC_DEC_SPLIT_WARPS) + 16;
        if (smem + stat > 48 * 1024)
            ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        zgc_dec_att_op<T> a = {(T *)out, accs, ml, counts, (const T *)qkv, (T *)kcache, (T *)vcache,
                               maxT,     C,    NH, S,      scale};
        zgc_launch(be, kern, grid, dim3(ZGC_DEC_SPLIT_THREADS), smem, 0, a, pos,
                   zgc_gemv_prof_slot(be, B, C, 0, grid.x * grid.y));
        ZG_CUDA_LAUNCH_CHECK();
        if (!fused) {
            zgc_launch(be, zgc_att_decode_combine_kernel<T>, dim3((unsigned)(B * NH)), dim3(cthreads), 0, 0, (T *)out,
                       (const float *)accs, (const float *)ml, pos, S, C, NH);
            ZG_CUDA_LAUNCH_CHECK();
        }
    });
}

void zgc_attention_decode(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, const int32_t *pos,
                          int B, int maxT, int C, int NH) {
    zgc_impl *im = zgc_get(be);
    int hs = C / NH;
    if (C % NH != 0 || hs > ZGC_DEC_MAX_HS)
        ZG_FATAL("attention_decode: head size %d (C %d, NH %d): must divide C and be at most %d", hs, C, NH,
                 ZGC_DEC_MAX_HS);
    /* 16-byte key loads need rows that are whole 16-byte vectors (the caches are 256-byte aligned) */
    bool vec = (hs * zgc_dtype_bytes(be->act_dtype)) % 16 == 0;
    if (zgc_decode_split(B * NH, im->num_sms)) {
        zgc_attention_decode_split(be, out, qkv, kcache, vcache, pos, B, maxT, C, NH, vec);
        return;
    }
    size_t smem = (size_t)maxT * sizeof(float);
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = vec ? zgc_att_decode_kernel<T, true> : zgc_att_decode_kernel<T, false>;
        if (smem > 48 * 1024)
            ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        zgc_launch(be, kern, dim3((unsigned)(B * NH)), dim3(ZGC_DEC_THREADS), smem, 0, (T *)out, (const T *)qkv,
                   (T *)kcache, (T *)vcache, pos, maxT, C, NH, 1.0f / sqrtf((float)hs));
        ZG_CUDA_LAUNCH_CHECK();
    });
}

/* One block: every thread reads pos[0] before thread 0 moves it on. */
__global__ void zgc_decode_advance_kernel(int32_t *seq, int32_t *tokens, int32_t *pos, const int32_t *ids,
                                          const int32_t *plen, int B, int maxT) {
    zgc_pdl_wait(); /* ids are the sampler's */
    zgc_pdl_trigger();
    int t = pos[0] + 1;
    for (int b = threadIdx.x; b < B; b += blockDim.x) {
        int32_t *cell = seq + (size_t)b * maxT + t;
        int32_t tok = t >= plen[b] ? ids[b] : *cell;
        *cell = tok;
        tokens[b] = tok;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        pos[0] = t;
        pos[1] = t + 1;
    }
}

void zgc_decode_advance(zg_backend *be, int32_t *seq, int32_t *tokens, int32_t *pos, const int32_t *ids,
                        const int32_t *plen, int B, int maxT) {
    unsigned threads = B < 1024 ? (unsigned)((B + 31) / 32 * 32) : 1024u;
    zgc_launch(be, zgc_decode_advance_kernel, dim3(1), dim3(threads), 0, 0, seq, tokens, pos, ids, plen, B, maxT);
    ZG_CUDA_LAUNCH_CHECK();
}
