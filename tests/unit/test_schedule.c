/* Learning-rate schedules against DeepSpeed's formulas (values worked out by hand). */
#include "train/schedule.h"
#include "testutil.h"

#include <math.h>

static void test_constant(void) {
    zg_schedule_config s;
    zg_schedule_config_defaults(&s);
    s.base_lr = 3e-5;
    ZT_NEAR(zg_schedule_lr(&s, 0), 3e-5, 0, 1e-12);
    ZT_NEAR(zg_schedule_lr(&s, 12345), 3e-5, 0, 1e-12);
}

static void test_warmup_lr(void) {
    zg_schedule_config s;
    zg_schedule_config_defaults(&s);
    s.type = ZG_SCHED_WARMUP_LR;
    s.warmup_min_lr = 1e-5;
    s.warmup_max_lr = 1e-3;
    s.warmup_num_steps = 100;
    /* log warmup: gamma = log(step+1)/log(100) */
    ZT_NEAR(zg_schedule_lr(&s, 0), 1e-5, 0, 1e-12);
    ZT_NEAR(zg_schedule_lr(&s, 9), 1e-5 + (1e-3 - 1e-5) * 0.5, 0, 1e-9); /* log(10)/log(100) = 0.5 */
    ZT_NEAR(zg_schedule_lr(&s, 100), 1e-3, 0, 1e-12);
    ZT_NEAR(zg_schedule_lr(&s, 5000), 1e-3, 0, 1e-12);
    s.warmup_linear = 1;
    ZT_NEAR(zg_schedule_lr(&s, 25), 1e-5 + (1e-3 - 1e-5) * 0.25, 0, 1e-9);
    /* DeepSpeed clamps the log warmup to 2 steps */
    s.warmup_linear = 0;
    s.warmup_num_steps = 0;
    ZT_NEAR(zg_schedule_lr(&s, 0), 1e-5, 0, 1e-12);
    ZT_NEAR(zg_schedule_lr(&s, 1), 1e-5 + (1e-3 - 1e-5) * (log(2.0) / log(2.0)), 0, 1e-9);
}

static void test_warmup_decay(void) {
    zg_schedule_config s;
    zg_schedule_config_defaults(&s);
    s.type = ZG_SCHED_WARMUP_DECAY_LR;
    s.warmup_min_lr = 0;
    s.warmup_max_lr = 1e-3;
    s.warmup_num_steps = 10;
    s.warmup_linear = 1;
    s.total_num_steps = 110;
    ZT_CHECK(zg_schedule_validate(&s) == 0);
    ZT_NEAR(zg_schedule_lr(&s, 5), 5e-4, 0, 1e-9);
    ZT_NEAR(zg_schedule_lr(&s, 10), 1e-3, 0, 1e-9); /* (110-10)/100 */
    ZT_NEAR(zg_schedule_lr(&s, 60), 5e-4, 0, 1e-9); /* (110-60)/100 */
    ZT_NEAR(zg_schedule_lr(&s, 110), 0.0, 1e-15, 0);
    ZT_NEAR(zg_schedule_lr(&s, 500), 0.0, 1e-15, 0); /* clamped at 0 */
    s.total_num_steps = -1;
    ZT_CHECK(zg_schedule_validate(&s) != 0);
}

static void test_warmup_cosine(void) {
    zg_schedule_config s;
    zg_schedule_config_defaults(&s);
    s.type = ZG_SCHED_WARMUP_COSINE_LR;
    s.base_lr = 2e-4;
    s.warmup_min_ratio = 0.1;
    s.warmup_num_steps = 10;
    s.warmup_linear = 1;
    s.total_num_steps = 30;
    s.cos_min_ratio = 0.01;
    ZT_CHECK(zg_schedule_validate(&s) == 0);
    ZT_NEAR(zg_schedule_lr(&s, 0), 2e-4 * 0.1, 0, 1e-9);
    ZT_NEAR(zg_schedule_lr(&s, 5), 2e-4 * (0.1 + 0.5 * 0.9), 0, 1e-9);
    /* step 19: real step 10 of 20 -> cos(pi/2) = 0 -> ratio = 0.01 + 0.99 * 0.5 */
    ZT_NEAR(zg_schedule_lr(&s, 19), 2e-4 * (0.01 + 0.99 * 0.5), 0, 1e-9);
    ZT_NEAR(zg_schedule_lr(&s, 29), 2e-4 * 0.01, 0, 1e-9);
    s.total_num_steps = 10;
    ZT_CHECK(zg_schedule_validate(&s) != 0);
}

static void test_nanogpt(void) {
    zg_schedule_config s;
    zg_schedule_config_defaults(&s);
    s.type = ZG_SCHED_NANOGPT_COSINE;
    s.base_lr = 1e-3;
    s.min_lr = 1e-4;
    s.warmup_iters = 9;
    s.lr_decay_iters = 109;
    ZT_NEAR(zg_schedule_lr(&s, 0), 1e-4, 0, 1e-9); /* 1e-3 * 1/10 */
    ZT_NEAR(zg_schedule_lr(&s, 59), 1e-4 + 0.5 * 9e-4, 0, 1e-9);
    ZT_NEAR(zg_schedule_lr(&s, 200), 1e-4, 0, 1e-12);
}

/* DeepSpeed's OneCycle (lr_schedules.py), values worked out by hand: a cycle of 10 + 10 steps between
 * 1e-4 and 1e-3; the lr of step s is the formula at last_batch_iteration s (scale from s + 1). */
static void test_one_cycle(void) {
    zg_schedule_config s;
    zg_schedule_config_defaults(&s);
    s.type = ZG_SCHED_ONE_CYCLE;
    s.cycle_min_lr = 1e-4;
    s.cycle_max_lr = 1e-3;
    s.cycle_first_step_size = 10; /* second: the same */
    ZT_CHECK(zg_schedule_validate(&s) == 0);
    double b1 = 0, b2 = 0;
    ZT_NEAR(zg_schedule_lr(&s, 0), 1.9e-4, 0, 1e-12); /* x = 0.05, scale 0.1 */
    ZT_CHECK(zg_schedule_betas(&s, 0, &b1, &b2) == 1);
    ZT_NEAR(b1, 0.89, 0, 1e-12);
    ZT_NEAR(b2, 0.99, 0, 0);
    ZT_NEAR(zg_schedule_lr(&s, 9), 1e-3, 0, 1e-12); /* the top: beta1 at cycle_min_mom */
    zg_schedule_betas(&s, 9, &b1, &b2);
    ZT_NEAR(b1, 0.8, 0, 1e-12);
    ZT_NEAR(zg_schedule_lr(&s, 14), 5.5e-4, 0, 1e-12); /* x = 0.75: (0.75 - 1) / (0.5 - 1) = 0.5 */
    ZT_NEAR(zg_schedule_lr(&s, 19), 1e-4, 0, 1e-12);   /* x = 0 */
    ZT_NEAR(zg_schedule_lr(&s, 25), 1e-4, 0, 1e-12);   /* after the cycle, no decay configured */
    zg_schedule_betas(&s, 25, &b1, &b2);
    ZT_NEAR(b1, 0.9, 0, 1e-12);
    /* decay: 1 + 0.5 * (25 - 20 + 1) / 5 = 1.6 */
    s.decay_lr_rate = 0.5;
    s.decay_step_size = 5;
    ZT_NEAR(zg_schedule_lr(&s, 25), 1e-4 / 1.6, 0, 1e-12);
    /* an uneven cycle: 4 up, 12 down; step 7: x = 8/16 = 0.5 > 0.25: (0.5 - 1) / (0.25 - 1) = 2/3 */
    s.cycle_first_step_size = 4;
    s.cycle_second_step_size = 12;
    ZT_NEAR(zg_schedule_lr(&s, 7), 1e-4 + 9e-4 * (2.0 / 3.0), 0, 1e-12);
    /* stairs: 2 in each half of a 10 + 10 cycle; step 2: 3 * 2 / 10 = 0.6 -> 0; step 6: 1.4 -> 0.5 */
    s.cycle_first_step_size = 10;
    s.cycle_second_step_size = -1;
    s.cycle_first_stair_count = 2;
    ZT_NEAR(zg_schedule_lr(&s, 2), 1e-4, 0, 1e-12);
    ZT_NEAR(zg_schedule_lr(&s, 6), 5.5e-4, 0, 1e-12);
    /* without cycle_momentum the betas are the optimizer's */
    s.cycle_momentum = 0;
    ZT_CHECK(zg_schedule_betas(&s, 3, &b1, &b2) == 0);
    s.cycle_first_step_size = 0;
    ZT_CHECK(zg_schedule_validate(&s) != 0);
}

int main(void) {
    zt_run("constant", test_constant);
    zt_run("warmup_lr", test_warmup_lr);
    zt_run("warmup_decay", test_warmup_decay);
    zt_run("warmup_cosine", test_warmup_cosine);
    zt_run("nanogpt", test_nanogpt);
    zt_run("one_cycle", test_one_cycle);
    return zt_finish();
}
