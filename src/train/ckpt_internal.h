/* What the checkpoint modules share (checkpoint.c: the writer and the snapshot; ckpt_retain.c: folders
 * in out_dir; ckpt_read.c: the reader). Not for use outside src/train/checkpoint*.c, ckpt_*.c. */
#ifndef ZG_TRAIN_CKPT_INTERNAL_H
#define ZG_TRAIN_CKPT_INTERNAL_H

#include "core/fileio.h"
#include "core/progress.h"
#include "train/checkpoint.h"
#include "train/ckpt_io.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum { ZG_CKPT_CHUNK_ELEMS = 1 << 20 }; /* host staging for device <-> file copies: 4 MiB of fp32 */

/* ---- little-endian header fields ------------------------------------------------------------- */

static inline void zg_ckpt_put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void zg_ckpt_put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline uint32_t zg_ckpt_get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static inline uint64_t zg_ckpt_get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Progress of one checkpoint file ("save out/iter_100/model.bin"); rank 0 only prints. */
void zg_ckpt_progress_begin(zg_progress *p, const char *verb, const char *dir, const char *file, uint64_t bytes,
                            int quiet);
/* fp32 values as the training dtype holds them: rounded to bf16/fp16 (nearest even) and widened. */
void zg_ckpt_round_to_dtype(float *x, size_t n, zg_dtype dt, int parallel);
/* The manifest entry of file `name` of c; NULL when the manifest does not list it. */
zg_ckpt_file *zg_ckpt_find_file(const zg_ckpt *c, const char *name);
/* Puts the finished folder `stage` at `final`, replacing an existing one in one atomic step. */
int zg_ckpt_swap_into_place(const char *stage, const char *final, const char *out_dir);
/* out_dir/.partial.<tag>: a tag's folder while it is written. */
char *zg_ckpt_stage_path(const char *out_dir, const char *tag);
/* Removes out_dir/<name> through its trash name (ckpt_retain.c says how); *bytes: the bytes removed. */
int zg_ckpt_remove_tag_folder(const char *out_dir, const char *name, uint64_t *bytes, zg_ckpt_retainer *r);

/* Reads file bytes [0, size) of `path` straight into image (byte X at image + X; aligned to
 * ZG_CKPT_IO_ALIGN and writable up to zg_ckpt_io_round_up(size)) by several threads, pieces in flight
 * while the ones before are hashed into h (non-NULL) in file order; the strategy is ZGPT_CKPT_READ's.
 * Touches no backend: any thread. */
int zg_ckpt_read_image(const char *path, uint64_t size, unsigned char *image, zg_hasher *h, zg_ckpt_read_watch *watch);

#endif
