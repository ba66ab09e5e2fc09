/* The sample op (CPU backend) and generation (src/model/generate.c): greedy and the cuts, drawn
 * frequencies against the softmax, the shared arithmetic (Philox known answers, the integer weights),
 * the same seed giving the same tokens, and ragged batches whose rows equal each row generated alone. */
#include "backend/sample_math.h"
#include "core/error.h"
#include "model/generate.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zg_backend *BE;

static zg_sample_row row_of(double temperature, int top_k, double top_p, uint64_t seed) {
    zg_sample_row r;
    if (gpt2_sample_row_init(&r, temperature, top_k, top_p, seed) != 0) zt_fail_at(__FILE__, __LINE__, "row init");
    return r;
}

/* One row's draw from V logits (Vp = V) at a counter. */
static int draw(const float *logits, int V, const zg_sample_row *r, int counter) {
    int32_t id = -1, c = counter;
    BE->ops->sample(BE, &id, logits, r, &c, 1, V, V);
    return id;
}

static void test_arithmetic(void) {
    /* Philox4x32-10 known answers (Random123's kat_vectors) */
    uint32_t c[4] = {0, 0, 0, 0}, k[2] = {0, 0};
    zg_philox4x32(c, k);
    ZT_CHECK(c[0] == 0x6627e8d5u && c[1] == 0xe169c58du && c[2] == 0xbc57ac4cu && c[3] == 0x9b00dbd8u);
    uint32_t c2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, k2[2] = {0xa4093822u, 0x299f31d0u};
    zg_philox4x32(c2, k2);
    ZT_CHECK(c2[0] == 0xd16cfe09u && c2[1] == 0x94fdccebu && c2[2] == 0x5001e420u && c2[3] == 0x24126ea1u);
    /* weights: exactly 2^40 at the maximum, e^x * 2^40 within 1e-6 relative, monotone, 0 far below */
    ZT_CHECK(zg_sample_weight(0.0f) == (1ull << ZG_SAMPLE_WEIGHT_BITS));
    double worst = 0;
    uint64_t prev = 0;
    for (int i = -25000; i <= 0; i++) {
        float x = (float)i * 1e-3f;
        uint64_t w = zg_sample_weight(x);
        double ref = exp((double)x) * 1099511627776.0;
        worst = fmax(worst, (fabs((double)w - ref) - 1.0) / ref); /* rounded down to an integer */
        ZT_CHECK_MSG(w >= prev, "weight not monotone at %g", x);
        prev = w;
    }
    ZT_CHECK_MSG(worst < 1e-6, "weight vs exp: %.3g relative", worst);
    ZT_CHECK(zg_sample_weight(-31.0f) == 0 && zg_sample_weight(NAN) == 0 && zg_sample_weight(-INFINITY) == 0);
    /* the order: larger first, ties by the lower id, NaN last */
    ZT_CHECK(zg_sample_rank(1.0f, 5) > zg_sample_rank(0.5f, 1));
    ZT_CHECK(zg_sample_rank(-1.0f, 5) > zg_sample_rank(-2.0f, 1));
    ZT_CHECK(zg_sample_rank(0.5f, 1) > zg_sample_rank(0.5f, 2));
    ZT_CHECK(zg_sample_rank(-INFINITY, 3) > zg_sample_rank(NAN, 0));
    ZT_CHECK(zg_sample_scale(~0ull, 10) == 9 && zg_sample_scale(0, 10) == 0);
}

/* The definition done the plain way: sort the candidates by rank, cut, walk the kept ids in id order.
 * The op (radix selection, as on CUDA) must give the same token. */
typedef struct {
    uint64_t rank;
    int id;
} ref_cand;

static int ref_desc(const void *a, const void *b) {
    uint64_t x = ((const ref_cand *)a)->rank, y = ((const ref_cand *)b)->rank;
    return x > y ? -1 : x < y ? 1 : 0;
}

static int ref_sample(const float *lg, int V, const zg_sample_row *r, uint32_t counter) {
    int greedy = r->inv_temperature == 0.0f || r->top_k == 1;
    float scale = greedy ? 1.0f : r->inv_temperature;
    ref_cand *c = zg_malloc((size_t)V * sizeof *c);
    uint64_t *w = zg_malloc((size_t)V * sizeof *w);
    unsigned char *kept = zg_calloc((size_t)V, 1);
    for (int i = 0; i < V; i++) c[i].rank = zg_sample_rank(zg_sample_z(lg[i], scale), i), c[i].id = i;
    qsort(c, (size_t)V, sizeof *c, ref_desc);
    int out = c[0].id, n = (!greedy && r->top_k > 0 && r->top_k < V) ? r->top_k : V;
    float zmax = zg_sample_z(lg[c[0].id], scale);
    uint64_t W = 0;
    for (int i = 0; i < V && !greedy; i++) w[i] = zg_sample_weight(zg_sample_z(lg[i], scale) - zmax);
    for (int j = 0; j < n && !greedy; j++) W += w[c[j].id];
    if (!greedy && r->top_p < 1.0f && W > 0) {
        uint64_t target = zg_sample_top_p_target(r->top_p, W), cum = 0;
        for (int j = 0; j < n; j++)
            if ((cum += w[c[j].id]) >= target) {
                n = j + 1;
                break;
            }
        W = cum;
    }
    if (!greedy && W > 0) {
        for (int j = 0; j < n; j++) kept[c[j].id] = 1;
        uint64_t x = zg_sample_scale(zg_sample_random(r->seed, counter), W), cum = 0;
        for (int i = 0; i < V; i++)
            if (kept[i] && (cum += w[i]) > x) {
                out = i;
                break;
            }
    }
    free(c), free(w), free(kept);
    return out;
}

static void test_against_sort(void) {
    enum { V = 3000 };
    float *lg = zg_malloc(V * sizeof(float));
    zg_sample_row rows[] = {row_of(0.8, 200, 1.0, 13),  row_of(1.0, 0, 0.9, 14),  row_of(1.3, 50, 0.8, 15),
                            row_of(1.0, 0, 1.0, 16),    row_of(1.0, 3, 0.01, 18), row_of(1.0, 1000, 0.95, 19),
                            row_of(1.0, 2999, 0.3, 20), row_of(0.5, 7, 1.0, 21),  row_of(0.0, 0, 1.0, 22)};
    uint64_t st = 77;
    int bad = 0, n = 0;
    for (int trial = 0; trial < 12; trial++) {
        for (int i = 0; i < V; i++) {
            float x = 4.0f * zt_rand_uniform(&st);
            if (trial % 3 == 0) x = roundf(x * 4.0f) / 4.0f; /* ties: the cuts end in the id bits */
            if (trial % 3 == 1) x = roundf(x);
            if (trial == 11) x = 1.0f; /* all equal */
            lg[i] = x;
        }
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
            for (int c = 0; c < 15; c++, n++)
                bad += draw(lg, V, &rows[r], c) != ref_sample(lg, V, &rows[r], (uint32_t)c);
    }
    ZT_CHECK_MSG(bad == 0, "the sample op differs from sorting in %d of %d draws", bad, n);
    free(lg);
}

/* The CUDA cluster kernel's top-p (sample_cuda.cu, zgc_cluster_nucleus) done serially with the same
 * helpers (sample_math.h): binned rounds over d = key(max z) - key(z), the tie rule at the crossing d,
 * the draw walking the kept ids with a tie count. It must give the sort's token; a wrong bound on d,
 * bin choice or tie count differs. */
static int nucleus_sample(const float *lg, int V, const zg_sample_row *r, uint32_t counter) {
    ref_cand *c = zg_malloc((size_t)V * sizeof *c);
    uint64_t *w = zg_malloc((size_t)V * sizeof *w);
    float *z = zg_malloc((size_t)V * sizeof *z);
    for (int i = 0; i < V; i++) {
        z[i] = zg_sample_z(lg[i], r->inv_temperature);
        c[i].rank = zg_sample_rank(z[i], i), c[i].id = i;
    }
    qsort(c, (size_t)V, sizeof *c, ref_desc);
    uint64_t keep_from = r->top_k > 0 && r->top_k < V ? c[r->top_k - 1].rank : 0;
    float zmax = z[c[0].id];
    uint32_t kmax = zg_sample_key(zmax), lo = 0, hi = zg_sample_nucleus_span(zmax), dstar = 0;
    for (int i = 0; i < V; i++) w[i] = zg_sample_weight(z[i] - zmax);
    uint64_t above = 0, target = 0, group = 0;
    int out = -1;
    for (int round = 0; out < 0; round++) {
        int s = zg_sample_nucleus_shift(hi - lo);
        uint64_t mass[ZG_SAMPLE_NUCLEUS_BINS] = {0}, total = 0, run = 0;
        uint32_t mn[ZG_SAMPLE_NUCLEUS_BINS], mx[ZG_SAMPLE_NUCLEUS_BINS] = {0};
        memset(mn, 0xff, sizeof mn);
        for (int i = 0; i < V; i++) {
            uint32_t d = kmax - zg_sample_key(z[i]);
            if (w[i] == 0 || zg_sample_rank(z[i], i) < keep_from) continue;
            if (round == 0) ZT_CHECK_MSG(d <= hi, "d %u of a positive weight past the bound %u", d, hi);
            if (d < lo || d > hi) continue;
            int b = (int)((d - lo) >> s);
            mass[b] += w[i], mn[b] = d < mn[b] ? d : mn[b], mx[b] = d > mx[b] ? d : mx[b];
            total += w[i];
        }
        if (round == 0) {
            if (total == 0) out = c[0].id;
            target = zg_sample_top_p_target(r->top_p, total);
        }
        if (out >= 0) break;
        ZT_CHECK(round < 4);
        uint64_t need = target - above;
        int b = 0;
        while (run + mass[b] < need) run += mass[b++];
        above += run;
        if (mn[b] == mx[b]) {
            dstar = mn[b], group = mass[b];
            break;
        }
        lo += (uint32_t)b << s;
        uint64_t top = (uint64_t)lo + (1ull << s) - 1;
        hi = top < hi ? (uint32_t)top : hi;
    }
    if (out < 0) {
        uint32_t K = kmax - dstar;
        uint64_t ties = 0, before = 0;
        for (int i = 0; i < V; i++) {
            if (zg_sample_rank(z[i], i) < keep_from) continue;
            if (zg_sample_key(z[i]) > K) before += w[i];
            ties += zg_sample_key(z[i]) == K;
        }
        ZT_CHECK(before == above && ties > 0 && group % ties == 0);
        uint64_t take = zg_sample_nucleus_take(target - above, group, ties), W = above + take * (group / ties);
        uint64_t x = zg_sample_scale(zg_sample_random(r->seed, counter), W), cum = 0, tie = 0;
        for (int i = 0; i < V && out < 0; i++) {
            uint32_t key = zg_sample_key(z[i]);
            if (zg_sample_rank(z[i], i) < keep_from || key < K || (key == K && tie++ >= take)) continue;
            if ((cum += w[i]) > x) out = i;
        }
    }
    free(c), free(w), free(z);
    return out;
}

/* bf16's rounding of a float (the device's logits in the activation dtype): ties and a 7-bit mantissa */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static void test_nucleus_bins(void) {
    enum { V = 4000 };
    float *lg = zg_malloc(V * sizeof(float));
    static const double ps[] = {0.1, 0.5, 0.9, 0.95, 0.999}, ts[] = {0.7, 1.0};
    static const int ks[] = {0, 50, 1000};
    uint64_t st = 91;
    int bad = 0, n = 0;
    for (int trial = 0; trial < 8; trial++) {
        for (int i = 0; i < V; i++) {
            float x = 4.0f * zt_rand_uniform(&st);
            if (trial == 1) x = roundf(x * 4.0f) / 4.0f;                      /* 33 values: ties at every cut */
            if (trial == 2) x = round_bf16(3.0f * x);                         /* the bench's logits */
            if (trial == 3) x = round_bf16(-60.0f + 3.0f * x + 2.0f * x * x); /* GPT-2-like: negative, skewed */
            if (trial == 4) x = 1.0f;                                         /* all equal */
            if (trial == 5) x = i % 7 == 0 ? 20.0f : x;                       /* a few far ahead, tied */
            if (trial == 6) x = 1e-3f * x;                                    /* across zero */
            if (trial == 7) x = round_bf16(2e4f + 1e3f * x);
            lg[i] = x;
        }
        for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++)
            for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++)
                for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                    zg_sample_row r = row_of(ts[ti], ks[ki], ps[pi], 100 + (uint64_t)trial);
                    for (int c = 0; c < 4; c++, n++) {
                        int got = nucleus_sample(lg, V, &r, (uint32_t)c), want = ref_sample(lg, V, &r, (uint32_t)c);
                        if (got != want && bad++ < 5)
                            fprintf(stderr, "  nucleus trial %d p %g T %g k %d counter %d: bins %d, sort %d\n", trial,
                                    ps[pi], ts[ti], ks[ki], c, got, want);
                    }
                }
    }
    ZT_CHECK_MSG(bad == 0, "the binned nucleus differs from sorting in %d of %d draws", bad, n);
    /* the bound on d at its edge: every float z with z - max z > -32 (exact in double here) lies within it */
    uint64_t st2 = 5;
    for (int k = 0; k < 20000; k++) {
        float zmax = 100.0f * zt_rand_uniform(&st2), t = zmax - 32.0f,
              zs[3] = {nextafterf(t, -INFINITY), t, nextafterf(t, INFINITY)};
        for (int j = 0; j < 3; j++)
            if ((double)zs[j] - (double)zmax > -32.0)
                ZT_CHECK(zg_sample_key(zmax) - zg_sample_key(zs[j]) <= zg_sample_nucleus_span(zmax));
    }
    free(lg);
}

static void test_greedy_and_cuts(void) {
    float logits[6] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f, 2.0f}; /* tie 1 and 5: the lower id wins */
    zg_sample_row g = row_of(0.0, 0, 1.0, 1), k1 = row_of(1.0, 1, 1.0, 7), k3 = row_of(1.0, 3, 1.0, 9),
                  tp = row_of(1.0, 0, 0.01, 3);
    ZT_CHECK(draw(logits, 6, &g, 0) == 1);
    for (int i = 0; i < 50; i++) ZT_CHECK(draw(logits, 6, &k1, i) == 1); /* top-k 1 is greedy */
    int seen[6] = {0};
    for (int i = 0; i < 600; i++) seen[draw(logits, 6, &k3, i)]++; /* top-k 3: ids 1, 5, 3 only */
    ZT_CHECK(seen[1] > 0 && seen[5] > 0 && seen[3] > 0 && seen[0] + seen[2] + seen[4] == 0);
    for (int i = 0; i < 50; i++) ZT_CHECK(draw(logits, 6, &tp, i) == 1); /* tiny top-p: the most likely */
    zg_sample_row r;
    ZT_CHECK(gpt2_sample_row_init(&r, -1.0, 0, 1.0, 3) != 0 && strstr(zg_error_message(), "--temperature"));
    ZT_CHECK(gpt2_sample_row_init(&r, 1.0, -2, 1.0, 3) != 0 && strstr(zg_error_message(), "--top-k"));
    ZT_CHECK(gpt2_sample_row_init(&r, 1.0, 0, 0.0, 3) != 0 && strstr(zg_error_message(), "--top-p"));
    ZT_CHECK(gpt2_sample_row_init(&r, 1.0, 0, 1.5, 3) != 0);
    ZT_CHECK(gpt2_sample_row_init(&r, 1e-300, 0, 1.0, 3) != 0); /* 1/T overflows a float */
    /* a NaN or infinite logit does not break the draw: +inf is the only candidate */
    float odd[4] = {NAN, 1.0f, INFINITY, 0.0f};
    zg_sample_row all = row_of(1.0, 0, 1.0, 5);
    for (int i = 0; i < 20; i++) ZT_CHECK(draw(odd, 4, &all, i) == 2);
}

static void frequencies(const float *logits, int V, const zg_sample_row *r, const double *want, int n) {
    int *count = zg_calloc((size_t)V, sizeof(int));
    for (int i = 0; i < n; i++) count[draw(logits, V, r, i)]++;
    for (int v = 0; v < V; v++) {
        double se = sqrt(want[v] * (1 - want[v]) / n) + 1e-9;
        ZT_CHECK_MSG(fabs((double)count[v] / n - want[v]) <= 5 * se, "token %d drawn %.4f, softmax says %.4f", v,
                     (double)count[v] / n, want[v]);
    }
    free(count);
}

static void test_frequencies(void) {
    /* p = softmax(logits) = (0.1, 0.2, 0.3, 0.4) */
    float logits[5] = {(float)log(1.0), (float)log(2.0), (float)log(3.0), (float)log(4.0), -40.0f};
    int n = 40000;
    zg_sample_row r = row_of(1.0, 0, 1.0, 42);
    double p[5] = {0.1, 0.2, 0.3, 0.4, 0};
    frequencies(logits, 5, &r, p, n);
    /* temperature 2: p ~ sqrt(1, 2, 3, 4) */
    double z = 1 + sqrt(2.0) + sqrt(3.0) + 2;
    double pt[5] = {1 / z, sqrt(2.0) / z, sqrt(3.0) / z, 2 / z, 0};
    r = row_of(2.0, 0, 1.0, 43);
    frequencies(logits, 5, &r, pt, n);
    /* top-k 2: (3/7, 4/7) on ids 2, 3 */
    double pk[5] = {0, 0, 3 / 7.0, 4 / 7.0, 0};
    r = row_of(1.0, 2, 1.0, 44);
    frequencies(logits, 5, &r, pk, n);
    /* top-p 0.65: the fewest most likely reaching 0.65 are ids 3, 2 (0.7) */
    r = row_of(1.0, 0, 0.65, 45);
    frequencies(logits, 5, &r, pk, n);
    /* top-k 3 then top-p 0.5 of what is left (0.2, 0.3, 0.4)/0.9: ids 3, 2 (0.78) */
    r = row_of(1.0, 3, 0.5, 46);
    frequencies(logits, 5, &r, pk, n);
}

static void test_seeded_rows(void) {
    enum { V = 300, B = 3 };
    float *logits = zg_malloc((size_t)B * V * sizeof(float));
    for (int i = 0; i < B * V; i++) logits[i] = (float)sin(i * 0.7) * 3.0f;
    zg_sample_row rows[B] = {row_of(0.9, 20, 0.95, 5), row_of(0.9, 20, 0.95, 5), row_of(0.9, 20, 0.95, 6)};
    int same = 1, differ = 0, moves = 0;
    for (int c = 0; c < 100; c++) {
        int32_t ids[B], again[B], ctr = c;
        BE->ops->sample(BE, ids, logits, rows, &ctr, B, V, V);
        BE->ops->sample(BE, again, logits, rows, &ctr, B, V, V);
        /* rows 0 and 1 have the same settings but different logits rows: compare row 0 with itself */
        same &= ids[0] == again[0] && ids[2] == again[2];
        int32_t one = draw(logits + 2 * V, V, &rows[2], c);
        same &= one == ids[2]; /* a row's draw does not depend on the other rows */
        differ |= draw(logits, V, &rows[0], c) != draw(logits, V, &rows[2], c);
        moves += c > 0 && draw(logits, V, &rows[0], c) != draw(logits, V, &rows[0], c - 1);
    }
    ZT_CHECK(same);
    ZT_CHECK(differ);
    ZT_CHECK(moves > 10); /* the counter changes the draw */
    free(logits);
}

/* ---- generation ------------------------------------------------------------------------------ */

static void model_init(gpt2_model *m) {
    gpt2_config c = {2, 2, 32, 40, 97, 0};
    gpt2_config_validate(&c);
    ZT_CHECK(gpt2_init(m, &c, BE) == 0);
    gpt2_init_random(m, 7);
    /* larger weights than GPT-2's init, so the logits are far from uniform and the text depends on them */
    float *p = zg_malloc(m->table.num_params * sizeof(float));
    gpt2_params_download(m, p);
    for (size_t i = 0; i < m->table.num_params; i++) p[i] *= 8.0f;
    gpt2_params_upload(m, p);
    free(p);
}

static int gen(gpt2_model *m, int B, const int32_t *const *prompts, const int *plen, int max_new,
               const zg_sample_row *rows, gpt2_gen_result *r) {
    gpt2_gen_args a = {B, prompts, plen, max_new, rows, -1, 1, 0};
    return gpt2_generate(m, &a, r);
}

/* vocab_limit (a tokenizer smaller than the model's vocabulary, as nanoGPT pads 50257 to 50304): every draw is
 * below it, greedy and sampled; without it the same model draws ids above it */
static void test_generate_vocab_limit(void) {
    gpt2_model m;
    model_init(&m);
    static const int32_t p0[] = {5, 7};
    const int32_t *prompts[1] = {p0};
    int plen[1] = {2}, max_new = 30, limit = 40;
    int above = 0;
    for (int sampled = 0; sampled < 2; sampled++) {
        zg_sample_row row = sampled ? row_of(1.5, 0, 1.0, 3) : row_of(0.0, 0, 1.0, 0);
        for (int lim = 0; lim < 2; lim++) {
            gpt2_gen_args a = {1, prompts, plen, max_new, &row, -1, 1, lim ? limit : 0};
            gpt2_gen_result r;
            ZT_CHECK(gpt2_generate(&m, &a, &r) == 0);
            for (int t = 2; t < 2 + max_new; t++) {
                if (lim) ZT_CHECK_MSG(r.seq[t] < limit, "token %d at %d with vocab_limit %d", r.seq[t], t, limit);
                if (!lim) above += r.seq[t] >= limit;
            }
            gpt2_gen_result_free(&r);
        }
    }
    ZT_CHECK(above > 0); /* the limit is what kept the ids below it */
    gpt2_free(&m);
}

static void test_generate_ragged(void) {
    gpt2_model m;
    model_init(&m);
    static const int32_t p0[] = {5}, p1[] = {3, 1, 4}, p2[] = {9, 2, 6, 5, 3, 5}, p3[] = {8, 8};
    const int32_t *prompts[4] = {p0, p1, p2, p3};
    int plen[4] = {1, 3, 6, 2}, max_new = 12;
    for (int sampled = 0; sampled < 2; sampled++) {
        zg_sample_row rows[4];
        for (int b = 0; b < 4; b++) rows[b] = sampled ? row_of(1.0, 20, 0.9, 100 + b) : row_of(0.0, 0, 1.0, 0);
        gpt2_gen_result all;
        ZT_CHECK(gen(&m, 4, prompts, plen, max_new, rows, &all) == 0);
        ZT_CHECK(all.maxT == 6 + max_new && all.steps == all.maxT - 1 - 1);
        int distinct = 0;
        for (int b = 0; b < 4; b++) {
            gpt2_gen_result one;
            ZT_CHECK(gen(&m, 1, &prompts[b], &plen[b], max_new, &rows[b], &one) == 0);
            const int32_t *x = all.seq + (size_t)b * all.maxT;
            ZT_CHECK_MSG(memcmp(x, one.seq, (size_t)(plen[b] + max_new) * sizeof(int32_t)) == 0,
                         "%s: row %d of the ragged batch differs from the row alone", sampled ? "sampled" : "greedy",
                         b);
            ZT_CHECK(memcmp(x, prompts[b], (size_t)plen[b] * sizeof(int32_t)) == 0);
            for (int t = plen[b] + 1; t < plen[b] + max_new; t++) distinct += x[t] != x[t - 1];
            gpt2_gen_result_free(&one);
        }
        ZT_CHECK(distinct > 8); /* not one token repeated: the test can see a wrong row */
        /* the same seed gives the same tokens */
        gpt2_gen_result again;
        ZT_CHECK(gen(&m, 4, prompts, plen, max_new, rows, &again) == 0);
        ZT_CHECK(memcmp(all.seq, again.seq, (size_t)4 * all.maxT * sizeof(int32_t)) == 0);
        gpt2_gen_result_free(&again);
        gpt2_gen_result_free(&all);
    }
    gpt2_free(&m);
}

/* Greedy generation equals the argmax of the full (uncached) forward at every step. */
static void test_generate_matches_forward(void) {
    gpt2_model m;
    model_init(&m);
    int32_t seq[40] = {11, 22, 33};
    int P = 3, max_new = 10, V = m.cfg.vocab_size;
    const int32_t *prompts[1] = {seq};
    zg_sample_row g = row_of(0.0, 0, 1.0, 0);
    gpt2_gen_result r;
    ZT_CHECK(gen(&m, 1, prompts, &P, max_new, &g, &r) == 0);
    float *logits = zg_malloc((size_t)V * sizeof(float));
    for (int t = P; t < P + max_new; t++) {
        zt_forward(&m, seq, NULL, 1, t);
        gpt2_logits(&m, t - 1, logits);
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        seq[t] = best;
    }
    ZT_CHECK_MSG(memcmp(seq, r.seq, (size_t)(P + max_new) * sizeof(int32_t)) == 0,
                 "greedy generation differs from the argmax of the full forward");
    free(logits);
    gpt2_gen_result_free(&r);
    /* errors: a prompt over block_size, an id outside the vocabulary, nothing left allocated */
    size_t before = BE->bytes_in_use;
    int long_len = 35;
    ZT_CHECK(gen(&m, 1, prompts, &long_len, 10, &g, &r) != 0 && strstr(zg_error_message(), "block_size 40"));
    seq[1] = 97;
    ZT_CHECK(gen(&m, 1, prompts, &P, 3, &g, &r) != 0 && strstr(zg_error_message(), "token id 97"));
    ZT_CHECK(BE->bytes_in_use == before);
    gpt2_free(&m);
}

/* A backend that cannot record (graph_begin fails): generation says so and launches every step, with
 * the same tokens. */
static int refuse_graph(zg_backend *be) {
    (void)be;
    return zg_errorf("recording refused by the test");
}

static void test_generate_record_refused(void) {
    gpt2_model m;
    model_init(&m);
    static const int32_t p0[] = {4, 2};
    const int32_t *prompts[1] = {p0};
    int plen[1] = {2};
    zg_sample_row row = row_of(1.0, 0, 1.0, 9);
    gpt2_gen_result plain, refused;
    ZT_CHECK(gen(&m, 1, prompts, plen, 10, &row, &plain) == 0);
    zg_backend_ops ops = *BE->ops;
    const zg_backend_ops *saved = BE->ops;
    ops.graph_begin = refuse_graph;
    BE->ops = &ops;
    ZT_CHECK(gen(&m, 1, prompts, plen, 10, &row, &refused) == 0);
    BE->ops = saved;
    ZT_CHECK(refused.recorded == 0 && refused.steps == plain.steps);
    ZT_CHECK(memcmp(plain.seq, refused.seq, (size_t)12 * sizeof(int32_t)) == 0);
    gpt2_gen_result_free(&plain);
    gpt2_gen_result_free(&refused);
    gpt2_free(&m);
}

int main(void) {
    zg_backend_config cfg = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&BE, &cfg) != 0) {
        zg_error_print();
        return 1;
    }
    zt_run("arithmetic", test_arithmetic);
    zt_run("greedy_and_cuts", test_greedy_and_cuts);
    zt_run("against_sort", test_against_sort);
    zt_run("nucleus_bins", test_nucleus_bins);
    zt_run("frequencies", test_frequencies);
    zt_run("seeded_rows", test_seeded_rows);
    zt_run("generate_ragged", test_generate_ragged);
    zt_run("generate_vocab_limit", test_generate_vocab_limit);
    zt_run("generate_matches_forward", test_generate_matches_forward);
    zt_run("generate_record_refused", test_generate_record_refused);
    zg_backend_destroy(BE);
    return zt_finish();
}
