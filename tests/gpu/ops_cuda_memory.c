/* gpu_test_ops_cuda, casts, upload/download, the allocator's accounting and pinned host copies. */
#include "ops_cuda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- casts, upload/download ------------------------------------------------------------------ */

void oc_test_casts(void) {
    for (int di = 0; di < 3; di++) {
        zg_backend *be = oc_be[di];
        size_t n = 1000003;
        float *h = malloc(n * 4), *back;
        for (size_t i = 0; i < n; i++) h[i] = 3.f * zt_rand_uniform(&oc_rng);
        for (int s = 0; s < 3; s++) {
            zg_dtype st = (zg_dtype)s;
            void *d = be->ops->alloc(be, n * 4, "cast src");
            be->ops->upload_f32(be, d, st, h, n);
            back = oc_dl(be, d, st, n);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                float want = st == ZG_F32 ? h[i]
                                          : (st == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(h[i]))
                                                           : zg_f16_to_f32(zg_f32_to_f16(h[i])));
                if (back[i] != want) bad++;
            }
            ZT_CHECK_MSG(bad == 0, "upload_f32/download_f32 %s: %zu of %zu differ from host rounding", oc_dt_name(st),
                         bad, n);
            for (int t = 0; t < 3; t++) {
                zg_dtype tt = (zg_dtype)t;
                void *o = oc_dev_nan(be, tt, n);
                be->ops->cast(be, o, tt, d, st, n);
                float *c = oc_dl(be, o, tt, n);
                size_t bad2 = 0;
                for (size_t i = 0; i < n; i++) {
                    float want = tt == ZG_F32 ? back[i]
                                              : (tt == ZG_BF16 ? zg_bf16_to_f32(zg_f32_to_bf16(back[i]))
                                                               : zg_f16_to_f32(zg_f32_to_f16(back[i])));
                    if (c[i] != want) bad2++;
                }
                ZT_CHECK_MSG(bad2 == 0, "cast %s -> %s: %zu of %zu wrong", oc_dt_name(st), oc_dt_name(tt), bad2, n);
                free(c);
                be->ops->dealloc(be, o);
            }
            free(back);
            be->ops->dealloc(be, d);
        }
        free(h);
    }
    printf("  casts and fp32 transfers: exact against host rounding\n");
}

void oc_test_memory(void) {
    zg_backend *be = oc_be[1];
    size_t before = be->bytes_in_use;
    void *p = be->ops->alloc(be, 1 << 20, "a 1 MiB test buffer");
    ZT_CHECK(p != NULL);
    ZT_CHECK(be->bytes_in_use == before + (1 << 20));
    ZT_CHECK(be->bytes_peak >= be->bytes_in_use);
    be->ops->dealloc(be, p);
    ZT_CHECK(be->bytes_in_use == before);
    /* an impossible allocation fails with a message naming what and the advice */
    void *q = be->ops->alloc(be, (size_t)1 << 50, "the impossible test buffer");
    ZT_CHECK(q == NULL);
    const char *msg = zg_error_message();
    printf("  OOM message: %s\n", msg);
    ZT_CHECK(strstr(msg, "the impossible test buffer") != NULL);
    ZT_CHECK(strstr(msg, "micro-batch") != NULL);
    ZT_CHECK(be->bytes_in_use == before);
    /* the backend still works afterwards */
    void *r = be->ops->alloc(be, 4096, "after OOM");
    ZT_CHECK(r != NULL);
    be->ops->zero(be, r, 4096);
    be->ops->synchronize(be);
    be->ops->dealloc(be, r);
}

/* Host staging memory, the copy stream and events: a D2H copy ordered after a compute-stream op sees
 * its result; an H2D copy that the compute stream waits for is seen by the next op; pinned and plain
 * host blocks are counted and released. n floats: 16 MiB (cudaHostAlloc) and 80 MiB (from 64 MiB up a
 * registered huge-page mapping, backend/host_pages.h): both page-locked for the driver. */
static void host_copies(size_t n) {
    zg_backend *be = oc_be[0];
    size_t host0 = be->host_bytes_in_use;
    float *hp = be->ops->host_alloc(be, n * 4, 1, "a pinned test block");
    float *hq = be->ops->host_alloc(be, n * 4, 0, "a plain test block");
    ZT_CHECK(hp != NULL && hq != NULL && ((uintptr_t)hp % 64) == 0);
    struct cudaPointerAttributes attr;
    ZT_CHECK(cudaPointerGetAttributes(&attr, hp) == cudaSuccess && attr.type == cudaMemoryTypeHost);
    ZT_CHECK(cudaPointerGetAttributes(&attr, hp + n - 1) == cudaSuccess && attr.type == cudaMemoryTypeHost);
    ZT_CHECK(be->host_bytes_in_use == host0 + 2 * n * 4 && be->host_bytes_peak >= be->host_bytes_in_use);
    for (size_t i = 0; i < n; i++) hq[i] = (float)(i % 1000);
    float *d = be->ops->alloc(be, n * 4, "copy test");
    be->ops->upload(be, d, hq, n * 4);
    zg_event *computed = be->ops->event_create(be), *copied = be->ops->event_create(be);
    be->ops->scale(be, d, ZG_F32, n, 2.0f); /* queued on the compute stream */
    be->ops->event_record(be, computed, ZG_STREAM_COMPUTE);
    be->ops->stream_wait(be, ZG_STREAM_COPY, computed);
    be->ops->copy_async(be, hp, d, n * 4, ZG_COPY_D2H);
    be->ops->event_record(be, copied, ZG_STREAM_COPY);
    be->ops->event_synchronize(be, copied);
    ZT_CHECK(be->ops->event_query(be, copied) == 1);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += hp[i] != 2.0f * (float)(i % 1000);
    ZT_CHECK_MSG(bad == 0, "%zu of %zu elements of the D2H copy missed the scale before it", bad, n);
    /* H2D on the copy stream, then the compute stream waits and scales it */
    for (size_t i = 0; i < n; i++) hp[i] = 1.0f;
    be->ops->copy_async(be, d, hp, n * 4, ZG_COPY_H2D);
    be->ops->event_record(be, copied, ZG_STREAM_COPY);
    be->ops->stream_wait(be, ZG_STREAM_COMPUTE, copied);
    be->ops->scale(be, d, ZG_F32, n, 3.0f);
    be->ops->download(be, hq, d, n * 4);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += hq[i] != 3.0f;
    ZT_CHECK_MSG(bad == 0, "%zu of %zu elements: the compute stream did not wait for the H2D copy", bad, n);
    be->ops->event_destroy(be, computed);
    be->ops->event_destroy(be, copied);
    be->ops->dealloc(be, d);
    be->ops->host_free(be, hp);
    be->ops->host_free(be, hq);
    ZT_CHECK(be->host_bytes_in_use == host0);
}

void oc_test_host_copies(void) {
    host_copies((size_t)4 << 20);  /* 16 MiB: long enough that an unordered copy would race */
    host_copies((size_t)20 << 20); /* 80 MiB */
}
