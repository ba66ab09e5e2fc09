/* Checkpoint writer throughput against this machine's disk (issue 19): writes an optimizer shard of
 * N GiB through the same path a save takes (zg_ckpt_write_snapshot: the ckpt_io writer threads, the
 * payload and file checksums, fsync, rename), the synchronous save's (zg_ckpt_write_optimizer: the same
 * threads from two windows), and the bare ckpt_io writer without checksums, so that
 * what limits a save can be told apart. Compare with
 *   dd if=/dev/zero of=DIR/dd.bin bs=64M count=... oflag=direct
 * on the same folder. Usage: bench_ckpt_write DIR [GiB=2] [repeats=2]. Not a test (no pass/fail). */
#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "train/checkpoint.h"
#include "train/ckpt_io.h"
#include "train/optimizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    for (size_t i = 0; i < 3 * n; i++) s.buf[i] = (float)(i % 1000003) * 1e-3f;
    size_t file = ZG_CKPT_HEADER_BYTES + 3 * n * sizeof(float);
    for (int r = 0; r < reps; r++) {
        /* the save path */
        zg_ckpt_writer w;
        if (zg_ckpt_writer_begin(&w, dir, "bench") != 0) goto fail;
        w.quiet = 1;
        double t0 = zg_now_s();
        if (zg_ckpt_write_snapshot(&w, &s, n) != 0) goto fail;
        double t1 = zg_now_s();
        zg_ckpt_writer_abort(&w);
        printf("save path (checksums, %s I/O): %.2f GB in %.2f s = %.2f GB/s\n", s.direct ? "direct" : "buffered",
               file / 1e9, t1 - t0, file / 1e9 / (t1 - t0));
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
        remove(path);
        free(path);
        printf("bare writer (no checksums): %.2f GB in %.2f s = %.2f GB/s\n", file / 1e9, t1 - t0,
               file / 1e9 / (t1 - t0));
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
