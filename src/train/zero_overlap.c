/* The ZeRO engine's overlap machinery (see zero.h): gradient pieces and buckets reduced while backward
 * runs, stage 3's layer gather slots and prefetch, the stage 2-3 layer gradient pool, and the hooks the
 * model calls. */
#include "train/zero_internal.h"
#include "train/zero_offload.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

static int owner_of(const zg_zero *z, size_t i) { return (int)(i / z->shard); }

/* The group (gpt2_group_count numbering) holding element i. */
int zero_group_of(const zg_zero *z, size_t i) {
    const size_t *lb = z->table->layer_begin;
    int L = z->n_layer;
    if (i < lb[0]) return 0;
    if (i >= lb[L]) return L + 1;
    int a = 0, b = L - 1; /* layer l with lb[l] <= i < lb[l+1] */
    while (a < b) {
        int mid = (a + b + 1) / 2;
        if (lb[mid] <= i)
            a = mid;
        else
            b = mid - 1;
    }
    return a + 1;
}

static int params_grouped(const zg_zero *z) { return z->model && z->o.stage >= 3 && !z->param_full; }

/* Address of element i of the model's per-group buffers (bufs: grad_group or param_group); `noun` and
 * `missing` word the error when i's group has no buffer. */
static char *group_elem_at(zg_zero *z, void **bufs, size_t i, zg_dtype dt, const char *noun, const char *missing) {
    int g = zero_group_of(z, i);
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
char *zero_param_at(zg_zero *z, size_t i) {
    if (z->param_full) return at(z->param_full, i, z->pdt);
    if (!params_grouped(z)) return at(z->params, i, z->pdt);
    return group_elem_at(z, z->model->param_group, i, z->pdt, "parameters", "not gathered");
}

/* ---- pieces ------------------------------------------------------------------------------ */

zg_zero_pending *zero_pending_new(size_t lo, size_t hi, int owner) {
    zg_zero_pending *p = zg_calloc(1, sizeof *p);
    p->lo = lo;
    p->hi = hi;
    p->owner = owner;
    return p;
}

void zero_fifo_push(zg_zero_pending **head, zg_zero_pending *p) {
    p->next = NULL;
    while (*head) head = &(*head)->next;
    *head = p;
}

/* Calls fn for each piece of [lo, hi) cut at shard boundaries and at `chunk` elements. */
void zero_for_each_piece(zg_zero *z, size_t lo, size_t hi, size_t chunk, zero_piece_fn fn, void *arg) {
    while (lo < hi) {
        int r = owner_of(z, lo);
        size_t shard_end = (size_t)(r + 1) * z->shard;
        size_t e = hi < shard_end ? hi : shard_end;
        if (e - lo > chunk) e = lo + chunk;
        if (z->model && z->o.stage >= 2) { /* one piece, one group buffer */
            size_t glo, ghi;
            gpt2_group_range(z->table, zero_group_of(z, lo), &glo, &ghi);
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
    z->group_launched[g] = 0; /* (a carried group completes in the next micro-step: zg_zero_micro_end) */
    z->model->grad_group[g] = NULL;
}

static void complete_reduce(zg_zero *z, zg_zero_pending *p) {
    zg_comm_wait(z->comm, p->req);
    if (p->owner == z->comm->rank && !p->into_shard) accumulate_into_shard(z, p->lo, p->hi);
    /* ZeRO-Offload: the last micro-step's sum of this rank's piece is final: to the host, now */
    if (z->off && p->owner == z->comm->rank && zero_offload_last_micro(z)) zero_offload_grads_piece(z, p->lo, p->hi);
    if (grads_grouped(z)) {
        int g = zero_group_of(z, p->lo);
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

void zero_wait_all_reduces(zg_zero *z) {
    while (z->inflight) wait_oldest_bucket(z);
}

static void launch_reduce_piece(zg_zero *z, size_t lo, size_t hi, int owner, void *arg) {
    (void)arg;
    zg_zero_pending *p = zero_pending_new(lo, hi, owner);
    void *buf = grad_at(z, lo), *recv = buf;
    int local = 0;
    if (grads_grouped(z)) {
        int g = zero_group_of(z, lo);
        z->group_inflight[g]++;
        z->group_launched[g] += hi - lo;
        local = zero_group_local(z, g);
    }
    z->n_reduced_elems += hi - lo;
    /* The first micro-step's sum of this rank's own piece lands in its shard directly (no copy);
     * later ones land in place and are added to the shard when complete. A locally accumulated group
     * (zero_local.c) is reduced once per step, on the last micro-step, where its shard part still holds
     * the previous step's values: its sum also lands in the shard directly, overwriting them. */
    if (owner == z->comm->rank && (z->micro == 0 || local) && z->grad_shard) {
        recv = at(z->grad_shard, lo - z->begin, z->gdt);
        p->into_shard = 1;
    }
    p->req = zg_comm_ireduce(z->comm, buf, recv, hi - lo, z->gdt, ZG_COMM_SUM, owner);
    zero_fifo_push(&z->inflight, p);
}

/* Reduces the bucket [lo, hi) (<= reduce_bucket_size) to its owners. */
static void launch_bucket(zg_zero *z, size_t lo, size_t hi) {
    if (hi - lo > z->max_bucket_seen) z->max_bucket_seen = hi - lo;
    while (z->n_inflight_buckets >= (z->o.overlap_comm ? MAX_BUCKETS_IN_FLIGHT : 1)) wait_oldest_bucket(z);
    zg_comm_group_begin(z->comm);
    zero_for_each_piece(z, lo, hi, (size_t)-1, launch_reduce_piece, NULL);
    zg_comm_group_end(z->comm);
    zg_zero_pending *p = z->inflight;
    while (p && p->next) p = p->next;
    if (p) p->bucket_last = 1;
    z->n_inflight_buckets++;
    if (!z->o.overlap_comm) zero_wait_all_reduces(z);
}

/* Launches full buckets of the pending range, from the top (the order gradients complete in). With
 * `all`, the remainder too. */
void zero_flush_pending(zg_zero *z, int all) {
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

/* [offset, offset + count) joins the pending range (which grows downwards, the order backward reports). */
static void pend_add(zg_zero *z, size_t offset, size_t count) {
    if (z->pend_hi > z->pend_lo && offset + count != z->pend_lo) zero_flush_pending(z, 1); /* not adjacent below */
    if (z->pend_hi == z->pend_lo) {
        z->pend_lo = offset;
        z->pend_hi = offset + count;
    } else {
        z->pend_lo = offset;
    }
    zero_flush_pending(z, 0);
}

void zg_zero_on_grads_ready(zg_zero *z, size_t offset, size_t count) {
    if ((z->o.stage < 2 && !z->direct) || count == 0) return;
    if (offset + count > z->n)
        ZG_FATAL("ZeRO: grads_ready [%zu, %zu) beyond the buffer (%zu)", offset, offset + count, z->n);
    if (z->direct) { /* one rank: the range is final once the last micro-step's backward wrote it */
        if (z->off && zero_offload_last_micro(z)) zero_offload_grads_piece(z, offset, offset + count);
        return;
    }
    progress_reduces(z);
    z->reported += count;
    zero_local_report(z, offset, count, pend_add); /* before a step's last micro-step, without local groups */
}

/* ---- stage 3: gathering layers ----------------------------------------------------------- */

/* The ranges of slot s (= layer + 1): layer l -> [lb[l], lb[l+1]); slot 0 -> embeddings + ln_f. */
void zero_fences_init(zero_slot_fences *f, zg_backend *be, int n_slots) {
    f->n = n_slots;
    f->ev = zg_calloc((size_t)n_slots, sizeof *f->ev);
    f->pending = zg_calloc((size_t)n_slots, sizeof *f->pending);
    for (int s = 0; s < n_slots; s++) f->ev[s] = be->ops->event_create(be);
}

void zero_fences_free(zero_slot_fences *f, zg_backend *be) {
    if (f->ev)
        for (int s = 0; s < f->n; s++)
            if (f->ev[s]) be->ops->event_destroy(be, f->ev[s]);
    free(f->ev);
    free(f->pending);
    memset(f, 0, sizeof *f);
}

void zero_fences_signal(zero_slot_fences *f, zg_backend *be, int slot) {
    be->ops->event_record(be, f->ev[slot], ZG_STREAM_COPY);
    f->pending[slot] = 1;
}

void zero_fences_wait(zero_slot_fences *f, zg_backend *be, int slot) {
    if (slot < 0 || slot >= f->n || !f->pending[slot]) return;
    be->ops->stream_wait(be, ZG_STREAM_COMPUTE, f->ev[slot]);
    f->pending[slot] = 0;
}

void zero_fences_sync(zero_slot_fences *f, zg_backend *be, int slot) {
    if (slot < 0 || slot >= f->n || !f->pending[slot]) return;
    be->ops->event_synchronize(be, f->ev[slot]);
    f->pending[slot] = 0;
}

int zero_slot_ranges(const zg_zero *z, int slot, size_t lo[2], size_t hi[2]) {
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
    zg_zero_pending *p = zero_pending_new(lo, hi, owner);
    char *buf = zero_param_at(z, lo);
    /* model mode stage 3: the owner's values live in its shard; the broadcast goes out in place
     * (offload_param: a slot's part was uploaded when the slot was placed; a full gather uploads here) */
    const void *own = z->param_shard && owner == z->comm->rank ? at(z->param_shard, lo - z->begin, z->pdt) : NULL;
    if (own && !z->poff)
        z->be->ops->copy(z->be, buf, own, (hi - lo) * esz(z->pdt));
    else if (own && z->param_full)
        z->be->ops->upload(z->be, buf, own, (hi - lo) * esz(z->pdt));
    p->req = zg_comm_ibroadcast(z->comm, buf, hi - lo, z->pdt, owner);
    zero_fifo_push(list, p);
}

void zero_wait_list(zg_zero *z, zg_zero_pending **list) {
    while (*list) {
        zg_zero_pending *p = *list;
        *list = p->next;
        zg_comm_wait(z->comm, p->req);
        free(p);
    }
}

/* Every owner broadcasts its pieces of [lo, hi) in allgather_bucket_size chunks (an all-gather). */
void zero_gather_range(zg_zero *z, size_t lo, size_t hi, zg_zero_pending **list) {
    zg_comm_group_begin(z->comm);
    zero_for_each_piece(z, lo, hi, z->o.allgather_bucket_size, launch_bcast_piece, list);
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
void zero_gather_slot(zg_zero *z, int slot) {
    size_t lo[2], hi[2];
    int k = zero_slot_ranges(z, slot, lo, hi);
    for (int i = 0; i < k; i++) zero_gather_range(z, lo[i], hi[i], &z->gathering[slot]);
}

static void slot_start_gather(zg_zero *z, int slot) {
    if (slot < 0 || slot > z->n_layer || z->gathered[slot] != 0) return;
    slot_place(z, slot);
    zero_offload_wait_slot(z, slot); /* the shard's part of the slot came back from the host optimizer */
    if (z->poff) zero_param_offload_upload_slot(z, slot); /* offload_param: this rank's part from the host */
    zero_gather_slot(z, slot);
    z->gathered[slot] = 1;
    z->n_gathers++;
}

static void slot_finish_gather(zg_zero *z, int slot) {
    slot_start_gather(z, slot);
    zero_wait_list(z, &z->gathering[slot]);
    zero_param_offload_wait_slot(z, slot); /* one rank: the prefetched upload, only now */
    z->gathered[slot] = 2;
}

static void slot_release(zg_zero *z, int slot) {
    if (z->gathered[slot] == 0) return;
    zero_wait_list(z, &z->gathering[slot]);
    if (stage3_model(z)) { /* model mode: the buffer goes back; nothing else is resident */
        if (!z->param_full) slot_unplace(z, slot);
    } else {
        size_t lo[2], hi[2];
        int k = zero_slot_ranges(z, slot, lo, hi);
        for (int i = 0; i < k; i++) release_range(z, lo[i], hi[i]);
    }
    z->gathered[slot] = 0;
    z->n_releases++;
}

/* Stage 2 in model mode with overlap_comm: the updated parameters are all-gathered per slot
 * (embeddings + ln_f, then each layer, the order of the next forward) without waiting; the forward
 * waits for a slot's gather just before that slot's first use (before_layer), so the gathers of the
 * later layers run while the first layers compute. Everything else that reads parameters waits for
 * all of them first (zero_params_wait_all). */
/* (zero_init allocates the per-slot lists at stage 2 only for a model with overlap_comm, at stages 1-2
 * with ZeRO-Offload (whose uploads come back slot by slot); stage 3 uses the same lists for its own
 * layer gathers) */
int zero_deferred_gather(const zg_zero *z) {
    return (z->o.stage == 2 || (z->o.stage == 1 && z->off)) && z->gathering != NULL;
}

/* Waits for every slot's gathers in flight (the per-slot lists, when there are any). */
void zero_gathers_wait_all(zg_zero *z) {
    if (z->gathering)
        for (int s = 0; s <= z->n_layer; s++) zero_wait_list(z, &z->gathering[s]);
}

void zero_params_wait_all(zg_zero *z) {
    zero_offload_wait_all(z);
    if (zero_deferred_gather(z)) zero_gathers_wait_all(z);
}

/* Deferred gathers: AdamW slot by slot in the next forward's order, each slot's all-gather launched
 * as soon as this rank's part of it is updated. The communication stream waits only for the updates
 * issued before it, so the embeddings (slot 0, which the forward needs first) travel while the rest
 * of the shard is still being updated instead of after all of it (the optimizer's segments are cut
 * at the slot boundaries at init: zg_optimizer_split). */
void zero_apply_and_launch_gathers(zg_zero *z, const void *g, float lr, float scale) {
    zg_optimizer_step_begin(&z->opt);
    void *p = own_params(z);
    zero_lamb_cut_totals(z, p, g, scale);
    for (int s = 0; s <= z->n_layer; s++) {
        size_t lo[2], hi[2];
        int k = zero_slot_ranges(z, s, lo, hi);
        for (int i = 0; i < k; i++) {
            size_t a = lo[i] > z->begin ? lo[i] : z->begin, b = hi[i] < z->end ? hi[i] : z->end;
            if (a < b) zg_optimizer_step_part(&z->opt, a, b, p, g, lr, scale);
        }
        zero_gather_slot(z, s);
    }
}

/* Model mode, stages 2-3, backward of group g is about to start: its gradient buffer (zeroed: the
 * backward ops accumulate). Waits for buckets in flight when the pool is empty; the pool is sized so
 * that this always frees one (zg_zero_grad_pool_count). */
static void grads_acquire(zg_zero *z, int layer) {
    gpt2_model *m = z->model;
    if (zero_local_acquire(z, layer)) return; /* accumulated over the step's micro-steps: zero_local.c */
    if (layer < 0) {                          /* embeddings + ln_f: resident, accumulated over the whole backward */
        /* the previous micro-step's reductions may still read it (carried: wte's is the last launched) */
        zero_wait_all_reduces(z);
        z->be->ops->zero(z->be, z->grad_resident, z->resident * esz(z->gdt));
        return;
    }
    int g = layer + 1;
    if (g > z->n_layer) ZG_FATAL("ZeRO: before_layer(%d) outside the model's %d layers", layer, z->n_layer);
    /* still held by the previous micro-step's carried reductions (a model of few layers) */
    while (z->group_pool[g] >= 0 && z->inflight) wait_oldest_bucket(z);
    if (z->group_pool[g] >= 0)
        ZG_FATAL("rank %d: ZeRO: layer %d's backward ran twice in one micro-step", z->comm->rank, layer);
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
    if (!is_backward && z->off && z->o.stage <= 2) zero_offload_wait_slot(z, layer + 1); /* its upload */
    if (!is_backward && zero_deferred_gather(z) && layer >= -1 && layer < z->n_layer)
        zero_wait_list(z, &z->gathering[layer + 1]); /* this slot's deferred all-gather (zg_zero_apply) */
    if (grads_grouped(z) && is_backward) {
        progress_reduces(z);
        grads_acquire(z, layer);
    }
    if (z->o.stage < 3 || z->param_full) return;
    if (is_backward) progress_reduces(z);
    int slot = layer + 1;
    if (slot < 0 || slot > z->n_layer)
        ZG_FATAL("ZeRO: before_layer(%d) outside the model's %d layers", layer, z->n_layer);
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
    if (slot < 0 || slot > z->n_layer)
        ZG_FATAL("ZeRO: after_layer(%d) outside the model's %d layers", layer, z->n_layer);
    slot_release(z, slot);
}

void zg_zero_gather_all(zg_zero *z) {
    zero_params_wait_all(z);
    if (z->o.stage < 3) return;
    if (stage3_model(z)) {
        /* model mode: a temporary full buffer (m->params) until zg_zero_release_all */
        if (z->param_full) return;
        for (int s = 0; s <= z->n_layer; s++) slot_release(z, s);
        z->param_full = z->be->ops->alloc(z->be, z->n * esz(z->pdt), "ZeRO stage 3 full parameters (gather_all)");
        if (!z->param_full) ZG_FATAL("rank %d: ZeRO: %s", z->comm->rank, zg_error_message());
        zg_zero_pending *list = NULL;
        zero_gather_range(z, 0, z->n, &list);
        zero_wait_list(z, &list);
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
    if (z->o.stage >= 2 || z->direct) h.grads_ready = hook_grads_ready;
    if (grads_grouped(z)) h.before_layer = hook_before; /* hands out each layer's gradient buffer */
    if (z->off) h.before_layer = hook_before;           /* the forward waits for each slot's upload */
    if (z->o.stage >= 3) {
        h.before_layer = hook_before;
        h.after_layer = hook_after;
    }
    return h;
}
