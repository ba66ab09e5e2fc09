/* Token shards: round trips in both token widths, the foreign formats (nanoGPT, llm.c), and every
 * kind of damage the reader must refuse with a message naming the file. */
#include "core/error.h"
#include "core/fileio.h"
#include "testutil.h"
#include "text/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dir;

static char *path_in(const char *name) { return zg_path_join(dir, name); }

static void write_raw(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    ZT_CHECK(f != NULL);
    if (!f) return;
    ZT_CHECK(fwrite(data, 1, n, f) == n);
    ZT_CHECK(fclose(f) == 0);
}

static unsigned char *read_raw(const char *path, size_t *n) {
    char *d;
    ZT_CHECK(zg_file_read_all(path, &d, n) == 0);
    return (unsigned char *)d;
}

/* Opening must fail, and the message must name the file and contain `what`. */
static void expect_open_error(const char *path, int vocab, const char *what) {
    zg_shard s;
    zg_error_clear();
    int rc = zg_shard_open(&s, path, vocab);
    ZT_CHECK_MSG(rc == -1, "opening %s should fail (%s)", path, what);
    if (rc == 0) zg_shard_close(&s);
    const char *msg = zg_error_message();
    ZT_CHECK_MSG(strstr(msg, path) != NULL, "message does not name the file: %s", msg);
    ZT_CHECK_MSG(strstr(msg, what) != NULL, "message lacks '%s': %s", what, msg);
    ZT_CHECK_MSG(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
}

static void test_roundtrip(void) {
    int widths[2][2] = {{50257, 2}, {100277, 4}};
    for (int w = 0; w < 2; w++) {
        int vocab = widths[w][0];
        size_t n = 12345;
        int32_t *ids = malloc(n * sizeof *ids);
        uint64_t r = 7;
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(zt_rand_u64(&r) % (uint64_t)vocab);
        ids[0] = vocab - 1; /* the largest id survives */
        char *p = path_in(w ? "wide.bin" : "narrow.bin");
        ZT_CHECK(zg_shard_write_file(p, ids, n, vocab) == 0);
        size_t fsize;
        free(read_raw(p, &fsize));
        ZT_CHECK(fsize == ZG_SHARD_HEADER_BYTES + n * (size_t)widths[w][1]);
        zg_shard s;
        ZT_CHECK(zg_shard_open(&s, p, vocab) == 0);
        ZT_CHECK(s.format == ZG_SHARD_ZGPT && s.n_tokens == n && s.token_bytes == widths[w][1]);
        ZT_CHECK(s.vocab_size == (uint32_t)vocab);
        int32_t *back = malloc(n * sizeof *back);
        zg_shard_read(&s, 0, n, back);
        ZT_CHECK(memcmp(back, ids, n * sizeof *ids) == 0);
        ZT_CHECK(zg_shard_token(&s, 77) == ids[77]);
        zg_shard_read(&s, 100, 5, back);
        ZT_CHECK(memcmp(back, ids + 100, 5 * sizeof *ids) == 0);
        zg_shard_close(&s);
        /* A smaller vocabulary than the writer's forces the id scan, which finds vocab-1. */
        expect_open_error(p, vocab - 1, ">= vocab_size");
        free(back);
        free(ids);
        free(p);
    }
}

static void test_writer_rejects_and_leaves_nothing(void) {
    char *p = path_in("bad_ids.bin");
    int32_t ids[3] = {1, 2, 50257};
    zg_error_clear();
    ZT_CHECK(zg_shard_write_file(p, ids, 3, 50257) == -1);
    ZT_CHECK(strstr(zg_error_message(), "50257") != NULL);
    ZT_CHECK(!zg_file_exists(p));
    /* Abort: neither the final file nor a temporary one remains. */
    zg_shard_writer w;
    ZT_CHECK(zg_shard_writer_open(&w, p, 50257) == 0);
    ZT_CHECK(zg_shard_writer_write(&w, ids, 2) == 0);
    zg_shard_writer_abort(&w);
    ZT_CHECK(!zg_file_exists(p));
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", dir);
    ZT_CHECK(system(cmd) != 0);
    free(p);
}

static void test_damage(void) {
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = i * 7;
    char *p = path_in("good.bin");
    ZT_CHECK(zg_shard_write_file(p, ids, 1000, 50257) == 0);
    size_t n;
    unsigned char *good = read_raw(p, &n);

    char *q = path_in("magic.bin");
    unsigned char *b = malloc(n);
    memcpy(b, good, n);
    b[0] = 'X';
    write_raw(q, b, n);
    expect_open_error(q, 50257, "bad magic");
    free(q);

    q = path_in("truncated.bin");
    write_raw(q, good, n - 2);
    expect_open_error(q, 50257, "truncated");
    free(q);

    q = path_in("short_header.bin");
    write_raw(q, good, 20);
    expect_open_error(q, 50257, "truncated");
    free(q);

    q = path_in("checksum.bin");
    memcpy(b, good, n);
    b[ZG_SHARD_HEADER_BYTES + 10] ^= 1; /* a flipped bit in the body */
    write_raw(q, b, n);
    expect_open_error(q, 50257, "checksum mismatch");
    free(q);

    q = path_in("header.bin");
    memcpy(b, good, n);
    b[24] ^= 4; /* the token count */
    write_raw(q, b, n);
    expect_open_error(q, 50257, "header is damaged");
    free(q);

    q = path_in("empty.bin");
    write_raw(q, good, 0);
    expect_open_error(q, 50257, "bad magic");
    free(q);

    expect_open_error("/nonexistent/zgpt/shard.bin", 50257, "cannot open");
    free(b);
    free(good);
    free(p);
}

static void test_nanogpt(void) {
    uint16_t raw[500];
    for (int i = 0; i < 500; i++) raw[i] = (uint16_t)(i * 97 % 50257);
    char *p = path_in("train.bin");
    write_raw(p, raw, sizeof raw);
    zg_shard s;
    ZT_CHECK(zg_shard_open(&s, p, 50257) == 0);
    ZT_CHECK(s.format == ZG_SHARD_NANOGPT && s.n_tokens == 500);
    for (int i = 0; i < 500; i++) ZT_CHECK(zg_shard_token(&s, (uint64_t)i) == raw[i]);
    zg_shard_close(&s);

    raw[3] = 60000;
    write_raw(p, raw, sizeof raw);
    expect_open_error(p, 50257, "60000");
    write_raw(p, raw, 7);
    expect_open_error(p, 50257, "odd size");
    free(p);
    /* The same bytes under another name are not taken for a header-less file. */
    p = path_in("other.bin");
    write_raw(p, raw, 10);
    expect_open_error(p, 50257, "bad magic");
    free(p);
}

static void test_llmc(void) {
    int32_t header[256] = {0};
    header[0] = ZG_LLMC_MAGIC;
    header[1] = 1;
    header[2] = 300;
    size_t n = sizeof header + 300 * 2;
    unsigned char *b = calloc(1, n);
    memcpy(b, header, sizeof header);
    uint16_t *tok = (uint16_t *)(b + sizeof header);
    for (int i = 0; i < 300; i++) tok[i] = (uint16_t)(50256 - i);
    char *p = path_in("tiny_val_000000.bin");
    write_raw(p, b, n);
    zg_shard s;
    ZT_CHECK(zg_shard_open(&s, p, 50257) == 0);
    ZT_CHECK(s.format == ZG_SHARD_LLMC && s.n_tokens == 300 && s.token_bytes == 2);
    ZT_CHECK(zg_shard_token(&s, 0) == 50256 && zg_shard_token(&s, 299) == 50256 - 299);
    zg_shard_close(&s);
    write_raw(p, b, n - 1);
    expect_open_error(p, 50257, "truncated");
    header[1] = 9;
    memcpy(b, header, sizeof header);
    write_raw(p, b, n);
    expect_open_error(p, 50257, "version 9");
    free(b);
    free(p);
}

int main(void) {
    dir = zt_tmpdir("shard");
    zt_run("roundtrip", test_roundtrip);
    zt_run("writer_rejects_and_leaves_nothing", test_writer_rejects_and_leaves_nothing);
    zt_run("damage", test_damage);
    zt_run("nanogpt", test_nanogpt);
    zt_run("llmc", test_llmc);
    zt_rmtree(dir);
    free(dir);
    return zt_finish();
}
