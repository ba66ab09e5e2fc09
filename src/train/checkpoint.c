/* Writing a checkpoint: the staging folder, model.bin and the optimizer shards (from device or host
 * memory, or from the background save's snapshot), the manifest, and the publication (ckpt_retain.c
 * swaps the folder into place); the snapshot's pinned host image, reserved on a thread. */
#define _GNU_SOURCE
#include "train/checkpoint.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/meminfo.h"
#include "core/progress.h"
#include "train/ckpt_internal.h"
#include "train/ckpt_io.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Every small-file write passes the test hooks of checkpoint.h first (ckpt_io.c counts them). */
static int ckpt_write(zg_atomic_file *af, const void *data, size_t n) {
    if (zg_ckpt_io_test_hook(af->path, n) != 0) {
        af->failed = 1;
        return -1;
    }
    return zg_atomic_write(af, data, n);
}

/* Progress of one checkpoint file ("save out/iter_100/model.bin"); rank 0 only prints. */
void zg_ckpt_progress_begin(zg_progress *p, const char *verb, const char *dir, const char *file, uint64_t bytes,
                            int quiet) {
    char label[700];
    snprintf(label, sizeof label, "%s %s/%s", verb, dir, file);
    zg_progress_init(p, label, bytes, NULL);
    /* a background save must not redraw a terminal line under the training output; plain lines into
     * a log are fine (each is one write) */
    p->silent |= quiet && p->tty;
}
/* ---- writer ---------------------------------------------------------------------------------- */

int zg_ckpt_writer_begin(zg_ckpt_writer *w, const char *out_dir, const char *tag) {
    memset(w, 0, sizeof *w);
    int rc = -1;
    if (zg_dir_make(out_dir) != 0) return -1;
    w->out_dir = zg_strdup(out_dir);
    w->tag = zg_strdup(tag);
    w->stage_dir = zg_ckpt_stage_path(out_dir, tag);
    w->final_dir = zg_path_join(out_dir, tag);
    if (zg_dir_remove_flat(w->stage_dir) != 0) goto cleanup; /* a crashed save's leftovers */
    if (mkdir(w->stage_dir, 0755) != 0) {                    /* no inodes, read-only or immutable out_dir, ... */
        zg_errorf("cannot create the checkpoint folder '%s': %s", w->stage_dir, strerror(errno));
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (rc != 0) zg_ckpt_writer_release(w); /* nothing of ours exists yet: nothing to remove */
    return rc;
}

int zg_ckpt_writer_join(zg_ckpt_writer *w, const char *out_dir, const char *tag) {
    memset(w, 0, sizeof *w);
    w->out_dir = zg_strdup(out_dir);
    w->tag = zg_strdup(tag);
    w->stage_dir = zg_ckpt_stage_path(out_dir, tag);
    w->final_dir = zg_path_join(out_dir, tag);
    if (!zg_dir_exists(w->stage_dir)) {
        int rc =
            zg_errorf("checkpoint folder '%s' does not exist (the committing rank did not create it)", w->stage_dir);
        zg_ckpt_writer_release(w);
        return rc;
    }
    return 0;
}

void zg_ckpt_writer_release(zg_ckpt_writer *w) {
    free(w->out_dir);
    free(w->tag);
    free(w->stage_dir);
    free(w->final_dir);
    free(w->files);
    memset(w, 0, sizeof *w);
}

static void add_file(zg_ckpt_writer *w, const char *name, uint64_t size, uint64_t xxh3) {
    w->files = zg_realloc(w->files, (size_t)(w->n_files + 1) * sizeof *w->files);
    zg_ckpt_file *f = &w->files[w->n_files++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->size = size;
    f->xxh3 = xxh3;
}

static int open_in_stage(zg_ckpt_writer *w, zg_atomic_file *af, const char *name) {
    char *p = zg_path_join(w->stage_dir, name);
    int rc = zg_atomic_open(af, p);
    free(p);
    return rc;
}

static int finish_file(zg_ckpt_writer *w, zg_atomic_file *af, const char *name, int ok) {
    if (!ok) {
        zg_atomic_abort(af);
        return -1;
    }
    uint64_t size = af->bytes, sum;
    if (zg_atomic_commit(af, &sum) != 0) return -1;
    add_file(w, name, size, sum);
    return 0;
}

/* model.bin: the header, then the fp32 parameters unless they are the shards' master (from_master). */
static int write_model_file(zg_ckpt_writer *w, const gpt2_config *cfg, const float *params_host, size_t num_params,
                            zg_dtype param_dtype, uint64_t params_checksum) {
    int from_master = param_dtype != ZG_F32;
    unsigned char h[ZG_CKPT_HEADER_BYTES];
    memset(h, 0, sizeof h);
    memcpy(h, ZG_CKPT_MODEL_MAGIC, 8);
    zg_ckpt_put_u32(h + 8, ZG_CKPT_VERSION);
    zg_ckpt_put_u32(h + 12, ZG_CKPT_HEADER_BYTES);
    zg_ckpt_put_u32(h + 16, (uint32_t)cfg->n_layer);
    zg_ckpt_put_u32(h + 20, (uint32_t)cfg->n_head);
    zg_ckpt_put_u32(h + 24, (uint32_t)cfg->n_embd);
    zg_ckpt_put_u32(h + 28, (uint32_t)cfg->block_size);
    zg_ckpt_put_u32(h + 32, (uint32_t)cfg->vocab_size);
    zg_ckpt_put_u32(h + 36, (uint32_t)cfg->padded_vocab_size);
    zg_ckpt_put_u32(h + 40, from_master ? 1u : 0u); /* payload: 0 = fp32 parameters, 1 = none (the shards' master) */
    zg_ckpt_put_u32(h + 44, from_master ? (uint32_t)param_dtype : 0u);
    zg_ckpt_put_u64(h + 48, num_params);
    zg_ckpt_put_u64(h + 56, params_checksum);
    zg_atomic_file af;
    if (open_in_stage(w, &af, "model.bin") != 0) return -1;
    uint64_t payload = from_master ? 0 : num_params;
    zg_progress prog;
    zg_ckpt_progress_begin(&prog, "save", w->final_dir, "model.bin", payload * sizeof(float), w->quiet);
    int ok = ckpt_write(&af, h, sizeof h) == 0;
    for (size_t i = 0; ok && i < payload; i += ZG_CKPT_CHUNK_ELEMS) {
        size_t n = payload - i < ZG_CKPT_CHUNK_ELEMS ? payload - i : ZG_CKPT_CHUNK_ELEMS;
        ok = ckpt_write(&af, params_host + i, n * sizeof(float)) == 0;
        zg_progress_update(&prog, (i + n) * sizeof(float));
    }
    zg_progress_free(&prog);
    return finish_file(w, &af, "model.bin", ok);
}

int zg_ckpt_write_model(zg_ckpt_writer *w, const gpt2_config *cfg, const float *params_host, size_t num_params,
                        zg_dtype param_dtype) {
    /* In mixed precision the parameters are exactly the shards' fp32 master rounded to param_dtype
     * (the optimizer writes param = round(master) at every step, and resume rebuilds them the same
     * way), so a second copy would only cost 4 bytes per parameter: the header carries the dtype and
     * the checksum of the parameters as they are, and the reader rebuilds and checks them. */
    return write_model_file(w, cfg, params_host, num_params, param_dtype,
                            zg_checksum(params_host, num_params * sizeof(float)));
}

int zg_ckpt_write_model_header(zg_ckpt_writer *w, const gpt2_config *cfg, size_t num_params, zg_dtype param_dtype,
                               uint64_t params_checksum) {
    if (param_dtype == ZG_F32) return zg_errorf("internal: a header-only model.bin needs mixed precision");
    return write_model_file(w, cfg, NULL, num_params, param_dtype, params_checksum);
}

/* fp32 values as the training dtype holds them: rounded to bf16/fp16 (nearest even) and widened. The
 * reader (read_model_from_master) and the snapshot's checksum use this one definition. */
/* x rounded to the 16-bit parameter type dt (SIMD conversions: the scalar ones, one branchy call per
 * element, held the background writer's model.bin checksum of GPT-2 XL's 1.56B master weights to ~10 s
 * on its thread, longer than the shard's writes; v0.13). Blocks of 1M elements over OpenMP's threads
 * when `parallel` (the resume's rebuild on the main thread; the writer's thread keeps to one core). */
void zg_ckpt_round_to_dtype(float *x, size_t n, zg_dtype dt, int parallel) {
    enum { BLOCK = 1 << 20 };
    long blocks = (long)((n + BLOCK - 1) / BLOCK);
#pragma omp parallel for schedule(static) if (parallel)
    for (long b = 0; b < blocks; b++) {
        size_t lo = (size_t)b * BLOCK, k = n - lo < BLOCK ? n - lo : BLOCK;
        zg_host_round16(x + lo, k, dt == ZG_BF16);
    }
}

/* The shard header (ZG_CKPT_HEADER_BYTES) of write_shard: the payload's checksum is its last field. */
static void shard_header(unsigned char *h, size_t num_params, size_t begin, size_t end, int has_master, int64_t step,
                         uint64_t payload_sum) {
    memset(h, 0, ZG_CKPT_HEADER_BYTES);
    memcpy(h, ZG_CKPT_OPTIM_MAGIC, 8);
    zg_ckpt_put_u32(h + 8, ZG_CKPT_VERSION);
    zg_ckpt_put_u32(h + 12, ZG_CKPT_HEADER_BYTES);
    zg_ckpt_put_u64(h + 16, num_params);
    zg_ckpt_put_u64(h + 24, begin);
    zg_ckpt_put_u64(h + 32, end);
    zg_ckpt_put_u32(h + 40, has_master ? 1u : 0u);
    zg_ckpt_put_u64(h + 48, (uint64_t)step);
    zg_ckpt_put_u64(h + 56, payload_sum);
}

/* File bytes [lo, hi) of a shard (the header h, then the arrays of n elements each) into dst: downloaded
 * from backend memory (be) or copied from host memory (be NULL). */
static void shard_bytes(unsigned char *dst, size_t lo, size_t hi, const unsigned char *h, zg_backend *be,
                        const float *const arrays[3], size_t n) {
    size_t pos = 0; /* file offset of the current part */
    for (int part = -1; part < 3 && lo < hi; part++) {
        const unsigned char *src = part < 0 ? h : (const unsigned char *)arrays[part];
        size_t len = part < 0 ? ZG_CKPT_HEADER_BYTES : (arrays[part] ? n * sizeof(float) : 0);
        if (lo < pos + len) {
            size_t a = lo - pos, b = (hi < pos + len ? hi : pos + len) - pos;
            if (be && part >= 0)
                be->ops->download(be, dst, src + a, b - a);
            else
                memcpy(dst, src + a, b - a);
            dst += b - a;
            lo = pos + b;
        }
        pos += len;
    }
}

/* One shard from its arrays (master may be NULL) in backend memory (be) or host memory (be NULL): the
 * synchronous save. The same file zg_ckpt_write_snapshot writes, through the same writer threads
 * (direct I/O), from two windows of host memory instead of a whole image: one window is filled
 * (downloaded) and hashed while the threads write the other. */
static int write_shard(zg_ckpt_writer *w, zg_backend *be, size_t begin, size_t end, int64_t step,
                       const float *const arrays[3], size_t num_params) {
    enum { WINDOW = 256 << 20 }; /* 4 writer requests of 64 MiB */
    char name[96];
    snprintf(name, sizeof name, "optim_%zu_%zu.bin", begin, end);
    size_t n = end - begin;
    size_t bytes = ZG_CKPT_HEADER_BYTES + n * sizeof(float) * (arrays[0] ? 3 : 2);
    zg_ckpt_io_mode mode;
    if (zg_ckpt_io_mode_from_env(&mode) != 0) return -1;
    /* The header carries a checksum of the payload: a first pass over the state computes it, so the
     * file is written in order in the second. */
    float *stage = be ? zg_malloc(ZG_CKPT_CHUNK_ELEMS * sizeof(float)) : NULL;
    zg_hasher hh;
    zg_hasher_init(&hh);
    for (int a = 0; a < 3; a++) {
        if (!arrays[a] || n == 0) continue;
        for (size_t i = 0; i < n; i += ZG_CKPT_CHUNK_ELEMS) {
            size_t k = n - i < ZG_CKPT_CHUNK_ELEMS ? n - i : ZG_CKPT_CHUNK_ELEMS;
            const float *chunk = arrays[a] + i;
            if (be) {
                be->ops->download(be, stage, arrays[a] + i, k * sizeof(float));
                chunk = stage;
            }
            zg_hasher_update(&hh, chunk, k * sizeof(float));
        }
    }
    free(stage);
    unsigned char h[ZG_CKPT_HEADER_BYTES];
    shard_header(h, num_params, begin, end, arrays[0] != NULL, step, zg_hasher_final(&hh));
    size_t win = bytes < WINDOW ? zg_ckpt_io_round_up(bytes) : WINDOW;
    unsigned char *buf[2] = {NULL, NULL};
    int rc = 0;
    for (int k = 0; k < 2 && rc == 0; k++)
        if (posix_memalign((void **)&buf[k], ZG_CKPT_IO_ALIGN, win) != 0) {
            buf[k] = NULL;
            rc = zg_errorf("out of host memory for the checkpoint write windows (2 x %zu bytes)", win);
        }
    if (rc != 0) {
        free(buf[0]);
        return -1;
    }
    char *path = zg_path_join(w->stage_dir, name);
    zg_ckpt_io_file f;
    shard_bytes(buf[0], 0, ZG_CKPT_HEADER_BYTES, h, be, arrays, n); /* the open probes with the first block */
    rc = zg_ckpt_io_open(&f, path, buf[0], bytes, mode);
    free(path);
    if (rc != 0) {
        free(buf[0]);
        free(buf[1]);
        return -1;
    }
    zg_progress prog;
    zg_ckpt_progress_begin(&prog, "save", w->final_dir, name, bytes, w->quiet);
    zg_hasher fh;
    zg_hasher_init(&fh);
    for (size_t lo = 0, k = 0; rc == 0 && lo < bytes; lo += win, k ^= 1) {
        size_t hi = bytes - lo < win ? bytes : lo + win;
        shard_bytes(buf[k], lo, hi, h, be, arrays, n);
        memset(buf[k] + (hi - lo), 0, zg_ckpt_io_round_up(hi - lo) - (hi - lo)); /* a direct write's tail block */
        zg_hasher_update(&fh, buf[k], hi - lo);
        /* waits for the other window's writes, then writes this one */
        rc = zg_ckpt_io_start_window(&f, buf[k], lo, lo, hi);
        zg_progress_update(&prog, lo);
    }
    if (rc == 0) rc = zg_ckpt_io_join(&f);
    zg_progress_update(&prog, rc == 0 ? bytes : prog.done);
    zg_progress_free(&prog);
    uint64_t sum = zg_hasher_final(&fh);
    if (zg_ckpt_io_finish(&f, rc == 0) != 0) rc = -1;
    free(buf[0]);
    free(buf[1]);
    if (rc != 0) return -1;
    add_file(w, name, bytes, sum);
    return 0;
}

int zg_ckpt_write_optimizer(zg_ckpt_writer *w, const zg_optimizer *o, size_t num_params) {
    const float *const arrays[3] = {o->master, o->m, o->v};
    return write_shard(w, o->host ? NULL : o->be, o->begin, o->end, o->step, arrays, num_params);
}

size_t zg_ckpt_snapshot_bytes(size_t n, int has_master) {
    return zg_ckpt_io_round_up(ZG_CKPT_HEADER_BYTES + n * sizeof(float) * (has_master ? 3 : 2)) + ZG_CKPT_IO_ALIGN;
}

/* Elements the snapshot of o's range holds: the master (when o has one), m and v. */
static size_t snapshot_elems(const zg_optimizer *o) { return (o->end - o->begin) * (o->master ? 3 : 2); }

/* The allocation itself, on any thread: NULL with an error when host memory cannot hold it. */
static void *snapshot_alloc(zg_backend *be, size_t bytes) {
    /* Linux overcommits: malloc of more than is free succeeds and the kernel kills the process later.
     * Ask first (ZGPT_TEST_HOST_AVAILABLE_BYTES stands in for the kernel's figure in tests). */
    uint64_t avail = zg_host_mem_available();
    if ((uint64_t)bytes > avail) {
        zg_errorf("host memory cannot hold a checkpoint snapshot of %.2f GiB (%.2f GiB available)",
                  (double)bytes / (1u << 30), (double)avail / (1u << 30));
        return NULL;
    }
    /* Pinned (CUDA) and touched once here, kept between saves: the copies run at the bus's rate without
     * faulting pages in at every save. One alignment block more, for direct I/O. */
    return be->ops->host_alloc(be, bytes, 1, "the checkpoint snapshot");
}

/* Takes a block allocated for `cap` elements into s (on the thread that drives the backend). */
static void snapshot_adopt(zg_ckpt_snapshot *s, zg_backend *be, void *block, size_t cap) {
    s->block = block;
    s->be = be;
    s->image = (unsigned char *)zg_ckpt_io_round_up((size_t)(uintptr_t)s->block);
    s->buf = (float *)(s->image + ZG_CKPT_HEADER_BYTES);
    s->cap = cap;
    s->at_save = be->ops->event_create(be);
    s->copied = be->ops->event_create(be);
}

static void *reserver_main(void *arg) {
    zg_ckpt_snapshot *s = arg;
    double t0 = zg_now_s();
    /* test hook: a slow reservation, so that a test's first save comes before it is done */
    const char *delay = getenv("ZGPT_TEST_RESERVE_DELAY_MS");
    if (delay && *delay) {
        long ms = strtol(delay, NULL, 10);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    }
    s->pending_block = snapshot_alloc(s->be, s->reserve_bytes);
    s->reserve_rc = s->pending_block ? 0 : -1;
    if (!s->pending_block) snprintf(s->reserve_error, sizeof s->reserve_error, "%s", zg_error_message());
    s->reserve_s = zg_now_s() - t0;
    atomic_store_explicit(&s->reserve_done, 1, memory_order_release);
    return NULL;
}

int zg_ckpt_snapshot_reserve_start(zg_ckpt_snapshot *s, const zg_optimizer *o) {
    size_t n = o->end - o->begin, want = snapshot_elems(o);
    if (s->reserving || (want <= s->cap && s->be == o->be)) return 0;
    zg_ckpt_snapshot_free(s);
    s->be = o->be; /* whose host_alloc the thread calls; the events come at the join */
    s->reserve_bytes = zg_ckpt_snapshot_bytes(n, o->master != NULL);
    s->reserve_cap = want;
    atomic_store(&s->reserve_done, 0);
    int e = pthread_create(&s->reserver, NULL, reserver_main, s);
    if (e != 0) {
        memset(s, 0, sizeof *s);
        return zg_errorf("cannot start the thread that reserves the checkpoint snapshot: %s", strerror(e));
    }
    s->reserving = 1;
    return 0;
}

int zg_ckpt_snapshot_reserving(const zg_ckpt_snapshot *s) { return s->reserving; }

int zg_ckpt_snapshot_reserve_finished(zg_ckpt_snapshot *s) {
    return s->reserving && atomic_load_explicit(&s->reserve_done, memory_order_acquire);
}

int zg_ckpt_snapshot_reserve_join(zg_ckpt_snapshot *s, double *took) {
    if (took) *took = 0;
    if (!s->reserving) return 0;
    int e = pthread_join(s->reserver, NULL); /* fails only for a thread that is not ours to join */
    if (e != 0) ZG_FATAL("joining the checkpoint snapshot's reservation thread failed: %s", strerror(e));
    zg_backend *be = s->be;
    void *block = s->pending_block;
    size_t cap = s->reserve_cap;
    int rc = s->reserve_rc;
    char why[sizeof s->reserve_error];
    snprintf(why, sizeof why, "%s", s->reserve_error);
    if (took) *took = s->reserve_s;
    memset(s, 0, sizeof *s);
    if (rc != 0) return zg_errorf("%s", why);
    snapshot_adopt(s, be, block, cap);
    return 0;
}

int zg_ckpt_snapshot_take_block(zg_ckpt_snapshot *s, const zg_optimizer *o, void *block, size_t bytes) {
    size_t n = o->end - o->begin;
    if (s->reserving || s->block || bytes != zg_ckpt_snapshot_bytes(n, o->master != NULL)) return -1;
    snapshot_adopt(s, o->be, block, snapshot_elems(o));
    return 0;
}

int zg_ckpt_snapshot_reserve(zg_ckpt_snapshot *s, const zg_optimizer *o) {
    if (zg_ckpt_snapshot_reserve_join(s, NULL) != 0) return -1;
    size_t n = o->end - o->begin, want = snapshot_elems(o);
    zg_backend *be = o->be;
    if (want > s->cap || (s->be && s->be != be)) {
        zg_ckpt_snapshot_free(s);
        void *block = snapshot_alloc(be, zg_ckpt_snapshot_bytes(n, o->master != NULL));
        if (!block) return -1;
        snapshot_adopt(s, be, block, want);
    }
    return 0;
}

int zg_ckpt_snapshot_take(zg_ckpt_snapshot *s, zg_optimizer *o) {
    if (zg_ckpt_snapshot_reserve(s, o) != 0) return -1;
    size_t n = o->end - o->begin;
    zg_backend *be = o->be;
    s->begin = o->begin;
    s->end = o->end;
    s->step = o->step;
    s->has_master = o->master != NULL;
    /* the copies start after everything queued so far on the compute stream (the last update) */
    be->ops->event_record(be, s->at_save, ZG_STREAM_COMPUTE);
    be->ops->stream_wait(be, ZG_STREAM_COPY, s->at_save);
    const float *src[3] = {o->master, o->m, o->v};
    float *dst = s->buf;
    for (int a = 0; a < 3; a++) {
        if (!src[a]) continue;
        /* ZeRO-Offload keeps the state in host memory: copied here, before the next host update (a
         * stall of the state's bytes over the host's copy rate; the device path below does not stall) */
        if (o->host)
            memcpy(dst, src[a], n * sizeof(float));
        else
            be->ops->copy_async(be, dst, src[a], n * sizeof(float), ZG_COPY_D2H);
        dst += n;
    }
    be->ops->event_record(be, s->copied, ZG_STREAM_COPY);
    if (!o->host) zg_optimizer_hold(o);
    return 0;
}

void *zg_ckpt_snapshot_lend(const zg_ckpt_snapshot *s, size_t *bytes) {
    *bytes = s->block && !s->reserving ? zg_ckpt_io_round_up(ZG_CKPT_HEADER_BYTES + s->cap * sizeof(float)) : 0;
    return *bytes ? s->image : NULL;
}

int zg_ckpt_snapshot_ready(const zg_ckpt_snapshot *s) {
    return !s->copied || s->be->ops->event_query(s->be, s->copied);
}

void zg_ckpt_snapshot_wait(const zg_ckpt_snapshot *s) {
    if (s->copied) s->be->ops->event_synchronize(s->be, s->copied);
}

void zg_ckpt_snapshot_free(zg_ckpt_snapshot *s) {
    if (zg_ckpt_snapshot_reserve_join(s, NULL) != 0) zg_error_clear(); /* a failed reservation holds nothing */
    if (s->be) {
        zg_ckpt_snapshot_wait(s);
        s->be->ops->event_destroy(s->be, s->at_save);
        s->be->ops->event_destroy(s->be, s->copied);
        s->be->ops->host_free(s->be, s->block);
    }
    memset(s, 0, sizeof *s);
}

int zg_ckpt_write_snapshot(zg_ckpt_writer *w, zg_ckpt_snapshot *s, size_t num_params) {
    char name[96];
    snprintf(name, sizeof name, "optim_%zu_%zu.bin", s->begin, s->end);
    size_t n = s->end - s->begin, payload = n * sizeof(float) * (s->has_master ? 3 : 2);
    size_t bytes = ZG_CKPT_HEADER_BYTES + payload;
    zg_ckpt_io_mode mode;
    if (zg_ckpt_io_mode_from_env(&mode) != 0) return -1;
    char *path = zg_path_join(w->stage_dir, name);
    zg_ckpt_io_file f;
    int rc = zg_ckpt_io_open(&f, path, s->image, bytes, mode);
    free(path);
    if (rc != 0) return -1;
    /* The threads write everything after the first block while this one checksums the payload, fills
     * the header (which holds that checksum) and checksums the whole file from memory; the first
     * block goes last. The tail block's padding is zeroed (written, then truncated away). */
    memset(s->image + bytes, 0, zg_ckpt_io_round_up(bytes) - bytes);
    size_t head = bytes < ZG_CKPT_IO_ALIGN ? bytes : ZG_CKPT_IO_ALIGN;
    s->direct = f.mode == ZG_CKPT_IO_DIRECT;
    rc = zg_ckpt_io_start(&f, head);
    uint64_t sum = 0;
    if (rc == 0) {
        shard_header(s->image, num_params, s->begin, s->end, s->has_master, s->step, zg_checksum(s->buf, payload));
        sum = zg_checksum(s->image, bytes);
        rc = zg_ckpt_io_write(&f, 0, head);
    }
    if (zg_ckpt_io_finish(&f, rc == 0) != 0) return -1;
    add_file(w, name, bytes, sum);
    return 0;
}

uint64_t zg_ckpt_snapshot_params_checksum(const zg_ckpt_snapshot *s, zg_dtype param_dtype) {
    size_t n = s->end - s->begin;
    float *tmp = zg_malloc(ZG_CKPT_CHUNK_ELEMS * sizeof(float));
    zg_hasher h;
    zg_hasher_init(&h);
    for (size_t i = 0; i < n; i += ZG_CKPT_CHUNK_ELEMS) {
        size_t k = n - i < ZG_CKPT_CHUNK_ELEMS ? n - i : ZG_CKPT_CHUNK_ELEMS;
        memcpy(tmp, s->buf + i, k * sizeof(float));
        zg_ckpt_round_to_dtype(tmp, k, param_dtype, 0);
        zg_hasher_update(&h, tmp, k * sizeof(float));
    }
    free(tmp);
    return zg_hasher_final(&h);
}

int zg_ckpt_write_text(zg_ckpt_writer *w, const char *name, const char *text) {
    zg_atomic_file af;
    if (open_in_stage(w, &af, name) != 0) return -1;
    int ok = ckpt_write(&af, text, strlen(text)) == 0;
    return finish_file(w, &af, name, ok);
}

static char *manifest_json(const zg_ckpt_writer *w) {
    cJSON *j = cJSON_CreateObject();
    ZG_CHECK_PTR(j);
    cJSON_AddStringToObject(j, "format", "zgpt-checkpoint");
    cJSON_AddNumberToObject(j, "version", ZG_CKPT_VERSION);
    cJSON_AddStringToObject(j, "tag", w->tag);
    cJSON *files = cJSON_AddArrayToObject(j, "files");
    for (int i = 0; i < w->n_files; i++) {
        cJSON *f = cJSON_CreateObject();
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, w->files[i].xxh3);
        cJSON_AddStringToObject(f, "name", w->files[i].name);
        cJSON_AddNumberToObject(f, "size", (double)w->files[i].size);
        cJSON_AddStringToObject(f, "xxh3", hex);
        cJSON_AddItemToArray(files, f);
    }
    char *s = cJSON_Print(j);
    ZG_CHECK_PTR(s);
    cJSON_Delete(j);
    return s;
}

int zg_ckpt_writer_commit(zg_ckpt_writer *w, int set_latest) {
    if (!w->stage_dir) return zg_errorf("internal: checkpoint writer used after commit/abort");
    char *m = manifest_json(w);
    zg_atomic_file af;
    int rc = open_in_stage(w, &af, "manifest.json");
    if (rc == 0) {
        if (ckpt_write(&af, m, strlen(m)) != 0) {
            zg_atomic_abort(&af);
            rc = -1;
        } else {
            rc = zg_atomic_commit(&af, NULL);
        }
    }
    free(m);
    if (rc == 0) rc = zg_dir_sync(w->stage_dir);
    if (rc == 0) rc = zg_ckpt_swap_into_place(w->stage_dir, w->final_dir, w->out_dir);
    if (rc == 0 && set_latest && zg_ckpt_set_latest(w->out_dir, w->tag) != 0) {
        /* The folder is in place but `latest` still names the previous checkpoint: unpublished, it
         * would only hold the disk space a retry needs. Remove it, unless `latest` names this tag
         * already (a re-save of the same tag: then the new folder is the published one). */
        char cur[256];
        int published = zg_ckpt_latest_tag(w->out_dir, cur, sizeof cur) == 0 && strcmp(cur, w->tag) == 0;
        zg_error_prefix("checkpoint '%s' was written but 'latest' could not be updated", w->final_dir);
        if (!published) zg_ckpt_remove_tag_folder(w->out_dir, w->tag, NULL, NULL);
        rc = -1;
    }
    if (rc != 0) {
        zg_ckpt_writer_abort(w);
        return -1;
    }
    free(w->stage_dir);
    w->stage_dir = NULL;
    zg_ckpt_writer_abort(w); /* frees the rest */
    return 0;
}

void zg_ckpt_writer_abort(zg_ckpt_writer *w) {
    if (w->stage_dir) zg_dir_remove_flat(w->stage_dir);
    zg_ckpt_writer_release(w);
}

int zg_ckpt_set_latest(const char *out_dir, const char *tag) {
    char *p = zg_path_join(out_dir, "latest");
    zg_atomic_file af;
    int rc = zg_atomic_open(&af, p);
    free(p);
    if (rc != 0) return -1;
    if (ckpt_write(&af, tag, strlen(tag)) != 0 || ckpt_write(&af, "\n", 1) != 0) {
        zg_atomic_abort(&af);
        return -1;
    }
    return zg_atomic_commit(&af, NULL);
}

int zg_ckpt_link(const char *out_dir, const char *src_tag, const char *dst_tag) {
    char *src = zg_path_join(out_dir, src_tag), *dst = zg_path_join(out_dir, dst_tag);
    char *stage = zg_ckpt_stage_path(out_dir, dst_tag);
    int rc = zg_dir_remove_flat(stage);
    if (rc == 0) rc = zg_dir_make(stage);
    DIR *d = rc == 0 ? opendir(src) : NULL;
    if (rc == 0 && !d) rc = zg_errorf("cannot open checkpoint '%s': %s", src, strerror(errno));
    if (d) {
        struct dirent *e;
        while (rc == 0 && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char *a = zg_path_join(src, e->d_name), *b = zg_path_join(stage, e->d_name);
            if (link(a, b) != 0) rc = zg_errorf("cannot link '%s' to '%s': %s", a, b, strerror(errno));
            free(a);
            free(b);
        }
        closedir(d);
    }
    if (rc == 0) rc = zg_dir_sync(stage);
    if (rc == 0) rc = zg_ckpt_swap_into_place(stage, dst, out_dir);
    if (rc != 0) zg_dir_remove_flat(stage);
    free(src);
    free(dst);
    free(stage);
    return rc;
}
