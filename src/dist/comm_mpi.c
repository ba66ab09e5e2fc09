/* MPI communicator for host buffers (compiled only when MPI is found: ZGPT_WITH_MPI).
 *
 * Every collective is a non-blocking MPI call (MPI_Iallreduce, MPI_Ireduce, MPI_Ireduce_scatter_block,
 * MPI_Iallgather, MPI_Ibcast, MPI_Ibarrier) on a private duplicate of MPI_COMM_WORLD whose error
 * handler returns codes; waiting polls MPI_Testall (which also drives progress) against a deadline.
 * Any MPI error or a timeout prints "rank R: <op> ..." and calls MPI_Abort, so no rank is left
 * waiting. bf16/fp16 reductions are done in fp32: the data is converted to an fp32 scratch buffer,
 * reduced there and converted back when the handle is waited on.
 */
#include "dist/comm.h"

#include "core/clock.h"
#include "core/error.h"
#include "dist/launch.h"

#include <mpi.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    MPI_Comm comm;
    int we_initialized;
} mpi_impl;

struct zg_comm_req {
    const char *op;
    MPI_Request *reqs;
    int nreq, cap;
    float *tmp; /* fp32 scratch for 16-bit reductions */
    size_t tmp_bytes;
    float *tmp_out;    /* reduce_scatter: fp32 result */
    void *convert_dst; /* where the fp32 result goes back as `dt` at completion (NULL: nowhere) */
    const float *convert_src;
    size_t convert_n;
    zg_dtype dt;
    int complete; /* MPI requests already finished (by a test) */
};

/* Prints "zgpt[rank R]: fatal: file:line: rank R: ..." and aborts the whole MPI job. */
static _Noreturn void mpi_fatal_at(zg_comm *c, const char *file, int line, const char *fmt, ...) ZG_PRINTF(4, 5);
static _Noreturn void mpi_fatal_at(zg_comm *c, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    zg_comm_fatal_reportv(c, file, line, fmt, ap);
    va_end(ap);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* Checks an MPI return code, naming the call, the operation and the rank. */
#define ZG_CHECK_MPI(c, op, call)                                                                                      \
    do {                                                                                                               \
        int _rc = (call);                                                                                              \
        if (_rc != MPI_SUCCESS) {                                                                                      \
            char _es[MPI_MAX_ERROR_STRING];                                                                            \
            int _len = 0;                                                                                              \
            MPI_Error_string(_rc, _es, &_len);                                                                         \
            mpi_fatal_at((c), __FILE__, __LINE__, "%s failed in %s: %s", (op), #call, _es);                            \
        }                                                                                                              \
    } while (0)

static MPI_Comm mcomm(zg_comm *c) { return ((mpi_impl *)c->impl)->comm; }

enum { CHUNK = 1 << 30 }; /* elements per MPI call (counts are int) */
/* mpi_wait's polling: sched_yield for the first MPI_SPIN_S seconds of a wait, then 20 us naps, 500 us past
 * MPI_NAP_S */
#define MPI_SPIN_S 0.25
#define MPI_NAP_S 5.0

static zg_comm_req *req_new(zg_comm *c, const char *op) {
    (void)c;
    zg_comm_req *r = zg_calloc(1, sizeof *r);
    r->op = op;
    return r;
}

static MPI_Request *req_slot(zg_comm_req *r) {
    if (r->nreq == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 2;
        r->reqs = zg_realloc(r->reqs, (size_t)r->cap * sizeof *r->reqs);
    }
    r->reqs[r->nreq] = MPI_REQUEST_NULL;
    return &r->reqs[r->nreq++];
}

static float *req_tmp(zg_comm *c, zg_comm_req *r, size_t n) {
    r->tmp_bytes += n * sizeof(float);
    c->scratch_bytes += n * sizeof(float);
    if (c->scratch_bytes > c->scratch_peak) c->scratch_peak = c->scratch_bytes;
    return zg_malloc(n * sizeof(float));
}

static MPI_Datatype mpi_type(zg_dtype dt) { return dt == ZG_F32 ? MPI_FLOAT : MPI_UINT16_T; }
static MPI_Op mpi_op(zg_comm_op op) { return op == ZG_COMM_MAX ? MPI_MAX : MPI_SUM; }

static void mpi_destroy(zg_comm *c) {
    mpi_impl *m = c->impl;
    int finalized = 0;
    ZG_CHECK_MPI(c, "finalize", MPI_Finalized(&finalized));
    if (!finalized) {
        ZG_CHECK_MPI(c, "finalize", MPI_Comm_free(&m->comm));
        if (m->we_initialized) ZG_CHECK_MPI(c, "finalize", MPI_Finalize());
    }
    free(m);
    free(c);
}

/* 16-bit data is reduced through fp32 scratch: when the request completes, n fp32 values at src are
 * converted back into dst (dtype dt). */
static void req_convert_back(zg_comm_req *r, void *dst, const float *src, size_t n, zg_dtype dt) {
    r->convert_dst = dst;
    r->convert_src = src;
    r->convert_n = n;
    r->dt = dt;
}

static zg_comm_req *mpi_all_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op) {
    zg_comm_req *r = req_new(c, op == ZG_COMM_MAX ? "all_reduce(max)" : "all_reduce(sum)");
    const void *sbuf = send;
    void *rbuf = recv;
    if (dt != ZG_F32) {
        r->tmp = req_tmp(c, r, n);
        zg_comm_to_f32(r->tmp, send, dt, n);
        sbuf = r->tmp;
        rbuf = r->tmp;
        req_convert_back(r, recv, r->tmp, n, dt);
    }
    for (size_t off = 0; off < n; off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        float *rb = (float *)rbuf + off;
        const void *sb = sbuf == rbuf ? MPI_IN_PLACE : (const void *)((const float *)sbuf + off);
        ZG_CHECK_MPI(c, r->op, MPI_Iallreduce(sb, rb, cnt, MPI_FLOAT, mpi_op(op), mcomm(c), req_slot(r)));
    }
    return r;
}

static zg_comm_req *mpi_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op,
                               int root) {
    zg_comm_req *r = req_new(c, op == ZG_COMM_MAX ? "reduce(max)" : "reduce(sum)");
    int is_root = c->rank == root;
    const void *sbuf = send;
    void *rbuf = recv;
    if (dt != ZG_F32) {
        r->tmp = req_tmp(c, r, n);
        zg_comm_to_f32(r->tmp, send, dt, n);
        sbuf = r->tmp;
        rbuf = r->tmp;
        if (is_root) req_convert_back(r, recv, r->tmp, n, dt);
    }
    for (size_t off = 0; off < n; off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        const void *sb = (const float *)sbuf + off;
        void *rb = is_root ? (void *)((float *)rbuf + off) : NULL;
        if (is_root && sbuf == rbuf) sb = MPI_IN_PLACE;
        ZG_CHECK_MPI(c, r->op, MPI_Ireduce(sb, rb, cnt, MPI_FLOAT, mpi_op(op), root, mcomm(c), req_slot(r)));
    }
    return r;
}

static zg_comm_req *mpi_reduce_scatter(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    zg_comm_req *r = req_new(c, "reduce_scatter");
    if (count > INT32_MAX)
        mpi_fatal_at(c, __FILE__, __LINE__, "reduce_scatter: %zu elements per rank exceed MPI's int count", count);
    const void *sbuf = send;
    void *rbuf = recv;
    if (dt != ZG_F32) {
        size_t total = count * (size_t)c->size;
        r->tmp = req_tmp(c, r, total + count);
        zg_comm_to_f32(r->tmp, send, dt, total);
        r->tmp_out = r->tmp + total;
        sbuf = r->tmp;
        rbuf = r->tmp_out;
        req_convert_back(r, recv, r->tmp_out, count, dt);
    }
    ZG_CHECK_MPI(c, r->op,
                 MPI_Ireduce_scatter_block(sbuf, rbuf, (int)count, MPI_FLOAT, MPI_SUM, mcomm(c), req_slot(r)));
    return r;
}

static zg_comm_req *mpi_all_gather(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    zg_comm_req *r = req_new(c, "all_gather");
    if (count > INT32_MAX)
        mpi_fatal_at(c, __FILE__, __LINE__, "all_gather: %zu elements per rank exceed MPI's int count", count);
    const char *mine = (const char *)recv + (size_t)c->rank * count * zg_dtype_size(dt);
    const void *sb = (const char *)send == mine ? MPI_IN_PLACE : send;
    ZG_CHECK_MPI(c, r->op,
                 MPI_Iallgather(sb, (int)count, mpi_type(dt), recv, (int)count, mpi_type(dt), mcomm(c), req_slot(r)));
    return r;
}

static zg_comm_req *mpi_broadcast(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root) {
    zg_comm_req *r = req_new(c, "broadcast");
    size_t es = zg_dtype_size(dt);
    for (size_t off = 0; off < n; off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        ZG_CHECK_MPI(c, r->op, MPI_Ibcast((char *)buf + off * es, cnt, mpi_type(dt), root, mcomm(c), req_slot(r)));
    }
    return r;
}

static zg_comm_req *mpi_barrier(zg_comm *c) {
    zg_comm_req *r = req_new(c, "barrier");
    ZG_CHECK_MPI(c, r->op, MPI_Ibarrier(mcomm(c), req_slot(r)));
    return r;
}

static int mpi_test(zg_comm *c, zg_comm_req *r) {
    if (!r->complete) {
        int done = 0;
        ZG_CHECK_MPI(c, r->op, MPI_Testall(r->nreq, r->reqs, &done, MPI_STATUSES_IGNORE));
        r->complete = done;
    }
    return r->complete;
}

static void mpi_wait(zg_comm *c, zg_comm_req *r) {
    double start = zg_now_s();
    while (!r->complete) {
        int done = 0;
        ZG_CHECK_MPI(c, r->op, MPI_Testall(r->nreq, r->reqs, &done, MPI_STATUSES_IGNORE));
        if (done) break;
        double el = zg_now_s() - start;
        if (el > c->timeout_s)
            mpi_fatal_at(c, __FILE__, __LINE__,
                         "%s timed out after %.0f s (a rank died, hangs, or called a "
                         "different collective)",
                         r->op, c->timeout_s);
        /* Every poll drives the transfer (MPI progresses a non-blocking collective only inside MPI calls: a
         * large one moves fragment by fragment, each needing a poll on both sides). So poll with
         * sched_yield (oversubscribed ranks still run) for the first MPI_SPIN_S of a wait, which covers a
         * collective's transfer; only a wait that long (a slower rank: a save, a data stall) backs off to
         * short naps, and past MPI_NAP_S to long ones. Napping from the 65th poll, as before v0.21, cost a
         * 2-rank CPU ZeRO-1 step 1.8 s for 29 MB of gradients (each fragment waited a nap). */
        if (el < MPI_SPIN_S) {
            sched_yield();
        } else {
            struct timespec ts = {0, (el < MPI_NAP_S ? 20 : 500) * 1000L};
            nanosleep(&ts, NULL);
        }
    }
    if (r->convert_dst) zg_comm_from_f32(r->convert_dst, r->dt, r->convert_src, r->convert_n);
    if (r->tmp) {
        c->scratch_bytes -= r->tmp_bytes;
        free(r->tmp);
    }
    free(r->reqs);
    free(r);
}

static void mpi_all_reduce_host_f64(zg_comm *c, double *vals, int n, zg_comm_op op) {
    zg_comm_req *r = req_new(c, op == ZG_COMM_MAX ? "all_reduce_host(max)" : "all_reduce_host(sum)");
    ZG_CHECK_MPI(c, r->op, MPI_Iallreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, mpi_op(op), mcomm(c), req_slot(r)));
    mpi_wait(c, r);
}

static void mpi_broadcast_host(zg_comm *c, void *buf, size_t bytes, int root) {
    zg_comm_req *r = req_new(c, "broadcast_host");
    for (size_t off = 0; off < bytes; off += CHUNK) {
        int cnt = (int)(bytes - off < CHUNK ? bytes - off : CHUNK);
        ZG_CHECK_MPI(c, r->op, MPI_Ibcast((char *)buf + off, cnt, MPI_BYTE, root, mcomm(c), req_slot(r)));
    }
    mpi_wait(c, r);
}

static const zg_comm_ops mpi_ops = {
    .name = "mpi",
    .destroy = mpi_destroy,
    .all_reduce = mpi_all_reduce,
    .reduce = mpi_reduce,
    .reduce_scatter = mpi_reduce_scatter,
    .all_gather = mpi_all_gather,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .wait = mpi_wait,
    .test = mpi_test,
    .all_reduce_host_f64 = mpi_all_reduce_host_f64,
    .broadcast_host = mpi_broadcast_host,
    .group_begin = NULL,
    .group_end = NULL,
};

int zg_comm_mpi_create(zg_comm **out, const zg_comm_config *cfg) {
    zg_comm *c = zg_calloc(1, sizeof *c);
    mpi_impl *m = zg_calloc(1, sizeof *m);
    c->ops = &mpi_ops;
    c->impl = m;
    c->timeout_s = zg_comm_default_timeout(cfg ? cfg->timeout_s : 0);
    c->rank = 0;
    int inited = 0;
    ZG_CHECK_MPI(c, "init", MPI_Initialized(&inited));
    zg_launch_env env;
    zg_launch_env_detect(&env);
    if (!inited && zg_launch_check_mpi_bootstrap(&env) != 0) {
        free(m);
        free(c);
        return -1;
    }
    zg_startup_guard *guard = cfg ? cfg->startup : NULL;
    if (!inited) {
        zg_startup_guard_phase(guard, "MPI_Init_thread (it returns once every rank has reached it)",
                               "that every rank was started and is running (none stopped, crashed or still "
                               "queued), that the launcher's process manager is alive (mpirun and its orted, or "
                               "srun --mpi=pmix and slurmstepd), and that the nodes reach each other");
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            free(m);
            free(c);
            return zg_errorf("MPI_Init_thread failed");
        }
        m->we_initialized = 1;
    }
    ZG_CHECK_MPI(c, "init", MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    ZG_CHECK_MPI(c, "init", MPI_Comm_rank(MPI_COMM_WORLD, &c->rank));
    ZG_CHECK_MPI(c, "init", MPI_Comm_size(MPI_COMM_WORLD, &c->size));
    /* An MPI that did not find the launcher's ranks starts each process alone (a singleton). */
    if (env.source != ZG_LAUNCH_SRC_NONE && c->size != env.size)
        mpi_fatal_at(c, __FILE__, __LINE__,
                     "%s started %d ranks but MPI sees %d; this MPI does not match the "
                     "launcher (under srun use --mpi=pmix with an MPI built with PMIx)",
                     zg_launch_src_name(env.source), env.size, c->size);
    zg_startup_guard_phase(guard, "MPI_Comm_dup, the first collective of the communicator's set-up",
                           "that every rank got past MPI_Init (their logs), and the network between the nodes "
                           "(Open MPI: OMPI_MCA_btl_tcp_if_include)");
    ZG_CHECK_MPI(c, "init", MPI_Comm_dup(MPI_COMM_WORLD, &m->comm));
    ZG_CHECK_MPI(c, "init", MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN));
    MPI_Comm local;
    ZG_CHECK_MPI(c, "init", MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local));
    ZG_CHECK_MPI(c, "init", MPI_Comm_rank(local, &c->local_rank));
    ZG_CHECK_MPI(c, "init", MPI_Comm_free(&local));
    if (c->size > 1) zg_log_set_rank(c->rank);
    *out = c;
    return 0;
}
