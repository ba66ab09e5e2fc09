/* A resume's optimizer shard read from the start of the run (ckpt_prefetch.h says why and how). */
#include "train/ckpt_prefetch.h"

#include "backend/host_pages.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/meminfo.h"
#include "train/ckpt_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The thread: the mapping (its touch runs on every core while the caller starts the backend), then the
 * file read into it in place, checksummed in file order. No backend call. */
static void *prefetch_main(void *arg) {
    zg_ckpt_prefetch *p = arg;
    int rc = 0;
    p->base = zg_host_pages_map(p->block_bytes + ZG_HOST_HEADER);
    p->t_mapped = zg_now_s();
    if (!p->base) {
        rc = -1;
        atomic_store(&p->mapped, -1);
    } else {
        /* the backend's block header takes the first ZG_HOST_HEADER bytes; the snapshot's image starts at
         * the next aligned address after them, and so does the file's copy */
        p->image = (unsigned char *)zg_ckpt_io_round_up((size_t)(uintptr_t)(p->base + ZG_HOST_HEADER));
        atomic_store(&p->mapped, 1);
        zg_hasher h;
        zg_hasher_init(&h);
        rc = zg_ckpt_read_image(p->path, p->size, p->image, &h, &p->watch);
        uint64_t got = zg_hasher_final(&h);
        if (rc == 0 && got != p->want)
            rc = zg_errorf("checkpoint file '%s' fails its checksum (corrupt; use another checkpoint)", p->path);
    }
    p->rc = rc;
    if (rc != 0) snprintf(p->error, sizeof p->error, "%s", zg_error_message()); /* errors are per thread */
    p->t_done = zg_now_s();
    atomic_store(&p->ended, 1);
    return NULL;
}

int zg_ckpt_prefetch_start(zg_ckpt_prefetch *p, const zg_ckpt *c, const char **why) {
    memset(p, 0, sizeof *p);
    *why = NULL;
    const char *env = getenv("ZGPT_CKPT_PREFETCH");
    if (env && strcmp(env, "0") == 0) {
        *why = "ZGPT_CKPT_PREFETCH=0";
        return 0;
    }
    const zg_ckpt_shard *s = c->n_shards == 1 ? &c->shards[0] : NULL;
    if (!s || s->begin != 0 || s->end != c->num_params) {
        *why = "the checkpoint's optimizer state is not one shard of the whole model";
        return 0;
    }
    const zg_ckpt_file *f = zg_ckpt_find_file(c, s->file);
    if (!f || !f->unverified) {
        *why = "the shard was checksummed when the checkpoint was opened";
        return 0;
    }
    zg_ckpt_read_mode mode;
    if (zg_ckpt_read_mode_from_env(&mode) != 0) { /* refused later, by the read that needs it */
        zg_error_clear();
        *why = "ZGPT_CKPT_READ names no read strategy";
        return 0;
    }
    size_t bytes = zg_ckpt_snapshot_bytes((size_t)(s->end - s->begin), s->has_master);
    /* the file must fit the block as laid out (its direct reads' rounded-up tail included) */
    if (ZG_CKPT_IO_ALIGN + zg_ckpt_io_round_up((size_t)f->size) > bytes + ZG_HOST_HEADER) {
        *why = "the shard file is larger than its range";
        return 0;
    }
    if ((uint64_t)bytes + ZG_HOST_HEADER > zg_host_mem_available()) {
        *why = "host memory cannot hold a copy of the shard";
        return 0;
    }
    p->path = zg_path_join(c->dir, s->file);
    p->size = f->size;
    p->want = f->xxh3;
    p->begin = s->begin;
    p->end = s->end;
    p->has_master = s->has_master;
    p->block_bytes = bytes;
    p->read_mode = zg_ckpt_read_mode_name(mode);
    p->t_start = zg_now_s();
    int e = pthread_create(&p->thread, NULL, prefetch_main, p);
    if (e != 0) {
        free(p->path);
        memset(p, 0, sizeof *p);
        *why = "no thread could be started";
        return 0;
    }
    p->running = 1;
    return 1;
}

int zg_ckpt_prefetch_active(const zg_ckpt_prefetch *p) { return p->path != NULL; }

int zg_ckpt_prefetch_adopt(zg_ckpt_prefetch *p, zg_backend *be) {
    if (!zg_ckpt_prefetch_active(p) || p->block) return 0;
    const struct timespec tick = {0, 1000000}; /* the mapping takes ~0.4 s for GPT-2 XL's 17.4 GiB */
    while (atomic_load(&p->mapped) == 0) nanosleep(&tick, NULL);
    if (atomic_load(&p->mapped) < 0) {
        zg_ckpt_prefetch_free(p);
        return -1;
    }
    p->block = be->ops->host_adopt(be, p->base, p->block_bytes, "the resume's checkpoint read");
    p->be = be;
    return 0;
}

int zg_ckpt_prefetch_holds(const zg_ckpt_prefetch *p, const zg_ckpt *c, const zg_ckpt_shard *s) {
    if (!zg_ckpt_prefetch_active(p) || s->begin != p->begin || s->end != p->end || s->has_master != p->has_master)
        return 0;
    char *path = zg_path_join(c->dir, s->file);
    int same = strcmp(path, p->path) == 0;
    free(path);
    return same;
}

int zg_ckpt_prefetch_wait_bytes(zg_ckpt_prefetch *p, uint64_t upto, zg_progress *prog) {
    const struct timespec tick = {0, 2000000};
    for (;;) {
        uint64_t done = atomic_load(&p->watch.done);
        if (prog) zg_progress_update(prog, done < upto ? done : upto);
        if (done >= upto) return 0;
        if (p->finished || atomic_load(&p->ended)) /* the thread ended short of upto: its error */
            return zg_ckpt_prefetch_join(p) != 0 ? -1 : zg_errorf("internal: '%s' was read short", p->path);
        nanosleep(&tick, NULL);
    }
}

int zg_ckpt_prefetch_join(zg_ckpt_prefetch *p) {
    if (p->running) {
        int e = pthread_join(p->thread, NULL);
        if (e != 0) ZG_FATAL("joining the checkpoint prefetch thread failed: %s", strerror(e));
        p->running = 0;
        p->finished = 1;
    }
    if (!p->finished) return zg_errorf("internal: the checkpoint prefetch was not started");
    return p->rc == 0 ? 0 : zg_errorf("%s", p->error);
}

void *zg_ckpt_prefetch_give(zg_ckpt_prefetch *p, size_t *bytes) {
    *bytes = 0;
    if (!p->block || p->given) return NULL;
    p->given = 1;
    *bytes = p->block_bytes;
    return p->block;
}

void zg_ckpt_prefetch_free(zg_ckpt_prefetch *p) {
    if (p->running) {
        atomic_store(&p->watch.stop, 1);
        pthread_join(p->thread, NULL);
        p->running = 0;
    }
    if (p->block && !p->given)
        p->be->ops->host_free(p->be, p->block);
    else if (!p->block && p->base)
        zg_host_pages_unmap(p->base, p->block_bytes + ZG_HOST_HEADER);
    free(p->path);
    memset(p, 0, sizeof *p);
}
