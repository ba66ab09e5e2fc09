/* Sharded checkpoint saves over the ZeRO engine (the checkpoint format: checkpoint.h, docs/FORMATS.md). */
#ifndef ZG_TRAIN_CKPT_SHARDS_H
#define ZG_TRAIN_CKPT_SHARDS_H

#include "train/checkpoint.h"
#include "train/zero.h"

/* Sharded checkpoint save, every rank (src/train/checkpoint.h): rank 0 has called
 * zg_ckpt_writer_begin(w, out_dir, tag); the other ranks pass a writer that is only filled here. Each
 * rank writes its optimizer shard optim_<begin>_<end>.bin into the partial folder (at stage 0 only
 * rank 0, every rank holding the same state); the file records (name, size, checksum) are gathered so
 * that rank 0's writer lists every file for the manifest. Success is agreed: 0 on every rank when
 * every rank wrote its shard, else -1 on every rank (with the failing rank in the message) and rank 0's
 * partial folder removed. Afterwards rank 0 writes model.bin / state.json and commits (moving `latest`
 * only then); the other ranks' writers are released here. */
int zg_zero_ckpt_write_shards(zg_zero *z, zg_ckpt_writer *w, const char *out_dir, const char *tag);
/* 1 when this rank writes an optimizer shard in a sharded save (stage 0: rank 0 only). */
int zg_zero_ckpt_writes_shard(const zg_zero *z);
/* The collective end of a sharded save, every rank: ok says whether this rank wrote its files (error:
 * why not). Gathers the other ranks' shard records into rank 0's writer; 0 on every rank when every
 * rank succeeded, else -1 on every rank naming the failing rank, with rank 0's partial folder removed.
 * The other ranks' writers are released. (A background save calls this once its thread is done.) */
int zg_zero_ckpt_agree(zg_zero *z, zg_ckpt_writer *w, int ok, const char *error);

#endif
