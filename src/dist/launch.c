/* The launcher: see launch.h. */
#include "dist/launch.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/strutil.h"
#include "dist/heartbeat.h"
#ifdef ZGPT_WITH_CUDA
#include "backend/backend.h"
#include "dist/comm.h"
#endif
#ifdef ZGPT_WITH_MPI
#include <mpi.h> /* only for OPEN_MPI: which mpirun flags apply */
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- environment ------------------------------------------------------------------------- */

static int env_int(const char *name, int *out) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!end || *end != '\0' || v < 0 || v > 1 << 24) return 0;
    *out = (int)v;
    return 1;
}

void zg_launch_env_detect(zg_launch_env *env) {
    memset(env, 0, sizeof *env);
    env->size = 1;
    env->local_size = 1;
    int r, s, lr, ls;
    if (env_int("ZGPT_RANK", &r) && env_int("ZGPT_WORLD_SIZE", &s)) {
        env->source = ZG_LAUNCH_SRC_ZGPT_GPU;
        env->rank = r;
        env->size = s;
        env->local_rank = env_int("ZGPT_LOCAL_RANK", &lr) ? lr : r;
        env->local_size = env_int("ZGPT_LOCAL_WORLD_SIZE", &ls) ? ls : s;
    } else if (env_int("OMPI_COMM_WORLD_RANK", &r) && env_int("OMPI_COMM_WORLD_SIZE", &s)) {
        const char *l = getenv("ZGPT_LAUNCHER");
        env->source = l && strcmp(l, "mpi") == 0 ? ZG_LAUNCH_SRC_ZGPT_MPI : ZG_LAUNCH_SRC_OMPI;
        env->rank = r;
        env->size = s;
        env->local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", &lr) ? lr : 0;
        env->local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", &ls) ? ls : 1;
    } else if ((env_int("PMI_RANK", &r) || env_int("PMIX_RANK", &r)) && env_int("PMI_SIZE", &s)) {
        env->source = ZG_LAUNCH_SRC_PMI;
        env->rank = r;
        env->size = s;
        env->local_rank = env_int("MPI_LOCALRANKID", &lr) ? lr : 0;
        env->local_size = env_int("MPI_LOCALNRANKS", &ls) ? ls : 1;
    } else if (getenv("SLURM_STEP_ID") && env_int("SLURM_PROCID", &r) &&
               (env_int("SLURM_STEP_NUM_TASKS", &s) || env_int("SLURM_NTASKS", &s))) {
        /* Only inside an srun step: a batch script also has SLURM_PROCID=0 and SLURM_NTASKS. */
        env->source = ZG_LAUNCH_SRC_SLURM;
        env->rank = r;
        env->size = s;
        env->local_rank = env_int("SLURM_LOCALID", &lr) ? lr : 0;
        env->local_size = 1;
    }
    if (env->size < 1) env->size = 1;
}

const char *zg_launch_src_name(zg_launch_source s) {
    switch (s) {
    case ZG_LAUNCH_SRC_NONE: return "no launcher";
    case ZG_LAUNCH_SRC_ZGPT_GPU: return "zgpt --gpus";
    case ZG_LAUNCH_SRC_ZGPT_MPI: return "zgpt --nproc";
    case ZG_LAUNCH_SRC_OMPI: return "mpirun";
    case ZG_LAUNCH_SRC_PMI: return "mpiexec";
    case ZG_LAUNCH_SRC_SLURM: return "srun";
    }
    return "?";
}

int zg_launch_check_mpi_bootstrap(const zg_launch_env *env) {
    /* srun --mpi=pmi2 sets PMI_RANK/PMI_SIZE (detected as PMI), --mpi=pmix sets PMIX_RANK; an srun step
     * with neither has no process-management interface at all. */
    if (env->source != ZG_LAUNCH_SRC_SLURM || env->size <= 1 || getenv("PMIX_RANK") || getenv("PMI_FD")) return 0;
    const char *type = getenv("SLURM_MPI_TYPE");
    return zg_errorf("srun started rank %d of %d without PMIx (%s%s), so MPI cannot connect the ranks; run srun "
                     "--mpi=pmix (or set MpiDefault=pmix in slurm.conf, or export SLURM_MPI_TYPE=pmix)",
                     env->rank, env->size, type ? "SLURM_MPI_TYPE=" : "srun --mpi=none", type ? type : "");
}

int zg_launch_parse_gpus(const char *s, int *out) {
    if (strcmp(s, "all") == 0) {
        *out = -1;
        return 0;
    }
    int64_t v;
    if (zg_parse_i64(s, "--gpus", &v) != 0) return zg_error_prefix("--gpus takes N or 'all'");
    if (v < 1 || v > 1024) return zg_errorf("--gpus: %lld is outside 1..1024 (or 'all')", (long long)v);
    *out = (int)v;
    return 0;
}

/* ---- supervision ------------------------------------------------------------------------- */

enum { LINE_CAP = 4096 };

typedef struct {
    char **lines; /* ring of the last `cap` stderr lines */
    int cap, count, next;
} line_ring;

typedef struct {
    pid_t pid;
    int fd[2];     /* stdout, stderr pipes (-1 when closed) */
    char *part[2]; /* partial line per stream */
    size_t part_len[2];
    int exited, status;
} child_proc;

typedef struct {
    child_proc *kids;
    int n_kids;
    int nranks;
    int tagged;       /* 1: output carries mpirun's "[job,rank]<stream>:" tags */
    line_ring *rings; /* per rank */
    char **rank_part; /* tagged: per rank and stream (2r + stream), the line being assembled */
    size_t *rank_part_len;
    int cont_rank[2], cont_stream[2]; /* tagged: whose fragment an overlong raw line broke off (-1 none) */
    line_ring launcher_lines;         /* untagged lines of mpirun itself */
    int first_error_rank;             /* first rank that printed a fatal/error line */
    int reported_rank;                /* rank named by mpirun's own report */
    char reported_why[128];           /* what mpirun said happened to it */
    int abort_rank;                   /* first rank mpirun says called MPI_Abort */
    double grace_s;
    zg_heartbeat hb; /* the workers' progress slots (dist/heartbeat.h) */
    /* taken when a rank first reports a collective timeout, while the culprit is still as it was */
    int snap_rank;       /* the rank that timed out (-1: no snapshot) */
    int64_t *snap_count; /* per rank: collectives started */
    char *snap_state;    /* per rank: process state letter ('T' stopped), '?' unknown */
} supervisor;

static volatile sig_atomic_t g_signal_count = 0;
static volatile sig_atomic_t g_last_signal = 0;

static void on_signal(int sig) {
    g_signal_count++;
    g_last_signal = sig;
}

static void ring_init(line_ring *r, int cap) {
    r->cap = cap;
    r->lines = zg_calloc((size_t)cap, sizeof(char *));
    r->count = r->next = 0;
}
static void ring_push(line_ring *r, const char *s) {
    free(r->lines[r->next]);
    r->lines[r->next] = zg_strdup(s);
    r->next = (r->next + 1) % r->cap;
    if (r->count < r->cap) r->count++;
}
static void ring_print(const line_ring *r, FILE *f, const char *indent) {
    int start = (r->next - r->count + r->cap) % r->cap;
    for (int i = 0; i < r->count; i++) fprintf(f, "%s%s\n", indent, r->lines[(start + i) % r->cap]);
}
static void ring_free(line_ring *r) {
    for (int i = 0; i < r->cap; i++) free(r->lines[i]);
    free(r->lines);
}

/* Parses mpirun's own failure report for the rank it names. */
static void parse_launcher_line(supervisor *s, const char *line) {
    if (s->reported_rank >= 0) return;
    const char *p;
    int a, b, r;
    int sig;
    if ((p = strstr(line, "process rank ")) && sscanf(p, "process rank %d", &r) == 1) {
        s->reported_rank = r;
        const char *q = strstr(p, "exited on signal ");
        if (q && sscanf(q, "exited on signal %d", &sig) == 1)
            snprintf(s->reported_why, sizeof s->reported_why, "killed by signal %d (%s)", sig, strsignal(sig));
    } else if ((p = strstr(line, "Process name: [[")) && sscanf(p, "Process name: [[%d,%d],%d]", &a, &b, &r) == 3)
        s->reported_rank = r;
    else if ((p = strstr(line, "invoked on rank ")) && sscanf(p, "invoked on rank %d", &r) == 1 && s->abort_rank < 0)
        s->abort_rank = r; /* a rank that gave up (e.g. on a timeout): weaker than a rank that died */
}

/* One complete line of rank `rank` on `stream`: echoed, kept for the failure report. */
/* A rank gave up waiting in a collective: record how far every rank got, and whether its process is
 * stopped, before the job is torn down. */
static void snapshot_progress(supervisor *s, int rank) {
    if (s->snap_rank >= 0 || !s->hb.map) return;
    s->snap_rank = rank;
    s->snap_count = zg_calloc((size_t)s->nranks, sizeof *s->snap_count);
    s->snap_state = zg_calloc((size_t)s->nranks, 1);
    for (int r = 0; r < s->nranks; r++) {
        s->snap_count[r] = zg_heartbeat_count(&s->hb, r);
        s->snap_state[r] = zg_heartbeat_state(&s->hb, r);
    }
}

static void emit_rank_line(supervisor *s, int rank, int stream, const char *text) {
    FILE *f = stream == 0 ? stdout : stderr;
    fprintf(f, "%s\n", text);
    fflush(f);
    if (stream == 1) {
        ring_push(&s->rings[rank], text);
        if (s->first_error_rank < 0 && (strstr(text, "fatal") || strstr(text, "error"))) s->first_error_rank = rank;
        /* the communicators' timeout messages (comm_mpi.c, comm_nccl.c) */
        if (strstr(text, "timed out") || strstr(text, "has not finished")) snapshot_progress(s, rank);
    }
}

static void launcher_line(supervisor *s, const char *line) {
    ring_push(&s->launcher_lines, line);
    parse_launcher_line(s, line);
    if (getenv("ZGPT_LAUNCH_VERBOSE")) fprintf(stderr, "%s\n", line);
}

/* mpirun's "[job,rank]<stdout|stderr>:" tag at p: its length, the rank and stream; 0 when none. */
static int parse_tag(const char *p, int *rank, int *stream) {
    int job, r, n = 0;
    char which[8];
    if (p[0] != '[' || sscanf(p, "[%d,%d]<%7[a-z]>:%n", &job, &r, which, &n) != 3 || n == 0) return 0;
    if (strcmp(which, "stdout") == 0)
        *stream = 0;
    else if (strcmp(which, "stderr") == 0)
        *stream = 1;
    else
        return 0;
    *rank = r;
    return n;
}

/* Appends a fragment of rank r's output; ends_line: the fragment ended with a newline. */
static void rank_append(supervisor *s, int r, int stream, const char *text, size_t len, int ends_line) {
    int k = 2 * r + stream;
    if (!s->rank_part[k]) s->rank_part[k] = zg_malloc(LINE_CAP);
    char *buf = s->rank_part[k];
    size_t *n = &s->rank_part_len[k];
    for (size_t i = 0; i < len; i++) {
        if (*n == LINE_CAP - 1) { /* an overlong line: pass it on in pieces */
            buf[*n] = '\0';
            emit_rank_line(s, r, stream, buf);
            *n = 0;
        }
        buf[(*n)++] = text[i];
    }
    if (ends_line) {
        buf[*n] = '\0';
        emit_rank_line(s, r, stream, buf);
        *n = 0;
    }
}

/* A line of mpirun's --tag-output stream. Open MPI tags every chunk it reads from a rank, so a rank's
 * line written in several write() calls (stderr is unbuffered: "zgpt[rank 1]: error: " then the
 * message) arrives as several tagged fragments, possibly with other ranks' fragments in between,
 * e.g. "[1,0]<stderr>:zgpt[rank 0]: error: [1,1]<stderr>:...whole line of rank 1...". Each fragment
 * goes to its rank's own line buffer; the newline belongs to the last fragment. */
static void demux_tagged_line(supervisor *s, int pipe_stream, char *line, int complete) {
    int r, st, n = parse_tag(line, &r, &st);
    if (n == 0 || r < 0 || r >= s->nranks) {
        if (s->cont_rank[pipe_stream] >= 0) { /* the rest of a fragment split at LINE_CAP */
            r = s->cont_rank[pipe_stream];
            st = s->cont_stream[pipe_stream];
            n = 0;
        } else { /* mpirun's own line */
            launcher_line(s, line);
            return;
        }
    }
    s->cont_rank[pipe_stream] = -1;
    char *p = line + n;
    for (;;) {
        /* the next tag of a rank in range, if any */
        char *q = p, *next = NULL;
        int r2 = -1, st2 = 0, n2 = 0;
        while ((q = strchr(q, '[')) != NULL) {
            if ((n2 = parse_tag(q, &r2, &st2)) > 0 && r2 >= 0 && r2 < s->nranks) {
                next = q;
                break;
            }
            q++;
        }
        if (!next) {
            rank_append(s, r, st, p, strlen(p), complete);
            if (!complete) {
                s->cont_rank[pipe_stream] = r;
                s->cont_stream[pipe_stream] = st;
            }
            return;
        }
        rank_append(s, r, st, p, (size_t)(next - p), 0);
        r = r2;
        st = st2;
        p = next + n2;
    }
}

/* Lines still being assembled when the output ends. */
static void flush_rank_parts(supervisor *s) {
    if (!s->rank_part) return;
    for (int k = 0; k < 2 * s->nranks; k++)
        if (s->rank_part_len[k]) rank_append(s, k / 2, k % 2, "", 0, 1);
}

static void handle_line(supervisor *s, int kid, int stream, char *line, int complete) {
    if (s->tagged) {
        demux_tagged_line(s, stream, line, complete);
        return;
    }
    if (kid < 0 || kid >= s->nranks) {
        launcher_line(s, line);
        return;
    }
    emit_rank_line(s, kid, stream, line);
}

/* Reads what is available on one pipe and dispatches complete lines. Returns 0 at EOF. */
static int pump(supervisor *s, int kid, int stream) {
    child_proc *c = &s->kids[kid];
    char buf[4096];
    ssize_t n = read(c->fd[stream], buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
    if (n <= 0) {
        if (c->part_len[stream]) {
            c->part[stream][c->part_len[stream]] = '\0';
            handle_line(s, kid, stream, c->part[stream], 1);
            c->part_len[stream] = 0;
        }
        close(c->fd[stream]);
        c->fd[stream] = -1;
        if (c->fd[0] < 0 && c->fd[1] < 0) flush_rank_parts(s);
        return 0;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf[i];
        if (ch == '\n' || c->part_len[stream] == LINE_CAP - 1) {
            c->part[stream][c->part_len[stream]] = '\0';
            handle_line(s, kid, stream, c->part[stream], ch == '\n');
            c->part_len[stream] = 0;
            if (ch == '\n') continue;
        }
        c->part[stream][c->part_len[stream]++] = ch;
    }
    return 1;
}

static void signal_all(supervisor *s, int sig) {
    for (int i = 0; i < s->n_kids; i++)
        if (!s->kids[i].exited) kill(sig == SIGKILL ? -s->kids[i].pid : s->kids[i].pid, sig);
}

static int reap(supervisor *s, int block) {
    int any = 0;
    for (int i = 0; i < s->n_kids; i++) {
        child_proc *c = &s->kids[i];
        if (c->exited) continue;
        int st;
        pid_t p = waitpid(c->pid, &st, block ? 0 : WNOHANG);
        if (p == c->pid) {
            c->exited = 1;
            c->status = st;
            any = 1;
        }
    }
    return any;
}

static int all_exited(const supervisor *s) {
    for (int i = 0; i < s->n_kids; i++)
        if (!s->kids[i].exited) return 0;
    return 1;
}

static int failed(int st) { return !(WIFEXITED(st) && WEXITSTATUS(st) == 0); }

static void describe_status(int st, char *buf, size_t cap) {
    if (WIFEXITED(st))
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, cap, "status %d", st);
}

/* Spawns argv with stdout/stderr piped to the supervisor; env_set holds "NAME=VALUE" strings. */
static int spawn(child_proc *c, char *const argv[], char *const env_set[], int n_env) {
    int po[2], pe[2];
    if (pipe(po) != 0 || pipe(pe) != 0) return zg_errorf("pipe failed: %s", zg_strerrno());
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return zg_errorf("fork failed: %s", zg_strerrno());
    if (pid == 0) {
        /* No worker reads stdin, but mpirun forwards it to rank 0 and reads it all: a caller's
         * `while read ...; do zgpt train --nproc 2 ...; done < list` would lose the rest of its list. */
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(po[1], STDOUT_FILENO) < 0 ||
            dup2(pe[1], STDERR_FILENO) < 0) {
            fprintf(stderr, "zgpt: fatal: %s:%d: dup2 failed in the worker: %s\n", __FILE__, __LINE__, strerror(errno));
            _exit(127);
        }
        if (devnull != STDIN_FILENO) close(devnull);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        /* Own process group: terminal Ctrl-C reaches only the launcher, which forwards it once. */
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        for (int i = 0; i < n_env; i++) {
            char *kv = strdup(env_set[i]); /* the strings may be literals */
            char *eq = kv ? strchr(kv, '=') : NULL;
            if (!eq) continue;
            *eq = '\0';
            setenv(kv, eq + 1, 1);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "zgpt: error: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    memset(c, 0, sizeof *c);
    c->pid = pid;
    c->fd[0] = po[0];
    c->fd[1] = pe[0];
    c->part[0] = zg_malloc(LINE_CAP);
    c->part[1] = zg_malloc(LINE_CAP);
    return 0;
}

static int self_exe(char *buf, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0) return zg_errorf("cannot find this program's path (/proc/self/exe): %s", zg_strerrno());
    buf[n] = '\0';
    return 0;
}

/* Every worker that failed was ended by a signal (not an error exit of its own). */
static int ended_by_signal(const supervisor *s) {
    if (s->tagged) return strncmp(s->reported_why, "killed by signal", 16) == 0 || WIFSIGNALED(s->kids[0].status);
    for (int i = 0; i < s->n_kids; i++)
        if (failed(s->kids[i].status) && !WIFSIGNALED(s->kids[i].status)) return 0;
    return 1;
}

static int failed_any(const supervisor *s) {
    for (int i = 0; i < s->n_kids; i++)
        if (failed(s->kids[i].status)) return 1;
    return 0;
}

/* After a failure: a worker that is still alive (a stopped rank that mpirun could not end, say) is
 * killed, so no process outlives the job. Only processes running this executable are touched (a pid
 * could have been reused). */
static void kill_leftover_workers(supervisor *s) {
    char exe[4096], other[4096], path[64];
    if (!s->hb.map || self_exe(exe, sizeof exe) != 0) {
        zg_error_clear();
        return;
    }
    for (int r = 0; r < s->nranks; r++) {
        pid_t pid = zg_heartbeat_pid(&s->hb, r);
        if (pid <= 0 || kill(pid, 0) != 0) continue;
        snprintf(path, sizeof path, "/proc/%ld/exe", (long)pid);
        ssize_t n = readlink(path, other, sizeof other - 1);
        if (n <= 0) continue;
        other[n] = '\0';
        if (strcmp(other, exe) == 0) kill(pid, SIGKILL);
    }
}

/* A collective timed out: names the ranks that never reached it (their count of collectives started
 * is behind the rank that timed out) or whose process is stopped. 0 when the snapshot names none. */
static int report_stalled(supervisor *s) {
    if (s->snap_rank < 0) return 0;
    int to = s->snap_rank, first = -1, n = 0;
    char ranks[256] = "";
    /* the ranks a worker blamed itself (it saw them before the job was torn down); else, from the
     * launcher's own snapshot: behind first, then stopped */
    for (int pass = 0; pass < 3 && n == 0; pass++)
        for (int r = 0; r < s->nranks; r++) {
            char st;
            int stalled = pass == 0   ? zg_heartbeat_stalled(&s->hb, r, &st)
                          : pass == 1 ? s->snap_count[r] < s->snap_count[to]
                                      : s->snap_state[r] == 'T' || s->snap_state[r] == 't';
            if (r == to || !stalled) continue;
            if (pass == 0) s->snap_state[r] = st;
            size_t len = strlen(ranks);
            snprintf(ranks + len, sizeof ranks - len, "%s%d", n ? ", " : "", r);
            if (first < 0) first = r;
            n++;
        }
    if (n == 0) return 0;
    char state = s->snap_state[first];
    fprintf(stderr,
            "zgpt: error: rank%s %s of %d stopped making progress: %s at collective %lld when rank %d gave up waiting "
            "for it (ZGPT_COMM_TIMEOUT)%s; the job was ended; rank %d's last lines:\n",
            n > 1 ? "s" : "", ranks, s->nranks, n > 1 ? "they were" : "it was", (long long)s->snap_count[first], to,
            state == 'T'   ? "; its process was stopped (SIGSTOP or job control)"
            : state == 't' ? "; its process was stopped by a debugger"
                           : "",
            first);
    if (s->rings[first].count == 0) fprintf(stderr, "    (no output)\n");
    ring_print(&s->rings[first], stderr, "    ");
    fprintf(stderr, "  rank %d, which timed out waiting:\n", to);
    ring_print(&s->rings[to], stderr, "    ");
    fflush(stderr);
    return 1;
}

/* Runs the supervision loop until every child has exited; returns the command's exit status. */
static int supervise(supervisor *s) {
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    g_signal_count = 0;

    int first_failed = -1; /* child index */
    double stop_at = -1;   /* when SIGTERM went out (SIGKILL after grace) */
    int killed = 0, forwarded = 0;
    struct pollfd *pfd = zg_calloc((size_t)s->n_kids * 2, sizeof *pfd);
    for (;;) {
        int np = 0;
        int owner[256 * 2];
        int *own = s->n_kids * 2 <= 512 ? owner : zg_malloc(sizeof(int) * (size_t)s->n_kids * 2);
        for (int i = 0; i < s->n_kids; i++)
            for (int k = 0; k < 2; k++)
                if (s->kids[i].fd[k] >= 0) {
                    pfd[np].fd = s->kids[i].fd[k];
                    pfd[np].events = POLLIN;
                    own[np++] = i * 2 + k;
                }
        if (np > 0) {
            int rc = poll(pfd, (nfds_t)np, 100);
            if (rc > 0)
                for (int j = 0; j < np; j++)
                    if (pfd[j].revents & (POLLIN | POLLHUP | POLLERR)) pump(s, own[j] / 2, own[j] % 2);
        } else {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (own != owner) free(own);

        reap(s, 0);
        if (first_failed < 0)
            for (int i = 0; i < s->n_kids; i++)
                if (s->kids[i].exited && failed(s->kids[i].status)) {
                    first_failed = i;
                    break;
                }
        if (g_signal_count > forwarded) {
            /* Ctrl-C / SIGTERM: ask once, and wait as long as the workers' save takes; again: kill. */
            if (g_signal_count == 1) {
                fprintf(stderr,
                        "zgpt: %s: the workers save a checkpoint at the next iteration boundary and stop "
                        "(a second Ctrl-C kills them)\n",
                        strsignal((int)g_last_signal));
                /* mpirun answers SIGINT/SIGTERM by killing the ranks about a second later; SIGUSR1 it
                 * forwards as it is, and the workers take it as a stop request */
                if (s->tagged)
                    kill(s->kids[0].pid, SIGUSR1);
                else
                    signal_all(s, (int)g_last_signal);
            } else {
                signal_all(s, SIGKILL);
                killed = 1;
            }
            forwarded = (int)g_signal_count;
        }
        if (first_failed >= 0 && stop_at < 0 && !all_exited(s)) {
            signal_all(s, SIGTERM);
            stop_at = zg_now_s();
        }
        if (stop_at >= 0 && !killed && zg_now_s() - stop_at > s->grace_s) {
            signal_all(s, SIGKILL);
            killed = 1;
        }
        if (all_exited(s)) {
            int open = 0;
            for (int i = 0; i < s->n_kids; i++) open |= s->kids[i].fd[0] >= 0 || s->kids[i].fd[1] >= 0;
            if (!open) break;
            if (stop_at < 0) stop_at = zg_now_s();
            if (zg_now_s() - stop_at > s->grace_s + 2) break; /* a grandchild holds the pipe: give up */
        }
    }
    free(pfd);
    flush_rank_parts(s); /* a rank that died mid-line */
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);

    if (failed_any(s)) kill_leftover_workers(s);
    if (first_failed < 0 && g_signal_count == 0) return 0;
    if (g_signal_count > 0 && first_failed < 0) { /* every worker saved and ended cleanly */
        fprintf(stderr, "zgpt: stopped by %s; all %d workers ended cleanly\n", strsignal((int)g_last_signal),
                s->nranks);
        return 0;
    }
    if (g_signal_count > 0 && (killed || g_signal_count > 1 || ended_by_signal(s))) {
        /* workers that do not save (or a second Ctrl-C): ending on the signal is what was asked */
        fprintf(stderr, "zgpt: stopped by %s; all %d workers ended\n", strsignal((int)g_last_signal), s->nranks);
        return 128 + (int)g_last_signal;
    }
    /* a rank that died is the cause itself; a rank that timed out may have waited for a stopped one */
    int died = s->tagged ? s->reported_rank >= 0 : WIFSIGNALED(s->kids[first_failed].status);
    if (!died && report_stalled(s)) return 1;
    /* Which rank? Fork launcher: the child. mpirun: its report, else the first rank to complain. */
    /* A rank that died (exit status, signal) is the cause; one that aborted may only have noticed it. */
    int rank = first_failed;
    if (s->tagged)
        rank = s->reported_rank >= 0 ? s->reported_rank : s->abort_rank >= 0 ? s->abort_rank : s->first_error_rank;
    char why[128];
    describe_status(s->kids[first_failed].status, why, sizeof why);
    if (s->tagged && s->reported_why[0]) snprintf(why, sizeof why, "%s", s->reported_why);
    if (rank >= 0) {
        fprintf(stderr, "zgpt: error: rank %d of %d failed (%s%s); the other workers were stopped; its last lines:\n",
                rank, s->nranks, s->tagged && !s->reported_why[0] ? "mpirun: " : "", why);
        if (s->rings[rank].count == 0) fprintf(stderr, "    (no output)\n");
        ring_print(&s->rings[rank], stderr, "    ");
    } else {
        fprintf(stderr, "zgpt: error: the workers failed (%s); launcher output:\n", why);
        ring_print(&s->launcher_lines, stderr, "    ");
    }
    fflush(stderr);
    return 1;
}

static void supervisor_init(supervisor *s, int n_kids, int nranks, int tagged, const zg_launch_opts *o) {
    memset(s, 0, sizeof *s);
    s->kids = zg_calloc((size_t)n_kids, sizeof *s->kids);
    s->n_kids = n_kids;
    s->nranks = nranks;
    s->tagged = tagged;
    s->rings = zg_calloc((size_t)nranks, sizeof *s->rings);
    s->cont_rank[0] = s->cont_rank[1] = -1;
    if (tagged) {
        s->rank_part = zg_calloc((size_t)nranks * 2, sizeof *s->rank_part);
        s->rank_part_len = zg_calloc((size_t)nranks * 2, sizeof *s->rank_part_len);
    }
    int tail = o && o->tail_lines > 0 ? o->tail_lines : 8;
    for (int r = 0; r < nranks; r++) ring_init(&s->rings[r], tail);
    ring_init(&s->launcher_lines, 40);
    s->first_error_rank = -1;
    s->reported_rank = -1;
    s->abort_rank = -1;
    s->snap_rank = -1;
    s->grace_s = o && o->grace_s > 0 ? o->grace_s : 5.0;
}

/* The workers' progress slots, and the variable that hands them over ("ZGPT_HEARTBEAT=<path>"). */
static int supervisor_heartbeat(supervisor *s, char *env_buf, size_t cap) {
    if (zg_heartbeat_create(&s->hb, s->nranks) != 0) return -1;
    snprintf(env_buf, cap, "ZGPT_HEARTBEAT=%s", s->hb.path);
    return 0;
}

static void supervisor_free(supervisor *s) {
    for (int i = 0; i < s->n_kids; i++) {
        free(s->kids[i].part[0]);
        free(s->kids[i].part[1]);
        for (int k = 0; k < 2; k++)
            if (s->kids[i].fd[k] >= 0) close(s->kids[i].fd[k]);
    }
    for (int r = 0; r < s->nranks; r++) ring_free(&s->rings[r]);
    if (s->rank_part)
        for (int k = 0; k < 2 * s->nranks; k++) free(s->rank_part[k]);
    free(s->rank_part);
    free(s->rank_part_len);
    ring_free(&s->launcher_lines);
    free(s->rings);
    free(s->kids);
    free(s->snap_count);
    free(s->snap_state);
    zg_heartbeat_free(&s->hb);
}

/* ---- CPU workers under mpirun ------------------------------------------------------------ */

#ifdef ZGPT_WITH_MPI
static int launch_mpirun(int argc, char **argv, int nproc, const zg_launch_opts *o) {
    char exe[4096];
    if (self_exe(exe, sizeof exe) != 0) return -1;
    const char *mpirun = o->mpirun ? o->mpirun : getenv("ZGPT_MPIRUN");
    if (!mpirun || !*mpirun) mpirun = "mpirun";
    char np[32];
    snprintf(np, sizeof np, "%d", nproc);
#ifdef OPEN_MPI
    int ompi = 1;
#else
    int ompi = strstr(ZGPT_MPI_IMPL, "Open MPI") != NULL;
#endif
    char **av = zg_calloc((size_t)argc + 24, sizeof(char *));
    int k = 0;
    av[k++] = (char *)mpirun;
    if (ompi) {
        av[k++] = "-np";
        av[k++] = np;
        av[k++] = "--oversubscribe";
        av[k++] = "--bind-to";
        av[k++] = "none";
        av[k++] = "--tag-output";
        if (geteuid() == 0) av[k++] = "--allow-run-as-root";
        /* containers often forbid the ptrace-based single-copy path of the shared-memory transport */
        av[k++] = "--mca";
        av[k++] = "btl_vader_single_copy_mechanism";
        av[k++] = "none";
    } else { /* MPICH / Hydra */
        av[k++] = "-n";
        av[k++] = np;
    }
    av[k++] = exe;
    for (int i = 0; i < argc; i++) av[k++] = argv[i];
    av[k] = NULL;

    char omp[64], hb[600];
    char *env[4];
    int n_env = 0;
    env[n_env++] = "ZGPT_LAUNCHER=mpi";
    if (!getenv("OMP_NUM_THREADS")) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        long t = cores / nproc;
        snprintf(omp, sizeof omp, "OMP_NUM_THREADS=%ld", t < 1 ? 1 : t);
        env[n_env++] = omp;
    }
    supervisor s;
    supervisor_init(&s, 1, nproc, ompi, o);
    int rc = supervisor_heartbeat(&s, hb, sizeof hb);
    if (rc == 0) {
        env[n_env++] = hb;
        rc = spawn(&s.kids[0], av, env, n_env);
    }
    if (rc != 0) s.n_kids = 0; /* none started */
    free(av);
    if (rc != 0) {
        supervisor_free(&s);
        return -1;
    }
    rc = supervise(&s);
    supervisor_free(&s);
    return rc;
}
#endif

/* ---- forked workers (GPUs; tests) -------------------------------------------------------- */

static int launch_fork(int argc, char **argv, int n, char **devices, const char *nccl_id, const zg_launch_opts *o) {
    char exe[4096];
    if (self_exe(exe, sizeof exe) != 0) return -1;
    char **av = zg_calloc((size_t)argc + 2, sizeof(char *));
    av[0] = exe;
    for (int i = 0; i < argc; i++) av[i + 1] = argv[i];
    supervisor s;
    supervisor_init(&s, n, n, 0, o);
    char hb[600];
    int rc = supervisor_heartbeat(&s, hb, sizeof hb);
    if (rc != 0) s.n_kids = 0; /* none started */
    for (int r = 0; r < n && rc == 0; r++) {
        char e_rank[48], e_size[48], e_lrank[48], e_lsize[48], e_dev[600], e_id[300];
        char e_omp[48];
        char *env[9];
        int k = 0;
        long share = sysconf(_SC_NPROCESSORS_ONLN) / n;
        snprintf(e_omp, sizeof e_omp, "OMP_NUM_THREADS=%ld", share < 1 ? 1 : share);
        env[k++] = hb;
        snprintf(e_rank, sizeof e_rank, "ZGPT_RANK=%d", r);
        snprintf(e_size, sizeof e_size, "ZGPT_WORLD_SIZE=%d", n);
        snprintf(e_lrank, sizeof e_lrank, "ZGPT_LOCAL_RANK=%d", r);
        snprintf(e_lsize, sizeof e_lsize, "ZGPT_LOCAL_WORLD_SIZE=%d", n);
        env[k++] = e_rank;
        env[k++] = e_size;
        env[k++] = e_lrank;
        env[k++] = e_lsize;
        if (devices) {
            snprintf(e_dev, sizeof e_dev, "CUDA_VISIBLE_DEVICES=%s", devices[r]);
            env[k++] = e_dev;
        }
        if (nccl_id) {
            snprintf(e_id, sizeof e_id, "ZGPT_NCCL_ID=%s", nccl_id);
            env[k++] = e_id;
        }
        /* CPU ranks: one thread each (the tests' ranks share the cores). GPU workers: a share of the
         * cores each, for the host work that uses OpenMP (ZeRO-Offload's host AdamW ran on one thread:
         * 2,548 ms per GPT-2 XL guide step on 2 x H200 against 1,550 ms on one) */
        if (!getenv("OMP_NUM_THREADS")) env[k++] = devices ? e_omp : "OMP_NUM_THREADS=1";
        rc = spawn(&s.kids[r], av, env, k);
        if (rc != 0) { /* stop the ones already started */
            s.n_kids = r;
            signal_all(&s, SIGKILL);
            reap(&s, 1);
        }
    }
    free(av);
    if (rc == 0) rc = supervise(&s);
    supervisor_free(&s);
    return rc;
}

/* The devices the workers get: CUDA_VISIBLE_DEVICES entries, or 0..count-1. */
static int gpu_devices(int want, char ***out, int *n_out) {
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    char **dev = NULL;
    int n = 0;
    if (vis && *vis) {
        char *copy = zg_strdup(vis), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            dev = zg_realloc(dev, sizeof(char *) * (size_t)(n + 1));
            dev[n++] = zg_strdup(t);
        }
        free(copy);
    } else {
#ifdef ZGPT_WITH_CUDA
        int count = zg_backend_cuda_device_count();
#else
        int count = 0;
#endif
        for (int i = 0; i < count; i++) {
            char b[16];
            snprintf(b, sizeof b, "%d", i);
            dev = zg_realloc(dev, sizeof(char *) * (size_t)(n + 1));
            dev[n++] = zg_strdup(b);
        }
    }
    if (n == 0) return zg_errorf("--gpus: no GPU is visible%s", vis ? " (CUDA_VISIBLE_DEVICES is empty)" : "");
    if (want > n) {
        for (int i = 0; i < n; i++) free(dev[i]);
        free(dev);
        return zg_errorf("--gpus %d: only %d GPU%s visible%s", want, n, n == 1 ? " is" : "s are",
                         vis ? " through CUDA_VISIBLE_DEVICES" : "");
    }
    *out = dev;
    *n_out = want < 0 ? n : want;
    for (int i = *n_out; i < n; i++) free(dev[i]);
    return 0;
}

/* The caller's checks before n workers start (zg_launch_opts.preflight): 0 to go on, -1 with its error. */
static int launch_preflight(const zg_launch_opts *o, int n) {
    return o->preflight && o->preflight(o->preflight_ctx, n) != 0 ? -1 : 0;
}

int zg_launch_maybe(int argc, char **argv, const zg_launch_opts *opts, int *is_parent) {
    zg_launch_opts o = {0};
    if (opts) o = *opts;
    *is_parent = 0;
    zg_launch_env env;
    zg_launch_env_detect(&env);
    if (env.source != ZG_LAUNCH_SRC_NONE) {
        /* Already a worker (ours, mpirun's or srun's): never launch again. */
        if (o.nproc > 1 && env.size != o.nproc)
            return zg_errorf("--nproc %d was given but %s started %d rank%s; drop --nproc when using an external "
                             "launcher",
                             o.nproc, zg_launch_src_name(env.source), env.size, env.size == 1 ? "" : "s");
        return 0;
    }
    if (o.gpus != 0 && o.nproc > 1) return zg_errorf("--nproc and --gpus cannot be combined");
    if (o.gpus != 0) {
#ifdef ZGPT_WITH_CUDA
        char **dev = NULL;
        int n = 0;
        if (gpu_devices(o.gpus, &dev, &n) != 0) return -1;
        int nccl = 0;
#ifdef ZGPT_WITH_NCCL
        nccl = 1;
#endif
        if (n == 1 && (o.gpus != -1 || !nccl)) {
            free(dev[0]);
            free(dev);
            return 0; /* one GPU: this process is the worker */
        }
        char id[257];
        *is_parent = 1;
#ifdef ZGPT_WITH_NCCL
        int idrc = launch_preflight(&o, n) != 0 ? -1 : zg_comm_nccl_unique_id_hex(id);
#else
        int idrc = zg_errorf("--gpus: %d GPUs need NCCL, and this zgpt was built without it: install NCCL "
                             "(libnccl-dev) and rebuild",
                             n);
#endif
        if (idrc != 0) {
            for (int i = 0; i < n; i++) free(dev[i]);
            free(dev);
            return -1;
        }
        int rc = launch_fork(argc, argv, n, dev, id, &o);
        for (int i = 0; i < n; i++) free(dev[i]);
        free(dev);
        return rc;
#else
        (void)gpu_devices;
        return zg_errorf("--gpus needs a CUDA build of zgpt (this one is CPU-only); use --nproc N for CPU workers");
#endif
    }
    if (o.nproc > 1) {
#ifdef ZGPT_WITH_MPI
        *is_parent = 1;
        if (launch_preflight(&o, o.nproc) != 0) return -1;
        return launch_mpirun(argc, argv, o.nproc, &o);
#else
        return zg_errorf("--nproc %d needs MPI: rebuild zgpt with Open MPI installed (libopenmpi-dev)", o.nproc);
#endif
    }
    const char *fork_test = getenv("ZGPT_LAUNCH_FORK_TEST");
    if (fork_test && atoi(fork_test) > 1) { /* tests: supervised forked workers without a communicator */
        *is_parent = 1;
        if (launch_preflight(&o, atoi(fork_test)) != 0) return -1;
        return launch_fork(argc, argv, atoi(fork_test), NULL, NULL, &o);
    }
    return 0;
}
