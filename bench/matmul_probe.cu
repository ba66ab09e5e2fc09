// Two questions about zgpt's cuBLASLt products at GPT-2's training shapes (bf16 in and out, fp32 compute, N = 16384
// rows), answered with random data (all-zero operands run cooler and faster than training does):
//  1. the weight gradient with beta = 1 (D = A B + D: zgpt accumulates into the gradient) against beta = 0 (the
//     same algorithm writing D, as on a gradient known to be zero): what reading C costs;
//  2. the fc projection's input gradient with the DGELU epilogue: each candidate the heuristic returns (its
//     algorithm id, tile, stages, split-K) against the plain product's first.
// No zgpt code; matmul_cuda.cu's descriptors (layouts, transposes, the compute-type reduction mask, 32 MiB of
// workspace). Mean of 20 after 5, CUDA events.
// Build and run on the GPU machine: nvcc -O2 -arch=sm_90 -o /tmp/matmul_probe bench/matmul_probe.cu -lcublasLt && /tmp/matmul_probe
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "probe_check.cuh"
#define LK(x)                                                                                                          \
    do {                                                                                                               \
        cublasStatus_t s_ = (x);                                                                                       \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                             \
            printf("%s: status %d\n", #x, (int)s_);                                                                    \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

static cublasLtHandle_t lt;
static void *ws;
static size_t wsb = 32u << 20;

__global__ void fill(__nv_bfloat16 *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = __float2bfloat16(scale * ((float)(h & 0xffff) / 32768.0f - 1.0f));
    }
}

static __nv_bfloat16 *rand_buf(size_t n, uint32_t seed, float scale) {
    __nv_bfloat16 *p;
    CK(cudaMalloc(&p, n * 2));
    fill<<<1024, 256>>>(p, n, seed, scale);
    CK(cudaGetLastError());
    return p;
}

static float time_it(cublasLtMatmulDesc_t d, const void *A, cublasLtMatrixLayout_t la, const void *B,
                     cublasLtMatrixLayout_t lb, void *D, cublasLtMatrixLayout_t lc, const cublasLtMatmulAlgo_t *algo,
                     float beta) {
    float alpha = 1.f;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int w = 0; w < 5; w++) LK(cublasLtMatmul(lt, d, &alpha, A, la, B, lb, &beta, D, lc, D, lc, algo, ws, wsb, 0));
    CK(cudaEventRecord(e0));
    for (int w = 0; w < 20; w++) LK(cublasLtMatmul(lt, d, &alpha, A, la, B, lb, &beta, D, lc, D, lc, algo, ws, wsb, 0));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return ms / 20;
}

static void algo_desc(const cublasLtMatmulAlgo_t *a, char *buf, size_t cap) {
    int id = -1, tile = -1, stages = -1, splitk = -1;
    size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    snprintf(buf, cap, "algo %d tile %d stages %d splitk %d", id, tile, stages, splitk);
}

// kind 0: DW (A = inp (m x k) op N, B = dout (n x k) op T, D = m x n); kind 1: DINP (A = w (m x k) op N, B = dout
// (k x n) op N, D = m x n)
static void probe(const char *name, int kind, int m, int n, int k, int epi, int all_cands) {
    cublasLtMatmulDesc_t d;
    LK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t ta = CUBLAS_OP_N, tb = kind == 0 ? CUBLAS_OP_T : CUBLAS_OP_N;
    LK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtEpilogue_t e = (cublasLtEpilogue_t)epi;
    LK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
    size_t ar = m, ac = k, br = kind == 0 ? n : k, bc = kind == 0 ? k : n;
    __nv_bfloat16 *A = rand_buf(ar * ac, 1, 1.0f), *B = rand_buf(br * bc, 2, 0.01f),
                  *D = rand_buf((size_t)m * n, 3, 0.1f);
    __nv_bfloat16 *aux = NULL;
    if (epi == CUBLASLT_EPILOGUE_DGELU) {
        aux = rand_buf((size_t)m * n, 4, 2.0f);
        int64_t ld = m;
        LK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
        LK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
    }
    cublasLtMatrixLayout_t la, lb, lc;
    LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ar, ac, ar));
    LK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, br, bc, br));
    LK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, m, n, m));
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red));
    cublasLtMatmulHeuristicResult_t r[16];
    int found = 0;
    LK(cublasLtMatmulAlgoGetHeuristic(lt, d, la, lb, lc, lc, pref, 16, r, &found));
    double flop = 2.0 * m * n * k;
    char ad[128];
    if (kind == 0) {
        algo_desc(&r[0].algo, ad, sizeof ad);
        float t1 = time_it(d, A, la, B, lb, D, lc, &r[0].algo, 1.f);
        float t0 = time_it(d, A, la, B, lb, D, lc, &r[0].algo, 0.f);
        printf("%-28s m=%5d n=%5d k=%5d  beta 1: %.4f ms (%.0f TFLOP/s)  beta 0: %.4f ms (%.0f)  saved %.4f ms  [%s]\n",
               name, m, n, k, t1, flop / t1 / 1e9, t0, flop / t0 / 1e9, t1 - t0, ad);
    } else {
        for (int i = 0; i < found && (all_cands || i < 1); i++) {
            algo_desc(&r[i].algo, ad, sizeof ad);
            float t = time_it(d, A, la, B, lb, D, lc, &r[i].algo, 0.f);
            cudaError_t ce = cudaGetLastError();
            printf("%-28s m=%5d n=%5d k=%5d  cand %2d: %.4f ms (%.0f TFLOP/s) ws %zu [%s]%s\n", name, m, n, k, i, t,
                   flop / t / 1e9, r[i].workspaceSize, ad, ce != cudaSuccess ? cudaGetErrorString(ce) : "");
        }
    }
    CK(cudaFree(A));
    CK(cudaFree(B));
    CK(cudaFree(D));
    if (aux) CK(cudaFree(aux));
    LK(cublasLtMatmulPreferenceDestroy(pref));
    LK(cublasLtMatrixLayoutDestroy(la));
    LK(cublasLtMatrixLayoutDestroy(lb));
    LK(cublasLtMatrixLayoutDestroy(lc));
    LK(cublasLtMatmulDescDestroy(d));
}

int main(void) {
    LK(cublasLtCreate(&lt));
    CK(cudaMalloc(&ws, wsb));
    const int N = 16384;
    // weight gradients (m = C in, n = OC out): 124M and XL, the four products of a layer and the LM head
    int dw[][2] = {{768, 2304},  {768, 768},   {768, 3072},  {3072, 768},  {768, 50304},
                   {1600, 4800}, {1600, 1600}, {1600, 6400}, {6400, 1600}, {1600, 50304}};
    for (int s = 0; s < 10; s++) probe("DW", 0, dw[s][0], dw[s][1], N, CUBLASLT_EPILOGUE_DEFAULT, 0);
    // the fc projection's input gradient (m = 4C, k = C): plain, then DGELU over every candidate
    int dg[][2] = {{3072, 768}, {6400, 1600}};
    for (int s = 0; s < 2; s++) {
        probe("DINP plain", 1, dg[s][0], N, dg[s][1], CUBLASLT_EPILOGUE_DEFAULT, 0);
        probe("DINP DGELU", 1, dg[s][0], N, dg[s][1], CUBLASLT_EPILOGUE_DGELU, 1);
    }
    printf("cublasLt version %zu\n", cublasLtGetVersion());
    return 0;
}
