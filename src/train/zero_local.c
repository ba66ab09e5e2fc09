/* ZeRO stages 2-3: which gradients accumulate locally over the micro-steps of a step and are reduced only
 * on the last one (grad_accum_local_layers; zero.h, zg_zero_grad_schedule_of, gives the design). The
 * engine's side: the persistent layer buffers, the placement of the locally accumulated groups' buffers
 * in backward, and which reported ranges a micro-step holds back. */
#include "train/zero_internal.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

int zg_zero_local_check(const zg_zero_opts *o, int n_layer) {
    int v = o->grad_accum_local_layers;
    if (v < -1 || v > n_layer)
        return zg_errorf("grad_accum_local_layers is %d; allowed: -1 (auto: the embeddings + ln_f), 0 (every "
                         "micro-step reduces everything) or 1 .. %d (layers 0..N-1 too; the model has %d layers)",
                         v, n_layer, n_layer);
    return 0;
}

void zg_zero_grad_schedule_of(const gpt2_param_table *t, const zg_zero_opts *o, int world, zg_zero_grad_schedule *s) {
    memset(s, 0, sizeof *s);
    int L = zero_table_layers(t);
    size_t n = t->num_params;
    size_t A = o->grad_accum > 1 ? (size_t)o->grad_accum : 1;
    int v = o->grad_accum_local_layers;
    const char *why = NULL;
    if (world == 1)
        why = "one process reduces no gradients; nothing to do";
    else if (o->stage < 2)
        why = "ZeRO stages 0-1 already accumulate every gradient locally and reduce once per step; nothing to do";
    else if (A == 1)
        why = "gradient accumulation is 1, so every micro-step is a step's last; nothing to do";
    /* ZeRO-Offload (several ranks) needs nothing else: it sends each of the rank's pieces to the host as
     * the last micro-step's reduction of it completes, and every piece, held back or not, is reduced
     * into the shard exactly once on that micro-step */
    s->idle = why;
    int active = !why && v != 0;
    s->embeddings = active;
    s->layers = active && v > 0 ? (v < L ? v : L) : 0;
    s->layer_elems = s->layers > 0 ? t->layer_begin[s->layers] - t->layer_begin[0] : 0;
    s->local_elems = active ? zero_resident_elems(t, L) + s->layer_elems : 0;
    if (world > 1) {
        /* stages 0-1 reduce once, at the boundary; stages 2-3 on every micro-step, less what is held back */
        s->reduced_micro = o->stage >= 2 ? n - s->local_elems : 0;
        s->reduced_last = n;
    }
    s->reduced_step = (A - 1) * s->reduced_micro + s->reduced_last;
}

int zero_local_init(zg_zero *z) {
    zg_zero_grad_schedule s;
    zg_zero_grad_schedule_of(z->table, &z->o, z->comm->size, &s);
    z->local_emb = s.embeddings;
    z->local_layers = s.layers;
    if (z->local_layers == 0) return 0;
    z->grad_local = zg_calloc((size_t)z->local_layers, sizeof *z->grad_local);
    const size_t *lb = z->table->layer_begin;
    for (int l = 0; l < z->local_layers; l++) {
        z->grad_local[l] = z->be->ops->alloc(z->be, (lb[l + 1] - lb[l]) * esz(z->gdt), "ZeRO local layer gradients");
        if (!z->grad_local[l]) return -1;
    }
    return 0;
}

void zero_local_free(zg_zero *z) {
    for (int l = 0; l < z->local_layers && z->grad_local; l++)
        if (z->grad_local[l]) z->be->ops->dealloc(z->be, z->grad_local[l]);
    free(z->grad_local);
    z->grad_local = NULL;
}

size_t zero_local_layer_elems(const zg_zero *z) {
    return z->local_layers > 0 ? z->table->layer_begin[z->local_layers] - z->table->layer_begin[0] : 0;
}

int zero_group_local(const zg_zero *z, int g) {
    if (g == 0 || g == z->n_layer + 1) return z->local_emb;
    return g >= 1 && g <= z->local_layers;
}

/* Held back on this micro-step: every one of a step's micro-steps but the last. */
static int holds_back(const zg_zero *z) { return z->local_emb && z->micro + 1 < z->o.grad_accum; }

int zero_local_acquire(zg_zero *z, int layer) {
    int g = layer + 1;
    if (!zero_group_local(z, g)) return 0; /* layer -1: group 0, the embeddings + ln_f */
    /* the backward ops accumulate (beta = 1): zeroed on a step's first micro-step only, the later ones add */
    int first = z->micro == 0;
    if (layer < 0) {
        if (first) z->be->ops->zero(z->be, z->grad_resident, z->resident * esz(z->gdt));
        return 1;
    }
    size_t lo, hi;
    gpt2_group_range(z->table, g, &lo, &hi);
    if (first) z->be->ops->zero(z->be, z->grad_local[layer], (hi - lo) * esz(z->gdt));
    z->model->grad_group[g] = z->grad_local[layer];
    return 1;
}

void zero_local_report(zg_zero *z, size_t offset, size_t count, zero_range_fn queue) {
    if (!holds_back(z)) {
        queue(z, offset, count);
        return;
    }
    /* cut at group boundaries (the model reports one group at a time; a caller may report more) */
    while (count > 0) {
        int g = zero_group_of(z, offset);
        size_t lo, hi;
        gpt2_group_range(z->table, g, &lo, &hi);
        size_t k = hi - offset < count ? hi - offset : count;
        if (!zero_group_local(z, g)) queue(z, offset, k);
        offset += k;
        count -= k;
    }
}

void zero_local_check_step(const zg_zero *z) {
    if (z->local_emb && z->micro != z->o.grad_accum)
        ZG_FATAL("rank %d: ZeRO: optimizer step after %d micro-steps, but gradient_accumulation_steps is %d: the "
                 "gradients accumulated locally (grad_accum_local_layers) are reduced on the last micro-step only",
                 z->comm->rank, z->micro, z->o.grad_accum);
}
