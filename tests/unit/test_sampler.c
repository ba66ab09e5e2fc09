/* Sampling: greedy, top-k, top-p, temperature, and the drawn frequencies match the softmax. */
#include "core/error.h"
#include "model/sampler.h"
#include "testutil.h"

#include <math.h>

static void test_greedy_and_cuts(void) {
    float logits[6] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 2.0f}; /* tie 1 and 5: the lower id wins */
    zg_sampler s;
    ZT_CHECK(zg_sampler_init(&s, 0.0f, 0, 1.0f, 1) == 0);
    ZT_CHECK(zg_sampler_sample(&s, logits, 6) == 1);
    zg_sampler_free(&s);
    ZT_CHECK(zg_sampler_init(&s, 1.0f, 1, 1.0f, 7) == 0); /* top-k 1 is greedy */
    for (int i = 0; i < 50; i++) ZT_CHECK(zg_sampler_sample(&s, logits, 6) == 1);
    zg_sampler_free(&s);
    ZT_CHECK(zg_sampler_init(&s, 1.0f, 3, 1.0f, 9) == 0); /* top-k 3: only ids 1, 5, 3 */
    for (int i = 0; i < 300; i++) {
        int id = zg_sampler_sample(&s, logits, 6);
        ZT_CHECK(id == 1 || id == 5 || id == 3);
    }
    zg_sampler_free(&s);
    ZT_CHECK(zg_sampler_init(&s, 1.0f, 0, 0.01f, 3) == 0); /* tiny top-p: the most likely only */
    for (int i = 0; i < 50; i++) ZT_CHECK(zg_sampler_sample(&s, logits, 6) == 1);
    zg_sampler_free(&s);
    ZT_CHECK(zg_sampler_init(&s, -1.0f, 0, 1.0f, 3) != 0);
    ZT_CHECK(zg_sampler_init(&s, 1.0f, -2, 1.0f, 3) != 0);
    ZT_CHECK(zg_sampler_init(&s, 1.0f, 0, 0.0f, 3) != 0);
    ZT_CHECK(zg_sampler_init(&s, 1.0f, 0, 1.5f, 3) != 0);
}

static void test_frequencies(void) {
    /* p = softmax([0, log 3, -inf-ish]) = (0.25, 0.75, ~0) */
    float logits[3] = {0.0f, (float)log(3.0), -30.0f};
    zg_sampler s;
    ZT_CHECK(zg_sampler_init(&s, 1.0f, 0, 1.0f, 42) == 0);
    int n = 40000, c1 = 0, c2 = 0;
    for (int i = 0; i < n; i++) {
        int id = zg_sampler_sample(&s, logits, 3);
        c1 += id == 1;
        c2 += id == 2;
    }
    ZT_NEAR((double)c1 / n, 0.75, 0.01, 0);
    ZT_CHECK(c2 == 0);
    zg_sampler_free(&s);
    /* temperature 2 flattens: p1 = sqrt(3) / (1 + sqrt(3)) */
    ZT_CHECK(zg_sampler_init(&s, 2.0f, 0, 1.0f, 43) == 0);
    c1 = 0;
    for (int i = 0; i < n; i++) c1 += zg_sampler_sample(&s, logits, 2) == 1;
    ZT_NEAR((double)c1 / n, sqrt(3.0) / (1 + sqrt(3.0)), 0.01, 0);
    zg_sampler_free(&s);
    /* top-p 0.5 over (0.25, 0.75): only id 1 */
    ZT_CHECK(zg_sampler_init(&s, 1.0f, 0, 0.5f, 44) == 0);
    for (int i = 0; i < 200; i++) ZT_CHECK(zg_sampler_sample(&s, logits, 3) == 1);
    zg_sampler_free(&s);
}

static void test_seeded(void) {
    float logits[50];
    for (int i = 0; i < 50; i++) logits[i] = (float)sin(i * 0.7);
    zg_sampler a, b, c;
    zg_sampler_init(&a, 0.9f, 20, 0.95f, 5);
    zg_sampler_init(&b, 0.9f, 20, 0.95f, 5);
    zg_sampler_init(&c, 0.9f, 20, 0.95f, 6);
    int same = 1, differ = 0;
    for (int i = 0; i < 100; i++) {
        int x = zg_sampler_sample(&a, logits, 50), y = zg_sampler_sample(&b, logits, 50),
            z = zg_sampler_sample(&c, logits, 50);
        same &= x == y;
        differ |= x != z;
    }
    ZT_CHECK(same);
    ZT_CHECK(differ);
    zg_sampler_free(&a);
    zg_sampler_free(&b);
    zg_sampler_free(&c);
}

int main(void) {
    zt_run("greedy_and_cuts", test_greedy_and_cuts);
    zt_run("frequencies", test_frequencies);
    zt_run("seeded", test_seeded);
    return zt_finish();
}
