/* Checkpoint file I/O (src/train/ckpt_io.c): the parallel writer writes an image byte for byte in both
 * modes (direct, buffered), falls back to buffered where O_DIRECT is refused (tmpfs) or the image is
 * not aligned, writes a header changed after the threads started, and on a failure leaves no
 * temporary and the old file untouched; the parallel reader reads ranges back and reports a short
 * file. */
#include "core/error.h"
#include "core/fileio.h"
#include "train/ckpt_io.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *g_dir;

/* 5 writer chunks (1 MiB here, set after open) and a tail that is not a whole block: every thread
 * and the truncation take part */
enum { CHUNK = 1 << 20, BYTES = 5 * CHUNK + 12345 };

static unsigned char *make_image(size_t bytes, uint64_t seed) {
    unsigned char *img = NULL;
    ZT_CHECK(posix_memalign((void **)&img, ZG_CKPT_IO_ALIGN, zg_ckpt_io_round_up(bytes) + ZG_CKPT_IO_ALIGN) == 0);
    uint64_t s = seed;
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t r = zt_rand_u64(&s);
        memcpy(img + i, &r, 8);
    }
    for (size_t i = bytes & ~(size_t)7; i < bytes; i++) img[i] = (unsigned char)i;
    return img;
}

static int file_equals(const char *path, const unsigned char *img, size_t bytes) {
    char *data = NULL;
    size_t len = 0;
    if (zg_file_read_all(path, &data, &len) != 0) return 0;
    int ok = len == bytes && memcmp(data, img, bytes) == 0;
    free(data);
    return ok;
}

/* No "<name>.tmp.<pid>" left in dir. */
static int no_temporaries(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int ok = d != NULL;
    while (d && (e = readdir(d)) != NULL) ok &= strstr(e->d_name, ".tmp.") == NULL;
    if (d) closedir(d);
    return ok;
}

/* Writes img through the writer, the first block last after changing it (a header). */
static int write_image(const char *path, unsigned char *img, size_t bytes, zg_ckpt_io_mode mode,
                       zg_ckpt_io_mode *used) {
    zg_ckpt_io_file f;
    if (zg_ckpt_io_open(&f, path, img, bytes, mode) != 0) return -1;
    *used = f.mode;
    f.chunk = CHUNK;
    int rc = zg_ckpt_io_start(&f, ZG_CKPT_IO_ALIGN);
    memcpy(img, "HEADER!!", 8);
    if (rc == 0) rc = zg_ckpt_io_write(&f, 0, ZG_CKPT_IO_ALIGN);
    return zg_ckpt_io_finish(&f, rc == 0);
}

static void test_write_modes(void) {
    unsigned char *img = make_image(BYTES, 1);
    char *path = zg_path_join(g_dir, "big.bin");
    zg_ckpt_io_mode used = ZG_CKPT_IO_BUFFERED;
    /* direct on the test folder's file system (or buffered where it refuses O_DIRECT) */
    ZT_CHECK_MSG(write_image(path, img, BYTES, ZG_CKPT_IO_DIRECT, &used) == 0, "%s", zg_error_message());
    ZT_CHECK(file_equals(path, img, BYTES));
    printf("  direct requested on %s: %s used\n", g_dir, zg_ckpt_io_mode_name(used));
    /* buffered, replacing the file */
    img[BYTES / 2] ^= 0xff;
    ZT_CHECK(write_image(path, img, BYTES, ZG_CKPT_IO_BUFFERED, &used) == 0 && used == ZG_CKPT_IO_BUFFERED);
    ZT_CHECK(file_equals(path, img, BYTES));
    /* an unaligned image: buffered, the same bytes */
    unsigned char *odd = malloc(5000 + 1);
    memcpy(odd + 1, img, 5000);
    zg_ckpt_io_file f;
    ZT_CHECK(zg_ckpt_io_open(&f, path, odd + 1, 5000, ZG_CKPT_IO_DIRECT) == 0 && f.mode == ZG_CKPT_IO_BUFFERED);
    ZT_CHECK(zg_ckpt_io_start(&f, 4096) == 0 && zg_ckpt_io_write(&f, 0, 4096) == 0 && zg_ckpt_io_finish(&f, 1) == 0);
    ZT_CHECK(file_equals(path, odd + 1, 5000));
    free(odd);
    /* a file system that refuses O_DIRECT (EINVAL: tmpfs before Linux 6.6, some FUSE and network
     * ones; simulated): the buffered fallback writes the same bytes */
    setenv("ZGPT_TEST_NO_DIRECT_IO", "1", 1);
    img[7] ^= 0xff;
    ZT_CHECK(write_image(path, img, BYTES, ZG_CKPT_IO_DIRECT, &used) == 0 && used == ZG_CKPT_IO_BUFFERED);
    ZT_CHECK(file_equals(path, img, BYTES));
    unsetenv("ZGPT_TEST_NO_DIRECT_IO");
    ZT_CHECK(no_temporaries(g_dir));
    free(path);
    free(img);
}

static void test_write_failure(void) {
    unsigned char *img = make_image(BYTES, 2);
    char *path = zg_path_join(g_dir, "keep.bin");
    zg_ckpt_io_mode used;
    ZT_CHECK(write_image(path, img, 1 << 16, ZG_CKPT_IO_BUFFERED, &used) == 0);
    /* a full disk midway: an error naming the file, no temporary, the old file as it was */
    setenv("ZGPT_TEST_FAIL_WRITE_AFTER", "3000000", 1);
    unsigned char *other = make_image(BYTES, 3);
    for (int mode = 0; mode < 2; mode++) {
        ZT_CHECK(write_image(path, other, BYTES, (zg_ckpt_io_mode)mode, &used) != 0);
        ZT_CHECK(strstr(zg_error_message(), "No space left") && strstr(zg_error_message(), "keep.bin"));
        zg_error_clear();
        ZT_CHECK(file_equals(path, img, 1 << 16));
        ZT_CHECK(no_temporaries(g_dir));
    }
    unsetenv("ZGPT_TEST_FAIL_WRITE_AFTER");
    /* ZGPT_CKPT_IO names the mode; anything else is refused with the value */
    zg_ckpt_io_mode m;
    setenv("ZGPT_CKPT_IO", "buffered", 1);
    ZT_CHECK(zg_ckpt_io_mode_from_env(&m) == 0 && m == ZG_CKPT_IO_BUFFERED);
    setenv("ZGPT_CKPT_IO", "fast", 1);
    ZT_CHECK(zg_ckpt_io_mode_from_env(&m) != 0 && strstr(zg_error_message(), "'fast'"));
    zg_error_clear();
    unsetenv("ZGPT_CKPT_IO");
    ZT_CHECK(zg_ckpt_io_mode_from_env(&m) == 0 && m == ZG_CKPT_IO_DIRECT);
    free(other);
    free(path);
    free(img);
}

static void test_read(void) {
    enum { READ_BYTES = 20 << 20 }; /* the reader takes a thread per 16 MiB */
    unsigned char *img = make_image(READ_BYTES, 4);
    char *path = zg_path_join(g_dir, "read.bin");
    zg_ckpt_io_mode used;
    ZT_CHECK(write_image(path, img, READ_BYTES, ZG_CKPT_IO_DIRECT, &used) == 0);
    int fd = open(path, O_RDONLY);
    ZT_CHECK(fd >= 0);
    unsigned char *back = malloc(READ_BYTES);
    /* several threads (a 20 MB range), then one (a small range at an odd offset) */
    uint64_t offs[2] = {0, 77777};
    size_t lens[2] = {READ_BYTES, 1000};
    for (int k = 0; k < 2; k++) {
        memset(back, 0, lens[k]);
        zg_ckpt_io_read_job j;
        zg_ckpt_io_read_start(&j, fd, path, back, offs[k], lens[k], lens[k], ZG_CKPT_READ_BUFFERED, 0);
        if (k == 0) ZT_CHECK(j.n_threads > 1);
        ZT_CHECK(zg_ckpt_io_read_wait(&j) == 0);
        ZT_CHECK(memcmp(back, img + offs[k], lens[k]) == 0);
    }
    /* past the end: an error naming the file */
    zg_ckpt_io_read_job j;
    zg_ckpt_io_read_start(&j, fd, path, back, READ_BYTES - 10, 100, 100, ZG_CKPT_READ_BUFFERED, 0);
    ZT_CHECK(zg_ckpt_io_read_wait(&j) != 0 && strstr(zg_error_message(), "read.bin"));
    zg_error_clear();
    close(fd);
    /* direct reads: aligned blocks, 8 threads; a file whose size is not a multiple of the block: the
     * aligned tail past its end is not needed (need), and nothing before it may be missing */
    size_t odd = READ_BYTES - 1000;
    ZT_CHECK(truncate(path, (off_t)odd) == 0);
    zg_ckpt_read_mode mode = ZG_CKPT_READ_DIRECT;
    uint64_t size = 0;
    fd = zg_ckpt_read_open(path, &mode, &size);
    ZT_CHECK(fd >= 0 && size == odd);
    unsigned char *blk = NULL;
    ZT_CHECK(posix_memalign((void **)&blk, ZG_CKPT_IO_ALIGN, READ_BYTES) == 0);
    memset(blk, 0, READ_BYTES);
    zg_ckpt_io_read_start(&j, fd, path, blk, 0, READ_BYTES, odd, mode, 0);
    if (mode == ZG_CKPT_READ_DIRECT) ZT_CHECK(j.n_threads == 2); /* 20 MiB: a thread per 16 MiB */
    ZT_CHECK(zg_ckpt_io_read_wait(&j) == 0);
    ZT_CHECK(memcmp(blk, img, odd) == 0);
    /* a range from the middle, aligned, holding the end of the file */
    memset(blk, 0, READ_BYTES);
    zg_ckpt_io_read_start(&j, fd, path, blk, 8192, READ_BYTES - 8192, odd - 8192, mode, 0);
    ZT_CHECK(zg_ckpt_io_read_wait(&j) == 0);
    ZT_CHECK(memcmp(blk, img + 8192, odd - 8192) == 0);
    /* ZGPT_CKPT_READ_THREADS=16: a thread per 8 MiB of a direct 128 MiB piece (20 MiB: 3), the same bytes */
    setenv("ZGPT_CKPT_READ_THREADS", "16", 1);
    memset(blk, 0, READ_BYTES);
    zg_ckpt_io_read_start(&j, fd, path, blk, 0, READ_BYTES, odd, mode, 0);
    if (mode == ZG_CKPT_READ_DIRECT) ZT_CHECK(j.n_threads == 3);
    ZT_CHECK(zg_ckpt_io_read_wait(&j) == 0);
    ZT_CHECK(memcmp(blk, img, odd) == 0);
    unsetenv("ZGPT_CKPT_READ_THREADS");
    /* needing more than the file holds: truncated */
    zg_ckpt_io_read_start(&j, fd, path, blk, 0, READ_BYTES, READ_BYTES, mode, 0);
    ZT_CHECK(zg_ckpt_io_read_wait(&j) != 0 && strstr(zg_error_message(), "read.bin"));
    zg_error_clear();
    close(fd);
    free(blk);
    /* the modes from ZGPT_CKPT_READ: direct by default; a bad value names it */
    setenv("ZGPT_CKPT_READ", "buffered", 1);
    ZT_CHECK(zg_ckpt_read_mode_from_env(&mode) == 0 && mode == ZG_CKPT_READ_BUFFERED);
    setenv("ZGPT_CKPT_READ", "mmap", 1);
    ZT_CHECK(zg_ckpt_read_mode_from_env(&mode) != 0 && strstr(zg_error_message(), "ZGPT_CKPT_READ='mmap'"));
    zg_error_clear();
    unsetenv("ZGPT_CKPT_READ");
    ZT_CHECK(zg_ckpt_read_mode_from_env(&mode) == 0 && mode == ZG_CKPT_READ_DIRECT);
    /* ZGPT_CKPT_READ_THREADS outside 1..16 (or not a number) is refused, naming it */
    const char *bad[] = {"0", "17", "8x", "-2"};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        setenv("ZGPT_CKPT_READ_THREADS", bad[b], 1);
        ZT_CHECK(zg_ckpt_read_mode_from_env(&mode) != 0 && strstr(zg_error_message(), "ZGPT_CKPT_READ_THREADS="));
        zg_error_clear();
    }
    setenv("ZGPT_CKPT_READ_THREADS", "12", 1);
    ZT_CHECK(zg_ckpt_read_mode_from_env(&mode) == 0);
    unsetenv("ZGPT_CKPT_READ_THREADS");
    free(back);
    free(path);
    free(img);
}

int main(void) {
    g_dir = zt_tmpdir("ckptio");
    zt_run("write_modes", test_write_modes);
    zt_run("write_failure", test_write_failure);
    zt_run("read", test_read);
    zt_rmtree(g_dir);
    free(g_dir);
    return zt_finish();
}
