/* Checkpoint format: sharded optimizer state read back over any range, manifest verification
 * (checksum, truncation), atomic replacement, `latest`, retention, hard-linked tags. */
#include "backend/backend.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "model/gpt2.h"
#include "train/checkpoint.h"
#include "train/ckpt_prefetch.h"
#include "train/optimizer.h"
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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
    ZT_CHECK(zg_ckpt_write_model(&w, &g_cfg, params, n, ZG_F32) == 0);
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

/* Format v2, mixed precision: model.bin holds no parameters; they are the shards' fp32 master rounded
 * to the training dtype, rebuilt bit for bit (and checked against model.bin's checksum). */
static void check_header_only(zg_dtype pdt) {
    size_t n = g_tab.num_params, cut = n / 3 + 1;
    float *master = malloc(n * 4), *params = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4),
          *back = malloc(n * 4);
    fill(master, n, 11);
    fill(m, n, 12);
    fill(v, n, 13);
    for (size_t i = 0; i < n; i++) { /* what the optimizer leaves in the parameters, widened */
        master[i] *= 3.0f;
        params[i] =
            pdt == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(master[i])) : zg_f16_to_f32(zg_f32_to_f16(master[i]));
    }
    ZT_CHECK(memcmp(params, master, n * 4) != 0); /* rounding changed something: the test can tell */
    zg_ckpt_writer w;
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "mixed") == 0);
    ZT_CHECK(zg_ckpt_write_model(&w, &g_cfg, params, n, pdt) == 0);
    zg_optimizer o[2];
    zg_optimizer_config oc = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f};
    size_t lo[2] = {0, cut}, hi[2] = {cut, n};
    for (int k = 0; k < 2; k++) {
        ZT_CHECK(zg_optimizer_init(&o[k], g_be, &g_tab, lo[k], hi[k], &oc, pdt, NULL) == 0);
        ZT_CHECK(o[k].master != NULL);
        memcpy(o[k].master, master + lo[k], (hi[k] - lo[k]) * 4);
        memcpy(o[k].m, m + lo[k], (hi[k] - lo[k]) * 4);
        memcpy(o[k].v, v + lo[k], (hi[k] - lo[k]) * 4);
        ZT_CHECK(zg_ckpt_write_optimizer(&w, &o[k], n) == 0);
    }
    ZT_CHECK(zg_ckpt_write_text(&w, "state.json", "{\"iter\": 1}") == 0);
    ZT_CHECK(zg_ckpt_writer_commit(&w, 0) == 0);
    char *dir = zg_path_join(g_dir, "mixed"), *mb = zg_path_join(dir, "model.bin");
    struct stat st;
    ZT_CHECK(stat(mb, &st) == 0 && st.st_size == ZG_CKPT_HEADER_BYTES); /* 12 bytes per parameter in all */
    zg_ckpt c;
    int rc = zg_ckpt_open(&c, dir);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.params_from_master && c.master_dtype == pdt);
        memset(back, 0, n * 4);
        ZT_CHECK(zg_ckpt_read_model(&c, back) == 0);
        ZT_CHECK(memcmp(back, params, n * 4) == 0);
        zg_optimizer r;
        ZT_CHECK(zg_optimizer_init(&r, g_be, &g_tab, 5, n - 5, &oc, pdt, NULL) == 0);
        ZT_CHECK(zg_ckpt_read_optimizer(&c, &r) == 0);
        ZT_CHECK(memcmp(r.master, master + 5, (n - 10) * 4) == 0);
        zg_optimizer_free(&r);
        zg_ckpt_close(&c);
    }
    /* a model.bin whose checksum is not that of round(master): refused when the weights are read */
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "mixed") == 0);
    ZT_CHECK(zg_ckpt_write_model(&w, &g_cfg, master, n, pdt) == 0);
    for (int k = 0; k < 2; k++) ZT_CHECK(zg_ckpt_write_optimizer(&w, &o[k], n) == 0);
    ZT_CHECK(zg_ckpt_writer_commit(&w, 0) == 0);
    ZT_CHECK(zg_ckpt_open(&c, dir) == 0);
    ZT_CHECK(zg_ckpt_read_model(&c, back) != 0 && strstr(zg_error_message(), "rebuilt") != NULL);
    zg_ckpt_close(&c);
    /* a shard missing: the parameters cannot be rebuilt, refused at open */
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "mixed") == 0);
    ZT_CHECK(zg_ckpt_write_model(&w, &g_cfg, params, n, pdt) == 0);
    ZT_CHECK(zg_ckpt_write_optimizer(&w, &o[0], n) == 0);
    ZT_CHECK(zg_ckpt_writer_commit(&w, 0) == 0);
    ZT_CHECK(zg_ckpt_open(&c, dir) != 0 && strstr(zg_error_message(), "master weights") != NULL);
    zg_error_clear();
    for (int k = 0; k < 2; k++) zg_optimizer_free(&o[k]);
    free(dir), free(mb), free(master), free(params), free(m), free(v), free(back);
}

static int same_file(const char *a_dir, const char *b_dir, const char *name) {
    char *a = zg_path_join(a_dir, name), *b = zg_path_join(b_dir, name), *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ok =
        zg_file_read_all(a, &x, &nx) == 0 && zg_file_read_all(b, &y, &ny) == 0 && nx == ny && memcmp(x, y, nx) == 0;
    free(a), free(b), free(x), free(y);
    return ok;
}

/* Background saves: the snapshot (an image in host memory, copied on the copy stream, the optimizer
 * held until then) written by the parallel writer in both I/O modes gives the same bytes as the
 * synchronous writer, with model.bin's checksum taken from the snapshot's master; the buffer is
 * reused; a deferred open checks a shard while reading it, whole or in part; the resume's deferred
 * read of the moments gets the same state, and refuses a corrupt one without touching m, v. */
static void test_snapshot(void) {
    size_t n = g_tab.num_params;
    zg_optimizer_config oc = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f};
    zg_optimizer o;
    ZT_CHECK(zg_optimizer_init(&o, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    fill(o.master, n, 21);
    fill(o.m, n, 22);
    fill(o.v, n, 23);
    o.step = 9;
    float *params = malloc(n * 4), *back = malloc(n * 4);
    for (size_t i = 0; i < n; i++) params[i] = zg_bf16_to_f32(zg_f32_to_bf16(o.master[i]));
    zg_ckpt_writer w;
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "ref") == 0);
    ZT_CHECK(zg_ckpt_write_model(&w, &g_cfg, params, n, ZG_BF16) == 0);
    ZT_CHECK(zg_ckpt_write_optimizer(&w, &o, n) == 0);
    ZT_CHECK(zg_ckpt_writer_commit(&w, 0) == 0);
    char *ref = zg_path_join(g_dir, "ref"), *snap = zg_path_join(g_dir, "snap"), shard[64];
    snprintf(shard, sizeof shard, "optim_0_%zu.bin", n);
    zg_ckpt_snapshot s;
    memset(&s, 0, sizeof s);
    void *block = NULL;
    const char *modes[2] = {"direct", "buffered"};
    for (int k = 0; k < 2; k++) {
        setenv("ZGPT_CKPT_IO", modes[k], 1);
        ZT_CHECK(zg_ckpt_snapshot_take(&s, &o) == 0);
        ZT_CHECK(o.held);                       /* the next update waits for the copies */
        if (k == 1) ZT_CHECK(s.block == block); /* reused between saves */
        block = s.block;
        ZT_CHECK((uintptr_t)s.image % 4096 == 0);
        zg_ckpt_snapshot_wait(&s);
        ZT_CHECK(zg_ckpt_snapshot_ready(&s));
        ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "snap") == 0);
        ZT_CHECK(zg_ckpt_write_snapshot(&w, &s, n) == 0);
        ZT_CHECK(zg_ckpt_write_model_header(&w, &g_cfg, n, ZG_BF16, zg_ckpt_snapshot_params_checksum(&s, ZG_BF16)) ==
                 0);
        ZT_CHECK(zg_ckpt_writer_commit(&w, 0) == 0);
        ZT_CHECK_MSG(same_file(ref, snap, shard), "%s: shard differs from the synchronous writer's", modes[k]);
        ZT_CHECK_MSG(same_file(ref, snap, "model.bin"), "%s: model.bin differs", modes[k]);
    }
    unsetenv("ZGPT_CKPT_IO");
    /* the update after a snapshot passes the hold (it would wait on the copy stream on a GPU) */
    float *grad = calloc(n, 4), *scratch = calloc(n, 4);
    zg_optimizer_step(&o, scratch, grad, 1e-3f, 1.0f);
    ZT_CHECK(!o.held);
    free(grad), free(scratch);
    zg_ckpt_snapshot_free(&s);
    ZT_CHECK(g_be->host_bytes_in_use == 0);
    /* deferred open: the shard is checksummed by the read, which gets the snapshot's values back */
    zg_ckpt c;
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    zg_optimizer r;
    ZT_CHECK(zg_optimizer_init(&r, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer(&c, &r) == 0 && r.step == 9);
    ZT_CHECK(zg_ckpt_read_model(&c, back) == 0 && memcmp(back, params, n * 4) == 0);
    zg_ckpt_close(&c);
    /* the resume's read: the master now, the moments by a thread until wait (c closed meanwhile) */
    zg_optimizer d;
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    zg_ckpt_moments mo;
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, NULL) == 0 && d.step == 9 && !mo.sync_reason);
    zg_ckpt_close(&c);
    ZT_CHECK(memcmp(d.master, r.master, n * 4) == 0);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) == 0);
    ZT_CHECK(memcmp(d.m, r.m, n * 4) == 0 && memcmp(d.v, r.v, n * 4) == 0);
    ZT_CHECK(mo.alloc_bytes > 0 && !mo.own_block); /* nothing lent: the thread's own buffer, freed by wait */
    zg_ckpt_moments_free(&mo);
    zg_optimizer_free(&d);
    ZT_CHECK(g_be->host_bytes_in_use == 0);
    /* lent host memory (the snapshot's buffer, as the trainer lends it): the shard is exactly the range,
     * so the file lands in place, and the moments are uploaded from there after the checksum, bitwise */
    zg_ckpt_snapshot ls;
    memset(&ls, 0, sizeof ls);
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_snapshot_reserve(&ls, &d) == 0);
    size_t lend_bytes = 0;
    unsigned char *lend = zg_ckpt_snapshot_lend(&ls, &lend_bytes);
    ZT_CHECK(lend && (uintptr_t)lend % 4096 == 0 && lend_bytes >= 64 + 3 * n * 4);
    memset(lend, 0x7f, lend_bytes);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, NULL) == 0);
    zg_ckpt_close(&c);
    ZT_CHECK(zg_ckpt_moments_start(&mo, lend, lend_bytes) == 0);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) == 0);
    ZT_CHECK(mo.in_place && mo.alloc_bytes == 0 && mo.upload_s >= 0 && mo.t_ready >= mo.t_done);
    ZT_CHECK(memcmp(d.master, r.master, n * 4) == 0);
    ZT_CHECK(memcmp(d.m, r.m, n * 4) == 0 && memcmp(d.v, r.v, n * 4) == 0);
    ZT_CHECK(memcmp(lend + mo.m_off, r.m, n * 4) == 0); /* read straight into the lent buffer */
    zg_ckpt_moments_free(&mo);
    zg_optimizer_free(&d);
    /* a range that is part of the shard: not in place; m, v copied out of the staging into the lent buffer */
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 5, n - 7, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, NULL) == 0);
    zg_ckpt_close(&c);
    ZT_CHECK(zg_ckpt_moments_start(&mo, lend, lend_bytes) == 0);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) == 0);
    ZT_CHECK(!mo.in_place && mo.alloc_bytes == 0);
    ZT_CHECK(memcmp(d.m, r.m + 5, (n - 12) * 4) == 0 && memcmp(d.v, r.v + 5, (n - 12) * 4) == 0);
    ZT_CHECK(memcmp(d.master, r.master + 5, (n - 12) * 4) == 0);
    zg_ckpt_moments_free(&mo);
    zg_optimizer_free(&d);
    /* a lent buffer too small: the thread's own */
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, NULL) == 0);
    zg_ckpt_close(&c);
    ZT_CHECK(zg_ckpt_moments_start(&mo, lend, 4096) == 0);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) == 0 && mo.alloc_bytes > 0 && mo.in_place);
    ZT_CHECK(memcmp(d.m, r.m, n * 4) == 0 && memcmp(d.v, r.v, n * 4) == 0);
    zg_ckpt_moments_free(&mo);
    zg_optimizer_free(&d);
    /* no room for a host copy (and nothing lent): read at start, through the staging buffers, bitwise */
    setenv("ZGPT_TEST_HOST_AVAILABLE_BYTES", "4096", 1);
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, NULL) == 0);
    zg_ckpt_close(&c);
    ZT_CHECK(zg_ckpt_moments_start(&mo, NULL, 0) == 0 && mo.sync_reason && !mo.running);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) == 0);
    ZT_CHECK(memcmp(d.m, r.m, n * 4) == 0 && memcmp(d.v, r.v, n * 4) == 0);
    zg_ckpt_moments_free(&mo);
    zg_optimizer_free(&d);
    unsetenv("ZGPT_TEST_HOST_AVAILABLE_BYTES");
    zg_ckpt_snapshot_free(&ls);
    /* the shard read from the start of a run (ckpt_prefetch.h): begun before the optimizer exists, into a
     * block laid out as the snapshot, which the snapshot then takes; the master from it once in place,
     * the moments after the whole file's checksum: bitwise the plain read */
    zg_ckpt_prefetch pf;
    const char *why = NULL;
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_prefetch_start(&pf, &c, &why) == 1 && !why);
    ZT_CHECK(zg_ckpt_prefetch_adopt(&pf, g_be) == 0 && pf.block);
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    zg_ckpt_snapshot ps;
    memset(&ps, 0, sizeof ps);
    size_t pf_bytes = 0;
    void *pf_block = zg_ckpt_prefetch_give(&pf, &pf_bytes);
    ZT_CHECK(pf_block && zg_ckpt_snapshot_take_block(&ps, &d, pf_block, pf_bytes) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, &pf) == 0 && mo.from_prefetch && d.step == 9);
    zg_ckpt_close(&c);
    ZT_CHECK(memcmp(d.master, r.master, n * 4) == 0);
    ZT_CHECK(zg_ckpt_moments_start(&mo, NULL, 0) == 0 && !mo.running);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) == 0 && mo.in_place);
    ZT_CHECK(memcmp(d.m, r.m, n * 4) == 0 && memcmp(d.v, r.v, n * 4) == 0);
    zg_ckpt_moments_free(&mo);
    zg_ckpt_prefetch_free(&pf);
    /* the snapshot holds the file as read: master, m, v after the header */
    ZT_CHECK(ps.block == pf_block && memcmp(ps.buf, r.master, n * 4) == 0 && memcmp(ps.buf + 2 * n, r.v, n * 4) == 0);
    zg_ckpt_snapshot_free(&ps);
    zg_optimizer_free(&d);
    ZT_CHECK(g_be->host_bytes_in_use == 0);
    /* a range that is part of the shard: the prefetch holds no shard of it whole; the read goes as before */
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_prefetch_start(&pf, &c, &why) == 1);
    ZT_CHECK(zg_ckpt_prefetch_adopt(&pf, g_be) == 0);
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 5, n - 7, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, &pf) == 0 && !mo.from_prefetch);
    zg_ckpt_close(&c);
    zg_ckpt_prefetch_free(&pf); /* stopped (or done) and freed while the moments' own read goes on */
    ZT_CHECK(zg_ckpt_moments_wait(&mo) == 0);
    ZT_CHECK(memcmp(d.m, r.m + 5, (n - 12) * 4) == 0 && memcmp(d.master, r.master + 5, (n - 12) * 4) == 0);
    zg_ckpt_moments_free(&mo);
    zg_optimizer_free(&d);
    ZT_CHECK(g_be->host_bytes_in_use == 0);
    /* not started: turned off, or no host memory for it (why says so); freed at once, mid-read */
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    setenv("ZGPT_CKPT_PREFETCH", "0", 1);
    ZT_CHECK(zg_ckpt_prefetch_start(&pf, &c, &why) == 0 && why && strstr(why, "ZGPT_CKPT_PREFETCH"));
    zg_ckpt_prefetch_free(&pf);
    unsetenv("ZGPT_CKPT_PREFETCH");
    setenv("ZGPT_TEST_HOST_AVAILABLE_BYTES", "4096", 1);
    ZT_CHECK(zg_ckpt_prefetch_start(&pf, &c, &why) == 0 && why && strstr(why, "host memory"));
    unsetenv("ZGPT_TEST_HOST_AVAILABLE_BYTES");
    ZT_CHECK(zg_ckpt_prefetch_start(&pf, &c, &why) == 1);
    zg_ckpt_prefetch_free(&pf); /* never adopted: the mapping itself is unmapped */
    ZT_CHECK(!zg_ckpt_prefetch_active(&pf));
    zg_ckpt_close(&c);
    /* one flipped byte of v: the deferred open passes (sizes, headers), the reads refuse it */
    char *sp = zg_path_join(snap, shard);
    FILE *f = fopen(sp, "r+b");
    ZT_CHECK(f && fseek(f, -100, SEEK_END) == 0 && fputc(0x5a, f) != EOF);
    if (f) fclose(f);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer(&c, &r) != 0 && strstr(zg_error_message(), "fails its checksum"));
    zg_error_clear();
    zg_ckpt_close(&c);
    /* deferred: the master is read, the wait refuses the moments and leaves the state's m, v as they were */
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, NULL) == 0);
    zg_ckpt_close(&c);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) != 0 && strstr(zg_error_message(), "fails its checksum"));
    zg_error_clear();
    zg_ckpt_moments_free(&mo);
    for (size_t i = 0; i < n; i++) ZT_CHECK(d.m[i] == 0.0f && d.v[i] == 0.0f);
    zg_optimizer_free(&d);
    /* the same through a prefetch: the master is used, the moments' wait refuses the file, m and v untouched */
    ZT_CHECK(zg_optimizer_init(&d, g_be, &g_tab, 0, n, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    ZT_CHECK(zg_ckpt_prefetch_start(&pf, &c, &why) == 1 && zg_ckpt_prefetch_adopt(&pf, g_be) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer_deferred(&c, &d, &mo, &pf) == 0 && mo.from_prefetch);
    zg_ckpt_close(&c);
    ZT_CHECK(zg_ckpt_moments_wait(&mo) != 0 && strstr(zg_error_message(), "fails its checksum") &&
             strstr(zg_error_message(), shard));
    zg_error_clear();
    zg_ckpt_moments_free(&mo);
    zg_ckpt_prefetch_free(&pf);
    for (size_t i = 0; i < n; i++) ZT_CHECK(d.m[i] == 0.0f && d.v[i] == 0.0f);
    zg_optimizer_free(&d);
    ZT_CHECK(g_be->host_bytes_in_use == 0);
    ZT_CHECK(zg_ckpt_open_deferred(&c, snap) == 0);
    zg_optimizer part; /* a part of the shard: checked by itself first */
    ZT_CHECK(zg_optimizer_init(&part, g_be, &g_tab, 3, n - 3, &oc, ZG_BF16, NULL) == 0);
    ZT_CHECK(zg_ckpt_read_optimizer(&c, &part) != 0 && strstr(zg_error_message(), "fails its checksum"));
    zg_error_clear();
    zg_ckpt_close(&c);
    ZT_CHECK(zg_ckpt_open(&c, snap) != 0); /* and the plain open refuses it at once */
    zg_error_clear();
    zg_optimizer_free(&part);
    zg_optimizer_free(&r);
    zg_optimizer_free(&o);
    free(sp), free(ref), free(snap), free(params), free(back);
}

/* A synchronous save larger than its write windows (256 MiB: two windows and a tail) writes the same
 * bytes as the snapshot's whole-image writer. */
static void test_sync_windows(void) {
    size_t n = (size_t)22 << 20; /* 3 arrays: 264 MiB + the header */
    zg_ckpt_snapshot s;
    memset(&s, 0, sizeof s);
    ZT_CHECK(posix_memalign(&s.block, 4096, zg_ckpt_snapshot_bytes(n, 1)) == 0);
    s.image = s.block;
    s.buf = (float *)(s.image + ZG_CKPT_HEADER_BYTES);
    s.begin = 0;
    s.end = n;
    s.has_master = 1;
    s.step = 4;
    fill(s.buf, 3 * n, 31);
    zg_optimizer o; /* the same state as an offloaded optimizer (host memory) */
    memset(&o, 0, sizeof o);
    o.host = 1;
    o.end = n;
    o.master = s.buf;
    o.m = s.buf + n;
    o.v = s.buf + 2 * n;
    o.step = 4;
    zg_ckpt_writer w;
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "win_sync") == 0);
    ZT_CHECK_MSG(zg_ckpt_write_optimizer(&w, &o, n) == 0, "%s", zg_error_message());
    ZT_CHECK(zg_ckpt_writer_commit(&w, 0) == 0);
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "win_snap") == 0);
    ZT_CHECK(zg_ckpt_write_snapshot(&w, &s, n) == 0);
    ZT_CHECK(zg_ckpt_writer_commit(&w, 0) == 0);
    char *a = zg_path_join(g_dir, "win_sync"), *b = zg_path_join(g_dir, "win_snap"), shard[64];
    snprintf(shard, sizeof shard, "optim_0_%zu.bin", n);
    ZT_CHECK_MSG(same_file(a, b, shard), "a synchronous save in windows differs from the snapshot's file");
    ZT_CHECK(zg_dir_remove_flat(a) == 0 && zg_dir_remove_flat(b) == 0);
    free(a), free(b);
    free(s.block);
}

static void test_header_only_model(void) {
    check_header_only(ZG_BF16);
    check_header_only(ZG_F16);
}

/* Rewrites the version fields of a checkpoint folder (headers and manifest) and its manifest's
 * checksums, as an older or newer zgpt would have written it. */
static void set_version(const char *dir, uint32_t version) {
    const char *names[3] = {"model.bin", "optim_0_10.bin", NULL};
    char path_list[3][600];
    int nf = 0;
    for (int i = 0; names[i]; i++) {
        char *fp = zg_path_join(dir, names[i]);
        FILE *f = fopen(fp, "r+b");
        ZT_CHECK(f != NULL);
        if (f) {
            unsigned char b[4] = {(unsigned char)version, 0, 0, 0};
            fseek(f, 8, SEEK_SET);
            fwrite(b, 1, 4, f);
            fclose(f);
        }
        snprintf(path_list[nf++], sizeof path_list[0], "%s", fp);
        free(fp);
    }
    /* the manifest again, from the files as they are now */
    char *mp = zg_path_join(dir, "manifest.json"), *text = NULL;
    ZT_CHECK(zg_file_read_all(mp, &text, NULL) == 0);
    char *out = malloc(strlen(text) + 64), *o = out;
    const char *v = strstr(text, "\"version\"");
    ZT_CHECK(v != NULL);
    const char *num = strchr(v, ':') + 1, *after = num;
    while (*after == ' ' || *after == '\t' || (*after >= '0' && *after <= '9')) after++;
    o += sprintf(o, "%.*s %u%s", (int)(num - text), text, version, after);
    /* replace each listed file's checksum */
    for (int i = 0; i < nf; i++) {
        uint64_t sum, size;
        ZT_CHECK(zg_file_checksum(path_list[i], &sum, &size) == 0);
        const char *base = strrchr(path_list[i], '/') + 1;
        char *at = strstr(out, base);
        ZT_CHECK(at != NULL);
        char *x = at ? strstr(at, "\"xxh3\"") : NULL;
        ZT_CHECK(x != NULL);
        if (x) {
            char *q = strchr(x + 6, '"');
            char hex[17];
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sum);
            memcpy(q + 1, hex, 16);
        }
    }
    FILE *f = fopen(mp, "wb");
    fputs(out, f);
    fclose(f);
    free(out), free(text), free(mp);
}

/* A version-1 checkpoint (model.bin with its payload) still loads; a newer version is refused with a
 * message naming it. */
static void test_versions(void) {
    size_t n = g_tab.num_params;
    float *p = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4), *back = malloc(n * 4);
    fill(p, n, 21), fill(m, n, 22), fill(v, n, 23);
    char *dir = write_ckpt("v1", p, m, v, 10);
    set_version(dir, 1);
    zg_ckpt c;
    int rc = zg_ckpt_open(&c, dir);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_ckpt_read_model(&c, back) == 0 && memcmp(back, p, n * 4) == 0);
        zg_ckpt_close(&c);
    }
    set_version(dir, 3);
    ZT_CHECK(zg_ckpt_open(&c, dir) != 0);
    ZT_CHECK_MSG(strstr(zg_error_message(), "version 3") != NULL, "%s", zg_error_message());
    zg_error_clear();
    free(dir), free(p), free(m), free(v), free(back);
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

/* What a deletion log (a tmpfile) holds, then closes it; empty when it could not be made. */
static void log_text(FILE *log, char *text, size_t cap) {
    text[0] = '\0';
    if (!log) return;
    rewind(log);
    size_t got = fread(text, 1, cap - 1, log);
    text[got] = '\0';
    fclose(log);
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
    /* the trainer's form: on a thread, one at a time; a second start waits for the first */
    zg_ckpt_retainer r;
    memset(&r, 0, sizeof r);
    for (int i = 6; i <= 7; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "iter_%d", i * 10);
        free(write_ckpt(tag, p, m, v, 10));
        ZT_CHECK(zg_ckpt_set_latest(g_dir, tag) == 0);
        ZT_CHECK(zg_ckpt_retainer_start(&r, g_dir, 1) == 0);
    }
    ZT_CHECK(zg_ckpt_retainer_wait(&r) == 0 && !r.running);
    ZT_CHECK(zg_ckpt_retainer_wait(&r) == 0); /* nothing in flight */
    const char *gone2[] = {"iter_40", "iter_50", "iter_60"};
    for (int i = 0; i < 3; i++) {
        char *a = zg_path_join(g_dir, gone2[i]);
        ZT_CHECK_MSG(!zg_dir_exists(a), "%s kept by the retention thread", gone2[i]);
        free(a);
    }
    char *last = zg_path_join(g_dir, "iter_70");
    ZT_CHECK(zg_dir_exists(last));
    free(last);
    /* a failure on the thread comes back from the wait (and from the next start) with its message */
    char *missing = zg_path_join(g_dir, "no_such_dir");
    ZT_CHECK(zg_ckpt_retainer_start(&r, missing, 1) == 0);
    ZT_CHECK(zg_ckpt_retainer_wait(&r) == -1 && strstr(zg_error_message(), "no_such_dir"));
    zg_error_clear();
    ZT_CHECK(zg_ckpt_retainer_start(&r, missing, 1) == 0);
    ZT_CHECK(zg_ckpt_retainer_start(&r, g_dir, 1) == -1 && strstr(zg_error_message(), "no_such_dir"));
    zg_error_clear();
    ZT_CHECK(zg_ckpt_retainer_wait(&r) == 0);
    free(missing);
    /* a deletion: the folder goes to its trash name (a leftover of that name from a crash is replaced),
     * its files are unlinked by several threads, and one line says what went, how big, how long */
    free(write_ckpt("iter_80", p, m, v, 10));
    free(write_ckpt("iter_90", p, m, v, 10));
    char *d80 = zg_path_join(g_dir, "iter_80"), *t80 = zg_path_join(g_dir, ".trash.iter_80");
    uint64_t want = 0;
    for (int i = 0; i < 24; i++) { /* many files, as a checkpoint of many ranks has */
        char name[32];
        snprintf(name, sizeof name, "optim_extra_%d.bin", i);
        char *f = zg_path_join(d80, name);
        FILE *fp = fopen(f, "wb");
        ZT_CHECK(fp && fwrite(p, 4, 1000 + (size_t)i, fp) == 1000 + (size_t)i && fclose(fp) == 0);
        free(f);
    }
    DIR *dd = opendir(d80);
    struct dirent *de;
    while (dd && (de = readdir(dd)) != NULL) {
        struct stat st;
        char *f = zg_path_join(d80, de->d_name);
        if (de->d_name[0] != '.' && stat(f, &st) == 0) want += (uint64_t)st.st_size;
        free(f);
    }
    if (dd) closedir(dd);
    ZT_CHECK(zg_dir_make(t80) == 0); /* left by an earlier crash */
    char *t80f = zg_path_join(t80, "model.bin");
    FILE *fp = fopen(t80f, "wb");
    ZT_CHECK(fp && fputs("old", fp) >= 0 && fclose(fp) == 0);
    free(t80f);
    ZT_CHECK(zg_ckpt_set_latest(g_dir, "iter_90") == 0);
    FILE *log = tmpfile();
    ZT_CHECK(log && zg_ckpt_retain_log(g_dir, 1, log, "here") == 0);
    char text[1024];
    log_text(log, text, sizeof text);
    /* iter_70 (kept by the run above) and iter_80 go; 0.00 GB at this size */
    ZT_CHECK_MSG(strstr(text, "checkpoint: removed iter_70 (0.00 GB) in ") &&
                     strstr(text, "checkpoint: removed iter_80 (0.00 GB) in ") && strstr(text, " s, here\n") &&
                     want > 24 * 4000,
                 "deletion lines: %s", text);
    ZT_CHECK(!zg_dir_exists(d80) && !zg_dir_exists(t80));
    char *d90 = zg_path_join(g_dir, "iter_90");
    ZT_CHECK(zg_dir_exists(d90));
    free(d90), free(d80), free(t80);
    /* the end of a run (hand_off): the folder is moved aside at once and its files go to a process of their
     * own: the wait does not sit out the unlinks (the test hook's 3 s delay is theirs), the folder is no
     * tag any more, the line names the process, and the folder is gone soon after */
    free(write_ckpt("iter_100", p, m, v, 10));
    ZT_CHECK(zg_ckpt_set_latest(g_dir, "iter_100") == 0);
    zg_ckpt_retainer h;
    memset(&h, 0, sizeof h);
    FILE *hlog = tmpfile();
    h.log = hlog;
    setenv("ZGPT_TEST_DELETE_DELAY_MS", "3000", 1);
    zg_ckpt_retainer_hand_off(&h);
    double t0 = zg_now_s();
    ZT_CHECK(zg_ckpt_retainer_start(&h, g_dir, 1) == 0 && zg_ckpt_retainer_wait(&h) == 0);
    double waited = zg_now_s() - t0;
    unsetenv("ZGPT_TEST_DELETE_DELAY_MS");
    char *d90b = zg_path_join(g_dir, "iter_90"), *t90 = zg_path_join(g_dir, ".trash.iter_90");
    ZT_CHECK_MSG(waited < 2.0 && !zg_dir_exists(d90b), "hand_off: waited %.2f s; iter_90 %s", waited,
                 zg_dir_exists(d90b) ? "still a tag" : "moved");
    char htext[1024];
    log_text(hlog, htext, sizeof htext);
    ZT_CHECK_MSG(strstr(htext, "checkpoint: removing iter_90 (0.00 GB) goes on in process ") &&
                     strstr(htext, "moved aside as .trash.iter_90"),
                 "hand-off line: %s", htext);
    for (int i = 0; i < 200 && zg_dir_exists(t90); i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    ZT_CHECK_MSG(!zg_dir_exists(t90), ".trash.iter_90 still there 10 s after the hand-off");
    char *d100 = zg_path_join(g_dir, "iter_100");
    ZT_CHECK(zg_dir_exists(d100));
    free(d100), free(d90b), free(t90);
    g_dir = saved;
    free(sub);
    free(p);
    free(m);
    free(v);
}

/* A file in a folder outside the checkpoints, which nothing may reach through a link. */
static char *user_folder(const char *name) {
    char *d = zg_path_join(g_dir, name), *f = zg_path_join(d, "keep.txt");
    ZT_CHECK(zg_dir_make(d) == 0);
    FILE *fp = fopen(f, "w");
    ZT_CHECK(fp && fputs("keep", fp) >= 0 && fclose(fp) == 0);
    free(f);
    return d;
}
static int user_file_kept(const char *dir) {
    char *f = zg_path_join(dir, "keep.txt");
    int ok = zg_file_exists(f);
    free(f);
    return ok;
}

/* Issue 16: nothing is deleted through a symbolic link; each of these emptied the linked folder. */
static void test_links_not_followed(void) {
    size_t n = g_tab.num_params;
    float *p = calloc(n, 4), *m = calloc(n, 4), *v = calloc(n, 4);
    char *saved = g_dir, *sub = zg_path_join(g_dir, "links");
    g_dir = sub;
    char *user = user_folder("user");
    /* the removal primitive: a link is removed as a link */
    char *l1 = zg_path_join(g_dir, "l1");
    ZT_CHECK(symlink(user, l1) == 0);
    ZT_CHECK(zg_path_is_link(l1, NULL, 0) && zg_dir_remove_flat(l1) == 0);
    ZT_CHECK(!zg_path_is_link(l1, NULL, 0) && user_file_kept(user));
    /* a link inside a folder is unlinked, not followed; a sub-folder stops the removal */
    char *f2 = zg_path_join(g_dir, "f2"), *inner = zg_path_join(f2, "inner"), *sub2 = zg_path_join(f2, "d");
    ZT_CHECK(zg_dir_make(f2) == 0 && symlink(user, inner) == 0);
    ZT_CHECK(zg_dir_remove_flat(f2) == 0 && !zg_dir_exists(f2) && user_file_kept(user));
    ZT_CHECK(zg_dir_make(sub2) == 0);
    ZT_CHECK(zg_dir_remove_flat(f2) == -1 && strstr(zg_error_message(), "is a folder") && zg_dir_exists(sub2));
    /* replacing `best` that is a link (the trainer refuses it at start; this is the second line) */
    free(write_ckpt("iter_1", p, m, v, 10));
    char *best = zg_path_join(g_dir, "best");
    ZT_CHECK(symlink(user, best) == 0);
    ZT_CHECK(zg_ckpt_out_dir_check(g_dir) == -1 && strstr(zg_error_message(), "symbolic link"));
    ZT_CHECK(zg_ckpt_link(g_dir, "iter_1", "best") == 0);
    ZT_CHECK(user_file_kept(user) && !zg_path_is_link(best, NULL, 0) && zg_dir_exists(best));
    /* retention leaves a linked iter_N alone */
    char *old = zg_path_join(g_dir, "iter_0");
    ZT_CHECK(symlink(user, old) == 0);
    free(write_ckpt("iter_2", p, m, v, 10));
    ZT_CHECK(zg_ckpt_set_latest(g_dir, "iter_2") == 0 && zg_ckpt_retain(g_dir, 1) == 0);
    ZT_CHECK(user_file_kept(user) && zg_path_is_link(old, NULL, 0));
    /* a stale staging "folder" that is a link or a file: removed as an entry, the writer starts */
    char *stage = zg_path_join(g_dir, ".partial.iter_3");
    ZT_CHECK(symlink(user, stage) == 0);
    zg_ckpt_writer w;
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "iter_3") == 0 && user_file_kept(user));
    zg_ckpt_writer_abort(&w);
    /* ... and one that cannot be removed: a clean error, the writer released (no use after free) */
    char *blocker = zg_path_join(stage, "blocker");
    ZT_CHECK(zg_dir_make(blocker) == 0);
    ZT_CHECK(zg_ckpt_writer_begin(&w, g_dir, "iter_3") == -1 && w.stage_dir == NULL && w.files == NULL);
    zg_ckpt_writer_abort(&w); /* safe on a released writer */
    g_dir = saved;
    free(stage), free(blocker), free(old), free(best), free(l1), free(f2), free(inner), free(sub2), free(user);
    free(sub), free(p), free(m), free(v);
}

/* Issue 16: leftovers of interrupted saves, and `latest` files that cannot name a checkpoint. */
static void test_tidy_and_latest(void) {
    size_t n = g_tab.num_params;
    float *p = calloc(n, 4), *m = calloc(n, 4), *v = calloc(n, 4);
    char *saved = g_dir, *sub = zg_path_join(g_dir, "tidy");
    g_dir = sub;
    free(write_ckpt("iter_5", p, m, v, 10));
    free(write_ckpt("iter_9", p, m, v, 10)); /* complete, but `latest` never moved to it */
    ZT_CHECK(zg_ckpt_set_latest(g_dir, "iter_5") == 0);
    const char *junk[] = {".partial.best", "latest.tmp.77", "metrics.jsonl.tmp.78", "best.old", ".trash.iter_2"};
    for (int i = 0; i < 4; i++) {
        char *j = zg_path_join(g_dir, junk[i]);
        FILE *f = fopen(j, "w");
        ZT_CHECK(f && fclose(f) == 0);
        free(j);
    }
    /* a checkpoint a deletion had moved aside when the run was killed: removed, named in the report */
    char *trash = zg_path_join(g_dir, junk[4]), *tf = zg_path_join(trash, "optim_0_8.bin");
    ZT_CHECK(zg_dir_make(trash) == 0);
    FILE *tfp = fopen(tf, "w");
    ZT_CHECK(tfp && fputs("x", tfp) >= 0 && fclose(tfp) == 0);
    char *mine = zg_path_join(g_dir, "notes.old"), report[512];
    FILE *f = fopen(mine, "w");
    ZT_CHECK(f && fclose(f) == 0);
    ZT_CHECK(zg_ckpt_out_dir_tidy(g_dir, report, sizeof report) == 0);
    ZT_CHECK_MSG(strstr(report, "iter_9") && strstr(report, ".partial.best") && strstr(report, "latest.tmp.77") &&
                     strstr(report, "metrics.jsonl.tmp.78") && strstr(report, "best.old") &&
                     strstr(report, ".trash.iter_2"),
                 "tidy report: %s", report);
    ZT_CHECK(!zg_dir_exists(trash));
    free(trash), free(tf);
    ZT_CHECK(zg_file_exists(mine)); /* not a name zgpt writes */
    char tag[64];
    ZT_CHECK(zg_ckpt_latest_tag(g_dir, tag, sizeof tag) == 0 && strcmp(tag, "iter_5") == 0);
    /* "." would name out_dir itself (and recurse); CRLF is accepted */
    const char *bad[] = {".\n", "..\n", "../x\n", ".partial.iter_5\n", "\n", ".trash.iter_5\n"};
    char *lp = zg_path_join(g_dir, "latest");
    for (int i = 0; i < 6; i++) {
        f = fopen(lp, "w");
        ZT_CHECK(f && fputs(bad[i], f) >= 0 && fclose(f) == 0);
        zg_ckpt c;
        ZT_CHECK_MSG(zg_ckpt_open(&c, g_dir) == -1 && strstr(zg_error_message(), "is corrupt") &&
                         strlen(zg_error_message()) < 400,
                     "latest '%s': %s", bad[i], zg_error_message());
    }
    f = fopen(lp, "w");
    ZT_CHECK(f && fputs("iter_5\r\n", f) >= 0 && fclose(f) == 0);
    zg_ckpt c;
    ZT_CHECK_MSG(zg_ckpt_open(&c, g_dir) == 0, "CRLF latest: %s", zg_error_message());
    zg_ckpt_close(&c);
    g_dir = saved;
    free(lp), free(mine), free(sub), free(p), free(m), free(v);
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
    zt_run("header_only_model", test_header_only_model);
    zt_run("snapshot", test_snapshot);
    zt_run("sync windows", test_sync_windows);
    zt_run("versions", test_versions);
    zt_run("retention", test_retention);
    zt_run("links_not_followed", test_links_not_followed);
    zt_run("tidy_and_latest", test_tidy_and_latest);
    zt_rmtree(g_dir);
    free(g_dir);
    gpt2_param_table_free(&g_tab);
    zg_backend_destroy(g_be);
    return zt_finish();
}
