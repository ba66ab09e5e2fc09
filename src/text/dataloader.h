/* Training/validation batches from token shards (see shard.h and docs/FORMATS.md).
 *
 * A data source is a prepared folder (zgpt's DIR/train*.bin + DIR/val*.bin, nanoGPT's header-less
 * uint16 train.bin/val.bin, or llm.c's shards) or a mixture of several with weights. Shards are
 * memory-mapped. Each call yields inputs (B,T) and next-token targets (B,T) as int32.
 *
 * Determinism: the sample order is a function of (seed, global sample index) only. A global batch of
 * G = B * grad_accum * world_size sequences is numbered 0..G-1 within an optimizer step; rank r,
 * micro-step k takes sequences [ (k * world_size + r) * B, +B ). So the same optimizer step sees the
 * same sequences whatever the world size (1 rank x 4 micro-steps == 4 ranks x 1 micro-step), ranks
 * draw disjoint samples, and a resume on another world size continues the same stream. */
#ifndef ZG_TEXT_DATALOADER_H
#define ZG_TEXT_DATALOADER_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ZG_SAMPLE_RANDOM = 0, /* nanoGPT's get_batch: uniformly random windows (with replacement) */
    ZG_SAMPLE_EPOCH = 1,  /* non-overlapping windows in a shuffled order, reshuffled each epoch */
} zg_sample_mode;

typedef struct {
    const char *path; /* prepared folder or a single shard file */
    double weight;    /* mixture weight (> 0); ignored for a single source */
} zg_data_source;

typedef struct {
    const zg_data_source *sources;
    int n_sources;
    const char *split; /* "train" or "val" */
    int B, T;          /* micro-batch and sequence length */
    int vocab_size;    /* token ids must be < vocab_size (checked when shards are opened) */
    zg_sample_mode mode;
    uint64_t seed;
    int rank, world_size; /* data-parallel position */
} zg_dataloader_config;

/* The complete position of a loader, saved in checkpoints. */
typedef struct {
    uint64_t seed;
    uint64_t step;  /* optimizer steps (global batches) consumed */
    uint64_t micro; /* micro-steps consumed within the current step */
} zg_dataloader_state;

typedef struct zg_dataloader zg_dataloader;

/* -1 with a one-line error naming the path for: missing folder/file, no shards for the split, bad
 * magic/version, truncated body, checksum mismatch, token id >= vocab_size, fewer than T+1 tokens. */
int zg_dataloader_init(zg_dataloader **out, const zg_dataloader_config *cfg);
/* A data path (a folder made by `zgpt prepare`, or one shard file) exists: 0, or -1 with the error saying how to
 * make it. zg_dataloader_init checks each source with it, and a launcher before it starts the workers. */
int zg_data_path_check(const char *path);
void zg_dataloader_free(zg_dataloader *dl);
/* Sets the number of micro-steps per optimizer step (gradient accumulation) for the global order. */
void zg_dataloader_set_grad_accum(zg_dataloader *dl, int grad_accum);
/* Next micro-batch for this rank: inputs and targets are (B, T) int32 host arrays. Advances the state
 * (after grad_accum micro-steps the step counter moves on). */
void zg_dataloader_next(zg_dataloader *dl, int32_t *inputs, int32_t *targets);
/* Sequence number `index` of global batch `step` (what any rank/micro-step would read there). */
void zg_dataloader_sample(zg_dataloader *dl, uint64_t step, uint64_t index, int32_t *inputs, int32_t *targets);
void zg_dataloader_get_state(const zg_dataloader *dl, zg_dataloader_state *st);
void zg_dataloader_set_state(zg_dataloader *dl, const zg_dataloader_state *st);
/* Total tokens available across the sources of this split. */
uint64_t zg_dataloader_num_tokens(const zg_dataloader *dl);
/* One line for logs, e.g. "data/shakespeare: 301966 tokens in 1 zgpt shard"; a mixture lists every
 * source with its share of samples, separated by "; ". Returns buf. */
const char *zg_dataloader_describe(const zg_dataloader *dl, char *buf, size_t cap);

#endif
