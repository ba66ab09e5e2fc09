#include "train/optimizer.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* Memory for one fp32 array of the state: backend memory, or host memory for a host optimizer. */
static float *state_alloc(zg_optimizer *o, size_t bytes, const char *what) {
    float *p = o->host ? o->be->ops->host_alloc(o->be, bytes, o->pin, what) : o->be->ops->alloc(o->be, bytes, what);
    if (p && o->host)
        memset(p, 0, bytes);
    else if (p)
        o->be->ops->zero(o->be, p, bytes);
    return p;
}

static void state_free(zg_optimizer *o, float *p) {
    if (!p) return;
    if (o->host)
        o->be->ops->host_free(o->be, p);
    else
        o->be->ops->dealloc(o->be, p);
}

static int optimizer_init(zg_optimizer *o, zg_backend *be, const gpt2_param_table *table, size_t begin, size_t end,
                          const zg_optimizer_config *cfg, zg_dtype param_dtype, const void *params_at_begin, int host,
                          int pin) {
    memset(o, 0, sizeof *o);
    o->host = host;
    if (begin > end || end > table->num_params)
        return zg_errorf("optimizer range [%zu, %zu) is outside the parameter buffer of %zu elements", begin, end,
                         table->num_params);
    o->be = be;
    o->begin = begin;
    o->end = end;
    o->param_dtype = param_dtype;
    o->pin = host && pin;
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
    o->n_tensors = table->n_tensors;
    o->cut_tensor[0] = o->cut_tensor[1] = -1;
    if (cfg->kind == ZG_OPTIMIZER_LAMB) {
        /* Lamb's trust ratio is per tensor: one segment per tensor */
        size_t *cuts = zg_malloc((size_t)(table->n_tensors > 0 ? table->n_tensors : 1) * sizeof *cuts);
        for (int i = 0; i < table->n_tensors; i++) cuts[i] = table->tensors[i].offset;
        zg_optimizer_split(o, cuts, table->n_tensors);
        free(cuts);
        /* the tensors the range starts or ends inside of (their other parts are other ranks') */
        for (int i = 0; i < table->n_tensors && begin < end; i++) {
            size_t a = table->tensors[i].offset, b = a + table->tensors[i].numel;
            int first = a < begin && begin < b, last = a < end && end < b;
            for (int e = 0; e < 2; e++)
                if (e == 0 ? first : last) {
                    o->cut_tensor[e] = i;
                    o->cut_lo[e] = a > begin ? a : begin;
                    o->cut_hi[e] = b < end ? b : end;
                }
        }
        if (o->cut_tensor[1] == o->cut_tensor[0]) o->cut_tensor[1] = -1; /* the range inside one tensor */
    }
    if (n == 0) return 0;

    int rc = -1;
    size_t bytes = n * sizeof(float);
    o->m = state_alloc(o, bytes, host ? "Adam first moment (m), host" : "Adam first moment (m)");
    if (!o->m) goto cleanup;
    o->v = state_alloc(o, bytes, host ? "Adam second moment (v), host" : "Adam second moment (v)");
    if (!o->v) goto cleanup;
    if (param_dtype != ZG_F32) {
        o->master = state_alloc(o, bytes, host ? "fp32 master weights, host" : "fp32 master weights");
        if (!o->master) goto cleanup;
        if (params_at_begin && host)
            be->ops->download_f32(be, o->master, params_at_begin, param_dtype, n);
        else if (params_at_begin)
            be->ops->cast(be, o->master, ZG_F32, params_at_begin, param_dtype, n);
    }
    rc = 0;
cleanup:
    if (rc != 0) zg_optimizer_free(o);
    return rc;
}

int zg_optimizer_init(zg_optimizer *o, zg_backend *be, const gpt2_param_table *table, size_t begin, size_t end,
                      const zg_optimizer_config *cfg, zg_dtype param_dtype, const void *params_at_begin) {
    return optimizer_init(o, be, table, begin, end, cfg, param_dtype, params_at_begin, 0, 0);
}

int zg_optimizer_init_host(zg_optimizer *o, zg_backend *be, const gpt2_param_table *table, size_t begin, size_t end,
                           const zg_optimizer_config *cfg, zg_dtype param_dtype, const void *params_at_begin, int pin) {
    return optimizer_init(o, be, table, begin, end, cfg, param_dtype, params_at_begin, 1, pin);
}

void zg_optimizer_free(zg_optimizer *o) {
    if (o->be) {
        if (o->copied) o->be->ops->event_destroy(o->be, o->copied);
        state_free(o, o->m);
        state_free(o, o->v);
        state_free(o, o->master);
    }
    free(o->segs);
    free(o->lamb_sums);
    memset(o, 0, sizeof *o);
}

size_t zg_optimizer_count(const zg_optimizer *o) { return o->end - o->begin; }

size_t zg_optimizer_state_bytes(const zg_optimizer *o) {
    return zg_optimizer_count(o) * sizeof(float) * (o->master ? 3 : 2);
}

void zg_optimizer_hold(zg_optimizer *o) {
    if (!o->copied) o->copied = o->be->ops->event_create(o->be);
    o->be->ops->event_record(o->be, o->copied, ZG_STREAM_COPY);
    o->held = 1;
}

void zg_optimizer_wait_copies(zg_optimizer *o) {
    if (o->held) o->be->ops->event_synchronize(o->be, o->copied);
    o->held = 0;
}

/* The backend's arguments for segments [s0, s1) with the current step number. */
static void step_args(const zg_optimizer *o, zg_adamw_args *ap, int s0, int s1, void *params_at_begin,
                      const void *grads_at_begin, float lr, float grad_scale) {
    zg_adamw_args a;
    memset(&a, 0, sizeof a);
    a.seg_begin = s0;
    a.seg_end = s1;
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
    a.no_bias_correction = o->cfg.no_bias_correction;
    a.lamb = o->cfg.kind == ZG_OPTIMIZER_LAMB;
    a.eps_inside_sqrt = o->cfg.eps_inside_sqrt;
    a.max_coeff = o->cfg.max_coeff;
    a.min_coeff = o->cfg.min_coeff;
    a.lamb_sums = o->lamb_sums;
    *ap = a;
}

/* A snapshot's copies of the state in flight: the update (device state: on the compute stream) starts
 * after they have landed. */
static void copies_landed(zg_optimizer *o) {
    if (o->held) {
        o->be->ops->stream_wait(o->be, ZG_STREAM_COMPUTE, o->copied);
        o->held = 0;
    }
}

/* AdamW (or Lamb) over segments [s0, s1) with the current step number. */
static void step_segments(zg_optimizer *o, int s0, int s1, void *params_at_begin, const void *grads_at_begin, float lr,
                          float grad_scale) {
    if (s1 <= s0) return;
    copies_landed(o);
    zg_adamw_args a;
    step_args(o, &a, s0, s1, params_at_begin, grads_at_begin, lr, grad_scale);
    if (o->host)
        zg_host_adamw(&a, o->param_dtype, o->be->grad_dtype);
    else
        o->be->ops->adamw(o->be, &a);
}

/* A new step: no Lamb totals given yet. */
static void lamb_sums_clear(zg_optimizer *o) {
    for (int i = 0; o->lamb_sums && i < 2 * o->lamb_n; i++) o->lamb_sums[i] = -1.0;
}

void zg_optimizer_step(zg_optimizer *o, void *params_at_begin, const void *grads_at_begin, float lr, float grad_scale) {
    zg_optimizer_step_begin(o); /* an empty shard still counts the step */
    zg_optimizer_step_all(o, params_at_begin, grads_at_begin, lr, grad_scale);
}

void zg_optimizer_split(zg_optimizer *o, const size_t *cuts, int n_cuts) {
    for (int c = 0; c < n_cuts; c++) {
        if (cuts[c] <= o->begin || cuts[c] >= o->end) continue;
        size_t at = cuts[c] - o->begin;
        for (int s = 0; s < o->n_segs; s++) {
            zg_segment *g = &o->segs[s];
            if (at <= g->offset || at >= g->offset + g->count) continue;
            o->segs = zg_realloc(o->segs, (size_t)(o->n_segs + 1) * sizeof *o->segs);
            g = &o->segs[s];
            memmove(g + 1, g, (size_t)(o->n_segs - s) * sizeof *g);
            g[1].offset = at;
            g[1].count = g->offset + g->count - at;
            g->count = at - g->offset;
            o->n_segs++;
            break;
        }
    }
}

void zg_optimizer_step_begin(zg_optimizer *o) {
    o->step++;
    lamb_sums_clear(o);
}

void zg_optimizer_step_all(zg_optimizer *o, void *params_at_begin, const void *grads_at_begin, float lr,
                           float grad_scale) {
    if (zg_optimizer_count(o) == 0) return;
    step_segments(o, 0, o->n_segs, params_at_begin, grads_at_begin, lr, grad_scale);
}

/* The first segment starting at or after `at` (relative to begin); n_segs when none. */
static int seg_at(const zg_optimizer *o, size_t at) {
    int s = 0;
    while (s < o->n_segs && o->segs[s].offset < at) s++;
    return s;
}

void zg_optimizer_step_part(zg_optimizer *o, size_t lo, size_t hi, void *params_at_begin, const void *grads_at_begin,
                            float lr, float grad_scale) {
    if (lo >= hi) return;
    if (lo < o->begin || hi > o->end)
        ZG_FATAL("optimizer: part [%zu, %zu) outside the range [%zu, %zu)", lo, hi, o->begin, o->end);
    int s0 = seg_at(o, lo - o->begin), s1 = seg_at(o, hi - o->begin);
    int lo_ok = s0 < o->n_segs && o->segs[s0].offset == lo - o->begin;
    int hi_ok = s1 < o->n_segs ? o->segs[s1].offset == hi - o->begin : hi == o->end;
    if (!lo_ok || !hi_ok)
        ZG_FATAL("optimizer: part [%zu, %zu) does not start and end at segment boundaries (zg_optimizer_split)", lo,
                 hi);
    step_segments(o, s0, s1, params_at_begin, grads_at_begin, lr, grad_scale);
}

void zg_optimizer_params_from_master(zg_optimizer *o, void *params_at_begin) {
    if (!o->master || zg_optimizer_count(o) == 0) return;
    if (o->host) {
        zg_host_cast(params_at_begin, o->param_dtype, o->master, ZG_F32, zg_optimizer_count(o));
        return;
    }
    o->be->ops->cast(o->be, params_at_begin, o->param_dtype, o->master, ZG_F32, zg_optimizer_count(o));
}

int zg_optimizer_lamb_cuts(const zg_optimizer *o) { return o->cut_tensor[0] >= 0 || o->cut_tensor[1] >= 0; }

int zg_optimizer_lamb_cut(const zg_optimizer *o, int e, size_t *lo, size_t *hi) {
    if (o->cut_tensor[e] < 0) return 0;
    *lo = o->cut_lo[e];
    *hi = o->cut_hi[e];
    return 1;
}

void zg_optimizer_lamb_partial_cut(zg_optimizer *o, int e, void *params_at_begin, const void *grads_at_begin,
                                   float grad_scale, double *sums) {
    if (o->cut_tensor[e] < 0) return;
    if (o->lamb_n != o->n_segs) { /* segments are fixed after the split; sized at the first step */
        free(o->lamb_sums);
        o->lamb_sums = zg_malloc((size_t)(2 * o->n_segs) * sizeof *o->lamb_sums);
        o->lamb_n = o->n_segs;
        lamb_sums_clear(o);
    }
    if (o->host)
        zg_optimizer_wait_copies(o); /* the first pass writes m and v on this thread */
    else
        copies_landed(o); /* on the compute stream */
    int s0 = seg_at(o, o->cut_lo[e] - o->begin), s1 = seg_at(o, o->cut_hi[e] - o->begin);
    double *part = zg_malloc((size_t)(2 * (s1 - s0)) * sizeof *part);
    zg_adamw_args a;
    step_args(o, &a, s0, s1, params_at_begin, grads_at_begin, 0.0f, grad_scale);
    if (o->host)
        zg_host_lamb_sums(&a, o->param_dtype, o->be->grad_dtype, part);
    else
        o->be->ops->lamb_sums(o->be, &a, part);
    for (int s = 0; s < s1 - s0; s++) { /* in segment order: the same additions on every call */
        sums[2 * o->cut_tensor[e]] += part[2 * s];
        sums[2 * o->cut_tensor[e] + 1] += part[2 * s + 1];
    }
    free(part);
}

void zg_optimizer_lamb_partial(zg_optimizer *o, void *params_at_begin, const void *grads_at_begin, float grad_scale,
                               double *sums) {
    for (int e = 0; e < 2; e++) zg_optimizer_lamb_partial_cut(o, e, params_at_begin, grads_at_begin, grad_scale, sums);
}

void zg_optimizer_lamb_totals(zg_optimizer *o, const double *sums) {
    for (int e = 0; e < 2; e++) {
        if (o->cut_tensor[e] < 0 || !o->lamb_sums) continue;
        int s0 = seg_at(o, o->cut_lo[e] - o->begin), s1 = seg_at(o, o->cut_hi[e] - o->begin);
        for (int s = s0; s < s1; s++) {
            o->lamb_sums[2 * s] = sums[2 * o->cut_tensor[e]];
            o->lamb_sums[2 * s + 1] = sums[2 * o->cut_tensor[e] + 1];
        }
    }
}
