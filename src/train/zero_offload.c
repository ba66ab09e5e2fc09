/* ZeRO-Offload: the optimizer state on the host and AdamW on the CPU (see zero_offload.h). */
#include "train/zero_offload.h"

#include "core/error.h"
#include "train/zero_internal.h"

#include <stdlib.h>
#include <string.h>

struct zg_zero_offload {
    void *grads_host;     /* (end - begin) x grad dtype: the step's reduced gradient shard */
    void *params_host;    /* (end - begin) x param dtype: updated parameters on their way up (fp32 params:
                         * the optimizer's parameters themselves) */
    zg_event *reduced;    /* compute stream, behind a reduction of this rank's gradients */
    zg_event *downloaded; /* copy stream, behind the last gradient download */
    zg_event **uploaded;  /* per slot: copy stream, behind its upload */
    int *upload_pending;  /* per slot: uploaded, the compute stream has not waited yet */
    size_t sent;          /* gradient elements sent to the host in this step */
};

static size_t shard_count(const zg_zero *z) { return z->end - z->begin; }

int zero_offload_init(zg_zero *z) {
    zg_backend *be = z->be;
    zg_zero_offload *o = zg_calloc(1, sizeof *o);
    z->off = o;
    size_t k = shard_count(z);
    int pin = z->o.offload_pin_memory;
    o->grads_host = be->ops->host_alloc(be, (k ? k : 1) * esz(z->gdt), pin, "ZeRO-Offload gradient shard (host)");
    if (!o->grads_host) return -1;
    if (z->poff) { /* offload_param: the host parameter shard is where the updates go; nothing to upload */
        o->params_host = z->param_shard;
    } else {
        o->params_host = be->ops->host_alloc(be, (k ? k : 1) * esz(z->pdt), pin, "ZeRO-Offload parameter shard (host)");
        if (!o->params_host) return -1;
    }
    if (k && !z->opt.master && !z->poff) /* fp32: the host copy is what the optimizer updates */
        be->ops->download(be, o->params_host, own_params(z), k * esz(z->pdt));
    o->reduced = be->ops->event_create(be);
    o->downloaded = be->ops->event_create(be);
    o->uploaded = zg_calloc((size_t)z->n_layer + 1, sizeof *o->uploaded);
    o->upload_pending = zg_calloc((size_t)z->n_layer + 1, sizeof *o->upload_pending);
    for (int s = 0; s <= z->n_layer; s++) o->uploaded[s] = be->ops->event_create(be);
    return 0;
}

void zero_offload_free(zg_zero *z) {
    zg_zero_offload *o = z->off;
    if (!o) return;
    zg_backend *be = z->be;
    be->ops->synchronize(be); /* nothing in flight reads the staging buffers any more */
    if (o->uploaded)
        for (int s = 0; s <= z->n_layer; s++)
            if (o->uploaded[s]) be->ops->event_destroy(be, o->uploaded[s]);
    if (o->reduced) be->ops->event_destroy(be, o->reduced);
    if (o->downloaded) be->ops->event_destroy(be, o->downloaded);
    be->ops->host_free(be, o->grads_host);
    if (!z->poff) be->ops->host_free(be, o->params_host);
    free(o->uploaded);
    free(o->upload_pending);
    free(o);
    z->off = NULL;
}

int zero_offload_last_micro(const zg_zero *z) { return z->o.grad_accum > 0 && z->micro + 1 == z->o.grad_accum; }

/* Device address of this rank's accumulated gradient element i (in its shard). */
static const char *shard_grad_at(zg_zero *z, size_t i) {
    return z->o.stage >= 2 ? at(z->grad_shard, i - z->begin, z->gdt) : at(z->grads, i, z->gdt);
}

void zero_offload_grads_piece(zg_zero *z, size_t lo, size_t hi) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    if (lo < z->begin || hi > z->end || lo >= hi)
        ZG_FATAL("rank %d: ZeRO-Offload: gradient piece [%zu, %zu) outside the shard [%zu, %zu)", z->comm->rank, lo, hi,
                 z->begin, z->end);
    /* behind the reduction (and the accumulation into the shard) on the compute stream */
    be->ops->event_record(be, o->reduced, ZG_STREAM_COMPUTE);
    be->ops->stream_wait(be, ZG_STREAM_COPY, o->reduced);
    be->ops->copy_async(be, at(o->grads_host, lo - z->begin, z->gdt), shard_grad_at(z, lo), (hi - lo) * esz(z->gdt),
                        ZG_COPY_D2H);
    be->ops->event_record(be, o->downloaded, ZG_STREAM_COPY);
    o->sent += hi - lo;
}

void zero_offload_grads_finish(zg_zero *z) {
    zg_zero_offload *o = z->off;
    size_t k = shard_count(z);
    if (o->sent == k) return;
    if (o->sent != 0) /* pieces are sent once each, during the last micro-step only */
        ZG_FATAL("rank %d: ZeRO-Offload: %zu of the shard's %zu gradients were sent to the host during backward "
                 "(gradient_accumulation_steps %d, micro-steps %d)",
                 z->comm->rank, o->sent, k, z->o.grad_accum, z->micro);
    if (k) zero_offload_grads_piece(z, z->begin, z->end);
}

void zero_offload_end_step(zg_zero *z) { z->off->sent = 0; }

void zero_offload_wait_slot(zg_zero *z, int slot) {
    zg_zero_offload *o = z->off;
    if (!o || slot < 0 || slot > z->n_layer || !o->upload_pending[slot]) return;
    z->be->ops->stream_wait(z->be, ZG_STREAM_COMPUTE, o->uploaded[slot]);
    o->upload_pending[slot] = 0;
}

void zero_offload_wait_all(zg_zero *z) {
    if (!z->off) return;
    for (int s = 0; s <= z->n_layer; s++) zero_offload_wait_slot(z, s);
}

/* Uploads this rank's part of slot s from the staging buffer (after `update` ran on it, when given). */
static void upload_slot(zg_zero *z, int s, float lr, float scale, int update) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    /* the staging buffer of this slot is rewritten: its previous upload must have read it */
    be->ops->event_synchronize(be, o->uploaded[s]);
    size_t lo[2], hi[2];
    int n = zero_slot_ranges(z, s, lo, hi), any = 0;
    char *dev = own_params(z);
    for (int i = 0; i < n; i++) {
        size_t a = lo[i] > z->begin ? lo[i] : z->begin, b = hi[i] < z->end ? hi[i] : z->end;
        if (a >= b) continue;
        if (update) zg_optimizer_step_part(&z->opt, a, b, o->params_host, o->grads_host, lr, scale);
        if (z->poff) continue; /* offload_param: updated in place in the host shard */
        be->ops->copy_async(be, dev + (a - z->begin) * esz(z->pdt), at(o->params_host, a - z->begin, z->pdt),
                            (b - a) * esz(z->pdt), ZG_COPY_H2D);
        any = 1;
    }
    if (any) {
        be->ops->event_record(be, o->uploaded[s], ZG_STREAM_COPY);
        o->upload_pending[s] = 1;
    }
}

void zero_offload_apply(zg_zero *z, float lr, float grad_scale) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    if (o->sent != shard_count(z))
        ZG_FATAL("rank %d: ZeRO-Offload: step with %zu of %zu gradients on the host", z->comm->rank, o->sent,
                 shard_count(z));
    be->ops->event_synchronize(be, o->downloaded);
    zg_optimizer_step_begin(&z->opt);
    int gather = z->o.stage <= 2 && z->comm->size > 1;
    for (int s = 0; s <= z->n_layer; s++) {
        upload_slot(z, s, lr, grad_scale, 1);
        if (gather) { /* the slot's all-gather starts behind its upload; the forward waits for the gather */
            zero_offload_wait_slot(z, s);
            zero_gather_slot(z, s);
        }
    }
    o->sent = 0;
}

void zero_offload_after_load(zg_zero *z) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    size_t k = shard_count(z);
    if (!k) return;
    if (!z->opt.master && z->poff) return; /* fp32 with offload_param: the host shard is the optimizer's */
    if (!z->opt.master) {                  /* fp32: the loaded device parameters are the optimizer's */
        be->ops->download(be, o->params_host, own_params(z), k * esz(z->pdt));
        return;
    }
    zg_optimizer_params_from_master(&z->opt, o->params_host);
    for (int s = 0; s <= z->n_layer; s++) upload_slot(z, s, 0.0f, 0.0f, 0);
    zero_offload_wait_all(z);
}

size_t zero_offload_host_bytes(const zg_zero *z) {
    if (!z->off) return 0;
    size_t k = shard_count(z);
    return zg_optimizer_state_bytes(&z->opt) + k * (esz(z->pdt) + esz(z->gdt));
}

size_t zero_offload_plan_host_bytes(size_t k, zg_dtype pdt, zg_dtype gdt) {
    size_t state = k * sizeof(float) * (pdt == ZG_F32 ? 2 : 3);
    return state + k * (zg_dtype_size(pdt) + zg_dtype_size(gdt));
}
