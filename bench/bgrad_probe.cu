// Which cuBLASLt algorithms exist, and how fast, for the bias-gradient epilogues at GPT-2's shapes (bf16 in and out,
// fp32 compute, N = 16384 rows), against the same products without them (v0.25, docs/PERFORMANCE.md): BGRADB on
// the weight-gradient product (bias vector fp32 or bf16; with and without the compute-type reduction mask that
// matmul_cuda.cu asks for) and DGELU_BGRAD on the fc projection's input gradient. No zgpt code. Prints, per case,
// the heuristic's status and count and the best of its first three candidates (mean of 10 after 3, CUDA events).
// Build and run on the GPU machine: nvcc -O2 -arch=sm_90 -o /tmp/bgrad_probe bench/bgrad_probe.cu -lcublasLt && /tmp/bgrad_probe
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdio.h>
#include <stdlib.h>
#include "probe_check.cuh"
static cublasLtHandle_t lt;
static void *ws;
static size_t wsb = 32u << 20;
// kind 0: DW (A = inp (C x N) op N, B = dout (OC x N) op T, D = C x OC), kind 1: DINP (A = w (C x OC) op N, B = dout (OC x N) op N, D = C x N)
static void probe(const char *name, int kind, int m, int n, int k, int epi, int bias_dt /* -1 default, 0 f32, 1 bf16 */,
                  int redmask) {
    cublasLtMatmulDesc_t d;
    cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t ta = CUBLAS_OP_N, tb = kind == 0 ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtEpilogue_t e = (cublasLtEpilogue_t)epi;
    cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e);
    if (bias_dt >= 0) {
        cudaDataType_t bt = bias_dt == 0 ? CUDA_R_32F : CUDA_R_16BF;
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
    }
    void *A, *B, *D, *bias, *aux;
    size_t ar = m, ac = k, br = kind == 0 ? n : k, bc = kind == 0 ? k : n;
    CK(cudaMalloc(&A, ar * ac * 2));
    CK(cudaMalloc(&B, br * bc * 2));
    CK(cudaMalloc(&D, (size_t)m * n * 2));
    CK(cudaMalloc(&bias, (size_t)(m > n ? m : n) * 4));
    CK(cudaMalloc(&aux, (size_t)m * n * 2));
    cudaMemset(A, 0, ar * ac * 2);
    cudaMemset(B, 0, br * bc * 2);
    cudaMemset(D, 0, (size_t)m * n * 2);
    cudaMemset(aux, 0, (size_t)m * n * 2);
    if (epi == CUBLASLT_EPILOGUE_DGELU || epi == CUBLASLT_EPILOGUE_DGELU_BGRAD) {
        int64_t ld = m;
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld);
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
    }
    if (epi == CUBLASLT_EPILOGUE_BGRADB || epi == CUBLASLT_EPILOGUE_DGELU_BGRAD || epi == CUBLASLT_EPILOGUE_BGRADA)
        cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ar, ac, ar);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, br, bc, br);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, m, n, m);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
    if (redmask) {
        uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red);
    }
    cublasLtMatmulHeuristicResult_t r[8];
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, d, la, lb, lc, lc, pref, 8, r, &found);
    float best = -1;
    float beta = kind == 0 ? 1.f : 0.f, alpha = 1.f;
    for (int i = 0; i < found && i < 3; i++) {
        cudaEvent_t e0, e1;
        cudaEventCreate(&e0);
        cudaEventCreate(&e1);
        for (int w = 0; w < 3; w++)
            cublasLtMatmul(lt, d, &alpha, A, la, B, lb, &beta, D, lc, D, lc, &r[i].algo, ws, wsb, 0);
        cudaEventRecord(e0);
        for (int w = 0; w < 10; w++)
            cublasLtMatmul(lt, d, &alpha, A, la, B, lb, &beta, D, lc, D, lc, &r[i].algo, ws, wsb, 0);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        ms /= 10;
        cudaError_t ce = cudaGetLastError();
        printf("  %-34s cand %d: %.4f ms%s\n", name, i, ms, ce != cudaSuccess ? cudaGetErrorString(ce) : "");
        if (best < 0 || ms < best) best = ms;
    }
    printf("%-36s m=%d n=%d k=%d epi=%d bias=%d red=%d: status %d found %d best %.4f ms\n", name, m, n, k, epi, bias_dt,
           redmask, (int)st, found, best);
    cudaFree(A);
    cudaFree(B);
    cudaFree(D);
    cudaFree(bias);
    cudaFree(aux);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(d);
}
int main(void) {
    cublasLtCreate(&lt);
    CK(cudaMalloc(&ws, wsb));
    int N = 16384;
    int sh[][2] = {{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}, {1600, 4800}, {1600, 6400}, {6400, 1600}};
    for (int s = 0; s < 7; s++) {
        int C = sh[s][0], OC = sh[s][1];
        char nm[64];
        snprintf(nm, 64, "DW C=%d OC=%d default", C, OC);
        probe(nm, 0, C, OC, N, CUBLASLT_EPILOGUE_DEFAULT, -1, 1);
        snprintf(nm, 64, "DW C=%d OC=%d BGRADB f32", C, OC);
        probe(nm, 0, C, OC, N, CUBLASLT_EPILOGUE_BGRADB, 0, 1);
        snprintf(nm, 64, "DW C=%d OC=%d BGRADB bf16", C, OC);
        probe(nm, 0, C, OC, N, CUBLASLT_EPILOGUE_BGRADB, 1, 1);
        snprintf(nm, 64, "DW C=%d OC=%d BGRADB bf16 nored", C, OC);
        probe(nm, 0, C, OC, N, CUBLASLT_EPILOGUE_BGRADB, 1, 0);
        snprintf(nm, 64, "DW C=%d OC=%d BGRADB f32 nored", C, OC);
        probe(nm, 0, C, OC, N, CUBLASLT_EPILOGUE_BGRADB, 0, 0);
    }
    int dg[][2] = {{3072, 768}, {6400, 1600}}; // DINP of the fc projection: D (4C x N), k = C
    for (int s = 0; s < 2; s++) {
        int M = dg[s][0], K = dg[s][1];
        char nm[64];
        snprintf(nm, 64, "DINP 4C=%d DGELU", M);
        probe(nm, 1, M, N, K, CUBLASLT_EPILOGUE_DGELU, -1, 1);
        snprintf(nm, 64, "DINP 4C=%d DGELU_BGRAD f32", M);
        probe(nm, 1, M, N, K, CUBLASLT_EPILOGUE_DGELU_BGRAD, 0, 1);
        snprintf(nm, 64, "DINP 4C=%d DGELU_BGRAD bf16", M);
        probe(nm, 1, M, N, K, CUBLASLT_EPILOGUE_DGELU_BGRAD, 1, 1);
        snprintf(nm, 64, "DINP 4C=%d DGELU_BGRAD bf16 nored", M);
        probe(nm, 1, M, N, K, CUBLASLT_EPILOGUE_DGELU_BGRAD, 1, 0);
    }
    printf("cublasLt version %zu\n", cublasLtGetVersion());
    return 0;
}
