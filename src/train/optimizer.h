/* AdamW state over a RANGE [begin, end) of the flat parameter buffer.
 *
 * With one process the range is the whole buffer; the ZeRO engine gives each rank its shard by
 * constructing the optimizer with a sub-range, so nothing here assumes the range is everything.
 * The state lives in backend memory: fp32 Adam moments m and v for the range, and an fp32 master
 * copy of the range's parameters when the parameters themselves are low precision (bf16/fp16). With
 * zg_optimizer_init_host (ZeRO-Offload, src/train/zero_offload.h) it lives in host memory instead and
 * the step runs on the CPU (zg_host_adamw) over host parameters and gradients.
 * Weight decay follows the parameter table's per-tensor decay flag: the table's segments are
 * clipped to the range and made relative to `begin`. */
#ifndef ZG_TRAIN_OPTIMIZER_H
#define ZG_TRAIN_OPTIMIZER_H

#include "backend/backend.h"
#include "model/gpt2.h"

#include <stddef.h>
#include <stdint.h>

/* Zero-initialised fields mean DeepSpeed's defaults: AdamW with bias correction. */
typedef enum { ZG_OPTIMIZER_ADAMW = 0, ZG_OPTIMIZER_LAMB } zg_optimizer_kind;
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    zg_optimizer_kind kind;
    int no_bias_correction;     /* optimizer.params.bias_correction false */
    int eps_inside_sqrt;        /* Lamb: sqrt(v + eps) instead of sqrt(v) + eps */
    float max_coeff, min_coeff; /* Lamb: the trust ratio ||w|| / ||update|| is clamped to these */
} zg_optimizer_config;

typedef struct {
    zg_backend *be;
    size_t begin, end; /* elements of the flat buffer this state covers */
    zg_dtype param_dtype;
    float *master;    /* (end-begin) fp32, or NULL when params are fp32 */
    float *m, *v;     /* (end-begin) fp32 */
    zg_segment *segs; /* relative to begin */
    int n_segs;
    int host;     /* 1: master, m, v are host memory (host_alloc); the step runs on the CPU */
    int pin;      /* host state page-locked (offload_optimizer.pin_memory) */
    int64_t step; /* optimizer steps taken (bias correction uses step+1 for the next one) */
    zg_optimizer_config cfg;
    zg_event *copied; /* zg_optimizer_hold: the end of the copies of the state in flight */
    int held;         /* the next update waits for `copied` */
    /* Lamb over a range that cuts tensors (a ZeRO shard; zg_optimizer_lamb_partial): the table's tensor
     * count, the cut tensors at the range's start and end (-1: none), their ranges in the flat buffer, and
     * per segment the totals of the current step (negative: none; host state only) */
    int n_tensors;
    int cut_tensor[2];
    size_t cut_lo[2], cut_hi[2];
    double *lamb_sums;
    int lamb_n; /* segments lamb_sums has room for */
} zg_optimizer;

/* Allocates state for [begin, end) (m = v = 0, step 0). params_at_begin (backend memory,
 * param_dtype) initialises the master copy when one is needed; it may be NULL when the master will
 * be loaded from a checkpoint. -1 with an error when the range is invalid or memory is short. */
int zg_optimizer_init(zg_optimizer *o, zg_backend *be, const gpt2_param_table *table, size_t begin, size_t end,
                      const zg_optimizer_config *cfg, zg_dtype param_dtype, const void *params_at_begin);
/* The same state in host memory (be->ops->host_alloc; page-locked when pin, DeepSpeed's pin_memory:
 * it is never transferred, so pinning only keeps it resident). The
 * master is initialised from params_at_begin (backend memory) when given. zg_optimizer_step and
 * _step_part then take HOST pointers for the parameters (param_dtype) and the gradients (the
 * backend's grad dtype), and zg_optimizer_params_from_master writes host memory. */
int zg_optimizer_init_host(zg_optimizer *o, zg_backend *be, const gpt2_param_table *table, size_t begin, size_t end,
                           const zg_optimizer_config *cfg, zg_dtype param_dtype, const void *params_at_begin, int pin);
void zg_optimizer_free(zg_optimizer *o);
size_t zg_optimizer_count(const zg_optimizer *o);
/* Bytes the state holds (for plans and reports): backend memory, or host memory when o->host. */
size_t zg_optimizer_state_bytes(const zg_optimizer *o);

/* One AdamW step on the range. params_at_begin / grads_at_begin point at element `begin` of the
 * parameter buffer and at the gradient of element `begin` (a ZeRO rank may hold only its shard of
 * the gradients, so the caller gives the pointer). grad_scale multiplies the gradients first
 * (1/loss_scale times the clipping coefficient). */
void zg_optimizer_step(zg_optimizer *o, void *params_at_begin, const void *grads_at_begin, float lr, float grad_scale);

/* The same step in parts, so that a part's updated parameters can be sent on while the next part is
 * computed (ZeRO-2's all-gather after the step): zg_optimizer_split once (it cuts the weight-decay
 * segments at the given offsets of the flat buffer; those outside the range are ignored), then per
 * step zg_optimizer_step_begin and zg_optimizer_step_part for parts [lo, hi) (offsets of the flat
 * buffer inside the range, each at a cut or an end of the range) that together cover the range
 * once. Each element gets the same update as from zg_optimizer_step. */
void zg_optimizer_split(zg_optimizer *o, const size_t *cuts, int n_cuts);
void zg_optimizer_step_begin(zg_optimizer *o);
/* After zg_optimizer_step_begin: the whole range in one part (zg_optimizer_step without the new step). */
void zg_optimizer_step_all(zg_optimizer *o, void *params_at_begin, const void *grads_at_begin, float lr,
                           float grad_scale);
void zg_optimizer_step_part(zg_optimizer *o, size_t lo, size_t hi, void *params_at_begin, const void *grads_at_begin,
                            float lr, float grad_scale);

/* Lamb over a range whose first or last tensor continues on other ranks (a ZeRO shard cut inside a
 * tensor; host or device state): the trust ratio needs the whole tensor's ||p|| and ||u||. After
 * zg_optimizer_step_begin, zg_optimizer_lamb_partial runs Lamb's first pass (the moments) over the cut
 * tensors' parts and ADDS their sums of p^2 and u^2 into sums[2 t], sums[2 t + 1] (t: the tensor's index
 * in the table; sums holds 2 n_tensors); the caller adds sums across the ranks (every rank, the same
 * length) and gives the totals to zg_optimizer_lamb_totals; the step's parts then apply them. Returns
 * whether the range cuts a tensor. zg_optimizer_lamb_partial_cut does the same for one cut (e = 0: the
 * range's start, 1: its end), whose range in the flat buffer zg_optimizer_lamb_cut gives (0: no such
 * cut): for a caller whose parameters reach the backend one part at a time (offload_param in fp32). */
int zg_optimizer_lamb_cuts(const zg_optimizer *o);
void zg_optimizer_lamb_partial(zg_optimizer *o, void *params_at_begin, const void *grads_at_begin, float grad_scale,
                               double *sums);
int zg_optimizer_lamb_cut(const zg_optimizer *o, int e, size_t *lo, size_t *hi);
void zg_optimizer_lamb_partial_cut(zg_optimizer *o, int e, void *params_at_begin, const void *grads_at_begin,
                                   float grad_scale, double *sums);
void zg_optimizer_lamb_totals(zg_optimizer *o, const double *sums);

/* A copy of the state (master, m, v) was queued on the copy stream (a checkpoint snapshot): the next
 * update waits on the compute stream until it has landed, so the work queued before that update
 * (the next forward and backward) overlaps the copy and the copy never sees a half-updated state.
 * An update that runs elsewhere than the compute stream must call zg_optimizer_wait_copies first. */
void zg_optimizer_hold(zg_optimizer *o);
/* Blocks the host until the copies held for have landed. */
void zg_optimizer_wait_copies(zg_optimizer *o);

/* Re-derives the low-precision parameters of the range from the master copy (after loading the
 * master from a checkpoint). No-op when params are fp32. */
void zg_optimizer_params_from_master(zg_optimizer *o, void *params_at_begin);

#endif
