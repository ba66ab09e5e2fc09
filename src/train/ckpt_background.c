#include "train/ckpt_background.h"

#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *writer_main(void *arg) {
    zg_ckpt_bg *b = arg;
    int rc = 0;
    /* the shard first: on a rank that writes only it, that is all; on rank 0 the small files follow */
    if (b->write_shard) rc = zg_ckpt_write_snapshot(&b->w, &b->snap, b->num_params);
    if (rc == 0 && b->params_host)
        rc = zg_ckpt_write_model(&b->w, &b->cfg, b->params_host, b->num_params, b->param_dtype);
    if (rc == 0 && b->state_text) rc = zg_ckpt_write_text(&b->w, "state.json", b->state_text);
    b->rc = rc;
    if (rc != 0) snprintf(b->error, sizeof b->error, "%s", zg_error_message()); /* errors are per thread */
    atomic_store_explicit(&b->done, 1, memory_order_release);
    return NULL;
}

int zg_ckpt_bg_start(zg_ckpt_bg *b) {
    b->rc = 0;
    b->error[0] = '\0';
    b->w.quiet = 1;
    atomic_store(&b->done, 0);
    int e = pthread_create(&b->thread, NULL, writer_main, b);
    if (e != 0) {
        atomic_store(&b->done, 1);
        return zg_errorf("cannot start the checkpoint writer thread: %s", strerror(e));
    }
    b->running = 1;
    return 0;
}

void zg_ckpt_bg_fail(zg_ckpt_bg *b) {
    b->rc = -1;
    snprintf(b->error, sizeof b->error, "%s", zg_error_message());
    atomic_store(&b->done, 1);
}

int zg_ckpt_bg_done(zg_ckpt_bg *b) { return atomic_load_explicit(&b->done, memory_order_acquire); }

int zg_ckpt_bg_wait(zg_ckpt_bg *b) {
    if (b->running) {
        int e = pthread_join(b->thread, NULL); /* fails only for a thread that is not ours to join */
        if (e != 0) ZG_FATAL("joining the checkpoint writer thread failed: %s", strerror(e));
        b->running = 0;
    }
    free(b->state_text);
    b->state_text = NULL;
    b->params_host = NULL;
    if (b->rc != 0) return zg_errorf("%s", b->error);
    return 0;
}

void zg_ckpt_bg_free(zg_ckpt_bg *b) {
    if (b->running) {
        pthread_join(b->thread, NULL);
        b->running = 0;
    }
    free(b->state_text);
    zg_ckpt_snapshot_free(&b->snap);
    b->state_text = NULL;
}
