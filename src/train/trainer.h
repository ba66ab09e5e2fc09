/* The training loop, for one process or many (the same path: one process runs the ZeRO engine at
 * stage 0 over the single-process communicator).
 *
 * Per optimizer step (zg_train_step, src/train/train_step.h): grad_accum micro-steps of forward +
 * backward (gradient of the mean loss over the global batch), the global gradient norm (also the fp16
 * overflow check), clipping, the scheduled lr, one AdamW (or Lamb) step. Evaluation every eval_interval steps (and at iteration 0 and the end)
 * estimates train and val loss over eval_iters batches each, from fixed evaluation batches, so the
 * training data stream is never disturbed by evaluation. Checkpoints when val improves or
 * always_save_checkpoint, on SIGINT/SIGTERM (at the next iteration boundary), and at the end; with
 * background_checkpoint a writer thread writes them while training goes on, and they are published
 * at a later iteration boundary (one in flight at a time; docs/FORMATS.md, "Background saves").
 *
 * Output: "step N: train loss X, val loss Y" per evaluation, "iter N: loss X, time Y ms, lr Z,
 * tok/s W, norm G, eta E" every log_interval, out_dir/metrics.jsonl (one JSON object per line), and
 * on rank 0 the TensorBoard / CSV monitors of the config (src/monitor/monitor.h).
 *
 * Test hooks (documented for tests only): ZGPT_TEST_STOP_AT_ITER=K requests a stop (as SIGTERM does) at the
 * boundary before iteration K; ZGPT_TEST_NAN_AT_ITER=K makes the loss of iteration K NaN,
 * to exercise the divergence stop. */
#ifndef ZG_TRAIN_TRAINER_H
#define ZG_TRAIN_TRAINER_H

#include "train/config.h"

typedef struct {
    const char *device; /* overrides cfg->device when non-NULL */
    int resume;         /* --resume: continue from out_dir/latest */
    int quiet;          /* no per-iteration lines (tests) */
} zg_train_options;

/* Runs training; returns 0 (finished, early-stopped or interrupted with a checkpoint), or -1 with a
 * one-line error (nothing half-written: the last good checkpoint stays). */
int zg_train_run(zg_train_config *cfg, const zg_train_options *opts);

/* ---- checks shared by the trainer and the launcher (train_preflight.c) ---- */

/* The checks a launcher makes once before it starts `world` workers (zg_launch_opts.preflight), each problem
 * appended to pr (which may hold the config's own already: zg_train_config_load_lines): the batch keys for that
 * world size, "data" given and its paths present, out_dir against --resume (those three only with a loaded cfg;
 * NULL when it did not load), and the environment's switches (ZGPT_REDUCE_CARRY, ZGPT_OFFLOAD_STEP); then, if pr
 * is still empty, an init_from model from the hub is found in the cache or downloaded (once, here). Each worker
 * makes the same checks again as it starts. */
void zg_train_preflight(const zg_train_config *cfg, const zg_train_options *opts, int world, zg_lines *pr);
/* --resume, or init_from "resume". */
int zg_train_resume_requested(const zg_train_config *cfg, const zg_train_options *opts);
/* out_dir against resuming: -1 with the error when a resume finds no 'latest' checkpoint there, or a fresh run
 * finds one. */
int zg_train_out_dir_check(const zg_train_config *cfg, int resume);
/* "data" given, and every source's path present: 0, or -1 with the error. */
int zg_train_data_check(const zg_train_config *cfg);
/* ZGPT_OFFLOAD_STEP (v0.12's offload step path, for same-call A/B runs): 1 for "v12", 0 unset, -1 with an
 * error otherwise. */
int zg_train_offload_step_env(void);

#endif
