/* The sample op on the CPU: backend/sample_math.h's definition with the same radix selection as the
 * CUDA kernel (zg_sample_select_step), run serially over a shrinking list of the candidates still in
 * the running, so a cut costs O(V) instead of a sort. tests/unit/test_sampler.c checks it against a
 * plain sort of the candidates. */
#include "backend/cpu/cpu_internal.h"
#include "backend/sample_math.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t *rank, *w; /* (V) */
    int *idx;           /* candidates still in the running */
} sample_scratch;

/* The cut {rank >= x} of zg_sample_select_step over the candidates with rank >= keep_from. */
static uint64_t select_cut(const sample_scratch *s, int V, uint64_t keep_from, uint64_t target, int weighted) {
    int n = 0;
    for (int i = 0; i < V; i++)
        if (s->rank[i] >= keep_from) s->idx[n++] = i;
    uint64_t prefix = 0, above = 0;
    for (int shift = 60; shift >= 0; shift -= 4) {
        if (zg_sample_digit_fixed(V, shift)) { /* every candidate has digit 15 here */
            prefix |= (uint64_t)15 << shift;
            continue;
        }
        uint64_t f[16] = {0};
        uint32_t c[16] = {0};
        for (int j = 0; j < n; j++) {
            int i = s->idx[j];
            unsigned d = (unsigned)(s->rank[i] >> shift) & 15u;
            f[d] += s->w[i];
            c[d]++;
        }
        int done = zg_sample_select_step(f, c, weighted, target, shift, &above, &prefix);
        if (done) break;
        /* keep the candidates with the chosen digit: they share the prefix's digits down to shift */
        int m = 0;
        for (int j = 0; j < n; j++)
            if ((s->rank[s->idx[j]] >> shift) == (prefix >> shift)) s->idx[m++] = s->idx[j];
        n = m;
    }
    return prefix > keep_from ? prefix : keep_from;
}

/* The kept weight: sum of w over rank >= keep_from. */
static uint64_t kept_weight(const sample_scratch *s, int V, uint64_t keep_from) {
    uint64_t W = 0;
    for (int i = 0; i < V; i++)
        if (s->rank[i] >= keep_from) W += s->w[i];
    return W;
}

static int32_t sample_row(const float *lg, int V, const zg_sample_row *r, uint32_t counter, sample_scratch *s) {
    int greedy = r->inv_temperature == 0.0f || r->top_k == 1;
    float scale = greedy ? 1.0f : r->inv_temperature;
    uint64_t best = 0;
    for (int i = 0; i < V; i++) {
        s->rank[i] = zg_sample_rank(zg_sample_z(lg[i], scale), i);
        if (s->rank[i] > best) best = s->rank[i];
    }
    int best_id = (int)(0xffffffffu - (uint32_t)best);
    if (greedy) return best_id;
    float zmax = zg_sample_z(lg[best_id], scale);
    for (int i = 0; i < V; i++) s->w[i] = zg_sample_weight(zg_sample_z(lg[i], scale) - zmax);
    uint64_t keep_from = 0;
    if (r->top_k > 0 && r->top_k < V) keep_from = select_cut(s, V, 0, (uint64_t)r->top_k, 0);
    uint64_t W = kept_weight(s, V, keep_from);
    if (r->top_p < 1.0f && W > 0) {
        keep_from = select_cut(s, V, keep_from, zg_sample_top_p_target(r->top_p, W), 1);
        W = kept_weight(s, V, keep_from);
    }
    if (W == 0) return best_id; /* every weight rounded to 0 (infinite or NaN logits) */
    uint64_t x = zg_sample_scale(zg_sample_random(r->seed, counter), W), cum = 0;
    for (int i = 0; i < V; i++) {
        if (s->rank[i] < keep_from) continue;
        cum += s->w[i];
        if (cum > x) return i;
    }
    ZG_FATAL("sample (cpu): the draw %llu fell past the kept weight %llu", (unsigned long long)x,
             (unsigned long long)W);
}

void cpu_sample(zg_backend *be, int32_t *ids, const void *logits, const zg_sample_row *rows, const int32_t *counter,
                int B, int V, int Vp) {
    (void)be;
    sample_scratch s;
    s.rank = zg_malloc((size_t)V * sizeof *s.rank);
    s.w = zg_malloc((size_t)V * sizeof *s.w);
    s.idx = zg_malloc((size_t)V * sizeof *s.idx);
    for (int b = 0; b < B; b++)
        ids[b] = sample_row((const float *)logits + (size_t)b * Vp, V, &rows[b], (uint32_t)*counter, &s);
    free(s.rank);
    free(s.w);
    free(s.idx);
}
