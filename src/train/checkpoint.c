/* renameat2(RENAME_EXCHANGE) swaps a finished checkpoint folder with the old one in one step. */
#define _GNU_SOURCE
#include "train/checkpoint.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/meminfo.h"
#include "core/progress.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { CHUNK_ELEMS = 1 << 20 }; /* host staging for device <-> file copies: 4 MiB of fp32 */

/* ---- the full-disk test hook ---------------------------------------------------------------- */

/* Bytes written by checkpoint writers in this process. Process-wide on purpose: the hook must let
 * the first checkpoints succeed and a later one fail midway, as a disk filling up would. Atomic: the
 * background writer thread (src/train/ckpt_background.c) writes too. */
static _Atomic uint64_t g_test_bytes_written;

static int ckpt_write(zg_atomic_file *af, const void *data, size_t n) {
    const char *e = getenv("ZGPT_TEST_FAIL_WRITE_AFTER");
    if (e && *e && atomic_fetch_add(&g_test_bytes_written, n) + n > strtoull(e, NULL, 10)) {
        af->failed = 1;
        return zg_errorf("cannot write '%s': No space left on device (simulated by ZGPT_TEST_FAIL_WRITE_AFTER)",
                         af->path);
    }
    /* test hook: a slow disk, so that a test can kill a run while a background save is writing */
    const char *d = getenv("ZGPT_TEST_WRITER_DELAY_MS");
    if (d && *d) {
        long ms = strtol(d, NULL, 10);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        if (ms > 0) nanosleep(&ts, NULL);
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
        if (errno != EINVAL && errno != ENOSYS)
            return zg_errorf("cannot replace '%s': %s", final, strerror(errno));
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

static char *stage_path(const char *out_dir, const char *tag) {
    size_t n = strlen(tag) + 16;
    char *name = zg_malloc(n);
    snprintf(name, n, ".partial.%s", tag);
    char *p = zg_path_join(out_dir, name);
    free(name);
    return p;
}

static int read_latest(const char *out_dir, char *tag, size_t cap);

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
    if (mkdir(w->stage_dir, 0755) != 0) { /* no inodes, read-only or immutable out_dir, ... */
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
        int rc = zg_errorf("checkpoint folder '%s' does not exist (the committing rank did not create it)",
                           w->stage_dir);
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

int zg_ckpt_write_model(zg_ckpt_writer *w, const gpt2_config *cfg, const float *params_host, size_t num_params,
                        zg_dtype param_dtype) {
    /* In mixed precision the parameters are exactly the shards' fp32 master rounded to param_dtype
     * (the optimizer writes param = round(master) at every step, and resume rebuilds them the same
     * way), so a second copy would only cost 4 bytes per parameter: the header carries the dtype and
     * the checksum of the parameters as they are, and the reader rebuilds and checks them. */
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
    put_u64(h + 56, zg_checksum(params_host, num_params * sizeof(float)));
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

/* Streams one fp32 array into the file: backend memory through `stage` (be non-NULL), or a host
 * snapshot written straight from where it is (be NULL). */
static int write_f32(zg_atomic_file *af, zg_backend *be, const float *src, size_t n, float *stage, zg_progress *prog) {
    for (size_t i = 0; i < n; i += CHUNK_ELEMS) {
        size_t k = n - i < CHUNK_ELEMS ? n - i : CHUNK_ELEMS;
        const float *chunk = src + i;
        if (be) {
            be->ops->download(be, stage, src + i, k * sizeof(float));
            chunk = stage;
        }
        if (ckpt_write(af, chunk, k * sizeof(float)) != 0) return -1;
        zg_progress_update(prog, prog->done + k * sizeof(float));
    }
    return 0;
}

/* One shard from its arrays (master may be NULL) in backend memory (be) or host memory (be NULL). */
static int write_shard(zg_ckpt_writer *w, zg_backend *be, size_t begin, size_t end, int64_t step,
                       const float *const arrays[3], size_t num_params) {
    char name[96];
    snprintf(name, sizeof name, "optim_%zu_%zu.bin", begin, end);
    size_t n = end - begin;
    float *stage = be ? zg_malloc(CHUNK_ELEMS * sizeof(float)) : NULL;
    /* The header carries a checksum of the payload; compute it in a first pass over the state so the
     * header can be written first and the file stays streamable. */
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
    uint64_t payload_sum = zg_hasher_final(&hh);
    unsigned char h[ZG_CKPT_HEADER_BYTES];
    memset(h, 0, sizeof h);
    memcpy(h, ZG_CKPT_OPTIM_MAGIC, 8);
    put_u32(h + 8, ZG_CKPT_VERSION);
    put_u32(h + 12, ZG_CKPT_HEADER_BYTES);
    put_u64(h + 16, num_params);
    put_u64(h + 24, begin);
    put_u64(h + 32, end);
    put_u32(h + 40, arrays[0] ? 1u : 0u);
    put_u64(h + 48, (uint64_t)step);
    put_u64(h + 56, payload_sum);
    zg_atomic_file af;
    if (open_in_stage(w, &af, name) != 0) {
        free(stage);
        return -1;
    }
    int ok = ckpt_write(&af, h, sizeof h) == 0;
    zg_progress prog;
    progress_begin(&prog, "save", w->final_dir, name, (uint64_t)n * sizeof(float) * (arrays[0] ? 3 : 2), w->quiet);
    for (int a = 0; ok && a < 3; a++)
        if (arrays[a] && n) ok = write_f32(&af, be, arrays[a], n, stage, &prog) == 0;
    zg_progress_free(&prog);
    free(stage);
    return finish_file(w, &af, name, ok);
}

int zg_ckpt_write_optimizer(zg_ckpt_writer *w, const zg_optimizer *o, size_t num_params) {
    const float *const arrays[3] = {o->master, o->m, o->v};
    return write_shard(w, o->host ? NULL : o->be, o->begin, o->end, o->step, arrays, num_params);
}

int zg_ckpt_snapshot_take(zg_ckpt_snapshot *s, const zg_optimizer *o) {
    size_t n = o->end - o->begin, want = n * (o->master ? 3 : 2);
    if (want > s->cap) {
        free(s->buf);
        s->buf = NULL;
        s->cap = 0;
        /* Linux overcommits: malloc of more than is free succeeds and the kernel kills the process
         * later. Ask first (ZGPT_TEST_HOST_AVAILABLE_BYTES stands in for the kernel's figure in tests). */
        uint64_t avail = zg_host_mem_available();
        if ((uint64_t)want * sizeof(float) > avail)
            return zg_errorf("host memory cannot hold a checkpoint snapshot of %.2f GiB (%.2f GiB available)",
                             (double)want * sizeof(float) / (1u << 30), (double)avail / (1u << 30));
        /* Plain host memory: the backend interface has no pinned allocation (downloads on CUDA then
         * go through the driver's staging buffer; a pinned buffer would make them faster). */
        s->buf = malloc(want * sizeof(float) + 1);
        s->cap = s->buf ? want : 0;
        if (!s->buf) return zg_errorf("out of host memory for a checkpoint snapshot of %.2f GiB",
                                      (double)want * sizeof(float) / (1u << 30));
    }
    s->begin = o->begin;
    s->end = o->end;
    s->step = o->step;
    s->has_master = o->master != NULL;
    const float *src[3] = {o->master, o->m, o->v};
    float *dst = s->buf;
    for (int a = 0; a < 3; a++) {
        if (!src[a]) continue;
        if (n && o->host) memcpy(dst, src[a], n * sizeof(float));
        else if (n) o->be->ops->download(o->be, dst, src[a], n * sizeof(float));
        dst += n;
    }
    return 0;
}

void zg_ckpt_snapshot_free(zg_ckpt_snapshot *s) {
    free(s->buf);
    memset(s, 0, sizeof *s);
}

int zg_ckpt_write_snapshot(zg_ckpt_writer *w, const zg_ckpt_snapshot *s, size_t num_params) {
    size_t n = s->end - s->begin;
    const float *base = s->buf;
    const float *const arrays[3] = {s->has_master ? base : NULL, base + (s->has_master ? n : 0),
                                    base + (s->has_master ? 2 * n : n)};
    return write_shard(w, NULL, s->begin, s->end, s->step, arrays, num_params);
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
        if (!published) zg_dir_remove_flat(w->final_dir);
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
                       out_dir, len ? "\"" : "nothing", text, len > 40 ? "...\"" : len ? "\"" : "");
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

int zg_ckpt_retain(const char *out_dir, int64_t keep_last_k) {
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
        char *p = zg_path_join(out_dir, tag);
        if (zg_dir_remove_flat(p) != 0) rc = -1;
        free(p);
    }
    free(iters);
    return rc;
}

/* ---- out_dir hygiene --------------------------------------------------------------------------- */

int zg_ckpt_latest_tag(const char *out_dir, char *tag, size_t cap) { return read_latest(out_dir, tag, cap); }

/* Names zgpt writes or deletes directly inside out_dir. */
static int managed_name(const char *n) {
    static const char *const fixed[] = {"latest", "best", "final", "metrics.jsonl", ".lock"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(n, fixed[i]) == 0) return 1;
    return strncmp(n, "iter_", 5) == 0 || strncmp(n, ".partial.", 9) == 0;
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
    if (read_latest(out_dir, latest, sizeof latest) != 0) zg_error_clear();
    else if (strncmp(latest, "iter_", 5) == 0 && is_number(latest + 5)) latest_iter = strtoll(latest + 5, NULL, 10);
    DIR *d = opendir(out_dir);
    if (!d) return zg_errorf("cannot open out_dir '%s': %s", out_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name, *dot;
        int stale = strncmp(n, ".partial.", 9) == 0;
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
        char *p = zg_path_join(out_dir, n);
        if (zg_dir_remove_flat(p) != 0) rc = -1;
        else report_add(report, cap, n);
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
    return zg_errorf("'%s' has format version %g; this zgpt reads versions %u to %u (a newer zgpt wrote it)", path,
                     v, ZG_CKPT_VERSION_MIN, ZG_CKPT_VERSION);
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

int zg_ckpt_open(zg_ckpt *c, const char *path) {
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
            return zg_errorf("'%s' is not a zgpt checkpoint (no manifest.json; an incomplete save, or the wrong folder)",
                             path);
        }
        if (read_latest(path, tag, sizeof tag) != 0) return -1;
        char *dir = zg_path_join(path, tag);
        int rc = zg_ckpt_open(c, dir);
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
            uint64_t got_sum = 0, got_size = 0;
            if (zg_file_checksum(fp, &got_sum, &got_size) != 0) {
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
        for (int i = 0; i < c->n_shards; i++) covered += c->shards[i].has_master ? c->shards[i].end - c->shards[i].begin : 0;
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

static int read_shard_part(const zg_ckpt *c, const zg_ckpt_shard *s, int which, uint64_t a, uint64_t b,
                           zg_backend *be, float *dst, float *stage, zg_progress *prog);

/* Header-only model.bin: the parameters are the shards' master rounded to the training dtype, exactly
 * as the optimizer produced them (round to nearest even, as on the device), then widened to fp32. */
static int read_model_from_master(const zg_ckpt *c, float *params_host, uint64_t want_sum, const char *path) {
    int rc = 0;
    zg_progress prog;
    progress_begin(&prog, "load", c->dir, "fp32 master weights", c->num_params * sizeof(float), 0);
    for (int i = 0; rc == 0 && i < c->n_shards; i++)
        rc = read_shard_part(c, &c->shards[i], 0, c->shards[i].begin, c->shards[i].end, NULL,
                             params_host + c->shards[i].begin, NULL, &prog);
    zg_progress_free(&prog);
    if (rc != 0) return -1;
    for (uint64_t i = 0; i < c->num_params; i++)
        params_host[i] = c->master_dtype == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(params_host[i]))
                                                    : zg_f16_to_f32(zg_f32_to_f16(params_host[i]));
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
        progress_begin(&prog, "load", c->dir, "model.bin", c->params_from_master ? 0 : c->num_params * sizeof(float), 0);
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
static int read_shard_part(const zg_ckpt *c, const zg_ckpt_shard *s, int which, uint64_t a, uint64_t b,
                           zg_backend *be, float *dst, float *stage, zg_progress *prog) {
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

int zg_ckpt_read_optimizer(const zg_ckpt *c, zg_optimizer *o) {
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
        return zg_errorf("checkpoint '%s': optimizer shards cover %llu of the %zu elements of range [%zu, %zu)",
                         c->dir, (unsigned long long)covered, n, o->begin, o->end);
    float *stage = zg_malloc(CHUNK_ELEMS * sizeof(float));
    int rc = 0;
    /* rank 0 shows the read of its range (m, v, and the master when both have one) */
    zg_progress prog;
    char range[64];
    snprintf(range, sizeof range, "optimizer state [%zu, %zu)", o->begin, o->end);
    progress_begin(&prog, "load", c->dir, range, (uint64_t)n * sizeof(float) * (o->master && all_master ? 3u : 2u), 0);
    for (int i = 0; rc == 0 && i < c->n_shards; i++) {
        const zg_ckpt_shard *s = &c->shards[i];
        uint64_t a = s->begin > o->begin ? s->begin : o->begin, b = s->end < o->end ? s->end : o->end;
        if (a >= b) continue;
        float *off_m = o->m + (a - o->begin), *off_v = o->v + (a - o->begin);
        zg_backend *be = o->host ? NULL : o->be; /* ZeRO-Offload: the state is host memory */
        rc = read_shard_part(c, s, 1, a, b, be, off_m, stage, &prog);
        if (rc == 0) rc = read_shard_part(c, s, 2, a, b, be, off_v, stage, &prog);
        if (rc == 0 && o->master && all_master)
            rc = read_shard_part(c, s, 0, a, b, be, o->master + (a - o->begin), stage, &prog);
    }
    zg_progress_free(&prog);
    free(stage);
    if (rc == 0) o->step = step;
    return rc;
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
