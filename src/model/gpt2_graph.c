/* A training pass's device work recorded once and replayed (gpt2_model.record).
 *
 * Why: a micro-step of GPT-2 124M at B=16 issues ~700 kernels, memsets and library calls (cuBLASLt,
 * cuDNN); issued one by one, each boundary costs the GPU ~1-2.5 us of launch and dependency latency
 * (v0.25's trace: ~0.9 ms of a 30 ms step idle between kernels on an H200). A recording (a CUDA graph)
 * launches the pass at once and the GPU walks it with shorter gaps. The recorded kernels are the ones the
 * direct launches would run, with the same arguments: the same bits.
 *
 * When: a pass's key (gpt2_graph_key: shape, buffers, scalars, the backend's count of freed buffers) seen for
 * the first time runs directly (its plans, workspaces and scratch are made then: nothing may allocate or wait
 * while recording); seen again right after, it is recorded and launched; from then on it is replayed while it
 * is one of the pass's last GRAPH_KEEP recordings. A key that
 * keeps changing (an fp16 loss scale that moves every few steps, a count of targets that differs per
 * batch) would be recorded over and over: after GRAPH_RECORDS_MIN recordings, fewer than
 * GRAPH_REPLAYS_PER_RECORD replays per recording turn recording off, with one line. */
#include "model/gpt2_internal.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRAPH_RECORDS_MIN 8
#define GRAPH_REPLAYS_PER_RECORD 4
/* recordings kept per pass: a step of several micro-steps runs two backwards (the first writes the zeroed
 * gradients, the others add to them: gpt2_model.grads_zero) */
#define GRAPH_KEEP 2

typedef struct {
    uint64_t key; /* what g replays */
    long used;    /* the replay count when last launched (the least recent is replaced) */
    zg_graph *g;
} graph_slot;

typedef struct {
    graph_slot pass[GPT2_PASSES][GRAPH_KEEP];
    uint64_t warm[GPT2_PASSES]; /* the key of the pass's last direct run (recorded if it comes again) */
    int has_warm[GPT2_PASSES];
    long records, replays;
    int off; /* recording turned off (it failed, or it is redone too often) */
} gpt2_graphs;

static gpt2_graphs *graphs_of(gpt2_model *m) {
    if (m->graphs == NULL) m->graphs = zg_calloc(1, sizeof(gpt2_graphs));
    return m->graphs;
}

int gpt2_graph_usable(const gpt2_model *m) {
    const zg_backend_ops *op = m->be->ops;
    const gpt2_graphs *gs = m->graphs;
    return m->record && m->profile == NULL && op->graph_begin != NULL && m->hooks.grads_ready == NULL &&
           m->hooks.before_layer == NULL && m->hooks.after_layer == NULL && (gs == NULL || !gs->off);
}

/* FNV-1a, 64 bits */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

uint64_t gpt2_graph_key(const gpt2_model *m, const void *extra, size_t n) {
    uint64_t h = 14695981039346656037ull;
    const void *ptrs[] = {m->acts, m->tokens, m->targets, m->losses, m->params, m->grads, m->act_index};
    int ints[] = {m->B, m->T, m->recompute, m->recompute_layers};
    uint64_t frees = m->be->frees; /* the backend's own buffers (workspaces, scratch) moved */
    h = fnv(h, ptrs, sizeof ptrs);
    h = fnv(h, ints, sizeof ints);
    h = fnv(h, &frees, sizeof frees);
    int groups = gpt2_group_count(&m->table);
    h = fnv(h, m->param_group, (size_t)groups * sizeof *m->param_group);
    h = fnv(h, m->grad_group, (size_t)groups * sizeof *m->grad_group);
    return fnv(h, extra, n);
}

/* destroys the recordings and forgets the keys */
static void graphs_drop(gpt2_model *m, gpt2_graphs *gs) {
    for (int p = 0; p < GPT2_PASSES; p++) {
        for (int k = 0; k < GRAPH_KEEP; k++) m->be->ops->graph_destroy(m->be, gs->pass[p][k].g);
        memset(gs->pass[p], 0, sizeof gs->pass[p]);
        gs->has_warm[p] = 0;
    }
}

static void graph_turn_off(gpt2_model *m, gpt2_graphs *gs, const char *why) {
    zg_note("%s; the training passes are launched op by op from here", why);
    graphs_drop(m, gs);
    gs->off = 1;
}

void gpt2_graph_run(gpt2_model *m, int pass, uint64_t key, void (*fn)(gpt2_model *m, void *arg), void *arg) {
    if (!gpt2_graph_usable(m)) {
        fn(m, arg);
        return;
    }
    zg_backend *be = m->be;
    const zg_backend_ops *op = be->ops;
    gpt2_graphs *gs = graphs_of(m);
    graph_slot *slots = gs->pass[pass], *s = &slots[0];
    for (int k = 0; k < GRAPH_KEEP; k++) {
        if (slots[k].g && slots[k].key == key) {
            op->graph_launch(be, slots[k].g);
            slots[k].used = ++gs->replays;
            return;
        }
        if (slots[k].g == NULL || (s->g && slots[k].used < s->used)) s = &slots[k]; /* free, or least recent */
    }
    if (!gs->has_warm[pass] || gs->warm[pass] != key) { /* first sight: run directly (plans, workspaces made now) */
        gs->warm[pass] = key;
        gs->has_warm[pass] = 1;
        fn(m, arg);
        return;
    }
    if (gs->records >= GRAPH_RECORDS_MIN && gs->replays < GRAPH_REPLAYS_PER_RECORD * gs->records) {
        char why[160];
        snprintf(why, sizeof why,
                 "the training passes were recorded %ld times for %ld replays (their loss scale or "
                 "count of targets keeps changing)",
                 gs->records, gs->replays);
        graph_turn_off(m, gs, why);
        fn(m, arg);
        return;
    }
    op->graph_destroy(be, s->g);
    s->g = NULL;
    zg_graph *g = NULL;
    if (op->graph_begin(be) == 0) {
        fn(m, arg);
        g = op->graph_end(be);
    }
    if (g == NULL) { /* nothing recorded ran: run it directly */
        char why[400];
        snprintf(why, sizeof why, "%s", zg_error_message());
        zg_error_clear();
        graph_turn_off(m, gs, why);
        fn(m, arg);
        return;
    }
    s->g = g;
    s->key = key;
    s->used = gs->replays;
    gs->records++;
    op->graph_launch(be, g);
}

void gpt2_graph_drop(gpt2_model *m) {
    if (m->graphs) graphs_drop(m, m->graphs);
}

void gpt2_graph_free(gpt2_model *m) {
    gpt2_graphs *gs = m->graphs;
    if (gs == NULL) return;
    graphs_drop(m, gs);
    free(gs);
    m->graphs = NULL;
}

void gpt2_graph_counts(const gpt2_model *m, long *records, long *replays, int *off) {
    const gpt2_graphs *gs = m->graphs;
    *records = gs ? gs->records : 0;
    *replays = gs ? gs->replays : 0;
    *off = gs ? gs->off : 0;
}
