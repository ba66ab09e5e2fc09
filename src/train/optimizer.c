#include "train/optimizer.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

int zg_optimizer_init(zg_optimizer *o, zg_backend *be, const gpt2_param_table *table, size_t begin, size_t end,
                      const zg_optimizer_config *cfg, zg_dtype param_dtype, const void *params_at_begin) {
    memset(o, 0, sizeof *o);
    if (begin > end || end > table->num_params)
        return zg_errorf("optimizer range [%zu, %zu) is outside the parameter buffer of %zu elements", begin, end,
                         table->num_params);
    o->be = be;
    o->begin = begin;
    o->end = end;
    o->param_dtype = param_dtype;
    o->cfg = *cfg;
    size_t n = end - begin;

    /* Weight-decay segments of the whole buffer, clipped to the range and shifted to start at 0. */
    zg_segment *all = NULL;
    int n_all = gpt2_param_segments(table, cfg->weight_decay, &all);
    o->segs = zg_malloc((size_t)(n_all > 0 ? n_all : 1) * sizeof *o->segs);
    for (int i = 0; i < n_all; i++) {
        size_t a = all[i].offset, b = all[i].offset + all[i].count;
        if (a < begin) a = begin;
        if (b > end) b = end;
        if (a >= b) continue;
        o->segs[o->n_segs].offset = a - begin;
        o->segs[o->n_segs].count = b - a;
        o->segs[o->n_segs].weight_decay = all[i].weight_decay;
        o->n_segs++;
    }
    free(all);
    if (n == 0) return 0;

    size_t bytes = n * sizeof(float);
    o->m = be->ops->alloc(be, bytes, "Adam first moment (m)");
    if (!o->m) goto oom;
    o->v = be->ops->alloc(be, bytes, "Adam second moment (v)");
    if (!o->v) goto oom;
    be->ops->zero(be, o->m, bytes);
    be->ops->zero(be, o->v, bytes);
    if (param_dtype != ZG_F32) {
        o->master = be->ops->alloc(be, bytes, "fp32 master weights");
        if (!o->master) goto oom;
        if (params_at_begin) be->ops->cast(be, o->master, ZG_F32, params_at_begin, param_dtype, n);
    }
    return 0;
oom:
    zg_optimizer_free(o);
    return -1;
}

void zg_optimizer_free(zg_optimizer *o) {
    if (o->be) {
        if (o->m) o->be->ops->dealloc(o->be, o->m);
        if (o->v) o->be->ops->dealloc(o->be, o->v);
        if (o->master) o->be->ops->dealloc(o->be, o->master);
    }
    free(o->segs);
    memset(o, 0, sizeof *o);
}

size_t zg_optimizer_count(const zg_optimizer *o) { return o->end - o->begin; }

size_t zg_optimizer_state_bytes(const zg_optimizer *o) {
    return zg_optimizer_count(o) * sizeof(float) * (o->master ? 3 : 2);
}

void zg_optimizer_step(zg_optimizer *o, void *params_at_begin, const void *grads_at_begin, float lr, float grad_scale) {
    o->step++;
    if (zg_optimizer_count(o) == 0) return; /* an empty shard still counts the step */
    zg_adamw_args a;
    memset(&a, 0, sizeof a);
    a.param = params_at_begin;
    a.master = o->master;
    a.grad = grads_at_begin;
    a.m = o->m;
    a.v = o->v;
    a.segs = o->segs;
    a.n_segs = o->n_segs;
    a.lr = lr;
    a.beta1 = o->cfg.beta1;
    a.beta2 = o->cfg.beta2;
    a.eps = o->cfg.eps;
    a.step = (int)o->step;
    a.grad_scale = grad_scale;
    o->be->ops->adamw(o->be, &a);
}

void zg_optimizer_params_from_master(zg_optimizer *o, void *params_at_begin) {
    if (!o->master || zg_optimizer_count(o) == 0) return;
    o->be->ops->cast(o->be, params_at_begin, o->param_dtype, o->master, ZG_F32, zg_optimizer_count(o));
}
