/* CUDA classifier: fused softmax cross-entropy over the padded vocabulary, writing d loss / d logits
 * into the logits in the same pass. */
#include "backend/cuda/cuda_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

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
__global__ void __launch_bounds__(1024)
    zgc_classifier_kernel(float *losses, T *logits, const int32_t *targets, int V, int Vp, float dloss) {
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

void zgc_classifier(zg_backend *be, float *losses, void *logits, const int32_t *targets, int N, int V, int Vp,
                    float dloss) {
    zgc_impl *im = zgc_get(be);
    if (N == 0) return;
    int vw = (int)(16 / zgc_dtype_bytes(be->act_dtype));
    bool vec = Vp % vw == 0 && ((uintptr_t)logits % 16) == 0;
    ZGC_DISPATCH(be->act_dtype, T, {
        if (vec)
            zgc_classifier_kernel<T, true><<<N, 1024, 0, im->stream>>>(losses, (T *)logits, targets, V, Vp, dloss);
        else
            zgc_classifier_kernel<T, false><<<N, 1024, 0, im->stream>>>(losses, (T *)logits, targets, V, Vp, dloss);
    });
    ZG_CUDA_LAUNCH_CHECK();
}
