/* The attention backward's dQ product over the causal half of cuDNN's dS workspace: the host side (the kernel,
 * its layout and its form are in attention_dq.cuh).
 *
 * cuDNN's deterministic backward (attention_cudnn.cu) writes dS (B,NH,T,T), in the activations' dtype, to its
 * workspace and then runs dQ = dS K as a dense product (its `matmul_dq` kernel): it reads all T^2 scores of
 * each head, although dS is zero above the diagonal. The kernel computes the same product from the lower
 * triangle only (2080 of 4096 16x16 blocks at T = 1024), about half the bytes; attention_cudnn.cu puts it in
 * place of cuDNN's kernel in the backward's recorded graph. */
#include "backend/cuda/attention_dq.cuh"

/* The form (bench/attn_dq_probe.cu, PERFORMANCE.md v0.28: within 2% of the other forms measured, group 8 the
 * fastest by ~1%): warps a block, cp.async stages, heads a group */
#define ZGC_DQ_WARPS 4
#define ZGC_DQ_STAGES 3
#define ZGC_DQ_GROUP 8

int zgc_att_dq_fits(zg_backend *be, int T, int C, int NH) {
    if (be->act_dtype != ZG_BF16 && be->act_dtype != ZG_F16) return 0;
    if (NH <= 0 || C % NH != 0 || T <= 0 || T % (16 * ZGC_DQ_WARPS) != 0) return 0;
    /* hs 64 only: at hs 128 cuDNN's workspace is laid out otherwise (its first-call check refused this kernel on an
     * H100, PERFORMANCE.md v0.27) */
    return C / NH == 64;
}

template <typename T> static void *zgc_att_dq_func(void) {
    void *f = (void *)zgc_att_dq_kernel<T, 64, ZGC_DQ_WARPS, ZGC_DQ_STAGES>;
    ZG_CUDA_CHECK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)zgc_dq_smem_bytes<64, ZGC_DQ_WARPS, ZGC_DQ_STAGES>()));
    return f;
}

void zgc_att_dq_node(zg_backend *be, zgc_att_dq *a, int B, cudaKernelNodeParams *p) {
    memset((void *)p, 0, sizeof(*p)); /* (a C struct with C++ constructors: cleared as bytes) */
    p->func = be->act_dtype == ZG_F16 ? zgc_att_dq_func<__half>() : zgc_att_dq_func<__nv_bfloat16>();
    a->BNH = B * a->NH, a->group = ZGC_DQ_GROUP;
    p->gridDim = dim3((unsigned)(a->T / (16 * ZGC_DQ_WARPS) * a->BNH));
    p->blockDim = dim3(32 * ZGC_DQ_WARPS);
    p->sharedMemBytes = (unsigned)zgc_dq_smem_bytes<64, ZGC_DQ_WARPS, ZGC_DQ_STAGES>();
    a->args[0] = &a->dq, a->args[1] = &a->ds, a->args[2] = &a->k, a->args[3] = &a->NH, a->args[4] = &a->BNH;
    a->args[5] = &a->T, a->args[6] = &a->C, a->args[7] = &a->group, a->args[8] = &a->alpha;
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
