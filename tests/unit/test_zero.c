/* ZeRO engine, stages 0-3, on a synthetic layered model with a non-quadratic loss (so parameters
 * must really be gathered at stage 3 and gradients really reduced at every stage).
 *
 * Run alone (ctest unit.test_zero): world size 1. Run under mpirun -np W (tests/cli/dist_zero.sh):
 * every rank trains with the engine over W ranks and, in the same process, a one-process reference
 * with the same global batch (grad_accum * W micro-steps); final parameters and per-step gradient
 * norms must agree within fp32 reduction-order noise. Buffer sizes are not multiples of W, one
 * configuration has an empty shard, buckets are tiny and odd-sized. */
#include "backend/backend.h"
#include "core/error.h"
#include "dist/comm.h"
#include "model/gpt2.h"
#include "testdist.h"
#include "testutil.h"
#include "train/zero.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zg_comm *g_comm;
static zg_backend *g_be;

/* ---- a fake parameter table: embeddings, L layers, tail ---------------------------------- */

typedef struct {
    gpt2_param_table t;
} fake_table;

static void fake_table_init(fake_table *f, size_t emb, int L, size_t lsz, size_t tail) {
    memset(f, 0, sizeof *f);
    gpt2_param_table *t = &f->t;
    t->tensors = zg_calloc((size_t)(2 + 2 * L), sizeof(gpt2_tensor));
    t->layer_begin = zg_calloc((size_t)L + 1, sizeof(size_t));
    size_t off = 0;
    int k = 0;
    gpt2_tensor *x = &t->tensors[k++];
    snprintf(x->name, sizeof x->name, "wte");
    x->offset = off;
    x->numel = emb;
    x->layer = -1;
    x->decay = 1;
    off += emb;
    for (int l = 0; l < L; l++) {
        t->layer_begin[l] = off;
        size_t w = lsz - lsz / 3, b = lsz / 3;
        x = &t->tensors[k++];
        snprintf(x->name, sizeof x->name, "h.%d.w", l);
        x->offset = off;
        x->numel = w;
        x->layer = l;
        x->decay = 1;
        off += w;
        if (b) {
            x = &t->tensors[k++];
            snprintf(x->name, sizeof x->name, "h.%d.b", l);
            x->offset = off;
            x->numel = b;
            x->layer = l;
            x->decay = 0;
            off += b;
        }
    }
    t->layer_begin[L] = off;
    if (tail) {
        x = &t->tensors[k++];
        snprintf(x->name, sizeof x->name, "ln_f.weight");
        x->offset = off;
        x->numel = tail;
        x->layer = -1;
        x->decay = 0;
        off += tail;
    }
    t->n_tensors = k;
    t->num_params = off;
}

static void fake_table_free(fake_table *f) {
    free(f->t.tensors);
    free(f->t.layer_begin);
}

/* ---- the synthetic model ----------------------------------------------------------------- */

typedef struct {
    const gpt2_param_table *t;
    int L;
    float *params, *grads;
    gpt2_hooks h;
    zg_zero *z;     /* for the stage-3 "released means zero" check */
    int bad_access; /* parameters read while not gathered */
} synth;

static float target(uint64_t sample, size_t j) { return 0.6f * sinf(0.37f * (float)j + 1.3f * (float)sample) + 0.1f; }
static float weight(size_t j) { return 0.5f + (float)(j % 7) * 0.25f; }

static void synth_before(synth *s, int l, int bw) {
    if (s->h.before_layer) s->h.before_layer(s->h.ctx, l, bw);
}
static void synth_after(synth *s, int l, int bw) {
    if (s->h.after_layer) s->h.after_layer(s->h.ctx, l, bw);
}

/* loss_i = sum_j w_j (0.5 (p_j - t_ij)^2 + 0.05 p_j^4); d/dp_j = w_j ((p_j - t_ij) + 0.2 p_j^3) */
static double range_loss(synth *s, size_t lo, size_t hi, const uint64_t *samples, int B, float *grad_scale) {
    double loss = 0;
    for (size_t j = lo; j < hi; j++) {
        float p = s->params[j];
        for (int b = 0; b < B; b++) {
            float d = p - target(samples[b], j);
            loss += weight(j) * (0.5 * d * d + 0.05 * (double)p * p * p * p) / B;
            if (grad_scale) s->grads[j] += *grad_scale * weight(j) * (d + 0.2f * p * p * p) / (float)B;
        }
    }
    return loss;
}

static void check_gathered(synth *s, size_t lo, size_t hi) {
    /* Parameters of a gathered layer are never exactly 0 in this test (init avoids 0). */
    for (size_t j = lo; j < hi; j++)
        if (s->params[j] == 0.0f) s->bad_access++;
}

static double synth_step(synth *s, const uint64_t *samples, int B, float loss_scale) {
    const size_t *lb = s->t->layer_begin;
    size_t n = s->t->num_params;
    double loss = 0;
    /* forward */
    synth_before(s, -1, 0);
    check_gathered(s, 0, lb[0]);
    loss += range_loss(s, 0, lb[0], samples, B, NULL);
    for (int l = 0; l < s->L; l++) {
        synth_before(s, l, 0);
        check_gathered(s, lb[l], lb[l + 1]);
        loss += range_loss(s, lb[l], lb[l + 1], samples, B, NULL);
        synth_after(s, l, 0);
    }
    check_gathered(s, lb[s->L], n);
    loss += range_loss(s, lb[s->L], n, samples, B, NULL);
    synth_after(s, -1, 0);
    /* backward: tail, layers last first, embeddings */
    synth_before(s, -1, 1);
    range_loss(s, lb[s->L], n, samples, B, &loss_scale);
    if (s->h.grads_ready && n > lb[s->L]) s->h.grads_ready(s->h.ctx, lb[s->L], n - lb[s->L]);
    for (int l = s->L - 1; l >= 0; l--) {
        synth_before(s, l, 1);
        check_gathered(s, lb[l], lb[l + 1]);
        range_loss(s, lb[l], lb[l + 1], samples, B, &loss_scale);
        if (s->h.grads_ready) s->h.grads_ready(s->h.ctx, lb[l], lb[l + 1] - lb[l]);
        synth_after(s, l, 1);
    }
    range_loss(s, 0, lb[0], samples, B, &loss_scale);
    if (s->h.grads_ready && lb[0]) s->h.grads_ready(s->h.ctx, 0, lb[0]);
    synth_after(s, -1, 1);
    return loss;
}

/* ---- one training run -------------------------------------------------------------------- */

typedef struct {
    int steps, B, accum; /* per rank */
    float lr, clip;
    zg_zero_opts zo;
} run_cfg;

/* Trains with `comm` (rank/size from it). Writes the final full parameters into out (n) and the
 * per-step gradient norms into norms. Returns the number of failed checks inside. */
static void run_training(const fake_table *ft, zg_comm *comm, const run_cfg *rc, float *out, double *norms,
                         int check_memory) {
    size_t n = ft->t.num_params;
    int W = comm->size, R = comm->rank;
    size_t mem0 = g_be->bytes_in_use;
    float *params = g_be->ops->alloc(g_be, n * sizeof(float), "params");
    float *grads = g_be->ops->alloc(g_be, n * sizeof(float), "grads");
    /* rank-dependent init: the engine must start everyone from rank 0's values */
    uint64_t rng = 1234 + 77 * (uint64_t)R;
    for (size_t j = 0; j < n; j++) {
        float u = zt_rand_uniform(&rng);
        params[j] = (u >= 0 ? 0.05f : -0.05f) + 0.5f * u;
    }
    zg_optimizer_config oc = {.lr = rc->lr, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.1f};
    zg_zero z;
    size_t before_engine = g_be->bytes_in_use;
    ZT_CHECK(zg_zero_init(&z, &rc->zo, comm, g_be, &ft->t, params, grads, &oc) == 0);
    size_t engine_bytes = g_be->bytes_in_use - before_engine;
    synth s = {&ft->t, 0, params, grads, zg_zero_hooks(&z), &z, 0};
    for (int i = 0; i < ft->t.n_tensors; i++)
        if (ft->t.tensors[i].layer + 1 > s.L) s.L = ft->t.tensors[i].layer + 1;
    int G = rc->B * rc->accum * W;
    uint64_t *samples = zg_malloc(sizeof(uint64_t) * (size_t)rc->B);
    for (int step = 0; step < rc->steps; step++) {
        for (int k = 0; k < rc->accum; k++) {
            for (int b = 0; b < rc->B; b++)
                samples[b] = (uint64_t)step * (uint64_t)G + (uint64_t)((k * W + R) * rc->B + b);
            synth_step(&s, samples, rc->B, 1.0f / (float)rc->accum);
            zg_zero_micro_end(&z);
            if (rc->zo.stage >= 2) { /* the full gradient buffer is only scratch between micro-steps */
                int nonzero = 0;
                for (size_t j = 0; j < n; j++) nonzero += grads[j] != 0.0f;
                ZT_CHECK_MSG(nonzero == 0, "stage %d: %d gradient elements left in the full buffer", rc->zo.stage,
                             nonzero);
            }
            if (rc->zo.stage >= 3) { /* released parameters are really gone */
                int leaked = 0;
                for (size_t j = 0; j < n; j++) leaked += (j < z.begin || j >= z.end) && params[j] != 0.0f;
                ZT_CHECK_MSG(leaked == 0, "stage 3: %d non-owned parameters resident after the micro-step", leaked);
            }
        }
        zg_zero_step_info info;
        zg_zero_step(&z, rc->lr, 1.0f, rc->clip, &info);
        ZT_CHECK(!info.overflow);
        norms[step] = info.grad_norm;
    }
    ZT_CHECK_MSG(s.bad_access == 0, "stage %d: %d parameter reads of a layer that was not gathered", rc->zo.stage,
                 s.bad_access);
    if (rc->zo.stage >= 2)
        ZT_CHECK_MSG(z.max_bucket_seen <= rc->zo.reduce_bucket_size, "bucket of %zu > reduce_bucket_size %zu",
                     z.max_bucket_seen, rc->zo.reduce_bucket_size);
    if (rc->zo.stage >= 3) ZT_CHECK(z.n_gathers > 0 && z.n_releases > 0);

    if (check_memory) {
        zg_zero_memory held, plan;
        zg_zero_memory_held(&z, &held);
        zg_zero_plan(n, W, R, &rc->zo, ZG_F32, ZG_F32, 0, 0, &plan);
        ZT_CHECK_MSG(held.params == plan.params && held.grads == plan.grads && held.grad_shard == plan.grad_shard &&
                         held.optimizer == plan.optimizer && held.comm == plan.comm,
                     "rank %d stage %d: held p%zu g%zu gs%zu o%zu c%zu != plan p%zu g%zu gs%zu o%zu c%zu", R,
                     rc->zo.stage, held.params, held.grads, held.grad_shard, held.optimizer, held.comm, plan.params,
                     plan.grads, plan.grad_shard, plan.optimizer, plan.comm);
        /* ... and the plan is what the backend really allocated */
        ZT_CHECK_MSG(engine_bytes == plan.grad_shard + plan.optimizer + (g_be->device >= 0 ? plan.comm : 0),
                     "rank %d stage %d: engine allocated %zu bytes, plan says %zu", R, rc->zo.stage, engine_bytes,
                     plan.grad_shard + plan.optimizer);
        ZT_CHECK(before_engine - mem0 == plan.params + plan.grads);
        if (rc->zo.stage >= 1 && W > 1) {
            size_t b, e;
            zg_zero_shard_range(n, W, R, &b, &e);
            ZT_CHECK(plan.optimizer == (e - b) * 8);
        }
    }

    zg_zero_gather_all(&z);
    memcpy(out, params, n * sizeof(float));
    zg_zero_free(&z);
    free(samples);
    g_be->ops->dealloc(g_be, params);
    g_be->ops->dealloc(g_be, grads);
}

static void compare_with_reference(size_t emb, int L, size_t lsz, size_t tail, int stage, size_t rbs, size_t abs_,
                                   int overlap, int B, int accum) {
    fake_table ft;
    fake_table_init(&ft, emb, L, lsz, tail);
    size_t n = ft.t.num_params;
    run_cfg rc;
    memset(&rc, 0, sizeof rc);
    rc.steps = 6;
    rc.B = B;
    rc.accum = accum;
    rc.lr = 0.05f;
    rc.clip = 0.5f;
    zg_zero_opts_default(&rc.zo);
    rc.zo.stage = stage;
    rc.zo.reduce_bucket_size = rbs;
    rc.zo.allgather_bucket_size = abs_;
    rc.zo.overlap_comm = overlap;

    float *dist = zg_malloc(n * sizeof(float)), *ref = zg_malloc(n * sizeof(float));
    double nd[16], nr[16];
    run_training(&ft, g_comm, &rc, dist, nd, 1);

    /* one process, same global batch: grad_accum * W micro-steps */
    zg_comm *single;
    zg_comm_config cc = {.backend = "single"};
    ZT_CHECK(zg_comm_single_create(&single, &cc) == 0);
    run_cfg r1 = rc;
    r1.accum = accum * g_comm->size;
    r1.zo.stage = 0;
    run_training(&ft, single, &r1, ref, nr, 0);
    zg_comm_destroy(single);

    double maxd = 0, maxv = 0;
    for (size_t j = 0; j < n; j++) {
        double d = fabs((double)dist[j] - ref[j]);
        if (d > maxd) maxd = d;
        if (fabs(ref[j]) > maxv) maxv = fabs(ref[j]);
    }
    ZT_CHECK_MSG(maxd <= 2e-5 * (maxv > 1 ? maxv : 1), "W=%d stage %d n=%zu bucket %zu/%zu overlap %d: max |diff| %.3g",
                 g_comm->size, stage, n, rbs, abs_, overlap, maxd);
    for (int s = 0; s < rc.steps; s++) ZT_NEAR(nd[s], nr[s], 1e-6, 1e-5);
    /* all ranks hold the same parameters */
    double sum = 0;
    for (size_t j = 0; j < n; j++) sum += dist[j] * (double)(j % 13 + 1);
    double mx = sum, mn = -sum;
    zg_comm_all_reduce_host_f64(g_comm, &mx, 1, ZG_COMM_MAX);
    zg_comm_all_reduce_host_f64(g_comm, &mn, 1, ZG_COMM_MAX);
    ZT_CHECK_MSG(mx == -mn, "ranks disagree on the final parameters (stage %d)", stage);
    /* and the training moved them */
    ZT_CHECK(maxv > 0 && nd[rc.steps - 1] < nd[0]);
    free(dist);
    free(ref);
    fake_table_free(&ft);
}

static void test_stages_uneven(void) {
    for (int stage = 0; stage <= 3; stage++) {
        compare_with_reference(23, 3, 37, 5, stage, 10, 9, 1, 2, 2);
        compare_with_reference(23, 3, 37, 5, stage, 1000, 1000, 0, 1, 3);
    }
}

static void test_tiny_buffer(void) {
    /* n = 3: with 4 ranks one shard is empty */
    for (int stage = 0; stage <= 3; stage++) compare_with_reference(2, 1, 1, 0, stage, 2, 1, 1, 1, 2);
}

static void test_overflow_agreed(void) {
    fake_table ft;
    fake_table_init(&ft, 11, 2, 9, 3);
    size_t n = ft.t.num_params;
    for (int stage = 0; stage <= 3; stage++) {
        float *params = g_be->ops->alloc(g_be, n * sizeof(float), "params");
        float *grads = g_be->ops->alloc(g_be, n * sizeof(float), "grads");
        for (size_t j = 0; j < n; j++) params[j] = 0.5f;
        zg_optimizer_config oc = {.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.0f};
        zg_zero_opts zo;
        zg_zero_opts_default(&zo);
        zo.stage = stage;
        zo.reduce_bucket_size = 4;
        zg_zero z;
        ZT_CHECK(zg_zero_init(&z, &zo, g_comm, g_be, &ft.t, params, grads, &oc) == 0);
        for (size_t j = 0; j < n; j++) grads[j] = 1.0f;
        /* only the last rank sees an inf, in the element it owns last */
        if (g_comm->rank == g_comm->size - 1) grads[n - 1] = INFINITY;
        zg_zero_micro_end(&z);
        zg_zero_step_info info;
        zg_zero_step(&z, 0.1f, 1.0f, 1.0f, &info);
        ZT_CHECK_MSG(info.overflow == 1, "rank %d stage %d: overflow not agreed", g_comm->rank, stage);
        zg_zero_gather_all(&z);
        int changed = 0;
        for (size_t j = 0; j < n; j++) changed += params[j] != 0.5f;
        ZT_CHECK_MSG(changed == 0, "stage %d: parameters changed on an overflow step", stage);
        ZT_CHECK(z.opt.step == 0);
        zg_zero_free(&z);
        g_be->ops->dealloc(g_be, params);
        g_be->ops->dealloc(g_be, grads);
    }
    fake_table_free(&ft);
}

static void test_plan_formula(void) {
    /* Stage 2, fp16 params/grads, on a device: params 2n + shard 2n/N + optimizer 12n/N (+ grad scratch). */
    zg_zero_opts o;
    zg_zero_opts_default(&o);
    o.stage = 2;
    size_t n = 1557686400; /* GPT-2 XL, padded vocabulary */
    zg_zero_memory m;
    zg_zero_plan(n, 4, 1, &o, ZG_F16, ZG_F16, 1, 0, &m);
    ZT_CHECK(m.params == 2 * n);
    ZT_CHECK(m.grad_shard == 2 * (n / 4));
    ZT_CHECK(m.optimizer == 12 * (n / 4));
    ZT_CHECK(m.params + m.grad_shard + m.optimizer == 2 * n + 14 * (n / 4));
    /* uneven: shards differ by at most ceil */
    zg_zero_plan(10, 4, 3, &o, ZG_F32, ZG_F32, 0, 0, &m);
    ZT_CHECK(m.grad_shard == 1 * 4 && m.optimizer == 1 * 8);
    zg_zero_plan(10, 4, 0, &o, ZG_F32, ZG_F32, 0, 0, &m);
    ZT_CHECK(m.grad_shard == 3 * 4);
}

int main(void) {
    if (zt_dist_begin("test_zero", &g_comm, &g_be) != 0) return 1;
    zt_run("stages_uneven", test_stages_uneven);
    zt_run("tiny_buffer", test_tiny_buffer);
    zt_run("overflow_agreed", test_overflow_agreed);
    zt_run("plan_formula", test_plan_formula);
    return zt_dist_finish(g_comm, g_be);
}
