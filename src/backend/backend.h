/* The backend op table: every operation the GPT-2 model needs, implemented once for the CPU
 * (src/backend/cpu) and once for CUDA (src/backend/cuda). The model (src/model/gpt2.c) calls only
 * these, so there is one model code path for every backend.
 *
 * Conventions
 *  - Pointers are backend memory (host memory for the CPU, device memory for CUDA) unless named
 *    *_host. Token ids are int32.
 *  - Parameters are in be->param_dtype, activations in be->act_dtype, parameter gradients in
 *    be->grad_dtype. LayerNorm statistics and attention statistics are fp32.
 *  - Shapes in comments: B batch, T sequence, C channels, NH heads, hs = C/NH, OC output channels,
 *    N = B*T rows, V vocabulary, Vp padded vocabulary.
 *  - Weights are stored (OC, C) row-major (PyTorch Linear layout): out = inp @ W^T + bias.
 *  - Parameter-gradient outputs (dw, db, dwte, dwpe) ACCUMULATE (+=): gradients add up over
 *    micro-steps until the optimizer step. Activation-gradient outputs OVERWRITE (=), except
 *    layernorm_backward's dinp, which accumulates into the residual-stream gradient.
 *  - Ops are asynchronous on CUDA (one compute stream); anything that returns a host value
 *    synchronizes.
 *  - Token and target arrays (tokens, targets) are backend memory (upload them first).
 *  - Inputs and outputs of one call never alias unless the op says so (classifier works in place).
 */
#ifndef ZG_BACKEND_BACKEND_H
#define ZG_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ZG_F32 = 0, ZG_BF16 = 1, ZG_F16 = 2 } zg_dtype;
size_t zg_dtype_size(zg_dtype dt);
const char *zg_dtype_name(zg_dtype dt);
/* "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16" -> dtype; -1 with an error otherwise. */
int zg_dtype_parse(const char *s, zg_dtype *out);

/* fp32 <-> bf16 / fp16 scalar conversions (round to nearest even; NaN stays NaN). */
uint16_t zg_f32_to_bf16(float f);
float zg_bf16_to_f32(uint16_t h);
uint16_t zg_f32_to_f16(float f);
float zg_f16_to_f32(uint16_t h);

typedef struct zg_backend zg_backend;
/* A point in one of the backend's streams (event_* ops below). */
typedef struct zg_event zg_event;
/* The backend's streams: every op runs on the compute stream; copy_async runs on the copy stream, so
 * that host transfers (checkpoint snapshots, ZeRO-Offload) overlap compute. */
typedef enum { ZG_STREAM_COMPUTE = 0, ZG_STREAM_COPY = 1 } zg_stream;
typedef enum { ZG_COPY_D2H = 0, ZG_COPY_H2D = 1 } zg_copy_dir;

/* One contiguous range of a flat buffer and the weight decay applied to it. */
typedef struct {
    size_t offset; /* elements, relative to the buffers passed with it */
    size_t count;
    float weight_decay;
} zg_segment;

/* An Adam-family step (AdamW, or DeepSpeed's Lamb) over several segments of flat buffers, in one call.
 * Lamb (DeepSpeed's FusedLamb): per segment (the optimizer gives one segment per tensor),
 *   m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,  u = m / (sqrt(v) + eps) + wd p   (sqrt(v + eps) with
 *   eps_inside_sqrt),  c = clamp(||p|| / ||u||, min_coeff, max_coeff) (1 when either norm is 0),
 *   p -= lr * sqrt(1 - b2^step) / (1 - b1^step) * c * u   (lr alone without bias correction). */
typedef struct {
    void *param;      /* low-precision parameters (param_dtype); == master when params are fp32 */
    float *master;    /* fp32 master weights, or NULL when param is already fp32 */
    const void *grad; /* gradients (grad_dtype) */
    float *m, *v;     /* fp32 Adam moments */
    const zg_segment *segs;
    int n_segs;
    float lr, beta1, beta2, eps;
    int step;                   /* 1-based, for bias correction */
    float grad_scale;           /* multiply gradients by this first (1/loss_scale * clip coefficient) */
    int seg_begin, seg_end;     /* update only segments [seg_begin, seg_end) of segs (seg_end 0: all of them);
                             * the table stays whole so that a device backend can keep its copy */
    int no_bias_correction;     /* DeepSpeed's bias_correction false: 1 - beta^step taken as 1 */
    int lamb;                   /* Lamb instead of AdamW (above) */
    int eps_inside_sqrt;        /* Lamb */
    float max_coeff, min_coeff; /* Lamb: the trust ratio's clamp */
    /* Lamb, else NULL: 2 per segment of segs (host memory, on every backend), the sums of p^2 and u^2 of
     * the segment's whole tensor when its first pass already ran (lamb_sums / zg_host_lamb_sums over a
     * ZeRO shard's cut tensors, the sums then added across ranks): the step applies them and only the
     * second pass runs there; negative: not given */
    const double *lamb_sums;
} zg_adamw_args;

/* One row's settings for the sample op (backend memory, one per row; see backend/sample_math.h for the
 * exact definition the backends share). */
typedef struct {
    float inv_temperature; /* 1 / temperature; 0 = greedy (the most likely token, ties by the lower id) */
    int32_t top_k;         /* keep the k most likely (0 = all) */
    float top_p;           /* then the fewest most likely whose probability reaches top_p, in (0, 1] */
    uint32_t reserved;     /* 0 */
    uint64_t seed;         /* the row's generator key */
} zg_sample_row;

/* A recorded sequence of ops on the compute stream (a CUDA graph), replayed with graph_launch. */
typedef struct zg_graph zg_graph;

/* The CPU backend's AdamW / Lamb (src/backend/cpu/optim_cpu.c) over host memory, without a backend: the
 * ZeRO-Offload step runs it on the rank's shard (params in param_dtype, grads in grad_dtype, master,
 * m and v all in host memory). OpenMP over the segments' elements, AVX-512 / AVX2 picked at run time.
 * AdamW uses the CUDA kernel's fp32 formula and order of operations. */
void zg_host_adamw(const zg_adamw_args *a, zg_dtype param_dtype, zg_dtype grad_dtype);
/* Lamb's first pass alone on the host over segments [seg_begin, seg_end) of a: the moments updated and, per
 * segment, the sums of p^2 and u^2 into sums[2 i], sums[2 i + 1] (i from 0). A later zg_host_adamw given
 * the tensors' total sums in lamb_sums applies the second pass to those segments. */
void zg_host_lamb_sums(const zg_adamw_args *a, zg_dtype param_dtype, zg_dtype grad_dtype, double *sums);
/* The CPU backend's dtype conversion over host memory (n elements; OpenMP). */
void zg_host_cast(void *dst, zg_dtype dst_dt, const void *src, zg_dtype src_dt, size_t n);
/* x[i] rounded to bf16 (bf16 != 0) or fp16 and back, in place, on the calling thread, with the host
 * AdamW's SIMD conversions (bit-identical to zg_f32_to_bf16 / zg_f32_to_f16 and back, picked by the CPU):
 * the parameters that fp32 master weights determine, for their checksums. */
void zg_host_round16(float *x, size_t n, int bf16);

typedef struct {
    const char *name; /* "cpu", "cuda" */
    void (*destroy)(zg_backend *be);

    /* memory; alloc returns NULL with a zg_errorf() message naming `what` and the memory in use */
    void *(*alloc)(zg_backend *be, size_t bytes, const char *what);
    void (*dealloc)(zg_backend *be, void *p);
    void (*upload)(zg_backend *be, void *dst, const void *src_host, size_t bytes);
    void (*download)(zg_backend *be, void *dst_host, const void *src, size_t bytes);
    void (*copy)(zg_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(zg_backend *be, void *p, size_t bytes);
    void (*synchronize)(zg_backend *be);
    /* Host staging memory: `bytes` of host memory, page-locked when `pinned` and the backend can (CUDA;
     * the CPU backend's is plain memory), its pages touched so that first use does not fault; NULL with
     * an error naming `what`. 64-byte aligned. Counted in host_bytes_in_use / host_bytes_peak, apart from
     * the backend memory above. host_free takes NULL. host_alloc may run on a thread other than the
     * one that drives the backend (the checkpoint snapshot's reservation); host_free runs on that one. */
    void *(*host_alloc)(zg_backend *be, size_t bytes, int pinned, const char *what);
    void (*host_free)(zg_backend *be, void *p);
    /* Takes a block that zg_host_pages_map(bytes + ZG_HOST_HEADER) returned (filled, or being filled by
     * another thread: the pages are resident) as host staging memory of `bytes`: page-locked where
     * host_alloc(pinned) would be (CUDA registers it; a failed registration leaves it pageable, said once),
     * counted, and released by host_free. Returns the caller's pointer, base + ZG_HOST_HEADER (the block
     * header goes in the first ZG_HOST_HEADER bytes, which must not be in use). Why: a resume reads its
     * checkpoint into such a block before the backend exists (src/train/ckpt_prefetch.c). Any thread. */
    void *(*host_adopt)(zg_backend *be, void *base, size_t bytes, const char *what);
    /* Lends backend memory that the caller leaves alone until it ends the loan (scratch_lend(be, NULL,
     * 0)): ops queued on the compute stream meanwhile may use it as their workspace instead of holding
     * one of their own. Why: cuDNN's deterministic attention backward needs B*NH*T^2 elements of
     * workspace (803 MiB at GPT-2 XL B=16), and the model's logits buffer (B*T*Vp, twice that there)
     * is dead from the LM head's backward to the next forward, so the model lends it for the layers'
     * backward (gpt2_backward; all but its end, which holds the backward's activation gradients, 6*B*T*C
     * elements) and the step's peak does not grow. NULL: the backend needs none (CPU). */
    void (*scratch_lend)(zg_backend *be, void *p, size_t bytes);
    /* The bytes the layers' backward would use of a loan at this shape (B, T, C channels, NH heads; 0: none),
     * so that a model whose logits' region shrinks (an LM head in row chunks: gpt2_head_rows) keeps that much
     * to lend. May build what the backward will use (cuDNN's plan). NULL: 0. */
    size_t (*scratch_lend_want)(zg_backend *be, int B, int T, int C, int NH);
    /* dst <- src (bytes) on the copy stream. ZG_COPY_D2H: dst is host memory (from host_alloc(pinned)
     * for a copy that overlaps compute), src backend memory; ZG_COPY_H2D the reverse. Not ordered with
     * the compute stream: record an event on one stream and make the other wait for it. */
    void (*copy_async)(zg_backend *be, void *dst, const void *src, size_t bytes, zg_copy_dir dir);
    /* Events. record: the point after the work queued so far on stream s. stream_wait: work queued on s
     * from now on starts after ev's point. event_synchronize blocks the host until ev's point is reached;
     * event_query returns 1 when it is, 0 when not yet. An event never recorded counts as reached. On the
     * CPU every op has finished when it returns, so events are always reached. */
    zg_event *(*event_create)(zg_backend *be);
    void (*event_destroy)(zg_backend *be, zg_event *ev);
    void (*event_record)(zg_backend *be, zg_event *ev, zg_stream s);
    void (*stream_wait)(zg_backend *be, zg_stream s, zg_event *ev);
    void (*event_synchronize)(zg_backend *be, zg_event *ev);
    int (*event_query)(zg_backend *be, zg_event *ev);
    /* fp32 host <-> any dtype in backend memory, n elements */
    void (*upload_f32)(zg_backend *be, void *dst, zg_dtype dt, const float *src_host, size_t n);
    void (*download_f32)(zg_backend *be, float *dst_host, const void *src, zg_dtype dt, size_t n);
    void (*cast)(zg_backend *be, void *dst, zg_dtype dst_dt, const void *src, zg_dtype src_dt, size_t n);

    /* out (B,T,C) = wte[tokens] + wpe[t] */
    void (*encoder_forward)(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe, int B,
                            int T, int C);
    /* dwte (Vp,C) += scatter(dout), dwpe (maxT,C) += sum over batch of dout */
    void (*encoder_backward)(zg_backend *be, void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B,
                             int T, int C);
    /* out (N,C) = (inp - mean) * rstd * w + b; mean, rstd (N) fp32, may be NULL (not written: inference) */
    void (*layernorm_forward)(zg_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                              const void *b, int N, int C);
    /* dinp (N,C) += ..., dw (C) += ..., db (C) += ...  From the forward's input x (N,C) with mean and
     * rstd; or, with x == NULL, from the forward's output y (N,C) with the bias b and rstd (mean unused,
     * may be NULL): xhat = (y - b) / w, so the model need not keep the LayerNorm's input (Apex/Megatron's
     * memory-efficient LayerNorm). A weight of exactly 0 gives its column xhat = 0 (the input is not
     * recoverable there).
     * dsum_in (C) += column sums of dinp as given, dsum_out (C) += column sums of dinp as this op leaves it
     * (grad_dtype; either may be NULL): GPT-2's two projections' bias gradients, the sums of the residual-stream
     * gradient before and after LN2's backward, taken in the pass that reads and writes those rows anyway
     * (else a pass of their own over (N,C) each: matmul_backward's dbias). */
    void (*layernorm_backward)(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *x,
                               const void *y, const void *w, const void *b, const float *mean, const float *rstd, int N,
                               int C, void *dsum_in, void *dsum_out);
    /* (every backend's layernorm_backward first calls zg_layernorm_backward_check) */
    /* out (N,OC) = inp (N,C) @ w (OC,C)^T + bias (OC, may be NULL) + residual (N,OC, act_dtype, may
     * be NULL): the residual add of a transformer block fused into the product's epilogue. residual
     * may be out itself (in place) but must not otherwise overlap it; the model passes a separate
     * buffer. If pre_gelu is non-NULL, the product+bias is stored in pre_gelu (N,OC) and
     * out = gelu_tanh(pre_gelu). pre_gelu and residual together are not supported (fatal). */
    void (*matmul_forward)(zg_backend *be, void *out, void *pre_gelu, const void *inp, const void *w, const void *bias,
                           const void *residual, int N, int C, int OC);
    /* out (N,OC) = layernorm(inp; lnw, lnb) @ w (OC,C)^T + bias, pre_gelu as matmul_forward's: the
     * same as layernorm_forward into ln (N,C) then matmul_forward from ln (what zg_layernorm_matmul_compose
     * does), so that a backend may fuse the two for a few rows (a decode step). ln's contents are undefined
     * afterwards (a fused form does not write it). */
    void (*layernorm_matmul_forward)(zg_backend *be, void *out, void *pre_gelu, void *ln, const void *inp,
                                     const void *lnw, const void *lnb, const void *w, const void *bias, int N, int C,
                                     int OC);
    /* dinp (N,C) = dout @ w (may be NULL: skip); dw (OC,C) += dout^T @ inp (may be NULL: skip, and inp
     * is not read), or with dw_overwrite dw = dout^T @ inp (for a dw known to hold zeros: the same values,
     * and the product need not read it); dbias (OC) += sum(dout) (may be NULL). If gelu_inp (N,C) is
     * non-NULL, dinp is then multiplied by gelu'(gelu_inp) (the input of this matmul was gelu(gelu_inp)).
     * Each product is the same whether the other is asked for in the same call or not (the LM head asks
     * for them in two). */
    void (*matmul_backward)(zg_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                            const void *w, const void *gelu_inp, int N, int C, int OC, int dw_overwrite);
    /* out = gelu_tanh(inp), n elements (used when activations are recomputed) */
    void (*gelu_forward)(zg_backend *be, void *out, const void *inp, size_t n);
    /* out = a + b, n elements; out may be a or b (ZeRO accumulates a gradient shard in place; the
     * model fuses its residual adds into matmul_forward) */
    void (*residual_forward)(zg_backend *be, void *out, const void *a, const void *b, size_t n);

    /* Causal self-attention, scaled by 1/sqrt(hs). qkv (B,T,3C): row = [q (NH,hs) | k (NH,hs) | v (NH,hs)];
     * out (B,T,C) with head h in columns [h*hs, (h+1)*hs).
     * stats: backend-defined saved state for backward, attention_stats_bytes() bytes (the CPU keeps
     * the probabilities (B,NH,T,T); CUDA keeps only per-row softmax statistics (B,NH,T)). */
    size_t (*attention_stats_bytes)(zg_backend *be, int B, int T, int NH);
    void (*attention_forward)(zg_backend *be, void *out, void *stats, const void *qkv, int B, int T, int C, int NH);
    /* dqkv (B,T,3C) = ... (overwrite) */
    void (*attention_backward)(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                               const void *stats, int B, int T, int C, int NH);
    /* Incremental decoding with a KV cache (sampling). qkv (B,Tn,3C) holds the Tn new positions
     * pos..pos+Tn-1; their k, v are written into kcache/vcache (B,NH,maxT,hs) (act_dtype) and
     * out (B,Tn,C) attends causally over positions 0..pos+Tn-1 (new position i sees 0..pos+i). */
    void (*attention_forward_cached)(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, int B,
                                     int Tn, int pos, int maxT, int C, int NH);

    /* Decoding one new position per row with the position in backend memory, so that a recorded
     * decode step (graph_*) replays at the next position. pos is int32[2]: pos[0] the position of the
     * rows' current tokens, pos[1] = pos[0] + 1 (the sample op's counter).
     * encoder_forward_at: out (B,C) = wte[tokens[b]] + wpe[pos[0]]. */
    void (*encoder_forward_at)(zg_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                               const int32_t *pos, int B, int C);
    /* attention_decode: attention_forward_cached with Tn = 1 at position pos[0]: the k, v of qkv (B,3C)
     * go into the caches (B,NH,maxT,hs) at pos[0], out (B,C) attends over positions 0..pos[0]. */
    void (*attention_decode)(zg_backend *be, void *out, const void *qkv, void *kcache, void *vcache, const int32_t *pos,
                             int B, int maxT, int C, int NH);
    /* Next token of every row: ids (B) int32 drawn from logits (B,Vp) (act_dtype, first V columns)
     * with rows[b]'s settings and generator counter *counter (backend memory). No logits leave the
     * backend; the same (logits, rows, counter) give the same ids on every backend. */
    void (*sample)(zg_backend *be, int32_t *ids, const void *logits, const zg_sample_row *rows, const int32_t *counter,
                   int B, int V, int Vp);
    /* decode_advance: t = pos[0] + 1; for each row b, seq (B,maxT) keeps its prompt token at t when
     * t < plen[b], else takes ids[b]; tokens[b] = seq[b][t]; then pos = {t, t + 1}. Rows of different
     * prompt lengths thus run in one batch at one position (a row's prompt overrides its draws). */
    void (*decode_advance)(zg_backend *be, int32_t *seq, int32_t *tokens, int32_t *pos, const int32_t *ids,
                           const int32_t *plen, int B, int maxT);
    /* Recording: graph_begin starts recording the ops issued on the compute stream (they do not run);
     * graph_end stops and returns the recording, or NULL with an error when it failed (the ops issued
     * meanwhile did not run: issue them again directly). graph_launch runs a recording (asynchronous,
     * as the ops); graph_destroy frees one (NULL is fine). All four NULL: the backend cannot record
     * (the CPU runs every op as it is called). */
    int (*graph_begin)(zg_backend *be);
    zg_graph *(*graph_end)(zg_backend *be);
    void (*graph_launch)(zg_backend *be, zg_graph *g);
    void (*graph_destroy)(zg_backend *be, zg_graph *g);

    /* Fused classifier. logits (N,Vp) in act_dtype. Writes losses[i] = -log softmax(logits[i])[targets[i]]
     * (fp32, may be NULL) over the first V columns only; if dloss != 0, overwrites logits with
     * d(loss)/d(logits) * dloss (padded columns get 0). targets[i] < 0 means "ignore" (loss 0, grad 0). */
    void (*classifier)(zg_backend *be, float *losses, void *logits, const int32_t *targets, int N, int V, int Vp,
                       float dloss);

    /* Sum of squares of n gradient elements (returns to the host: synchronizes). Non-finite if any
     * element is inf/nan, which is how fp16 overflow is detected. */
    double (*sum_squares)(zg_backend *be, const void *buf, zg_dtype dt, size_t n);
    void (*scale)(zg_backend *be, void *buf, zg_dtype dt, size_t n, float s);
    /* AdamW (decoupled, as torch.optim.AdamW), per element of each segment, g = grad * grad_scale:
     *   p -= lr * wd * p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
     *   p -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps)
     * on master (fp32) when it is non-NULL, then param = cast(master); else on param (fp32). */
    void (*adamw)(zg_backend *be, const zg_adamw_args *args);
    /* Lamb's first pass alone over segments [seg_begin, seg_end) of args (the moments updated), and per
     * segment the sums of p^2 and u^2 into the host array sums[2 i], sums[2 i + 1] (i from 0), there when
     * it returns: a ZeRO shard's cut tensors, whose sums are added across the ranks before adamw applies
     * them (args->lamb_sums). As zg_host_lamb_sums over backend memory. */
    void (*lamb_sums)(zg_backend *be, const zg_adamw_args *args, double *sums);
} zg_backend_ops;

struct zg_backend {
    const zg_backend_ops *ops;
    zg_dtype param_dtype, act_dtype, grad_dtype;
    int device;              /* -1 for the CPU, else the CUDA device index */
    size_t device_mem_total; /* the device's memory in bytes (0 for the CPU backend) */
    size_t bytes_in_use;     /* backend memory currently allocated through ops->alloc */
    size_t bytes_peak;
    size_t host_bytes_in_use; /* host_alloc memory currently held */
    size_t host_bytes_peak;
    /* device buffers freed so far (by dealloc or inside the backend, a workspace that grows): an address
     * recorded before (a graph's) may be stale once this moves */
    uint64_t frees;
    void *impl; /* backend-private state */
};

typedef struct {
    const char *device; /* "cpu", "cuda", or "auto" (cuda when a GPU is present) */
    int device_index;   /* CUDA device, -1 = default */
    zg_dtype precision; /* param/activation/grad dtype: fp32 on the CPU; bf16 / fp16 / fp32 on CUDA */
} zg_backend_config;

/* Creates the backend named by cfg->device. -1 with an error when it is not compiled in, no GPU is
 * present for "cuda", or the precision is not supported by that backend. */
int zg_backend_create(zg_backend **out, const zg_backend_config *cfg);
/* layernorm_backward's arguments for the form it was given (fatal with a message otherwise): the
 * input form (x) needs mean, the output form (x NULL) needs y and b. */
void zg_layernorm_backward_check(const void *x, const void *y, const void *b, const float *mean);
/* layernorm_matmul_forward as its two ops (the CPU's, and CUDA's beyond its fused form). */
void zg_layernorm_matmul_compose(zg_backend *be, void *out, void *pre_gelu, void *ln, const void *inp, const void *lnw,
                                 const void *lnb, const void *w, const void *bias, int N, int C, int OC);
void zg_backend_destroy(zg_backend *be);
/* Shared by the backends' host_alloc/host_free: each block starts with a 64-byte header holding its size
 * and how it was allocated (`pinned`: 0 plain memory, else the backend's own kind of pinned block, e.g.
 * CUDA's cudaHostAlloc or a registered mapping); the caller's pointer follows it (64-byte aligned when
 * the base is). The counts in be->host_bytes_* are updated atomically: any thread may allocate. */
#define ZG_HOST_HEADER 64
void *zg_host_block_wrap(zg_backend *be, void *base, size_t bytes, int pinned);
/* The block's base; *pinned its kind, *bytes (may be NULL) the size given to wrap. */
void *zg_host_block_unwrap(zg_backend *be, void *p, int *pinned, size_t *bytes);
/* 1 when the CUDA backend is compiled in and a GPU is visible. */
int zg_backend_cuda_available(void);

/* Backend constructors (src/backend/cpu/backend_cpu.c, src/backend/cuda/backend_cuda.cu). */
int zg_backend_cpu_create(zg_backend **out, const zg_backend_config *cfg);
#ifdef ZGPT_WITH_CUDA
int zg_backend_cuda_create(zg_backend **out, const zg_backend_config *cfg);
int zg_backend_cuda_device_count(void);
#endif

#endif
