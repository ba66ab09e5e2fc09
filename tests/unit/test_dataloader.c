/* Data loader: windows are valid, the order is a function of (seed, global sample) only — the same
 * optimizer step sees the same sequences for 1 rank x 4 micro-steps, 2 x 2 and 4 ranks x 1 — ranks are
 * disjoint, epochs cover every window once, mixtures hold their weights, and a restored state
 * continues exactly. Shards are written directly: token value = source * 10^6 + shard * 10^5 +
 * position, so every window tells where it came from. */
#include "core/error.h"
#include "core/fileio.h"
#include "testutil.h"
#include "text/dataloader.h"
#include "text/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VOCAB (1 << 22)

static char *root;

static int32_t token_at(int src, int shard, int pos) { return src * 1000000 + shard * 100000 + pos; }

/* A prepared folder with a meta.json listing the shards, as 'zgpt prepare' writes it. */
static char *make_folder(const char *name, int src, const int *shard_tokens, int n_shards) {
    char *dir = zg_path_join(root, name);
    ZT_CHECK(zg_dir_make(dir) == 0);
    char *meta = zg_path_join(dir, "meta.json");
    FILE *f = fopen(meta, "w");
    ZT_CHECK(f != NULL);
    fprintf(f, "{\"vocab_size\": %d, \"shards\": [", VOCAB);
    for (int s = 0; s < n_shards; s++) {
        int32_t *ids = malloc((size_t)shard_tokens[s] * sizeof *ids);
        for (int i = 0; i < shard_tokens[s]; i++) ids[i] = token_at(src, s, i);
        char fname[64];
        snprintf(fname, sizeof fname, "train_%06d.bin", s);
        char *p = zg_path_join(dir, fname);
        ZT_CHECK(zg_shard_write_file(p, ids, (size_t)shard_tokens[s], VOCAB) == 0);
        zg_shard sh;
        ZT_CHECK(zg_shard_open(&sh, p, VOCAB) == 0);
        fprintf(f, "%s{\"file\": \"%s\", \"split\": \"train\", \"tokens\": %d, \"checksum\": \"%016llx\"}",
                s ? ", " : "", fname, shard_tokens[s], (unsigned long long)sh.checksum);
        zg_shard_close(&sh);
        free(p);
        free(ids);
    }
    fprintf(f, "]}\n");
    ZT_CHECK(fclose(f) == 0);
    free(meta);
    return dir;
}

static zg_dataloader *open_loader(const zg_data_source *src, int n_src, int B, int T, zg_sample_mode mode,
                                  uint64_t seed, int rank, int world) {
    zg_dataloader_config cfg = {src, n_src, "train", B, T, VOCAB, mode, seed, rank, world};
    zg_dataloader *dl = NULL;
    int rc = zg_dataloader_init(&dl, &cfg);
    ZT_CHECK_MSG(rc == 0, "init failed: %s", zg_error_message());
    return dl;
}

/* Inputs are a contiguous run inside one shard and targets are the inputs shifted by one. */
static int window_ok(const int32_t *in, const int32_t *tg, int T, const int *shard_tokens) {
    int shard = (in[0] % 1000000) / 100000, pos = in[0] % 100000;
    if (pos + T + 1 > shard_tokens[shard]) return 0;
    for (int t = 0; t < T; t++)
        if (in[t] != in[0] + t || tg[t] != in[0] + t + 1) return 0;
    return 1;
}

static const int shards_a[3] = {5000, 3001, 40}; /* the last one is too short for T = 64: skipped */
static char *dir_a, *dir_b;

static void test_random_windows(void) {
    zg_data_source src = {dir_a, 1.0};
    enum { B = 4, T = 64 };
    zg_dataloader *dl = open_loader(&src, 1, B, T, ZG_SAMPLE_RANDOM, 1234, 0, 1);
    zg_dataloader *same = open_loader(&src, 1, B, T, ZG_SAMPLE_RANDOM, 1234, 0, 1);
    zg_dataloader *other = open_loader(&src, 1, B, T, ZG_SAMPLE_RANDOM, 99, 0, 1);
    if (!dl || !same || !other) return;
    ZT_CHECK(zg_dataloader_num_tokens(dl) == 5000 + 3001 + 40);
    int32_t in[B * T], tg[B * T], in2[B * T], tg2[B * T], in3[B * T], tg3[B * T];
    int differ = 0, seen_shard[3] = {0};
    for (int it = 0; it < 200; it++) {
        zg_dataloader_next(dl, in, tg);
        zg_dataloader_next(same, in2, tg2);
        zg_dataloader_next(other, in3, tg3);
        ZT_CHECK(memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0);
        differ += memcmp(in, in3, sizeof in) != 0;
        for (int b = 0; b < B; b++) {
            ZT_CHECK(window_ok(in + b * T, tg + b * T, T, shards_a));
            seen_shard[(in[b * T] % 1000000) / 100000]++;
        }
    }
    ZT_CHECK(differ > 190);
    /* Shards are drawn in proportion to their valid starts (4937 : 2938), the short one never. */
    ZT_CHECK(seen_shard[2] == 0);
    ZT_NEAR((double)seen_shard[0] / (seen_shard[0] + seen_shard[1]), 4937.0 / (4937 + 2938), 0.05, 0);
    zg_dataloader_free(dl);
    zg_dataloader_free(same);
    zg_dataloader_free(other);
}

/* 1 rank x 4 micro-steps == 2 ranks x 2 == 4 ranks x 1, in both modes, over several steps. */
static void test_world_size_invariance(void) {
    zg_data_source src = {dir_a, 1.0};
    enum { B = 2, T = 16, STEPS = 5, G = 8 };
    for (int mode = 0; mode < 2; mode++) {
        int32_t ref[STEPS][G * T], got[STEPS][G * T];
        int32_t tg[G * T];
        int32_t reft[STEPS][G * T], gott[STEPS][G * T];
        zg_dataloader *one = open_loader(&src, 1, B, T, (zg_sample_mode)mode, 42, 0, 1);
        if (!one) return;
        zg_dataloader_set_grad_accum(one, 4);
        for (int s = 0; s < STEPS; s++)
            for (int k = 0; k < 4; k++) zg_dataloader_next(one, ref[s] + k * B * T, reft[s] + k * B * T);
        zg_dataloader_state st;
        zg_dataloader_get_state(one, &st);
        ZT_CHECK(st.step == STEPS && st.micro == 0);
        /* zg_dataloader_sample gives the same sequences directly. */
        int32_t in1[T], tg1[T];
        zg_dataloader_sample(one, 3, 5, in1, tg1);
        ZT_CHECK(memcmp(in1, ref[3] + 5 * T, sizeof in1) == 0 && memcmp(tg1, reft[3] + 5 * T, sizeof tg1) == 0);
        zg_dataloader_free(one);

        int worlds[2] = {4, 2};
        for (int wi = 0; wi < 2; wi++) {
            int world = worlds[wi], accum = 4 / world;
            zg_dataloader *dl[4];
            for (int r = 0; r < world; r++) {
                dl[r] = open_loader(&src, 1, B, T, (zg_sample_mode)mode, 42, r, world);
                if (!dl[r]) return;
                zg_dataloader_set_grad_accum(dl[r], accum);
            }
            /* Rank r, micro-step k holds global sequences [(k * world + r) * B, +B). */
            for (int s = 0; s < STEPS; s++)
                for (int k = 0; k < accum; k++)
                    for (int r = 0; r < world; r++) {
                        size_t off = (size_t)((k * world + r) * B * T);
                        zg_dataloader_next(dl[r], got[s] + off, gott[s] + off);
                    }
            ZT_CHECK_MSG(memcmp(ref, got, sizeof ref) == 0, "mode %d world %d: inputs differ", mode, world);
            ZT_CHECK_MSG(memcmp(reft, gott, sizeof reft) == 0, "mode %d world %d: targets differ", mode, world);
            for (int r = 0; r < world; r++) zg_dataloader_free(dl[r]);
        }
        (void)tg;
    }
}

/* Epoch mode: every non-overlapping window exactly once per epoch, disjoint across ranks, and a new
 * order in the next epoch. */
static void test_epoch_coverage(void) {
    zg_data_source src = {dir_a, 1.0};
    enum { T = 64 };
    /* windows: (5000-1)/64 = 78, (3001-1)/64 = 46, 0 -> 124 */
    const int W = 124, world = 2;
    zg_dataloader *dl[2];
    for (int r = 0; r < world; r++) {
        dl[r] = open_loader(&src, 1, 1, T, ZG_SAMPLE_EPOCH, 7, r, world);
        if (!dl[r]) return;
    }
    int32_t in[T], tg[T];
    int count[3][80] = {{0}};
    int32_t first_order[124], second_order[124];
    for (int i = 0; i < 2 * W; i++) {
        int r = i % world;
        zg_dataloader_next(dl[r], in, tg);
        ZT_CHECK(window_ok(in, tg, T, shards_a));
        int shard = (in[0] % 1000000) / 100000, pos = in[0] % 100000;
        ZT_CHECK(pos % T == 0);
        if (i < W) {
            count[shard][pos / T]++;
            first_order[i] = in[0];
        } else {
            second_order[i - W] = in[0];
        }
    }
    int bad = 0;
    for (int w = 0; w < 78; w++) bad += count[0][w] != 1;
    for (int w = 0; w < 46; w++) bad += count[1][w] != 1;
    ZT_CHECK_MSG(bad == 0, "%d windows not seen exactly once in the first epoch", bad);
    ZT_CHECK(memcmp(first_order, second_order, sizeof first_order) != 0);
    for (int r = 0; r < world; r++) zg_dataloader_free(dl[r]);
}

static void test_mixture(void) {
    zg_data_source src[2] = {{dir_a, 0.3}, {dir_b, 0.7}};
    enum { B = 8, T = 8 };
    for (int mode = 0; mode < 2; mode++) {
        zg_dataloader *dl = open_loader(src, 2, B, T, (zg_sample_mode)mode, 5, 0, 1);
        if (!dl) return;
        int32_t in[B * T], tg[B * T];
        int from_b = 0, n = 0;
        /* 10000 samples = one mixture block: exactly 3000 / 7000. */
        for (int it = 0; it < 10000 / B; it++) {
            zg_dataloader_next(dl, in, tg);
            for (int b = 0; b < B; b++) {
                int s = in[b * T] / 1000000;
                from_b += s == 1;
                n++;
                ZT_CHECK(in[b * T + T - 1] == in[b * T] + T - 1);
            }
        }
        ZT_CHECK_MSG(from_b == 7000 && n == 10000, "mode %d: %d of %d from the 0.7 source", mode, from_b, n);
        char desc[512];
        zg_dataloader_describe(dl, desc, sizeof desc);
        ZT_CHECK_MSG(strstr(desc, "8041 tokens in 3 zgpt shards (0.3 of samples); ") != NULL, "%s", desc);
        /* and interleaved, not in runs: the first 100 samples already contain both */
        zg_dataloader_state st = {5, 0, 0};
        zg_dataloader_set_state(dl, &st);
        int first_b = 0;
        for (int it = 0; it < 100 / B; it++) {
            zg_dataloader_next(dl, in, tg);
            for (int b = 0; b < B; b++) first_b += in[b * T] / 1000000;
        }
        ZT_CHECK(first_b > 40 && first_b < 90);
        zg_dataloader_free(dl);
    }
}

static void test_resume(void) {
    zg_data_source src[2] = {{dir_a, 1.0}, {dir_b, 2.0}};
    enum { B = 3, T = 32 };
    for (int mode = 0; mode < 2; mode++) {
        zg_dataloader *a = open_loader(src, 2, B, T, (zg_sample_mode)mode, 77, 1, 2);
        if (!a) return;
        zg_dataloader_set_grad_accum(a, 3);
        int32_t in[B * T], tg[B * T], in2[B * T], tg2[B * T];
        for (int i = 0; i < 7; i++) zg_dataloader_next(a, in, tg); /* stops mid-step */
        zg_dataloader_state st;
        zg_dataloader_get_state(a, &st);
        ZT_CHECK(st.step == 2 && st.micro == 1 && st.seed == 77);
        /* a fresh loader (its own seed is different) restored from the saved state */
        zg_dataloader *b = open_loader(src, 2, B, T, (zg_sample_mode)mode, 1, 1, 2);
        if (!b) return;
        zg_dataloader_set_grad_accum(b, 3);
        zg_dataloader_set_state(b, &st);
        int same = 1;
        for (int i = 0; i < 20; i++) {
            zg_dataloader_next(a, in, tg);
            zg_dataloader_next(b, in2, tg2);
            same &= memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0;
        }
        ZT_CHECK_MSG(same, "mode %d: resumed batches differ", mode);
        zg_dataloader_free(a);
        zg_dataloader_free(b);
    }
}

static void write_llmc(const char *path, int first, int n) {
    int32_t header[256] = {0};
    header[0] = ZG_LLMC_MAGIC;
    header[1] = 1;
    header[2] = n;
    FILE *f = fopen(path, "wb");
    ZT_CHECK(f != NULL);
    if (!f) return;
    ZT_CHECK(fwrite(header, sizeof header, 1, f) == 1);
    for (int i = 0; i < n; i++) {
        uint16_t v = (uint16_t)(first + i);
        ZT_CHECK(fwrite(&v, 2, 1, f) == 1);
    }
    ZT_CHECK(fclose(f) == 0);
}

/* A folder of llm.c shards: the split is found by name (as a word), in name order; decoys and
 * temporary files are ignored. */
static void test_foreign_folder(void) {
    char *dir = zg_path_join(root, "llmc");
    ZT_CHECK(zg_dir_make(dir) == 0);
    const char *names[5] = {"tiny_train_000001.bin", "tiny_train_000000.bin", "tiny_val_000000.bin", "interval.bin",
                            "tiny_train_000002.bin.tmp.1"};
    int first[5] = {1000, 0, 5000, 9000, 9000};
    for (int i = 0; i < 5; i++) {
        char *p = zg_path_join(dir, names[i]);
        write_llmc(p, first[i], 100);
        free(p);
    }
    zg_data_source src = {dir, 1.0};
    zg_dataloader *dl = open_loader(&src, 1, 1, 99, ZG_SAMPLE_EPOCH, 3, 0, 1);
    if (!dl) return;
    ZT_CHECK(zg_dataloader_num_tokens(dl) == 200);
    int32_t in[99], tg[99];
    int seen[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        zg_dataloader_next(dl, in, tg);
        ZT_CHECK(in[0] == 0 || in[0] == 1000);
        ZT_CHECK(tg[98] == in[0] + 99);
        seen[in[0] == 1000]++;
    }
    ZT_CHECK(seen[0] == 1 && seen[1] == 1); /* one window per shard, each once in the epoch */
    zg_dataloader_free(dl);
    free(dir);
}

static void expect_init_error(const char *path, int T, const char *what) {
    zg_data_source src = {path, 1.0};
    zg_dataloader_config cfg = {&src, 1, "train", 1, T, VOCAB, ZG_SAMPLE_RANDOM, 0, 0, 1};
    zg_dataloader *dl = NULL;
    zg_error_clear();
    int rc = zg_dataloader_init(&dl, &cfg);
    ZT_CHECK_MSG(rc == -1 && dl == NULL, "init of %s should fail (%s)", path, what);
    if (dl) zg_dataloader_free(dl);
    const char *msg = zg_error_message();
    ZT_CHECK_MSG(strstr(msg, what) != NULL, "message lacks '%s': %s", what, msg);
    ZT_CHECK_MSG(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
}

static void test_errors(void) {
    /* a shard shorter than T + 1 */
    int32_t ids[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    char *p = zg_path_join(root, "short.bin");
    ZT_CHECK(zg_shard_write_file(p, ids, 10, VOCAB) == 0);
    expect_init_error(p, 10, p);
    expect_init_error(p, 10, "block size + 1 = 11");
    zg_data_source ok = {p, 1.0};
    zg_dataloader_config cfg = {&ok, 1, "train", 1, 9, VOCAB, ZG_SAMPLE_EPOCH, 0, 0, 1};
    zg_dataloader *dl = NULL;
    ZT_CHECK(zg_dataloader_init(&dl, &cfg) == 0); /* exactly T + 1 tokens is enough */
    zg_dataloader_free(dl);
    free(p);

    /* missing path, folder without shards, zgpt shards without meta.json, a stale meta.json */
    expect_init_error("/nonexistent/zgpt-data", 8, "/nonexistent/zgpt-data");
    char *empty = zg_path_join(root, "empty");
    ZT_CHECK(zg_dir_make(empty) == 0);
    expect_init_error(empty, 8, "no train shards");
    free(empty);
    char *nometa = zg_path_join(root, "nometa");
    ZT_CHECK(zg_dir_make(nometa) == 0);
    p = zg_path_join(nometa, "train_000000.bin");
    ZT_CHECK(zg_shard_write_file(p, ids, 10, VOCAB) == 0);
    expect_init_error(nometa, 4, "no meta.json");
    free(p);
    free(nometa);
    int n1[1] = {300};
    char *stale = make_folder("stale", 0, n1, 1);
    p = zg_path_join(stale, "train_000000.bin");
    ZT_CHECK(zg_shard_write_file(p, ids, 10, VOCAB) == 0); /* replaced after meta.json was written */
    expect_init_error(stale, 4, "mixes two prepare runs");
    free(p);
    free(stale);

    /* ids >= the model's vocabulary */
    zg_data_source src = {dir_a, 1.0};
    zg_dataloader_config small = {&src, 1, "train", 1, 8, 50257, ZG_SAMPLE_RANDOM, 0, 0, 1};
    zg_error_clear();
    ZT_CHECK(zg_dataloader_init(&dl, &small) == -1);
    ZT_CHECK(strstr(zg_error_message(), ">= vocab_size 50257") != NULL);
    ZT_CHECK(strstr(zg_error_message(), "train_000001.bin") != NULL); /* shard 0 holds ids < 50257 */

    /* bad configuration */
    zg_dataloader_config bad = {&src, 1, "train", 1, 8, VOCAB, ZG_SAMPLE_RANDOM, 0, 2, 2};
    ZT_CHECK(zg_dataloader_init(&dl, &bad) == -1 && strstr(zg_error_message(), "rank 2") != NULL);
    zg_data_source mix[2] = {{dir_a, 1.0}, {dir_b, -1.0}};
    zg_dataloader_config badw = {mix, 2, "train", 1, 8, VOCAB, ZG_SAMPLE_RANDOM, 0, 0, 1};
    ZT_CHECK(zg_dataloader_init(&dl, &badw) == -1 && strstr(zg_error_message(), "weight -1") != NULL);
    zg_dataloader_config badsplit = {&src, 1, "test", 1, 8, VOCAB, ZG_SAMPLE_RANDOM, 0, 0, 1};
    ZT_CHECK(zg_dataloader_init(&dl, &badsplit) == -1 && strstr(zg_error_message(), "'test'") != NULL);
}

int main(void) {
    root = zt_tmpdir("dataloader");
    dir_a = make_folder("a", 0, shards_a, 3);
    int shards_b[2] = {2000, 2000};
    dir_b = make_folder("b", 1, shards_b, 2);
    zt_run("random_windows", test_random_windows);
    zt_run("world_size_invariance", test_world_size_invariance);
    zt_run("epoch_coverage", test_epoch_coverage);
    zt_run("mixture", test_mixture);
    zt_run("resume", test_resume);
    zt_run("foreign_folder", test_foreign_folder);
    zt_run("errors", test_errors);
    zt_rmtree(root);
    free(dir_a);
    free(dir_b);
    free(root);
    return zt_finish();
}
