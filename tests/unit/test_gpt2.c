/* GPT-2 model: configs and parameter table, initialisation statistics, a whole-model gradient
 * check, the logits' memory shared by the backward, hooks, GELU recompute, the KV-cache forward, HF
 * export/import round trips and bad files. */
#include "backend/backend.h"
#include "core/error.h"
#include "core/fileio.h"
#include "model/gpt2.h"
#include "model/hf.h"
#include "model/safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static zg_backend *BE;

static gpt2_config tiny_config(void) {
    gpt2_config c = {2, 2, 16, 8, 40, 0};
    gpt2_config_validate(&c);
    return c;
}

/* Random parameters large enough that every path carries signal; LayerNorm weights around 1. */
static float *random_params(const gpt2_param_table *t, uint64_t seed, float scale) {
    float *p = zg_malloc(t->num_params * sizeof(float));
    uint64_t s = seed;
    for (int i = 0; i < t->n_tensors; i++) {
        const gpt2_tensor *x = &t->tensors[i];
        int is_ln_w = strstr(x->name, "ln_") && strstr(x->name, ".weight");
        for (size_t k = 0; k < x->numel; k++) p[x->offset + k] = (is_ln_w ? 1.0f : 0.0f) + scale * zt_rand_uniform(&s);
    }
    return p;
}

static void test_param_table(void) {
    gpt2_config c;
    ZT_CHECK(gpt2_config_by_name("gpt2", &c) == 0);
    ZT_CHECK(c.n_layer == 12 && c.n_head == 12 && c.n_embd == 768 && c.padded_vocab_size == 50304);
    ZT_CHECK(gpt2_param_count_unpadded(&c) == 124439808u);
    gpt2_param_table t;
    ZT_CHECK(gpt2_param_table_init(&t, &c) == 0);
    ZT_CHECK(t.num_params == 124439808u + (50304u - 50257u) * 768u);
    ZT_CHECK(t.n_tensors == 2 + 12 * 12 + 2);
    size_t off = 0;
    int contiguous = 1;
    for (int i = 0; i < t.n_tensors; i++) {
        contiguous &= t.tensors[i].offset == off;
        off += t.tensors[i].numel;
    }
    ZT_CHECK(contiguous && off == t.num_params);
    const gpt2_tensor *x = gpt2_param_table_find(&t, "h.3.attn.c_attn.weight");
    ZT_CHECK(x && x->shape[0] == 3 * 768 && x->shape[1] == 768 && x->layer == 3 && x->decay == 1);
    ZT_CHECK(x->offset >= t.layer_begin[3] && x->offset < t.layer_begin[4]);
    ZT_CHECK(gpt2_param_table_find(&t, "wpe")->decay == 0 && gpt2_param_table_find(&t, "wte")->decay == 1);
    ZT_CHECK(gpt2_param_table_find(&t, "h.0.ln_1.weight")->decay == 0);
    ZT_CHECK(t.layer_begin[0] == (50304u + 1024u) * 768u);
    zg_segment *segs;
    int ns = gpt2_param_segments(&t, 0.1f, &segs);
    size_t decayed = 0, total = 0;
    for (int i = 0; i < ns; i++) {
        total += segs[i].count;
        if (segs[i].weight_decay > 0) decayed += segs[i].count;
    }
    ZT_CHECK(total == t.num_params);
    ZT_CHECK(decayed == 50304u * 768u + 12u * 12u * 768u * 768u);
    free(segs);
    gpt2_param_table_free(&t);
    /* the released models' parameter counts as transformers reports them (distilgpt2: 81,912,576) */
    const char *names[4] = {"gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2"};
    size_t counts[4] = {354823168u, 774030080u, 1557611200u, 81912576u};
    for (int i = 0; i < 4; i++) {
        ZT_CHECK(gpt2_config_by_name(names[i], &c) == 0);
        ZT_CHECK(gpt2_param_count_unpadded(&c) == counts[i]);
        const gpt2_named_model *nm = gpt2_named_by_shape(c.n_layer, c.n_embd);
        ZT_CHECK(nm != NULL && strcmp(nm->name, names[i]) == 0 && gpt2_named_find(names[i]) == nm);
    }
    ZT_CHECK(strcmp(gpt2_named_find("distilgpt2")->repo, "distilbert/distilgpt2") == 0);
    ZT_CHECK(gpt2_named_by_shape(5, 768) == NULL && gpt2_named_find("gpt3") == NULL);
    ZT_CHECK(gpt2_config_by_name("gpt3", &c) == -1 && strstr(zg_error_message(), "gpt3") != NULL &&
             strstr(zg_error_message(), "gpt2-xl, distilgpt2") != NULL);
    gpt2_config bad = {2, 3, 16, 8, 40, 0};
    ZT_CHECK(gpt2_config_validate(&bad) == -1 && strstr(zg_error_message(), "n_head") != NULL);
}

static void test_init_statistics(void) {
    gpt2_config c = {4, 4, 128, 64, 1000, 0};
    gpt2_config_validate(&c);
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, &c, BE) == 0);
    gpt2_init_random(&m, 1234);
    float *p = zg_malloc(m.table.num_params * 4);
    gpt2_params_download(&m, p);
    for (int i = 0; i < m.table.n_tensors; i++) {
        const gpt2_tensor *x = &m.table.tensors[i];
        size_t n = x->numel;
        if (strcmp(x->name, "wte") == 0) n = (size_t)c.vocab_size * c.n_embd;
        double s = 0, s2 = 0;
        for (size_t k = 0; k < n; k++) {
            s += p[x->offset + k];
            s2 += (double)p[x->offset + k] * p[x->offset + k];
        }
        double mean = s / n, sd = sqrt(s2 / n - mean * mean);
        if (strstr(x->name, ".bias")) {
            ZT_CHECK_MSG(s2 == 0.0, "%s is not zero", x->name);
        } else if (strstr(x->name, "ln_")) {
            ZT_CHECK_MSG(mean == 1.0 && sd < 1e-7, "%s is not all ones", x->name);
        } else {
            double want = strstr(x->name, "c_proj.weight") ? 0.02 / sqrt(2.0 * c.n_layer) : 0.02;
            ZT_CHECK_MSG(fabs(mean) < 4 * want / sqrt((double)n) + 1e-6, "%s mean %g", x->name, mean);
            ZT_CHECK_MSG(fabs(sd - want) < 0.05 * want, "%s std %g, expected %g", x->name, sd, want);
        }
    }
    const gpt2_tensor *wte = gpt2_param_table_find(&m.table, "wte");
    int pad_zero = 1;
    for (size_t k = (size_t)c.vocab_size * c.n_embd; k < wte->numel; k++) pad_zero &= p[wte->offset + k] == 0.0f;
    ZT_CHECK_MSG(pad_zero, "padded vocabulary rows are not zero");
    float *q = zg_malloc(m.table.num_params * 4);
    gpt2_init_random(&m, 1234);
    gpt2_params_download(&m, q);
    ZT_CHECK_MSG(memcmp(p, q, m.table.num_params * 4) == 0, "same seed gave different parameters");
    gpt2_init_random(&m, 1235);
    gpt2_params_download(&m, q);
    ZT_CHECK_MSG(memcmp(p, q, m.table.num_params * 4) != 0, "different seeds gave the same parameters");
    free(p);
    free(q);
    gpt2_free(&m);
}

/* ---- whole-model gradient check ----------------------------------------------------------------- */

static void test_model_gradient(void) {
    gpt2_config c = tiny_config();
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, &c, BE) == 0 && gpt2_grads_alloc(&m) == 0);
    float *p = random_params(&m.table, 7, 0.3f);
    gpt2_params_upload(&m, p);
    int B = 2, T = 5;
    int32_t in[10] = {1, 5, 9, 5, 39, 0, 22, 22, 13, 7};
    int32_t tg[10] = {5, 9, 5, 39, 2, 22, -1, 13, 7, 30};
    zt_forward(&m, in, tg, B, T);
    gpt2_backward(&m, 1.0f);
    size_t n = m.table.num_params;
    float *g = zg_malloc(n * 4);
    gpt2_params_upload(&m, p);
    BE->ops->download_f32(BE, g, m.grads, ZG_F32, n);
    double worst = 0;
    float eps = 1e-2f;
    for (int i = 0; i < m.table.n_tensors; i++) {
        const gpt2_tensor *x = &m.table.tensors[i];
        size_t stride = x->numel / 5 + 1;
        for (size_t k = 0; k < x->numel; k += stride) {
            size_t j = x->offset + k;
            if (strcmp(x->name, "wte") == 0 && k >= (size_t)c.vocab_size * c.n_embd) continue;
            float keep = p[j];
            p[j] = keep + eps;
            gpt2_params_upload(&m, p);
            double lp = zt_forward(&m, in, tg, B, T);
            p[j] = keep - eps;
            gpt2_params_upload(&m, p);
            double lm = zt_forward(&m, in, tg, B, T);
            p[j] = keep;
            double fd = (lp - lm) / (2 * eps);
            double lim = 2e-4 + 2e-2 * fabs(fd);
            double e = fabs(fd - g[j]);
            worst = e / lim > worst ? e / lim : worst;
            ZT_CHECK_MSG(e <= lim, "d loss / d %s[%zu]: backward %.6g, finite difference %.6g", x->name, k, g[j], fd);
        }
    }
    printf("  whole model: worst error / tolerance %.3f\n", worst);
    /* padded vocabulary rows get no gradient */
    const gpt2_tensor *wte = gpt2_param_table_find(&m.table, "wte");
    int pad_zero = 1;
    for (size_t k = (size_t)c.vocab_size * c.n_embd; k < wte->numel; k++) pad_zero &= g[wte->offset + k] == 0.0f;
    ZT_CHECK_MSG(pad_zero, "padded vocabulary rows got gradient");

    /* loss_scale scales the gradient; a second backward accumulates */
    gpt2_params_upload(&m, p);
    gpt2_zero_grad(&m);
    zt_forward(&m, in, tg, B, T);
    gpt2_backward(&m, 4.0f);
    float *g4 = zg_malloc(n * 4);
    BE->ops->download_f32(BE, g4, m.grads, ZG_F32, n);
    zt_forward(&m, in, tg, B, T);
    gpt2_backward(&m, 1.0f);
    float *g5 = zg_malloc(n * 4);
    BE->ops->download_f32(BE, g5, m.grads, ZG_F32, n);
    double e4 = 0, e5 = 0;
    for (size_t j = 0; j < n; j++) {
        e4 = fmax(e4, fabs(g4[j] - 4.0 * g[j]));
        e5 = fmax(e5, fabs(g5[j] - 5.0 * g[j]));
    }
    ZT_CHECK_MSG(e4 < 1e-5 && e5 < 1e-5, "loss_scale / accumulation: errors %.3g %.3g", e4, e5);

    /* gpt2_forward_train (the forward's classifier writes d loss / d logits) == forward + backward */
    gpt2_zero_grad(&m);
    float l_plain = zt_forward(&m, in, tg, B, T);
    gpt2_backward(&m, 4.0f);
    BE->ops->download_f32(BE, g4, m.grads, ZG_F32, n);
    gpt2_zero_grad(&m);
    float l_train = zt_forward_train(&m, in, tg, B, T, 4.0f);
    gpt2_backward(&m, 4.0f);
    BE->ops->download_f32(BE, g5, m.grads, ZG_F32, n);
    ZT_CHECK_MSG(l_plain == l_train, "gpt2_forward_train loss %.9g vs gpt2_forward %.9g", l_train, l_plain);
    ZT_CHECK_MSG(memcmp(g4, g5, n * 4) == 0, "gpt2_forward_train changed the gradients");

    /* gpt2_forward_train_deferred: the losses read later (a ring of m.loss_slots forwards, read when full)
     * sum to what gpt2_forward_train's losses do, bitwise, over more forwards than the ring holds, with
     * different ignored targets per forward; a plain forward between reads the pending ones first */
    {
        int K = m.loss_slots + 6;
        ZT_CHECK_MSG(m.loss_slots >= 2, "the ring has %d slots", m.loss_slots);
        double want = 0, got;
        int32_t tk[10];
        for (int k = 0; k < K; k++) {
            memcpy(tk, tg, sizeof tk);
            tk[k % 10] = -1;
            want += zt_forward_train(&m, in, tk, B, T, 1.0f);
        }
        for (int k = 0; k < K; k++) {
            memcpy(tk, tg, sizeof tk);
            tk[k % 10] = -1;
            ZT_CHECK(gpt2_forward_train_deferred(&m, in, tk, B, T, 1.0f) == 0);
        }
        int cnt = 0;
        got = gpt2_train_losses_take(&m, &cnt);
        ZT_CHECK_MSG(cnt == K && got == want, "deferred losses: %d forwards sum %.17g, gpt2_forward_train %.17g", cnt,
                     got, want);
        ZT_CHECK(gpt2_forward_train_deferred(&m, in, tg, B, T, 1.0f) == 0);
        float lp = zt_forward(&m, in, tg, B, T); /* reads the pending one first (slot 0 is the plain forward's) */
        got = gpt2_train_losses_take(&m, &cnt);
        ZT_CHECK_MSG(cnt == 1 && got == (double)lp, "deferred then plain: %d, %.9g vs %.9g", cnt, got, (double)lp);
        ZT_CHECK(gpt2_train_losses_take(&m, &cnt) == 0.0 && cnt == 0);
    }

    /* GELU recompute gives the same gradients */
    gpt2_model r;
    ZT_CHECK(gpt2_init(&r, &c, BE) == 0 && gpt2_grads_alloc(&r) == 0);
    r.recompute = GPT2_RECOMPUTE_GELU;
    gpt2_params_upload(&r, p);
    zt_forward(&r, in, tg, B, T);
    gpt2_backward(&r, 1.0f);
    BE->ops->download_f32(BE, g4, r.grads, ZG_F32, n);
    ZT_CHECK_MSG(memcmp(g4, g, n * 4) == 0, "recompute_gelu changed the gradients");
    ZT_CHECK(gpt2_activation_bytes(&c, ZG_F32, B, T, 1, 0, 1, 0) < gpt2_activation_bytes(&c, ZG_F32, B, T, 0, 0, 1, 0));
    /* LayerNorm recompute (ln1, ln2 or both; alone and with GELU) gives the same gradients, in less
     * memory; both LayerNorms in less than either alone */
    for (int flags = GPT2_RECOMPUTE_LN1; flags <= (GPT2_RECOMPUTE_LAYERNORM | GPT2_RECOMPUTE_GELU); flags++) {
        gpt2_model q;
        ZT_CHECK(gpt2_init(&q, &c, BE) == 0 && gpt2_grads_alloc(&q) == 0);
        q.recompute = flags;
        gpt2_params_upload(&q, p);
        float lq = zt_forward_train(&q, in, tg, B, T, 1.0f);
        gpt2_backward(&q, 1.0f);
        BE->ops->download_f32(BE, g4, q.grads, ZG_F32, n);
        ZT_CHECK_MSG(memcmp(g4, g, n * 4) == 0, "recompute flags %d changed the gradients", flags);
        ZT_CHECK_MSG(isfinite(lq), "recompute flags %d: loss %g", flags, lq);
        ZT_CHECK(gpt2_activation_bytes(&c, ZG_F32, B, T, flags, 0, 1, 0) <
                 gpt2_activation_bytes(&c, ZG_F32, B, T, flags & 1, 0, 1, 0));
        if ((flags & GPT2_RECOMPUTE_LAYERNORM) == GPT2_RECOMPUTE_LAYERNORM)
            ZT_CHECK(gpt2_activation_bytes(&c, ZG_F32, B, T, flags, 0, 1, 0) <
                     gpt2_activation_bytes(&c, ZG_F32, B, T, flags & ~GPT2_RECOMPUTE_LN2, 0, 1, 0));
        gpt2_free(&q);
    }
    /* recompute in the first layer only (recompute_num_layers 1): same gradients; memory between
     * none and every layer */
    {
        int all = GPT2_RECOMPUTE_GELU | GPT2_RECOMPUTE_LAYERNORM;
        gpt2_model q;
        ZT_CHECK(gpt2_init(&q, &c, BE) == 0 && gpt2_grads_alloc(&q) == 0);
        q.recompute = all;
        q.recompute_layers = 1;
        gpt2_params_upload(&q, p);
        zt_forward_train(&q, in, tg, B, T, 1.0f);
        gpt2_backward(&q, 1.0f);
        BE->ops->download_f32(BE, g4, q.grads, ZG_F32, n);
        ZT_CHECK_MSG(memcmp(g4, g, n * 4) == 0, "recompute in layer 0 only changed the gradients");
        size_t b_none = gpt2_activation_bytes(&c, ZG_F32, B, T, 0, 0, 1, 0),
               b_all = gpt2_activation_bytes(&c, ZG_F32, B, T, all, 0, 1, 0);
        size_t b_one = gpt2_activation_bytes(&c, ZG_F32, B, T, all, 1, 1, 0);
        ZT_CHECK_MSG(c.n_layer > 1 && b_all < b_one && b_one < b_none,
                     "activation bytes none %zu, layer 0 %zu, all %zu", b_none, b_one, b_all);
        ZT_CHECK(gpt2_activation_bytes(&c, ZG_F32, B, T, all, c.n_layer, 1, 0) == b_all);
        gpt2_free(&q);
    }
    /* LayerNorm backward from the output (alone and with GELU recompute): the same loss, the gradients
     * up to fp32 rounding (xhat = (y - b) / w instead of (x - mean) * rstd), the memory of recomputing
     * both LayerNorms with no extra pass; LN recompute flags are ignored with it */
    for (int extra = 0; extra <= GPT2_RECOMPUTE_GELU; extra++) {
        int flags = GPT2_LN_FROM_OUTPUT | extra;
        gpt2_model q;
        ZT_CHECK(gpt2_init(&q, &c, BE) == 0 && gpt2_grads_alloc(&q) == 0);
        q.recompute = flags | (extra ? GPT2_RECOMPUTE_LN1 : 0);
        gpt2_params_upload(&q, p);
        float lq = zt_forward_train(&q, in, tg, B, T, 1.0f);
        gpt2_backward(&q, 1.0f);
        BE->ops->download_f32(BE, g4, q.grads, ZG_F32, n);
        double gmax = 0, err = 0;
        for (size_t j = 0; j < n; j++) {
            gmax = fmax(gmax, fabs(g[j]));
            err = fmax(err, fabs(g4[j] - g[j]));
        }
        ZT_CHECK_MSG(gmax > 0 && err <= 1e-5 * gmax, "LN from output (flags %d): max gradient error %.3g of %.3g",
                     flags, err, gmax);
        ZT_CHECK_MSG(memcmp(g4, g, n * 4) != 0, "LN from output gave bitwise the input form's gradients: "
                                                "was the output form used?");
        ZT_CHECK(gpt2_activation_bytes(&c, ZG_F32, B, T, flags, 0, 1, 0) ==
                 gpt2_activation_bytes(&c, ZG_F32, B, T, extra | GPT2_RECOMPUTE_LAYERNORM, 0, 1, 0));
        ZT_CHECK(gpt2_activation_bytes(&c, ZG_F32, B, T, flags, 0, 1, 0) <
                 gpt2_activation_bytes(&c, ZG_F32, B, T, extra, 0, 1, 0));
        ZT_CHECK(gpt2_activation_bytes(&c, ZG_F32, B, T, flags | GPT2_RECOMPUTE_LAYERNORM, 0, 1, 0) ==
                 gpt2_activation_bytes(&c, ZG_F32, B, T, flags, 0, 1, 0));
        /* the forward is unchanged: the same loss as the default model's (l_plain, same parameters) */
        ZT_CHECK_MSG(l_plain == lq, "LN from output changed the loss: %.9g vs %.9g", lq, l_plain);
        gpt2_free(&q);
    }
    /* the estimate matches what the CPU backend allocates (plus tokens, targets, losses) */
    {
        gpt2_model e;
        size_t start = BE->bytes_in_use;
        ZT_CHECK(gpt2_init(&e, &c, BE) == 0);
        size_t before = BE->bytes_in_use;
        ZT_CHECK(gpt2_activations_ensure(&e, 3, 7) == 0);
        size_t used = BE->bytes_in_use - before, est = gpt2_activation_bytes(&c, ZG_F32, 3, 7, 0, 0, 1, 0);
        ZT_CHECK_MSG(used >= est && used <= est + 3 * 21 * 4 + 3 * 256, "allocated %zu, estimated %zu", used, est);
        ZT_CHECK(gpt2_kv_alloc(&e, 2, 8) == 0);
        gpt2_free(&e);
        ZT_CHECK_MSG(BE->bytes_in_use == start, "backend memory not returned: %zu bytes left",
                     BE->bytes_in_use - start);
    }
    gpt2_free(&r);

    /* bad tokens: an error naming the token */
    int32_t bad[10] = {1, 5, 9, 5, 40, 0, 22, 22, 13, 7};
    float l = 0.0f;
    ZT_CHECK(gpt2_forward(&m, bad, tg, B, T, &l) == -1 && strstr(zg_error_message(), "40") != NULL);
    ZT_CHECK(gpt2_forward(&m, in, tg, B, c.block_size + 1, &l) == -1);
    free(g4), free(g5), free(g), free(p);
    gpt2_free(&m);
}

/* ---- the logits' region shared by the backward ---------------------------------------------------- */

/* The CPU backend with a scratch_lend, whose ops scribble over the lent memory before they run (fp32 NaN),
 * as a backend that uses it as a workspace may (CUDA's attention backward): nothing the backward reads may
 * live there. ops are BE's otherwise, over BE's state. */
static struct {
    zg_backend be;
    zg_backend_ops ops;
    void *loan;
    size_t loan_bytes;
    long lends;      /* loans of at least one byte */
    size_t loan_max; /* the largest loan's bytes */
} SCRIBBLE;

static void scribble_loan(void) {
    if (SCRIBBLE.loan) memset(SCRIBBLE.loan, 0xff, SCRIBBLE.loan_bytes);
}

static void scribble_lend(zg_backend *be, void *p, size_t bytes) {
    (void)be;
    SCRIBBLE.loan = bytes ? p : NULL;
    SCRIBBLE.loan_bytes = bytes;
    SCRIBBLE.lends += bytes > 0;
    if (bytes > SCRIBBLE.loan_max) SCRIBBLE.loan_max = bytes;
}

static void scribble_layernorm_forward(zg_backend *be, void *out, float *mean, float *rstd, const void *inp,
                                       const void *w, const void *b, int N, int C) {
    scribble_loan();
    BE->ops->layernorm_forward(be, out, mean, rstd, inp, w, b, N, C);
}

static void scribble_layernorm_backward(zg_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *x,
                                        const void *y, const void *w, const void *b, const float *mean,
                                        const float *rstd, int N, int C, void *dsum_in, void *dsum_out) {
    scribble_loan();
    BE->ops->layernorm_backward(be, dinp, dw, db, dout, x, y, w, b, mean, rstd, N, C, dsum_in, dsum_out);
}

static void scribble_matmul_backward(zg_backend *be, void *dinp, void *dw, void *dbias, const void *dout,
                                     const void *inp, const void *w, const void *gelu_inp, int N, int C, int OC,
                                     int dw_overwrite) {
    scribble_loan();
    BE->ops->matmul_backward(be, dinp, dw, dbias, dout, inp, w, gelu_inp, N, C, OC, dw_overwrite);
}

static void scribble_gelu_forward(zg_backend *be, void *out, const void *inp, size_t n) {
    scribble_loan();
    BE->ops->gelu_forward(be, out, inp, n);
}

static void scribble_attention_backward(zg_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                        const void *stats, int B, int T, int C, int NH) {
    scribble_loan();
    BE->ops->attention_backward(be, dqkv, dout, qkv, out, stats, B, T, C, NH);
}

/* SCRIBBLE as BE with the scribbling ops; lend_want: its scratch_lend_want (NULL: none, as the CPU's) */
static void scribble_init(size_t (*lend_want)(zg_backend *, int, int, int, int)) {
    SCRIBBLE.be = *BE;
    SCRIBBLE.ops = *BE->ops;
    SCRIBBLE.ops.scratch_lend = scribble_lend;
    SCRIBBLE.ops.scratch_lend_want = lend_want;
    SCRIBBLE.ops.layernorm_forward = scribble_layernorm_forward;
    SCRIBBLE.ops.layernorm_backward = scribble_layernorm_backward;
    SCRIBBLE.ops.matmul_backward = scribble_matmul_backward;
    SCRIBBLE.ops.gelu_forward = scribble_gelu_forward;
    SCRIBBLE.ops.attention_backward = scribble_attention_backward;
    SCRIBBLE.be.ops = &SCRIBBLE.ops;
    SCRIBBLE.be.bytes_in_use = SCRIBBLE.be.bytes_peak = 0;
}

/* Two training micro-steps (the second forward rewrites the logits the first backward used) of a model on
 * backend `be` with these recompute flags; the gradients into g (num_params floats), the losses' sum back. */
static float shared_steps(zg_backend *be, const gpt2_config *c, const float *p, int flags, int layers, float *g) {
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, c, be) == 0 && gpt2_grads_alloc(&m) == 0);
    m.recompute = flags;
    m.recompute_layers = layers;
    gpt2_params_upload(&m, p);
    int B = 2, T = 5;
    int32_t in[2][10] = {{1, 5, 9, 5, 39, 0, 22, 22, 13, 7}, {3, 3, 8, 31, 2, 17, 0, 9, 9, 25}};
    int32_t tg[2][10] = {{5, 9, 5, 39, 2, 22, -1, 13, 7, 30}, {3, 8, 31, 2, 17, 0, 9, 9, 25, 4}};
    float loss = 0.0f;
    for (int k = 0; k < 2; k++) {
        loss += zt_forward_train(&m, in[k], tg[k], B, T, 0.5f);
        gpt2_backward(&m, 0.5f);
    }
    be->ops->download_f32(be, g, m.grads, ZG_F32, m.table.num_params);
    gpt2_free(&m);
    return loss;
}

/* The backward's activation gradients live at the end of the logits' region and its front is lent to the
 * ops: with every lent byte overwritten before every op of the backward, the gradients are bitwise those
 * of the plain CPU backend (which lends nothing), for every recompute setting, with the gradients inside
 * the logits (6C < Vp: something is lent) and larger than them (6C > Vp: the region grows, nothing lent);
 * and the allocation is what gpt2_activation_bytes says. */
static void test_logits_shared(void) {
    scribble_init(NULL);
    const int all = GPT2_RECOMPUTE_GELU | GPT2_RECOMPUTE_LAYERNORM;
    const int flags[][2] = {{0, 0},
                            {GPT2_RECOMPUTE_GELU, 0},
                            {GPT2_RECOMPUTE_LAYERNORM, 0},
                            {all, 0},
                            {all, 1},
                            {GPT2_LN_FROM_OUTPUT, 0},
                            {GPT2_LN_FROM_OUTPUT | GPT2_RECOMPUTE_GELU, 0}};
    for (int wide = 0; wide <= 1; wide++) {
        gpt2_config c = tiny_config(); /* C = 16, Vp = 128 */
        if (wide) c.n_embd = 32;       /* 6C = 192 > Vp */
        gpt2_config_validate(&c);
        gpt2_param_table t;
        ZT_CHECK(gpt2_param_table_init(&t, &c) == 0);
        size_t n = t.num_params;
        float *p = random_params(&t, 11, 0.3f), *want = zg_malloc(n * 4), *got = zg_malloc(n * 4);
        long lends = SCRIBBLE.lends;
        for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
            float lw = shared_steps(BE, &c, p, flags[i][0], flags[i][1], want);
            float lg = shared_steps(&SCRIBBLE.be, &c, p, flags[i][0], flags[i][1], got);
            ZT_CHECK_MSG(lw == lg && memcmp(want, got, n * 4) == 0,
                         "C %d, flags %d (layers %d): the lent memory changed the losses (%.9g vs %.9g) or gradients",
                         c.n_embd, flags[i][0], flags[i][1], (double)lg, (double)lw);
            /* the allocation: gpt2_activation_bytes + tokens, targets and the losses' first slot (N each) */
            gpt2_model e;
            ZT_CHECK(gpt2_init(&e, &c, BE) == 0);
            e.recompute = flags[i][0];
            e.recompute_layers = flags[i][1];
            size_t before = BE->bytes_in_use;
            ZT_CHECK(gpt2_activations_ensure(&e, 3, 7) == 0);
            size_t used = BE->bytes_in_use - before,
                   est = gpt2_activation_bytes(&c, ZG_F32, 3, 7, flags[i][0], flags[i][1], 1, 0);
            ZT_CHECK_MSG(used == est + 3 * 21 * 4, "C %d, flags %d: allocated %zu, estimated %zu + %d", c.n_embd,
                         flags[i][0], used, est, 3 * 21 * 4);
            gpt2_free(&e);
        }
        ZT_CHECK_MSG(wide ? SCRIBBLE.lends == lends : SCRIBBLE.lends > lends, "C %d: %ld loans", c.n_embd,
                     SCRIBBLE.lends - lends);
        ZT_CHECK(SCRIBBLE.loan == NULL); /* every loan ended */
        free(p), free(want), free(got);
        gpt2_param_table_free(&t);
    }
    ZT_CHECK_MSG(SCRIBBLE.be.bytes_in_use == 0, "%zu bytes left", SCRIBBLE.be.bytes_in_use);
}

/* ---- the LM head in row chunks ---------------------------------------------------------------------- */

/* n input tokens and targets in [0, 39) (tiny_config's vocabulary), seeded; target i ignored (-1) where
 * i % every == at */
static void random_tokens(int32_t *in, int32_t *tg, int n, uint64_t seed, int every, int at) {
    for (int i = 0; i < n; i++) {
        in[i] = (int)(zt_rand_uniform(&seed) * 19.5f + 19.5f);
        tg[i] = i % every == at ? -1 : (int)(zt_rand_uniform(&seed) * 19.5f + 19.5f);
    }
}

static size_t scribble_lend_want(zg_backend *be, int B, int T, int C, int NH) {
    (void)be, (void)NH;
    return (size_t)B * T * C * sizeof(float); /* as if the attention backward borrowed (N,C) */
}

/* Training micro-steps, an eval forward and the deferred losses' ring with the head in `chunks` (3 and 5 split
 * B*T = 24 rows unevenly) on the scribbling backend, which now wants a loan, so the chunked region's front is
 * lent and overwritten: the same losses and gradients as every row at once on the plain backend, to rounding
 * (the wte gradient is summed over the chunks in another order, and a BLAS may take another kernel, so another
 * summation order within a row, for another row count: OpenBLAS 0.3.21's small-matrix kernels on AVX-512 CPUs
 * do, so the other gradients are not bitwise the same there); the allocation as gpt2_activation_bytes says; the
 * rows rule at GPT-2's sizes; a forward without targets, and gpt2_logits, refused while the logits are chunked. */
static void test_head_chunks(void) {
    /* the rule at GPT-2's sizes, with the CUDA loan gpt2 plan estimates (dS B*NH*T^2 and rows beside it) */
    gpt2_config xl, sm;
    ZT_CHECK(gpt2_config_by_name("gpt2-xl", &xl) == 0 && gpt2_config_by_name("gpt2", &sm) == 0);
    size_t lend_xl8 = (size_t)8 * 25 * 1024 * 1024 * 2 + (size_t)8 * 1024 * 1600 * 2 + (1u << 20);
    size_t lend_sm16 = (size_t)16 * 12 * 1024 * 1024 * 2 + (size_t)16 * 1024 * 768 * 2 + (1u << 20);
    ZT_CHECK_MSG(gpt2_head_rows(&xl, 2, 8192, 0, lend_xl8) == 4096, "XL B=8: %d rows",
                 gpt2_head_rows(&xl, 2, 8192, 0, lend_xl8));
    ZT_CHECK_MSG(gpt2_head_rows(&sm, 2, 16384, 0, lend_sm16) == 5504, "124M B=16: %d rows",
                 gpt2_head_rows(&sm, 2, 16384, 0, lend_sm16));
    ZT_CHECK(gpt2_head_rows(&sm, 2, 16384, 1, lend_sm16) == 16384);                                   /* 1: every row */
    ZT_CHECK(gpt2_head_rows(&sm, 2, 2 * GPT2_HEAD_MIN_ROWS - 1, 0, 0) == 2 * GPT2_HEAD_MIN_ROWS - 1); /* too few */
    ZT_CHECK(gpt2_head_rows(&sm, 4, 1024, 0, 0) == 1024); /* the guide's micro-batch 1 */
    ZT_CHECK(gpt2_head_rows(&sm, 4, 5 * GPT2_HEAD_MIN_ROWS, 0, 0) == GPT2_HEAD_MIN_ROWS); /* capped by rows */
    ZT_CHECK(gpt2_head_rows(&sm, 4, 24, 3, 0) == 8 && gpt2_head_rows(&sm, 4, 24, 5, 0) == 5);
    ZT_CHECK(gpt2_head_rows(&sm, 4, 1000, 3, 0) == 384); /* 334 rounded up to 64s */

    scribble_init(scribble_lend_want);
    gpt2_config c = tiny_config(); /* C = 16, V = 40, Vp = 128 */
    gpt2_param_table t;
    ZT_CHECK(gpt2_param_table_init(&t, &c) == 0);
    size_t n = t.num_params;
    float *p = random_params(&t, 5, 0.3f), *want = zg_malloc(n * 4), *got = zg_malloc(n * 4);
    enum { B = 3, T = 8, N = B * T };
    int32_t in[N], tg[N];
    random_tokens(in, tg, N, 9, 7, 3);
    const int chunks[] = {1, 3, 5, 1};
    float ref_loss[3] = {0};
    double ref_ring = 0;
    for (int ci = 0; ci < 4; ci++) {
        zg_backend *be = ci == 0 ? BE : &SCRIBBLE.be; /* the last: every row at once, lending */
        gpt2_model m;
        ZT_CHECK(gpt2_init(&m, &c, be) == 0 && gpt2_grads_alloc(&m) == 0);
        m.head_chunks = chunks[ci];
        m.recompute = ci == 2 ? GPT2_LN_FROM_OUTPUT : 0;
        gpt2_params_upload(&m, p);
        size_t before = be->bytes_in_use;
        SCRIBBLE.loan_max = 0;
        ZT_CHECK(gpt2_activations_ensure(&m, B, T) == 0);
        size_t used = be->bytes_in_use - before, lend = ci == 0 ? 0 : scribble_lend_want(be, B, T, c.n_embd, 2);
        size_t est = gpt2_activation_bytes(&c, ZG_F32, B, T, m.recompute, 0, chunks[ci], lend);
        ZT_CHECK_MSG(used == est + 3 * N * 4, "chunks %d: allocated %zu, estimated %zu + %d", chunks[ci], used, est,
                     3 * N * 4);
        float loss[3];
        for (int k = 0; k < 2; k++) {
            int32_t tk[N];
            memcpy(tk, tg, sizeof tk);
            tk[k] = -1;
            loss[k] = zt_forward_train(&m, in, tk, B, T, 0.5f);
            gpt2_backward(&m, 0.5f);
        }
        loss[2] = zt_forward(&m, in, tg, B, T);
        be->ops->download_f32(be, got, m.grads, ZG_F32, n);
        /* the deferred ring over more forwards than it holds, no backward between: the head's losses alone */
        double ring = 0;
        int cnt = 0;
        for (int k = 0; k < m.loss_slots + 2; k++) ZT_CHECK(gpt2_forward_train_deferred(&m, in, tg, B, T, 1.0f) == 0);
        ring = gpt2_train_losses_take(&m, &cnt);
        ZT_CHECK(cnt == m.loss_slots + 2);
        if (ci == 0) {
            memcpy(want, got, n * 4);
            memcpy(ref_loss, loss, sizeof loss);
            ref_ring = ring;
        } else if (ci != 2) { /* (LN from output: other gradients; its losses are the same) */
            double worst = 0, gmax = 0;
            for (size_t k = 0; k < n; k++) {
                gmax = fmax(gmax, fabs(want[k]));
                worst = fmax(worst, fabs(want[k] - got[k]));
            }
            ZT_CHECK_MSG(worst <= 1e-6 * gmax, "chunks %d: gradients %.3g apart (max %.3g)", chunks[ci], worst, gmax);
        }
        for (int k = 0; k < 3; k++)
            ZT_CHECK_MSG(fabsf(loss[k] - ref_loss[k]) <= 1e-6f * fabsf(ref_loss[k]), "chunks %d: loss %d %.9g vs %.9g",
                         chunks[ci], k, (double)loss[k], (double)ref_loss[k]);
        ZT_CHECK_MSG(fabs(ring - ref_ring) <= 1e-6 * fabs(ref_ring), "chunks %d: ring %.9g vs %.9g", chunks[ci], ring,
                     ref_ring);
        if (chunks[ci] > 1) { /* the loan the backend asked for is there, and the region is smaller */
            ZT_CHECK_MSG(SCRIBBLE.loan_max >= lend, "chunks %d: lent %zu of the %zu wanted", chunks[ci],
                         SCRIBBLE.loan_max, lend);
            ZT_CHECK(gpt2_forward(&m, in, NULL, B, T, NULL) == -1 && strstr(zg_error_message(), "head_chunks"));
            ZT_CHECK(used < gpt2_activation_bytes(&c, ZG_F32, B, T, m.recompute, 0, 1, 0) + 3 * N * 4);
        }
        gpt2_free(&m);
    }
    ZT_CHECK(SCRIBBLE.loan == NULL);
    ZT_CHECK_MSG(SCRIBBLE.be.bytes_in_use == 0, "%zu bytes left", SCRIBBLE.be.bytes_in_use);
    free(p), free(want), free(got);
    gpt2_param_table_free(&t);
}

/* ---- forward-only models (zgpt eval) ------------------------------------------------------------- */

/* GPT2_FORWARD_ONLY: per-token losses and logits bitwise those of the training layout (the same kernels on the
 * same values), the head in chunks (auto) within rounding; the allocation as gpt2_activation_bytes says and below
 * the training layout's by about (L - 1) layers of activations plus the backward's gradients; a training forward
 * refused with an error; the flag changed on a model with activations re-lays them out. */
static void test_forward_only(void) {
    gpt2_config c = tiny_config();
    c.n_layer = 4;
    ZT_CHECK(gpt2_config_validate(&c) == 0);
    enum { B = 3, T = 8, N = B * T };
    int32_t in[N], tg[N];
    random_tokens(in, tg, N, 21, 5, 2);
    gpt2_param_table t;
    ZT_CHECK(gpt2_param_table_init(&t, &c) == 0);
    float *p = random_params(&t, 17, 0.3f);
    float losses[3][N], logits[2][B * 40];
    size_t bytes[3];
    /* 0: the training layout; 1: forward only, every row at once; 2: forward only, the head in chunks (auto) */
    for (int v = 0; v < 3; v++) {
        gpt2_model m;
        ZT_CHECK(gpt2_init(&m, &c, BE) == 0);
        gpt2_params_upload(&m, p);
        m.recompute = v ? GPT2_FORWARD_ONLY : 0;
        m.head_chunks = v == 2 ? 3 : 1;
        size_t before = BE->bytes_in_use;
        ZT_CHECK(gpt2_forward(&m, in, tg, B, T, NULL) == 0);
        bytes[v] = BE->bytes_in_use - before;
        size_t est = gpt2_activation_bytes(&c, ZG_F32, B, T, m.recompute, 0, m.head_chunks, 0);
        ZT_CHECK_MSG(bytes[v] == est + 3 * N * 4, "layout %d: allocated %zu, estimated %zu + %d", v, bytes[v], est,
                     3 * N * 4);
        memcpy(losses[v], m.losses_host, sizeof losses[v]);
        if (v < 2) gpt2_logits(&m, T - 1, logits[v]);
        if (v == 1) {
            ZT_CHECK(gpt2_forward_train(&m, in, tg, B, T, 1.0f, NULL) == -1 &&
                     strstr(zg_error_message(), "forwards only") != NULL);
            zg_error_clear();
            ZT_CHECK(gpt2_forward_train_deferred(&m, in, tg, B, T, 1.0f) == -1);
            zg_error_clear();
            /* the flag taken away: the training layout again, and training runs */
            m.recompute = 0;
            ZT_CHECK(gpt2_grads_alloc(&m) == 0);
            float l = 0;
            ZT_CHECK(gpt2_forward_train(&m, in, tg, B, T, 1.0f, &l) == 0 && isfinite(l));
            gpt2_backward(&m, 1.0f);
            ZT_CHECK_MSG(BE->bytes_in_use - before > bytes[1], "the training layout was not laid out again");
        }
        gpt2_free(&m);
    }
    ZT_CHECK_MSG(memcmp(losses[0], losses[1], sizeof losses[0]) == 0, "forward-only losses differ");
    ZT_CHECK_MSG(memcmp(logits[0], logits[1], sizeof logits[0]) == 0, "forward-only logits differ");
    for (int i = 0; i < N; i++)
        ZT_CHECK_MSG(fabsf(losses[2][i] - losses[0][i]) <= 1e-6f * fabsf(losses[0][i]) + 1e-7f,
                     "head in chunks: loss %d %.9g vs %.9g", i, (double)losses[2][i], (double)losses[0][i]);
    /* the training layout keeps L layers and the gradients: the forward-only one a quarter of the layers' share */
    ZT_CHECK_MSG(bytes[1] * 2 < bytes[0] && bytes[2] <= bytes[1], "bytes: training %zu, forward only %zu / %zu",
                 bytes[0], bytes[1], bytes[2]);
    char d[64];
    ZT_CHECK(strcmp(gpt2_recompute_describe(GPT2_FORWARD_ONLY | GPT2_RECOMPUTE_GELU, d, sizeof d), "forward only") ==
             0);
    free(p);
    gpt2_param_table_free(&t);
}

/* ---- hooks -------------------------------------------------------------------------------------- */

typedef struct {
    char log[4096];
    size_t len;
    size_t ready_off[64], ready_cnt[64];
    int n_ready;
} hook_rec;

static void rec_ready(void *ctx, size_t off, size_t cnt) {
    hook_rec *h = ctx;
    h->ready_off[h->n_ready] = off;
    h->ready_cnt[h->n_ready++] = cnt;
    h->len += (size_t)snprintf(h->log + h->len, sizeof h->log - h->len, "R ");
}

static void rec_before(void *ctx, int l, int bwd) {
    hook_rec *h = ctx;
    h->len += (size_t)snprintf(h->log + h->len, sizeof h->log - h->len, "%c%d< ", bwd ? 'b' : 'f', l);
}

static void rec_after(void *ctx, int l, int bwd) {
    hook_rec *h = ctx;
    h->len += (size_t)snprintf(h->log + h->len, sizeof h->log - h->len, "%c%d> ", bwd ? 'b' : 'f', l);
}

static void test_hooks(void) {
    gpt2_config c = tiny_config();
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, &c, BE) == 0 && gpt2_grads_alloc(&m) == 0);
    gpt2_init_random(&m, 3);
    hook_rec h;
    memset(&h, 0, sizeof h);
    m.hooks = (gpt2_hooks){&h, rec_ready, rec_before, rec_after};
    int32_t in[4] = {1, 2, 3, 4}, tg[4] = {2, 3, 4, 5};
    zt_forward(&m, in, tg, 1, 4);
    gpt2_backward(&m, 1.0f);
    const char *want = "f-1< f0< f0> f1< f1> f-1> b-1< R b1< b1> R b0< b0> R b-1> R ";
    ZT_CHECK_MSG(strcmp(h.log, want) == 0, "hook order '%s', expected '%s'", h.log, want);
    /* ranges: ln_f, layer 1, layer 0, embeddings; together the whole buffer exactly once */
    ZT_CHECK(h.n_ready == 4);
    unsigned char *seen = calloc(m.table.num_params, 1);
    int once = 1;
    for (int i = 0; i < h.n_ready; i++)
        for (size_t k = h.ready_off[i]; k < h.ready_off[i] + h.ready_cnt[i] && k < m.table.num_params; k++)
            once &= seen[k]++ == 0;
    for (size_t k = 0; k < m.table.num_params; k++) once &= seen[k] == 1;
    ZT_CHECK_MSG(once, "grads_ready ranges do not cover the buffer exactly once");
    ZT_CHECK(h.ready_off[0] == m.table.layer_begin[2] && h.ready_off[1] == m.table.layer_begin[1] &&
             h.ready_off[2] == m.table.layer_begin[0] && h.ready_off[3] == 0);
    free(seen);
    gpt2_free(&m);
}

/* ---- per-group redirection (what ZeRO stages 2-3 use) ------------------------------------------ */

/* Every group's parameters and gradients in buffers of their own, the flat buffers gone (so nothing
 * can be read through them): the same loss and the same gradients, bit for bit, as the flat layout. */
static void test_group_redirect(void) {
    gpt2_config c = tiny_config();
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, &c, BE) == 0 && gpt2_grads_alloc(&m) == 0);
    float *p = random_params(&m.table, 5, 0.3f);
    gpt2_params_upload(&m, p);
    size_t n = m.table.num_params;
    int32_t in[8] = {1, 5, 9, 5, 39, 0, 22, 13}, tg[8] = {5, 9, 5, 39, 2, 22, 13, 7};
    float l0 = zt_forward(&m, in, tg, 2, 4);
    gpt2_backward(&m, 1.0f);
    float *g0 = zg_malloc(n * 4), *g1 = zg_malloc(n * 4);
    BE->ops->download_f32(BE, g0, m.grads, ZG_F32, n);
    int G = gpt2_group_count(&m.table);
    ZT_CHECK(G == c.n_layer + 2);
    size_t covered = 0;
    float **pb = zg_calloc((size_t)G, sizeof *pb), **gb = zg_calloc((size_t)G, sizeof *gb);
    for (int g = 0; g < G; g++) {
        size_t lo, hi;
        gpt2_group_range(&m.table, g, &lo, &hi);
        ZT_CHECK(lo == covered);
        covered = hi;
        pb[g] = zg_malloc((hi - lo) * 4);
        gb[g] = zg_calloc(hi - lo, 4);
        memcpy(pb[g], p + lo, (hi - lo) * 4);
        m.param_group[g] = pb[g];
        m.grad_group[g] = gb[g];
    }
    ZT_CHECK(covered == n);
    for (int i = 0; i < m.table.n_tensors; i++) {
        size_t lo, hi;
        gpt2_group_range(&m.table, gpt2_group_of_tensor(&m.table, i), &lo, &hi);
        ZT_CHECK(m.table.tensors[i].offset >= lo && m.table.tensors[i].offset + m.table.tensors[i].numel <= hi);
    }
    void *flat_p = m.params, *flat_g = m.grads;
    m.params = m.grads = NULL; /* nothing may be read through the flat buffers now */
    m.hooks.before_layer = NULL;
    float l1 = zt_forward(&m, in, tg, 2, 4);
    gpt2_backward(&m, 1.0f);
    for (int g = 0; g < G; g++) {
        size_t lo, hi;
        gpt2_group_range(&m.table, g, &lo, &hi);
        memcpy(g1 + lo, gb[g], (hi - lo) * 4);
    }
    ZT_CHECK_MSG(memcmp(&l0, &l1, sizeof l0) == 0, "loss %.9g redirected vs %.9g flat", l1, l0);
    ZT_CHECK_MSG(memcmp(g0, g1, n * 4) == 0, "gradients differ when every group is redirected");
    m.params = flat_p;
    m.grads = flat_g;
    for (int g = 0; g < G; g++) {
        m.param_group[g] = m.grad_group[g] = NULL;
        free(pb[g]);
        free(gb[g]);
    }
    free(pb);
    free(gb);
    free(g0);
    free(g1);
    free(p);
    gpt2_free(&m);
}

/* ---- KV cache ----------------------------------------------------------------------------------- */

static void test_kv_cache(void) {
    gpt2_config c = tiny_config();
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, &c, BE) == 0);
    float *p = random_params(&m.table, 11, 0.3f);
    gpt2_params_upload(&m, p);
    int B = 2, T = 6, V = c.vocab_size;
    int32_t in[12] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};
    zt_forward(&m, in, NULL, B, T);
    float *full = zg_malloc((size_t)T * B * V * 4), *inc = zg_malloc((size_t)B * V * 4);
    for (int t = 0; t < T; t++) gpt2_logits(&m, t, full + (size_t)t * B * V);
    ZT_CHECK(gpt2_forward_cached(&m, in, B, 1, 0, inc) == -1); /* no cache yet */
    ZT_CHECK(gpt2_kv_alloc(&m, B, 8) == 0);
    /* prompt of 3 tokens, then one at a time */
    int32_t prompt[6] = {3, 1, 4, 2, 6, 5};
    ZT_CHECK(gpt2_forward_cached(&m, prompt, B, 3, 0, inc) == 0);
    double worst = 0;
    for (int i = 0; i < B * V; i++) worst = fmax(worst, fabs(inc[i] - full[(size_t)2 * B * V + i]));
    for (int t = 3; t < T; t++) {
        int32_t step[2] = {in[t], in[T + t]};
        ZT_CHECK(gpt2_forward_cached(&m, step, B, 1, t, inc) == 0);
        for (int i = 0; i < B * V; i++) worst = fmax(worst, fabs(inc[i] - full[(size_t)t * B * V + i]));
    }
    ZT_CHECK_MSG(worst < 1e-5, "KV-cache logits differ from the full forward by %.3g", worst);
    int32_t step[2] = {1, 1};
    ZT_CHECK(gpt2_forward_cached(&m, step, B, 1, 8, inc) == -1 && strstr(zg_error_message(), "8") != NULL);
    free(full), free(inc), free(p);
    gpt2_free(&m);
}

/* ---- HF export / import ------------------------------------------------------------------------- */

static void test_export_import(void) {
    gpt2_config c = tiny_config();
    gpt2_param_table t;
    gpt2_param_table_init(&t, &c);
    float *p = random_params(&t, 21, 0.5f);
    const gpt2_tensor *wte = gpt2_param_table_find(&t, "wte");
    for (size_t k = (size_t)c.vocab_size * c.n_embd; k < wte->numel; k++) p[wte->offset + k] = 0.0f;
    char *dir = zt_tmpdir("gpt2_export");
    char *d32 = zg_path_join(dir, "fp32");
    ZT_CHECK(hf_export(d32, &c, p, ZG_F32) == 0);
    gpt2_config c2;
    ZT_CHECK(hf_config_load(d32, &c2) == 0);
    ZT_CHECK(c2.n_layer == c.n_layer && c2.n_head == c.n_head && c2.n_embd == c.n_embd &&
             c2.block_size == c.block_size && c2.vocab_size == c.vocab_size);
    float *q = zg_malloc(t.num_params * 4);
    ZT_CHECK(hf_params_load(d32, &c, q) == 0);
    ZT_CHECK_MSG(memcmp(p, q, t.num_params * 4) == 0, "fp32 export -> import is not identical");
    /* a smaller block_size crops wpe; the other tensors are unchanged */
    {
        gpt2_config cc = c;
        cc.block_size = 5;
        gpt2_param_table tc;
        gpt2_param_table_init(&tc, &cc);
        float *qc = zg_malloc(tc.num_params * 4);
        ZT_CHECK_MSG(hf_params_load(d32, &cc, qc) == 0, "crop: %s", zg_error_message());
        const gpt2_tensor *wa = gpt2_param_table_find(&t, "wpe"), *wb = gpt2_param_table_find(&tc, "wpe");
        const gpt2_tensor *la = gpt2_param_table_find(&t, "ln_f.bias"), *lb = gpt2_param_table_find(&tc, "ln_f.bias");
        ZT_CHECK(memcmp(p + wa->offset, qc + wb->offset, wb->numel * 4) == 0);
        ZT_CHECK(memcmp(p + la->offset, qc + lb->offset, lb->numel * 4) == 0);
        cc.block_size = 9; /* longer than the file: refused */
        ZT_CHECK(hf_params_load(d32, &cc, qc) == -1 && strstr(zg_error_message(), "wpe") != NULL);
        free(qc);
        gpt2_param_table_free(&tc);
    }
    /* the Conv1D layout: HF c_attn.weight is (C, 3C) = our (3C, C) transposed */
    char *st = zg_path_join(d32, "model.safetensors");
    safetensors_file f, f2;
    ZT_CHECK(safetensors_open(&f, st) == 0);
    const safetensors_tensor *ca = safetensors_find(&f, "transformer.h.1.attn.c_attn.weight");
    ZT_CHECK(ca && ca->shape[0] == 16 && ca->shape[1] == 48);
    const gpt2_tensor *za = gpt2_param_table_find(&t, "h.1.attn.c_attn.weight");
    float v;
    memcpy(&v, ca->data + (2 * 48 + 7) * 4, 4); /* HF [2][7] == ours [7][2] */
    ZT_CHECK(ca && v == p[za->offset + 7 * 16 + 2]);
    ZT_CHECK(safetensors_find(&f, "transformer.wte.weight")->shape[0] == c.vocab_size);

    /* tensors past 1M elements (the threads' transposes and reads) with partial 32 x 32 tiles: C = 520, the fc
     * weights (2080, 520) = 1.08M elements, round trip bitwise in fp32 and as the rounded values in bf16; one
     * Conv1D element at the far corner in the file's layout */
    {
        gpt2_config cb = {1, 8, 520, 8, 40, 0};
        gpt2_config_validate(&cb);
        gpt2_param_table tb;
        gpt2_param_table_init(&tb, &cb);
        float *pb = random_params(&tb, 23, 0.5f);
        const gpt2_tensor *wb = gpt2_param_table_find(&tb, "wte");
        for (size_t k = (size_t)cb.vocab_size * cb.n_embd; k < wb->numel; k++) pb[wb->offset + k] = 0.0f;
        float *qb = zg_malloc(tb.num_params * 4);
        for (int k = 0; k < 2; k++) {
            char *db = zg_path_join(dir, k ? "big_bf16" : "big_fp32");
            ZT_CHECK(hf_export(db, &cb, pb, k ? ZG_BF16 : ZG_F32) == 0);
            ZT_CHECK_MSG(hf_params_load(db, &cb, qb) == 0, "big: %s", zg_error_message());
            int same = 1;
            for (size_t i = 0; i < tb.num_params; i++)
                same &= qb[i] == (k ? zg_bf16_to_f32(zg_f32_to_bf16(pb[i])) : pb[i]);
            ZT_CHECK_MSG(same, "C = 520 %s export -> import is not the (rounded) original", k ? "bf16" : "fp32");
            if (k == 0) {
                char *sb = zg_path_join(db, "model.safetensors");
                safetensors_file fb;
                ZT_CHECK(safetensors_open(&fb, sb) == 0);
                const safetensors_tensor *fc = safetensors_find(&fb, "transformer.h.0.mlp.c_fc.weight");
                const gpt2_tensor *zf = gpt2_param_table_find(&tb, "h.0.mlp.c_fc.weight");
                ZT_CHECK(fc && fc->shape[0] == 520 && fc->shape[1] == 2080);
                if (fc && zf) {
                    float a, b;
                    memcpy(&a, fc->data + ((size_t)519 * 2080 + 2079) * 4, 4); /* HF [519][2079] == ours [2079][519] */
                    memcpy(&b, fc->data + ((size_t)13 * 2080 + 2070) * 4, 4);  /* HF [13][2070] == ours [2070][13] */
                    ZT_CHECK(a == pb[zf->offset + (size_t)2079 * 520 + 519] &&
                             b == pb[zf->offset + (size_t)2070 * 520 + 13]);
                }
                safetensors_close(&fb);
                free(sb);
            }
            free(db);
        }
        free(qb);
        free(pb);
        gpt2_param_table_free(&tb);
    }

    /* fp16 / bf16 exports import as the rounded values */
    for (int k = 0; k < 2; k++) {
        zg_dtype dt = k ? ZG_BF16 : ZG_F16;
        char *dd = zg_path_join(dir, k ? "bf16" : "fp16");
        ZT_CHECK(hf_export(dd, &c, p, dt) == 0);
        ZT_CHECK(hf_params_load(dd, &c, q) == 0);
        int same = 1;
        for (size_t i = 0; i < t.num_params; i++) {
            float r = k ? zg_bf16_to_f32(zg_f32_to_bf16(p[i])) : zg_f16_to_f32(zg_f32_to_f16(p[i]));
            same &= q[i] == r;
        }
        ZT_CHECK_MSG(same, "%s export -> import differs from rounding", zg_dtype_name(dt));
        free(dd);
    }

    /* variants: keys without "transformer.", attn.bias buffers, a tied lm_head */
    int n = f.n_tensors;
    safetensors_entry *e = zg_calloc((size_t)n + 3, sizeof *e);
    float *mask = zg_calloc((size_t)c.block_size * c.block_size, 4);
    for (int i = 0; i < n; i++) {
        e[i].name = f.tensors[i].name + 12; /* strip "transformer." */
        e[i].dtype = ZG_F32;
        e[i].ndim = f.tensors[i].ndim;
        memcpy(e[i].shape, f.tensors[i].shape, sizeof e[i].shape);
        e[i].data = f.tensors[i].data;
    }
    e[n] = (safetensors_entry){"h.0.attn.bias", ZG_F32, 2, {c.block_size, c.block_size}, mask};
    e[n + 1] = (safetensors_entry){"h.1.attn.masked_bias", ZG_F32, 1, {1}, mask};
    e[n + 2] = (safetensors_entry){"lm_head.weight", ZG_F32, 2, {c.vocab_size, c.n_embd}, p + wte->offset};
    char *vdir = zg_path_join(dir, "variant");
    ZT_CHECK(zg_dir_make(vdir) == 0);
    char *vst = zg_path_join(vdir, "model.safetensors");
    char *cfgsrc = zg_path_join(d32, "config.json"), *cfgdst = zg_path_join(vdir, "config.json");
    char *text;
    size_t len;
    ZT_CHECK(zg_file_read_all(cfgsrc, &text, &len) == 0);
    FILE *cf = fopen(cfgdst, "wb");
    ZT_CHECK(cf && fwrite(text, 1, len, cf) == len && fclose(cf) == 0);
    free(text);
    ZT_CHECK(safetensors_write(vst, e, n + 3) == 0);
    memset(q, 0, t.num_params * 4);
    ZT_CHECK_MSG(hf_params_load(vst, &c, q) == 0, "variant: %s", zg_error_message());
    ZT_CHECK(memcmp(p, q, t.num_params * 4) == 0);
    /* an untied lm_head is refused */
    float *lm = zg_malloc((size_t)c.vocab_size * c.n_embd * 4);
    memcpy(lm, p + wte->offset, (size_t)c.vocab_size * c.n_embd * 4);
    lm[5] += 1.0f;
    e[n + 2].data = lm;
    ZT_CHECK(safetensors_write(vst, e, n + 3) == 0);
    ZT_CHECK(hf_params_load(vst, &c, q) == -1 && strstr(zg_error_message(), "lm_head.weight") != NULL);
    /* a missing tensor: the message names it and the file */
    ZT_CHECK(safetensors_write(vst, e + 1, n - 1) == 0);
    ZT_CHECK(hf_params_load(vst, &c, q) == -1);
    ZT_CHECK_MSG(strstr(zg_error_message(), e[0].name) && strstr(zg_error_message(), "model.safetensors"),
                 "missing tensor message: %s", zg_error_message());
    /* a misshaped tensor: the message names it, the found and the expected shape */
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].name, "h.0.mlp.c_fc.weight") == 0) {
            e[i].shape[0] = 64;
            e[i].shape[1] = 16;
        }
    ZT_CHECK(safetensors_write(vst, e, n) == 0);
    ZT_CHECK(hf_params_load(vst, &c, q) == -1);
    ZT_CHECK_MSG(strstr(zg_error_message(), "h.0.mlp.c_fc.weight") && strstr(zg_error_message(), "[64, 16]") &&
                     strstr(zg_error_message(), "[16, 64]"),
                 "misshaped tensor message: %s", zg_error_message());
    /* a truncated file */
    FILE *tf = fopen(vst, "r+b");
    ZT_CHECK(tf != NULL && ftruncate(fileno(tf), 1000) == 0 && fclose(tf) == 0);
    ZT_CHECK(hf_params_load(vst, &c, q) == -1 && strstr(zg_error_message(), "model.safetensors") != NULL);
    /* a header length beyond the end of the file, and a header that is not JSON */
    tf = fopen(vst, "wb");
    const unsigned char hdr_long[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    ZT_CHECK(tf && fwrite(hdr_long, 1, 10, tf) == 10 && fclose(tf) == 0);
    ZT_CHECK(safetensors_open(&f2, vst) == -1 && strstr(zg_error_message(), "truncated") != NULL);
    tf = fopen(vst, "wb");
    const unsigned char hdr_bad[16] = {4, 0, 0, 0, 0, 0, 0, 0, 'n', 'o', 'p', 'e'};
    ZT_CHECK(tf && fwrite(hdr_bad, 1, 12, tf) == 12 && fclose(tf) == 0);
    ZT_CHECK(safetensors_open(&f2, vst) == -1 && strstr(zg_error_message(), "JSON") != NULL);
    /* hand-made headers: overlapping data_offsets, and a fractional shape (both used to be accepted) */
    const char *crafted[2][2] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5,2],\"data_offsets\":[0,12]}}", "invalid shape"}};
    for (int k = 0; k < 2; k++) {
        const char *h = crafted[k][0];
        unsigned char len8[8] = {0};
        size_t hl = strlen(h);
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hl >> (8 * i));
        unsigned char payload[16] = {0};
        tf = fopen(vst, "wb");
        ZT_CHECK(tf && fwrite(len8, 1, 8, tf) == 8 && fwrite(h, 1, hl, tf) == hl &&
                 fwrite(payload, 1, sizeof payload, tf) == sizeof payload && fclose(tf) == 0);
        ZT_CHECK_MSG(safetensors_open(&f2, vst) == -1 && strstr(zg_error_message(), crafted[k][1]) != NULL,
                     "crafted header %d: %s", k, zg_error_message());
    }
    /* a config that zgpt does not implement */
    cf = fopen(cfgdst, "wb");
    const char *bad = "{\"n_layer\":2,\"n_head\":2,\"n_embd\":16,\"n_positions\":8,\"vocab_size\":40,"
                      "\"activation_function\":\"relu\"}";
    ZT_CHECK(cf && fwrite(bad, 1, strlen(bad), cf) == strlen(bad) && fclose(cf) == 0);
    ZT_CHECK(hf_config_load(vdir, &c2) == -1 && strstr(zg_error_message(), "relu") != NULL);
    /* other architectures and GPT-2 options that compute something else: refused by name */
    const char *refused[][2] = {
        {"\"model_type\":\"gptj\",\"rotary_dim\":4", "model_type 'gptj' is not GPT-2"},
        {"\"model_type\":\"llama\",\"num_hidden_layers\":2", "model_type 'llama' is not GPT-2"},
        {"\"model_type\":\"gpt2\",\"scale_attn_weights\":false", "scale_attn_weights false"},
        {"\"add_cross_attention\":true", "add_cross_attention true"},
    };
    for (size_t k = 0; k < sizeof refused / sizeof refused[0]; k++) {
        char text[512];
        snprintf(text, sizeof text, "{\"n_layer\":2,\"n_head\":2,\"n_embd\":16,\"n_positions\":8,\"vocab_size\":40,%s}",
                 refused[k][0]);
        cf = fopen(cfgdst, "wb");
        ZT_CHECK(cf && fwrite(text, 1, strlen(text), cf) == strlen(text) && fclose(cf) == 0);
        ZT_CHECK_MSG(hf_config_load(vdir, &c2) == -1 && strstr(zg_error_message(), refused[k][1]) != NULL, "%s: %s",
                     refused[k][0], zg_error_message());
    }
    /* the options' GPT-2 values are read as they are */
    const char *same = "{\"n_layer\":2,\"n_head\":2,\"n_embd\":16,\"n_positions\":8,\"vocab_size\":40,\"model_type\":"
                       "\"gpt2\",\"scale_attn_weights\":true,\"add_cross_attention\":false}";
    cf = fopen(cfgdst, "wb");
    ZT_CHECK(cf && fwrite(same, 1, strlen(same), cf) == strlen(same) && fclose(cf) == 0);
    ZT_CHECK_MSG(hf_config_load(vdir, &c2) == 0 && c2.n_layer == 2, "%s", zg_error_message());
    cf = fopen(cfgdst, "wb"); /* the unsupported config again, for the truncated file's check below */
    ZT_CHECK(cf && fwrite(bad, 1, strlen(bad), cf) == strlen(bad) && fclose(cf) == 0);
    ZT_CHECK(hf_config_load("/nonexistent/zgpt-model", &c2) == -1);
    /* a bare .safetensors file of a shape that is not a released GPT-2: the head count cannot be known,
     * so it is refused (it used to be guessed as n_embd / 64), naming config.json */
    gpt2_config c64 = {3, 1, 64, 8, 40, 0};
    gpt2_config_validate(&c64);
    gpt2_param_table t64;
    gpt2_param_table_init(&t64, &c64);
    float *p64 = random_params(&t64, 5, 0.1f);
    char *bare = zg_path_join(dir, "bare"), *bare_cfg = zg_path_join(bare, "config.json");
    char *bare_st = zg_path_join(bare, "model.safetensors");
    ZT_CHECK(hf_export(bare, &c64, p64, ZG_F32) == 0 && unlink(bare_cfg) == 0);
    ZT_CHECK(hf_config_load(bare_st, &c2) == -1 && strstr(zg_error_message(), "config.json") != NULL &&
             strstr(zg_error_message(), "3 layers of 64 channels") != NULL);
    ZT_CHECK(hf_config_load(vst, &c2) == -1); /* the truncated file */
    free(p64), free(bare), free(bare_cfg), free(bare_st);
    gpt2_param_table_free(&t64);

    safetensors_close(&f);
    free(lm), free(e), free(mask), free(vdir), free(vst), free(cfgsrc), free(cfgdst);
    free(st), free(q), free(p), free(d32);
    zt_rmtree(dir);
    free(dir);
    gpt2_param_table_free(&t);
}

int main(void) {
    zg_backend_config cfg = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&BE, &cfg) != 0) {
        zg_error_print();
        return 1;
    }
    zt_run("param_table", test_param_table);
    zt_run("init_statistics", test_init_statistics);
    zt_run("model_gradient", test_model_gradient);
    zt_run("logits_shared", test_logits_shared);
    zt_run("head_chunks", test_head_chunks);
    zt_run("forward_only", test_forward_only);
    zt_run("hooks", test_hooks);
    zt_run("group_redirect", test_group_redirect);
    zt_run("kv_cache", test_kv_cache);
    zt_run("export_import", test_export_import);
    zg_backend_destroy(BE);
    return zt_finish();
}
