/* Checkpoint format: sharded optimizer state read back over any range, manifest verification
 * (checksum, truncation), atomic replacement, `latest`, retention, hard-linked tags. */
#include "backend/backend.h"
#include "core/error.h"
#include "core/fileio.h"
#include "model/gpt2.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static zg_backend *g_be;
static gpt2_config g_cfg;
static gpt2_param_table g_tab;
static char *g_dir;

static void fill(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = zt_rand_uniform(&s);
}

/* An optimizer over [a, b) with recognisable m, v, and master. */
static void make_opt(zg_optimizer *o, size_t a, size_t b, zg_dtype pdt, const float *m, const float *v) {
    zg_optimizer_config oc = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    ZT_CHECK(zg_optimizer_init(o, g_be, &g_tab, a, b, &oc, ZG_F32, NULL) == 0);
    memcpy(o->m, m + a, (b - a) * sizeof(float));
    memcpy(o->v, v + a, (b - a) * sizeof(float));
    o->step = 7;
    (void)pdt;
}

static char *write_ckpt(const char *tag, const float *params, const float *m, const float *v, size_t cut) {
    size_t n = g_tab.num_params;
    zg_ckpt_writer w;
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, tag) == 0);
    ZT_CHECK(zg_ckpt_write_model(&w, &g_cfg, params, n) == 0);
    zg_optimizer a, b;
    make_opt(&a, 0, cut, ZG_F32, m, v);
    make_opt(&b, cut, n, ZG_F32, m, v);
    ZT_CHECK(zg_ckpt_write_optimizer(&w, &a, n) == 0);
    ZT_CHECK(zg_ckpt_write_optimizer(&w, &b, n) == 0);
    ZT_CHECK(zg_ckpt_write_text(&w, "state.json", "{\"iter\": 1}") == 0);
    ZT_CHECK(zg_ckpt_writer_commit(&w, 1) == 0);
    zg_optimizer_free(&a);
    zg_optimizer_free(&b);
    return zg_path_join(g_dir, tag);
}

static void test_roundtrip_ranges(void) {
    size_t n = g_tab.num_params;
    float *p = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4), *back = malloc(n * 4);
    fill(p, n, 1);
    fill(m, n, 2);
    fill(v, n, 3);
    char *dir = write_ckpt("iter_1", p, m, v, n / 3 + 5);
    zg_ckpt c;
    int rc = zg_ckpt_open(&c, g_dir); /* via latest */
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc != 0) return;
    ZT_CHECK(c.num_params == n && c.cfg.n_layer == g_cfg.n_layer && c.n_shards == 2);
    ZT_CHECK(zg_ckpt_read_model(&c, back) == 0 && memcmp(back, p, n * 4) == 0);
    /* a range crossing the shard boundary, as a rank of another world size would read it */
    zg_optimizer o;
    zg_optimizer_config oc = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    size_t a = n / 5, b = n / 2 + 3;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, a, b, &oc, ZG_F32, NULL) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer(&c, &o) == 0);
    ZT_CHECK(o.step == 7);
    ZT_CHECK(memcmp(o.m, m + a, (b - a) * 4) == 0 && memcmp(o.v, v + a, (b - a) * 4) == 0);
    zg_optimizer_free(&o);
    char *text;
    ZT_CHECK(zg_ckpt_read_text(&c, "state.json", &text) == 0 && strstr(text, "iter"));
    free(text);
    zg_ckpt_close(&c);

    /* replacing a tag is atomic and leaves no partial folder */
    p[0] = 42.0f;
    free(write_ckpt("iter_1", p, m, v, 100));
    ZT_CHECK(zg_ckpt_open(&c, dir) == 0);
    ZT_CHECK(zg_ckpt_read_model(&c, back) == 0 && back[0] == 42.0f);
    ZT_CHECK(c.n_shards == 2);
    zg_ckpt_close(&c);
    char *partial = zg_path_join(g_dir, ".partial.iter_1");
    ZT_CHECK(!zg_dir_exists(partial));
    free(partial);

    /* hard-linked alias */
    ZT_CHECK(zg_ckpt_link(g_dir, "iter_1", "best") == 0);
    char *best = zg_path_join(g_dir, "best");
    ZT_CHECK(zg_ckpt_open(&c, best) == 0);
    zg_ckpt_close(&c);
    free(best);
    free(dir);
    free(p);
    free(m);
    free(v);
    free(back);
}

static void damage_and_check(const char *file, long offset, int truncate_to, const char *want) {
    size_t n = g_tab.num_params;
    float *p = calloc(n, 4), *m = calloc(n, 4), *v = calloc(n, 4);
    char *dir = write_ckpt("dmg", p, m, v, 10);
    char *fp = zg_path_join(dir, file);
    if (truncate_to >= 0) {
        ZT_CHECK(truncate(fp, truncate_to) == 0);
    } else {
        FILE *f = fopen(fp, "r+b");
        ZT_CHECK(f != NULL);
        if (f) {
            fseek(f, offset, SEEK_SET);
            int ch = fgetc(f);
            fseek(f, offset, SEEK_SET);
            fputc(ch ^ 0x40, f);
            fclose(f);
        }
    }
    zg_ckpt c;
    ZT_CHECK(zg_ckpt_open(&c, dir) != 0);
    ZT_CHECK_MSG(strstr(zg_error_message(), want) != NULL, "'%s' lacks '%s'", zg_error_message(), want);
    ZT_CHECK(strstr(zg_error_message(), file) != NULL);
    free(fp);
    free(dir);
    free(p);
    free(m);
    free(v);
}

static void test_damage(void) {
    damage_and_check("model.bin", 100, -1, "checksum");
    damage_and_check("model.bin", 0, 50, "bytes");
    damage_and_check("optim_0_10.bin", 64 + 8, -1, "checksum");
    damage_and_check("manifest.json", 3, 5, "corrupt");
}

static void test_retention(void) {
    size_t n = g_tab.num_params;
    float *p = calloc(n, 4), *m = calloc(n, 4), *v = calloc(n, 4);
    char *sub = zg_path_join(g_dir, "ret");
    char *saved = g_dir;
    g_dir = sub;
    for (int i = 1; i <= 5; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "iter_%d", i * 10);
        free(write_ckpt(tag, p, m, v, 10));
    }
    ZT_CHECK(zg_ckpt_link(g_dir, "iter_10", "best") == 0);
    ZT_CHECK(zg_ckpt_set_latest(g_dir, "iter_50") == 0);
    ZT_CHECK(zg_ckpt_retain(g_dir, 2) == 0);
    const char *gone[] = {"iter_10", "iter_20", "iter_30"}, *kept[] = {"iter_40", "iter_50", "best"};
    for (int i = 0; i < 3; i++) {
        char *a = zg_path_join(g_dir, gone[i]), *b = zg_path_join(g_dir, kept[i]);
        ZT_CHECK_MSG(!zg_dir_exists(a), "%s kept", gone[i]);
        ZT_CHECK_MSG(zg_dir_exists(b), "%s removed", kept[i]);
        free(a);
        free(b);
    }
    zg_ckpt c;
    char *best = zg_path_join(g_dir, "best");
    ZT_CHECK(zg_ckpt_open(&c, best) == 0); /* survives the removal of the folder it was linked from */
    zg_ckpt_close(&c);
    free(best);
    g_dir = saved;
    free(sub);
    free(p);
    free(m);
    free(v);
}

int main(void) {
    zg_backend_config bc = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&g_be, &bc) != 0) return 1;
    memset(&g_cfg, 0, sizeof g_cfg);
    g_cfg.n_layer = 2;
    g_cfg.n_head = 2;
    g_cfg.n_embd = 16;
    g_cfg.block_size = 8;
    g_cfg.vocab_size = 100;
    if (gpt2_config_validate(&g_cfg) != 0 || gpt2_param_table_init(&g_tab, &g_cfg) != 0) return 1;
    g_dir = zt_tmpdir("ckpt");
    zt_run("roundtrip_ranges", test_roundtrip_ranges);
    zt_run("damage", test_damage);
    zt_run("retention", test_retention);
    zt_rmtree(g_dir);
    free(g_dir);
    gpt2_param_table_free(&g_tab);
    zg_backend_destroy(g_be);
    return zt_finish();
}
