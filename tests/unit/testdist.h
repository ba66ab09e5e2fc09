/* Set-up and finish of the unit tests that run on every rank of a communicator (the ZeRO tests):
 * the communicator the launch environment gives ("auto": MPI under mpirun, else one rank), a CPU
 * fp32 backend, and an exit status every rank agrees on. Header-only: only these tests link comm. */
#ifndef ZG_TESTDIST_H
#define ZG_TESTDIST_H

#include "backend/backend.h"
#include "core/error.h"
#include "dist/comm.h"
#include "testutil.h"

#include <stdio.h>

/* 0, or 1 after printing the error (return it from main). */
static inline int zt_dist_begin(const char *name, zg_comm **comm, zg_backend **be) {
    zg_comm_config cc = {.backend = "auto"};
    if (zg_comm_create(comm, &cc) != 0) {
        zg_error_print();
        return 1;
    }
    zg_backend_config bc = {"cpu", -1, ZG_F32};
    if (zg_backend_create(be, &bc) != 0) {
        zg_error_print();
        return 1;
    }
    if ((*comm)->rank == 0) printf("%s: world size %d (%s)\n", name, (*comm)->size, (*comm)->ops->name);
    return 0;
}

/* The exit status: non-zero on every rank when any rank failed a check. */
static inline int zt_dist_finish(zg_comm *comm, zg_backend *be) {
    int any = zg_comm_any(comm, zt.failures != 0);
    int rc = zt_finish();
    zg_backend_destroy(be);
    zg_comm_destroy(comm);
    return any ? 1 : rc;
}

#endif
