/* ZeRO-Offload (DeepSpeed's zero_optimization.offload_optimizer {"device": "cpu"}, or the legacy
 * cpu_offload: true) inside the ZeRO engine, stages 1-3. Private to src/train/zero*.c; the engine
 * calls these hooks when zg_zero_opts.offload_optimizer is set.
 *
 * Where things live (per rank, shard [begin, end) of the flat buffer):
 *  - host: the fp32 master (or, with fp32 parameters, the parameters themselves), Adam m and v
 *    (zg_optimizer_init_host), a staging buffer of the shard's gradients (grad dtype) and one of its
 *    updated parameters (param dtype), both always page-locked (pin_memory pins the optimizer state);
 *  - device: the parameters (stage 1-2: all of them; stage 3: the shard + gathered layers) and the
 *    gradients exactly as without offload. Gradients accumulate across micro-steps ON THE DEVICE, in
 *    grad dtype (stage 1: the full buffer; stage 2-3: the gradient shard; one rank at any stage: the
 *    full buffer, in place, as stage 0 does: zg_zero_grads_direct), as the no-offload path does: one
 *    transfer per step instead of one per micro-step keeps the PCIe traffic at 2 bytes per parameter
 *    per step whatever the accumulation, and the host's copy needs no fp32 adds.
 *
 * Data flow of a step:
 *  1. gradients leave the GPU during the last micro-step's backward (stages 2-3; one rank: any stage):
 *     each reduction of a piece of this rank's shard (one rank: each range the backward reports), once
 *     complete (and accumulated into the shard), is followed by an event on the compute stream; the
 *     copy stream waits for it and copies the piece to the host (copy_async D2H) while backward goes
 *     on, then signals the download fence of each slot the piece covers. Stage 1 on several ranks
 *     reduces after backward (the reduce-scatter at the boundary): its shard leaves right after that
 *     reduction, slot by slot in the order of step 2.
 *  2. zg_zero_apply (the norm, overflow and clipping coefficient are known: they read the device
 *     gradients): AdamW (zg_host_adamw: the CPU backend's OpenMP/SIMD kernel, the GPU's fp32 formula)
 *     slot by slot in the order the gradients arrive (layer L-1, ..., layer 0, then embeddings + ln_f,
 *     whose wte gradient completes last), each slot after its own download fence, so the downloads'
 *     tail overlaps the first slots' updates; each slot's updated parameters are cast to the param dtype
 *     into the staging buffer and uploaded (copy_async H2D) as soon as the slot is done, so the uploads
 *     overlap the update of the later slots. With several ranks at stages 1-2 the slot's all-gather
 *     follows its upload (the compute stream waits for the upload event, the gather for the stream).
 *     Lamb (DeepSpeed's FusedLamb; zg_host_adamw's two passes per tensor) runs the same way: every tensor
 *     of a slot lies in that slot. On several ranks the tensors a shard boundary cuts need their whole
 *     ||p|| and ||u||: before the slots, their parts' first pass (moments and sums of squares) runs once
 *     their slots' gradients are on the host, the sums are added across the ranks on the host
 *     (all_reduce_host_f64 over one vector indexed by tensor), and the slots' updates apply the totals.
 *  3. the next forward waits for slot s's upload only just before slot s (before_layer: the compute
 *     stream waits for the slot's event); at stage 3 the gather of a layer waits for its upload the same
 *     way.
 * Delayed parameter update (zg_zero_opts.offload_dpu, after offload_dpu_warmup steps): step 2 runs
 * the AdamW on a pthread over the whole shard (into one of two upload buffers, alternating) while the
 * main thread goes on with the next step (the thread starts after every download); that step's first gradient download joins the thread (the
 * gradient staging is rewritten), and its zg_zero_apply uploads the finished parameters slot by slot
 * as step 2 does before starting the next thread. zero_offload_flush (evaluations, checkpoints, the
 * end) joins and uploads so the device weights are current. docs/DISTRIBUTED.md says what it changes.
 * Checkpoints are unchanged: the optimizer shard files hold the same master/m/v, read and written
 * from host memory. */
#ifndef ZG_TRAIN_ZERO_OFFLOAD_H
#define ZG_TRAIN_ZERO_OFFLOAD_H

#include "train/zero.h"

#include <stddef.h>

/* After the host optimizer exists (z->opt from zg_optimizer_init_host): staging buffers and events;
 * with fp32 parameters the host copy of the shard (the optimizer's parameters) is read from the
 * device. -1 with an error (host memory). */
int zero_offload_init(zg_zero *z);
void zero_offload_free(zg_zero *z);
/* 1 during the micro-step whose gradients are the step's last (z->o.grad_accum known). */
int zero_offload_last_micro(const zg_zero *z);
/* This rank's gradients [lo, hi) (inside the shard) are final on the device: copy them to the host
 * behind the work queued so far on the compute stream. */
void zero_offload_grads_piece(zg_zero *z, size_t lo, size_t hi);
/* At the boundary, after the reduction: sends whatever was not sent during backward (stage 1, or an
 * unknown accumulation count). */
void zero_offload_grads_finish(zg_zero *z);
/* The step on the host and the uploads (plus, at stages 1-2 with several ranks, the per-slot
 * all-gathers). grad_scale as zg_optimizer_step. */
void zero_offload_apply(zg_zero *z, float lr, float grad_scale);
/* The end of a step: after a skipped one (overflow) the gradients sent are dropped (and a delayed
 * update of the step before goes up now). */
void zero_offload_end_step(zg_zero *z);
/* Delayed parameter update: waits for the host step in flight and uploads its parameters (with the
 * stage 1-2 gathers), so the device holds the current weights. Every rank calls it at the same points
 * (before an evaluation, a checkpoint, the end). A no-op without the delay. */
void zero_offload_flush(zg_zero *z);
/* 1 while a delayed update is in flight or not uploaded yet. */
int zero_offload_dpu_pending(const zg_zero *z);
/* Where the offload's time of the last step went (zg_zero_offload_times in zero.h). */
zg_zero_offload_times zero_offload_step_times(const zg_zero *z);
/* The compute stream waits for slot s's upload (the forward before slot s; a stage-3 gather). */
void zero_offload_wait_slot(zg_zero *z, int slot);
void zero_offload_wait_all(zg_zero *z);
/* After a checkpoint load: the device parameters of the shard from the host master (or, fp32, the host
 * copy from the device parameters). */
void zero_offload_after_load(zg_zero *z);
/* Host bytes the offload holds (optimizer state + staging). */
size_t zero_offload_host_bytes(const zg_zero *z);
/* Predicted host bytes for a shard of k elements (plan): fp32 master (param dtype not fp32) or the fp32
 * parameters, m, v, and the two staging buffers. */
size_t zero_offload_plan_host_bytes(size_t k, zg_dtype pdt, zg_dtype gdt);
/* What the delayed parameter update adds: a second upload buffer of the parameters (fp32 parameters:
 * two, the optimizer's own copy being no upload buffer). */
size_t zero_offload_plan_dpu_bytes(size_t k, zg_dtype pdt);

#endif
