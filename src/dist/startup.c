/* The start-up guard: see startup.h. No file-level state: everything the thread reads is in the guard,
 * which the caller keeps alive until disarm has joined the thread. */
#include "dist/startup.h"

#include "core/clock.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int zg_startup_timeout(double comm_timeout_s, double *out) {
    const char *e = getenv("ZGPT_STARTUP_TIMEOUT");
    if (e && *e) {
        char *end = NULL;
        double v = strtod(e, &end);
        if (!end || *end != '\0' || !(v > 0))
            return zg_errorf("ZGPT_STARTUP_TIMEOUT='%s' is not a number of seconds > 0; unset it for the default "
                             "(the larger of 120 s and ZGPT_COMM_TIMEOUT)",
                             e);
        *out = v;
        return 0;
    }
    *out = comm_timeout_s > 120.0 ? comm_timeout_s : 120.0;
    return 0;
}

static const char *signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGUSR1 ? "SIGUSR1" : "a stop signal";
}

/* Runs with g->mu held; returns only while start-up may still finish. The log rank ("zgpt[rank R]") is
 * set only here, just before the process ends: the communicator sets it once the ranks are known. */
static void guard_check(zg_startup_guard *g) {
    double now = zg_now_s();
    int sig = g->stop_flag ? (int)*g->stop_flag : 0;
    if (sig && g->stop_seen_s < 0) g->stop_seen_s = now;
    int stop = sig && now - g->stop_seen_s > ZG_STARTUP_SIGNAL_GRACE_S, late = now - g->start_s > g->bound_s;
    if ((stop || late) && g->size > 1) zg_log_set_rank(g->rank);
    if (stop) {
        zg_fatal_report(__FILE__, __LINE__,
                        "rank %d of %d (%s): %s during start-up, still waiting in %s %.0f s later; ending this "
                        "rank (nothing was written yet)",
                        g->rank, g->size, g->launcher, signal_name(sig), g->phase, ZG_STARTUP_SIGNAL_GRACE_S);
        _exit(128 + sig); /* not exit(): MPI's atexit teardown can block where start-up is stuck */
    }
    if (late) {
        zg_fatal_report(__FILE__, __LINE__,
                        "rank %d of %d (%s): start-up did not finish within %g s: still waiting in %s; check %s "
                        "(ZGPT_STARTUP_TIMEOUT sets this bound)",
                        g->rank, g->size, g->launcher, g->bound_s, g->phase, g->hint);
        _exit(1);
    }
}

static void *guard_main(void *arg) {
    zg_startup_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->done) {
        guard_check(g);
        struct timespec ts;
        zg_realtime_after_ms(&ts, 100);
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int zg_startup_guard_arm(zg_startup_guard *g, double bound_s, int rank, int size, const char *launcher,
                         volatile sig_atomic_t *stop_flag) {
    memset(g, 0, sizeof *g);
    g->phase = "the communicator's start-up";
    g->hint = "that every rank was started and is running";
    g->start_s = zg_now_s();
    g->bound_s = bound_s;
    g->stop_seen_s = -1;
    g->stop_flag = stop_flag;
    g->rank = rank;
    g->size = size;
    g->launcher = launcher;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    int rc = pthread_create(&g->thread, NULL, guard_main, g);
    if (rc != 0) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        return zg_errorf("cannot start the start-up watchdog thread: %s", strerror(rc));
    }
    g->running = 1;
    return 0;
}

void zg_startup_guard_phase(zg_startup_guard *g, const char *phase, const char *hint) {
    if (!g || !g->running) return;
    pthread_mutex_lock(&g->mu);
    g->phase = phase;
    g->hint = hint;
    pthread_mutex_unlock(&g->mu);
}

void zg_startup_guard_disarm(zg_startup_guard *g) {
    if (!g->running) return;
    pthread_mutex_lock(&g->mu);
    g->done = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    g->running = 0;
}
