/* The single-process communicator: world size 1, every collective is a copy (or nothing). */
#include "dist/comm.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

struct zg_comm_req {
    int unused;
};

/* A non-NULL handle that needs no freeing: waiting on it is a no-op. */
static zg_comm_req single_done;

static void single_copy(zg_comm *c, void *dst, const void *src, size_t bytes) {
    if (dst == src || bytes == 0) return;
    zg_backend *be = c->impl;
    if (be)
        be->ops->copy(be, dst, src, bytes);
    else
        memcpy(dst, src, bytes);
}

static void single_destroy(zg_comm *c) { free(c); }

static zg_comm_req *single_all_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op) {
    (void)op;
    single_copy(c, recv, send, n * zg_dtype_size(dt));
    return &single_done;
}
static zg_comm_req *single_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op,
                                  int root) {
    (void)op;
    (void)root;
    single_copy(c, recv, send, n * zg_dtype_size(dt));
    return &single_done;
}
static zg_comm_req *single_reduce_scatter(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    single_copy(c, recv, send, count * zg_dtype_size(dt));
    return &single_done;
}
static zg_comm_req *single_all_gather(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    single_copy(c, recv, send, count * zg_dtype_size(dt));
    return &single_done;
}
static zg_comm_req *single_broadcast(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root) {
    (void)c;
    (void)buf;
    (void)n;
    (void)dt;
    (void)root;
    return &single_done;
}
static zg_comm_req *single_barrier(zg_comm *c) {
    (void)c;
    return &single_done;
}
static void single_wait(zg_comm *c, zg_comm_req *req) {
    (void)c;
    if (req != &single_done) ZG_FATAL("single communicator: wait on a foreign handle");
}
static int single_test(zg_comm *c, zg_comm_req *req) {
    (void)c;
    (void)req;
    return 1;
}
static void single_all_reduce_host_f64(zg_comm *c, double *vals, int n, zg_comm_op op) {
    (void)c;
    (void)vals;
    (void)n;
    (void)op;
}
static void single_broadcast_host(zg_comm *c, void *buf, size_t bytes, int root) {
    (void)c;
    (void)buf;
    (void)bytes;
    (void)root;
}

static const zg_comm_ops single_ops = {
    .name = "single",
    .destroy = single_destroy,
    .all_reduce = single_all_reduce,
    .reduce = single_reduce,
    .reduce_scatter = single_reduce_scatter,
    .all_gather = single_all_gather,
    .broadcast = single_broadcast,
    .barrier = single_barrier,
    .wait = single_wait,
    .test = single_test,
    .all_reduce_host_f64 = single_all_reduce_host_f64,
    .broadcast_host = single_broadcast_host,
    .group_begin = NULL,
    .group_end = NULL,
};

int zg_comm_single_create(zg_comm **out, const zg_comm_config *cfg) {
    zg_comm *c = zg_calloc(1, sizeof *c);
    c->ops = &single_ops;
    c->rank = 0;
    c->size = 1;
    c->local_rank = 0;
    c->timeout_s = zg_comm_default_timeout(cfg ? cfg->timeout_s : 0);
    c->impl = cfg ? cfg->be : NULL;
    c->device_buffers = cfg && cfg->be && cfg->be->device >= 0;
    *out = c;
    return 0;
}
