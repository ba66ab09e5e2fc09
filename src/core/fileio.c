#define _GNU_SOURCE
#include "core/fileio.h"

#include "core/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

int zg_file_read_all(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return zg_errorf("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || S_ISDIR(st.st_mode)) {
        fclose(f);
        return zg_errorf("cannot read '%s': %s", path, S_ISDIR(st.st_mode) ? "it is a directory" : strerror(errno));
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = zg_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            buf = zg_realloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return zg_errorf("error reading '%s'", path);
    }
    buf[n] = '\0';
    *data = buf;
    if (len) *len = n;
    return 0;
}

int zg_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int zg_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int zg_dir_make(const char *path) {
    char *p = zg_strdup(path);
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] == '/' || p[i] == '\0') {
            char c = p[i];
            p[i] = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                free(p);
                return zg_errorf("cannot create directory '%s': %s", path, strerror(e));
            }
            p[i] = c;
        }
    }
    free(p);
    if (!zg_dir_exists(path)) return zg_errorf("'%s' exists and is not a directory", path);
    return 0;
}

int zg_path_is_link(const char *path, char *target, size_t cap) {
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode)) return 0;
    if (target && cap) {
        ssize_t n = readlink(path, target, cap - 1);
        target[n > 0 ? (size_t)n : 0] = '\0';
    }
    return 1;
}

/* The entries of one folder, unlinked by the threads of one removal. */
typedef struct {
    int dfd;
    const char *path;
    char **names;
    int n;
    atomic_int next, failed;
    char error[600];
} unlink_job;

static void *unlinker_main(void *arg) {
    unlink_job *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->n;) {
        /* flags 0: unlinkat removes a link as a link; a sub-folder fails with EISDIR and stays */
        if (unlinkat(j->dfd, j->names[i], 0) == 0 || errno == ENOENT) continue;
        int err = errno;
        if (!atomic_exchange(&j->failed, 1))
            snprintf(j->error, sizeof j->error, "cannot remove '%s/%s': %s", j->path, j->names[i],
                     err == EISDIR ? "it is a folder (zgpt only removes files here)" : strerror(err));
    }
    return NULL;
}

int zg_dir_remove_files(const char *path, int threads, uint64_t *bytes) {
    /* O_NOFOLLOW: a link at `path` (even one swapped in after a check) is never opened as a folder */
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        if (errno != ELOOP && errno != ENOTDIR) return zg_errorf("cannot open '%s': %s", path, strerror(errno));
        /* a link or a file where a folder was expected: remove the entry itself */
        if (unlink(path) != 0 && errno != ENOENT) return zg_errorf("cannot remove '%s': %s", path, strerror(errno));
        return 0;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return zg_errorf("cannot open '%s': %s", path, strerror(e));
    }
    unlink_job j;
    memset(&j, 0, sizeof j);
    j.dfd = dirfd(d);
    j.path = path;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        struct stat st;
        if (bytes && fstatat(j.dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            *bytes += (uint64_t)st.st_size;
        j.names = zg_realloc(j.names, (size_t)(j.n + 1) * sizeof *j.names);
        j.names[j.n++] = zg_strdup(e->d_name);
    }
    enum { MAX_THREADS = 16 };
    pthread_t th[MAX_THREADS];
    int started = 0;
    while (started + 1 < threads && started + 1 < MAX_THREADS && started + 1 < j.n &&
           pthread_create(&th[started], NULL, unlinker_main, &j) == 0)
        started++;
    unlinker_main(&j); /* this thread takes its share too (all of it when no thread started) */
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    closedir(d);
    for (int i = 0; i < j.n; i++) free(j.names[i]);
    free(j.names);
    if (atomic_load(&j.failed)) return zg_errorf("%s", j.error);
    if (rmdir(path) != 0 && errno != ENOENT) return zg_errorf("cannot remove '%s': %s", path, strerror(errno));
    return 0;
}

uint64_t zg_dir_file_bytes(const char *path) {
    uint64_t bytes = 0;
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
            bytes += (uint64_t)st.st_size;
    }
    if (d) closedir(d);
    return bytes;
}

int zg_dir_remove_flat(const char *path) { return zg_dir_remove_files(path, 1, NULL); }

int zg_dir_sync(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return zg_errorf("cannot open directory '%s': %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) return zg_errorf("cannot sync directory '%s': %s", path, strerror(e));
    return 0;
}

char *zg_path_dir(const char *path) {
    char *dir = zg_strdup(path), *slash = strrchr(dir, '/');
    if (slash) {
        if (slash == dir)
            slash[1] = '\0'; /* "/name": the root */
        else
            *slash = '\0';
    } else {
        strcpy(dir, ".");
    }
    return dir;
}

const char *zg_path_base(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int zg_dir_sync_parent(const char *path) {
    char *dir = zg_path_dir(path);
    int rc = zg_dir_sync(dir);
    free(dir);
    return rc;
}

char *zg_path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    while (na > 1 && a[na - 1] == '/') na--;
    char *p = zg_malloc(na + nb + 2);
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

int zg_mmap_open(zg_mmap *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->fd = -1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return zg_errorf("cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return zg_errorf("cannot stat '%s': %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return zg_errorf("'%s' is a directory, expected a file", path);
    }
    m->size = (size_t)st.st_size;
    m->fd = fd;
    if (m->size == 0) {
        m->data = NULL;
        return 0;
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        m->fd = -1;
        return zg_errorf("cannot map '%s': %s", path, strerror(errno));
    }
    m->data = p;
    return 0;
}

void zg_mmap_close(zg_mmap *m) {
    if (m->data) munmap((void *)m->data, m->size);
    if (m->fd >= 0) close(m->fd);
    memset(m, 0, sizeof *m);
    m->fd = -1;
}

int zg_atomic_open(zg_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->path = zg_strdup(path);
    af->tmp_path = zg_malloc(n);
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        int e = errno;
        free(af->path);
        free(af->tmp_path);
        memset(af, 0, sizeof *af);
        return zg_errorf("cannot create '%s': %s", path, strerror(e));
    }
    XXH3_state_t *st = XXH3_createState();
    ZG_CHECK_PTR(st);
    XXH3_64bits_reset(st);
    af->hash_state = st;
    return 0;
}

int zg_atomic_write(zg_atomic_file *af, const void *data, size_t n) {
    if (af->failed) return -1;
    if (n && fwrite(data, 1, n, af->f) != n) {
        af->failed = 1;
        return zg_errorf("cannot write '%s': %s", af->path, strerror(errno));
    }
    XXH3_64bits_update(af->hash_state, data, n);
    af->bytes += n;
    return 0;
}

static void atomic_release(zg_atomic_file *af) {
    if (af->hash_state) XXH3_freeState(af->hash_state);
    free(af->path);
    free(af->tmp_path);
    memset(af, 0, sizeof *af);
}

void zg_atomic_abort(zg_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) unlink(af->tmp_path);
    atomic_release(af);
}

int zg_atomic_commit(zg_atomic_file *af, uint64_t *checksum_out) {
    int rc = 0;
    if (af->failed) rc = -1;
    if (rc == 0 && fflush(af->f) != 0) rc = zg_errorf("cannot write '%s': %s", af->path, strerror(errno));
    if (rc == 0 && fsync(fileno(af->f)) != 0) rc = zg_errorf("cannot sync '%s': %s", af->path, strerror(errno));
    if (fclose(af->f) != 0 && rc == 0) rc = zg_errorf("cannot close '%s': %s", af->path, strerror(errno));
    af->f = NULL;
    if (rc == 0 && rename(af->tmp_path, af->path) != 0)
        rc = zg_errorf("cannot rename '%s' to '%s': %s", af->tmp_path, af->path, strerror(errno));
    if (rc != 0) {
        unlink(af->tmp_path);
        atomic_release(af);
        return -1;
    }
    if (checksum_out) *checksum_out = XXH3_64bits_digest(af->hash_state);
    rc = zg_dir_sync_parent(af->path);
    atomic_release(af);
    return rc;
}

uint64_t zg_checksum(const void *data, size_t n) { return XXH3_64bits(data, n); }

void zg_hasher_init(zg_hasher *h) {
    XXH3_state_t *st = XXH3_createState();
    ZG_CHECK_PTR(st);
    XXH3_64bits_reset(st);
    h->state = st;
}

void zg_hasher_update(zg_hasher *h, const void *data, size_t n) { XXH3_64bits_update(h->state, data, n); }

uint64_t zg_hasher_final(zg_hasher *h) {
    uint64_t v = XXH3_64bits_digest(h->state);
    XXH3_freeState(h->state);
    h->state = NULL;
    return v;
}

int zg_file_checksum(const char *path, uint64_t *checksum, uint64_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return zg_errorf("cannot open '%s': %s", path, strerror(errno));
    enum { CHUNK = 1 << 20 };
    char *buf = zg_malloc(CHUNK);
    zg_hasher h;
    zg_hasher_init(&h);
    uint64_t total = 0;
    size_t got;
    while ((got = fread(buf, 1, CHUNK, f)) > 0) {
        zg_hasher_update(&h, buf, got);
        total += got;
    }
    int err = ferror(f);
    fclose(f);
    free(buf);
    uint64_t v = zg_hasher_final(&h);
    if (err) return zg_errorf("error reading '%s'", path);
    if (checksum) *checksum = v;
    if (size) *size = total;
    return 0;
}

#ifndef ZGPT_SOURCE_DATA_DIR
#define ZGPT_SOURCE_DATA_DIR "data"
#endif

const char *zg_data_dir(char *buf, size_t cap) {
    const char *env = getenv("ZGPT_DATA_DIR");
    if (env && *env) {
        if (!zg_dir_exists(env)) {
            zg_errorf("ZGPT_DATA_DIR='%s' is not a directory; unset it or point it at zgpt's data folder", env);
            return NULL;
        }
        snprintf(buf, cap, "%s", env);
        return buf;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        const char *rel[] = {"../data", "../share/zgpt"};
        for (size_t i = 0; i < 2; i++) {
            snprintf(buf, cap, "%s/%s", exe, rel[i]);
            char probe[PATH_MAX + 64];
            snprintf(probe, sizeof probe, "%s/tokenizer", buf);
            if (zg_dir_exists(probe)) return buf;
        }
    }
    snprintf(buf, cap, "%s", ZGPT_SOURCE_DATA_DIR);
    if (zg_dir_exists(buf)) return buf;
    zg_errorf("cannot find zgpt's data folder (tokenizer files); set ZGPT_DATA_DIR to the repository's data/ folder");
    return NULL;
}
