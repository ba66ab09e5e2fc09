/* gpu_test_ops_cuda, the sample op against the CPU's, with every sampler, and a bad ZGPT_SAMPLE refused. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- generation: the sample op against the CPU's, decode attention, decode_advance under a graph ---- */

/* The CUDA sample op's ids against the CPU op's on the same logits (the device's rounded values), for
 * the 9 rows at once (B=9), the first 8 (B=8) and each row alone (B=1), over many counters, with each
 * sampler: the cluster kernel with the binned top-p (ZGPT_SAMPLE=cluster; sm_90+, else the one-block
 * kernel runs), with and without PDL, the cluster kernel with v0.13's radix top-p (cluster-v13), the
 * one-block kernel with the row's z staged in shared memory (ZGPT_DECODE=new) and the one reading the
 * logits on every pass (old). */
enum { SAMPLE_B = 9, SAMPLE_V = 50257, SAMPLE_VP = 50304 };
static void sample_check(const char *what, const zg_sample_row *rows, const float *lg, int counters) {
    enum { B = SAMPLE_B, V = SAMPLE_V, Vp = SAMPLE_VP };
    zg_backend *cpu;
    zg_backend_config cc = {"cpu", -1, ZG_F32};
    ZT_CHECK(zg_backend_cpu_create(&cpu, &cc) == 0);
    static const struct {
        const char *sample, *decode, *pdl;
    } var[] = {{"cluster", "new", NULL},
               {"cluster", "new", "0"},
               {"cluster-v13", "new", NULL},
               {"block", "new", NULL},
               {"block", "old", NULL}};
    for (int vi = 0; vi < (int)(sizeof var / sizeof var[0]) * 3; vi++) {
        int di = vi % 3, k = vi / 3;
        setenv("ZGPT_SAMPLE", var[k].sample, 1);
        setenv("ZGPT_DECODE", var[k].decode, 1);
        if (var[k].pdl)
            setenv("ZGPT_PDL", var[k].pdl, 1);
        else
            unsetenv("ZGPT_PDL");
        zg_backend *be = oc_be[di];
        zg_dtype dt = be->act_dtype;
        size_t es = dt == ZG_F32 ? 4 : 2;
        void *dlg = be->ops->alloc(be, (size_t)B * Vp * es, "logits");
        be->ops->upload_f32(be, dlg, dt, lg, (size_t)B * Vp);
        float *hl = oc_dl(be, dlg, dt, (size_t)B * Vp); /* what the device holds */
        zg_sample_row *drows = be->ops->alloc(be, B * sizeof *rows, "rows");
        be->ops->upload(be, drows, rows, B * sizeof *rows);
        int32_t *dids = be->ops->alloc(be, B * sizeof(int32_t), "ids"), *dctr = be->ops->alloc(be, 4, "counter");
        int mismatches = 0, distinct = 0;
        for (int c = 0; c < counters; c++) {
            int32_t gpu[B], one[B], eight[B], ref[B], prev[B];
            be->ops->upload(be, dctr, &c, 4);
            be->ops->sample(be, dids, dlg, drows, dctr, B, V, Vp);
            be->ops->download(be, gpu, dids, sizeof gpu);
            for (int b = 0; b < B; b++) /* each row alone: B = 1 */
                be->ops->sample(be, dids + b, (char *)dlg + (size_t)b * Vp * es, drows + b, dctr, 1, V, Vp);
            be->ops->download(be, one, dids, sizeof one);
            be->ops->sample(be, dids, dlg, drows, dctr, 8, V, Vp); /* the first 8 rows: B = 8 */
            be->ops->download(be, eight, dids, 8 * sizeof(int32_t));
            eight[B - 1] = one[B - 1];
            cpu->ops->sample(cpu, ref, hl, rows, &c, B, V, Vp);
            for (int b = 0; b < B; b++) {
                if ((gpu[b] != ref[b] || one[b] != ref[b] || eight[b] != ref[b]) && mismatches++ < 5)
                    fprintf(stderr, "  %s %s row %d counter %d: cuda B=9 %d, B=1 %d, B=8 %d; cpu %d\n", what,
                            oc_dt_name(dt), b, c, gpu[b], one[b], eight[b], ref[b]);
                if (c > 0) distinct += gpu[b] != prev[b];
                prev[b] = gpu[b];
            }
        }
        ZT_CHECK_MSG(mismatches == 0,
                     "%s %s ZGPT_SAMPLE=%s ZGPT_DECODE=%s ZGPT_PDL=%s: %d of %d token ids differ from the CPU op", what,
                     oc_dt_name(dt), var[k].sample, var[k].decode, var[k].pdl ? var[k].pdl : "(unset)", mismatches,
                     B * counters);
        ZT_CHECK(distinct > counters); /* sampled rows do move with the counter */
        free(hl);
        be->ops->dealloc(be, dlg);
        be->ops->dealloc(be, drows);
        be->ops->dealloc(be, dids);
        be->ops->dealloc(be, dctr);
    }
    unsetenv("ZGPT_SAMPLE");
    unsetenv("ZGPT_PDL");
    setenv("ZGPT_DECODE", "new", 1); /* the tests' setting (main) */
    zg_backend_destroy(cpu);
}

/* greedy, top-k (with many ties: radix selection down to the id bits), top-p, both, and temperatures */
void oc_test_sample(void) {
    enum { B = SAMPLE_B, V = SAMPLE_V, Vp = SAMPLE_VP };
    /* inv_temperature, top_k, top_p, seed */
    zg_sample_row rows[B] = {
        {0.0f, 0, 1.0f, 0, 11},       {1.0f, 1, 1.0f, 0, 12},   {1.25f, 200, 1.0f, 0, 13},
        {1.0f, 0, 0.9f, 0, 14},       {0.77f, 50, 0.8f, 0, 15}, {1.0f, 0, 1.0f, 0, 16},
        {1.43f, V + 10, 1.0f, 0, 17}, {1.0f, 3, 0.01f, 0, 18},  {1.0f, 1000, 0.95f, 0, 1ull << 40}};
    float *lg = malloc((size_t)B * Vp * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Vp; i++) {
            float x = 4.0f * zt_rand_uniform(&oc_rng);
            if (b == 2 || b == 8) x = roundf(x * 4.0f) / 4.0f; /* 33 distinct values: ties everywhere */
            if (b == 5) x = 0.5f;                              /* all equal */
            lg[(size_t)b * Vp + i] = x;
        }
    sample_check("sample", rows, lg, 40);
    free(lg);
}

/* top-p (the cluster kernel's binned rounds: their bins, the span of d, the crossing d's ties in id
 * order) at p 0.1, 0.5, 0.9, 0.95 and 1.0, alone and under top-k, at T 0.7 and 1.0, over logits like
 * the bench's (uniform, rounded to the activation dtype: ties at every value), GPT-2's (negative, skewed),
 * coarse ties, all equal, and a few tied leaders; three draws of the rows' logit kinds, 16 counters each. */
void oc_test_sample_top_p(void) {
    enum { B = SAMPLE_B, Vp = SAMPLE_VP };
    zg_sample_row rows[B] = {{1.0f, 0, 0.1f, 0, 21},         {1.0f / 0.7f, 0, 0.5f, 0, 22}, {1.0f, 0, 0.9f, 0, 23},
                             {1.0f / 0.7f, 0, 0.95f, 0, 24}, {1.0f, 0, 1.0f, 0, 25},        {1.0f, 200, 0.9f, 0, 26},
                             {1.0f / 0.7f, 50, 0.5f, 0, 27}, {1.0f, 0, 0.9f, 0, 28},        {1.0f, 1000, 0.95f, 0, 29}};
    float *lg = malloc((size_t)B * Vp * sizeof(float));
    for (int trial = 0; trial < 3; trial++) {
        for (int b = 0; b < B; b++) {
            int kind = (b + trial) % 6;
            for (int i = 0; i < Vp; i++) {
                float u = zt_rand_uniform(&oc_rng), x = 3.0f * u;    /* kind 0: the bench's logits */
                if (kind == 1) x = -60.0f + 3.0f * u + 2.0f * u * u; /* GPT-2-like */
                if (kind == 2) x = roundf(16.0f * u) / 4.0f;         /* 33 values */
                if (kind == 3) x = 0.5f;                             /* all equal */
                if (kind == 4) x = i % 5 == 0 ? 6.0f : 4.0f * u;     /* a fifth of the ids tied in the lead */
                if (kind == 5) x = 1e-3f * u;                        /* across zero */
                lg[(size_t)b * Vp + i] = x;
            }
        }
        sample_check("sample top-p", rows, lg, 16);
    }
    free(lg);
}

/* ZGPT_SAMPLE naming no sampler: the sample op stops the process with one line naming the value (exit
 * 1) instead of running some sampler. In a child forked before this process touches CUDA (a child must
 * not use a context its parent made), which makes its own backend. */
void oc_test_sample_bad_env(void) {
    int fds[2];
    ZT_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    ZT_CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        setenv("ZGPT_SAMPLE", "clutser", 1);
        zg_backend *be = NULL;
        zg_backend_config cfg = {"cuda", -1, ZG_BF16};
        if (zg_backend_cuda_create(&be, &cfg) != 0) _exit(3);
        zg_sample_row row = {1.0f, 0, 0.9f, 0, 1};
        void *lg = be->ops->alloc(be, 64 * 2, "logits");
        zg_sample_row *drow = be->ops->alloc(be, sizeof row, "rows");
        int32_t *ids = be->ops->alloc(be, 8, "ids"), *ctr = be->ops->alloc(be, 8, "counter");
        be->ops->upload(be, drow, &row, sizeof row);
        be->ops->sample(be, ids, lg, drow, ctr, 1, 50, 64);
        _exit(0); /* ran a sampler: the parent's checks fail */
    }
    close(fds[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t got;
    while (n < sizeof buf - 1 && (got = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)got;
    buf[n] = 0;
    close(fds[0]);
    int st = 0;
    ZT_CHECK(waitpid(pid, &st, 0) == pid);
    ZT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "ZGPT_SAMPLE=clutser: status %d, stderr: %s", st, buf);
    const char *line = strstr(buf, "ZGPT_SAMPLE=clutser");
    ZT_CHECK_MSG(line != NULL && strstr(line, "block, cluster or cluster-v13") != NULL &&
                     strchr(line, '\n') == strrchr(buf, '\n'),
                 "ZGPT_SAMPLE=clutser: not refused in one line naming it: %s", buf);
}

/* Vocabularies smaller than the multi-block sampler's blocks per row (blocks with no ids, one id each)
 * and a few hundred: the CUDA op's ids are the CPU's, both samplers. */
void oc_test_sample_small(void) {
    zg_backend *cpu;
    zg_backend_config cc = {"cpu", -1, ZG_F32};
    ZT_CHECK(zg_backend_cpu_create(&cpu, &cc) == 0);
    enum { B = 4, COUNTERS = 25 };
    zg_sample_row rows[B] = {
        {0.0f, 0, 1.0f, 0, 3}, {1.0f, 3, 1.0f, 0, 4}, {0.8f, 0, 0.7f, 0, 5}, {1.3f, 0, 1.0f, 0, 6}};
    static const int Vs[][2] = {{1, 8}, {7, 8}, {13, 16}, {300, 304}};
    static const char *const samplers[2] = {"cluster", "block"};
    zg_backend *be = oc_be[1];
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++)
        for (int si = 0; si < 2; si++) {
            setenv("ZGPT_SAMPLE", samplers[si], 1);
            int V = Vs[vi][0], Vp = Vs[vi][1], mismatches = 0;
            float *lg = malloc((size_t)B * Vp * sizeof(float));
            for (int i = 0; i < B * Vp; i++) lg[i] = roundf(8.0f * zt_rand_uniform(&oc_rng)) / 4.0f;
            void *dlg = be->ops->alloc(be, (size_t)B * Vp * 2, "logits");
            be->ops->upload_f32(be, dlg, ZG_BF16, lg, (size_t)B * Vp);
            float *hl = oc_dl(be, dlg, ZG_BF16, (size_t)B * Vp);
            zg_sample_row *drows = be->ops->alloc(be, sizeof rows, "rows");
            be->ops->upload(be, drows, rows, sizeof rows);
            int32_t *dids = be->ops->alloc(be, sizeof(int32_t) * B, "ids"), *dctr = be->ops->alloc(be, 4, "counter");
            for (int c = 0; c < COUNTERS; c++) {
                int32_t gpu[B], ref[B];
                be->ops->upload(be, dctr, &c, 4);
                be->ops->sample(be, dids, dlg, drows, dctr, B, V, Vp);
                be->ops->download(be, gpu, dids, sizeof gpu);
                cpu->ops->sample(cpu, ref, hl, rows, &c, B, V, Vp);
                for (int b = 0; b < B; b++) mismatches += gpu[b] != ref[b] || gpu[b] < 0 || gpu[b] >= V;
            }
            ZT_CHECK_MSG(mismatches == 0, "sample V=%d ZGPT_SAMPLE=%s: %d of %d ids differ from the CPU op", V,
                         samplers[si], mismatches, B * COUNTERS);
            free(lg);
            free(hl);
            void *ptrs[] = {dlg, drows, dids, dctr};
            for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++) be->ops->dealloc(be, ptrs[k]);
        }
    unsetenv("ZGPT_SAMPLE");
    zg_backend_destroy(cpu);
}
