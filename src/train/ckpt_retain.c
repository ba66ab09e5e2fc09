/* A checkpoint folder's life in out_dir after it is written: published in place of the old one (one
 * atomic swap), moved aside and deleted (retention, keep_last_k; the end of a run hands the deletion to
 * a process of its own), and the hygiene of out_dir at start-up (leftovers of a crash). */
#define _GNU_SOURCE /* renameat2(RENAME_EXCHANGE) */
#include "train/checkpoint.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "train/ckpt_internal.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- small filesystem helpers ------------------------------------------------------------------ */

/* Puts the finished folder `stage` at `final`, replacing an existing one in one atomic step. */
int zg_ckpt_swap_into_place(const char *stage, const char *final, const char *out_dir) {
    struct stat st;
    if (lstat(final, &st) == 0) { /* a link is exchanged as a link, then removed as one (never followed) */
        if (renameat2(AT_FDCWD, stage, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
            /* `stage` now holds the old checkpoint */
            if (zg_dir_sync(out_dir) != 0) return -1;
            return zg_dir_remove_flat(stage);
        }
        if (errno != EINVAL && errno != ENOSYS) return zg_errorf("cannot replace '%s': %s", final, strerror(errno));
        /* File systems without RENAME_EXCHANGE: move the old folder aside first. */
        size_t n = strlen(final) + 16;
        char *old = zg_malloc(n);
        snprintf(old, n, "%s.old", final);
        zg_dir_remove_flat(old);
        if (rename(final, old) != 0) {
            int e = errno;
            free(old);
            return zg_errorf("cannot move '%s' aside: %s", final, strerror(e));
        }
        if (rename(stage, final) != 0) {
            int e = errno;
            if (rename(old, final) != 0) { /* best effort to restore */
            }
            free(old);
            return zg_errorf("cannot rename '%s' to '%s': %s", stage, final, strerror(e));
        }
        int rc = zg_dir_sync(out_dir);
        if (rc == 0) rc = zg_dir_remove_flat(old);
        free(old);
        return rc;
    }
    if (rename(stage, final) != 0) return zg_errorf("cannot rename '%s' to '%s': %s", stage, final, strerror(errno));
    return zg_dir_sync(out_dir);
}

/* out_dir/<prefix><tag>: the hidden names of a tag's folder while it is written (.partial.) or deleted
 * (.trash.); no tag starts with '.'. */
static char *hidden_path(const char *out_dir, const char *prefix, const char *tag) {
    size_t n = strlen(prefix) + strlen(tag) + 1;
    char *name = zg_malloc(n);
    snprintf(name, n, "%s%s", prefix, tag);
    char *p = zg_path_join(out_dir, name);
    free(name);
    return p;
}
char *zg_ckpt_stage_path(const char *out_dir, const char *tag) { return hidden_path(out_dir, ".partial.", tag); }

/* The hidden name a tag folder takes while it is deleted: .trash.<name> (docs/FORMATS.md). `latest`,
 * the tag listings and loads never see it; the next start removes one that a crash left
 * (zg_ckpt_out_dir_tidy). Its files go on several threads: the file system frees a file's blocks inside
 * its unlink (seconds for a shard of gigabytes), and a sharded checkpoint has a file per rank. */
enum { ZG_CKPT_UNLINK_THREADS = 8 };
static char *trash_path(const char *out_dir, const char *tag) { return hidden_path(out_dir, ".trash.", tag); }

/* Removes out_dir/<name> so that no crash midway leaves a <name> folder holding only some of its files:
 * it is first renamed to its trash name .trash.<name> (one rename, the folder synced: the tag is gone
 * at once), then its files are unlinked in parallel. A link or a plain file is removed as itself
 * (never followed). *bytes (when non-NULL): the bytes removed. Test hook: ZGPT_TEST_DELETE_DELAY_MS=D
 * sleeps D ms between the rename and the unlinks, so that a test can kill a run in the middle. */
int zg_ckpt_remove_tag_folder(const char *out_dir, const char *name, uint64_t *bytes, zg_ckpt_retainer *r) {
    char *p = zg_path_join(out_dir, name), *trash = trash_path(out_dir, name);
    struct stat st;
    int rc = 0;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = zg_dir_remove_flat(trash); /* a leftover of the same name (an earlier crash) */
        if (rc == 0 && rename(p, trash) != 0) rc = zg_errorf("cannot move '%s' aside: %s", p, strerror(errno));
        if (rc == 0) rc = zg_dir_sync(out_dir);
        if (rc == 0 && r && atomic_load(&r->hand_off)) { /* the end of a run: the wait hands the files on */
            r->handed = zg_realloc(r->handed, (size_t)(r->n_handed + 1) * sizeof *r->handed);
            r->handed[r->n_handed++] = trash;
            trash = NULL;
            if (bytes) *bytes = 0;
            goto cleanup;
        }
        const char *delay = getenv("ZGPT_TEST_DELETE_DELAY_MS");
        if (rc == 0 && delay && *delay) {
            long ms = strtol(delay, NULL, 10);
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        }
        if (rc == 0) rc = zg_dir_remove_files(trash, ZG_CKPT_UNLINK_THREADS, bytes);
    } else {
        rc = zg_dir_remove_flat(p);
    }
cleanup:
    free(p);
    free(trash);
    return rc;
}
/* A tag names a folder directly inside out_dir: letters, digits, '_', '-' and '.', not starting with
 * '.' (so never ".", ".." nor a staging folder). */
static int tag_valid(const char *t) {
    if (!*t || *t == '.') return 0;
    for (; *t; t++)
        if (!(isalnum((unsigned char)*t) || *t == '_' || *t == '-' || *t == '.')) return 0;
    return 1;
}

int zg_ckpt_latest_tag(const char *out_dir, char *tag, size_t cap) {
    char *p = zg_path_join(out_dir, "latest");
    char *text;
    size_t len;
    int rc = zg_file_read_all(p, &text, &len);
    free(p);
    if (rc != 0) return -1;
    /* a trailing newline, CRLF (edited on Windows) or spaces are not part of the tag */
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ')) text[--len] = '\0';
    if (len == 0 || len >= cap || len != strlen(text) || !tag_valid(text)) {
        rc = zg_errorf("'%s/latest' is corrupt (it holds %s%.40s%s; expected a checkpoint tag such as iter_100): "
                       "write the tag of a complete checkpoint into it",
                       out_dir, len ? "\"" : "nothing", text,
                       len > 40 ? "...\""
                       : len    ? "\""
                                : "");
        free(text);
        return rc;
    }
    memcpy(tag, text, len + 1);
    free(text);
    return 0;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int retain_run(const char *out_dir, int64_t keep_last_k, FILE *log, const char *how, zg_ckpt_retainer *r) {
    char latest[256] = "";
    if (zg_ckpt_latest_tag(out_dir, latest, sizeof latest) != 0) zg_error_clear();
    DIR *d = opendir(out_dir);
    if (!d) return zg_errorf("cannot open '%s': %s", out_dir, strerror(errno));
    int64_t *iters = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (strncmp(e->d_name, "iter_", 5) != 0) continue;
        long long v = strtoll(e->d_name + 5, &end, 10);
        if (*end || end == e->d_name + 5) continue;
        if (e->d_type == DT_LNK) continue; /* a link is the user's, not a checkpoint of this run: left alone */
        iters = zg_realloc(iters, (n + 1) * sizeof *iters);
        iters[n++] = v;
    }
    closedir(d);
    qsort(iters, n, sizeof *iters, cmp_i64);
    int rc = 0;
    for (size_t i = 0; i + (size_t)keep_last_k < n; i++) {
        char tag[64];
        snprintf(tag, sizeof tag, "iter_%lld", (long long)iters[i]);
        if (strcmp(tag, latest) == 0) continue;
        uint64_t bytes = 0;
        double t0 = zg_now_s();
        int handed = r ? r->n_handed : 0;
        if (zg_ckpt_remove_tag_folder(out_dir, tag, &bytes, r) != 0) {
            rc = -1;
        } else if (log && (!r || r->n_handed == handed)) { /* handed on: the wait says it */
            /* one line, one call: whole even beside the training thread's lines */
            fprintf(log, "checkpoint: removed %s (%.2f GB) in %.2f s, %s\n", tag, bytes / 1e9, zg_now_s() - t0, how);
            fflush(log);
        }
    }
    free(iters);
    return rc;
}

int zg_ckpt_retain_log(const char *out_dir, int64_t keep_last_k, FILE *log, const char *how) {
    return retain_run(out_dir, keep_last_k, log, how, NULL);
}

int zg_ckpt_retain(const char *out_dir, int64_t keep_last_k) {
    return zg_ckpt_retain_log(out_dir, keep_last_k, NULL, NULL);
}

static void *retainer_main(void *arg) {
    zg_ckpt_retainer *r = arg;
    r->rc = retain_run(r->out_dir, r->keep_last_k, r->log, "on a thread", r);
    if (r->rc != 0) snprintf(r->error, sizeof r->error, "%s", zg_error_message()); /* errors are per thread */
    return NULL;
}

/* The folders moved aside under hand_off go to `rm -rf` in a session of its own (it outlives this run;
 * nothing waits for it); when it cannot start, they are removed here. */
static int retainer_hand_on(zg_ckpt_retainer *r) {
    int rc = 0;
    if (r->n_handed == 0) return 0;
    uint64_t *bytes = zg_malloc((size_t)r->n_handed * sizeof *bytes); /* for the lines: before rm starts */
    for (int i = 0; i < r->n_handed; i++) bytes[i] = zg_dir_file_bytes(r->handed[i]);
    char **argv = zg_malloc((size_t)(r->n_handed + 4) * sizeof *argv);
    argv[0] = "rm";
    argv[1] = "-rf";
    argv[2] = "--";
    for (int i = 0; i < r->n_handed; i++) argv[3 + i] = r->handed[i];
    argv[3 + r->n_handed] = NULL;
    pid_t pid = -1;
    posix_spawnattr_t at;
    posix_spawn_file_actions_t fa;
    int ok = posix_spawnattr_init(&at) == 0;
    ok = ok && posix_spawn_file_actions_init(&fa) == 0;
    ok = ok && posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID) == 0;
    for (int f = 0; ok && f < 3; f++)
        ok = posix_spawn_file_actions_addopen(&fa, f, "/dev/null", f == 0 ? O_RDONLY : O_WRONLY, 0) == 0;
    extern char **environ;
    ok = ok && posix_spawnp(&pid, "rm", &fa, &at, argv, environ) == 0;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free(argv);
    for (int i = 0; i < r->n_handed; i++) {
        const char *slash = strrchr(r->handed[i], '/'), *base = slash ? slash + 1 : r->handed[i];
        const char *tag = strncmp(base, ".trash.", 7) == 0 ? base + 7 : base;
        if (ok) {
            if (r->log)
                fprintf(r->log,
                        "checkpoint: removing %s (%.2f GB) goes on in process %d after this run (moved aside as %s: no "
                        "checkpoint any more; a later run removes whatever is left of it)\n",
                        tag, bytes[i] / 1e9, (int)pid, base);
        } else {
            uint64_t bytes = 0;
            double t0 = zg_now_s();
            if (zg_dir_remove_files(r->handed[i], ZG_CKPT_UNLINK_THREADS, &bytes) != 0)
                rc = -1;
            else if (r->log)
                fprintf(r->log, "checkpoint: removed %s (%.2f GB) in %.2f s, here (no process could start for it)\n",
                        tag, bytes / 1e9, zg_now_s() - t0);
        }
        free(r->handed[i]);
    }
    if (r->log) fflush(r->log);
    free(bytes);
    free(r->handed);
    r->handed = NULL;
    r->n_handed = 0;
    return rc;
}

void zg_ckpt_retainer_hand_off(zg_ckpt_retainer *r) { atomic_store(&r->hand_off, 1); }

int zg_ckpt_retainer_wait(zg_ckpt_retainer *r) {
    int joined = r->running;
    if (r->running) {
        int e = pthread_join(r->thread, NULL);
        if (e != 0) ZG_FATAL("joining the checkpoint retention thread failed: %s", strerror(e));
        r->running = 0;
    }
    int moved = retainer_hand_on(r); /* after the join: the thread no longer touches the list */
    if (joined && r->rc != 0) return zg_errorf("%s", r->error);
    return moved;
}

int zg_ckpt_retainer_start(zg_ckpt_retainer *r, const char *out_dir, int64_t keep_last_k) {
    char prev[512] = ""; /* the previous deletion's failure, reported after this one starts */
    if (zg_ckpt_retainer_wait(r) != 0) {
        snprintf(prev, sizeof prev, "%s", zg_error_message());
        zg_error_clear();
    }
    snprintf(r->out_dir, sizeof r->out_dir, "%s", out_dir);
    r->keep_last_k = keep_last_k;
    r->rc = 0;
    r->error[0] = '\0';
    if (pthread_create(&r->thread, NULL, retainer_main, r) == 0)
        r->running = 1;
    else if (retain_run(out_dir, keep_last_k, r->log, "on the training thread (no thread could start)", r) != 0)
        return -1;
    return prev[0] ? zg_errorf("%s", prev) : 0;
}

/* ---- out_dir hygiene --------------------------------------------------------------------------- */

/* Names zgpt writes or deletes directly inside out_dir. */
static int managed_name(const char *n) {
    static const char *const fixed[] = {"latest", "best", "final", "metrics.jsonl", ".lock"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(n, fixed[i]) == 0) return 1;
    return strncmp(n, "iter_", 5) == 0 || strncmp(n, ".partial.", 9) == 0 || strncmp(n, ".trash.", 7) == 0;
}

int zg_ckpt_out_dir_check(const char *out_dir) {
    DIR *d = opendir(out_dir);
    if (!d) return zg_errorf("cannot open out_dir '%s': %s", out_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!managed_name(e->d_name)) continue;
        char *p = zg_path_join(out_dir, e->d_name), target[512];
        if (zg_path_is_link(p, target, sizeof target))
            rc = zg_errorf("'%s' is a symbolic link (to '%s'): zgpt writes and replaces '%s' itself and never works "
                           "through a link; move the link away (its target stays untouched) or choose another out_dir",
                           p, target, e->d_name);
        free(p);
    }
    closedir(d);
    return rc;
}

static int is_number(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static void report_add(char *report, size_t cap, const char *name) {
    size_t n = strlen(report);
    if (n + 1 < cap) snprintf(report + n, cap - n, "%s%s", n ? ", " : "", name);
}

int zg_ckpt_out_dir_tidy(const char *out_dir, char *report, size_t cap) {
    report[0] = '\0';
    char latest[256] = "";
    long long latest_iter = -1;
    if (zg_ckpt_latest_tag(out_dir, latest, sizeof latest) != 0)
        zg_error_clear();
    else if (strncmp(latest, "iter_", 5) == 0 && is_number(latest + 5))
        latest_iter = strtoll(latest + 5, NULL, 10);
    DIR *d = opendir(out_dir);
    if (!d) return zg_errorf("cannot open out_dir '%s': %s", out_dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name, *dot;
        /* staging folders, and folders a deletion had moved aside when the run stopped (.trash.<tag>) */
        int flat = strncmp(n, ".partial.", 9) == 0 || strncmp(n, ".trash.", 7) == 0, stale = flat;
        /* zg_atomic_file temporaries: <name>.tmp.<pid> */
        if (!stale && (strncmp(n, "latest.tmp.", 11) == 0 || strncmp(n, "metrics.jsonl.tmp.", 18) == 0))
            stale = is_number(strrchr(n, '.') + 1);
        /* a checkpoint folder moved aside by the rename fallback of swap_into_place: <tag>.old */
        if (!stale && (dot = strrchr(n, '.')) && strcmp(dot, ".old") == 0) {
            char tag[256];
            snprintf(tag, sizeof tag, "%.*s", (int)(dot - n), n);
            stale = strcmp(tag, "best") == 0 || strcmp(tag, "final") == 0 ||
                    (strncmp(tag, "iter_", 5) == 0 && is_number(tag + 5));
        }
        /* complete but never published: newer than the checkpoint `latest` names */
        if (!stale && latest_iter >= 0 && strncmp(n, "iter_", 5) == 0 && is_number(n + 5) &&
            strtoll(n + 5, NULL, 10) > latest_iter && e->d_type != DT_LNK)
            stale = 1;
        if (!stale) continue;
        /* a staging folder goes as it is; a tag folder is moved to its staging name first */
        char *p = zg_path_join(out_dir, n);
        struct stat st;
        if (lstat(p, &st) != 0) { /* moved and removed above while this listing went on */
            free(p);
            continue;
        }
        if ((flat ? zg_dir_remove_files(p, ZG_CKPT_UNLINK_THREADS, NULL)
                  : zg_ckpt_remove_tag_folder(out_dir, n, NULL, NULL)) != 0)
            rc = -1;
        else
            report_add(report, cap, n);
        free(p);
    }
    closedir(d);
    return rc;
}

int64_t zg_ckpt_folder_iter(const char *dir) {
    char *p = zg_path_join(dir, "state.json"), *text = NULL;
    int64_t it = -1;
    if (zg_file_exists(p) && zg_file_read_all(p, &text, NULL) == 0) {
        cJSON *j = cJSON_Parse(text);
        const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, "iter") : NULL;
        if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 9e15) it = (int64_t)v->valuedouble;
        cJSON_Delete(j);
    }
    zg_error_clear();
    free(text);
    free(p);
    return it;
}
