/* The decode-step ops on CUDA: one new position per row, the position read from device memory (pos[0]),
 * so that a step recorded as a CUDA graph replays at the next position. Decode attention reads the
 * whole KV cache of a (row, head) once per step; one block per (row, head):
 *   - the new k, v go into the cache at pos[0] (the block's own rows: visible to it after a barrier);
 *   - scores: one thread per cached position, the key row read with 16-byte loads (hs 64 in bf16: one
 *     128-byte line per thread), q from shared memory;
 *   - softmax in shared memory; out = p V: each warp sums a strided set of positions, lanes across the
 *     head's channels (coalesced rows of V), the warps' partial sums added in shared memory. */
#include "backend/cuda/cuda_internal.h"

#define ZGC_DEC_THREADS 256
#define ZGC_DEC_WARPS (ZGC_DEC_THREADS / 32)
#define ZGC_DEC_MAX_HS 256

/* out (B,C) = wte[tokens[b]] + wpe[pos[0]] */
template <typename T>
__global__ void zgc_encoder_at_kernel(T *out, const int32_t *tokens, const T *wte, const T *wpe, const int32_t *pos,
                                      int B, int C) {
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
                 (zgc_encoder_at_kernel<T>
                  <<<blocks, 256, 0, im->stream>>>((T *)out, tokens, (const T *)wte, (const T *)wpe, pos, B, C)));
    ZG_CUDA_LAUNCH_CHECK();
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

template <typename T, bool VEC>
__global__ void __launch_bounds__(ZGC_DEC_THREADS)
    zgc_att_decode_kernel(T *out, const T *qkv, T *kc, T *vc, const int32_t *pos, int maxT, int C, int NH,
                          float scale) {
    extern __shared__ float sc[]; /* maxT scores */
    __shared__ float qs[ZGC_DEC_MAX_HS];
    __shared__ float part[ZGC_DEC_WARPS][ZGC_DEC_MAX_HS];
    __shared__ float red[ZGC_DEC_WARPS];
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
    m = zgc_block_max(m, red, ZGC_DEC_WARPS);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        float p = __expf(sc[j] - m);
        sc[j] = p;
        sum += p;
    }
    sum = zgc_block_sum(sum, red, ZGC_DEC_WARPS); /* its barriers also publish sc */
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    /* out: warp w takes positions w, w + WARPS, ...; lane takes channels lane, lane + 32, ... */
    float acc[ZGC_DEC_MAX_HS / 32];
#pragma unroll
    for (int k = 0; k < ZGC_DEC_MAX_HS / 32; k++) acc[k] = 0.0f;
    for (int j = warp; j < L; j += ZGC_DEC_WARPS) {
        float p = sc[j];
        const T *vr = vb + (size_t)j * hs;
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
    __syncthreads();
    float inv = 1.0f / sum;
    T *o = out + (size_t)b * C + (size_t)h * hs;
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float s = 0.0f;
        for (int w = 0; w < ZGC_DEC_WARPS; w++) s += part[w][d];
        o[d] = zgc_from_f<T>(s * inv);
    }
}

void zgc_attention_decode(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, const int32_t *pos,
                          int B, int maxT, int C, int NH) {
    zgc_impl *im = zgc_get(be);
    int hs = C / NH;
    if (C % NH != 0 || hs > ZGC_DEC_MAX_HS)
        ZG_FATAL("attention_decode: head size %d (C %d, NH %d): must divide C and be at most %d", hs, C, NH,
                 ZGC_DEC_MAX_HS);
    size_t smem = (size_t)maxT * sizeof(float);
    /* 16-byte key loads need rows that are whole 16-byte vectors (the caches are 256-byte aligned) */
    bool vec = (hs * zgc_dtype_bytes(be->act_dtype)) % 16 == 0;
    ZGC_DISPATCH(be->act_dtype, T, {
        auto kern = vec ? zgc_att_decode_kernel<T, true> : zgc_att_decode_kernel<T, false>;
        if (smem > 48 * 1024)
            ZG_CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        kern<<<(unsigned)(B * NH), ZGC_DEC_THREADS, smem, im->stream>>>(
            (T *)out, (const T *)qkv, (T *)kcache, (T *)vcache, pos, maxT, C, NH, 1.0f / sqrtf((float)hs));
        ZG_CUDA_LAUNCH_CHECK();
    });
}

/* One block: every thread reads pos[0] before thread 0 moves it on. */
__global__ void zgc_decode_advance_kernel(int32_t *seq, int32_t *tokens, int32_t *pos, const int32_t *ids,
                                          const int32_t *plen, int B, int maxT) {
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
    zgc_impl *im = zgc_get(be);
    unsigned threads = B < 1024 ? (unsigned)((B + 31) / 32 * 32) : 1024u;
    zgc_decode_advance_kernel<<<1, threads, 0, im->stream>>>(seq, tokens, pos, ids, plen, B, maxT);
    ZG_CUDA_LAUNCH_CHECK();
}
