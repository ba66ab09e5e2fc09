/* GPT-2 (exactly Hugging Face's GPT2LMHeadModel) over the backend op table.
 *
 * Parameters live in ONE flat buffer (model->params) and gradients in another of the same layout
 * (model->grads); a data-parallel engine may instead place each group (embeddings, one layer, ln_f)
 * elsewhere through model->param_group / grad_group (see gpt2_group_count). The parameter table (gpt2_param_table) is the single source of truth for names,
 * shapes and offsets. Layout, in order (documented in docs/FORMATS.md):
 *   wte (Vp, C), wpe (block_size, C),
 *   for each layer l: ln_1.weight (C), ln_1.bias (C), attn.c_attn.weight (3C, C), attn.c_attn.bias (3C),
 *                     attn.c_proj.weight (C, C), attn.c_proj.bias (C), ln_2.weight (C), ln_2.bias (C),
 *                     mlp.c_fc.weight (4C, C), mlp.c_fc.bias (4C), mlp.c_proj.weight (C, 4C), mlp.c_proj.bias (C),
 *   ln_f.weight (C), ln_f.bias (C).
 * Names follow HF without the "transformer." prefix ("h.3.attn.c_attn.weight"). Linear weights are
 * stored (out, in); HF's Conv1D stores (in, out), so import/export transpose them.
 * Layer-major order keeps each layer contiguous, so ZeRO can shard, gather (stage 3) and reduce
 * (stage 2, as backward completes each layer, last layer first) whole layers as ranges.
 */
#ifndef ZG_MODEL_GPT2_H
#define ZG_MODEL_GPT2_H

#include "backend/backend.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n_layer, n_head, n_embd;
    int block_size;        /* max sequence length (n_positions) */
    int vocab_size;        /* 50257 */
    int padded_vocab_size; /* vocab_size rounded up to a multiple of 128 (50304) */
} gpt2_config;

/* The released GPT-2 models zgpt knows by name (the one table of them): their shapes (block 1024, vocabulary 50257)
 * and Hugging Face repos, the current id and the id older caches hold it under. */
typedef struct {
    const char *name, *repo, *old_repo;
    int n_layer, n_head, n_embd;
} gpt2_named_model;
/* The named model `name`, or NULL. */
const gpt2_named_model *gpt2_named_find(const char *name);
/* The named model of this depth and width (a file without config.json), or NULL. */
const gpt2_named_model *gpt2_named_by_shape(int n_layer, int n_embd);
/* The names for messages, into buf: "gpt2, gpt2-medium, ..." (buf returned). */
#define GPT2_NAMED_LIST_CAP 128
const char *gpt2_named_list(char *buf, size_t cap);
/* A named model -> config; -1 with an error listing the names. */
int gpt2_config_by_name(const char *name, gpt2_config *cfg);
/* Checks ranges and divisibility (n_embd % n_head), fills padded_vocab_size. */
int gpt2_config_validate(gpt2_config *cfg);

typedef struct {
    char name[64]; /* "wte", "h.0.ln_1.weight", ... */
    size_t offset; /* elements from the start of the flat buffer */
    size_t numel;
    int ndim;
    int shape[2];
    int layer; /* -1 for embeddings and ln_f */
    int decay; /* 1: weight decay applies (2-D matrices except wpe), 0: biases, LayerNorm, wpe */
} gpt2_tensor;

typedef struct {
    gpt2_tensor *tensors;
    int n_tensors;
    size_t num_params;   /* total elements of the flat buffer */
    size_t *layer_begin; /* n_layer + 1 offsets: layer l spans [layer_begin[l], layer_begin[l+1]) */
    int n_layer;
} gpt2_param_table;

/* Tensor indices of the table: the two embeddings, GPT2_LAYER_TENSORS per layer in the order
 * gpt2_param_table_init adds them (ln_1 w/b, c_attn w/b, attn c_proj w/b, ln_2 w/b, c_fc w/b,
 * mlp c_proj w/b), then the final LayerNorm's weight and bias. */
enum { GPT2_T_WTE = 0, GPT2_T_WPE = 1, GPT2_T_FIRST_LAYER = 2, GPT2_LAYER_TENSORS = 12 };
static inline int gpt2_tensor_of_layer(int l) { return GPT2_T_FIRST_LAYER + GPT2_LAYER_TENSORS * l; }
static inline int gpt2_tensor_lnf_w(const gpt2_param_table *t) { return t->n_tensors - 2; }
static inline int gpt2_tensor_lnf_b(const gpt2_param_table *t) { return t->n_tensors - 1; }

/* Parameter groups: the contiguous pieces a data-parallel engine moves as a whole.
 *   group 0           embeddings (wte, wpe)  [0, layer_begin[0])
 *   group 1 + l       layer l                [layer_begin[l], layer_begin[l+1])
 *   group n_layer + 1 ln_f                   [layer_begin[n_layer], num_params)
 * n_layer + 2 groups. The model addresses every tensor as (base of its group) + (offset - group start),
 * so an engine can place each group's parameters or gradients in a buffer of its own (ZeRO stage 2's
 * gradient buckets, stage 3's gathered layers) while the layout and the offsets stay the same. */
int gpt2_group_count(const gpt2_param_table *t);
int gpt2_group_of_tensor(const gpt2_param_table *t, int tensor);
void gpt2_group_range(const gpt2_param_table *t, int group, size_t *lo, size_t *hi);

int gpt2_param_table_init(gpt2_param_table *t, const gpt2_config *cfg);
void gpt2_param_table_free(gpt2_param_table *t);
const gpt2_tensor *gpt2_param_table_find(const gpt2_param_table *t, const char *name);
/* Parameters counted without the vocabulary padding (124,439,808 for gpt2). */
size_t gpt2_param_count_unpadded(const gpt2_config *cfg);

/* Weight-decay segments of the flat buffer: consecutive tensors with the same decay flag are merged;
 * decayed ones get weight_decay, the others 0. Returns the count (*out is zg_malloc'ed). */
int gpt2_param_segments(const gpt2_param_table *t, float weight_decay, zg_segment **out);

/* Per-op timing. When model->profile is non-NULL, every backend op the model issues is bracketed by
 * be->ops->synchronize() and a monotonic clock, and its milliseconds are added to
 * ms[pass][op] (pass 0 forward, 1 backward). Profiling serialises the backend, so use it to see
 * the split, not for the headline tokens/s. */
typedef enum {
    GPT2_OP_ENCODER = 0,
    GPT2_OP_LAYERNORM,
    GPT2_OP_MATMUL,
    GPT2_OP_ATTENTION,
    GPT2_OP_GELU,
    GPT2_OP_RESIDUAL,
    GPT2_OP_CLASSIFIER,
    GPT2_OP_TRANSFER, /* uploads/downloads of tokens, targets, losses */
    GPT2_OP_COUNT
} gpt2_op;
typedef struct {
    double ms[2][GPT2_OP_COUNT];
    long calls[2][GPT2_OP_COUNT];
} gpt2_profile;
const char *gpt2_op_name(gpt2_op op); /* "encoder", "layernorm", "matmul", ... */

/* Called by the model while it runs, so data-parallel engines can overlap communication:
 *  - grads_ready: gradients in [offset, offset+count) of model->grads are final for this backward
 *    pass (called layer by layer, last layer first; embeddings last).
 *    Order: ln_f's range first (right after the LM head backward), then layer n_layer-1 ... 0, then
 *    the embeddings range [0, layer_begin[0]) last (wte also gets the LM-head gradient). Every element
 *    of the buffer is reported exactly once per backward.
 *  - before_layer / after_layer: parameters of layer l (-1: embeddings and ln_f) are about to be /
 *    no longer needed (ZeRO stage 3 gathers and releases them). is_backward tells the pass.
 *    Forward: before(-1), then before(l)/after(l) for l = 0..n_layer-1, then after(-1) (the
 *    embeddings stay needed through the LM head). Backward: before(-1), then l = n_layer-1..0,
 *    then after(-1). gpt2_forward_cached calls them the same way as the forward.
 * Any function may be NULL. */
typedef struct {
    void *ctx;
    void (*grads_ready)(void *ctx, size_t offset, size_t count);
    void (*before_layer)(void *ctx, int layer, int is_backward);
    void (*after_layer)(void *ctx, int layer, int is_backward);
} gpt2_hooks;

typedef struct {
    gpt2_config cfg;
    gpt2_param_table table;
    zg_backend *be;
    void *params; /* flat, be->param_dtype, table.num_params elements */
    void *grads;  /* flat, be->grad_dtype; NULL until gpt2_grads_alloc() */
    /* Per-group redirection (gpt2_group_count() entries each, zeroed by gpt2_init): a non-NULL
     * param_group[g] / grad_group[g] is where group g's first element lives (the rest follow in table
     * order); NULL means inside params / grads. The model never frees them: whoever sets them (the
     * ZeRO engine) owns that memory. Single-process training leaves them NULL. */
    void **param_group;
    void **grad_group;
    gpt2_hooks hooks;
    int recompute;        /* GPT2_RECOMPUTE_* / GPT2_LN_FROM_OUTPUT flags: activations not kept */
    int recompute_layers; /* the flags apply to layers [0, recompute_layers) only; <= 0: every layer */
    /* activation state; sized for (B, T) by gpt2_activations_ensure() */
    int B, T;
    void *acts;                /* one allocation holding every activation tensor; the backward's activation
                                  gradients share the logits' memory (dead then: one LM head chunk's) */
    int32_t *tokens, *targets; /* backend memory (B,T) */
    float *losses;             /* backend memory (loss_slots, B, T): slot 0 for gpt2_forward, a ring for
                                  gpt2_forward_train_deferred */
    float *losses_host;        /* host copy (loss_slots, B, T) */
    int loss_slots;            /* slots of B*T losses (GPT2_LOSS_RING_BYTES, at least 1) */
    int loss_pending;          /* deferred forwards whose losses are not yet read */
    int32_t *loss_targets;     /* host (loss_slots, B, T): the pending forwards' targets (which count) */
    int *loss_valid;           /* (loss_slots): their targets >= 0 */
    double loss_sum;           /* the means of the deferred forwards read so far, each rounded to float */
    int loss_count;            /* ... how many */
    int has_targets;
    int n_valid_targets; /* targets >= 0 in the last forward */
    /* The LM head (logits, classifier, the head's two gradient products) runs over row chunks of head_rows
     * (gpt2_head_rows) in the front of the logits' region, so the region need not hold every row's logits:
     * 1 (gpt2_init's) every row at once (the logits stay for gpt2_logits), 0 auto, n >= 2 n chunks. */
    int head_chunks;
    /* The last forward was a training forward: its head runs in gpt2_backward (the logits of each chunk, its
     * losses into head_losses unless NULL, d(loss_scale * mean loss)/d logits, the head's gradients), where
     * the layers' backward follows at once, so no chunk's gradient need wait for the others. */
    int head_pending;
    float head_loss_scale; /* ... the loss_scale it was asked for */
    float *head_losses;    /* ... where its per-token losses go (NULL: written already) */
    void *act_index;       /* private: offsets of each activation tensor */
    void *kv;              /* private: KV cache of gpt2_kv_alloc() */
    gpt2_profile *profile; /* optional per-op timing (NULL = off); owned by the caller */
    /* 1: the device work of gpt2_forward_train_deferred and gpt2_backward is recorded once per shape, buffers and
     * scale and replayed (one launch a pass instead of one per op: gpt2_graph.c), where the backend records,
     * no hooks are installed and profile is NULL; the same kernels, so the same bits. 0 (gpt2_init's): every op
     * is launched as it is called. */
    int record;
    void *graphs; /* private: gpt2_graph.c's recordings */
    /* 1: the flat gradient buffer holds zeros and no group is redirected (gpt2_grads_zeroed), so the next
     * backward's weight-gradient products write instead of adding (the same values; cuBLASLt then does not read
     * the buffer). Cleared by gpt2_backward. */
    int grads_zero;
} gpt2_model;

/* Allocates the parameter buffer on the backend (contents undefined until initialised/loaded). */
int gpt2_init(gpt2_model *m, const gpt2_config *cfg, zg_backend *be);
void gpt2_free(gpt2_model *m);
int gpt2_grads_alloc(gpt2_model *m);
void gpt2_zero_grad(gpt2_model *m);
/* Says that whoever zeroed m->grads did (sets grads_zero unless a gradient group is redirected). */
void gpt2_grads_zeroed(gpt2_model *m);

/* From-scratch initialisation: N(0, 0.02) weights, residual projections N(0, 0.02/sqrt(2 n_layer)),
 * zero biases, LayerNorm 1/0; padded vocabulary rows 0. Deterministic for a seed. */
void gpt2_init_random(gpt2_model *m, uint64_t seed);
/* Copies fp32 host parameters (table layout) into the model, and back. */
void gpt2_params_upload(gpt2_model *m, const float *host);
void gpt2_params_download(gpt2_model *m, float *host);
/* Where tensor `index` of the table lives now (its group's redirection, else the flat buffer).
 * Fatal when neither exists: the group is released (ZeRO stage 3) or gradients were not allocated. */
void *gpt2_param_ptr(const gpt2_model *m, int index);
void *gpt2_grad_ptr(const gpt2_model *m, int index);

/* Activation recomputation (gpt2_model.recompute), to trade a little time for memory. Gradients are
 * bitwise the same either way (the same kernels recompute the same values).
 *   GELU: keep only the pre-GELU (N,4C) per layer, recompute GELU before the MLP projection's
 *         backward (saves (L-1) x N x 4C values, one elementwise pass per layer).
 *   LN1 / LN2: keep no output (N,C) of the layer's first / second LayerNorm, recompute it from the
 *         saved input before the matmul backward that reads it (each saves (L-1) x N x C values for
 *         one LayerNorm pass per layer; both together share one buffer: (2L-1) x N x C).
 *   LAYERNORM = LN1 | LN2.
 * Not a recompute, but in the same flags because it also trades for activation memory:
 *   LN_FROM_OUTPUT: every LayerNorm's backward works from its output y and (b, w) (xhat = (y - b) / w,
 *         as Apex/Megatron's memory-efficient LayerNorm) instead of from its input, so the residual
 *         stream is not kept per layer: two (N,C) buffers instead of (2L+1) x N x C values, for no extra
 *         pass. Gradients differ from the input form by the rounding of y (bf16/fp16: xhat to about
 *         |y| 2^-9 / |w|), and a weight of exactly 0 loses its column's xhat. Applies to every layer
 *         (recompute_layers does not restrict it); LN1 / LN2 recompute are ignored with it (the output
 *         is what it keeps).
 *   FORWARD_ONLY: the model runs forwards and no backward (zgpt eval): no layer's activations outlive the
 *         layer, so every layer uses one set of buffers, the residual stream lives in two, and no gradient
 *         region is laid out (gpt2_activation_bytes, GPT-2 XL at B=8, T=1024: bf16 1.27 GB instead of 21.1;
 *         fp32 on the CPU, which keeps attention probabilities, 3.4 instead of 82; with the head in chunks 0.65
 *         and 2.1). The other flags are ignored with it; gpt2_forward_train* refuse it with an error and
 *         gpt2_backward is fatal. The same kernels run on the same values, so losses and logits are those of
 *         the training layout. */
enum {
    GPT2_RECOMPUTE_GELU = 1,
    GPT2_RECOMPUTE_LN1 = 2,
    GPT2_RECOMPUTE_LN2 = 4,
    GPT2_RECOMPUTE_LAYERNORM = 6,
    GPT2_LN_FROM_OUTPUT = 8,
    GPT2_FORWARD_ONLY = 16
};
/* "GELU + ln1 + ln2 recomputed", "LayerNorm backward from output", ... ("" for none) into buf, for reports
 * (the layer count is the caller's). */
const char *gpt2_recompute_describe(int flags, char *buf, size_t cap);
/* Activation memory for micro-batch B and sequence T (T <= block_size). */
int gpt2_activations_ensure(gpt2_model *m, int B, int T);
/* The LM head's rows a chunk for N = B*T rows (gpt2_model.head_chunks): `chunks` 1 -> N; n >= 2 -> ceil(N / n),
 * above 64 rows rounded up to a multiple of 64; 0 (auto) -> the fewest chunks whose logits (rows x Vp x asz)
 * fit in what the layers' backward takes of the logits' region anyway (its activation gradients, 6 N C x asz,
 * and the workspace the backend borrows there, lend_want: backend.h, scratch_lend_want), at least
 * GPT2_HEAD_MIN_ROWS rows a chunk (below that the products lose efficiency for little memory). */
enum { GPT2_HEAD_MIN_ROWS = 2048 };
int gpt2_head_rows(const gpt2_config *cfg, size_t asz, int N, int chunks, size_t lend_want);
/* The rows a chunk of the model's LM head at its current (B, T) (gpt2_activations_ensure); 0 before. */
int gpt2_head_rows_now(const gpt2_model *m);
/* The loan the model's backward would be asked for at (B, T) (the backend's scratch_lend_want), where the head's
 * chunking reads it (head_chunks != 1); else 0 without asking, so no backend work (cuDNN's backward plan) is done
 * for nothing. */
size_t gpt2_lend_want(const gpt2_model *m, int B, int T);
/* Bytes of activations (the activation gradients share the logits' memory; + the deferred losses' ring
 * beyond one slot, and the recorded forward's slot) the model needs for (B, T) with these recompute flags
 * and layer count (as gpt2_model.recompute / recompute_layers), LM head chunking (head_chunks) and the
 * backend's loan at this shape (lend_want, as scratch_lend_want reports it): for plan/bench. */
size_t gpt2_activation_bytes(const gpt2_config *cfg, zg_dtype act_dtype, int B, int T, int recompute,
                             int recompute_layers, int head_chunks, size_t lend_want);

/* Forward pass on host token arrays (B,T). With targets (NULL = none) *loss (may be NULL) gets the
 * mean loss over targets >= 0 (per-token losses stay in losses_host); without, *loss = 0 and the
 * logits stay for gpt2_logits(). Targets < 0 are ignored. Returns 0, or -1 with a zg_errorf() message
 * for a token id outside [0, vocab_size), T > block_size or an activation allocation failure. */
int gpt2_forward(gpt2_model *m, const int32_t *inputs_host, const int32_t *targets_host, int B, int T, float *loss);
/* Training forward: gpt2_forward with targets up to the final LayerNorm; the LM head runs in gpt2_backward,
 * chunk by chunk, its classifier writing the losses and d(loss_scale * mean loss)/d logits in one pass (for
 * *loss here, the head's losses run at once and again, without them, in the backward: tests). The next call
 * should be gpt2_backward with the same loss_scale; a forward or a losses read before it runs the head's
 * losses alone. */
int gpt2_forward_train(gpt2_model *m, const int32_t *inputs_host, const int32_t *targets_host, int B, int T,
                       float loss_scale, float *loss);
/* gpt2_forward_train without reading the loss: the per-token losses stay on the device (a ring of
 * loss_slots forwards, read when it is full or by gpt2_train_losses_take), so the host does not wait for
 * the forward, and no small device-to-host copy queues behind a large one (a checkpoint snapshot's) on
 * the copy engine. The sums are the same as gpt2_forward_train's, in the same order. */
int gpt2_forward_train_deferred(gpt2_model *m, const int32_t *inputs_host, const int32_t *targets_host, int B, int T,
                                float loss_scale);
/* Reads the deferred forwards' losses (waiting for them) and returns the sum of their mean losses (each
 * rounded to float, as gpt2_forward_train's *loss) since the last call; *count (may be NULL) gets how many. */
double gpt2_train_losses_take(gpt2_model *m, int *count);
/* Backward of the last forward (which must have had targets). Gradients are ACCUMULATED into
 * model->grads and are the gradient of (loss_scale * mean loss of the last forward); fold the
 * gradient-accumulation factor (1/grad_accum) and any fp16 loss scale into loss_scale.
 * It starts with the LM head, chunk by chunk: the logits again after gpt2_forward (the same bits), the
 * classifier's d loss / d logits over them, the head's products; then the logits' region holds the
 * backward's activation gradients and the ops' workspace. */
void gpt2_backward(gpt2_model *m, float loss_scale);
/* How often the training passes were recorded and replayed so far (gpt2_model.record, gpt2_graph.c); *off 1
 * when recording was turned off (a failed recording, or one redone too often). */
void gpt2_graph_counts(const gpt2_model *m, long *records, long *replays, int *off);
/* Logits (fp32, host) of position t of every sequence of the last gpt2_forward: out (B, vocab_size).
 * Valid until the next forward or backward, and only with the logits of every row kept (head_chunks 1, or a
 * chunk holding every row): fatal otherwise. */
void gpt2_logits(gpt2_model *m, int t, float *out);

/* KV cache for incremental decoding (sampling): B sequences of up to maxT <= block_size positions.
 * gpt2_forward_cached runs the Tn new tokens tokens_host (B,Tn) at positions pos..pos+Tn-1
 * (pos + Tn <= maxT; pos == 0 restarts the sequences), appends their keys/values to the cache and
 * writes logits_out (B, vocab_size) fp32 host for the last new position. Returns 0, or -1 with an
 * error when the cache is missing or too small. */
int gpt2_kv_alloc(gpt2_model *m, int B, int maxT);
void gpt2_kv_free(gpt2_model *m);
int gpt2_forward_cached(gpt2_model *m, const int32_t *tokens_host, int B, int Tn, int pos, float *logits_out);
/* The same with the tokens (B,Tn) in backend memory (ids not checked: the caller's), the logits left in
 * backend memory: gpt2_kv_logits (B,Vp) act_dtype. */
int gpt2_forward_cached_dev(gpt2_model *m, const int32_t *tokens, int B, int Tn, int pos);
/* One decode step at fixed shapes: the cache's B rows each take one token, tokens (B) and pos (int32[2],
 * pos[0] the position; see the backend's decode ops) in backend memory, so that the step can be recorded
 * once and replayed (src/model/generate.c). Logits (B,Vp) into gpt2_kv_logits. */
void gpt2_decode_step(gpt2_model *m, const int32_t *tokens, const int32_t *pos);
void *gpt2_kv_logits(const gpt2_model *m);

#endif
