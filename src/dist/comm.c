/* Backend-independent part of the communicator: argument checks, blocking forms, backend choice,
 * dtype conversions. */
#include "dist/comm.h"

#include "core/error.h"
#include "dist/launch.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double zg_comm_default_timeout(double cfg_timeout) {
    if (cfg_timeout > 0) return cfg_timeout;
    const char *e = getenv("ZGPT_COMM_TIMEOUT");
    if (e && *e) {
        char *end = NULL;
        double v = strtod(e, &end);
        if (end && *end == '\0' && v > 0) return v;
    }
    return 300.0;
}

int zg_comm_create(zg_comm **out, const zg_comm_config *cfg) {
    *out = NULL;
    const char *name = cfg && cfg->backend ? cfg->backend : "auto";
    zg_launch_env env;
    zg_launch_env_detect(&env);
    zg_comm_config c = {0};
    if (cfg) c = *cfg;
    if (strcmp(name, "auto") == 0) {
        if (env.size <= 1 && env.source != ZG_LAUNCH_SRC_ZGPT_GPU)
            name = "single";
        else if (env.source == ZG_LAUNCH_SRC_ZGPT_GPU || (c.be && c.be->device >= 0))
            name = "nccl";
        else
            name = "mpi";
    }
    /* MPI_Init and the set-up collectives have no deadline of their own: a guard thread gives them one */
    zg_startup_guard guard = {0};
    if (strcmp(name, "mpi") == 0 || strcmp(name, "nccl") == 0) {
        double bound = 0;
        if (zg_startup_timeout(zg_comm_default_timeout(c.timeout_s), &bound) != 0) return -1;
        if (zg_startup_guard_arm(&guard, bound, env.rank, env.size, zg_launch_src_name(env.source), c.stop_flag) != 0)
            return -1;
        c.startup = &guard;
    }
    int rc;
    if (strcmp(name, "single") == 0) {
        if (env.size > 1)
            return zg_errorf("the launcher started %d ranks (%s) but the single-process communicator was "
                             "requested",
                             env.size, zg_launch_src_name(env.source));
        rc = zg_comm_single_create(out, &c);
    } else if (strcmp(name, "mpi") == 0) {
#ifdef ZGPT_WITH_MPI
        rc = zg_comm_mpi_create(out, &c);
#else
        zg_startup_guard_disarm(&guard);
        return zg_errorf("started with %d ranks (%s) but this zgpt was built without MPI; rebuild with "
                         "Open MPI installed (libopenmpi-dev) or use --gpus on a CUDA build",
                         env.size, zg_launch_src_name(env.source));
#endif
    } else if (strcmp(name, "nccl") == 0) {
#ifdef ZGPT_WITH_NCCL
        rc = zg_comm_nccl_create(out, &c);
#else
        zg_startup_guard_disarm(&guard);
        return zg_errorf("the NCCL communicator needs a CUDA build of zgpt with NCCL (libnccl-dev)");
#endif
    } else {
        return zg_errorf("unknown communicator '%s' (expected auto, single, mpi or nccl)", name);
    }
    zg_startup_guard_disarm(&guard);
    if (rc == 0 && (*out)->size > 1) {
        zg_log_set_rank((*out)->rank);
        if (zg_heartbeat_attach(&(*out)->hb, (*out)->rank) != 0) {
            zg_comm_destroy(*out);
            *out = NULL;
            return -1;
        }
    }
    return rc;
}

void zg_comm_destroy(zg_comm *c) {
    if (!c) return;
    zg_heartbeat_free(&c->hb);
    c->ops->destroy(c);
}

const char *zg_comm_op_name(zg_comm_op op) { return op == ZG_COMM_MAX ? "max" : "sum"; }

/* Every collective passes here first: the count (statistics, tests) and the launcher's heartbeat,
 * which names a rank that stopped arriving (src/dist/heartbeat.h). */
static void collective_started(zg_comm *c) {
    c->n_collectives++;
    zg_heartbeat_beat(&c->hb, c->n_collectives);
}

static void check_root(zg_comm *c, int root, const char *what) {
    if (root < 0 || root >= c->size) ZG_FATAL("rank %d: %s: root %d outside [0, %d)", c->rank, what, root, c->size);
}

static int ranges_overlap(const void *a, size_t na, const void *b, size_t nb) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + nb && y < x + na;
}

zg_comm_req *zg_comm_iall_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op) {
    size_t es = zg_dtype_size(dt);
    if (send != recv && ranges_overlap(send, n * es, recv, n * es))
        ZG_FATAL("rank %d: all_reduce: partially overlapping buffers", c->rank);
    collective_started(c);
    return c->ops->all_reduce(c, send, recv, n, dt, op);
}

zg_comm_req *zg_comm_ireduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op, int root) {
    check_root(c, root, "reduce");
    size_t es = zg_dtype_size(dt);
    if (c->rank == root && send != recv && ranges_overlap(send, n * es, recv, n * es))
        ZG_FATAL("rank %d: reduce: partially overlapping buffers", c->rank);
    collective_started(c);
    return c->ops->reduce(c, send, recv, n, dt, op, root);
}

zg_comm_req *zg_comm_ireduce_scatter(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    size_t es = zg_dtype_size(dt);
    if (ranges_overlap(send, count * es * (size_t)c->size, recv, count * es))
        ZG_FATAL("rank %d: reduce_scatter: send and recv overlap", c->rank);
    collective_started(c);
    return c->ops->reduce_scatter(c, send, recv, count, dt);
}

zg_comm_req *zg_comm_iall_gather(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    size_t es = zg_dtype_size(dt);
    const char *mine = (const char *)recv + (size_t)c->rank * count * es;
    if ((const char *)send != mine && ranges_overlap(send, count * es, recv, count * es * (size_t)c->size))
        ZG_FATAL("rank %d: all_gather: send overlaps recv other than at this rank's slice", c->rank);
    collective_started(c);
    return c->ops->all_gather(c, send, recv, count, dt);
}

zg_comm_req *zg_comm_ibroadcast(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root) {
    check_root(c, root, "broadcast");
    collective_started(c);
    return c->ops->broadcast(c, buf, n, dt, root);
}

void zg_comm_wait(zg_comm *c, zg_comm_req *req) {
    if (req) c->ops->wait(c, req);
}

int zg_comm_test(zg_comm *c, zg_comm_req *req) { return req ? c->ops->test(c, req) : 1; }

void zg_comm_all_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op) {
    zg_comm_wait(c, zg_comm_iall_reduce(c, send, recv, n, dt, op));
}
void zg_comm_reduce(zg_comm *c, const void *send, void *recv, size_t n, zg_dtype dt, zg_comm_op op, int root) {
    zg_comm_wait(c, zg_comm_ireduce(c, send, recv, n, dt, op, root));
}
void zg_comm_reduce_scatter(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    zg_comm_wait(c, zg_comm_ireduce_scatter(c, send, recv, count, dt));
}
void zg_comm_all_gather(zg_comm *c, const void *send, void *recv, size_t count, zg_dtype dt) {
    zg_comm_wait(c, zg_comm_iall_gather(c, send, recv, count, dt));
}
void zg_comm_broadcast(zg_comm *c, void *buf, size_t n, zg_dtype dt, int root) {
    zg_comm_wait(c, zg_comm_ibroadcast(c, buf, n, dt, root));
}
void zg_comm_barrier(zg_comm *c) {
    collective_started(c);
    zg_comm_wait(c, c->ops->barrier(c));
}
void zg_comm_group_begin(zg_comm *c) {
    if (c->ops->group_begin) c->ops->group_begin(c);
}
void zg_comm_group_end(zg_comm *c) {
    if (c->ops->group_end) c->ops->group_end(c);
}

void zg_comm_all_reduce_host_f64(zg_comm *c, double *vals, int n, zg_comm_op op) {
    collective_started(c);
    c->ops->all_reduce_host_f64(c, vals, n, op);
}
void zg_comm_broadcast_host(zg_comm *c, void *buf, size_t bytes, int root) {
    check_root(c, root, "broadcast_host");
    collective_started(c);
    c->ops->broadcast_host(c, buf, bytes, root);
}
void zg_comm_all_gather_host(zg_comm *c, const void *mine, void *all, size_t bytes) {
    char *dst = all;
    memmove(dst + (size_t)c->rank * bytes, mine, bytes);
    for (int r = 0; r < c->size; r++) zg_comm_broadcast_host(c, dst + (size_t)r * bytes, bytes, r);
}

int zg_comm_any(zg_comm *c, int flag) {
    double v = flag ? 1.0 : 0.0;
    zg_comm_all_reduce_host_f64(c, &v, 1, ZG_COMM_MAX);
    return v != 0.0;
}

/* ---- conversions ------------------------------------------------------------------------- */

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (au < 0x38800000u) { /* subnormal or zero in fp16 */
        if (au < 0x33000000u) return (uint16_t)sign;
        uint32_t e = au >> 23, man = (au & 0x7fffffu) | 0x800000u;
        /* value = man * 2^(e-150); the fp16 subnormal unit is 2^-24, so q = man * 2^(e-126) */
        uint32_t sh = 126 - e; /* 14..24 */
        uint32_t q = man >> sh, rem = man & ((1u << sh) - 1), halfway = 1u << (sh - 1);
        if (rem > halfway || (rem == halfway && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = au + 0xfffu + ((au >> 13) & 1u); /* round to nearest even on the 13 dropped bits */
    uint32_t h = ((r >> 13) - (112u << 10));
    if (h >= 0x7c00u) h = 0x7c00u;
    return (uint16_t)(sign | h);
}

void zg_comm_to_f32(float *dst, const void *src, zg_dtype dt, size_t n) {
    const uint16_t *s = src;
    switch (dt) {
    case ZG_F32: memmove(dst, src, n * 4); break;
    case ZG_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s[i]);
        break;
    case ZG_F16:
        for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
        break;
    }
}

void zg_comm_from_f32(void *dst, zg_dtype dt, const float *src, size_t n) {
    uint16_t *d = dst;
    switch (dt) {
    case ZG_F32: memmove(dst, src, n * 4); break;
    case ZG_BF16:
        for (size_t i = 0; i < n; i++) d[i] = f32_to_bf16(src[i]);
        break;
    case ZG_F16:
        for (size_t i = 0; i < n; i++) d[i] = f32_to_f16(src[i]);
        break;
    }
}

void zg_comm_fatal_reportv(const zg_comm *c, const char *file, int line, const char *fmt, va_list ap) {
    char msg[1024], who[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* under zgpt's launcher: which ranks this one was waiting for (marked for the launcher too) */
    if (zg_heartbeat_blame((zg_heartbeat *)&c->hb, who, sizeof who) > 0)
        zg_fatal_report(file, line, "rank %d: %s; %s", c->rank, msg, who);
    else
        zg_fatal_report(file, line, "rank %d: %s", c->rank, msg);
}
