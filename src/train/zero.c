/* The ZeRO engine: see zero.h for the design. */
#include "train/zero.h"

#include "core/error.h"
#include "train/checkpoint.h"
#include "train/config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One collective in flight over [lo, hi) of a flat buffer. */
struct zg_zero_pending {
    zg_comm_req *req;
    size_t lo, hi;
    int owner;       /* rank the piece belongs to */
    int bucket_last; /* last piece of its bucket (bucket counting for overlap) */
    int into_shard;  /* reduced straight into this rank's gradient shard (its own piece, first micro-step) */
    zg_zero_pending *next;
};

enum { MAX_BUCKETS_IN_FLIGHT = 2 };

void zg_zero_opts_default(zg_zero_opts *o) {
    o->stage = 0;
    o->reduce_bucket_size = 500000000;
    o->allgather_bucket_size = 500000000;
    o->overlap_comm = 1;
    o->contiguous_gradients = 1;
}

void zg_zero_opts_from_config(const zg_zero_config *c, zg_zero_opts *o) {
    zg_zero_opts_default(o);
    if (c->stage >= 0) o->stage = c->stage;
    if (c->reduce_bucket_size > 0) o->reduce_bucket_size = (size_t)c->reduce_bucket_size;
    if (c->allgather_bucket_size > 0) o->allgather_bucket_size = (size_t)c->allgather_bucket_size;
    if (c->overlap_comm >= 0) o->overlap_comm = c->overlap_comm;
    if (c->contiguous_gradients >= 0) o->contiguous_gradients = c->contiguous_gradients;
}

void zg_zero_shard_range(size_t n, int world, int rank, size_t *begin, size_t *end) {
    size_t S = (n + (size_t)world - 1) / (size_t)world;
    size_t b = S * (size_t)rank, e = b + S;
    if (b > n) b = n;
    if (e > n) e = n;
    *begin = b;
    *end = e;
}

static size_t esz(zg_dtype dt) { return zg_dtype_size(dt); }
static char *at(void *base, size_t i, zg_dtype dt) { return (char *)base + i * esz(dt); }
static int owner_of(const zg_zero *z, size_t i) { return (int)(i / z->shard); }

/* Model mode: the group (gpt2_group_count numbering) holding element i. */
static int group_of(const zg_zero *z, size_t i) {
    const size_t *lb = z->table->layer_begin;
    int L = z->n_layer;
    if (i < lb[0]) return 0;
    if (i >= lb[L]) return L + 1;
    int a = 0, b = L - 1; /* layer l with lb[l] <= i < lb[l+1] */
    while (a < b) {
        int mid = (a + b + 1) / 2;
        if (lb[mid] <= i) a = mid;
        else b = mid - 1;
    }
    return a + 1;
}

static int grads_grouped(const zg_zero *z) { return z->model && z->o.stage >= 2; }
static int params_grouped(const zg_zero *z) { return z->model && z->o.stage >= 3 && !z->param_full; }

/* Address of element i of the model's per-group buffers (bufs: grad_group or param_group); `noun` and
 * `missing` word the error when i's group has no buffer. */
static char *group_elem_at(zg_zero *z, void **bufs, size_t i, zg_dtype dt, const char *noun, const char *missing) {
    int g = group_of(z, i);
    if (!bufs[g]) ZG_FATAL("rank %d: ZeRO: %s of group %d used while %s", z->comm->rank, noun, g, missing);
    size_t lo, hi;
    gpt2_group_range(z->table, g, &lo, &hi);
    return at(bufs[g], i - lo, dt);
}

/* Address of gradient element i (its group's buffer in model mode at stages 2-3). */
static char *grad_at(zg_zero *z, size_t i) {
    if (!grads_grouped(z)) return at(z->grads, i, z->gdt);
    return group_elem_at(z, z->model->grad_group, i, z->gdt, "gradients", "it has no buffer");
}

/* Address of parameter element i (the gathered group buffer at stage 3 in model mode). */
static char *param_at(zg_zero *z, size_t i) {
    if (z->param_full) return at(z->param_full, i, z->pdt);
    if (!params_grouped(z)) return at(z->params, i, z->pdt);
    return group_elem_at(z, z->model->param_group, i, z->pdt, "parameters", "not gathered");
}

/* The rank's own parameters [begin, end): in the flat buffer, or the shard (stage 3, model mode). */
static int stage3_model(const zg_zero *z) { return z->model && z->o.stage >= 3; }
static void *own_params(zg_zero *z) { return stage3_model(z) ? z->param_shard : at(z->params, z->begin, z->pdt); }

/* ---- pieces ------------------------------------------------------------------------------ */

static void fifo_push(zg_zero_pending **head, zg_zero_pending *p) {
    p->next = NULL;
    while (*head) head = &(*head)->next;
    *head = p;
}

/* Calls fn for each piece of [lo, hi) cut at shard boundaries and at `chunk` elements. */
typedef void (*piece_fn)(zg_zero *z, size_t lo, size_t hi, int owner, void *arg);
static void for_each_piece(zg_zero *z, size_t lo, size_t hi, size_t chunk, piece_fn fn, void *arg) {
    while (lo < hi) {
        int r = owner_of(z, lo);
        size_t shard_end = (size_t)(r + 1) * z->shard;
        size_t e = hi < shard_end ? hi : shard_end;
        if (e - lo > chunk) e = lo + chunk;
        if (z->model && z->o.stage >= 2) { /* one piece, one group buffer */
            size_t glo, ghi;
            gpt2_group_range(z->table, group_of(z, lo), &glo, &ghi);
            if (e > ghi) e = ghi;
        }
        fn(z, lo, e, r, arg);
        lo = e;
    }
}

/* shard[lo-begin ..] += grads[lo..hi) (later micro-steps; the first one reduces into the shard). */
static void accumulate_into_shard(zg_zero *z, size_t lo, size_t hi) {
    size_t cnt = hi - lo;
    void *dst = at(z->grad_shard, lo - z->begin, z->gdt);
    void *src = grad_at(z, lo);
    if (z->be->device < 0) { /* host memory */
        if (z->gdt == ZG_F32) {
            float *d = dst;
            const float *s = src;
            for (size_t i = 0; i < cnt; i++) d[i] += s[i];
        } else {
            float a[256], b[256];
            for (size_t i = 0; i < cnt; i += 256) {
                size_t k = cnt - i < 256 ? cnt - i : 256;
                zg_comm_to_f32(a, at(dst, i, z->gdt), z->gdt, k);
                zg_comm_to_f32(b, at(src, i, z->gdt), z->gdt, k);
                for (size_t j = 0; j < k; j++) a[j] += b[j];
                zg_comm_from_f32(at(dst, i, z->gdt), z->gdt, a, k);
            }
        }
        return;
    }
    /* Device: shard = shard + piece in place (the backend's elementwise add allows out == a). */
    if (z->gdt != z->be->act_dtype)
        ZG_FATAL("ZeRO: accumulating %s gradients needs the backend's add in that dtype (activations are %s)",
                 zg_dtype_name(z->gdt), zg_dtype_name(z->be->act_dtype));
    z->be->ops->residual_forward(z->be, dst, dst, src, cnt);
}

/* Model mode: a layer's gradient buffer goes back to the pool once all of it was reduced. */
static void grad_group_maybe_release(zg_zero *z, int g) {
    if (g < 1 || g > z->n_layer || z->group_pool[g] < 0 || z->group_inflight[g] > 0) return;
    size_t lo, hi;
    gpt2_group_range(z->table, g, &lo, &hi);
    if (z->group_launched[g] != hi - lo) return;
    z->grad_pool_free[z->grad_pool_n - z->grad_pool_used] = z->group_pool[g];
    z->grad_pool_used--;
    z->group_pool[g] = -1;
    z->model->grad_group[g] = NULL;
}

static void complete_reduce(zg_zero *z, zg_zero_pending *p) {
    zg_comm_wait(z->comm, p->req);
    if (p->owner == z->comm->rank && !p->into_shard) accumulate_into_shard(z, p->lo, p->hi);
    if (grads_grouped(z)) {
        int g = group_of(z, p->lo);
        z->group_inflight[g]--;
        grad_group_maybe_release(z, g);
    }
}

static void wait_oldest_bucket(zg_zero *z) {
    while (z->inflight) {
        zg_zero_pending *p = z->inflight;
        z->inflight = p->next;
        complete_reduce(z, p);
        int last = p->bucket_last;
        free(p);
        if (last) {
            z->n_inflight_buckets--;
            return;
        }
    }
}

static void wait_all_reduces(zg_zero *z) {
    while (z->inflight) wait_oldest_bucket(z);
}

static void launch_reduce_piece(zg_zero *z, size_t lo, size_t hi, int owner, void *arg) {
    (void)arg;
    zg_zero_pending *p = zg_calloc(1, sizeof *p);
    p->lo = lo;
    p->hi = hi;
    p->owner = owner;
    void *buf = grad_at(z, lo), *recv = buf;
    if (grads_grouped(z)) {
        int g = group_of(z, lo);
        z->group_inflight[g]++;
        z->group_launched[g] += hi - lo;
    }
    /* The first micro-step's sum of this rank's own piece lands in its shard directly (no copy);
     * later ones land in place and are added to the shard when complete. */
    if (owner == z->comm->rank && z->micro == 0 && z->grad_shard) {
        recv = at(z->grad_shard, lo - z->begin, z->gdt);
        p->into_shard = 1;
    }
    p->req = zg_comm_ireduce(z->comm, buf, recv, hi - lo, z->gdt, ZG_COMM_SUM, owner);
    fifo_push(&z->inflight, p);
}

/* Reduces the bucket [lo, hi) (<= reduce_bucket_size) to its owners. */
static void launch_bucket(zg_zero *z, size_t lo, size_t hi) {
    if (hi - lo > z->max_bucket_seen) z->max_bucket_seen = hi - lo;
    while (z->n_inflight_buckets >= (z->o.overlap_comm ? MAX_BUCKETS_IN_FLIGHT : 1)) wait_oldest_bucket(z);
    zg_comm_group_begin(z->comm);
    for_each_piece(z, lo, hi, (size_t)-1, launch_reduce_piece, NULL);
    zg_comm_group_end(z->comm);
    zg_zero_pending *p = z->inflight;
    while (p && p->next) p = p->next;
    if (p) p->bucket_last = 1;
    z->n_inflight_buckets++;
    if (!z->o.overlap_comm) wait_all_reduces(z);
}

/* Launches full buckets of the pending range, from the top (the order gradients complete in). With
 * `all`, the remainder too. */
static void flush_pending(zg_zero *z, int all) {
    size_t B = z->o.reduce_bucket_size;
    while (z->pend_hi - z->pend_lo >= B || (all && z->pend_hi > z->pend_lo)) {
        size_t len = z->pend_hi - z->pend_lo < B ? z->pend_hi - z->pend_lo : B;
        launch_bucket(z, z->pend_hi - len, z->pend_hi);
        z->pend_hi -= len;
    }
    if (z->pend_hi == z->pend_lo) z->pend_lo = z->pend_hi = 0;
}

/* Completes the reductions that have already finished, oldest first, without blocking (on MPI this
 * is also what moves collectives in flight forward while backward computes). */
static void progress_reduces(zg_zero *z) {
    while (z->inflight && zg_comm_test(z->comm, z->inflight->req)) {
        zg_zero_pending *p = z->inflight;
        z->inflight = p->next;
        complete_reduce(z, p);
        if (p->bucket_last) z->n_inflight_buckets--;
        free(p);
    }
}

void zg_zero_on_grads_ready(zg_zero *z, size_t offset, size_t count) {
    if (z->o.stage < 2 || count == 0) return;
    progress_reduces(z);
    if (offset + count > z->n) ZG_FATAL("ZeRO: grads_ready [%zu, %zu) beyond the buffer (%zu)", offset, offset + count, z->n);
    z->reported += count;
    if (z->pend_hi > z->pend_lo && offset + count != z->pend_lo) flush_pending(z, 1); /* not adjacent below */
    if (z->pend_hi == z->pend_lo) {
        z->pend_lo = offset;
        z->pend_hi = offset + count;
    } else {
        z->pend_lo = offset;
    }
    flush_pending(z, 0);
}

/* ---- stage 3: gathering layers ----------------------------------------------------------- */

/* The ranges of slot s (= layer + 1): layer l -> [lb[l], lb[l+1]); slot 0 -> embeddings + ln_f. */
static int slot_ranges(const zg_zero *z, int slot, size_t lo[2], size_t hi[2]) {
    const size_t *lb = z->table->layer_begin;
    if (slot == 0) {
        lo[0] = 0;
        hi[0] = lb[0];
        lo[1] = lb[z->n_layer];
        hi[1] = z->n;
        return 2;
    }
    lo[0] = lb[slot - 1];
    hi[0] = lb[slot];
    return 1;
}

static void launch_bcast_piece(zg_zero *z, size_t lo, size_t hi, int owner, void *arg) {
    zg_zero_pending **list = arg;
    zg_zero_pending *p = zg_calloc(1, sizeof *p);
    p->lo = lo;
    p->hi = hi;
    p->owner = owner;
    char *buf = param_at(z, lo);
    /* model mode stage 3: the owner's values live in its shard; the broadcast goes out in place */
    if (z->param_shard && owner == z->comm->rank)
        z->be->ops->copy(z->be, buf, at(z->param_shard, lo - z->begin, z->pdt), (hi - lo) * esz(z->pdt));
    p->req = zg_comm_ibroadcast(z->comm, buf, hi - lo, z->pdt, owner);
    fifo_push(list, p);
}

static void wait_list(zg_zero *z, zg_zero_pending **list) {
    while (*list) {
        zg_zero_pending *p = *list;
        *list = p->next;
        zg_comm_wait(z->comm, p->req);
        free(p);
    }
}

/* Every owner broadcasts its pieces of [lo, hi) in allgather_bucket_size chunks (an all-gather). */
static void gather_range(zg_zero *z, size_t lo, size_t hi, zg_zero_pending **list) {
    zg_comm_group_begin(z->comm);
    for_each_piece(z, lo, hi, z->o.allgather_bucket_size, launch_bcast_piece, list);
    zg_comm_group_end(z->comm);
}

static void release_range(zg_zero *z, size_t lo, size_t hi) {
    /* zero what this rank does not own */
    size_t a = lo, b = hi < z->begin ? hi : z->begin;
    if (b > a) z->be->ops->zero(z->be, at(z->params, a, z->pdt), (b - a) * esz(z->pdt));
    a = lo > z->end ? lo : z->end;
    if (hi > a) z->be->ops->zero(z->be, at(z->params, a, z->pdt), (hi - a) * esz(z->pdt));
}

/* Model mode: gives slot s (= group s for layers; slot 0 = groups 0 and n_layer + 1) its buffer. */
static void slot_place(zg_zero *z, int slot) {
    if (!params_grouped(z)) return;
    gpt2_model *m = z->model;
    if (slot == 0) {
        m->param_group[0] = z->param_resident;
        m->param_group[z->n_layer + 1] = at(z->param_resident, z->table->layer_begin[0], z->pdt);
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (z->param_pool_slot[i] < 0) {
            z->param_pool_slot[i] = slot;
            m->param_group[slot] = z->param_pool[i];
            return;
        }
    }
    ZG_FATAL("rank %d: ZeRO stage 3: layer %d gathered while layers %d and %d still are (at most two: the current "
             "layer and the prefetched next)",
             z->comm->rank, slot - 1, z->param_pool_slot[0] - 1, z->param_pool_slot[1] - 1);
}

static void slot_unplace(zg_zero *z, int slot) {
    gpt2_model *m = z->model;
    if (slot == 0) {
        m->param_group[0] = NULL;
        m->param_group[z->n_layer + 1] = NULL;
        return;
    }
    for (int i = 0; i < 2; i++)
        if (z->param_pool_slot[i] == slot) z->param_pool_slot[i] = -1;
    m->param_group[slot] = NULL;
}

/* Starts the all-gather of slot s's ranges into its pending list z->gathering[s]. */
static void gather_slot(zg_zero *z, int slot) {
    size_t lo[2], hi[2];
    int k = slot_ranges(z, slot, lo, hi);
    for (int i = 0; i < k; i++) gather_range(z, lo[i], hi[i], &z->gathering[slot]);
}

static void slot_start_gather(zg_zero *z, int slot) {
    if (slot < 0 || slot > z->n_layer || z->gathered[slot] != 0) return;
    slot_place(z, slot);
    gather_slot(z, slot);
    z->gathered[slot] = 1;
    z->n_gathers++;
}

static void slot_finish_gather(zg_zero *z, int slot) {
    slot_start_gather(z, slot);
    wait_list(z, &z->gathering[slot]);
    z->gathered[slot] = 2;
}

static void slot_release(zg_zero *z, int slot) {
    if (z->gathered[slot] == 0) return;
    wait_list(z, &z->gathering[slot]);
    if (stage3_model(z)) { /* model mode: the buffer goes back; nothing else is resident */
        if (!z->param_full) slot_unplace(z, slot);
    } else {
        size_t lo[2], hi[2];
        int k = slot_ranges(z, slot, lo, hi);
        for (int i = 0; i < k; i++) release_range(z, lo[i], hi[i]);
    }
    z->gathered[slot] = 0;
    z->n_releases++;
}

/* Stage 2 in model mode with overlap_comm: the updated parameters are all-gathered per slot
 * (embeddings + ln_f, then each layer, the order of the next forward) without waiting; the forward
 * waits for a slot's gather just before that slot's first use (before_layer), so the gathers of the
 * later layers run while the first layers compute. Everything else that reads parameters waits for
 * all of them first (params_wait_all). */
/* (zero_init allocates the per-slot lists at stage 2 only for a model with overlap_comm; stage 3
 * uses the same lists for its own layer gathers) */
static int deferred_gather(const zg_zero *z) { return z->o.stage == 2 && z->gathering != NULL; }

/* Waits for every slot's gathers in flight (the per-slot lists, when there are any). */
static void gathers_wait_all(zg_zero *z) {
    if (z->gathering)
        for (int s = 0; s <= z->n_layer; s++) wait_list(z, &z->gathering[s]);
}

static void params_wait_all(zg_zero *z) {
    if (deferred_gather(z)) gathers_wait_all(z);
}

/* Deferred gathers: AdamW slot by slot in the next forward's order, each slot's all-gather launched
 * as soon as this rank's part of it is updated. The communication stream waits only for the updates
 * issued before it, so the embeddings (slot 0, which the forward needs first) travel while the rest
 * of the shard is still being updated instead of after all of it (the optimizer's segments are cut
 * at the slot boundaries at init: zg_optimizer_split). */
static void apply_and_launch_gathers(zg_zero *z, const void *g, float lr, float scale) {
    zg_optimizer_step_begin(&z->opt);
    void *p = own_params(z);
    for (int s = 0; s <= z->n_layer; s++) {
        size_t lo[2], hi[2];
        int k = slot_ranges(z, s, lo, hi);
        for (int i = 0; i < k; i++) {
            size_t a = lo[i] > z->begin ? lo[i] : z->begin, b = hi[i] < z->end ? hi[i] : z->end;
            if (a < b) zg_optimizer_step_part(&z->opt, a, b, p, g, lr, scale);
        }
        gather_slot(z, s);
    }
}

/* Model mode, stages 2-3, backward of group g is about to start: its gradient buffer (zeroed: the
 * backward ops accumulate). Waits for buckets in flight when the pool is empty; the pool is sized so
 * that this always frees one (zg_zero_grad_pool_count). */
static void grads_acquire(zg_zero *z, int layer) {
    gpt2_model *m = z->model;
    if (layer < 0) { /* embeddings + ln_f: resident, accumulated over the whole backward */
        z->be->ops->zero(z->be, z->grad_resident, z->resident * esz(z->gdt));
        return;
    }
    int g = layer + 1;
    if (g > z->n_layer) ZG_FATAL("ZeRO: before_layer(%d) outside the model's %d layers", layer, z->n_layer);
    if (z->group_pool[g] >= 0) ZG_FATAL("rank %d: ZeRO: layer %d's backward ran twice in one micro-step", z->comm->rank, layer);
    while (z->grad_pool_used == z->grad_pool_n) {
        if (!z->inflight)
            ZG_FATAL("rank %d: ZeRO: all %d layer gradient buffers are in use with nothing in flight", z->comm->rank,
                     z->grad_pool_n);
        wait_oldest_bucket(z);
    }
    z->grad_pool_used++;
    int idx = z->grad_pool_free[z->grad_pool_n - z->grad_pool_used];
    if (z->grad_pool_used > z->grad_pool_peak) z->grad_pool_peak = z->grad_pool_used;
    size_t lo, hi;
    gpt2_group_range(z->table, g, &lo, &hi);
    z->be->ops->zero(z->be, z->grad_pool[idx], (hi - lo) * esz(z->gdt));
    z->group_pool[g] = idx;
    m->grad_group[g] = z->grad_pool[idx];
}

void zg_zero_on_before_layer(zg_zero *z, int layer, int is_backward) {
    if (!is_backward && deferred_gather(z) && layer >= -1 && layer < z->n_layer)
        wait_list(z, &z->gathering[layer + 1]); /* this slot's deferred all-gather (zg_zero_apply) */
    if (grads_grouped(z) && is_backward) {
        progress_reduces(z);
        grads_acquire(z, layer);
    }
    if (z->o.stage < 3 || z->param_full) return;
    if (is_backward) progress_reduces(z);
    int slot = layer + 1;
    if (slot < 0 || slot > z->n_layer) ZG_FATAL("ZeRO: before_layer(%d) outside the model's %d layers", layer, z->n_layer);
    slot_finish_gather(z, slot);
    /* prefetch the layer that comes next in this pass */
    int next;
    if (!is_backward)
        next = layer == -1 ? 1 : slot + 1; /* forward: -1 -> 0 -> 1 ... */
    else
        next = layer == -1 ? z->n_layer : slot - 1; /* backward: -1 -> L-1 -> ... -> 0 */
    if (next >= 1 && next <= z->n_layer && next != slot) slot_start_gather(z, next);
}

void zg_zero_on_after_layer(zg_zero *z, int layer, int is_backward) {
    (void)is_backward;
    if (z->o.stage < 3 || z->param_full) return;
    int slot = layer + 1;
    if (slot < 0 || slot > z->n_layer) ZG_FATAL("ZeRO: after_layer(%d) outside the model's %d layers", layer, z->n_layer);
    slot_release(z, slot);
}

void zg_zero_gather_all(zg_zero *z) {
    params_wait_all(z);
    if (z->o.stage < 3) return;
    if (stage3_model(z)) {
        /* model mode: a temporary full buffer (m->params) until zg_zero_release_all */
        if (z->param_full) return;
        for (int s = 0; s <= z->n_layer; s++) slot_release(z, s);
        z->param_full = z->be->ops->alloc(z->be, z->n * esz(z->pdt), "ZeRO stage 3 full parameters (gather_all)");
        if (!z->param_full) ZG_FATAL("rank %d: ZeRO: %s", z->comm->rank, zg_error_message());
        zg_zero_pending *list = NULL;
        gather_range(z, 0, z->n, &list);
        wait_list(z, &list);
        z->model->params = z->params = z->param_full;
        for (int s = 0; s <= z->n_layer; s++) z->gathered[s] = 2;
        return;
    }
    for (int s = 0; s <= z->n_layer; s++) slot_start_gather(z, s);
    for (int s = 0; s <= z->n_layer; s++) slot_finish_gather(z, s);
}

void zg_zero_release_all(zg_zero *z) {
    if (z->o.stage < 3) return;
    if (z->param_full) {
        z->be->ops->dealloc(z->be, z->param_full);
        z->param_full = NULL;
        z->model->params = z->params = NULL;
        for (int s = 0; s <= z->n_layer; s++) z->gathered[s] = 0;
        return;
    }
    for (int s = 0; s <= z->n_layer; s++) {
        if (z->gathered[s] == 0) { /* make sure nothing stale stays either */
            z->gathered[s] = 2;
        }
        slot_release(z, s);
    }
}

/* ---- hooks ------------------------------------------------------------------------------- */

static void hook_grads_ready(void *ctx, size_t offset, size_t count) { zg_zero_on_grads_ready(ctx, offset, count); }
static void hook_before(void *ctx, int layer, int is_backward) { zg_zero_on_before_layer(ctx, layer, is_backward); }
static void hook_after(void *ctx, int layer, int is_backward) { zg_zero_on_after_layer(ctx, layer, is_backward); }

gpt2_hooks zg_zero_hooks(zg_zero *z) {
    gpt2_hooks h;
    memset(&h, 0, sizeof h);
    h.ctx = z;
    if (z->o.stage >= 2) h.grads_ready = hook_grads_ready;
    if (grads_grouped(z)) h.before_layer = hook_before; /* hands out each layer's gradient buffer */
    if (z->o.stage >= 3) {
        h.before_layer = hook_before;
        h.after_layer = hook_after;
    }
    return h;
}

/* ---- init / step ------------------------------------------------------------------------- */

/* All ranks get the owners' values of [0, n) (stage 0-2 param sync; stage 0 from rank 0). */
static void allgather_params(zg_zero *z) {
    zg_zero_pending *list = NULL;
    gather_range(z, 0, z->n, &list);
    wait_list(z, &list);
}

static size_t layer_size_max(const gpt2_param_table *t, int L, size_t *min_out) {
    size_t mx = 0, mn = (size_t)-1;
    for (int l = 0; l < L; l++) {
        size_t k = t->layer_begin[l + 1] - t->layer_begin[l];
        if (k > mx) mx = k;
        if (k < mn) mn = k;
    }
    if (min_out) *min_out = L > 0 ? mn : 0;
    return mx;
}

static int table_layers(const gpt2_param_table *t) {
    int maxl = -1;
    for (int i = 0; i < t->n_tensors; i++)
        if (t->tensors[i].layer > maxl) maxl = t->tensors[i].layer;
    return maxl + 1;
}

void zg_zero_opts_fit_model(zg_zero_opts *o, const gpt2_param_table *t) {
    if (o->stage < 2) return;
    int L = table_layers(t);
    if (L == 0) return;
    size_t mx = layer_size_max(t, L, NULL);
    size_t cap = mx > ZG_ZERO_MIN_LAYER_BUCKET ? mx : ZG_ZERO_MIN_LAYER_BUCKET;
    if (o->reduce_bucket_size > cap) o->reduce_bucket_size = cap;
}

int zg_zero_grad_pool_count(const gpt2_param_table *t, const zg_zero_opts *o) {
    int L = table_layers(t);
    size_t mn, mx = layer_size_max(t, L, &mn);
    if (L == 0 || mn == 0) return L;
    size_t in_flight = o->overlap_comm ? MAX_BUCKETS_IN_FLIGHT : 0;
    if (o->reduce_bucket_size > (SIZE_MAX - mx) / (in_flight + 1)) return L; /* buckets beyond any model */
    /* the live range starts at the current layer's first element (a layer boundary) */
    size_t span = mx + (in_flight + 1) * o->reduce_bucket_size - 1;
    size_t k = (span + mn - 1) / mn;
    return k < (size_t)L ? (int)k : L;
}

/* Elements of the embeddings + ln_f groups. */
static size_t resident_elems(const gpt2_param_table *t, int L) {
    return t->layer_begin[0] + (t->num_params - t->layer_begin[L]);
}

static int zero_init(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, const gpt2_param_table *table,
                     void *params, void *grads, const zg_optimizer_config *ocfg, gpt2_model *model) {
    memset(z, 0, sizeof *z);
    if (opts)
        z->o = *opts;
    else
        zg_zero_opts_default(&z->o);
    if (z->o.stage < 0 || z->o.stage > 3) return zg_errorf("zero_optimization.stage is %d; allowed: 0, 1, 2, 3", z->o.stage);
    if (z->o.reduce_bucket_size == 0) return zg_errorf("zero_optimization.reduce_bucket_size must be > 0");
    if (z->o.allgather_bucket_size == 0) return zg_errorf("zero_optimization.allgather_bucket_size must be > 0");
    if (!grads && !model) return zg_errorf("ZeRO: the model's gradient buffer is not allocated (gpt2_grads_alloc)");
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
    z->shard = (z->n + (size_t)W - 1) / (size_t)W;
    if (z->shard == 0) z->shard = 1;
    if (z->o.stage == 0) {
        z->begin = 0;
        z->end = z->n;
    } else {
        zg_zero_shard_range(z->n, W, comm->rank, &z->begin, &z->end);
    }
    /* layer_begin has n_layer + 1 entries (the last is where ln_f starts). */
    z->n_layer = table_layers(table);
    z->n_groups = z->n_layer + 2;
    z->layer_max = layer_size_max(table, z->n_layer, NULL);
    z->resident = resident_elems(table, z->n_layer);

    /* Every rank starts from rank 0's parameters. */
    if (W > 1) {
        zg_comm_broadcast(comm, params, z->n, z->pdt, 0);
    }
    /* Allocations; their success is agreed, so one rank short of memory stops every rank at once
     * (instead of the others waiting in the next collective until the timeout). */
    size_t k = z->end - z->begin;
    int ok = 1;
    int group3 = model && z->o.stage >= 3, group2 = model && z->o.stage >= 2;
    if (group3 && k) { /* the low-precision shard the optimizer updates, outside the full buffer */
        z->param_shard = be->ops->alloc(be, k * esz(z->pdt), "ZeRO parameter shard");
        ok = z->param_shard != NULL;
        if (ok) be->ops->copy(be, z->param_shard, at(params, z->begin, z->pdt), k * esz(z->pdt));
    }
    if (ok) {
        ok = zg_optimizer_init(&z->opt, be, table, z->begin, z->end, ocfg, z->pdt,
                               z->param_shard ? z->param_shard : at(params, z->begin, z->pdt)) == 0;
        z->opt_ready = ok;
    }
    if (ok && z->o.stage >= 2 && k) {
        z->grad_shard = be->ops->alloc(be, k * esz(z->gdt), "ZeRO gradient shard");
        ok = z->grad_shard != NULL;
        if (ok) be->ops->zero(be, z->grad_shard, k * esz(z->gdt));
    }
    if (ok && group2) {
        z->grad_resident = be->ops->alloc(be, z->resident * esz(z->gdt), "ZeRO embeddings + ln_f gradients");
        ok = z->grad_resident != NULL;
        z->grad_pool_n = zg_zero_grad_pool_count(table, &z->o);
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
        if (ok) zg_errorf("ZeRO: rank %d could not allocate its optimizer/gradient shards", (int)fail_rank);
        else zg_error_prefix("ZeRO: rank %d", comm->rank);
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
    if (z->model && z->o.stage == 2 && z->o.overlap_comm) { /* deferred parameter all-gathers, per slot */
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
    if (z->grads) be->ops->zero(be, z->grads, z->n * esz(z->gdt));
    return 0;
}

int zg_zero_init(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, const gpt2_param_table *table,
                 void *params, void *grads, const zg_optimizer_config *ocfg) {
    return zero_init(z, opts, comm, be, table, params, grads, ocfg, NULL);
}

int zg_zero_init_model(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, gpt2_model *m,
                       const zg_optimizer_config *ocfg) {
    int stage = opts ? opts->stage : 0;
    /* stages 0-1 keep the flat gradient buffer as their gradient state */
    if (stage < 2 && gpt2_grads_alloc(m) != 0) {
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
    wait_all_reduces(z);
    gathers_wait_all(z);
    if (z->opt_ready) zg_optimizer_free(&z->opt);
    zg_backend *be = z->be;
    if (z->grad_shard) be->ops->dealloc(be, z->grad_shard);
    if (z->param_full) be->ops->dealloc(be, z->param_full);
    if (z->param_shard) be->ops->dealloc(be, z->param_shard);
    if (z->param_resident) be->ops->dealloc(be, z->param_resident);
    for (int i = 0; i < 2; i++)
        if (z->param_pool[i]) be->ops->dealloc(be, z->param_pool[i]);
    if (z->grad_resident) be->ops->dealloc(be, z->grad_resident);
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
    zg_zero_pending *p = zg_calloc(1, sizeof *p);
    p->lo = lo;
    p->hi = hi;
    p->owner = owner;
    void *buf = at(z->grads, lo, z->gdt);
    p->req = zg_comm_ireduce(z->comm, buf, buf, hi - lo, z->gdt, ZG_COMM_SUM, owner);
    fifo_push(list, p);
}

void zg_zero_micro_end(zg_zero *z) {
    if (z->o.stage >= 2) {
        if (z->reported == 0 && z->model) {
            ZG_FATAL("rank %d: ZeRO: backward reported no gradients: install zg_zero_hooks in the model", z->comm->rank);
        } else if (z->reported == 0) {
            /* hooks not installed: report everything now, top down */
            zg_zero_on_grads_ready(z, 0, z->n);
        } else if (z->reported != z->n) {
            ZG_FATAL("rank %d: ZeRO: backward reported gradients for %zu of %zu elements", z->comm->rank,
                     z->reported, z->n);
        }
        flush_pending(z, 1);
        wait_all_reduces(z);
        if (grads_grouped(z)) {
            /* every layer buffer is back in the pool; the next backward starts afresh */
            if (z->grad_pool_used != 0)
                ZG_FATAL("rank %d: ZeRO: %d layer gradient buffers still in use after the micro-step", z->comm->rank,
                         z->grad_pool_used);
            memset(z->group_launched, 0, (size_t)z->n_groups * sizeof *z->group_launched);
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
    return z->o.stage == 1 ? (const void *)at(z->grads, z->begin, z->gdt) : z->grad_shard;
}

void zg_zero_grad_norm(zg_zero *z, float inv_loss_scale, zg_zero_step_info *info) {
    zg_comm *c = z->comm;
    int W = c->size;
    if (z->micro == 0) ZG_FATAL("rank %d: ZeRO: optimizer step without a micro-step", c->rank);
    if (z->reduced) ZG_FATAL("rank %d: ZeRO: gradients reduced twice for one step", c->rank);
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
    } else if (z->o.stage == 1) {
        /* the reduce-scatter of the accumulated gradients: every piece to its owner */
        zg_zero_pending *list = NULL;
        zg_comm_group_begin(c);
        for_each_piece(z, 0, z->n, z->o.reduce_bucket_size, launch_reduce_piece_list, &list);
        zg_comm_group_end(c);
        wait_list(z, &list);
    }
    z->reduced = 1;
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
    if (z->o.stage <= 1) z->be->ops->zero(z->be, z->grads, z->n * esz(z->gdt));
    z->micro = 0;
    z->reduced = 0;
}

void zg_zero_apply(zg_zero *z, float lr, float grad_scale) {
    if (!z->reduced) ZG_FATAL("rank %d: ZeRO: zg_zero_apply without zg_zero_grad_norm", z->comm->rank);
    params_wait_all(z); /* two steps without a forward between: the previous gathers first */
    size_t gcount;
    const void *g = shard_grads(z, &gcount);
    float scale = grad_scale / (float)z->comm->size;
    if (deferred_gather(z)) { /* waited for by the next forward, slot by slot */
        apply_and_launch_gathers(z, g, lr, scale);
    } else {
        zg_optimizer_step(&z->opt, own_params(z), g, lr, scale);
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
    params_wait_all(z);
    if (z->end > z->begin) zg_optimizer_params_from_master(&z->opt, own_params(z));
    if (z->o.stage == 0) {
        if (z->comm->size > 1) zg_comm_broadcast(z->comm, z->params, z->n, z->pdt, 0);
    } else if (z->o.stage <= 2) {
        allgather_params(z);
    } else {
        for (int s = 0; s <= z->n_layer; s++) z->gathered[s] = 2;
        zg_zero_release_all(z);
    }
}

zg_optimizer *zg_zero_optimizer(zg_zero *z) { return &z->opt; }

/* ---- sharded checkpoints ----------------------------------------------------------------- */

typedef struct {
    zg_ckpt_file file;
    int32_t wrote, ok;
    char error[200];
} shard_record;

int zg_zero_ckpt_agree(zg_zero *z, zg_ckpt_writer *w, int ok, const char *error) {
    zg_comm *c = z->comm;
    int root = c->rank == 0;
    shard_record mine;
    memset(&mine, 0, sizeof mine);
    mine.ok = ok;
    if (!ok) snprintf(mine.error, sizeof mine.error, "%s", error);
    if (ok && !root && w->n_files > 0) { /* a rank other than 0 writes its shard only */
        mine.file = w->files[w->n_files - 1];
        mine.wrote = 1;
    }
    shard_record *all = zg_malloc(sizeof mine * (size_t)c->size);
    zg_comm_all_gather_host(c, &mine, all, sizeof mine);
    int failed = -1;
    for (int r = 0; r < c->size && failed < 0; r++)
        if (!all[r].ok) failed = r;
    int rc = 0;
    if (failed >= 0) {
        rc = zg_errorf("rank %d could not write its checkpoint files: %s", failed, all[failed].error);
        if (root) zg_ckpt_writer_abort(w);
    } else if (root) {
        for (int r = 1; r < c->size; r++) {
            if (!all[r].wrote) continue;
            w->files = zg_realloc(w->files, (size_t)(w->n_files + 1) * sizeof *w->files);
            w->files[w->n_files++] = all[r].file;
        }
    }
    if (!root) zg_ckpt_writer_release(w); /* without touching the folder: rank 0 owns it */
    free(all);
    return rc;
}

int zg_zero_ckpt_writes_shard(const zg_zero *z) {
    return (z->o.stage == 0 ? z->comm->rank == 0 : 1) && z->end > z->begin;
}

int zg_zero_ckpt_write_shards(zg_zero *z, zg_ckpt_writer *w, const char *out_dir, const char *tag) {
    zg_comm *c = z->comm;
    int root = c->rank == 0, ok = 1;
    zg_comm_barrier(c); /* rank 0's partial folder exists from here on */
    /* the other ranks join the folder rank 0 created; a failure is reported like a failed write, so
     * every rank still takes the all-gather of zg_zero_ckpt_agree */
    if (!root && zg_ckpt_writer_join(w, out_dir, tag) != 0) ok = 0;
    if (ok && zg_zero_ckpt_writes_shard(z)) {
        int before = w->n_files;
        ok = zg_ckpt_write_optimizer(w, &z->opt, z->n) == 0 && w->n_files == before + 1;
    }
    return zg_zero_ckpt_agree(z, w, ok, ok ? "" : zg_error_message());
}

/* ---- memory ------------------------------------------------------------------------------ */

void zg_zero_plan(size_t n, int world, int rank, const zg_zero_opts *o, zg_dtype pdt, zg_dtype gdt, int device,
                  size_t act_bytes, zg_zero_memory *m) {
    memset(m, 0, sizeof *m);
    size_t b = 0, e = n;
    if (o->stage > 0) zg_zero_shard_range(n, world, rank, &b, &e);
    size_t k = e - b;
    m->params = n * zg_dtype_size(pdt);
    m->grads = n * zg_dtype_size(gdt);
    if (o->stage >= 2) m->grad_shard = k * zg_dtype_size(gdt);
    m->optimizer = k ? k * 4 * (pdt == ZG_F32 ? 2 : 3) : 0;
    /* The MPI backend reduces 16-bit data through fp32 scratch: up to the buckets in flight. */
    if (!device && gdt != ZG_F32 && world > 1) {
        size_t bucket = o->reduce_bucket_size < n ? o->reduce_bucket_size : n;
        m->comm += bucket * 4 * (o->stage >= 2 && o->overlap_comm ? MAX_BUCKETS_IN_FLIGHT : 1);
    }
    m->activations = act_bytes;
}

void zg_zero_plan_model(const gpt2_param_table *t, int world, int rank, const zg_zero_opts *o, zg_dtype pdt,
                        zg_dtype gdt, int device, size_t act_bytes, zg_zero_memory *m) {
    size_t n = t->num_params;
    zg_zero_plan(n, world, rank, o, pdt, gdt, device, act_bytes, m);
    int L = table_layers(t);
    size_t lmax = layer_size_max(t, L, NULL), res = resident_elems(t, L);
    if (o->stage >= 2) m->grads = (res + (size_t)zg_zero_grad_pool_count(t, o) * lmax) * zg_dtype_size(gdt);
    if (o->stage >= 3) {
        size_t b, e;
        zg_zero_shard_range(n, world, rank, &b, &e);
        m->params = (e - b + res + (L > 0 ? 2 * lmax : 0)) * zg_dtype_size(pdt);
    }
}

void zg_zero_memory_held(const zg_zero *z, zg_zero_memory *m) {
    memset(m, 0, sizeof *m);
    /* what is allocated now (outside zg_zero_gather_all's temporary full copy) */
    size_t pe = z->params && z->params != z->param_full ? z->n : 0;
    if (z->param_shard) pe += z->end - z->begin;
    if (z->param_resident) pe += z->resident;
    for (int i = 0; i < 2; i++) pe += z->param_pool[i] ? z->layer_max : 0;
    m->params = pe * esz(z->pdt);
    size_t ge = z->grads ? z->n : 0;
    if (z->grad_resident) ge += z->resident;
    ge += (size_t)z->grad_pool_n * z->layer_max;
    m->grads = ge * esz(z->gdt);
    m->grad_shard = z->grad_shard ? (z->end - z->begin) * esz(z->gdt) : 0;
    m->optimizer = zg_optimizer_state_bytes(&z->opt);
    m->comm = z->comm->scratch_peak;
}

size_t zg_zero_memory_total(const zg_zero_memory *m) {
    return m->params + m->grads + m->grad_shard + m->optimizer + m->comm + m->activations;
}
