/* Next-token sampling from logits: temperature, top-k, top-p (nucleus), seeded and reproducible.
 *
 * temperature 0 is greedy (argmax). Otherwise the logits are divided by the temperature, cut to the
 * top_k largest (0 = all), then to the smallest set of most likely tokens whose probability reaches
 * top_p (1 = all), renormalised, and one token is drawn with the sampler's own generator (SplitMix64),
 * so a seed gives the same text on every run and machine. Ties are broken by the lower token id. */
#ifndef ZG_MODEL_SAMPLER_H
#define ZG_MODEL_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature;
    int top_k;
    float top_p;
    uint64_t rng;
    int cap;        /* scratch capacity (vocabulary size) */
    void *scratch;  /* sorted (logit, id) pairs */
} zg_sampler;

/* -1 with an error for temperature < 0, top_k < 0, or top_p outside (0, 1]. */
int zg_sampler_init(zg_sampler *s, float temperature, int top_k, float top_p, uint64_t seed);
void zg_sampler_free(zg_sampler *s);
/* A token id in [0, V) from logits (V), which are not modified. */
int zg_sampler_sample(zg_sampler *s, const float *logits, int V);
/* Uniform double in [0, 1) from the sampler's generator. */
double zg_sampler_uniform(zg_sampler *s);

#endif
