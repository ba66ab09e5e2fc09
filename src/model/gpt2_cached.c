/* GPT-2's KV-cache forward for sampling: the cache (every layer's K and V in one allocation), the
 * prefill of a prompt (positions pos..pos+Tn-1), the decode step (one position held in device memory, so
 * that a recorded graph replays at the next position) and the logits of each row's last position. */
#include "model/gpt2.h"
#include "model/gpt2_internal.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* ---- KV-cache forward --------------------------------------------------------------------------- */

typedef struct {
    int B, maxT;
    void *cache;             /* every layer's K and V in one allocation (one call, not 2 per layer) */
    void **kcache, **vcache; /* per layer (B,NH,maxT,hs): slices of cache */
    /* work buffers for up to B*maxT rows */
    void *x, *y, *ln, *qkv, *atty, *fch, *fchg; /* y: the residual stream after attention */
    void *last;                                 /* (B,C) last-position rows of ln_f (prefill) */
    void *logits;                               /* (B,Vp) */
    int32_t *tok;                               /* (B,maxT) token ids of one call */
} kv_state;

void gpt2_kv_free(gpt2_model *m) {
    kv_state *kv = m->kv;
    if (kv == NULL) return;
    zg_backend *be = m->be;
    void *bufs[] = {kv->cache, kv->x,    kv->y,    kv->ln,     kv->qkv, kv->atty,
                    kv->fch,   kv->fchg, kv->last, kv->logits, kv->tok};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->ops->dealloc(be, bufs[i]);
    free(kv->kcache);
    free(kv->vcache);
    free(kv);
    m->kv = NULL;
}

int gpt2_kv_alloc(gpt2_model *m, int B, int maxT) {
    if (B < 1 || maxT < 1 || maxT > m->cfg.block_size)
        return zg_errorf("KV cache for %d sequences of %d positions: need at least 1 and at most block_size %d "
                         "positions",
                         B, maxT, m->cfg.block_size);
    gpt2_kv_free(m);
    zg_backend *be = m->be;
    size_t asz = zg_dtype_size(be->act_dtype), C = (size_t)m->cfg.n_embd, N = (size_t)B * maxT;
    kv_state *kv = zg_calloc(1, sizeof *kv);
    m->kv = kv;
    kv->B = B;
    kv->maxT = maxT;
    kv->kcache = zg_calloc((size_t)m->cfg.n_layer, sizeof(void *));
    kv->vcache = zg_calloc((size_t)m->cfg.n_layer, sizeof(void *));
    /* each layer's K and V slice starts 256-byte aligned (the backends' vector loads) */
    size_t slice = (N * C * asz + 255) / 256 * 256;
    kv->cache = be->ops->alloc(be, 2 * (size_t)m->cfg.n_layer * slice, "KV cache");
    int ok = kv->cache != NULL;
    for (int l = 0; l < m->cfg.n_layer && ok; l++) {
        kv->kcache[l] = (char *)kv->cache + 2 * (size_t)l * slice;
        kv->vcache[l] = (char *)kv->cache + (2 * (size_t)l + 1) * slice;
    }
    struct {
        void **p;
        size_t bytes;
    } w[] = {{&kv->x, N * C * asz},
             {&kv->y, N * C * asz},
             {&kv->ln, N * C * asz},
             {&kv->qkv, N * 3 * C * asz},
             {&kv->atty, N * C * asz},
             {&kv->fch, N * 4 * C * asz},
             {&kv->fchg, N * 4 * C * asz},
             {&kv->last, (size_t)B * C * asz},
             {&kv->logits, (size_t)B * m->cfg.padded_vocab_size * asz},
             {(void **)&kv->tok, N * sizeof(int32_t)}};
    for (size_t i = 0; i < sizeof w / sizeof w[0] && ok; i++) {
        *w[i].p = be->ops->alloc(be, w[i].bytes, "sampling buffers");
        ok = *w[i].p != NULL;
    }
    if (!ok) {
        gpt2_kv_free(m);
        return -1;
    }
    return 0;
}

/* The layers and LM head of a cached forward over kv->x (B*Tn rows, embedded already): positions
 * pos..pos+Tn-1, or with pos_dev (Tn 1) the position in backend memory (a decode step). Logits of each
 * row's last position go to kv->logits (B,Vp). */
static void cached_body(gpt2_model *m, int B, int Tn, int pos, const int32_t *pos_dev) {
    kv_state *kv = m->kv;
    zg_backend *be = m->be;
    const zg_backend_ops *op = be->ops;
    int C = m->cfg.n_embd, NH = m->cfg.n_head, L = m->cfg.n_layer, N = B * Tn, Vp = m->cfg.padded_vocab_size;
    size_t asz = zg_dtype_size(be->act_dtype);
    for (int l = 0; l < L; l++) {
        gpt2_hook_before(m, l, 0);
        layer_params p = gpt2_layer_ptrs(m, 0, l);
        /* LayerNorm and product as one op: a backend fuses them for a decode step's few rows */
        op->layernorm_matmul_forward(be, kv->qkv, NULL, kv->ln, kv->x, p.ln1w, p.ln1b, p.qkvw, p.qkvb, N, C, 3 * C);
        if (pos_dev)
            op->attention_decode(be, kv->atty, kv->qkv, kv->kcache[l], kv->vcache[l], pos_dev, B, kv->maxT, C, NH);
        else
            op->attention_forward_cached(be, kv->atty, kv->qkv, kv->kcache[l], kv->vcache[l], B, Tn, pos, kv->maxT, C,
                                         NH);
        /* y = x + atty @ Wproj^T + b; x = y + gelu(ln2(y) @ Wfc^T + b) @ Wfcproj^T + b (residual adds fused) */
        op->matmul_forward(be, kv->y, NULL, kv->atty, p.attprojw, p.attprojb, kv->x, N, C, C);
        op->layernorm_matmul_forward(be, kv->fchg, kv->fch, kv->ln, kv->y, p.ln2w, p.ln2b, p.fcw, p.fcb, N, C, 4 * C);
        op->matmul_forward(be, kv->x, NULL, kv->fchg, p.fcprojw, p.fcprojb, kv->y, N, 4 * C, C);
        gpt2_hook_after(m, l, 0);
    }
    /* only the last new position of each sequence needs logits: gather those rows (B,C) */
    void *last = kv->x;
    if (Tn > 1) {
        for (int b = 0; b < B; b++)
            op->copy(be, (char *)kv->last + (size_t)b * C * asz, (char *)kv->x + ((size_t)b * Tn + Tn - 1) * C * asz,
                     (size_t)C * asz);
        last = kv->last;
    }
    op->layernorm_forward(be, kv->y, NULL, NULL, last, gpt2_param_ptr(m, gpt2_tensor_lnf_w(&m->table)),
                          gpt2_param_ptr(m, gpt2_tensor_lnf_b(&m->table)), B, C);
    op->matmul_forward(be, kv->logits, NULL, kv->y, gpt2_param_ptr(m, GPT2_T_WTE), NULL, NULL, B, C, Vp);
    gpt2_hook_after(m, -1, 0);
}

static int kv_check(const gpt2_model *m, int B, int Tn, int pos) {
    const kv_state *kv = m->kv;
    if (kv == NULL) return zg_errorf("gpt2_forward_cached: no KV cache (call gpt2_kv_alloc first)");
    if (B != kv->B || Tn < 1 || pos < 0 || pos + Tn > kv->maxT)
        return zg_errorf("KV cache holds %d sequences of %d positions; asked for %d sequences at positions %d..%d",
                         kv->B, kv->maxT, B, pos, pos + Tn - 1);
    return 0;
}

int gpt2_forward_cached_dev(gpt2_model *m, const int32_t *tokens, int B, int Tn, int pos) {
    if (kv_check(m, B, Tn, pos) != 0) return -1;
    kv_state *kv = m->kv;
    zg_backend *be = m->be;
    int C = m->cfg.n_embd;
    size_t psz = zg_dtype_size(be->param_dtype);
    /* encoder with positions pos..pos+Tn-1: the wpe rows start at pos */
    void *wpe = (char *)gpt2_param_ptr(m, GPT2_T_WPE) + (size_t)pos * C * psz;
    gpt2_hook_before(m, -1, 0);
    be->ops->encoder_forward(be, kv->x, tokens, gpt2_param_ptr(m, GPT2_T_WTE), wpe, B, Tn, C);
    cached_body(m, B, Tn, pos, NULL);
    return 0;
}

void gpt2_decode_step(gpt2_model *m, const int32_t *tokens, const int32_t *pos) {
    kv_state *kv = m->kv;
    zg_backend *be = m->be;
    gpt2_hook_before(m, -1, 0);
    be->ops->encoder_forward_at(be, kv->x, tokens, gpt2_param_ptr(m, GPT2_T_WTE), gpt2_param_ptr(m, GPT2_T_WPE), pos,
                                kv->B, m->cfg.n_embd);
    cached_body(m, kv->B, 1, 0, pos);
}

void *gpt2_kv_logits(const gpt2_model *m) { return m->kv ? ((kv_state *)m->kv)->logits : NULL; }

int gpt2_forward_cached(gpt2_model *m, const int32_t *tokens_host, int B, int Tn, int pos, float *logits_out) {
    if (kv_check(m, B, Tn, pos) != 0) return -1;
    if (gpt2_check_tokens(m, tokens_host, (size_t)B * Tn, 0, "token") != 0) return -1;
    kv_state *kv = m->kv;
    zg_backend *be = m->be;
    int V = m->cfg.vocab_size, Vp = m->cfg.padded_vocab_size;
    size_t asz = zg_dtype_size(be->act_dtype);
    be->ops->upload(be, kv->tok, tokens_host, (size_t)B * Tn * sizeof(int32_t));
    if (gpt2_forward_cached_dev(m, kv->tok, B, Tn, pos) != 0) return -1;
    for (int b = 0; b < B; b++)
        be->ops->download_f32(be, logits_out + (size_t)b * V, (char *)kv->logits + (size_t)b * Vp * asz, be->act_dtype,
                              (size_t)V);
    return 0;
}
