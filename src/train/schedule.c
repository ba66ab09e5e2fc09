#include "train/schedule.h"

#include "core/error.h"

#include <math.h>

/* M_PI is not part of C11. */
static const double k_pi = 3.14159265358979323846;

void zg_schedule_config_defaults(zg_schedule_config *s) {
    s->type = ZG_SCHED_CONSTANT;
    s->base_lr = 6e-4;
    s->warmup_min_lr = 0.0;
    s->warmup_max_lr = 0.001;
    s->warmup_num_steps = 1000;
    s->warmup_linear = 0;
    s->total_num_steps = -1; /* required by WarmupDecayLR / WarmupCosineLR; max_iters fills it when absent */
    s->warmup_min_ratio = 0.0;
    s->cos_min_ratio = 0.0001;
    s->warmup_iters = 2000;
    s->lr_decay_iters = -1; /* nanoGPT sets it to max_iters */
    s->min_lr = 6e-5;
}

const char *zg_schedule_type_name(zg_schedule_type t) {
    switch (t) {
    case ZG_SCHED_CONSTANT: return "constant";
    case ZG_SCHED_WARMUP_LR: return "WarmupLR";
    case ZG_SCHED_WARMUP_DECAY_LR: return "WarmupDecayLR";
    case ZG_SCHED_WARMUP_COSINE_LR: return "WarmupCosineLR";
    case ZG_SCHED_NANOGPT_COSINE: return "nanoGPT cosine (decay_lr)";
    }
    return "?";
}

int zg_schedule_validate(const zg_schedule_config *s) {
    if (s->type == ZG_SCHED_WARMUP_DECAY_LR || s->type == ZG_SCHED_WARMUP_COSINE_LR) {
        if (s->total_num_steps <= 0)
            return zg_errorf("scheduler.params.total_num_steps must be > 0 for %s (got %lld)",
                             zg_schedule_type_name(s->type), (long long)s->total_num_steps);
        if (s->type == ZG_SCHED_WARMUP_COSINE_LR && s->total_num_steps <= s->warmup_num_steps)
            return zg_errorf("scheduler.params.total_num_steps (%lld) must be larger than warmup_num_steps (%lld) "
                             "for WarmupCosineLR",
                             (long long)s->total_num_steps, (long long)s->warmup_num_steps);
    }
    if (s->type == ZG_SCHED_NANOGPT_COSINE && s->lr_decay_iters < s->warmup_iters)
        return zg_errorf("lr_decay_iters (%lld) must be >= warmup_iters (%lld)", (long long)s->lr_decay_iters,
                         (long long)s->warmup_iters);
    return 0;
}

/* Warmup fraction in [0, 1] at `step` of DeepSpeed's warmup (log or linear). */
static double warmup_gamma(const zg_schedule_config *s, int64_t step) {
    if (s->warmup_linear) {
        if (s->warmup_num_steps <= 0) return 1.0;
        return (double)step / (double)s->warmup_num_steps;
    }
    /* DeepSpeed clamps the log warmup to at least 2 steps so log(W) > 0. */
    int64_t w = s->warmup_num_steps < 2 ? 2 : s->warmup_num_steps;
    return log((double)step + 1.0) / log((double)w);
}

static int64_t warmup_steps(const zg_schedule_config *s) {
    if (!s->warmup_linear && s->warmup_num_steps < 2) return 2;
    return s->warmup_num_steps;
}

double zg_schedule_lr(const zg_schedule_config *s, int64_t step) {
    if (step < 0) step = 0;
    int64_t w = warmup_steps(s);
    switch (s->type) {
    case ZG_SCHED_CONSTANT: return s->base_lr;
    case ZG_SCHED_WARMUP_LR: {
        double g = step < w ? warmup_gamma(s, step) : 1.0;
        return s->warmup_min_lr + (s->warmup_max_lr - s->warmup_min_lr) * g;
    }
    case ZG_SCHED_WARMUP_DECAY_LR: {
        double g;
        if (step < w) {
            g = warmup_gamma(s, step);
        } else {
            double span = (double)(s->total_num_steps - w);
            g = (double)(s->total_num_steps - step) / (span < 1.0 ? 1.0 : span);
            if (g < 0.0) g = 0.0;
        }
        return s->warmup_min_lr + (s->warmup_max_lr - s->warmup_min_lr) * g;
    }
    case ZG_SCHED_WARMUP_COSINE_LR: {
        double ratio;
        if (step < w) {
            ratio = s->warmup_min_ratio + warmup_gamma(s, step) * (1.0 - s->warmup_min_ratio);
        } else {
            double done = (double)(step - w + 1), total = (double)(s->total_num_steps - w);
            double c = (1.0 + cos(k_pi * done / total)) / 2.0;
            ratio = s->cos_min_ratio + (1.0 - s->cos_min_ratio) * c;
            if (ratio < 0.0) ratio = 0.0;
        }
        return s->base_lr * ratio;
    }
    case ZG_SCHED_NANOGPT_COSINE: {
        if (step < s->warmup_iters) return s->base_lr * (double)(step + 1) / (double)(s->warmup_iters + 1);
        if (step > s->lr_decay_iters) return s->min_lr;
        double span = (double)(s->lr_decay_iters - s->warmup_iters);
        double ratio = span > 0 ? (double)(step - s->warmup_iters) / span : 1.0;
        double coeff = 0.5 * (1.0 + cos(k_pi * ratio));
        return s->min_lr + coeff * (s->base_lr - s->min_lr);
    }
    }
    return s->base_lr;
}
