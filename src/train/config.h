/* Training configuration: nanoGPT-named training keys + DeepSpeed's JSON schema, validated.
 *
 * Sources, merged in this order:
 *   1. the config FILE (one JSON object: training keys, and optionally DeepSpeed keys),
 *   2. the DeepSpeed file (--deepspeed), used unchanged; a key present in both with different values is
 *      an error unless one of them is "auto" (then the other value is used),
 *   3. --set key.path=value overrides: they win over both files (no conflict is reported for a key
 *      that --set gives); the value is parsed by the key's type; lists/objects as JSON.
 * Every key is described by one table (config.c): its type and range, whether "auto" is allowed, the
 * field of zg_train_config it fills and its default, and, for a key zgpt does not act on, the one
 * line the run prints instead. DeepSpeed's other spellings (bfloat16, the names without stage3_,
 * cpu_offload, ...) are read as their canonical keys. All problems of a load are reported together
 * (one per line); an unknown key names the key DeepSpeed users usually mean (a table of known renames
 * first, then the closest valid key).
 *
 * "auto" (the Hugging Face Trainer's convention) takes zgpt's resolved value: the nanoGPT key the
 * Trainer argument corresponds to (learning_rate, batch_size, grad_clip, beta1/beta2, weight_decay,
 * warmup_iters, lr_decay_iters / max_iters, dtype), or its default. Every resolved "auto" and every
 * accepted key that does not act are listed in `notes` (printed by the training banner and plan).
 *
 * The merged JSON (after overrides) is kept as text so checkpoints can record the exact config. */
#ifndef ZG_TRAIN_CONFIG_H
#define ZG_TRAIN_CONFIG_H

#include "core/error.h"
#include "model/gpt2.h"
#include "monitor/monitor.h"
#include "text/dataloader.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"
#include "train/schedule.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { ZG_PREC_AUTO = 0, ZG_PREC_FP32, ZG_PREC_BF16, ZG_PREC_FP16 } zg_precision;

typedef enum { ZG_OFFLOAD_NONE = 0, ZG_OFFLOAD_CPU, ZG_OFFLOAD_NVME } zg_offload_device;

/* zero_optimization: accepted and stored here; acted on by the ZeRO engine. -1 = not given (auto). */
typedef struct {
    int stage;
    int overlap_comm, contiguous_gradients, reduce_scatter, allgather_partitions;
    int64_t reduce_bucket_size, allgather_bucket_size;
    int64_t stage3_prefetch_bucket_size, stage3_param_persistence_threshold, stage3_max_live_parameters,
        stage3_max_reuse_distance;
    /* ZeRO-Offload (src/train/zero_offload.h): offload_optimizer cpu keeps the rank's optimizer state on
     * the host and runs AdamW there; offload_param cpu (stage 3 only) keeps its parameter shard there
     * (src/train/zero_offload_param.c); nvme is refused at load */
    zg_offload_device offload_optimizer, offload_param;
    int offload_pin_memory;       /* offload_optimizer.pin_memory (or the legacy cpu_offload_use_pin_memory) */
    int offload_dpu;              /* offload_optimizer.delayed_param_update: the host step overlaps the next one */
    int64_t offload_dpu_warmup;   /* offload_optimizer.delayed_param_update_warmup: steps before the delay starts */
    int offload_param_pin_memory; /* offload_param.pin_memory (or the legacy cpu_offload_use_pin_memory) */
} zg_zero_config;

typedef struct {
    /* model */
    char *init_from; /* "scratch", "resume", "gpt2".."gpt2-xl", "hf:PATH", or a checkpoint folder */
    int n_layer, n_head, n_embd, block_size, vocab_size; /* 0 = not given (from init_from / defaults) */
    int recompute;                                       /* recompute GELU in backward */
    int recompute_layernorm;        /* LayerNorm outputs recomputed in backward: GPT2_RECOMPUTE_LN1 / _LN2 flags
                              * (true: both; "ln1" / "ln2": that one) */
    int recompute_num_layers;       /* both apply to the first N layers only (0: all) */
    int memory_efficient_layernorm; /* LayerNorm backward from the output (GPT2_LN_FROM_OUTPUT): the residual
                                     * stream is not kept per layer; excludes recompute_layernorm */
    int lm_head_chunks; /* gpt2_model.head_chunks: the LM head in row chunks (0 auto: the default, 1 none) */

    /* data */
    zg_data_source *data; /* n_data sources; paths owned here */
    int n_data;
    zg_sample_mode sample_mode;

    /* loop */
    char *out_dir;
    int64_t max_iters, eval_interval, eval_iters, log_interval;
    int always_save_checkpoint;
    int save_checkpoints;            /* 0: write no checkpoint at all (benchmarks, throwaway runs) */
    int background_checkpoint;       /* 1: a writer thread writes a host snapshot while training goes on */
    int64_t early_stopping_patience; /* 0 = off: evaluations without improvement before stopping */
    int64_t keep_last_k;             /* iter_N checkpoints kept (best and final are always kept) */
    uint64_t seed;
    char *device; /* "cpu", "cuda", "auto" */

    /* batch as given (-1 = not given), and as resolved by zg_train_config_resolve_batch */
    int64_t given_train_batch_size, given_micro_batch, given_grad_accum;
    int64_t train_batch_size, micro_batch, grad_accum;
    int world_size;

    /* optimizer */
    zg_optimizer_kind optim; /* optimizer.type: Adam/AdamW (decoupled weight decay) or Lamb */
    int adam_w_mode;         /* 1: AdamW (decoupled); "Adam" with weight_decay 0 is the same update */
    int bias_correction;     /* optimizer.params.bias_correction (default true) */
    int eps_inside_sqrt;     /* Lamb: sqrt(v + eps) instead of sqrt(v) + eps */
    double lr, beta1, beta2, eps, weight_decay, grad_clip;
    double max_coeff, min_coeff; /* Lamb's trust-ratio clamp */

    zg_schedule_config sched;

    /* precision */
    zg_precision dtype; /* nanoGPT's dtype key (auto/fp32/bf16/fp16) */
    int fp16_enabled, bf16_enabled;
    zg_loss_scaler_config scaler;

    zg_zero_config zero;

    zg_monitor_config monitor; /* tensorboard / csv_monitor / wandb sections (and nanoGPT's wandb_* keys) */

    int steps_per_print;               /* tolerated DeepSpeed key, stored */
    int wall_clock_breakdown;          /* per-phase step times (each phase synchronised) on the log line */
    int comm_max_ctas;                 /* NCCL: most thread blocks per collective; 0 NCCL's choice, -1 auto
                                 (zg_train_config_comm_max_ctas) */
    int grad_accum_local_layers;       /* ZeRO stages 2-3: -1 auto (embeddings + ln_f gradients accumulated locally,
                                    reduced on the last micro-step), 0 every micro-step reduces everything, N:
                                    layers 0..N-1 too (zg_zero_opts.grad_accum_local_layers) */
    int grad_accum_local_layers_given; /* 1: the config or --set gave it (a note where it has nothing to do) */

    char *json_text; /* the merged, validated configuration (compact JSON) */
    char **notes;    /* "auto: KEY = VALUE (from ...)" and "note: ..." lines, in table order */
    int n_notes;
} zg_train_config;

/* Loads and validates. ds_path and sets may be NULL/0. Returns -1 with one error: the problem, or "N problems in
 * the configuration (fix them all):" and each. */
int zg_train_config_load(zg_train_config *cfg, const char *path, const char *ds_path, const char *const *sets,
                         int n_sets);
/* The same, each problem appended to `problems` instead (a caller reporting them with its own: the launcher's
 * checks); -1 when there were any (cfg then holds nothing to free). */
int zg_train_config_load_lines(zg_train_config *cfg, const char *path, const char *ds_path, const char *const *sets,
                               int n_sets, zg_lines *problems);
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
 * -1 with an error when inconsistent or not divisible). world_size 0: not known yet (loading the config,
 * before a launcher has said how many processes run): only what fails for every world size is an
 * error, and the three keys given together imply the world size (else 1). */
int zg_train_config_resolve_batch(zg_train_config *cfg, int world_size);
/* The precision training runs at on a backend ("cpu" / "cuda"): fp16/bf16 sections first, then
 * dtype; auto = bf16 on CUDA, fp32 on the CPU. */
zg_precision zg_train_config_precision(const zg_train_config *cfg, const char *backend_name);
const char *zg_precision_name(zg_precision p);

/* Prints the notes (every resolved "auto" and every accepted key that does not act), one per line. */
void zg_train_config_print_notes(const zg_train_config *cfg, FILE *f);

/* The model shape the config asks for: `base` (a named or loaded model's shape; NULL: GPT-2 124M, the
 * nanoGPT default) with the config's n_layer, n_head, n_embd, block_size, vocab_size over it. For the
 * trainer (init_from scratch) and zgpt plan. -1 with an error when the result is not a valid shape. */
int zg_train_config_model_shape(const zg_train_config *cfg, const gpt2_config *base, gpt2_config *out);

/* The optimizer's settings for this config. */
void zg_train_config_optimizer(const zg_train_config *cfg, zg_optimizer_config *out);

/* The list of every valid key path (for suggestions and docs). */
size_t zg_train_config_keys(const char *const **out);

#endif
