#include "train/ckpt_background.h"

#include "core/clock.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The thread starts writing once the snapshot's copies have landed (the gate, opened by the thread
 * that drives the backend: it alone may ask the device). */
static void gate_wait(zg_ckpt_bg *b) {
    pthread_mutex_lock(&b->gate_lock);
    while (!b->gate_open) pthread_cond_wait(&b->gate_cond, &b->gate_lock);
    pthread_mutex_unlock(&b->gate_lock);
}

static void gate_open(zg_ckpt_bg *b) {
    pthread_mutex_lock(&b->gate_lock);
    b->gate_open = 1;
    b->t_open = zg_now_s();
    pthread_cond_signal(&b->gate_cond);
    pthread_mutex_unlock(&b->gate_lock);
}

static void *params_checksum_main(void *arg) {
    zg_ckpt_bg *b = arg;
    b->params_sum = zg_ckpt_snapshot_params_checksum(&b->snap, b->param_dtype);
    return NULL;
}

static void *writer_main(void *arg) {
    zg_ckpt_bg *b = arg;
    int rc = 0;
    gate_wait(b);
    /* model.bin's checksum from the master in the snapshot, beside the shard's writing */
    pthread_t sum_thread;
    int sum_threaded = b->model_from_snapshot && pthread_create(&sum_thread, NULL, params_checksum_main, b) == 0;
    if (b->model_from_snapshot && !sum_threaded) params_checksum_main(b);
    /* the shard first: on a rank that writes only it, that is all; on rank 0 the small files follow */
    if (b->write_shard) rc = zg_ckpt_write_snapshot(&b->w, &b->snap, b->num_params);
    if (sum_threaded) pthread_join(sum_thread, NULL);
    if (rc == 0 && b->model_from_snapshot)
        rc = zg_ckpt_write_model_header(&b->w, &b->cfg, b->num_params, b->param_dtype, b->params_sum);
    else if (rc == 0 && b->params_host)
        rc = zg_ckpt_write_model(&b->w, &b->cfg, b->params_host, b->num_params, b->param_dtype);
    if (rc == 0 && b->state_text) rc = zg_ckpt_write_text(&b->w, "state.json", b->state_text);
    b->rc = rc;
    if (rc != 0) snprintf(b->error, sizeof b->error, "%s", zg_error_message()); /* errors are per thread */
    b->t_done = zg_now_s();
    atomic_store_explicit(&b->done, 1, memory_order_release);
    return NULL;
}

/* Opens the gate once the copies have landed (wait: blocks until they have). */
static void gate_check(zg_ckpt_bg *b, int wait) {
    if (!b->running || b->gate_open) return;
    if (b->write_shard || b->model_from_snapshot) {
        if (wait)
            zg_ckpt_snapshot_wait(&b->snap);
        else if (!zg_ckpt_snapshot_ready(&b->snap))
            return;
    }
    gate_open(b);
}

int zg_ckpt_bg_start(zg_ckpt_bg *b) {
    b->rc = 0;
    b->error[0] = '\0';
    b->w.quiet = 1;
    atomic_store(&b->done, 0);
    if (!b->gate_init) {
        pthread_mutex_init(&b->gate_lock, NULL);
        pthread_cond_init(&b->gate_cond, NULL);
        b->gate_init = 1;
    }
    b->gate_open = 0;
    int e = pthread_create(&b->thread, NULL, writer_main, b);
    if (e != 0) {
        atomic_store(&b->done, 1);
        return zg_errorf("cannot start the checkpoint writer thread: %s", strerror(e));
    }
    b->running = 1;
    gate_check(b, 0); /* on the CPU the copies have landed already */
    return 0;
}

void zg_ckpt_bg_fail(zg_ckpt_bg *b) {
    b->rc = -1;
    snprintf(b->error, sizeof b->error, "%s", zg_error_message());
    atomic_store(&b->done, 1);
}

int zg_ckpt_bg_done(zg_ckpt_bg *b) {
    gate_check(b, 0);
    return atomic_load_explicit(&b->done, memory_order_acquire);
}

static void join_writer(zg_ckpt_bg *b) {
    if (!b->running) return;
    gate_check(b, 1);
    int e = pthread_join(b->thread, NULL); /* fails only for a thread that is not ours to join */
    if (e != 0) ZG_FATAL("joining the checkpoint writer thread failed: %s", strerror(e));
    b->running = 0;
}

int zg_ckpt_bg_wait(zg_ckpt_bg *b) {
    join_writer(b);
    free(b->state_text);
    b->state_text = NULL;
    b->params_host = NULL;
    if (b->rc != 0) return zg_errorf("%s", b->error);
    return 0;
}

void zg_ckpt_bg_rate(const zg_ckpt_bg *b, char *line, size_t cap) {
    uint64_t bytes = 0;
    for (int i = 0; i < b->w.n_files; i++) bytes += b->w.files[i].size;
    double s = b->t_done - b->t_open;
    snprintf(line, cap, "wrote %.2f GB in %.2f s (%.2f GB/s%s)", bytes / 1e9, s, s > 0 ? bytes / 1e9 / s : 0.0,
             b->write_shard ? (b->snap.direct ? ", direct I/O" : ", buffered I/O") : "");
}

void zg_ckpt_bg_free(zg_ckpt_bg *b) {
    join_writer(b);
    free(b->state_text);
    zg_ckpt_snapshot_free(&b->snap);
    b->state_text = NULL;
    if (b->gate_init) {
        pthread_mutex_destroy(&b->gate_lock);
        pthread_cond_destroy(&b->gate_cond);
        b->gate_init = 0;
    }
}
