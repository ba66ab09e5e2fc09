/* matmul_forward for a few rows (N <= ZGC_GEMV_MAX_N: one decode step's batch): out (N,OC) =
 * inp (N,C) @ w (OC,C)^T + bias + residual, or pre_gelu = that and out = gelu(pre_gelu).
 * With so few rows the product is a read of the weights; cuBLASLt's tiles leave most SMs idle at
 * these shapes (about 1 TB/s on the H200 at GPT-2 XL's). Here one warp owns one output column o:
 * its lanes stream w's row o with 16-byte loads (consecutive lanes, consecutive vectors: whole 512-byte
 * lines per warp load), each weight vector is used against all N input rows (read through L1, where the
 * few rows stay), and the lanes' fp32 partial sums meet in a fixed shuffle tree. Grid: OC / 8 blocks
 * of 8 warps (200 blocks at OC = 1600, 6288 for the LM head): every SM busy, no split of C, so no
 * second pass and nothing atomic: the same inputs give the same bits. The epilogue adds the bias and
 * the residual in fp32 and rounds once (as cuBLASLt's does with beta = 1). */
#include "backend/cuda/cuda_internal.h"

#define ZGC_GEMV_THREADS 256
#define ZGC_GEMV_WARPS (ZGC_GEMV_THREADS / 32)
/* vectors a lane loads before it uses them (memory-level parallelism) */
#define ZGC_GEMV_UNROLL 8

template <typename T>
__global__ void __launch_bounds__(ZGC_GEMV_THREADS)
    zgc_gemv_kernel(T *out, T *pre_gelu, const T *inp, const T *w, const T *bias, const T *residual, int N, int C,
                    int OC) {
    constexpr int E = 16 / sizeof(T);
    int lane = threadIdx.x % 32;
    int o = blockIdx.x * ZGC_GEMV_WARPS + threadIdx.x / 32;
    if (o >= OC) return; /* no barriers below: a whole warp leaves */
    int nv = C / E;
    const int4 *wr = reinterpret_cast<const int4 *>(w + (size_t)o * C);
    const zgc_vec<T> *x = reinterpret_cast<const zgc_vec<T> *>(inp);
    float acc[ZGC_GEMV_MAX_N];
#pragma unroll
    for (int n = 0; n < ZGC_GEMV_MAX_N; n++) acc[n] = 0.0f;
    for (int j0 = lane; j0 < nv; j0 += 32 * ZGC_GEMV_UNROLL) {
        int4 raw[ZGC_GEMV_UNROLL] = {};
#pragma unroll
        for (int u = 0; u < ZGC_GEMV_UNROLL; u++) {
            int j = j0 + 32 * u;
            /* weights are read once per step: streamed past L1 */
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
        size_t i = (size_t)n * OC + o;
        float s = acc[n] + b;
        if (pre_gelu) {
            pre_gelu[i] = zgc_from_f<T>(s);
            out[i] = zgc_from_f<T>(zgc_gelu(s));
        } else {
            if (residual) s += zgc_to_f(residual[i]); /* residual may be out: read before the write */
            out[i] = zgc_from_f<T>(s);
        }
    }
}

static bool zgc_gemv_aligned(const void *p) { return ((uintptr_t)p & 15u) == 0; }

int zgc_gemv_forward(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                     const void *residual, int N, int C, int OC) {
    size_t es = zgc_dtype_bytes(be->act_dtype);
    if (N < 1 || N > ZGC_GEMV_MAX_N || OC < 1 || ((size_t)C * es) % 16 != 0 || !zgc_gemv_aligned(inp) ||
        !zgc_gemv_aligned(w) || !zgc_decode_new())
        return 0;
    zgc_impl *im = zgc_get(be);
    unsigned blocks = (unsigned)((OC + ZGC_GEMV_WARPS - 1) / ZGC_GEMV_WARPS);
    ZGC_DISPATCH(be->act_dtype, T,
                 (zgc_gemv_kernel<T>
                  <<<blocks, ZGC_GEMV_THREADS, 0, im->stream>>>((T *)out, (T *)pre_gelu, (const T *)inp, (const T *)w,
                                                                (const T *)bias, (const T *)residual, N, C, OC)));
    ZG_CUDA_LAUNCH_CHECK();
    return 1;
}
