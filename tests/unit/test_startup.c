/* The start-up guard (src/dist/startup.h): the bound ($ZGPT_STARTUP_TIMEOUT, else the larger of 120 s
 * and the collective timeout; a bad value refused by name); a guard disarmed in time lets the process
 * go on; one whose start-up never finishes ends the process with status 1 and one line naming the rank
 * and the step; a stop signal ends it with 128 + the signal once the grace has passed. */
#include "core/error.h"
#include "dist/startup.h"
#include "testutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void test_bound(void) {
    double b = 0;
    ZT_CHECK(unsetenv("ZGPT_STARTUP_TIMEOUT") == 0);
    ZT_CHECK(zg_startup_timeout(300, &b) == 0 && b == 300);
    ZT_CHECK(zg_startup_timeout(5, &b) == 0 && b == 120);
    ZT_CHECK(setenv("ZGPT_STARTUP_TIMEOUT", "7.5", 1) == 0);
    ZT_CHECK(zg_startup_timeout(300, &b) == 0 && b == 7.5);
    const char *bad[] = {"soon", "0", "-3", "5s", ""};
    for (int i = 0; i < 4; i++) {
        ZT_CHECK(setenv("ZGPT_STARTUP_TIMEOUT", bad[i], 1) == 0);
        ZT_CHECK_MSG(zg_startup_timeout(300, &b) == -1 && strstr(zg_error_message(), "ZGPT_STARTUP_TIMEOUT"),
                     "ZGPT_STARTUP_TIMEOUT='%s' accepted", bad[i]);
        zg_error_clear();
    }
    ZT_CHECK(setenv("ZGPT_STARTUP_TIMEOUT", bad[4], 1) == 0); /* empty: the default */
    ZT_CHECK(zg_startup_timeout(300, &b) == 0 && b == 300);
    ZT_CHECK(unsetenv("ZGPT_STARTUP_TIMEOUT") == 0);
}

/* Runs fn in a child with stderr in a pipe: its exit status (or 1000 + signal) and its stderr. */
static int in_child(void (*fn)(void), char *err, size_t cap) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], STDERR_FILENO);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd[0], err + n, cap - 1 - n)) > 0) n += (size_t)r;
    err[n] = '\0';
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void disarmed_in_time(void) {
    zg_startup_guard g;
    if (zg_startup_guard_arm(&g, 5.0, 1, 2, "mpirun", NULL) != 0) _exit(3);
    zg_startup_guard_phase(&g, "MPI_Init_thread", "that every rank runs");
    sleep_ms(300);
    zg_startup_guard_disarm(&g);
    zg_startup_guard_disarm(&g); /* twice: a no-op */
    sleep_ms(300);               /* the thread is gone: nothing fires */
}

static void never_finishes(void) {
    zg_startup_guard g;
    if (zg_startup_guard_arm(&g, 0.3, 1, 2, "srun", NULL) != 0) _exit(3);
    zg_startup_guard_phase(&g, "MPI_Init_thread", "that every rank runs");
    sleep(30); /* start-up stuck */
    _exit(4);
}

static volatile sig_atomic_t g_flag; /* the test's stand-in for a caller's signal flag */

static void stopped_by_signal(void) {
    zg_startup_guard g;
    if (zg_startup_guard_arm(&g, 60.0, 0, 2, "mpirun", &g_flag) != 0) _exit(3);
    g_flag = SIGTERM;
    sleep((unsigned)ZG_STARTUP_SIGNAL_GRACE_S + 20); /* start-up stuck after the signal */
    _exit(4);
}

static void test_guard(void) {
    char err[4096];
    ZT_CHECK(in_child(disarmed_in_time, err, sizeof err) == 0 && err[0] == '\0');
    int st = in_child(never_finishes, err, sizeof err);
    ZT_CHECK_MSG(st == 1, "stuck start-up: status %d: %s", st, err);
    ZT_CHECK_MSG(strstr(err, "zgpt[rank 1]: fatal: ") && strstr(err, "rank 1 of 2 (srun): start-up did not finish "
                                                                     "within 0.3 s: still waiting in MPI_Init_thread; "
                                                                     "check that every rank runs"),
                 "stuck start-up: %s", err);
    ZT_CHECK(strchr(err, '\n') == err + strlen(err) - 1); /* one line */
    st = in_child(stopped_by_signal, err, sizeof err);
    ZT_CHECK_MSG(st == 128 + SIGTERM, "signal during start-up: status %d: %s", st, err);
    ZT_CHECK_MSG(strstr(err, "rank 0 of 2 (mpirun): SIGTERM during start-up"), "signal: %s", err);
}

int main(void) {
    zt_run("bound", test_bound);
    zt_run("guard", test_guard);
    return zt_finish();
}
