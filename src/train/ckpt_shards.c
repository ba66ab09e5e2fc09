/* Sharded checkpoint saves over the ZeRO engine: each rank writes its optimizer shard, the records are
 * gathered into rank 0's writer and success is agreed (see ckpt_shards.h). */
#include "train/ckpt_shards.h"

#include "core/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    zg_ckpt_file file;
    int32_t wrote, ok;
    char error[200];
} shard_record;

int zg_zero_ckpt_agree(zg_zero *z, zg_ckpt_writer *w, int ok, const char *error) {
    zg_comm *c = z->comm;
    int root = c->rank == 0;
    shard_record mine;
    memset(&mine, 0, sizeof mine);
    mine.ok = ok;
    if (!ok) snprintf(mine.error, sizeof mine.error, "%s", error);
    if (ok && !root && w->n_files > 0) { /* a rank other than 0 writes its shard only */
        mine.file = w->files[w->n_files - 1];
        mine.wrote = 1;
    }
    shard_record *all = zg_malloc(sizeof mine * (size_t)c->size);
    zg_comm_all_gather_host(c, &mine, all, sizeof mine);
    int failed = -1;
    for (int r = 0; r < c->size && failed < 0; r++)
        if (!all[r].ok) failed = r;
    int rc = 0;
    if (failed >= 0) {
        if (c->size > 1)
            rc = zg_errorf("rank %d could not write its checkpoint files: %s", failed, all[failed].error);
        else
            rc = zg_errorf("%s", all[failed].error); /* one process: the write's own message */
        if (root) zg_ckpt_writer_abort(w);
    } else if (root) {
        for (int r = 1; r < c->size; r++) {
            if (!all[r].wrote) continue;
            w->files = zg_realloc(w->files, (size_t)(w->n_files + 1) * sizeof *w->files);
            w->files[w->n_files++] = all[r].file;
        }
    }
    if (!root) zg_ckpt_writer_release(w); /* without touching the folder: rank 0 owns it */
    free(all);
    return rc;
}

int zg_zero_ckpt_writes_shard(const zg_zero *z) {
    return (z->o.stage == 0 ? z->comm->rank == 0 : 1) && z->end > z->begin;
}

int zg_zero_ckpt_write_shards(zg_zero *z, zg_ckpt_writer *w, const char *out_dir, const char *tag) {
    zg_comm *c = z->comm;
    int root = c->rank == 0, ok = 1;
    zg_comm_barrier(c); /* rank 0's partial folder exists from here on */
    /* the other ranks join the folder rank 0 created; a failure is reported like a failed write, so
     * every rank still takes the all-gather of zg_zero_ckpt_agree */
    if (!root && zg_ckpt_writer_join(w, out_dir, tag) != 0) ok = 0;
    if (ok && zg_zero_ckpt_writes_shard(z)) {
        int before = w->n_files;
        ok = zg_ckpt_write_optimizer(w, &z->opt, z->n) == 0 && w->n_files == before + 1;
    }
    return zg_zero_ckpt_agree(z, w, ok, ok ? "" : zg_error_message());
}
