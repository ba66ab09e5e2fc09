/* What the trainer's modules share (trainer.c: set-up, the loop, the run; trainer_ckpt.c: its checkpoints:
 * state.json, saves in the background, publication, a resume's optimizer state). Not for use elsewhere. */
#ifndef ZG_TRAIN_TRAINER_INTERNAL_H
#define ZG_TRAIN_TRAINER_INTERNAL_H

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
#include "train/ckpt_prefetch.h"
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
    zg_ckpt_prefetch prefetch; /* one process's resume: the shard read from the start (ckpt_prefetch.h) */
    double open_s;             /* seconds the resumed checkpoint's opening took (manifest, headers or checksums) */
    zg_ckpt_retainer retainer; /* rank 0: old checkpoints deleted beside training (keep_last_k) */
    double t_start;            /* zg_now_s() when the run started: the resume's timing lines count from it */
    double t_reserve;          /* zg_now_s() when the snapshot's reservation started (trainer_bg_setup) */
} trainer;

/* ---- trainer_ckpt.c ---- */
/* state.json of a checkpoint into the trainer (iteration, best val loss, scaler, data positions). */
int trainer_load_state(trainer *tr, const zg_ckpt *ck);
/* A number from a JSON object (state.json, metrics.jsonl lines); -1 when absent or not a number. */
int trainer_json_num(const cJSON *o, const char *k, double *out);
/* A save at this boundary (background when it can, else synchronous); improved: val loss improved. */
int trainer_save_checkpoint(trainer *tr, zg_precision prec, int improved);
/* out_dir/<link> (best, final) as hard links to the files of out_dir/<tag>. */
int trainer_link_checkpoint(trainer *tr, const char *tag, const char *link);
/* The background save in flight: published when done (poll), waited for (flush), waited for before an
 * error is reported (flush_before_error), or dropped with `latest` untouched (abandon). */
int trainer_bg_poll(trainer *tr);
int trainer_bg_flush(trainer *tr);
void trainer_bg_flush_before_error(trainer *tr);
void trainer_bg_abandon(trainer *tr);
/* Before the first iteration: the snapshot's host memory (a resume's prefetched shard, or reserved on a
 * thread); trainer_snapshot_reserved joins a reservation and reports it (at_save: 0 a boundary, 1 the
 * first save, 2 a resume's read of the moments). */
int trainer_bg_setup(trainer *tr);
void trainer_snapshot_reserved(trainer *tr, int at_save);
/* A resume's Adam moments: their read started (after the master), waited for and uploaded before the
 * first update or save (before_update is train_step's hook); reported once. */
void trainer_moments_start(trainer *tr);
int trainer_moments_wait(trainer *tr);
int trainer_moments_before_update(void *ctx);
/* Old checkpoints' deletion failed: said once (the run goes on). */
void trainer_retention_warn(const trainer *tr);
/* `best` repaired at a resume when a crash left it behind `latest`'s best iteration. */
void trainer_repair_best(trainer *tr);

#endif
