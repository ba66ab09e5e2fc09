/* The CPU backend: host memory, fp32 only, OpenMP loops and OpenBLAS sgemm (ops in ops_cpu.c and
 * optim_cpu.c). */
#include "backend/cpu/cpu_internal.h"
#include "backend/host_pages.h"

#include "core/error.h"
#include "core/strutil.h"

#include <cblas.h>

#include <stdlib.h>
#include <string.h>

/* Each allocation carries a 64-byte header with its size so dealloc can keep bytes_in_use exact
 * while the returned pointer stays 64-byte aligned (one cache line, full AVX-512 vectors). */
#define CPU_ALLOC_HEADER 64

static void *cpu_alloc(zg_backend *be, size_t bytes, const char *what) {
    void *p = NULL;
    int rc = posix_memalign(&p, 64, bytes + CPU_ALLOC_HEADER);
    if (rc != 0 || p == NULL) {
        char a[32], b[32];
        zg_errorf("out of host memory allocating %s for %s (%s already in use by zgpt): reduce the micro-batch, "
                  "the sequence length or the model size",
                  zg_fmt_bytes((double)bytes, a, sizeof a), what ? what : "buffer",
                  zg_fmt_bytes((double)be->bytes_in_use, b, sizeof b));
        return NULL;
    }
    memcpy(p, &bytes, sizeof bytes);
    be->bytes_in_use += bytes;
    if (be->bytes_in_use > be->bytes_peak) be->bytes_peak = be->bytes_in_use;
    return (char *)p + CPU_ALLOC_HEADER;
}

static void cpu_dealloc(zg_backend *be, void *p) {
    if (p == NULL) return;
    char *base = (char *)p - CPU_ALLOC_HEADER;
    size_t bytes;
    memcpy(&bytes, base, sizeof bytes);
    be->bytes_in_use -= bytes;
    be->frees++;
    free(base);
}

static void cpu_upload(zg_backend *be, void *dst, const void *src_host, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst, src_host, bytes);
}

static void cpu_download(zg_backend *be, void *dst_host, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memcpy(dst_host, src, bytes);
}

static void cpu_copy(zg_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
}

static void cpu_zero(zg_backend *be, void *p, size_t bytes) {
    (void)be;
    if (bytes) memset(p, 0, bytes);
}

static void cpu_synchronize(zg_backend *be) { (void)be; }

/* How a host block was allocated (the block header's `pinned` field, backend.h). */
enum { CPU_HOST_MALLOC = 0, CPU_HOST_MAPPED = 1 };

/* Host staging memory is the same plain memory as the backend's (the CPU has nothing to pin for). */
static void *cpu_host_alloc(zg_backend *be, size_t bytes, int pinned, const char *what) {
    (void)pinned;
    void *base = NULL;
    if (posix_memalign(&base, 4096, bytes + ZG_HOST_HEADER) != 0 || base == NULL) {
        char a[32];
        zg_errorf("out of host memory allocating %s for %s", zg_fmt_bytes((double)bytes, a, sizeof a),
                  what ? what : "a host buffer");
        return NULL;
    }
    memset(base, 0, bytes + ZG_HOST_HEADER); /* touch every page now, not during the first copy */
    return zg_host_block_wrap(be, base, bytes, CPU_HOST_MALLOC);
}

static void cpu_host_free(zg_backend *be, void *p) {
    if (p == NULL) return;
    int kind;
    size_t bytes;
    void *base = zg_host_block_unwrap(be, p, &kind, &bytes);
    if (kind == CPU_HOST_MAPPED)
        zg_host_pages_unmap(base, bytes + ZG_HOST_HEADER);
    else
        free(base);
}

/* A mapped block is already the plain, resident memory the CPU's staging is. */
static void *cpu_host_adopt(zg_backend *be, void *base, size_t bytes, const char *what) {
    (void)what;
    return zg_host_block_wrap(be, base, bytes, CPU_HOST_MAPPED);
}

static void cpu_copy_async(zg_backend *be, void *dst, const void *src, size_t bytes, zg_copy_dir dir) {
    (void)be;
    (void)dir;
    if (bytes) memcpy(dst, src, bytes);
}

/* Every CPU op has finished when it returns: an event is only a handle. */
struct zg_event {
    int recorded;
};
static zg_event *cpu_event_create(zg_backend *be) {
    (void)be;
    return zg_calloc(1, sizeof(zg_event));
}
static void cpu_event_destroy(zg_backend *be, zg_event *ev) {
    (void)be;
    free(ev);
}
static void cpu_event_record(zg_backend *be, zg_event *ev, zg_stream s) {
    (void)be;
    (void)s;
    ev->recorded = 1;
}
static void cpu_stream_wait(zg_backend *be, zg_stream s, zg_event *ev) {
    (void)be;
    (void)s;
    (void)ev;
}
static void cpu_event_synchronize(zg_backend *be, zg_event *ev) {
    (void)be;
    (void)ev;
}
static int cpu_event_query(zg_backend *be, zg_event *ev) {
    (void)be;
    (void)ev;
    return 1;
}

float *cpu_scratch(zg_backend *be, size_t n) {
    cpu_state *st = be->impl;
    if (st->scratch_floats < n) {
        free(st->scratch);
        st->scratch = zg_malloc(n * sizeof(float));
        st->scratch_floats = n;
    }
    return st->scratch;
}

static void cpu_destroy(zg_backend *be) {
    cpu_state *st = be->impl;
    if (st) {
        free(st->scratch);
        openblas_set_num_threads(st->blas_threads_saved);
    }
    free(st);
    free(be);
}

static const zg_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .dealloc = cpu_dealloc,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_synchronize,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .host_adopt = cpu_host_adopt,
    .copy_async = cpu_copy_async,
    .event_create = cpu_event_create,
    .event_destroy = cpu_event_destroy,
    .event_record = cpu_event_record,
    .stream_wait = cpu_stream_wait,
    .event_synchronize = cpu_event_synchronize,
    .event_query = cpu_event_query,
    .upload_f32 = cpu_upload_f32,
    .download_f32 = cpu_download_f32,
    .cast = cpu_cast,
    .encoder_forward = cpu_encoder_forward,
    .encoder_backward = cpu_encoder_backward,
    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_backward = cpu_layernorm_backward,
    .matmul_forward = cpu_matmul_forward,
    .layernorm_matmul_forward = zg_layernorm_matmul_compose,
    .matmul_backward = cpu_matmul_backward,
    .gelu_forward = cpu_gelu_forward,
    .residual_forward = cpu_residual_forward,
    .attention_stats_bytes = cpu_attention_stats_bytes,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .attention_forward_cached = cpu_attention_forward_cached,
    .encoder_forward_at = cpu_encoder_forward_at,
    .attention_decode = cpu_attention_decode,
    .sample = cpu_sample,
    .decode_advance = cpu_decode_advance,
    /* graph_*: NULL, the CPU runs every op as it is called */
    .classifier = cpu_classifier,
    .sum_squares = cpu_sum_squares,
    .scale = cpu_scale,
    .adamw = cpu_adamw,
    .lamb_sums = cpu_lamb_sums,
};

int zg_backend_cpu_create(zg_backend **out, const zg_backend_config *cfg) {
    *out = NULL;
    if (cfg->precision != ZG_F32)
        return zg_errorf("precision '%s' is not supported on the CPU: the CPU backend trains in fp32; set the "
                         "precision to fp32 (drop the fp16/bf16 setting) or use --device cuda",
                         zg_dtype_name(cfg->precision));
    zg_backend *be = zg_calloc(1, sizeof *be);
    be->ops = &cpu_ops;
    be->param_dtype = be->act_dtype = be->grad_dtype = ZG_F32;
    be->device = -1;
    cpu_state *st = zg_calloc(1, sizeof(cpu_state));
    /* The ops split every product over OpenMP threads themselves (ops_cpu.c): OpenBLAS must not
     * start its own threads on top. Restored by destroy. */
    st->blas_threads_saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    be->impl = st;
    *out = be;
    return 0;
}
