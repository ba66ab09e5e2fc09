/* Communicator and launcher.
 *
 *   test_comm                 collectives on whatever communicator the environment gives: the
 *                             single-process one under ctest, MPI under mpirun -np N
 *                             (tests/cli/dist_comm.sh runs it with 2, 3, 4 ranks and through
 *                             zgpt's own launcher)
 *   test_comm --nproc N ...   starts N workers through zg_launch_maybe (mpirun re-exec), which run
 *                             the rest of the arguments
 *   --die R / --kill R / --hang R / --sleep
 *                             failure modes for the launcher and timeout tests: rank R exits with an
 *                             error / SIGKILLs itself / never joins the collective; --sleep: all
 *                             ranks sleep (Ctrl-C test)
 */
#include "core/error.h"
#include "dist/comm.h"
#include "dist/launch.h"
#include "testutil.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static zg_comm *C;

static const zg_dtype DTS[3] = {ZG_F32, ZG_BF16, ZG_F16};
static const size_t SIZES[] = {1, 7, 1001, 65539};

/* Small integers: exact in every dtype and in any summation order. */
static float val(int rank, size_t i) { return (float)((rank + 1) * 3 + (int)(i % 5)) - 4.0f; }

static void *buf_from(const float *x, zg_dtype dt, size_t n) {
    void *b = zg_malloc(n * zg_dtype_size(dt));
    zg_comm_from_f32(b, dt, x, n);
    return b;
}
static void buf_to(float *x, const void *b, zg_dtype dt, size_t n) { zg_comm_to_f32(x, b, dt, n); }

static void test_conversions(void) {
    float x[6] = {1.0f, -2.5f, 65504.0f, 1e-7f, 3.14159265f, 0.0f}, y[6];
    uint16_t h[6];
    zg_comm_from_f32(h, ZG_F16, x, 6);
    zg_comm_to_f32(y, h, ZG_F16, 6);
    ZT_CHECK(y[0] == 1.0f && y[1] == -2.5f && y[2] == 65504.0f && y[5] == 0.0f);
    ZT_NEAR(y[3], 1e-7, 3e-8, 0);     /* fp16 subnormal */
    ZT_NEAR(y[4], 3.140625, 0, 1e-6); /* nearest fp16 */
    float big = 1e6f;
    zg_comm_from_f32(h, ZG_F16, &big, 1);
    zg_comm_to_f32(y, h, ZG_F16, 1);
    ZT_CHECK(isinf(y[0]));
    zg_comm_from_f32(h, ZG_BF16, x, 6);
    zg_comm_to_f32(y, h, ZG_BF16, 6);
    ZT_CHECK(y[0] == 1.0f && y[1] == -2.5f && y[5] == 0.0f);
    ZT_NEAR(y[4], 3.140625, 0, 1e-6);
    float t = 257.0f; /* tie between 256 and 258: to even (256) */
    zg_comm_from_f32(h, ZG_BF16, &t, 1);
    zg_comm_to_f32(y, h, ZG_BF16, 1);
    ZT_CHECK(y[0] == 256.0f);
}

static void test_all_reduce(void) {
    int W = C->size;
    for (int d = 0; d < 3; d++)
        for (size_t si = 0; si < sizeof SIZES / sizeof SIZES[0]; si++) {
            size_t n = SIZES[si];
            float *x = zg_malloc(n * 4), *y = zg_malloc(n * 4);
            for (size_t i = 0; i < n; i++) x[i] = val(C->rank, i);
            void *a = buf_from(x, DTS[d], n), *b = zg_malloc(n * zg_dtype_size(DTS[d]));
            zg_comm_all_reduce(C, a, b, n, DTS[d], ZG_COMM_SUM); /* out of place */
            zg_comm_all_reduce(C, a, a, n, DTS[d], ZG_COMM_MAX); /* in place */
            buf_to(y, b, DTS[d], n);
            int bad = 0;
            for (size_t i = 0; i < n; i++) {
                float s = 0;
                for (int r = 0; r < W; r++) s += val(r, i);
                bad += y[i] != s;
            }
            buf_to(y, a, DTS[d], n);
            for (size_t i = 0; i < n; i++) bad += y[i] != val(W - 1, i);
            ZT_CHECK_MSG(bad == 0, "all_reduce %s n=%zu: %d wrong", zg_dtype_name(DTS[d]), n, bad);
            free(x);
            free(y);
            free(a);
            free(b);
        }
}

static void test_low_precision_accumulates_in_f32(void) {
    /* rank 0 contributes 256, the others 1: pairwise bf16 sums would stay at 256 */
    int W = C->size;
    float x = C->rank == 0 ? 256.0f : 1.0f, y, expect_f = 256.0f + (float)(W - 1), expect;
    uint16_t h, e;
    zg_comm_from_f32(&h, ZG_BF16, &x, 1);
    zg_comm_all_reduce(C, &h, &h, 1, ZG_BF16, ZG_COMM_SUM);
    zg_comm_to_f32(&y, &h, ZG_BF16, 1);
    zg_comm_from_f32(&e, ZG_BF16, &expect_f, 1);
    zg_comm_to_f32(&expect, &e, ZG_BF16, 1);
    ZT_CHECK_MSG(y == expect, "bf16 sum %g, expected %g", y, expect);
}

static void test_reduce(void) {
    int W = C->size;
    for (int d = 0; d < 3; d++)
        for (int root = 0; root < W; root++) {
            size_t n = 1003;
            float *x = zg_malloc(n * 4), *y = zg_malloc(n * 4);
            for (size_t i = 0; i < n; i++) x[i] = val(C->rank, i);
            void *a = buf_from(x, DTS[d], n);
            zg_comm_reduce(C, a, a, n, DTS[d], ZG_COMM_SUM, root); /* in place */
            buf_to(y, a, DTS[d], n);
            int bad = 0;
            for (size_t i = 0; i < n; i++) {
                float s = 0;
                for (int r = 0; r < W; r++) s += val(r, i);
                bad += C->rank == root ? y[i] != s : y[i] != x[i]; /* non-roots keep their input */
            }
            ZT_CHECK_MSG(bad == 0, "reduce %s root %d: %d wrong", zg_dtype_name(DTS[d]), root, bad);
            free(x);
            free(y);
            free(a);
        }
}

static void test_reduce_scatter(void) {
    int W = C->size;
    for (int d = 0; d < 3; d++)
        for (size_t count = 1; count < 40; count += 13) {
            size_t n = count * (size_t)W;
            float *x = zg_malloc(n * 4), *y = zg_malloc(count * 4);
            for (size_t i = 0; i < n; i++) x[i] = val(C->rank, i);
            void *a = buf_from(x, DTS[d], n), *b = zg_malloc(count * zg_dtype_size(DTS[d]));
            zg_comm_reduce_scatter(C, a, b, count, DTS[d]);
            buf_to(y, b, DTS[d], count);
            int bad = 0;
            for (size_t i = 0; i < count; i++) {
                float s = 0;
                for (int r = 0; r < W; r++) s += val(r, (size_t)C->rank * count + i);
                bad += y[i] != s;
            }
            ZT_CHECK_MSG(bad == 0, "reduce_scatter %s count %zu: %d wrong", zg_dtype_name(DTS[d]), count, bad);
            free(x);
            free(y);
            free(a);
            free(b);
        }
}

static void test_all_gather_broadcast(void) {
    int W = C->size;
    for (int d = 0; d < 3; d++) {
        size_t count = 17, es = zg_dtype_size(DTS[d]);
        float *x = zg_malloc(count * (size_t)W * 4), *y = zg_malloc(count * (size_t)W * 4);
        for (size_t i = 0; i < count; i++) x[i] = val(C->rank, i);
        void *mine = buf_from(x, DTS[d], count);
        char *all = zg_calloc(count * (size_t)W, es);
        zg_comm_all_gather(C, mine, all, count, DTS[d]);
        buf_to(y, all, DTS[d], count * (size_t)W);
        int bad = 0;
        for (int r = 0; r < W; r++)
            for (size_t i = 0; i < count; i++) bad += y[(size_t)r * count + i] != val(r, i);
        /* in place: this rank's slice already sits in the output */
        memset(all, 0, count * (size_t)W * es);
        memcpy(all + (size_t)C->rank * count * es, mine, count * es);
        zg_comm_all_gather(C, all + (size_t)C->rank * count * es, all, count, DTS[d]);
        buf_to(y, all, DTS[d], count * (size_t)W);
        for (int r = 0; r < W; r++)
            for (size_t i = 0; i < count; i++) bad += y[(size_t)r * count + i] != val(r, i);
        ZT_CHECK_MSG(bad == 0, "all_gather %s: %d wrong", zg_dtype_name(DTS[d]), bad);
        for (int root = 0; root < W; root++) {
            void *b = buf_from(x, DTS[d], count); /* x = this rank's values */
            zg_comm_broadcast(C, b, count, DTS[d], root);
            buf_to(y, b, DTS[d], count);
            int bb = 0;
            for (size_t i = 0; i < count; i++) bb += y[i] != val(root, i);
            ZT_CHECK_MSG(bb == 0, "broadcast %s from %d: %d wrong", zg_dtype_name(DTS[d]), root, bb);
            free(b);
        }
        free(x);
        free(y);
        free(mine);
        free(all);
    }
}

static void test_async_and_host(void) {
    int W = C->size;
    enum { K = 5 };
    size_t n = 257;
    float *bufs[K];
    zg_comm_req *reqs[K];
    for (int k = 0; k < K; k++) {
        bufs[k] = zg_malloc(n * 4);
        for (size_t i = 0; i < n; i++) bufs[k][i] = val(C->rank, i + (size_t)k);
        reqs[k] = zg_comm_iall_reduce(C, bufs[k], bufs[k], n, ZG_F32, ZG_COMM_SUM);
    }
    long spins = 0; /* test() completes the oldest without blocking (and keeps the handle valid) */
    while (!zg_comm_test(C, reqs[0]) && spins < 100000000) spins++;
    ZT_CHECK(zg_comm_test(C, reqs[0]) == 1);
    for (int k = K - 1; k >= 0; k--) zg_comm_wait(C, reqs[k]); /* any wait order */
    int bad = 0;
    for (int k = 0; k < K; k++) {
        for (size_t i = 0; i < n; i++) {
            float s = 0;
            for (int r = 0; r < W; r++) s += val(r, i + (size_t)k);
            bad += bufs[k][i] != s;
        }
        free(bufs[k]);
    }
    ZT_CHECK(bad == 0);
    zg_comm_barrier(C);
    double v[2] = {C->rank + 0.5, -(double)C->rank};
    zg_comm_all_reduce_host_f64(C, v, 2, ZG_COMM_SUM);
    ZT_NEAR(v[0], W * (W - 1) / 2.0 + 0.5 * W, 1e-12, 0);
    double m = C->rank;
    zg_comm_all_reduce_host_f64(C, &m, 1, ZG_COMM_MAX);
    ZT_CHECK(m == W - 1);
    ZT_CHECK(zg_comm_any(C, C->rank == W - 1) == 1);
    ZT_CHECK(zg_comm_any(C, 0) == 0);
    char msg[32] = {0};
    if (C->rank == W - 1) snprintf(msg, sizeof msg, "from the last rank");
    zg_comm_broadcast_host(C, msg, sizeof msg, W - 1);
    ZT_CHECK(strcmp(msg, "from the last rank") == 0);
    int mine[3] = {C->rank, 7 * C->rank + 1, -C->rank}, *all = zg_malloc(sizeof mine * (size_t)W);
    zg_comm_all_gather_host(C, mine, all, sizeof mine);
    bad = 0;
    for (int r = 0; r < W; r++) bad += all[3 * r] != r || all[3 * r + 1] != 7 * r + 1 || all[3 * r + 2] != -r;
    ZT_CHECK(bad == 0);
    free(all);
    ZT_CHECK(C->scratch_bytes == 0); /* every 16-bit scratch buffer was released */
}

static void test_env_detect(void) {
    zg_launch_env e;
    zg_launch_env_detect(&e);
    ZT_CHECK(e.size == C->size && e.rank == C->rank);
    int g = 0;
    ZT_CHECK(zg_launch_parse_gpus("all", &g) == 0 && g == -1);
    ZT_CHECK(zg_launch_parse_gpus("4", &g) == 0 && g == 4);
    ZT_CHECK(zg_launch_parse_gpus("0", &g) == -1);
    ZT_CHECK(zg_launch_parse_gpus("x", &g) == -1);
}

static int arg_int(int argc, char **argv, const char *name, int def) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return atoi(argv[i + 1]);
    return def;
}
static int has_arg(int argc, char **argv, const char *name) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    zg_launch_opts lo = {0};
    lo.nproc = arg_int(argc, argv, "--nproc", 0);
    lo.grace_s = 2;
    int is_parent = 0;
    int lrc = zg_launch_maybe(argc - 1, argv + 1, &lo, &is_parent); /* workers get our arguments */
    if (is_parent || lrc != 0) {
        if (lrc < 0) zg_error_print();
        return lrc < 0 ? 1 : lrc;
    }
    int die = arg_int(argc, argv, "--die", -1), kill_rank = arg_int(argc, argv, "--kill", -1);
    int hang = arg_int(argc, argv, "--hang", -1);
    zg_launch_env env;
    zg_launch_env_detect(&env);
    if (has_arg(argc, argv, "--fork-die")) { /* forked workers without a communicator */
        int r = arg_int(argc, argv, "--fork-die", 1);
        if (env.rank == r) {
            fprintf(stderr, "zgpt[rank %d]: error: worker %d failing on purpose\n", r, r);
            return 3;
        }
        sleep(60);
        return 0;
    }
    if (has_arg(argc, argv, "--sleep")) {
        printf("rank %d sleeping\n", env.rank);
        fflush(stdout);
        sleep(60);
        return 0;
    }
    zg_comm_config cc = {.backend = "auto"};
    if (zg_comm_create(&C, &cc) != 0) {
        zg_error_print();
        return 1;
    }
    if (die >= 0 || kill_rank >= 0 || hang >= 0) {
        zg_comm_barrier(C);
        if (C->rank == die) {
            fprintf(stderr, "zgpt[rank %d]: error: rank %d dying on purpose\n", C->rank, C->rank);
            exit(3);
        }
        if (C->rank == kill_rank) raise(SIGKILL);
        if (C->rank == hang) {
            sleep(120);
            return 0;
        }
        float x = 1;
        zg_comm_all_reduce(C, &x, &x, 1, ZG_F32, ZG_COMM_SUM);
        zg_comm_barrier(C);
        fprintf(stderr, "rank %d: the collective completed although a rank is gone\n", C->rank);
        return 0;
    }
    if (C->rank == 0) printf("test_comm: %d rank(s), %s communicator\n", C->size, C->ops->name);
    zt_run("conversions", test_conversions);
    zt_run("all_reduce", test_all_reduce);
    zt_run("low_precision_f32_accumulation", test_low_precision_accumulates_in_f32);
    zt_run("reduce", test_reduce);
    zt_run("reduce_scatter", test_reduce_scatter);
    zt_run("all_gather_broadcast", test_all_gather_broadcast);
    zt_run("async_and_host", test_async_and_host);
    zt_run("env_detect", test_env_detect);
    int any = zg_comm_any(C, zt.failures != 0);
    int rc = zt_finish();
    zg_comm_destroy(C);
    return any ? 1 : rc;
}
