/* One optimizer step, the one step path of `zgpt train` and `zgpt bench` (every rank, same calls):
 *
 *   grad_accum micro-steps: next batch -> gpt2_forward_train_deferred -> gpt2_backward -> zg_zero_micro_end
 *   (the micro-steps' losses read once, after the last forward: gpt2_train_losses_take)
 *   -> the loss: mean over micro-steps, then over ranks
 *   -> zg_zero_grad_norm: the reduction at the boundary, the global norm, the agreed overflow
 *   -> the fp16 loss scaler's decision (skip / stop), or a non-finite loss or norm (diverged)
 *   -> clipping -> before_update (when set) -> zg_zero_apply (AdamW or Lamb over the rank's range, then the parameter gathers)
 *
 * One process runs the ZeRO engine at stage 0 over the single-process communicator (whose
 * collectives do nothing), which computes exactly what a plain optimizer over the whole buffer does:
 * the same gradient zeroing, sum of squares and update. The caller sets lr and (OneCycle) the betas
 * on the engine's optimizer before the step; logging, evaluation and checkpoints stay with it. */
#ifndef ZG_TRAIN_TRAIN_STEP_H
#define ZG_TRAIN_TRAIN_STEP_H

#include "model/gpt2.h"
#include "train/loss_scaler.h"
#include "train/zero.h"

#include <stdint.h>

/* Phases of wall_clock_breakdown (summed over the step's micro-steps). */
typedef enum {
    ZG_STEP_DATA,
    ZG_STEP_FORWARD,
    ZG_STEP_BACKWARD,
    ZG_STEP_REDUCE,
    ZG_STEP_OTHER,
    ZG_STEP_NORM,
    ZG_STEP_OPTIMIZER,
    ZG_STEP_PHASES
} zg_step_phase;

typedef enum {
    ZG_STEP_APPLIED,  /* the update was applied */
    ZG_STEP_SKIPPED,  /* fp16 overflow: the loss scaler skipped the step (message says so) */
    ZG_STEP_STOP,     /* fp16 overflow at the minimum scale: stop training (message says why) */
    ZG_STEP_DIVERGED, /* no loss scaling and a non-finite loss or gradient norm: nothing was applied */
} zg_step_status;

/* Fills one micro-batch (B x T tokens each). */
typedef void (*zg_step_batch_fn)(void *ctx, int32_t *inputs, int32_t *targets);

typedef struct {
    gpt2_model *model;
    zg_zero *zero; /* the engine over the model (zg_zero_init_model); its comm gives the ranks */
    int B, T;
    int64_t grad_accum;        /* micro-steps per step */
    int32_t *inputs, *targets; /* B x T each, filled by next_batch before each micro-step */
    zg_step_batch_fn next_batch;
    void *batch_ctx;
    zg_loss_scaler *scaler; /* fp16 loss scaling (inert when disabled) */
    double grad_clip;       /* maximum global gradient norm; <= 0: no clipping */
    int breakdown;          /* wall_clock_breakdown: synchronise and time each phase into ms[] */
    /* called (when set) on every rank right before the update is applied, after the gradients are
     * reduced: a resume's deferred optimizer state is waited for there. Non-zero: the step returns -1
     * with its error and nothing is applied (the callback agrees the outcome across ranks). */
    int (*before_update)(void *ctx);
    void *update_ctx;
} zg_train_step_cfg;

typedef struct {
    zg_step_status status;
    double loss;                   /* mean over the micro-steps and the ranks */
    double grad_norm;              /* global norm of the averaged, unscaled gradient, before clipping */
    double clip;                   /* clipping coefficient applied (1: none) */
    char message[512];             /* SKIPPED / STOP: the loss scaler's line */
    double ms[ZG_STEP_PHASES];     /* breakdown only: ms per phase, each synchronised at its end */
    zg_zero_offload_times offload; /* breakdown with ZeRO-Offload: inside the norm and optimizer phases */
} zg_train_step_result;

/* One step at learning rate lr. poison_loss (a test hook, ZGPT_TEST_NAN_AT_ITER) takes the loss as
 * NaN. 0 with r->status set; -1 with an error when before_update failed, or the forward pass failed on
 * this or another rank
 * (agreed, so every rank returns -1). */
int zg_train_step(const zg_train_step_cfg *s, double lr, int poison_loss, zg_train_step_result *r);

#endif
