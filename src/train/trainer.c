#include "train/trainer_internal.h"

/* Set by the SIGINT/SIGTERM handler, read at iteration boundaries. A signal handler can only
 * communicate through a static flag, so this is the one piece of file-level state. */
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

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

static int resume_requested(const trainer *tr) { return zg_train_resume_requested(tr->cfg, tr->opts); }

/* One process resuming: the checkpoint is opened before the backend exists and its optimizer shard
 * starts being read on a thread at once (ckpt_prefetch.h: the start-up then hides under the read).
 * Several ranks open it in setup_model, once their communicator exists, so that a failure is agreed.
 * ZeRO-Offload keeps the state in host memory of its own: read there as before. */
static int open_resume_early(trainer *tr, zg_ckpt *ck) {
    if (tr->world != 1 || !resume_requested(tr)) return 0;
    char *latest = zg_path_join(tr->cfg->out_dir, "latest");
    int exists = zg_file_exists(latest);
    free(latest);
    if (!exists) return 0;                                  /* setup_model says so */
    if (zg_train_out_dir_check(tr->cfg, 1) != 0) return -1; /* e.g. a DeepSpeed folder's `latest` */
    double t0 = zg_now_s();
    if (zg_ckpt_open_deferred(ck, tr->cfg->out_dir) != 0) return -1;
    tr->open_s = zg_now_s() - t0;
    const char *why = NULL;
    if (tr->cfg->zero.offload_optimizer == ZG_OFFLOAD_NONE && tr->cfg->zero.offload_param == ZG_OFFLOAD_NONE)
        (void)zg_ckpt_prefetch_start(&tr->prefetch, ck, &why);
    return 0;
}

/* Model shape and initial weights (host fp32 in tr->host_params), and the checkpoint to resume. */
static int setup_model(trainer *tr, zg_ckpt *resume_ck, int *resuming) {
    zg_train_config *c = tr->cfg;
    gpt2_config mc;
    memset(&mc, 0, sizeof mc);
    zg_model_source src;
    memset(&src, 0, sizeof src);
    int have_src = 0, rc = -1;
    *resuming = 0;
    if (resume_requested(tr)) {
        if (zg_train_out_dir_check(c, 1) != 0) goto cleanup;
        /* one process: the shard is checksummed while it is read (one pass); several check every file
         * at open, so that every rank refuses a corrupt checkpoint with the same message. One process
         * opened it already, before the backend (open_resume_early). */
        if (!resume_ck->dir) {
            double t0 = zg_now_s();
            if ((tr->world == 1 ? zg_ckpt_open_deferred(resume_ck, c->out_dir) : zg_ckpt_open(resume_ck, c->out_dir)) !=
                0)
                goto cleanup;
            tr->open_s = zg_now_s() - t0;
        }
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
        /* a run's checkpoint given as a model: what is taken from it, said (DeepSpeed's load_checkpoint would also
         * restore the optimizer and the schedule) */
        if (zg_log_rank() <= 0 && (src.kind == ZG_SRC_CHECKPOINT || src.deepspeed))
            zg_note("init_from '%s' is a %s checkpoint: its weights are loaded, not its optimizer state (Adam moments, "
                    "step count) nor its iteration and schedule: training starts at iteration 0 with a fresh "
                    "optimizer%s",
                    c->init_from, src.deepspeed ? "DeepSpeed" : "zgpt",
                    src.deepspeed ? "" : "; to continue that run, use --resume with its out_dir");
    }
    if (gpt2_config_validate(&mc) != 0 || gpt2_init(&tr->model, &mc, tr->be) != 0) goto cleanup;
    tr->model_ready = 1;
    tr->model.recompute = zg_train_config_recompute(c);
    tr->model.recompute_layers = c->recompute_num_layers;
    tr->model.head_chunks = c->lm_head_chunks;
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
        rc = from_state ? 0 : zg_ckpt_read_model(resume_ck, tr->host_params);
        if (rc == 0 && !from_state) gpt2_params_upload(&tr->model, tr->host_params);
        if (rc == 0 && tr->rank == 0 && !tr->opts->quiet)
            printf("resume: checkpoint %s opened in %.2f s (%s); parameters %s\n", resume_ck->dir, tr->open_s,
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
    if (zg_train_data_check(c) != 0) return -1;
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
            if (j && trainer_json_num(j, "iter", &it) == 0) {
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
    trainer_bg_flush_before_error(tr); /* the save in flight holds the state before the divergence */
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
                              .before_update = trainer_moments_before_update,
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
        if (trainer_bg_poll(tr) != 0) return -1; /* a background save finished: publish it (or end on its error) */
        if (zg_ckpt_snapshot_reserve_finished(&tr->bg.snap)) trainer_snapshot_reserved(tr, 0);
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
                if (trainer_save_checkpoint(tr, prec, improved) != 0) return -1;
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
            trainer_bg_flush_before_error(tr);
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
    if (trainer_bg_flush(tr) != 0) return -1;
    if (tr->last_saved_iter != tr->iter && tr->iter > start_iter) {
        if (trainer_save_checkpoint(tr, prec, 0) != 0 || trainer_bg_flush(tr) != 0) return -1;
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
                rc = trainer_link_checkpoint(tr, tag, "final");
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
        if (tr->rank == 0 && zg_ckpt_retainer_wait(&tr->retainer) != 0) trainer_retention_warn(tr);
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
    if (tr->zero.carry_reduces)
        printf("gradients: each micro-step but a step's last leaves its last reductions running under the next "
               "micro-step's forward (ZGPT_REDUCE_CARRY=0: each micro-step waits for its reductions)\n");
    else if (zg_zero_carry_applies(&tr->zero.o, tr->world))
        printf("gradients: each micro-step waits for its reductions (ZGPT_REDUCE_CARRY=0)\n");
}

/* The ZeRO engine over the model, with its optimizer; at world 1 stage 0 (nothing to partition). */
static int setup_optimizer(trainer *tr) {
    zg_train_config *cfg = tr->cfg;
    zg_optimizer_config oc;
    zg_train_config_optimizer(cfg, &oc);
    zg_zero_opts zo;
    zg_zero_opts_from_config(&cfg->zero, &zo);
    zo.grad_accum = (int)cfg->grad_accum;
    /* same-call comparisons on the GPU (scripts/gpu_validate.sh offload): v0.12's offload step path */
    int ostep = zg_train_offload_step_env();
    if (ostep < 0) return -1;
    zo.offload_v12 = ostep && (zo.offload_optimizer || zo.offload_param);
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
        int B = (int)cfg->micro_batch, T = tr->model.cfg.block_size;
        size_t lend = gpt2_lend_want(&tr->model, B, T);
        size_t act = gpt2_activation_bytes(&tr->model.cfg, tr->be->act_dtype, B, T, tr->model.recompute,
                                           tr->model.recompute_layers, tr->model.head_chunks, lend);
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
    if (rc == 0) rc = open_resume_early(&tr, &ck);
    if (rc == 0) rc = make_backend(&tr, &prec);
    /* the read goes on; from here its host memory is the backend's (pinned on CUDA) */
    if (rc == 0 && zg_ckpt_prefetch_adopt(&tr.prefetch, tr.be) != 0) zg_error_clear();
    if (rc == 0) rc = setup_parallel(&tr);
    if (rc == 0 && tr.rank == 0) rc = claim_out_dir(&tr);
    if (tr.comm && zg_comm_any(tr.comm, rc != 0) && rc == 0) rc = zg_errorf("rank 0 could not claim out_dir");
    if (rc == 0 && !resume_requested(&tr)) rc = zg_train_out_dir_check(cfg, 0);
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
    if (rc == 0) rc = trainer_bg_setup(&tr);
    if (rc == 0) {
        zg_loss_scaler_config lsc = cfg->scaler;
        lsc.enabled = prec == ZG_PREC_FP16;
        zg_loss_scaler_init(&tr.scaler, &lsc);
    }
    if (rc == 0 && resuming) {
        /* Each rank reads its own range from whichever shards cover it (any saved world size). */
        /* What the forward needs now (the master: the parameters are its rounding); Adam's moments in
         * the background until the first update (trainer_moments_wait). */
        double t_read = zg_now_s();
        rc = zg_ckpt_read_optimizer_deferred(&ck, tr.opt, &tr.moments, &tr.prefetch);
        tr.moments_pending = rc == 0;
        if (!tr.moments.from_prefetch)
            zg_ckpt_prefetch_free(&tr.prefetch); /* not this range's: stopped */
        else
            tr.moments.where = tr.prefetch.given ? "the checkpoint snapshot's host memory" : "host memory of its own";
        if (rc == 0) trainer_moments_start(&tr);
        if (rc == 0 && tr.rank == 0 && !opts->quiet) {
            const zg_ckpt_moments *mo = &tr.moments;
            double gb = (zg_optimizer_state_bytes(tr.opt) - mo->bytes) / 1e9, dt = mo->t_params - t_read;
            double pf_t0 = tr.prefetch.t_start - tr.t_start;
            if (mo->from_prefetch && tr.opt->master)
                printf("resume: the optimizer shard (%.2f GB) is read from %.2f s after the start, before the backend "
                       "existed (%s reads, into %s); the master weights (%.2f GB) were in place %.2f s after the start "
                       "and uploaded in %.2f s; the Adam moments (%.2f GB) follow until the first update\n",
                       tr.prefetch.size / 1e9, pf_t0, mo->read_mode, mo->where, gb, mo->t_params - tr.t_start,
                       mo->master_upload_wait, mo->bytes / 1e9);
            else if (mo->from_prefetch)
                printf(
                    "resume: the Adam moments (%.2f GB) are read in the background into %s until the first update "
                    "(%s reads; the optimizer shard is read from %.2f s after the start, before the backend existed)\n",
                    mo->bytes / 1e9, mo->where, mo->read_mode, pf_t0);
            else if (mo->sync_reason)
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
        if (rc == 0) rc = trainer_load_state(&tr, &ck);
        if (rc == 0) {
            snprintf(tr.last_good, sizeof tr.last_good, "%s", ck.dir);
            tr.last_good_iter = tr.iter;
            if (tr.rank == 0) trainer_repair_best(&tr);
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
    zg_ckpt_moments_free(&tr.moments);   /* an error before the first update: the reading thread is joined */
    zg_ckpt_prefetch_free(&tr.prefetch); /* its read stopped and joined before the snapshot may free its block */
    trainer_bg_abandon(&tr);             /* only an error left a save in flight: it is dropped, `latest` stays */
    zg_ckpt_bg_free(&tr.bg);
    if (zg_ckpt_retainer_wait(&tr.retainer) != 0) trainer_retention_warn(&tr); /* before out_dir's lock goes */

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
