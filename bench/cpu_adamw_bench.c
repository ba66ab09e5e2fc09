/* The CPU AdamW (zg_host_adamw: the CPU backend's update and ZeRO-Offload's) over N parameters, against
 * the host's memory bandwidth measured in the same process.
 * usage: cpu_adamw_bench [N=1558611200 (GPT-2 XL)] [reps=7]. Threads: OMP_NUM_THREADS (default all).
 * Two updates: fp32 parameters and gradients (the CPU backend's training step; p, m, v read and written,
 * g read: 28 B per parameter), and ZeRO-Offload's mixed-precision one (fp32 master, m, v read and
 * written, fp16 gradients read, fp16 parameters written: 28 B per parameter). Prints the median seconds
 * per update, parameters/s, GB/s, and that rate as a share of a copy's and of a STREAM triad's
 * bandwidth (a[i] = b[i] + s * c[i], 12 B per element as STREAM counts it). Built by
 * bench/cpu_adamw_bench.sh. The arrays are what ZeRO-Offload's host buffers are on CUDA (backend_cuda.cu's
 * host_alloc from 64 MiB): huge-page mappings (src/backend/host_pages.c), touched by all threads;
 * ZG_BENCH_MALLOC=1 takes malloc's 4 KiB pages instead (the v0.12 bench), for the comparison. A third
 * update times ZeRO-Offload's host Lamb (the same dtypes) in tensor-sized segments. */
#include "backend/backend.h"
#include "core/clock.h"
#include "backend/host_pages.h"
#include "core/error.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* n bytes of the kind the header comment says; NULL when refused */
static void *bench_alloc(size_t bytes, int use_malloc) { return use_malloc ? malloc(bytes) : zg_host_pages_map(bytes); }
static void bench_free(void *p, size_t bytes, int use_malloc) {
    if (!p) return;
    if (use_malloc)
        free(p);
    else
        zg_host_pages_unmap(p, bytes);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1558611200ull;
    int reps = argc > 2 ? atoi(argv[2]) : 7;
    if (n == 0 || reps < 1) return fprintf(stderr, "usage: cpu_adamw_bench [N >= 1] [reps >= 1]\n"), 2;
    zg_backend *be;
    zg_backend_config bc = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&be, &bc) != 0) return zg_error_print(), 1;
    const char *mv = getenv("ZG_BENCH_MALLOC");
    int um = mv != NULL && strcmp(mv, "1") == 0;
    printf("arrays: %s\n",
           um ? "malloc (4 KiB pages)" : "huge-page mappings (host_pages, as ZeRO-Offload's host buffers)");
    float *p = bench_alloc(n * 4, um), *g = bench_alloc(n * 4, um), *m = bench_alloc(n * 4, um),
          *v = bench_alloc(n * 4, um);
    if (!p || !g || !m || !v) return fprintf(stderr, "out of memory for %zu parameters\n", n), 1;
#pragma omp parallel for schedule(static) /* first touch by the threads that update them */
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)(i % 1000) * 1e-3f - 0.5f;
        g[i] = (float)(i % 777) * 1e-4f - 0.03f;
        m[i] = 0.0f;
        v[i] = 0.0f;
    }
    zg_segment seg = {0, n, 0.1f};
    zg_adamw_args a = {.param = p,
                       .grad = g,
                       .m = m,
                       .v = v,
                       .segs = &seg,
                       .n_segs = 1,
                       .lr = 1e-4f,
                       .beta1 = 0.9f,
                       .beta2 = 0.95f,
                       .eps = 1e-8f,
                       .grad_scale = 1.0f};
    double *t = malloc(sizeof(double) * (size_t)reps), *tc = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r <= reps; r++) { /* r = 0: warm-up */
        a.step = r + 1;
        double t0 = zg_now_s();
        be->ops->adamw(be, &a);
        if (r > 0) t[r - 1] = zg_now_s() - t0;
    }
    /* ZeRO-Offload's update: fp32 master (p), m, v; fp16 gradients in, fp16 parameters out */
    uint16_t *g16 = bench_alloc(n * 2, um), *p16 = bench_alloc(n * 2, um);
    double *to = malloc(sizeof(double) * (size_t)reps), *tt = malloc(sizeof(double) * (size_t)reps);
    if (!g16 || !p16 || !to || !tt) return fprintf(stderr, "out of memory for %zu parameters\n", n), 1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        g16[i] = zg_f32_to_f16(g[i]);
        p16[i] = 0;
    }
    zg_adamw_args ao = a;
    ao.master = p;
    ao.param = p16;
    ao.grad = g16;
    for (int r = 0; r <= reps; r++) {
        ao.step = r + 1;
        double t0 = zg_now_s();
        zg_host_adamw(&ao, ZG_F16, ZG_F16);
        if (r > 0) to[r - 1] = zg_now_s() - t0;
    }
    /* ZeRO-Offload's Lamb on the same arrays, in tensor-sized segments (8 Mi elements, about GPT-2 XL's
     * 1600 x 6400 matrices): two passes, 22 + 18 B per parameter (pass 1: master, m, v read, m, v
     * written, fp16 gradient read; pass 2: master, m, v read, master and fp16 parameter written) */
    enum { LAMB_SEG = 8 << 20 };
    int n_lseg = (int)((n + LAMB_SEG - 1) / LAMB_SEG);
    zg_segment *lsegs = malloc(sizeof *lsegs * (size_t)n_lseg);
    double *tl = malloc(sizeof(double) * (size_t)reps);
    if (!lsegs || !tl) return fprintf(stderr, "out of memory for %zu parameters\n", n), 1;
    for (int i = 0; i < n_lseg; i++) {
        lsegs[i].offset = (size_t)i * LAMB_SEG;
        lsegs[i].count = n - lsegs[i].offset < LAMB_SEG ? n - lsegs[i].offset : LAMB_SEG;
        lsegs[i].weight_decay = 0.01f;
    }
    zg_adamw_args al = ao;
    al.segs = lsegs;
    al.n_segs = n_lseg;
    al.lamb = 1;
    al.max_coeff = 10.0f;
    al.min_coeff = 0.01f;
    for (int r = 0; r <= reps; r++) {
        al.step = r + 1;
        double t0 = zg_now_s();
        zg_host_adamw(&al, ZG_F16, ZG_F16);
        if (r > 0) tl[r - 1] = zg_now_s() - t0;
    }
    /* STREAM's triad over the same arrays */
    for (int r = 0; r <= reps; r++) {
        double t0 = zg_now_s();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) m[i] = p[i] + 3.0f * g[i];
        if (r > 0) tt[r - 1] = zg_now_s() - t0;
    }
    /* the ceiling: a parallel copy of the same bytes (read + write), as a STREAM copy measures it */
    for (int r = 0; r <= reps; r++) {
        double t0 = zg_now_s();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) m[i] = p[i];
        if (r > 0) tc[r - 1] = zg_now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    qsort(tc, (size_t)reps, sizeof *tc, cmp_d);
    qsort(to, (size_t)reps, sizeof *to, cmp_d);
    qsort(tt, (size_t)reps, sizeof *tt, cmp_d);
    qsort(tl, (size_t)reps, sizeof *tl, cmp_d);
    double s = t[reps / 2], sc = tc[reps / 2], so = to[reps / 2], st = tt[reps / 2], sl = tl[reps / 2];
    double bytes = 28.0 * (double)n, copy_bw = 8.0 * (double)n / sc, triad_bw = 12.0 * (double)n / st;
    printf("host memory bandwidth: copy %.1f GB/s, triad %.1f GB/s (%d threads, %zu floats)\n", copy_bw / 1e9,
           triad_bw / 1e9, omp_get_max_threads(), n);
    printf("cpu adamw: %zu parameters, %d threads: %.3f s per update (median of %d), %.3g parameters/s, %.1f GB/s "
           "(28 B/parameter) = %.0f%% of the copy bandwidth, %.0f%% of the triad's\n",
           n, omp_get_max_threads(), s, reps, (double)n / s, bytes / s / 1e9, 100.0 * (bytes / s) / copy_bw,
           100.0 * (bytes / s) / triad_bw);
    printf("offload adamw (fp32 master, fp16 grads -> fp16 params): %.3f s per update (median of %d), %.3g "
           "parameters/s, %.1f GB/s (28 B/parameter) = %.0f%% of the triad's bandwidth\n",
           so, reps, (double)n / so, bytes / so / 1e9, 100.0 * (bytes / so) / triad_bw);
    printf("offload lamb (fp32 master, fp16 grads -> fp16 params, %d segments): %.3f s per update (median of %d), "
           "%.3g parameters/s, %.1f GB/s (40 B/parameter over two passes) = %.0f%% of the triad's bandwidth\n",
           n_lseg, sl, reps, (double)n / sl, 40.0 * (double)n / sl / 1e9, 100.0 * (40.0 * (double)n / sl) / triad_bw);
    free(lsegs), free(tl);
    bench_free(p, n * 4, um), bench_free(g, n * 4, um), bench_free(m, n * 4, um), bench_free(v, n * 4, um);
    bench_free(g16, n * 2, um), bench_free(p16, n * 2, um);
    free(t), free(tc), free(to), free(tt);
    zg_backend_destroy(be);
    return 0;
}
