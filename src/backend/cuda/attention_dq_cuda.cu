/* The attention backward's dQ product over the causal half of cuDNN's dS workspace.
 *
 * cuDNN's deterministic backward (attention_cudnn.cu) writes dS (B,NH,T,T), in the activations' dtype, to its
 * workspace and then runs dQ = dS K as a dense product (its `matmul_dq` kernel): it reads all T^2 scores of
 * each head, although dS is zero above the diagonal. This kernel computes the same product from the lower
 * triangle only (the key tiles up to the diagonal: 136 of 256 64x64 tiles at T = 1024), about half the bytes;
 * attention_cudnn.cu puts it in place of cuDNN's kernel in the backward's recorded graph.
 *
 * Block = 4 warps = 64 query rows of one (b, h) (warp w: rows 16w..16w+15); key tiles of 64, three stages of
 * (dS [64][64+8], K [64][hs+8]) in shared memory copied with cp.async two tiles ahead; mma.sync m16n8k16 with
 * fp32 accumulation, keys in order (deterministic: the same bits every run). In the diagonal tile the
 * fragments of dS above the diagonal are zeroed in registers, so whatever the workspace holds there is not
 * read into the sum. Grid (T/64, B*NH), heaviest row tile first.
 *
 * Layout: ds (B,NH,T,T) row-major (row = query i, column = key j); k = qkv + C, rows 3C apart; dq = dqkv, rows
 * 3C apart; dq[b, i, h, :] = alpha * sum_{j <= i} ds[b, h, i, j] * k[b, j, h, :]. */
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/mma_tiles.cuh"

#define ZGC_DQ_THREADS 128
#define ZGC_DQ_STAGES 3

/* Shared memory: three stages of (dS's raw 64x64 tile, 4096 elements as cuDNN stores them; K [64][HS+8]), and two
 * of the tile rearranged as dS^T [64 keys][64+8 queries] */
template <int HS> constexpr size_t zgc_dq_smem_bytes() {
    return ((size_t)ZGC_DQ_STAGES * (4096 + 64 * (HS + 8)) + 2 * 64 * 72) * 2;
}

/* v's two 16-bit halves (columns col, col+1 of a fragment row) kept where the column is at most the row */
__device__ __forceinline__ uint32_t zgc_dq_causal(uint32_t v, int row, int col) {
    return v & ((col <= row ? 0x0000FFFFu : 0u) | (col + 1 <= row ? 0xFFFF0000u : 0u));
}

template <typename T, int HS>
__global__ void __launch_bounds__(ZGC_DQ_THREADS)
    zgc_att_dq_kernel(T *dq, const T *ds, const T *k, int NH, int T_len, int C, float alpha) {
    constexpr int LDT = 64 + 8, LDK = HS + 8, STAGE = 4096 + 64 * LDK;
    extern __shared__ __align__(16) unsigned char zgc_dq_smem[];
    T *sm = reinterpret_cast<T *>(zgc_dq_smem), *st_base = sm + ZGC_DQ_STAGES * STAGE;
    const int mt = (int)(gridDim.x - 1 - blockIdx.x), bh = (int)blockIdx.y, b = bh / NH, h = bh % NH;
    const int warp = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31, ntiles = mt + 1;
    const size_t ld = (size_t)3 * C;
    /* this head's dS; the 4 sub-tiles of this block's 64 queries are 1024 contiguous elements in each key group */
    const T *dsh = ds + (size_t)bh * T_len * T_len + (size_t)mt * 4 * 256;
    const T *kb = k + (size_t)b * T_len * ld + (size_t)h * HS;
    /* thread (warp w, lane l) copies, for each of the tile's 4 key groups u, fragment group l of query sub-tile w */
    auto load = [&](int nt, int stage) {
        T *raw = sm + stage * STAGE, *sk = raw + 4096;
        for (int u = 0; u < 4; u++)
            zgc_cp_async16(&raw[(u * 128 + (int)threadIdx.x) * 8],
                           dsh + (size_t)(nt * 4 + u) * 16 * T_len + (size_t)threadIdx.x * 8);
        for (int i = (int)threadIdx.x; i < 64 * (HS / 8); i += ZGC_DQ_THREADS) {
            int r = i / (HS / 8), c = (i % (HS / 8)) * 8;
            zgc_cp_async16(&sk[r * LDK + c], kb + (size_t)(nt * 64 + r) * ld + c);
        }
    };
    float acc[HS / 8][4];
#pragma unroll
    for (int i = 0; i < HS / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    /* cuDNN may launch its dQ kernel as a programmatic dependent of the main one; in that node's place this
     * kernel waits for it too (at once when launched without the attribute) */
    zgc_pdl_wait();
#pragma unroll
    for (int s = 0; s < ZGC_DQ_STAGES - 1; s++) {
        if (s < ntiles) load(s, s);
        zgc_cp_commit();
    }
    const int frow = warp * 16 + (lane >> 2); /* this lane's first fragment row (query) in the tile */
    const int fk = lane >> 2, fq = 2 * (lane & 3);
    for (int nt = 0; nt < ntiles; nt++) {
        zgc_cp_wait<ZGC_DQ_STAGES - 2>(); /* tile nt's copies of this thread are in */
        /* this thread's fragment groups -> dS^T[key][query]: group (key k, query pair q) holds (k, 2q..2q+1),
         * (k+8, 2q..), (k, 2q+8..), (k+8, 2q+8..), 32 bits each */
        const T *raw = sm + (nt % ZGC_DQ_STAGES) * STAGE;
        T *sT = st_base + (nt & 1) * 64 * LDT;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            uint4 v = *reinterpret_cast<const uint4 *>(&raw[(u * 128 + (int)threadIdx.x) * 8]);
            int key = u * 16 + fk, q = warp * 16 + fq;
            *reinterpret_cast<uint32_t *>(&sT[key * LDT + q]) = v.x;
            *reinterpret_cast<uint32_t *>(&sT[(key + 8) * LDT + q]) = v.y;
            *reinterpret_cast<uint32_t *>(&sT[key * LDT + q + 8]) = v.z;
            *reinterpret_cast<uint32_t *>(&sT[(key + 8) * LDT + q + 8]) = v.w;
        }
        __syncthreads(); /* the tile (dS^T, K) is everyone's; the stage refilled below and the other dS^T are free */
        if (nt + ZGC_DQ_STAGES - 1 < ntiles) load(nt + ZGC_DQ_STAGES - 1, (nt + ZGC_DQ_STAGES - 1) % ZGC_DQ_STAGES);
        zgc_cp_commit();
        const T *sk = raw + 4096;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            uint32_t a[4];
            zgc_load_a_trans<LDT>(a, sT, warp * 16, kk * 16, lane);
            if (nt == mt) { /* the diagonal tile: keys after the query row are not summed */
                int col = kk * 16 + 2 * (lane & 3);
                a[0] = zgc_dq_causal(a[0], frow, col);
                a[1] = zgc_dq_causal(a[1], frow + 8, col);
                a[2] = zgc_dq_causal(a[2], frow, col + 8);
                a[3] = zgc_dq_causal(a[3], frow + 8, col + 8);
            }
#pragma unroll
            for (int dn = 0; dn < HS / 8; dn += 2) {
                uint32_t bf[4];
                zgc_ldsm_bt_x4<LDK>(bf, sk, kk * 16, dn * 8, lane);
                zgc_mma<T>::run(acc[dn], a, bf[0], bf[1]);
                zgc_mma<T>::run(acc[dn + 1], a, bf[2], bf[3]);
            }
        }
    }
    zgc_cp_wait<0>(); /* no copy outlives the block (the last commits were empty) */
    T *o = dq + ((size_t)b * T_len + (size_t)mt * 64 + frow) * ld + (size_t)h * HS + 2 * (lane & 3);
#pragma unroll
    for (int dn = 0; dn < HS / 8; dn++) {
        *reinterpret_cast<uint32_t *>(o + dn * 8) = zgc_mma<T>::pack(acc[dn][0] * alpha, acc[dn][1] * alpha);
        *reinterpret_cast<uint32_t *>(o + 8 * ld + dn * 8) = zgc_mma<T>::pack(acc[dn][2] * alpha, acc[dn][3] * alpha);
    }
}

int zgc_att_dq_fits(zg_backend *be, int T, int C, int NH) {
    if (be->act_dtype != ZG_BF16 && be->act_dtype != ZG_F16) return 0;
    if (NH <= 0 || C % NH != 0 || T <= 0 || T % 64 != 0) return 0;
    /* hs 64 only: at hs 128 cuDNN's workspace is laid out otherwise (its first-call check refused this kernel on an
     * H100, PERFORMANCE.md v0.27) */
    return C / NH == 64;
}

template <typename T, int HS> static void *zgc_att_dq_func(void) {
    ZG_CUDA_CHECK(cudaFuncSetAttribute(zgc_att_dq_kernel<T, HS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)zgc_dq_smem_bytes<HS>()));
    return (void *)zgc_att_dq_kernel<T, HS>;
}

void zgc_att_dq_node(zg_backend *be, zgc_att_dq *a, int B, cudaKernelNodeParams *p) {
    int hs = a->C / a->NH;
    int f16 = be->act_dtype == ZG_F16;
    memset((void *)p, 0, sizeof(*p)); /* (a C struct with C++ constructors: cleared as bytes) */
    if (hs == 64)
        p->func = f16 ? zgc_att_dq_func<__half, 64>() : zgc_att_dq_func<__nv_bfloat16, 64>();
    else
        p->func = f16 ? zgc_att_dq_func<__half, 128>() : zgc_att_dq_func<__nv_bfloat16, 128>();
    p->gridDim = dim3((unsigned)(a->T / 64), (unsigned)(B * a->NH));
    p->blockDim = dim3(ZGC_DQ_THREADS);
    p->sharedMemBytes = (unsigned)(hs == 64 ? zgc_dq_smem_bytes<64>() : zgc_dq_smem_bytes<128>());
    a->args[0] = &a->dq, a->args[1] = &a->ds, a->args[2] = &a->k, a->args[3] = &a->NH;
    a->args[4] = &a->T, a->args[5] = &a->C, a->args[6] = &a->alpha;
    p->kernelParams = a->args;
}

/* ---- the self-check's comparison: max |x - ref| and max |ref| over a (rows, C) block, rows ld apart ---- */

/* non-negative floats order as their bits; a NaN difference counts as +inf */
__device__ __forceinline__ void zgc_dq_max(unsigned *slot, float v) {
    if (!(v <= 3.0e38f)) v = INFINITY;
    atomicMax(slot, __float_as_uint(v));
}

template <typename T>
__global__ void zgc_att_dq_compare_kernel(unsigned *out, const T *x, size_t ldx, const T *ref, size_t ldr, int rows,
                                          int C) {
    float md = 0.f, mr = 0.f;
    size_t n = (size_t)rows * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t row = i / C, col = i % C;
        float a = zgc_to_f(x[row * ldx + col]), r = zgc_to_f(ref[row * ldr + col]), d = fabsf(a - r);
        md = !(d <= md) ? d : md; /* NaN wins */
        mr = fmaxf(mr, fabsf(r));
    }
    zgc_dq_max(&out[0], md);
    zgc_dq_max(&out[1], mr);
}

void zgc_att_dq_compare(zg_backend *be, const void *x, size_t ldx, const void *ref, size_t ldr, int rows, int C,
                        float *maxdiff, float *maxref) {
    zgc_impl *im = zgc_get(be);
    unsigned *d = (unsigned *)zgc_alloc_or_die(be, 2 * sizeof(unsigned), "attention dQ check");
    unsigned h[2];
    ZG_CUDA_CHECK(cudaMemsetAsync(d, 0, 2 * sizeof(unsigned), im->stream));
    unsigned blocks = zgc_blocks((size_t)rows * C, 256, 4 * (unsigned)im->num_sms);
    if (be->act_dtype == ZG_F16)
        zgc_att_dq_compare_kernel<__half>
            <<<blocks, 256, 0, im->stream>>>(d, (const __half *)x, ldx, (const __half *)ref, ldr, rows, C);
    else
        zgc_att_dq_compare_kernel<__nv_bfloat16><<<blocks, 256, 0, im->stream>>>(
            d, (const __nv_bfloat16 *)x, ldx, (const __nv_bfloat16 *)ref, ldr, rows, C);
    ZG_CUDA_LAUNCH_CHECK();
    zgc_download(be, h, d, sizeof h);
    zgc_free(be, d);
    memcpy(maxdiff, &h[0], sizeof(float));
    memcpy(maxref, &h[1], sizeof(float));
}
