#define _GNU_SOURCE
#include "core/dirlock.h"

#include "core/error.h"
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

int zg_dir_lock_acquire(zg_dir_lock *l, const char *dir, const char *what) {
    l->fd = -1;
    char *path = zg_path_join(dir, ".lock");
    int rc = 0;
    /* O_NOFOLLOW: a link planted at .lock is never written through */
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = zg_errorf("cannot open the lock file '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e != EWOULDBLOCK) {
            rc = zg_errorf("cannot lock '%s': %s", path, strerror(e));
            goto cleanup;
        }
        char holder[256] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? (size_t)n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        rc = zg_errorf("'%s' is in use by another zgpt run (%s); wait for it to end or choose another folder", dir,
                       holder[0] ? holder : "holder not yet recorded");
        goto cleanup;
    }
    char host[128] = "?", line[512], when[32] = "?";
    gethostname(host, sizeof host - 1);
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    int len = snprintf(line, sizeof line, "zgpt %s, pid %ld on host %s, since %s\n", what, (long)getpid(), host, when);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len) {
        rc = zg_errorf("cannot write the lock file '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    l->fd = fd;
    fd = -1;
cleanup:
    if (fd >= 0) close(fd);
    free(path);
    return rc;
}

void zg_dir_lock_release(zg_dir_lock *l) {
    if (l->fd >= 0) close(l->fd); /* closing the last descriptor drops the flock */
    l->fd = -1;
}
