/* CUDA backend: device memory, the compute stream, and the memory-bound ops (embeddings,
 * LayerNorm, GELU, residual, classifier, AdamW, norms, casts). Matrix products live in
 * matmul_cuda.cu, attention in attention_cuda.cu. */
#include "backend/cuda/cuda_internal.h"

#include <cub/device/device_radix_sort.cuh>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define ZGC_LT_WORKSPACE (32u << 20)

static size_t zgc_dtype_bytes(zg_dtype dt) { return dt == ZG_F32 ? 4 : 2; }

/* ---- memory ----------------------------------------------------------------------------------- */

static void zgc_track(zg_backend *be, void *p, size_t bytes) {
    zgc_impl *im = zgc_get(be);
    if (im->n_allocs == im->cap_allocs) {
        im->cap_allocs = im->cap_allocs ? 2 * im->cap_allocs : 64;
        im->allocs = (zgc_alloc_rec *)zg_realloc(im->allocs, (size_t)im->cap_allocs * sizeof(zgc_alloc_rec));
    }
    im->allocs[im->n_allocs].ptr = p;
    im->allocs[im->n_allocs].bytes = bytes;
    im->n_allocs++;
    be->bytes_in_use += bytes;
    if (be->bytes_in_use > be->bytes_peak) be->bytes_peak = be->bytes_in_use;
}

static void *zgc_alloc(zg_backend *be, size_t bytes, const char *what) {
    if (bytes == 0) bytes = 1;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        size_t free_b = 0, total_b = 0;
        ZG_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        zg_errorf("out of GPU memory allocating %s: %.2f GiB requested, %.2f GiB already allocated by zgpt "
                  "(peak %.2f GiB), %.2f of %.2f GiB free on device %d; lower the micro-batch "
                  "(train_micro_batch_size_per_gpu), enable activation recompute, or use a higher ZeRO stage "
                  "across more GPUs",
                  what ? what : "a buffer", bytes / 1073741824.0, be->bytes_in_use / 1073741824.0,
                  be->bytes_peak / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0, be->device);
        return NULL;
    }
    ZG_CUDA_CHECK(e);
    zgc_track(be, p, bytes);
    return p;
}

void *zgc_alloc_or_die(zg_backend *be, size_t bytes, const char *what) {
    void *p = zgc_alloc(be, bytes, what);
    if (p == NULL) {
        zg_error_print();
        ZG_FATAL("cannot continue without %s", what);
    }
    return p;
}

void zgc_free(zg_backend *be, void *p) {
    if (p == NULL) return;
    zgc_impl *im = zgc_get(be);
    for (int i = 0; i < im->n_allocs; i++) {
        if (im->allocs[i].ptr == p) {
            be->bytes_in_use -= im->allocs[i].bytes;
            im->allocs[i] = im->allocs[im->n_allocs - 1];
            im->n_allocs--;
            ZG_CUDA_CHECK(cudaFree(p));
            return;
        }
    }
    ZG_FATAL("cuda dealloc of a pointer this backend did not allocate (%p)", p);
}

void *zgc_scratch(zg_backend *be, int slot, size_t bytes, const char *what) {
    zgc_impl *im = zgc_get(be);
    if (im->scratch_bytes[slot] >= bytes && im->scratch[slot] != NULL) return im->scratch[slot];
    if (im->scratch[slot] != NULL) {
        ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
        zgc_free(be, im->scratch[slot]);
        im->scratch[slot] = NULL;
    }
    size_t want = bytes + bytes / 4 + 256;
    im->scratch[slot] = zgc_alloc_or_die(be, want, what);
    im->scratch_bytes[slot] = want;
    return im->scratch[slot];
}

static void zgc_dealloc(zg_backend *be, void *p) {
    if (p == NULL) return;
    /* the buffer may still be in use by queued work */
    ZG_CUDA_CHECK(cudaStreamSynchronize(zgc_get(be)->stream));
    zgc_free(be, p);
}

static void zgc_upload(zg_backend *be, void *dst, const void *src_host, size_t bytes) {
    if (bytes == 0) return;
    ZG_CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, zgc_get(be)->stream));
}

static void zgc_download(zg_backend *be, void *dst_host, const void *src, size_t bytes) {
    if (bytes == 0) return;
    zgc_impl *im = zgc_get(be);
    ZG_CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, im->stream));
    ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
}

static void zgc_copy(zg_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    ZG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, zgc_get(be)->stream));
}

static void zgc_zero(zg_backend *be, void *p, size_t bytes) {
    if (bytes == 0) return;
    ZG_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, zgc_get(be)->stream));
}

static void zgc_synchronize(zg_backend *be) { ZG_CUDA_CHECK(cudaStreamSynchronize(zgc_get(be)->stream)); }

/* ---- casts ------------------------------------------------------------------------------------ */

template <typename TD, typename TS>
__global__ void zgc_cast_kernel(TD *dst, const TS *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = zgc_from_f<TD>(zgc_to_f(src[i]));
}

static void zgc_cast(zg_backend *be, void *dst, zg_dtype dst_dt, const void *src, zg_dtype src_dt, size_t n) {
    if (n == 0) return;
    zgc_impl *im = zgc_get(be);
    if (dst_dt == src_dt) {
        zgc_copy(be, dst, src, n * zgc_dtype_bytes(dst_dt));
        return;
    }
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(dst_dt, TD, ZGC_DISPATCH(src_dt, TS, (zgc_cast_kernel<TD, TS><<<blocks, 256, 0, im->stream>>>(
                                                          (TD *)dst, (const TS *)src, n))));
    ZG_CUDA_LAUNCH_CHECK();
}

#define ZGC_STAGING_ELEMS ((size_t)16 << 20)

static void zgc_upload_f32(zg_backend *be, void *dst, zg_dtype dt, const float *src_host, size_t n) {
    if (dt == ZG_F32) {
        zgc_upload(be, dst, src_host, n * 4);
        return;
    }
    zgc_impl *im = zgc_get(be);
    float *stage = (float *)zgc_scratch(be, ZGC_SCR_STAGING, ZGC_STAGING_ELEMS * 4, "fp32 upload staging buffer");
    for (size_t off = 0; off < n; off += ZGC_STAGING_ELEMS) {
        size_t cnt = n - off < ZGC_STAGING_ELEMS ? n - off : ZGC_STAGING_ELEMS;
        /* the previous chunk's cast must be done before the staging buffer is overwritten */
        ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
        ZG_CUDA_CHECK(cudaMemcpyAsync(stage, src_host + off, cnt * 4, cudaMemcpyHostToDevice, im->stream));
        zgc_cast(be, (char *)dst + off * 2, dt, stage, ZG_F32, cnt);
    }
    ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
}

static void zgc_download_f32(zg_backend *be, float *dst_host, const void *src, zg_dtype dt, size_t n) {
    if (dt == ZG_F32) {
        zgc_download(be, dst_host, src, n * 4);
        return;
    }
    float *stage = (float *)zgc_scratch(be, ZGC_SCR_STAGING, ZGC_STAGING_ELEMS * 4, "fp32 upload staging buffer");
    for (size_t off = 0; off < n; off += ZGC_STAGING_ELEMS) {
        size_t cnt = n - off < ZGC_STAGING_ELEMS ? n - off : ZGC_STAGING_ELEMS;
        zgc_cast(be, stage, ZG_F32, (const char *)src + off * 2, dt, cnt);
        zgc_download(be, dst_host + off, stage, cnt * 4);
    }
}

/* ---- embeddings ------------------------------------------------------------------------------- */

/* out (B,T,C) = wte[tokens] (Vp,C) + wpe[t] (maxT,C) */
template <typename T>
__global__ void zgc_encoder_fwd_kernel(T *out, const int32_t *tokens, const T *wte, const T *wpe, int BT, int Tlen,
                                       int C) {
    size_t n = (size_t)BT * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int row = (int)(i / C), c = (int)(i % C);
        int t = row % Tlen;
        int tok = tokens[row];
        out[i] = zgc_from_f<T>(zgc_to_f(wte[(size_t)tok * C + c]) + zgc_to_f(wpe[(size_t)t * C + c]));
    }
}

static void zgc_encoder_forward(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                                int B, int T, int C) {
    zgc_impl *im = zgc_get(be);
    size_t n = (size_t)B * T * C;
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(be->act_dtype, TT, (zgc_encoder_fwd_kernel<TT><<<blocks, 256, 0, im->stream>>>(
                                         (TT *)out, tokens, (const TT *)wte, (const TT *)wpe, B * T, T, C)));
    ZG_CUDA_LAUNCH_CHECK();
}

/* dwpe (T,C) += sum_b dout[b,t,:]  (deterministic: one thread per (t,c)) */
template <typename TG, typename TA>
__global__ void zgc_encoder_bwd_wpe_kernel(TG *dwpe, const TA *dout, int B, int Tlen, int C) {
    size_t n = (size_t)Tlen * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float s = zgc_to_f(dwpe[i]);
        for (int b = 0; b < B; b++) s += zgc_to_f(dout[(size_t)b * n + i]);
        dwpe[i] = zgc_from_f<TG>(s);
    }
}

/* dwte[tok] += sum of the dout rows with that token, deterministic and without atomics.
 * sorted_tok/sorted_idx (N): the tokens sorted stably (ascending) with their positions, so each token's
 * rows form one run in position order. A run of up to 32 rows (random text: nearly every run) is
 * summed by one warp; a longer one (real text repeats "\n" and ",": runs of ~1000 rows at N = 16384)
 * by a block of ZGC_ENC_WARPS warps, each summing one consecutive slice of the run, the slices then
 * added in order. Every dwte row is written by one warp or block, in a fixed order: deterministic.
 * Channels: a lane owns ZGC_ENC_NP slots of 8 channels per pass of 32*8*ZGC_ENC_NP channels (V8: 8
 * consecutive channels, 16-byte loads; otherwise channel k*32 + lane of each slot, one at a time), so
 * a row's loads are all in flight together. (The chunk kernel this replaces held one block per 32
 * sorted rows at 8 warps per SM and joined crossing runs serially: 0.74 / 0.90 ms per GPT-2 XL call
 * on random / text-like tokens, against 0.19 for the one-block-per-run kernel before it, which in turn
 * summed a 1000-row run with one thread per channel, one row after another.) */
#define ZGC_ENC_NP 8
#define ZGC_ENC_WARPS 8
#define ZGC_ENC_PASS (32 * 8 * ZGC_ENC_NP)
template <typename T> __device__ __forceinline__ void zgc_ld8(float f[8], const T *p) {
    uint4 u = *reinterpret_cast<const uint4 *>(p);
    const T *e = reinterpret_cast<const T *>(&u);
#pragma unroll
    for (int k = 0; k < 8; k++) f[k] = zgc_to_f(e[k]);
}
template <> __device__ __forceinline__ void zgc_ld8<float>(float f[8], const float *p) {
    float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
template <typename T> __device__ __forceinline__ void zgc_st8(T *p, const float f[8]) {
    uint4 u;
    T *e = reinterpret_cast<T *>(&u);
#pragma unroll
    for (int k = 0; k < 8; k++) e[k] = zgc_from_f<T>(f[k]);
    *reinterpret_cast<uint4 *>(p) = u;
}
template <> __device__ __forceinline__ void zgc_st8<float>(float *p, const float f[8]) {
    reinterpret_cast<float4 *>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}
/* offset inside a 256-channel slot of the lane's element k */
template <bool V8> __device__ __forceinline__ int zgc_enc_off(int lane, int k) { return V8 ? lane * 8 + k : k * 32 + lane; }

/* f = row's channels of the lane's slot s in pass c0 (0 past C) */
template <typename T, bool V8>
__device__ __forceinline__ void zgc_enc_load(float f[8], const T *row, int c0, int s, int lane, int C) {
    int base = c0 + s * 256;
    if (V8) {
        if (base + lane * 8 < C) zgc_ld8(f, row + base + lane * 8); /* C % 8 == 0 */
        else
#pragma unroll
            for (int k = 0; k < 8; k++) f[k] = 0.f;
    } else {
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int ch = base + zgc_enc_off<false>(lane, k);
            f[k] = ch < C ? zgc_to_f(row[ch]) : 0.f;
        }
    }
}

/* acc += the dout rows at sorted positions [r0, r1), in order, at the lane's channels of pass c0 */
template <typename TA, bool V8>
__device__ __forceinline__ void zgc_enc_sum_rows(float (*acc)[8], const TA *dout, const int32_t *sidx, int r0,
                                                 int r1, int c0, int lane, int C) {
    for (int r = r0; r < r1; r++) {
        const TA *row = dout + (size_t)sidx[r] * C;
#pragma unroll
        for (int s = 0; s < ZGC_ENC_NP; s++) {
            float f[8];
            zgc_enc_load<TA, V8>(f, row, c0, s, lane, C);
#pragma unroll
            for (int k = 0; k < 8; k++) acc[s][k] += f[k];
        }
    }
}

/* Runs of at most 32 rows: warp w of block b takes sorted position 8b + w when a run starts there. */
template <typename TG, typename TA, bool V8>
__global__ void __launch_bounds__(256, 2) zgc_encoder_bwd_wte_short_kernel(TG *dwte, const TA *dout,
                                                                           const int32_t *sorted_tok,
                                                                           const int32_t *sorted_idx, int N, int C) {
    int lane = threadIdx.x & 31, i = (int)(blockIdx.x * 8 + threadIdx.x / 32);
    if (i >= N) return; /* warp-uniform, as the next test */
    int tok = sorted_tok[i];
    if (i > 0 && sorted_tok[i - 1] == tok) return;
    int p = i + 1 + lane;
    unsigned ended = __ballot_sync(0xffffffffu, !(p < N && sorted_tok[p] == tok));
    if (ended == 0) return; /* 33 rows or more: zgc_encoder_bwd_wte_long_kernel's */
    int len = __ffs(ended);
    TG *drow = dwte + (size_t)tok * C;
    for (int c0 = 0; c0 < C; c0 += ZGC_ENC_PASS) {
        float acc[ZGC_ENC_NP][8];
#pragma unroll
        for (int s = 0; s < ZGC_ENC_NP; s++) zgc_enc_load<TG, V8>(acc[s], drow, c0, s, lane, C);
        zgc_enc_sum_rows<TA, V8>(acc, dout, sorted_idx, i, i + len, c0, lane, C);
#pragma unroll
        for (int s = 0; s < ZGC_ENC_NP; s++) {
            int base = c0 + s * 256;
            if (V8) {
                if (base + lane * 8 < C) zgc_st8(drow + base + lane * 8, acc[s]);
            } else {
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    int ch = base + zgc_enc_off<false>(lane, k);
                    if (ch < C) drow[ch] = zgc_from_f<TG>(acc[s][k]);
                }
            }
        }
    }
}

/* Runs of 33 rows or more: block b looks for one starting in sorted positions [32b, 32b + 32) (two
 * such starts are at least 33 apart); warp w sums slice w of the run, then the block adds the slices
 * to dwte in warp order, 256 channels at a time. */
template <typename TG, typename TA, bool V8>
__global__ void __launch_bounds__(ZGC_ENC_WARPS * 32, 2) zgc_encoder_bwd_wte_long_kernel(TG *dwte, const TA *dout,
                                                                                         const int32_t *sorted_tok,
                                                                                         const int32_t *sorted_idx,
                                                                                         int N, int C) {
    static_assert(ZGC_ENC_WARPS * 32 == 256, "one thread per channel of a 256-channel slot");
    __shared__ float sh[ZGC_ENC_WARPS][256];
    __shared__ int s_start;
    int lane = threadIdx.x & 31, w = threadIdx.x / 32;
    if (w == 0) {
        int p = (int)blockIdx.x * 32 + lane;
        int tok = p < N ? sorted_tok[p] : -1;
        bool start = p < N && (p == 0 || sorted_tok[p - 1] != tok) && p + 32 < N && sorted_tok[p + 32] == tok;
        unsigned m = __ballot_sync(0xffffffffu, start);
        if (lane == 0) s_start = m ? (int)blockIdx.x * 32 + __ffs(m) - 1 : -1;
    }
    __syncthreads();
    int i = s_start;
    if (i < 0) return; /* block-uniform */
    int tok = sorted_tok[i];
    int lo = i + 33, hi = N; /* the run's end: the first position after it (tokens ascending) */
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (sorted_tok[mid] == tok) lo = mid + 1;
        else hi = mid;
    }
    int end = lo, per = (end - i + ZGC_ENC_WARPS - 1) / ZGC_ENC_WARPS;
    int r0 = min(end, i + w * per), r1 = min(end, r0 + per);
    TG *drow = dwte + (size_t)tok * C;
    for (int c0 = 0; c0 < C; c0 += ZGC_ENC_PASS) {
        float acc[ZGC_ENC_NP][8];
#pragma unroll
        for (int s = 0; s < ZGC_ENC_NP; s++)
#pragma unroll
            for (int k = 0; k < 8; k++) acc[s][k] = 0.f;
        zgc_enc_sum_rows<TA, V8>(acc, dout, sorted_idx, r0, r1, c0, lane, C);
#pragma unroll
        for (int s = 0; s < ZGC_ENC_NP; s++) {
            if (c0 + s * 256 >= C) break; /* block-uniform */
#pragma unroll
            for (int k = 0; k < 8; k++) sh[w][zgc_enc_off<V8>(lane, k)] = acc[s][k];
            __syncthreads();
            int ch = c0 + s * 256 + threadIdx.x;
            if (ch < C) {
                float v = zgc_to_f(drow[ch]);
                for (int ww = 0; ww < ZGC_ENC_WARPS; ww++) v += sh[ww][threadIdx.x];
                drow[ch] = zgc_from_f<TG>(v);
            }
            __syncthreads();
        }
    }
}

/* The two wte kernels: warps for the short runs, blocks for the long ones (disjoint runs). */
template <typename TG, typename TA, bool V8>
static void zgc_encoder_bwd_wte_launch(cudaStream_t st, TG *dwte, const TA *dout, const int32_t *stok,
                                       const int32_t *sidx, int N, int C) {
    zgc_encoder_bwd_wte_short_kernel<TG, TA, V8><<<(N + 7) / 8, 256, 0, st>>>(dwte, dout, stok, sidx, N, C);
    ZG_CUDA_LAUNCH_CHECK();
    zgc_encoder_bwd_wte_long_kernel<TG, TA, V8><<<(N + 31) / 32, ZGC_ENC_WARPS * 32, 0, st>>>(dwte, dout, stok, sidx,
                                                                                             N, C);
    ZG_CUDA_LAUNCH_CHECK();
}

__global__ void zgc_iota_kernel(int32_t *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = i;
}

static void zgc_encoder_backward(zg_backend *be, void *dwte, void *dwpe, const void *dout, const int32_t *tokens,
                                 int B, int T, int C) {
    zgc_impl *im = zgc_get(be);
    int N = B * T;
    size_t tmp_bytes = 0;
    ZG_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(NULL, tmp_bytes, (const int32_t *)NULL, (int32_t *)NULL,
                                                  (const int32_t *)NULL, (int32_t *)NULL, N, 0, 32, im->stream));
    size_t arr = ((size_t)N * 4 + 255) / 256 * 256;
    /* iota | sorted tokens | sorted positions (N int32 each) | cub */
    char *scr = (char *)zgc_scratch(be, ZGC_SCR_SORT, 3 * arr + tmp_bytes, "embedding-gradient sort buffers");
    int32_t *iota = (int32_t *)scr, *stok = (int32_t *)(scr + arr), *sidx = (int32_t *)(scr + 2 * arr);
    zgc_iota_kernel<<<(N + 255) / 256, 256, 0, im->stream>>>(iota, N);
    ZG_CUDA_LAUNCH_CHECK();
    ZG_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scr + 3 * arr, tmp_bytes, tokens, stok, iota, sidx, N, 0, 32,
                                                  im->stream));
    unsigned blocks = zgc_blocks((size_t)T * C, 256, (unsigned)im->num_sms * 16);
    /* 8-channel vectors: C a multiple of 8 and both rows' bases 16-byte aligned */
    bool v8 = C % 8 == 0 && (((uintptr_t)dout | (uintptr_t)dwte) % 16) == 0;
    ZGC_DISPATCH(be->grad_dtype, TG, ZGC_DISPATCH(be->act_dtype, TA, {
        zgc_encoder_bwd_wpe_kernel<TG, TA><<<blocks, 256, 0, im->stream>>>((TG *)dwpe, (const TA *)dout, B, T, C);
        ZG_CUDA_LAUNCH_CHECK();
        if (v8) zgc_encoder_bwd_wte_launch<TG, TA, true>(im->stream, (TG *)dwte, (const TA *)dout, stok, sidx, N, C);
        else zgc_encoder_bwd_wte_launch<TG, TA, false>(im->stream, (TG *)dwte, (const TA *)dout, stok, sidx, N, C);
    }));
}

/* ---- LayerNorm -------------------------------------------------------------------------------- */

__device__ __forceinline__ float zgc_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float zgc_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* 16-byte vector of T */
template <typename T> struct alignas(16) zgc_vec {
    T v[16 / sizeof(T)];
};

/* Scalar fallback (any C, any alignment, parameters in another dtype than activations): one warp
 * per row, three passes over the row in device memory.
 * out (N,C) = (x - mean) * rstd * w + bias; mean, rstd (N) fp32, may be NULL. */
template <typename TA, typename TP>
__global__ void zgc_layernorm_fwd_kernel(TA *out, float *mean, float *rstd, const TA *x, const TP *w,
                                         const TP *bias, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    size_t base = (size_t)row * C;
    float s = 0.f;
    for (int c = lane; c < C; c += 32) s += zgc_to_f(x[base + c]);
    float mu = zgc_warp_sum(s) / C;
    float v = 0.f;
    for (int c = lane; c < C; c += 32) {
        float d = zgc_to_f(x[base + c]) - mu;
        v += d * d;
    }
    float rs = rsqrtf(zgc_warp_sum(v) / C + 1e-5f);
    for (int c = lane; c < C; c += 32) {
        float y = (zgc_to_f(x[base + c]) - mu) * rs * zgc_to_f(w[c]) + zgc_to_f(bias[c]);
        out[base + c] = zgc_from_f<TA>(y);
    }
    if (lane == 0 && mean != NULL) mean[row] = mu; /* statistics may be skipped (inference) */
    if (lane == 0 && rstd != NULL) rstd[row] = rs;
}

/* Register-resident forward: one warp per row, lane owns the 16-byte vectors lane, lane + 32, ...
 * (NV = ceil(C/VW/32) of them at most, VW = 16/sizeof(T)). The row is read from device memory once
 * into registers; the mean pass, the variance pass over (x - mean) (two-pass, as the scalar kernel)
 * and the output all work from the registers, so the kernel moves 2*C*sizeof(T) bytes per row and
 * runs at memory bandwidth. Needs C % VW == 0, 16-byte aligned out/x/w/bias, parameters in T.
 * out (N,C), x (N,C), w (C), bias (C); mean, rstd (N) fp32, may be NULL.
 * Registers (ptxas, sm_90): bf16 46 at C = 768 (NV 3), 80 at C = 1600 (NV 7; the compiler keeps the
 * row converted to fp32), so 40 and 24 resident warps per SM: 60-77 KB of row loads can be in
 * flight per SM, above what HBM latency x bandwidth needs. Forcing 4 blocks/SM (64 registers)
 * spills for bf16 NV >= 6, so no min-blocks bound. 4 warps per block: a block retires when its
 * slowest row is done, so small blocks waste fewer idle warp slots. */
#define ZGC_LNF_WARPS 4
template <typename T, int NV>
__global__ void __launch_bounds__(ZGC_LNF_WARPS * 32)
zgc_layernorm_fwd_reg_kernel(T *__restrict__ out, float *__restrict__ mean, float *__restrict__ rstd,
                             const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ bias, int N,
                             int C) {
    constexpr int VW = 16 / sizeof(T);
    typedef zgc_vec<T> V;
    int row = blockIdx.x * ZGC_LNF_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    int nv = C / VW;
    const V *xv = reinterpret_cast<const V *>(x + (size_t)row * C);
    V r[NV];
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int k = lane + 32 * i;
        if (k < nv) {
            r[i] = xv[k];
#pragma unroll
            for (int e = 0; e < VW; e++) s += zgc_to_f(r[i].v[e]);
        }
    }
    float mu = zgc_warp_sum(s) / C;
    float v = 0.f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int k = lane + 32 * i;
        if (k < nv)
#pragma unroll
            for (int e = 0; e < VW; e++) {
                float d = zgc_to_f(r[i].v[e]) - mu;
                v += d * d;
            }
    }
    float rs = rsqrtf(zgc_warp_sum(v) / C + 1e-5f);
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(bias);
    V *ov = reinterpret_cast<V *>(out + (size_t)row * C);
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int k = lane + 32 * i;
        if (k < nv) {
            V ww = wv[k], bb = bv[k], o;
#pragma unroll
            for (int e = 0; e < VW; e++)
                o.v[e] = zgc_from_f<T>((zgc_to_f(r[i].v[e]) - mu) * rs * zgc_to_f(ww.v[e]) + zgc_to_f(bb.v[e]));
            ov[k] = o;
        }
    }
    if (lane == 0 && mean != NULL) mean[row] = mu; /* statistics may be skipped (inference) */
    if (lane == 0 && rstd != NULL) rstd[row] = rs;
}

template <typename T, int NV>
static void zgc_ln_fwd_reg_launch(zg_backend *be, void *out, float *mean, float *rstd, const void *inp,
                                  const void *w, const void *b, int N, int C) {
    unsigned blocks = (unsigned)((N + ZGC_LNF_WARPS - 1) / ZGC_LNF_WARPS);
    zgc_layernorm_fwd_reg_kernel<T, NV><<<blocks, ZGC_LNF_WARPS * 32, 0, zgc_get(be)->stream>>>(
        (T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)b, N, C);
}

static void zgc_layernorm_forward(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                                  const void *b, int N, int C) {
    zgc_impl *im = zgc_get(be);
    if (N <= 0) return;
    int vw = (int)(16 / zgc_dtype_bytes(be->act_dtype));
    uintptr_t al = (uintptr_t)out | (uintptr_t)inp | (uintptr_t)w | (uintptr_t)b;
    int nvl = (C / vw + 31) / 32; /* 16-byte vectors per lane */
    if (be->param_dtype == be->act_dtype && C % vw == 0 && al % 16 == 0 && nvl >= 1 && nvl <= 8) {
        ZGC_DISPATCH(be->act_dtype, T, {
            switch (nvl) {
            case 1: zgc_ln_fwd_reg_launch<T, 1>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 2: zgc_ln_fwd_reg_launch<T, 2>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 3: zgc_ln_fwd_reg_launch<T, 3>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 4: zgc_ln_fwd_reg_launch<T, 4>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 5: zgc_ln_fwd_reg_launch<T, 5>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 6: zgc_ln_fwd_reg_launch<T, 6>(be, out, mean, rstd, inp, w, b, N, C); break;
            case 7: zgc_ln_fwd_reg_launch<T, 7>(be, out, mean, rstd, inp, w, b, N, C); break;
            default: zgc_ln_fwd_reg_launch<T, 8>(be, out, mean, rstd, inp, w, b, N, C); break;
            }
        });
    } else {
        unsigned blocks = (unsigned)((N + 7) / 8);
        ZGC_DISPATCH(be->act_dtype, TA, ZGC_DISPATCH(be->param_dtype, TP, (zgc_layernorm_fwd_kernel<TA, TP><<<blocks, 256, 0, im->stream>>>(
            (TA *)out, mean, rstd, (const TA *)inp, (const TP *)w, (const TP *)b, N, C))));
    }
    ZG_CUDA_LAUNCH_CHECK();
}

/* LayerNorm backward. Each block (ZGC_LN_WARPS warps) takes rows blockIdx.x*W + warp, stepping by
 * gridDim.x*W; each warp accumulates its own dw/db partials in shared memory (lane owns columns
 * c = lane mod 32, so no atomics), then the block sums its warps in order and writes
 * part (gridDim.x, 2C): deterministic. dinp (N,C) += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)),
 * dnorm = dout * w; dw (C) += sum over rows of dout * xhat, db (C) += sum over rows of dout.
 *
 * xhat (the normalized input) comes in one of two forms, chosen per call:
 *  - input form: xhat = (x - mean) * rstd, from the forward's input x (N,C) and its statistics;
 *  - output form (fromy, x == NULL): xhat = (y - b) * invw, invw = 1/w (0 where w == 0), from the
 *    forward's output y (N,C) and the bias b (C); the row means are not used (Apex/Megatron's
 *    memory-efficient LayerNorm: the model keeps y, which the next matmul needs anyway, and need not
 *    keep x). dnorm * xhat = dout * (y - b) exactly (where w == 0, y == b when b is in y's dtype,
 *    as the vector kernels require, so both are 0), so the row sums need no reciprocal; dw and dinp
 *    do. Both forms move the same bytes per row (dout, x or y, dinp read, dinp written; w and b are
 *    C-vectors that stay in L1/L2). */
#define ZGC_LN_WARPS 4

/* 1/w for the output form; 0 where w is exactly 0 (a denormal w counts as 0: this file builds with
 * flush-to-zero): y = b there, the column's input cannot be recovered and its xhat is taken as 0
 * (dw gets 0, dinp only the row terms). Approximate (MUFU.RCP, ~1 ulp of fp32): y is stored in
 * bf16/fp16, whose rounding dominates. */
__device__ __forceinline__ float zgc_ln_invw(float w) { return w != 0.f ? __fdividef(1.f, w) : 0.f; }

/* Scalar fallback (any C, any alignment, parameters in another dtype than activations).
 * src (N,C) is x (input form) or y (fromy); b (C) is read only when fromy; mean only when not. */
template <typename TA, typename TP>
__global__ void zgc_layernorm_bwd_kernel(TA *dinp, float *part, const TA *dout, const TA *src, const TP *w,
                                         const TP *b, const float *mean, const float *rstd, bool fromy, int N,
                                         int C) {
    extern __shared__ float sh[]; /* (warps, 2C): dw (C), db (C) per warp */
    for (int c = threadIdx.x; c < ZGC_LN_WARPS * 2 * C; c += blockDim.x) sh[c] = 0.f;
    __syncthreads();
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *mine = sh + (size_t)wid * 2 * C;
    for (int row = blockIdx.x * ZGC_LN_WARPS + wid; row < N; row += gridDim.x * ZGC_LN_WARPS) {
        size_t base = (size_t)row * C;
        float mu = fromy ? 0.f : mean[row], rs = rstd[row];
        float s1 = 0.f, s2 = 0.f;
        /* xhat here from invw in both passes (not dout * (y - b) for s2): with parameters in another
         * dtype than y, y = b is not exact where w = 0, and that column's xhat must be 0 */
        for (int c = lane; c < C; c += 32) {
            float wc = zgc_to_f(w[c]), v = zgc_to_f(src[base + c]);
            float xh = fromy ? (v - zgc_to_f(b[c])) * zgc_ln_invw(wc) : (v - mu) * rs;
            float dn = zgc_to_f(dout[base + c]) * wc;
            s1 += dn;
            s2 += dn * xh;
        }
        s1 = zgc_warp_sum(s1) / C;
        s2 = zgc_warp_sum(s2) / C;
        for (int c = lane; c < C; c += 32) {
            float wc = zgc_to_f(w[c]), v = zgc_to_f(src[base + c]);
            float xh = fromy ? (v - zgc_to_f(b[c])) * zgc_ln_invw(wc) : (v - mu) * rs;
            float d = zgc_to_f(dout[base + c]);
            float dn = d * wc;
            mine[c] += d * xh;
            mine[C + c] += d;
            dinp[base + c] = zgc_from_f<TA>(zgc_to_f(dinp[base + c]) + rs * (dn - s1 - xh * s2));
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < ZGC_LN_WARPS; k++) s += sh[(size_t)k * 2 * C + c];
        part[(size_t)blockIdx.x * 2 * C + c] = s;
    }
}

/* The same as zgc_layernorm_bwd_kernel with 16-byte loads/stores (C a multiple of the vector
 * width, rows, w and b 16-byte aligned, parameters in the activation dtype). Lane owns vectors
 * lane, lane + 32, ... of each row, so its dw/db slots in shared memory are private. fromy is
 * warp-uniform: one branch per vector, not per element. */
template <typename T>
__global__ void zgc_layernorm_bwd_vec_kernel(T *dinp, float *part, const T *dout, const T *src, const T *w,
                                             const T *b, const float *mean, const float *rstd, bool fromy, int N,
                                             int C) {
    constexpr int VW = 16 / sizeof(T);
    typedef zgc_vec<T> V;
    extern __shared__ float sh[];
    for (int c = threadIdx.x; c < ZGC_LN_WARPS * 2 * C; c += blockDim.x) sh[c] = 0.f;
    __syncthreads();
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *mine = sh + (size_t)wid * 2 * C;
    int nv = C / VW;
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(b);
    for (int row = blockIdx.x * ZGC_LN_WARPS + wid; row < N; row += gridDim.x * ZGC_LN_WARPS) {
        const V *dv = reinterpret_cast<const V *>(dout + (size_t)row * C);
        const V *xv = reinterpret_cast<const V *>(src + (size_t)row * C);
        V *gv = reinterpret_cast<V *>(dinp + (size_t)row * C);
        float mu = fromy ? 0.f : mean[row], rs = rstd[row];
        float s1 = 0.f, s2 = 0.f;
        for (int k = lane; k < nv; k += 32) {
            V d = dv[k], x = xv[k], ww = wv[k];
            if (fromy) {
                V bb = bv[k];
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float dd = zgc_to_f(d.v[e]);
                    s1 += dd * zgc_to_f(ww.v[e]);
                    s2 += dd * (zgc_to_f(x.v[e]) - zgc_to_f(bb.v[e])); /* = dnorm * xhat */
                }
            } else {
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float dn = zgc_to_f(d.v[e]) * zgc_to_f(ww.v[e]);
                    s1 += dn;
                    s2 += dn * (zgc_to_f(x.v[e]) - mu) * rs;
                }
            }
        }
        s1 = zgc_warp_sum(s1) / C;
        s2 = zgc_warp_sum(s2) / C;
        for (int k = lane; k < nv; k += 32) {
            V d = dv[k], x = xv[k], ww = wv[k], gi = gv[k], go;
            V bb = fromy ? bv[k] : ww; /* ww: a placeholder the input form does not read */
#pragma unroll
            for (int e = 0; e < VW; e++) {
                float wf = zgc_to_f(ww.v[e]), dd = zgc_to_f(d.v[e]);
                float xh = fromy ? (zgc_to_f(x.v[e]) - zgc_to_f(bb.v[e])) * zgc_ln_invw(wf)
                                 : (zgc_to_f(x.v[e]) - mu) * rs;
                float dn = dd * wf;
                mine[k * VW + e] += dd * xh;
                mine[C + k * VW + e] += dd;
                go.v[e] = zgc_from_f<T>(zgc_to_f(gi.v[e]) + rs * (dn - s1 - xh * s2));
            }
            gv[k] = go;
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < ZGC_LN_WARPS; k++) s += sh[(size_t)k * 2 * C + c];
        part[(size_t)blockIdx.x * 2 * C + c] = s;
    }
}

/* Register-resident variant: NV = the most 16-byte vectors a lane owns in a row (ceil(C/VW/32)).
 * The row's dout and x (or y) vectors stay in registers between the two passes, so device memory
 * sees each input once. The lane's dw/db partial sums (its columns are the same for every row) stay
 * in registers until the end (SACC = false), or, for wide rows where 2*NV*VW more registers would
 * cut the resident warps (C = 1600: 255 registers, 8 warps per SM), in the warp's own shared-memory
 * slots (SACC = true), laid out [e * nv + k] for vector k, element e so a warp's accesses are
 * consecutive words (no bank conflicts). Each lane owns its slots: no atomics, deterministic.
 * FROMY (a template parameter, so the input form compiles to the same code as before the output
 * form existed) selects the output form: src is y, b (C) is read (one more 16-byte L1 load per
 * vector in each pass), mean is not, and the second pass takes one reciprocal per element (a
 * predicated MUFU.RCP): w's vector is reloaded per row from L1 anyway, and keeping 1/w across rows
 * would cost NV*VW more registers, or, as C floats of shared memory beside the partials, the 4th
 * resident block at C = 1600 (4 x 57.6 KB > 228 KB).
 * Registers (ptxas, sm_90, launch_bounds(128, 4) caps them at 128), input / output form:
 * bf16 C = 1600 (NV 7, SACC) 128 / 128 with 40 / 46 bytes of spill stores and 76 / 88 of spill
 * loads (16-bit halves of the row's vectors parked in L1 between the passes: the input form
 * spilled the same before); bf16 C = 768 (NV 3, register accumulators) 128 / 128, no spills;
 * fp16 NV 7 114 / 119, NV 3 125 / 126, no spills. bf16 converts to fp32 with integer shifts/masks
 * that keep more live values than fp16's conversions. Timed (H200, bf16, B*T = 16384): C = 768
 * 0.051 / 0.052 ms, C = 1600 0.115 / 0.125 ms (the output form's extra per-element instructions:
 * b's conversion, the reciprocal and its zero test). */
template <typename T, int NV, bool SACC, bool FROMY>
__global__ void __launch_bounds__(ZGC_LN_WARPS * 32, 4)
zgc_layernorm_bwd_reg_kernel(T *dinp, float *part, const T *dout, const T *src, const T *w, const T *b,
                             const float *mean, const float *rstd, int N, int C) {
    constexpr int VW = 16 / sizeof(T);
    constexpr int NA = SACC ? 1 : NV; /* register accumulators (unused with SACC) */
    typedef zgc_vec<T> V;
    extern __shared__ float sh[]; /* (warps, 2C) */
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    int nv = C / VW;
    const V *wv = reinterpret_cast<const V *>(w), *bv = reinterpret_cast<const V *>(b);
    float *mine = sh + (size_t)wid * 2 * C;
    float dwa[NA][VW], dba[NA][VW];
#pragma unroll
    for (int i = 0; i < NA; i++)
#pragma unroll
        for (int e = 0; e < VW; e++) dwa[i][e] = dba[i][e] = 0.f;
    if (SACC)
        for (int i = 0; i < NV; i++) {
            int k = lane + 32 * i;
            if (k < nv)
                for (int e = 0; e < VW; e++) mine[e * nv + k] = mine[C + e * nv + k] = 0.f;
        }
    for (int row = blockIdx.x * ZGC_LN_WARPS + wid; row < N; row += gridDim.x * ZGC_LN_WARPS) {
        const V *dv = reinterpret_cast<const V *>(dout + (size_t)row * C);
        const V *xv = reinterpret_cast<const V *>(src + (size_t)row * C);
        V *gv = reinterpret_cast<V *>(dinp + (size_t)row * C);
        float mu = FROMY ? 0.f : mean[row], rs = rstd[row];
        V d[NV], x[NV]; /* x: the row of x, or of y with FROMY */
        float s1 = 0.f, s2 = 0.f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int k = lane + 32 * i;
            if (k < nv) {
                d[i] = dv[k];
                x[i] = xv[k];
                V ww = wv[k];
                if (FROMY) {
                    V bb = bv[k];
#pragma unroll
                    for (int e = 0; e < VW; e++) {
                        float dd = zgc_to_f(d[i].v[e]);
                        s1 += dd * zgc_to_f(ww.v[e]);
                        s2 += dd * (zgc_to_f(x[i].v[e]) - zgc_to_f(bb.v[e])); /* = dnorm * xhat */
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < VW; e++) {
                        float dn = zgc_to_f(d[i].v[e]) * zgc_to_f(ww.v[e]);
                        s1 += dn;
                        s2 += dn * (zgc_to_f(x[i].v[e]) - mu) * rs;
                    }
                }
            }
        }
        s1 = zgc_warp_sum(s1) / C;
        s2 = zgc_warp_sum(s2) / C;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int k = lane + 32 * i;
            if (k < nv) {
                V ww = wv[k], gi = gv[k], go;
                V bb = FROMY ? bv[k] : ww; /* ww: a placeholder the input form does not read */
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    float xh = FROMY ? (zgc_to_f(x[i].v[e]) - zgc_to_f(bb.v[e])) * zgc_ln_invw(zgc_to_f(ww.v[e]))
                                     : (zgc_to_f(x[i].v[e]) - mu) * rs;
                    float dd = zgc_to_f(d[i].v[e]);
                    if (SACC) {
                        mine[e * nv + k] += dd * xh;
                        mine[C + e * nv + k] += dd;
                    } else {
                        dwa[i][e] += dd * xh;
                        dba[i][e] += dd;
                    }
                    go.v[e] = zgc_from_f<T>(zgc_to_f(gi.v[e]) + rs * (dd * zgc_to_f(ww.v[e]) - s1 - xh * s2));
                }
                gv[k] = go;
            }
        }
    }
    if (!SACC) {
#pragma unroll
        for (int i = 0; i < NA; i++) {
            int k = lane + 32 * i;
            if (k < nv)
#pragma unroll
                for (int e = 0; e < VW; e++) {
                    mine[k * VW + e] = dwa[i][e];
                    mine[C + k * VW + e] = dba[i][e];
                }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
        int cc = c < C ? c : c - C;
        int at = SACC ? (c - cc) + (cc % VW) * nv + cc / VW : c; /* where column c's partial lives */
        float sum = 0.f;
        for (int k = 0; k < ZGC_LN_WARPS; k++) sum += sh[(size_t)k * 2 * C + at];
        part[(size_t)blockIdx.x * 2 * C + c] = sum;
    }
}

/* Launches one wave (the resident blocks), at most nblocks; returns the grid size used. */
template <typename T, int NV, bool FROMY>
static int zgc_ln_bwd_reg_launch_form(zg_backend *be, void *dinp, float *part, const void *dout, const void *src,
                                      const void *w, const void *b, const float *mean, const float *rstd, int N,
                                      int C, int nblocks, size_t smem) {
    constexpr bool SACC = NV >= 4; /* register accumulators would need 2*NV*VW >= 64 more registers */
    if (smem > 48 * 1024)
        ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_layernorm_bwd_reg_kernel<T, NV, SACC, FROMY>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    ZG_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, zgc_layernorm_bwd_reg_kernel<T, NV, SACC, FROMY>, ZGC_LN_WARPS * 32, smem));
    int grid = per_sm * zgc_get(be)->num_sms;
    if (grid < 1) grid = 1;
    if (grid > nblocks) grid = nblocks;
    zgc_layernorm_bwd_reg_kernel<T, NV, SACC, FROMY><<<grid, ZGC_LN_WARPS * 32, smem, zgc_get(be)->stream>>>(
        (T *)dinp, part, (const T *)dout, (const T *)src, (const T *)w, (const T *)b, mean, rstd, N, C);
    return grid;
}

/* fromy (run time) -> FROMY (compile time) */
template <typename T, int NV>
static int zgc_ln_bwd_reg_launch(zg_backend *be, void *dinp, float *part, const void *dout, const void *src,
                                 const void *w, const void *b, const float *mean, const float *rstd, bool fromy,
                                 int N, int C, int nblocks, size_t smem) {
    if (fromy) return zgc_ln_bwd_reg_launch_form<T, NV, true>(be, dinp, part, dout, src, w, b, mean, rstd, N, C, nblocks, smem);
    return zgc_ln_bwd_reg_launch_form<T, NV, false>(be, dinp, part, dout, src, w, b, mean, rstd, N, C, nblocks, smem);
}

/* dw (C) += sum over blocks of part[:, c]; db likewise. Block (32, 32): 32 columns, 32 threads
 * splitting the nblocks partial rows (thread y takes rows y, y+32, ...) into 4 running sums each
 * (rows y + 32*(4i+j) go to sum j) so four loads per array are in flight instead of one, then
 * summed in y order in shared memory: a fixed order, so deterministic. (One thread per column
 * summing all nblocks rows serially left the kernel latency-bound: ~20-40 us of each ~165 us GPT-2
 * XL call; 16 threads with one running sum still waited for ~33 loads in a row.) */
#define ZGC_LN_RED_Y 32
template <typename TG>
__global__ void zgc_layernorm_bwd_reduce_kernel(TG *dw, TG *db, const float *part, int nblocks, int C) {
    __shared__ float sw[ZGC_LN_RED_Y][33], sb[ZGC_LN_RED_Y][33];
    int tx = threadIdx.x, ty = threadIdx.y;
    int c = blockIdx.x * 32 + tx;
    float a[4] = {0.f, 0.f, 0.f, 0.f}, b[4] = {0.f, 0.f, 0.f, 0.f};
    if (c < C)
        for (int k0 = ty; k0 < nblocks; k0 += 4 * ZGC_LN_RED_Y)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int k = k0 + j * ZGC_LN_RED_Y;
                if (k < nblocks) {
                    a[j] += part[(size_t)k * 2 * C + c];
                    b[j] += part[(size_t)k * 2 * C + C + c];
                }
            }
    sw[ty][tx] = (a[0] + a[1]) + (a[2] + a[3]);
    sb[ty][tx] = (b[0] + b[1]) + (b[2] + b[3]);
    __syncthreads();
    if (ty == 0 && c < C) {
        float sa = 0.f, sbb = 0.f;
        for (int y = 0; y < ZGC_LN_RED_Y; y++) {
            sa += sw[y][tx];
            sbb += sb[y][tx];
        }
        dw[c] = zgc_from_f<TG>(zgc_to_f(dw[c]) + sa);
        db[c] = zgc_from_f<TG>(zgc_to_f(db[c]) + sbb);
    }
}

/* x (N,C) with mean and rstd (input form), or x == NULL and y (N,C) with b (C) and rstd (output
 * form, mean unused); see the comment above zgc_layernorm_bwd_kernel. */
static void zgc_layernorm_backward(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *x,
                                   const void *y, const void *w, const void *b, const float *mean, const float *rstd,
                                   int N, int C) {
    zgc_impl *im = zgc_get(be);
    bool fromy = x == NULL;
    const void *src = fromy ? y : x; /* (N,C): the rows xhat is computed from */
    zg_layernorm_backward_check(x, y, b, mean);
    int nblocks = im->num_sms * 4;
    if (nblocks > (N + ZGC_LN_WARPS - 1) / ZGC_LN_WARPS) nblocks = (N + ZGC_LN_WARPS - 1) / ZGC_LN_WARPS;
    if (nblocks < 1) nblocks = 1;
    float *part = (float *)zgc_scratch(be, ZGC_SCR_LN, (size_t)nblocks * 2 * C * 4, "layernorm-gradient partial sums");
    size_t smem = (size_t)ZGC_LN_WARPS * 2 * C * 4;
    int used = nblocks; /* blocks that wrote partial sums */
    size_t vw = 16 / zgc_dtype_bytes(be->act_dtype);
    /* b is read as 16-byte vectors only in the output form (the input form may pass NULL or anything) */
    uintptr_t al = (uintptr_t)dinp | (uintptr_t)dout | (uintptr_t)src | (uintptr_t)w | (fromy ? (uintptr_t)b : 0);
    int nvl = (int)((C / (int)vw + 31) / 32); /* vectors per lane */
    if (be->param_dtype == be->act_dtype && C % vw == 0 && al % 16 == 0 && nvl <= 8) {
        ZGC_DISPATCH(be->act_dtype, T, {
            switch (nvl) {
            case 1: used = zgc_ln_bwd_reg_launch<T, 1>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            case 2: used = zgc_ln_bwd_reg_launch<T, 2>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            case 3: used = zgc_ln_bwd_reg_launch<T, 3>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            case 4: used = zgc_ln_bwd_reg_launch<T, 4>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            case 5: used = zgc_ln_bwd_reg_launch<T, 5>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            case 6: used = zgc_ln_bwd_reg_launch<T, 6>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            case 7: used = zgc_ln_bwd_reg_launch<T, 7>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            default: used = zgc_ln_bwd_reg_launch<T, 8>(be, dinp, part, dout, src, w, b, mean, rstd, fromy, N, C, nblocks, smem); break;
            }
        });
    } else if (be->param_dtype == be->act_dtype && C % vw == 0 && al % 16 == 0) {
        ZGC_DISPATCH(be->act_dtype, T, {
            if (smem > 48 * 1024)
                ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_layernorm_bwd_vec_kernel<T>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            zgc_layernorm_bwd_vec_kernel<T><<<nblocks, ZGC_LN_WARPS * 32, smem, im->stream>>>(
                (T *)dinp, part, (const T *)dout, (const T *)src, (const T *)w, (const T *)b, mean, rstd, fromy, N, C);
        });
    } else {
        ZGC_DISPATCH(be->act_dtype, TA, ZGC_DISPATCH(be->param_dtype, TP, {
            if (smem > 48 * 1024)
                ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_layernorm_bwd_kernel<TA, TP>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            zgc_layernorm_bwd_kernel<TA, TP><<<nblocks, ZGC_LN_WARPS * 32, smem, im->stream>>>(
                (TA *)dinp, part, (const TA *)dout, (const TA *)src, (const TP *)w, (const TP *)b, mean, rstd, fromy,
                N, C);
        }));
    }
    ZG_CUDA_LAUNCH_CHECK();
    ZGC_DISPATCH(be->grad_dtype, TG, (zgc_layernorm_bwd_reduce_kernel<TG><<<(C + 31) / 32, dim3(32, ZGC_LN_RED_Y), 0, im->stream>>>(
                                         (TG *)dw, (TG *)db, part, used, C)));
    ZG_CUDA_LAUNCH_CHECK();
}

/* ---- GELU, residual --------------------------------------------------------------------------- */

__device__ __forceinline__ float zgc_gelu(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}

template <typename T>
__global__ void zgc_gelu_kernel(T *out, const T *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = zgc_from_f<T>(zgc_gelu(zgc_to_f(inp[i])));
}

static void zgc_gelu_forward(zg_backend *be, void *out, const void *inp, size_t n) {
    zgc_impl *im = zgc_get(be);
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(be->act_dtype, T, (zgc_gelu_kernel<T><<<blocks, 256, 0, im->stream>>>((T *)out, (const T *)inp, n)));
    ZG_CUDA_LAUNCH_CHECK();
}

template <typename T>
__global__ void zgc_residual_kernel(T *out, const T *a, const T *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = zgc_from_f<T>(zgc_to_f(a[i]) + zgc_to_f(b[i]));
}

static void zgc_residual_forward(zg_backend *be, void *out, const void *a, const void *b, size_t n) {
    zgc_impl *im = zgc_get(be);
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(be->act_dtype, T, (zgc_residual_kernel<T><<<blocks, 256, 0, im->stream>>>((T *)out, (const T *)a,
                                                                                            (const T *)b, n)));
    ZG_CUDA_LAUNCH_CHECK();
}

/* ---- classifier ------------------------------------------------------------------------------- */

/* One block per row of logits (N,Vp): softmax over the first V columns, loss = logsumexp - x[target];
 * if dloss != 0 the row is overwritten with (softmax - onehot(target)) * dloss (padding -> 0).
 * VEC: 16-byte loads/stores (needs Vp a multiple of the vector width and an aligned buffer); the
 * second pass re-reads the row from L2 (a row is Vp*2 bytes; the rows in flight fit in L2). */
__device__ __forceinline__ void zgc_online_add(float &m, float &s, float v) {
    if (v > m) {
        s = s * __expf(m - v) + 1.f;
        m = v;
    } else {
        s += __expf(v - m);
    }
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(1024) zgc_classifier_kernel(float *losses, T *logits, const int32_t *targets, int V,
                                                              int Vp, float dloss) {
    constexpr int VW = 16 / sizeof(T);
    typedef zgc_vec<T> VT;
    __shared__ float sm[32], ss[32];
    int row = blockIdx.x;
    T *x = logits + (size_t)row * Vp;
    int tgt = targets[row];
    float m = -INFINITY, s = 0.f;
    if (VEC) {
        const VT *xv = reinterpret_cast<const VT *>(x);
        int nfull = V / VW;
        for (int k = threadIdx.x; k < nfull; k += blockDim.x) {
            VT v = xv[k];
#pragma unroll
            for (int e = 0; e < VW; e++) zgc_online_add(m, s, zgc_to_f(v.v[e]));
        }
        for (int j = nfull * VW + threadIdx.x; j < V; j += blockDim.x) zgc_online_add(m, s, zgc_to_f(x[j]));
    } else {
        for (int j = threadIdx.x; j < V; j += blockDim.x) zgc_online_add(m, s, zgc_to_f(x[j]));
    }
    /* combine (m, s) pairs across the warp, then across warps */
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        float mn = fmaxf(m, m2);
        s = (mn == -INFINITY) ? 0.f : s * __expf(m - mn) + s2 * __expf(m2 - mn);
        m = mn;
    }
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    if (lane == 0) {
        sm[wid] = m;
        ss[wid] = s;
    }
    __syncthreads();
    float M = -INFINITY;
    for (int k = 0; k < nw; k++) M = fmaxf(M, sm[k]);
    float S = 0.f;
    for (int k = 0; k < nw; k++) S += (sm[k] == -INFINITY) ? 0.f : ss[k] * __expf(sm[k] - M);
    float lse = M + logf(S);
    if (threadIdx.x == 0 && losses != NULL) losses[row] = tgt >= 0 ? lse - zgc_to_f(x[tgt]) : 0.f;
    __syncthreads(); /* x[tgt] read before the row is overwritten */
    if (dloss == 0.f) return;
    float invS = 1.f / S;
    if (VEC) {
        VT *xv = reinterpret_cast<VT *>(x);
        for (int k = threadIdx.x; k < Vp / VW; k += blockDim.x) {
            VT v = xv[k], o;
#pragma unroll
            for (int e = 0; e < VW; e++) {
                int j = k * VW + e;
                float g = 0.f;
                if (tgt >= 0 && j < V) g = (__expf(zgc_to_f(v.v[e]) - M) * invS - (j == tgt ? 1.f : 0.f)) * dloss;
                o.v[e] = zgc_from_f<T>(g);
            }
            xv[k] = o;
        }
    } else {
        for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
            float g = 0.f;
            if (tgt >= 0 && j < V) g = (__expf(zgc_to_f(x[j]) - M) * invS - (j == tgt ? 1.f : 0.f)) * dloss;
            x[j] = zgc_from_f<T>(g);
        }
    }
}

static void zgc_classifier(zg_backend *be, float *losses, void *logits, const int32_t *targets, int N, int V, int Vp,
                           float dloss) {
    zgc_impl *im = zgc_get(be);
    if (N == 0) return;
    int vw = (int)(16 / zgc_dtype_bytes(be->act_dtype));
    bool vec = Vp % vw == 0 && ((uintptr_t)logits % 16) == 0;
    ZGC_DISPATCH(be->act_dtype, T, {
        if (vec) zgc_classifier_kernel<T, true><<<N, 1024, 0, im->stream>>>(losses, (T *)logits, targets, V, Vp, dloss);
        else zgc_classifier_kernel<T, false><<<N, 1024, 0, im->stream>>>(losses, (T *)logits, targets, V, Vp, dloss);
    });
    ZG_CUDA_LAUNCH_CHECK();
}

/* ---- norms, scale ----------------------------------------------------------------------------- */

/* Per-block partial sums of squares (double). With VEC, 16-byte vectors (buffer aligned): each
 * vector's squares are summed in fp32, then added to a double accumulator (one fp64 add per
 * vector keeps the kernel bandwidth-bound). The tail (n mod vector width) is done by block 0.
 * inf/nan propagate, which is how overflow is detected. */
template <typename T, bool VEC>
__global__ void zgc_sumsq_kernel(double *part, const T *x, size_t n) {
    __shared__ double sh[32];
    double d = 0.0;
    size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    if (VEC) {
        constexpr int VW = 16 / sizeof(T);
        const zgc_vec<T> *xv = reinterpret_cast<const zgc_vec<T> *>(x);
        size_t nv = n / VW;
        for (size_t i = tid; i < nv; i += stride) {
            zgc_vec<T> v = xv[i];
            float f = 0.f;
#pragma unroll
            for (int e = 0; e < VW; e++) {
                float a = zgc_to_f(v.v[e]);
                f += a * a;
            }
            d += (double)f;
        }
        if (blockIdx.x == 0)
            for (size_t i = nv * VW + threadIdx.x; i < n; i += blockDim.x) {
                double a = (double)zgc_to_f(x[i]);
                d += a * a;
            }
    } else {
        for (size_t i = tid; i < n; i += stride) {
            double a = (double)zgc_to_f(x[i]);
            d += a * a;
        }
    }
    for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = d;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int k = 0; k < (int)(blockDim.x / 32); k++) s += sh[k];
        part[blockIdx.x] = s;
    }
}

static double zgc_sum_squares(zg_backend *be, const void *buf, zg_dtype dt, size_t n) {
    zgc_impl *im = zgc_get(be);
    int nb = im->num_sms * 4;
    double *part = (double *)zgc_scratch(be, ZGC_SCR_PARTIALS, (size_t)nb * sizeof(double), "norm partial sums");
    bool vec = ((uintptr_t)buf % 16) == 0;
    ZGC_DISPATCH(dt, T, {
        if (vec) zgc_sumsq_kernel<T, true><<<nb, 256, 0, im->stream>>>(part, (const T *)buf, n);
        else zgc_sumsq_kernel<T, false><<<nb, 256, 0, im->stream>>>(part, (const T *)buf, n);
    });
    ZG_CUDA_LAUNCH_CHECK();
    zgc_download(be, im->partials_host, part, (size_t)nb * sizeof(double));
    double s = 0.0;
    for (int k = 0; k < nb; k++) s += im->partials_host[k];
    return s;
}

template <typename T>
__global__ void zgc_scale_kernel(T *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = zgc_from_f<T>(zgc_to_f(x[i]) * s);
}

static void zgc_scale(zg_backend *be, void *buf, zg_dtype dt, size_t n, float s) {
    zgc_impl *im = zgc_get(be);
    if (n == 0) return;
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(dt, T, (zgc_scale_kernel<T><<<blocks, 256, 0, im->stream>>>((T *)buf, n, s)));
    ZG_CUDA_LAUNCH_CHECK();
}

/* ---- AdamW: every segment in one launch --------------------------------------------------------- */

typedef struct {
    size_t offset, count;
    float wd;
    unsigned first_block; /* prefix sum of blocks over the segments before this one */
} zgc_seg_dev;

#define ZGC_ADAM_THREADS 256
#define ZGC_ADAM_PER_THREAD 8
#define ZGC_ADAM_CHUNK (ZGC_ADAM_THREADS * ZGC_ADAM_PER_THREAD)

/* The segment block b belongs to (binary search over first_block; of equal first_block values, the
 * last, which is the non-empty one). */
__device__ __forceinline__ int zgc_seg_of(const zgc_seg_dev *segs, int n_segs, unsigned b) {
    int lo = 0, hi = n_segs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (segs[mid].first_block <= b) lo = mid; else hi = mid - 1;
    }
    return lo;
}

/* Adam's moments of element i, updated in place with gradient g (also returned). */
__device__ __forceinline__ void zgc_adam_moments(float *m, float *v, size_t i, float g, float b1, float b2, float *mi,
                                                 float *vi) {
    *mi = b1 * m[i] + (1.f - b1) * g;
    *vi = b2 * v[i] + (1.f - b2) * g * g;
    m[i] = *mi;
    v[i] = *vi;
}

/* Lamb's update direction u = m / denom + wd * p (backend.h). */
__device__ __forceinline__ float zgc_lamb_dir(float m, float v, float p, float wd, float eps, int eps_inside) {
    return m / (eps_inside ? sqrtf(v + eps) : sqrtf(v) + eps) + wd * p;
}

/* Lamb pass 1: the moments, and per segment the sums of p^2 and u^2 (norms[2s], norms[2s+1]; zeroed
 * before the launch), block-reduced and added with one atomic per block. */
template <typename TP, typename TG>
__global__ void __launch_bounds__(ZGC_ADAM_THREADS) zgc_lamb_moments_kernel(const TP *param, const float *master,
                                                                             const TG *grad, float *m, float *v,
                                                                             const zgc_seg_dev *segs, int n_segs,
                                                                             float b1, float b2, float eps,
                                                                             int eps_inside, float gscale,
                                                                             unsigned block_base, double *norms) {
    unsigned b = blockIdx.x + block_base;
    int s = zgc_seg_of(segs, n_segs, b);
    zgc_seg_dev sg = segs[s];
    size_t start = (size_t)(b - sg.first_block) * ZGC_ADAM_CHUNK;
    float w2 = 0.f, u2 = 0.f;
#pragma unroll
    for (int k = 0; k < ZGC_ADAM_PER_THREAD; k++) {
        size_t j = start + (size_t)k * ZGC_ADAM_THREADS + threadIdx.x;
        if (j >= sg.count) break;
        size_t i = sg.offset + j;
        float p = master ? master[i] : zgc_to_f(param[i]);
        float mi, vi;
        zgc_adam_moments(m, v, i, zgc_to_f(grad[i]) * gscale, b1, b2, &mi, &vi);
        float u = zgc_lamb_dir(mi, vi, p, sg.wd, eps, eps_inside);
        w2 += p * p;
        u2 += u * u;
    }
    __shared__ float sw[ZGC_ADAM_THREADS / 32], su[ZGC_ADAM_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) {
        w2 += __shfl_down_sync(0xffffffffu, w2, o);
        u2 += __shfl_down_sync(0xffffffffu, u2, o);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sw[warp] = w2;
        su[warp] = u2;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double tw = 0.0, tu = 0.0;
        for (int w = 0; w < ZGC_ADAM_THREADS / 32; w++) {
            tw += sw[w];
            tu += su[w];
        }
        atomicAdd(&norms[2 * s], tw);
        atomicAdd(&norms[2 * s + 1], tu);
    }
}

/* Lamb pass 2: p -= step_size * clamp(||p|| / ||u||) * u, with u recomputed from the stored moments. */
template <typename TP>
__global__ void __launch_bounds__(ZGC_ADAM_THREADS) zgc_lamb_apply_kernel(TP *param, float *master, const float *m,
                                                                           const float *v, const zgc_seg_dev *segs,
                                                                           int n_segs, float step_size, float eps,
                                                                           int eps_inside, float max_coeff,
                                                                           float min_coeff, unsigned block_base,
                                                                           const double *norms) {
    unsigned b = blockIdx.x + block_base;
    int s = zgc_seg_of(segs, n_segs, b);
    zgc_seg_dev sg = segs[s];
    double wn = sqrt(norms[2 * s]), un = sqrt(norms[2 * s + 1]);
    float c = 1.f;
    if (wn != 0.0 && un != 0.0) c = fminf(fmaxf((float)(wn / un), min_coeff), max_coeff);
    float scale = step_size * c;
    size_t start = (size_t)(b - sg.first_block) * ZGC_ADAM_CHUNK;
#pragma unroll
    for (int k = 0; k < ZGC_ADAM_PER_THREAD; k++) {
        size_t j = start + (size_t)k * ZGC_ADAM_THREADS + threadIdx.x;
        if (j >= sg.count) break;
        size_t i = sg.offset + j;
        float p = master ? master[i] : zgc_to_f(param[i]);
        p -= scale * zgc_lamb_dir(m[i], v[i], p, sg.wd, eps, eps_inside);
        if (master) master[i] = p;
        param[i] = zgc_from_f<TP>(p);
    }
}

/* Block b finds its segment by binary search over first_block, then updates one chunk of it. */
template <typename TP, typename TG>
__global__ void __launch_bounds__(ZGC_ADAM_THREADS) zgc_adamw_kernel(TP *param, float *master, const TG *grad, float *m,
                                                                      float *v, const zgc_seg_dev *segs, int n_segs,
                                                                      float lr, float b1, float b2, float eps,
                                                                      float bc1, float bc2, float gscale,
                                                                      unsigned block_base) {
    unsigned b = blockIdx.x + block_base; /* block_base: the first block of the segments updated */
    zgc_seg_dev sg = segs[zgc_seg_of(segs, n_segs, b)];
    size_t start = (size_t)(b - sg.first_block) * ZGC_ADAM_CHUNK;
#pragma unroll
    for (int k = 0; k < ZGC_ADAM_PER_THREAD; k++) {
        size_t j = start + (size_t)k * ZGC_ADAM_THREADS + threadIdx.x;
        if (j >= sg.count) break;
        size_t i = sg.offset + j;
        float p = master ? master[i] : zgc_to_f(param[i]);
        p -= lr * sg.wd * p;
        float mi, vi;
        zgc_adam_moments(m, v, i, zgc_to_f(grad[i]) * gscale, b1, b2, &mi, &vi);
        p -= lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
        if (master) master[i] = p;
        param[i] = zgc_from_f<TP>(p);
    }
}

static void zgc_adamw(zg_backend *be, const zg_adamw_args *a) {
    zgc_impl *im = zgc_get(be);
    if (a->n_segs <= 0) return;
    if (a->master == NULL && be->param_dtype != ZG_F32)
        ZG_FATAL("adamw: master weights are required when parameters are %s", be->param_dtype == ZG_BF16 ? "bf16" : "fp16");
    size_t bytes = (size_t)a->n_segs * sizeof(zgc_seg_dev);
    zgc_seg_dev *tab = (zgc_seg_dev *)zg_malloc(bytes);
    unsigned total = 0;
    for (int s = 0; s < a->n_segs; s++) {
        tab[s].offset = a->segs[s].offset;
        tab[s].count = a->segs[s].count;
        tab[s].wd = a->segs[s].weight_decay;
        tab[s].first_block = total;
        total += (unsigned)((a->segs[s].count + ZGC_ADAM_CHUNK - 1) / ZGC_ADAM_CHUNK);
    }
    /* Zero-length segments share first_block with the next one; the search picks the last of
     * equal first_block values, which is the non-empty one (an empty one gets no blocks). */
    void *dtab = zgc_scratch(be, ZGC_SCR_SEGS, bytes, "AdamW segment table");
    int same = im->segs_host != NULL && im->segs_host_bytes == bytes && memcmp(im->segs_host, tab, bytes) == 0 &&
               dtab == im->scratch[ZGC_SCR_SEGS];
    if (!same) {
        ZG_CUDA_CHECK(cudaMemcpyAsync(dtab, tab, bytes, cudaMemcpyHostToDevice, im->stream));
        ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream)); /* tab is freed/reused below */
        free(im->segs_host);
        im->segs_host = tab;
        im->segs_host_bytes = bytes;
    } else {
        free(tab);
    }
    /* the blocks of segments [seg_begin, seg_end) */
    int s_end = a->seg_end > 0 ? a->seg_end : a->n_segs;
    if (a->seg_begin < 0 || a->seg_begin > s_end || s_end > a->n_segs)
        ZG_FATAL("adamw: segments [%d, %d) outside the table of %d", a->seg_begin, s_end, a->n_segs);
    const zgc_seg_dev *tabh = (const zgc_seg_dev *)im->segs_host;
    unsigned b0 = a->seg_begin < a->n_segs ? tabh[a->seg_begin].first_block : total;
    unsigned b1 = s_end < a->n_segs ? tabh[s_end].first_block : total;
    if (b1 <= b0) return;
    float bc1 = 1.f - powf(a->beta1, (float)a->step), bc2 = 1.f - powf(a->beta2, (float)a->step);
    if (a->no_bias_correction) bc1 = bc2 = 1.f;
    if (a->lamb) {
        size_t nb = (size_t)a->n_segs * 2 * sizeof(double);
        double *norms = (double *)zgc_scratch(be, ZGC_SCR_LAMB, nb, "Lamb norms");
        ZG_CUDA_CHECK(cudaMemsetAsync(norms, 0, nb, im->stream));
        ZGC_DISPATCH(be->param_dtype, TP, ZGC_DISPATCH(be->grad_dtype, TG, (zgc_lamb_moments_kernel<TP, TG><<<b1 - b0, ZGC_ADAM_THREADS, 0, im->stream>>>(
            (const TP *)a->param, a->master, (const TG *)a->grad, a->m, a->v, (const zgc_seg_dev *)dtab, a->n_segs,
            a->beta1, a->beta2, a->eps, a->eps_inside_sqrt, a->grad_scale, b0, norms))));
        ZG_CUDA_LAUNCH_CHECK();
        float step_size = a->lr * sqrtf(bc2) / bc1;
        ZGC_DISPATCH(be->param_dtype, TP, (zgc_lamb_apply_kernel<TP><<<b1 - b0, ZGC_ADAM_THREADS, 0, im->stream>>>(
            (TP *)a->param, a->master, a->m, a->v, (const zgc_seg_dev *)dtab, a->n_segs, step_size, a->eps,
            a->eps_inside_sqrt, a->max_coeff, a->min_coeff, b0, norms)));
        ZG_CUDA_LAUNCH_CHECK();
        return;
    }
    ZGC_DISPATCH(be->param_dtype, TP, ZGC_DISPATCH(be->grad_dtype, TG, (zgc_adamw_kernel<TP, TG><<<b1 - b0, ZGC_ADAM_THREADS, 0, im->stream>>>(
        (TP *)a->param, a->master, (const TG *)a->grad, a->m, a->v, (const zgc_seg_dev *)dtab, a->n_segs, a->lr,
        a->beta1, a->beta2, a->eps, bc1, bc2, a->grad_scale, b0))));
    ZG_CUDA_LAUNCH_CHECK();
}

/* ---- create / destroy ------------------------------------------------------------------------- */

static void zgc_destroy(zg_backend *be) {
    if (be == NULL) return;
    zgc_impl *im = zgc_get(be);
    if (im != NULL) {
        ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
        zgc_matmul_destroy(be);
        for (int s = 0; s < ZGC_SCR_COUNT; s++) zgc_free(be, im->scratch[s]);
        zgc_free(be, im->lt_ws);
        /* buffers the caller did not free */
        while (im->n_allocs > 0) zgc_free(be, im->allocs[im->n_allocs - 1].ptr);
        ZG_CUBLAS_CHECK(cublasLtDestroy(im->lt));
        ZG_CUDA_CHECK(cudaStreamDestroy(im->stream));
        ZG_CUDA_CHECK(cudaFreeHost(im->partials_host));
        free(im->allocs);
        free(im->segs_host);
        free(im);
    }
    free(be);
}

static size_t zgc_attention_stats_bytes_op(zg_backend *be, int B, int T, int NH) {
    return zgc_attention_stats_bytes(be, B, T, NH);
}

/* Filled by field name, so the table survives reordering or additions in backend.h. */
static void zgc_ops_fill(zg_backend_ops *o) {
    memset(o, 0, sizeof(*o));
    o->name = "cuda";
    o->destroy = zgc_destroy;
    o->alloc = zgc_alloc;
    o->dealloc = zgc_dealloc;
    o->upload = zgc_upload;
    o->download = zgc_download;
    o->copy = zgc_copy;
    o->zero = zgc_zero;
    o->synchronize = zgc_synchronize;
    o->upload_f32 = zgc_upload_f32;
    o->download_f32 = zgc_download_f32;
    o->cast = zgc_cast;
    o->encoder_forward = zgc_encoder_forward;
    o->encoder_backward = zgc_encoder_backward;
    o->layernorm_forward = zgc_layernorm_forward;
    o->layernorm_backward = zgc_layernorm_backward;
    o->matmul_forward = zgc_matmul_forward;
    o->matmul_backward = zgc_matmul_backward;
    o->gelu_forward = zgc_gelu_forward;
    o->residual_forward = zgc_residual_forward;
    o->attention_stats_bytes = zgc_attention_stats_bytes_op;
    o->attention_forward = zgc_attention_forward;
    o->attention_backward = zgc_attention_backward;
    o->attention_forward_cached = zgc_attention_forward_cached;
    o->classifier = zgc_classifier;
    o->sum_squares = zgc_sum_squares;
    o->scale = zgc_scale;
    o->adamw = zgc_adamw;
}

extern "C" int zg_backend_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cudaStream_t zg_backend_cuda_stream(zg_backend *be) {
    if (be == NULL || be->ops == NULL || strcmp(be->ops->name, "cuda") != 0)
        ZG_FATAL("zg_backend_cuda_stream: not a CUDA backend");
    return zgc_get(be)->stream;
}

extern "C" int zg_backend_cuda_create(zg_backend **out, const zg_backend_config *cfg) {
    *out = NULL;
    int count = zg_backend_cuda_device_count();
    if (count <= 0) return zg_errorf("no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)");
    int dev = cfg->device_index;
    if (dev < 0) ZG_CUDA_CHECK(cudaGetDevice(&dev));
    if (dev >= count) return zg_errorf("CUDA device %d requested but only %d visible", dev, count);
    ZG_CUDA_CHECK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    ZG_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    zg_dtype prec = cfg->precision;
    if (prec != ZG_F32 && prec != ZG_BF16 && prec != ZG_F16) return zg_errorf("unknown precision %d", (int)prec);
    if (prec == ZG_BF16 && prop.major < 8)
        return zg_errorf("bf16 needs an sm_80+ GPU, device %d (%s) is sm_%d%d: use fp16 or fp32", dev, prop.name,
                         prop.major, prop.minor);
    if (prop.major < 8)
        return zg_errorf("the zgpt CUDA backend needs an sm_80+ GPU (Ampere or newer); device %d (%s) is sm_%d%d", dev,
                         prop.name, prop.major, prop.minor);

    if (zgc_attention_check_arch() != 0) return -1;

    zg_backend *be = (zg_backend *)zg_calloc(1, sizeof(zg_backend));
    zgc_impl *im = (zgc_impl *)zg_calloc(1, sizeof(zgc_impl));
    zgc_ops_fill(&im->ops);
    be->ops = &im->ops;
    be->param_dtype = be->act_dtype = be->grad_dtype = prec;
    be->device = dev;
    be->impl = im;
    im->device = dev;
    im->num_sms = prop.multiProcessorCount;
    im->bgrad_ok = 1;
    ZG_CUDA_CHECK(cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking));
    ZG_CUBLAS_CHECK(cublasLtCreate(&im->lt));
    im->lt_ws_bytes = ZGC_LT_WORKSPACE;
    im->lt_ws = zgc_alloc(be, im->lt_ws_bytes, "cuBLASLt workspace");
    if (im->lt_ws == NULL) {
        zgc_destroy(be);
        return -1;
    }
    ZG_CUDA_CHECK(cudaMallocHost((void **)&im->partials_host, sizeof(double) * (size_t)im->num_sms * 4));
    *out = be;
    return 0;
}
