/* GPT-2 over the backend op table: the activations' layout, forward, backward (layer by layer, with hooks), the LM
 * head in row chunks, per-op profiling. The configs, the parameter table and initialisation are gpt2_params.c; the
 * KV-cache forward for sampling is gpt2_cached.c. */
#include "model/gpt2.h"
#include "model/gpt2_internal.h"

#include "core/clock.h"
#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* gpt2_forward_train_deferred's ring of per-token losses: at most this many forwards, in at most this many
 * bytes (at least one forward): 64 micro-steps of B*T = 1024, 16 of B*T = 16384 */
#define GPT2_LOSS_RING_SLOTS 64
#define GPT2_LOSS_RING_BYTES ((size_t)1 << 20)

/* ---- profiling ---------------------------------------------------------------------------------- */

const char *gpt2_op_name(gpt2_op op) {
    static const char *names[GPT2_OP_COUNT] = {"encoder", "layernorm", "matmul",     "attention",
                                               "gelu",    "residual",  "classifier", "transfer"};
    return (op >= 0 && op < GPT2_OP_COUNT) ? names[op] : "unknown";
}

static double prof_begin(gpt2_model *m) {
    if (m->profile == NULL) return 0.0;
    m->be->ops->synchronize(m->be);
    return 1e3 * zg_now_s();
}

static void prof_end(gpt2_model *m, int pass, gpt2_op op, double t0) {
    if (m->profile == NULL) return;
    m->be->ops->synchronize(m->be);
    m->profile->ms[pass][op] += 1e3 * zg_now_s() - t0;
    m->profile->calls[pass][op]++;
}

/* Runs the statements as op `op` of pass `pass` (0 forward, 1 backward) in the per-op profile; when
 * profiling is off this is the statements alone (no synchronisation). */
#define GPT2_PROFILED(m, pass, op, ...)                                                                                \
    do {                                                                                                               \
        double t0_ = prof_begin(m);                                                                                    \
        __VA_ARGS__;                                                                                                   \
        prof_end((m), (pass), (op), t0_);                                                                              \
    } while (0)

/* ---- activations -------------------------------------------------------------------------------- */

/* Saved activations of one layer (pointers into m->acts). x is the layer input (residual stream). */
typedef struct {
    void *ln1;                  /* (N,C) */
    float *ln1_mean, *ln1_rstd; /* (N) */
    void *qkv;                  /* (N,3C) */
    void *atty;                 /* (N,C) attention output, input of c_proj */
    void *att_stats;            /* backend-defined */
    void *r2;                   /* (N,C) x + atty @ Wproj^T + b (residual add fused into the projection) */
    void *ln2;                  /* (N,C) */
    float *ln2_mean, *ln2_rstd;
    void *fch;      /* (N,4C) pre-GELU */
    void *fch_gelu; /* (N,4C) GELU output (one buffer shared by all layers with GPT2_RECOMPUTE_GELU) */
    /* the layer output r2 + fch_gelu @ Wfcproj^T + b is resid[l+1] (fused residual add) */
} layer_acts;

typedef struct {
    void **resid; /* n_layer + 1 tensors (N,C): resid[0] = embeddings, resid[l+1] = layer l output */
    layer_acts *layers;
    void *lnf; /* (N,C) */
    float *lnf_mean, *lnf_rstd;
    void *logits; /* (N,Vp) */
    /* the backward's activation gradients, at the end of the logits' region (layout_acts); NULL with
     * GPT2_FORWARD_ONLY */
    void *dres;        /* (N,C) gradient of the residual stream */
    void *dsmall;      /* (N,C) */
    void *dbig;        /* (N,4C): d fch, or d qkv (N,3C) */
    size_t lend_bytes; /* the region's front, before dres: lent to the ops in the layers' backward */
    int head_rows;     /* the LM head's rows a chunk (gpt2_head_rows): the region's front holds their logits */
    int head_chunks;   /* the gpt2_model.head_chunks it was sized for */
    int recompute, recompute_layers; /* ... and the gpt2_model.recompute, recompute_layers */
} act_index;

/* A bump allocator over the activation block: each tensor aligned to 256 bytes; with base NULL it
 * only measures. */
typedef struct {
    size_t off;
    char *base;
} bump;

static void *bump_take(bump *b, size_t bytes) {
    size_t at = b->off;
    b->off += (bytes + 255) / 256 * 256;
    return b->base ? b->base + at : NULL;
}

/* The flags that take effect: with GPT2_LN_FROM_OUTPUT the LayerNorm outputs are what is kept, so
 * LN1/LN2 recompute does not apply; GPT2_FORWARD_ONLY keeps nothing, so no other flag does. */
static int effective_flags(int flags) {
    if (flags & GPT2_FORWARD_ONLY) return GPT2_FORWARD_ONLY;
    return flags & GPT2_LN_FROM_OUTPUT ? flags & ~GPT2_RECOMPUTE_LAYERNORM : flags;
}

/* Does layer l recompute `what` (a GPT2_RECOMPUTE_* flag) under flags / layer count `layers`? */
static int layer_recomputes(int flags, int layers, int l, int what) {
    return (effective_flags(flags) & what) && (layers <= 0 || l < layers);
}

/* Byte layout of the activations for (B, T); with `base` NULL it only measures. Returns the total
 * bytes (the backward's activation gradients included).
 * recompute: GPT2_RECOMPUTE_* flags for layers [0, rc_layers) (<= 0: all). A recomputed tensor gets
 * one buffer shared by those layers, filled in forward for the next op and again in backward just
 * before its consumer. With GPT2_LN_FROM_OUTPUT no LayerNorm input is read in backward, so the
 * residual stream lives in two buffers reused by every layer: resid[l] (the layer input and output,
 * overwritten in place by the MLP projection) and r2 (after attention).
 * The logits are dead from the LM head's backward to the next forward, and the backward's activation
 * gradients are dead outside the backward, so they share one region: the gradients dres (N,C), dsmall (N,C)
 * and dbig (N,4C) at its end (after the LM head's backward has read the logits: gpt2_backward), and its front,
 * lend_bytes, lent to the ops as their workspace meanwhile (scratch_lend: cuDNN's attention backward, which
 * starts at the loan's first byte). The head runs in chunks of head_rows (gpt2_head_rows), each chunk's logits
 * (head_rows,Vp) at the front. Every row in one chunk: the region is the larger of the logits and the gradients,
 * so with a small vocabulary (6C > Vp) it holds the gradients and lends nothing. In chunks: the larger of a
 * chunk's logits and the gradients plus the loan the backend wants (lend_want).
 * GPT2_FORWARD_ONLY: one set of layer buffers for every layer, the residual stream in two buffers (as
 * GPT2_LN_FROM_OUTPUT lays it out: a layer's input is dead once its attention projection has written r2, so the
 * MLP projection writes the layer's output over it), and the logits' region only the logits (no backward: no
 * gradients, nothing lent). */
static size_t layout_acts(const gpt2_config *cfg, size_t asz, size_t stats_bytes, int B, int T, int recompute,
                          int rc_layers, int head_rows, size_t lend_want, char *base, act_index *ix) {
    size_t N = (size_t)B * T, C = (size_t)cfg->n_embd, Vp = (size_t)cfg->padded_vocab_size;
    int L = cfg->n_layer;
    bump b = {0, base};
    recompute = effective_flags(recompute);
    int fwd_only = (recompute & GPT2_FORWARD_ONLY) != 0;
    int from_out = fwd_only || (recompute & GPT2_LN_FROM_OUTPUT) != 0;
    void *shared_gelu = recompute & GPT2_RECOMPUTE_GELU ? bump_take(&b, N * 4 * C * asz) : NULL;
    void *shared_ln = recompute & GPT2_RECOMPUTE_LAYERNORM ? bump_take(&b, N * C * asz) : NULL; /* ln1 and/or ln2 */
    void *stream = from_out ? bump_take(&b, N * C * asz) : NULL;
    void *shared_r2 = from_out ? bump_take(&b, N * C * asz) : NULL;
    for (int l = 0; l <= L; l++) {
        void *p = from_out ? stream : bump_take(&b, N * C * asz);
        if (ix) ix->resid[l] = p;
    }
    layer_acts shared; /* fwd_only: every layer's */
    for (int l = 0; l < L; l++) {
        if (fwd_only && l > 0) {
            if (ix) ix->layers[l] = shared;
            continue;
        }
        layer_acts a;
        a.ln1 = layer_recomputes(recompute, rc_layers, l, GPT2_RECOMPUTE_LN1) ? shared_ln : bump_take(&b, N * C * asz);
        a.ln1_mean = bump_take(&b, N * 4);
        a.ln1_rstd = bump_take(&b, N * 4);
        a.qkv = bump_take(&b, N * 3 * C * asz);
        a.atty = bump_take(&b, N * C * asz);
        a.att_stats = bump_take(&b, stats_bytes);
        a.r2 = from_out ? shared_r2 : bump_take(&b, N * C * asz);
        a.ln2 = layer_recomputes(recompute, rc_layers, l, GPT2_RECOMPUTE_LN2) ? shared_ln : bump_take(&b, N * C * asz);
        a.ln2_mean = bump_take(&b, N * 4);
        a.ln2_rstd = bump_take(&b, N * 4);
        a.fch = bump_take(&b, N * 4 * C * asz);
        a.fch_gelu = layer_recomputes(recompute, rc_layers, l, GPT2_RECOMPUTE_GELU) ? shared_gelu
                                                                                    : bump_take(&b, N * 4 * C * asz);
        if (ix) ix->layers[l] = a;
        shared = a;
    }
    void *lnf = bump_take(&b, N * C * asz);
    float *lnf_mean = bump_take(&b, N * 4), *lnf_rstd = bump_take(&b, N * 4);
    /* the logits' region: offsets of the gradients from its end (g), its size the larger of the two */
    bump g = {0, NULL};
    size_t dres_at = g.off;
    bump_take(&g, fwd_only ? 0 : N * C * asz);
    size_t dsmall_at = g.off;
    bump_take(&g, fwd_only ? 0 : N * C * asz);
    size_t dbig_at = g.off;
    bump_take(&g, fwd_only ? 0 : N * 4 * C * asz);
    bump l = {0, NULL};
    bump_take(&l, (size_t)head_rows * Vp * asz);
    size_t need = (size_t)head_rows < N && !fwd_only ? g.off + (lend_want + 255) / 256 * 256 : g.off;
    size_t region = l.off > need ? l.off : need, lend = fwd_only ? 0 : region - g.off;
    char *logits = bump_take(&b, region);
    if (ix) {
        ix->lnf = lnf;
        ix->lnf_mean = lnf_mean;
        ix->lnf_rstd = lnf_rstd;
        ix->logits = logits;
        ix->dres = fwd_only ? NULL : logits + lend + dres_at;
        ix->dsmall = fwd_only ? NULL : logits + lend + dsmall_at;
        ix->dbig = fwd_only ? NULL : logits + lend + dbig_at;
        ix->lend_bytes = lend;
        ix->head_rows = head_rows;
    }
    return b.off;
}

const char *gpt2_recompute_describe(int flags, char *buf, size_t cap) {
    flags = effective_flags(flags);
    if (flags & GPT2_FORWARD_ONLY) {
        snprintf(buf, cap, "forward only");
        return buf;
    }
    int from_out = (flags & GPT2_LN_FROM_OUTPUT) != 0;
    int any = (flags & (GPT2_RECOMPUTE_GELU | GPT2_RECOMPUTE_LAYERNORM)) != 0;
    snprintf(buf, cap, "%s%s%s%s%s%s%s%s", flags & GPT2_RECOMPUTE_GELU ? "GELU" : "",
             (flags & GPT2_RECOMPUTE_GELU) && (flags & GPT2_RECOMPUTE_LAYERNORM) ? " + " : "",
             flags & GPT2_RECOMPUTE_LN1 ? "ln1" : "",
             (flags & GPT2_RECOMPUTE_LN1) && (flags & GPT2_RECOMPUTE_LN2) ? " + " : "",
             flags & GPT2_RECOMPUTE_LN2 ? "ln2" : "", any ? " recomputed" : "", any && from_out ? ", " : "",
             from_out ? "LayerNorm backward from output" : "");
    return buf;
}

/* The slots of the deferred losses' ring for B*T = n tokens (GPT2_LOSS_RING_*). */
static size_t loss_ring_slots(size_t n) {
    size_t slots = GPT2_LOSS_RING_BYTES / (n * sizeof(float));
    if (slots > GPT2_LOSS_RING_SLOTS) slots = GPT2_LOSS_RING_SLOTS;
    return slots < 1 ? 1 : slots;
}

int gpt2_head_rows(const gpt2_config *cfg, size_t asz, int N, int chunks, size_t lend_want) {
    size_t C = (size_t)cfg->n_embd, Vp = (size_t)cfg->padded_vocab_size;
    if (N <= 1 || chunks == 1) return N;
    size_t k = (size_t)chunks;
    if (chunks <= 0) { /* auto: the fewest chunks that fit in the gradients + loan, GPT2_HEAD_MIN_ROWS at least */
        if (N < 2 * GPT2_HEAD_MIN_ROWS) return N;
        size_t logits = (size_t)N * Vp * asz, need = 6 * (size_t)N * C * asz + lend_want;
        k = (logits + need - 1) / need;
        if (k > (size_t)N / GPT2_HEAD_MIN_ROWS) k = (size_t)N / GPT2_HEAD_MIN_ROWS;
        if (k <= 1) return N;
    }
    size_t rows = ((size_t)N + k - 1) / k;
    if (rows > 64) rows = (rows + 63) / 64 * 64;
    return rows < (size_t)N ? (int)rows : N;
}

int gpt2_head_rows_now(const gpt2_model *m) { return m->act_index ? ((const act_index *)m->act_index)->head_rows : 0; }

size_t gpt2_lend_want(const gpt2_model *m, int B, int T) {
    const zg_backend_ops *op = m->be->ops;
    /* a forward-only model lends nothing: no backward */
    if (m->head_chunks == 1 || op->scratch_lend_want == NULL || (m->recompute & GPT2_FORWARD_ONLY)) return 0;
    return op->scratch_lend_want(m->be, B, T, m->cfg.n_embd, m->cfg.n_head);
}

size_t gpt2_activation_bytes(const gpt2_config *cfg_in, zg_dtype act_dtype, int B, int T, int recompute,
                             int recompute_layers, int head_chunks, size_t lend_want) {
    gpt2_config cfg = *cfg_in;
    if (gpt2_config_validate(&cfg) != 0) return 0;
    /* Attention state: the CPU (fp32) keeps probabilities (B,NH,T,T); CUDA keeps (B,NH,T) fp32
     * softmax statistics. fp32 is assumed to be the CPU here. */
    size_t stats = act_dtype == ZG_F32 ? (size_t)B * cfg.n_head * T * T * 4 : (size_t)B * cfg.n_head * T * 4;
    size_t asz = zg_dtype_size(act_dtype);
    int rows = gpt2_head_rows(&cfg, asz, B * T, head_chunks, lend_want);
    size_t a = layout_acts(&cfg, asz, stats, B, T, recompute, recompute_layers, rows, lend_want, NULL, NULL);
    /* + the deferred losses' ring beyond its first slot (<= 1 MiB), + the recorded forward's slot */
    return a + loss_ring_slots((size_t)B * T) * (size_t)B * T * sizeof(float);
}

static void acts_release(gpt2_model *m) {
    zg_backend *be = m->be;
    gpt2_graph_drop(m); /* the recordings hold these buffers' addresses */
    if (m->acts) be->ops->dealloc(be, m->acts);
    if (m->tokens) be->ops->dealloc(be, m->tokens);
    if (m->targets) be->ops->dealloc(be, m->targets);
    if (m->losses) be->ops->dealloc(be, m->losses);
    free(m->losses_host);
    free(m->loss_targets);
    free(m->loss_valid);
    m->loss_targets = NULL;
    m->loss_valid = NULL;
    m->loss_slots = m->loss_pending = 0;
    act_index *ix = m->act_index;
    if (ix) {
        free(ix->resid);
        free(ix->layers);
        free(ix);
    }
    m->acts = NULL;
    m->tokens = m->targets = NULL;
    m->losses = m->losses_host = NULL;
    m->act_index = NULL;
    m->B = m->T = 0;
}

int gpt2_activations_ensure(gpt2_model *m, int B, int T) {
    if (B < 1 || T < 1) return zg_errorf("batch %d x sequence %d: both must be at least 1", B, T);
    if (T > m->cfg.block_size)
        return zg_errorf("sequence length %d exceeds the model's block_size %d: use a shorter sequence", T,
                         m->cfg.block_size);
    const act_index *have = m->act_index;
    if (m->acts && m->B == B && m->T == T && have->head_chunks == m->head_chunks && have->recompute == m->recompute &&
        have->recompute_layers == m->recompute_layers)
        return 0;
    acts_release(m);
    zg_backend *be = m->be;
    size_t asz = zg_dtype_size(be->act_dtype);
    size_t stats = be->ops->attention_stats_bytes(be, B, T, m->cfg.n_head);
    size_t lend_want = gpt2_lend_want(m, B, T);
    int rows = gpt2_head_rows(&m->cfg, asz, B * T, m->head_chunks, lend_want);
    act_index *ix = zg_calloc(1, sizeof *ix);
    ix->resid = zg_calloc((size_t)m->cfg.n_layer + 1, sizeof(void *));
    ix->layers = zg_calloc((size_t)m->cfg.n_layer, sizeof(layer_acts));
    m->act_index = ix;
    size_t ab = layout_acts(&m->cfg, asz, stats, B, T, m->recompute, m->recompute_layers, rows, lend_want, NULL, NULL);
    size_t N = (size_t)B * T;
    m->acts = be->ops->alloc(be, ab, "activations");
    if (m->acts) m->tokens = be->ops->alloc(be, N * sizeof(int32_t), "tokens");
    if (m->tokens) m->targets = be->ops->alloc(be, N * sizeof(int32_t), "targets");
    /* the deferred forwards' ring: up to GPT2_LOSS_RING_SLOTS forwards in GPT2_LOSS_RING_BYTES; then the slot
     * a recorded forward writes (gpt2_graph.c: one address in every replay), copied into the ring's next */
    size_t slots = loss_ring_slots(N);
    if (m->targets) m->losses = be->ops->alloc(be, (slots + 1) * N * sizeof(float), "losses");
    if (m->losses == NULL) {
        acts_release(m);
        return -1;
    }
    m->loss_slots = (int)slots;
    m->loss_pending = 0;
    m->losses_host = zg_malloc(slots * N * sizeof(float));
    m->loss_targets = zg_malloc(slots * N * sizeof(int32_t));
    m->loss_valid = zg_calloc(slots, sizeof(int));
    layout_acts(&m->cfg, asz, stats, B, T, m->recompute, m->recompute_layers, rows, lend_want, m->acts, ix);
    ix->head_chunks = m->head_chunks;
    ix->recompute = m->recompute;
    ix->recompute_layers = m->recompute_layers;
    m->B = B;
    m->T = T;
    return 0;
}

/* ---- model lifetime ----------------------------------------------------------------------------- */

int gpt2_init(gpt2_model *m, const gpt2_config *cfg, zg_backend *be) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    if (gpt2_config_validate(&m->cfg) != 0) return -1;
    if (gpt2_param_table_init(&m->table, &m->cfg) != 0) return -1;
    m->be = be;
    m->head_chunks = 1;
    m->params = be->ops->alloc(be, m->table.num_params * zg_dtype_size(be->param_dtype), "parameters");
    if (m->params == NULL) {
        gpt2_param_table_free(&m->table);
        return -1;
    }
    m->param_group = zg_calloc((size_t)gpt2_group_count(&m->table), sizeof(void *));
    m->grad_group = zg_calloc((size_t)gpt2_group_count(&m->table), sizeof(void *));
    return 0;
}

void gpt2_free(gpt2_model *m) {
    if (m->be == NULL) return;
    gpt2_graph_free(m);
    gpt2_kv_free(m);
    acts_release(m);
    if (m->params) m->be->ops->dealloc(m->be, m->params);
    if (m->grads) m->be->ops->dealloc(m->be, m->grads);
    free(m->param_group);
    free(m->grad_group);
    gpt2_param_table_free(&m->table);
    memset(m, 0, sizeof *m);
}

int gpt2_grads_alloc(gpt2_model *m) {
    if (m->grads) return 0;
    m->grads = m->be->ops->alloc(m->be, m->table.num_params * zg_dtype_size(m->be->grad_dtype), "gradients");
    if (m->grads == NULL) return -1;
    gpt2_zero_grad(m);
    return 0;
}

void gpt2_zero_grad(gpt2_model *m) {
    if (m->grads == NULL) return;
    m->be->ops->zero(m->be, m->grads, m->table.num_params * zg_dtype_size(m->be->grad_dtype));
    gpt2_grads_zeroed(m);
}

void gpt2_grads_zeroed(gpt2_model *m) {
    int groups = gpt2_group_count(&m->table);
    for (int g = 0; g < groups; g++)
        if (m->grad_group[g]) return; /* a redirected group's buffer is its owner's to vouch for */
    m->grads_zero = 1;
}

void gpt2_params_upload(gpt2_model *m, const float *host) {
    m->be->ops->upload_f32(m->be, m->params, m->be->param_dtype, host, m->table.num_params);
}

void gpt2_params_download(gpt2_model *m, float *host) {
    m->be->ops->download_f32(m->be, host, m->params, m->be->param_dtype, m->table.num_params);
}

/* ---- forward / backward ------------------------------------------------------------------------- */

/* Base of group g in buffer `which` (0 parameters, 1 gradients), as if the group started at
 * element 0: the caller adds the tensor's offset. */
static void *tensor_addr(const gpt2_model *m, int which, int index) {
    const gpt2_param_table *t = &m->table;
    int g = gpt2_group_of_tensor(t, index);
    void *const *redirect = which ? m->grad_group : m->param_group;
    size_t esz = zg_dtype_size(which ? m->be->grad_dtype : m->be->param_dtype);
    size_t off = t->tensors[index].offset;
    if (redirect && redirect[g]) {
        size_t lo, hi;
        gpt2_group_range(t, g, &lo, &hi);
        return (char *)redirect[g] + (off - lo) * esz;
    }
    void *flat = which ? m->grads : m->params;
    if (flat == NULL)
        ZG_FATAL("gpt2: the %s of %s are not resident (%s)", which ? "gradients" : "parameters", t->tensors[index].name,
                 which ? "call gpt2_grads_alloc, or install the engine that provides them"
                       : "a ZeRO stage 3 layer used outside its before_layer/after_layer hooks");
    return (char *)flat + off * esz;
}

void *gpt2_param_ptr(const gpt2_model *m, int index) { return tensor_addr(m, 0, index); }
void *gpt2_grad_ptr(const gpt2_model *m, int index) { return tensor_addr(m, 1, index); }

layer_params gpt2_layer_ptrs(const gpt2_model *m, int which, int l) {
    int first = gpt2_tensor_of_layer(l);
    layer_params p;
    void **f[GPT2_LAYER_TENSORS] = {&p.ln1w, &p.ln1b, &p.qkvw, &p.qkvb, &p.attprojw, &p.attprojb,
                                    &p.ln2w, &p.ln2b, &p.fcw,  &p.fcb,  &p.fcprojw,  &p.fcprojb};
    for (int i = 0; i < GPT2_LAYER_TENSORS; i++) *f[i] = tensor_addr(m, which, first + i);
    return p;
}

static void *tensor_ptr(const gpt2_model *m, int which, int index) { return tensor_addr(m, which, index); }

void gpt2_hook_before(gpt2_model *m, int layer, int bwd) {
    if (m->hooks.before_layer) m->hooks.before_layer(m->hooks.ctx, layer, bwd);
}

void gpt2_hook_after(gpt2_model *m, int layer, int bwd) {
    if (m->hooks.after_layer) m->hooks.after_layer(m->hooks.ctx, layer, bwd);
}

static void hook_ready(gpt2_model *m, size_t off, size_t count) {
    if (m->hooks.grads_ready) m->hooks.grads_ready(m->hooks.ctx, off, count);
}

int gpt2_check_tokens(const gpt2_model *m, const int32_t *tok, size_t n, int allow_ignore, const char *what) {
    for (size_t i = 0; i < n; i++) {
        int v = tok[i];
        if (v >= m->cfg.vocab_size || v < (allow_ignore ? -1 : 0))
            return zg_errorf("%s[%zu] = %d is outside the vocabulary [0, %d): the data does not match the model's "
                             "vocab_size (re-prepare the data with the model's tokenizer)",
                             what, i, v, m->cfg.vocab_size);
    }
    return 0;
}

/* One transformer block forward on N rows: x (N,C) -> out (N,C). */
static void block_forward(gpt2_model *m, const layer_params *p, layer_acts *a, const void *x, void *out, int B, int T) {
    const zg_backend_ops *op = m->be->ops;
    zg_backend *be = m->be;
    int C = m->cfg.n_embd, NH = m->cfg.n_head, N = B * T;
    GPT2_PROFILED(m, 0, GPT2_OP_LAYERNORM,
                  { op->layernorm_forward(be, a->ln1, a->ln1_mean, a->ln1_rstd, x, p->ln1w, p->ln1b, N, C); });
    GPT2_PROFILED(m, 0, GPT2_OP_MATMUL,
                  { op->matmul_forward(be, a->qkv, NULL, a->ln1, p->qkvw, p->qkvb, NULL, N, C, 3 * C); });
    GPT2_PROFILED(m, 0, GPT2_OP_ATTENTION, { op->attention_forward(be, a->atty, a->att_stats, a->qkv, B, T, C, NH); });
    /* r2 (N,C) = x + atty @ Wproj^T + b: the residual add is the projection's epilogue */
    GPT2_PROFILED(m, 0, GPT2_OP_MATMUL,
                  { op->matmul_forward(be, a->r2, NULL, a->atty, p->attprojw, p->attprojb, x, N, C, C); });
    GPT2_PROFILED(m, 0, GPT2_OP_LAYERNORM,
                  { op->layernorm_forward(be, a->ln2, a->ln2_mean, a->ln2_rstd, a->r2, p->ln2w, p->ln2b, N, C); });
    /* out (N,C) = r2 + gelu(ln2 @ Wfc^T + b) @ Wfcproj^T + b */
    GPT2_PROFILED(m, 0, GPT2_OP_MATMUL, {
        op->matmul_forward(be, a->fch_gelu, a->fch, a->ln2, p->fcw, p->fcb, NULL, N, C, 4 * C);
        op->matmul_forward(be, out, NULL, a->fch_gelu, p->fcprojw, p->fcprojb, a->r2, N, 4 * C, C);
    });
}

/* The mean of one forward's per-token losses l (N) over its targets >= 0 (valid of them), summed in index
 * order in double, rounded to float: gpt2_forward's *loss and each deferred forward's. */
static float mean_loss(const float *l, const int32_t *targets, size_t N, int valid) {
    double sum = 0.0;
    for (size_t i = 0; i < N; i++)
        if (targets[i] >= 0) sum += l[i];
    return valid > 0 ? (float)(sum / valid) : 0.0f;
}

/* ---- the LM head ---------------------------------------------------------------------------------- */

/* One pass of the tied LM head over the rows, in chunks of ix->head_rows, each chunk's logits (n,Vp) in the front
 * of the logits' region: logits_c = lnf_c (n,C) @ wte (Vp,C)^T; with targets (classify) the classifier writes the
 * chunk's per-token losses (losses != NULL) and, dloss != 0, d(dloss * sum of the losses)/d logits over them; with
 * dlnf the head's two gradient products follow at once, while the chunk's gradient is there: dwte += dlogits_c^T
 * @ lnf_c, then dlnf_c (n,C) = dlogits_c @ wte. dlnf may be lnf itself: both products read a chunk's rows before
 * the second writes them, and no later chunk reads them. */
typedef struct {
    int pass;     /* 0 forward, 1 backward (the profile's) */
    int classify; /* the classifier runs (the forward had targets) */
    float *losses;
    float dloss;
    void *dlnf; /* (N,C) or NULL: no gradient */
} head_pass;

static void head_run(gpt2_model *m, const head_pass *h) {
    zg_backend *be = m->be;
    const zg_backend_ops *op = be->ops;
    act_index *ix = m->act_index;
    int N = m->B * m->T, C = m->cfg.n_embd, V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size;
    size_t asz = zg_dtype_size(be->act_dtype);
    void *wte = tensor_ptr(m, 0, GPT2_T_WTE);
    for (int r0 = 0; r0 < N; r0 += ix->head_rows) {
        int n = N - r0 < ix->head_rows ? N - r0 : ix->head_rows;
        const char *x = (const char *)ix->lnf + (size_t)r0 * C * asz;
        GPT2_PROFILED(m, h->pass, GPT2_OP_MATMUL,
                      { op->matmul_forward(be, ix->logits, NULL, x, wte, NULL, NULL, n, C, Vp); });
        if (!h->classify) continue;
        GPT2_PROFILED(m, h->pass, GPT2_OP_CLASSIFIER, {
            op->classifier(be, h->losses ? h->losses + r0 : NULL, ix->logits, m->targets + r0, n, V, Vp, h->dloss);
        });
        if (h->dlnf == NULL) continue;
        /* the LM head's weight gradient always adds: its beta-zero product measured 11-12% slower than the adding
         * one on an H100 (bench/matmul_probe.cu: 1.758 against 1.582 ms at 124M, 3.719 against 3.511 at XL) */
        GPT2_PROFILED(m, h->pass, GPT2_OP_MATMUL, {
            op->matmul_backward(be, NULL, tensor_ptr(m, 1, GPT2_T_WTE), NULL, ix->logits, x, NULL, NULL, n, C, Vp, 0);
            op->matmul_backward(be, (char *)h->dlnf + (size_t)r0 * C * asz, NULL, NULL, ix->logits, NULL, wte, NULL, n,
                                C, Vp, 0);
        });
    }
}

/* A training forward's head that no gpt2_backward ran (the next forward is about to replace its inputs, or its
 * losses are read): its losses alone, as gpt2_forward writes them. */
static void head_flush(gpt2_model *m) {
    if (!m->head_pending) return;
    m->head_pending = 0;
    if (m->head_losses == NULL) return;
    head_pass h = {0, 1, m->head_losses, 0.0f, NULL};
    head_run(m, &h);
    m->head_losses = NULL;
}

/* Reads the pending deferred forwards' losses (one download of their slots) into loss_sum / loss_count:
 * per forward the sum over its targets >= 0 in index order, divided by their count, rounded to float. */
static void losses_flush(gpt2_model *m) {
    head_flush(m);
    if (m->loss_pending == 0) return;
    size_t N = (size_t)m->B * m->T;
    zg_backend *be = m->be;
    GPT2_PROFILED(m, 0, GPT2_OP_TRANSFER,
                  { be->ops->download(be, m->losses_host, m->losses, (size_t)m->loss_pending * N * sizeof(float)); });
    for (int k = 0; k < m->loss_pending; k++) {
        m->loss_sum += mean_loss(m->losses_host + (size_t)k * N, m->loss_targets + (size_t)k * N, N, m->loss_valid[k]);
        m->loss_count++;
    }
    m->loss_pending = 0;
}

double gpt2_train_losses_take(gpt2_model *m, int *count) {
    losses_flush(m);
    double s = m->loss_sum;
    if (count) *count = m->loss_count;
    m->loss_sum = 0.0;
    m->loss_count = 0;
    return s;
}

/* A forward's device work after its upload (gpt2_graph_run records it): the embeddings, the layers, the final
 * LayerNorm, and with `head` the LM head (head_run: the logits, with targets the per-token losses into
 * `losses`); a training forward leaves the head to gpt2_backward. */
typedef struct {
    int B, T, with_targets, head;
    float *losses;
} forward_pass;

static void forward_device(gpt2_model *m, void *arg) {
    const forward_pass *f = arg;
    zg_backend *be = m->be;
    const zg_backend_ops *op = be->ops;
    act_index *ix = m->act_index;
    int B = f->B, T = f->T, N = B * T;
    int C = m->cfg.n_embd, L = m->cfg.n_layer;
    gpt2_hook_before(m, -1, 0);
    GPT2_PROFILED(m, 0, GPT2_OP_ENCODER, {
        op->encoder_forward(be, ix->resid[0], m->tokens, tensor_ptr(m, 0, GPT2_T_WTE), tensor_ptr(m, 0, GPT2_T_WPE), B,
                            T, C);
    });
    for (int l = 0; l < L; l++) {
        gpt2_hook_before(m, l, 0);
        layer_params p = gpt2_layer_ptrs(m, 0, l);
        block_forward(m, &p, &ix->layers[l], ix->resid[l], ix->resid[l + 1], B, T);
        gpt2_hook_after(m, l, 0);
    }
    GPT2_PROFILED(m, 0, GPT2_OP_LAYERNORM, {
        op->layernorm_forward(be, ix->lnf, ix->lnf_mean, ix->lnf_rstd, ix->resid[L],
                              tensor_ptr(m, 0, gpt2_tensor_lnf_w(&m->table)),
                              tensor_ptr(m, 0, gpt2_tensor_lnf_b(&m->table)), N, C);
    });
    if (f->head) {
        head_pass h = {0, f->with_targets, f->losses, 0.0f, NULL};
        head_run(m, &h);
    }
    gpt2_hook_after(m, -1, 0);
}

/* train: a training forward (gpt2_forward_train*): the head is left to gpt2_backward (head_pending), which writes
 * this forward's losses with d(loss_scale * mean loss)/d logits in one pass and runs the head's products while
 * each chunk's gradient is there. defer (train only): the losses go into the ring's next slot and nothing is read
 * (losses_flush reads them). */
static int forward_impl(gpt2_model *m, const int32_t *inputs_host, const int32_t *targets_host, int B, int T, int train,
                        float loss_scale, float *loss, int defer) {
    if (loss) *loss = 0.0f;
    head_flush(m);
    /* a forward of another shape reallocates the ring, and a plain forward reads slot 0: the pending
     * deferred losses are read first */
    if (m->loss_pending > 0 && (!defer || m->B != B || m->T != T || m->loss_pending == m->loss_slots)) losses_flush(m);
    zg_backend *be = m->be;
    const zg_backend_ops *op = be->ops;
    size_t N = (size_t)B * T;
    m->has_targets = 0;
    m->n_valid_targets = 0;
    if (gpt2_activations_ensure(m, B, T) != 0) return -1;
    if (targets_host == NULL && gpt2_head_rows_now(m) < (int)N)
        return zg_errorf("a forward without targets keeps the logits of every row, and this model's LM head runs in "
                         "chunks of %d of %zu rows (head_chunks %d): set head_chunks to 1",
                         gpt2_head_rows_now(m), N, m->head_chunks);
    if (gpt2_check_tokens(m, inputs_host, N, 0, "input token") != 0) return -1;
    if (targets_host && gpt2_check_tokens(m, targets_host, N, 1, "target token") != 0) return -1;
    GPT2_PROFILED(m, 0, GPT2_OP_TRANSFER, {
        op->upload(be, m->tokens, inputs_host, N * sizeof(int32_t));
        if (targets_host) op->upload(be, m->targets, targets_host, N * sizeof(int32_t));
    });
    int valid = 0;
    if (targets_host)
        for (size_t i = 0; i < N; i++) valid += targets_host[i] >= 0;
    float *slot = defer ? m->losses + (size_t)m->loss_pending * N : m->losses;
    forward_pass f = {B, T, targets_host != NULL, !train, slot};
    if (defer && gpt2_graph_usable(m)) { /* a training forward: no head, no losses written */
        uint32_t extra[2] = {(uint32_t)f.head, (uint32_t)f.with_targets};
        gpt2_graph_run(m, GPT2_PASS_FORWARD, gpt2_graph_key(m, extra, sizeof extra), forward_device, &f);
    } else {
        forward_device(m, &f);
    }
    if (targets_host == NULL) return 0;
    m->has_targets = 1;
    m->n_valid_targets = valid;
    if (train) {
        m->head_pending = 1;
        m->head_loss_scale = loss_scale;
        m->head_losses = slot;
    }
    if (defer) {
        memcpy(m->loss_targets + (size_t)m->loss_pending * N, targets_host, N * sizeof(int32_t));
        m->loss_valid[m->loss_pending++] = valid;
        return 0;
    }
    if (train) { /* *loss now: the head's losses alone, here; the backward runs the head without them */
        head_pass h = {0, 1, slot, 0.0f, NULL};
        head_run(m, &h);
        m->head_losses = NULL;
    }
    GPT2_PROFILED(m, 0, GPT2_OP_TRANSFER, { op->download(be, m->losses_host, m->losses, N * sizeof(float)); });
    if (loss) *loss = mean_loss(m->losses_host, targets_host, N, valid);
    return 0;
}

int gpt2_forward(gpt2_model *m, const int32_t *inputs_host, const int32_t *targets_host, int B, int T, float *loss) {
    return forward_impl(m, inputs_host, targets_host, B, T, 0, 0.0f, loss, 0);
}

/* a training forward on a forward-only model: an error (its layout keeps no layer's activations for a backward) */
static int forward_only_refused(const gpt2_model *m) {
    if (!(m->recompute & GPT2_FORWARD_ONLY)) return 0;
    return zg_errorf("this model was set up for forwards only (GPT2_FORWARD_ONLY: zgpt eval's layout keeps no "
                     "activations for a backward); a training forward needs a model without that flag");
}

int gpt2_forward_train(gpt2_model *m, const int32_t *inputs_host, const int32_t *targets_host, int B, int T,
                       float loss_scale, float *loss) {
    if (targets_host == NULL) ZG_FATAL("gpt2_forward_train needs targets");
    if (forward_only_refused(m) != 0) return -1;
    return forward_impl(m, inputs_host, targets_host, B, T, 1, loss_scale, loss, 0);
}

int gpt2_forward_train_deferred(gpt2_model *m, const int32_t *inputs_host, const int32_t *targets_host, int B, int T,
                                float loss_scale) {
    if (targets_host == NULL) ZG_FATAL("gpt2_forward_train_deferred needs targets");
    if (forward_only_refused(m) != 0) return -1;
    return forward_impl(m, inputs_host, targets_host, B, T, 1, loss_scale, NULL, 1);
}

/* The backward's device work (gpt2_graph_run records it), starting with the LM head (head_run): losses, where a
 * training forward's losses go (NULL: written already); dloss = d(loss_scale * mean)/d(loss_i) = loss_scale /
 * n_valid, 0 when no target counted (no gradient from the head). Every layer's weight gradient takes one product
 * per backward, so on zeroed buffers (dw_overwrite) each may write instead of add (v0.26: ~38 us a layer at GPT-2
 * XL on an H100). No padding: gpt2_graph_key hashes its bytes. */
typedef struct {
    float *losses;
    float dloss;
    int dw_overwrite; /* the gradient buffers hold zeros (gpt2_model.grads_zero): the products write them */
} backward_pass;

static void backward_device(gpt2_model *m, void *arg) {
    const backward_pass *bp = arg;
    zg_backend *be = m->be;
    const zg_backend_ops *op = be->ops;
    act_index *ix = m->act_index;
    int B = m->B, T = m->T, N = B * T;
    int C = m->cfg.n_embd, NH = m->cfg.n_head, L = m->cfg.n_layer;
    size_t asz = zg_dtype_size(be->act_dtype);

    gpt2_hook_before(m, -1, 1);
    /* with GPT2_LN_FROM_OUTPUT every LayerNorm backward reads its output (x = NULL) */
    int from_out = (m->recompute & GPT2_LN_FROM_OUTPUT) != 0;
    /* LM head, chunk by chunk: the logits, the classifier (the losses, d loss / d logits), dwte += dlogits^T @ lnf,
     * then dlnf (N,C) = dlogits @ wte into a buffer dead from here to the next forward, since the logits'
     * region holds the gradients only once the head is done: lnf itself (the input form's LayerNorm backward
     * reads resid[L], not lnf), or with GPT2_LN_FROM_OUTPUT resid[L] (that form reads lnf, and no backward
     * reads the residual stream) */
    void *dlnf = from_out ? ix->resid[L] : ix->lnf;
    if (bp->dloss != 0.0f) {
        head_pass h = {1, 1, bp->losses, bp->dloss, dlnf};
        head_run(m, &h);
    } else { /* no target counted: the losses still written, no gradient from the head */
        if (bp->losses) {
            head_pass h = {1, 1, bp->losses, 0.0f, NULL};
            head_run(m, &h);
        }
        GPT2_PROFILED(m, 1, GPT2_OP_CLASSIFIER, { op->zero(be, dlnf, (size_t)N * C * asz); });
    }
    /* the logits (N,Vp) are dead until the next forward writes them: the region's end holds dres, dsmall
     * and dbig from here on, and its front is lent to the layers' backward as the ops' workspace (the
     * attention backward's; backend.h, scratch_lend), ordered on the stream (layout_acts) */
    if (op->scratch_lend && ix->lend_bytes > 0) op->scratch_lend(be, ix->logits, ix->lend_bytes);
    int lnf_w = gpt2_tensor_lnf_w(&m->table), lnf_b = gpt2_tensor_lnf_b(&m->table);
    GPT2_PROFILED(m, 1, GPT2_OP_LAYERNORM, {
        op->zero(be, ix->dres, (size_t)N * C * asz);
        op->layernorm_backward(be, ix->dres, tensor_ptr(m, 1, lnf_w), tensor_ptr(m, 1, lnf_b), dlnf,
                               from_out ? NULL : ix->resid[L], from_out ? ix->lnf : NULL, tensor_ptr(m, 0, lnf_w),
                               tensor_ptr(m, 0, lnf_b), ix->lnf_mean, ix->lnf_rstd, N, C, NULL, NULL);
    });
    hook_ready(m, m->table.layer_begin[L], m->table.num_params - m->table.layer_begin[L]);

    for (int l = L - 1; l >= 0; l--) {
        gpt2_hook_before(m, l, 1);
        layer_params p = gpt2_layer_ptrs(m, 0, l);
        layer_params g = gpt2_layer_ptrs(m, 1, l);
        layer_acts *a = &ix->layers[l];
        /* dres holds d out = d r2 (direct) = d (fc projection). The two projections' bias gradients are the column
         * sums of dres before and after LN2's backward, which that op takes as it reads and writes dres (backend.h) */
        if (layer_recomputes(m->recompute, m->recompute_layers, l, GPT2_RECOMPUTE_GELU)) {
            GPT2_PROFILED(m, 1, GPT2_OP_GELU, { op->gelu_forward(be, a->fch_gelu, a->fch, (size_t)N * 4 * C); });
        }
        GPT2_PROFILED(m, 1, GPT2_OP_MATMUL, {
            op->matmul_backward(be, ix->dbig, g.fcprojw, NULL, ix->dres, a->fch_gelu, p.fcprojw, a->fch, N, 4 * C, C,
                                bp->dw_overwrite);
        });
        if (layer_recomputes(m->recompute, m->recompute_layers, l,
                             GPT2_RECOMPUTE_LN2)) { /* ln2 = LN(r2) again: bitwise equal */
            GPT2_PROFILED(m, 1, GPT2_OP_LAYERNORM,
                          { op->layernorm_forward(be, a->ln2, NULL, NULL, a->r2, p.ln2w, p.ln2b, N, C); });
        }
        GPT2_PROFILED(m, 1, GPT2_OP_MATMUL, {
            op->matmul_backward(be, ix->dsmall, g.fcw, g.fcb, ix->dbig, a->ln2, p.fcw, NULL, N, C, 4 * C,
                                bp->dw_overwrite);
        });
        GPT2_PROFILED(m, 1, GPT2_OP_LAYERNORM, {
            op->layernorm_backward(be, ix->dres, g.ln2w, g.ln2b, ix->dsmall, from_out ? NULL : a->r2, a->ln2, p.ln2w,
                                   p.ln2b, a->ln2_mean, a->ln2_rstd, N, C, g.fcprojb, g.attprojb);
        });
        /* dres = d r2 = d x (direct) = d (attention projection) */
        GPT2_PROFILED(m, 1, GPT2_OP_MATMUL, {
            op->matmul_backward(be, ix->dsmall, g.attprojw, NULL, ix->dres, a->atty, p.attprojw, NULL, N, C, C,
                                bp->dw_overwrite);
        });
        GPT2_PROFILED(m, 1, GPT2_OP_ATTENTION, {
            op->attention_backward(be, ix->dbig, ix->dsmall, a->qkv, a->atty, a->att_stats, B, T, C, NH);
        });
        if (layer_recomputes(m->recompute, m->recompute_layers, l, GPT2_RECOMPUTE_LN1)) { /* ln1 = LN(x) again */
            GPT2_PROFILED(m, 1, GPT2_OP_LAYERNORM,
                          { op->layernorm_forward(be, a->ln1, NULL, NULL, ix->resid[l], p.ln1w, p.ln1b, N, C); });
        }
        GPT2_PROFILED(m, 1, GPT2_OP_MATMUL, {
            op->matmul_backward(be, ix->dsmall, g.qkvw, g.qkvb, ix->dbig, a->ln1, p.qkvw, NULL, N, C, 3 * C,
                                bp->dw_overwrite);
        });
        GPT2_PROFILED(m, 1, GPT2_OP_LAYERNORM, {
            op->layernorm_backward(be, ix->dres, g.ln1w, g.ln1b, ix->dsmall, from_out ? NULL : ix->resid[l], a->ln1,
                                   p.ln1w, p.ln1b, a->ln1_mean, a->ln1_rstd, N, C, NULL, NULL);
        });
        gpt2_hook_after(m, l, 1);
        hook_ready(m, m->table.layer_begin[l], m->table.layer_begin[l + 1] - m->table.layer_begin[l]);
    }
    if (op->scratch_lend && ix->lend_bytes > 0) op->scratch_lend(be, NULL, 0);
    GPT2_PROFILED(m, 1, GPT2_OP_ENCODER, {
        op->encoder_backward(be, tensor_ptr(m, 1, GPT2_T_WTE), tensor_ptr(m, 1, GPT2_T_WPE), ix->dres, m->tokens, B, T,
                             C);
    });
    gpt2_hook_after(m, -1, 1);
    hook_ready(m, 0, m->table.layer_begin[0]);
}

void gpt2_backward(gpt2_model *m, float loss_scale) {
    if (!m->has_targets) ZG_FATAL("gpt2_backward called without a forward pass with targets");
    if (m->recompute & GPT2_FORWARD_ONLY) ZG_FATAL("gpt2_backward on a forward-only model (GPT2_FORWARD_ONLY)");
    if (m->head_pending && m->head_loss_scale != loss_scale)
        ZG_FATAL("gpt2_backward(loss_scale %g) after gpt2_forward_train(loss_scale %g): pass the same scale",
                 (double)loss_scale, (double)m->head_loss_scale);
    /* Gradients: the flat buffer (gpt2_grads_alloc) or per-group buffers (grad_group, set before or by the
     * before_layer hook, as ZeRO stages 2-3 do); a missing one is fatal where it is first used.
     * d(mean loss)/d(loss_i) = 1/n_valid; the classifier writes d(loss_scale * mean)/d(logits) */
    float dloss = m->n_valid_targets > 0 ? loss_scale / (float)m->n_valid_targets : 0.0f;
    float *losses = m->head_pending ? m->head_losses : NULL;
    backward_pass bp = {losses, dloss, m->grads_zero};
    if (gpt2_graph_usable(m)) {
        /* recorded: a training forward's losses go to the slot after the ring's (one address in every replay),
         * copied into theirs after it */
        size_t N = (size_t)m->B * m->T;
        if (losses) bp.losses = m->losses + (size_t)m->loss_slots * N;
        gpt2_graph_run(m, GPT2_PASS_BACKWARD, gpt2_graph_key(m, &bp, sizeof bp), backward_device, &bp);
        if (losses) m->be->ops->copy(m->be, losses, bp.losses, N * sizeof(float));
    } else {
        backward_device(m, &bp);
    }
    m->has_targets = 0; /* the logits' region now holds the backward's gradients */
    m->head_pending = 0;
    m->head_losses = NULL;
    m->grads_zero = 0;
}

void gpt2_logits(gpt2_model *m, int t, float *out) {
    act_index *ix = m->act_index;
    if (ix == NULL || ix->head_rows < m->B * m->T)
        ZG_FATAL("gpt2_logits: the logits of every row are not kept (the LM head runs in chunks: head_chunks %d)",
                 m->head_chunks);
    int V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size;
    size_t asz = zg_dtype_size(m->be->act_dtype);
    for (int b = 0; b < m->B; b++)
        m->be->ops->download_f32(m->be, out + (size_t)b * V, (char *)ix->logits + ((size_t)b * m->T + t) * Vp * asz,
                                 m->be->act_dtype, (size_t)V);
}
