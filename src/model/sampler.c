#include "model/sampler.h"

#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float logit;
    int id;
} scored;

int zg_sampler_init(zg_sampler *s, float temperature, int top_k, float top_p, uint64_t seed) {
    memset(s, 0, sizeof *s);
    if (!(temperature >= 0) || !isfinite(temperature))
        return zg_errorf("--temperature %g: must be >= 0 (0 = greedy)", temperature);
    if (top_k < 0) return zg_errorf("--top-k %d: must be >= 0 (0 = no limit)", top_k);
    if (!(top_p > 0 && top_p <= 1)) return zg_errorf("--top-p %g: must be in (0, 1]", top_p);
    s->temperature = temperature;
    s->top_k = top_k;
    s->top_p = top_p;
    s->rng = seed;
    return 0;
}

void zg_sampler_free(zg_sampler *s) {
    free(s->scratch);
    s->scratch = NULL;
    s->cap = 0;
}

double zg_sampler_uniform(zg_sampler *s) {
    /* SplitMix64: tiny, fast, and the same sequence on every platform */
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static int cmp_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id - y->id;
}

static int argmax(const float *logits, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

int zg_sampler_sample(zg_sampler *s, const float *logits, int V) {
    if (s->temperature == 0) return argmax(logits, V);
    if (s->cap < V) {
        free(s->scratch);
        s->scratch = zg_malloc((size_t)V * sizeof(scored));
        s->cap = V;
    }
    scored *c = s->scratch;
    for (int i = 0; i < V; i++) {
        c[i].logit = logits[i] / s->temperature;
        c[i].id = i;
    }
    int n = V;
    if (s->top_k > 0 || s->top_p < 1) {
        qsort(c, (size_t)V, sizeof *c, cmp_desc);
        if (s->top_k > 0 && s->top_k < n) n = s->top_k;
    }
    float mx = c[0].logit;
    for (int i = 1; i < n; i++)
        if (c[i].logit > mx) mx = c[i].logit;
    double total = 0;
    for (int i = 0; i < n; i++) total += exp((double)c[i].logit - mx);
    if (s->top_p < 1) {
        /* candidates are sorted: keep the shortest prefix whose probability reaches top_p */
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - mx) / total;
            if (cum >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        total = 0;
        for (int i = 0; i < n; i++) total += exp((double)c[i].logit - mx);
    }
    double r = zg_sampler_uniform(s) * total, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += exp((double)c[i].logit - mx);
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id; /* rounding: the last candidate */
}
