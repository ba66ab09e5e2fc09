/* The NCCL communicator's collective watchdog, on one GPU (a one-rank communicator).
 *
 * A peer that stops (SIGSTOP) leaves this rank's collective unfinished while its main thread is
 * blocked somewhere no communicator poll runs: in a stream synchronisation, or in launches that wait
 * for room in a full launch queue. Here that state is made without a peer: the compute stream waits
 * on a host word that is never written (cuStreamWaitValue32), so a collective ordered after it never
 * finishes. Each stuck case runs in a child (this executable started again with --stuck MODE), which
 * must end within the timeout plus a margin, with exit status 1 and the one-line
 * "rank 0: ... has not finished" report, instead of hanging. (Without a watchdog both stuck children
 * hang. The first watchdog, which queried CUDA events, passes here too, yet did not fire for a
 * stopped peer on 4 GPUs: this test does not make every state of that hang; see comm_nccl.c.)
 *
 *   normal     2000 collectives with waits, then idle for longer than the timeout: the watchdog
 *              retires finished collectives and does not fire (the child would exit 1).
 *   exit       exit() without destroying the communicator: the process ends with its own status.
 *   sync       one stuck all-reduce, 200000 small copies queued behind it, then cudaStreamSynchronize.
 *   enqueue    stuck, then 100000 all-reduces issued without waiting (NCCL's launches fill the queue). */
#define _GNU_SOURCE
#include "core/error.h"
#include "dist/comm.h"
#include "testutil.h"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_S 3.0

typedef CUresult (*wait_value32_fn)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);

static int check_cuda(cudaError_t e, const char *call) {
    if (e == cudaSuccess) return 0;
    fprintf(stderr, "child: %s failed: %s\n", call, cudaGetErrorString(e));
    return 1;
}
#define CK(call)                                                                                                       \
    do {                                                                                                               \
        if (check_cuda((call), #call)) return 2;                                                                       \
    } while (0)

/* The child: returns its exit status when it is not ended by the watchdog. */
static int child_main(const char *mode) {
    cudaStream_t compute;
    CK(cudaSetDevice(0));
    CK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    zg_comm_config cfg = {.backend = "nccl", .timeout_s = TIMEOUT_S, .compute_stream = compute};
    zg_comm *c = NULL;
    if (zg_comm_create(&c, &cfg) != 0) {
        fprintf(stderr, "child: %s\n", zg_error_message());
        return 2;
    }
    const size_t n = 1024;
    float *d = NULL, *h = calloc(n, sizeof *h);
    CK(cudaMalloc((void **)&d, n * sizeof *d));
    for (size_t i = 0; i < n; i++) h[i] = (float)i;
    CK(cudaMemcpy(d, h, n * sizeof *d, cudaMemcpyHostToDevice));

    if (strcmp(mode, "normal") == 0) {
        for (int k = 0; k < 2000; k++) zg_comm_wait(c, zg_comm_iall_reduce(c, d, d, n, ZG_F32, ZG_COMM_SUM));
        double v = 1.0;
        zg_comm_all_reduce_host_f64(c, &v, 1, ZG_COMM_SUM);
        CK(cudaStreamSynchronize(compute));
        CK(cudaMemcpy(h, d, n * sizeof *d, cudaMemcpyDeviceToHost));
        int bad = v != 1.0;
        for (size_t i = 0; i < n; i++) bad |= h[i] != (float)i; /* one rank: a sum is the identity */
        struct timespec ts = {(time_t)(2 * TIMEOUT_S), 0};
        nanosleep(&ts, NULL); /* the watchdog would end the process here if it kept a finished entry */
        zg_comm_destroy(c);
        cudaFree(d);
        free(h);
        return bad ? 3 : 0;
    }

    if (strcmp(mode, "exit") == 0) { /* leaves without destroying the communicator (an error path's exit) */
        for (int k = 0; k < 100; k++) zg_comm_wait(c, zg_comm_iall_reduce(c, d, d, n, ZG_F32, ZG_COMM_SUM));
        exit(5);
    }

    /* the compute stream waits for a host word that stays 0 */
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPointByVersion("cuStreamWaitValue32", &fn, 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || !fn) return 2;
    uint32_t *word = NULL;
    void *word_dev = NULL;
    CK(cudaHostAlloc((void **)&word, sizeof *word, cudaHostAllocMapped));
    *word = 0;
    CK(cudaHostGetDevicePointer(&word_dev, word, 0));
    if (((wait_value32_fn)fn)((CUstream)compute, (CUdeviceptr)(uintptr_t)word_dev, 1, CU_STREAM_WAIT_VALUE_GEQ) !=
        CUDA_SUCCESS)
        return 2;
    zg_comm_iall_reduce(c, d, d, n, ZG_F32, ZG_COMM_SUM); /* never finishes, never waited on */
    if (strcmp(mode, "sync") == 0) {
        for (int k = 0; k < 200000; k++) CK(cudaMemcpyAsync(d + (k % 2), d + 2, 4, cudaMemcpyDeviceToDevice, compute));
        CK(cudaStreamSynchronize(compute));
    } else {
        for (int k = 0; k < 100000; k++) {
            zg_comm_req *r2 = zg_comm_iall_reduce(c, d, d, n, ZG_F32, ZG_COMM_SUM);
            zg_comm_test(c, r2); /* never waited on: the point is to keep enqueuing */
        }
        CK(cudaDeviceSynchronize());
    }
    fprintf(stderr, "child: returned from a synchronisation that cannot finish\n");
    return 4;
}

/* Runs this executable with --stuck MODE; returns its wait status (-1: still running after limit_s,
 * then killed) and its stderr in err. */
static int run_child(const char *self, const char *mode, double limit_s, char *err, size_t cap, double *took) {
    char path[] = "/tmp/zgpt_watchdog_XXXXXX";
    int fd = mkstemp(path);
    ZT_CHECK(fd >= 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd, 2);
        execl(self, self, "--stuck", mode, (char *)NULL);
        _exit(127);
    }
    int st = 0, done = 0;
    for (;;) {
        pid_t p = waitpid(pid, &st, WNOHANG);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        *took = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (p == pid) {
            done = 1;
            break;
        }
        if (*took > limit_s) break;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    ssize_t len = pread(fd, err, cap - 1, 0);
    err[len > 0 ? len : 0] = '\0';
    close(fd);
    unlink(path);
    return done ? st : -1;
}

static const char *g_self;

static void test_normal(void) {
    char err[8192];
    double took = 0;
    int st = run_child(g_self, "normal", 120, err, sizeof err, &took);
    ZT_CHECK_MSG(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "normal run: status %d after %.1f s; stderr: %s", st,
                 took, err);
}

static void test_exit_without_destroy(void) {
    char err[8192];
    double took = 0;
    int st = run_child(g_self, "exit", 120, err, sizeof err, &took);
    ZT_CHECK_MSG(
        st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 5,
        "exit without destroy: status %d (want exit 5; a signal means the watchdog faulted at exit); stderr: %s", st,
        err);
}

static void stuck(const char *mode) {
    char err[8192];
    double took = 0;
    int st = run_child(g_self, mode, TIMEOUT_S + 30, err, sizeof err, &took);
    ZT_CHECK_MSG(st >= 0, "%s: still running after %.0f s (timeout %.0f s): the watchdog did not end it; stderr: %s",
                 mode, took, TIMEOUT_S, err);
    if (st < 0) return;
    ZT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: wait status %d, expected exit 1; stderr: %s", mode, st,
                 err);
    /* the watchdog's report, or the main thread's own poll when NCCL answered "in progress" */
    ZT_CHECK_MSG(strstr(err, "rank 0: all_reduce(sum) has not finished") ||
                     strstr(err, "rank 0: all_reduce(sum) timed out"),
                 "%s: no report naming the rank and the collective; stderr: %s", mode, err);
    ZT_CHECK_MSG(took >= TIMEOUT_S - 0.5, "%s: ended after %.1f s, before the %.0f s timeout", mode, took, TIMEOUT_S);
    printf("  %s: ended after %.1f s (timeout %.0f s): %s", mode, took, TIMEOUT_S,
           strstr(err, "rank 0:") ? strstr(err, "rank 0:") : err);
}
static void test_stuck_sync(void) { stuck("sync"); }
static void test_stuck_enqueue(void) { stuck("enqueue"); }

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--stuck") == 0) return child_main(argv[2]);
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        fprintf(stderr, "no CUDA device visible: this test needs a GPU\n");
        return 1;
    }
    /* the parent makes no CUDA context: each child starts clean */
    g_self = "/proc/self/exe";
    static char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k > 0) {
        self[k] = '\0';
        g_self = self;
    }
    zt_run("watchdog_quiet_when_collectives_finish", test_normal);
    zt_run("watchdog_harmless_at_exit_without_destroy", test_exit_without_destroy);
    zt_run("watchdog_ends_rank_blocked_in_sync", test_stuck_sync);
    zt_run("watchdog_ends_rank_blocked_in_enqueue", test_stuck_enqueue);
    return zt_finish();
}
