/* Checkpoint file I/O at disk speed: a whole file image in host memory written by several threads with
 * pwrite (O_DIRECT when the file system takes it), and file ranges read by several threads with pread.
 *
 * Why: one thread writing 4 MiB buffered chunks reached ~68% of what the disk takes with direct writes
 * (docs/PERFORMANCE.md, issue 19); direct writes skip the page cache copy and the kernel's write-back
 * throttling, and several requests in flight keep an NVMe queue busy.
 *
 * The strategies are a table (ckpt_io.c): "direct" (O_DIRECT; offsets, lengths and the image's address
 * aligned to ZG_CKPT_IO_ALIGN) and "buffered" (plain pwrite). A file system that refuses O_DIRECT
 * (tmpfs, some network and FUSE file systems: EINVAL) gets the buffered one; ZGPT_CKPT_IO=buffered
 * forces it (tests run both). Safety is that of zg_atomic_file (src/core/fileio.h): the data goes to
 * "<path>.tmp.<pid>", is fsynced and renamed over <path>, then the folder is fsynced; a failure removes
 * the temporary and leaves <path> as it was.
 *
 * Test hooks (checkpoint.h): every write call passes zg_ckpt_io_test_hook first; ZGPT_TEST_NO_DIRECT_IO=1
 * makes an O_DIRECT open fail with EINVAL, as on a file system that refuses it. */
#ifndef ZG_TRAIN_CKPT_IO_H
#define ZG_TRAIN_CKPT_IO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define ZG_CKPT_IO_ALIGN ((size_t)4096)
#define ZG_CKPT_IO_MAX_THREADS 8
/* a read job's threads at most (ZGPT_CKPT_READ_THREADS) */
#define ZG_CKPT_READ_MAX_THREADS 16

typedef enum { ZG_CKPT_IO_DIRECT = 0, ZG_CKPT_IO_BUFFERED = 1 } zg_ckpt_io_mode;

/* The mode ZGPT_CKPT_IO asks for: "direct" (default) or "buffered"; an unknown value is an error. */
int zg_ckpt_io_mode_from_env(zg_ckpt_io_mode *mode);
const char *zg_ckpt_io_mode_name(zg_ckpt_io_mode m);
/* Rounds n up to a multiple of ZG_CKPT_IO_ALIGN. */
size_t zg_ckpt_io_round_up(size_t n);

/* The test hooks of checkpoint.h (a full disk after N bytes, a slow disk) for a write of n bytes to
 * `path`: -1 with "No space left on device (simulated ...)" when the simulated disk is full. */
int zg_ckpt_io_test_hook(const char *path, size_t n);

/* One file being written from an image of `bytes` bytes at image[0..bytes). For the direct strategy
 * the image must be ZG_CKPT_IO_ALIGN-aligned and readable up to zg_ckpt_io_round_up(bytes) (the tail
 * block is written whole, then the file is truncated to `bytes`); otherwise buffered is used. */
typedef struct {
    char *path, *tmp_path;
    int fd;
    const unsigned char *image;
    size_t bytes;
    zg_ckpt_io_mode mode; /* in use: buffered after a fallback */
    size_t chunk;
    int n_threads, started;
    int preallocate; /* allocate the file's blocks before the threads start (the strategy's) */
    pthread_t threads[ZG_CKPT_IO_MAX_THREADS];
    size_t to;          /* the threads write [first, to) */
    size_t image_off;   /* image holds the file's bytes from this offset (a window: zg_ckpt_io_start_window) */
    atomic_size_t next; /* next chunk offset the threads take */
    atomic_int failed;
    pthread_mutex_t lock; /* error[] */
    char error[1024];
} zg_ckpt_io_file;

/* Creates the temporary of `path` in the requested mode (falling back to buffered when direct I/O is
 * refused or the image is not aligned). -1 with an error naming the path. */
int zg_ckpt_io_open(zg_ckpt_io_file *f, const char *path, const void *image, size_t bytes, zg_ckpt_io_mode mode);
/* Starts the writer threads on [from, bytes) (from a multiple of ZG_CKPT_IO_ALIGN): the caller may
 * still change image[0..from) and write it with zg_ckpt_io_write (a header that depends on the rest). */
int zg_ckpt_io_start(zg_ckpt_io_file *f, size_t from);
/* A file written from windows instead of a whole image (a synchronous save holds a few hundred MiB,
 * not the file): the threads write file bytes [from, to) from `image`, which holds the file's bytes
 * from image_off (from, image_off multiples of ZG_CKPT_IO_ALIGN; image aligned and readable up to the
 * rounded-up end). zg_ckpt_io_join waits for them, so the caller can refill the window; 0 / -1 with
 * the write's error (zg_ckpt_io_finish then removes the temporary). The open's image needs only its
 * first block (the probe). */
int zg_ckpt_io_start_window(zg_ckpt_io_file *f, const void *image, size_t image_off, size_t from, size_t to);
int zg_ckpt_io_join(zg_ckpt_io_file *f);
/* Writes [lo, hi) of the image on the calling thread (lo aligned; hi rounded up in direct mode). */
int zg_ckpt_io_write(zg_ckpt_io_file *f, size_t lo, size_t hi);
/* Waits for the threads; ok and no failure: truncates to `bytes`, fsyncs, renames over the path and
 * fsyncs its folder. Otherwise (or on any error) the temporary is removed. 0 / -1 with the error. */
int zg_ckpt_io_finish(zg_ckpt_io_file *f, int ok);

/* Reading (a resume). Two strategies, a table in ckpt_io.c: "direct" (the default: O_DIRECT, 8 threads on
 * 16 MiB ranges) and "buffered" (pread through the page cache with POSIX_FADV_SEQUENTIAL, the next piece
 * announced with POSIX_FADV_WILLNEED so that the kernel's read-ahead keeps the disk busy between pieces).
 * Why direct: resuming GPT-2 XL on the H200 host from a cold page cache, the master weights came in at
 * 2.74 GB/s direct against 1.84 GB/s buffered, first iteration at 10.1 s against 12.3 s (same call;
 * docs/PERFORMANCE.md v0.13; dd had favoured buffered reads on another call, and on this development
 * machine's disk direct reads ran at 1.05-1.33 GB/s against 0.31-0.80). ZGPT_CKPT_READ=buffered picks the
 * other, for a comparison in the same call; a file system that refuses O_DIRECT reads buffered. */
typedef enum { ZG_CKPT_READ_BUFFERED = 0, ZG_CKPT_READ_DIRECT = 1 } zg_ckpt_read_mode;

/* A read's progress as another thread sees it: file bytes [0, done) are in place (and hashed); stop set
 * ends the read at its next piece ("... was stopped"). */
typedef struct {
    _Atomic uint64_t done;
    _Atomic int stop;
} zg_ckpt_read_watch;

/* The mode ZGPT_CKPT_READ asks for: "direct" (default) or "buffered"; an unknown value is an error, as is
 * a ZGPT_CKPT_READ_THREADS outside 1..ZG_CKPT_READ_MAX_THREADS (the threads on one piece, for A/B runs of
 * the number of reads in flight: the strategy's count when unset). */
int zg_ckpt_read_mode_from_env(zg_ckpt_read_mode *mode);
const char *zg_ckpt_read_mode_name(zg_ckpt_read_mode m);
/* The strategy's piece: the bytes one read job covers (a multiple of ZG_CKPT_IO_ALIGN). */
size_t zg_ckpt_read_piece(zg_ckpt_read_mode m);
/* Opens `path` for reading in *mode (falling back to buffered, and *mode with it, when O_DIRECT is
 * refused); the file's size in *size. -1 with an error naming the path. */
int zg_ckpt_read_open(const char *path, zg_ckpt_read_mode *mode, uint64_t *size);

/* Several threads read a file range into host memory: start returns at once, wait joins (0, or -1
 * with an error naming the file). Buffered: dst needs no alignment. Direct: dst, off and n aligned to
 * ZG_CKPT_IO_ALIGN; only the first `need` bytes must exist (the aligned tail may pass the file's end).
 * Buffered reads pass `need` = n. prefetch_n > 0: the range [off + n, off + n + prefetch_n) is announced
 * to the kernel (buffered), to be read ahead while the caller works on this one. */
typedef struct {
    int fd;
    const char *path;
    unsigned char *dst;
    uint64_t off;
    size_t n, need;
    zg_ckpt_read_mode mode;
    int n_threads;
    pthread_t threads[ZG_CKPT_READ_MAX_THREADS];
    int started;
    atomic_int failed;
    char error[1024];
} zg_ckpt_io_read_job;
void zg_ckpt_io_read_start(zg_ckpt_io_read_job *j, int fd, const char *path, void *dst, uint64_t off, size_t n,
                           size_t need, zg_ckpt_read_mode mode, size_t prefetch_n);
int zg_ckpt_io_read_wait(zg_ckpt_io_read_job *j);

#endif
