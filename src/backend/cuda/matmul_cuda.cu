/* Matrix products through cuBLASLt with fused epilogues.
 *
 * Row-major (PyTorch) tensors are column-major transposes, so every product is written in
 * column-major terms:
 *   forward   out (N,OC) = inp (N,C) @ w (OC,C)^T      ->  out^T (OC x N) = op_T(w^T: C x OC) * inp^T (C x N)
 *             epilogue BIAS (bias per output row OC), GELU_AUX[_BIAS] writes pre_gelu as aux.
 *             With a residual (N,OC): C = residual, D = out, beta = 1, so D = A*B + C + bias in
 *             one pass (cuBLASLt allows C != D when both have the same type, shape and order; the
 *             layouts here are the same descriptor). C == D (in place) is allowed too.
 *   backward  dinp (N,C) = dout (N,OC) @ w (OC,C)       ->  dinp^T (C x N) = w^T (C x OC) * dout^T (OC x N)
 *             epilogue DGELU multiplies by gelu'(gelu_inp) (aux, C x N).
 *             dw (OC,C) += dout^T @ inp                  ->  dw^T (C x OC) += inp^T (C x N) * op_T(dout^T: OC x N)
 *             epilogue BGRADB writes dbias (OC) = column sums of op(B) = sum over N of dout.
 * Plans (descriptors, layouts, the heuristic's algorithm) are cached by shape, epilogue, whether
 * C is read, and pointer alignment. fp32 uses CUBLAS_COMPUTE_32F (true fp32, no TF32); bf16/fp16 accumulate in fp32. */
#include "backend/cuda/cuda_internal.h"

#include <stdlib.h>
#include <string.h>

enum { ZGC_MM_FWD = 0, ZGC_MM_DINP = 1, ZGC_MM_DW = 2 };
#define ZGC_MM_MAX_CAND 16

static cudaDataType_t zgc_cuda_dtype(zg_dtype dt) {
    return dt == ZG_F32 ? CUDA_R_32F : (dt == ZG_BF16 ? CUDA_R_16BF : CUDA_R_16F);
}

static int zgc_align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % (uintptr_t)al) != 0) al >>= 1;
    return al;
}

/* cuBLASLt's first product in a process costs ~0.1 s of host time, whatever its size: the library's own
 * start-up (v0.20, H100: a 5-token prompt's forward took 0.119 s with one cuBLASLt product, 0.008 s with
 * none). So the backend begins it on a thread of its own when it is created, while the caller reads and
 * uploads the model: one small product (64 x 64 x 64) of the backend's dtype on a handle, stream and
 * buffers of its own. The first plan, a graph recording and the backend's end wait for the thread. Its
 * errors are dropped (a warm-up only: the real products report theirs). ZGPT_LT_WARMUP=0 turns it off
 * (A/B runs); any other value than 0 or 1 is refused when the backend is created. */
enum { ZGC_LT_WARM_N = 64, ZGC_LT_WARM_WS = 1 << 20 };
/* A process may exit while a warm-up runs (an error during the model's load ends zgpt with exit()): the
 * CUDA runtime's and cuBLASLt's exit-time teardown then ran under the thread's calls, and the process died
 * of SIGSEGV instead of its exit status (lt_warmup's child, H100, once in several runs). So exit waits for
 * every warm-up still running: the count below (process-wide state, as exit() is), waited for by an atexit
 * handler. It is registered at the first warm-up, after the backend's first CUDA calls, so it runs before
 * the runtime's own handler (atexit runs handlers in reverse order). */
static pthread_mutex_t zgc_lt_warm_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t zgc_lt_warm_cv = PTHREAD_COND_INITIALIZER;
static int zgc_lt_warm_live; /* warm-up threads started and not yet at their end */
static pthread_once_t zgc_lt_warm_once = PTHREAD_ONCE_INIT;
static void zgc_lt_warm_live_add(int d) {
    pthread_mutex_lock(&zgc_lt_warm_mu);
    zgc_lt_warm_live += d;
    if (zgc_lt_warm_live == 0) pthread_cond_broadcast(&zgc_lt_warm_cv);
    pthread_mutex_unlock(&zgc_lt_warm_mu);
}
static void zgc_lt_warm_at_exit(void) {
    pthread_mutex_lock(&zgc_lt_warm_mu);
    while (zgc_lt_warm_live > 0) pthread_cond_wait(&zgc_lt_warm_cv, &zgc_lt_warm_mu);
    pthread_mutex_unlock(&zgc_lt_warm_mu);
}
static void zgc_lt_warm_register(void) { (void)atexit(zgc_lt_warm_at_exit); }
static void *zgc_lt_warm_main(void *arg) {
    zg_backend *be = (zg_backend *)arg; /* device and dtype: set before the thread starts, never changed */
    zgc_impl *im = zgc_get(be);
    cublasLtHandle_t h = NULL;
    cudaStream_t st = NULL;
    char *buf = NULL;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t lay = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t cand;
    int found = 0;
    const size_t n = ZGC_LT_WARM_N, ws = ZGC_LT_WARM_WS, mat = n * n * zgc_dtype_bytes(be->act_dtype);
    const cudaDataType_t cdt = zgc_cuda_dtype(be->act_dtype);
    const float alpha = 1.f, beta = 0.f;
    if (cudaSetDevice(im->device) != cudaSuccess || cublasLtCreate(&h) != CUBLAS_STATUS_SUCCESS ||
        cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking) != cudaSuccess ||
        cudaMalloc((void **)&buf, 3 * mat + ws) != cudaSuccess || cudaMemsetAsync(buf, 0, 3 * mat, st) != cudaSuccess)
        goto cleanup;
    if (cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&lay, cdt, n, n, (int64_t)n) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulAlgoGetHeuristic(h, desc, lay, lay, lay, lay, pref, 1, &cand, &found) != CUBLAS_STATUS_SUCCESS ||
        found == 0)
        goto cleanup;
    if (cublasLtMatmul(h, desc, &alpha, buf, lay, buf + mat, lay, &beta, buf + 2 * mat, lay, buf + 2 * mat, lay,
                       &cand.algo, buf + 3 * mat, ws, st) == CUBLAS_STATUS_SUCCESS)
        (void)cudaStreamSynchronize(st);
cleanup:
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (lay) (void)cublasLtMatrixLayoutDestroy(lay);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
    if (buf) (void)cudaFree(buf);
    if (st) (void)cudaStreamDestroy(st);
    if (h) (void)cublasLtDestroy(h);
    (void)cudaGetLastError(); /* nothing of the warm-up's reaches the caller's error state */
    zgc_lt_warm_live_add(-1);
    return NULL;
}

int zgc_lt_warm_env(void) {
    const char *v = getenv("ZGPT_LT_WARMUP");
    if (v == NULL || strcmp(v, "1") == 0) return 1;
    return strcmp(v, "0") == 0 ? 0 : -1;
}

void zgc_lt_warm_start(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    if (zgc_lt_warm_env() != 1) return;
    (void)pthread_once(&zgc_lt_warm_once, zgc_lt_warm_register);
    zgc_lt_warm_live_add(1);
    im->lt_warm_running = pthread_create(&im->lt_warm, NULL, zgc_lt_warm_main, be) == 0;
    if (!im->lt_warm_running) zgc_lt_warm_live_add(-1);
}

void zgc_lt_warm_join(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    if (!im->lt_warm_running) return;
    pthread_join(im->lt_warm, NULL);
    im->lt_warm_running = 0;
}

/* A plan's epilogue value beside cuBLASLt's own: BGRADB with the bias gradient in the output's dtype */
#define ZGC_EPI_BGRAD_ACT (CUBLASLT_EPILOGUE_BGRADB | 0x10000)

/* Creates (or finds) the plan for (kind, m, n, k, epilogue, has_c, alignments). align: A, B, C, D,
 * bias/aux (for has_c == 0, C is D and is not read). The heuristic does not see beta, but the plans
 * are still kept apart by has_c so that a C-specific choice (its alignment now, anything added later)
 * can never be reused for the other case. Returns NULL when the heuristic finds no algorithm (only
 * allowed for the optional BGRADB epilogue). */
static zgc_plan *zgc_plan_get(zg_backend *be, int kind, int m, int n, int k, int epi, int has_c, const int align[5],
                              int optional) {
    zgc_impl *im = zgc_get(be);
    zg_dtype dt = be->act_dtype;
    zgc_lt_warm_join(be);
    for (int i = 0; i < ZGC_PLAN_CACHE; i++) {
        zgc_plan *p = &im->plans[i];
        if (p->used && p->kind == kind && p->m == m && p->n == n && p->k == k && p->epi == epi && p->has_c == has_c &&
            p->dt == dt && memcmp(p->align, align, sizeof(p->align)) == 0)
            return p->has_algo ? p : NULL;
    }
    zgc_plan *p = &im->plans[im->plan_next];
    im->plan_next = (im->plan_next + 1) % ZGC_PLAN_CACHE;
    if (p->used) {
        ZG_CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
        ZG_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
        ZG_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
        ZG_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lc));
    }
    memset(p, 0, sizeof(*p));
    p->used = 1;
    p->kind = kind;
    p->m = m;
    p->n = n;
    p->k = k;
    p->epi = epi;
    p->has_c = has_c;
    p->dt = dt;
    memcpy(p->align, align, sizeof(p->align));

    cudaDataType_t cdt = zgc_cuda_dtype(dt);
    ZG_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    int arows, acols, brows, bcols;
    if (kind == ZGC_MM_FWD) { /* A = w (C x OC) transposed; B = inp (C x N) */
        ta = CUBLAS_OP_T;
        arows = k;
        acols = m;
        brows = k;
        bcols = n;
    } else if (kind == ZGC_MM_DINP) { /* A = w (C x OC); B = dout (OC x N) */
        arows = m;
        acols = k;
        brows = k;
        bcols = n;
    } else { /* ZGC_MM_DW: A = inp (C x N); B = dout (OC x N) transposed */
        tb = CUBLAS_OP_T;
        arows = m;
        acols = k;
        brows = n;
        bcols = k;
    }
    ZG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    ZG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    cublasLtEpilogue_t e = (cublasLtEpilogue_t)(epi == ZGC_EPI_BGRAD_ACT ? CUBLASLT_EPILOGUE_BGRADB : epi);
    ZG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)));
    if (epi == CUBLASLT_EPILOGUE_BGRADB || epi == ZGC_EPI_BGRAD_ACT) {
        /* the bias gradient into a scratch vector: fp32, or (ZGC_EPI_BGRAD_ACT) the output's dtype */
        cudaDataType_t bdt = epi == ZGC_EPI_BGRAD_ACT ? cdt : CUDA_R_32F;
        ZG_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bdt, sizeof(bdt)));
    }
    if (epi == CUBLASLT_EPILOGUE_GELU_AUX || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || epi == CUBLASLT_EPILOGUE_DGELU) {
        int64_t ld = m; /* aux has the layout of D */
        ZG_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
    }
    ZG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, cdt, (uint64_t)arows, (uint64_t)acols, arows));
    ZG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, cdt, (uint64_t)brows, (uint64_t)bcols, brows));
    ZG_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, cdt, (uint64_t)m, (uint64_t)n, m));

    cublasLtMatmulPreference_t pref;
    ZG_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    ZG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                         &im->lt_ws_bytes, sizeof(im->lt_ws_bytes)));
    uint32_t al[5];
    for (int i = 0; i < 5; i++) al[i] = (uint32_t)align[i];
    ZG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], 4));
    ZG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], 4));
    ZG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], 4));
    ZG_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[3], 4));
    /* Split-K only with partial sums reduced in the compute type (fp32, in the workspace). The
     * in-place and output-type schemes add each partial product into D in bf16/fp16: with a residual
     * (beta = 1, C = the residual stream) or an accumulating weight gradient, every partial is then
     * rounded against the large running value and small contributions are lost. */
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    ZG_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof(red)));
    /* ZGPT_MATMUL_ALGO=k (a benchmarking knob, read when a plan is made): take the heuristic's
     * (k+1)-th candidate instead of its first (the last one when it returns fewer) */
    cublasLtMatmulHeuristicResult_t cand[ZGC_MM_MAX_CAND];
    const char *ks = getenv("ZGPT_MATMUL_ALGO");
    int pick = ks != NULL ? atoi(ks) : 0, found = 0;
    if (pick < 0) pick = 0;
    if (pick > ZGC_MM_MAX_CAND - 1) pick = ZGC_MM_MAX_CAND - 1;
    cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(im->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, pick + 1, cand, &found);
    ZG_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        if (!optional)
            ZG_FATAL("cuBLASLt found no algorithm for a %s matmul m=%d n=%d k=%d epilogue=%d (%s)",
                     kind == ZGC_MM_FWD ? "forward" : (kind == ZGC_MM_DINP ? "input-gradient" : "weight-gradient"), m,
                     n, k, epi, cublasGetStatusString(st));
        p->has_algo = 0;
        return NULL;
    }
    p->algo = cand[pick < found ? pick : found - 1].algo;
    p->has_algo = 1;
    return p;
}

/* D = A*B + beta*C (+ epilogue); C and D share the layout p->lc. */
static void zgc_plan_run(zg_backend *be, zgc_plan *p, const void *A, const void *B, const void *C, void *D, float beta,
                         const void *bias, const void *aux) {
    zgc_impl *im = zgc_get(be);
    if (bias != NULL)
        ZG_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    if (aux != NULL)
        ZG_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    float alpha = 1.f;
    ZG_CUBLAS_CHECK(cublasLtMatmul(im->lt, p->desc, &alpha, A, p->la, B, p->lb, &beta, C, p->lc, D, p->lc, &p->algo,
                                   im->lt_ws, im->lt_ws_bytes, im->stream));
}

/* out (N,OC) = inp (N,C) @ w (OC,C)^T + bias + residual. residual (N,OC) may equal out (in place)
 * but must not otherwise overlap it; residual with pre_gelu is refused (backend.h). */
void zgc_matmul_forward(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                        const void *residual, int N, int C, int OC) {
    if (residual != NULL && pre_gelu != NULL)
        ZG_FATAL("matmul_forward (cuda): residual and pre_gelu together are not supported (N=%d C=%d OC=%d)", N, C, OC);
    if (zgc_gemv_forward(be, out, pre_gelu, inp, w, bias, residual, N, C, OC)) return; /* a few rows: decode */
    int epi;
    if (pre_gelu != NULL)
        epi = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    else
        epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    int has_c = residual != NULL;
    const void *cptr = has_c ? residual : out;
    int al[5] = {zgc_align_of(w), zgc_align_of(inp), zgc_align_of(cptr), zgc_align_of(out),
                 zgc_align_of(bias) < zgc_align_of(pre_gelu) ? zgc_align_of(bias) : zgc_align_of(pre_gelu)};
    zgc_plan *p = zgc_plan_get(be, ZGC_MM_FWD, OC, N, C, epi, has_c, al, 0);
    zgc_plan_run(be, p, w, inp, cptr, out, has_c ? 1.f : 0.f, bias, pre_gelu);
}

/* dbias (OC) += part (OC), the epilogue's vector in the gradient dtype (ZGPT_BGRAD=bf16) */
template <typename TG> __global__ void zgc_bias_add_act_kernel(TG *dbias, const TG *part, int OC) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < OC) dbias[c] = zgc_from_f<TG>(zgc_to_f(dbias[c]) + zgc_to_f(part[c]));
}

/* dbias (OC) += sum of part (R, OC) over R (fixed order); block (32, 8): row group ty adds rows ty, ty + 8, ...
 * of its 32 columns, then the 8 groups are added in order (one thread a column summing all R rows in turn took
 * ~4.5 us at R = 128: a chain of dependent adds) */
template <typename TG> __global__ void zgc_bias_add_kernel(TG *dbias, const float *part, int R, int OC) {
    __shared__ float sh[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.f;
    if (c < OC)
        for (int r = threadIdx.y; r < R; r += 8) s += part[(size_t)r * OC + c];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y != 0 || c >= OC) return;
    float t = 0.f;
    for (int k = 0; k < 8; k++) t += sh[k][threadIdx.x];
    dbias[c] = zgc_from_f<TG>(zgc_to_f(dbias[c]) + t);
}

/* dbias (OC, the gradient dtype) += the R partial rows of part (R, OC), in row order */
static void zgc_bias_add(zg_backend *be, void *dbias, const float *part, int R, int OC) {
    ZGC_DISPATCH(
        be->grad_dtype, TG,
        (zgc_bias_add_kernel<TG><<<(OC + 31) / 32, dim3(32, 8), 0, zgc_get(be)->stream>>>((TG *)dbias, part, R, OC)));
    ZG_CUDA_LAUNCH_CHECK();
}

/* part (gridDim.y, OC): column sums of dout (N,OC) over row slice blockIdx.y; block (32, 8). The form for
 * OC not a multiple of the 16-byte vector (or a misaligned dout). */
template <typename TA> __global__ void zgc_bias_partial_kernel(float *part, const TA *dout, int N, int OC) {
    __shared__ float sh[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int rows_per = (N + gridDim.y - 1) / gridDim.y;
    int r0 = blockIdx.y * rows_per, r1 = min(N, r0 + rows_per);
    float s = 0.f;
    if (c < OC)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) s += zgc_to_f(dout[(size_t)r * OC + c]);
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < OC) {
        float t = 0.f;
        for (int k = 0; k < 8; k++) t += sh[k][threadIdx.x];
        part[(size_t)blockIdx.y * OC + c] = t;
    }
}

/* The same sums with 16-byte loads: a lane owns VW = 16 / sizeof(TA) adjacent columns, a warp 32 * VW of them
 * (256 in bf16), the block's 8 warps take every 8th row of the slice, 4 rows in flight a lane; the warps' sums
 * are added in warp order. Needs OC % VW == 0 and dout 16-byte aligned. The scalar form read 2 bytes a lane
 * (64-byte rows a warp) and ran at ~2.2 TB/s on an H100. */
#define ZGC_BIAS_UNROLL 4
template <typename TA>
__global__ void __launch_bounds__(256) zgc_bias_partial_vec_kernel(float *part, const TA *dout, int N, int OC) {
    constexpr int VW = 16 / sizeof(TA), COLS = 32 * VW;
    __shared__ float sh[8][COLS];
    int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
    int c = blockIdx.x * COLS + lane * VW;
    int rows_per = (N + gridDim.y - 1) / gridDim.y;
    int r0 = blockIdx.y * rows_per, r1 = min(N, r0 + rows_per);
    float acc[VW];
#pragma unroll
    for (int e = 0; e < VW; e++) acc[e] = 0.f;
    if (c < OC) {
        int r = r0 + wid;
        for (; r + 8 * (ZGC_BIAS_UNROLL - 1) < r1; r += 8 * ZGC_BIAS_UNROLL) {
            zgc_vec<TA> v[ZGC_BIAS_UNROLL];
#pragma unroll
            for (int u = 0; u < ZGC_BIAS_UNROLL; u++)
                v[u] = *reinterpret_cast<const zgc_vec<TA> *>(dout + (size_t)(r + 8 * u) * OC + c);
#pragma unroll
            for (int u = 0; u < ZGC_BIAS_UNROLL; u++)
#pragma unroll
                for (int e = 0; e < VW; e++) acc[e] += zgc_to_f(v[u].v[e]);
        }
        for (; r < r1; r += 8) {
            zgc_vec<TA> v = *reinterpret_cast<const zgc_vec<TA> *>(dout + (size_t)r * OC + c);
#pragma unroll
            for (int e = 0; e < VW; e++) acc[e] += zgc_to_f(v.v[e]);
        }
    }
#pragma unroll
    for (int e = 0; e < VW; e++) sh[wid][lane * VW + e] = acc[e];
    __syncthreads();
    for (int j = threadIdx.x; j < COLS; j += blockDim.x) {
        int cc = blockIdx.x * COLS + j;
        if (cc >= OC) continue;
        float t = 0.f;
#pragma unroll
        for (int k = 0; k < 8; k++) t += sh[k][j];
        part[(size_t)blockIdx.y * OC + cc] = t;
    }
}

void zgc_matmul_backward(zg_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                         const void *w, const void *gelu_inp, int N, int C, int OC, int dw_overwrite) {
    zgc_impl *im = zgc_get(be);
    if (dinp != NULL) {
        int epi = gelu_inp ? CUBLASLT_EPILOGUE_DGELU : CUBLASLT_EPILOGUE_DEFAULT;
        int al[5] = {zgc_align_of(w), zgc_align_of(dout), zgc_align_of(dinp), zgc_align_of(dinp),
                     zgc_align_of(gelu_inp)};
        zgc_plan *p = zgc_plan_get(be, ZGC_MM_DINP, C, N, OC, epi, 0, al, 0);
        zgc_plan_run(be, p, w, dout, dinp, dinp, 0.f, NULL, gelu_inp);
    }
    /* dw accumulates: C = D = dw, beta = 1; or (dw_overwrite: dw holds zeros) beta = 0, the same algorithm and the
     * same values without reading C, which cuBLASLt's beta-zero kernels skip (the plan is the same: the
     * heuristic does not see beta). */
    const float beta = dw_overwrite ? 0.f : 1.f;
    int al[5] = {zgc_align_of(inp), zgc_align_of(dout), zgc_align_of(dw), zgc_align_of(dw), 256};
    zgc_plan *pb = NULL;
    zgc_plan *p = NULL;
    int bgrad = 0;
    if (dw == NULL) goto bias_only; /* weight gradient not wanted (frozen weights) */
    bgrad = dbias != NULL && im->bgrad_ok && be->grad_dtype == be->act_dtype ? zgc_bgrad_env() : 0;
    /* the BGRADB plans are told apart from the f32-vector ones by the epilogue's bias type (ZGC_EPI_BGRAD_ACT) */
    if (bgrad)
        pb = zgc_plan_get(be, ZGC_MM_DW, C, OC, N, bgrad == 2 ? ZGC_EPI_BGRAD_ACT : CUBLASLT_EPILOGUE_BGRADB, 1, al, 1);
    if (pb != NULL) {
        /* fused: dw += inp^T dout, bias gradient (OC) into a scratch vector (fp32, or the activation dtype), then
         * added to dbias */
        void *part = zgc_scratch(be, ZGC_SCR_BIAS, (size_t)OC * 4, "bias-gradient scratch");
        zgc_plan_run(be, pb, inp, dout, dw, dw, beta, part, NULL);
        if (bgrad == 2) {
            ZGC_DISPATCH(be->grad_dtype, TG,
                         (zgc_bias_add_act_kernel<TG>
                          <<<(OC + 255) / 256, 256, 0, im->stream>>>((TG *)dbias, (const TG *)part, OC)));
            ZG_CUDA_LAUNCH_CHECK();
            return;
        }
        zgc_bias_add(be, dbias, (const float *)part, 1, OC);
        return;
    }
    p = zgc_plan_get(be, ZGC_MM_DW, C, OC, N, CUBLASLT_EPILOGUE_DEFAULT, 1, al, 0);
    zgc_plan_run(be, p, inp, dout, dw, dw, beta, NULL, NULL);
bias_only:
    if (dbias != NULL) {
        /* R row slices: enough blocks to keep the loads in flight (~3 blocks of 8 warps an SM at OC = 768, 4 rows
         * in flight a lane), each slice at least 16 rows */
        int vw = (int)(16 / zgc_dtype_bytes(be->act_dtype));
        int vec = OC % vw == 0 && ((uintptr_t)dout % 16) == 0;
        int R = vec ? 128 : 64;
        if (R > (N + 15) / 16) R = (N + 15) / 16;
        if (R < 1) R = 1;
        float *part = (float *)zgc_scratch(be, ZGC_SCR_BIAS, (size_t)R * OC * 4, "bias-gradient scratch");
        if (vec) {
            dim3 grid((unsigned)((OC + 32 * vw - 1) / (32 * vw)), (unsigned)R);
            ZGC_DISPATCH(
                be->act_dtype, TA,
                (zgc_bias_partial_vec_kernel<TA><<<grid, 256, 0, im->stream>>>(part, (const TA *)dout, N, OC)));
        } else {
            dim3 grid((unsigned)((OC + 31) / 32), (unsigned)R), block(32, 8);
            ZGC_DISPATCH(be->act_dtype, TA,
                         (zgc_bias_partial_kernel<TA><<<grid, block, 0, im->stream>>>(part, (const TA *)dout, N, OC)));
        }
        ZG_CUDA_LAUNCH_CHECK();
        zgc_bias_add(be, dbias, part, R, OC);
    }
}

void zgc_matmul_destroy(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    zgc_lt_warm_join(be);
    for (int i = 0; i < ZGC_PLAN_CACHE; i++) {
        zgc_plan *p = &im->plans[i];
        if (!p->used) continue;
        ZG_CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
        ZG_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
        ZG_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
        ZG_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lc));
        p->used = 0;
    }
}
