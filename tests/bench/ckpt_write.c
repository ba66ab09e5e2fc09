/* Checkpoint writer (and reader) throughput against this machine's disk (issue 19): writes an optimizer
 * shard of N GiB through the same path a save takes (zg_ckpt_write_snapshot: the ckpt_io writer
 * threads, the payload and file checksums, fsync, rename), the synchronous save's
 * (zg_ckpt_write_optimizer: the same threads from two windows), and the bare ckpt_io writer without
 * checksums, so that what limits a save can be told apart; then reads the bare file back with each read
 * strategy (buffered, direct: ckpt_io.h), the file's pages dropped from the page cache before each
 * (POSIX_FADV_DONTNEED after fsync), so that the disk is measured, not memory. Compare with
 *   dd if=/dev/zero of=DIR/dd.bin bs=64M count=... oflag=direct
 * on the same folder. A real GPT-2 XL save is 18.7 GB: N = 17.4 measures a file that size (a short
 * file can fit in the disk's write cache). BENCH_PATHS=save,sync,bare,read picks the paths (default
 * all). Usage: bench_ckpt_write DIR [GiB=2] [repeats=2]. Not a test (no pass/fail). */
#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "train/checkpoint.h"
#include "train/ckpt_io.h"
#include "train/optimizer.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 1 when BENCH_PATHS is unset or names `path`. */
static int bench_path_on(const char *path) {
    const char *e = getenv("BENCH_PATHS");
    if (!e || !*e) return 1;
    size_t n = strlen(path);
    for (const char *p = e; (p = strstr(p, path)) != NULL; p += n)
        if ((p == e || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
    return 0;
}

/* Reads `path` whole with a read strategy, the way a resume does (two pieces in flight, no checksum,
 * no upload), after dropping its pages from the page cache; GB/s, or -1 with an error. */
static double bench_read(const char *path, zg_ckpt_read_mode mode, unsigned char *buf[2], const char **used) {
    uint64_t size = 0;
    int fd = zg_ckpt_read_open(path, &mode, &size);
    if (fd < 0) return -1;
    *used = zg_ckpt_read_mode_name(mode);
    (void)fdatasync(fd);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); /* the disk, not the page cache */
    uint64_t end = zg_ckpt_io_round_up((size_t)size);
    size_t piece = zg_ckpt_read_piece(mode);
    zg_ckpt_io_read_job job[2];
    double t0 = zg_now_s();
    int k = 0, rc = 0;
    for (uint64_t p = 0; p < end; p += piece) {
        size_t len = end - p < piece ? (size_t)(end - p) : piece;
        size_t need = (size_t)((size < p + len ? size : p + len) - p);
        size_t next = p + len < end ? (end - p - len < piece ? (size_t)(end - p - len) : piece) : 0;
        zg_ckpt_io_read_start(&job[k], fd, path, buf[k], p, len, need, mode, next);
        if (p > 0 && zg_ckpt_io_read_wait(&job[k ^ 1]) != 0) rc = -1;
        k ^= 1;
    }
    if (end > 0 && zg_ckpt_io_read_wait(&job[k ^ 1]) != 0) rc = -1;
    double t1 = zg_now_s();
    close(fd);
    return rc == 0 ? size / 1e9 / (t1 - t0) : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [GiB] [repeats]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    double gib = argc > 2 ? atof(argv[2]) : 2.0;
    int reps = argc > 3 ? atoi(argv[3]) : 2;
    size_t n = (size_t)(gib * (1u << 30) / 12.0); /* master, m, v: 12 bytes per element */
    zg_ckpt_snapshot s;
    memset(&s, 0, sizeof s);
    size_t bytes = zg_ckpt_snapshot_bytes(n, 1);
    if (posix_memalign(&s.block, ZG_CKPT_IO_ALIGN, bytes) != 0) {
        fprintf(stderr, "out of memory for %zu bytes\n", bytes);
        return 1;
    }
    s.image = s.block;
    s.buf = (float *)(s.image + ZG_CKPT_HEADER_BYTES);
    s.cap = 3 * n;
    s.begin = 0;
    s.end = n;
    s.has_master = 1;
    long long total = (long long)(3 * n);
#pragma omp parallel for schedule(static)
    for (long long i = 0; i < total; i++) s.buf[i] = (float)(i % 1000003) * 1e-3f;
    size_t file = ZG_CKPT_HEADER_BYTES + 3 * n * sizeof(float);
    for (int r = 0; r < reps; r++) {
        zg_ckpt_writer w;
        if (!bench_path_on("save")) goto sync_path;
        /* the save path */
        if (zg_ckpt_writer_begin(&w, dir, "bench") != 0) goto fail;
        w.quiet = 1;
        double t0 = zg_now_s();
        if (zg_ckpt_write_snapshot(&w, &s, n) != 0) goto fail;
        double t1 = zg_now_s();
        zg_ckpt_writer_abort(&w);
        printf("save path (checksums, %s I/O): %.2f GB in %.2f s = %.2f GB/s\n", s.direct ? "direct" : "buffered",
               file / 1e9, t1 - t0, file / 1e9 / (t1 - t0));
    sync_path:
        if (!bench_path_on("sync")) goto bare_path;
        /* the synchronous save's path: the same file from two windows (the state in host memory here) */
        zg_optimizer o;
        memset(&o, 0, sizeof o);
        o.host = 1;
        o.begin = 0;
        o.end = n;
        o.master = s.buf;
        o.m = s.buf + n;
        o.v = s.buf + 2 * n;
        if (zg_ckpt_writer_begin(&w, dir, "bench") != 0) goto fail;
        w.quiet = 1;
        t0 = zg_now_s();
        if (zg_ckpt_write_optimizer(&w, &o, n) != 0) goto fail;
        t1 = zg_now_s();
        zg_ckpt_writer_abort(&w);
        printf("synchronous save path (windows, checksums): %.2f GB in %.2f s = %.2f GB/s\n", file / 1e9, t1 - t0,
               file / 1e9 / (t1 - t0));
    bare_path:
        if (!bench_path_on("bare") && !bench_path_on("read")) continue;
        /* the bare writer: no checksums */
        char *path = zg_path_join(dir, "bench_bare.bin");
        zg_ckpt_io_mode mode;
        if (zg_ckpt_io_mode_from_env(&mode) != 0) goto fail;
        zg_ckpt_io_file f;
        t0 = zg_now_s();
        if (zg_ckpt_io_open(&f, path, s.image, file, mode) != 0) goto fail;
        /* the strategy's settings, to compare: BENCH_THREADS=N, BENCH_CHUNK_MB=M, BENCH_PREALLOCATE=0|1 */
        if (getenv("BENCH_THREADS")) f.n_threads = atoi(getenv("BENCH_THREADS")) % (ZG_CKPT_IO_MAX_THREADS + 1);
        if (f.n_threads < 1) f.n_threads = 1;
        if (getenv("BENCH_PREALLOCATE")) f.preallocate = atoi(getenv("BENCH_PREALLOCATE"));
        if (getenv("BENCH_CHUNK_MB")) f.chunk = (size_t)atoi(getenv("BENCH_CHUNK_MB")) << 20;
        int rc = zg_ckpt_io_start(&f, 0);
        if (zg_ckpt_io_finish(&f, rc == 0) != 0) goto fail;
        t1 = zg_now_s();
        printf("bare writer (no checksums): %.2f GB in %.2f s = %.2f GB/s\n", file / 1e9, t1 - t0,
               file / 1e9 / (t1 - t0));
        /* the file read back, each read strategy from the disk (two pieces in flight) */
        for (int m = 0; m < 2 && bench_path_on("read"); m++) {
            size_t piece = zg_ckpt_read_piece((zg_ckpt_read_mode)m);
            unsigned char *rbuf[2] = {NULL, NULL};
            if (posix_memalign((void **)&rbuf[0], ZG_CKPT_IO_ALIGN, piece) != 0 ||
                posix_memalign((void **)&rbuf[1], ZG_CKPT_IO_ALIGN, piece) != 0) {
                fprintf(stderr, "out of memory for the read buffers\n");
                return 1;
            }
            const char *used = "";
            double gbs = bench_read(path, (zg_ckpt_read_mode)m, rbuf, &used);
            free(rbuf[0]);
            free(rbuf[1]);
            if (gbs < 0) goto fail;
            printf("read (%s, page cache dropped first): %.2f GB = %.2f GB/s\n", used, file / 1e9, gbs);
        }
        remove(path);
        free(path);
        t0 = zg_now_s();
        uint64_t h = zg_checksum(s.image, file);
        t1 = zg_now_s();
        printf("one checksum pass in memory: %.2f s = %.2f GB/s (%016llx)\n", t1 - t0, file / 1e9 / (t1 - t0),
               (unsigned long long)h);
        fflush(stdout);
    }
    free(s.block);
    return 0;
fail:
    fprintf(stderr, "bench_ckpt_write: %s\n", zg_error_message());
    return 1;
}
