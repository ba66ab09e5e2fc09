/* Reading a checkpoint: the manifest and headers (versions, sizes, checksums), model.bin (or the
 * parameters rebuilt from the shards' master), and an optimizer range assembled from whichever shards
 * cover it, read by several threads and uploaded while later pieces are read; a resume's Adam moments
 * on a thread of their own. */
#define _GNU_SOURCE
#include "train/checkpoint.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "train/ckpt_internal.h"
#include "core/meminfo.h"
#include "core/progress.h"
#include "train/ckpt_io.h"
#include "train/ckpt_prefetch.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    uint32_t version = zg_ckpt_get_u32(h + 8);
    if (!version_ok(version)) return version_error(path, version);
    c->cfg.n_layer = (int)zg_ckpt_get_u32(h + 16);
    c->cfg.n_head = (int)zg_ckpt_get_u32(h + 20);
    c->cfg.n_embd = (int)zg_ckpt_get_u32(h + 24);
    c->cfg.block_size = (int)zg_ckpt_get_u32(h + 28);
    c->cfg.vocab_size = (int)zg_ckpt_get_u32(h + 32);
    c->cfg.padded_vocab_size = (int)zg_ckpt_get_u32(h + 36);
    c->num_params = zg_ckpt_get_u64(h + 48);
    uint32_t payload = zg_ckpt_get_u32(h + 40), mdt = zg_ckpt_get_u32(h + 44);
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
    if (!version_ok(zg_ckpt_get_u32(h + 8))) return version_error(path, zg_ckpt_get_u32(h + 8));
    zg_ckpt_shard s;
    memset(&s, 0, sizeof s);
    snprintf(s.file, sizeof s.file, "%s", name);
    uint64_t total = zg_ckpt_get_u64(h + 16);
    s.begin = zg_ckpt_get_u64(h + 24);
    s.end = zg_ckpt_get_u64(h + 32);
    s.has_master = zg_ckpt_get_u32(h + 40) & 1u;
    s.step = zg_ckpt_get_u64(h + 48);
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
        if (zg_ckpt_latest_tag(path, tag, sizeof tag) != 0) return -1;
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
    else if (ver->valuedouble != floor(ver->valuedouble) || ver->valuedouble < 0 || ver->valuedouble > UINT32_MAX ||
             !version_ok((uint32_t)ver->valuedouble))
        rc = version_error(mpath, ver->valuedouble);
    int have_model = 0;
    const cJSON *f;
    if (rc == 0) {
        cJSON_ArrayForEach(f, files) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
            const cJSON *size = cJSON_GetObjectItemCaseSensitive(f, "size");
            const cJSON *sum = cJSON_GetObjectItemCaseSensitive(f, "xxh3");
            /* the size an integer a file can have (converting anything else to uint64_t is undefined) */
            if (!cJSON_IsString(name) || !cJSON_IsNumber(size) || !cJSON_IsString(sum) ||
                strchr(name->valuestring, '/') || strlen(name->valuestring) >= sizeof c->files[0].name ||
                !(size->valuedouble >= 0 && size->valuedouble < 9.2e18) ||
                size->valuedouble != floor(size->valuedouble)) {
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

zg_ckpt_file *zg_ckpt_find_file(const zg_ckpt *c, const char *name) {
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
    zg_ckpt_file *f = zg_ckpt_find_file(c, name);
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
    zg_ckpt_progress_begin(&prog, "load", c->dir, "fp32 master weights", c->num_params * sizeof(float), 0);
    for (int i = 0; rc == 0 && i < c->n_shards; i++)
        rc = read_shard_part(c, &c->shards[i], 0, c->shards[i].begin, c->shards[i].end, NULL,
                             params_host + c->shards[i].begin, NULL, &prog);
    zg_progress_free(&prog);
    if (rc != 0) return -1;
    zg_ckpt_round_to_dtype(params_host, c->num_params, c->master_dtype, 1);
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
        zg_ckpt_progress_begin(&prog, "load", c->dir, "model.bin",
                               c->params_from_master ? 0 : c->num_params * sizeof(float), 0);
        if (fread(h, 1, sizeof h, f) != sizeof h) rc = -1;
        size_t payload = c->params_from_master ? 0 : c->num_params;
        for (size_t i = 0; rc == 0 && i < payload; i += ZG_CKPT_CHUNK_ELEMS) {
            size_t n = c->num_params - i < ZG_CKPT_CHUNK_ELEMS ? c->num_params - i : ZG_CKPT_CHUNK_ELEMS;
            if (fread(params_host + i, sizeof(float), n, f) != n) rc = -1;
            zg_progress_update(&prog, (i + n) * sizeof(float));
        }
        zg_progress_free(&prog);
        if (rc != 0)
            rc = zg_errorf("cannot read '%s' (truncated?)", p);
        else if (c->params_from_master)
            rc = read_model_from_master(c, params_host, zg_ckpt_get_u64(h + 56), p);
        else if (zg_checksum(params_host, c->num_params * sizeof(float)) != zg_ckpt_get_u64(h + 56))
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
    for (uint64_t i = a; rc == 0 && i < b; i += ZG_CKPT_CHUNK_ELEMS) {
        size_t k = (size_t)(b - i < ZG_CKPT_CHUNK_ELEMS ? b - i : ZG_CKPT_CHUNK_ELEMS);
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
 * gains the seconds spent waiting for uploads to land before a buffer was refilled. watch (when non-NULL):
 * another thread sees the bytes in place (and hashed) grow, piece by piece, and can stop the read. The read strategy
 * is ZGPT_CKPT_READ's (src/train/ckpt_io.h; direct reads whole aligned blocks around [lo, hi)). */
static int read_pipelined(const char *path, zg_backend *be, int dst_host, uint64_t lo, uint64_t hi,
                          const read_sink *sinks, int n_sinks, zg_hasher *h, zg_progress *prog, unsigned char *image,
                          double *upload_wait, zg_ckpt_read_watch *watch) {
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
    int stopped = 0;
    for (uint64_t p = alo; rc == 0 && p < ahi; p += piece, i++) {
        /* keep RING_DEPTH - 1 pieces in flight: a buffer is refilled once its previous upload has landed */
        while (rc == 0 && next < ahi && started < i + RING_DEPTH - 1) {
            if (watch && atomic_load(&watch->stop)) {
                stopped = 1;
                break;
            }
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
        if (stopped) { /* the pieces in flight from piece i on are joined before their buffers go */
            for (size_t j = i; j < started; j++)
                if (zg_ckpt_io_read_wait(&job[j % RING_DEPTH]) != 0) zg_error_clear();
            started = i;
            rc = zg_errorf("the read of '%s' was stopped", path);
            break;
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
        if (watch) atomic_store(&watch->done, uhi);
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

int zg_ckpt_read_image(const char *path, uint64_t size, unsigned char *image, zg_hasher *h, zg_ckpt_read_watch *watch) {
    return read_pipelined(path, NULL, 1, 0, size, NULL, 0, h, NULL, image, NULL, watch);
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

/* The shard is being read whole from the start of the run (ckpt_prefetch.h): the master's sinks
 * (sinks[0, k_now)) are uploaded from its block once their bytes are in place; the moments' (the rest)
 * are left in the block, where zg_ckpt_moments_wait uploads them after the read's checksum held. */
static int take_prefetched(zg_ckpt_moments *mo, zg_backend *be, const read_sink *sinks, int k, int k_now,
                           zg_progress *prog) {
    zg_ckpt_prefetch *p = mo->prefetch;
    uint64_t upto = 0;
    for (int q = 0; q < k_now; q++)
        if (sinks[q].off + sinks[q].n > upto) upto = sinks[q].off + sinks[q].n;
    if (zg_ckpt_prefetch_wait_bytes(p, upto, prog) != 0) return -1;
    double t0 = zg_now_s();
    zg_event *ev = be->ops->event_create(be);
    /* after what the compute stream has queued (the state's initialisation), as read_pipelined's */
    be->ops->event_record(be, ev, ZG_STREAM_COMPUTE);
    be->ops->stream_wait(be, ZG_STREAM_COPY, ev);
    for (int q = 0; q < k_now; q++)
        be->ops->copy_async(be, sinks[q].dst, p->image + sinks[q].off, (size_t)sinks[q].n, ZG_COPY_H2D);
    be->ops->event_record(be, ev, ZG_STREAM_COPY);
    be->ops->event_synchronize(be, ev);
    be->ops->event_destroy(be, ev);
    mo->master_upload_wait += zg_now_s() - t0;
    for (int q = k_now; q < k; q++) {
        if (sinks[q].which == 1) mo->m_off = (size_t)sinks[q].off;
        if (sinks[q].which == 2) mo->v_off = (size_t)sinks[q].off;
    }
    mo->image = p->image;
    mo->in_place = 1;
    mo->from_prefetch = 1;
    mo->where = "host memory read from the start of the run";
    return 0;
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
    zg_ckpt_progress_begin(&prog, "load", c->dir, range, (uint64_t)n * sizeof(float) * now_arrays, 0);
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
        if (mo && mo->prefetch && !o->host && a == s->begin && b == s->end &&
            zg_ckpt_prefetch_holds(mo->prefetch, c, s)) {
            rc = take_prefetched(mo, o->be, sinks, k, k_now, &prog);
            continue;
        }
        zg_ckpt_file *f = zg_ckpt_find_file(c, s->file);
        int whole = f && f->unverified && a == s->begin && b == s->end;
        char *path = zg_path_join(c->dir, s->file);
        /* the moments start here in the file: after the master, or after the header */
        uint64_t split = ZG_CKPT_HEADER_BYTES + (s->has_master ? sn * sizeof(float) : 0);
        if (whole && mo) { /* the master's part now, hashed; the thread hashes on from there */
            zg_hasher h;
            zg_hasher_init(&h);
            rc = read_pipelined(path, o->be, o->host, 0, split, sinks, k_now, &h, &prog, NULL, upload_wait, NULL);
            if (rc == 0)
                moments_add_job(mo, path, split, f->size, sinks + k_now, k - k_now, &h, f->xxh3);
            else
                (void)zg_hasher_final(&h);
        } else if (whole) { /* the whole file in one pass, checksummed on the way */
            zg_hasher h;
            zg_hasher_init(&h);
            rc = read_pipelined(path, o->be, o->host, 0, f->size, sinks, k, &h, &prog, NULL, upload_wait, NULL);
            uint64_t got = zg_hasher_final(&h);
            if (rc == 0) rc = check_sum(c, f, got);
        } else {
            rc = verify_file(c, s->file);
            for (int q = 0; rc == 0 && q < k_now; q++)
                rc = read_pipelined(path, o->be, o->host, sinks[q].off, sinks[q].off + sinks[q].n, &sinks[q], 1, NULL,
                                    &prog, NULL, upload_wait, NULL);
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
                            image, upload_wait, NULL);
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

int zg_ckpt_read_optimizer_deferred(const zg_ckpt *c, zg_optimizer *o, zg_ckpt_moments *mo, zg_ckpt_prefetch *pf) {
    memset(mo, 0, sizeof *mo);
    mo->o = o;
    mo->prefetch = pf && zg_ckpt_prefetch_active(pf) ? pf : NULL;
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
    if (mo->from_prefetch && !mo->started) { /* its thread has been reading them since the start */
        mo->started = 1;
        mo->t_start = mo->prefetch->t_start;
        return 0;
    }
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
    if (mo->from_prefetch && mo->image) { /* the whole shard read and checksummed, or its error */
        if (zg_ckpt_prefetch_join(mo->prefetch) != 0) {
            mo->rc = -1;
            snprintf(mo->error, sizeof mo->error, "%s", zg_error_message());
        }
        mo->t_start = mo->prefetch->t_start;
        mo->t_done = mo->prefetch->t_done;
    }
    if (mo->rc != 0) {
        mo->image = NULL;
        return zg_errorf("%s", mo->error);
    }
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
