/* CUDA optimizer ops: sum of squares (gradient norm), scale, and AdamW/Lamb over every segment in one
 * launch. */
#include "backend/cuda/cuda_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- norms, scale ----------------------------------------------------------------------------- */

/* Per-block partial sums of squares (double). With VEC, 16-byte vectors (buffer aligned): each
 * vector's squares are summed in fp32, then added to a double accumulator (one fp64 add per
 * vector keeps the kernel bandwidth-bound). The tail (n mod vector width) is done by block 0.
 * inf/nan propagate, which is how overflow is detected. */
template <typename T, bool VEC> __global__ void zgc_sumsq_kernel(double *part, const T *x, size_t n) {
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

double zgc_sum_squares(zg_backend *be, const void *buf, zg_dtype dt, size_t n) {
    zgc_impl *im = zgc_get(be);
    int nb = im->num_sms * 4;
    /* The kernel writes its partial sums straight into the pinned host buffer (device-accessible through
     * unified addressing) instead of a device scratch copied down afterwards: a device-to-host copy
     * queues on the copy engine behind the copies already there, and ZeRO-Offload's gradient downloads
     * (gigabytes at PCIe speed, on the copy stream) made every norm wait for all of them. */
    double *part = NULL;
    if (cudaHostGetDevicePointer((void **)&part, im->partials_host, 0) != cudaSuccess) {
        (void)cudaGetLastError(); /* not mappable here: through the device scratch */
        part = NULL;
    }
    bool mapped = part != NULL;
    if (!mapped) part = (double *)zgc_scratch(be, ZGC_SCR_PARTIALS, (size_t)nb * sizeof(double), "norm partial sums");
    bool vec = ((uintptr_t)buf % 16) == 0;
    ZGC_DISPATCH(dt, T, {
        if (vec)
            zgc_sumsq_kernel<T, true><<<nb, 256, 0, im->stream>>>(part, (const T *)buf, n);
        else
            zgc_sumsq_kernel<T, false><<<nb, 256, 0, im->stream>>>(part, (const T *)buf, n);
    });
    ZG_CUDA_LAUNCH_CHECK();
    if (mapped)
        ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
    else
        zgc_download(be, im->partials_host, part, (size_t)nb * sizeof(double));
    double s = 0.0;
    for (int k = 0; k < nb; k++) s += im->partials_host[k];
    return s;
}

template <typename T> __global__ void zgc_scale_kernel(T *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = zgc_from_f<T>(zgc_to_f(x[i]) * s);
}

void zgc_scale(zg_backend *be, void *buf, zg_dtype dt, size_t n, float s) {
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
        if (segs[mid].first_block <= b)
            lo = mid;
        else
            hi = mid - 1;
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

/* Lamb pass 1: the moments, and per block the partial sums of p^2 and u^2 (part[2b], part[2b+1], b the
 * block's index over all segments). No atomics: the per-segment totals are added in block order by
 * zgc_lamb_reduce_kernel, so the trust ratio, and with it a resumed run, is bitwise reproducible. */
template <typename TP, typename TG>
__global__ void __launch_bounds__(ZGC_ADAM_THREADS)
    zgc_lamb_moments_kernel(const TP *param, const float *master, const TG *grad, float *m, float *v,
                            const zgc_seg_dev *segs, int n_segs, float b1, float b2, float eps, int eps_inside,
                            float gscale, unsigned block_base, double *part) {
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
        part[2 * (size_t)b] = tw;
        part[2 * (size_t)b + 1] = tu;
    }
}

/* Per segment s in [seg_base, seg_base + gridDim.x): norms[2s], norms[2s+1] = the sums of its blocks'
 * partials, each thread over a fixed stride of blocks, then a fixed tree: the same order every call. */
__global__ void __launch_bounds__(ZGC_ADAM_THREADS)
    zgc_lamb_reduce_kernel(const double *part, const zgc_seg_dev *segs, int n_segs, unsigned total, int seg_base,
                           double *norms) {
    int s = seg_base + (int)blockIdx.x;
    unsigned b0 = segs[s].first_block, b1 = s + 1 < n_segs ? segs[s + 1].first_block : total;
    double tw = 0.0, tu = 0.0;
    for (unsigned b = b0 + threadIdx.x; b < b1; b += ZGC_ADAM_THREADS) {
        tw += part[2 * (size_t)b];
        tu += part[2 * (size_t)b + 1];
    }
    __shared__ double sw[ZGC_ADAM_THREADS], su[ZGC_ADAM_THREADS];
    sw[threadIdx.x] = tw;
    su[threadIdx.x] = tu;
    __syncthreads();
    for (int h = ZGC_ADAM_THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) {
            sw[threadIdx.x] += sw[threadIdx.x + h];
            su[threadIdx.x] += su[threadIdx.x + h];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        norms[2 * s] = sw[0];
        norms[2 * s + 1] = su[0];
    }
}

/* Lamb pass 2: p -= step_size * clamp(||p|| / ||u||) * u, with u recomputed from the stored moments. */
template <typename TP>
__global__ void __launch_bounds__(ZGC_ADAM_THREADS)
    zgc_lamb_apply_kernel(TP *param, float *master, const float *m, const float *v, const zgc_seg_dev *segs, int n_segs,
                          float step_size, float eps, int eps_inside, float max_coeff, float min_coeff,
                          unsigned block_base, const double *norms) {
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
__global__ void __launch_bounds__(ZGC_ADAM_THREADS)
    zgc_adamw_kernel(TP *param, float *master, const TG *grad, float *m, float *v, const zgc_seg_dev *segs, int n_segs,
                     float lr, float b1, float b2, float eps, float bc1, float bc2, float gscale, unsigned block_base) {
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

/* The blocks of one optimizer call: the segment table on the device (uploaded when it changed), and the
 * blocks [*b0, *b1) of segments [seg_begin, seg_end). 0 when there is nothing to do. */
typedef struct {
    const zgc_seg_dev *dtab; /* device copy of the table */
    const zgc_seg_dev *htab; /* host copy (first_block per segment) */
    unsigned total, b0, b1;  /* all blocks; those of [seg_begin, s_end) */
    int s_end;
} zgc_adam_launch;

static int zgc_adam_prepare(zg_backend *be, const zg_adamw_args *a, zgc_adam_launch *L) {
    zgc_impl *im = zgc_get(be);
    if (a->n_segs <= 0) return 0;
    if (a->master == NULL && be->param_dtype != ZG_F32)
        ZG_FATAL("adamw: master weights are required when parameters are %s",
                 be->param_dtype == ZG_BF16 ? "bf16" : "fp16");
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
    L->dtab = (const zgc_seg_dev *)dtab;
    L->htab = (const zgc_seg_dev *)im->segs_host;
    L->total = total;
    L->s_end = s_end;
    L->b0 = a->seg_begin < a->n_segs ? L->htab[a->seg_begin].first_block : total;
    L->b1 = s_end < a->n_segs ? L->htab[s_end].first_block : total;
    return L->b1 > L->b0;
}

/* First block of segment s (the total past the last). */
static unsigned zgc_seg_block(const zgc_adam_launch *L, int n_segs, int s) {
    return s < n_segs ? L->htab[s].first_block : L->total;
}

/* Lamb's first pass over segments [s0, s1) (blocks [c0, c1)): the moments, and the segments' sums of
 * squares into norms[2s], norms[2s+1] (per-block partials, then added in block order). */
static void zgc_lamb_moments(zg_backend *be, const zg_adamw_args *a, const zgc_adam_launch *L, int s0, int s1,
                             double *norms) {
    zgc_impl *im = zgc_get(be);
    unsigned c0 = zgc_seg_block(L, a->n_segs, s0), c1 = zgc_seg_block(L, a->n_segs, s1);
    if (s1 <= s0) return;
    double *part = (double *)zgc_scratch(be, ZGC_SCR_LAMB_PART, (size_t)(L->total ? L->total : 1) * 2 * sizeof(double),
                                         "Lamb block partial sums");
    if (c1 > c0) {
        ZGC_DISPATCH_ALL(be->param_dtype, TP, TG,
                         (zgc_lamb_moments_kernel<TP, TG><<<c1 - c0, ZGC_ADAM_THREADS, 0, im->stream>>>(
                             (const TP *)a->param, a->master, (const TG *)a->grad, a->m, a->v, L->dtab, a->n_segs,
                             a->beta1, a->beta2, a->eps, a->eps_inside_sqrt, a->grad_scale, c0, part)));
        ZG_CUDA_LAUNCH_CHECK();
    }
    zgc_lamb_reduce_kernel<<<(unsigned)(s1 - s0), ZGC_ADAM_THREADS, 0, im->stream>>>(part, L->dtab, a->n_segs, L->total,
                                                                                     s0, norms);
    ZG_CUDA_LAUNCH_CHECK();
}

/* Per segment ||p||^2 and ||u||^2 (2 doubles): not zeroed, each segment's are written (the reduction, or
 * the given sums' copy) before anything reads them. */
static double *zgc_lamb_norms(zg_backend *be, int n_segs) {
    return (double *)zgc_scratch(be, ZGC_SCR_LAMB, (size_t)n_segs * 2 * sizeof(double), "Lamb norms");
}

void zgc_lamb_sums(zg_backend *be, const zg_adamw_args *a, double *sums) {
    zgc_impl *im = zgc_get(be);
    zgc_adam_launch L;
    int s_end = a->seg_end > 0 ? a->seg_end : a->n_segs;
    if (s_end > a->seg_begin) memset(sums, 0, (size_t)(s_end - a->seg_begin) * 2 * sizeof(double));
    if (!zgc_adam_prepare(be, a, &L)) return;
    double *norms = zgc_lamb_norms(be, a->n_segs);
    zgc_lamb_moments(be, a, &L, a->seg_begin, L.s_end, norms);
    ZG_CUDA_CHECK(cudaMemcpyAsync(sums, norms + 2 * a->seg_begin, (size_t)(L.s_end - a->seg_begin) * 2 * sizeof(double),
                                  cudaMemcpyDeviceToHost, im->stream));
    ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
}

void zgc_adamw(zg_backend *be, const zg_adamw_args *a) {
    zgc_impl *im = zgc_get(be);
    zgc_adam_launch L;
    if (!zgc_adam_prepare(be, a, &L)) return;
    unsigned b0 = L.b0, b1 = L.b1;
    float bc1 = 1.f - powf(a->beta1, (float)a->step), bc2 = 1.f - powf(a->beta2, (float)a->step);
    if (a->no_bias_correction) bc1 = bc2 = 1.f;
    if (a->lamb) {
        double *norms = zgc_lamb_norms(be, a->n_segs);
        float step_size = a->lr * sqrtf(bc2) / bc1;
        /* runs of segments alike: those whose first pass already ran (a ZeRO shard's cut tensors, their
         * sums given in a->lamb_sums, added across the ranks) take the totals and only the second pass */
        for (int s = a->seg_begin; s < L.s_end;) {
            int given = a->lamb_sums != NULL && !(a->lamb_sums[2 * s] < 0.0), e = s + 1;
            while (e < L.s_end && (a->lamb_sums != NULL && !(a->lamb_sums[2 * e] < 0.0)) == given) e++;
            unsigned c0 = zgc_seg_block(&L, a->n_segs, s), c1 = zgc_seg_block(&L, a->n_segs, e);
            if (c1 > c0) {
                if (given) /* pageable: staged before the call returns, ordered on the stream */
                    ZG_CUDA_CHECK(cudaMemcpyAsync(norms + 2 * s, a->lamb_sums + 2 * s,
                                                  (size_t)(e - s) * 2 * sizeof(double), cudaMemcpyHostToDevice,
                                                  im->stream));
                else
                    zgc_lamb_moments(be, a, &L, s, e, norms);
                ZGC_DISPATCH(be->param_dtype, TP,
                             (zgc_lamb_apply_kernel<TP><<<c1 - c0, ZGC_ADAM_THREADS, 0, im->stream>>>(
                                 (TP *)a->param, a->master, a->m, a->v, L.dtab, a->n_segs, step_size, a->eps,
                                 a->eps_inside_sqrt, a->max_coeff, a->min_coeff, c0, norms)));
                ZG_CUDA_LAUNCH_CHECK();
            }
            s = e;
        }
        return;
    }
    ZGC_DISPATCH_ALL(be->param_dtype, TP, TG,
                     (zgc_adamw_kernel<TP, TG><<<b1 - b0, ZGC_ADAM_THREADS, 0, im->stream>>>(
                         (TP *)a->param, a->master, (const TG *)a->grad, a->m, a->v, L.dtab, a->n_segs, a->lr, a->beta1,
                         a->beta2, a->eps, bc1, bc2, a->grad_scale, b0)));
    ZG_CUDA_LAUNCH_CHECK();
}
