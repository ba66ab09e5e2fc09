/* Core helpers: option parsing and suggestions, strict number parsing, atomic writes, checksums. */
#include "cli/options.h"
#include "core/dirlock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/strutil.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *input;
    int64_t batch;
    double lr;
    int json;
    zg_strlist files;
} args_t;

static const zg_option opts[] = {
    ZG_OPT_STR(args_t, input, "input", "FILE", "input file", NULL),
    ZG_OPT_INT(args_t, batch, "batch", "N", "batch size", "8"),
    ZG_OPT_DBL(args_t, lr, "lr", "X", "learning rate", "0.001"),
    ZG_OPT_FLAG(args_t, json, "json", "print JSON"),
    ZG_OPT_LIST(args_t, files, "files", "PATH", "files"),
    ZG_OPT_END,
};
static const zg_command_spec spec = {"demo", "[options]", "demo", opts, NULL, NULL};

/* One holder per folder; the holder is named; a lock whose holder is gone is taken over. */
static void test_dir_lock(void) {
    char *dir = zt_tmpdir("lock");
    zg_dir_lock a, b;
    ZT_CHECK(zg_dir_lock_acquire(&a, dir, "train") == 0);
    /* flock belongs to the open file: a second open in this process conflicts like another process */
    ZT_CHECK(zg_dir_lock_acquire(&b, dir, "prepare") == -1 && b.fd == -1);
    char want[64];
    snprintf(want, sizeof want, "zgpt train, pid %ld on host", (long)getpid());
    ZT_CHECK_MSG(strstr(zg_error_message(), "in use by another zgpt run") && strstr(zg_error_message(), want),
                 "lock message: %s", zg_error_message());
    zg_dir_lock_release(&a);
    zg_dir_lock_release(&a);                                /* twice is harmless */
    ZT_CHECK(zg_dir_lock_acquire(&b, dir, "prepare") == 0); /* the file stays; the lock is free */
    zg_dir_lock_release(&b);
    zt_rmtree(dir);
    free(dir);
}

static void test_options(void) {
    args_t a;
    char *argv1[] = {"demo", "--input", "x.txt", "--batch=4", "--json", "--files", "a", "b", "--lr", "0.5"};
    ZT_CHECK(zg_options_parse(&spec, 10, argv1, &a, NULL) == 0);
    ZT_CHECK(strcmp(a.input, "x.txt") == 0);
    ZT_CHECK(a.batch == 4 && a.json == 1 && a.lr == 0.5);
    ZT_CHECK(a.files.count == 2 && strcmp(a.files.items[1], "b") == 0);
    zg_strlist_free(&a.files);

    char *argv2[] = {"demo"};
    ZT_CHECK(zg_options_parse(&spec, 1, argv2, &a, NULL) == 0);
    ZT_CHECK(a.batch == 8 && a.lr == 0.001 && a.json == 0 && a.input == NULL);

    char *argv3[] = {"demo", "--bacth", "3"};
    ZT_CHECK(zg_options_parse(&spec, 3, argv3, &a, NULL) == -1);
    ZT_CHECK(strstr(zg_error_message(), "--batch") != NULL);
    ZT_CHECK(strstr(zg_error_message(), "--bacth") != NULL);

    char *argv4[] = {"demo", "--batch", "3x"};
    ZT_CHECK(zg_options_parse(&spec, 3, argv4, &a, NULL) == -1);
    ZT_CHECK(strstr(zg_error_message(), "3x") != NULL);

    char *argv5[] = {"demo", "stray"};
    ZT_CHECK(zg_options_parse(&spec, 2, argv5, &a, NULL) == -1);
}

static void test_closest(void) {
    const char *c[] = {"prepare", "train", "eval", "sample", "export"};
    ZT_CHECK(strcmp(zg_str_closest("trian", c, 5), "train") == 0);
    ZT_CHECK(strcmp(zg_str_closest("exprot", c, 5), "export") == 0);
    ZT_CHECK(zg_str_closest("zzzzzzzzzz", c, 5) == NULL);
    ZT_CHECK(zg_str_distance("kitten", "sitting") == 3);
}

static void test_atomic(void) {
    char *dir = zt_tmpdir("core");
    char *path = zg_path_join(dir, "f.bin");
    zg_atomic_file af;
    ZT_CHECK(zg_atomic_open(&af, path) == 0);
    ZT_CHECK(zg_atomic_write(&af, "hello", 5) == 0);
    ZT_CHECK(!zg_file_exists(path)); /* nothing visible before commit */
    uint64_t sum = 0;
    ZT_CHECK(zg_atomic_commit(&af, &sum) == 0);
    ZT_CHECK(sum == zg_checksum("hello", 5));
    uint64_t fsum, fsize;
    ZT_CHECK(zg_file_checksum(path, &fsum, &fsize) == 0 && fsum == sum && fsize == 5);
    /* An aborted write leaves the old file intact and no temporary behind. */
    ZT_CHECK(zg_atomic_open(&af, path) == 0);
    ZT_CHECK(zg_atomic_write(&af, "XX", 2) == 0);
    zg_atomic_abort(&af);
    char *data;
    size_t len;
    ZT_CHECK(zg_file_read_all(path, &data, &len) == 0 && len == 5 && memcmp(data, "hello", 5) == 0);
    free(data);
    ZT_CHECK(zg_file_read_all("/nonexistent/zz", &data, &len) == -1);
    ZT_CHECK(strstr(zg_error_message(), "/nonexistent/zz") != NULL);
    free(path);
    zt_rmtree(dir);
    free(dir);
}

static void test_numbers(void) {
    int64_t i;
    double d;
    int b;
    ZT_CHECK(zg_parse_i64("42", "k", &i) == 0 && i == 42);
    ZT_CHECK(zg_parse_i64("1e3", "k", &i) == 0 && i == 1000);
    ZT_CHECK(zg_parse_i64("1.5", "k", &i) == -1);
    ZT_CHECK(zg_parse_f64("nan", "k", &d) == -1);
    ZT_CHECK(zg_parse_f64("3e-5", "k", &d) == 0 && d == 3e-5);
    ZT_CHECK(zg_parse_bool("true", "k", &b) == 0 && b == 1);
    ZT_CHECK(zg_parse_bool("maybe", "k", &b) == -1);
}

int main(void) {
    zt_run("dir_lock", test_dir_lock);
    zt_run("options", test_options);
    zt_run("closest", test_closest);
    zt_run("atomic", test_atomic);
    zt_run("numbers", test_numbers);
    return zt_finish();
}
