/* CUDA classifier: fused softmax cross-entropy over the padded vocabulary, writing d loss / d logits
 * into the logits in the same pass. */
#include "backend/cuda/cuda_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- classifier ------------------------------------------------------------------------------- */

/* Threads per row (ZGPT_CLS_THREADS = 256 | 512 | 1024 for A/B runs; default 1024). Pass 2 re-reads the row
 * from L2, so the rows in flight must fit there: at 1024 threads 2 rows share an SM (132 x 2 x 100 KB = 26 MB
 * of GPT-2's bf16 rows, in a 50 MB L2); at 512, 4 rows (53 MB) spill, and pass 2 reads DRAM again. */
#define ZGC_CLS_THREADS 1024

/* 2^x on the SFU; the exponents below are pre-scaled by log2(e), so each costs one FFMA and one MUFU */
__device__ __forceinline__ float zgc_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* Running (max m, sum s of 2^(x - m)) of log2-scaled values, one vector at a time: the vector's max first, so
 * the sum is rescaled at most once a vector and no lane branches per element. */
template <int W> __device__ __forceinline__ void zgc_online_vec(float &m, float &s, const float (&x)[W]) {
    float vm = x[0];
#pragma unroll
    for (int e = 1; e < W; e++) vm = fmaxf(vm, x[e]);
    if (vm > m) {
        s *= zgc_ex2(m - vm);
        m = vm;
    }
#pragma unroll
    for (int e = 0; e < W; e++) s += zgc_ex2(x[e] - m);
}

/* Merge two running pairs; an empty pair (m = -inf, s = 0) leaves the other unchanged */
__device__ __forceinline__ void zgc_online_merge(float &m, float &s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    s = (mn == -INFINITY) ? 0.f : s * zgc_ex2(m - mn) + s2 * zgc_ex2(m2 - mn);
    m = mn;
}

template <typename T> __device__ __forceinline__ void zgc_vec_scaled(float (&f)[16 / sizeof(T)], const zgc_vec<T> &v) {
#pragma unroll
    for (int e = 0; e < 16 / (int)sizeof(T); e++) f[e] = zgc_to_f(v.v[e]) * 1.4426950408889634f;
}

/* One block per row of logits (N,Vp): softmax over the first V columns, loss = logsumexp - x[target];
 * if dloss != 0 the row is overwritten with (softmax - onehot(target)) * dloss (padding -> 0).
 * VEC: 16-byte loads/stores (needs Vp a multiple of the vector width and an aligned buffer). Pass 1 reads the
 * row (two vectors in flight a thread), pass 2 re-reads it from L2 (see ZGC_CLS_THREADS) and writes the gradient. Sums run in log2 units. */
template <typename T, bool VEC, int NT>
__global__ void __launch_bounds__(NT, 2048 / NT)
    zgc_classifier_kernel(float *losses, T *logits, const int32_t *targets, int V, int Vp, float dloss) {
    constexpr int VW = 16 / sizeof(T);
    constexpr float LOG2E = 1.4426950408889634f;
    typedef zgc_vec<T> VT;
    __shared__ float sm[NT / 32], ss[NT / 32];
    int row = blockIdx.x;
    T *x = logits + (size_t)row * Vp;
    int tgt = targets[row];
    float m = -INFINITY, s = 0.f;
    int tail = 0; /* first column of the scalar tail */
    if (VEC) {
        const VT *xv = reinterpret_cast<const VT *>(x);
        int nfull = V / VW, k = threadIdx.x;
        for (; k + NT < nfull; k += 2 * NT) {
            VT a = xv[k], b = xv[k + NT];
            float fa[VW], fb[VW];
            zgc_vec_scaled<T>(fa, a);
            zgc_vec_scaled<T>(fb, b);
            zgc_online_vec<VW>(m, s, fa);
            zgc_online_vec<VW>(m, s, fb);
        }
        if (k < nfull) {
            float fa[VW];
            zgc_vec_scaled<T>(fa, xv[k]);
            zgc_online_vec<VW>(m, s, fa);
        }
        tail = nfull * VW;
    }
    for (int j = tail + threadIdx.x; j < V; j += NT) {
        float f[1] = {zgc_to_f(x[j]) * LOG2E};
        zgc_online_vec<1>(m, s, f);
    }
    /* combine the pairs across the warp, then the warps' pairs in every warp (no serial loop per thread) */
    for (int o = 16; o > 0; o >>= 1)
        zgc_online_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    int wid = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sm[wid] = m;
        ss[wid] = s;
    }
    __syncthreads();
    m = lane < NT / 32 ? sm[lane] : -INFINITY;
    s = lane < NT / 32 ? ss[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1)
        zgc_online_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    /* m, s: the row's max and sum in log2 units; lse (natural) = (m + log2 s) / log2(e) */
    float lse = (m + __log2f(s)) * (1.f / LOG2E);
    if (threadIdx.x == 0 && losses != NULL) losses[row] = tgt >= 0 ? lse - zgc_to_f(x[tgt]) : 0.f;
    if (dloss == 0.f) return;
    __syncthreads(); /* x[tgt] read before the row is overwritten */
    /* g = 2^(x log2e - m) / s * dloss - onehot * dloss; ignored rows (tgt < 0) and padding get 0 */
    float sd = tgt >= 0 ? dloss / s : 0.f, hot = tgt >= 0 ? dloss : 0.f;
    if (VEC) {
        VT *xv = reinterpret_cast<VT *>(x);
        int nvec = Vp / VW;
        for (int k = threadIdx.x; k < nvec; k += NT) {
            VT v = xv[k], o;
#pragma unroll
            for (int e = 0; e < VW; e++) {
                int j = k * VW + e;
                float g = zgc_ex2(fmaf(zgc_to_f(v.v[e]), LOG2E, -m)) * sd - (j == tgt ? hot : 0.f);
                o.v[e] = zgc_from_f<T>(j < V ? g : 0.f);
            }
            xv[k] = o;
        }
    } else {
        for (int j = threadIdx.x; j < Vp; j += NT) {
            float g = zgc_ex2(fmaf(zgc_to_f(x[j]), LOG2E, -m)) * sd - (j == tgt ? hot : 0.f);
            x[j] = zgc_from_f<T>(j < V ? g : 0.f);
        }
    }
}

template <typename T, int NT>
static void zgc_classifier_launch(cudaStream_t st, bool vec, float *losses, T *logits, const int32_t *targets, int N,
                                  int V, int Vp, float dloss) {
    if (vec)
        zgc_classifier_kernel<T, true, NT><<<N, NT, 0, st>>>(losses, logits, targets, V, Vp, dloss);
    else
        zgc_classifier_kernel<T, false, NT><<<N, NT, 0, st>>>(losses, logits, targets, V, Vp, dloss);
}

void zgc_classifier(zg_backend *be, float *losses, void *logits, const int32_t *targets, int N, int V, int Vp,
                    float dloss) {
    zgc_impl *im = zgc_get(be);
    if (N == 0) return;
    int vw = (int)(16 / zgc_dtype_bytes(be->act_dtype));
    bool vec = Vp % vw == 0 && ((uintptr_t)logits % 16) == 0;
    int nt = zgc_cls_threads_env(); /* 0: the default; 256, 512 or 1024 in A/B runs */
    if (nt == 0) nt = ZGC_CLS_THREADS;
    ZGC_DISPATCH(be->act_dtype, T, {
        if (nt == 256)
            zgc_classifier_launch<T, 256>(im->stream, vec, losses, (T *)logits, targets, N, V, Vp, dloss);
        else if (nt == 512)
            zgc_classifier_launch<T, 512>(im->stream, vec, losses, (T *)logits, targets, N, V, Vp, dloss);
        else
            zgc_classifier_launch<T, 1024>(im->stream, vec, losses, (T *)logits, targets, N, V, Vp, dloss);
    });
    ZG_CUDA_LAUNCH_CHECK();
}
