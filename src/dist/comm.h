/* The communicator: collectives between the data-parallel ranks of one training job.
 *
 * Backends (one table, zg_comm_ops):
 *  - single: world size 1; collectives are copies (host memcpy, or the backend's copy for device
 *    buffers when created with a backend).
 *  - mpi (src/dist/comm_mpi.c, ZGPT_WITH_MPI): host buffers, non-blocking MPI collectives polled
 *    with a deadline.
 *  - nccl (src/dist/comm_nccl.c, ZGPT_WITH_NCCL: a CUDA build where NCCL was found): device buffers, collectives on the communicator's
 *    own CUDA stream, ordered after the compute stream's work by an event; completion polled together
 *    with ncclCommGetAsyncError.
 *
 * Buffers and types
 *  - `n`/`count` are ELEMENTS of `dt` (zg_dtype: fp32, bf16, fp16). Sums of bf16/fp16 accumulate in
 *    fp32 on the CPU backends (the MPI backend converts to fp32, reduces, converts back).
 *  - all_reduce and reduce may work in place (send == recv). broadcast is always in place.
 *  - reduce_scatter: send holds size*count elements; rank r receives the sum of the slices
 *    [r*count, (r+1)*count). send and recv must not overlap.
 *  - all_gather: every rank contributes `count` elements; recv gets size*count, rank r's at
 *    [r*count, ...). In place when send == recv + rank*count (NCCL's convention).
 *  - reduce: the sum (or max) lands in recv on `root` only; recv is not written on other ranks.
 *
 * Asynchronous handles
 *  The zg_comm_i* functions start a collective and return a handle; zg_comm_wait() completes it and
 *  frees the handle. The buffers must stay untouched until then. The blocking forms are start+wait.
 *  On NCCL, "complete" also means: work enqueued later on the compute stream runs after it.
 *
 * Errors
 *  A collective that fails, or does not complete within the communicator's timeout, ends the
 *  process (and with it the job) with "zgpt[rank R]: fatal: file:line: rank R: <op> timed out after
 *  S s" or "... <op> failed: <reason>". Every rank must call the same collectives in the same order
 *  with the same counts; argument errors (bad root, overlapping buffers) are fatal too. Nothing here
 *  returns an error code for a collective: there is no state a caller could recover into.
 */
#ifndef ZG_DIST_COMM_H
#define ZG_DIST_COMM_H

#include "backend/backend.h"
#include "dist/heartbeat.h"
#include "dist/startup.h"

#include <signal.h>
#include <stdarg.h>
#include <stddef.h>

typedef enum { ZG_COMM_SUM = 0, ZG_COMM_MAX = 1 } zg_comm_op;

typedef struct zg_comm zg_comm;
typedef struct zg_comm_req zg_comm_req; /* backend-defined; freed by zg_comm_wait() */

typedef struct {
    const char *name; /* "single", "mpi", "nccl" */
    void (*destroy)(zg_comm *c);
    zg_comm_req *(*all_reduce)(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op);
    zg_comm_req *(*reduce)(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op, int root);
    zg_comm_req *(*reduce_scatter)(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt);
    zg_comm_req *(*all_gather)(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt);
    zg_comm_req *(*broadcast)(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root);
    zg_comm_req *(*barrier)(zg_comm *c);
    void (*wait)(zg_comm *c, zg_comm_req *req);
    /* Non-blocking check (also drives MPI's progress): 1 when complete; the handle stays valid and
     * must still be waited on (which is then immediate). */
    int (*test)(zg_comm *c, zg_comm_req *req);
    /* Host values (any backend, blocking): all-reduce of n doubles, broadcast of bytes. */
    void (*all_reduce_host_f64)(zg_comm *c, double *vals, int n, zg_comm_op op);
    void (*broadcast_host)(zg_comm *c, void *buf, size_t bytes, int root);
    /* Optional (may be NULL): collectives issued between group_begin and group_end are launched
     * together (NCCL groups); the handles are still waited on one by one. */
    void (*group_begin)(zg_comm *c);
    void (*group_end)(zg_comm *c);
} zg_comm_ops;

struct zg_comm {
    const zg_comm_ops *ops;
    int rank, size;
    int local_rank;       /* rank within this machine (selects the GPU) */
    double timeout_s;     /* per collective */
    int device_buffers;   /* 1: buffers are device memory (NCCL) */
    size_t scratch_bytes; /* communicator-owned staging memory currently allocated */
    size_t scratch_peak;
    long n_collectives; /* collectives started (statistics, tests, the launcher's heartbeat) */
    zg_heartbeat hb;    /* attached when started by zgpt's launcher (src/dist/heartbeat.h) */
    void *impl;
};

typedef struct {
    const char *backend;  /* "auto", "single", "mpi", "nccl" */
    double timeout_s;     /* <= 0: $ZGPT_COMM_TIMEOUT or 300 s */
    zg_backend *be;       /* single: copies go through be->ops->copy when non-NULL; nccl: the CUDA
                            * backend (device, compute stream) */
    void *compute_stream; /* nccl: the cudaStream_t compute work is enqueued on (NULL: the CUDA backend's
                            * stream when be is one, else the legacy default stream) */
    int max_ctas;         /* nccl: most thread blocks (channels) a collective may use; 0: NCCL's choice.
                            * $NCCL_MAX_CTAS, when set, wins. */
    /* The caller's stop-signal flag (NULL: none): a stop signal during start-up ends the process when
     * start-up does not finish soon after it (dist/startup.h). */
    volatile sig_atomic_t *stop_flag;
    /* Set by zg_comm_create for the backends: the start-up deadline, whose step they name as they go
     * (NULL: unguarded). */
    zg_startup_guard *startup;
} zg_comm_config;

/* Creates the communicator. "auto": nccl when the process was started by zgpt's GPU launcher (or
 * cfg->be is a CUDA backend and the world size is > 1), mpi when an MPI launcher started it with
 * more than one rank, single otherwise. Returns -1 with an error when the backend is not compiled in
 * (e.g. started by mpirun -np 4 but built without MPI) or initialisation fails. Sets the log rank.
 * The mpi and nccl start-ups (MPI_Init, the NCCL id broadcast, the set-up collectives) run under a
 * deadline (dist/startup.h): a start-up that never finishes ends the process naming the rank. */
int zg_comm_create(zg_comm **out, const zg_comm_config *cfg);
void zg_comm_destroy(zg_comm *c);

int zg_comm_single_create(zg_comm **out, const zg_comm_config *cfg);
#ifdef ZGPT_WITH_MPI
int zg_comm_mpi_create(zg_comm **out, const zg_comm_config *cfg);
#endif
#ifdef ZGPT_WITH_NCCL
int zg_comm_nccl_create(zg_comm **out, const zg_comm_config *cfg);
/* A fresh ncclUniqueId as 256 hex characters + NUL (for the launcher's ZGPT_NCCL_ID). */
int zg_comm_nccl_unique_id_hex(char out[257]);
#endif

/* The timeout from cfg or the environment ($ZGPT_COMM_TIMEOUT seconds), default 300. */
double zg_comm_default_timeout(double cfg_timeout);

/* Asynchronous collectives (see the header comment for the buffer rules). */
zg_comm_req *zg_comm_iall_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op);
zg_comm_req *zg_comm_ireduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op, int root);
zg_comm_req *zg_comm_ireduce_scatter(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt);
zg_comm_req *zg_comm_iall_gather(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt);
zg_comm_req *zg_comm_ibroadcast(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root);
void zg_comm_wait(zg_comm *c, zg_comm_req *req); /* NULL is allowed (no-op) */
/* 1 when the collective has completed (wait is then immediate); never blocks. Calling it while
 * computing lets MPI make progress on collectives in flight. */
int zg_comm_test(zg_comm *c, zg_comm_req *req);

/* Blocking forms. */
void zg_comm_all_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op);
void zg_comm_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op, int root);
void zg_comm_reduce_scatter(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt);
void zg_comm_all_gather(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt);
void zg_comm_broadcast(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root);
void zg_comm_barrier(zg_comm *c);
void zg_comm_group_begin(zg_comm *c);
void zg_comm_group_end(zg_comm *c);

/* Host scalars, blocking, any backend: sums/maxima of doubles (losses, norms, overflow flags) and a
 * broadcast of host bytes. */
void zg_comm_all_reduce_host_f64(zg_comm *c, double *vals, int n, zg_comm_op op);
void zg_comm_broadcast_host(zg_comm *c, void *buf, size_t bytes, int root);
/* Every rank's `bytes` of host data, in rank order, into all (size * bytes) on every rank (small
 * records: checkpoint file lists, per-rank status). */
void zg_comm_all_gather_host(zg_comm *c, const void *mine, void *all, size_t bytes);
/* 1 on every rank when `flag` is non-zero on any rank (all-reduce max): overflow/stop agreement. */
int zg_comm_any(zg_comm *c, int flag);

/* fp32 <-> bf16/fp16 host conversions used by the CPU backends (round to nearest even). */
void zg_comm_to_f32(float *dst, const void *src, zg_dtype dt, size_t n);
void zg_comm_from_f32(void *dst, zg_dtype dt, const float *src, size_t n);

/* Name of an op for messages ("all_reduce", ...). */
const char *zg_comm_op_name(zg_comm_op op);

/* For the communicator backends' fatal paths: prints the one fatal line "... file:line: rank R: <msg>"
 * (zg_fatal_report); the backend then aborts its job its own way and exits. */
void zg_comm_fatal_reportv(const zg_comm *c, const char *file, int line, const char *fmt, va_list ap);

#endif
