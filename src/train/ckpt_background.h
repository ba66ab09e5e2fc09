/* One background checkpoint write: a writer thread that writes a save's files from host copies into
 * the staging folder of a zg_ckpt_writer (src/train/checkpoint.h) while training goes on.
 *
 * The caller fills the job at a save point (the writer, the optimizer snapshot whose device-to-host
 * copies are in flight, and on the committing rank the fp32 parameters or model_from_snapshot, and
 * state.json), starts it, polls zg_ckpt_bg_done at iteration boundaries and, once done, takes the
 * writer back with zg_ckpt_bg_wait to commit it (or abort it). The thread waits for the snapshot's
 * copies before it reads them: zg_ckpt_bg_done and zg_ckpt_bg_wait, called on the thread that drives
 * the backend, check the copies and let it go (a writer thread never calls the device). The thread
 * only writes files into the staging folder: publishing (manifest, swap, `latest`) stays with the
 * caller, so a crash while the thread writes leaves the previous checkpoint and `latest` as they were.
 * The host copies belong to the job until zg_ckpt_bg_wait returns. */
#ifndef ZG_TRAIN_CKPT_BACKGROUND_H
#define ZG_TRAIN_CKPT_BACKGROUND_H

#include "train/checkpoint.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct {
    zg_ckpt_writer w;      /* moved in by the caller; files are added by the thread */
    zg_ckpt_snapshot snap; /* kept between saves (the buffer is reused) */
    int write_shard;       /* write optim_<begin>_<end>.bin from snap */
    size_t num_params;
    /* the committing rank: model.bin from params_host (NULL: none), or header-only from the snapshot's
     * master when model_from_snapshot (mixed precision, the snapshot holds every parameter); and
     * state.json (NULL: none) */
    const float *params_host;
    int model_from_snapshot;
    gpt2_config cfg;
    zg_dtype param_dtype;
    char *state_text;
    uint64_t params_sum; /* model_from_snapshot: computed by the thread */
    /* the gate: the thread starts once the copies have landed */
    pthread_mutex_t gate_lock;
    pthread_cond_t gate_cond;
    int gate_open, gate_init;
    double t_open, t_done; /* when the gate opened and the thread finished (zg_now_s) */
    /* results */
    pthread_t thread;
    int running; /* started and not yet joined */
    atomic_int done;
    int rc;
    char error[1024];
} zg_ckpt_bg;

/* Starts the thread; -1 with an error when it cannot be created (nothing was written then). */
int zg_ckpt_bg_start(zg_ckpt_bg *b);
/* Marks a job that failed before it could start (e.g. joining the staging folder): done, with the
 * current error message. */
void zg_ckpt_bg_fail(zg_ckpt_bg *b);
/* 1 when the thread has finished writing (never blocks; lets the thread start once the copies have
 * landed). */
int zg_ckpt_bg_done(zg_ckpt_bg *b);
/* Waits for the thread; 0 when every file was written, else -1 with the thread's error. The writer
 * b->w then holds the files written, for the caller to commit, abort or release. */
int zg_ckpt_bg_wait(zg_ckpt_bg *b);
/* After a successful zg_ckpt_bg_wait: "wrote X GB in Y s (Z GB/s, direct I/O)" into line, the time from
 * the copies landing to the last file written. */
void zg_ckpt_bg_rate(const zg_ckpt_bg *b, char *line, size_t cap);
/* Waits if needed and frees the snapshot and text (not the writer). */
void zg_ckpt_bg_free(zg_ckpt_bg *b);

#endif
