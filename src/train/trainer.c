#include "train/trainer.h"

#include "backend/backend.h"
#include "core/clock.h"
#include "core/dirlock.h"
#include "core/error.h"
#include "core/strutil.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "dist/comm.h"
#include "dist/launch.h"
#include "monitor/monitor.h"
#include "model/gpt2.h"
#include "text/dataloader.h"
#include "text/tokenizer.h"
#include "train/checkpoint.h"
#include "train/ckpt_background.h"
#include "train/ckpt_io.h"
#include "train/ckpt_shards.h"
#include "train/loss_scaler.h"
#include "train/mfu.h"
#include "train/model_source.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/train_step.h"
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

typedef struct {
    zg_train_config *cfg;
    const zg_train_options *opts;
    zg_backend *be;
    gpt2_model model;
    int model_ready;
    zg_optimizer *opt; /* the ZeRO engine's optimizer (its range of the flat buffer) */
    /* the communicator (single-process at world 1: its collectives do nothing) and the ZeRO engine
     * (stage 0 at world 1), so one process takes the same step path as many */
    zg_comm *comm;
    zg_zero zero;
    int zero_ready;
    int rank, world, local_rank;
    int one_machine; /* every rank on this machine (the launcher's local size is the world size) */
    int local_ranks; /* ranks on this machine (host memory is shared between them) */
    zg_launch_source launched_by;
    zg_loss_scaler scaler;
    zg_dataloader *train_dl, *train_eval_dl, *val_dl;
    int32_t *inputs, *targets;
    float *host_params;
    FILE *metrics;
    zg_monitor monitor; /* rank 0: TensorBoard / CSV (zg_monitor_active: any on) */
    double peak_flops;  /* the device's dense peak for train/mfu (0: unknown, not logged) */
    int B, T;
    /* trainer state (saved in checkpoints) */
    int64_t iter;    /* next iteration to run */
    double best_val; /* INFINITY until the first evaluation */
    int64_t best_iter;
    int64_t evals_without_improvement;
    int64_t last_eval_iter;  /* -1: none yet */
    int64_t last_saved_iter; /* -1: none in this run */
    uint64_t tokens_seen;
    char last_good[512];    /* last checkpoint written or resumed from ("" none) */
    int64_t last_good_iter; /* the iteration last_good holds (-1 none) */
    int metrics_failed;     /* a metrics.jsonl write failed: the run ends at the next boundary */
    char metrics_error[512];
    zg_dir_lock lock; /* rank 0: out_dir's advisory lock */
    /* a background save in flight (the same on every rank): published at a later boundary */
    zg_ckpt_bg bg;
    int bg_pending;
    int64_t bg_iter;
    int bg_improved;
    int bg_sync_noted; /* "saving synchronously" was said once */
    /* a resume's Adam moments, read in the background until the first update (or save) needs them */
    zg_ckpt_moments moments;
    int moments_pending;
    zg_ckpt_retainer retainer; /* rank 0: old checkpoints deleted beside training (keep_last_k) */
    double t_start;            /* zg_now_s() when the run started: the resume's timing lines count from it */
    double t_reserve;          /* zg_now_s() when the snapshot's reservation started (bg_setup) */
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
     * each worker exactly one device (CUDA_VISIBLE_DEVICES narrowed). Modulo the GPUs this rank sees:
     * srun --gpus-per-task=1 (or --gpu-bind) shows each task only its own, as device 0. */
    if (tr->world > 1 && strcmp(dev, "cuda") == 0 && tr->launched_by != ZG_LAUNCH_SRC_ZGPT_GPU) {
        bc.device_index = tr->local_rank;
#ifdef ZGPT_WITH_CUDA
        int visible = zg_backend_cuda_device_count();
        if (visible > 0) bc.device_index = tr->local_rank % visible;
#endif
    }
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

static int resume_requested(const trainer *tr) { return tr->opts->resume || strcmp(tr->cfg->init_from, "resume") == 0; }

/* Model shape and initial weights (host fp32 in tr->host_params), and the checkpoint to resume. */
static int setup_model(trainer *tr, zg_ckpt *resume_ck, int *resuming) {
    zg_train_config *c = tr->cfg;
    gpt2_config mc;
    memset(&mc, 0, sizeof mc);
    zg_model_source src;
    memset(&src, 0, sizeof src);
    int have_src = 0, rc = -1;
    double t_open = 0;
    *resuming = 0;
    if (resume_requested(tr)) {
        char *latest = zg_path_join(c->out_dir, "latest");
        int exists = zg_file_exists(latest);
        free(latest);
        if (!exists) {
            zg_errorf("nothing to resume in out_dir '%s' (no 'latest' checkpoint); start without --resume (init_from "
                      "scratch or a model)",
                      c->out_dir);
            goto cleanup;
        }
        t_open = zg_now_s();
        /* one process: the shard is checksummed while it is read (one pass); several check every file
         * at open, so that every rank refuses a corrupt checkpoint with the same message */
        if ((tr->world == 1 ? zg_ckpt_open_deferred(resume_ck, c->out_dir) : zg_ckpt_open(resume_ck, c->out_dir)) != 0)
            goto cleanup;
        *resuming = 1;
        mc = resume_ck->cfg;
        char what[600];
        snprintf(what, sizeof what, "checkpoint '%s'", resume_ck->dir);
        if (check_shape(c, &mc, what) != 0) goto cleanup;
    } else if (strcmp(c->init_from, "scratch") == 0) {
        if (zg_train_config_model_shape(c, NULL, &mc) != 0) goto cleanup;
    } else {
        if (zg_model_source_open(&src, c->init_from, 1) != 0) {
            zg_error_prefix("init_from '%s'", c->init_from);
            goto cleanup;
        }
        have_src = 1;
        mc = src.cfg;
        /* A Hugging Face model can be cropped to a shorter block_size (its first wpe rows), as nanoGPT
         * does for fine-tuning at a shorter context. */
        if (src.kind == ZG_SRC_HF && c->block_size && c->block_size < mc.block_size) mc.block_size = c->block_size;
        char what[600];
        snprintf(what, sizeof what, "init_from '%s'", c->init_from);
        if (check_shape(c, &mc, what) != 0) goto cleanup;
    }
    if (gpt2_config_validate(&mc) != 0 || gpt2_init(&tr->model, &mc, tr->be) != 0) goto cleanup;
    tr->model_ready = 1;
    tr->model.recompute = zg_train_config_recompute(c);
    tr->model.recompute_layers = c->recompute_num_layers;
    size_t np = tr->model.table.num_params;
    tr->host_params = malloc(np * sizeof(float));
    if (!tr->host_params) {
        zg_errorf("out of host memory for %zu parameters (%.1f GiB)", np, np * 4.0 / (1 << 30));
        goto cleanup;
    }
    if (*resuming) {
        /* One rank in mixed precision: the parameters are the master's rounding, which the optimizer
         * state read next rebuilds on the device (zg_optimizer_params_from_master); reading them here
         * too would read the master twice. */
        int from_state = tr->world == 1 && resume_ck->params_from_master && tr->be->param_dtype != ZG_F32;
        double t_model = zg_now_s();
        rc = from_state ? 0 : zg_ckpt_read_model(resume_ck, tr->host_params);
        if (rc == 0 && !from_state) gpt2_params_upload(&tr->model, tr->host_params);
        if (rc == 0 && tr->rank == 0 && !tr->opts->quiet)
            printf("resume: checkpoint %s opened in %.2f s (%s); parameters %s\n", resume_ck->dir, t_model - t_open,
                   tr->world == 1 ? "manifest, headers; the optimizer shards are checksummed as they are read"
                                  : "every file checksummed",
                   from_state ? "from the optimizer's master weights" : "read");
    } else if (have_src) {
        rc = zg_model_source_load(&src, &tr->model.cfg, tr->host_params, np);
        if (rc == 0) gpt2_params_upload(&tr->model, tr->host_params);
    } else {
        gpt2_init_random(&tr->model, c->seed);
        rc = 0;
    }
    /* the ZeRO engine allocates the gradients its stage needs (no full buffer at stages 2-3) */
cleanup:
    if (have_src) zg_model_source_close(&src);
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
    if (isfinite(tr->best_val))
        cJSON_AddNumberToObject(j, "best_val_loss", tr->best_val);
    else
        cJSON_AddNullToObject(j, "best_val_loss");
    cJSON_AddNumberToObject(j, "best_iter", (double)tr->best_iter);
    cJSON_AddNumberToObject(j, "evals_without_improvement", (double)tr->evals_without_improvement);
    cJSON_AddNumberToObject(j, "last_eval_iter", (double)tr->last_eval_iter);
    add_u64(j, "tokens_seen", tr->tokens_seen);
    cJSON_AddNumberToObject(j, "optimizer_step", (double)tr->opt->step);
    cJSON_AddStringToObject(j, "precision", zg_precision_name(prec));
    cJSON_AddNumberToObject(j, "world_size", tr->world);
    cJSON_AddNumberToObject(j, "train_batch_size", (double)tr->cfg->train_batch_size);
    cJSON_AddNumberToObject(j, "micro_batch", (double)tr->cfg->micro_batch);
    cJSON_AddNumberToObject(j, "grad_accum", (double)tr->cfg->grad_accum);
    cJSON_AddNumberToObject(j, "zero_stage", tr->zero.o.stage);
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
/* A whole number in [lo, 2^53] (state.json counters: a hand-edited 1e300 must not reach a loop bound). */
static int json_count(const cJSON *o, const char *k, double lo, double *out) {
    if (json_num(o, k, out) != 0) return -1;
    return *out >= lo && *out <= 9007199254740992.0 && *out == floor(*out) ? 0 : -1;
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
    if (!j || !ls || !dl || json_count(j, "iter", 0, &iter) || json_count(j, "best_iter", -1, &bi) ||
        json_count(j, "evals_without_improvement", 0, &ewi) || json_count(j, "last_eval_iter", -1, &lei) ||
        json_count(j, "optimizer_step", 0, &ostep) || json_u64(j, "tokens_seen", &toks) ||
        json_num(ls, "scale", &scale) || !(scale > 0 && isfinite(scale)) ||
        json_count(ls, "cur_hysteresis", 0, &hyst) || hyst > 1e9 || json_count(ls, "cur_iter", 0, &sci) ||
        json_count(ls, "last_overflow_iter", -1, &slo) || json_count(ls, "skipped", 0, &sk) ||
        json_u64(dl, "seed", &seed) || json_u64(dl, "step", &step) || json_u64(dl, "micro", &micro) || !bv ||
        !(cJSON_IsNull(bv) || cJSON_IsNumber(bv))) {
        cJSON_Delete(j);
        return zg_errorf("checkpoint '%s': state.json is corrupt, out of range or from another version (use another "
                         "checkpoint)",
                         ck->dir);
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
    /* DeepSpeed asserts train_batch_size = micro x accumulation x world; a config that derives it
     * changes the global batch silently when resumed on another rank count: say so. */
    double gb, ws, mb, ga;
    const zg_train_config *c = tr->cfg;
    if (tr->rank == 0 && json_count(j, "train_batch_size", 1, &gb) == 0 && json_count(j, "world_size", 1, &ws) == 0 &&
        json_count(j, "micro_batch", 1, &mb) == 0 && json_count(j, "grad_accum", 1, &ga) == 0 &&
        (int64_t)gb != c->train_batch_size)
        printf("warning: the checkpoint was trained with a global batch of %lld sequences (micro-batch %lld x "
               "accumulation %lld x %d ranks); this run uses %lld (%lld x %lld x %d ranks), which changes the "
               "optimization; to keep it, set train_batch_size=%lld\n",
               (long long)gb, (long long)mb, (long long)ga, (int)ws, (long long)c->train_batch_size,
               (long long)c->micro_batch, (long long)c->grad_accum, tr->world, (long long)gb);
    cJSON_Delete(j);
    if ((int64_t)ostep != tr->opt->step)
        return zg_errorf("checkpoint '%s': state.json and the optimizer shards disagree on the step", ck->dir);
    return 0;
}

/* ---- metrics.jsonl -------------------------------------------------------------------------- */

/* On resume, drops lines a crashed run logged after the checkpoint, so the file reads as one run. */
static int open_metrics(trainer *tr, int resuming) {
    char *path = zg_path_join(tr->cfg->out_dir, "metrics.jsonl");
    int rc = -1;
    if (resuming && zg_file_exists(path)) {
        char *text;
        size_t len;
        if (zg_file_read_all(path, &text, &len) != 0) goto cleanup;
        zg_atomic_file af;
        int wrc = zg_atomic_open(&af, path);
        for (char *line = text; wrc == 0 && *line;) {
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
            if (keep) wrc = zg_atomic_write(&af, line, n);
            line += n;
        }
        free(text);
        if (wrc == 0)
            wrc = zg_atomic_commit(&af, NULL);
        else
            zg_atomic_abort(&af);
        if (wrc != 0) goto cleanup;
    }
    tr->metrics = fopen(path, resuming ? "a" : "w");
    if (!tr->metrics) {
        zg_errorf("cannot open '%s' for writing: %s", path, zg_strerrno());
        goto cleanup;
    }
    rc = 0;
cleanup:
    free(path);
    return rc;
}

static void metrics_line(trainer *tr, const char *fmt, ...) ZG_PRINTF(2, 3);
static void metrics_line(trainer *tr, const char *fmt, ...) {
    if (!tr->metrics) return; /* ranks other than 0 */
    va_list ap;
    va_start(ap, fmt);
    int bad = vfprintf(tr->metrics, fmt, ap) < 0;
    va_end(ap);
    bad |= fputc('\n', tr->metrics) == EOF;
    bad |= fflush(tr->metrics) != 0;
    if (bad && !tr->metrics_failed) { /* reported at the next iteration boundary (a full disk, say) */
        tr->metrics_failed = 1;
        snprintf(tr->metrics_error, sizeof tr->metrics_error, "cannot write '%s/metrics.jsonl': %s", tr->cfg->out_dir,
                 zg_strerrno());
    }
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
        float loss = 0.0f;
        if (gpt2_forward(&tr->model, tr->inputs, tr->targets, tr->B, tr->T, &loss) != 0) failed = 1;
        if (mine < n) sum += loss;
        /* finish this round's remaining batches so every rank's stream stays aligned */
        for (int64_t i = mine + 1; i < (k + 1) * w && i < n; i++) zg_dataloader_next(dl, tr->inputs, tr->targets);
    }
    double v[2] = {sum, failed};
    zg_comm_all_reduce_host_f64(tr->comm, v, 2, ZG_COMM_SUM);
    sum = v[0];
    if (v[1] > 0 && !failed) return zg_errorf("evaluation failed on another rank");
    if (failed) return -1;
    *out = sum / (double)n;
    return 0;
}

/* Points out_dir/<link> ("best", "final") at the checkpoint `tag` (rank 0). A failure here is not a
 * failed save: the checkpoint and `latest` are complete, and the link is repaired at the next start. */
static int link_checkpoint(trainer *tr, const char *tag, const char *link) {
    if (zg_ckpt_link(tr->cfg->out_dir, tag, link) == 0) return 0;
    return zg_error_prefix("checkpoint %s/%s is complete and 'latest' names it, but pointing '%s' at it failed "
                           "(the next start or --resume repairs '%s')",
                           tr->cfg->out_dir, tag, link, link);
}

static int save_failed(const trainer *tr, const char *tag) {
    const char *out = tr->cfg->out_dir;
    if (tr->last_good[0])
        return zg_error_prefix("saving checkpoint %s/%s failed (the last good checkpoint %s is intact)", out, tag,
                               tr->last_good);
    return zg_error_prefix("saving checkpoint %s/%s failed (no checkpoint of this run exists yet)", out, tag);
}

/* A failed deletion of old checkpoints (keep_last_k) is a warning: the checkpoints are complete. */
static void retention_warn(const trainer *tr) {
    fprintf(stderr,
            "zgpt: warning: removing old checkpoints (keep_last_k %lld) failed: %s; the next save tries again\n",
            (long long)tr->cfg->keep_last_k, zg_error_message());
    zg_error_clear();
}

/* The checkpoint of iteration `iter` is complete and `latest` names it: the trainer's record, `best`,
 * retention. From here on a failure is only about the links and old folders. */
static void save_published(trainer *tr, const char *tag, int64_t iter, int improved) {
    const char *out = tr->cfg->out_dir;
    int root = tr->rank == 0;
    snprintf(tr->last_good, sizeof tr->last_good, "%s/%s", out, tag);
    tr->last_good_iter = iter;
    tr->last_saved_iter = iter;
    if (root && !tr->opts->quiet) printf("saved checkpoint %s/%s%s\n", out, tag, improved ? " (best so far)" : "");
    if (root && improved && link_checkpoint(tr, tag, "best") != 0) {
        fprintf(stderr, "zgpt: warning: %s\n", zg_error_message());
        zg_error_clear();
    }
    tr->retainer.log = tr->opts->quiet ? NULL : stdout; /* a line per folder removed, from its thread */
    if (root && zg_ckpt_retainer_start(&tr->retainer, out, tr->cfg->keep_last_k) != 0) retention_warn(tr);
}

/* Publishes the background save in flight once this rank's writer is done (waiting for it): the file
 * records are agreed across ranks, then rank 0 commits. Every rank calls it at the same point. */
static int bg_finish(trainer *tr) {
    zg_ckpt_bg *b = &tr->bg;
    char tag[64];
    snprintf(tag, sizeof tag, "iter_%lld", (long long)tr->bg_iter);
    tr->bg_pending = 0;
    int rc = zg_ckpt_bg_wait(b), root = tr->rank == 0;
    if (rc == 0 && root && !tr->opts->quiet) {
        char line[160];
        zg_ckpt_bg_rate(b, line, sizeof line);
        printf("checkpoint %s: %s\n", tag, line);
    }
    rc = zg_zero_ckpt_agree(&tr->zero, &b->w, rc == 0, rc == 0 ? "" : zg_error_message());
    if (rc == 0 && root) rc = zg_ckpt_writer_commit(&b->w, 1); /* removes its folder itself on failure */
    if (zg_comm_any(tr->comm, rc != 0) && rc == 0)
        rc = zg_errorf("publishing checkpoint %s/%s failed on rank 0", tr->cfg->out_dir, tag);
    if (rc != 0) return save_failed(tr, tag);
    save_published(tr, tag, tr->bg_iter, tr->bg_improved);
    return 0;
}

/* At an iteration boundary: publishes the save in flight when every rank's writer is done. With
 * several ranks one small agreement per boundary while a save is in flight. A failed write ends the
 * run here. */
static int bg_poll(trainer *tr) {
    if (!tr->bg_pending) return 0;
    int done = zg_ckpt_bg_done(&tr->bg);
    done = !zg_comm_any(tr->comm, !done);
    return done ? bg_finish(tr) : 0;
}

/* Waits for the save in flight and publishes it (every rank, at the same point). */
static int bg_flush(trainer *tr) { return tr->bg_pending ? bg_finish(tr) : 0; }

/* Before an error ends the run: the save in flight is published when it can be; a failure there is
 * reported beside the error that ends the run. */
static void bg_flush_before_error(trainer *tr) {
    if (bg_flush(tr) == 0) return;
    fprintf(stderr, "zgpt: warning: %s\n", zg_error_message());
    zg_error_clear();
}

/* An error path that cannot agree with the other ranks: waits for this rank's writer and drops the
 * unpublished save (rank 0 removes its staging folder). */
static void bg_abandon(trainer *tr) {
    if (!tr->bg_pending) return;
    tr->bg_pending = 0;
    if (zg_ckpt_bg_wait(&tr->bg) != 0) zg_error_clear();
    if (tr->rank == 0)
        zg_ckpt_writer_abort(&tr->bg.w);
    else
        zg_ckpt_writer_release(&tr->bg.w);
}

static void snapshot_reserved(trainer *tr, int at_save);

/* A resume's Adam moments start being read on a thread once the master is in place: into the checkpoint
 * snapshot's pinned buffer (reserved from the start of the run and idle until the first save, which
 * waits for the moments first), joined here when its reservation is still in flight, so that no second
 * buffer of gigabytes is pinned, and the upload at the first update runs from pinned memory. */
static void moments_start(trainer *tr) {
    zg_ckpt_snapshot *s = &tr->bg.snap;
    if (zg_ckpt_snapshot_reserving(s)) snapshot_reserved(tr, 2);
    size_t bytes = 0;
    void *lend = s->be == tr->opt->be ? zg_ckpt_snapshot_lend(s, &bytes) : NULL;
    (void)zg_ckpt_moments_start(&tr->moments, lend, bytes);
}

/* A resume's Adam moments, every rank at the same point (the first update, or a save before it): waits
 * for the reading thread and uploads them; a failure on any rank (a shard that fails its checksum) ends
 * the run before anything uses them. */
static int moments_wait(trainer *tr) {
    if (!tr->moments_pending) return 0;
    tr->moments_pending = 0;
    double t0 = zg_now_s();
    int rc = zg_ckpt_moments_wait(&tr->moments);
    double waited = zg_now_s() - t0;
    if (zg_comm_any(tr->comm, rc != 0) && rc == 0) rc = zg_errorf("reading the checkpoint failed on another rank");
    if (rc == 0 && tr->rank == 0 && !tr->opts->quiet && !tr->moments.sync_reason) {
        const zg_ckpt_moments *mo = &tr->moments;
        double read = mo->t_done - mo->t_start, gb = mo->bytes / 1e9;
        printf("resume: parameters ready in %.2f s; optimizer state ready in %.2f s (Adam moments %.2f GB read and "
               "checksummed in the background in %.2f s at %.2f GB/s, %s reads, into %s%s; uploaded in %.2f s; the "
               "first update waited %.2f s for them)\n",
               mo->t_params - tr->t_start, mo->t_ready - tr->t_start, gb, read, read > 0 ? gb / read : 0.0,
               mo->read_mode, mo->where ? mo->where : "host memory", mo->in_place ? ", in place" : "", mo->upload_s,
               waited);
    }
    zg_ckpt_moments_free(&tr->moments);
    return rc;
}

static int moments_before_update(void *ctx) { return moments_wait(ctx); }

/* Mixed precision with the whole master in this rank's optimizer: model.bin's checksum comes from the
 * snapshot's master (the parameters are its rounding), so no download of the parameters. */
static int params_in_snapshot(const trainer *tr) {
    return tr->cfg->background_checkpoint && tr->opt->master && tr->opt->begin == 0 &&
           tr->opt->end == tr->model.table.num_params;
}

/* Before the first iteration: a bad ZGPT_CKPT_IO is refused now rather than at the first save, and the
 * snapshot's host buffer starts being reserved on a thread of its own (new and resumed runs alike), so
 * that neither the first iteration nor the first save waits while gigabytes are pinned and touched
 * (9.7 s for GPT-2 XL with cudaHostAlloc: docs/PERFORMANCE.md). snapshot_reserved reports it. */
static int bg_setup(trainer *tr) {
    if (!tr->cfg->save_checkpoints || !tr->cfg->background_checkpoint) return 0;
    zg_ckpt_io_mode mode;
    if (zg_ckpt_io_mode_from_env(&mode) != 0) return -1;
    if (!zg_zero_ckpt_writes_shard(&tr->zero)) return 0;
    if (zg_ckpt_snapshot_reserve_start(&tr->bg.snap, tr->opt) != 0) {
        zg_error_clear(); /* no thread: the first save reserves it (and says so when it cannot) */
        return 0;
    }
    tr->t_reserve = zg_now_s();
    return 0;
}

/* Joins the snapshot's reservation (at an iteration boundary once it is done, or at the first save or a
 * resume's read of the moments (at_save 2), waiting for it) and reports it once: its time on its
 * thread, and how long training waited. A reservation that failed (host memory cannot hold the
 * snapshot) is said once here; the saves are then synchronous (bg_start tries again at each save, as
 * without the thread). */
static void snapshot_reserved(trainer *tr, int at_save) {
    zg_ckpt_snapshot *s = &tr->bg.snap;
    if (!zg_ckpt_snapshot_reserving(s)) return;
    double t0 = zg_now_s(), took = 0;
    size_t bytes = s->reserve_bytes;
    int rc = zg_ckpt_snapshot_reserve_join(s, &took);
    double waited = zg_now_s() - t0;
    if (tr->rank != 0 || tr->opts->quiet) {
        zg_error_clear();
        return;
    }
    if (rc == 0) {
        printf("checkpoint snapshot: %.2f GiB of %s host memory reserved in %.2f s in the background (started %.2f s "
               "after the start; ",
               (double)bytes / (1u << 30), strcmp(tr->be->ops->name, "cuda") == 0 ? "pinned" : "plain", took,
               tr->t_reserve - tr->t_start);
        if (at_save == 2)
            printf("the resume waited %.2f s for it, to read the Adam moments into it)\n", waited);
        else if (at_save)
            printf("the first save waited %.2f s for it)\n", waited);
        else
            printf("nothing waited for it)\n");
    } else if (!tr->bg_sync_noted) {
        printf("note: %s; checkpoints are saved synchronously (training waits while they are written)\n",
               zg_error_message());
        tr->bg_sync_noted = 1;
    }
    zg_error_clear();
}

/* Background save, every rank, after rank 0 created the staging folder (agreed): each rank copies
 * what it writes into host memory (its optimizer range; rank 0 also the parameters, already in
 * tr->host_params, and state.json), then a writer thread writes it. 1 when the save is in flight, 0
 * when host memory cannot hold the copy on some rank (said once; the caller saves synchronously), -1
 * on an error (agreed). */
static int bg_start(trainer *tr, zg_precision prec, zg_ckpt_writer *w, const char *tag, int improved) {
    zg_ckpt_bg *b = &tr->bg;
    int root = tr->rank == 0;
    int shard = zg_zero_ckpt_writes_shard(&tr->zero);
    if (shard) snapshot_reserved(tr, 1); /* the first save waits for the reservation if it is not done */
    int short_mem = shard && zg_ckpt_snapshot_take(&b->snap, tr->opt) != 0;
    char why[512] = "";
    if (short_mem) snprintf(why, sizeof why, "%s", zg_error_message());
    zg_error_clear();
    short_mem = zg_comm_any(tr->comm, short_mem);
    if (short_mem) {
        zg_ckpt_snapshot_free(&b->snap);
        if (!tr->bg_sync_noted && (root || why[0]))
            printf("note: %s; checkpoints are saved synchronously (training waits while they are written)\n",
                   why[0] ? why : "another rank is out of host memory for its checkpoint snapshot");
        tr->bg_sync_noted = 1;
        return 0;
    }
    int ok = 1;
    if (!root) ok = zg_ckpt_writer_join(w, tr->cfg->out_dir, tag) == 0; /* the folder exists: agreed above */
    b->w = *w;
    memset(w, 0, sizeof *w);
    b->write_shard = shard;
    b->num_params = tr->model.table.num_params;
    b->model_from_snapshot = root && params_in_snapshot(tr);
    b->params_host = root && !b->model_from_snapshot ? tr->host_params : NULL;
    b->cfg = tr->model.cfg;
    b->param_dtype = tr->opt->param_dtype;
    b->state_text = root ? state_json(tr, prec) : NULL;
    if (ok) ok = zg_ckpt_bg_start(b) == 0;
    if (!ok) zg_ckpt_bg_fail(b); /* reported by bg_finish at the next boundary, like a failed write */
    tr->bg_pending = 1;
    tr->bg_iter = tr->iter;
    tr->bg_improved = improved;
    return 1;
}

/* Rank 0 writes model.bin, state.json and the manifest; with ZeRO every rank writes its optimizer
 * shard into the same partial folder first. Success is agreed by all ranks. Any failure leaves the
 * previous checkpoint and `latest` as they were. With background_checkpoint the files are written by
 * a thread from host copies and published at a later boundary (bg_poll); a save in flight is
 * published first. */
static int save_checkpoint(trainer *tr, zg_precision prec, int improved) {
    if (!tr->cfg->save_checkpoints) return 0; /* every rank takes this same early return */
    if (moments_wait(tr) != 0) return -1;     /* a save before the first update (a skipped step) */
    /* a delayed parameter update in flight lands first (a consistent checkpoint; the run that goes on
     * without saving flushes at the same evaluation, so a resume is bitwise) */
    zg_zero_flush(&tr->zero);
    double t0 = zg_now_s();
    if (bg_flush(tr) != 0) return -1; /* at most one save in flight */
    /* the old checkpoints' deletion finishes before this save takes the disk space they free */
    if (tr->rank == 0 && zg_ckpt_retainer_wait(&tr->retainer) != 0) retention_warn(tr);
    double waited = zg_now_s() - t0;
    const char *out = tr->cfg->out_dir;
    char tag[64];
    snprintf(tag, sizeof tag, "iter_%lld", (long long)tr->iter);
    int root = tr->rank == 0, rc = 0, begun = 0, have_params = 0;
    zg_ckpt_writer w;
    memset(&w, 0, sizeof w);
    zg_zero_gather_all(&tr->zero); /* stage 3: the whole model on every rank */
    if (root) {
        have_params = !params_in_snapshot(tr);
        if (have_params) gpt2_params_download(&tr->model, tr->host_params);
        rc = zg_ckpt_writer_begin(&w, out, tag);
        begun = rc == 0;
    }
    if (zg_comm_any(tr->comm, rc != 0) && rc == 0) rc = zg_errorf("rank 0 could not start checkpoint %s/%s", out, tag);
    if (rc == 0 && tr->cfg->background_checkpoint) {
        int started = bg_start(tr, prec, &w, tag, improved);
        if (started != 0) {
            zg_zero_release_all(&tr->zero);
            if (root && !tr->opts->quiet && started > 0) {
                printf("checkpoint %s: training paused %.2f s for the snapshot", tag, zg_now_s() - t0 - waited);
                if (waited >= 0.005) printf(" (and %.2f s before it for the previous save to finish)", waited);
                printf("; written in the background\n");
            }
            return 0;
        }
    }
    if (rc == 0 && root && !have_params) gpt2_params_download(&tr->model, tr->host_params); /* saved synchronously */
    double t_write = zg_now_s();
    if (rc == 0) {
        /* agreed across ranks; on failure rank 0's partial folder is already removed */
        rc = zg_zero_ckpt_write_shards(&tr->zero, &w, out, tag);
        if (rc != 0) begun = 0;
    }
    zg_zero_release_all(&tr->zero);
    if (rc == 0 && root) {
        char *state = state_json(tr, prec);
        rc = zg_ckpt_write_model(&w, &tr->model.cfg, tr->host_params, tr->model.table.num_params, tr->opt->param_dtype);
        if (rc == 0) rc = zg_ckpt_write_text(&w, "state.json", state);
        free(state);
        if (rc == 0 && !tr->opts->quiet) { /* every file of the checkpoint (all ranks' shards), written in parallel */
            uint64_t bytes = 0;
            for (int i = 0; i < w.n_files; i++) bytes += w.files[i].size;
            double s = zg_now_s() - t_write;
            printf("checkpoint %s: saved synchronously: wrote %.2f GB in %.2f s (%.2f GB/s)\n", tag, bytes / 1e9, s,
                   s > 0 ? bytes / 1e9 / s : 0.0);
        }
        if (rc == 0) rc = zg_ckpt_writer_commit(&w, 1); /* removes its folder itself on failure */
        begun = 0;
    }
    if (begun) zg_ckpt_writer_abort(&w);
    if (zg_comm_any(tr->comm, rc != 0) && rc == 0) rc = zg_errorf("saving checkpoint %s/%s failed on rank 0", out, tag);
    if (rc != 0) return save_failed(tr, tag);
    save_published(tr, tag, tr->iter, improved);
    return 0;
}

/* At start (rank 0, holding the lock): `best` must hold the best evaluation's checkpoint. A crash
 * between `latest` and the link (or a failed link) leaves it older; re-link it while that
 * checkpoint still exists. */
static void repair_best(trainer *tr) {
    if (tr->best_iter < 0 || !tr->cfg->save_checkpoints) return;
    char tag[64], *src, *best = zg_path_join(tr->cfg->out_dir, "best");
    snprintf(tag, sizeof tag, "iter_%lld", (long long)tr->best_iter);
    src = zg_path_join(tr->cfg->out_dir, tag);
    int64_t have = zg_ckpt_folder_iter(best), want = zg_ckpt_folder_iter(src);
    if (want == tr->best_iter && have != tr->best_iter) {
        if (link_checkpoint(tr, tag, "best") == 0)
            printf("note: 'best' held iteration %lld; repaired to %s (the best val loss)\n", (long long)have, tag);
        else {
            fprintf(stderr, "zgpt: warning: %s\n", zg_error_message());
            zg_error_clear();
        }
    }
    free(src);
    free(best);
}

/* ---- the loop ------------------------------------------------------------------------------- */

static const char *stop_signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM";
}

/* The end of a fatal message: what is left to continue from. */
typedef struct {
    char text[600];
} kept_msg;
static kept_msg kept_checkpoint(const trainer *tr) {
    kept_msg m;
    if (tr->last_good[0])
        snprintf(m.text, sizeof m.text, "the last good checkpoint %s is untouched", tr->last_good);
    else
        snprintf(m.text, sizeof m.text, "no checkpoint was written");
    return m;
}

static int diverged(trainer *tr, const char *what, double value) {
    bg_flush_before_error(tr); /* the save in flight holds the state before the divergence */
    kept_msg where = kept_checkpoint(tr);
    return zg_errorf("%s is %g at iter %lld: training diverged; lower the learning rate (peak %g), set "
                     "gradient_clipping, or train in bf16/fp32 instead of fp16; %s",
                     what, value, (long long)tr->iter, tr->cfg->lr, where.text);
}

/* One training iteration into metrics.jsonl (every iteration) and the monitors (every log_interval):
 * the same values, as %.9g text and as TensorBoard's float32. */
static void log_iteration(trainer *tr, double loss, double lr, double tps, double dt, double norm) {
    if (!tr->metrics) return; /* ranks other than 0 */
    const zg_train_config *c = tr->cfg;
    double peak_mem = (double)tr->be->bytes_peak;
    double mfu = tr->peak_flops > 0 ? zg_mfu_flops_per_token(&tr->model.cfg, tr->T) * tps / tr->peak_flops : -1;
    double scale = zg_loss_scaler_scale(&tr->scaler);
    char extra[160] = "";
    size_t n = 0;
    if (tr->scaler.cfg.enabled) n += (size_t)snprintf(extra + n, sizeof extra - n, ", \"loss_scale\": %.9g", scale);
    if (mfu >= 0) n += (size_t)snprintf(extra + n, sizeof extra - n, ", \"mfu\": %.9g", mfu);
    snprintf(extra + n, sizeof extra - n, ", \"peak_memory_bytes\": %.0f", peak_mem);
    metrics_line(tr,
                 "{\"iter\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"tokens_per_sec\": %.1f, \"time_ms\": %.2f, "
                 "\"grad_norm\": %.6g%s}",
                 (long long)tr->iter, loss, lr, tps, dt, norm, extra);
    if (!zg_monitor_active(&tr->monitor) || tr->iter % c->log_interval != 0) return;
    zg_monitor *m = &tr->monitor;
    zg_monitor_scalar(m, ZG_TAG_TRAIN_LOSS, tr->iter, loss);
    zg_monitor_scalar(m, ZG_TAG_LR, tr->iter, lr);
    char norm6[32]; /* metrics.jsonl prints the norm to 6 digits: the monitors get that same number */
    snprintf(norm6, sizeof norm6, "%.6g", norm);
    zg_monitor_scalar(m, ZG_TAG_GRAD_NORM, tr->iter, strtod(norm6, NULL));
    if (tr->scaler.cfg.enabled) zg_monitor_scalar(m, ZG_TAG_LOSS_SCALE, tr->iter, scale);
    zg_monitor_scalar(m, ZG_TAG_TOKENS_PER_SEC, tr->iter, tps);
    if (mfu >= 0) zg_monitor_scalar(m, ZG_TAG_MFU, tr->iter, mfu);
    zg_monitor_scalar(m, ZG_TAG_PEAK_MEMORY, tr->iter, peak_mem);
}

/* The training micro-batches of zg_train_step. */
static void next_train_batch(void *ctx, int32_t *inputs, int32_t *targets) {
    trainer *tr = ctx;
    zg_dataloader_next(tr->train_dl, inputs, targets);
}

static int run_loop(trainer *tr, zg_precision prec) {
    zg_train_config *c = tr->cfg;
    zg_backend *be = tr->be;
    zg_train_step_cfg step = {.model = &tr->model,
                              .zero = &tr->zero,
                              .B = tr->B,
                              .T = tr->T,
                              .grad_accum = c->grad_accum,
                              .inputs = tr->inputs,
                              .targets = tr->targets,
                              .next_batch = next_train_batch,
                              .batch_ctx = tr,
                              .scaler = &tr->scaler,
                              .grad_clip = c->grad_clip,
                              .breakdown = c->wall_clock_breakdown,
                              .before_update = moments_before_update,
                              .update_ctx = tr};
    int64_t nan_at = -1;
    const char *hook = getenv("ZGPT_TEST_NAN_AT_ITER");
    if (hook && *hook) nan_at = strtoll(hook, NULL, 10);
    /* test hook: a stop request (as from SIGTERM) at the boundary before iteration N */
    const char *stop_hook = getenv("ZGPT_TEST_STOP_AT_ITER");
    int64_t stop_at = stop_hook && *stop_hook ? strtoll(stop_hook, NULL, 10) : -1;
    double tokens_per_step = (double)tr->B * tr->T * (double)c->grad_accum * tr->world;
    int64_t start_iter = tr->iter;
    double step_ms_sum = 0;
    int64_t steps_timed = 0;

    for (;;) {
        int at_end = tr->iter >= c->max_iters;
        if (bg_poll(tr) != 0) return -1; /* a background save finished: publish it (or end on its error) */
        if (zg_ckpt_snapshot_reserve_finished(&tr->bg.snap)) snapshot_reserved(tr, 0);
        /* evaluation (skipped when the resumed checkpoint already evaluated this iteration) */
        if ((tr->iter % c->eval_interval == 0 || at_end) && tr->iter != tr->last_eval_iter) {
            double tl, vl;
            zg_zero_flush(&tr->zero); /* a delayed parameter update in flight lands first */
            if (estimate_loss(tr, tr->train_eval_dl, &tl) != 0 || estimate_loss(tr, tr->val_dl, &vl) != 0) return -1;
            if (tr->rank == 0) {
                printf("step %lld: train loss %.4f, val loss %.4f\n", (long long)tr->iter, tl, vl);
                fflush(stdout);
            }
            metrics_line(tr, "{\"iter\": %lld, \"train_loss\": %.9g, \"val_loss\": %.9g}", (long long)tr->iter, tl, vl);
            zg_monitor_scalar(&tr->monitor, ZG_TAG_EVAL_TRAIN_LOSS, tr->iter, tl);
            zg_monitor_scalar(&tr->monitor, ZG_TAG_EVAL_VAL_LOSS, tr->iter, vl);
            zg_monitor_flush(&tr->monitor); /* the files catch up at each evaluation, off the step's path */
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
        /* a metrics.jsonl write that failed (a full disk) ends the run here, before more is lost */
        if (tr->metrics_failed) return zg_errorf("%s; %s", tr->metrics_error, kept_checkpoint(tr).text);
        /* every rank stops at the same boundary, whichever got the signal */
        if (tr->iter == stop_at) g_stop_signal = SIGTERM;
        int stop = g_stop_signal != 0;
        stop = zg_comm_any(tr->comm, stop);
        if (stop && !g_stop_signal) g_stop_signal = SIGTERM;
        if (stop) {
            if (tr->rank == 0) {
                const char *sig = stop_signal_name(g_stop_signal);
                if (c->save_checkpoints && tr->iter > start_iter)
                    printf("%s received: saving a checkpoint at iter %lld and stopping\n", sig, (long long)tr->iter);
                else if (tr->last_good[0])
                    printf("%s received: stopping at iter %lld (%s holds it)\n", sig, (long long)tr->iter,
                           tr->last_good);
                else
                    printf("%s received: stopping at iter %lld; no iteration has run, so there is nothing to save\n",
                           sig, (long long)tr->iter);
                fflush(stdout);
            }
            break;
        }

        /* one optimizer step */
        double t0 = 1e3 * zg_now_s();
        double lr = zg_schedule_lr(&c->sched, tr->opt->step);
        double b1, b2; /* OneCycle cycles beta1 (and sets beta2) per step, as DeepSpeed's scheduler does */
        if (zg_schedule_betas(&c->sched, tr->opt->step, &b1, &b2)) {
            tr->opt->cfg.beta1 = (float)b1;
            tr->opt->cfg.beta2 = (float)b2;
        }
        zg_train_step_result r;
        if (zg_train_step(&step, lr, tr->iter == nan_at, &r) != 0) return -1;
        tr->tokens_seen += (uint64_t)tokens_per_step;
        if (r.status == ZG_STEP_STOP) {
            bg_flush_before_error(tr);
            return zg_errorf("%s", r.message);
        }
        if (r.status == ZG_STEP_DIVERGED)
            return diverged(tr, !isfinite(r.loss) ? "the loss" : "the gradient norm",
                            !isfinite(r.loss) ? r.loss : r.grad_norm);
        if (r.status == ZG_STEP_SKIPPED) {
            if (tr->rank == 0) printf("iter %lld: %s\n", (long long)tr->iter, r.message);
            metrics_line(tr, "{\"iter\": %lld, \"loss\": null, \"skipped\": true, \"loss_scale\": %.9g}",
                         (long long)tr->iter, zg_loss_scaler_scale(&tr->scaler));
            if (tr->iter % c->log_interval == 0)
                zg_monitor_scalar(&tr->monitor, ZG_TAG_LOSS_SCALE, tr->iter, zg_loss_scaler_scale(&tr->scaler));
            tr->iter++;
            continue;
        }
        double loss = r.loss, norm = r.grad_norm, clip = r.clip;
        const double *wc = r.ms;
        double dt = 1e3 * zg_now_s() - t0;
        /* rounded as metrics.jsonl prints it, so every output holds the same numbers */
        double tps = round(tokens_per_step / (dt / 1e3) * 10.0) / 10.0;
        step_ms_sum += dt;
        steps_timed++;
        log_iteration(tr, loss, lr, tps, dt, norm);
        if (tr->rank == 0 && !tr->opts->quiet && tr->iter % c->log_interval == 0) {
            char eta[32];
            /* the mean step time of this run so far times the steps left (evaluations not counted) */
            zg_fmt_duration(step_ms_sum / (double)steps_timed / 1e3 * (double)(c->max_iters - tr->iter - 1), eta,
                            sizeof eta);
            printf("iter %lld: loss %.4f, time %.0f ms, lr %.3e, tok/s %.0f, norm %.3f%s, eta %s\n",
                   (long long)tr->iter, loss, dt, lr, tps, norm, clip < 1.0 ? " (clipped)" : "", eta);
            if (c->wall_clock_breakdown)
                printf("iter %lld: time (ms, each phase synchronised) | data %.1f | forward %.1f | backward %.1f | "
                       "reduce %.1f | other %.1f | norm %.1f | optimizer %.1f\n",
                       (long long)tr->iter, wc[ZG_STEP_DATA], wc[ZG_STEP_FORWARD], wc[ZG_STEP_BACKWARD],
                       wc[ZG_STEP_REDUCE], wc[ZG_STEP_OTHER], wc[ZG_STEP_NORM], wc[ZG_STEP_OPTIMIZER]);
            if (c->wall_clock_breakdown && tr->zero.off)
                printf(
                    "iter %lld: ZeRO-Offload (ms) | host AdamW %.1f%s | gradient download wait %.1f | upload wait %.1f "
                    "| host step wait %.1f\n",
                    (long long)tr->iter, r.offload.host_ms,
                    tr->zero.o.offload_dpu ? " (the previous step's, on its thread)" : "", r.offload.download_wait_ms,
                    r.offload.upload_wait_ms, r.offload.join_wait_ms);
            fflush(stdout);
        }
        tr->iter++;
    }
    /* the end (finished, early-stopped or interrupted): the weights made current (a delayed update),
     * the save in flight is published, then a checkpoint of the current state unless that was it */
    zg_zero_flush(&tr->zero);
    double t_end = zg_now_s();
    /* from here deletions only move folders aside; their files go to a process of their own when the
     * end waits for retention below, so the run does not wait for the unlinks (docs/TRAINING.md) */
    if (tr->rank == 0) zg_ckpt_retainer_hand_off(&tr->retainer);
    if (bg_flush(tr) != 0) return -1;
    if (tr->last_saved_iter != tr->iter && tr->iter > start_iter) {
        if (save_checkpoint(tr, prec, 0) != 0 || bg_flush(tr) != 0) return -1;
    }
    double end_save = zg_now_s() - t_end;
    if (tr->metrics_failed) return zg_errorf("%s; %s", tr->metrics_error, kept_checkpoint(tr).text);
    /* `final` names the checkpoint of the last iteration: the one just saved, or the resumed one when
     * this run had nothing left to do (a crash after `latest` moved but before `final` did) */
    if (!g_stop_signal && c->save_checkpoints && tr->last_good_iter == tr->iter) {
        char tag[64];
        snprintf(tag, sizeof tag, "iter_%lld", (long long)tr->iter);
        int rc = 0;
        if (tr->rank == 0) {
            char *fin = zg_path_join(c->out_dir, "final");
            if (zg_ckpt_folder_iter(fin) != tr->iter || tr->last_saved_iter == tr->iter)
                rc = link_checkpoint(tr, tag, "final");
            free(fin);
        }
        if (zg_comm_any(tr->comm, rc != 0) && rc == 0) rc = zg_errorf("rank 0 could not link 'final'");
        if (rc != 0) return -1;
    }
    /* keep_last_k holds when the process exits: the deletion the last publication started is waited
     * for here as far as moving the old folders aside (their unlinks go on in a process of their own);
     * the two waits of the end are said apart (the disk's writes, retention) */
    if (c->save_checkpoints) {
        double t_ret = zg_now_s();
        if (tr->rank == 0 && zg_ckpt_retainer_wait(&tr->retainer) != 0) retention_warn(tr);
        if (tr->rank == 0 && !tr->opts->quiet)
            printf("end: waited %.2f s for the last save, %.2f s for retention\n", end_save, zg_now_s() - t_ret);
    }
    /* Peak backend memory (device memory on CUDA), the largest over ranks: what must fit per GPU. */
    double peak = (double)be->bytes_peak;
    zg_comm_all_reduce_host_f64(tr->comm, &peak, 1, ZG_COMM_MAX);
    if (tr->rank == 0) {
        char pb[32];
        printf("peak %s memory per rank: %s\n", be->ops->name, zg_fmt_bytes(peak, pb, sizeof pb));
        if (tr->zero.off || tr->zero.poff) { /* ZeRO-Offload: rank 0's optimizer state / parameter shard */
            char hb[32];
            printf("host memory held per rank (ZeRO-Offload): %s\n",
                   zg_fmt_bytes((double)be->host_bytes_peak, hb, sizeof hb));
        }
    }
    if (tr->rank == 0 && g_stop_signal) {
        if (tr->last_good[0])
            printf("stopped by %s; continue with the same command and --resume (from %s)\n",
                   stop_signal_name(g_stop_signal), tr->last_good);
        else
            printf("stopped by %s; no checkpoint %s, so there is nothing to resume\n", stop_signal_name(g_stop_signal),
                   c->save_checkpoints ? "was written" : "is written (save_checkpoints false)");
    } else if (tr->rank == 0 && isfinite(tr->best_val))
        printf("done: %lld iterations, best val loss %.4f at step %lld; %s %s\n", (long long)tr->iter, tr->best_val,
               (long long)tr->best_iter,
               c->save_checkpoints ? "checkpoints in" : "no checkpoints written (save_checkpoints false), metrics in",
               c->out_dir);
    return 0;
}

/* Rank 0: TensorBoard / CSV output (wandb: TensorBoard and the line saying how to upload it), the
 * config as text, and the peak that train/mfu is measured against. */
static int setup_monitor(trainer *tr, int resuming) {
    zg_train_config *c = tr->cfg;
    char note[1024];
    zg_monitor_config_apply_wandb(&c->monitor, c->out_dir, note, sizeof note);
    if (note[0]) printf("%s\n", note);
    if (zg_monitor_init(&tr->monitor, &c->monitor, resuming ? tr->iter : -1, tr->last_eval_iter) != 0) return -1;
    if (!zg_monitor_active(&tr->monitor)) return 0;
    char card[256] = "";
    if (strcmp(tr->be->ops->name, "cuda") == 0) tr->peak_flops = zg_mfu_cuda_peak(tr->be->device, card, sizeof card);
    if (tr->peak_flops <= 0)
        printf("note: %s is not logged: zgpt knows no peak FLOP/s for the %s device%s%s (zgpt bench measures one)\n",
               ZG_TAG_MFU, tr->be->ops->name, card[0] ? " " : "", card);
    /* the config, pretty-printed and indented 4 spaces: a code block for the text plugin's Markdown */
    cJSON *j = cJSON_Parse(c->json_text);
    char *pretty = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (pretty) {
        size_t lines = 1, n = strlen(pretty);
        for (size_t i = 0; i < n; i++) lines += pretty[i] == '\n';
        char *md = zg_malloc(n + 4 * lines + 1), *o = md;
        for (const char *p = pretty; *p;) {
            memcpy(o, "    ", 4);
            o += 4;
            while (*p && *p != '\n') *o++ = *p++;
            if (*p) *o++ = *p++;
        }
        *o = '\0';
        zg_monitor_text(&tr->monitor, ZG_TAG_CONFIG, tr->iter, md);
        free(md);
        free(pretty);
    }
    return 0;
}

/* The communicator (created after the backend, which NCCL needs): the single-process one at world 1. */
static int setup_parallel(trainer *tr) {
    zg_comm_config cc;
    memset(&cc, 0, sizeof cc);
    cc.backend = tr->world > 1 ? "auto" : "single";
    cc.be = tr->be;
    cc.max_ctas = zg_train_config_comm_max_ctas(tr->cfg, tr->one_machine);
    cc.stop_flag = &g_stop_signal; /* a stop signal while MPI starts up is not left for an iteration boundary */
    if (zg_comm_create(&tr->comm, &cc) != 0) return -1;
    if (tr->comm->size != tr->world)
        return zg_errorf("the communicator has %d ranks but the launcher said %d", tr->comm->size, tr->world);
    return 0;
}

/* The banner's line on what the gradient reductions of a step carry (stages 2-3, several ranks). */
static void print_grad_schedule(const trainer *tr) {
    zg_zero_grad_schedule s;
    zg_zero_grad_schedule_of(&tr->model.table, &tr->zero.o, tr->world, &s);
    if (tr->world == 1 || tr->zero.o.stage < 2) return;
    double eb = (double)zg_dtype_size(tr->be->grad_dtype), MB = 1e6;
    char layers[64] = "";
    if (s.layers > 0) snprintf(layers, sizeof layers, " and layers 0-%d", s.layers - 1);
    if (s.embeddings)
        printf("gradients: the embeddings + ln_f%s accumulate locally over the %d micro-steps and are reduced on the "
               "last (grad_accum_local_layers %d): %.1f MB reduced per micro-step, %.1f MB on the last, %.1f MB per "
               "step (%.1f MB reducing everything every micro-step); persistent layer buffers %.1f MB per rank\n",
               layers, tr->zero.o.grad_accum, tr->zero.o.grad_accum_local_layers, (double)s.reduced_micro * eb / MB,
               (double)s.reduced_last * eb / MB, (double)s.reduced_step * eb / MB,
               (double)s.reduced_last * (double)tr->zero.o.grad_accum * eb / MB, (double)s.layer_elems * eb / MB);
    else
        printf("gradients: every micro-step reduces all of them: %.1f MB per micro-step, %.1f MB per step\n",
               (double)s.reduced_last * eb / MB, (double)s.reduced_step * eb / MB);
}

/* The ZeRO engine over the model, with its optimizer; at world 1 stage 0 (nothing to partition). */
static int setup_optimizer(trainer *tr) {
    zg_train_config *cfg = tr->cfg;
    zg_optimizer_config oc;
    zg_train_config_optimizer(cfg, &oc);
    /* ZeRO-Offload's host Lamb adds the cut tensors' sums of squares across the ranks (zero_offload.c);
     * the GPU optimizer's one-call Lamb cannot */
    if (tr->world > 1 && cfg->optim == ZG_OPTIMIZER_LAMB && cfg->zero.offload_optimizer != ZG_OFFLOAD_CPU)
        return zg_errorf("optimizer Lamb on %d processes needs zero_optimization.offload_optimizer \"cpu\" (its trust "
                         "ratio needs each tensor's norm across the ZeRO shards, which the host Lamb adds up); set "
                         "it, train Lamb on one process, or use AdamW",
                         tr->world);
    zg_zero_opts zo;
    zg_zero_opts_from_config(&cfg->zero, &zo);
    zo.grad_accum = (int)cfg->grad_accum;
    /* same-call comparisons on the GPU (scripts/gpu_validate.sh offload): v0.12's offload step path */
    const char *ostep = getenv("ZGPT_OFFLOAD_STEP");
    if (ostep && *ostep && strcmp(ostep, "v12") != 0)
        return zg_errorf("ZGPT_OFFLOAD_STEP is \"%s\"; allowed: v12 (or unset)", ostep);
    zo.offload_v12 = ostep && (zo.offload_optimizer || zo.offload_param) && strcmp(ostep, "v12") == 0;
    if (zo.offload_v12 && tr->rank == 0)
        printf("note: ZGPT_OFFLOAD_STEP=v12: ZeRO-Offload takes v0.12's step path (one process: gradients through "
               "the layer pool and the shard every micro-step; the host AdamW after every download)\n");
    /* ZeRO-Offload keeps the configured stage on one process too: its state (offload_param: the
     * parameters) moves to the host */
    if (tr->world == 1 && zo.stage > 0 && !zo.offload_optimizer && !zo.offload_param) {
        if (tr->rank == 0)
            printf("note: zero_optimization.stage %d partitions state across ranks; one process runs stage 0 "
                   "(nothing to partition)\n",
                   zo.stage);
        zo.stage = 0;
    }
    zg_zero_opts_fit_model(&zo, &tr->model.table);
    zo.grad_accum_local_layers = cfg->grad_accum_local_layers;
    if (zg_zero_local_check(&zo, tr->model.cfg.n_layer) != 0) return -1;
    zg_zero_grad_schedule gs; /* never a silent no-op: a value set where it has nothing to do says so */
    zg_zero_grad_schedule_of(&tr->model.table, &zo, tr->world, &gs);
    if (gs.idle && cfg->grad_accum_local_layers_given && tr->rank == 0)
        printf("note: grad_accum_local_layers %d: %s\n", zo.grad_accum_local_layers, gs.idle);
    /* ZeRO-Offload (either part): refuse before the allocations, with the numbers (rank 0 keeps an fp32 copy of
     * the parameters on the host for model.bin: counted for every rank) */
    if (zo.offload_optimizer || zo.offload_param) {
        size_t act = gpt2_activation_bytes(&tr->model.cfg, tr->be->act_dtype, (int)cfg->micro_batch,
                                           tr->model.cfg.block_size, tr->model.recompute, tr->model.recompute_layers);
        if (zg_zero_check_memory(&tr->model.table, tr->world, tr->rank, tr->local_ranks, &zo, tr->be->param_dtype,
                                 tr->be->grad_dtype, act, tr->be->device_mem_total,
                                 tr->model.table.num_params * sizeof(float)) != 0)
            return -1;
    }
    /* the engine places the model's gradients (and, at stage 3, its parameters) and installs the hooks */
    if (zg_zero_init_model(&tr->zero, &zo, tr->comm, tr->be, &tr->model, &oc) != 0) return -1;
    tr->zero_ready = 1;
    tr->opt = zg_zero_optimizer(&tr->zero);
    return 0;
}

/* Rank 0, before anything is written into out_dir: creates it, takes its lock (one run per out_dir),
 * refuses links where zgpt writes, and removes what an interrupted run left behind. */
static int claim_out_dir(trainer *tr) {
    const char *out = tr->cfg->out_dir;
    if (zg_dir_make(out) != 0 || zg_dir_lock_acquire(&tr->lock, out, "train") != 0) return -1;
    return zg_ckpt_out_dir_check(out);
}

/* Leftovers that cannot be removed do not stop the run (a save that needs the name fails cleanly). */
static void tidy_out_dir(trainer *tr) {
    char removed[1024];
    if (zg_ckpt_out_dir_tidy(tr->cfg->out_dir, removed, sizeof removed) != 0) {
        fprintf(stderr, "zgpt: warning: cannot remove what an interrupted run left in %s: %s\n", tr->cfg->out_dir,
                zg_error_message());
        zg_error_clear();
    }
    if (removed[0]) printf("note: removed what an interrupted run left in %s: %s\n", tr->cfg->out_dir, removed);
}

/* SIGINT, SIGTERM and SIGUSR1 (what mpirun forwards without killing the ranks) request a stop with a
 * checkpoint at the next iteration boundary, from the start of the run: a signal during set-up stops
 * the run before its first iteration instead of killing it. */
enum { N_STOP_SIGNALS = 3 };
static const int k_stop_signals[N_STOP_SIGNALS] = {SIGINT, SIGTERM, SIGUSR1};

int zg_train_run(zg_train_config *cfg, const zg_train_options *opts) {
    trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.cfg = cfg;
    tr.opts = opts;
    tr.best_val = INFINITY;
    tr.best_iter = -1;
    tr.last_eval_iter = -1;
    tr.last_saved_iter = -1;
    tr.last_good_iter = -1;
    tr.lock.fd = -1;
    tr.t_start = zg_now_s();
    zg_ckpt ck;
    memset(&ck, 0, sizeof ck);
    int resuming = 0, rc = 0;
    zg_precision prec = ZG_PREC_FP32;

    struct sigaction sa, old_sa[N_STOP_SIGNALS];
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    g_stop_signal = 0;
    for (int i = 0; i < N_STOP_SIGNALS; i++) ZG_CHECK_SYS(sigaction(k_stop_signals[i], &sa, &old_sa[i]));

    zg_launch_env env;
    zg_launch_env_detect(&env);
    tr.rank = env.size > 1 ? env.rank : 0;
    tr.world = env.size > 1 ? env.size : 1;
    tr.local_rank = env.local_rank;
    tr.one_machine = env.local_size == env.size;
    tr.local_ranks = env.size > 1 && env.local_size > 0 ? env.local_size : 1;
    tr.launched_by = env.source;
    rc = zg_train_config_resolve_batch(cfg, tr.world);
    if (rc == 0) rc = make_backend(&tr, &prec);
    if (rc == 0) rc = setup_parallel(&tr);
    if (rc == 0 && tr.rank == 0) rc = claim_out_dir(&tr);
    if (tr.comm && zg_comm_any(tr.comm, rc != 0) && rc == 0) rc = zg_errorf("rank 0 could not claim out_dir");
    if (rc == 0 && !resume_requested(&tr)) {
        char *latest = zg_path_join(cfg->out_dir, "latest");
        if (zg_file_exists(latest))
            rc = zg_errorf("out_dir '%s' already holds a run (it has a 'latest' checkpoint); continue it with "
                           "--resume, or choose another out_dir",
                           cfg->out_dir);
        free(latest);
    }
    if (rc == 0 && tr.rank == 0) tidy_out_dir(&tr);
    if (rc == 0) rc = setup_model(&tr, &ck, &resuming);
    if (rc == 0) {
        tr.B = (int)cfg->micro_batch;
        tr.T = tr.model.cfg.block_size;
        tr.inputs = zg_malloc((size_t)tr.B * tr.T * sizeof(int32_t));
        tr.targets = zg_malloc((size_t)tr.B * tr.T * sizeof(int32_t));
        rc = setup_data(&tr);
    }
    if (rc == 0) rc = setup_optimizer(&tr);
    if (rc == 0) rc = bg_setup(&tr);
    if (rc == 0) {
        zg_loss_scaler_config lsc = cfg->scaler;
        lsc.enabled = prec == ZG_PREC_FP16;
        zg_loss_scaler_init(&tr.scaler, &lsc);
    }
    if (rc == 0 && resuming) {
        /* Each rank reads its own range from whichever shards cover it (any saved world size). */
        /* What the forward needs now (the master: the parameters are its rounding); Adam's moments in
         * the background until the first update (moments_wait). */
        double t_read = zg_now_s();
        rc = zg_ckpt_read_optimizer_deferred(&ck, tr.opt, &tr.moments);
        tr.moments_pending = rc == 0;
        if (rc == 0) moments_start(&tr);
        if (rc == 0 && tr.rank == 0 && !opts->quiet) {
            const zg_ckpt_moments *mo = &tr.moments;
            double gb = (zg_optimizer_state_bytes(tr.opt) - mo->bytes) / 1e9, dt = mo->t_params - t_read;
            if (mo->sync_reason)
                printf("resume: optimizer state %.2f GB read, checksummed and uploaded in %.2f s (%.2f GB/s, %s reads; "
                       "upload wait %.2f s; the Adam moments were read now: %s)\n",
                       zg_optimizer_state_bytes(tr.opt) / 1e9, mo->t_done - t_read,
                       mo->t_done > t_read ? zg_optimizer_state_bytes(tr.opt) / 1e9 / (mo->t_done - t_read) : 0.0,
                       mo->read_mode, mo->master_upload_wait + mo->upload_s, mo->sync_reason);
            else if (tr.opt->master)
                printf(
                    "resume: optimizer master weights %.2f GB read and uploaded in %.2f s (%.2f GB/s, %s reads; upload "
                    "wait %.2f s); the Adam moments (%.2f GB) are read in the background into %s until the first "
                    "update\n",
                    gb, dt, dt > 0 ? gb / dt : 0.0, mo->read_mode, mo->master_upload_wait, mo->bytes / 1e9,
                    mo->where ? mo->where : "host memory");
            else
                printf("resume: the Adam moments (%.2f GB) are read in the background into %s until the first update "
                       "(%s reads)\n",
                       mo->bytes / 1e9, mo->where ? mo->where : "host memory", mo->read_mode);
        }
        /* agreed before the engine's collectives: a rank's shard can fail its checksum here alone (the
         * shards are checksummed as they are read) */
        if (zg_comm_any(tr.comm, rc != 0) && rc == 0) rc = zg_errorf("reading the checkpoint failed on another rank");
        if (rc == 0) zg_zero_after_load(&tr.zero);
        if (rc == 0) rc = load_state(&tr, &ck);
        if (rc == 0) {
            snprintf(tr.last_good, sizeof tr.last_good, "%s", ck.dir);
            tr.last_good_iter = tr.iter;
            if (tr.rank == 0) repair_best(&tr);
        }
    }
    zg_ckpt_close(&ck);
    if (rc == 0 && tr.rank == 0) rc = open_metrics(&tr, resuming);
    if (rc == 0 && tr.rank == 0) rc = setup_monitor(&tr, resuming);
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
            if (tr.zero.off || tr.zero.poff) {
                zg_zero_memory hm;
                zg_zero_memory_held(&tr.zero, &hm);
                int pin = tr.zero.off ? tr.zero.o.offload_pin_memory : tr.zero.o.offload_param_pin_memory;
                printf(" (ZeRO-Offload at stage %d: %s%s%s, %.2f GiB of host memory per rank, the state %s",
                       tr.zero.o.stage,
                       tr.zero.off ? (cfg->optim == ZG_OPTIMIZER_LAMB ? "optimizer state and Lamb on the CPU"
                                                                      : "optimizer state and AdamW on the CPU")
                                   : "",
                       tr.zero.off && tr.zero.poff ? "; " : "",
                       tr.zero.poff ? "parameters in host memory, each layer uploaded before use (offload_param)" : "",
                       hm.host / 1073741824.0, pin ? "pinned" : "pageable");
                if (tr.zero.off && tr.zero.o.offload_dpu)
                    printf("; delayed parameter update after %lld steps: the host step of step t runs during step "
                           "t+1, whose gradients come from the weights before step t's update",
                           (long long)tr.zero.o.offload_dpu_warmup);
                printf(")");
            }
            printf(" = %lld sequences of %d tokens per step, lr %s %g, %lld iterations",
                   (long long)cfg->train_batch_size, tr.T, zg_schedule_type_name(cfg->sched.type), cfg->lr,
                   (long long)cfg->max_iters);
            if (tr.world > 1) printf("; communicator %s", tr.comm->ops->name);
            printf("\n");
            print_grad_schedule(&tr);
            zg_train_config_print_notes(cfg, stdout);
            if (resuming) printf("resuming at iter %lld from %s\n", (long long)tr.iter, tr.last_good);
            fflush(stdout);
        }
        rc = run_loop(&tr, prec);
    }
    zg_ckpt_moments_free(&tr.moments); /* an error before the first update: the reading thread is joined */
    bg_abandon(&tr);                   /* only an error left a save in flight: it is dropped, `latest` stays */
    zg_ckpt_bg_free(&tr.bg);
    if (zg_ckpt_retainer_wait(&tr.retainer) != 0) retention_warn(&tr); /* before out_dir's lock goes */

    if (tr.metrics && fclose(tr.metrics) != 0 && rc == 0)
        rc = zg_errorf("cannot write '%s/metrics.jsonl': %s", cfg->out_dir, zg_strerrno());
    zg_monitor_free(&tr.monitor);
    zg_dir_lock_release(&tr.lock);
    for (int i = 0; i < N_STOP_SIGNALS; i++) ZG_CHECK_SYS(sigaction(k_stop_signals[i], &old_sa[i], NULL));
    if (tr.zero_ready) zg_zero_free(&tr.zero);
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
