/* A resume's optimizer shard, read from the first moments of `zgpt train`: before the backend, the
 * model and the optimizer exist, into the host memory that later becomes the checkpoint snapshot's.
 *
 * Why: resuming GPT-2 XL on one H200, the first iteration came ~2 s of start-up (CUDA, cuBLAS, cuDNN,
 * the model's and the optimizer's allocations, the snapshot's reservation) plus the shard's 18.69 GB
 * at the disk's ~2.7-3 GB/s after the start (docs/PERFORMANCE.md, v0.13-v0.15): the disk sat idle
 * during start-up. Read from the start, the start-up hides under the read, and the first iteration is
 * bounded by the read alone (plus the moments' upload and one update).
 *
 * What it does (one process; several ranks open the checkpoint once their communicator exists, so that
 * a failure is agreed, and read as before):
 *   zg_ckpt_prefetch_start    a thread maps zg_ckpt_snapshot_bytes of huge-page host memory (touched on
 *                             every core), then reads the shard file into it laid out as the file (byte
 *                             X at image + X, O_DIRECT straight into place) and checksums it in file
 *                             order on the way;
 *   zg_ckpt_prefetch_adopt    once the backend exists: the block becomes backend host memory (pinned on
 *                             CUDA: cudaHostRegister while the read goes on; both only pin the pages);
 *   read of the optimizer     (zg_ckpt_read_optimizer_deferred with mo->prefetch) waits until the master
 *                             is in place and uploads it from the block; the moments wait for the whole
 *                             read and its checksum (zg_ckpt_moments_wait) and are uploaded from it;
 *   zg_ckpt_prefetch_give     the block to the checkpoint snapshot, whose layout it already has, so no
 *                             second host buffer of the state's size is reserved.
 * A checksum failure surfaces where it did before (the moments' wait, before the first update).
 * ZGPT_CKPT_PREFETCH=0 turns it off (the reads then start after the start-up, as in v0.14). */
#ifndef ZG_TRAIN_CKPT_PREFETCH_H
#define ZG_TRAIN_CKPT_PREFETCH_H

#include "backend/backend.h"
#include "core/progress.h"
#include "train/checkpoint.h"
#include "train/ckpt_io.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct zg_ckpt_prefetch {
    char *path;               /* the shard file */
    uint64_t size, want;      /* its bytes, and its checksum in the manifest */
    uint64_t begin, end;      /* the shard's range of the flat buffer */
    int has_master;           /* the shard holds the fp32 master (mixed precision) */
    size_t block_bytes;       /* the caller's bytes of the block: zg_ckpt_snapshot_bytes(end - begin, has_master) */
    unsigned char *base;      /* zg_host_pages_map(block_bytes + ZG_HOST_HEADER), valid once mapped is 1 */
    unsigned char *image;     /* file byte X at image + X (aligned to ZG_CKPT_IO_ALIGN) */
    void *block;              /* base as backend host memory (host_adopt), NULL before adoption */
    zg_backend *be;           /* block's backend */
    int given;                /* block belongs to another owner now (the snapshot) */
    atomic_int mapped;        /* 0 mapping, 1 mapped, -1 the mapping failed */
    atomic_int ended;         /* the thread has set rc and is about to return */
    zg_ckpt_read_watch watch; /* the read's progress; stop ends it early */
    pthread_t thread;
    int running;  /* a thread to join */
    int finished; /* joined */
    int rc;       /* the read's result: 0 read whole and checksummed */
    char error[1024];
    double t_start, t_mapped, t_done; /* zg_now_s(): started, mapped, read and checksummed */
    const char *read_mode;            /* ZGPT_CKPT_READ's strategy name */
};

/* Starts the read of c's optimizer shard when it is one shard of the whole model ([0, num_params), so
 * one process's optimizer range) not yet checksummed (zg_ckpt_open_deferred), and host memory can hold
 * it. 1 started; 0 not, with *why (a static string) saying why; p is then empty and zg_ckpt_prefetch_free
 * safe. Never an error: without it the resume reads as before. */
int zg_ckpt_prefetch_start(zg_ckpt_prefetch *p, const zg_ckpt *c, const char **why);
/* 1 while p holds a read (started and not freed). */
int zg_ckpt_prefetch_active(const zg_ckpt_prefetch *p);
/* Once the backend exists (its driving thread): waits for the mapping and makes it backend host memory
 * (host_adopt). 0; -1 when the mapping failed (p is then freed and inactive, the error cleared: the
 * resume reads as before). */
int zg_ckpt_prefetch_adopt(zg_ckpt_prefetch *p, zg_backend *be);
/* 1 when p reads c's shard s whole (the same checkpoint file). */
int zg_ckpt_prefetch_holds(const zg_ckpt_prefetch *p, const zg_ckpt *c, const zg_ckpt_shard *s);
/* Waits until file bytes [0, upto) are in place (prog, when non-NULL, shows them arrive); -1 with the
 * read's error when it failed first. */
int zg_ckpt_prefetch_wait_bytes(zg_ckpt_prefetch *p, uint64_t upto, zg_progress *prog);
/* Joins the thread: 0 when the whole file was read and matched its checksum, else -1 with the error
 * (naming the file). Safe twice. */
int zg_ckpt_prefetch_join(zg_ckpt_prefetch *p);
/* Hands the adopted block to a new owner that frees it with host_free (the checkpoint snapshot); NULL
 * when there is none to give. The read may still be writing into it: the new owner must not use it
 * before zg_ckpt_prefetch_join (the trainer's moments wait, which comes before any save). */
void *zg_ckpt_prefetch_give(zg_ckpt_prefetch *p, size_t *bytes);
/* Stops a read in flight, joins it, and frees the block unless it was given. Safe twice and on an
 * empty p. */
void zg_ckpt_prefetch_free(zg_ckpt_prefetch *p);

#endif
