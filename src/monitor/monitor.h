/* Training monitors, as DeepSpeed configures them: TensorBoard event files and CSV files, written by
 * rank 0 under output_path/job_name/ (output_path "" = the current folder, job_name
 * "DeepSpeedJobName", DeepSpeed's defaults). wandb has no network client here: it turns the
 * TensorBoard output on and says how to upload it (`wandb sync --sync-tensorboard DIR`).
 *
 * Every value goes to each enabled sink; writes land in stdio buffers (no syscall per step, no
 * fsync) and reach the files at zg_monitor_flush (each evaluation) and zg_monitor_free (exit). A sink
 * that fails to write is turned off with one warning; training goes on.
 *
 * The tags (docs/FORMATS.md) are the ZG_TAG_* below: one table, used by the trainer and the docs. */
#ifndef ZG_MONITOR_MONITOR_H
#define ZG_MONITOR_MONITOR_H

#include "monitor/tb_events.h"

#include <stdint.h>
#include <stdio.h>

#define ZG_MONITOR_DEFAULT_JOB "DeepSpeedJobName"

#define ZG_TAG_TRAIN_LOSS "train/loss"
#define ZG_TAG_LR "train/lr"
#define ZG_TAG_GRAD_NORM "train/grad_norm"
#define ZG_TAG_LOSS_SCALE "train/loss_scale"
#define ZG_TAG_TOKENS_PER_SEC "train/tokens_per_sec"
#define ZG_TAG_MFU "train/mfu"
#define ZG_TAG_PEAK_MEMORY "train/peak_memory_bytes"
#define ZG_TAG_EVAL_TRAIN_LOSS "eval/train_loss"
#define ZG_TAG_EVAL_VAL_LOSS "eval/val_loss"
#define ZG_TAG_CONFIG "config"

typedef struct {
    int enabled;
    char *output_path; /* "" = the current folder */
    char *job_name;
} zg_monitor_sink_config;

typedef struct {
    zg_monitor_sink_config tensorboard, csv;
    int wandb;            /* wandb.enabled or nanoGPT's wandb_log */
    char *wandb_project;  /* wandb.project / wandb_project (NULL: none given) */
    char *wandb_team;     /* wandb.team (NULL: none) */
    char *wandb_run_name; /* nanoGPT's wandb_run_name (NULL: none) */
} zg_monitor_config;

void zg_monitor_config_free(zg_monitor_config *c);
/* The folder a sink writes to (heap string): output_path/job_name. */
char *zg_monitor_sink_dir(const zg_monitor_sink_config *s);
/* wandb without a TensorBoard section: TensorBoard under out_dir/tensorboard/<wandb_run_name or
 * job_name>. Writes the one line telling where the logs are and how to upload them into note
 * (empty when wandb is off). */
void zg_monitor_config_apply_wandb(zg_monitor_config *c, const char *out_dir, char *note, size_t cap);

typedef struct {
    char *tag;
    FILE *f;
} zg_monitor_csv;

typedef struct {
    FILE *tb; /* the event file (NULL: TensorBoard off) */
    char *tb_path;
    char *csv_dir; /* NULL: CSV off */
    zg_monitor_csv *csv;
    int n_csv;
    int resuming;
    int64_t keep_train_below, keep_eval_through; /* resume: CSV rows kept from the earlier run */
    zg_pb_buf buf;
} zg_monitor;

/* Opens the enabled sinks (makes their folders). resume_iter < 0: a new run (CSV series start
 * over); else the run continues at resume_iter after an evaluation at last_eval_iter, and CSV rows
 * the earlier run wrote past those points are dropped (TensorBoard drops them itself when a step
 * repeats). -1 with an error naming the folder. */
int zg_monitor_init(zg_monitor *m, const zg_monitor_config *c, int64_t resume_iter, int64_t last_eval_iter);
int zg_monitor_active(const zg_monitor *m);
void zg_monitor_scalar(zg_monitor *m, const char *tag, int64_t step, double value);
/* Text (TensorBoard only: CSV holds numbers). */
void zg_monitor_text(zg_monitor *m, const char *tag, int64_t step, const char *text);
/* Writes the buffers out. */
void zg_monitor_flush(zg_monitor *m);
void zg_monitor_free(zg_monitor *m);

#endif
