/* One optimizer step over the ZeRO engine (see train_step.h). */
#include "train/train_step.h"

#include "core/clock.h"
#include "core/error.h"
#include "dist/comm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Adds the time since *last to phase `ph` and restarts the clock. The backend (and so the GPU) is
 * synchronised first, so a phase gets the device time of the work it enqueued: this perturbs the
 * overlap it measures (as DeepSpeed's breakdown does), so it is off by default. */
static void phase_mark(const zg_train_step_cfg *s, zg_train_step_result *r, zg_step_phase ph, double *last) {
    if (!s->breakdown) return;
    zg_backend *be = s->model->be;
    be->ops->synchronize(be);
    double now = 1e3 * zg_now_s();
    r->ms[ph] += now - *last;
    *last = now;
}

/* ZGPT_STEP_GRAPH (an A/B knob): 1 or unset records each micro-step's forward and backward once and replays
 * them (gpt2_model.record, gpt2_graph.c); 0 launches every op. Anything else is refused. */
static int step_graph_env(int *on) {
    const char *v = getenv("ZGPT_STEP_GRAPH");
    *on = 1;
    if (v == NULL || *v == '\0' || strcmp(v, "1") == 0) return 0;
    if (strcmp(v, "0") == 0) {
        *on = 0;
        return 0;
    }
    return zg_errorf("ZGPT_STEP_GRAPH=%s: use 1 (record the training passes once and replay them: the default) or 0 "
                     "(launch every op)",
                     v);
}

int zg_train_step(const zg_train_step_cfg *s, double lr, int poison_loss, zg_train_step_result *r) {
    gpt2_model *m = s->model;
    zg_zero *z = s->zero;
    zg_comm *comm = z->comm;
    memset(r, 0, sizeof *r);
    int record;
    if (step_graph_env(&record) != 0) return -1;
    /* the breakdown waits after each phase; the model records only where no hooks work beside the passes */
    m->record = record && !s->breakdown;
    r->clip = 1.0;
    double t = 1e3 * zg_now_s();
    double scale = zg_loss_scaler_scale(s->scaler);
    int fwd_failed = 0;
    (void)gpt2_train_losses_take(m, NULL); /* nothing left from a step that ended early */
    for (int64_t k = 0; k < s->grad_accum; k++) {
        s->next_batch(s->batch_ctx, s->inputs, s->targets);
        phase_mark(s, r, ZG_STEP_DATA, &t);
        /* gradient of the mean over the global batch, times the fp16 loss scale (the ZeRO engine
         * divides by the world size); the backward's LM head writes it with the losses, chunk by chunk */
        float bscale = (float)(scale / (double)s->grad_accum);
        /* the losses stay on the device until after the gradient norm (one wait per step, not one per
         * micro-step; a checkpoint snapshot's device-to-host copy no longer delays the next micro-step) */
        if (gpt2_forward_train_deferred(m, s->inputs, s->targets, s->B, s->T, bscale) != 0) fwd_failed = 1;
        phase_mark(s, r, ZG_STEP_FORWARD, &t);
        gpt2_backward(m, bscale);
        phase_mark(s, r, ZG_STEP_BACKWARD, &t);
        zg_zero_micro_end(z);
        phase_mark(s, r, ZG_STEP_REDUCE, &t);
    }
    /* The gradient norm first, the losses after it: the norm waits for the device anyway, so the losses'
     * download adds no second wait. Read right after the last forward, they stopped the device before the
     * backward was launched (~0.15 ms a step: the host's wake-up and the backward's first launches). */
    zg_zero_step_info info;
    zg_zero_grad_norm(z, (float)(1.0 / scale), &info);
    r->grad_norm = info.grad_norm;
    phase_mark(s, r, ZG_STEP_NORM, &t);
    double loss_sum = gpt2_train_losses_take(m, NULL);
    /* the loss of the global batch: mean over ranks (the failure is agreed) */
    double v[2] = {loss_sum / (double)s->grad_accum, fwd_failed};
    zg_comm_all_reduce_host_f64(comm, v, 2, ZG_COMM_SUM);
    if (v[1] > 0) return fwd_failed ? -1 : zg_errorf("the forward pass failed on another rank");
    r->loss = poison_loss ? NAN : v[0] / (double)comm->size;
    int overflow = info.overflow || !isfinite(r->loss);
    phase_mark(s, r, ZG_STEP_OTHER, &t);
    if (s->scaler->cfg.enabled) {
        zg_scaler_result d = zg_loss_scaler_update(s->scaler, overflow, r->message, sizeof r->message);
        if (d == ZG_SCALER_STOP) {
            r->status = ZG_STEP_STOP;
            return 0;
        }
        if (d == ZG_SCALER_SKIP) {
            zg_zero_skip(z);
            r->status = ZG_STEP_SKIPPED;
            return 0;
        }
    } else if (overflow) {
        zg_zero_skip(z); /* nothing applied; the engine is ready for another step */
        r->status = ZG_STEP_DIVERGED;
        return 0;
    }
    if (s->grad_clip > 0 && r->grad_norm > s->grad_clip) r->clip = s->grad_clip / (r->grad_norm + 1e-6);
    if (s->before_update && s->before_update(s->update_ctx) != 0) return -1;
    zg_zero_apply(z, (float)lr, (float)(r->clip / scale));
    /* No wait for the update here: the host goes on to the next step's batch, upload and launches while the
     * optimizer runs (waiting left the GPU idle for that host work: 0.9 ms a step at GPT-2 XL on an H200,
     * PERFORMANCE.md v0.38). The next step's gradient norm waits for the device, so the host is never more
     * than one step ahead, and a step's time is the device's period once steps follow each other. Whatever
     * reads the state on the host orders itself: a checkpoint's snapshot waits on an event recorded on the
     * compute stream, downloads synchronise. With ZeRO-Offload the device work left is the parameters'
     * upload, which the next forward waits for slot by slot. The breakdown alone waits (each phase its own
     * device time; with offload the wait is the upload's tail). */
    double t_up = 1e3 * zg_now_s();
    if (s->breakdown) m->be->ops->synchronize(m->be);
    if (z->off && s->breakdown) {
        r->offload = zg_zero_offload_step_times(z);
        r->offload.upload_wait_ms += 1e3 * zg_now_s() - t_up;
    }
    phase_mark(s, r, ZG_STEP_OPTIMIZER, &t);
    r->status = ZG_STEP_APPLIED;
    return 0;
}
