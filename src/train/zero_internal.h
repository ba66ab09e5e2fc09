/* Private to the ZeRO engine (zero.c: sharding and the step; zero_overlap.c: buckets, gather slots and
 * the gradient pool; zero_plan.c: memory planning). Not for use outside src/train/zero*.c. */
#ifndef ZG_TRAIN_ZERO_INTERNAL_H
#define ZG_TRAIN_ZERO_INTERNAL_H

#include "train/zero.h"

#include <stddef.h>

/* One collective in flight over [lo, hi) of a flat buffer. */
struct zg_zero_pending {
    zg_comm_req *req;
    size_t lo, hi;
    int owner;       /* rank the piece belongs to */
    int bucket_last; /* last piece of its bucket (bucket counting for overlap) */
    int into_shard;  /* reduced straight into this rank's gradient shard (its own piece, first micro-step) */
    zg_zero_pending *next;
};

enum { MAX_BUCKETS_IN_FLIGHT = 2 };

static inline size_t esz(zg_dtype dt) { return zg_dtype_size(dt); }
static inline char *at(void *base, size_t i, zg_dtype dt) { return (char *)base + i * esz(dt); }

static inline int grads_grouped(const zg_zero *z) { return z->model && z->o.stage >= 2 && !z->direct; }
/* The rank's accumulated gradients live in z->grad_shard (stages 2-3), else in the full buffer z->grads. */
static inline int grads_in_shard(const zg_zero *z) { return z->o.stage >= 2 && !z->direct; }

/* The rank's own parameters [begin, end): in the flat buffer, or the shard (stage 3, model mode). */
static inline int stage3_model(const zg_zero *z) { return z->model && z->o.stage >= 3; }
static inline void *own_params(zg_zero *z) {
    return stage3_model(z) ? z->param_shard : at(z->params, z->begin, z->pdt);
}

/* ---- zero_overlap.c ---------------------------------------------------------------------- */

/* A collective over [lo, hi) for `owner` (its request is set by the caller). */
zg_zero_pending *zero_pending_new(size_t lo, size_t hi, int owner);
void zero_fifo_push(zg_zero_pending **head, zg_zero_pending *p);
/* Model mode: the group (gpt2_group_count numbering) holding element i; the slot of group g (= g for
 * layers, 0 for the embeddings and ln_f). */
int zero_group_of(const zg_zero *z, size_t i);
static inline int zero_slot_of_group(const zg_zero *z, int g) { return g > z->n_layer ? 0 : g; }
/* Calls fn for each piece of [lo, hi) cut at shard boundaries and at `chunk` elements. */
typedef void (*zero_piece_fn)(zg_zero *z, size_t lo, size_t hi, int owner, void *arg);
void zero_for_each_piece(zg_zero *z, size_t lo, size_t hi, size_t chunk, zero_piece_fn fn, void *arg);
/* Launches full buckets of the pending range (with `all`, the remainder too). */
void zero_flush_pending(zg_zero *z, int all);
void zero_wait_all_reduces(zg_zero *z);
/* Waits for (and frees) every collective of a list. */
void zero_wait_list(zg_zero *z, zg_zero_pending **list);
/* Every owner broadcasts its pieces of [lo, hi) in allgather_bucket_size chunks (an all-gather). */
void zero_gather_range(zg_zero *z, size_t lo, size_t hi, zg_zero_pending **list);
/* The ranges of slot s (= layer + 1): layer l -> [lb[l], lb[l+1]); slot 0 -> embeddings + ln_f (two
 * ranges). Returns the count. */
int zero_slot_ranges(const zg_zero *z, int slot, size_t lo[2], size_t hi[2]);
/* Per-slot copy fences (ZeRO-Offload's parameter uploads and gradient downloads, offload_param's
 * uploads): an event on the copy stream behind each slot's last copy, and whether a wait is still owed. */
typedef struct {
    zg_event **ev;
    int *pending;
    int n;
} zero_slot_fences;
void zero_fences_init(zero_slot_fences *f, zg_backend *be, int n_slots);
void zero_fences_free(zero_slot_fences *f, zg_backend *be);
/* Records slot s's fence behind the copy stream's work so far; the compute stream owes it a wait. */
void zero_fences_signal(zero_slot_fences *f, zg_backend *be, int slot);
/* The compute stream waits for slot s's last upload (once; nothing when none is owed). */
void zero_fences_wait(zero_slot_fences *f, zg_backend *be, int slot);
/* The host waits for slot s's last signal (once; nothing when none is owed). */
void zero_fences_sync(zero_slot_fences *f, zg_backend *be, int slot);
/* Starts the all-gather of slot s's ranges into its pending list z->gathering[s]. */
void zero_gather_slot(zg_zero *z, int slot);
/* Stage 2 over a model with overlap_comm: the parameter all-gathers are deferred to the next forward. */
int zero_deferred_gather(const zg_zero *z);
void zero_gathers_wait_all(zg_zero *z);
void zero_params_wait_all(zg_zero *z);
void zero_apply_and_launch_gathers(zg_zero *z, const void *g, float lr, float scale);
/* Lamb on several ranks, after zg_optimizer_step_begin and before the step's parts (every rank): the
 * tensors this rank's shard cuts (shared with its neighbours) need their whole ||p|| and ||u||; their
 * parts' first pass runs now, the partial sums of squares (one vector indexed by tensor, the same length
 * everywhere) are added across the ranks on the host, and the step applies the totals. p, g: the shard's
 * parameters (may be NULL when the optimizer holds a master: the first pass reads it) and gradients,
 * where the optimizer's state lives (device, or host with ZeRO-Offload). */
void zero_lamb_cut_totals(zg_zero *z, void *p, const void *g, float scale);
/* The same where the parameters reach the backend a part at a time: stage(z, lo, hi) puts the cut
 * [lo, hi) of the shard in backend memory and returns the base the optimizer addresses it from (the
 * shard's start); p is used where stage is NULL. */
typedef void *(*zero_lamb_stage_fn)(zg_zero *z, size_t lo, size_t hi);
void zero_lamb_cut_totals_staged(zg_zero *z, void *p, zero_lamb_stage_fn stage, const void *g, float scale);

/* Address of parameter element i where the model reads it now (the gathered slot buffer at stage 3). */
char *zero_param_at(zg_zero *z, size_t i);

/* ---- zero_offload_param.c: offload_param (the stage-3 parameter shard in host memory) ------- */

/* The host shard (pinned with offload_param_pin_memory), filled from the device parameters
 * [begin, end) at dev_src, and the per-slot upload events. -1 with an error (host memory). */
int zero_param_offload_init(zg_zero *z, const void *dev_src);
void zero_param_offload_free(zg_zero *z);
/* Slot s's buffer was placed: uploads this rank's part of it from the host shard on the copy stream
 * (behind the compute stream's use of the buffer by the slot that held it before). With several ranks
 * the compute stream (where the all-gather is ordered) waits for the upload at once; with one, only when
 * the slot is needed (zero_param_offload_wait_slot), so the prefetch overlaps the current layer. */
void zero_param_offload_upload_slot(zg_zero *z, int slot);
void zero_param_offload_wait_slot(zg_zero *z, int slot);
/* Blocks the host until every upload read the host shard (before the shard is rewritten). */
void zero_param_offload_quiesce(zg_zero *z);
/* The GPU optimizer (no offload_optimizer) over the host shard: the update goes through a device
 * scratch of the shard for the step's duration, and back. */
void zero_param_offload_gpu_step(zg_zero *z, const void *g, float lr, float scale);
/* After a checkpoint load with the GPU optimizer: the host shard from the loaded master. */
void zero_param_offload_after_load(zg_zero *z);
/* Host bytes of the shard (k elements of param dtype). */
size_t zero_param_offload_host_bytes(const zg_zero *z);

/* ---- zero_local.c: gradients accumulated locally over a step's micro-steps ------------------ */

/* Model mode, stages 2-3: the schedule (zg_zero_grad_schedule_of) into z->local_emb / local_layers and the
 * persistent layer buffers. -1 when one could not be allocated (the error is set). */
int zero_local_init(zg_zero *z);
void zero_local_free(zg_zero *z);
/* Elements of the persistent layer buffers. */
size_t zero_local_layer_elems(const zg_zero *z);
/* 1 when group g's gradients accumulate locally (reduced on the last micro-step only). */
int zero_group_local(const zg_zero *z, int g);
/* Backward of `layer` (-1: the embeddings + ln_f) starts: 1 when its gradients accumulate locally (its
 * buffer placed, zeroed on a step's first micro-step only), 0 when the caller places them. */
int zero_local_acquire(zg_zero *z, int layer);
/* A range backward reported: queue() gets what this micro-step reduces (all on a step's last micro-step;
 * before it, everything outside the locally accumulated groups). */
typedef void (*zero_range_fn)(zg_zero *z, size_t offset, size_t count);
void zero_local_report(zg_zero *z, size_t offset, size_t count, zero_range_fn queue);
/* Before the step's norm: the micro-steps run must be grad_accum when parts were held back. */
void zero_local_check_step(const zg_zero *z);

/* ---- zero_plan.c ------------------------------------------------------------------------- */

size_t zero_layer_size_max(const gpt2_param_table *t, int L, size_t *min_out);
int zero_table_layers(const gpt2_param_table *t);
size_t zero_resident_elems(const gpt2_param_table *t, int L);

#endif
