/* fp16 loss scaling, as DeepSpeed's fp16 section defines it.
 *
 * loss_scale > 0: static scale. loss_scale == 0: dynamic, starting at 2^initial_scale_power. Each
 * step reports whether the (scaled) gradients overflowed:
 *   overflow: the step is skipped; when hysteresis is exhausted the scale is halved (never below
 *             min_loss_scale), otherwise one unit of hysteresis is used up. An overflow while the scale
 *             is already at min_loss_scale stops training (ZG_SCALER_STOP) with advice.
 *   no overflow for loss_scale_window consecutive steps: the scale doubles (and hysteresis is restored;
 *             with consecutive_hysteresis it is restored after every good step).
 * With fp16 disabled the scaler is inert (scale 1, never skips). */
#ifndef ZG_TRAIN_LOSS_SCALER_H
#define ZG_TRAIN_LOSS_SCALER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int enabled;       /* fp16.enabled */
    double loss_scale; /* 0 = dynamic */
    int initial_scale_power;
    int64_t loss_scale_window;
    int hysteresis;
    int consecutive_hysteresis;
    double min_loss_scale;
} zg_loss_scaler_config;

typedef struct {
    zg_loss_scaler_config cfg;
    double scale;
    int cur_hysteresis;
    int64_t cur_iter;           /* steps seen (good and skipped) */
    int64_t last_overflow_iter; /* -1 = none */
    int64_t skipped;            /* total skipped steps */
} zg_loss_scaler;

typedef enum {
    ZG_SCALER_OK = 0,   /* apply the step */
    ZG_SCALER_SKIP = 1, /* overflow: skip the step (scale lowered or hysteresis used) */
    ZG_SCALER_STOP = 2, /* overflow at the minimum scale: stop training */
} zg_scaler_result;

/* DeepSpeed's defaults: dynamic, 2^16, window 1000, hysteresis 2, min 1. */
void zg_loss_scaler_config_defaults(zg_loss_scaler_config *c);
int zg_loss_scaler_config_validate(const zg_loss_scaler_config *c);
void zg_loss_scaler_init(zg_loss_scaler *s, const zg_loss_scaler_config *c);
/* The factor the loss is multiplied by before backward (1 when disabled). */
double zg_loss_scaler_scale(const zg_loss_scaler *s);
/* Records the outcome of one step. On SKIP/STOP a one-line description goes to msg. */
zg_scaler_result zg_loss_scaler_update(zg_loss_scaler *s, int overflow, char *msg, size_t msg_cap);

#endif
