/* CUDA backend: device memory, the compute stream, casts, GELU and residual, the op table and
 * create/destroy. One op family per file beside it: encoder_cuda.cu, layernorm_cuda.cu (+ layernorm_backward_cuda.cu),
 * matmul_cuda.cu, attention_cuda.cu, classifier_cuda.cu, optimizer_cuda.cu; recorded graphs in graph_cuda.cu. */
#include "backend/cuda/cuda_internal.h"

extern "C" {
#include "backend/host_pages.h"
#include "core/meminfo.h"
#include "core/strutil.h"
}

#include <math.h>
#include <stdio.h>
#include <string.h>

#define ZGC_LT_WORKSPACE_MIB 32

/* ZGPT_LT_WS (A/B runs): cuBLASLt's workspace in MiB, 0-1024 (0: only algorithms without one); unset or empty:
 * ZGC_LT_WORKSPACE_MIB, the size cuBLAS's documentation recommends for Hopper. -1 for anything else. */
static int zgc_lt_ws_env(void) {
    const char *v = getenv("ZGPT_LT_WS");
    if (v == NULL || *v == '\0') return ZGC_LT_WORKSPACE_MIB;
    char *end = NULL;
    long mib = strtol(v, &end, 10);
    return end != v && *end == '\0' && mib >= 0 && mib <= 1024 ? (int)mib : -1;
}

/* ---- memory ----------------------------------------------------------------------------------- */

static void zgc_track(zg_backend *be, void *p, size_t bytes) {
    zgc_impl *im = zgc_get(be);
    if (im->n_allocs == im->cap_allocs) {
        im->cap_allocs = im->cap_allocs ? 2 * im->cap_allocs : 64;
        im->allocs = (zgc_alloc_rec *)zg_realloc(im->allocs, (size_t)im->cap_allocs * sizeof(zgc_alloc_rec));
    }
    im->allocs[im->n_allocs].ptr = p;
    im->allocs[im->n_allocs].bytes = bytes;
    im->n_allocs++;
    be->bytes_in_use += bytes;
    if (be->bytes_in_use > be->bytes_peak) be->bytes_peak = be->bytes_in_use;
}

static void *zgc_alloc(zg_backend *be, size_t bytes, const char *what) {
    if (bytes == 0) bytes = 1;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        size_t free_b = 0, total_b = 0;
        ZG_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
        zg_errorf("out of GPU memory allocating %s: %.2f GiB requested, %.2f GiB already allocated by zgpt "
                  "(peak %.2f GiB), %.2f of %.2f GiB free on device %d; lower the micro-batch "
                  "(train_micro_batch_size_per_gpu), enable activation recompute, or use a higher ZeRO stage "
                  "across more GPUs",
                  what ? what : "a buffer", bytes / 1073741824.0, be->bytes_in_use / 1073741824.0,
                  be->bytes_peak / 1073741824.0, free_b / 1073741824.0, total_b / 1073741824.0, be->device);
        return NULL;
    }
    ZG_CUDA_CHECK(e);
    zgc_track(be, p, bytes);
    return p;
}

void *zgc_alloc_or_die(zg_backend *be, size_t bytes, const char *what) {
    void *p = zgc_alloc(be, bytes, what);
    if (p == NULL) {
        zg_error_print();
        ZG_FATAL("cannot continue without %s", what);
    }
    return p;
}

void zgc_free(zg_backend *be, void *p) {
    if (p == NULL) return;
    zgc_impl *im = zgc_get(be);
    for (int i = 0; i < im->n_allocs; i++) {
        if (im->allocs[i].ptr == p) {
            be->bytes_in_use -= im->allocs[i].bytes;
            im->allocs[i] = im->allocs[im->n_allocs - 1];
            im->n_allocs--;
            be->frees++;
            ZG_CUDA_CHECK(cudaFree(p));
            return;
        }
    }
    ZG_FATAL("cuda dealloc of a pointer this backend did not allocate (%p)", p);
}

/* The scratch slot's buffer back to the device, once queued work is done with it (none: nothing). */
static void zgc_scratch_drop(zg_backend *be, int slot) {
    zgc_impl *im = zgc_get(be);
    if (im->scratch[slot] == NULL) return;
    ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
    zgc_free(be, im->scratch[slot]);
    im->scratch[slot] = NULL;
    im->scratch_bytes[slot] = 0;
}

/* zero: a new buffer is cleared (on the compute stream, before any use of it) */
static void *zgc_scratch_get(zg_backend *be, int slot, size_t bytes, const char *what, bool zero) {
    zgc_impl *im = zgc_get(be);
    if (im->scratch_bytes[slot] >= bytes && im->scratch[slot] != NULL) return im->scratch[slot];
    zgc_scratch_drop(be, slot);
    size_t want = bytes + bytes / 4 + 256;
    im->scratch[slot] = zgc_alloc_or_die(be, want, what);
    im->scratch_bytes[slot] = want;
    if (zero) ZG_CUDA_CHECK(cudaMemsetAsync(im->scratch[slot], 0, want, im->stream));
    return im->scratch[slot];
}

void *zgc_scratch(zg_backend *be, int slot, size_t bytes, const char *what) {
    return zgc_scratch_get(be, slot, bytes, what, false);
}

void *zgc_scratch_zeroed(zg_backend *be, int slot, size_t bytes, const char *what) {
    return zgc_scratch_get(be, slot, bytes, what, true);
}

static void zgc_dealloc(zg_backend *be, void *p) {
    if (p == NULL) return;
    /* the buffer may still be in use by queued work */
    ZG_CUDA_CHECK(cudaStreamSynchronize(zgc_get(be)->stream));
    zgc_free(be, p);
}

static void zgc_upload(zg_backend *be, void *dst, const void *src_host, size_t bytes) {
    if (bytes == 0) return;
    ZG_CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, zgc_get(be)->stream));
}

void zgc_download(zg_backend *be, void *dst_host, const void *src, size_t bytes) {
    if (bytes == 0) return;
    zgc_impl *im = zgc_get(be);
    ZG_CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, im->stream));
    ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
}

static void zgc_copy(zg_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    ZG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, zgc_get(be)->stream));
}

static void zgc_zero(zg_backend *be, void *p, size_t bytes) {
    if (bytes == 0) return;
    ZG_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, zgc_get(be)->stream));
}

static void zgc_synchronize(zg_backend *be) { ZG_CUDA_CHECK(cudaStreamSynchronize(zgc_get(be)->stream)); }

/* ---- host staging memory, the copy stream and events ------------------------------------------ */

/* How a host block was allocated (the header's `pinned`, backend.h). */
enum { ZGC_HOST_PLAIN = 0, ZGC_HOST_CUDA_ALLOC = 1, ZGC_HOST_REGISTERED = 2, ZGC_HOST_MAPPED = 3 };

/* Registers a mapping of `total` bytes (zg_host_pages_map) with the driver; 0 on success, else -1 with
 * the note below said once (`instead` says what happens then). */
static int zgc_host_register(zg_backend *be, void *base, size_t total, const char *instead) {
    cudaError_t e = cudaHostRegister(base, zg_host_pages_len(total), cudaHostRegisterPortable);
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError(); /* not sticky: clear it */
    if (!zgc_get(be)->host_register_noted)
        fprintf(stderr, "zgpt: note: cudaHostRegister of a huge-page mapping failed (%s); %s\n", cudaGetErrorString(e),
                instead);
    zgc_get(be)->host_register_noted = 1;
    return -1;
}

/* A large pinned block: a huge-page mapping touched by every core, then registered with the driver
 * (host_pages.h says why: ~10x faster than cudaHostAlloc for gigabytes, the same copy rate). Portable,
 * as cudaHostAllocPortable was: pinned for every device. NULL when either step fails (the caller falls
 * back to cudaHostAlloc, and says so once). */
static void *zgc_host_map_register(zg_backend *be, size_t total) {
    void *base = zg_host_pages_map(total);
    if (base == NULL) {
        if (!zgc_get(be)->host_register_noted)
            fprintf(stderr,
                    "zgpt: note: %s; pinned host memory comes from cudaHostAlloc instead (slower to allocate)\n",
                    zg_error_message());
        zg_error_clear();
        zgc_get(be)->host_register_noted = 1;
        return NULL;
    }
    if (zgc_host_register(be, base, total,
                          "pinned host memory comes from cudaHostAlloc instead (slower to allocate)") != 0) {
        zg_host_pages_unmap(base, total);
        return NULL;
    }
    return base;
}

/* A mapping filled before the backend existed (a resume's checkpoint read): registered in place, so that
 * its uploads run at the bus's rate; left pageable (slower copies, still correct) when that fails. The
 * pages may be under a direct read at the same time: both only pin them. */
static void *zgc_host_adopt(zg_backend *be, void *base, size_t bytes, const char *what) {
    (void)what;
    ZG_CUDA_CHECK(cudaSetDevice(be->device));
    int registered =
        zgc_host_register(be, base, bytes + ZG_HOST_HEADER, "copies from that host memory run pageable (slower)") == 0;
    return zg_host_block_wrap(be, base, bytes, registered ? ZGC_HOST_REGISTERED : ZGC_HOST_MAPPED);
}

/* Pinned memory: blocks of ZG_HOST_PAGES_MIN and up are a registered huge-page mapping, smaller ones (and
 * large ones whose registration failed) come from cudaHostAlloc; both are resident once allocated, so
 * nothing to touch. Plain memory is touched here so that its first copy does not fault page by page. May
 * run on any thread: the device is made current on it first. */
static void *zgc_host_alloc(zg_backend *be, size_t bytes, int pinned, const char *what) {
    void *base = NULL;
    char a[32], b[32];
    if (pinned) {
        ZG_CUDA_CHECK(cudaSetDevice(be->device));
        /* the mapping only where the kernel has the memory: touching an overcommitted mapping would get
         * the process killed, where cudaHostAlloc fails with the message below */
        if (bytes + ZG_HOST_HEADER >= ZG_HOST_PAGES_MIN && zg_host_mem_available() >= bytes + ZG_HOST_HEADER) {
            base = zgc_host_map_register(be, bytes + ZG_HOST_HEADER);
            if (base) return zg_host_block_wrap(be, base, bytes, ZGC_HOST_REGISTERED);
        }
        cudaError_t e = cudaHostAlloc(&base, bytes + ZG_HOST_HEADER, cudaHostAllocPortable);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            zg_errorf("cannot pin %s of host memory for %s (%s; %s pinned already by zgpt): free host memory, or "
                      "turn off the optimizer state's pinning (offload_optimizer.pin_memory: false)",
                      zg_fmt_bytes((double)bytes, a, sizeof a), what ? what : "a host buffer", cudaGetErrorString(e),
                      zg_fmt_bytes((double)be->host_bytes_in_use, b, sizeof b));
            return NULL;
        }
        return zg_host_block_wrap(be, base, bytes, ZGC_HOST_CUDA_ALLOC);
    }
    if (posix_memalign(&base, 4096, bytes + ZG_HOST_HEADER) != 0 || base == NULL) {
        zg_errorf("out of host memory allocating %s for %s", zg_fmt_bytes((double)bytes, a, sizeof a),
                  what ? what : "a host buffer");
        return NULL;
    }
    memset(base, 0, bytes + ZG_HOST_HEADER);
    return zg_host_block_wrap(be, base, bytes, ZGC_HOST_PLAIN);
}

static void zgc_host_free(zg_backend *be, void *p) {
    if (p == NULL) return;
    int kind;
    size_t bytes;
    void *base = zg_host_block_unwrap(be, p, &kind, &bytes);
    if (kind == ZGC_HOST_CUDA_ALLOC) {
        /* cudaFreeHost synchronizes the device; a copy in flight from this block has finished after it */
        ZG_CUDA_CHECK(cudaFreeHost(base));
    } else if (kind == ZGC_HOST_REGISTERED) {
        /* the same guarantee as cudaFreeHost's: no copy from or to the block is in flight once it unmaps */
        ZG_CUDA_CHECK(cudaDeviceSynchronize());
        ZG_CUDA_CHECK(cudaHostUnregister(base));
        zg_host_pages_unmap(base, bytes + ZG_HOST_HEADER);
    } else if (kind == ZGC_HOST_MAPPED) {
        ZG_CUDA_CHECK(cudaDeviceSynchronize()); /* pageable copies from it may still be queued */
        zg_host_pages_unmap(base, bytes + ZG_HOST_HEADER);
    } else {
        ZG_CUDA_CHECK(cudaStreamSynchronize(zgc_get(be)->copy_stream));
        free(base);
    }
}

static void zgc_scratch_lend(zg_backend *be, void *p, size_t bytes) {
    zgc_impl *im = zgc_get(be);
    im->loan = bytes ? p : NULL;
    im->loan_bytes = p ? bytes : 0;
}

static void zgc_copy_async(zg_backend *be, void *dst, const void *src, size_t bytes, zg_copy_dir dir) {
    if (bytes == 0) return;
    ZG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, dir == ZG_COPY_D2H ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice,
                                  zgc_get(be)->copy_stream));
}

struct zg_event {
    cudaEvent_t e;
};

static cudaStream_t zgc_stream_of(zg_backend *be, zg_stream s) {
    return s == ZG_STREAM_COPY ? zgc_get(be)->copy_stream : zgc_get(be)->stream;
}

static zg_event *zgc_event_create(zg_backend *be) {
    (void)be;
    zg_event *ev = (zg_event *)zg_calloc(1, sizeof(zg_event));
    ZG_CUDA_CHECK(cudaEventCreateWithFlags(&ev->e, cudaEventDisableTiming));
    return ev;
}
static void zgc_event_destroy(zg_backend *be, zg_event *ev) {
    (void)be;
    if (ev == NULL) return;
    ZG_CUDA_CHECK(cudaEventDestroy(ev->e));
    free(ev);
}
static void zgc_event_record(zg_backend *be, zg_event *ev, zg_stream s) {
    ZG_CUDA_CHECK(cudaEventRecord(ev->e, zgc_stream_of(be, s)));
}
static void zgc_stream_wait(zg_backend *be, zg_stream s, zg_event *ev) {
    ZG_CUDA_CHECK(cudaStreamWaitEvent(zgc_stream_of(be, s), ev->e, 0));
}
static void zgc_event_synchronize(zg_backend *be, zg_event *ev) {
    (void)be;
    ZG_CUDA_CHECK(cudaEventSynchronize(ev->e));
}
static int zgc_event_query(zg_backend *be, zg_event *ev) {
    (void)be;
    cudaError_t e = cudaEventQuery(ev->e);
    if (e == cudaErrorNotReady) {
        (void)cudaGetLastError();
        return 0;
    }
    ZG_CUDA_CHECK(e);
    return 1;
}

/* ---- casts ------------------------------------------------------------------------------------ */

template <typename TD, typename TS> __global__ void zgc_cast_kernel(TD *dst, const TS *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = zgc_from_f<TD>(zgc_to_f(src[i]));
}

static void zgc_cast(zg_backend *be, void *dst, zg_dtype dst_dt, const void *src, zg_dtype src_dt, size_t n) {
    if (n == 0) return;
    zgc_impl *im = zgc_get(be);
    if (dst_dt == src_dt) {
        zgc_copy(be, dst, src, n * zgc_dtype_bytes(dst_dt));
        return;
    }
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    /* casts do convert between dtypes: every pair is instantiated */
    ZGC_DISPATCH(
        dst_dt, TD,
        ZGC_DISPATCH(src_dt, TS,
                     (zgc_cast_kernel<TD, TS><<<blocks, 256, 0, im->stream>>>((TD *)dst, (const TS *)src, n))));
    ZG_CUDA_LAUNCH_CHECK();
}

/* upload_f32 / download_f32 convert through an fp32 staging buffer of at most ZGC_STAGING_ELEMS (64 MiB),
 * chunk by chunk. One of at most ZGC_STAGING_KEEP elements (a sampler's rows of logits, call after call)
 * stays in its scratch slot; a larger one (the parameters at initialisation, the master weights, a
 * checkpoint's model.bin) is freed when the call returns (both calls wait for their copies), so that the
 * training step's peak does not keep the 80 MiB (with the scratch's margin) that only they use. */
#define ZGC_STAGING_ELEMS ((size_t)16 << 20)
#define ZGC_STAGING_KEEP ((size_t)1 << 20)

/* The staging buffer for a conversion of n elements. */
static float *zgc_staging_get(zg_backend *be, size_t n) {
    size_t elems = n < ZGC_STAGING_ELEMS ? n : ZGC_STAGING_ELEMS;
    return (float *)zgc_scratch(be, ZGC_SCR_STAGING, elems * 4, "fp32 upload staging buffer");
}

/* After a conversion of n elements, once its copies are done: a staging buffer past ZGC_STAGING_KEEP goes back. */
static void zgc_staging_put(zg_backend *be, size_t n) {
    if (n > ZGC_STAGING_KEEP) zgc_scratch_drop(be, ZGC_SCR_STAGING);
}

static void zgc_upload_f32(zg_backend *be, void *dst, zg_dtype dt, const float *src_host, size_t n) {
    if (dt == ZG_F32) {
        zgc_upload(be, dst, src_host, n * 4);
        return;
    }
    zgc_impl *im = zgc_get(be);
    float *stage = zgc_staging_get(be, n);
    for (size_t off = 0; off < n; off += ZGC_STAGING_ELEMS) {
        size_t cnt = n - off < ZGC_STAGING_ELEMS ? n - off : ZGC_STAGING_ELEMS;
        /* the previous chunk's cast must be done before the staging buffer is overwritten */
        ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
        ZG_CUDA_CHECK(cudaMemcpyAsync(stage, src_host + off, cnt * 4, cudaMemcpyHostToDevice, im->stream));
        zgc_cast(be, (char *)dst + off * 2, dt, stage, ZG_F32, cnt);
    }
    ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
    zgc_staging_put(be, n);
}

static void zgc_download_f32(zg_backend *be, float *dst_host, const void *src, zg_dtype dt, size_t n) {
    if (dt == ZG_F32) {
        zgc_download(be, dst_host, src, n * 4);
        return;
    }
    float *stage = zgc_staging_get(be, n);
    for (size_t off = 0; off < n; off += ZGC_STAGING_ELEMS) {
        size_t cnt = n - off < ZGC_STAGING_ELEMS ? n - off : ZGC_STAGING_ELEMS;
        zgc_cast(be, stage, ZG_F32, (const char *)src + off * 2, dt, cnt);
        zgc_download(be, dst_host + off, stage, cnt * 4); /* waited for */
    }
    zgc_staging_put(be, n);
}

/* ---- GELU, residual --------------------------------------------------------------------------- */

template <typename T> __global__ void zgc_gelu_kernel(T *out, const T *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = zgc_from_f<T>(zgc_gelu(zgc_to_f(inp[i])));
}

static void zgc_gelu_forward(zg_backend *be, void *out, const void *inp, size_t n) {
    zgc_impl *im = zgc_get(be);
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(be->act_dtype, T, (zgc_gelu_kernel<T><<<blocks, 256, 0, im->stream>>>((T *)out, (const T *)inp, n)));
    ZG_CUDA_LAUNCH_CHECK();
}

template <typename T> __global__ void zgc_residual_kernel(T *out, const T *a, const T *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = zgc_from_f<T>(zgc_to_f(a[i]) + zgc_to_f(b[i]));
}

static void zgc_residual_forward(zg_backend *be, void *out, const void *a, const void *b, size_t n) {
    zgc_impl *im = zgc_get(be);
    unsigned blocks = zgc_blocks(n, 256, (unsigned)im->num_sms * 16);
    ZGC_DISPATCH(be->act_dtype, T,
                 (zgc_residual_kernel<T><<<blocks, 256, 0, im->stream>>>((T *)out, (const T *)a, (const T *)b, n)));
    ZG_CUDA_LAUNCH_CHECK();
}

/* ---- create / destroy ------------------------------------------------------------------------- */

static void zgc_destroy(zg_backend *be) {
    if (be == NULL) return;
    zgc_impl *im = zgc_get(be);
    if (im != NULL) {
        ZG_CUDA_CHECK(cudaStreamSynchronize(im->stream));
        zgc_gemv_prof_report(be);
        zgc_matmul_destroy(be);
        zgc_attention_cudnn_destroy(be);
        for (int s = 0; s < ZGC_SCR_COUNT; s++) zgc_free(be, im->scratch[s]);
        zgc_free(be, im->lt_ws);
        /* buffers the caller did not free */
        while (im->n_allocs > 0) zgc_free(be, im->allocs[im->n_allocs - 1].ptr);
        ZG_CUBLAS_CHECK(cublasLtDestroy(im->lt));
        ZG_CUDA_CHECK(cudaStreamDestroy(im->stream));
        if (im->copy_stream) {
            ZG_CUDA_CHECK(cudaStreamSynchronize(im->copy_stream));
            ZG_CUDA_CHECK(cudaStreamDestroy(im->copy_stream));
        }
        ZG_CUDA_CHECK(cudaFreeHost(im->partials_host));
        free(im->allocs);
        free(im->segs_host);
        free(im);
    }
    free(be);
}

static size_t zgc_attention_stats_bytes_op(zg_backend *be, int B, int T, int NH) {
    return zgc_attention_stats_bytes(be, B, T, NH);
}

/* Filled by field name, so the table survives reordering or additions in backend.h. */
static void zgc_ops_fill(zg_backend_ops *o) {
    memset(o, 0, sizeof(*o));
    o->name = "cuda";
    o->destroy = zgc_destroy;
    o->alloc = zgc_alloc;
    o->dealloc = zgc_dealloc;
    o->upload = zgc_upload;
    o->download = zgc_download;
    o->copy = zgc_copy;
    o->zero = zgc_zero;
    o->synchronize = zgc_synchronize;
    o->host_alloc = zgc_host_alloc;
    o->host_free = zgc_host_free;
    o->host_adopt = zgc_host_adopt;
    o->scratch_lend = zgc_scratch_lend;
    o->scratch_lend_want = zgc_attention_cudnn_lend_want;
    o->copy_async = zgc_copy_async;
    o->event_create = zgc_event_create;
    o->event_destroy = zgc_event_destroy;
    o->event_record = zgc_event_record;
    o->stream_wait = zgc_stream_wait;
    o->event_synchronize = zgc_event_synchronize;
    o->event_query = zgc_event_query;
    o->upload_f32 = zgc_upload_f32;
    o->download_f32 = zgc_download_f32;
    o->cast = zgc_cast;
    o->encoder_forward = zgc_encoder_forward;
    o->encoder_backward = zgc_encoder_backward;
    o->layernorm_forward = zgc_layernorm_forward;
    o->layernorm_backward = zgc_layernorm_backward;
    o->matmul_forward = zgc_matmul_forward;
    o->layernorm_matmul_forward = zgc_layernorm_matmul_forward;
    o->matmul_backward = zgc_matmul_backward;
    o->gelu_forward = zgc_gelu_forward;
    o->residual_forward = zgc_residual_forward;
    o->attention_stats_bytes = zgc_attention_stats_bytes_op;
    o->attention_forward = zgc_attention_forward;
    o->attention_backward = zgc_attention_backward;
    o->attention_forward_cached = zgc_attention_forward_cached;
    o->classifier = zgc_classifier;
    o->encoder_forward_at = zgc_encoder_forward_at;
    o->attention_decode = zgc_attention_decode;
    o->sample = zgc_sample;
    o->decode_advance = zgc_decode_advance;
    o->graph_begin = zgc_graph_begin;
    o->graph_end = zgc_graph_end;
    o->graph_launch = zgc_graph_launch;
    o->graph_destroy = zgc_graph_destroy;
    o->sum_squares = zgc_sum_squares;
    o->scale = zgc_scale;
    o->adamw = zgc_adamw;
    o->lamb_sums = zgc_lamb_sums;
}

extern "C" int zg_backend_cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" cudaStream_t zg_backend_cuda_stream(zg_backend *be) {
    if (be == NULL || be->ops == NULL || strcmp(be->ops->name, "cuda") != 0)
        ZG_FATAL("zg_backend_cuda_stream: not a CUDA backend");
    return zgc_get(be)->stream;
}

/* The A/B environment knobs checked when the backend is made (each is also read per call where it acts): a value its
 * check refuses (check() < 0; a NULL check: a removed form, refused unless unset or "0", zgc_removed_env_set) ends
 * the creation with one line, "VAR=value: what". */
typedef struct {
    const char *var;
    int (*check)(void);
    const char *what;
} zgc_env_knob;
static const zgc_env_knob k_env_knobs[] = {
    {"ZGPT_DECODE_PREFETCH", NULL,
     "the decode step's L2 prefetch branch was removed in v0.23 (slower in every measurement); unset it"},
    {"ZGPT_LT_WARMUP", zgc_lt_warm_env,
     "must be 1 (cuBLASLt's start-up on a thread while the model loads) or 0 (at the first product); unset it for the "
     "default (1)"},
    {"ZGPT_DECODE_LAYERS", NULL,
     "the decode step's layers as one persistent kernel were removed in v0.23 (slower than a kernel per op, which "
     "always runs now); unset it"},
    {"ZGPT_GEMV_PROF", zgc_gemv_prof_env,
     "must be 1 (report the few-row products' timeline at the end) or 0; unset it for the default (0)"},
    {"ZGPT_DECODE_COMBINE", zgc_decode_combine,
     "must be fused (split decode attention's combine in its last chunk block) or kernel (a kernel of its own); unset "
     "it for the default (fused)"},
    {"ZGPT_BGRAD", zgc_bgrad_env,
     "must be f32 (cuBLASLt's bias-gradient epilogue where offered), bf16 (its bf16 vector) or off (the reduction "
     "kernels); unset it for the default (f32)"},
    {"ZGPT_LN", zgc_ln_mode,
     "must be group (the row-group LayerNorm backward without its next-row copies) or warp (the warp-per-row "
     "kernels); unset it for the default (row groups, the next row copied; 'deep' (v0.38), 'ring' (v0.40), 'team' and "
     "'team1' (v0.41) were removed: no faster)"},
    {"ZGPT_LN_SUMS", zgc_ln_sums_env,
     "must be fused (the projections' bias gradients in LayerNorm's backward) or separate (a column-sum pass of their "
     "own); unset it for the default (fused)"},
    {"ZGPT_CLS_THREADS", zgc_cls_threads_env,
     "must be 256, 512 or 1024 (the classifier's threads per row); unset it for the default (1024)"},
    {"ZGPT_SDPA_DQ", zgc_sdpa_dq_env,
     "must be own (zgpt's dQ kernel over the causal half of cuDNN's dS, where it fits) or cudnn (cuDNN's own dQ "
     "product); unset it for the default (own)"},
    {"ZGPT_LT_WS", zgc_lt_ws_env,
     "must be cuBLASLt's workspace in MiB, 0 to 1024 (0: only algorithms that need none); unset it for the default "
     "(32)"},
    {"ZGPT_GRAPH_HOIST", NULL,
     "removed (cuBLASLt's workspace memsets moved beside the op before them made the recorded GPT-2 XL step slower; "
     "docs/PERFORMANCE.md v0.40); unset it"},
    {"ZGPT_SDPA_CHUNK", NULL,
     "removed (the attention backward in chunks of batch rows was slower at every chunking; docs/PERFORMANCE.md "
     "v0.33); unset it"},
};

extern "C" int zg_backend_cuda_create(zg_backend **out, const zg_backend_config *cfg) {
    *out = NULL;
    int count = zg_backend_cuda_device_count();
    if (count <= 0) return zg_errorf("no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)");
    int dev = cfg->device_index;
    if (dev < 0) ZG_CUDA_CHECK(cudaGetDevice(&dev));
    if (dev >= count) return zg_errorf("CUDA device %d requested but only %d visible", dev, count);
    ZG_CUDA_CHECK(cudaSetDevice(dev));
    cudaDeviceProp prop;
    ZG_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    zg_dtype prec = cfg->precision;
    if (prec != ZG_F32 && prec != ZG_BF16 && prec != ZG_F16) return zg_errorf("unknown precision %d", (int)prec);
    if (prec == ZG_BF16 && prop.major < 8)
        return zg_errorf("bf16 needs an sm_80+ GPU, device %d (%s) is sm_%d%d: use fp16 or fp32", dev, prop.name,
                         prop.major, prop.minor);
    if (prop.major < 8)
        return zg_errorf("the zgpt CUDA backend needs an sm_80+ GPU (Ampere or newer); device %d (%s) is sm_%d%d", dev,
                         prop.name, prop.major, prop.minor);

    if (zgc_attention_check_arch() != 0) return -1;
    for (size_t i = 0; i < sizeof k_env_knobs / sizeof k_env_knobs[0]; i++) {
        const zgc_env_knob *k = &k_env_knobs[i];
        if (k->check != NULL ? k->check() < 0 : zgc_removed_env_set(k->var))
            return zg_errorf("%s=%s: %s", k->var, getenv(k->var), k->what);
    }
    int sdpa_b, sdpa_skip;
    if (zgc_sdpa_env(0, &sdpa_b, &sdpa_skip) < 0)
        return zg_errorf("ZGPT_SDPA_HEUR=%s / ZGPT_SDPA_SKIP=%s: HEUR must be a or b, SKIP fK, bK or fK,bK (K digits: "
                         "the usable cuDNN engine configs to skip); unset them for the defaults",
                         getenv("ZGPT_SDPA_HEUR") ? getenv("ZGPT_SDPA_HEUR") : "(unset)",
                         getenv("ZGPT_SDPA_SKIP") ? getenv("ZGPT_SDPA_SKIP") : "(unset)");

    zg_backend *be = (zg_backend *)zg_calloc(1, sizeof(zg_backend));
    zgc_impl *im = (zgc_impl *)zg_calloc(1, sizeof(zgc_impl));
    zgc_ops_fill(&im->ops);
    be->ops = &im->ops;
    be->param_dtype = be->act_dtype = be->grad_dtype = prec;
    be->device = dev;
    be->device_mem_total = prop.totalGlobalMem;
    be->impl = im;
    im->device = dev;
    im->num_sms = prop.multiProcessorCount;
    im->cc_major = prop.major;
    im->bgrad_ok = 1;
    ZG_CUDA_CHECK(cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking));
    ZG_CUDA_CHECK(cudaStreamCreateWithFlags(&im->copy_stream, cudaStreamNonBlocking));
    ZG_CUBLAS_CHECK(cublasLtCreate(&im->lt));
    im->lt_ws_bytes = (size_t)zgc_lt_ws_env() << 20;
    im->lt_ws = im->lt_ws_bytes ? zgc_alloc(be, im->lt_ws_bytes, "cuBLASLt workspace") : NULL;
    if (im->lt_ws_bytes && im->lt_ws == NULL) {
        zgc_destroy(be);
        return -1;
    }
    ZG_CUDA_CHECK(cudaMallocHost((void **)&im->partials_host, sizeof(double) * (size_t)im->num_sms * 4));
    zgc_lt_warm_start(be); /* cuBLASLt's start-up while the caller loads the model */
    *out = be;
    return 0;
}
