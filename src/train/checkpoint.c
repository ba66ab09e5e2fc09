/* renameat2(RENAME_EXCHANGE) swaps a finished checkpoint folder with the old one in one step. */
#define _GNU_SOURCE
#include "train/checkpoint.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/meminfo.h"
#include "core/progress.h"
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

enum { CHUNK_ELEMS = 1 << 20 }; /* host staging for device <-> file copies: 4 MiB of fp32 */

/* Every small-file write passes the test hooks of checkpoint.h first (ckpt_io.c counts them). */
static int ckpt_write(zg_atomic_file *af, const void *data, size_t n) {
    if (zg_ckpt_io_test_hook(af->path, n) != 0) {
        af->failed = 1;
        return -1;
    }
    return zg_atomic_write(af, data, n);
}

/* Progress of one checkpoint file ("save out/iter_100/model.bin"); rank 0 only prints. */
static void progress_begin(zg_progress *p, const char *verb, const char *dir, const char *file, uint64_t bytes,
                           int quiet) {
    char label[700];
    snprintf(label, sizeof label, "%s %s/%s", verb, dir, file);
    zg_progress_init(p, label, bytes, NULL);
    /* a background save must not redraw a terminal line under the training output; plain lines into
     * a log are fine (each is one write) */
    p->silent |= quiet && p->tty;
}

/* ---- little-endian header fields ------------------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- small filesystem helpers ------------------------------------------------------------------ */

/* Puts the finished folder `stage` at `final`, replacing an existing one in one atomic step. */
static int swap_into_place(const char *stage, const char *final, const char *out_dir) {
    struct stat st;
    if (lstat(final, &st) == 0) { /* a link is exchanged as a link, then removed as one (never followed) */
        if (renameat2(AT_FDCWD, stage, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
            /* `stage` now holds the old checkpoint */
            if (zg_dir_sync(out_dir) != 0) return -1;
            return zg_dir_remove_flat(stage);
        }
        if (errno != EINVAL && errno != ENOSYS) return zg_errorf("cannot replace '%s': %s", final, strerror(errno));
        /* File systems without RENAME_EXCHANGE: move the old folder aside first. */
        size_t n = strlen(final) + 16;
        char *old = zg_malloc(n);
        snprintf(old, n, "%s.old", final);
        zg_dir_remove_flat(old);
        if (rename(final, old) != 0) {
            int e = errno;
            free(old);
            return zg_errorf("cannot move '%s' aside: %s", final, strerror(e));
        }
        if (rename(stage, final) != 0) {
            int e = errno;
            if (rename(old, final) != 0) { /* best effort to restore */
            }
            free(old);
            return zg_errorf("cannot rename '%s' to '%s': %s", stage, final, strerror(e));
        }
        int rc = zg_dir_sync(out_dir);
        if (rc == 0) rc = zg_dir_remove_flat(old);
        free(old);
        return rc;
    }
    if (rename(stage, final) != 0) return zg_errorf("cannot rename '%s' to '%s': %s", stage, final, strerror(errno));
    return zg_dir_sync(out_dir);
}

/* out_dir/<prefix><tag>: the hidden names of a tag's folder while it is written (.partial.) or deleted
 * (.trash.); no tag starts with '.'. */
static char *hidden_path(const char *out_dir, const char *prefix, const char *tag) {
    size_t n = strlen(prefix) + strlen(tag) + 1;
    char *name = zg_malloc(n);
    snprintf(name, n, "%s%s", prefix, tag);
    char *p = zg_path_join(out_dir, name);
    free(name);
    return p;
}
static char *stage_path(const char *out_dir, const char *tag) { return hidden_path(out_dir, ".partial.", tag); }

static int read_latest(const char *out_dir, char *tag, size_t cap);

/* The hidden name a tag folder takes while it is deleted: .trash.<name> (docs/FORMATS.md). `latest`,
 * the tag listings and loads never see it; the next start removes one that a crash left
 * (zg_ckpt_out_dir_tidy). Its files go on several threads: the file system frees a file's blocks inside
 * its unlink (seconds for a shard of gigabytes), and a sharded checkpoint has a file per rank. */
enum { ZG_CKPT_UNLINK_THREADS = 8 };
static char *trash_path(const char *out_dir, const char *tag) { return hidden_path(out_dir, ".trash.", tag); }

/* Removes out_dir/<name> so that no crash midway leaves a <name> folder holding only some of its files:
 * it is first renamed to its trash name .trash.<name> (one rename, the folder synced: the tag is gone
 * at once), then its files are unlinked in parallel. A link or a plain file is removed as itself
 * (never followed). *bytes (when non-NULL): the bytes removed. Test hook: ZGPT_TEST_DELETE_DELAY_MS=D
 * sleeps D ms between the rename and the unlinks, so that a test can kill a run in the middle. */
static int remove_tag_folder(const char *out_dir, const char *name, uint64_t *bytes, zg_ckpt_retainer *r) {
    char *p = zg_path_join(out_dir, name), *trash = trash_path(out_dir, name);
    struct stat st;
    int rc = 0;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = zg_dir_remove_flat(trash); /* a leftover of the same name (an earlier crash) */
        if (rc == 0 && rename(p, trash) != 0) rc = zg_errorf("cannot move '%s' aside: %s", p, strerror(errno));
        if (rc == 0) rc = zg_dir_sync(out_dir);
        if (rc == 0 && r && atomic_load(&r->hand_off)) { /* the end of a run: the wait hands the files on */
            r->handed = zg_realloc(r->handed, (size_t)(r->n_handed + 1) * sizeof *r->handed);
            r->handed[r->n_handed++] = trash;
            trash = NULL;
            if (bytes) *bytes = 0;
            goto cleanup;
        }
        const char *delay = getenv("ZGPT_TEST_DELETE_DELAY_MS");
        if (rc == 0 && delay && *delay) {
            long ms = strtol(delay, NULL, 10);
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        }
        if (rc == 0) rc = zg_dir_remove_files(trash, ZG_CKPT_UNLINK_THREADS, bytes);
    } else {
        rc = zg_dir_remove_flat(p);
    }
cleanup:
    free(p);
    free(trash);
    return rc;
}

/* ---- writer ---------------------------------------------------------------------------------- */

int zg_ckpt_writer_begin(zg_ckpt_writer *w, const char *out_dir, const char *tag) {
    memset(w, 0, sizeof *w);
    int rc = -1;
    if (zg_dir_make(out_dir) != 0) return -1;
    w->out_dir = zg_strdup(out_dir);
    w->tag = zg_strdup(tag);
    w->stage_dir = stage_path(out_dir, tag);
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
    w->stage_dir = stage_path(out_dir, tag);
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
    put_u32(h + 8, ZG_CKPT_VERSION);
    put_u32(h + 12, ZG_CKPT_HEADER_BYTES);
    put_u32(h + 16, (uint32_t)cfg->n_layer);
    put_u32(h + 20, (uint32_t)cfg->n_head);
    put_u32(h + 24, (uint32_t)cfg->n_embd);
    put_u32(h + 28, (uint32_t)cfg->block_size);
    put_u32(h + 32, (uint32_t)cfg->vocab_size);
    put_u32(h + 36, (uint32_t)cfg->padded_vocab_size);
    put_u32(h + 40, from_master ? 1u : 0u); /* payload: 0 = fp32 parameters, 1 = none (the shards' master) */
    put_u32(h + 44, from_master ? (uint32_t)param_dtype : 0u);
    put_u64(h + 48, num_params);
    put_u64(h + 56, params_checksum);
    zg_atomic_file af;
    if (open_in_stage(w, &af, "model.bin") != 0) return -1;
    uint64_t payload = from_master ? 0 : num_params;
    zg_progress prog;
    progress_begin(&prog, "save", w->final_dir, "model.bin", payload * sizeof(float), w->quiet);
    int ok = ckpt_write(&af, h, sizeof h) == 0;
    for (size_t i = 0; ok && i < payload; i += CHUNK_ELEMS) {
        size_t n = payload - i < CHUNK_ELEMS ? payload - i : CHUNK_ELEMS;
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
static void round_to_dtype(float *x, size_t n, zg_dtype dt, int parallel) {
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
    put_u32(h + 8, ZG_CKPT_VERSION);
    put_u32(h + 12, ZG_CKPT_HEADER_BYTES);
    put_u64(h + 16, num_params);
    put_u64(h + 24, begin);
    put_u64(h + 32, end);
    put_u32(h + 40, has_master ? 1u : 0u);
    put_u64(h + 48, (uint64_t)step);
    put_u64(h + 56, payload_sum);
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
    float *stage = be ? zg_malloc(CHUNK_ELEMS * sizeof(float)) : NULL;
    zg_hasher hh;
    zg_hasher_init(&hh);
    for (int a = 0; a < 3; a++) {
        if (!arrays[a] || n == 0) continue;
        for (size_t i = 0; i < n; i += CHUNK_ELEMS) {
            size_t k = n - i < CHUNK_ELEMS ? n - i : CHUNK_ELEMS;
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
    progress_begin(&prog, "save", w->final_dir, name, bytes, w->quiet);
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
    size_t n = o->end - o->begin, want = n * (o->master ? 3 : 2);
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

int zg_ckpt_snapshot_reserve(zg_ckpt_snapshot *s, const zg_optimizer *o) {
    if (zg_ckpt_snapshot_reserve_join(s, NULL) != 0) return -1;
    size_t n = o->end - o->begin, want = n * (o->master ? 3 : 2);
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
    float *tmp = zg_malloc(CHUNK_ELEMS * sizeof(float));
    zg_hasher h;
    zg_hasher_init(&h);
    for (size_t i = 0; i < n; i += CHUNK_ELEMS) {
        size_t k = n - i < CHUNK_ELEMS ? n - i : CHUNK_ELEMS;
        memcpy(tmp, s->buf + i, k * sizeof(float));
        round_to_dtype(tmp, k, param_dtype, 0);
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
    if (rc == 0) rc = swap_into_place(w->stage_dir, w->final_dir, w->out_dir);
    if (rc == 0 && set_latest && zg_ckpt_set_latest(w->out_dir, w->tag) != 0) {
        /* The folder is in place but `latest` still names the previous checkpoint: unpublished, it
         * would only hold the disk space a retry needs. Remove it, unless `latest` names this tag
         * already (a re-save of the same tag: then the new folder is the published one). */
        char cur[256];
        int published = read_latest(w->out_dir, cur, sizeof cur) == 0 && strcmp(cur, w->tag) == 0;
        zg_error_prefix("checkpoint '%s' was written but 'latest' could not be updated", w->final_dir);
        if (!published) remove_tag_folder(w->out_dir, w->tag, NULL, NULL);
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
    char *stage = stage_path(out_dir, dst_tag);
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
    if (rc == 0) rc = swap_into_place(stage, dst, out_dir);
    if (rc != 0) zg_dir_remove_flat(stage);
    free(src);
    free(dst);
    free(stage);
    return rc;
}

/* A tag names a folder directly inside out_dir: letters, digits, '_', '-' and '.', not starting with
 * '.' (so never ".", ".." nor a staging folder). */
static int tag_valid(const char *t) {
    if (!*t || *t == '.') return 0;
    for (; *t; t++)
        if (!(isalnum((unsigned char)*t) || *t == '_' || *t == '-' || *t == '.')) return 0;
    return 1;
}

static int read_latest(const char *out_dir, char *tag, size_t cap) {
    char *p = zg_path_join(out_dir, "latest");
    char *text;
    size_t len;
    int rc = zg_file_read_all(p, &text, &len);
    free(p);
    if (rc != 0) return -1;
    /* a trailing newline, CRLF (edited on Windows) or spaces are not part of the tag */
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ')) text[--len] = '\0';
    if (len == 0 || len >= cap || len != strlen(text) || !tag_valid(text)) {
        rc = zg_errorf("'%s/latest' is corrupt (it holds %s%.40s%s; expected a checkpoint tag such as iter_100): "
                       "write the tag of a complete checkpoint into it",
                       out_dir, len ? "\"" : "nothing", text,
                       len > 40 ? "...\""
                       : len    ? "\""
                                : "");
        free(text);
        return rc;
    }
    memcpy(tag, text, len + 1);
    free(text);
    return 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int retain_run(const char *out_dir, int64_t keep_last_k, FILE *log, const char *how, zg_ckpt_retainer *r) {
    char latest[256] = "";
    if (read_latest(out_dir, latest, sizeof latest) != 0) zg_error_clear();
    DIR *d = opendir(out_dir);
    if (!d) return zg_errorf("cannot open '%s': %s", out_dir, strerror(errno));
    int64_t *iters = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (strncmp(e->d_name, "iter_", 5) != 0) continue;
        long long v = strtoll(e->d_name + 5, &end, 10);
        if (*end || end == e->d_name + 5) continue;
        if (e->d_type == DT_LNK) continue; /* a link is the user's, not a checkpoint of this run: left alone */
        iters = zg_realloc(iters, (n + 1) * sizeof *iters);
        iters[n++] = v;
    }
    closedir(d);
    qsort(iters, n, sizeof *iters, cmp_i64);
    int rc = 0;
    for (size_t i = 0; i + (size_t)keep_last_k < n; i++) {
        char tag[64];
        snprintf(tag, sizeof tag, "iter_%lld", (long long)iters[i]);
        if (strcmp(tag, latest) == 0) continue;
        uint64_t bytes = 0;
        double t0 = zg_now_s();
        int handed = r ? r->n_handed : 0;
        if (remove_tag_folder(out_dir, tag, &bytes, r) != 0) {
            rc = -1;
        } else if (log && (!r || r->n_handed == handed)) { /* handed on: the wait says it */
            /* one line, one call: whole even beside the training thread's lines */
            fprintf(log, "checkpoint: removed %s (%.2f GB) in %.2f s, %s\n", tag, bytes / 1e9, zg_now_s() - t0, how);
            fflush(log);
        }
    }
    free(iters);
    return rc;
}

int zg_ckpt_retain_log(const char *out_dir, int64_t keep_last_k, FILE *log, const char *how) {
    return retain_run(out_dir, keep_last_k, log, how, NULL);
}

int zg_ckpt_retain(const char *out_dir, int64_t keep_last_k) {
    return zg_ckpt_retain_log(out_dir, keep_last_k, NULL, NULL);
}

static void *retainer_main(void *arg) {
    zg_ckpt_retainer *r = arg;
    r->rc = retain_run(r->out_dir, r->keep_last_k, r->log, "on a thread", r);
    if (r->rc != 0) snprintf(r->error, sizeof r->error, "%s", zg_error_message()); /* errors are per thread */
    return NULL;
}

/* The folders moved aside under hand_off go to `rm -rf` in a session of its own (it outlives this run;
 * nothing waits for it); when it cannot start, they are removed here. */
static int retainer_hand_on(zg_ckpt_retainer *r) {
    int rc = 0;
    if (r->n_handed == 0) return 0;
    uint64_t *bytes = zg_malloc((size_t)r->n_handed * sizeof *bytes); /* for the lines: before rm starts */
    for (int i = 0; i < r->n_handed; i++) bytes[i] = zg_dir_file_bytes(r->handed[i]);
    char **argv = zg_malloc((size_t)(r->n_handed + 4) * sizeof *argv);
    argv[0] = "rm";
    argv[1] = "-rf";
    argv[2] = "--";
    for (int i = 0; i < r->n_handed; i++) argv[3 + i] = r->handed[i];
    argv[3 + r->n_handed] = NULL;
    pid_t pid = -1;
    posix_spawnattr_t at;
    posix_spawn_file_actions_t fa;
    int ok = posix_spawnattr_init(&at) == 0;
    ok = ok && posix_spawn_file_actions_init(&fa) == 0;
    ok = ok && posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID) == 0;
    for (int f = 0; ok && f < 3; f++)
        ok = posix_spawn_file_actions_addopen(&fa, f, "/dev/null", f == 0 ? O_RDONLY : O_WRONLY, 0) == 0;
    extern char **environ;
    ok = ok && posix_spawnp(&pid, "rm", &fa, &at, argv, environ) == 0;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(argv);
    for (int i = 0; i < r->n_handed; i++) {
        const char *slash = strrchr(r->handed[i], '/'), *base = slash ? slash + 1 : r->handed[i];
        const char *tag = strncmp(base, ".trash.", 7) == 0 ? base + 7 : base;
        if (ok) {
            if (r->log)
                fprintf(r->log,
                        "checkpoint: removing %s (%.2f GB) goes on in process %d after this run (moved aside as %s: no "
                        "checkpoint any more; a later run removes whatever is left of it)\n",
                        tag, bytes[i] / 1e9, (int)pid, base);
        } else {
            uint64_t bytes = 0;
            double t0 = zg_now_s();
            if (zg_dir_remove_files(r->handed[i], ZG_CKPT_UNLINK_THREADS, &bytes) != 0)
                rc = -1;
            else if (r->log)
                fprintf(r->log, "checkpoint: removed %s (%.2f GB) in %.2f s, here (no process could start for it)\n",
                        tag, bytes / 1e9, zg_now_s() - t0);
        }
        free(r->handed[i]);
    }
    if (r->log) fflush(r->log);
    free(bytes);
    free(r->handed);
    r->handed = NULL;
    r->n_handed = 0;
    return rc;
}

void zg_ckpt_retainer_hand_off(zg_ckpt_retainer *r) { atomic_store(&r->hand_off, 1); }

int zg_ckpt_retainer_wait(zg_ckpt_retainer *r) {
    int joined = r->running;
    if (r->running) {
        int e = pthread_join(r->thread, NULL);
        if (e != 0) ZG_FATAL("joining the checkpoint retention thread failed: %s", strerror(e));
        r->running = 0;
    }
    int moved = retainer_hand_on(r); /* after the join: the thread no longer touches the list */
    if (joined && r->rc != 0) return zg_errorf("%s", r->error);
    return moved;
}

int zg_ckpt_retainer_start(zg_ckpt_retainer *r, const char *out_dir, int64_t keep_last_k) {
    char prev[512] = ""; /* the previous deletion's failure, reported after this one starts */
    if (zg_ckpt_retainer_wait(r) != 0) {
        snprintf(prev, sizeof prev, "%s", zg_error_message());
        zg_error_clear();
    }
    snprintf(r->out_dir, sizeof r->out_dir, "%s", out_dir);
    r->keep_last_k = keep_last_k;
    r->rc = 0;
    r->error[0] = '\0';
    if (pthread_create(&r->thread, NULL, retainer_main, r) == 0)
        r->running = 1;
    else if (retain_run(out_dir, keep_last_k, r->log, "on the training thread (no thread could start)", r) != 0)
        return -1;
    return prev[0] ? zg_errorf("%s", prev) : 0;
}

/* ---- out_dir hygiene --------------------------------------------------------------------------- */

int zg_ckpt_latest_tag(const char *out_dir, char *tag, size_t cap) { return read_latest(out_dir, tag, cap); }

/* Names zgpt writes or deletes directly inside out_dir. */
static int managed_name(const char *n) {
    static const char *const fixed[] = {"latest", "best", "final", "metrics.jsonl", ".lock"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(n, fixed[i]) == 0) return 1;
    return strncmp(n, "iter_", 5) == 0 || strncmp(n, ".partial.", 9) == 0 || strncmp(n, ".trash.", 7) == 0;
}

int zg_ckpt_out_dir_check(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) return zg_errorf("cannot open out_dir '%s': %s", out_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!managed_name(e->d_name)) continue;
        char *p = zg_path_join(out_dir, e->d_name), target[512];
        if (zg_path_is_link(p, target, sizeof target))
            rc = zg_errorf("'%s' is a symbolic link (to '%s'): zgpt writes and replaces '%s' itself and never works "
                           "through a link; move the link away (its target stays untouched) or choose another out_dir",
                           p, target, e->d_name);
        free(p);
    }
    closedir(d);
    return rc;
}

static int is_number(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static void report_add(char *report, size_t cap, const char *name) {
    size_t n = strlen(report);
    if (n + 1 < cap) snprintf(report + n, cap - n, "%s%s", n ? ", " : "", name);
}

int zg_ckpt_out_dir_tidy(const char *out_dir, char *report, size_t cap) {
    report[0] = '\0';
    char latest[256] = "";
    long long latest_iter = -1;
    if (read_latest(out_dir, latest, sizeof latest) != 0)
        zg_error_clear();
    else if (strncmp(latest, "iter_", 5) == 0 && is_number(latest + 5))
        latest_iter = strtoll(latest + 5, NULL, 10);
    DIR *d = opendir(out_dir);
    if (!d) return zg_errorf("cannot open out_dir '%s': %s", out_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name, *dot;
        /* staging folders, and folders a deletion had moved aside when the run stopped (.trash.<tag>) */
        int flat = strncmp(n, ".partial.", 9) == 0 || strncmp(n, ".trash.", 7) == 0, stale = flat;
        /* zg_atomic_file temporaries: <name>.tmp.<pid> */
        if (!stale && (strncmp(n, "latest.tmp.", 11) == 0 || strncmp(n, "metrics.jsonl.tmp.", 18) == 0))
            stale = is_number(strrchr(n, '.') + 1);
        /* a checkpoint folder moved aside by the rename fallback of swap_into_place: <tag>.old */
        if (!stale && (dot = strrchr(n, '.')) && strcmp(dot, ".old") == 0) {
            char tag[256];
            snprintf(tag, sizeof tag, "%.*s", (int)(dot - n), n);
            stale = strcmp(tag, "best") == 0 || strcmp(tag, "final") == 0 ||
                    (strncmp(tag, "iter_", 5) == 0 && is_number(tag + 5));
        }
        /* complete but never published: newer than the checkpoint `latest` names */
        if (!stale && latest_iter >= 0 && strncmp(n, "iter_", 5) == 0 && is_number(n + 5) &&
            strtoll(n + 5, NULL, 10) > latest_iter && e->d_type != DT_LNK)
            stale = 1;
        if (!stale) continue;
        /* a staging folder goes as it is; a tag folder is moved to its staging name first */
        char *p = zg_path_join(out_dir, n);
        struct stat st;
        if (lstat(p, &st) != 0) { /* moved and removed above while this listing went on */
            free(p);
            continue;
        }
        if ((flat ? zg_dir_remove_files(p, ZG_CKPT_UNLINK_THREADS, NULL) : remove_tag_folder(out_dir, n, NULL, NULL)) !=
            0)
            rc = -1;
        else
            report_add(report, cap, n);
        free(p);
    }
    closedir(d);
    return rc;
}

int64_t zg_ckpt_folder_iter(const char *dir) {
    char *p = zg_path_join(dir, "state.json"), *text = NULL;
    int64_t it = -1;
    if (zg_file_exists(p) && zg_file_read_all(p, &text, NULL) == 0) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, "iter") : NULL;
        if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15) it = (int64_t)v->valuedouble;
        cJSON_Delete(j);
    }
    zg_error_clear();
    free(text);
    free(p);
    return it;
}

/* ---- reader ---------------------------------------------------------------------------------- */

int zg_ckpt_exists(const char *path) {
    char *m = zg_path_join(path, "manifest.json"), *l = zg_path_join(path, "latest");
    int ok = zg_file_exists(m) || zg_file_exists(l);
    free(m);
    free(l);
    return ok;
}

void zg_ckpt_close(zg_ckpt *c) {
    free(c->dir);
    free(c->files);
    free(c->shards);
    memset(c, 0, sizeof *c);
}

static int read_header(const char *path, unsigned char *h) {
    FILE *f = fopen(path, "rb");
    if (!f) return zg_errorf("cannot open '%s': %s", path, strerror(errno));
    size_t got = fread(h, 1, ZG_CKPT_HEADER_BYTES, f);
    fclose(f);
    if (got != ZG_CKPT_HEADER_BYTES) return zg_errorf("'%s' is truncated (no complete header)", path);
    return 0;
}

/* Versions this zgpt reads (checked in every header and the manifest). */
static int version_ok(uint32_t v) { return v >= ZG_CKPT_VERSION_MIN && v <= ZG_CKPT_VERSION; }

static int version_error(const char *path, double v) {
    return zg_errorf("'%s' has format version %g; this zgpt reads versions %u to %u (a newer zgpt wrote it)", path, v,
                     ZG_CKPT_VERSION_MIN, ZG_CKPT_VERSION);
}

static int check_model_header(zg_ckpt *c, const char *path, uint64_t size) {
    unsigned char h[ZG_CKPT_HEADER_BYTES];
    if (read_header(path, h) != 0) return -1;
    if (memcmp(h, ZG_CKPT_MODEL_MAGIC, 8) != 0) return zg_errorf("'%s' is not a zgpt model file (bad magic)", path);
    uint32_t version = get_u32(h + 8);
    if (!version_ok(version)) return version_error(path, version);
    c->cfg.n_layer = (int)get_u32(h + 16);
    c->cfg.n_head = (int)get_u32(h + 20);
    c->cfg.n_embd = (int)get_u32(h + 24);
    c->cfg.block_size = (int)get_u32(h + 28);
    c->cfg.vocab_size = (int)get_u32(h + 32);
    c->cfg.padded_vocab_size = (int)get_u32(h + 36);
    c->num_params = get_u64(h + 48);
    uint32_t payload = get_u32(h + 40), mdt = get_u32(h + 44);
    /* version 1 always holds the fp32 payload; version 2 may hold none (payload 1: the master) */
    if (payload > (version >= 2 ? 1u : 0u) || (payload == 1 && mdt != ZG_BF16 && mdt != ZG_F16))
        return zg_errorf("'%s': unknown payload dtype %u (parameter dtype %u)", path, payload, mdt);
    c->params_from_master = payload == 1;
    c->master_dtype = c->params_from_master ? (zg_dtype)mdt : ZG_F32;
    uint64_t expect = ZG_CKPT_HEADER_BYTES + (c->params_from_master ? 0 : c->num_params * sizeof(float));
    if (size != expect)
        return zg_errorf("'%s' has %" PRIu64 " bytes but its header promises %" PRIu64 " parameters", path, size,
                         c->num_params);
    gpt2_config chk = c->cfg;
    if (gpt2_config_validate(&chk) != 0) return zg_error_prefix("'%s': invalid model shape", path);
    gpt2_param_table t;
    if (gpt2_param_table_init(&t, &chk) != 0) return -1;
    size_t params = t.num_params;
    gpt2_param_table_free(&t);
    if (params != c->num_params || chk.padded_vocab_size != c->cfg.padded_vocab_size)
        return zg_errorf("'%s': header shape does not match its parameter count", path);
    return 0;
}

static int check_optim_header(zg_ckpt *c, const char *name, const char *path, uint64_t size) {
    unsigned char h[ZG_CKPT_HEADER_BYTES];
    if (read_header(path, h) != 0) return -1;
    if (memcmp(h, ZG_CKPT_OPTIM_MAGIC, 8) != 0)
        return zg_errorf("'%s' is not a zgpt optimizer shard (bad magic)", path);
    if (!version_ok(get_u32(h + 8))) return version_error(path, get_u32(h + 8));
    zg_ckpt_shard s;
    memset(&s, 0, sizeof s);
    snprintf(s.file, sizeof s.file, "%s", name);
    uint64_t total = get_u64(h + 16);
    s.begin = get_u64(h + 24);
    s.end = get_u64(h + 32);
    s.has_master = get_u32(h + 40) & 1u;
    s.step = get_u64(h + 48);
    if (s.begin > s.end || s.end > total)
        return zg_errorf("'%s': invalid range [%" PRIu64 ", %" PRIu64 ")", path, s.begin, s.end);
    uint64_t expect = ZG_CKPT_HEADER_BYTES + (s.end - s.begin) * sizeof(float) * (s.has_master ? 3u : 2u);
    if (size != expect)
        return zg_errorf("'%s' has %" PRIu64 " bytes, its header promises %" PRIu64, path, size, expect);
    c->shards = zg_realloc(c->shards, (size_t)(c->n_shards + 1) * sizeof *c->shards);
    c->shards[c->n_shards++] = s;
    return 0;
}

static int ckpt_open(zg_ckpt *c, const char *path, int defer) {
    memset(c, 0, sizeof *c);
    char *mpath = zg_path_join(path, "manifest.json");
    if (!zg_file_exists(mpath)) {
        free(mpath);
        char tag[256];
        char *lp = zg_path_join(path, "latest");
        int has_latest = zg_file_exists(lp);
        free(lp);
        if (!has_latest) {
            if (!zg_dir_exists(path)) return zg_errorf("checkpoint '%s' does not exist", path);
            return zg_errorf(
                "'%s' is not a zgpt checkpoint (no manifest.json; an incomplete save, or the wrong folder)", path);
        }
        if (read_latest(path, tag, sizeof tag) != 0) return -1;
        char *dir = zg_path_join(path, tag);
        int rc = ckpt_open(c, dir, defer);
        free(dir);
        return rc;
    }
    c->dir = zg_strdup(path);
    char *text;
    if (zg_file_read_all(mpath, &text, NULL) != 0) {
        free(mpath);
        zg_ckpt_close(c);
        return -1;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    int rc = 0;
    const cJSON *files = j ? cJSON_GetObjectItemCaseSensitive(j, "files") : NULL;
    const cJSON *fmt = j ? cJSON_GetObjectItemCaseSensitive(j, "format") : NULL;
    const cJSON *ver = j ? cJSON_GetObjectItemCaseSensitive(j, "version") : NULL;
    if (!j || !cJSON_IsArray(files) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "zgpt-checkpoint") != 0 ||
        !cJSON_IsNumber(ver))
        rc = zg_errorf("'%s' is corrupt (not a zgpt checkpoint manifest)", mpath);
    else if (ver->valuedouble != floor(ver->valuedouble) || !version_ok((uint32_t)ver->valuedouble))
        rc = version_error(mpath, ver->valuedouble);
    int have_model = 0;
    const cJSON *f;
    if (rc == 0) {
        cJSON_ArrayForEach(f, files) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
            const cJSON *size = cJSON_GetObjectItemCaseSensitive(f, "size");
            const cJSON *sum = cJSON_GetObjectItemCaseSensitive(f, "xxh3");
            if (!cJSON_IsString(name) || !cJSON_IsNumber(size) || !cJSON_IsString(sum) ||
                strchr(name->valuestring, '/') || strlen(name->valuestring) >= sizeof c->files[0].name) {
                rc = zg_errorf("'%s' is corrupt (bad file entry)", mpath);
                break;
            }
            zg_ckpt_file e;
            memset(&e, 0, sizeof e);
            snprintf(e.name, sizeof e.name, "%s", name->valuestring);
            e.size = (uint64_t)size->valuedouble;
            e.xxh3 = strtoull(sum->valuestring, NULL, 16);
            char *fp = zg_path_join(path, e.name);
            uint64_t got_sum = e.xxh3, got_size = 0;
            /* deferred: a shard's checksum is checked by the read that covers it (one pass, not two) */
            e.unverified = defer && strncmp(e.name, "optim_", 6) == 0;
            int missing;
            if (e.unverified) {
                struct stat st;
                missing = stat(fp, &st) != 0 || !S_ISREG(st.st_mode);
                got_size = missing ? 0 : (uint64_t)st.st_size;
            } else {
                missing = zg_file_checksum(fp, &got_sum, &got_size) != 0;
            }
            if (missing) {
                rc = zg_errorf("checkpoint '%s' is incomplete: '%s' is missing", path, e.name);
            } else if (got_size != e.size) {
                rc = zg_errorf("checkpoint file '%s' has %" PRIu64 " bytes, the manifest says %" PRIu64
                               " (truncated or corrupt; use another checkpoint)",
                               fp, got_size, e.size);
            } else if (got_sum != e.xxh3) {
                rc = zg_errorf("checkpoint file '%s' fails its checksum (corrupt; use another checkpoint)", fp);
            } else if (strcmp(e.name, "model.bin") == 0) {
                have_model = 1;
                rc = check_model_header(c, fp, got_size);
            } else if (strncmp(e.name, "optim_", 6) == 0) {
                rc = check_optim_header(c, e.name, fp, got_size);
            }
            free(fp);
            if (rc != 0) break;
            c->files = zg_realloc(c->files, (size_t)(c->n_files + 1) * sizeof *c->files);
            c->files[c->n_files++] = e;
        }
    }
    if (rc == 0 && !have_model) rc = zg_errorf("checkpoint '%s' has no model.bin in its manifest", path);
    if (rc == 0 && c->params_from_master) { /* the parameters live in the shards' master: all of them */
        uint64_t covered = 0;
        for (int i = 0; i < c->n_shards; i++)
            covered += c->shards[i].has_master ? c->shards[i].end - c->shards[i].begin : 0;
        if (covered != c->num_params)
            rc = zg_errorf("checkpoint '%s' is incomplete: its model.bin refers to the optimizer shards' master "
                           "weights, which cover %" PRIu64 " of the %" PRIu64 " parameters",
                           path, covered, c->num_params);
    }
    for (int i = 0; rc == 0 && i < c->n_shards; i++)
        if (c->shards[i].end > c->num_params)
            rc = zg_errorf("optimizer shard '%s/%s' covers parameters beyond the model's %" PRIu64, path,
                           c->shards[i].file, c->num_params);
    cJSON_Delete(j);
    free(mpath);
    if (rc != 0) zg_ckpt_close(c);
    return rc;
}

int zg_ckpt_open(zg_ckpt *c, const char *path) { return ckpt_open(c, path, 0); }
int zg_ckpt_open_deferred(zg_ckpt *c, const char *path) { return ckpt_open(c, path, 1); }

static zg_ckpt_file *find_file(const zg_ckpt *c, const char *name) {
    for (int i = 0; i < c->n_files; i++)
        if (strcmp(c->files[i].name, name) == 0) return &c->files[i];
    return NULL;
}

/* got: the checksum of the whole file as just read; marks it verified. */
static int check_sum(const zg_ckpt *c, zg_ckpt_file *f, uint64_t got) {
    if (got != f->xxh3)
        return zg_errorf("checkpoint file '%s/%s' fails its checksum (corrupt; use another checkpoint)", c->dir,
                         f->name);
    f->unverified = 0;
    return 0;
}

/* A deferred file, before a read that does not cover it whole: checked now, by itself. */
static int verify_file(const zg_ckpt *c, const char *name) {
    zg_ckpt_file *f = find_file(c, name);
    if (!f || !f->unverified) return 0;
    char *p = zg_path_join(c->dir, name);
    uint64_t sum = 0;
    int rc = zg_file_checksum(p, &sum, NULL);
    free(p);
    return rc == 0 ? check_sum(c, f, sum) : -1;
}

static int read_shard_part(const zg_ckpt *c, const zg_ckpt_shard *s, int which, uint64_t a, uint64_t b, zg_backend *be,
                           float *dst, float *stage, zg_progress *prog);

/* Header-only model.bin: the parameters are the shards' master rounded to the training dtype, exactly
 * as the optimizer produced them (round to nearest even, as on the device), then widened to fp32. */
static int read_model_from_master(const zg_ckpt *c, float *params_host, uint64_t want_sum, const char *path) {
    int rc = 0;
    for (int i = 0; rc == 0 && i < c->n_shards; i++) rc = verify_file(c, c->shards[i].file);
    zg_progress prog;
    progress_begin(&prog, "load", c->dir, "fp32 master weights", c->num_params * sizeof(float), 0);
    for (int i = 0; rc == 0 && i < c->n_shards; i++)
        rc = read_shard_part(c, &c->shards[i], 0, c->shards[i].begin, c->shards[i].end, NULL,
                             params_host + c->shards[i].begin, NULL, &prog);
    zg_progress_free(&prog);
    if (rc != 0) return -1;
    round_to_dtype(params_host, c->num_params, c->master_dtype, 1);
    if (zg_checksum(params_host, c->num_params * sizeof(float)) != want_sum)
        return zg_errorf("'%s': the parameters rebuilt from the optimizer shards' master weights do not match the "
                         "checksum model.bin holds (corrupt; use another checkpoint)",
                         path);
    return 0;
}

int zg_ckpt_read_model(const zg_ckpt *c, float *params_host) {
    char *p = zg_path_join(c->dir, "model.bin");
    FILE *f = fopen(p, "rb");
    int rc = 0;
    if (!f) {
        rc = zg_errorf("cannot open '%s': %s", p, strerror(errno));
    } else {
        unsigned char h[ZG_CKPT_HEADER_BYTES];
        zg_progress prog;
        progress_begin(&prog, "load", c->dir, "model.bin", c->params_from_master ? 0 : c->num_params * sizeof(float),
                       0);
        if (fread(h, 1, sizeof h, f) != sizeof h) rc = -1;
        size_t payload = c->params_from_master ? 0 : c->num_params;
        for (size_t i = 0; rc == 0 && i < payload; i += CHUNK_ELEMS) {
            size_t n = c->num_params - i < CHUNK_ELEMS ? c->num_params - i : CHUNK_ELEMS;
            if (fread(params_host + i, sizeof(float), n, f) != n) rc = -1;
            zg_progress_update(&prog, (i + n) * sizeof(float));
        }
        zg_progress_free(&prog);
        if (rc != 0)
            rc = zg_errorf("cannot read '%s' (truncated?)", p);
        else if (c->params_from_master)
            rc = read_model_from_master(c, params_host, get_u64(h + 56), p);
        else if (zg_checksum(params_host, c->num_params * sizeof(float)) != get_u64(h + 56))
            rc = zg_errorf("'%s': parameter checksum mismatch (corrupt; use another checkpoint)", p);
        fclose(f);
    }
    free(p);
    return rc;
}

/* Reads elements [a, b) of array `which` (0 master, 1 m, 2 v) of a shard into backend memory dst, or
 * straight into host memory dst when be is NULL (stage unused then). */
static int read_shard_part(const zg_ckpt *c, const zg_ckpt_shard *s, int which, uint64_t a, uint64_t b, zg_backend *be,
                           float *dst, float *stage, zg_progress *prog) {
    char *p = zg_path_join(c->dir, s->file);
    FILE *f = fopen(p, "rb");
    if (!f) {
        int e = errno;
        int rc = zg_errorf("cannot open '%s': %s", p, strerror(e));
        free(p);
        return rc;
    }
    uint64_t n = s->end - s->begin;
    int slot = s->has_master ? which : which - 1;
    uint64_t off = ZG_CKPT_HEADER_BYTES + ((uint64_t)slot * n + (a - s->begin)) * sizeof(float);
    int rc = 0;
    if (fseeko(f, (off_t)off, SEEK_SET) != 0) rc = zg_errorf("cannot seek in '%s': %s", p, strerror(errno));
    for (uint64_t i = a; rc == 0 && i < b; i += CHUNK_ELEMS) {
        size_t k = (size_t)(b - i < CHUNK_ELEMS ? b - i : CHUNK_ELEMS);
        if (fread(be ? stage : dst + (i - a), sizeof(float), k, f) != k) {
            rc = zg_errorf("cannot read '%s' (truncated?)", p);
            break;
        }
        if (be) be->ops->upload(be, dst + (i - a), stage, k * sizeof(float));
        if (prog) zg_progress_update(prog, prog->done + k * sizeof(float));
    }
    fclose(f);
    free(p);
    return rc;
}

/* File bytes [off, off + n) go to dst (backend memory, or host memory when the read says so). */
typedef struct {
    uint64_t off, n;
    void *dst;
    int which; /* the array: 0 master, 1 m, 2 v */
} read_sink;

/* The length of the piece at file offset p of a read that ends at ahi. */
static size_t piece_len(uint64_t p, uint64_t ahi, size_t piece) { return ahi - p < piece ? (size_t)(ahi - p) : piece; }

/* Starts reading the piece at p into buf: the bytes that must exist end at hi (a direct read's aligned
 * tail may pass the end of the file); the kernel is told of the piece after it (buffered read-ahead). */
static void piece_start(zg_ckpt_io_read_job *j, int fd, const char *path, unsigned char *buf, uint64_t p, uint64_t hi,
                        uint64_t ahi, size_t piece, zg_ckpt_read_mode mode) {
    size_t len = piece_len(p, ahi, piece);
    uint64_t need_end = hi < p + len ? hi : p + len;
    size_t next = p + len < ahi ? piece_len(p + len, ahi, piece) : 0;
    zg_ckpt_io_read_start(j, fd, path, buf, p, len, (size_t)(need_end - p), mode, next);
}

/* Staging buffers of a pipelined read: RING_DEPTH pieces, RING_DEPTH - 1 of them read at once (by
 * several threads each) while the oldest is hashed and uploaded: a piece's read starts as soon as a
 * buffer is free, not when the one before has been joined (one piece's slowest thread no longer idles
 * the others). */
enum { RING_DEPTH = 3 };

/* Reads file bytes [lo, hi) and sends the parts the sinks name to backend memory: several threads read
 * pieces into host staging buffers while the pieces before upload on the copy stream (and are hashed
 * into h when non-NULL, in file order). Returns after the uploads have landed. be NULL: the sinks are
 * host memory and nothing calls a backend (a thread other than the one that drives it may read so: the
 * deferred read of Adam's moments). image non-NULL: host memory for the file's bytes from lo0 = lo
 * rounded down to ZG_CKPT_IO_ALIGN, byte X at image + (X - lo0) (aligned, readable up to the rounded-up
 * end of [lo, hi)): the pieces are read straight into it, no staging, no copies (the sinks unused). *upload_wait (when non-NULL)
 * gains the seconds spent waiting for uploads to land before a buffer was refilled. The read strategy
 * is ZGPT_CKPT_READ's (src/train/ckpt_io.h; direct reads whole aligned blocks around [lo, hi)). */
static int read_pipelined(const char *path, zg_backend *be, int dst_host, uint64_t lo, uint64_t hi,
                          const read_sink *sinks, int n_sinks, zg_hasher *h, zg_progress *prog, unsigned char *image,
                          double *upload_wait) {
    if (hi <= lo) return 0;
    if (!be || image) dst_host = 1;
    zg_ckpt_read_mode mode;
    uint64_t size;
    if (zg_ckpt_read_mode_from_env(&mode) != 0) return -1;
    int fd = zg_ckpt_read_open(path, &mode, &size);
    if (fd < 0) return -1;
    int direct = mode == ZG_CKPT_READ_DIRECT;
    /* the file range read: whole aligned blocks for direct reads (the buffers aligned too) */
    uint64_t alo = direct ? lo / ZG_CKPT_IO_ALIGN * ZG_CKPT_IO_ALIGN : lo;
    uint64_t ahi = direct ? zg_ckpt_io_round_up((size_t)hi) : hi;
    size_t piece = ahi - alo < zg_ckpt_read_piece(mode) ? (size_t)(ahi - alo) : zg_ckpt_read_piece(mode);
    size_t slack = direct ? ZG_CKPT_IO_ALIGN : 0;
    void *block[RING_DEPTH] = {NULL};
    unsigned char *stage[RING_DEPTH] = {NULL};
    zg_event *ev[RING_DEPTH] = {NULL};
    int rc = 0;
    for (int k = 0; k < RING_DEPTH && rc == 0 && !image; k++) {
        if (dst_host) {
            block[k] = malloc(piece + slack);
            if (!block[k]) rc = zg_errorf("out of host memory for a checkpoint read buffer of %zu bytes", piece);
        } else {
            block[k] = be->ops->host_alloc(be, piece + slack, 1, "checkpoint read staging");
            ev[k] = be->ops->event_create(be);
            if (!block[k]) rc = -1;
        }
        if (block[k]) stage[k] = direct ? (unsigned char *)zg_ckpt_io_round_up((size_t)(uintptr_t)block[k]) : block[k];
    }
    /* the buffer piece i is read into: its place in the image, or staging buffer i % RING_DEPTH */
    uint64_t lo0 = lo / ZG_CKPT_IO_ALIGN * ZG_CKPT_IO_ALIGN;
#define PIECE_BUF(i, p) (image ? image + ((p)-lo0) : stage[(i) % RING_DEPTH])
    zg_ckpt_io_read_job job[RING_DEPTH];
    uint64_t next = alo;              /* the next piece to start reading */
    size_t started = 0;               /* pieces started so far */
    if (rc == 0 && be && !dst_host) { /* the uploads land after what the compute stream has queued (the state's
                                       * initialisation) */
        be->ops->event_record(be, ev[0], ZG_STREAM_COMPUTE);
        be->ops->stream_wait(be, ZG_STREAM_COPY, ev[0]);
    }
    size_t i = 0;
    for (uint64_t p = alo; rc == 0 && p < ahi; p += piece, i++) {
        /* keep RING_DEPTH - 1 pieces in flight: a buffer is refilled once its previous upload has landed */
        while (rc == 0 && next < ahi && started < i + RING_DEPTH - 1) {
            int b = (int)(started % RING_DEPTH);
            if (ev[b]) {
                double t0 = zg_now_s();
                be->ops->event_synchronize(be, ev[b]);
                if (upload_wait) *upload_wait += zg_now_s() - t0;
            }
            piece_start(&job[b], fd, path, PIECE_BUF(started, next), next, hi, ahi, piece, mode);
            next += piece_len(next, ahi, piece);
            started++;
        }
        int k = (int)(i % RING_DEPTH);
        uint64_t q = p + piece_len(p, ahi, piece);
        if ((rc = zg_ckpt_io_read_wait(&job[k])) != 0) {
            started = i + 1; /* this one is joined: the others below */
            break;
        }
        unsigned char *buf = PIECE_BUF(i, p);
        uint64_t ulo = p > lo ? p : lo, uhi = q < hi ? q : hi; /* the piece's bytes inside [lo, hi) */
        if (h && ulo < uhi) zg_hasher_update(h, buf + (ulo - p), (size_t)(uhi - ulo));
        for (int s = 0; s < n_sinks && !image; s++) {
            uint64_t a = sinks[s].off > ulo ? sinks[s].off : ulo,
                     b = sinks[s].off + sinks[s].n < uhi ? sinks[s].off + sinks[s].n : uhi;
            if (a >= b) continue;
            if (dst_host) /* ZeRO-Offload (the state lives in host memory), or the moments' host copy */
                memcpy((unsigned char *)sinks[s].dst + (a - sinks[s].off), buf + (a - p), (size_t)(b - a));
            else
                be->ops->copy_async(be, (unsigned char *)sinks[s].dst + (a - sinks[s].off), buf + (a - p),
                                    (size_t)(b - a), ZG_COPY_H2D);
            if (prog) zg_progress_update(prog, prog->done + (b - a));
        }
        if (ev[k]) be->ops->event_record(be, ev[k], ZG_STREAM_COPY);
    }
#undef PIECE_BUF
    /* an error: the reads still in flight are joined before their buffers go */
    for (size_t j = i + 1; j < started; j++)
        if (zg_ckpt_io_read_wait(&job[j % RING_DEPTH]) != 0) zg_error_clear();
    for (int k = 0; k < RING_DEPTH; k++) {
        if (dst_host) {
            free(block[k]);
            continue;
        }
        if (ev[k]) {
            double t0 = zg_now_s();
            be->ops->event_synchronize(be, ev[k]);
            if (upload_wait) *upload_wait += zg_now_s() - t0;
            be->ops->event_destroy(be, ev[k]);
        }
        be->ops->host_free(be, block[k]);
    }
    close(fd);
    return rc;
}

/* One file range of the deferred read of Adam's moments: read by the thread into host memory. */
struct zg_ckpt_moments_job {
    char *path;
    uint64_t lo, hi;
    read_sink sinks[2];
    int n_sinks;
    int hashed; /* h holds the file's bytes before lo: the read ends the file's checksum */
    zg_hasher h;
    uint64_t want;
};

static void moments_add_job(zg_ckpt_moments *mo, const char *path, uint64_t lo, uint64_t hi, const read_sink *sinks,
                            int n_sinks, zg_hasher *h, uint64_t want) {
    mo->jobs = zg_realloc(mo->jobs, (size_t)(mo->n_jobs + 1) * sizeof *mo->jobs);
    struct zg_ckpt_moments_job *j = &mo->jobs[mo->n_jobs++];
    memset(j, 0, sizeof *j);
    j->path = zg_strdup(path);
    j->lo = lo;
    j->hi = hi;
    for (int i = 0; i < n_sinks; i++) j->sinks[i] = sinks[i];
    j->n_sinks = n_sinks;
    if (h) {
        j->hashed = 1;
        j->h = *h; /* moved: the thread finishes it */
        j->want = want;
    }
}

/* Reads the optimizer's range. mo NULL: everything now. Otherwise the master (and a shard's header)
 * now, and Adam's m and v ranges become jobs of mo, read later by its thread into host memory (the
 * whole-file checksum goes on from where the master's read left it). */
static int read_optimizer(const zg_ckpt *c, zg_optimizer *o, zg_ckpt_moments *mo, double *upload_wait) {
    float *m_dst = o->m, *v_dst = o->v;
    if (c->n_shards == 0) return zg_errorf("checkpoint '%s' holds no optimizer state", c->dir);
    size_t n = o->end - o->begin;
    /* Coverage: every element of the range must be in some shard (shards do not overlap). */
    uint64_t covered = 0;
    int all_master = 1;
    int64_t step = -1;
    for (int i = 0; i < c->n_shards; i++) {
        const zg_ckpt_shard *s = &c->shards[i];
        uint64_t a = s->begin > o->begin ? s->begin : o->begin, b = s->end < o->end ? s->end : o->end;
        if (a < b) {
            covered += b - a;
            all_master &= s->has_master;
        }
        if (step >= 0 && (int64_t)s->step != step)
            return zg_errorf("checkpoint '%s': optimizer shards disagree on the step (%lld vs %llu)", c->dir,
                             (long long)step, (unsigned long long)s->step);
        step = (int64_t)s->step;
    }
    if (covered != n)
        return zg_errorf("checkpoint '%s': optimizer shards cover %llu of the %zu elements of range [%zu, %zu)", c->dir,
                         (unsigned long long)covered, n, o->begin, o->end);
    int rc = 0;
    /* rank 0 shows the read of its range (m, v, and the master when both have one) */
    zg_progress prog;
    char range[64];
    snprintf(range, sizeof range, "%s [%zu, %zu)", mo ? "optimizer master weights" : "optimizer state", o->begin,
             o->end);
    int want_master = o->master && all_master;
    uint64_t now_arrays = mo ? (want_master ? 1u : 0u) : (want_master ? 3u : 2u);
    progress_begin(&prog, "load", c->dir, range, (uint64_t)n * sizeof(float) * now_arrays, 0);
    for (int i = 0; rc == 0 && i < c->n_shards; i++) {
        const zg_ckpt_shard *s = &c->shards[i];
        uint64_t a = s->begin > o->begin ? s->begin : o->begin, b = s->end < o->end ? s->end : o->end;
        if (a >= b) continue;
        uint64_t sn = s->end - s->begin;
        /* file offsets of the three arrays' elements [a, b) and where they go */
        float *dst[3] = {want_master ? o->master + (a - o->begin) : NULL, m_dst + (a - o->begin),
                         v_dst + (a - o->begin)};
        read_sink sinks[3];
        int k = 0, k_now = 0; /* sinks[0, k_now) are read now (the master), the rest later when mo */
        for (int which = s->has_master ? 0 : 1; which < 3; which++) {
            int slot = s->has_master ? which : which - 1;
            if (!dst[which]) continue;
            sinks[k].off = ZG_CKPT_HEADER_BYTES + ((uint64_t)slot * sn + (a - s->begin)) * sizeof(float);
            sinks[k].n = (b - a) * sizeof(float);
            sinks[k].which = which;
            sinks[k++].dst = dst[which];
            if (which == 0 || !mo) k_now = k;
        }
        zg_ckpt_file *f = find_file(c, s->file);
        int whole = f && f->unverified && a == s->begin && b == s->end;
        char *path = zg_path_join(c->dir, s->file);
        /* the moments start here in the file: after the master, or after the header */
        uint64_t split = ZG_CKPT_HEADER_BYTES + (s->has_master ? sn * sizeof(float) : 0);
        if (whole && mo) { /* the master's part now, hashed; the thread hashes on from there */
            zg_hasher h;
            zg_hasher_init(&h);
            rc = read_pipelined(path, o->be, o->host, 0, split, sinks, k_now, &h, &prog, NULL, upload_wait);
            if (rc == 0)
                moments_add_job(mo, path, split, f->size, sinks + k_now, k - k_now, &h, f->xxh3);
            else
                (void)zg_hasher_final(&h);
        } else if (whole) { /* the whole file in one pass, checksummed on the way */
            zg_hasher h;
            zg_hasher_init(&h);
            rc = read_pipelined(path, o->be, o->host, 0, f->size, sinks, k, &h, &prog, NULL, upload_wait);
            uint64_t got = zg_hasher_final(&h);
            if (rc == 0) rc = check_sum(c, f, got);
        } else {
            rc = verify_file(c, s->file);
            for (int q = 0; rc == 0 && q < k_now; q++)
                rc = read_pipelined(path, o->be, o->host, sinks[q].off, sinks[q].off + sinks[q].n, &sinks[q], 1, NULL,
                                    &prog, NULL, upload_wait);
            for (int q = k_now; rc == 0 && q < k; q++)
                moments_add_job(mo, path, sinks[q].off, sinks[q].off + sinks[q].n, &sinks[q], 1, NULL, 0);
        }
        free(path);
    }
    zg_progress_free(&prog);
    if (rc == 0) o->step = step;
    return rc;
}

int zg_ckpt_read_optimizer(const zg_ckpt *c, zg_optimizer *o) { return read_optimizer(c, o, NULL, NULL); }

/* Where the thread puts the moments of device state: in place when the checkpoint holds exactly this
 * range in one shard (the file's bytes from the moments' first block on, read straight into host memory
 * laid out as the file: no copy at all), else m then v (copied out of the staging buffers). Sets mo->m_off, mo->v_off (bytes
 * from the host buffer's start) and returns the bytes the buffer needs. */
static size_t moments_layout(zg_ckpt_moments *mo) {
    size_t n = mo->o->end - mo->o->begin, nb = n * sizeof(float);
    const struct zg_ckpt_moments_job *j = &mo->jobs[0];
    mo->in_place = mo->n_jobs == 1 && j->hashed && j->n_sinks == 2 && j->sinks[0].which == 1 &&
                   j->sinks[1].which == 2 && j->sinks[0].dst == (void *)mo->o->m &&
                   j->sinks[1].dst == (void *)mo->o->v && j->sinks[0].n == nb && j->sinks[1].n == nb &&
                   j->lo == j->sinks[0].off && j->sinks[1].off == j->sinks[0].off + nb && j->hi == j->sinks[1].off + nb;
    if (mo->in_place) { /* the buffer holds the file from the moments' first block on */
        uint64_t lo0 = j->lo / ZG_CKPT_IO_ALIGN * ZG_CKPT_IO_ALIGN;
        mo->m_off = (size_t)(j->sinks[0].off - lo0);
        mo->v_off = mo->m_off + nb;
        return zg_ckpt_io_round_up((size_t)j->hi) - (size_t)lo0;
    }
    mo->m_off = 0;
    mo->v_off = nb;
    return 2 * nb;
}

/* One job of the moments (after rc, the jobs before it: a failure skips the read): its range into the
 * sinks (be NULL: host memory; image: in place), the file's checksum finished and checked. */
static int moments_read_job(struct zg_ckpt_moments_job *j, int rc, const read_sink *sinks, zg_backend *be,
                            unsigned char *image, double *upload_wait) {
    if (rc == 0)
        rc = read_pipelined(j->path, be, be == NULL, j->lo, j->hi, sinks, j->n_sinks, j->hashed ? &j->h : NULL, NULL,
                            image, upload_wait);
    if (j->hashed) {
        uint64_t got = zg_hasher_final(&j->h);
        j->hashed = 0;
        if (rc == 0 && got != j->want)
            rc = zg_errorf("checkpoint file '%s' fails its checksum (corrupt; use another checkpoint)", j->path);
    }
    return rc;
}

/* The thread: the host buffer (its own, when none was lent: host_alloc may run on any thread), then
 * each job read into it and checksummed. No other backend call. */
static void *moments_main(void *arg) {
    zg_ckpt_moments *mo = arg;
    int rc = 0;
    if (mo->alloc_bytes) {
        mo->own_block = mo->o->be->ops->host_alloc(mo->o->be, mo->alloc_bytes, 1, "the resume's Adam moments");
        if (!mo->own_block)
            rc = -1;
        else
            mo->image = (unsigned char *)zg_ckpt_io_round_up((size_t)(uintptr_t)mo->own_block);
    }
    for (int i = 0; i < mo->n_jobs; i++) {
        struct zg_ckpt_moments_job *j = &mo->jobs[i];
        read_sink sinks[2];
        for (int k = 0; k < j->n_sinks; k++) { /* device state: into the host buffer, uploaded by wait */
            sinks[k] = j->sinks[k];
            if (!mo->o->host && mo->image) {
                const float *dev = sinks[k].which == 1 ? mo->o->m : mo->o->v;
                size_t at = (size_t)((const float *)j->sinks[k].dst - dev) * sizeof(float);
                sinks[k].dst = mo->image + (sinks[k].which == 1 ? mo->m_off : mo->v_off) + at;
            }
        }
        rc = moments_read_job(j, rc, sinks, NULL, mo->in_place ? mo->image : NULL, NULL);
    }
    mo->rc = rc;
    if (rc != 0) snprintf(mo->error, sizeof mo->error, "%s", zg_error_message()); /* errors are per thread */
    mo->t_done = zg_now_s();
    return NULL;
}

int zg_ckpt_read_optimizer_deferred(const zg_ckpt *c, zg_optimizer *o, zg_ckpt_moments *mo) {
    memset(mo, 0, sizeof *mo);
    mo->o = o;
    zg_ckpt_read_mode mode;
    if (zg_ckpt_read_mode_from_env(&mode) != 0) return -1; /* a bad value: refused before anything is read */
    mo->read_mode = zg_ckpt_read_mode_name(mode);
    size_t n = o->end - o->begin;
    mo->bytes = (uint64_t)n * 2 * sizeof(float);
    int rc = read_optimizer(c, o, mo, &mo->master_upload_wait);
    mo->t_params = mo->t_done = zg_now_s();
    if (rc != 0) zg_ckpt_moments_free(mo);
    return rc;
}

int zg_ckpt_moments_start(zg_ckpt_moments *mo, void *lend, size_t lend_bytes) {
    if (mo->n_jobs == 0 || mo->started) return 0;
    mo->started = 1;
    mo->t_start = zg_now_s();
    zg_optimizer *o = mo->o;
    if (!o->host) {
        size_t need = moments_layout(mo);
        if (lend && (uintptr_t)lend % ZG_CKPT_IO_ALIGN == 0 && lend_bytes >= need) {
            mo->image = lend;
            mo->where = "the checkpoint snapshot's host memory";
        } else if ((uint64_t)need + ZG_CKPT_IO_ALIGN <= zg_host_mem_available()) {
            mo->alloc_bytes = need + ZG_CKPT_IO_ALIGN; /* allocated by the thread */
            mo->where = "host memory of their own";
        } else { /* no room for a host copy: read now, uploaded through the staging buffers as the master was */
            mo->sync_reason = "host memory cannot hold them";
            int rc = 0;
            for (int i = 0; i < mo->n_jobs; i++)
                rc = moments_read_job(&mo->jobs[i], rc, mo->jobs[i].sinks, o->be, NULL, &mo->upload_s);
            mo->rc = rc;
            if (rc != 0) snprintf(mo->error, sizeof mo->error, "%s", zg_error_message());
            zg_error_clear();
            mo->t_done = zg_now_s();
            return 0;
        }
    } else {
        mo->where = "the host optimizer state (ZeRO-Offload)";
    }
    int e = pthread_create(&mo->thread, NULL, moments_main, mo);
    if (e == 0)
        mo->running = 1;
    else
        moments_main(mo); /* no thread: read them now */
    return 0;
}

int zg_ckpt_moments_wait(zg_ckpt_moments *mo) {
    if (zg_ckpt_moments_start(mo, NULL, 0) != 0) return -1; /* never started: read now */
    if (mo->running) {
        int e = pthread_join(mo->thread, NULL);
        if (e != 0) ZG_FATAL("joining the checkpoint reader thread failed: %s", strerror(e));
        mo->running = 0;
    }
    if (mo->rc != 0) return zg_errorf("%s", mo->error);
    zg_optimizer *o = mo->o;
    if (mo->image && !o->host) {
        /* Verified: uploaded from host memory that is pinned (the snapshot's, or the thread's host_alloc)
         * on the copy stream; the host waits for it here, so the update queued next reads them. */
        zg_backend *be = o->be;
        size_t nb = (o->end - o->begin) * sizeof(float);
        double t0 = zg_now_s();
        zg_event *ev = be->ops->event_create(be);
        be->ops->copy_async(be, o->m, mo->image + mo->m_off, nb, ZG_COPY_H2D);
        be->ops->copy_async(be, o->v, mo->image + mo->v_off, nb, ZG_COPY_H2D);
        be->ops->event_record(be, ev, ZG_STREAM_COPY);
        be->ops->event_synchronize(be, ev);
        be->ops->event_destroy(be, ev);
        mo->upload_s = zg_now_s() - t0;
        mo->image = NULL; /* a lent buffer is the lender's again */
    }
    mo->t_ready = zg_now_s();
    if (mo->own_block) {
        o->be->ops->host_free(o->be, mo->own_block);
        mo->own_block = NULL;
    }
    return 0;
}

void zg_ckpt_moments_free(zg_ckpt_moments *mo) {
    if (mo->running) {
        pthread_join(mo->thread, NULL);
        mo->running = 0;
    }
    for (int i = 0; i < mo->n_jobs; i++) {
        if (mo->jobs[i].hashed) (void)zg_hasher_final(&mo->jobs[i].h);
        free(mo->jobs[i].path);
    }
    free(mo->jobs);
    if (mo->own_block) mo->o->be->ops->host_free(mo->o->be, mo->own_block);
    mo->own_block = NULL;
    mo->image = NULL;
    mo->jobs = NULL;
    mo->n_jobs = 0;
}

int zg_ckpt_read_text(const zg_ckpt *c, const char *name, char **text) {
    int listed = 0;
    for (int i = 0; i < c->n_files; i++) listed |= strcmp(c->files[i].name, name) == 0;
    if (!listed) return zg_errorf("checkpoint '%s' has no %s in its manifest", c->dir, name);
    char *p = zg_path_join(c->dir, name);
    int rc = zg_file_read_all(p, text, NULL);
    free(p);
    return rc;
}
