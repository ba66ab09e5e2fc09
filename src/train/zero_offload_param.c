/* offload_param (DeepSpeed's zero_optimization.offload_param {"device": "cpu"}, stage 3 over a model):
 * the rank's parameter shard (param dtype: the 16-bit compute copy, or fp32 when training in fp32)
 * lives in host memory, page-locked when offload_param.pin_memory is true, and the device holds only
 * the gathered slots (embeddings + ln_f, the current layer and the prefetched next one).
 *
 * Upload schedule: when the engine places a slot's buffer (stage 3's slot_start_gather: the layer about
 * to run, or the prefetch of the next one), this rank's part of the slot is copied from the host shard
 * on the copy stream, behind the compute stream's last use of that buffer (the slot that held it
 * before). With several ranks the all-gather of the slot follows (the communicator orders after the
 * compute stream, so the compute stream waits for the upload first); with one rank there is no gather
 * and the compute stream waits only just before the slot runs, so the prefetch overlaps the current
 * layer. Everything else is stage 3 unchanged: the arithmetic is the same, only the bytes' home moves.
 *
 * Updates: with offload_optimizer the host AdamW writes the host shard itself (zero_offload.c aliases
 * its parameter staging to it). With the GPU optimizer, each step uploads the shard slot by slot into the
 * gather buffers (free between backward and the next forward: no extra device memory), updates each part
 * there and downloads it (the optimizer state, 12-16 bytes per shard parameter, is on the device
 * anyway). */
#include "train/zero_internal.h"

#include "core/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct zg_zero_param_offload {
    zg_event *freed;     /* compute stream, behind the use of a slot buffer that is being refilled */
    zero_slot_fences up; /* per slot: behind its upload */
};

typedef struct {
    const void *g;
    float lr, scale;
} zero_step_args;

static size_t shard_count(const zg_zero *z) { return z->end - z->begin; }

int zero_param_offload_init(zg_zero *z, const void *dev_src) {
    zg_backend *be = z->be;
    size_t k = shard_count(z);
    zg_zero_param_offload *p = zg_calloc(1, sizeof *p);
    z->poff = p;
    z->param_shard = be->ops->host_alloc(be, (k ? k : 1) * esz(z->pdt), z->o.offload_param_pin_memory,
                                         "offload_param parameter shard (host)");
    if (!z->param_shard) return -1;
    if (k) be->ops->download(be, z->param_shard, dev_src, k * esz(z->pdt));
    p->freed = be->ops->event_create(be);
    zero_fences_init(&p->up, be, z->n_layer + 1);
    return 0;
}

void zero_param_offload_free(zg_zero *z) {
    zg_zero_param_offload *p = z->poff;
    if (!p) return;
    zg_backend *be = z->be;
    be->ops->synchronize(be); /* no copy in flight reads the host shard any more */
    zero_fences_free(&p->up, be);
    if (p->freed) be->ops->event_destroy(be, p->freed);
    if (z->param_shard) be->ops->host_free(be, z->param_shard);
    z->param_shard = NULL;
    free(p);
    z->poff = NULL;
}

void zero_param_offload_upload_slot(zg_zero *z, int slot) {
    zg_zero_param_offload *p = z->poff;
    zg_backend *be = z->be;
    size_t lo[2], hi[2];
    int n = zero_slot_ranges(z, slot, lo, hi), any = 0;
    for (int i = 0; i < n; i++) {
        size_t a = lo[i] > z->begin ? lo[i] : z->begin, b = hi[i] < z->end ? hi[i] : z->end;
        if (a >= b) continue;
        if (!any) { /* the buffer's previous slot has been computed with before it is overwritten */
            be->ops->event_record(be, p->freed, ZG_STREAM_COMPUTE);
            be->ops->stream_wait(be, ZG_STREAM_COPY, p->freed);
        }
        be->ops->copy_async(be, zero_param_at(z, a), at(z->param_shard, a - z->begin, z->pdt), (b - a) * esz(z->pdt),
                            ZG_COPY_H2D);
        any = 1;
    }
    if (!any) return;
    zero_fences_signal(&p->up, be, slot);
    if (z->comm->size > 1) zero_param_offload_wait_slot(z, slot); /* the all-gather sends it next */
}

void zero_param_offload_wait_slot(zg_zero *z, int slot) {
    zg_zero_param_offload *p = z->poff;
    if (p) zero_fences_wait(&p->up, z->be, slot);
}

void zero_param_offload_quiesce(zg_zero *z) {
    if (!z->poff) return;
    /* the copy stream's uploads and the compute stream's (zg_zero_gather_all uploads on it) */
    z->be->ops->synchronize(z->be);
}

/* Calls fn for this rank's part [a, b) of each slot, with the gather buffer that slot uses as scratch. */
typedef void (*slot_part_fn)(zg_zero *z, void *scratch, size_t a, size_t b, void *arg);
static void for_each_slot_part(zg_zero *z, slot_part_fn fn, void *arg) {
    /* the gather buffers are free between backward and the next forward: the embeddings + ln_f go
     * through the resident one, each layer through a layer buffer */
    for (int s = 0; s <= z->n_layer; s++) {
        void *scratch = s == 0 ? z->param_resident : z->param_pool[0];
        size_t lo[2], hi[2];
        int n = zero_slot_ranges(z, s, lo, hi);
        for (int i = 0; i < n; i++) {
            size_t a = lo[i] > z->begin ? lo[i] : z->begin, b = hi[i] < z->end ? hi[i] : z->end;
            if (a < b) fn(z, scratch, a, b, arg);
        }
    }
}

static void cast_part(zg_zero *z, void *scratch, size_t a, size_t b, void *arg) {
    (void)arg;
    zg_backend *be = z->be;
    be->ops->cast(be, scratch, z->pdt, at(z->opt.master, a - z->begin, ZG_F32), ZG_F32, b - a);
    be->ops->download(be, at(z->param_shard, a - z->begin, z->pdt), scratch, (b - a) * esz(z->pdt));
}

void zero_param_offload_after_load(zg_zero *z) {
    if (!z->opt.master) return; /* fp32: the shard was read from the loaded parameters at init */
    zero_param_offload_quiesce(z);
    for_each_slot_part(z, cast_part, NULL);
}

/* The part [a, b) of the shard through `scratch` (device memory of >= b - a elements): uploaded when the
 * optimizer reads it (fp32: the parameters are the master), updated there by step_part, downloaded. */
static void step_part(zg_zero *z, void *scratch, size_t a, size_t b, void *arg) {
    const zero_step_args *s = arg;
    zg_backend *be = z->be;
    size_t bytes = (b - a) * esz(z->pdt);
    void *host = at(z->param_shard, a - z->begin, z->pdt);
    if (!z->opt.master) be->ops->upload(be, scratch, host, bytes);
    /* step_part addresses the parameters from the shard's start: the scratch stands at offset a - begin
     * (the optimizer only touches [a, b), which is the scratch) */
    void *base = (void *)((uintptr_t)scratch - (uintptr_t)((a - z->begin) * esz(z->pdt)));
    zg_optimizer_step_part(&z->opt, a, b, base, s->g, s->lr, s->scale);
    be->ops->download(be, host, scratch, bytes); /* behind the update on the compute stream */
}

/* Lamb on several ranks in fp32 (no master: the parameters are the host shard): a cut tensor's part goes
 * up into the gather buffer of its slot (a tensor lies inside one slot, whose buffer holds it whole) for
 * the first pass, like step_part's. Both cuts may use the same buffer: each pass reads it before the next
 * upload, in stream order. */
static void *stage_lamb_cut(zg_zero *z, size_t lo, size_t hi) {
    for (int s = 0; s <= z->n_layer; s++) {
        size_t rlo[2], rhi[2];
        int n = zero_slot_ranges(z, s, rlo, rhi);
        for (int i = 0; i < n; i++) {
            if (lo < rlo[i] || hi > rhi[i]) continue;
            zg_backend *be = z->be;
            void *scratch = s == 0 ? z->param_resident : z->param_pool[0];
            be->ops->upload(be, scratch, at(z->param_shard, lo - z->begin, z->pdt), (hi - lo) * esz(z->pdt));
            return (void *)((uintptr_t)scratch - (uintptr_t)((lo - z->begin) * esz(z->pdt)));
        }
    }
    ZG_FATAL("rank %d: ZeRO offload_param: Lamb's cut [%zu, %zu) lies in no slot", z->comm->rank, lo, hi);
    return NULL;
}

void zero_param_offload_gpu_step(zg_zero *z, const void *g, float lr, float scale) {
    zero_step_args s = {g, lr, scale};
    zero_param_offload_quiesce(z);
    zg_optimizer_step_begin(&z->opt);
    /* Lamb's first pass over the cut tensors reads the master, or without one (fp32) the host shard's
     * parts through the gather buffers */
    zero_lamb_cut_totals_staged(z, NULL, z->opt.master ? NULL : stage_lamb_cut, g, scale);
    for_each_slot_part(z, step_part, &s);
}

size_t zero_param_offload_host_bytes(const zg_zero *z) { return z->poff ? shard_count(z) * esz(z->pdt) : 0; }
