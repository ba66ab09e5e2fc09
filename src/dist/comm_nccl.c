/* NCCL communicator for device buffers (compiled only with CUDA: ZGPT_WITH_CUDA).
 *
 * Ordering: every collective runs on the communicator's own stream. Before it is enqueued, an event
 * recorded on the compute stream is waited on by the communication stream (so it sees every kernel
 * issued before the call); after it, an event is recorded on the communication stream. Waiting on the
 * handle polls that event from the host (with the timeout, and ncclCommGetAsyncError for errors
 * reported by NCCL or by a peer that went away) and then makes the compute stream wait on it, so
 * compute work issued afterwards sees the result.
 *
 * The communicator is created non-blocking (ncclConfig_t.blocking = 0): initialisation and every call
 * that answers ncclInProgress are polled the same way, so a rank that never arrives ends the job
 * with "rank R: <op> timed out after S s" instead of a hang; the communicator is aborted
 * (ncclCommAbort) before exiting so no kernel stays spinning on the GPU.
 *
 * Watchdog: those polls only run while this thread is in a communicator call. A thread blocked
 * elsewhere behind a collective that never finishes (a stream synchronisation whose work waits on
 * it, a cudaFree, which waits for the whole device, or a kernel launch waiting for room in a full
 * launch queue) would never reach them: seen as a hang when a peer was stopped with SIGSTOP. So a
 * watchdog thread checks every 0.2 s how far the communication stream has got, and a collective
 * that has not finished timeout_s after it was issued ends the process from that thread
 * (_exit(1), after the one-line report naming the rank). The driver tears down the context and its
 * kernels; the launcher, mpirun or srun then stops the other ranks.
 * A first version did not fire when a peer was stopped on 4 GPUs (rank 0's main thread spun in
 * user space, the watchdog thread sat in a futex). It queried CUDA events, so it could block behind
 * a driver lock held by the main thread, and it learned of a collective only after NCCL returned
 * from enqueuing it, so a main thread stuck inside that call left nothing to watch; which of the two
 * happened was not pinned down. This version avoids both: a collective gets a sequence number and an
 * issue time before NCCL is entered; the communication stream writes the number of the last one it
 * finished into registered host memory (cuStreamWriteValue32, a command of the stream's front end,
 * no kernel); the watchdog only reads that word and its own list, and makes no CUDA or NCCL call.
 * Bootstrap: the ncclUniqueId comes from $ZGPT_NCCL_ID (zgpt's --gpus launcher makes one), or, when
 * started by mpirun/srun in an MPI build, rank 0 makes one and broadcasts it over MPI.
 * Reductions of bf16/fp16 are done by NCCL in the buffer's type (NCCL's kernels compute each
 * reduction step in fp32 and store the partial sums in the buffer's type).
 */
#include "dist/comm.h"

#include "backend/cuda/backend_cuda.h"
#include "core/clock.h"
#include "core/error.h"
#include "dist/launch.h"

#include <cuda.h> /* types of cuStreamWriteValue32, fetched through the runtime (no -lcuda) */
#include <cuda_runtime.h>
#include <nccl.h>
#ifdef ZGPT_WITH_MPI
#include <mpi.h>
#endif

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A collective's (or a group's) completion event, shared by the handles of a group (this thread only). */
typedef struct shared_event {
    int refs;
    cudaEvent_t ev;
} shared_event;

/* The watchdog's view of one issued collective (issue order). */
typedef struct wd_entry {
    uint32_t seq;
    double issued_s; /* zg_now_s() when the call began */
    const char *op;
    struct wd_entry *next;
} wd_entry;

typedef CUresult (*write_value32_fn)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;  /* communication */
    cudaStream_t compute; /* the backend's compute stream (NULL: legacy default stream) */
    cudaEvent_t ev_in;    /* compute -> communication ordering */
    int in_group;
    zg_comm_req **group_reqs; /* handles created inside the open group */
    int n_group, cap_group;
    void *d_scratch; /* host-value collectives */
    size_t scratch_cap;
    int mpi_inited; /* MPI_Init was called here (the mpirun/srun bootstrap): finalize it */
    /* watchdog (see the top of the file) */
    write_value32_fn write_value32;
    volatile uint32_t *sig_host; /* pinned, mapped: the sequence number of the last finished collective */
    CUdeviceptr sig_dev;
    uint32_t seq; /* the last sequence number given out (this thread only) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t wd;
    int wd_stop; /* the watchdog runs from the end of create to destroy */
    wd_entry *wd_head, *wd_tail;
    atomic_int fatal; /* set by the first thread that reports a fatal error */
} nccl_impl;

struct zg_comm_req {
    const char *op;
    shared_event *done; /* NULL until the group closes */
};

static _Noreturn void nccl_fatal_at(zg_comm *c, const char *file, int line, const char *fmt, ...) ZG_PRINTF(4, 5);
static _Noreturn void nccl_fatal_at(zg_comm *c, const char *file, int line, const char *fmt, ...) {
    nccl_impl *m = c->impl;
    if (m && atomic_exchange(&m->fatal, 1)) { /* the watchdog is already ending the process */
        for (;;) pause();
    }
    va_list ap;
    va_start(ap, fmt);
    zg_comm_fatal_reportv(c, file, line, fmt, ap);
    va_end(ap);
    if (m && m->comm) ncclCommAbort(m->comm); /* frees the GPU from kernels waiting on peers */
#ifdef ZGPT_WITH_MPI
    if (m && m->mpi_inited) MPI_Abort(MPI_COMM_WORLD, 1); /* mpirun/srun stop the other ranks */
#endif
    /* not exit(): the runtime's teardown would wait for streams stuck behind the collective */
    fflush(NULL);
    _exit(1);
}

/* ---- watchdog ---------------------------------------------------------------------------------- */

static void wd_report(zg_comm *c, const char *file, int line, const char *fmt, ...) ZG_PRINTF(4, 5);
static void wd_report(zg_comm *c, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    zg_comm_fatal_reportv(c, file, line, fmt, ap);
    va_end(ap);
}

static void *watchdog_main(void *arg) {
    zg_comm *c = arg;
    nccl_impl *m = c->impl;
    double fatal_seen = -1; /* when the main thread was seen reporting a fatal error */
    pthread_mutex_lock(&m->mu);
    while (!m->wd_stop) {
        if (atomic_load(&m->fatal)) { /* the main thread is ending the process: give it 30 s (abort, MPI_Abort) */
            if (fatal_seen < 0) fatal_seen = zg_now_s();
            if (zg_now_s() - fatal_seen > 30) _exit(1);
        }
        /* the stream writes the numbers in issue order: retire every entry up to the last written */
        uint32_t done = __atomic_load_n(m->sig_host, __ATOMIC_ACQUIRE);
        while (m->wd_head && (int32_t)(done - m->wd_head->seq) >= 0) {
            wd_entry *e = m->wd_head;
            m->wd_head = e->next;
            if (!m->wd_head) m->wd_tail = NULL;
            free(e);
        }
        if (m->wd_head && zg_now_s() - m->wd_head->issued_s > c->timeout_s && !atomic_exchange(&m->fatal, 1)) {
            wd_report(c, __FILE__, __LINE__,
                      "%s has not finished %.0f s after it was issued (a rank died, "
                      "hangs, or called a different collective); ending this rank",
                      m->wd_head->op, c->timeout_s);
            _exit(1); /* not exit(): the main thread may be inside CUDA or NCCL */
        }
        struct timespec ts;
        zg_realtime_after_ms(&ts, 200);
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

#define ZG_CHECK_CUDA(c, op, call)                                                                                     \
    do {                                                                                                               \
        cudaError_t _e = (call);                                                                                       \
        if (_e != cudaSuccess)                                                                                         \
            nccl_fatal_at((c), __FILE__, __LINE__, "%s: %s failed: %s", (op), #call, cudaGetErrorString(_e));          \
    } while (0)

/* Polls the communicator until a non-blocking call has finished, with the timeout. */
static void nccl_settle(zg_comm *c, const char *op, const char *call, ncclResult_t rc, const char *file, int line) {
    nccl_impl *m = c->impl;
    double start = zg_now_s();
    while (rc == ncclInProgress) {
        if (zg_now_s() - start > c->timeout_s)
            nccl_fatal_at(c, file, line, "%s timed out after %.0f s (%s still in progress)", op, c->timeout_s, call);
        sched_yield();
        if (ncclCommGetAsyncError(m->comm, &rc) != ncclSuccess) break;
    }
    if (rc != ncclSuccess)
        nccl_fatal_at(c, file, line, "%s: %s failed: %s (%s)", op, call, ncclGetErrorString(rc),
                      ncclGetLastError(m->comm));
}
#define ZG_CHECK_NCCL(c, op, call) nccl_settle((c), (op), #call, (call), __FILE__, __LINE__)

static ncclDataType_t nccl_type(zg_dtype dt) {
    return dt == ZG_F32 ? ncclFloat32 : dt == ZG_BF16 ? ncclBfloat16 : ncclFloat16;
}
static ncclRedOp_t nccl_op(zg_comm_op op) { return op == ZG_COMM_MAX ? ncclMax : ncclSum; }

/* Before a collective: the communication stream waits for the compute work issued so far, and the
 * watchdog learns when the call began (before NCCL is entered: a call that never returns is seen). */
static zg_comm_req *begin_op(zg_comm *c, const char *op) {
    nccl_impl *m = c->impl;
    ZG_CHECK_CUDA(c, op, cudaEventRecord(m->ev_in, m->compute));
    ZG_CHECK_CUDA(c, op, cudaStreamWaitEvent(m->stream, m->ev_in, 0));
    zg_comm_req *r = zg_calloc(1, sizeof *r);
    r->op = op;
    wd_entry *e = zg_calloc(1, sizeof *e);
    e->seq = ++m->seq;
    e->issued_s = zg_now_s();
    e->op = op;
    pthread_mutex_lock(&m->mu);
    if (m->wd_tail)
        m->wd_tail->next = e;
    else
        m->wd_head = e;
    m->wd_tail = e;
    pthread_mutex_unlock(&m->mu);
    return r;
}

/* The completion event of what was just enqueued on the communication stream, shared by nrefs
 * handles; the stream also writes the last sequence number given out, for the watchdog. */
static shared_event *record_done(zg_comm *c, const char *op, int nrefs) {
    nccl_impl *m = c->impl;
    CUresult wr = m->write_value32((CUstream)m->stream, m->sig_dev, m->seq, CU_STREAM_WRITE_VALUE_DEFAULT);
    if (wr != CUDA_SUCCESS)
        nccl_fatal_at(c, __FILE__, __LINE__, "%s: cuStreamWriteValue32 failed (CUresult %d)", op, (int)wr);
    shared_event *e = zg_calloc(1, sizeof *e);
    ZG_CHECK_CUDA(c, op, cudaEventCreateWithFlags(&e->ev, cudaEventDisableTiming));
    ZG_CHECK_CUDA(c, op, cudaEventRecord(e->ev, m->stream));
    e->refs = nrefs;
    return e;
}

/* After a collective: outside a group its completion event is recorded now; inside, at group_end. */
static zg_comm_req *end_op(zg_comm *c, zg_comm_req *r) {
    nccl_impl *m = c->impl;
    if (m->in_group) {
        if (m->n_group == m->cap_group) {
            m->cap_group = m->cap_group ? 2 * m->cap_group : 16;
            m->group_reqs = zg_realloc(m->group_reqs, sizeof *m->group_reqs * (size_t)m->cap_group);
        }
        m->group_reqs[m->n_group++] = r;
    } else {
        r->done = record_done(c, r->op, 1);
    }
    return r;
}

static void nccl_group_begin(zg_comm *c) {
    nccl_impl *m = c->impl;
    if (m->in_group) nccl_fatal_at(c, __FILE__, __LINE__, "group_begin inside a group");
    ZG_CHECK_NCCL(c, "group", ncclGroupStart());
    m->in_group = 1;
    m->n_group = 0;
}

static void nccl_group_end(zg_comm *c) {
    nccl_impl *m = c->impl;
    if (!m->in_group) nccl_fatal_at(c, __FILE__, __LINE__, "group_end without group_begin");
    ZG_CHECK_NCCL(c, "group", ncclGroupEnd());
    m->in_group = 0;
    if (m->n_group == 0) return;
    shared_event *e = record_done(c, "group", m->n_group);
    for (int i = 0; i < m->n_group; i++) m->group_reqs[i]->done = e;
    m->n_group = 0;
}

static zg_comm_req *nccl_all_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op) {
    nccl_impl *m = c->impl;
    zg_comm_req *r = begin_op(c, op == ZG_COMM_MAX ? "all_reduce(max)" : "all_reduce(sum)");
    ZG_CHECK_NCCL(c, r->op, ncclAllReduce(send, recv, n, nccl_type(dt), nccl_op(op), m->comm, m->stream));
    return end_op(c, r);
}

static zg_comm_req *nccl_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op,
                                int root) {
    nccl_impl *m = c->impl;
    zg_comm_req *r = begin_op(c, op == ZG_COMM_MAX ? "reduce(max)" : "reduce(sum)");
    ZG_CHECK_NCCL(c, r->op, ncclReduce(send, recv, n, nccl_type(dt), nccl_op(op), root, m->comm, m->stream));
    return end_op(c, r);
}

static zg_comm_req *nccl_reduce_scatter(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    nccl_impl *m = c->impl;
    zg_comm_req *r = begin_op(c, "reduce_scatter");
    ZG_CHECK_NCCL(c, r->op, ncclReduceScatter(send, recv, count, nccl_type(dt), ncclSum, m->comm, m->stream));
    return end_op(c, r);
}

static zg_comm_req *nccl_all_gather(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    nccl_impl *m = c->impl;
    zg_comm_req *r = begin_op(c, "all_gather");
    ZG_CHECK_NCCL(c, r->op, ncclAllGather(send, recv, count, nccl_type(dt), m->comm, m->stream));
    return end_op(c, r);
}

static zg_comm_req *nccl_broadcast(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root) {
    nccl_impl *m = c->impl;
    zg_comm_req *r = begin_op(c, "broadcast");
    ZG_CHECK_NCCL(c, r->op, ncclBroadcast(buf, buf, n, nccl_type(dt), root, m->comm, m->stream));
    return end_op(c, r);
}

static zg_comm_req *nccl_barrier(zg_comm *c) {
    /* NCCL has no barrier: a one-element all-reduce on the scratch does the same. */
    nccl_impl *m = c->impl;
    if (m->scratch_cap < sizeof(double)) nccl_fatal_at(c, __FILE__, __LINE__, "barrier: no scratch");
    zg_comm_req *r = begin_op(c, "barrier");
    ZG_CHECK_NCCL(c, r->op, ncclAllReduce(m->d_scratch, m->d_scratch, 1, ncclFloat64, ncclSum, m->comm, m->stream));
    return end_op(c, r);
}

static void nccl_wait(zg_comm *c, zg_comm_req *r) {
    nccl_impl *m = c->impl;
    if (!r->done) nccl_fatal_at(c, __FILE__, __LINE__, "%s: waited on inside its group (call group_end first)", r->op);
    double start = zg_now_s();
    long polls = 0;
    for (;;) {
        cudaError_t q = cudaEventQuery(r->done->ev);
        if (q == cudaSuccess) break;
        if (q != cudaErrorNotReady) nccl_fatal_at(c, __FILE__, __LINE__, "%s failed: %s", r->op, cudaGetErrorString(q));
        ncclResult_t ar = ncclSuccess;
        if (ncclCommGetAsyncError(m->comm, &ar) != ncclSuccess || (ar != ncclSuccess && ar != ncclInProgress))
            nccl_fatal_at(c, __FILE__, __LINE__, "%s failed: %s (%s)", r->op, ncclGetErrorString(ar),
                          ncclGetLastError(m->comm));
        if (zg_now_s() - start > c->timeout_s)
            nccl_fatal_at(c, __FILE__, __LINE__,
                          "%s timed out after %.0f s (a rank died, hangs, or called a "
                          "different collective)",
                          r->op, c->timeout_s);
        if (++polls > 1000) {
            struct timespec ts = {0, 50 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    ZG_CHECK_CUDA(c, r->op, cudaStreamWaitEvent(m->compute, r->done->ev, 0));
    if (--r->done->refs == 0) {
        cudaEventDestroy(r->done->ev);
        free(r->done);
    }
    free(r);
}

static int nccl_test(zg_comm *c, zg_comm_req *r) {
    nccl_impl *m = c->impl;
    if (!r->done) return 0; /* its group is still open */
    cudaError_t q = cudaEventQuery(r->done->ev);
    if (q == cudaSuccess) return 1;
    if (q != cudaErrorNotReady) nccl_fatal_at(c, __FILE__, __LINE__, "%s failed: %s", r->op, cudaGetErrorString(q));
    ncclResult_t ar = ncclSuccess;
    if (ncclCommGetAsyncError(m->comm, &ar) != ncclSuccess || (ar != ncclSuccess && ar != ncclInProgress))
        nccl_fatal_at(c, __FILE__, __LINE__, "%s failed: %s (%s)", r->op, ncclGetErrorString(ar),
                      ncclGetLastError(m->comm));
    return 0;
}

static void ensure_scratch(zg_comm *c, size_t bytes) {
    nccl_impl *m = c->impl;
    if (m->scratch_cap >= bytes) return;
    if (m->d_scratch) ZG_CHECK_CUDA(c, "scratch", cudaFree(m->d_scratch));
    c->scratch_bytes = 0;
    ZG_CHECK_CUDA(c, "scratch", cudaMalloc(&m->d_scratch, bytes));
    m->scratch_cap = bytes;
    c->scratch_bytes = bytes;
    if (bytes > c->scratch_peak) c->scratch_peak = bytes;
}

static void nccl_all_reduce_host_f64(zg_comm *c, double *vals, int n, zg_comm_op op) {
    nccl_impl *m = c->impl;
    size_t bytes = (size_t)n * sizeof(double);
    ensure_scratch(c, bytes);
    const char *name = op == ZG_COMM_MAX ? "all_reduce_host(max)" : "all_reduce_host(sum)";
    ZG_CHECK_CUDA(c, name, cudaMemcpyAsync(m->d_scratch, vals, bytes, cudaMemcpyHostToDevice, m->stream));
    zg_comm_req *r = begin_op(c, name);
    ZG_CHECK_NCCL(c, name,
                  ncclAllReduce(m->d_scratch, m->d_scratch, (size_t)n, ncclFloat64, nccl_op(op), m->comm, m->stream));
    ZG_CHECK_CUDA(c, name, cudaMemcpyAsync(vals, m->d_scratch, bytes, cudaMemcpyDeviceToHost, m->stream));
    r->done = record_done(c, name, 1);
    nccl_wait(c, r);
}

static void nccl_broadcast_host(zg_comm *c, void *buf, size_t bytes, int root) {
    nccl_impl *m = c->impl;
    ensure_scratch(c, bytes ? bytes : 1);
    ZG_CHECK_CUDA(c, "broadcast_host", cudaMemcpyAsync(m->d_scratch, buf, bytes, cudaMemcpyHostToDevice, m->stream));
    zg_comm_req *r = begin_op(c, "broadcast_host");
    ZG_CHECK_NCCL(c, r->op, ncclBroadcast(m->d_scratch, m->d_scratch, bytes, ncclUint8, root, m->comm, m->stream));
    ZG_CHECK_CUDA(c, r->op, cudaMemcpyAsync(buf, m->d_scratch, bytes, cudaMemcpyDeviceToHost, m->stream));
    r->done = record_done(c, r->op, 1);
    nccl_wait(c, r);
}

static void nccl_destroy(zg_comm *c) {
    nccl_impl *m = c->impl;
    pthread_mutex_lock(&m->mu);
    m->wd_stop = 1;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->wd, NULL);
    while (m->wd_head) {
        wd_entry *e = m->wd_head;
        m->wd_head = e->next;
        free(e);
    }
    m->wd_tail = NULL;
    if (m->comm) {
        cudaStreamSynchronize(m->stream);
        ncclCommFinalize(m->comm);
        ncclResult_t st = ncclInProgress;
        double start = zg_now_s();
        while (st == ncclInProgress && zg_now_s() - start < c->timeout_s)
            if (ncclCommGetAsyncError(m->comm, &st) != ncclSuccess) break;
        if (st == ncclSuccess)
            ncclCommDestroy(m->comm);
        else
            ncclCommAbort(m->comm);
    }
    if (m->d_scratch) cudaFree(m->d_scratch);
    if (m->sig_host) {
        cudaHostUnregister((void *)m->sig_host);
        free((void *)m->sig_host);
    }
    if (m->ev_in) cudaEventDestroy(m->ev_in);
    if (m->stream) cudaStreamDestroy(m->stream);
#ifdef ZGPT_WITH_MPI
    int fin = 0;
    if (m->mpi_inited && MPI_Finalized(&fin) == MPI_SUCCESS && !fin) MPI_Finalize();
#endif
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m->group_reqs);
    free(m);
    free(c);
}

static const zg_comm_ops nccl_ops = {
    .name = "nccl",
    .destroy = nccl_destroy,
    .all_reduce = nccl_all_reduce,
    .reduce = nccl_reduce,
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .wait = nccl_wait,
    .test = nccl_test,
    .all_reduce_host_f64 = nccl_all_reduce_host_f64,
    .broadcast_host = nccl_broadcast_host,
    .group_begin = nccl_group_begin,
    .group_end = nccl_group_end,
};

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int zg_comm_nccl_unique_id_hex(char out[257]) {
    ncclUniqueId id;
    ncclResult_t rc = ncclGetUniqueId(&id);
    if (rc != ncclSuccess) return zg_errorf("ncclGetUniqueId failed: %s", ncclGetErrorString(rc));
    const unsigned char *b = (const unsigned char *)id.internal;
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES && i < 128; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
    out[256] = '\0';
    return 0;
}

static int unique_id_from_env(ncclUniqueId *id, const char *hex) {
    if (strlen(hex) != 2 * NCCL_UNIQUE_ID_BYTES)
        return zg_errorf("ZGPT_NCCL_ID has %zu characters, expected %d", strlen(hex), 2 * NCCL_UNIQUE_ID_BYTES);
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return zg_errorf("ZGPT_NCCL_ID is not hexadecimal");
        id->internal[i] = (char)(hi * 16 + lo);
    }
    return 0;
}

int zg_comm_nccl_create(zg_comm **out, const zg_comm_config *cfg) {
    *out = NULL;
    zg_launch_env env;
    zg_launch_env_detect(&env);
    zg_comm *c = zg_calloc(1, sizeof *c);
    nccl_impl *m = zg_calloc(1, sizeof *m);
    c->ops = &nccl_ops;
    c->impl = m;
    c->rank = env.rank;
    c->size = env.size;
    c->local_rank = env.local_rank;
    c->device_buffers = 1;
    c->timeout_s = zg_comm_default_timeout(cfg ? cfg->timeout_s : 0);
    m->compute = cfg ? (cudaStream_t)cfg->compute_stream : NULL;
    /* Without an explicit stream, order against the CUDA backend's own compute stream. That stream is
     * non-blocking, so the legacy default stream would order NOTHING: collectives would read
     * gradients before backward wrote them and compute would read parameters before their
     * all-gather finished (seen as run-to-run differences on 2 and 4 GPUs). */
    if (!m->compute && cfg && cfg->be && cfg->be->device >= 0 && strcmp(cfg->be->ops->name, "cuda") == 0)
        m->compute = zg_backend_cuda_stream(cfg->be);

    /* The device: the backend's, else local rank modulo the visible devices. */
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        free(m);
        free(c);
        return zg_errorf("rank %d: the NCCL communicator needs a GPU and none is visible", env.rank);
    }
    int dev = cfg && cfg->be && cfg->be->device >= 0 ? cfg->be->device : env.local_rank % count;
    ZG_CHECK_CUDA(c, "init", cudaSetDevice(dev));

    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    const char *hex = getenv("ZGPT_NCCL_ID");
    if (hex && *hex) {
        if (unique_id_from_env(&id, hex) != 0) {
            free(m);
            free(c);
            return -1;
        }
    } else if (env.size > 1) {
#ifdef ZGPT_WITH_MPI
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited && zg_launch_check_mpi_bootstrap(&env) != 0) {
            free(m);
            free(c);
            return -1;
        }
        zg_startup_guard *guard = cfg ? cfg->startup : NULL;
        if (!inited) {
            zg_startup_guard_phase(guard,
                                   "MPI_Init (the bootstrap that shares the NCCL id; it returns once every "
                                   "rank has reached it)",
                                   "that every rank was started and is running (none stopped, crashed or still "
                                   "queued), that the launcher's process manager is alive (mpirun and its orted, "
                                   "or srun --mpi=pmix and slurmstepd), and that the nodes reach each other");
            if (MPI_Init(NULL, NULL) != MPI_SUCCESS) nccl_fatal_at(c, __FILE__, __LINE__, "MPI_Init failed");
            m->mpi_inited = 1;
        }
        int mpi_size = 0;
        if (MPI_Comm_size(MPI_COMM_WORLD, &mpi_size) != MPI_SUCCESS || mpi_size != env.size)
            nccl_fatal_at(c, __FILE__, __LINE__,
                          "%s started %d ranks but MPI sees %d; this MPI does not match the "
                          "launcher (under srun use --mpi=pmix with an MPI built with PMIx)",
                          zg_launch_src_name(env.source), env.size, mpi_size);
        if (env.rank == 0 && ncclGetUniqueId(&id) != ncclSuccess)
            nccl_fatal_at(c, __FILE__, __LINE__, "ncclGetUniqueId failed");
        zg_startup_guard_phase(guard, "the NCCL id broadcast from rank 0 (MPI_Bcast)",
                               "that rank 0 is running and got past MPI_Init (its log), and the network between "
                               "the nodes");
        if (MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
            nccl_fatal_at(c, __FILE__, __LINE__, "MPI_Bcast of the NCCL id failed");
#else
        free(m);
        free(c);
        return zg_errorf("rank %d of %d (%s): no ZGPT_NCCL_ID and no MPI to share one; start with zgpt train --gpus N, "
                         "or build with MPI for mpirun/srun",
                         env.rank, env.size, zg_launch_src_name(env.source));
#endif
    } else {
        ncclGetUniqueId(&id);
    }

    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    atomic_init(&m->fatal, 0);

    /* The communication stream gets the device's highest priority: when a collective's kernel is
     * ready, the block scheduler places its blocks before more blocks of the compute kernels queued
     * beside it, so a peer is not kept waiting for this rank's part (every rank's collective holds
     * its SMs until all ranks have joined). Measured: GPT-2 XL, micro-batch 16, 2 GPUs 344 ms per step
     * against 346 at normal priority. */
    int prio_lo = 0, prio_hi = 0;
    ZG_CHECK_CUDA(c, "init", cudaDeviceGetStreamPriorityRange(&prio_lo, &prio_hi));
    ZG_CHECK_CUDA(c, "init", cudaStreamCreateWithPriority(&m->stream, cudaStreamNonBlocking, prio_hi));
    ZG_CHECK_CUDA(c, "init", cudaEventCreateWithFlags(&m->ev_in, cudaEventDisableTiming));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0; /* every call can be polled with a timeout */
    /* (NCCL's CTA policy "efficiency" was tried for the same purpose as max_ctas: 347 ms per step
     * against 340 with 4 blocks.) */
    const char *env_ctas = getenv("NCCL_MAX_CTAS");
    if (cfg && cfg->max_ctas > 0 && !(env_ctas && *env_ctas)) config.maxCTAs = cfg->max_ctas;
    zg_startup_guard_phase(cfg ? cfg->startup : NULL, "ncclCommInitRankConfig (NCCL's bootstrap of every rank)",
                           "that every rank is running and reached start-up, and the network between the nodes "
                           "(NCCL_SOCKET_IFNAME; NCCL_DEBUG=INFO shows what NCCL waits for)");
    ncclResult_t rc = ncclCommInitRankConfig(&m->comm, c->size, id, c->rank, &config);
    if (rc != ncclSuccess && rc != ncclInProgress)
        nccl_fatal_at(c, __FILE__, __LINE__, "ncclCommInitRankConfig failed: %s", ncclGetErrorString(rc));
    nccl_settle(c, "init", "ncclCommInitRankConfig", rc == ncclInProgress ? ncclInProgress : ncclSuccess, __FILE__,
                __LINE__);
    ensure_scratch(c, 4096);

    /* The watchdog's signal word (see the top of the file). */
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult qres = cudaDriverEntryPointSymbolNotFound;
    ZG_CHECK_CUDA(c, "init",
                  cudaGetDriverEntryPointByVersion("cuStreamWriteValue32", &fn, 12000, cudaEnableDefault, &qres));
    if (qres != cudaDriverEntryPointSuccess || !fn)
        nccl_fatal_at(c, __FILE__, __LINE__,
                      "init: the CUDA driver has no cuStreamWriteValue32 (the collective watchdog "
                      "needs it); update the NVIDIA driver");
    m->write_value32 = (write_value32_fn)fn;
    /* Plain memory registered with CUDA (not cudaHostAlloc): when the process exits without destroying
     * the communicator, the runtime's teardown unregisters it but the watchdog can still read it. */
    void *sig = NULL, *sig_dev = NULL;
    if (posix_memalign(&sig, 4096, 4096) != 0) nccl_fatal_at(c, __FILE__, __LINE__, "init: out of memory");
    memset(sig, 0, 4096);
    ZG_CHECK_CUDA(c, "init", cudaHostRegister(sig, 4096, cudaHostRegisterMapped | cudaHostRegisterPortable));
    m->sig_host = sig;
    ZG_CHECK_CUDA(c, "init", cudaHostGetDevicePointer(&sig_dev, sig, 0));
    m->sig_dev = (CUdeviceptr)(uintptr_t)sig_dev;
    int prc = pthread_create(&m->wd, NULL, watchdog_main, c);
    if (prc != 0)
        nccl_fatal_at(c, __FILE__, __LINE__, "init: pthread_create (collective watchdog) failed: %s", strerror(prc));
    if (c->size > 1) zg_log_set_rank(c->rank);
    *out = c;
    return 0;
}
