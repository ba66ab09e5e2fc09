/* O_DIRECT */
#define _GNU_SOURCE
#include "train/ckpt_io.h"

#include "core/error.h"
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The strategies: the single source of what each mode does. 64 MiB requests, 4 in flight, kept an
 * NVMe disk at its direct-write rate in dd-like tests (larger requests do not go faster; one thread
 * leaves the queue idle between requests; 8 threads were slower than 4 in tests/bench/ckpt_write.c).
 * preallocate: the file's size is allocated before the threads start (see zg_ckpt_io_start). */
typedef struct {
    const char *name;
    int open_flags;
    size_t chunk;
    int threads;
    int preallocate;
} io_strategy;

static const io_strategy STRATEGIES[] = {
    [ZG_CKPT_IO_DIRECT] = {"direct", O_DIRECT, (size_t)64 << 20, 4, 1},
    [ZG_CKPT_IO_BUFFERED] = {"buffered", 0, (size_t)64 << 20, 4, 0},
};

const char *zg_ckpt_io_mode_name(zg_ckpt_io_mode m) { return STRATEGIES[m].name; }

/* The index of the strategy that environment variable `var` names in a strategy table (whose entries
 * start with their name; `stride` bytes apart), or `dflt` when it is unset; -1 with an error naming the
 * value otherwise. */
static int mode_from_env(const char *var, const void *table, size_t stride, int n, int dflt, const char *what,
                         const char *choices) {
    const char *e = getenv(var);
    if (!e || !*e) return dflt;
    for (int m = 0; m < n; m++)
        if (strcmp(e, *(const char *const *)((const char *)table + (size_t)m * stride)) == 0) return m;
    return zg_errorf("%s='%s' is not a checkpoint %s mode; use %s", var, e, what, choices);
}

int zg_ckpt_io_mode_from_env(zg_ckpt_io_mode *mode) {
    int m =
        mode_from_env("ZGPT_CKPT_IO", STRATEGIES, sizeof STRATEGIES[0], (int)(sizeof STRATEGIES / sizeof STRATEGIES[0]),
                      ZG_CKPT_IO_DIRECT, "write", "direct or buffered");
    *mode = m < 0 ? ZG_CKPT_IO_DIRECT : (zg_ckpt_io_mode)m;
    return m < 0 ? -1 : 0;
}

size_t zg_ckpt_io_round_up(size_t n) { return (n + ZG_CKPT_IO_ALIGN - 1) / ZG_CKPT_IO_ALIGN * ZG_CKPT_IO_ALIGN; }

/* ---- test hooks ------------------------------------------------------------------------------ */

/* Bytes written by checkpoint writers in this process. Process-wide on purpose: the hook must let
 * the first checkpoints succeed and a later one fail midway, as a disk filling up would. Atomic: the
 * writer threads count too. */
static _Atomic uint64_t g_test_bytes_written;

int zg_ckpt_io_test_hook(const char *path, size_t n) {
    const char *e = getenv("ZGPT_TEST_FAIL_WRITE_AFTER");
    if (e && *e && atomic_fetch_add(&g_test_bytes_written, n) + n > strtoull(e, NULL, 10))
        return zg_errorf("cannot write '%s': No space left on device (simulated by ZGPT_TEST_FAIL_WRITE_AFTER)", path);
    /* a slow disk, so that a test can kill a run while a background save is writing */
    const char *d = getenv("ZGPT_TEST_WRITER_DELAY_MS");
    if (d && *d) {
        long ms = strtol(d, NULL, 10);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        if (ms > 0) nanosleep(&ts, NULL);
    }
    return 0;
}

/* ---- writer ---------------------------------------------------------------------------------- */

static void record_error(zg_ckpt_io_file *f, const char *msg) {
    pthread_mutex_lock(&f->lock);
    if (!atomic_load(&f->failed)) snprintf(f->error, sizeof f->error, "%s", msg);
    atomic_store(&f->failed, 1);
    pthread_mutex_unlock(&f->lock);
}

/* pwrite of [lo, hi) whole, on any thread; errors go into f->error (errors are per thread). */
static int write_span(zg_ckpt_io_file *f, size_t lo, size_t hi) {
    if (f->mode == ZG_CKPT_IO_DIRECT)
        hi = zg_ckpt_io_round_up(hi); /* the tail block whole; truncated later */
    else if (hi > f->bytes)
        hi = f->bytes;
    while (lo < hi) {
        if (atomic_load(&f->failed)) return -1;
        size_t n = hi - lo;
        /* the hooks count the file's bytes, not the padding of a direct write's tail block */
        if (zg_ckpt_io_test_hook(f->path, (hi < f->bytes ? hi : f->bytes) - (lo < f->bytes ? lo : f->bytes)) != 0) {
            record_error(f, zg_error_message());
            zg_error_clear();
            return -1;
        }
        ssize_t w = pwrite(f->fd, f->image + (lo - f->image_off), n, (off_t)lo);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "cannot write '%s': %s", f->path, w < 0 ? strerror(errno) : "no progress");
            record_error(f, msg);
            return -1;
        }
        lo += (size_t)w;
    }
    return 0;
}

static void *writer_main(void *arg) {
    zg_ckpt_io_file *f = arg;
    for (;;) {
        size_t lo = atomic_fetch_add(&f->next, f->chunk);
        if (lo >= f->to || write_span(f, lo, lo + f->chunk < f->to ? lo + f->chunk : f->to) != 0) break;
    }
    return NULL;
}

static int open_tmp(zg_ckpt_io_file *f, int flags) {
    /* test hook: a file system that refuses O_DIRECT at open, as tmpfs did before Linux 6.6 */
    const char *e = getenv("ZGPT_TEST_NO_DIRECT_IO");
    if ((flags & O_DIRECT) && e && *e && strcmp(e, "0") != 0) {
        errno = EINVAL;
        return -1;
    }
    f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | flags, 0644);
    return f->fd >= 0 ? 0 : -1;
}

int zg_ckpt_io_open(zg_ckpt_io_file *f, const char *path, const void *image, size_t bytes, zg_ckpt_io_mode mode) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = zg_strdup(path);
    size_t n = strlen(path) + 32;
    f->tmp_path = zg_malloc(n);
    snprintf(f->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    f->image = image;
    f->bytes = bytes;
    pthread_mutex_init(&f->lock, NULL);
    if ((uintptr_t)image % ZG_CKPT_IO_ALIGN != 0) mode = ZG_CKPT_IO_BUFFERED;
    f->mode = mode;
    int rc = open_tmp(f, STRATEGIES[mode].open_flags);
    if (rc != 0 && mode == ZG_CKPT_IO_DIRECT && errno == EINVAL) { /* tmpfs and others refuse O_DIRECT */
        f->mode = ZG_CKPT_IO_BUFFERED;
        rc = open_tmp(f, 0);
    }
    if (rc == 0 && f->mode == ZG_CKPT_IO_DIRECT) {
        /* Some file systems open with O_DIRECT and refuse the writes (EINVAL): probe with the first
         * block (rewritten with the header last), and write buffered there. */
        ssize_t w = pwrite(f->fd, image, ZG_CKPT_IO_ALIGN, 0);
        if (w != (ssize_t)ZG_CKPT_IO_ALIGN && (w >= 0 || errno == EINVAL)) {
            close(f->fd);
            f->mode = ZG_CKPT_IO_BUFFERED;
            rc = open_tmp(f, 0);
        } else if (w < 0) {
            rc = -1;
        }
    }
    if (rc != 0) {
        int e = errno;
        if (f->fd >= 0) {
            close(f->fd);
            unlink(f->tmp_path);
        }
        f->fd = -1;
        zg_ckpt_io_finish(f, 0);
        return zg_errorf("cannot create '%s': %s", path, strerror(e));
    }
    f->chunk = STRATEGIES[f->mode].chunk;
    f->n_threads = STRATEGIES[f->mode].threads;
    f->preallocate = STRATEGIES[f->mode].preallocate;
    return 0;
}

static int start_threads(zg_ckpt_io_file *f, size_t from, size_t to) {
    f->to = to;
    atomic_store(&f->next, from);
    for (int i = 0; i < f->n_threads; i++) {
        int e = pthread_create(&f->threads[i], NULL, writer_main, f);
        if (e != 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "cannot start a checkpoint writer thread for '%s': %s", f->path, strerror(e));
            record_error(f, msg);
            return zg_errorf("%s", msg);
        }
        f->started++;
    }
    return 0;
}

int zg_ckpt_io_join(zg_ckpt_io_file *f) {
    for (int i = 0; i < f->started; i++) pthread_join(f->threads[i], NULL);
    f->started = 0;
    if (atomic_load(&f->failed)) return zg_errorf("%s", f->error);
    return 0;
}

int zg_ckpt_io_start_window(zg_ckpt_io_file *f, const void *image, size_t image_off, size_t from, size_t to) {
    if (zg_ckpt_io_join(f) != 0) return -1;
    if (image_off == 0 && f->preallocate) /* the first window: as zg_ckpt_io_start */
        (void)fallocate(f->fd, 0, 0, (off_t)zg_ckpt_io_round_up(f->bytes));
    f->image = image;
    f->image_off = image_off;
    return start_threads(f, from, to);
}

int zg_ckpt_io_start(zg_ckpt_io_file *f, size_t from) {
    /* The file's blocks allocated at once: the threads' writes then land inside the file instead of
     * extending it one request at a time (ext4 and XFS serialise extending direct writes and write
     * the new size through the journal for each). Measured with tests/bench/ckpt_write.c on ext4: 4
     * threads 0.84 -> 1.17 GB/s, 1 thread 0.73 -> 1.05 GB/s (docs/PERFORMANCE.md). A file system
     * without fallocate (EOPNOTSUPP) writes as before. */
    if (f->preallocate) (void)fallocate(f->fd, 0, 0, (off_t)zg_ckpt_io_round_up(f->bytes));
    return start_threads(f, from, f->bytes);
}

int zg_ckpt_io_write(zg_ckpt_io_file *f, size_t lo, size_t hi) {
    if (lo >= hi) return 0;
    if (write_span(f, lo, hi) != 0) return zg_errorf("%s", f->error);
    return 0;
}

int zg_ckpt_io_finish(zg_ckpt_io_file *f, int ok) {
    if (zg_ckpt_io_join(f) != 0) zg_error_clear(); /* reported below from f->error */
    int rc = 0;
    if (f->fd >= 0) {
        if (!ok || atomic_load(&f->failed)) rc = -1;
        if (rc == 0 && ftruncate(f->fd, (off_t)f->bytes) != 0)
            rc = zg_errorf("cannot write '%s': %s", f->path, strerror(errno));
        if (rc == 0 && fsync(f->fd) != 0) rc = zg_errorf("cannot sync '%s': %s", f->path, strerror(errno));
        if (close(f->fd) != 0 && rc == 0) rc = zg_errorf("cannot close '%s': %s", f->path, strerror(errno));
        f->fd = -1;
        if (rc == 0 && rename(f->tmp_path, f->path) != 0)
            rc = zg_errorf("cannot rename '%s' to '%s': %s", f->tmp_path, f->path, strerror(errno));
        if (rc != 0) {
            if (atomic_load(&f->failed)) zg_errorf("%s", f->error);
            unlink(f->tmp_path);
        }
        if (rc == 0) rc = zg_dir_sync_parent(f->path);
    } else {
        rc = -1;
    }
    pthread_mutex_destroy(&f->lock);
    free(f->path);
    free(f->tmp_path);
    f->path = f->tmp_path = NULL;
    return rc;
}

/* ---- reader ---------------------------------------------------------------------------------- */

/* The read strategies (ckpt_io.h says why direct is the default). piece: the bytes of one read job;
 * threads: how many split it. Buffered: 2 threads on 32 MiB each of a 64 MiB piece (dd's 64 MiB
 * requests ran at 1.6 GB/s; a second stream covers a thread's gap between pieces). Direct: 8 threads
 * on 16 MiB each of a 128 MiB piece. */
typedef struct {
    const char *name;
    int open_flags;
    size_t piece;
    int threads;
} read_strategy;

static const read_strategy READ_STRATEGIES[] = {
    [ZG_CKPT_READ_BUFFERED] = {"buffered", 0, (size_t)64 << 20, 2},
    [ZG_CKPT_READ_DIRECT] = {"direct", O_DIRECT, (size_t)128 << 20, 8},
};

const char *zg_ckpt_read_mode_name(zg_ckpt_read_mode m) { return READ_STRATEGIES[m].name; }
size_t zg_ckpt_read_piece(zg_ckpt_read_mode m) { return READ_STRATEGIES[m].piece; }

/* ZGPT_CKPT_READ_THREADS: the threads on one piece (1..ZG_CKPT_READ_MAX_THREADS), 0 when unset, -1 when
 * it is not such a number */
static int read_threads_from_env(void) {
    const char *e = getenv("ZGPT_CKPT_READ_THREADS");
    if (!e || !*e) return 0;
    char *end;
    long v = strtol(e, &end, 10);
    return *end || v < 1 || v > ZG_CKPT_READ_MAX_THREADS ? -1 : (int)v;
}

int zg_ckpt_read_mode_from_env(zg_ckpt_read_mode *mode) {
    int m = mode_from_env("ZGPT_CKPT_READ", READ_STRATEGIES, sizeof READ_STRATEGIES[0],
                          (int)(sizeof READ_STRATEGIES / sizeof READ_STRATEGIES[0]), ZG_CKPT_READ_DIRECT, "read",
                          "buffered or direct");
    *mode = m < 0 ? ZG_CKPT_READ_DIRECT : (zg_ckpt_read_mode)m;
    if (m >= 0 && read_threads_from_env() < 0)
        return zg_errorf("ZGPT_CKPT_READ_THREADS='%s' is not a thread count; use 1 to %d (unset: %d)",
                         getenv("ZGPT_CKPT_READ_THREADS"), ZG_CKPT_READ_MAX_THREADS, READ_STRATEGIES[*mode].threads);
    return m < 0 ? -1 : 0;
}

int zg_ckpt_read_open(const char *path, zg_ckpt_read_mode *mode, uint64_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | READ_STRATEGIES[*mode].open_flags);
    if (fd < 0 && *mode == ZG_CKPT_READ_DIRECT && errno == EINVAL) { /* tmpfs and others refuse O_DIRECT */
        *mode = ZG_CKPT_READ_BUFFERED;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) return zg_errorf("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return zg_errorf("cannot read '%s': %s", path, strerror(e));
    }
    *size = (uint64_t)st.st_size;
    if (*mode == ZG_CKPT_READ_BUFFERED) /* a hint: the kernel doubles its read-ahead window */
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return fd;
}

typedef struct {
    zg_ckpt_io_read_job *j;
    int index;
} read_part;

static void *reader_main(void *arg) {
    zg_ckpt_io_read_job *j = ((read_part *)arg)->j;
    int i = ((read_part *)arg)->index;
    free(arg);
    /* each thread one contiguous range; aligned, for direct reads */
    size_t per = zg_ckpt_io_round_up((j->n + (size_t)j->n_threads - 1) / (size_t)j->n_threads);
    size_t lo = per * (size_t)i < j->n ? per * (size_t)i : j->n, hi = lo + per < j->n ? lo + per : j->n;
    /* bytes from `need` on are a direct read's aligned tail: past the end of the file, not needed (and
     * after a short read at the end, the next offset would not be aligned) */
    while (lo < hi && lo < j->need) {
        ssize_t r = pread(j->fd, j->dst + lo, hi - lo, (off_t)(j->off + lo));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (!atomic_exchange(&j->failed, 1))
                snprintf(j->error, sizeof j->error, "cannot read '%s': %s", j->path,
                         r < 0 ? strerror(errno) : "unexpected end of file (truncated?)");
            break;
        }
        lo += (size_t)r;
    }
    return NULL;
}

void zg_ckpt_io_read_start(zg_ckpt_io_read_job *j, int fd, const char *path, void *dst, uint64_t off, size_t n,
                           size_t need, zg_ckpt_read_mode mode, size_t prefetch_n) {
    memset(j, 0, sizeof *j);
    j->fd = fd;
    j->path = path;
    j->dst = dst;
    j->off = off;
    j->n = n;
    j->need = need;
    j->mode = mode;
    /* the next piece, read ahead by the kernel while this one is worked on (buffered) */
    if (prefetch_n && mode == ZG_CKPT_READ_BUFFERED)
        (void)posix_fadvise(fd, (off_t)(off + n), (off_t)prefetch_n, POSIX_FADV_WILLNEED);
    /* a thread per 16 MiB, up to the strategy's count (or ZGPT_CKPT_READ_THREADS's, a thread per piece /
     * that many bytes): small reads stay on one thread */
    int t = read_threads_from_env(), k;
    if (t > 0)
        k = (int)(n / (READ_STRATEGIES[mode].piece / (size_t)t)) + 1;
    else {
        t = READ_STRATEGIES[mode].threads;
        k = (int)(n >> 24) + 1;
    }
    j->n_threads = k < t ? k : t;
    for (int i = 0; i < j->n_threads; i++) {
        read_part *p = zg_malloc(sizeof *p);
        p->j = j;
        p->index = i;
        if (pthread_create(&j->threads[i], NULL, reader_main, p) != 0) {
            reader_main(p); /* no thread: this part on the caller's */
            continue;
        }
        j->started |= 1 << i;
    }
}

int zg_ckpt_io_read_wait(zg_ckpt_io_read_job *j) {
    for (int i = 0; i < j->n_threads; i++)
        if (j->started & (1 << i)) pthread_join(j->threads[i], NULL);
    j->started = 0;
    if (atomic_load(&j->failed)) return zg_errorf("%s", j->error);
    return 0;
}
