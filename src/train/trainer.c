#include "train/trainer.h"

#include "backend/backend.h"
#include "core/error.h"
#include "core/strutil.h"
#include "core/fileio.h"
#include "dist/comm.h"
#include "dist/launch.h"
#include "model/gpt2.h"
#include "text/dataloader.h"
#include "text/tokenizer.h"
#include "train/checkpoint.h"
#include "train/loss_scaler.h"
#include "train/model_source.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/zero.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Set by the SIGINT/SIGTERM handler, read at iteration boundaries. A signal handler can only
 * communicate through a static flag, so this is the one piece of file-level state. */
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

typedef struct {
    zg_train_config *cfg;
    const zg_train_options *opts;
    zg_backend *be;
    gpt2_model model;
    int model_ready;
    zg_optimizer own_opt;     /* single process: AdamW over the whole buffer */
    zg_optimizer *opt;        /* &own_opt, or the ZeRO engine's range */
    /* data parallel (world > 1): the communicator and the ZeRO engine */
    zg_comm *comm;
    zg_zero zero;
    int zero_on;
    int rank, world, local_rank;
    int one_machine; /* every rank on this machine (the launcher's local size is the world size) */
    zg_launch_source launched_by;
    zg_loss_scaler scaler;
    zg_dataloader *train_dl, *train_eval_dl, *val_dl;
    int32_t *inputs, *targets;
    float *host_params;
    FILE *metrics;
    int B, T;
    /* trainer state (saved in checkpoints) */
    int64_t iter;             /* next iteration to run */
    double best_val;          /* INFINITY until the first evaluation */
    int64_t best_iter;
    int64_t evals_without_improvement;
    int64_t last_eval_iter;   /* -1: none yet */
    int64_t last_saved_iter;  /* -1: none in this run */
    uint64_t tokens_seen;
    char last_good[512];      /* last checkpoint written ("" none) */
} trainer;

/* ---- setup ----------------------------------------------------------------------------------- */

static int make_backend(trainer *tr, zg_precision *prec_out) {
    const char *dev = tr->opts->device ? tr->opts->device : tr->cfg->device;
    if (strcmp(dev, "auto") == 0) dev = zg_backend_cuda_available() ? "cuda" : "cpu";
    zg_precision prec = zg_train_config_precision(tr->cfg, dev);
    if (strcmp(dev, "cpu") == 0 && prec != ZG_PREC_FP32) {
        if (tr->rank == 0)
            printf("note: the CPU backend trains in fp32; the %s setting applies on CUDA only\n",
                   zg_precision_name(prec));
        prec = ZG_PREC_FP32;
    }
    zg_backend_config bc = {dev, -1, prec == ZG_PREC_BF16 ? ZG_BF16 : prec == ZG_PREC_FP16 ? ZG_F16 : ZG_F32};
    /* Several ranks on one machine share its GPUs by local rank, unless zgpt's launcher already gave
     * each worker exactly one device (CUDA_VISIBLE_DEVICES narrowed). */
    if (tr->world > 1 && strcmp(dev, "cuda") == 0 && tr->launched_by != ZG_LAUNCH_SRC_ZGPT_GPU)
        bc.device_index = tr->local_rank;
    if (zg_backend_create(&tr->be, &bc) != 0) return -1;
    *prec_out = prec;
    return 0;
}

/* Config keys that fix the model shape must agree with a model that comes with weights. */
static int check_shape(const zg_train_config *c, const gpt2_config *m, const char *what) {
    struct {
        const char *key;
        int want, have;
    } k[] = {{"n_layer", c->n_layer, m->n_layer},
             {"n_head", c->n_head, m->n_head},
             {"n_embd", c->n_embd, m->n_embd},
             {"block_size", c->block_size, m->block_size},
             {"vocab_size", c->vocab_size, m->vocab_size}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (k[i].want && k[i].want != k[i].have)
            return zg_errorf("%s has %s=%d but the config says %s=%d; remove %s from the config or use a matching "
                             "model",
                             what, k[i].key, k[i].have, k[i].key, k[i].want, k[i].key);
    return 0;
}

static int resume_requested(const trainer *tr) {
    return tr->opts->resume || strcmp(tr->cfg->init_from, "resume") == 0;
}

/* Model shape and initial weights (host fp32 in tr->host_params), and the checkpoint to resume. */
static int setup_model(trainer *tr, zg_ckpt *resume_ck, int *resuming) {
    zg_train_config *c = tr->cfg;
    gpt2_config mc;
    memset(&mc, 0, sizeof mc);
    zg_model_source src;
    memset(&src, 0, sizeof src);
    int have_src = 0;
    *resuming = 0;
    if (resume_requested(tr)) {
        char *latest = zg_path_join(c->out_dir, "latest");
        int exists = zg_file_exists(latest);
        free(latest);
        if (!exists) {
            return zg_errorf("nothing to resume in out_dir '%s' (no 'latest' checkpoint); start without --resume "
                             "(init_from scratch or a model)",
                             c->out_dir);
        }
        if (zg_ckpt_open(resume_ck, c->out_dir) != 0) return -1;
        *resuming = 1;
        mc = resume_ck->cfg;
        char what[600];
        snprintf(what, sizeof what, "checkpoint '%s'", resume_ck->dir);
        if (check_shape(c, &mc, what) != 0) return -1;
    } else if (strcmp(c->init_from, "scratch") == 0) {
        if (zg_train_config_model_shape(c, NULL, &mc) != 0) return -1;
    } else {
        if (zg_model_source_open(&src, c->init_from, 1) != 0) return zg_error_prefix("init_from '%s'", c->init_from);
        have_src = 1;
        mc = src.cfg;
        /* A Hugging Face model can be cropped to a shorter block_size (its first wpe rows), as nanoGPT
         * does for fine-tuning at a shorter context. */
        if (src.kind == ZG_SRC_HF && c->block_size && c->block_size < mc.block_size) mc.block_size = c->block_size;
        char what[600];
        snprintf(what, sizeof what, "init_from '%s'", c->init_from);
        if (check_shape(c, &mc, what) != 0) {
            zg_model_source_close(&src);
            return -1;
        }
    }
    if (gpt2_config_validate(&mc) != 0 || gpt2_init(&tr->model, &mc, tr->be) != 0) {
        if (have_src) zg_model_source_close(&src);
        return -1;
    }
    tr->model_ready = 1;
    tr->model.recompute = zg_train_config_recompute(c);
    tr->model.recompute_layers = c->recompute_num_layers;
    size_t np = tr->model.table.num_params;
    tr->host_params = malloc(np * sizeof(float));
    if (!tr->host_params) {
        if (have_src) zg_model_source_close(&src);
        return zg_errorf("out of host memory for %zu parameters (%.1f GiB)", np, np * 4.0 / (1 << 30));
    }
    int rc = 0;
    if (*resuming) {
        rc = zg_ckpt_read_model(resume_ck, tr->host_params);
        if (rc == 0) gpt2_params_upload(&tr->model, tr->host_params);
    } else if (have_src) {
        rc = zg_model_source_load(&src, &tr->model.cfg, tr->host_params, np);
        if (rc == 0) gpt2_params_upload(&tr->model, tr->host_params);
    } else {
        gpt2_init_random(&tr->model, c->seed);
    }
    if (have_src) zg_model_source_close(&src);
    /* Several ranks: the ZeRO engine allocates the gradients its stage needs (no full buffer at 2-3). */
    if (rc == 0 && tr->world == 1) rc = gpt2_grads_alloc(&tr->model);
    return rc;
}

static int setup_data(trainer *tr) {
    zg_train_config *c = tr->cfg;
    if (c->n_data == 0) return zg_errorf("config: no \"data\" given; set it to a folder made by 'zgpt prepare'");
    zg_dataloader_config dc;
    memset(&dc, 0, sizeof dc);
    dc.sources = c->data;
    dc.n_sources = c->n_data;
    dc.B = tr->B;
    dc.T = tr->T;
    dc.vocab_size = tr->model.cfg.vocab_size;
    dc.mode = c->sample_mode;
    dc.rank = tr->rank;
    dc.world_size = tr->world;
    dc.split = "train";
    dc.seed = c->seed;
    if (zg_dataloader_init(&tr->train_dl, &dc) != 0) return -1;
    zg_dataloader_set_grad_accum(tr->train_dl, (int)c->grad_accum);
    /* Evaluation batches: their own seeds, rewound before every evaluation (fixed samples). */
    dc.seed = c->seed ^ 0x9e3779b97f4a7c15ULL;
    dc.mode = ZG_SAMPLE_RANDOM;
    /* Evaluation batches are numbered globally (every rank reads the same stream and evaluates the
     * batches i with i % world == rank), so the estimate does not depend on the world size. */
    dc.rank = 0;
    dc.world_size = 1;
    if (zg_dataloader_init(&tr->train_eval_dl, &dc) != 0) return -1;
    dc.split = "val";
    if (zg_dataloader_init(&tr->val_dl, &dc) != 0) return -1;
    return 0;
}

/* ---- state.json ----------------------------------------------------------------------------- */

static void add_u64(cJSON *o, const char *k, uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    cJSON_AddStringToObject(o, k, b); /* as a string: JSON numbers lose precision above 2^53 */
}

static char *state_json(const trainer *tr, zg_precision prec) {
    cJSON *j = cJSON_CreateObject();
    ZG_CHECK_PTR(j);
    cJSON_AddStringToObject(j, "format", "zgpt-trainer-state");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "iter", (double)tr->iter);
    if (isfinite(tr->best_val)) cJSON_AddNumberToObject(j, "best_val_loss", tr->best_val);
    else cJSON_AddNullToObject(j, "best_val_loss");
    cJSON_AddNumberToObject(j, "best_iter", (double)tr->best_iter);
    cJSON_AddNumberToObject(j, "evals_without_improvement", (double)tr->evals_without_improvement);
    cJSON_AddNumberToObject(j, "last_eval_iter", (double)tr->last_eval_iter);
    add_u64(j, "tokens_seen", tr->tokens_seen);
    cJSON_AddNumberToObject(j, "optimizer_step", (double)tr->opt->step);
    cJSON_AddStringToObject(j, "precision", zg_precision_name(prec));
    cJSON_AddNumberToObject(j, "world_size", tr->world);
    cJSON_AddNumberToObject(j, "zero_stage", tr->zero_on ? tr->zero.o.stage : 0);
    cJSON *ls = cJSON_AddObjectToObject(j, "loss_scaler");
    cJSON_AddNumberToObject(ls, "scale", tr->scaler.scale);
    cJSON_AddNumberToObject(ls, "cur_hysteresis", tr->scaler.cur_hysteresis);
    cJSON_AddNumberToObject(ls, "cur_iter", (double)tr->scaler.cur_iter);
    cJSON_AddNumberToObject(ls, "last_overflow_iter", (double)tr->scaler.last_overflow_iter);
    cJSON_AddNumberToObject(ls, "skipped", (double)tr->scaler.skipped);
    zg_dataloader_state st;
    zg_dataloader_get_state(tr->train_dl, &st);
    cJSON *dl = cJSON_AddObjectToObject(j, "train_loader");
    add_u64(dl, "seed", st.seed);
    add_u64(dl, "step", st.step);
    add_u64(dl, "micro", st.micro);
    cJSON *cfgj = cJSON_Parse(tr->cfg->json_text);
    if (cfgj) cJSON_AddItemToObject(j, "config", cfgj);
    char *s = cJSON_Print(j);
    ZG_CHECK_PTR(s);
    cJSON_Delete(j);
    return s;
}

static int json_num(const cJSON *o, const char *k, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) return -1;
    *out = v->valuedouble;
    return 0;
}
static int json_u64(const cJSON *o, const char *k, uint64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v)) return -1;
    char *end;
    *out = strtoull(v->valuestring, &end, 10);
    return *end ? -1 : 0;
}

static int load_state(trainer *tr, const zg_ckpt *ck) {
    char *text;
    if (zg_ckpt_read_text(ck, "state.json", &text) != 0) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *ls = j ? cJSON_GetObjectItemCaseSensitive(j, "loss_scaler") : NULL;
    const cJSON *dl = j ? cJSON_GetObjectItemCaseSensitive(j, "train_loader") : NULL;
    double iter, bi, ewi, lei, scale, hyst, sci, slo, sk, ostep;
    uint64_t seed, step, micro, toks;
    const cJSON *bv = j ? cJSON_GetObjectItemCaseSensitive(j, "best_val_loss") : NULL;
    if (!j || !ls || !dl || json_num(j, "iter", &iter) || json_num(j, "best_iter", &bi) ||
        json_num(j, "evals_without_improvement", &ewi) || json_num(j, "last_eval_iter", &lei) ||
        json_num(j, "optimizer_step", &ostep) || json_u64(j, "tokens_seen", &toks) || json_num(ls, "scale", &scale) ||
        json_num(ls, "cur_hysteresis", &hyst) || json_num(ls, "cur_iter", &sci) ||
        json_num(ls, "last_overflow_iter", &slo) || json_num(ls, "skipped", &sk) || json_u64(dl, "seed", &seed) ||
        json_u64(dl, "step", &step) || json_u64(dl, "micro", &micro) || !bv) {
        cJSON_Delete(j);
        return zg_errorf("checkpoint '%s': state.json is corrupt or from another version", ck->dir);
    }
    tr->iter = (int64_t)iter;
    tr->best_val = cJSON_IsNumber(bv) ? bv->valuedouble : INFINITY;
    tr->best_iter = (int64_t)bi;
    tr->evals_without_improvement = (int64_t)ewi;
    tr->last_eval_iter = (int64_t)lei;
    tr->tokens_seen = toks;
    if (tr->cfg->scaler.enabled && tr->scaler.cfg.enabled) {
        tr->scaler.scale = scale;
        tr->scaler.cur_hysteresis = (int)hyst;
        tr->scaler.cur_iter = (int64_t)sci;
        tr->scaler.last_overflow_iter = (int64_t)slo;
        tr->scaler.skipped = (int64_t)sk;
    }
    zg_dataloader_state st = {seed, step, micro};
    if (seed != tr->cfg->seed && tr->rank == 0)
        printf("note: resuming the data order of seed %" PRIu64 " (the config now says %" PRIu64 ")\n", seed,
               tr->cfg->seed);
    zg_dataloader_set_state(tr->train_dl, &st);
    cJSON_Delete(j);
    if ((int64_t)ostep != tr->opt->step)
        return zg_errorf("checkpoint '%s': state.json and the optimizer shards disagree on the step", ck->dir);
    return 0;
}

/* ---- metrics.jsonl -------------------------------------------------------------------------- */

/* On resume, drops lines a crashed run logged after the checkpoint, so the file reads as one run. */
static int open_metrics(trainer *tr, int resuming) {
    char *path = zg_path_join(tr->cfg->out_dir, "metrics.jsonl");
    if (resuming && zg_file_exists(path)) {
        char *text;
        size_t len;
        if (zg_file_read_all(path, &text, &len) != 0) {
            free(path);
            return -1;
        }
        zg_atomic_file af;
        int rc = zg_atomic_open(&af, path);
        for (char *line = text; rc == 0 && *line;) {
            char *nl = strchr(line, '\n');
            size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);
            char save = line[n - (nl ? 1 : 0)];
            line[n - (nl ? 1 : 0)] = '\0';
            cJSON *j = cJSON_Parse(line);
            line[n - (nl ? 1 : 0)] = save;
            double it;
            int keep = 0;
            if (j && json_num(j, "iter", &it) == 0) {
                int is_eval = cJSON_GetObjectItemCaseSensitive(j, "val_loss") != NULL;
                keep = is_eval ? (int64_t)it <= tr->last_eval_iter : (int64_t)it < tr->iter;
            }
            cJSON_Delete(j);
            if (keep) rc = zg_atomic_write(&af, line, n);
            line += n;
        }
        free(text);
        if (rc == 0) rc = zg_atomic_commit(&af, NULL);
        else zg_atomic_abort(&af);
        if (rc != 0) {
            free(path);
            return -1;
        }
    }
    tr->metrics = fopen(path, resuming ? "a" : "w");
    if (!tr->metrics) {
        zg_errorf("cannot open '%s' for writing: %s", path, zg_strerrno());
        free(path);
        return -1;
    }
    free(path);
    return 0;
}

static void metrics_line(trainer *tr, const char *fmt, ...) ZG_PRINTF(2, 3);
static void metrics_line(trainer *tr, const char *fmt, ...) {
    if (!tr->metrics) return; /* ranks other than 0 */
    va_list ap;
    va_start(ap, fmt);
    vfprintf(tr->metrics, fmt, ap);
    va_end(ap);
    fputc('\n', tr->metrics);
    if (fflush(tr->metrics) != 0) fprintf(stderr, "zgpt: warning: cannot write metrics.jsonl: %s\n", zg_strerrno());
}

/* ---- evaluation and checkpoints ------------------------------------------------------------- */

static int estimate_loss(trainer *tr, zg_dataloader *dl, double *out) {
    zg_dataloader_state st;
    zg_dataloader_get_state(dl, &st);
    st.step = 0;
    st.micro = 0;
    zg_dataloader_set_state(dl, &st); /* the same evaluation batches every time */
    int64_t n = tr->cfg->eval_iters, w = tr->world;
    /* Every rank runs the same number of forward passes (ZeRO stage 3 gathers parameters inside the
     * forward, so a rank that stopped early would hang the others); batches past eval_iters count 0. */
    int64_t rounds = (n + w - 1) / w;
    double sum = 0;
    int failed = 0;
    for (int64_t k = 0; k < rounds; k++) {
        int64_t mine = k * w + tr->rank;
        for (int64_t i = k * w; i < (k + 1) * w && i < n; i++) {
            zg_dataloader_next(dl, tr->inputs, tr->targets);
            if (i == mine) break;
        }
        zg_error_clear();
        float loss = gpt2_forward(&tr->model, tr->inputs, tr->targets, tr->B, tr->T);
        if (isnan(loss) && zg_error_message()[0]) failed = 1;
        if (mine < n) sum += loss;
        /* finish this round's remaining batches so every rank's stream stays aligned */
        for (int64_t i = mine + 1; i < (k + 1) * w && i < n; i++) zg_dataloader_next(dl, tr->inputs, tr->targets);
    }
    if (tr->comm) {
        double v[2] = {sum, failed};
        zg_comm_all_reduce_host_f64(tr->comm, v, 2, ZG_COMM_SUM);
        sum = v[0];
        if (v[1] > 0 && !failed) return zg_errorf("evaluation failed on another rank");
    }
    if (failed) return -1;
    *out = sum / (double)n;
    return 0;
}

/* wall_clock_breakdown: phases of one optimizer step (summed over its micro-steps). */
enum { WC_DATA, WC_FORWARD, WC_BACKWARD, WC_REDUCE, WC_OTHER, WC_NORM, WC_OPTIMIZER, WC_N };

/* Adds the time since *last to phase `ph` and restarts the clock. The backend (and so the GPU) is
 * synchronised first, so a phase gets the device time of the work it enqueued: this perturbs the
 * overlap it measures (as DeepSpeed's breakdown does), so it is off by default. */
static void wc_mark(trainer *tr, double *wc, int ph, double *last) {
    if (!tr->cfg->wall_clock_breakdown) return;
    tr->be->ops->synchronize(tr->be);
    double now = now_ms();
    wc[ph] += now - *last;
    *last = now;
}

/* Rank 0 writes model.bin, state.json and the manifest; with ZeRO every rank writes its optimizer
 * shard into the same partial folder first. Success is agreed by all ranks. */
static int save_checkpoint(trainer *tr, zg_precision prec, int improved) {
    if (!tr->cfg->save_checkpoints) return 0; /* every rank takes this same early return */
    const char *out = tr->cfg->out_dir;
    char tag[64];
    snprintf(tag, sizeof tag, "iter_%lld", (long long)tr->iter);
    int root = tr->rank == 0, rc = 0;
    zg_ckpt_writer w;
    memset(&w, 0, sizeof w);
    if (tr->zero_on) zg_zero_gather_all(&tr->zero); /* stage 3: the whole model on every rank */
    if (root) {
        gpt2_params_download(&tr->model, tr->host_params);
        rc = zg_ckpt_writer_begin(&w, out, tag);
    }
    if (tr->comm && zg_comm_any(tr->comm, rc != 0)) {
        if (rc == 0) rc = zg_errorf("rank 0 could not start checkpoint %s/%s", out, tag);
        if (root) zg_ckpt_writer_abort(&w);
    } else if (tr->zero_on) {
        rc = zg_zero_ckpt_write_shards(&tr->zero, &w, out, tag); /* agreed; rank 0's folder removed on failure */
    } else {
        rc = zg_ckpt_write_optimizer(&w, tr->opt, tr->model.table.num_params);
        if (rc != 0) zg_ckpt_writer_abort(&w);
    }
    if (tr->zero_on) zg_zero_release_all(&tr->zero);
    if (rc == 0 && root) {
        char *state = state_json(tr, prec);
        rc = zg_ckpt_write_model(&w, &tr->model.cfg, tr->host_params, tr->model.table.num_params);
        if (rc == 0) rc = zg_ckpt_write_text(&w, "state.json", state);
        free(state);
        if (rc == 0) rc = zg_ckpt_writer_commit(&w, 1);
        else zg_ckpt_writer_abort(&w);
        if (rc == 0 && improved) rc = zg_ckpt_link(out, tag, "best");
        if (rc == 0) rc = zg_ckpt_retain(out, tr->cfg->keep_last_k);
    }
    if (tr->comm && zg_comm_any(tr->comm, rc != 0) && rc == 0)
        rc = zg_errorf("saving checkpoint %s/%s failed on rank 0", out, tag);
    if (rc != 0) {
        if (tr->last_good[0])
            return zg_error_prefix("saving checkpoint %s/%s failed (the last good checkpoint %s is intact)", out, tag,
                                   tr->last_good);
        return zg_error_prefix("saving checkpoint %s/%s failed", out, tag);
    }
    snprintf(tr->last_good, sizeof tr->last_good, "%s/%s", out, tag);
    tr->last_saved_iter = tr->iter;
    if (root && !tr->opts->quiet) printf("saved checkpoint %s/%s%s\n", out, tag, improved ? " (best so far)" : "");
    return 0;
}

/* ---- the loop ------------------------------------------------------------------------------- */

static int diverged(trainer *tr, const char *what, double value) {
    char where[600];
    if (tr->last_good[0])
        snprintf(where, sizeof where, "the last good checkpoint %s is untouched", tr->last_good);
    else
        snprintf(where, sizeof where, "no checkpoint was written");
    return zg_errorf("%s is %g at iter %lld: training diverged; lower the learning rate (peak %g), set "
                     "gradient_clipping, or train in bf16/fp32 instead of fp16; %s",
                     what, value, (long long)tr->iter, tr->cfg->lr, where);
}

static int run_loop(trainer *tr, zg_precision prec) {
    zg_train_config *c = tr->cfg;
    zg_backend *be = tr->be;
    size_t np = tr->model.table.num_params;
    int64_t nan_at = -1;
    const char *hook = getenv("ZGPT_TEST_NAN_AT_ITER");
    if (hook && *hook) nan_at = strtoll(hook, NULL, 10);
    double tokens_per_step = (double)tr->B * tr->T * (double)c->grad_accum * tr->world;
    int64_t start_iter = tr->iter;

    for (;;) {
        int at_end = tr->iter >= c->max_iters;
        /* evaluation (skipped when the resumed checkpoint already evaluated this iteration) */
        if ((tr->iter % c->eval_interval == 0 || at_end) && tr->iter != tr->last_eval_iter) {
            double tl, vl;
            if (estimate_loss(tr, tr->train_eval_dl, &tl) != 0 || estimate_loss(tr, tr->val_dl, &vl) != 0) return -1;
            if (tr->rank == 0) {
                printf("step %lld: train loss %.4f, val loss %.4f\n", (long long)tr->iter, tl, vl);
                fflush(stdout);
            }
            metrics_line(tr, "{\"iter\": %lld, \"train_loss\": %.9g, \"val_loss\": %.9g}", (long long)tr->iter, tl, vl);
            tr->last_eval_iter = tr->iter;
            if (!isfinite(vl)) return diverged(tr, "the val loss", vl);
            int improved = vl < tr->best_val;
            if (improved) {
                tr->best_val = vl;
                tr->best_iter = tr->iter;
                tr->evals_without_improvement = 0;
            } else {
                tr->evals_without_improvement++;
            }
            if ((improved || c->always_save_checkpoint) && tr->iter > start_iter) {
                if (save_checkpoint(tr, prec, improved) != 0) return -1;
            }
            if (c->early_stopping_patience > 0 && tr->evals_without_improvement >= c->early_stopping_patience &&
                !at_end) {
                if (tr->rank == 0)
                    printf("early stopping: val loss has not improved for %lld evaluations (best %.4f at step %lld)\n",
                       (long long)tr->evals_without_improvement, tr->best_val, (long long)tr->best_iter);
                break;
            }
        }
        if (at_end) break;
        /* every rank stops at the same boundary, whichever got the signal */
        int stop = g_stop_signal != 0;
        if (tr->comm) stop = zg_comm_any(tr->comm, stop);
        if (stop && !g_stop_signal) g_stop_signal = SIGTERM;
        if (stop) {
            if (tr->rank == 0)
                printf("%s received: saving a checkpoint at iter %lld and stopping\n",
                   g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM", (long long)tr->iter);
            break;
        }

        /* one optimizer step */
        double t0 = now_ms();
        /* wall_clock_breakdown: ms per phase of this step, each phase synchronised at its end */
        double wc[WC_N] = {0}, wt = t0;
        double scale = zg_loss_scaler_scale(&tr->scaler);
        if (!tr->zero_on) gpt2_zero_grad(&tr->model); /* the ZeRO engine zeroes its own */
        double loss_sum = 0;
        int fwd_failed = 0;
        for (int64_t k = 0; k < c->grad_accum; k++) {
            zg_dataloader_next(tr->train_dl, tr->inputs, tr->targets);
            wc_mark(tr, wc, WC_DATA, &wt);
            zg_error_clear();
            /* gradient of the mean over the global batch, times the fp16 loss scale (the ZeRO engine
             * divides by the world size); the forward's classifier already writes it into the logits */
            float bscale = (float)(scale / (double)c->grad_accum);
            float loss = gpt2_forward_train(&tr->model, tr->inputs, tr->targets, tr->B, tr->T, bscale);
            if (isnan(loss) && zg_error_message()[0]) fwd_failed = 1;
            loss_sum += loss;
            wc_mark(tr, wc, WC_FORWARD, &wt);
            gpt2_backward(&tr->model, bscale);
            wc_mark(tr, wc, WC_BACKWARD, &wt);
            if (tr->zero_on) zg_zero_micro_end(&tr->zero);
            wc_mark(tr, wc, WC_REDUCE, &wt);
        }
        if (fwd_failed && !tr->comm) return -1;
        double loss = loss_sum / (double)c->grad_accum;
        if (tr->comm) { /* the loss of the global batch: mean over ranks */
            double v[2] = {loss, fwd_failed};
            zg_comm_all_reduce_host_f64(tr->comm, v, 2, ZG_COMM_SUM);
            if (v[1] > 0) return fwd_failed ? -1 : zg_errorf("the forward pass failed on another rank");
            loss = v[0] / (double)tr->world;
        }
        if (tr->iter == nan_at) loss = NAN;
        tr->tokens_seen += (uint64_t)tokens_per_step;
        double norm, ss;
        int overflow;
        wc_mark(tr, wc, WC_OTHER, &wt);
        if (tr->zero_on) {
            zg_zero_step_info info;
            zg_zero_grad_norm(&tr->zero, (float)(1.0 / scale), &info);
            norm = info.grad_norm;
            ss = norm * norm;
            overflow = info.overflow || !isfinite(loss);
        } else {
            ss = be->ops->sum_squares(be, tr->model.grads, be->grad_dtype, np);
            norm = sqrt(ss) / scale;
            overflow = !isfinite(ss) || !isfinite(loss);
        }
        wc_mark(tr, wc, WC_NORM, &wt);
        double lr = zg_schedule_lr(&c->sched, tr->opt->step);
        double b1, b2; /* OneCycle cycles beta1 (and sets beta2) per step, as DeepSpeed's scheduler does */
        if (zg_schedule_betas(&c->sched, tr->opt->step, &b1, &b2)) {
            tr->opt->cfg.beta1 = (float)b1;
            tr->opt->cfg.beta2 = (float)b2;
        }
        if (tr->scaler.cfg.enabled) {
            char msg[512];
            zg_scaler_result r = zg_loss_scaler_update(&tr->scaler, overflow, msg, sizeof msg);
            if (r == ZG_SCALER_STOP) return zg_errorf("%s", msg);
            if (r == ZG_SCALER_SKIP) {
                if (tr->zero_on) zg_zero_skip(&tr->zero);
                if (tr->rank == 0) printf("iter %lld: %s\n", (long long)tr->iter, msg);
                metrics_line(tr, "{\"iter\": %lld, \"loss\": null, \"skipped\": true, \"loss_scale\": %g}",
                             (long long)tr->iter, zg_loss_scaler_scale(&tr->scaler));
                tr->iter++;
                continue;
            }
        } else if (overflow) {
            return diverged(tr, !isfinite(loss) ? "the loss" : "the gradient norm", !isfinite(loss) ? loss : ss);
        }
        double clip = 1.0;
        if (c->grad_clip > 0 && norm > c->grad_clip) clip = c->grad_clip / (norm + 1e-6);
        if (tr->zero_on)
            zg_zero_apply(&tr->zero, (float)lr, (float)(clip / scale));
        else
            zg_optimizer_step(tr->opt, tr->model.params, tr->model.grads, (float)lr, (float)(clip / scale));
        be->ops->synchronize(be);
        wc_mark(tr, wc, WC_OPTIMIZER, &wt);
        double dt = now_ms() - t0;
        double tps = tokens_per_step / (dt / 1e3);
        metrics_line(tr, "{\"iter\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"tokens_per_sec\": %.1f, \"time_ms\": %.2f, "
                         "\"grad_norm\": %.6g}",
                     (long long)tr->iter, loss, lr, tps, dt, norm);
        if (tr->rank == 0 && !tr->opts->quiet && tr->iter % c->log_interval == 0) {
            printf("iter %lld: loss %.4f, time %.0f ms, lr %.3e, tok/s %.0f, norm %.3f%s\n", (long long)tr->iter, loss,
                   dt, lr, tps, norm, clip < 1.0 ? " (clipped)" : "");
            if (c->wall_clock_breakdown)
                printf("iter %lld: time (ms, each phase synchronised) | data %.1f | forward %.1f | backward %.1f | "
                       "reduce %.1f | other %.1f | norm %.1f | optimizer %.1f\n",
                       (long long)tr->iter, wc[WC_DATA], wc[WC_FORWARD], wc[WC_BACKWARD], wc[WC_REDUCE], wc[WC_OTHER],
                       wc[WC_NORM], wc[WC_OPTIMIZER]);
            fflush(stdout);
        }
        tr->iter++;
    }
    /* the end (finished, early-stopped or interrupted): a checkpoint of the current state */
    if (tr->last_saved_iter != tr->iter && tr->iter > start_iter) {
        if (save_checkpoint(tr, prec, 0) != 0) return -1;
    }
    if (tr->last_saved_iter == tr->iter) {
        char tag[64];
        snprintf(tag, sizeof tag, "iter_%lld", (long long)tr->iter);
        int rc = 0;
        if (!g_stop_signal && tr->rank == 0) rc = zg_ckpt_link(c->out_dir, tag, "final");
        if (tr->comm && zg_comm_any(tr->comm, rc != 0) && rc == 0) rc = zg_errorf("rank 0 could not link 'final'");
        if (rc != 0) return -1;
    }
    /* Peak backend memory (device memory on CUDA), the largest over ranks: what must fit per GPU. */
    double peak = (double)be->bytes_peak;
    if (tr->comm) zg_comm_all_reduce_host_f64(tr->comm, &peak, 1, ZG_COMM_MAX);
    if (tr->rank == 0) {
        char pb[32];
        printf("peak %s memory per rank: %s\n", be->ops->name, zg_fmt_bytes(peak, pb, sizeof pb));
    }
    if (tr->rank == 0 && g_stop_signal)
        printf("stopped by signal; continue with the same command and --resume\n");
    else if (tr->rank == 0 && isfinite(tr->best_val))
        printf("done: %lld iterations, best val loss %.4f at step %lld; %s %s\n", (long long)tr->iter, tr->best_val,
               (long long)tr->best_iter, c->save_checkpoints ? "checkpoints in" : "no checkpoints written (save_checkpoints false), metrics in",
               c->out_dir);
    return 0;
}

/* World size > 1: the communicator (created after the backend, which NCCL needs) and the engine. */
static int setup_parallel(trainer *tr) {
    zg_comm_config cc;
    memset(&cc, 0, sizeof cc);
    cc.backend = "auto";
    cc.be = tr->be;
    cc.max_ctas = zg_train_config_comm_max_ctas(tr->cfg, tr->one_machine);
    if (zg_comm_create(&tr->comm, &cc) != 0) return -1;
    if (tr->comm->size != tr->world)
        return zg_errorf("the communicator has %d ranks but the launcher said %d", tr->comm->size, tr->world);
    return 0;
}

static int setup_optimizer(trainer *tr) {
    zg_train_config *cfg = tr->cfg;
    zg_optimizer_config oc;
    zg_train_config_optimizer(cfg, &oc);
    if (tr->comm && cfg->optim == ZG_OPTIMIZER_LAMB)
        return zg_errorf("optimizer Lamb on %d processes is not supported yet (its trust ratio needs each tensor's "
                         "norm across the ZeRO shards); train Lamb on one process, or use AdamW", tr->world);
    if (tr->comm) {
        zg_zero_opts zo;
        zg_zero_opts_from_config(&cfg->zero, &zo);
        zg_zero_opts_fit_model(&zo, &tr->model.table);
        /* the engine places the model's gradients (and, at stage 3, its parameters) and installs the hooks */
        if (zg_zero_init_model(&tr->zero, &zo, tr->comm, tr->be, &tr->model, &oc) != 0) return -1;
        tr->zero_on = 1;
        tr->opt = zg_zero_optimizer(&tr->zero);
        return 0;
    }
    tr->opt = &tr->own_opt;
    return zg_optimizer_init(&tr->own_opt, tr->be, &tr->model.table, 0, tr->model.table.num_params, &oc,
                             tr->be->param_dtype, tr->model.params);
}

int zg_train_run(zg_train_config *cfg, const zg_train_options *opts) {
    trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.cfg = cfg;
    tr.opts = opts;
    tr.best_val = INFINITY;
    tr.best_iter = -1;
    tr.last_eval_iter = -1;
    tr.last_saved_iter = -1;
    zg_ckpt ck;
    memset(&ck, 0, sizeof ck);
    int resuming = 0, rc = 0;
    zg_precision prec = ZG_PREC_FP32;

    zg_launch_env env;
    zg_launch_env_detect(&env);
    tr.rank = env.size > 1 ? env.rank : 0;
    tr.world = env.size > 1 ? env.size : 1;
    tr.local_rank = env.local_rank;
    tr.one_machine = env.local_size == env.size;
    tr.launched_by = env.source;
    if (zg_train_config_resolve_batch(cfg, tr.world) != 0) return -1;

    if (!resume_requested(&tr)) {
        char *latest = zg_path_join(cfg->out_dir, "latest");
        int exists = zg_file_exists(latest);
        free(latest);
        if (exists) {
            return zg_errorf("out_dir '%s' already holds a run (it has a 'latest' checkpoint); continue it with "
                             "--resume, or choose another out_dir",
                             cfg->out_dir);
        }
    }
    if (zg_dir_make(cfg->out_dir) != 0) return -1;
    rc = make_backend(&tr, &prec);
    if (rc == 0 && tr.world > 1) rc = setup_parallel(&tr);
    if (rc == 0) rc = setup_model(&tr, &ck, &resuming);
    if (rc == 0) {
        tr.B = (int)cfg->micro_batch;
        tr.T = tr.model.cfg.block_size;
        tr.inputs = zg_malloc((size_t)tr.B * tr.T * sizeof(int32_t));
        tr.targets = zg_malloc((size_t)tr.B * tr.T * sizeof(int32_t));
        rc = setup_data(&tr);
    }
    if (rc == 0) rc = setup_optimizer(&tr);
    if (rc == 0) {
        zg_loss_scaler_config lsc = cfg->scaler;
        lsc.enabled = prec == ZG_PREC_FP16;
        zg_loss_scaler_init(&tr.scaler, &lsc);
    }
    if (rc == 0 && resuming) {
        /* Each rank reads its own range from whichever shards cover it (any saved world size). */
        rc = zg_ckpt_read_optimizer(&ck, tr.opt);
        if (rc == 0 && tr.zero_on)
            zg_zero_after_load(&tr.zero);
        else if (rc == 0)
            zg_optimizer_params_from_master(tr.opt, tr.model.params);
        if (rc == 0) rc = load_state(&tr, &ck);
        if (rc == 0) snprintf(tr.last_good, sizeof tr.last_good, "%s", ck.dir);
    }
    zg_ckpt_close(&ck);
    if (rc == 0 && tr.rank == 0) rc = open_metrics(&tr, resuming);
    if (tr.rank != 0) { /* only rank 0 writes model.bin; the other ranks needed the host copy to load */
        free(tr.host_params);
        tr.host_params = NULL;
    }
    if (tr.comm && zg_comm_any(tr.comm, rc != 0) && rc == 0) rc = zg_errorf("setup failed on another rank");
    if (rc == 0) {
        if (tr.rank == 0) {
            printf("model: n_layer %d, n_head %d, n_embd %d, block_size %d, %.2fM parameters (%s)\n",
                   tr.model.cfg.n_layer, tr.model.cfg.n_head, tr.model.cfg.n_embd, tr.model.cfg.block_size,
                   (double)gpt2_param_count_unpadded(&tr.model.cfg) / 1e6, resuming ? "resumed" : cfg->init_from);
            printf("training: %s backend, %s, micro-batch %lld x accumulation %lld", tr.be->ops->name,
                   zg_precision_name(prec), (long long)cfg->micro_batch, (long long)cfg->grad_accum);
            if (tr.world > 1) printf(" x %d ranks (ZeRO stage %d)", tr.world, tr.zero.o.stage);
            printf(" = %lld sequences of %d tokens per step, lr %s %g, %lld iterations",
                   (long long)cfg->train_batch_size, tr.T, zg_schedule_type_name(cfg->sched.type), cfg->lr,
                   (long long)cfg->max_iters);
            if (tr.comm) printf("; communicator %s", tr.comm->ops->name);
            printf("\n");
            zg_train_config_print_notes(cfg, stdout);
            if (resuming) printf("resuming at iter %lld from %s\n", (long long)tr.iter, tr.last_good);
            fflush(stdout);
        }
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        struct sigaction old_int, old_term;
        g_stop_signal = 0;
        ZG_CHECK_SYS(sigaction(SIGINT, &sa, &old_int));
        ZG_CHECK_SYS(sigaction(SIGTERM, &sa, &old_term));
        rc = run_loop(&tr, prec);
        ZG_CHECK_SYS(sigaction(SIGINT, &old_int, NULL));
        ZG_CHECK_SYS(sigaction(SIGTERM, &old_term, NULL));
    }

    if (tr.metrics) fclose(tr.metrics);
    if (tr.zero_on) zg_zero_free(&tr.zero);
    zg_optimizer_free(&tr.own_opt);
    zg_dataloader_free(tr.train_dl);
    zg_dataloader_free(tr.train_eval_dl);
    zg_dataloader_free(tr.val_dl);
    free(tr.inputs);
    free(tr.targets);
    free(tr.host_params);
    if (tr.model_ready) gpt2_free(&tr.model);
    if (tr.comm) zg_comm_destroy(tr.comm);
    if (tr.be) zg_backend_destroy(tr.be);
    return rc;
}
