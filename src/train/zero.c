/* The ZeRO engine: sharding, init and the optimizer step (see zero.h for the design; the overlap
 * machinery is in zero_overlap.c, memory planning in zero_plan.c). */
#include "train/zero_internal.h"
#include "train/zero_offload.h"

#include "core/error.h"
#include "train/config.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void zg_zero_opts_default(zg_zero_opts *o) {
    o->stage = 0;
    o->reduce_bucket_size = 500000000;
    o->allgather_bucket_size = 500000000;
    o->overlap_comm = 1;
    o->contiguous_gradients = 1;
    o->offload_optimizer = 0;
    o->offload_pin_memory = 0;
    o->offload_dpu = 0;
    o->offload_dpu_warmup = 0;
    o->offload_param = 0;
    o->offload_param_pin_memory = 0;
    o->grad_accum = 0;
    o->grad_accum_local_layers = -1;
    o->offload_v12 = 0;
}

int zg_zero_grads_direct(const zg_zero_opts *o, int world) {
    return world == 1 && o->stage >= 1 && (o->offload_optimizer || o->offload_param) && !o->offload_v12;
}

void zg_zero_opts_from_config(const zg_zero_config *c, zg_zero_opts *o) {
    zg_zero_opts_default(o);
    if (c->stage >= 0) o->stage = c->stage;
    if (c->reduce_bucket_size > 0) o->reduce_bucket_size = (size_t)c->reduce_bucket_size;
    if (c->allgather_bucket_size > 0) o->allgather_bucket_size = (size_t)c->allgather_bucket_size;
    if (c->overlap_comm >= 0) o->overlap_comm = c->overlap_comm;
    if (c->contiguous_gradients >= 0) o->contiguous_gradients = c->contiguous_gradients;
    o->offload_optimizer = c->offload_optimizer == ZG_OFFLOAD_CPU;
    o->offload_pin_memory = c->offload_pin_memory;
    o->offload_dpu = c->offload_dpu;
    o->offload_dpu_warmup = c->offload_dpu_warmup;
    o->offload_param = c->offload_param == ZG_OFFLOAD_CPU;
    o->offload_param_pin_memory = c->offload_param_pin_memory;
}

void zg_zero_shard_range(size_t n, int world, int rank, size_t *begin, size_t *end) {
    size_t S = (n + (size_t)world - 1) / (size_t)world;
    size_t b = S * (size_t)rank, e = b + S;
    if (b > n) b = n;
    if (e > n) e = n;
    *begin = b;
    *end = e;
}

/* ---- init / step ------------------------------------------------------------------------- */

/* All ranks get the owners' values of [0, n) (stage 0-2 param sync; stage 0 from rank 0). */
static void allgather_params(zg_zero *z) {
    zg_zero_pending *list = NULL;
    zero_gather_range(z, 0, z->n, &list);
    zero_wait_list(z, &list);
}

/* ZGPT_REDUCE_CARRY (A/B runs): 1 when unset or "1" (a micro-step's last reductions carried into the next one,
 * zg_zero.carry_reduces), 0 for "0", -1 otherwise (zg_zero_init refuses it). */
static int zero_carry_env(void) {
    const char *v = getenv("ZGPT_REDUCE_CARRY");
    if (v == NULL || *v == '\0' || strcmp(v, "1") == 0) return 1;
    return strcmp(v, "0") == 0 ? 0 : -1;
}

int zg_zero_carry_applies(const zg_zero_opts *o, int world) {
    /* (offload sends each piece to the host as the last micro-step's reduction of it completes, and the last
     * micro-step never carries; it is left out so that its pieces' timing stays as measured) */
    return world > 1 && o->stage >= 2 && o->overlap_comm && !o->offload_optimizer && o->grad_accum > 1;
}

int zg_zero_env_check(void) {
    if (zero_carry_env() >= 0) return 0;
    return zg_errorf("ZGPT_REDUCE_CARRY=%s: use 1 (a micro-step's last gradient reductions run under the next "
                     "micro-step's forward: the default) or 0 (each micro-step waits for its reductions)",
                     getenv("ZGPT_REDUCE_CARRY"));
}

int zg_zero_carry_of(const zg_zero_opts *o, int world) {
    if (zg_zero_env_check() != 0) return -1;
    return zero_carry_env() && zg_zero_carry_applies(o, world);
}

static int zero_init(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, const gpt2_param_table *table,
                     void *params, void *grads, const zg_optimizer_config *ocfg, gpt2_model *model) {
    memset(z, 0, sizeof *z);
    if (opts)
        z->o = *opts;
    else
        zg_zero_opts_default(&z->o);
    if (z->o.stage < 0 || z->o.stage > 3)
        return zg_errorf("zero_optimization.stage is %d; allowed: 0, 1, 2, 3", z->o.stage);
    if (z->o.reduce_bucket_size == 0) return zg_errorf("zero_optimization.reduce_bucket_size must be > 0");
    if (z->o.allgather_bucket_size == 0) return zg_errorf("zero_optimization.allgather_bucket_size must be > 0");
    if (!grads && !model) return zg_errorf("ZeRO: the model's gradient buffer is not allocated (gpt2_grads_alloc)");
    if (z->o.offload_optimizer && z->o.stage == 0)
        return zg_errorf("ZeRO-Offload (offload_optimizer \"cpu\") needs ZeRO stage 1, 2 or 3; the stage is 0");
    if (z->o.offload_param && (z->o.stage != 3 || !model))
        return zg_errorf("offload_param \"cpu\" needs ZeRO stage 3 over a model (the stage is %d)", z->o.stage);
    int carry = zg_zero_carry_of(&z->o, comm->size);
    if (carry < 0) return -1;
    z->comm = comm;
    z->be = be;
    z->table = table;
    z->n = table->num_params;
    z->params = params;
    z->grads = grads;
    z->pdt = be->param_dtype;
    z->gdt = be->grad_dtype;
    z->model = model;
    int W = comm->size;
    z->direct = zg_zero_grads_direct(&z->o, W);
    z->carry_reduces = carry && grads_grouped(z);
    z->shard = (z->n + (size_t)W - 1) / (size_t)W;
    if (z->shard == 0) z->shard = 1;
    if (z->o.stage == 0) {
        z->begin = 0;
        z->end = z->n;
    } else {
        zg_zero_shard_range(z->n, W, comm->rank, &z->begin, &z->end);
    }
    /* layer_begin has n_layer + 1 entries (the last is where ln_f starts). */
    z->n_layer = zero_table_layers(table);
    z->n_groups = z->n_layer + 2;
    z->layer_max = zero_layer_size_max(table, z->n_layer, NULL);
    z->resident = zero_resident_elems(table, z->n_layer);

    /* Every rank starts from rank 0's parameters. */
    if (W > 1) { zg_comm_broadcast(comm, params, z->n, z->pdt, 0); }
    /* Allocations; their success is agreed, so one rank short of memory stops every rank at once
     * (instead of the others waiting in the next collective until the timeout). */
    size_t k = z->end - z->begin;
    int ok = 1;
    int group3 = model && z->o.stage >= 3, group2 = grads_grouped(z);
    if (group3 && z->o.offload_param) { /* the shard in host memory */
        ok = zero_param_offload_init(z, at(params, z->begin, z->pdt)) == 0;
    } else if (group3 && k) { /* the low-precision shard the optimizer updates, outside the full buffer */
        z->param_shard = be->ops->alloc(be, k * esz(z->pdt), "ZeRO parameter shard");
        ok = z->param_shard != NULL;
        if (ok) be->ops->copy(be, z->param_shard, at(params, z->begin, z->pdt), k * esz(z->pdt));
    }
    if (ok) {
        /* backend memory (offload_param: the full buffer still holds the shard's values) */
        const void *own = z->param_shard && !z->poff ? z->param_shard : at(params, z->begin, z->pdt);
        if (z->o.offload_optimizer) /* ZeRO-Offload: master, m, v in host memory */
            ok = zg_optimizer_init_host(&z->opt, be, table, z->begin, z->end, ocfg, z->pdt, own,
                                        z->o.offload_pin_memory) == 0;
        else
            ok = zg_optimizer_init(&z->opt, be, table, z->begin, z->end, ocfg, z->pdt, own) == 0;
        z->opt_ready = ok;
    }
    if (ok && z->o.offload_optimizer) ok = zero_offload_init(z) == 0;
    if (ok && grads_in_shard(z) && k) {
        z->grad_shard = be->ops->alloc(be, k * esz(z->gdt), "ZeRO gradient shard");
        ok = z->grad_shard != NULL;
        if (ok) be->ops->zero(be, z->grad_shard, k * esz(z->gdt));
    }
    if (ok && group2) {
        z->grad_resident = be->ops->alloc(be, z->resident * esz(z->gdt), "ZeRO embeddings + ln_f gradients");
        ok = z->grad_resident != NULL;
        if (ok) ok = zero_local_init(z) == 0; /* before the pool: its layers need no pool buffer */
        z->grad_pool_n = zg_zero_grad_pool_count(table, &z->o, W);
        z->grad_pool = zg_calloc((size_t)z->grad_pool_n + 1, sizeof *z->grad_pool);
        z->grad_pool_free = zg_calloc((size_t)z->grad_pool_n + 1, sizeof *z->grad_pool_free);
        z->group_pool = zg_malloc((size_t)z->n_groups * sizeof *z->group_pool);
        z->group_launched = zg_calloc((size_t)z->n_groups, sizeof *z->group_launched);
        z->group_inflight = zg_calloc((size_t)z->n_groups, sizeof *z->group_inflight);
        for (int g = 0; g < z->n_groups; g++) z->group_pool[g] = -1;
        for (int i = 0; i < z->grad_pool_n && ok; i++) {
            z->grad_pool[i] = be->ops->alloc(be, z->layer_max * esz(z->gdt), "ZeRO layer gradient buffer");
            ok = z->grad_pool[i] != NULL;
            z->grad_pool_free[i] = i;
        }
    }
    z->param_pool_slot[0] = z->param_pool_slot[1] = -1;
    if (ok && group3) {
        z->param_resident = be->ops->alloc(be, z->resident * esz(z->pdt), "ZeRO gathered embeddings + ln_f");
        ok = z->param_resident != NULL;
        for (int i = 0; i < 2 && ok && z->n_layer > 0; i++) {
            z->param_pool[i] = be->ops->alloc(be, z->layer_max * esz(z->pdt), "ZeRO gathered layer");
            ok = z->param_pool[i] != NULL;
        }
    }
    double fail_rank = ok ? -1.0 : (double)comm->rank;
    zg_comm_all_reduce_host_f64(comm, &fail_rank, 1, ZG_COMM_MAX);
    if (fail_rank >= 0) {
        if (ok)
            zg_errorf("ZeRO: rank %d could not allocate its optimizer/gradient shards", (int)fail_rank);
        else
            zg_error_prefix("ZeRO: rank %d", comm->rank);
        zg_zero_free(z);
        return -1;
    }
    if (group2) {
        /* the full gradient buffer never coexists with the pool: the groups point into the engine's */
        if (model->grads) be->ops->dealloc(be, model->grads);
        model->grads = z->grads = NULL;
        model->grad_group[0] = z->grad_resident;
        model->grad_group[z->n_layer + 1] = at(z->grad_resident, table->layer_begin[0], z->gdt);
    }
    if (group3) { /* from here on only the shard and the gathered buffers hold parameters */
        be->ops->dealloc(be, model->params);
        model->params = z->params = NULL;
    }
    /* the host AdamW runs slot by slot, each slot uploaded when done; offload_param's GPU step likewise */
    if (z->o.offload_optimizer || z->poff) zg_optimizer_split(&z->opt, table->layer_begin, z->n_layer + 1);
    if (z->o.offload_optimizer && z->o.stage <= 2 && W > 1) /* each slot's all-gather follows its upload */
        z->gathering = zg_calloc((size_t)z->n_layer + 1, sizeof *z->gathering);
    else if (z->model && z->o.stage == 2 && z->o.overlap_comm) { /* deferred parameter all-gathers, per slot */
        z->gathering = zg_calloc((size_t)z->n_layer + 1, sizeof *z->gathering);
        zg_optimizer_split(&z->opt, table->layer_begin, z->n_layer + 1); /* AdamW slot by slot */
    }
    if (z->o.stage >= 3) {
        z->gathered = zg_calloc((size_t)z->n_layer + 1, sizeof *z->gathered);
        z->gathering = zg_calloc((size_t)z->n_layer + 1, sizeof *z->gathering);
        for (int s = 0; s <= z->n_layer; s++) z->gathered[s] = 2;
        zg_zero_release_all(z);
        z->n_releases = 0;
    }
    if (z->grads) {
        be->ops->zero(be, z->grads, z->n * esz(z->gdt));
        if (z->model && z->model->grads == z->grads) gpt2_grads_zeroed(z->model);
    }
    return 0;
}

int zg_zero_init(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, const gpt2_param_table *table,
                 void *params, void *grads, const zg_optimizer_config *ocfg) {
    return zero_init(z, opts, comm, be, table, params, grads, ocfg, NULL);
}

int zg_zero_init_model(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, gpt2_model *m,
                       const zg_optimizer_config *ocfg) {
    int stage = opts ? opts->stage : 0;
    memset(z, 0, sizeof *z);
    if (opts && zg_zero_local_check(opts, m->cfg.n_layer) != 0) return -1; /* before anything is allocated */
    /* stages 0-1 keep the flat gradient buffer as their gradient state; so does offload on one rank */
    if ((stage < 2 || (opts && zg_zero_grads_direct(opts, comm->size))) && gpt2_grads_alloc(m) != 0) {
        memset(z, 0, sizeof *z);
        return zg_error_prefix("ZeRO: rank %d", comm->rank);
    }
    if (!m->param_group || !m->grad_group) return zg_errorf("ZeRO: the model was not created with gpt2_init");
    int rc = zero_init(z, opts, comm, be, &m->table, m->params, m->grads, ocfg, m);
    if (rc == 0) m->hooks = zg_zero_hooks(z);
    return rc;
}

void zg_zero_free(zg_zero *z) {
    if (!z->be) return;
    zero_wait_all_reduces(z);
    zero_gathers_wait_all(z);
    zero_offload_free(z);
    if (z->opt_ready) zg_optimizer_free(&z->opt);
    zg_backend *be = z->be;
    if (z->grad_shard) be->ops->dealloc(be, z->grad_shard);
    if (z->param_full) be->ops->dealloc(be, z->param_full);
    if (z->poff)
        zero_param_offload_free(z);
    else if (z->param_shard)
        be->ops->dealloc(be, z->param_shard);
    if (z->param_resident) be->ops->dealloc(be, z->param_resident);
    for (int i = 0; i < 2; i++)
        if (z->param_pool[i]) be->ops->dealloc(be, z->param_pool[i]);
    if (z->grad_resident) be->ops->dealloc(be, z->grad_resident);
    zero_local_free(z);
    for (int i = 0; i < z->grad_pool_n; i++)
        if (z->grad_pool && z->grad_pool[i]) be->ops->dealloc(be, z->grad_pool[i]);
    if (z->model) { /* the model must not keep pointers into freed buffers */
        gpt2_model *m = z->model;
        if (m->params == z->param_full) m->params = NULL;
        for (int g = 0; g < z->n_groups; g++) {
            if (m->param_group) m->param_group[g] = NULL;
            if (m->grad_group) m->grad_group[g] = NULL;
        }
        memset(&m->hooks, 0, sizeof m->hooks);
    }
    free(z->grad_pool);
    free(z->grad_pool_free);
    free(z->group_pool);
    free(z->group_launched);
    free(z->group_inflight);
    free(z->gathered);
    free(z->gathering);
    memset(z, 0, sizeof *z);
}

static void launch_reduce_piece_list(zg_zero *z, size_t lo, size_t hi, int owner, void *arg) {
    zg_zero_pending **list = arg;
    zg_zero_pending *p = zero_pending_new(lo, hi, owner);
    void *buf = at(z->grads, lo, z->gdt);
    p->req = zg_comm_ireduce(z->comm, buf, buf, hi - lo, z->gdt, ZG_COMM_SUM, owner);
    zero_fifo_push(list, p);
}

void zg_zero_micro_end(zg_zero *z) {
    if (z->o.stage >= 2 && !z->direct) { /* direct: the backward accumulated in place, nothing to reduce */
        if (z->reported == 0 && z->model) {
            ZG_FATAL("rank %d: ZeRO: backward reported no gradients: install zg_zero_hooks in the model",
                     z->comm->rank);
        } else if (z->reported == 0) {
            /* hooks not installed: report everything now, top down */
            zg_zero_on_grads_ready(z, 0, z->n);
        } else if (z->reported != z->n) {
            ZG_FATAL("rank %d: ZeRO: backward reported gradients for %zu of %zu elements", z->comm->rank, z->reported,
                     z->n);
        }
        zero_flush_pending(z, 1);
        /* A step's last micro-step waits: the norm and the update read the shard. An earlier one may leave
         * its last buckets in flight: the next forward needs no gradient buffer, and the next backward waits
         * for one only when the pool is empty (grads_acquire), for the embeddings' buffer before zeroing it. */
        int carry = z->carry_reduces && z->micro + 1 < z->o.grad_accum;
        if (carry)
            z->n_carried += z->n_inflight_buckets;
        else
            zero_wait_all_reduces(z);
        if (grads_grouped(z)) {
            /* every layer buffer is back in the pool (or, carried, goes back when its reductions complete:
             * grad_group_maybe_release resets that group's count); the next backward starts afresh */
            if (z->grad_pool_used != 0 && !carry)
                ZG_FATAL("rank %d: ZeRO: %d layer gradient buffers still in use after the micro-step", z->comm->rank,
                         z->grad_pool_used);
            for (int g = 0; g < z->n_groups; g++)
                if (z->group_pool[g] < 0) z->group_launched[g] = 0;
        } else {
            z->be->ops->zero(z->be, z->grads, z->n * esz(z->gdt));
        }
        z->reported = 0;
    }
    z->micro++;
}

/* The gradient this rank updates with (after the reduction) and its element count. */
static const void *shard_grads(const zg_zero *z, size_t *count) {
    if (z->o.stage == 0) {
        *count = z->n;
        return z->grads;
    }
    *count = z->end - z->begin;
    return grads_in_shard(z) ? z->grad_shard : (const void *)at(z->grads, z->begin, z->gdt);
}

void zg_zero_grad_norm(zg_zero *z, float inv_loss_scale, zg_zero_step_info *info) {
    zg_comm *c = z->comm;
    int W = c->size;
    if (z->micro == 0) ZG_FATAL("rank %d: ZeRO: optimizer step without a micro-step", c->rank);
    if (z->reduced) ZG_FATAL("rank %d: ZeRO: gradients reduced twice for one step", c->rank);
    zero_local_check_step(z);
    zero_wait_all_reduces(z); /* (none carried: a step's last micro-step waits; a caller's short step too) */
    /* 1. complete the reduction of the accumulated gradients */
    if (z->o.stage == 0) {
        /* all chunks in flight together (one NCCL group), then waited on */
        size_t B = z->o.reduce_bucket_size, nchunks = (z->n + B - 1) / B;
        zg_comm_req **reqs = zg_malloc(sizeof *reqs * (nchunks ? nchunks : 1));
        zg_comm_group_begin(c);
        for (size_t i = 0; i < nchunks; i++) {
            size_t lo = i * B, k = z->n - lo < B ? z->n - lo : B;
            void *buf = at(z->grads, lo, z->gdt);
            reqs[i] = zg_comm_iall_reduce(c, buf, buf, k, z->gdt, ZG_COMM_SUM);
        }
        zg_comm_group_end(c);
        for (size_t i = 0; i < nchunks; i++) zg_comm_wait(c, reqs[i]);
        free(reqs);
    } else if (z->o.stage == 1 && !z->direct) {
        /* the reduce-scatter of the accumulated gradients: every piece to its owner */
        zg_zero_pending *list = NULL;
        zg_comm_group_begin(c);
        zero_for_each_piece(z, 0, z->n, z->o.reduce_bucket_size, launch_reduce_piece_list, &list);
        zg_comm_group_end(c);
        zero_wait_list(z, &list);
    }
    z->reduced = 1;
    /* ZeRO-Offload: what backward did not send yet goes to the host while the norm is computed */
    if (z->off) zero_offload_grads_finish(z);
    /* 2. global norm and overflow, agreed by all ranks */
    size_t gcount;
    const void *g = shard_grads(z, &gcount);
    double ss = gcount ? z->be->ops->sum_squares(z->be, g, z->gdt, gcount) : 0.0;
    double flag = isfinite(ss) ? 0.0 : 1.0;
    if (z->o.stage > 0) zg_comm_all_reduce_host_f64(c, &ss, 1, ZG_COMM_SUM); /* stage 0: identical everywhere */
    zg_comm_all_reduce_host_f64(c, &flag, 1, ZG_COMM_MAX);
    memset(info, 0, sizeof *info);
    info->overflow = flag != 0.0 || !isfinite(ss);
    info->grad_norm = info->overflow ? INFINITY : sqrt(ss) * (double)inv_loss_scale / (double)W;
    info->clip_coef = 1.0f;
}

static void end_step(zg_zero *z) {
    if (z->off) zero_offload_end_step(z);
    if (!grads_in_shard(z)) {
        z->be->ops->zero(z->be, z->grads, z->n * esz(z->gdt));
        if (z->model && z->model->grads == z->grads) gpt2_grads_zeroed(z->model);
    }
    z->micro = 0;
    z->reduced = 0;
}

void zero_lamb_cut_totals_staged(zg_zero *z, void *p, zero_lamb_stage_fn stage, const void *g, float scale) {
    zg_optimizer *opt = &z->opt;
    if (opt->cfg.kind != ZG_OPTIMIZER_LAMB || z->comm->size == 1 || z->o.stage == 0) return; /* stage 0: whole */
    int n = 2 * opt->n_tensors;
    double *sums = zg_calloc((size_t)n, sizeof *sums);
    for (int e = 0; e < 2; e++) {
        size_t lo, hi;
        if (!zg_optimizer_lamb_cut(opt, e, &lo, &hi)) continue;
        zg_optimizer_lamb_partial_cut(opt, e, stage ? stage(z, lo, hi) : p, g, scale, sums);
    }
    zg_comm_all_reduce_host_f64(z->comm, sums, n, ZG_COMM_SUM);
    zg_optimizer_lamb_totals(opt, sums);
    free(sums);
}

void zero_lamb_cut_totals(zg_zero *z, void *p, const void *g, float scale) {
    zero_lamb_cut_totals_staged(z, p, NULL, g, scale);
}

void zg_zero_apply(zg_zero *z, float lr, float grad_scale) {
    if (!z->reduced) ZG_FATAL("rank %d: ZeRO: zg_zero_apply without zg_zero_grad_norm", z->comm->rank);
    zero_params_wait_all(z); /* two steps without a forward between: the previous gathers first */
    size_t gcount;
    const void *g = shard_grads(z, &gcount);
    float scale = grad_scale / (float)z->comm->size;
    zero_param_offload_quiesce(z); /* offload_param: no upload still reads the host shard */
    if (z->off) {                  /* on the host; uploads (and gathers) waited for by the next forward, slot by slot */
        zero_offload_apply(z, lr, scale);
    } else if (z->poff) {
        zero_param_offload_gpu_step(z, g, lr, scale);
    } else if (zero_deferred_gather(z)) { /* waited for by the next forward, slot by slot */
        zero_apply_and_launch_gathers(z, g, lr, scale);
    } else {
        zg_optimizer_step_begin(&z->opt);
        zero_lamb_cut_totals(z, own_params(z), g, scale);
        zg_optimizer_step_all(&z->opt, own_params(z), g, lr, scale);
        if (z->o.stage == 1 || z->o.stage == 2) allgather_params(z);
    }
    end_step(z);
}

void zg_zero_skip(zg_zero *z) {
    if (!z->reduced) ZG_FATAL("rank %d: ZeRO: zg_zero_skip without zg_zero_grad_norm", z->comm->rank);
    end_step(z);
}

void zg_zero_step(zg_zero *z, float lr, float inv_loss_scale, float clip, zg_zero_step_info *info) {
    zg_zero_grad_norm(z, inv_loss_scale, info);
    if (info->overflow) {
        zg_zero_skip(z);
        return;
    }
    if (clip > 0 && info->grad_norm > clip) info->clip_coef = (float)(clip / (info->grad_norm + 1e-6));
    zg_zero_apply(z, lr, inv_loss_scale * info->clip_coef);
}

void zg_zero_after_load(zg_zero *z) {
    zero_params_wait_all(z);
    if (z->off)
        zero_offload_after_load(z);
    else if (z->poff)
        zero_param_offload_after_load(z);
    else if (z->end > z->begin)
        zg_optimizer_params_from_master(&z->opt, own_params(z));
    if (z->o.stage == 0) {
        if (z->comm->size > 1) zg_comm_broadcast(z->comm, z->params, z->n, z->pdt, 0);
    } else if (z->o.stage <= 2) {
        allgather_params(z);
    } else {
        for (int s = 0; s <= z->n_layer; s++) z->gathered[s] = 2;
        zg_zero_release_all(z);
    }
}

zg_zero_offload_times zg_zero_offload_step_times(const zg_zero *z) { return zero_offload_step_times(z); }

void zg_zero_flush(zg_zero *z) {
    if (z->off) zero_offload_flush(z);
}

zg_optimizer *zg_zero_optimizer(zg_zero *z) { return &z->opt; }
