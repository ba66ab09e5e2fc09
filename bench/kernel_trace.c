// LD_PRELOAD CUPTI activity tracer: every kernel, memcpy and memset of the host program becomes one
// CSV line "kind,start_ns,end_ns,stream_id,name" in $ZG_TRACE_OUT (read by bench/kernel_trace.py).
// build (bench/kernel_trace.sh build does this):
// cc -O2 -shared -fPIC -o build-gpu/libzg_kernel_trace.so bench/kernel_trace.c -I/usr/local/cuda/include -L/usr/local/cuda/targets/x86_64-linux/lib -L/usr/local/cuda/lib64 -lcupti -lpthread -Wl,-rpath,/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib
// usage: ZG_TRACE_OUT=trace.csv LD_PRELOAD=build-gpu/libzg_kernel_trace.so build-gpu/zgpt bench ...
// The record structs are the current ones of CUDA 13's cupti_activity.h (Kernel10, Memcpy6, Memset4);
// all share the prefix start/end/.../streamId that is read here, and the library is built against the
// same CUPTI it runs with.
#include <cupti.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

enum { TRACE_BUF_BYTES = 8 << 20, TRACE_BUF_ALIGN = 16 };

static const CUpti_ActivityKind trace_kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                                 CUPTI_ACTIVITY_KIND_MEMSET};

// The completed callback runs on CUPTI's own thread, flush/exit on the host's: the lock guards the FILE.
static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *trace_file;
static atomic_int trace_on;   // cleared on the first CUPTI error: tracing stops, the host goes on
static atomic_int trace_done; // destructor and atexit both finish; only the first one works

// Reports a failed CUPTI call and turns tracing off; never aborts the host program.
static int trace_check(CUptiResult r, const char *call) {
    if (r == CUPTI_SUCCESS) return 1;
    const char *msg = NULL;
    if (cuptiGetResultString(r, &msg) != CUPTI_SUCCESS || !msg) msg = "unknown error";
    fprintf(stderr, "kernel_trace: %s failed: %s\n", call, msg);
    atomic_store(&trace_on, 0);
    return 0;
}

static void trace_finish(void);

// A NULL buffer makes CUPTI drop the records: that is how tracing stays off after an error.
// The exit flush is registered here, not in the constructor: CUPTI asks for its first buffer when the
// first records come, after the CUDA runtime registered its exit handler, so ours runs before it.
static void CUPTIAPI trace_buffer_request(uint8_t **buffer, size_t *size, size_t *max_records) {
    static atomic_flag registered = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&registered)) atexit(trace_finish);
    *max_records = 0;
    *buffer = atomic_load(&trace_on) ? aligned_alloc(TRACE_BUF_ALIGN, TRACE_BUF_BYTES) : NULL;
    *size = *buffer ? TRACE_BUF_BYTES : 0;
}

// Quoted, with '"' and ',' replaced so that the name is one plain CSV field.
static void trace_write_name(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) fputc(*s == '"' || *s == ',' || *s == '\n' ? ';' : *s, f);
    fputs("\"\n", f);
}

// Named like PyTorch's trace names them, so that both traces read alike.
static const char *trace_memcpy_name(uint8_t kind) {
    switch (kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "Memcpy HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "Memcpy DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "Memcpy DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "Memcpy HtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "Memcpy PtoP";
    default: return "Memcpy";
    }
}

static void trace_write_record(FILE *f, const CUpti_Activity *rec) {
    switch (rec->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
        fprintf(f, "K,%llu,%llu,%u,", (unsigned long long)k->start, (unsigned long long)k->end, (unsigned)k->streamId);
        trace_write_name(f, k->name);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)rec;
        fprintf(f, "C,%llu,%llu,%u,", (unsigned long long)m->start, (unsigned long long)m->end, (unsigned)m->streamId);
        trace_write_name(f, trace_memcpy_name(m->copyKind));
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)rec;
        char name[48]; /* the size tells a library's small semaphore clears from a buffer's zeroing */
        snprintf(name, sizeof name, "Memset %llu B", (unsigned long long)m->bytes);
        fprintf(f, "S,%llu,%llu,%u,", (unsigned long long)m->start, (unsigned long long)m->end, (unsigned)m->streamId);
        trace_write_name(f, name);
        break;
    }
    default: break;
    }
}

static void CUPTIAPI trace_buffer_complete(CUcontext ctx, uint32_t stream_id, uint8_t *buffer, size_t size,
                                           size_t valid) {
    (void)size;
    pthread_mutex_lock(&trace_lock);
    CUpti_Activity *rec = NULL;
    for (;;) {
        CUptiResult r = cuptiActivityGetNextRecord(buffer, valid, &rec);
        if (r == CUPTI_ERROR_MAX_LIMIT_REACHED || !trace_check(r, "cuptiActivityGetNextRecord")) break;
        if (trace_file) trace_write_record(trace_file, rec);
    }
    size_t dropped = 0;
    if (trace_check(cuptiActivityGetNumDroppedRecords(ctx, stream_id, &dropped), "cuptiActivityGetNumDroppedRecords") &&
        dropped)
        fprintf(stderr, "kernel_trace: %zu activity records dropped\n", dropped);
    pthread_mutex_unlock(&trace_lock);
    free(buffer);
}

static void trace_finish(void) {
    if (atomic_exchange(&trace_done, 1) || !trace_file) return;
    // Forced: also deliver the records of kernels still running, or the last step goes missing.
    if (atomic_load(&trace_on))
        trace_check(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
    pthread_mutex_lock(&trace_lock);
    fclose(trace_file);
    trace_file = NULL;
    pthread_mutex_unlock(&trace_lock);
}

__attribute__((constructor)) static void trace_start(void) {
    const char *path = getenv("ZG_TRACE_OUT");
    if (!path || !*path) return;
    // Append: a launcher that execs several traced processes keeps all of them (kernel_trace.sh truncates).
    trace_file = fopen(path, "a");
    if (!trace_file) {
        perror("kernel_trace: fopen ZG_TRACE_OUT");
        return;
    }
    atomic_store(&trace_on, 1);
    if (trace_check(cuptiActivityRegisterCallbacks(trace_buffer_request, trace_buffer_complete),
                    "cuptiActivityRegisterCallbacks"))
        for (size_t i = 0; i < sizeof trace_kinds / sizeof trace_kinds[0]; i++)
            if (!trace_check(cuptiActivityEnable(trace_kinds[i]), "cuptiActivityEnable")) break;
    if (!atomic_load(&trace_on)) {
        for (size_t i = 0; i < sizeof trace_kinds / sizeof trace_kinds[0]; i++)
            cuptiActivityDisable(trace_kinds[i]); // best effort: a partial setup must not trace on
        fclose(trace_file);
        trace_file = NULL;
    }
}

// Fallback for a host that never asked CUPTI for a buffer, so never registered the atexit flush.
__attribute__((destructor)) static void trace_stop(void) { trace_finish(); }
