/* The sample op on the CPU: the definition of backend/sample_math.h done the plain way (sort the
 * candidates, walk them), which the CUDA backend's radix selection must match token for token. */
#include "backend/cpu/cpu_internal.h"
#include "backend/sample_math.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t rank;
    int id;
} sample_cand;

static int cand_desc(const void *a, const void *b) {
    uint64_t x = ((const sample_cand *)a)->rank, y = ((const sample_cand *)b)->rank;
    return x > y ? -1 : x < y ? 1 : 0;
}

typedef struct {
    sample_cand *cand;
    uint64_t *w;
    unsigned char *kept;
} sample_scratch;

static int32_t sample_row(const float *lg, int V, const zg_sample_row *r, uint32_t counter, sample_scratch *s) {
    int greedy = r->inv_temperature == 0.0f || r->top_k == 1;
    float scale = greedy ? 1.0f : r->inv_temperature;
    uint64_t best = 0;
    int best_id = 0;
    for (int i = 0; i < V; i++) {
        uint64_t rank = zg_sample_rank(zg_sample_z(lg[i], scale), i);
        if (rank > best) {
            best = rank;
            best_id = i;
        }
    }
    if (greedy) return best_id;
    float zmax = zg_sample_z(lg[best_id], scale);
    for (int i = 0; i < V; i++) s->w[i] = zg_sample_weight(zg_sample_z(lg[i], scale) - zmax);
    int cut = (r->top_k > 0 && r->top_k < V) || r->top_p < 1.0f;
    uint64_t W = 0;
    if (!cut) {
        memset(s->kept, 1, (size_t)V);
        for (int i = 0; i < V; i++) W += s->w[i];
    } else {
        for (int i = 0; i < V; i++) {
            s->cand[i].rank = zg_sample_rank(zg_sample_z(lg[i], scale), i);
            s->cand[i].id = i;
        }
        qsort(s->cand, (size_t)V, sizeof *s->cand, cand_desc);
        int n = (r->top_k > 0 && r->top_k < V) ? r->top_k : V;
        for (int j = 0; j < n; j++) W += s->w[s->cand[j].id];
        if (r->top_p < 1.0f && W > 0) {
            uint64_t target = zg_sample_top_p_target(r->top_p, W), cum = 0;
            for (int j = 0; j < n; j++) {
                cum += s->w[s->cand[j].id];
                if (cum >= target) {
                    n = j + 1;
                    break;
                }
            }
            W = cum;
        }
        memset(s->kept, 0, (size_t)V);
        for (int j = 0; j < n; j++) s->kept[s->cand[j].id] = 1;
    }
    if (W == 0) return best_id; /* every weight rounded to 0 (infinite or NaN logits) */
    uint64_t x = zg_sample_scale(zg_sample_random(r->seed, counter), W), cum = 0;
    for (int i = 0; i < V; i++) {
        if (!s->kept[i]) continue;
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
    s.cand = zg_malloc((size_t)V * sizeof *s.cand);
    s.w = zg_malloc((size_t)V * sizeof *s.w);
    s.kept = zg_malloc((size_t)V);
    for (int b = 0; b < B; b++)
        ids[b] = sample_row((const float *)logits + (size_t)b * Vp, V, &rows[b], (uint32_t)*counter, &s);
    free(s.cand);
    free(s.w);
    free(s.kept);
}
