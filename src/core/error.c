#include "core/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ZG_ERROR_CAP = 8192 }; /* a config load reports all its problems in one message */

static _Thread_local char tl_message[ZG_ERROR_CAP];
static _Thread_local char tl_errno_text[256];
/* The rank is process-wide and written once before any thread starts. */
static int process_rank = -1;

int zg_errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_message, sizeof tl_message, fmt, ap);
    va_end(ap);
    return -1;
}

int zg_error_prefix(const char *fmt, ...) {
    char prefix[ZG_ERROR_CAP];
    char old[ZG_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, tl_message, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof tl_message - 3) n = sizeof tl_message - 3;
    memcpy(tl_message, prefix, n);
    memcpy(tl_message + n, ": ", 2);
    size_t room = sizeof tl_message - n - 3;
    size_t m = strnlen(old, room);
    memcpy(tl_message + n + 2, old, m);
    tl_message[n + 2 + m] = '\0';
    return -1;
}

const char *zg_error_message(void) { return tl_message; }
void zg_error_clear(void) { tl_message[0] = '\0'; }

void zg_log_set_rank(int rank) { process_rank = rank; }
int zg_log_rank(void) { return process_rank; }

/* Formats "zgpt[rank R]: kind: " into buf; returns its length. */
static size_t format_prefix(char *buf, size_t cap, const char *kind) {
    int n = process_rank >= 0 ? snprintf(buf, cap, "zgpt[rank %d]: %s: ", process_rank, kind)
                              : snprintf(buf, cap, "zgpt: %s: ", kind);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

/* One write() per line: stderr is unbuffered, and several ranks (or mpirun's output tagging) must
 * never see a line arrive in pieces that can interleave with another rank's. */
static void write_line(char *buf, size_t len, size_t cap) {
    if (len >= cap - 1) len = cap - 2;
    buf[len++] = '\n';
    fflush(stderr);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, buf + off, len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
}

/* Appends formatted text at buf[*n], keeping the result NUL-terminated inside cap. */
static void append_v(char *buf, size_t *n, size_t cap, const char *fmt, va_list ap) {
    if (*n >= cap - 1) return;
    int m = vsnprintf(buf + *n, cap - *n, fmt, ap);
    if (m > 0) *n += (size_t)m < cap - *n ? (size_t)m : cap - *n - 1;
}

static void append(char *buf, size_t *n, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    append_v(buf, n, cap, fmt, ap);
    va_end(ap);
}

void zg_error_print(void) {
    char line[ZG_ERROR_CAP + 64];
    size_t n = format_prefix(line, sizeof line, "error");
    append(line, &n, sizeof line, "%s", tl_message[0] ? tl_message : "unknown error");
    write_line(line, n, sizeof line);
}

void zg_note(const char *fmt, ...) {
    char line[ZG_ERROR_CAP];
    size_t n = format_prefix(line, sizeof line, "note");
    va_list ap;
    va_start(ap, fmt);
    append_v(line, &n, sizeof line, fmt, ap);
    va_end(ap);
    write_line(line, n, sizeof line);
}

static void fatal_report_v(const char *file, int line_no, const char *fmt, va_list ap) {
    char line[ZG_ERROR_CAP + 512];
    fflush(stdout);
    size_t n = format_prefix(line, sizeof line, "fatal");
    append(line, &n, sizeof line, "%s:%d: ", file, line_no);
    append_v(line, &n, sizeof line, fmt, ap);
    write_line(line, n, sizeof line);
}

void zg_fatal_report(const char *file, int line_no, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fatal_report_v(file, line_no, fmt, ap);
    va_end(ap);
}

_Noreturn void zg_fatal_at(const char *file, int line_no, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fatal_report_v(file, line_no, fmt, ap);
    va_end(ap);
    exit(1);
}

const char *zg_strerrno(void) {
    int e = errno;
    snprintf(tl_errno_text, sizeof tl_errno_text, "%s (errno %d)", strerror(e), e);
    return tl_errno_text;
}

void *zg_check_ptr_at(void *p, const char *file, int line, const char *call) {
    if (!p) zg_fatal_at(file, line, "%s returned NULL: %s", call, zg_strerrno());
    return p;
}

void *zg_malloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) zg_fatal_at(file, line, "out of host memory allocating %zu bytes", n);
    return p;
}

void *zg_calloc_at(size_t count, size_t size, const char *file, int line) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) zg_fatal_at(file, line, "out of host memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *zg_realloc_at(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) zg_fatal_at(file, line, "out of host memory reallocating to %zu bytes", n);
    return q;
}

char *zg_strdup_at(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = zg_malloc_at(n, file, line);
    memcpy(p, s, n);
    return p;
}

/* ---- several problems said together ---------------------------------------------------------- */

void zg_lines_addv(zg_lines *l, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int len = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *s = zg_malloc((size_t)len + 1);
    vsnprintf(s, (size_t)len + 1, fmt, ap);
    for (int i = 0; i < l->n; i++) /* the same line from two places (both files) once */
        if (strcmp(l->items[i], s) == 0) {
            free(s);
            return;
        }
    l->items = zg_realloc(l->items, (size_t)(l->n + 1) * sizeof *l->items);
    l->items[l->n++] = s;
}

void zg_lines_add(zg_lines *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    zg_lines_addv(l, fmt, ap);
    va_end(ap);
}

void zg_lines_add_error(zg_lines *l) { zg_lines_add(l, "%s", zg_error_message()); }

void zg_lines_free(zg_lines *l) {
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

int zg_error_lines(const zg_lines *l, const char *what) {
    if (l->n == 0) return 0;
    if (l->n == 1) return zg_errorf("%s", l->items[0]);
    size_t len = 64 + strlen(what);
    for (int i = 0; i < l->n; i++) len += strlen(l->items[i]) + 4;
    char *all = zg_malloc(len);
    int w = snprintf(all, len, "%d problems %s (fix them all):", l->n, what);
    for (int i = 0; i < l->n; i++) w += snprintf(all + w, len - (size_t)w, "\n  %s", l->items[i]);
    zg_errorf("%s", all);
    free(all);
    return -1;
}
