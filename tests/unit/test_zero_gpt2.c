/* ZeRO stages 0-3 on a real (tiny) GPT-2 with the CPU backend, through the model's hooks.
 *
 * Alone (ctest): world size 1. Under mpirun -np W (tests/cli/dist_zero.sh): every rank trains with
 * the engine over W ranks and, in the same process, a one-process reference with the same global
 * batch; per-step losses and final weights must agree within fp32 reduction-order noise. The flat
 * buffer (18,100 elements) is not a multiple of 3. The engine runs over the model (zg_zero_init_model,
 * as in the trainer): at stages 2-3 no full gradient buffer, at stage 3 no full parameter buffer. Also
 * checks that what a rank allocates is what `zgpt plan` predicts (zg_zero_plan_model). */
#include "backend/backend.h"
#include "core/error.h"
#include "dist/comm.h"
#include "model/gpt2.h"
#include "testdist.h"
#include "testutil.h"
#include "train/checkpoint.h"
#include "train/ckpt_shards.h"
#include "train/zero.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zg_comm *g_comm;
static zg_backend *g_be;

enum { STEPS = 5, B = 2, T = 8, ACCUM = 2 };

static gpt2_config tiny_config(void) {
    gpt2_config c;
    memset(&c, 0, sizeof c);
    c.n_layer = 3;
    c.n_head = 2;
    c.n_embd = 20;
    c.block_size = 16;
    c.vocab_size = 61;
    ZG_CHECK_SYS(gpt2_config_validate(&c));
    return c;
}

/* Sequence `sample` of the synthetic corpus. */
static void make_sample(uint64_t sample, int V, int32_t *in, int32_t *tg) {
    for (int t = 0; t <= T; t++) {
        int32_t tok = (int32_t)((sample * 7 + (uint64_t)t * 3 + (uint64_t)((t * t + (int)sample) % 5)) % (uint64_t)V);
        if (t < T) in[t] = tok;
        if (t > 0) tg[t - 1] = tok;
    }
}

/* Memory a run saw (bytes, backend accounting): the peak over the whole run from before the model
 * existed, the peak after the engine's init (training only), the model states held after init (no
 * activations) and the plan's prediction for them. */
typedef struct {
    size_t peak_run, peak_train, state, plan_state, plan_params, plan_grads, full_params, full_grads, shard_opt;
    size_t plan_grad_state; /* the plan's gradient buffers + gradient shard */
    int direct;             /* offload on one rank: the gradients in the full buffer (zg_zero_grads_direct) */
    size_t host_state;      /* host_alloc bytes held after init (offload_param: the parameter shard) */
    size_t shard_bytes;     /* this rank's shard of the parameters (fp32) */
    long carried;           /* buckets left in flight at a micro-step's end (zg_zero.carry_reduces) */
} mem_seen;

/* train_ex flags */
enum {
    RUN_OVERLAP = 1,
    RUN_OFFLOAD_PARAM = 2,
    RUN_OFFLOAD = 4,        /* offload_optimizer cpu (the host AdamW) */
    RUN_SKIP_CLIP = 8,      /* step 1 dropped (as on an fp16 overflow), the others clipped to norm 0.05 */
    RUN_ACCUM_UNKNOWN = 16, /* offload: gradient_accumulation_steps not told (every gradient sent after backward) */
    RUN_V12 = 32,           /* offload: v0.12's step path (zg_zero_opts.offload_v12) */
    RUN_NAN_EMB = 64,       /* step 1: a NaN in the embeddings' gradient on the last rank after the first
                               micro-step's backward: that step overflows and is skipped on every rank */
};
/* grad_accum_local_layers v in the flags' upper bits (none: the default, -1) */
#define RUN_LOCAL(v) (((v) + 2) << 8)
static int run_local_layers(int flags) { return flags >> 8 ? (flags >> 8) - 2 : -1; }

/* Gradient elements a stage 2-3 rank of W > 1 must reduce on micro-step k of `accum`: the embeddings + ln_f
 * and layers 0..N-1 of local layers v (-1: none; 0: nothing held back) only on the last. Counted from the
 * table here, not from the engine's schedule. */
static size_t expected_reduced(const gpt2_param_table *t, int L, int v, int k, int accum) {
    size_t n = t->num_params;
    if (v == 0 || accum <= 1 || k == accum - 1) return n;
    int layers = v > 0 ? v : 0;
    size_t local = t->layer_begin[0] + (n - t->layer_begin[L]) + (t->layer_begin[layers] - t->layer_begin[0]);
    return n - local;
}

/* ZGPT_REDUCE_CARRY unset or 1 (the engine's default) */
static int carry_default(void) {
    const char *v = getenv("ZGPT_REDUCE_CARRY");
    return v == NULL || strcmp(v, "1") == 0;
}

/* Trains `steps` optimizer steps over `comm` with `accum` micro-steps per rank; writes the final fp32
 * parameters and the global mean loss of each step. load_dir: resume from that checkpoint first;
 * save_dir: save a sharded checkpoint "ck" there at the end. cfgp: the model (NULL: tiny_config()).
 * The engine runs in model mode (zg_zero_init_model), as in the trainer. */
static void train_ex(zg_comm *comm, const gpt2_config *cfgp, int stage, int accum, size_t bucket, int flags, int steps,
                     const char *load_dir, const char *save_dir, float *final_params, double *losses, int check_memory,
                     mem_seen *seen) {
    gpt2_config cfg = cfgp ? *cfgp : tiny_config();
    int W = comm->size, R = comm->rank;
    gpt2_model m;
    memset(&m, 0, sizeof m);
    size_t mem0 = g_be->bytes_in_use, host0 = g_be->host_bytes_in_use;
    g_be->bytes_peak = mem0; /* peaks of this run only */
    ZT_CHECK(gpt2_init(&m, &cfg, g_be) == 0);
    size_t mem_model = g_be->bytes_in_use - mem0;
    size_t n = m.table.num_params;
    gpt2_init_random(&m, 42 + (uint64_t)R); /* the engine must start everyone from rank 0's weights */
    zg_ckpt ck;
    memset(&ck, 0, sizeof ck);
    if (load_dir) {
        ZT_CHECK_MSG(zg_ckpt_open(&ck, load_dir) == 0, "open: %s", zg_error_message());
        float *host = zg_malloc(n * 4);
        ZT_CHECK(ck.num_params == n);
        ZT_CHECK(zg_ckpt_read_model(&ck, host) == 0);
        gpt2_params_upload(&m, host);
        free(host);
    }
    size_t mem1 = g_be->bytes_in_use;
    ZT_CHECK(gpt2_activations_ensure(&m, B, T) == 0);
    size_t mem_acts = g_be->bytes_in_use - mem1;

    zg_zero_opts zo;
    zg_zero_opts_default(&zo);
    zo.stage = stage;
    zo.reduce_bucket_size = bucket;
    zo.allgather_bucket_size = bucket + 3;
    zo.overlap_comm = (flags & RUN_OVERLAP) != 0;
    zo.offload_param = (flags & RUN_OFFLOAD_PARAM) != 0;
    zo.offload_optimizer = (flags & RUN_OFFLOAD) != 0;
    zo.offload_v12 = (flags & RUN_V12) != 0;
    zo.grad_accum = flags & RUN_ACCUM_UNKNOWN ? 0 : accum;
    zo.grad_accum_local_layers = run_local_layers(flags);
    /* eps 1e-5: Adam turns a gradient that is pure rounding noise (a unit GELU keeps near zero) into a
     * full-size step of random sign; a larger eps keeps such elements comparable across reduction
     * orders without hiding real differences (real gradients here are >= 1e-4). */
    zg_optimizer_config oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-5f, .weight_decay = 0.1f};
    zg_zero z;
    ZT_CHECK(zg_zero_init_model(&z, &zo, comm, g_be, &m, &oc) == 0);
    /* what the rank holds for the model states now: parameters, gradients, shard, optimizer */
    size_t state = g_be->bytes_in_use - mem0 - mem_acts;
    size_t host_state = g_be->host_bytes_in_use - host0;
    size_t peak_init = g_be->bytes_peak;
    g_be->bytes_peak = g_be->bytes_in_use;
    if (load_dir) {
        ZT_CHECK_MSG(zg_ckpt_read_optimizer(&ck, zg_zero_optimizer(&z)) == 0, "read optimizer: %s", zg_error_message());
        zg_zero_after_load(&z);
        zg_ckpt_close(&ck);
    }
    /* (offload on one rank accumulates in the full buffer, as stage 0 does: zg_zero_grads_direct) */
    if (stage >= 2 && !zg_zero_grads_direct(&zo, W))
        ZT_CHECK_MSG(m.grads == NULL, "stage %d: the model's full gradient buffer exists", stage);
    if (zg_zero_grads_direct(&zo, W)) ZT_CHECK_MSG(m.grads != NULL, "offload, 1 rank: no full gradient buffer");
    if (stage >= 3) ZT_CHECK_MSG(m.params == NULL, "stage 3: the model's full parameter buffer exists");

    zg_zero_memory plan;
    size_t act = gpt2_activation_bytes(&cfg, ZG_F32, B, T, 0, 0, 1, 0);
    zg_zero_plan_model(&m.table, W, R, &zo, ZG_F32, ZG_F32, 0, act, &plan);
    if (check_memory) {
        ZT_CHECK_MSG(mem_model == n * 4, "model buffers %zu, expected %zu", mem_model, n * 4);
        ZT_CHECK_MSG(state == plan.params + plan.grads + plan.grad_shard + plan.optimizer,
                     "stage %d rank %d: allocated %zu, plan %zu (params %zu grads %zu shard %zu optimizer %zu)", stage,
                     R, state, plan.params + plan.grads + plan.grad_shard + plan.optimizer, plan.params, plan.grads,
                     plan.grad_shard, plan.optimizer);
        zg_zero_memory held;
        zg_zero_memory_held(&z, &held);
        ZT_CHECK_MSG(held.params == plan.params && held.grads == plan.grads && held.grad_shard == plan.grad_shard &&
                         held.optimizer == plan.optimizer,
                     "stage %d rank %d: held p%zu g%zu != plan p%zu g%zu", stage, R, held.params, held.grads,
                     plan.params, plan.grads);
        ZT_CHECK_MSG(mem_acts >= plan.activations && mem_acts <= plan.activations + plan.activations / 10 + 4096,
                     "activations %zu, plan %zu", mem_acts, plan.activations);
        if (stage >= 2) ZT_CHECK(plan.grad_shard < n * 4 || W == 1);
    }

    int32_t in[B * T], tg[B * T];
    for (int step = 0; step < steps; step++) {
        double loss = 0;
        for (int k = 0; k < accum; k++) {
            for (int b = 0; b < B; b++) /* the same global batch every step, so the loss must fall */
                make_sample((uint64_t)((k * W + R) * B + b), cfg.vocab_size, in + b * T, tg + b * T);
            size_t before = z.n_reduced_elems; /* reductions start during backward */
            long carried0 = z.n_carried;
            loss += zt_forward(&m, in, tg, B, T) / accum;
            gpt2_backward(&m, 1.0f / (float)accum);
            if ((flags & RUN_NAN_EMB) && step == 1 && k == 0 && R == W - 1) /* CPU: host memory */
                ((float *)m.grad_group[0])[0] = NAN; /* wte[0]: the last piece launched (buckets go top down) */
            zg_zero_micro_end(&z);
            /* what this micro-step reduced: the held-back parts only on a step's last */
            if (stage >= 2 && W > 1) {
                int v = run_local_layers(flags);
                size_t want = expected_reduced(&m.table, cfg.n_layer, v, k, zo.grad_accum);
                ZT_CHECK_MSG(z.n_reduced_elems - before == want,
                             "stage %d, local layers %d, micro-step %d of %d: reduced %zu elements, expected %zu",
                             stage, v, k, accum, z.n_reduced_elems - before, want);
            }
            /* a micro-step before its step's last leaves its last buckets in flight (carry_reduces: stage 2-3,
             * W > 1, overlap_comm, no ZeRO-Offload, unless ZGPT_REDUCE_CARRY=0), every other one none */
            int carries = z.carry_reduces && k + 1 < accum;
            if (stage >= 2 && W > 1 && (flags & RUN_OVERLAP) && !(flags & (RUN_OFFLOAD | RUN_ACCUM_UNKNOWN)) &&
                carry_default())
                ZT_CHECK_MSG(z.carry_reduces, "stage %d: reductions are not carried", stage);
            if (carries && expected_reduced(&m.table, cfg.n_layer, run_local_layers(flags), k, accum) > 0)
                ZT_CHECK_MSG(z.n_carried > carried0, "stage %d micro-step %d: nothing carried", stage, k);
            if (!carries) ZT_CHECK(z.n_carried == carried0);
            if (stage >= 2) ZT_CHECK((m.grads == NULL || z.direct) && (carries || z.grad_pool_used == 0));
        }
        zg_comm_all_reduce_host_f64(comm, &loss, 1, ZG_COMM_SUM);
        losses[step] = loss / W;
        zg_zero_step_info info;
        if (flags & RUN_SKIP_CLIP) { /* the trainer's sequence on an fp16 overflow, then clipping */
            zg_zero_grad_norm(&z, 1.0f, &info);
            ZT_CHECK(!info.overflow && isfinite(info.grad_norm) && info.grad_norm > 0.05);
            if (step == 1)
                zg_zero_skip(&z);
            else
                zg_zero_apply(&z, 1e-2f, (float)(0.05 / (info.grad_norm + 1e-6)));
        } else {
            zg_zero_step(&z, 1e-2f, 1.0f, 1.0f, &info);
        }
        if ((flags & RUN_NAN_EMB) && step == 1) {
            ZT_CHECK_MSG(info.overflow, "rank %d: the NaN in the embeddings' gradient was not seen", R);
            continue;
        }
        ZT_CHECK(!info.overflow && isfinite(info.grad_norm));
    }
    if (seen) {
        seen->peak_run = (peak_init > g_be->bytes_peak ? peak_init : g_be->bytes_peak) - mem0 - mem_acts;
        seen->peak_train = g_be->bytes_peak - mem0 - mem_acts;
        seen->state = state;
        seen->plan_state = plan.params + plan.grads + plan.grad_shard + plan.optimizer;
        seen->plan_params = plan.params;
        seen->plan_grads = plan.grads;
        seen->plan_grad_state = plan.grads + plan.grad_shard;
        seen->direct = zg_zero_grads_direct(&zo, W);
        seen->full_params = n * 4;
        seen->full_grads = n * 4;
        seen->shard_opt = plan.grad_shard + plan.optimizer;
        seen->host_state = host_state;
        seen->shard_bytes = (z.end - z.begin) * 4;
        seen->carried = z.n_carried;
    }
    zg_zero_gather_all(&z);
    gpt2_params_download(&m, final_params);
    if (save_dir) {
        zg_ckpt_writer w;
        memset(&w, 0, sizeof w);
        if (R == 0) ZT_CHECK(zg_ckpt_writer_begin(&w, save_dir, "ck") == 0);
        int rc = zg_zero_ckpt_write_shards(&z, &w, save_dir, "ck");
        ZT_CHECK_MSG(rc == 0, "write shards: %s", zg_error_message());
        if (R == 0 && rc == 0) {
            ZT_CHECK(zg_ckpt_write_model(&w, &cfg, final_params, n, ZG_F32) == 0);
            ZT_CHECK(zg_ckpt_writer_commit(&w, 1) == 0);
        }
        zg_comm_barrier(comm); /* the checkpoint is complete for everyone */
    }
    zg_zero_release_all(&z);
    zg_zero_free(&z);
    gpt2_free(&m);
}

static void train(zg_comm *comm, int stage, int accum, size_t bucket, float *final_params, double *losses,
                  int check_memory) {
    train_ex(comm, NULL, stage, accum, bucket, 1, STEPS, NULL, NULL, final_params, losses, check_memory, NULL);
}

static size_t num_params(void) {
    gpt2_config cfg = tiny_config();
    gpt2_param_table t;
    ZG_CHECK_SYS(gpt2_param_table_init(&t, &cfg));
    size_t n = t.num_params;
    gpt2_param_table_free(&t);
    return n;
}

/* Universal resume: 3 steps on W ranks at `stage`, a sharded checkpoint, then 2 more steps at stage
 * `stage2` from it (in ONE process, or again on the W ranks when on_world) == 5 uninterrupted steps in
 * one process. */
static void resume_across(int stage, int stage2, int on_world) {
    size_t n = num_params();
    char dir[512] = {0};
    if (g_comm->rank == 0) {
        char *d = zt_tmpdir("zero_resume");
        snprintf(dir, sizeof dir, "%s", d);
        free(d);
    }
    zg_comm_broadcast_host(g_comm, dir, sizeof dir, 0);
    float *p = zg_malloc(n * 4), *pr = zg_malloc(n * 4);
    double l[STEPS], lr[STEPS];
    int W = g_comm->size;
    train_ex(g_comm, NULL, stage, ACCUM, 997, 1, 3, NULL, dir, p, l, 0, NULL);
    zg_comm *single;
    zg_comm_config cc = {.backend = "single"};
    ZT_CHECK(zg_comm_single_create(&single, &cc) == 0);
    if (on_world)
        train_ex(g_comm, NULL, stage2, ACCUM, 997, 1, 2, dir, NULL, p, l + 3, 0, NULL);
    else
        train_ex(single, NULL, stage2, ACCUM * W, 997, 1, 2, dir, NULL, p, l + 3, 0, NULL);
    train_ex(single, NULL, 0, ACCUM * W, 997, 1, 5, NULL, NULL, pr, lr, 0, NULL);
    zg_comm_destroy(single);
    double maxd = 0;
    for (size_t j = 0; j < n; j++) maxd = fmax(maxd, fabs((double)p[j] - pr[j]));
    ZT_CHECK_MSG(maxd < 2e-5, "resume W=%d stage %d -> %d process(es) stage %d: max |weight diff| %.3g", W, stage,
                 on_world ? W : 1, stage2, maxd);
    for (int s = 0; s < STEPS; s++) ZT_NEAR(l[s], lr[s], 1e-5, 1e-5);
    zg_comm_barrier(g_comm);
    if (g_comm->rank == 0) zt_rmtree(dir);
    free(p);
    free(pr);
}

static void test_universal_resume(void) {
    resume_across(2, 1, 0); /* N ranks -> 1 process, other stages */
    resume_across(3, 0, 0);
    resume_across(1, 2, 0);
    resume_across(0, 3, 0);
    resume_across(0, 2, 1); /* same ranks, the full-range shard read as shards */
    resume_across(2, 0, 1); /* and shards assembled into the full range */
    resume_across(3, 3, 1);
}

static void compare(int stage, size_t bucket) {
    gpt2_config cfg = tiny_config();
    gpt2_param_table t;
    ZT_CHECK(gpt2_param_table_init(&t, &cfg) == 0);
    size_t n = t.num_params;
    gpt2_param_table_free(&t);
    float *pd = zg_malloc(n * 4), *pr = zg_malloc(n * 4);
    double ld[STEPS], lr[STEPS];
    train(g_comm, stage, ACCUM, bucket, pd, ld, 1);
    zg_comm *single;
    zg_comm_config cc = {.backend = "single"};
    ZT_CHECK(zg_comm_single_create(&single, &cc) == 0);
    train(single, 0, ACCUM * g_comm->size, bucket, pr, lr, 0);
    zg_comm_destroy(single);
    double maxd = 0;
    size_t arg = 0;
    for (size_t j = 0; j < n; j++) {
        double d = fabs((double)pd[j] - pr[j]);
        if (d > maxd) {
            maxd = d;
            arg = j;
        }
    }
    if (maxd >= 2e-5 && getenv("ZGPT_TEST_DEBUG"))
        fprintf(stderr, "rank %d: max diff at %zu: %.9g vs %.9g; losses %.9g %.9g\n", g_comm->rank, arg, pd[arg],
                pr[arg], ld[STEPS - 1], lr[STEPS - 1]);
    ZT_CHECK_MSG(maxd < 2e-5, "W=%d stage %d bucket %zu: max |weight diff| %.3g", g_comm->size, stage, bucket, maxd);
    for (int s = 0; s < STEPS; s++) ZT_NEAR(ld[s], lr[s], 1e-5, 1e-5);
    ZT_CHECK(ld[STEPS - 1] < ld[0]); /* it learns */
    free(pd);
    free(pr);
}

static void test_stages(void) {
    for (int stage = 0; stage <= 3; stage++) {
        compare(stage, 997); /* buckets much smaller than a layer, odd */
        compare(stage, 1u << 20);
    }
}

/* A deeper model (8 layers) where sharding shows: at stage 2 no rank ever holds a full gradient buffer
 * (the peak over the whole run, init included, stays below params + full grads + shard + optimizer),
 * at stage 3 the parameters held after init are below one full copy (W >= 2), training allocates
 * nothing beyond what init allocated, and both still match the one-process run. */
static void test_memory_bounds(void) {
    gpt2_config c = tiny_config();
    c.n_layer = 8;
    c.n_embd = 8;
    c.n_head = 2;
    ZT_CHECK(gpt2_config_validate(&c) == 0);
    gpt2_param_table t;
    ZT_CHECK(gpt2_param_table_init(&t, &c) == 0);
    size_t n = t.num_params;
    gpt2_param_table_free(&t);
    float *pd = zg_malloc(n * 4), *pr = zg_malloc(n * 4);
    double ld[3], lr[3];
    zg_comm *single;
    zg_comm_config cc = {.backend = "single"};
    ZT_CHECK(zg_comm_single_create(&single, &cc) == 0);
    train_ex(single, &c, 0, ACCUM * g_comm->size, 300, 1, 3, NULL, NULL, pr, lr, 0, NULL);
    zg_comm_destroy(single);
    size_t stage3_state = 0, stage3_grads = 0;
    /* stage 2, stage 3, stage 2 without overlap_comm, stage 3 with offload_param */
    for (int run = 0; run < 4; run++) {
        int stage = run == 1 || run == 3 ? 3 : 2,
            flags = (run != 2 ? RUN_OVERLAP : 0) | (run == 3 ? RUN_OFFLOAD_PARAM : 0);
        mem_seen ms;
        memset(&ms, 0, sizeof ms);
        train_ex(g_comm, &c, stage, ACCUM, 300, flags, 3, NULL, NULL, pd, ld, 1, &ms);
        if (run == 1) {
            stage3_state = ms.state;
            stage3_grads = ms.plan_grad_state;
            ZT_CHECK_MSG(ms.host_state == 0, "stage 3: %zu bytes of host memory", ms.host_state);
        }
        /* offload_param: the device holds the stage-3 states less the parameter shard (measured by the
         * backend's accounting, not the plan), the host holds the shard; nothing is allocated on the
         * device during training (the GPU optimizer steps through the gather buffers), so the device
         * never holds the full parameter set, on any rank count. The gradients aside: on one rank the
         * offload accumulates them in one full buffer (no pool, no shard) */
        if (run == 3) {
            ZT_CHECK_MSG(ms.state - ms.plan_grad_state + ms.shard_bytes == stage3_state - stage3_grads,
                         "offload_param: device holds %zu, stage 3 without it %zu, shard %zu", ms.state, stage3_state,
                         ms.shard_bytes);
            ZT_CHECK_MSG(ms.host_state == ms.shard_bytes, "offload_param: host holds %zu, shard %zu", ms.host_state,
                         ms.shard_bytes);
            ZT_CHECK_MSG(ms.plan_params < ms.full_params, "offload_param: parameters held %zu >= a full copy %zu",
                         ms.plan_params, ms.full_params);
        }
        ZT_CHECK_MSG(ms.peak_train == ms.state, "stage %d: training allocated beyond init: peak %zu, after init %zu",
                     stage, ms.peak_train, ms.state);
        ZT_CHECK(ms.state == ms.plan_state);
        if (ms.direct) /* one full buffer, less than stage 3's shard + pool */
            ZT_CHECK_MSG(ms.plan_grad_state == ms.full_grads && ms.plan_grad_state < stage3_grads,
                         "offload, 1 rank: gradients %zu, a full buffer %zu, stage 3 %zu", ms.plan_grad_state,
                         ms.full_grads, stage3_grads);
        else
            ZT_CHECK_MSG(ms.plan_grads < ms.full_grads, "stage %d: gradient buffers %zu >= a full buffer %zu", stage,
                         ms.plan_grads, ms.full_grads);
        if (stage == 2)
            ZT_CHECK_MSG(ms.peak_run < ms.full_params + ms.full_grads + ms.shard_opt,
                         "stage 2: peak %zu >= params + full grads + shard + optimizer %zu", ms.peak_run,
                         ms.full_params + ms.full_grads + ms.shard_opt);
        if (stage == 3 && g_comm->size >= 2)
            ZT_CHECK_MSG(ms.plan_params < ms.full_params, "stage 3: parameters held %zu >= a full copy %zu",
                         ms.plan_params, ms.full_params);
        double maxd = 0;
        for (size_t j = 0; j < n; j++) maxd = fmax(maxd, fabs((double)pd[j] - pr[j]));
        ZT_CHECK_MSG(maxd < 2e-5, "deep model, stage %d: max |weight diff| %.3g", stage, maxd);
        for (int s = 0; s < 3; s++) ZT_NEAR(ld[s], lr[s], 1e-5, 1e-5);
    }
    free(pd);
    free(pr);
}

/* ZeRO-Offload on one rank accumulates the gradients as stage 0 does (zg_zero_grads_direct): at stages
 * 1-3, with gradient accumulation, a dropped step (the fp16 overflow sequence) and clipping on every
 * other step, with the accumulation count told or not (gradients sent during the last backward, or all
 * after it), the losses and weights are BITWISE those of stage 0 without offload (the CPU backend's
 * AdamW and the host AdamW are one function; the host updates the slots in download order, which an
 * elementwise update does not see). v0.12's path (the layer pool + shard every micro-step) differs in
 * fp32 summation order only. Over a communicator of one, whatever the world size of the test. */
static void test_offload_one_rank(void) {
    size_t n = num_params();
    enum { STEPS_O = 4, ACC = 3 };
    float *ref = zg_malloc(n * 4), *p = zg_malloc(n * 4);
    double lref[STEPS_O], l[STEPS_O];
    zg_comm *single;
    zg_comm_config cc = {.backend = "single"};
    ZT_CHECK(zg_comm_single_create(&single, &cc) == 0);
    train_ex(single, NULL, 0, ACC, 997, RUN_OVERLAP | RUN_SKIP_CLIP, STEPS_O, NULL, NULL, ref, lref, 0, NULL);
    const struct {
        int stage, flags;
    } cases[] = {{1, 0}, {2, 0}, {3, 0}, {2, RUN_ACCUM_UNKNOWN}, {3, RUN_OFFLOAD_PARAM}, {2, RUN_V12}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int st = cases[c].stage, fl = cases[c].flags;
        train_ex(single, NULL, st, ACC, 997, RUN_OVERLAP | RUN_SKIP_CLIP | RUN_OFFLOAD | fl, STEPS_O, NULL, NULL, p, l,
                 1, NULL);
        if (fl & RUN_V12) { /* another fp32 summation order */
            double maxd = 0;
            for (size_t j = 0; j < n; j++) maxd = fmax(maxd, fabs((double)p[j] - ref[j]));
            ZT_CHECK_MSG(maxd < 2e-5, "offload v12, stage %d: max |weight diff| %.3g", st, maxd);
            for (int s = 0; s < STEPS_O; s++) ZT_NEAR(l[s], lref[s], 1e-5, 1e-5);
            continue;
        }
        ZT_CHECK_MSG(memcmp(p, ref, n * 4) == 0, "offload, 1 rank, stage %d (flags %d): weights differ from stage 0",
                     st, fl);
        ZT_CHECK_MSG(memcmp(l, lref, sizeof l) == 0, "offload, 1 rank, stage %d (flags %d): losses differ", st, fl);
    }
    zg_comm_destroy(single);
    free(ref);
    free(p);
}

/* grad_accum_local_layers (zero.h, zg_zero_grad_schedule_of): 4 micro-steps per step, stages 2 and 3,
 * overlap_comm on (small buckets) and off (one bucket larger than the model), ZeRO-Offload at stage 2 and
 * offload_param at stage 3, a dropped step and clipping
 * (RUN_SKIP_CLIP, the trainer's fp16-overflow sequence): -1 (the embeddings + ln_f held back to the last
 * micro-step), 1 and n_layer (layers too) against 0 (every micro-step reduces everything). The sums are
 * the same but not in the same order (held back: each rank adds its micro-steps, then the ranks are
 * added; 0: the ranks per micro-step, then the micro-steps), so they agree within fp32 round-off (the
 * tolerances of the other multi-rank comparisons here), not bitwise; on one rank nothing is held back and
 * the runs are bitwise equal. Every run also checks what each micro-step reduces (train_ex) and that what
 * every rank allocates, the persistent layer buffers included, is the plan's (check_memory). */
static void test_local_layers(void) {
    size_t n = num_params();
    enum { STEPS_L = 4, ACC = 4 };
    const int L = tiny_config().n_layer;
    float *ref = zg_malloc(n * 4), *p = zg_malloc(n * 4);
    double lref[STEPS_L], l[STEPS_L];
    /* runs 4, 5: ZeRO-Offload (the host AdamW, stage 2) and offload_param (stage 3) */
    for (int run = 0; run < 6; run++) {
        int stage = run == 4 || run < 2 ? 2 : 3, ov = run % 2 == 0 || run >= 4;
        size_t bucket = ov ? 997 : 1u << 20;
        int base = (ov ? RUN_OVERLAP : 0) | RUN_SKIP_CLIP | (run == 4 ? RUN_OFFLOAD : run == 5 ? RUN_OFFLOAD_PARAM : 0);
        mem_seen m0, ms;
        memset(&m0, 0, sizeof m0);
        train_ex(g_comm, NULL, stage, ACC, bucket, base | RUN_LOCAL(0), STEPS_L, NULL, NULL, ref, lref, 1, &m0);
        const int vals[] = {-1, 1, L};
        for (int i = 0; i < 3; i++) {
            int v = vals[i];
            memset(&ms, 0, sizeof ms);
            train_ex(g_comm, NULL, stage, ACC, bucket, base | RUN_LOCAL(v), STEPS_L, NULL, NULL, p, l, 1, &ms);
            if (g_comm->size == 1) {
                ZT_CHECK_MSG(memcmp(p, ref, n * 4) == 0 && memcmp(l, lref, sizeof l) == 0,
                             "1 rank, stage %d, local layers %d: differs from 0", stage, v);
                continue;
            }
            double maxd = 0;
            for (size_t j = 0; j < n; j++) maxd = fmax(maxd, fabs((double)p[j] - ref[j]));
            ZT_CHECK_MSG(maxd < 2e-5, "W=%d stage %d overlap %d local layers %d: max |weight diff| %.3g vs 0",
                         g_comm->size, stage, ov, v, maxd);
            for (int s = 0; s < STEPS_L; s++) ZT_NEAR(l[s], lref[s], 1e-5, 1e-5);
            /* the layer buffers are there (beyond the pool's), held from init on, nothing allocated later */
            if (v > 0) ZT_CHECK_MSG(ms.plan_grads > m0.plan_grads - m0.plan_grads / 2, "grads %zu", ms.plan_grads);
            ZT_CHECK(ms.peak_train == ms.state);
        }
        ZT_CHECK(lref[STEPS_L - 1] < lref[0]); /* it learns */
    }
    /* a NaN in a held-back part (the embeddings) on one rank survives to the last micro-step's reduction:
     * the step overflows and is skipped on every rank (as with 0, where it is reduced at once), and the
     * next step starts from zeroed buffers (finite again) */
    for (int stage = 2; stage <= 3; stage++) {
        int base = RUN_OVERLAP | RUN_NAN_EMB;
        train_ex(g_comm, NULL, stage, ACC, 997, base | RUN_LOCAL(0), STEPS_L, NULL, NULL, ref, lref, 0, NULL);
        train_ex(g_comm, NULL, stage, ACC, 997, base | RUN_LOCAL(L), STEPS_L, NULL, NULL, p, l, 0, NULL);
        double maxd = 0;
        for (size_t j = 0; j < n; j++) maxd = fmax(maxd, fabs((double)p[j] - ref[j]));
        ZT_CHECK_MSG(maxd < 2e-5, "NaN skip, stage %d: max |weight diff| %.3g", stage, maxd);
    }
    free(ref);
    free(p);
}

/* A micro-step's last reductions carried into the next one (ZGPT_REDUCE_CARRY, on by default) change when the
 * engine waits, never what it adds or in which order: stages 2 and 3, with and without held-back parts, every
 * weight and loss bitwise the same as each micro-step waiting (0), and something was carried on several ranks.
 * A malformed value is refused when the engine is made. */
static void test_reduce_carry(void) {
    size_t n = num_params();
    enum { STEPS_C = 3, ACC = 4 };
    float *ref = zg_malloc(n * 4), *p = zg_malloc(n * 4);
    double lref[STEPS_C], l[STEPS_C];
    const int locals[] = {0, -1, 1};
    for (int stage = 2; stage <= 3; stage++) {
        for (int i = 0; i < 3; i++) {
            int flags = RUN_OVERLAP | RUN_SKIP_CLIP | RUN_LOCAL(locals[i]);
            mem_seen off, on;
            memset(&off, 0, sizeof off);
            memset(&on, 0, sizeof on);
            setenv("ZGPT_REDUCE_CARRY", "0", 1);
            train_ex(g_comm, NULL, stage, ACC, 997, flags, STEPS_C, NULL, NULL, ref, lref, 0, &off);
            unsetenv("ZGPT_REDUCE_CARRY");
            train_ex(g_comm, NULL, stage, ACC, 997, flags, STEPS_C, NULL, NULL, p, l, 0, &on);
            ZT_CHECK_MSG(memcmp(p, ref, n * 4) == 0 && memcmp(l, lref, sizeof l) == 0,
                         "W=%d stage %d local layers %d: carried reductions changed the result", g_comm->size, stage,
                         locals[i]);
            ZT_CHECK(off.carried == 0);
            ZT_CHECK_MSG(g_comm->size == 1 ? on.carried == 0 : on.carried > 0, "W=%d stage %d: %ld buckets carried",
                         g_comm->size, stage, on.carried);
        }
    }
    /* refused in one line naming the variable */
    gpt2_config cfg = tiny_config();
    gpt2_model m;
    memset(&m, 0, sizeof m);
    ZT_CHECK(gpt2_init(&m, &cfg, g_be) == 0);
    zg_zero_opts zo;
    zg_zero_opts_default(&zo);
    zo.stage = 2;
    zg_optimizer_config oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-5f, .weight_decay = 0.1f};
    zg_zero z;
    setenv("ZGPT_REDUCE_CARRY", "yes", 1);
    ZT_CHECK(zg_zero_init_model(&z, &zo, g_comm, g_be, &m, &oc) != 0);
    ZT_CHECK(strstr(zg_error_message(), "ZGPT_REDUCE_CARRY=yes") != NULL);
    unsetenv("ZGPT_REDUCE_CARRY");
    gpt2_free(&m);
    free(ref);
    free(p);
}

/* What grad_accum_local_layers does where: held back only with several ranks, stage >= 2 and accumulation
 * > 1 (ZeRO-Offload included); elsewhere the schedule says why it has nothing to do (the trainer prints it
 * when the key was given: never a silent no-op); bad values are refused naming the key. */
static void test_local_schedule(void) {
    gpt2_config cfg = tiny_config();
    gpt2_param_table t;
    ZT_CHECK(gpt2_param_table_init(&t, &cfg) == 0);
    size_t n = t.num_params, res = t.layer_begin[0] + n - t.layer_begin[cfg.n_layer];
    size_t layer = t.layer_begin[1] - t.layer_begin[0];
    zg_zero_opts o;
    zg_zero_opts_default(&o);
    o.stage = 2;
    o.grad_accum = 4;
    zg_zero_grad_schedule s;
    zg_zero_grad_schedule_of(&t, &o, 2, &s); /* auto */
    ZT_CHECK(s.embeddings && s.layers == 0 && s.local_elems == res && !s.idle);
    ZT_CHECK(s.reduced_micro == n - res && s.reduced_last == n && s.reduced_step == 3 * (n - res) + n);
    o.grad_accum_local_layers = 2;
    zg_zero_grad_schedule_of(&t, &o, 4, &s);
    ZT_CHECK(s.layers == 2 && s.layer_elems == 2 * layer && s.reduced_micro == n - res - 2 * layer);
    int pool2 = zg_zero_grad_pool_count(&t, &o, 4);
    o.grad_accum_local_layers = 0;
    zg_zero_grad_schedule_of(&t, &o, 2, &s);
    ZT_CHECK(!s.embeddings && s.reduced_micro == n && s.reduced_step == 4 * n && !s.idle);
    o.grad_accum_local_layers = cfg.n_layer; /* every layer local: the pool has none left to hold */
    ZT_CHECK(zg_zero_grad_pool_count(&t, &o, 2) == 0 && pool2 <= cfg.n_layer - 2);
    /* nothing to do: says why when set, silent at the default */
    const struct {
        int stage, world, accum, offload;
    } idle[] = {{1, 2, 4, 0}, {2, 1, 4, 1}, {3, 1, 4, 2}, {2, 2, 1, 0}};
    for (size_t i = 0; i < sizeof idle / sizeof idle[0]; i++) {
        o.stage = idle[i].stage;
        o.grad_accum = idle[i].accum;
        o.offload_optimizer = idle[i].offload == 1;
        o.offload_param = idle[i].offload == 2;
        o.grad_accum_local_layers = 1;
        zg_zero_grad_schedule_of(&t, &o, idle[i].world, &s);
        ZT_CHECK_MSG(s.idle && !s.embeddings && s.layers == 0 && s.layer_elems == 0, "case %zu", i);
        o.grad_accum_local_layers = -1; /* auto too: the trainer says why when the key was given */
        zg_zero_grad_schedule_of(&t, &o, idle[i].world, &s);
        ZT_CHECK(s.idle && !s.embeddings);
    }
    o.offload_optimizer = 1; /* ZeRO-Offload on several ranks: held back as without */
    o.stage = 2;
    o.grad_accum = 4;
    o.grad_accum_local_layers = 2;
    zg_zero_grad_schedule_of(&t, &o, 2, &s);
    ZT_CHECK(s.embeddings && s.layers == 2 && !s.idle);
    const int bad[] = {-2, cfg.n_layer + 1};
    for (int i = 0; i < 2; i++) {
        o.grad_accum_local_layers = bad[i];
        ZT_CHECK(zg_zero_local_check(&o, cfg.n_layer) != 0 && strstr(zg_error_message(), "grad_accum_local_layers"));
        zg_error_clear();
    }
    gpt2_param_table_free(&t);
}

int main(void) {
    if (zt_dist_begin("test_zero_gpt2", &g_comm, &g_be) != 0) return 1;
    zt_run("stages", test_stages);
    zt_run("universal_resume", test_universal_resume);
    zt_run("memory_bounds", test_memory_bounds);
    zt_run("offload_one_rank", test_offload_one_rank);
    zt_run("local_schedule", test_local_schedule);
    zt_run("local_layers", test_local_layers);
    zt_run("reduce_carry", test_reduce_carry);
    return zt_dist_finish(g_comm, g_be);
}
