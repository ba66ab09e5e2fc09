/* A deadline over a communicator's start-up (MPI_Init, the NCCL id broadcast, the first collectives).
 *
 * Once a communicator exists, every collective is waited on with a deadline (ZGPT_COMM_TIMEOUT, see
 * comm.h). Before that, MPI_Init and the blocking collectives that set the communicator up have none:
 * a rank that never starts, stops before MPI_Init or dies in it, or a launcher's PMIx server that is
 * gone, leaves the others inside MPI (seen: 73 minutes at 100% CPU in libopen-pal under srun, no
 * output). And the trainer's SIGINT/SIGTERM handler only sets a flag read at iteration boundaries, so
 * a rank stuck there also ignored SIGTERM.
 *
 * The guard is a thread armed before MPI_Init and disarmed when the communicator is ready. It makes no
 * MPI call. Every 0.1 s it checks:
 *  - the deadline: past it, it prints one line naming the rank (from the launcher's environment), the
 *    step start-up is waiting in and what to check, and ends the process with _exit(1) (nothing has
 *    been written yet; exit() would run MPI's atexit teardown, which can block in the same place);
 *  - the caller's stop flag (set by its signal handler): a stop signal during start-up gives the
 *    start-up a short grace (ZG_STARTUP_SIGNAL_GRACE_S) to finish, so that the caller's own orderly
 *    stop still runs when it does; otherwise the process ends with status 128 + the signal, with one
 *    line saying so.
 *
 * The bound: $ZGPT_STARTUP_TIMEOUT seconds when set, else the larger of 120 s and the collective
 * timeout (a slow start of many ranks is not a hang, and a job that allows long collectives allows a
 * long start-up too). */
#ifndef ZG_DIST_STARTUP_H
#define ZG_DIST_STARTUP_H

#include <pthread.h>
#include <signal.h>

#define ZG_STARTUP_SIGNAL_GRACE_S 10.0

typedef struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running;              /* the thread was started (and must be joined) */
    int done;                 /* set by disarm */
    const char *phase, *hint; /* what start-up waits for now, what to check (string literals) */
    double start_s, bound_s;
    double stop_seen_s;               /* when the stop flag was first seen set (< 0: not yet) */
    volatile sig_atomic_t *stop_flag; /* the caller's signal flag (NULL: none) */
    int rank, size;                   /* from the launcher's environment */
    const char *launcher;             /* zg_launch_src_name() */
} zg_startup_guard;

/* The start-up bound in seconds for a collective timeout of comm_timeout_s; -1 with an error naming
 * ZGPT_STARTUP_TIMEOUT when it is set to something that is not a number of seconds > 0. */
int zg_startup_timeout(double comm_timeout_s, double *out);

/* Starts the guard for rank/size (launcher: its name, for the message) with bound_s seconds; the
 * stop flag may be NULL. Returns -1 with an error when the thread cannot be started. */
int zg_startup_guard_arm(zg_startup_guard *g, double bound_s, int rank, int size, const char *launcher,
                         volatile sig_atomic_t *stop_flag);
/* What start-up waits for from now on ("MPI_Init_thread"), and what to check when it never ends. A
 * NULL guard is allowed (no-op): backends created without zg_comm_create. */
void zg_startup_guard_phase(zg_startup_guard *g, const char *phase, const char *hint);
/* Stops and joins the thread (no-op when never armed). */
void zg_startup_guard_disarm(zg_startup_guard *g);

#endif
