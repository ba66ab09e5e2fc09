/* The trainer's checkpoints: state.json (what a resume needs besides the weights), saves in the
 * background (the snapshot, the writer, publication at a later boundary, retention), `best`, and a
 * resume's optimizer state (the Adam moments read until the first update needs them). */
#include "train/trainer_internal.h"

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

int trainer_json_num(const cJSON *o, const char *k, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) return -1;
    *out = v->valuedouble;
    return 0;
}
/* A whole number in [lo, 2^53] (state.json counters: a hand-edited 1e300 must not reach a loop bound). */
static int json_count(const cJSON *o, const char *k, double lo, double *out) {
    if (trainer_json_num(o, k, out) != 0) return -1;
    return *out >= lo && *out <= 9007199254740992.0 && *out == floor(*out) ? 0 : -1;
}
static int json_u64(const cJSON *o, const char *k, uint64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v)) return -1;
    char *end;
    *out = strtoull(v->valuestring, &end, 10);
    return *end ? -1 : 0;
}

int trainer_load_state(trainer *tr, const zg_ckpt *ck) {
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
        trainer_json_num(ls, "scale", &scale) || !(scale > 0 && isfinite(scale)) ||
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

/* ---- checkpoints: saves in the background, publication, a resume's optimizer state ----------- */

/* Points out_dir/<link> ("best", "final") at the checkpoint `tag` (rank 0). A failure here is not a
 * failed save: the checkpoint and `latest` are complete, and the link is repaired at the next start. */
int trainer_link_checkpoint(trainer *tr, const char *tag, const char *link) {
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
void trainer_retention_warn(const trainer *tr) {
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
    if (root && improved && trainer_link_checkpoint(tr, tag, "best") != 0) {
        fprintf(stderr, "zgpt: warning: %s\n", zg_error_message());
        zg_error_clear();
    }
    tr->retainer.log = tr->opts->quiet ? NULL : stdout; /* a line per folder removed, from its thread */
    if (root && zg_ckpt_retainer_start(&tr->retainer, out, tr->cfg->keep_last_k) != 0) trainer_retention_warn(tr);
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
int trainer_bg_poll(trainer *tr) {
    if (!tr->bg_pending) return 0;
    int done = zg_ckpt_bg_done(&tr->bg);
    done = !zg_comm_any(tr->comm, !done);
    return done ? bg_finish(tr) : 0;
}

/* Waits for the save in flight and publishes it (every rank, at the same point). */
int trainer_bg_flush(trainer *tr) { return tr->bg_pending ? bg_finish(tr) : 0; }

/* Before an error ends the run: the save in flight is published when it can be; a failure there is
 * reported beside the error that ends the run. */
void trainer_bg_flush_before_error(trainer *tr) {
    if (trainer_bg_flush(tr) == 0) return;
    fprintf(stderr, "zgpt: warning: %s\n", zg_error_message());
    zg_error_clear();
}

/* An error path that cannot agree with the other ranks: waits for this rank's writer and drops the
 * unpublished save (rank 0 removes its staging folder). */
void trainer_bg_abandon(trainer *tr) {
    if (!tr->bg_pending) return;
    tr->bg_pending = 0;
    if (zg_ckpt_bg_wait(&tr->bg) != 0) zg_error_clear();
    if (tr->rank == 0)
        zg_ckpt_writer_abort(&tr->bg.w);
    else
        zg_ckpt_writer_release(&tr->bg.w);
}

/* A resume's Adam moments start being read on a thread once the master is in place: into the checkpoint
 * snapshot's pinned buffer (reserved from the start of the run and idle until the first save, which
 * waits for the moments first), joined here when its reservation is still in flight, so that no second
 * buffer of gigabytes is pinned, and the upload at the first update runs from pinned memory. */
void trainer_moments_start(trainer *tr) {
    zg_ckpt_snapshot *s = &tr->bg.snap;
    if (zg_ckpt_snapshot_reserving(s)) trainer_snapshot_reserved(tr, 2);
    size_t bytes = 0;
    void *lend = s->be == tr->opt->be ? zg_ckpt_snapshot_lend(s, &bytes) : NULL;
    (void)zg_ckpt_moments_start(&tr->moments, lend, bytes);
}

/* A resume's Adam moments, every rank at the same point (the first update, or a save before it): waits
 * for the reading thread and uploads them; a failure on any rank (a shard that fails its checksum) ends
 * the run before anything uses them. */
int trainer_moments_wait(trainer *tr) {
    if (!tr->moments_pending) return 0;
    tr->moments_pending = 0;
    double t0 = zg_now_s();
    int rc = zg_ckpt_moments_wait(&tr->moments);
    double waited = zg_now_s() - t0;
    double shard_gb = tr->prefetch.size / 1e9, shard_t0 = tr->prefetch.t_start - tr->t_start;
    zg_ckpt_prefetch_free(&tr->prefetch); /* read and joined: its block is the snapshot's, or freed now */
    if (zg_comm_any(tr->comm, rc != 0) && rc == 0) rc = zg_errorf("reading the checkpoint failed on another rank");
    if (rc == 0 && tr->rank == 0 && !tr->opts->quiet && tr->moments.from_prefetch) {
        const zg_ckpt_moments *mo = &tr->moments;
        double read = mo->t_done - mo->t_start;
        printf("resume: parameters ready in %.2f s; optimizer state ready in %.2f s (the shard's %.2f GB read from "
               "%.2f s after the start and checksummed in %.2f s at %.2f GB/s, %s reads, into %s, in place; the Adam "
               "moments uploaded in %.2f s; the first update waited %.2f s for them)\n",
               mo->t_params - tr->t_start, mo->t_ready - tr->t_start, shard_gb, shard_t0, read,
               read > 0 ? shard_gb / read : 0.0, mo->read_mode, mo->where, mo->upload_s, waited);
    } else if (rc == 0 && tr->rank == 0 && !tr->opts->quiet && !tr->moments.sync_reason) {
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

int trainer_moments_before_update(void *ctx) { return trainer_moments_wait(ctx); }

/* Mixed precision with the whole master in this rank's optimizer: model.bin's checksum comes from the
 * snapshot's master (the parameters are its rounding), so no download of the parameters. */
static int params_in_snapshot(const trainer *tr) {
    return tr->cfg->background_checkpoint && tr->opt->master && tr->opt->begin == 0 &&
           tr->opt->end == tr->model.table.num_params;
}

/* Before the first iteration: a bad ZGPT_CKPT_IO is refused now rather than at the first save, and the
 * snapshot's host buffer starts being reserved on a thread of its own (new and resumed runs alike), so
 * that neither the first iteration nor the first save waits while gigabytes are pinned and touched
 * (9.7 s for GPT-2 XL with cudaHostAlloc: docs/PERFORMANCE.md). trainer_snapshot_reserved reports it. */
int trainer_bg_setup(trainer *tr) {
    if (!tr->cfg->save_checkpoints || !tr->cfg->background_checkpoint) return 0;
    zg_ckpt_io_mode mode;
    if (zg_ckpt_io_mode_from_env(&mode) != 0) return -1;
    if (!zg_zero_ckpt_writes_shard(&tr->zero)) return 0;
    /* a resume's shard read from the start is laid out as the snapshot: it becomes the snapshot's host
     * memory (no second block of the state's size), usable once the moments are uploaded from it */
    size_t pf_bytes = 0;
    void *pf_block = zg_ckpt_prefetch_give(&tr->prefetch, &pf_bytes);
    if (pf_block && tr->prefetch.be == tr->opt->be &&
        zg_ckpt_snapshot_take_block(&tr->bg.snap, tr->opt, pf_block, pf_bytes) == 0) {
        if (tr->rank == 0 && !tr->opts->quiet)
            printf("checkpoint snapshot: %.2f GiB of %s host memory: the resume's read of the checkpoint, taken over "
                   "once the optimizer state is uploaded from it (nothing reserved)\n",
                   (double)pf_bytes / (1u << 30), strcmp(tr->be->ops->name, "cuda") == 0 ? "pinned" : "plain");
        return 0;
    }
    if (pf_block) tr->prefetch.given = 0; /* not taken: still the prefetch's to free */
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
void trainer_snapshot_reserved(trainer *tr, int at_save) {
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
    if (shard) trainer_snapshot_reserved(tr, 1); /* the first save waits for the reservation if it is not done */
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
 * a thread from host copies and published at a later boundary (trainer_bg_poll); a save in flight is
 * published first. */
int trainer_save_checkpoint(trainer *tr, zg_precision prec, int improved) {
    if (!tr->cfg->save_checkpoints) return 0;     /* every rank takes this same early return */
    if (trainer_moments_wait(tr) != 0) return -1; /* a save before the first update (a skipped step) */
    /* a delayed parameter update in flight lands first (a consistent checkpoint; the run that goes on
     * without saving flushes at the same evaluation, so a resume is bitwise) */
    zg_zero_flush(&tr->zero);
    double t0 = zg_now_s();
    if (trainer_bg_flush(tr) != 0) return -1; /* at most one save in flight */
    /* the old checkpoints' deletion finishes before this save takes the disk space they free */
    if (tr->rank == 0 && zg_ckpt_retainer_wait(&tr->retainer) != 0) trainer_retention_warn(tr);
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
void trainer_repair_best(trainer *tr) {
    if (tr->best_iter < 0 || !tr->cfg->save_checkpoints) return;
    char tag[64], *src, *best = zg_path_join(tr->cfg->out_dir, "best");
    snprintf(tag, sizeof tag, "iter_%lld", (long long)tr->best_iter);
    src = zg_path_join(tr->cfg->out_dir, tag);
    int64_t have = zg_ckpt_folder_iter(best), want = zg_ckpt_folder_iter(src);
    if (want == tr->best_iter && have != tr->best_iter) {
        if (trainer_link_checkpoint(tr, tag, "best") == 0)
            printf("note: 'best' held iteration %lld; repaired to %s (the best val loss)\n", (long long)have, tag);
        else {
            fprintf(stderr, "zgpt: warning: %s\n", zg_error_message());
            zg_error_clear();
        }
    }
    free(src);
    free(best);
}
