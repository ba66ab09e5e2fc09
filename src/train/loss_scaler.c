#include "train/loss_scaler.h"

#include "core/error.h"

#include <math.h>
#include <stdio.h>

void zg_loss_scaler_config_defaults(zg_loss_scaler_config *c) {
    c->enabled = 0;
    c->loss_scale = 0.0;
    c->initial_scale_power = 16;
    c->loss_scale_window = 1000;
    c->hysteresis = 2;
    c->consecutive_hysteresis = 0;
    c->min_loss_scale = 1.0;
}

int zg_loss_scaler_config_validate(const zg_loss_scaler_config *c) {
    if (c->loss_scale < 0) return zg_errorf("fp16.loss_scale must be >= 0 (0 = dynamic), got %g", c->loss_scale);
    if (c->initial_scale_power < 0 || c->initial_scale_power > 60)
        return zg_errorf("fp16.initial_scale_power must be in [0, 60], got %d", c->initial_scale_power);
    if (c->loss_scale_window < 1)
        return zg_errorf("fp16.loss_scale_window must be >= 1, got %lld", (long long)c->loss_scale_window);
    if (c->hysteresis < 1) return zg_errorf("fp16.hysteresis must be >= 1, got %d", c->hysteresis);
    if (!(c->min_loss_scale > 0)) return zg_errorf("fp16.min_loss_scale must be > 0, got %g", c->min_loss_scale);
    if (c->loss_scale == 0 && ldexp(1.0, c->initial_scale_power) < c->min_loss_scale)
        return zg_errorf("fp16.initial_scale_power %d gives a scale below fp16.min_loss_scale %g",
                         c->initial_scale_power, c->min_loss_scale);
    return 0;
}

void zg_loss_scaler_init(zg_loss_scaler *s, const zg_loss_scaler_config *c) {
    s->cfg = *c;
    if (!c->enabled)
        s->scale = 1.0;
    else if (c->loss_scale > 0)
        s->scale = c->loss_scale;
    else
        s->scale = ldexp(1.0, c->initial_scale_power);
    s->cur_hysteresis = c->hysteresis;
    s->cur_iter = 0;
    s->last_overflow_iter = -1;
    s->skipped = 0;
}

double zg_loss_scaler_scale(const zg_loss_scaler *s) { return s->cfg.enabled ? s->scale : 1.0; }

zg_scaler_result zg_loss_scaler_update(zg_loss_scaler *s, int overflow, char *msg, size_t msg_cap) {
    if (msg && msg_cap) msg[0] = '\0';
    if (!s->cfg.enabled) return ZG_SCALER_OK; /* fp32/bf16: non-finite gradients are handled by the caller */
    zg_scaler_result r = ZG_SCALER_OK;
    int dynamic = s->cfg.loss_scale == 0;
    if (overflow) {
        s->skipped++;
        r = ZG_SCALER_SKIP;
        if (!dynamic) {
            if (msg) snprintf(msg, msg_cap, "fp16 gradient overflow with static loss scale %g: step skipped", s->scale);
        } else if (s->cur_hysteresis <= 1) {
            if (s->scale <= s->cfg.min_loss_scale) {
                if (msg)
                    snprintf(msg, msg_cap,
                             "fp16 gradients overflow even at the minimum loss scale %g; lower the learning rate, "
                             "enable gradient_clipping, or train in bf16/fp32 instead of fp16",
                             s->cfg.min_loss_scale);
                r = ZG_SCALER_STOP;
            } else {
                double old = s->scale;
                s->scale = fmax(s->scale / 2.0, s->cfg.min_loss_scale);
                if (msg)
                    snprintf(msg, msg_cap, "fp16 gradient overflow: step skipped, loss scale %g -> %g", old, s->scale);
            }
        } else {
            s->cur_hysteresis--;
            if (msg)
                snprintf(msg, msg_cap,
                         "fp16 gradient overflow: step skipped, loss scale kept at %g (hysteresis %d left)", s->scale,
                         s->cur_hysteresis);
        }
        s->last_overflow_iter = s->cur_iter;
    } else if (dynamic) {
        if (s->cfg.consecutive_hysteresis) s->cur_hysteresis = s->cfg.hysteresis;
        if ((s->cur_iter - s->last_overflow_iter) % s->cfg.loss_scale_window == 0) {
            if (!s->cfg.consecutive_hysteresis) s->cur_hysteresis = s->cfg.hysteresis;
            s->scale *= 2.0;
        }
    }
    s->cur_iter++;
    return r;
}
