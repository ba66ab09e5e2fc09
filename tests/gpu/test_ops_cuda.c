/* Every op of the CUDA backend against fp64 host references on fresh random inputs, with every
 * output poisoned (NaN) beforehand, in fp32, bf16 and fp16 (per-dtype tolerances on the relative
 * norm error ||out - ref|| / ||ref||). The inputs the references see are the device's rounded
 * values (read back with download_f32), so only the op's own error is measured.
 *
 *   gpu_test_ops_cuda            correctness (ctest -L gpu)
 *   gpu_test_ops_cuda --bench    per-op kernel times (CUDA events, median) for GPT-2 124M and XL shapes
 *                                (ZG_BENCH_ONLY=attn: attention on both paths, LayerNorm bandwidth)
 *
 * This file is the harness (the backends, the shared helpers, the order of the tests, main); the tests
 * and benchmarks are in ops_cuda_*.c, one op family each, sharing ops_cuda.h. */
#include "backend/backend.h"
#include "backend/cuda/backend_cuda.h"
#include "core/error.h"
#include "testutil.h"
#include "ops_cuda.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t oc_rng = 0x5eed1234abcdULL;
zg_backend *oc_be[3]; /* fp32, bf16, fp16 */

const char *oc_dt_name(zg_dtype dt) { return dt == ZG_F32 ? "fp32" : (dt == ZG_BF16 ? "bf16" : "fp16"); }
/* observed maxima on an H200: fp32 3.4e-6, bf16 2.9e-3, fp16 3.6e-4 (output rounding) */
double oc_tol_of(zg_dtype dt) { return dt == ZG_F32 ? 2e-5 : (dt == ZG_BF16 ? 8e-3 : 1.5e-3); }

/* random device buffer; host gets the rounded values */
void *oc_dev_rand(zg_backend *be, zg_dtype dt, size_t n, float amp, float *host) {
    float *h = host ? host : malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = amp * zt_rand_uniform(&oc_rng);
    void *d = be->ops->alloc(be, n * (dt == ZG_F32 ? 4 : 2), "test buffer");
    ZT_CHECK(d != NULL);
    be->ops->upload_f32(be, d, dt, h, n);
    be->ops->download_f32(be, h, d, dt, n);
    if (!host) free(h);
    return d;
}

void *oc_dev_nan(zg_backend *be, zg_dtype dt, size_t n) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    void *d = be->ops->alloc(be, n * (dt == ZG_F32 ? 4 : 2), "test output");
    be->ops->upload_f32(be, d, dt, h, n);
    free(h);
    return d;
}

void oc_poison(zg_backend *be, void *d, zg_dtype dt, size_t n) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    be->ops->upload_f32(be, d, dt, h, n);
    free(h);
}

/* a large random buffer without generating every value on the host: a 4M-element random block
 * copied over it (benchmarks only) */
void *oc_dev_big(zg_backend *be, zg_dtype dt, size_t n, float amp) {
    size_t blk = (size_t)4 << 20, es = dt == ZG_F32 ? 4 : 2;
    void *src = oc_dev_rand(be, dt, blk, amp, NULL);
    void *d = be->ops->alloc(be, n * es, "benchmark buffer");
    ZT_CHECK(d != NULL);
    for (size_t off = 0; off < n; off += blk)
        be->ops->copy(be, (char *)d + off * es, src, (n - off < blk ? n - off : blk) * es);
    be->ops->dealloc(be, src);
    return d;
}

float *oc_dl(zg_backend *be, const void *d, zg_dtype dt, size_t n) {
    float *h = malloc(n * sizeof(float) + 1);
    be->ops->download_f32(be, h, d, dt, n);
    return h;
}

static void check_rel_print(int print, const char *what, zg_dtype dt, const float *out, const double *ref, size_t n,
                            double tol) {
    double num = 0, den = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) bad++;
        double d = out[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    double rel = sqrt(num / (den > 0 ? den : 1e-300));
    int ok = bad == 0 && rel <= tol;
    if (print || !ok)
        printf("  %-40s %s  rel err %.3e (tol %.1e)%s\n", what, oc_dt_name(dt), rel, tol, bad ? "  NON-FINITE" : "");
    ZT_CHECK_MSG(ok, "%s %s: relative error %.3e > %.1e or %zu non-finite of %zu", what, oc_dt_name(dt), rel, tol, bad,
                 n);
}
void oc_check_rel(const char *what, zg_dtype dt, const float *out, const double *ref, size_t n, double tol) {
    check_rel_print(1, what, dt, out, ref, n, tol);
}
/* the same check, printing only a failure */
void oc_check_rel_quiet(const char *what, zg_dtype dt, const float *out, const double *ref, size_t n, double tol) {
    check_rel_print(0, what, dt, out, ref, n, tol);
}

double oc_gelu_d(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
double oc_gelu_grad_d(double x) {
    double k = 0.7978845608028654, u = k * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * k * (1 + 3 * 0.044715 * x * x);
}

/* n token ids from host memory into a new device array */
int32_t *oc_dev_tokens_upload(zg_backend *be, const int32_t *host, int n) {
    int32_t *d = be->ops->alloc(be, (size_t)n * 4, "tokens");
    be->ops->upload(be, d, host, (size_t)n * 4);
    return d;
}

int32_t *oc_dev_tokens(zg_backend *be, int n, int V, int32_t *host) {
    for (int i = 0; i < n; i++) host[i] = (int32_t)(zt_rand_u64(&oc_rng) % (uint64_t)V);
    return oc_dev_tokens_upload(be, host, n);
}

int oc_cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int oc_bench_reps(void) {
    const char *r = getenv("ZG_BENCH_REPS");
    int n = r ? atoi(r) : BENCH_REPS;
    return n >= 1 && n <= BENCH_REPS ? n : BENCH_REPS;
}

/* ZG_BENCH_ONLY=124m|xl16|xl8|survey|attn|attn124|decode runs only that part (default: all but attn124) */
static int bench_part(const char *name) {
    const char *o = getenv("ZG_BENCH_ONLY");
    return o == NULL || o[0] == 0 || strcmp(o, name) == 0;
}

static void run_bench(void) {
    zg_backend *be = oc_be[1];
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    if (bench_part("124m")) oc_bench_config(be, "GPT-2 124M", 16, 1024, 768, 12, 12);
    if (bench_part("xl16")) oc_bench_config(be, "GPT-2 XL", 16, 1024, 1600, 25, 48);
    if (bench_part("xl8")) oc_bench_config(be, "GPT-2 XL", 8, 1024, 1600, 25, 48);
    if (bench_part("survey")) oc_bench_matmul_algos(16, 1024, 1600);
    if (bench_part("attn")) oc_bench_attn_ln(be, 16, 1024, 1600, 25);
    const char *o = getenv("ZG_BENCH_ONLY");
    if (o != NULL && strcmp(o, "attn124") == 0) oc_bench_attn_ln(be, 16, 1024, 768, 12); /* GPT-2 124M's shape */
    if (bench_part("decode")) {
        oc_bench_decode(be, 1, 512);
        oc_bench_decode(be, 8, 512);
    }
}

int main(int argc, char **argv) {
    int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    if (getenv("OC_EXIT_AFTER_CREATE")) { /* lt_warmup's child: exit at once, the warm-up thread running */
        zg_backend *be = NULL;
        zg_backend_config cfg = {"cuda", -1, ZG_BF16};
        if (zg_backend_cuda_create(&be, &cfg) != 0) return 1;
        exit(3);
    }
    oc_gemv0 = getenv("ZGPT_GEMV") ? strdup(getenv("ZGPT_GEMV")) : NULL;
    if (!bench) zt_run("sample_bad_env", oc_test_sample_bad_env); /* first: before this process touches CUDA */
    if (zg_backend_cuda_device_count() <= 0) {
        fprintf(stderr, "no CUDA device visible: this test needs a GPU\n");
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        zg_backend_config cfg = {"cuda", -1, (zg_dtype)i};
        if (zg_backend_cuda_create(&oc_be[i], &cfg) != 0) {
            zg_error_print();
            return 1;
        }
    }
    if (bench) {
        run_bench();
    } else {
        /* the new decode kernels at every shape they take (unset, generation's default, picks per shape:
         * the few-row product only at 1 row), so N = 2..8 keep exercising gemv_cuda.cu */
        setenv("ZGPT_DECODE", "new", 1);
        zt_run("casts", oc_test_casts);
        zt_run("memory", oc_test_memory);
        zt_run("host_copies", oc_test_host_copies);
        zt_run("encoder", oc_test_encoder);
        zt_run("layernorm", oc_test_layernorm);
        zt_run("matmul", oc_test_matmul);
        zt_run("layernorm_matmul", oc_test_layernorm_matmul);
        zt_run("layernorm_matmul_simt", oc_test_layernorm_matmul_simt);
        zt_run("layernorm_matmul_v2", oc_test_layernorm_matmul_v2);
        zt_run("matmul_v2", oc_test_matmul_v2);
        zt_run("gemv_forms", oc_test_gemv_forms);
        zt_run("lt_warmup", oc_test_lt_warmup);
        zt_run("matmul_residual_rounding", oc_test_matmul_residual_rounding);
        zt_run("gelu_residual", oc_test_gelu_residual);
        zt_run("attention", oc_test_attention);
        zt_run("attention_large", oc_test_attention_large);
        zt_run("attention_dq_layout", oc_test_attention_dq_layout);
        zt_run("attention_cached", oc_test_attention_cached);
        zt_run("classifier", oc_test_classifier);
        zt_run("optimizer", oc_test_optimizer);
        zt_run("lamb", oc_test_lamb);
        zt_run("sample", oc_test_sample);
        zt_run("sample_top_p", oc_test_sample_top_p);
        zt_run("sample_small", oc_test_sample_small);
        zt_run("decode_pdl", oc_test_decode_pdl);
        zt_run("decode_ops", oc_test_decode_ops);
        zt_run("decode_graph", oc_test_decode_graph);
        zt_run("graph_replay", oc_test_graph_replay);
        zt_run("decode_prefetch_env", oc_test_decode_prefetch_env);
    }
    for (int i = 0; i < 3; i++) zg_backend_destroy(oc_be[i]);
    return zt_finish();
}
