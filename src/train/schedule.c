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
    s->cycle_min_lr = 0.0;
    s->cycle_max_lr = 0.0;
    s->decay_lr_rate = 0.0;
    s->cycle_first_step_size = 2000;
    s->cycle_second_step_size = -1;
    s->cycle_first_stair_count = 0;
    s->cycle_second_stair_count = -1;
    s->decay_step_size = 0;
    s->cycle_momentum = 1;
    s->cycle_min_mom = 0.8;
    s->cycle_max_mom = 0.9;
    s->decay_mom_rate = 0.0;
}

const char *zg_schedule_type_name(zg_schedule_type t) {
    switch (t) {
    case ZG_SCHED_CONSTANT: return "constant";
    case ZG_SCHED_WARMUP_LR: return "WarmupLR";
    case ZG_SCHED_WARMUP_DECAY_LR: return "WarmupDecayLR";
    case ZG_SCHED_WARMUP_COSINE_LR: return "WarmupCosineLR";
    case ZG_SCHED_NANOGPT_COSINE: return "nanoGPT cosine (decay_lr)";
    case ZG_SCHED_ONE_CYCLE: return "OneCycle";
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
    if (s->type == ZG_SCHED_ONE_CYCLE) {
        if (!(s->cycle_first_step_size > 0))
            return zg_errorf("scheduler.params.cycle_first_step_size must be > 0 for OneCycle (got %g)",
                             s->cycle_first_step_size);
        if (s->cycle_max_lr < s->cycle_min_lr)
            return zg_errorf("scheduler.params.cycle_max_lr (%g) is below cycle_min_lr (%g)", s->cycle_max_lr,
                             s->cycle_min_lr);
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

/* OneCycle's cycle: the second half's size, the whole cycle, and the scale of the amplitude at `step`
 * (DeepSpeed's _get_scale_factor at last_batch_iteration == step). */
static double cycle_second(const zg_schedule_config *s) {
    return s->cycle_second_step_size < 0 ? s->cycle_first_step_size : s->cycle_second_step_size;
}
static double cycle_total(const zg_schedule_config *s) { return s->cycle_first_step_size + cycle_second(s); }

static double cycle_scale(const zg_schedule_config *s, int64_t step) {
    double total = cycle_total(s), ratio = s->cycle_first_step_size / total;
    double it = (double)step + 1.0;
    double x = 1.0 + it / total - floor(1.0 + it / total);
    double scale;
    int64_t stairs;
    if (x <= ratio) {
        scale = x / ratio;
        stairs = s->cycle_first_stair_count;
    } else {
        scale = (x - 1.0) / (ratio - 1.0);
        stairs = s->cycle_second_stair_count < 0 ? s->cycle_first_stair_count : s->cycle_second_stair_count;
    }
    if (stairs > 0) {
        double ci = fmod(it, total), pos;
        if (ci <= s->cycle_first_step_size)
            pos = ci * (double)stairs / s->cycle_first_step_size;
        else
            pos = (total - ci) * (double)stairs / cycle_second(s);
        scale = floor(pos) / (double)stairs;
    }
    return scale;
}

/* OneCycle after the cycle: 1 + rate * (steps since the cycle ended) / decay_step_size, or 0 for "no decay". */
static double cycle_decay(const zg_schedule_config *s, int64_t step, double rate) {
    if (s->decay_step_size == 0.0 || rate == 0.0) return 0.0;
    double since = (double)step - cycle_total(s) + 1.0;
    return 1.0 + rate * since / s->decay_step_size;
}

int zg_schedule_betas(const zg_schedule_config *s, int64_t step, double *beta1, double *beta2) {
    if (s->type != ZG_SCHED_ONE_CYCLE || !s->cycle_momentum) return 0;
    if (step < 0) step = 0;
    if ((double)step < cycle_total(s)) {
        *beta1 = s->cycle_max_mom - (s->cycle_max_mom - s->cycle_min_mom) * cycle_scale(s, step);
    } else {
        double f = cycle_decay(s, step, s->decay_mom_rate);
        *beta1 = f > 0.0 ? s->cycle_max_mom * f : s->cycle_max_mom;
    }
    *beta2 = 0.99; /* DeepSpeed's OneCycle pairs the cycled momentum with this beta2 */
    return 1;
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
    case ZG_SCHED_ONE_CYCLE: {
        if ((double)step < cycle_total(s))
            return s->cycle_min_lr + (s->cycle_max_lr - s->cycle_min_lr) * cycle_scale(s, step);
        double f = cycle_decay(s, step, s->decay_lr_rate);
        return f > 0.0 ? s->cycle_min_lr / f : s->cycle_min_lr;
    }
    }
    return s->base_lr;
}
