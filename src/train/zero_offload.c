/* ZeRO-Offload: the optimizer state on the host and AdamW (or Lamb) on the CPU (see zero_offload.h). */
#include "train/zero_offload.h"

#include "core/clock.h"
#include "core/error.h"
#include "train/zero_internal.h"

#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct zg_zero_offload {
    void *grads_host;          /* (end - begin) x grad dtype: the step's reduced gradient shard */
    void *params_host;         /* (end - begin) x param dtype: updated parameters on their way up (fp32 params:
                         * the optimizer's parameters themselves) */
    zg_event *reduced;         /* compute stream, behind a reduction of this rank's gradients */
    zg_event *downloaded;      /* copy stream, behind the last gradient download */
    zero_slot_fences down;     /* per slot: behind the last download of its gradients (the host AdamW of a
                                  slot starts once its own gradients are on the host) */
    zero_slot_fences uploaded; /* per slot: behind its parameters' upload */
    size_t sent;               /* gradient elements sent to the host in this step */
    /* delayed parameter update (z->o.offload_dpu; see zero_offload.h) */
    int dpu_on;  /* the delay is active (past the warm-up) */
    int applied; /* zero_offload_apply ran in this step (end_step: else it was skipped) */
    int running; /* the host step's thread was started and not joined */
    int ready;   /* its result waits in up[written] for the upload */
    int written; /* the upload buffer the last thread wrote */
    int threads; /* OpenMP threads of the host step: one core fewer than the main thread has */
    pthread_t thread;
    zg_optimizer snap; /* the optimizer as of the step's start (cfg, step): the main thread moves on */
    float lr, scale;
    void *up[2];           /* updated parameters (param dtype) by alternate steps; up[0] is params_host
                            * unless the parameters are fp32 (then params_host is the optimizer's) */
    zg_event *up_done[2];  /* copy stream, behind the last upload from up[i] */
    zg_event *plain_done;  /* copy stream, behind the last upload without the delay (warm-up, load) */
    double thread_ms;      /* the host step's own time (its thread writes it) */
    double thread_wait_ms; /* of which it waited for the step's gradient downloads */
    zg_zero_offload_times times;
};

static size_t shard_count(const zg_zero *z) { return z->end - z->begin; }

/* ---- the delayed parameter update's host step ---------------------------------------------- */

/* The host AdamW of the step in o->snap over the whole shard, on its own thread with one core fewer
 * than the machine (the main thread keeps launching GPU work). The updated parameters land in
 * up[written]; with fp32 parameters the optimizer updates params_host in place and the result is
 * copied there. Of the backend it only waits for the `downloaded` event (the step's gradients on the
 * host; the main thread goes on meanwhile), which the main thread records again only after joining
 * this thread (the next step's first download). */
static void *dpu_main(void *arg) {
    zg_zero *z = arg;
    zg_zero_offload *o = z->off;
    double t0 = zg_now_s();
    z->be->ops->event_synchronize(z->be, o->downloaded);
    o->thread_wait_ms = 1e3 * (zg_now_s() - t0);
    omp_set_num_threads(o->threads);
    size_t k = shard_count(z);
    void *dst = o->up[o->written];
    int fp32 = !o->snap.master;
    zg_optimizer_step_part(&o->snap, z->begin, z->end, fp32 ? o->params_host : dst, o->grads_host, o->lr, o->scale);
    if (fp32) memcpy(dst, o->params_host, k * esz(z->pdt));
    o->thread_ms = 1e3 * (zg_now_s() - t0); /* read by the main thread after the join */
    return NULL;
}

/* Waits for the host step's thread (its result is then `ready`). */
static void dpu_join(zg_zero *z) {
    zg_zero_offload *o = z->off;
    if (!o || !o->running) return;
    double t0 = zg_now_s();
    int e = pthread_join(o->thread, NULL);
    if (e != 0) ZG_FATAL("rank %d: ZeRO-Offload: joining the host update's thread failed (error %d)", z->comm->rank, e);
    o->running = 0;
    o->ready = 1;
    o->times.host_ms += o->thread_ms - o->thread_wait_ms;
    o->times.download_wait_ms += o->thread_wait_ms;
    o->times.join_wait_ms += 1e3 * (zg_now_s() - t0);
}

static void upload_slot(zg_zero *z, int s, void *src, float lr, float scale, int update);

/* The finished host step's parameters go up slot by slot in the next forward's order (with several
 * ranks at stages 1-2, each slot's all-gather behind its upload), as zero_offload_apply does. */
static void dpu_upload_ready(zg_zero *z) {
    zg_zero_offload *o = z->off;
    dpu_join(z);
    if (!o->ready) return;
    int gather = z->o.stage <= 2 && z->comm->size > 1;
    for (int s = 0; s <= z->n_layer; s++) {
        upload_slot(z, s, o->up[o->written], 0.0f, 0.0f, 0);
        if (gather) {
            zero_offload_wait_slot(z, s);
            zero_gather_slot(z, s);
        }
    }
    z->be->ops->event_record(z->be, o->up_done[o->written], ZG_STREAM_COPY);
    o->ready = 0;
}

/* Starts the host step of this step (gradients on the host, step number counted). */
static void dpu_start(zg_zero *z, float lr, float scale) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    double t0 = zg_now_s();
    int w = o->written ^ 1;
    be->ops->event_synchronize(be, o->up_done[w]); /* its last upload (a step ago) has read it */
    be->ops->event_synchronize(be, o->plain_done); /* so have those from params_host before the delay */
    zg_optimizer_wait_copies(&z->opt);             /* a checkpoint snapshot's copies of the state */
    o->times.upload_wait_ms += 1e3 * (zg_now_s() - t0);
    o->snap = z->opt;
    o->lr = lr;
    o->scale = scale;
    o->written = w;
    int e = pthread_create(&o->thread, NULL, dpu_main, z);
    if (e != 0) ZG_FATAL("rank %d: ZeRO-Offload: cannot start the host update's thread (error %d)", z->comm->rank, e);
    o->running = 1;
}

int zero_offload_init(zg_zero *z) {
    zg_backend *be = z->be;
    zg_zero_offload *o = zg_calloc(1, sizeof *o);
    z->off = o;
    size_t k = shard_count(z);
    /* The staging buffers are always page-locked: they are what crosses PCIe, and a copy from pageable
     * memory is staged by the driver synchronously, which would serialise the overlap. pin_memory is
     * about the optimizer state (zg_optimizer_init_host). */
    o->grads_host = be->ops->host_alloc(be, (k ? k : 1) * esz(z->gdt), 1, "ZeRO-Offload gradient shard (host)");
    if (!o->grads_host) return -1;
    if (z->poff) { /* offload_param: the host parameter shard is where the updates go; nothing to upload */
        o->params_host = z->param_shard;
    } else {
        o->params_host = be->ops->host_alloc(be, (k ? k : 1) * esz(z->pdt), 1, "ZeRO-Offload parameter shard (host)");
        if (!o->params_host) return -1;
    }
    if (k && !z->opt.master && !z->poff) /* fp32: the host copy is what the optimizer updates */
        be->ops->download(be, o->params_host, own_params(z), k * esz(z->pdt));
    if (z->o.offload_dpu) {
        int fp32 = !z->opt.master;
        o->up[0] = fp32 ? be->ops->host_alloc(be, (k ? k : 1) * esz(z->pdt), 1, "ZeRO-Offload delayed update (host)")
                        : o->params_host;
        o->up[1] = o->up[0]
                       ? be->ops->host_alloc(be, (k ? k : 1) * esz(z->pdt), 1, "ZeRO-Offload delayed update (host)")
                       : NULL;
        if (!o->up[1]) return -1;
        for (int i = 0; i < 2; i++) o->up_done[i] = be->ops->event_create(be);
        o->plain_done = be->ops->event_create(be);
        int nt = omp_get_max_threads();
        o->threads = nt > 1 ? nt - 1 : 1;
    }
    o->reduced = be->ops->event_create(be);
    o->downloaded = be->ops->event_create(be);
    zero_fences_init(&o->uploaded, be, z->n_layer + 1);
    zero_fences_init(&o->down, be, z->n_layer + 1);
    return 0;
}

void zero_offload_free(zg_zero *z) {
    zg_zero_offload *o = z->off;
    if (!o) return;
    zg_backend *be = z->be;
    dpu_join(z);              /* the host step reads and writes the buffers below */
    be->ops->synchronize(be); /* nothing in flight reads the staging buffers any more */
    for (int i = 0; i < 2; i++)
        if (o->up_done[i]) be->ops->event_destroy(be, o->up_done[i]);
    if (o->plain_done) be->ops->event_destroy(be, o->plain_done);
    if (o->up[0] && o->up[0] != o->params_host) be->ops->host_free(be, o->up[0]);
    if (o->up[1]) be->ops->host_free(be, o->up[1]);
    zero_fences_free(&o->uploaded, be);
    zero_fences_free(&o->down, be);
    if (o->reduced) be->ops->event_destroy(be, o->reduced);
    if (o->downloaded) be->ops->event_destroy(be, o->downloaded);
    be->ops->host_free(be, o->grads_host);
    if (!z->poff) be->ops->host_free(be, o->params_host);
    free(o);
    z->off = NULL;
}

int zero_offload_last_micro(const zg_zero *z) { return z->o.grad_accum > 0 && z->micro + 1 == z->o.grad_accum; }

/* Device address of this rank's accumulated gradient element i (in its shard). */
static const char *shard_grad_at(zg_zero *z, size_t i) {
    return grads_in_shard(z) ? at(z->grad_shard, i - z->begin, z->gdt) : at(z->grads, i, z->gdt);
}

void zero_offload_grads_piece(zg_zero *z, size_t lo, size_t hi) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    if (o->sent == 0) { /* a new step's gradients: its times start; the previous host update reads the staging */
        memset(&o->times, 0, sizeof o->times);
        dpu_join(z);
    }
    if (lo < z->begin || hi > z->end || lo >= hi)
        ZG_FATAL("rank %d: ZeRO-Offload: gradient piece [%zu, %zu) outside the shard [%zu, %zu)", z->comm->rank, lo, hi,
                 z->begin, z->end);
    /* behind the reduction (and the accumulation into the shard) on the compute stream */
    be->ops->event_record(be, o->reduced, ZG_STREAM_COMPUTE);
    be->ops->stream_wait(be, ZG_STREAM_COPY, o->reduced);
    be->ops->copy_async(be, at(o->grads_host, lo - z->begin, z->gdt), shard_grad_at(z, lo), (hi - lo) * esz(z->gdt),
                        ZG_COPY_D2H);
    be->ops->event_record(be, o->downloaded, ZG_STREAM_COPY);
    int g_last = zero_group_of(z, hi - 1);
    for (int g = zero_group_of(z, lo); g <= g_last; g++) zero_fences_signal(&o->down, be, zero_slot_of_group(z, g));
    o->sent += hi - lo;
}

/* The host AdamW's slot order: the order the gradients reach the host (the backward's: ln_f and the last
 * layer first, the embeddings, whose gradient completes last, at the end), so each slot's update starts
 * as soon as its own gradients landed and the downloads' tail hides behind the updates of the slots
 * before. v12: the next forward's order (slot 0 first), after every download. */
static int apply_slot(const zg_zero *z, int i) { return z->o.offload_v12 ? i : z->n_layer - i; }

void zero_offload_grads_finish(zg_zero *z) {
    zg_zero_offload *o = z->off;
    size_t k = shard_count(z);
    if (o->sent == k) return;
    if (o->sent != 0) /* pieces are sent once each, during the last micro-step only */
        ZG_FATAL("rank %d: ZeRO-Offload: %zu of the shard's %zu gradients were sent to the host during backward "
                 "(gradient_accumulation_steps %d, micro-steps %d)",
                 z->comm->rank, o->sent, k, z->o.grad_accum, z->micro);
    /* slot by slot in the host AdamW's order, so that its first slots start before the last ones landed */
    for (int i = 0; i <= z->n_layer; i++) {
        size_t lo[2], hi[2];
        int n = zero_slot_ranges(z, apply_slot(z, i), lo, hi);
        for (int j = 0; j < n; j++) {
            size_t a = lo[j] > z->begin ? lo[j] : z->begin, b = hi[j] < z->end ? hi[j] : z->end;
            if (a < b) zero_offload_grads_piece(z, a, b);
        }
    }
}

void zero_offload_end_step(zg_zero *z) {
    zg_zero_offload *o = z->off;
    /* a skipped step (overflow) with a delayed update: the previous step's parameters go up now, at
     * the boundary where zero_offload_apply would have sent them */
    if (!o->applied) dpu_upload_ready(z);
    /* a skipped step's downloads (or a delayed update's, which its thread waits for) may still read the
     * device gradients the engine zeroes (or the next micro-step overwrites) next: the compute stream
     * waits for every slot's download still owed a wait */
    for (int s = 0; s <= z->n_layer; s++) zero_fences_wait(&o->down, z->be, s);
    o->applied = 0;
    o->sent = 0;
}

void zero_offload_flush(zg_zero *z) {
    if (!z->off) return;
    dpu_upload_ready(z);
    zero_offload_wait_all(z);
}

zg_zero_offload_times zero_offload_step_times(const zg_zero *z) {
    zg_zero_offload_times t = {0};
    if (z->off) t = z->off->times;
    return t;
}

int zero_offload_dpu_pending(const zg_zero *z) { return z->off && (z->off->running || z->off->ready); }

void zero_offload_wait_slot(zg_zero *z, int slot) {
    zg_zero_offload *o = z->off;
    if (o) zero_fences_wait(&o->uploaded, z->be, slot);
}

void zero_offload_wait_all(zg_zero *z) {
    if (!z->off) return;
    for (int s = 0; s <= z->n_layer; s++) zero_offload_wait_slot(z, s);
}

/* Uploads this rank's part of slot s from src (the parameter staging, or a delayed update's buffer),
 * after `update` ran AdamW on it into src, when given. */
static void upload_slot(zg_zero *z, int s, void *src, float lr, float scale, int update) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    /* the staging buffer of this slot is rewritten: its previous upload must have read it */
    double t0 = zg_now_s();
    be->ops->event_synchronize(be, o->uploaded.ev[s]);
    o->times.upload_wait_ms += 1e3 * (zg_now_s() - t0);
    size_t lo[2], hi[2];
    int n = zero_slot_ranges(z, s, lo, hi), any = 0;
    char *dev = own_params(z);
    for (int i = 0; i < n; i++) {
        size_t a = lo[i] > z->begin ? lo[i] : z->begin, b = hi[i] < z->end ? hi[i] : z->end;
        if (a >= b) continue;
        if (update) {
            double t1 = zg_now_s();
            zg_optimizer_step_part(&z->opt, a, b, o->params_host, o->grads_host, lr, scale);
            o->times.host_ms += 1e3 * (zg_now_s() - t1);
        }
        if (z->poff) continue; /* offload_param: updated in place in the host shard */
        be->ops->copy_async(be, dev + (a - z->begin) * esz(z->pdt), at(src, a - z->begin, z->pdt),
                            (b - a) * esz(z->pdt), ZG_COPY_H2D);
        any = 1;
    }
    if (any) zero_fences_signal(&o->uploaded, be, s);
}

/* Lamb on several ranks: the tensors this rank's shard cuts (shared with its neighbours) need their
 * whole ||p|| and ||u||. Their parts' first pass runs here, once their slots' gradients are on the host,
 * and every rank adds its partial sums of squares into one vector indexed by tensor (the same length
 * everywhere, zero elsewhere), summed across the ranks on the host; the step's parts then apply the
 * totals. On the main thread, so a delayed update's thread needs no collective. */
static void lamb_cut_sums(zg_zero *z, float grad_scale) {
    zg_zero_offload *o = z->off;
    zg_optimizer *opt = &z->opt;
    if (opt->cfg.kind != ZG_OPTIMIZER_LAMB || z->comm->size == 1) return;
    double t0 = zg_now_s();
    for (int e = 0; e < 2; e++)
        if (opt->cut_tensor[e] >= 0) {
            zero_fences_sync(&o->down, z->be, zero_slot_of_group(z, zero_group_of(z, opt->cut_lo[e])));
            zero_fences_sync(&o->down, z->be, zero_slot_of_group(z, zero_group_of(z, opt->cut_hi[e] - 1)));
        }
    o->times.download_wait_ms += 1e3 * (zg_now_s() - t0);
    t0 = zg_now_s();
    zero_lamb_cut_totals(z, o->params_host, o->grads_host, grad_scale);
    o->times.host_ms += 1e3 * (zg_now_s() - t0);
}

void zero_offload_apply(zg_zero *z, float lr, float grad_scale) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    if (o->sent != shard_count(z))
        ZG_FATAL("rank %d: ZeRO-Offload: step with %zu of %zu gradients on the host", z->comm->rank, o->sent,
                 shard_count(z));
    o->applied = 1;
    /* the delay starts once warmup_steps optimizer steps have been taken without it */
    if (z->o.offload_dpu && z->opt.step >= z->o.offload_dpu_warmup) o->dpu_on = 1;
    if (z->o.offload_v12) { /* every download first (the delayed update's thread waits for them itself) */
        double t0 = zg_now_s();
        be->ops->event_synchronize(be, o->downloaded);
        o->times.download_wait_ms += 1e3 * (zg_now_s() - t0);
    }
    if (o->dpu_on) { /* the previous step's parameters go up; this step's update runs beside the next */
        dpu_upload_ready(z);
        zg_optimizer_step_begin(&z->opt);
        lamb_cut_sums(z, grad_scale);
        dpu_start(z, lr, grad_scale);
        o->sent = 0;
        return;
    }
    zg_optimizer_step_begin(&z->opt);
    lamb_cut_sums(z, grad_scale);
    int gather = z->o.stage <= 2 && z->comm->size > 1;
    for (int i = 0; i <= z->n_layer; i++) {
        int s = apply_slot(z, i);
        double t0 = zg_now_s();
        zero_fences_sync(&o->down, be, s); /* this slot's gradients are on the host */
        o->times.download_wait_ms += 1e3 * (zg_now_s() - t0);
        upload_slot(z, s, o->params_host, lr, grad_scale, 1);
        if (gather) { /* the slot's all-gather starts behind its upload; the forward waits for the gather */
            zero_offload_wait_slot(z, s);
            zero_gather_slot(z, s);
        }
    }
    if (o->plain_done) be->ops->event_record(be, o->plain_done, ZG_STREAM_COPY);
    o->sent = 0;
}

void zero_offload_after_load(zg_zero *z) {
    zg_zero_offload *o = z->off;
    zg_backend *be = z->be;
    size_t k = shard_count(z);
    dpu_join(z); /* a delayed update in flight is superseded by the loaded state */
    o->ready = 0;
    if (!k) return;
    if (!z->opt.master && z->poff) return; /* fp32 with offload_param: the host shard is the optimizer's */
    if (!z->opt.master) {                  /* fp32: the loaded device parameters are the optimizer's */
        be->ops->download(be, o->params_host, own_params(z), k * esz(z->pdt));
        return;
    }
    zg_optimizer_params_from_master(&z->opt, o->params_host);
    for (int s = 0; s <= z->n_layer; s++) upload_slot(z, s, o->params_host, 0.0f, 0.0f, 0);
    if (o->plain_done) be->ops->event_record(be, o->plain_done, ZG_STREAM_COPY);
    zero_offload_wait_all(z);
}

size_t zero_offload_host_bytes(const zg_zero *z) {
    if (!z->off) return 0;
    size_t k = shard_count(z);
    return zg_optimizer_state_bytes(&z->opt) + k * (esz(z->pdt) + esz(z->gdt)) +
           (z->o.offload_dpu ? zero_offload_plan_dpu_bytes(k, z->pdt) : 0);
}

size_t zero_offload_plan_dpu_bytes(size_t k, zg_dtype pdt) { return k * zg_dtype_size(pdt) * (pdt == ZG_F32 ? 2 : 1); }

size_t zero_offload_plan_host_bytes(size_t k, zg_dtype pdt, zg_dtype gdt) {
    size_t state = k * sizeof(float) * (pdt == ZG_F32 ? 2 : 3);
    return state + k * (zg_dtype_size(pdt) + zg_dtype_size(gdt));
}
