/* Learning-rate schedules: DeepSpeed's WarmupLR / WarmupDecayLR / WarmupCosineLR (same parameter
 * names and formulas), nanoGPT's warmup + cosine (decay_lr), or a constant lr.
 *
 * zg_schedule_lr(s, step) is the lr of optimizer step `step` (0-based). For the DeepSpeed schedules
 * it is their formula at last_batch_iteration == step:
 *   WarmupLR:       gamma = log(step+1)/log(W) ("log") or step/W ("linear") while step < W, then 1;
 *                   lr = warmup_min_lr + (warmup_max_lr - warmup_min_lr) * gamma.
 *   WarmupDecayLR:  as WarmupLR during warmup, then gamma = max(0, (total - step) / max(1, total - W)).
 *   WarmupCosineLR: ratio of the optimizer lr: warmup from warmup_min_ratio to 1 (log or linear), then
 *                   cos_min_ratio + (1 - cos_min_ratio) * (1 + cos(pi * (step - W + 1) / (total - W))) / 2,
 *                   never below 0.
 *   OneCycle:       DeepSpeed's 1cycle policy: over the cycle (first + second step size) the lr rises from
 *                   cycle_min_lr to cycle_max_lr and falls back (x = fraction of the cycle at step+1;
 *                   scale x/r while x <= r, else (x-1)/(r-1), r = first/(first+second); a stair count
 *                   > 0 floors the scale to that many stairs); after the cycle cycle_min_lr /
 *                   (1 + decay_lr_rate * (step - cycle + 1) / decay_step_size) (no decay when
 *                   decay_step_size or decay_lr_rate is 0). With cycle_momentum, beta1 moves the other
 *                   way between cycle_max_mom and cycle_min_mom (after the cycle cycle_max_mom, times
 *                   (1 + decay_mom_rate * ...) when decaying) and beta2 is 0.99, as DeepSpeed sets.
 * For the log warmup W is at least 2 (DeepSpeed divides by log(W)). */
#ifndef ZG_TRAIN_SCHEDULE_H
#define ZG_TRAIN_SCHEDULE_H

#include <stdint.h>

typedef enum {
    ZG_SCHED_CONSTANT = 0,
    ZG_SCHED_WARMUP_LR,
    ZG_SCHED_WARMUP_DECAY_LR,
    ZG_SCHED_WARMUP_COSINE_LR,
    ZG_SCHED_NANOGPT_COSINE, /* nanoGPT: linear warmup over warmup_iters, cosine to min_lr at lr_decay_iters */
    ZG_SCHED_ONE_CYCLE,      /* DeepSpeed's OneCycle */
} zg_schedule_type;

typedef struct {
    zg_schedule_type type;
    double base_lr; /* the optimizer's lr (peak for WarmupCosineLR, nanoGPT and constant) */
    /* DeepSpeed params (-1 / NaN-free defaults filled by zg_schedule_config_defaults) */
    double warmup_min_lr, warmup_max_lr;
    int64_t warmup_num_steps;
    int warmup_linear; /* warmup_type: 0 "log" (DeepSpeed's default), 1 "linear" */
    int64_t total_num_steps;
    double warmup_min_ratio, cos_min_ratio;
    /* nanoGPT */
    int64_t warmup_iters, lr_decay_iters;
    double min_lr;
    /* OneCycle (DeepSpeed's names) */
    double cycle_min_lr, cycle_max_lr, decay_lr_rate;
    double cycle_first_step_size, cycle_second_step_size;      /* second < 0: the same as first */
    int64_t cycle_first_stair_count, cycle_second_stair_count; /* second < 0: the same as first */
    double decay_step_size;
    int cycle_momentum;
    double cycle_min_mom, cycle_max_mom, decay_mom_rate;
} zg_schedule_config;

/* DeepSpeed's and nanoGPT's defaults. */
void zg_schedule_config_defaults(zg_schedule_config *s);
const char *zg_schedule_type_name(zg_schedule_type t);
/* -1 with an error for inconsistent parameters (e.g. total_num_steps < warmup_num_steps). */
int zg_schedule_validate(const zg_schedule_config *s);
double zg_schedule_lr(const zg_schedule_config *s, int64_t step);
/* The Adam betas of optimizer step `step` when the schedule cycles momentum (OneCycle with
 * cycle_momentum): sets *beta1 and *beta2 and returns 1; otherwise leaves them and returns 0. */
int zg_schedule_betas(const zg_schedule_config *s, int64_t step, double *beta1, double *beta2);

#endif
