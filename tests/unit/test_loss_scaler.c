/* DeepSpeed dynamic loss scaling: growth after a window, hysteresis, minimum, static scale. */
#include "train/loss_scaler.h"
#include "testutil.h"

#include <string.h>

static void test_dynamic(void) {
    zg_loss_scaler_config c;
    zg_loss_scaler_config_defaults(&c);
    c.enabled = 1;
    c.initial_scale_power = 4; /* 16 */
    c.loss_scale_window = 3;
    c.hysteresis = 2;
    c.min_loss_scale = 4;
    ZT_CHECK(zg_loss_scaler_config_validate(&c) == 0);
    zg_loss_scaler s;
    zg_loss_scaler_init(&s, &c);
    char msg[256];
    ZT_NEAR(zg_loss_scaler_scale(&s), 16, 0, 0);
    /* 3 good steps double the scale */
    ZT_CHECK(zg_loss_scaler_update(&s, 0, msg, sizeof msg) == ZG_SCALER_OK);
    ZT_CHECK(zg_loss_scaler_update(&s, 0, msg, sizeof msg) == ZG_SCALER_OK);
    ZT_NEAR(zg_loss_scaler_scale(&s), 16, 0, 0);
    ZT_CHECK(zg_loss_scaler_update(&s, 0, msg, sizeof msg) == ZG_SCALER_OK);
    ZT_NEAR(zg_loss_scaler_scale(&s), 32, 0, 0);
    /* first overflow uses hysteresis, the second halves */
    ZT_CHECK(zg_loss_scaler_update(&s, 1, msg, sizeof msg) == ZG_SCALER_SKIP);
    ZT_NEAR(zg_loss_scaler_scale(&s), 32, 0, 0);
    ZT_CHECK(strstr(msg, "skipped") != NULL);
    ZT_CHECK(zg_loss_scaler_update(&s, 1, msg, sizeof msg) == ZG_SCALER_SKIP);
    ZT_NEAR(zg_loss_scaler_scale(&s), 16, 0, 0);
    ZT_CHECK(strstr(msg, "32 -> 16") != NULL);
    ZT_CHECK(zg_loss_scaler_update(&s, 1, msg, sizeof msg) == ZG_SCALER_SKIP);
    ZT_NEAR(zg_loss_scaler_scale(&s), 8, 0, 0);
    ZT_CHECK(zg_loss_scaler_update(&s, 1, msg, sizeof msg) == ZG_SCALER_SKIP);
    ZT_NEAR(zg_loss_scaler_scale(&s), 4, 0, 0);
    /* at the minimum: stop with advice */
    ZT_CHECK(zg_loss_scaler_update(&s, 1, msg, sizeof msg) == ZG_SCALER_STOP);
    ZT_CHECK(strstr(msg, "learning rate") != NULL);
    ZT_CHECK(s.skipped == 5);
    /* growth window counts from the last overflow (iter 7): 3 good steps later it doubles */
    zg_loss_scaler_init(&s, &c);
    zg_loss_scaler_update(&s, 1, msg, sizeof msg); /* hysteresis 2 -> 1, scale 16 */
    zg_loss_scaler_update(&s, 0, msg, sizeof msg);
    zg_loss_scaler_update(&s, 0, msg, sizeof msg);
    ZT_NEAR(zg_loss_scaler_scale(&s), 16, 0, 0);
    zg_loss_scaler_update(&s, 0, msg, sizeof msg);
    ZT_NEAR(zg_loss_scaler_scale(&s), 32, 0, 0);
    ZT_CHECK(s.cur_hysteresis == 2); /* restored at the growth */
}

static void test_static_and_disabled(void) {
    zg_loss_scaler_config c;
    zg_loss_scaler_config_defaults(&c);
    c.enabled = 1;
    c.loss_scale = 128;
    zg_loss_scaler s;
    zg_loss_scaler_init(&s, &c);
    char msg[256];
    for (int i = 0; i < 2000; i++) zg_loss_scaler_update(&s, 0, msg, sizeof msg);
    ZT_NEAR(zg_loss_scaler_scale(&s), 128, 0, 0);
    ZT_CHECK(zg_loss_scaler_update(&s, 1, msg, sizeof msg) == ZG_SCALER_SKIP);
    ZT_NEAR(zg_loss_scaler_scale(&s), 128, 0, 0);
    c.enabled = 0;
    zg_loss_scaler_init(&s, &c);
    ZT_NEAR(zg_loss_scaler_scale(&s), 1, 0, 0);
    ZT_CHECK(zg_loss_scaler_update(&s, 1, msg, sizeof msg) == ZG_SCALER_OK);
    c.enabled = 1;
    c.loss_scale = 0;
    c.hysteresis = 0;
    ZT_CHECK(zg_loss_scaler_config_validate(&c) != 0);
}

int main(void) {
    zt_run("dynamic", test_dynamic);
    zt_run("static_and_disabled", test_static_and_disabled);
    return zt_finish();
}
