/* Shared by the files of gpu_test_ops_cuda (tests/gpu/test_ops_cuda.c, the harness, and ops_cuda_*.c,
 * one op family each): the backends, the random stream, the device-buffer and checking helpers, the
 * benchmark timing macros, and each file's entry points. Names carry the prefix oc_ (ops CUDA). */
#ifndef ZG_TESTS_GPU_OPS_CUDA_H
#define ZG_TESTS_GPU_OPS_CUDA_H

#include "backend/backend.h"
#include "backend/cuda/backend_cuda.h"
#include "core/error.h"
#include "testutil.h"

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* one random stream for the whole run (test_ops_cuda.c) */
extern uint64_t oc_rng;
/* fp32, bf16, fp16 (test_ops_cuda.c) */
extern zg_backend *oc_be[3];
/* the ZGPT_GEMV this process started with (ops_cuda_bench_decode.c; set by main) */
extern const char *oc_gemv0;

/* ---- benchmark timing ---------------------------------------------------------------------------- */

typedef struct {
    zg_backend *be;
    cudaEvent_t e0, e1;
} bench_ctx;
/* ZG_BENCH_REPS=n (1..15) times each op n times after no warm-up: for profilers (ncu), which
 * should see every kernel once */
#define BENCH_REPS 15
/* med = median ms per call of reps timings (at most BENCH_REPS), each of n runs of the statement(s) between one pair
 * of events, after warm warm-up runs */
#define BENCH_TIME_N(ctx, med, reps, n, warm, ...)                                                                     \
    do {                                                                                                               \
        float ms_[BENCH_REPS];                                                                                         \
        int reps_ = (reps), n_ = (n);                                                                                  \
        cudaStream_t st_ = zg_backend_cuda_stream((ctx)->be);                                                          \
        for (int w_ = 0; w_ < (warm); w_++) { __VA_ARGS__; }                                                           \
        for (int r_ = 0; r_ < reps_; r_++) {                                                                           \
            cudaEventRecord((ctx)->e0, st_);                                                                           \
            for (int i_ = 0; i_ < n_; i_++) { __VA_ARGS__; }                                                           \
            cudaEventRecord((ctx)->e1, st_);                                                                           \
            cudaEventSynchronize((ctx)->e1);                                                                           \
            cudaEventElapsedTime(&ms_[r_], (ctx)->e0, (ctx)->e1);                                                      \
            ms_[r_] /= (float)n_;                                                                                      \
        }                                                                                                              \
        qsort(ms_, reps_, sizeof(float), oc_cmp_float);                                                                \
        (med) = ms_[reps_ / 2];                                                                                        \
    } while (0)
/* med = median ms of reps timed runs of the statement(s) (after 2 warm-ups when reps is the full count) */
#define BENCH_TIME(ctx, med, reps, ...) BENCH_TIME_N(ctx, med, reps, 1, (reps) == BENCH_REPS ? 2 : 0, __VA_ARGS__)
/* med = median ms per call of 7 timings of n calls back to back (after 2 warm-ups): the GPU's time per call once
 * the host runs ahead, without the host's work before a single call's kernels start (what a training step's
 * stream sees) */
#define BENCH_STREAM(ctx, med, n, ...) BENCH_TIME_N(ctx, med, 7, n, 2, __VA_ARGS__)
#define BENCH(ctx, label, flops, bytes, ...)                                                                           \
    do {                                                                                                               \
        float med_;                                                                                                    \
        BENCH_TIME(ctx, med_, oc_bench_reps(), __VA_ARGS__);                                                           \
        printf("| %-34s | %9.3f | %8.1f | %8.0f |\n", label, med_,                                                     \
               (flops) > 0 ? (double)(flops) / (med_ * 1e-3) / 1e12 : 0.0,                                             \
               (bytes) > 0 ? (double)(bytes) / (med_ * 1e-3) / 1e9 : 0.0);                                             \
    } while (0)
/* the median alone, as a table cell */
#define BENCH_QUIET(ctx, ...)                                                                                          \
    do {                                                                                                               \
        float med_;                                                                                                    \
        BENCH_TIME(ctx, med_, BENCH_REPS, __VA_ARGS__);                                                                \
        printf("| %.3f ", med_);                                                                                       \
        fflush(stdout);                                                                                                \
    } while (0)

/* ---- entry points and shared helpers, by file ----------------------------------------------------- */

/* ---- test_ops_cuda.c */
void oc_check_rel(const char *what, zg_dtype dt, const float *out, const double *ref, size_t n, double tol);
void oc_check_rel_quiet(const char *what, zg_dtype dt, const float *out, const double *ref, size_t n, double tol);
void *oc_dev_big(zg_backend *be, zg_dtype dt, size_t n, float amp);
void *oc_dev_nan(zg_backend *be, zg_dtype dt, size_t n);
void *oc_dev_rand(zg_backend *be, zg_dtype dt, size_t n, float amp, float *host);
int32_t *oc_dev_tokens(zg_backend *be, int n, int V, int32_t *host);
int32_t *oc_dev_tokens_upload(zg_backend *be, const int32_t *host, int n);
float *oc_dl(zg_backend *be, const void *d, zg_dtype dt, size_t n);
const char *oc_dt_name(zg_dtype dt);
double oc_gelu_d(double x);
double oc_gelu_grad_d(double x);
void oc_poison(zg_backend *be, void *d, zg_dtype dt, size_t n);
double oc_tol_of(zg_dtype dt);
int oc_cmp_float(const void *a, const void *b);
int oc_bench_reps(void);

/* ---- ops_cuda_memory.c */
void oc_test_casts(void);
void oc_test_memory(void);
void oc_test_host_copies(void);

/* ---- ops_cuda_encoder.c */
void oc_test_classifier(void);
void oc_test_encoder(void);

/* ---- ops_cuda_layernorm.c */
void oc_ln_ref(double *out, double *mean, double *rstd, const float *x, const float *w, const float *b, int N, int C);
void oc_test_layernorm(void);

/* ---- ops_cuda_matmul.c */
void oc_test_gelu_residual(void);
void oc_test_gemv_forms(void);
void oc_test_layernorm_matmul(void);
void oc_test_layernorm_matmul_simt(void);
void oc_test_layernorm_matmul_v2(void);
void oc_test_matmul(void);
void oc_test_matmul_residual_rounding(void);
void oc_test_matmul_v2(void);
void oc_test_lt_warmup(void);

/* ---- ops_cuda_attention.c */
void oc_attention_cached_case(int decode, int Ttot, int maxT);
void oc_attn_path(const char *path);
void oc_test_attention(void);
void oc_test_attention_cached(void);
void oc_test_attention_large(void);
void oc_test_attention_dq_layout(void);

/* ---- ops_cuda_optimizer.c */
void oc_test_lamb(void);
void oc_test_optimizer(void);

/* ---- ops_cuda_bench.c */
void oc_bench_attn_ln(zg_backend *be, int B, int T, int C, int NH);
void oc_bench_config(zg_backend *be, const char *name, int B, int T, int C, int NH, int L);
void oc_bench_matmul_algos(int B, int T, int C);

/* ---- ops_cuda_sample.c */
void oc_test_sample(void);
void oc_test_sample_bad_env(void);
void oc_test_sample_small(void);
void oc_test_sample_top_p(void);

/* ---- ops_cuda_decode.c */
void oc_test_decode_graph(void);
void oc_test_decode_ops(void);
void oc_test_decode_pdl(void);
void oc_test_decode_prefetch_env(void);

/* ---- ops_cuda_graph.c */
void oc_test_graph_replay(void);

/* ---- ops_cuda_bench_decode.c */
void oc_bench_decode(zg_backend *be, int B, int L);

#endif
