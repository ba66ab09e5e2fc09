#define _GNU_SOURCE
#include "dist/heartbeat.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { SLOT_BYTES = 64 };

typedef struct {
    _Atomic int64_t pid;
    _Atomic int64_t collectives;
    _Atomic int64_t stalled; /* 0, or 0x100 | the process state letter another rank saw when it gave up */
} slot;

static slot *slot_at(const zg_heartbeat *h, int rank) { return (slot *)((char *)h->map + (size_t)rank * SLOT_BYTES); }

int zg_heartbeat_create(zg_heartbeat *h, int nranks) {
    memset(h, 0, sizeof *h);
    h->rank = -1;
    const char *tmp = getenv("TMPDIR");
    struct stat st;
    const char *dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : tmp && *tmp ? tmp : "/tmp";
    size_t n = strlen(dir) + 32, bytes = (size_t)nranks * SLOT_BYTES;
    h->path = zg_malloc(n);
    snprintf(h->path, n, "%s/zgpt-heartbeat-XXXXXX", dir);
    int fd = mkstemp(h->path);
    if (fd < 0) {
        int rc = zg_errorf("cannot create the workers' progress file in %s: %s", dir, strerror(errno));
        free(h->path);
        h->path = NULL;
        return rc;
    }
    int rc = 0;
    if (ftruncate(fd, (off_t)bytes) != 0) {
        rc = zg_errorf("cannot size '%s': %s", h->path, strerror(errno));
    } else {
        void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
            rc = zg_errorf("cannot map '%s': %s", h->path, strerror(errno));
        else
            h->map = m;
    }
    close(fd);
    if (rc != 0) {
        unlink(h->path);
        free(h->path);
        h->path = NULL;
        return rc;
    }
    h->nranks = nranks;
    return 0;
}

int zg_heartbeat_attach(zg_heartbeat *h, int rank) {
    memset(h, 0, sizeof *h);
    h->rank = rank;
    const char *path = getenv("ZGPT_HEARTBEAT");
    if (!path || !*path) return 0;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return zg_errorf("cannot open the launcher's progress file '%s': %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < (size_t)(rank + 1) * SLOT_BYTES) {
        rc = zg_errorf("the launcher's progress file '%s' has no slot for rank %d", path, rank);
    } else {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            rc = zg_errorf("cannot map '%s': %s", path, strerror(errno));
        } else {
            h->map = m;
            h->nranks = (int)((size_t)st.st_size / SLOT_BYTES);
            atomic_store_explicit(&slot_at(h, rank)->pid, (int64_t)getpid(), memory_order_relaxed);
        }
    }
    close(fd);
    return rc;
}

void zg_heartbeat_beat(zg_heartbeat *h, int64_t collectives) {
    if (h->map) atomic_store_explicit(&slot_at(h, h->rank)->collectives, collectives, memory_order_relaxed);
}

pid_t zg_heartbeat_pid(const zg_heartbeat *h, int rank) {
    return h->map ? (pid_t)atomic_load_explicit(&slot_at(h, rank)->pid, memory_order_relaxed) : 0;
}

int64_t zg_heartbeat_count(const zg_heartbeat *h, int rank) {
    return h->map ? atomic_load_explicit(&slot_at(h, rank)->collectives, memory_order_relaxed) : 0;
}

char zg_heartbeat_state(const zg_heartbeat *h, int rank) {
    pid_t pid = zg_heartbeat_pid(h, rank);
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    if (!f) return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

int zg_heartbeat_blame(zg_heartbeat *h, char *buf, size_t cap) {
    if (cap) buf[0] = '\0';
    if (!h->map || h->rank < 0) return 0;
    int64_t mine = zg_heartbeat_count(h, h->rank);
    int n = 0;
    for (int r = 0; r < h->nranks; r++) {
        if (r == h->rank || zg_heartbeat_pid(h, r) == 0) continue;
        char st = zg_heartbeat_state(h, r);
        int stopped = st == 'T' || st == 't';
        int64_t theirs = zg_heartbeat_count(h, r);
        if (!stopped && theirs >= mine) continue;
        atomic_store_explicit(&slot_at(h, r)->stalled, 0x100 | (unsigned char)st, memory_order_relaxed);
        size_t len = strlen(buf);
        if (len + 1 < cap)
            snprintf(buf + len, cap - len, "%srank %d %s", n ? ", " : "", r,
                     stopped ? (st == 'T' ? "is stopped (SIGSTOP or job control)" : "is stopped by a debugger")
                             : "has not reached it");
        n++;
    }
    return n;
}

int zg_heartbeat_stalled(const zg_heartbeat *h, int rank, char *state) {
    int64_t v = h->map ? atomic_load_explicit(&slot_at(h, rank)->stalled, memory_order_relaxed) : 0;
    if (state) *state = (char)(v & 0xff);
    return v != 0;
}

void zg_heartbeat_free(zg_heartbeat *h) {
    if (h->map) munmap(h->map, (size_t)h->nranks * SLOT_BYTES);
    if (h->path) {
        unlink(h->path);
        free(h->path);
    }
    memset(h, 0, sizeof *h);
}
