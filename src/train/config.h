/* Training configuration: nanoGPT-named training keys + DeepSpeed's JSON schema, validated.
 *
 * Sources, merged in this order:
 *   1. the config FILE (one JSON object: training keys, and optionally DeepSpeed keys),
 *   2. the DeepSpeed file (--deepspeed), used unchanged; a key present in both must have the same
 *      value (else an error naming the key and both values),
 *   3. --set key.path=value overrides (the value is parsed by the key's type; lists/objects as JSON).
 * Every key is checked against one table (config.c): an unknown key is an error naming it and the
 * closest valid key; a wrong type or range names the key, the value and what is allowed. Aliases
 * (nanoGPT's batch_size, learning_rate, grad_clip, weight_decay, beta1, beta2) must agree with their
 * DeepSpeed counterparts when both are given.
 *
 * The merged JSON (after overrides) is kept as text so checkpoints can record the exact config. */
#ifndef ZG_TRAIN_CONFIG_H
#define ZG_TRAIN_CONFIG_H

#include "monitor/monitor.h"
#include "text/dataloader.h"
#include "train/loss_scaler.h"
#include "train/schedule.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { ZG_PREC_AUTO = 0, ZG_PREC_FP32, ZG_PREC_BF16, ZG_PREC_FP16 } zg_precision;

/* zero_optimization: accepted and stored here; acted on by the ZeRO engine. -1 = not given (auto). */
typedef struct {
    int stage;
    int overlap_comm, contiguous_gradients, reduce_scatter, allgather_partitions;
    int64_t reduce_bucket_size, allgather_bucket_size;
    int64_t stage3_prefetch_bucket_size, stage3_param_persistence_threshold, stage3_max_live_parameters,
        stage3_max_reuse_distance;
} zg_zero_config;

typedef struct {
    /* model */
    char *init_from;   /* "scratch", "resume", "gpt2".."gpt2-xl", "hf:PATH", or a checkpoint folder */
    int n_layer, n_head, n_embd, block_size, vocab_size; /* 0 = not given (from init_from / defaults) */
    int recompute;     /* recompute GELU in backward */
    int recompute_layernorm; /* LayerNorm outputs recomputed in backward: GPT2_RECOMPUTE_LN1 / _LN2 flags
                              * (true: both; "ln1" / "ln2": that one) */
    int recompute_num_layers; /* both apply to the first N layers only (0: all) */
    int memory_efficient_layernorm; /* LayerNorm backward from the output (GPT2_LN_FROM_OUTPUT): the residual
                                     * stream is not kept per layer; excludes recompute_layernorm */

    /* data */
    zg_data_source *data; /* n_data sources; paths owned here */
    int n_data;
    zg_sample_mode sample_mode;

    /* loop */
    char *out_dir;
    int64_t max_iters, eval_interval, eval_iters, log_interval;
    int always_save_checkpoint;
    int save_checkpoints; /* 0: write no checkpoint at all (benchmarks, throwaway runs) */
    int64_t early_stopping_patience; /* 0 = off: evaluations without improvement before stopping */
    int64_t keep_last_k;             /* iter_N checkpoints kept (best and final are always kept) */
    uint64_t seed;
    char *device;                    /* "cpu", "cuda", "auto" */

    /* batch as given (-1 = not given), and as resolved by zg_train_config_resolve_batch */
    int64_t given_train_batch_size, given_micro_batch, given_grad_accum;
    int64_t train_batch_size, micro_batch, grad_accum;
    int world_size;

    /* optimizer */
    int adam_w_mode; /* 1: AdamW (decoupled); "Adam" with weight_decay 0 is the same update */
    double lr, beta1, beta2, eps, weight_decay, grad_clip;

    zg_schedule_config sched;

    /* precision */
    zg_precision dtype;  /* nanoGPT's dtype key (auto/fp32/bf16/fp16) */
    int fp16_enabled, bf16_enabled;
    zg_loss_scaler_config scaler;

    zg_zero_config zero;

    int steps_per_print; /* tolerated DeepSpeed key, stored */
    int wall_clock_breakdown; /* per-phase step times (each phase synchronised) on the log line */
    int comm_max_ctas;        /* NCCL: most thread blocks per collective; 0 NCCL's choice, -1 auto
                                 (zg_train_config_comm_max_ctas) */

    zg_monitor_config monitor; /* tensorboard / csv_monitor / wandb sections (and nanoGPT's wandb_* keys) */

    char *json_text; /* the merged, validated configuration (compact JSON) */
} zg_train_config;

/* Loads and validates. ds_path and sets may be NULL/0. Returns -1 with a one-line error. */
int zg_train_config_load(zg_train_config *cfg, const char *path, const char *ds_path, const char *const *sets,
                         int n_sets);
/* Validates a JSON text (as stored in a checkpoint, or for tests); name is used in messages. */
int zg_train_config_parse(zg_train_config *cfg, const char *json_text, const char *name);
void zg_train_config_free(zg_train_config *cfg);

/* The model's activation flags (gpt2_model.recompute: GPT2_RECOMPUTE_*, GPT2_LN_FROM_OUTPUT) the config
 * asks for (`recompute` = GELU, `recompute_layernorm`, `memory_efficient_layernorm`). */
int zg_train_config_recompute(const zg_train_config *cfg);
/* The NCCL communicator's limit on thread blocks per collective for this config (0: NCCL's choice).
 * comm_max_ctas -1 (auto): ZG_COMM_LEAN_CTAS when every rank is on one machine (one_machine) and a
 * micro-step has at least ZG_COMM_LEAN_MIN_TOKENS tokens per GPU, else NCCL's choice. Why: a
 * collective overlapped with backward holds its thread blocks' SMs away from the compute kernels
 * beside it; with many tokens per micro-step the gradient traffic (2 bytes per parameter) is small
 * next to the compute (6 FLOPs per parameter and token), so a few blocks carry it in time and the
 * compute keeps its SMs (GPT-2 XL, micro-batch 16, 2 H200s: 349 -> 344 ms per step, medians of 13).
 * With few tokens (micro-batch 1) the reductions are the bottleneck and need all the blocks NCCL
 * picks. The ratio does not depend on the model's size. Across machines
 * NCCL spreads its blocks over the network adapters, and a cap measured over NVLink could starve
 * them, so auto leaves those jobs to NCCL. */
#define ZG_COMM_LEAN_CTAS 4
#define ZG_COMM_LEAN_MIN_TOKENS 8192
int zg_train_config_comm_max_ctas(const zg_train_config *cfg, int one_machine);

/* Resolves train_batch_size = micro_batch * grad_accum * world_size (any two determine the third;
 * -1 with an error when inconsistent or not divisible). */
int zg_train_config_resolve_batch(zg_train_config *cfg, int world_size);
/* The precision training runs at on a backend ("cpu" / "cuda"): fp16/bf16 sections first, then
 * dtype; auto = bf16 on CUDA, fp32 on the CPU. */
zg_precision zg_train_config_precision(const zg_train_config *cfg, const char *backend_name);
const char *zg_precision_name(zg_precision p);

/* The list of every valid key path (for suggestions and docs). */
size_t zg_train_config_keys(const char *const **out);

#endif
