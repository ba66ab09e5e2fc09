#include "model/generate.h"

#include "core/clock.h"
#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often (decode steps) the tokens come back to the host to see whether every row has stopped:
 * each look waits for the device, so not every step. */
#define GEN_STOP_CHECK_STEPS 64

int gpt2_sample_row_init(zg_sample_row *row, double temperature, long long top_k, double top_p, uint64_t seed) {
    memset(row, 0, sizeof *row);
    if (!(temperature >= 0) || !isfinite(temperature))
        return zg_errorf("--temperature %g: must be >= 0 (0 = greedy)", temperature);
    if (top_k < 0 || top_k > INT32_MAX) return zg_errorf("--top-k %lld: must be >= 0 (0 = no limit)", top_k);
    if (!(top_p > 0 && top_p <= 1)) return zg_errorf("--top-p %g: must be in (0, 1]", top_p);
    float inv = temperature > 0 ? 1.0f / (float)temperature : 0.0f;
    if (temperature > 0 && !(inv > 0 && isfinite(inv)))
        return zg_errorf("--temperature %g: too close to 0 for a float; use 0 for greedy", temperature);
    row->inv_temperature = inv;
    row->top_k = (int32_t)top_k;
    row->top_p = (float)top_p;
    row->seed = seed;
    return 0;
}

void gpt2_gen_result_free(gpt2_gen_result *r) {
    free(r->seq);
    memset(r, 0, sizeof *r);
}

/* Backend buffers of one generation. */
typedef struct {
    int32_t *seq;  /* (B,maxT) prompts, then the drawn tokens */
    int32_t *plen; /* (B) */
    int32_t *tok;  /* (B) the rows' current tokens */
    int32_t *pos;  /* int32[2] */
    int32_t *ids;  /* (B) the last draw */
    int32_t *pre;  /* (B,P0) the common prompt prefix */
    zg_sample_row *rows;
    int V; /* the ids drawn from: [0, V) */
} gen_bufs;

/* The draw and the move to the next position, after logits are in gpt2_kv_logits. */
static void gen_draw(gpt2_model *m, const gen_bufs *g, int B, int maxT) {
    zg_backend *be = m->be;
    be->ops->sample(be, g->ids, gpt2_kv_logits(m), g->rows, g->pos + 1, B, g->V, m->cfg.padded_vocab_size);
    be->ops->decode_advance(be, g->seq, g->tok, g->pos, g->ids, g->plen, B, maxT);
}

static void gen_step(gpt2_model *m, const gen_bufs *g, int B, int maxT) {
    gpt2_decode_step(m, g->tok, g->pos);
    gen_draw(m, g, B, maxT);
}

/* 1 when every row has drawn the stop token or reached its length, with tokens up to position t. */
static int gen_all_stopped(const gpt2_gen_args *a, const int32_t *seq, int maxT, int t) {
    for (int b = 0; b < a->B; b++) {
        int end = a->prompt_len[b] + a->max_new_tokens - 1, done = t >= end;
        for (int j = a->prompt_len[b]; j <= t && j <= end && !done && a->stop_token >= 0; j++)
            done = seq[(size_t)b * maxT + j] == a->stop_token;
        if (!done) return 0;
    }
    return 1;
}

int gpt2_generate(gpt2_model *m, const gpt2_gen_args *a, gpt2_gen_result *r) {
    memset(r, 0, sizeof *r);
    zg_backend *be = m->be;
    const zg_backend_ops *op = be->ops;
    int B = a->B, P0 = 0, Tend = 0;
    if (B < 1 || a->max_new_tokens < 1) return zg_errorf("generate: %d rows of %d new tokens", B, a->max_new_tokens);
    for (int b = 0; b < B; b++) {
        int P = a->prompt_len[b];
        if (P < 1) return zg_errorf("generate: prompt %d is empty (start it with <|endoftext|>)", b);
        for (int j = 0; j < P; j++)
            if (a->prompts[b][j] < 0 || a->prompts[b][j] >= m->cfg.vocab_size)
                return zg_errorf("generate: prompt %d has token id %d at %d, outside the vocabulary [0, %d)", b,
                                 (int)a->prompts[b][j], j, m->cfg.vocab_size);
        if (b == 0 || P < P0) P0 = P;
        if (P + a->max_new_tokens > Tend) Tend = P + a->max_new_tokens;
    }
    if (Tend > m->cfg.block_size)
        return zg_errorf("the longest prompt (%d tokens) plus --max-new-tokens %d exceeds the model's block_size %d; "
                         "lower --max-new-tokens to %d or shorten the prompt",
                         Tend - a->max_new_tokens, a->max_new_tokens, m->cfg.block_size,
                         m->cfg.block_size - (Tend - a->max_new_tokens));
    int maxT = Tend, rc = 0;
    gen_bufs g = {0};
    g.V = a->vocab_limit > 0 && a->vocab_limit < m->cfg.vocab_size ? a->vocab_limit : m->cfg.vocab_size;
    zg_graph *graph = NULL;
    int32_t *host = zg_calloc((size_t)B * maxT, sizeof(int32_t));
    int32_t *hlen = zg_malloc((size_t)B * sizeof(int32_t));
    int32_t *hpre = zg_malloc((size_t)B * P0 * sizeof(int32_t));
    struct {
        void **p;
        size_t bytes;
    } want[] = {
        {(void **)&g.seq, (size_t)B * maxT * sizeof(int32_t)}, {(void **)&g.plen, (size_t)B * sizeof(int32_t)},
        {(void **)&g.tok, (size_t)B * sizeof(int32_t)},        {(void **)&g.pos, 2 * sizeof(int32_t)},
        {(void **)&g.ids, (size_t)B * sizeof(int32_t)},        {(void **)&g.pre, (size_t)B * P0 * sizeof(int32_t)},
        {(void **)&g.rows, (size_t)B * sizeof(zg_sample_row)}};
    double tk = zg_now_s(); /* the KV cache and buffers count: they are the generation's own */
    if (gpt2_kv_alloc(m, B, maxT) != 0) {
        rc = -1;
        goto cleanup;
    }
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if ((*want[i].p = op->alloc(be, want[i].bytes, "generation buffers")) == NULL) {
            rc = -1;
            goto cleanup;
        }
    for (int b = 0; b < B; b++) {
        memcpy(host + (size_t)b * maxT, a->prompts[b], (size_t)a->prompt_len[b] * sizeof(int32_t));
        memcpy(hpre + (size_t)b * P0, a->prompts[b], (size_t)P0 * sizeof(int32_t));
        hlen[b] = a->prompt_len[b];
    }
    int32_t hpos[2] = {P0 - 1, P0};
    double t0 = zg_now_s();
    op->upload(be, g.seq, host, (size_t)B * maxT * sizeof(int32_t));
    op->upload(be, g.plen, hlen, (size_t)B * sizeof(int32_t));
    op->upload(be, g.pre, hpre, (size_t)B * P0 * sizeof(int32_t));
    op->upload(be, g.pos, hpos, sizeof hpos);
    op->upload(be, g.rows, a->rows, (size_t)B * sizeof(zg_sample_row));
    if (gpt2_forward_cached_dev(m, g.pre, B, P0, 0) != 0) {
        rc = -1;
        goto cleanup;
    }
    op->synchronize(be); /* splits the prompt's time: its forward, then the first draw */
    double tf = zg_now_s();
    gen_draw(m, &g, B, maxT); /* the token at P0 */
    op->synchronize(be);
    double t1 = zg_now_s();
    r->forward_s = tf - t0;
    r->draw_s = t1 - tf;
    int t = P0; /* the position of the rows' current tokens */
    /* the start ends after the recorded step (or the direct first one): one wait for the device there
     * splits the one-time costs from the steady state's ms per step */
    int recording = a->record && op->graph_begin != NULL;
    double ts = t1;
    r->start_steps = recording ? 2 : 1;
    while (t < Tend - 1) {
        double th = zg_now_s();
        if (graph) {
            op->graph_launch(be, graph);
        } else if (recording && r->steps == 1) {
            /* the first step ran directly (matmul plans and scratch exist now); record the second */
            if (op->graph_begin(be) == 0) {
                gen_step(m, &g, B, maxT);
                graph = op->graph_end(be);
            }
            r->record_s = zg_now_s() - th;
            if (graph == NULL) {
                fprintf(stderr, "zgpt: %s; every decode step is launched directly\n", zg_error_message());
                zg_error_clear();
                gen_step(m, &g, B, maxT);
            } else {
                op->graph_launch(be, graph);
            }
        } else {
            gen_step(m, &g, B, maxT);
            if (r->steps == 0) r->first_s = zg_now_s() - th;
        }
        t++;
        r->steps++;
        if (r->steps == r->start_steps) {
            op->synchronize(be);
            ts = zg_now_s();
            r->start_s = ts - t1;
        }
        if (a->stop_token >= 0 && r->steps % GEN_STOP_CHECK_STEPS == 0 && t < Tend - 1) {
            op->download(be, host, g.seq, (size_t)B * maxT * sizeof(int32_t));
            if (gen_all_stopped(a, host, maxT, t)) break;
        }
    }
    op->download(be, host, g.seq, (size_t)B * maxT * sizeof(int32_t));
    double t2 = zg_now_s();
    r->decode_s = t2 - t1;
    if (r->steps < r->start_steps) { /* ended inside the start */
        r->start_s = r->decode_s;
        r->start_steps = r->steps;
    }
    r->steady_s = r->steps > r->start_steps ? t2 - ts : 0.0;
    r->prefill_s = t1 - t0;
    r->setup_s = t0 - tk;
    r->recorded = graph != NULL;
    r->maxT = maxT;
    r->seq = host;
    host = NULL;
cleanup:
    if (graph) op->graph_destroy(be, graph);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (*want[i].p) op->dealloc(be, *want[i].p);
    gpt2_kv_free(m);
    free(host);
    free(hlen);
    free(hpre);
    return rc;
}
