/* The ZeRO engine: data parallelism over the model's flat parameter/gradient buffers, stages 0-3.
 *
 * Sharding. The flat buffer of n elements is cut into world-size shards of S = ceil(n / W) elements:
 * rank r owns [r*S, min((r+1)*S, n)) (the last shards may be short or empty; nothing requires W to
 * divide n). The optimizer (src/train/optimizer.h) is built over exactly that range at stages 1-3
 * and over [0, n) at stage 0.
 *
 * Gradient reduction works on "pieces": a range of the flat buffer cut at shard boundaries, each piece
 * reduced (sum) in place to its owner with zg_comm_ireduce. A set of pieces covering a bucket is a
 * reduce-scatter of that bucket into the owners' shards with no padding and no staging copy (traffic:
 * each rank sends each element once, as in a ring reduce-scatter). Parameter all-gathers are the
 * mirror image: each owner broadcasts its pieces in place (zg_comm_ibroadcast).
 *
 *  stage 0: grads accumulate locally over micro-steps; all-reduced (in reduce_bucket_size chunks) at
 *           the accumulation boundary; every rank updates the whole buffer.
 *  stage 1: grads accumulate locally; at the boundary reduced to their owners (reduce-scatter); each
 *           rank updates its shard (fp32 master + Adam m, v for the shard only); the updated
 *           parameters are all-gathered in allgather_bucket_size pieces.
 *  stage 2: as the model's backward reports completed ranges (gpt2_hooks.grads_ready, last layer
 *           first), they are packed into buckets of reduce_bucket_size elements and reduced to their
 *           owners while backward goes on (overlap_comm: asynchronously, up to two buckets in flight);
 *           each owner accumulates its part into its own gradient shard (contiguous_gradients).
 *           Over a model (zg_zero_init_model) no full gradient buffer exists: each layer's gradients
 *           live in a pool buffer from its backward until its reductions are done (the pool holds
 *           the layer in backward, < 1 pending bucket and the buckets in flight:
 *           zg_zero_grad_pool_count), the embeddings + ln_f in one resident buffer (wte's gradient
 *           completes last). Over flat buffers (zg_zero_init) the full buffer is a per-micro-step
 *           scratch, zeroed after every micro-step. Over a model with gradient accumulation, the
 *           embeddings + ln_f and layers 0..N-1 may accumulate locally over a step's micro-steps and be
 *           reduced on its last only (grad_accum_local_layers: zg_zero_grad_schedule_of below).
 *           With overlap_comm over a model, the updated parameters are all-gathered per layer without
 *           waiting; the next forward waits for each layer's gather just before the layer
 *           (before_layer), so the gathers overlap it.
 *  stage 3: as stage 2, and parameters are sharded too: before_layer gathers a layer's parameters
 *           (waiting on the prefetch started at the previous layer) and starts the next layer's
 *           prefetch; after_layer releases them. Over a model the rank keeps only its parameter shard;
 *           a layer is gathered into one of two layer buffers (current + prefetched next), the
 *           embeddings + ln_f into a resident one (docs/DISTRIBUTED.md gives the formula). Over flat
 *           buffers the gather lands in the full buffer and a release zeroes the non-owned parts.
 *           offload_param (model mode only): the shard is host memory and each slot's part is
 *           uploaded into its buffer before the gather (src/train/zero_offload_param.c).
 *  one rank with ZeRO-Offload (zg_zero_grads_direct), any stage: the gradients accumulate in the
 *           model's full buffer exactly as at stage 0 (nothing to reduce); parameters as the stage says.
 *
 * Gradient scaling: the model's backward is run exactly as in one process (loss_scale folds the fp16
 * loss scale and 1/grad_accum); the engine divides by the world size. Clipping uses the global norm
 * over all shards; an overflow (non-finite gradient anywhere) is agreed by every rank (all-reduce max)
 * and the step is skipped everywhere.
 *
 * Use (every rank, same order):
 *   zg_zero_init_model(&z, &opts, comm, be, &model, &ocfg);   // places grads/params, installs hooks
 *   per micro-step: gpt2_forward(...); gpt2_backward(...); zg_zero_micro_end(&z);
 *   at the boundary: zg_zero_step(&z, lr, inv_loss_scale, clip, &info);
 * The engine zeroes the model's gradients itself; do not call gpt2_zero_grad between steps.
 * zg_train_step (src/train/train_step.h) is that sequence; one process runs it at stage 0 over the
 * single-process communicator, where it computes what one optimizer over [0, n) would: the gradients
 * zeroed at init and after each step, the sum of squares over the whole buffer, one update of [0, n).
 */
#ifndef ZG_TRAIN_ZERO_H
#define ZG_TRAIN_ZERO_H

#include "backend/backend.h"
#include "dist/comm.h"
#include "model/gpt2.h"
#include "train/config.h"
#include "train/optimizer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int stage;                    /* 0..3 */
    size_t reduce_bucket_size;    /* elements per gradient bucket (DeepSpeed default 5e8) */
    size_t allgather_bucket_size; /* elements per parameter all-gather piece (default 5e8) */
    int overlap_comm;             /* 1: stage 2/3 buckets reduce while backward continues */
    int contiguous_gradients;     /* accepted; stage 2/3 always accumulate into one contiguous shard */
    int offload_optimizer;        /* 1: ZeRO-Offload (stages 1-3): the optimizer state on the host, AdamW on
                                     the CPU (src/train/zero_offload.h) */
    int offload_pin_memory;       /* offload: page-locked optimizer state (staging is always pinned) */
    int offload_dpu;              /* offload: delayed parameter update (the host step of step t runs during t+1) */
    int64_t offload_dpu_warmup;   /* offload_dpu: optimizer steps taken without the delay first */
    int offload_param;            /* 1: stage 3 over a model: the rank's parameter shard in host memory, each
                                     layer's part uploaded just before use (src/train/zero_offload_param.c) */
    int offload_param_pin_memory; /* offload_param: the host parameter shard page-locked */
    int grad_accum;               /* micro-steps per optimizer step (0: unknown); offload uses it to send the
                                     gradients to the host during the last micro-step's backward */
    int grad_accum_local_layers;  /* stages 2-3: which gradients accumulate locally over the micro-steps of a step
                                     and are reduced only on the last (zg_zero_grad_schedule_of): -1 auto (the
                                     embeddings + ln_f), 0 none (every micro-step reduces everything), N the
                                     embeddings + ln_f and layers 0..N-1 (persistent buffers) */
    int offload_v12;              /* offload: v0.12's step path, for same-call comparisons (ZGPT_OFFLOAD_STEP=v12):
                                     at world size 1 the gradients still go through the stage's layer pool and
                                     shard every micro-step, and the host AdamW waits for every download */
} zg_zero_opts;

/* Memory of one rank, in bytes, by category. Filled by zg_zero_plan() (prediction) and by
 * zg_zero_memory() (what the engine and the model actually hold). */
typedef struct {
    size_t params;          /* parameters (param dtype): full; model mode stage 3: shard + gathered buffers */
    size_t grads;           /* gradient buffers: full at stages 0-1 (and flat mode); model mode stages 2-3:
                           embeddings + ln_f + the layer pool (per-micro-step scratch, never full) */
    size_t grad_shard;      /* stage 2-3: the rank's accumulated gradient shard */
    size_t optimizer;       /* fp32 master (low-precision params only) + Adam m, v for the rank's range */
    size_t comm;            /* engine staging buffers + communicator scratch (peak) */
    size_t activations;     /* activation estimate (plan only; 0 from the engine) */
    size_t host;            /* host memory (ZeRO-Offload: optimizer state + staging buffers; offload_param: the
                               parameter shard); not in the total */
    size_t optimizer_state; /* the optimizer state's bytes wherever it lives (a checkpoint snapshot's size) */
} zg_zero_memory;

typedef struct {
    double grad_norm; /* global norm of the averaged gradient (before clipping, after unscaling) */
    int overflow;     /* 1: non-finite gradient on some rank; step skipped on every rank */
    float clip_coef;  /* applied clipping coefficient (1 = none) */
} zg_zero_step_info;

typedef struct zg_zero_pending zg_zero_pending; /* private: a collective in flight */
typedef struct zg_zero_offload zg_zero_offload; /* private: ZeRO-Offload state (zero_offload.c) */
/* private: offload_param state (zero_offload_param.c) */
typedef struct zg_zero_param_offload zg_zero_param_offload;

typedef struct {
    zg_zero_opts o;
    zg_comm *comm;
    zg_backend *be;
    const gpt2_param_table *table;
    size_t n;             /* elements of the flat buffers */
    size_t shard;         /* S = ceil(n / W) */
    size_t begin, end;    /* this rank's range */
    void *params, *grads; /* the model's buffers */
    zg_dtype pdt, gdt;
    zg_optimizer opt; /* over [begin, end) (stage 0: [0, n)) */
    int opt_ready;
    void *grad_shard; /* stage 2-3: (end-begin) elements of grad dtype */
    int direct;       /* ZeRO-Offload at world size 1 (zg_zero_grads_direct): the gradients accumulate in the
                         model's full buffer as at stage 0; no pool, no shard, no reduction */
    int micro;        /* micro-steps since the last optimizer step */
    int reduced;      /* zg_zero_grad_norm done for this step */
    /* stage 2-3 bucketing */
    size_t pend_lo, pend_hi;   /* reported but not yet launched: [pend_lo, pend_hi) */
    size_t reported;           /* elements reported in this backward */
    zg_zero_pending *inflight; /* FIFO of reductions in flight */
    int n_inflight_buckets;
    /* stage 3 */
    int n_layer;
    int *gathered;               /* per slot (layer + 1): 0 released, 1 gathering, 2 gathered */
    zg_zero_pending **gathering; /* per slot: broadcasts in flight */
    long n_gathers, n_releases;  /* statistics (tests) */
    size_t max_bucket_seen;      /* largest bucket launched (tests) */
    /* model mode (zg_zero_init_model): the engine places the model's groups (gpt2_group_count) */
    gpt2_model *model;
    int n_groups;               /* n_layer + 2 */
    size_t layer_max, resident; /* elements: largest layer; embeddings + ln_f */
    /* stages 2-3: gradients without a full buffer */
    void *grad_resident; /* embeddings + ln_f gradients (wte's completes last) */
    void **grad_pool;    /* grad_pool_n buffers of layer_max elements */
    int grad_pool_n, grad_pool_used, grad_pool_peak;
    int *grad_pool_free;    /* stack of free pool indices (grad_pool_n - grad_pool_used on it) */
    int *group_pool;        /* per group: pool index holding its gradients, -1 */
    size_t *group_launched; /* per group: elements handed to reductions in this backward */
    int *group_inflight;    /* per group: reductions in flight */
    /* grad_accum_local_layers (zero_local.c): parts accumulated locally over the micro-steps of a step,
     * reduced on the last one only */
    int local_emb;          /* the embeddings + ln_f (grad_resident) */
    int local_layers;       /* layers 0 .. local_layers-1, each in its grad_local buffer */
    void **grad_local;      /* local_layers persistent buffers of each layer's size */
    size_t n_reduced_elems; /* gradient elements handed to reductions so far (tests) */
    /* A micro-step that is not its step's last leaves its last reductions in flight (carry_reduces: stage 2-3
     * over a model with overlap_comm, no offload; ZGPT_REDUCE_CARRY=0 turns it off): they run under the next
     * micro-step's forward, and its backward waits for a layer buffer only when it needs one. */
    int carry_reduces;
    long n_carried; /* buckets left in flight at a micro-step's end (tests) */
    /* stage 3: parameters without a full buffer */
    void *param_shard;      /* this rank's (end - begin) parameters (param dtype); the optimizer's */
    void *param_resident;   /* gathered embeddings + ln_f (slot 0) */
    void *param_pool[2];    /* gathered layers: the current one and the prefetched next */
    int param_pool_slot[2]; /* slot using it, -1 free */
    void *param_full;       /* zg_zero_gather_all: a temporary full copy (checkpoints, export) */
    zg_zero_offload *off;   /* ZeRO-Offload (opts.offload_optimizer), else NULL */
    /* offload_param (opts.offload_param): param_shard is host memory; else NULL */
    zg_zero_param_offload *poff;
} zg_zero;

/* Defaults as DeepSpeed: stage 0, buckets 5e8, overlap on, contiguous gradients on. */
void zg_zero_opts_default(zg_zero_opts *o);
/* From the config's zero_optimization section (-1 fields keep the defaults). */
void zg_zero_opts_from_config(const zg_zero_config *c, zg_zero_opts *o);

/* Creates the engine over the model's buffers (grads must be allocated) and the optimizer for this
 * rank's range. Broadcasts rank 0's parameters to every rank (so every rank starts identical) and, at
 * stage 3, releases the parts this rank does not own. ocfg: AdamW settings. -1 with an error (bad
 * stage, out of memory). */
int zg_zero_init(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, const gpt2_param_table *table,
                 void *params, void *grads, const zg_optimizer_config *ocfg);
void zg_zero_free(zg_zero *z);

/* The engine over a GPT-2 model (what the trainer uses). Stages 0-1 as zg_zero_init over the flat
 * buffers (it allocates m->grads when missing). Stage 2-3: the model's full gradient buffer must not
 * exist (it is freed if it does): the engine hands each layer's gradients a buffer from a pool when its
 * backward starts (before_layer) and takes it back once its reductions are done; the embeddings + ln_f
 * gradients have one resident buffer. Stage 3 also keeps only the parameter shard: m->params is freed
 * after the initial broadcast, and each layer is gathered into one of two layer buffers (current +
 * prefetch) while its hooks run; the embeddings + ln_f into a resident one. Installs m->hooks. */
int zg_zero_init_model(zg_zero *z, const zg_zero_opts *opts, zg_comm *comm, zg_backend *be, gpt2_model *m,
                       const zg_optimizer_config *ocfg);

/* Hooks to install in gpt2_model.hooks (ctx = z). */
gpt2_hooks zg_zero_hooks(zg_zero *z);
void zg_zero_on_grads_ready(zg_zero *z, size_t offset, size_t count);
void zg_zero_on_before_layer(zg_zero *z, int layer, int is_backward);
void zg_zero_on_after_layer(zg_zero *z, int layer, int is_backward);

/* After each micro-step's backward. Stage 2-3: launches what is left, waits for every reduction,
 * accumulates into the shard and zeroes the model's gradient buffer. If the hooks were not installed
 * (nothing reported), the whole buffer is reduced here. */
void zg_zero_micro_end(zg_zero *z);

/* The optimizer step at the accumulation boundary, in two halves so a loss scaler can decide in
 * between (every rank calls the same ones):
 *  zg_zero_grad_norm: completes the gradient reduction (stages 0-1), computes the global norm of the
 *    averaged, unscaled gradient and the agreed overflow flag (identical on every rank);
 *  zg_zero_apply: AdamW on this rank's range with grads * grad_scale / world_size (grad_scale = clip
 *    coefficient / loss scale), then the all-gather of the updated parameters (stages 1-2);
 *  zg_zero_skip: drop this step's gradients instead (fp16 overflow).
 * zg_zero_step does all three: inv_loss_scale = 1 / loss scale (1 without fp16), clip = max global norm
 * (<= 0: off); skips on overflow. */
void zg_zero_grad_norm(zg_zero *z, float inv_loss_scale, zg_zero_step_info *info);
void zg_zero_apply(zg_zero *z, float lr, float grad_scale);
void zg_zero_skip(zg_zero *z);
void zg_zero_step(zg_zero *z, float lr, float inv_loss_scale, float clip, zg_zero_step_info *info);

/* Stage 3: gathers every parameter into the model's buffer (for evaluation outside the hooks,
 * export, checkpoints) / releases them again. No-ops at stages 0-2. In model mode the full buffer is
 * allocated for the duration (m->params) and freed by zg_zero_release_all. */
void zg_zero_gather_all(zg_zero *z);
void zg_zero_release_all(zg_zero *z);

/* After parameters and the optimizer range were loaded (zg_ckpt_read_model + zg_ckpt_read_optimizer on
 * zg_zero_optimizer()): rebuilds the low-precision params of the shard from the master, makes every
 * rank's copy consistent (all-gather from the owners) and, at stage 3, releases non-owned parts. */
void zg_zero_after_load(zg_zero *z);
/* Where ZeRO-Offload's time of the last step went (wall_clock_breakdown), milliseconds on this rank's
 * main thread unless said otherwise; all 0 without offload. */
typedef struct {
    double host_ms;          /* the host AdamW (with the delay: the previous step's, on its thread) */
    double download_wait_ms; /* waiting for the gradient downloads to land (per slot, before its update; with
                                the delay: the previous step's thread, before its update) */
    double upload_wait_ms;   /* waiting for uploads (a staging buffer rewritten; breakdown: their tail) */
    double join_wait_ms;     /* with the delay: waiting for the host step's thread */
} zg_zero_offload_times;
zg_zero_offload_times zg_zero_offload_step_times(const zg_zero *z);
/* ZeRO-Offload's delayed parameter update: makes the device weights current (the host step in flight
 * waited for and uploaded). Every rank, at the same points: before an evaluation, a checkpoint, the
 * end. Nothing to do otherwise. */
void zg_zero_flush(zg_zero *z);
zg_optimizer *zg_zero_optimizer(zg_zero *z);

/* Memory actually held by this rank (model buffers, engine, communicator scratch peak). */
void zg_zero_memory_held(const zg_zero *z, zg_zero_memory *m);

/* Predicted memory of rank `rank` of `world` for a buffer of n elements (plan). act_bytes goes to
 * activations. device: 1 for a device backend (no fp32 reduction scratch). */
void zg_zero_plan(size_t n, int world, int rank, const zg_zero_opts *o, zg_dtype pdt, zg_dtype gdt, int device,
                  size_t act_bytes, zg_zero_memory *m);
/* Device (backend) memory of a rank: everything but m->host. */
size_t zg_zero_memory_total(const zg_zero_memory *m);
/* Stages 2-3 over a model: reduce_bucket_size is an upper bound. Gradients are reduced as whole
 * layers complete, so a bucket larger than max(largest layer, ZG_ZERO_MIN_LAYER_BUCKET elements) only
 * makes layer buffers wait: it is lowered to that, which keeps the gradient memory to a few layers
 * (DeepSpeed's default of 5e8 elements would otherwise hold a third of GPT-2 XL's gradients). A layer
 * of GPT-2 124M (7M elements) or XL (31M) is large enough for the collectives to run at full
 * bandwidth. Called by the trainer and by `zgpt plan`, so both see the same buckets. */
#define ZG_ZERO_MIN_LAYER_BUCKET ((size_t)1 << 24)
void zg_zero_opts_fit_model(zg_zero_opts *o, const gpt2_param_table *t);
/* zg_zero_plan for the engine in model mode (zg_zero_init_model): stage 2-3 grads = embeddings + ln_f +
 * zg_zero_grad_pool_count() layer buffers; stage 3 params = shard + embeddings + ln_f + 2 layers. */
void zg_zero_plan_model(const gpt2_param_table *t, int world, int rank, const zg_zero_opts *o, zg_dtype pdt,
                        zg_dtype gdt, int device, size_t act_bytes, zg_zero_memory *m);
/* Before training: the plan of `rank` (zg_zero_plan_model with act_bytes of activations) against the
 * device's memory (device_total bytes; 0: not checked) and, with ZeRO-Offload, its host memory times
 * the local_ranks ranks of this machine, plus host_extra bytes the caller holds besides (the trainer's
 * fp32 parameter copy), against MemAvailable (zg_host_mem_available). -1 with an error giving the
 * numbers when either would not suffice. */
int zg_zero_check_memory(const gpt2_param_table *t, int world, int rank, int local_ranks, const zg_zero_opts *o,
                         zg_dtype pdt, zg_dtype gdt, size_t act_bytes, size_t device_total, size_t host_extra);
/* Layer gradient buffers stage 2-3 needs: the layer being computed, < reduce_bucket_size pending and
 * up to 2 buckets in flight (overlap_comm) form one range from the layer's start, so
 * min(n_layer, ceil((layer + (in_flight + 1) * reduce_bucket_size - 1) / layer)); layers accumulated
 * locally (zg_zero_grad_schedule_of) have buffers of their own, so n_layer less those bounds it. */
int zg_zero_grad_pool_count(const gpt2_param_table *t, const zg_zero_opts *o, int world);

/* Gradient accumulation at stages 2-3 over a model (grad_accum_local_layers): which parts of the gradient
 * accumulate locally over the grad_accum micro-steps of a step and are reduced to their owners only on the
 * last micro-step, and what that leaves per micro-step. Stage 2 reduces every layer as its backward
 * completes, on every micro-step (DeepSpeed's schedule); the parts held back instead:
 *  - the embeddings + ln_f (auto, -1, and any N >= 1): their gradients already live in one resident buffer
 *    (wte's completes only at the very end of backward), so accumulating there costs no memory, and their
 *    reduction, which no compute is left to hide, happens once per step instead of once per micro-step;
 *  - layers 0..N-1 (N >= 1): the last ones backward reaches, whose reductions are exposed at its end; each
 *    gets a persistent buffer of one layer (N layers more memory per rank; the layer pool then covers
 *    only the other n_layer - N layers).
 * The last micro-step reduces everything (as today; its reductions of the held-back parts WRITE the owner's
 * shard part, which no earlier micro-step touched). Applied with world > 1, stage >= 2 and grad_accum > 1
 * (with ZeRO-Offload too: it sends each piece to the host as the last micro-step's reduction of it
 * completes, held back or not); elsewhere every part already accumulates locally (stages 0-1, one rank)
 * or every micro-step is the last (accumulation 1). o->grad_accum must be set. */
typedef struct {
    int embeddings;       /* 1: the embeddings + ln_f accumulate locally */
    int layers;           /* layers 0 .. layers-1 accumulate locally (persistent buffers) */
    size_t local_elems;   /* elements accumulated locally: embeddings + ln_f + those layers */
    size_t reduced_micro; /* elements reduced by each micro-step but the last */
    size_t reduced_last;  /* elements reduced by the last micro-step / at the boundary (stages 0-1) */
    size_t reduced_step;  /* per optimizer step: (grad_accum - 1) * reduced_micro + reduced_last */
    size_t layer_elems;   /* elements of the persistent layer buffers (layers 0 .. layers-1) */
    const char *idle;     /* the key has nothing to do here: why (one line); NULL where it applies */
} zg_zero_grad_schedule;
void zg_zero_grad_schedule_of(const gpt2_param_table *t, const zg_zero_opts *o, int world, zg_zero_grad_schedule *s);
/* -1 with a one-line error naming the key when grad_accum_local_layers is outside -1 .. n_layer. */
int zg_zero_local_check(const zg_zero_opts *o, int n_layer);
/* Whether the engine carries a micro-step's last reductions into the next one (zg_zero.carry_reduces) for these
 * options on `world` ranks over a model: 1 or 0; -1 with a one-line error when ZGPT_REDUCE_CARRY is malformed.
 * The engine, the trainer's banner and `zgpt plan` all ask this. */
int zg_zero_carry_of(const zg_zero_opts *o, int world);
/* ZGPT_REDUCE_CARRY alone: 0 when unset or well formed, -1 with zg_zero_carry_of's error otherwise (a launcher
 * checks it once before it starts the workers). */
int zg_zero_env_check(void);
/* The same without ZGPT_REDUCE_CARRY: whether these options would carry (the banner's "each micro-step waits"). */
int zg_zero_carry_applies(const zg_zero_opts *o, int world);

/* 1 when the engine's gradients accumulate in the model's full buffer whatever the stage (z->direct):
 * ZeRO-Offload (offload_optimizer or offload_param) on one rank (without it one process runs stage 0). The reduction of a world of one is the identity, so the
 * stage-2/3 path (a layer buffer zeroed per micro-step, added into the shard after its "reduction")
 * would only add two passes over every gradient per micro-step; the backward accumulates in place
 * (beta = 1), exactly as stage 0 without offload does, and the last micro-step's pieces go to the host
 * as the backward reports them. The plan and the engine decide it with this one function. */
int zg_zero_grads_direct(const zg_zero_opts *o, int world);

/* The shard range of `rank` for n elements over `world` ranks. */
void zg_zero_shard_range(size_t n, int world, int rank, size_t *begin, size_t *end);

#endif
