/* GPT-2's parameters: the named models and configs, the parameter table (the flat layout: docs/FORMATS.md), the
 * optimizer's segments, and the random initialisation (GPT-2's: N(0, 0.02), the residual projections scaled by
 * 1/sqrt(2 n_layer), counter-based so the fill runs in parallel). The model over them is gpt2.c. */
#include "model/gpt2.h"
#include "model/gpt2_internal.h"

#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPT2_MAX_DIM 1000000

/* ---- configs ------------------------------------------------------------------------------------ */

static const gpt2_named_model NAMED[] = {
    {"gpt2", "openai-community/gpt2", "gpt2", 12, 12, 768},
    {"gpt2-medium", "openai-community/gpt2-medium", "gpt2-medium", 24, 16, 1024},
    {"gpt2-large", "openai-community/gpt2-large", "gpt2-large", 36, 20, 1280},
    {"gpt2-xl", "openai-community/gpt2-xl", "gpt2-xl", 48, 25, 1600},
    {"distilgpt2", "distilbert/distilgpt2", "distilgpt2", 6, 12, 768},
};
#define N_NAMED (sizeof NAMED / sizeof NAMED[0])

const gpt2_named_model *gpt2_named_find(const char *name) {
    for (size_t i = 0; i < N_NAMED; i++)
        if (strcmp(name, NAMED[i].name) == 0) return &NAMED[i];
    return NULL;
}

const gpt2_named_model *gpt2_named_by_shape(int n_layer, int n_embd) {
    for (size_t i = 0; i < N_NAMED; i++)
        if (NAMED[i].n_layer == n_layer && NAMED[i].n_embd == n_embd) return &NAMED[i];
    return NULL;
}

const char *gpt2_named_list(char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_NAMED && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", NAMED[i].name);
    return buf;
}

int gpt2_config_by_name(const char *name, gpt2_config *cfg) {
    const gpt2_named_model *n = gpt2_named_find(name);
    char names[GPT2_NAMED_LIST_CAP];
    if (n == NULL)
        return zg_errorf("unknown model '%s': use one of %s (or set n_layer, n_head, n_embd)", name,
                         gpt2_named_list(names, sizeof names));
    memset(cfg, 0, sizeof *cfg);
    cfg->n_layer = n->n_layer;
    cfg->n_head = n->n_head;
    cfg->n_embd = n->n_embd;
    cfg->block_size = 1024;
    cfg->vocab_size = 50257;
    return gpt2_config_validate(cfg);
}

int gpt2_config_validate(gpt2_config *cfg) {
    if (cfg->n_layer < 1 || cfg->n_layer > 1000)
        return zg_errorf("n_layer = %d is out of range: use 1..1000", cfg->n_layer);
    if (cfg->n_head < 1 || cfg->n_head > 1000)
        return zg_errorf("n_head = %d is out of range: use 1..1000", cfg->n_head);
    if (cfg->n_embd < 1 || cfg->n_embd > 100000)
        return zg_errorf("n_embd = %d is out of range: use 1..100000", cfg->n_embd);
    if (cfg->n_embd % cfg->n_head != 0)
        return zg_errorf("n_embd = %d is not divisible by n_head = %d: choose n_embd a multiple of n_head", cfg->n_embd,
                         cfg->n_head);
    if (cfg->block_size < 1 || cfg->block_size > GPT2_MAX_DIM)
        return zg_errorf("block_size = %d is out of range: use 1..%d", cfg->block_size, GPT2_MAX_DIM);
    if (cfg->vocab_size < 1 || cfg->vocab_size > 10 * GPT2_MAX_DIM)
        return zg_errorf("vocab_size = %d is out of range: use 1..%d", cfg->vocab_size, 10 * GPT2_MAX_DIM);
    cfg->padded_vocab_size = (cfg->vocab_size + 127) / 128 * 128;
    return 0;
}

/* ---- parameter table ---------------------------------------------------------------------------- */

static void table_add(gpt2_param_table *t, size_t *off, const char *name, int layer, int d0, int d1, int decay) {
    gpt2_tensor *x = &t->tensors[t->n_tensors++];
    memset(x, 0, sizeof *x);
    if (layer >= 0)
        snprintf(x->name, sizeof x->name, "h.%d.%s", layer, name);
    else
        snprintf(x->name, sizeof x->name, "%s", name);
    x->offset = *off;
    x->ndim = d1 > 0 ? 2 : 1;
    x->shape[0] = d0;
    x->shape[1] = d1 > 0 ? d1 : 0;
    x->numel = (size_t)d0 * (size_t)(d1 > 0 ? d1 : 1);
    x->layer = layer;
    x->decay = decay;
    *off += x->numel;
}

int gpt2_param_table_init(gpt2_param_table *t, const gpt2_config *cfg_in) {
    gpt2_config cfg = *cfg_in;
    memset(t, 0, sizeof *t);
    if (gpt2_config_validate(&cfg) != 0) return -1;
    int L = cfg.n_layer, C = cfg.n_embd;
    t->tensors = zg_calloc((size_t)L * GPT2_LAYER_TENSORS + 4, sizeof(gpt2_tensor));
    t->layer_begin = zg_calloc((size_t)L + 1, sizeof(size_t));
    size_t off = 0;
    table_add(t, &off, "wte", -1, cfg.padded_vocab_size, C, 1);
    table_add(t, &off, "wpe", -1, cfg.block_size, C, 0);
    for (int l = 0; l < L; l++) {
        t->layer_begin[l] = off;
        table_add(t, &off, "ln_1.weight", l, C, 0, 0);
        table_add(t, &off, "ln_1.bias", l, C, 0, 0);
        table_add(t, &off, "attn.c_attn.weight", l, 3 * C, C, 1);
        table_add(t, &off, "attn.c_attn.bias", l, 3 * C, 0, 0);
        table_add(t, &off, "attn.c_proj.weight", l, C, C, 1);
        table_add(t, &off, "attn.c_proj.bias", l, C, 0, 0);
        table_add(t, &off, "ln_2.weight", l, C, 0, 0);
        table_add(t, &off, "ln_2.bias", l, C, 0, 0);
        table_add(t, &off, "mlp.c_fc.weight", l, 4 * C, C, 1);
        table_add(t, &off, "mlp.c_fc.bias", l, 4 * C, 0, 0);
        table_add(t, &off, "mlp.c_proj.weight", l, C, 4 * C, 1);
        table_add(t, &off, "mlp.c_proj.bias", l, C, 0, 0);
    }
    t->layer_begin[L] = off;
    table_add(t, &off, "ln_f.weight", -1, C, 0, 0);
    table_add(t, &off, "ln_f.bias", -1, C, 0, 0);
    t->num_params = off;
    t->n_layer = L;
    return 0;
}

int gpt2_group_count(const gpt2_param_table *t) { return t->n_layer + 2; }

int gpt2_group_of_tensor(const gpt2_param_table *t, int tensor) {
    const gpt2_tensor *x = &t->tensors[tensor];
    if (x->layer >= 0) return x->layer + 1;
    return x->offset < t->layer_begin[0] ? 0 : t->n_layer + 1;
}

void gpt2_group_range(const gpt2_param_table *t, int group, size_t *lo, size_t *hi) {
    int L = t->n_layer;
    if (group == 0) {
        *lo = 0;
        *hi = t->layer_begin[0];
    } else if (group <= L) {
        *lo = t->layer_begin[group - 1];
        *hi = t->layer_begin[group];
    } else {
        *lo = t->layer_begin[L];
        *hi = t->num_params;
    }
}

void gpt2_param_table_free(gpt2_param_table *t) {
    free(t->tensors);
    free(t->layer_begin);
    memset(t, 0, sizeof *t);
}

const gpt2_tensor *gpt2_param_table_find(const gpt2_param_table *t, const char *name) {
    for (int i = 0; i < t->n_tensors; i++)
        if (strcmp(t->tensors[i].name, name) == 0) return &t->tensors[i];
    return NULL;
}

size_t gpt2_param_count_unpadded(const gpt2_config *cfg) {
    size_t C = (size_t)cfg->n_embd;
    size_t per_layer = 12 * C * C + 13 * C;
    return (size_t)cfg->vocab_size * C + (size_t)cfg->block_size * C + (size_t)cfg->n_layer * per_layer + 2 * C;
}

int gpt2_param_segments(const gpt2_param_table *t, float weight_decay, zg_segment **out) {
    zg_segment *segs = zg_malloc((size_t)(t->n_tensors > 0 ? t->n_tensors : 1) * sizeof *segs);
    int n = 0, prev = -1;
    for (int i = 0; i < t->n_tensors; i++) {
        const gpt2_tensor *x = &t->tensors[i];
        if (n > 0 && x->decay == prev && segs[n - 1].offset + segs[n - 1].count == x->offset) {
            segs[n - 1].count += x->numel;
        } else {
            segs[n].offset = x->offset;
            segs[n].count = x->numel;
            segs[n].weight_decay = x->decay ? weight_decay : 0.0f;
            n++;
        }
        prev = x->decay;
    }
    *out = segs;
    return n;
}

/* ---- initialisation ----------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Standard normal number i of stream `key`: counter-based (Box-Muller on two hashed uniforms), so
 * every element is a pure function of (seed, tensor, index) and the fill can run in parallel. */
static float normal_at(uint64_t key, uint64_t i) {
    uint64_t a = splitmix64(key ^ splitmix64(2 * i));
    uint64_t b = splitmix64(key ^ splitmix64(2 * i + 1));
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0, 1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);         /* [0, 1) */
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

void gpt2_init_random(gpt2_model *m, uint64_t seed) {
    const gpt2_param_table *t = &m->table;
    size_t maxn = 0;
    for (int i = 0; i < t->n_tensors; i++) maxn = t->tensors[i].numel > maxn ? t->tensors[i].numel : maxn;
    float *buf = zg_malloc(maxn * sizeof(float));
    float resid_std = 0.02f / sqrtf(2.0f * (float)m->cfg.n_layer);
    size_t asz = zg_dtype_size(m->be->param_dtype);
    for (int k = 0; k < t->n_tensors; k++) {
        const gpt2_tensor *x = &t->tensors[k];
        long n = (long)x->numel;
        if (ends_with(x->name, ".bias")) {
            memset(buf, 0, x->numel * sizeof(float));
        } else if (ends_with(x->name, "ln_1.weight") || ends_with(x->name, "ln_2.weight") ||
                   strcmp(x->name, "ln_f.weight") == 0) {
            for (long i = 0; i < n; i++) buf[i] = 1.0f;
        } else {
            float std = (ends_with(x->name, "attn.c_proj.weight") || ends_with(x->name, "mlp.c_proj.weight"))
                            ? resid_std
                            : 0.02f;
            uint64_t key = splitmix64(seed ^ splitmix64(0x5eed0000ull + (uint64_t)k));
            long limit = n;
            if (strcmp(x->name, "wte") == 0) limit = (long)m->cfg.vocab_size * m->cfg.n_embd; /* padded rows 0 */
#pragma omp parallel for schedule(static)
            for (long i = 0; i < n; i++) buf[i] = i < limit ? std * normal_at(key, (uint64_t)i) : 0.0f;
        }
        m->be->ops->upload_f32(m->be, (char *)m->params + x->offset * asz, m->be->param_dtype, buf, x->numel);
    }
    free(buf);
}
