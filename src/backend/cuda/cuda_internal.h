/* Internal declarations shared by the CUDA backend's translation units (.cu only). */
#ifndef ZG_BACKEND_CUDA_INTERNAL_H
#define ZG_BACKEND_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* core/error.h is C11 (_Noreturn); spell it the C++ way while it is included. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "backend/backend.h"
#include "core/error.h"
}
#undef _Noreturn
#include "backend/cuda/backend_cuda.h"

/* Every CUDA runtime / cuBLASLt call goes through these: file, line, the call and the rank
 * (zg_fatal_at prints the rank) and exit. */
#define ZG_CUDA_CHECK(call)                                                                                            \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess)                                                                                         \
            zg_fatal_at(__FILE__, __LINE__, "%s failed: %s (%s)", #call, cudaGetErrorName(e_),                         \
                        cudaGetErrorString(e_));                                                                       \
    } while (0)
#define ZG_CUBLAS_CHECK(call)                                                                                          \
    do {                                                                                                               \
        cublasStatus_t s_ = (call);                                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                               \
            zg_fatal_at(__FILE__, __LINE__, "%s failed: cuBLAS status %d (%s)", #call, (int)s_,                        \
                        cublasGetStatusString(s_));                                                                    \
    } while (0)
/* After every kernel launch. */
#define ZG_CUDA_LAUNCH_CHECK() ZG_CUDA_CHECK(cudaGetLastError())

/* Internal scratch buffers, grown on demand and counted in bytes_in_use. */
enum {
    ZGC_SCR_LN = 0,       /* layernorm backward partial sums (blocks, 2C or 4C) fp32 */
    ZGC_SCR_BIAS,         /* bias-gradient partial sums fp32 */
    ZGC_SCR_ATT_D,        /* attention backward rowsum(dout*out) (B,NH,T) fp32 */
    ZGC_SCR_SORT,         /* encoder backward: sorted tokens/indices + CUB temp storage */
    ZGC_SCR_SEGS,         /* AdamW segment table */
    ZGC_SCR_PARTIALS,     /* sum_squares per-block partial sums (double) */
    ZGC_SCR_STAGING,      /* fp32 staging for upload_f32 / download_f32 */
    ZGC_SCR_LAMB,         /* Lamb: per segment ||p||^2 and ||u||^2 (double) */
    ZGC_SCR_LAMB_PART,    /* Lamb: per optimizer block the partial ||p||^2 and ||u||^2 (double) */
    ZGC_SCR_DECODE,       /* decode attention's per-split partials (B,NH,splits,hs+2) fp32 */
    ZGC_SCR_DECODE_COUNT, /* decode attention: per (row, head) chunk blocks done (B,NH) u32, 0 between launches */
    ZGC_SCR_GEMV_PROF, /* ZGPT_GEMV_PROF=1: v2 launches' block timestamps (ZGC_GEMV_PROF_LAUNCHES x blocks x 4) u64 */
    ZGC_SCR_COUNT
};

#define ZGC_PLAN_CACHE 64

typedef struct {
    int used;
    int kind; /* matmul kind (matmul_cuda.cu) */
    int m, n, k;
    int epi;
    int has_c;    /* 1 when C is read (beta = 1: residual input, or dw accumulation) */
    int align[5]; /* alignment (bytes, capped at 256) of A, B, C, D, bias/aux */
    zg_dtype dt;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    int has_algo;
} zgc_plan;

typedef struct {
    void *ptr;
    size_t bytes;
} zgc_alloc_rec;

/* attention_cudnn.cu's state (plans, cuDNN handle, workspace); NULL until attention first runs. */
typedef struct zgc_cudnn_att zgc_cudnn_att;

typedef struct {
    zg_backend_ops ops; /* this backend's op table (be->ops points here) */
    int device;
    int num_sms;
    int cc_major; /* compute capability major (PDL and thread-block clusters: 9+) */
    /* the cluster sampler's blocks per row for a vocabulary of sample_v ids (0: none fits), chosen on the
     * first call (a generation's first draw runs before any capture) */
    int sample_v, sample_nb;
    cudaStream_t stream;
    cudaStream_t copy_stream; /* copy_async: host transfers beside the compute stream */
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    zgc_alloc_rec *allocs;
    int n_allocs, cap_allocs;
    void *scratch[ZGC_SCR_COUNT];
    size_t scratch_bytes[ZGC_SCR_COUNT];
    zgc_plan plans[ZGC_PLAN_CACHE];
    int plan_next;
    /* AdamW segment table as last uploaded (host copy, to skip unchanged uploads) */
    void *segs_host;
    size_t segs_host_bytes;
    double *partials_host;
    int bgrad_ok; /* 1 while the cuBLASLt BGRADB epilogue is usable */
    zgc_cudnn_att *att_cudnn;
    /* memory the caller lends (ops->scratch_lend), NULL when none: the attention backward's cuDNN
     * workspace while it is lent */
    void *loan;
    size_t loan_bytes;
    int host_register_noted; /* "pinned host memory comes from cudaHostAlloc instead" was said */
    /* split decode attention's batched-combine kernel (decode_cuda.cu): the blocks an SM holds at head size
     * dec_batch_hs (0: not asked yet; the query runs once per head size, not per launch) */
    int dec_batch_hs, dec_batch_per_sm;
    /* ZGPT_GEMV_PROF=1 (gemv_cuda.cu): the launches profiled so far (v2 products and split decode attention,
     * while a graph records), each one's (N, C, OC: 0 for attention, blocks), and the launch ranges of the
     * recordings (the replays' timelines: the report's subject) */
    int gemv_prof_next, gemv_prof_on, gemv_prof_nrec, gemv_prof_rec[8][2];
    int (*gemv_prof_meta)[4];
    /* cuBLASLt's start-up on a thread of its own (matmul_cuda.cu, zgc_lt_warm_start): running until joined */
    pthread_t lt_warm;
    int lt_warm_running;
} zgc_impl;

static inline zgc_impl *zgc_get(zg_backend *be) { return (zgc_impl *)be->impl; }

/* Device scratch buffer `slot` of at least `bytes` (grown, contents lost when it grows). */
void *zgc_scratch(zg_backend *be, int slot, size_t bytes, const char *what);
/* zgc_scratch whose buffer is all zeros when it is (re)allocated; what the caller writes stays (the decode
 * attention's counters, which every launch leaves at 0) */
void *zgc_scratch_zeroed(zg_backend *be, int slot, size_t bytes, const char *what);
/* Accounted device allocation; fatal with an out-of-memory message when it fails (internal use). */
void *zgc_alloc_or_die(zg_backend *be, size_t bytes, const char *what);
void zgc_free(zg_backend *be, void *p);
/* Device -> host copy on the compute stream, waited for. */
void zgc_download(zg_backend *be, void *dst_host, const void *src, size_t bytes);

/* matmul_cuda.cu */
void zgc_matmul_forward(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                        const void *residual, int N, int C, int OC);
void zgc_matmul_backward(zg_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                         const void *w, const void *gelu_inp, int N, int C, int OC, int dw_overwrite);
void zgc_matmul_destroy(zg_backend *be);
/* cuBLASLt's one-time start-up, begun when the backend is created, and the wait for it (before a plan,
 * a graph recording or the backend's end) */
void zgc_lt_warm_start(zg_backend *be);
/* ZGPT_LT_WARMUP: 1 (unset or "1": on), 0 ("0": off), -1 (anything else: the backend refuses to start) */
int zgc_lt_warm_env(void);
void zgc_lt_warm_join(zg_backend *be);
/* graph_cuda.cu: the graph ops */
int zgc_graph_begin(zg_backend *be);
zg_graph *zgc_graph_end(zg_backend *be);
void zgc_graph_launch(zg_backend *be, zg_graph *g);
void zgc_graph_destroy(zg_backend *be, zg_graph *g);
/* gemv_cuda.cu: matmul_forward for a few rows (decode): 1 when it ran, 0 when the caller must use
 * cuBLASLt (more than ZGC_GEMV_MAX_N rows, unaligned operands, or zgc_gemv_pick says so). */
#define ZGC_GEMV_MAX_N 8
int zgc_gemv_forward(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                     const void *residual, int N, int C, int OC);
/* layernorm_matmul_forward: fused for a few rows (the LayerNorm of each block's rows into shared memory,
 * then the product as above), else the two ops */
void zgc_layernorm_matmul_forward(zg_backend *be, void *out, void *pre_gelu, void *ln, const void *inp, const void *lnw,
                                  const void *lnb, const void *w, const void *bias, int N, int C, int OC);
/* The kernel a few-row product of these operands runs (ZGC_GEMV_* below; ZGC_GEMV_CUBLASLT: cuBLASLt, or
 * with ln the two ops); ln: the LayerNorm fused in front. Fatal for a bad ZGPT_GEMV. */
int zgc_gemv_fits(zg_backend *be, const void *inp, const void *w, int N, int C, int OC, bool ln);
/* ZGPT_GEMV_PROF (gemv_cuda.cu): 1 to record the decode step's timeline (v2's products and split decode
 * attention), 0 off, -1 another value (refused at create); slot: a launch's 4 timestamps a block (NULL when
 * off, outside a recording, or full; OC 0: attention); mark: graph_begin (end 0) and graph_end (end 1);
 * report: at destroy, on stderr */
int zgc_gemv_prof_env(void);
unsigned long long *zgc_gemv_prof_slot(zg_backend *be, int N, int C, int OC, unsigned blocks);
void zgc_gemv_prof_mark(zg_backend *be, int end);
void zgc_gemv_prof_report(zg_backend *be);

/* ZGPT_DECODE picks the decode path's kernels (A/B measurements in one call):
 *   unset (auto): per shape, from the H200's whole-step graphs (decode_device_run1.log): the few-row
 *     product and split attention at B=1 (step 3.33 -> 2.62 ms), cuBLASLt and one block per (row, head)
 *     at B=8 (3.46 ms, against 6.74 ms with the new kernels); the sampler reading the logits on every
 *     pass (staging z in shared memory timed slower alone: top-k 0.227 against 0.206 ms);
 *   old: the earlier kernels everywhere (cuBLASLt, one block per (row, head), the unstaged sampler);
 *   new: the new kernels at every shape they take (the op tests run this);
 *   gemv / split: only the few-row product / only split attention new (which one a regression is in);
 *   oneblock: auto, but decode attention always one block per (row, head) (auto's rule before v0.18 at B=8).
 * Anything else: auto. */
enum { ZGC_DEC_AUTO = 0, ZGC_DEC_OLD, ZGC_DEC_NEW, ZGC_DEC_GEMV, ZGC_DEC_SPLIT, ZGC_DEC_ONEBLOCK };
static inline int zgc_decode_mode(void) {
    const char *v = getenv("ZGPT_DECODE");
    if (v == NULL) return ZGC_DEC_AUTO;
    if (strcmp(v, "old") == 0) return ZGC_DEC_OLD;
    if (strcmp(v, "new") == 0) return ZGC_DEC_NEW;
    if (strcmp(v, "gemv") == 0) return ZGC_DEC_GEMV;
    if (strcmp(v, "split") == 0) return ZGC_DEC_SPLIT;
    if (strcmp(v, "oneblock") == 0) return ZGC_DEC_ONEBLOCK;
    return ZGC_DEC_AUTO;
}
/* auto runs the few-row product up to this many rows: 8 (every row count it takes), in v2's kernel
 * (ZGC_GEMV_AUTO_FORM) without its L2 prefetch. v0.19 (H100, the XL step graph at B=8 once decode attention
 * read its cache before the PDL wait): 3.013 ms with v2's products up to 8 rows against 3.230 ms with
 * cuBLASLt's. Before that: 1 row. Measured (v0.15, one H200, the XL decode step graph with split attention, the cluster sampler
 * and PDL): at B=1 2.393 ms with v2 without the prefetch, 2.432 ms with it, 2.664 ms with cuBLASLt's
 * products, 2.810 ms with v1; at B=8 v2 took 4.154 ms against cuBLASLt's 3.267 ms, so from 2 rows
 * cuBLASLt stays. (v0.13: v1 at 1 row lost to cuBLASLt once PDL was on, 2.802 vs 2.658 ms.)
 * ZGPT_GEMV_MAX_N or ZGPT_DECODE=new|gemv select it at more rows for A/B runs.
 * Auto also leaves to cuBLASLt a product of more than ZGC_GEMV_AUTO_MAX_RATIO x C outputs: the LM head (wte,
 * 161 MB at GPT-2 XL) takes the same time either way (v0.19, H100, alone: 0.074 ms cuBLASLt, 0.072 ms v2 at 1
 * row; 0.074 both at 8), and cuBLASLt's is what the v0.19 step graphs and generation measured. */
#define ZGC_GEMV_AUTO_MAX_N 8
#define ZGC_GEMV_AUTO_MAX_RATIO 4
static inline bool zgc_decode_gemv(int N, int C, int OC) {
    int m = zgc_decode_mode();
    const char *v = getenv("ZGPT_GEMV_MAX_N"); /* auto's limit, for A/B runs of the tensor-core form at B > 1 */
    int auto_max = ZGC_GEMV_AUTO_MAX_N;
    if (v != NULL && *v != '\0') {
        char *end;
        long n = strtol(v, &end, 10);
        if (*end != '\0' || n < 0 || n > ZGC_GEMV_MAX_N)
            ZG_FATAL("ZGPT_GEMV_MAX_N=%s: expected a row count from 0 to %d (unset: %d)", v, ZGC_GEMV_MAX_N,
                     ZGC_GEMV_AUTO_MAX_N);
        auto_max = (int)n;
    }
    return m == ZGC_DEC_NEW || m == ZGC_DEC_GEMV ||
           ((m == ZGC_DEC_AUTO || m == ZGC_DEC_ONEBLOCK) && N <= auto_max &&
            (long long)OC <= (long long)ZGC_GEMV_AUTO_MAX_RATIO * C);
}
/* Which kernel runs a product of N <= ZGC_GEMV_MAX_N rows (gemv_cuda.cu):
 *   CUBLASLT  cuBLASLt (matmul_cuda.cu);
 *   V1        v0.11-v0.13's few-row kernels: a warp per output column at 1 row, the tensor-core form
 *             (16 columns per block, K split over its 8 warps) from 2 rows (16-bit types);
 *   V1_SIMT   v1's warp per column at every row count;
 *   V2        one tensor-core kernel for 1..8 rows (8 columns per mma, a grid of at most 2 blocks per
 *             SM looping over column groups, the input staged in shared memory once per block, weights
 *             loaded and prefetched to L2 before the PDL wait; fp32 runs V1_SIMT).
 * ZGPT_GEMV=cublaslt|v1|simt|v2 picks one for every such product (over ZGPT_DECODE); unset: cuBLASLt,
 * or ZGC_GEMV_AUTO_FORM (v2) where zgc_decode_gemv says so (up to 8 rows, at most 4C outputs). Any other value: -1 (the caller refuses it). */
enum { ZGC_GEMV_CUBLASLT = 0, ZGC_GEMV_V1, ZGC_GEMV_V1_SIMT, ZGC_GEMV_V2 };
#define ZGC_GEMV_AUTO_FORM ZGC_GEMV_V2
static inline int zgc_gemv_pick(int N, int C, int OC) {
    const char *v = getenv("ZGPT_GEMV");
    if (v == NULL || *v == '\0') return zgc_decode_gemv(N, C, OC) ? ZGC_GEMV_AUTO_FORM : ZGC_GEMV_CUBLASLT;
    if (strcmp(v, "cublaslt") == 0) return ZGC_GEMV_CUBLASLT;
    if (strcmp(v, "v1") == 0) return ZGC_GEMV_V1;
    if (strcmp(v, "simt") == 0) return ZGC_GEMV_V1_SIMT;
    if (strcmp(v, "v2") == 0) return ZGC_GEMV_V2;
    return -1;
}
/* Split attention when one block per (row, head) leaves SMs idle or runs a single wave: up to
 * ZGC_DEC_SPLIT_WAVES blocks per SM. Measured: B = 1 in GPT-2 XL (25 blocks on 132 SMs) since v0.11; at B = 8
 * (200 blocks, 512 cached positions) the step graph took 3.443 ms split against 3.579 ms with one block per
 * (row, head) on an H100 (v0.18), so auto splits there too. */
#define ZGC_DEC_SPLIT_WAVES 2
static inline bool zgc_decode_split(int rowheads, int num_sms) {
    int m = zgc_decode_mode();
    return m == ZGC_DEC_NEW || m == ZGC_DEC_SPLIT || (m == ZGC_DEC_AUTO && rowheads < ZGC_DEC_SPLIT_WAVES * num_sms);
}
/* the one-block sampler's z staged in shared memory: only when asked for (ZGPT_DECODE=new) */
static inline bool zgc_decode_staged_sample(void) { return zgc_decode_mode() == ZGC_DEC_NEW; }

/* ZGPT_DECODE_COMBINE: where split decode attention combines its chunks (decode_cuda.cu): unset or
 * "fused": 1, in the last chunk block of each (row, head); "kernel": 0, a kernel of its own after the
 * chunks (v0.15's form, for A/B runs: the same bits). -1 for anything else: zg_backend_cuda_create
 * refuses it. Read per call (A/B runs in one process). */
static inline int zgc_decode_combine(void) {
    const char *v = getenv("ZGPT_DECODE_COMBINE");
    if (v == NULL || *v == '\0' || strcmp(v, "fused") == 0) return 1;
    return strcmp(v, "kernel") == 0 ? 0 : -1;
}
/* Variables that named removed forms (slower in every measurement, docs/PERFORMANCE.md): ZGPT_DECODE_LAYERS, the
 * decode step's layers as one persistent kernel (v0.21-v0.22: 1, 2, then 3 with a weight ring), and
 * ZGPT_DECODE_PREFETCH, v0.14's L2 prefetch branch (the next product's weights into L2 on a stream of their own), both
 * removed in v0.23; ZGPT_SDPA_CHUNK, the attention backward in chunks of batch rows (v0.31, removed in v0.33). 1 when
 * `name` is set to anything but "0" (zg_backend_cuda_create refuses it rather than ignore it), else 0. */
static inline int zgc_removed_env_set(const char *name) {
    const char *v = getenv(name);
    return v != NULL && *v != '\0' && strcmp(v, "0") != 0;
}

/* ZGPT_BGRAD (A/B runs): how a weight-gradient product takes its bias gradient (matmul_cuda.cu). Unset or "f32":
 * 1, cuBLASLt's BGRADB epilogue into an fp32 vector where the heuristic offers one, else the reduction kernels;
 * "bf16": 2, the epilogue's vector in the activation dtype; "off": 0, always the kernels. -1 for anything else:
 * zg_backend_cuda_create refuses it. Read per call (A/B runs in one process). */
static inline int zgc_bgrad_env(void) {
    const char *v = getenv("ZGPT_BGRAD");
    if (v == NULL || *v == '\0' || strcmp(v, "f32") == 0) return 1;
    if (strcmp(v, "bf16") == 0) return 2;
    return strcmp(v, "off") == 0 ? 0 : -1;
}
/* ZGPT_LN (A/B runs): which LayerNorm kernels run (layernorm.cuh derives each choice from this, read per call).
 * Unset or empty: ZGC_LN_DEFAULT (the row-group backward with the next row copied ahead, the warp forward);
 * "group": row groups in both directions, no copies ahead; "warp": the warp-per-row kernels. -1 for anything else
 * (also "deep", v0.37's two rows copied ahead: no faster, removed in v0.38; "ring", v0.40's forward with each warp's
 * next rows copied ahead: slower, removed; "team" and "team1", v0.41's backward with one vector a thread: slower
 * in the input form, removed): zg_backend_cuda_create refuses it. */
enum { ZGC_LN_DEFAULT = 0, ZGC_LN_GROUP = 1, ZGC_LN_WARP = 2 };
static inline int zgc_ln_mode(void) {
    const char *v = getenv("ZGPT_LN");
    if (v == NULL || *v == '\0') return ZGC_LN_DEFAULT;
    if (strcmp(v, "group") == 0) return ZGC_LN_GROUP;
    return strcmp(v, "warp") == 0 ? ZGC_LN_WARP : -1;
}

/* ZGPT_LN_SUMS (A/B runs): how layernorm_backward takes dsum_in / dsum_out (layernorm_backward_cuda.cu). Unset or
 * "fused": 1, in the row-group kernel as it reads and writes dinp; "separate": 0, a column-sum pass of their own
 * before and after the op (matmul_backward's bias gradient: v0.35's cost). -1 for anything else:
 * zg_backend_cuda_create refuses it. Read per call. */
static inline int zgc_ln_sums_env(void) {
    const char *v = getenv("ZGPT_LN_SUMS");
    if (v == NULL || *v == '\0' || strcmp(v, "fused") == 0) return 1;
    return strcmp(v, "separate") == 0 ? 0 : -1;
}
/* ZGPT_CLS_THREADS (A/B runs): the classifier's threads per row (classifier_cuda.cu): 0 when unset (its default),
 * else 256, 512 or 1024; -1 for anything else: zg_backend_cuda_create refuses it. Read per call. */
static inline int zgc_cls_threads_env(void) {
    const char *v = getenv("ZGPT_CLS_THREADS");
    if (v == NULL || *v == '\0') return 0;
    if (strcmp(v, "256") == 0 || strcmp(v, "512") == 0 || strcmp(v, "1024") == 0) return atoi(v);
    return -1;
}
/* ZGPT_SDPA_HEUR and ZGPT_SDPA_SKIP (A/B runs: the engine survey of attention_cudnn.cu). HEUR unset or "a": the
 * heuristics' mode A first, "b": mode B first. SKIP "fK", "bK" or both comma-separated (K decimal digits): skip
 * the first K usable engine configs of the forward (f) / backward (b) plan in the heuristics' order (so "f0" is
 * the heuristics' own first choice); a direction SKIP does not name gets *skip = -1, zgpt's default (its preferred
 * config where offered, attention_cudnn_graph.cu's k_sdpa_prefer). 0 with *mode_b and *skip set for the direction bwd,
 * -1 when either variable is malformed: zg_backend_cuda_create refuses it. Read when a plan is built. */
static inline int zgc_sdpa_env(int bwd, int *mode_b, int *skip) {
    const char *h = getenv("ZGPT_SDPA_HEUR"), *k = getenv("ZGPT_SDPA_SKIP");
    *mode_b = 0;
    *skip = -1;
    if (h != NULL && *h != '\0' && strcmp(h, "a") != 0) {
        if (strcmp(h, "b") != 0) return -1;
        *mode_b = 1;
    }
    if (k == NULL) return 0;
    while (*k != '\0') {
        char dir = *k++, *end;
        if ((dir != 'f' && dir != 'b') || *k < '0' || *k > '9') return -1;
        long n = strtol(k, &end, 10);
        if ((*end != '\0' && *end != ',') || (*end == ',' && end[1] == '\0') || n > 1000) return -1;
        if ((dir == 'b') == (bwd != 0)) *skip = (int)n;
        k = *end == ',' ? end + 1 : end;
    }
    return 0;
}

/* Programmatic dependent launch (PDL, sm_90+) for the decode step's own kernels: a kernel launched with
 * zgc_launch may start while the kernel before it in the stream is finishing. Each such kernel calls
 * zgc_pdl_wait() before it reads anything an earlier kernel wrote or writes anything an earlier kernel
 * reads (it returns once the previous grid has completed and its writes are visible; at once when the
 * kernel was launched without the attribute), and zgc_pdl_trigger() after that wait, so that at most
 * the running kernel and the next one are resident (the next may then start its own independent loads:
 * a product's weights). Every block of such a kernel waits, even one with no work (a grid must not
 * complete before its predecessor has). ZGPT_PDL=0 launches them as ordinary kernels (A/B runs; read per
 * launch). */
static inline bool zgc_pdl_on(const zgc_impl *im) {
    const char *v = getenv("ZGPT_PDL");
    return im->cc_major >= 9 && !(v != NULL && strcmp(v, "0") == 0);
}
__device__ __forceinline__ void zgc_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void zgc_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
/* the GPU's global nanosecond timer (the same clock on every SM) */
__device__ __forceinline__ unsigned long long zgc_globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
/* L2 prefetch of the 128-byte line holding p (no register written, nothing waited for). */
__device__ __forceinline__ void zgc_prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }
/* kern<<<grid, block, smem, the compute stream>>>(args...), with the PDL attribute when zgc_pdl_on and,
 * when cluster > 0, thread-block clusters of `cluster` blocks along x. */
template <typename... P, typename... A>
static void zgc_launch(zg_backend *be, void (*kern)(P...), dim3 grid, dim3 block, size_t smem, unsigned cluster,
                       A... args) {
    zgc_impl *im = zgc_get(be);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = im->stream;
    cudaLaunchAttribute attr[2];
    unsigned n = 0;
    if (zgc_pdl_on(im)) {
        attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[n].val.programmaticStreamSerializationAllowed = 1;
        n++;
    }
    if (cluster > 0) {
        attr[n].id = cudaLaunchAttributeClusterDimension;
        attr[n].val.clusterDim.x = cluster;
        attr[n].val.clusterDim.y = 1;
        attr[n].val.clusterDim.z = 1;
        n++;
    }
    cfg.attrs = attr;
    cfg.numAttrs = n;
    ZG_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kern, ((P)args)...));
}

/* attention_cuda.cu */
/* -1 with an error when the kernels were not compiled for sm_80+ */
int zgc_attention_check_arch(void);
size_t zgc_attention_stats_bytes(zg_backend *be, int B, int T, int NH);
void zgc_attention_forward(zg_backend *be, void *out, void *stats, const void *qkv, int B, int T, int C, int NH);
void zgc_attention_backward(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                            const void *stats, int B, int T, int C, int NH);
void zgc_attention_forward_cached(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, int B, int Tn,
                                  int pos, int maxT, int C, int NH);

/* attention_cudnn.cu: cuDNN's fused attention. Each returns 1 when cuDNN ran the op, 0 when the caller
 * must run its own kernels (not built with cuDNN, ZGPT_ATTENTION=own, fp32, an unsupported shape, or a
 * cuDNN failure, reported once). stats are natural-log statistics either way (attention_cuda.cu). */
int zgc_attention_cudnn_forward(zg_backend *be, void *out, float *stats, const void *qkv, int B, int T, int C, int NH);
int zgc_attention_cudnn_backward(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                 const float *stats, int B, int T, int C, int NH);
/* The bytes the backward would take of the model's loan at this shape (backend.h, scratch_lend_want); 0 where
 * cuDNN would not run it or would not borrow */
size_t zgc_attention_cudnn_lend_want(zg_backend *be, int B, int T, int C, int NH);
void zgc_attention_cudnn_destroy(zg_backend *be);
/* attention_dq_cuda.cu: dQ = alpha dS K from cuDNN's dS workspace (B,NH,T,T), over the causal half, in place of
 * cuDNN's dense product in the backward's graph. fits: the shapes it takes (bf16/fp16, T a multiple of the
 * block's rows, hs 64). node: the kernel node's parameters for B rows of heads (p->kernelParams points into a->args, which
 * the caller keeps until the node is set). compare: max |x - ref| and max |ref| over (rows, C) blocks whose rows
 * are ldx / ldr elements apart (a NaN difference gives inf); waits for the stream. */
typedef struct {
    void *dq;
    const void *ds, *k;
    int NH, T, C, BNH, group; /* BNH, group: set by node */
    float alpha;
    void *args[9];
} zgc_att_dq;
int zgc_att_dq_fits(zg_backend *be, int T, int C, int NH);
void zgc_att_dq_node(zg_backend *be, zgc_att_dq *a, int B, cudaKernelNodeParams *p);
void zgc_att_dq_compare(zg_backend *be, const void *x, size_t ldx, const void *ref, size_t ldr, int rows, int C,
                        float *maxdiff, float *maxref);
/* ZGPT_SDPA_DQ (A/B runs): 1 when unset or "own" (the dQ kernel above where it fits), 0 for "cudnn" (cuDNN's
 * own dense product), -1 otherwise (zg_backend_cuda_create refuses it). Read per call. */
static inline int zgc_sdpa_dq_env(void) {
    const char *v = getenv("ZGPT_SDPA_DQ");
    if (v == NULL || *v == '\0' || strcmp(v, "own") == 0) return 1;
    return strcmp(v, "cudnn") == 0 ? 0 : -1;
}
/* decode_cuda.cu (decode-step ops) and sample_cuda.cu */
void zgc_encoder_forward_at(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                            const int32_t *pos, int B, int C);
void zgc_attention_decode(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, const int32_t *pos,
                          int B, int maxT, int C, int NH);
void zgc_decode_advance(zg_backend *be, int32_t *seq, int32_t *tokens, int32_t *pos, const int32_t *ids,
                        const int32_t *plen, int B, int maxT);
void zgc_sample(zg_backend *be, int32_t *ids, const void *logits, const zg_sample_row *rows, const int32_t *counter,
                int B, int V, int Vp);

/* encoder_cuda.cu */
void zgc_encoder_forward(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe, int B,
                         int T, int C);
void zgc_encoder_backward(zg_backend *be, void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B, int T,
                          int C);
/* layernorm_cuda.cu, layernorm_backward_cuda.cu */
void zgc_layernorm_forward(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                           const void *b, int N, int C);
void zgc_layernorm_backward(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *x,
                            const void *y, const void *w, const void *b, const float *mean, const float *rstd, int N,
                            int C, void *dsum_in, void *dsum_out);
/* classifier_cuda.cu */
void zgc_classifier(zg_backend *be, float *losses, void *logits, const int32_t *targets, int N, int V, int Vp,
                    float dloss);
/* optimizer_cuda.cu */
double zgc_sum_squares(zg_backend *be, const void *buf, zg_dtype dt, size_t n);
void zgc_scale(zg_backend *be, void *buf, zg_dtype dt, size_t n, float s);
void zgc_adamw(zg_backend *be, const zg_adamw_args *a);
void zgc_lamb_sums(zg_backend *be, const zg_adamw_args *a, double *sums);

/* ---- device-side dtype helpers ---------------------------------------------------------------- */
__device__ __forceinline__ float zgc_to_f(float x) { return x; }
__device__ __forceinline__ float zgc_to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float zgc_to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T zgc_from_f(float x);
template <> __device__ __forceinline__ float zgc_from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 zgc_from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half zgc_from_f<__half>(float x) { return __float2half_rn(x); }

/* Calls FN<T>(...) with T the C++ type of dtype dt. */
#define ZGC_DISPATCH(dt, T, ...)                                                                                       \
    do {                                                                                                               \
        switch (dt) {                                                                                                  \
        case ZG_F32: {                                                                                                 \
            typedef float T;                                                                                           \
            __VA_ARGS__;                                                                                               \
        } break;                                                                                                       \
        case ZG_BF16: {                                                                                                \
            typedef __nv_bfloat16 T;                                                                                   \
            __VA_ARGS__;                                                                                               \
        } break;                                                                                                       \
        case ZG_F16: {                                                                                                 \
            typedef __half T;                                                                                          \
            __VA_ARGS__;                                                                                               \
        } break;                                                                                                       \
        default: zg_fatal_at(__FILE__, __LINE__, "unknown dtype %d", (int)(dt));                                       \
        }                                                                                                              \
    } while (0)

/* GELU, tanh form (GPT-2's) */
__device__ __forceinline__ float zgc_gelu(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float zgc_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float zgc_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* sm_80+ instructions (mma.sync bf16, ldmatrix, cp.async) compile to a trap in a device pass for an older
 * architecture; zgc_attention_check_arch() refuses to create the backend from such a build. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define ZGC_SM80_ONLY(stmt) __trap()
#else
#define ZGC_SM80_ONLY(stmt) stmt
#endif
/* cp.async: 16 bytes global -> shared without passing through registers; commit closes a group, wait<N>
 * returns when at most N of this thread's groups are still in flight (their data then visible to it).
 * The copy and the wait clobber "memory": the compiler must not move shared-memory reads of the
 * destination above the wait, nor assume the destination unchanged across the copy (a thread may read
 * back its own copies with no __syncthreads in between). */
__device__ __forceinline__ void zgc_cp_async16(void *smem, const void *gmem) {
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(smem);
    ZGC_SM80_ONLY(asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory"));
}
/* 4 bytes (both addresses 4-byte aligned), through L1 (.ca: the only form of a 4-byte copy) */
__device__ __forceinline__ void zgc_cp_async4(void *smem, const void *gmem) {
    uint32_t dst = (uint32_t)__cvta_generic_to_shared(smem);
    ZGC_SM80_ONLY(asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(gmem) : "memory"));
}
__device__ __forceinline__ void zgc_cp_commit() { ZGC_SM80_ONLY(asm volatile("cp.async.commit_group;\n" ::)); }
template <int N> __device__ __forceinline__ void zgc_cp_wait() {
    ZGC_SM80_ONLY(asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"));
}
/* mma.sync m16n8k16 with fp32 accumulation (the attention kernels, the few-row product): c += a b;
 * pack rounds two floats into one register of the 16-bit type. */
template <typename T> struct zgc_mma;
template <> struct zgc_mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        ZGC_SM80_ONLY(
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                         "{%0,%1,%2,%3};\n"
                         : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
};
template <> struct zgc_mma<__half> {
    static __device__ __forceinline__ void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        ZGC_SM80_ONLY(
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                         "{%0,%1,%2,%3};\n"
                         : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1)));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
};

/* 16-byte vector of T */
template <typename T> struct alignas(16) zgc_vec { T v[16 / sizeof(T)]; };

/* Kernels templated on two of the dtypes (parameters, activations, gradients): the backend keeps all
 * three in one dtype (zg_backend_cuda_create), so only those three instantiations exist (no mixed ones
 * that nothing runs). T1 and T2 name the same type. */
#define ZGC_DISPATCH_ALL(dt, T1, T2, ...)                                                                              \
    ZGC_DISPATCH(dt, T1, {                                                                                             \
        typedef T1 T2;                                                                                                 \
        __VA_ARGS__;                                                                                                   \
    })

static inline size_t zgc_dtype_bytes(zg_dtype dt) { return dt == ZG_F32 ? 4 : 2; }

static inline unsigned zgc_blocks(size_t n, unsigned threads, unsigned max_blocks) {
    size_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > max_blocks) b = max_blocks;
    return (unsigned)b;
}

#endif
