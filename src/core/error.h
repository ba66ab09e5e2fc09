/* Error reporting for zgpt.
 *
 * Two kinds of failure:
 *  - Expected failures (bad input, missing file, corrupt checkpoint) are reported by returning -1
 *    (or NULL) after zg_errorf() has recorded a one-line message. The caller either recovers or
 *    passes the failure up; the CLI prints "zgpt: error: <message>" and exits non-zero.
 *  - Failures that mean the environment is broken (a libc/CUDA/NCCL/MPI call that should not fail)
 *    go through the ZG_CHECK_* macros, which print file, line, the call, and the rank, then exit.
 *
 * The message buffer is thread-local (like errno): one per thread, so worker threads never race.
 */
#ifndef ZG_CORE_ERROR_H
#define ZG_CORE_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#if defined(__GNUC__)
#define ZG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ZG_PRINTF(a, b)
#endif

/* Records a one-line error message and returns -1 (so `return zg_errorf(...)` reads naturally). */
int zg_errorf(const char *fmt, ...) ZG_PRINTF(1, 2);
/* Prefixes the current message with context: "ctx: <old message>". Returns -1. */
int zg_error_prefix(const char *fmt, ...) ZG_PRINTF(1, 2);
/* The last recorded message of this thread ("" if none). */
const char *zg_error_message(void);
void zg_error_clear(void);

/* Several problems of one input said together (a config's, a launch's): lines collected, the same line twice
 * once, then one error holding all of them. */
typedef struct {
    char **items;
    int n;
} zg_lines;
void zg_lines_addv(zg_lines *l, const char *fmt, va_list ap);
void zg_lines_add(zg_lines *l, const char *fmt, ...) ZG_PRINTF(2, 3);
/* The message of the zg_errorf that just failed, as one line (the pending error is kept). */
void zg_lines_add_error(zg_lines *l);
void zg_lines_free(zg_lines *l);
/* 0 when l holds nothing; else -1 with one error: its one line, or "N problems <what> (fix them all):" and
 * each line indented below. */
int zg_error_lines(const zg_lines *l, const char *what);

/* The rank printed in fatal messages and logs (-1 = not distributed, printed as nothing). Set once
 * at start-up by the launcher/communicator. */
void zg_log_set_rank(int rank);
int zg_log_rank(void);

/* Prints "zgpt[rank R]: fatal: file:line: what" as one line (one write) without exiting: for fatal
 * paths that must tear something down first (MPI_Abort, ncclCommAbort). */
void zg_fatal_report(const char *file, int line, const char *fmt, ...) ZG_PRINTF(3, 4);
/* Prints "zgpt[rank R]: fatal: file:line: what" and exits with status 1. */
_Noreturn void zg_fatal_at(const char *file, int line, const char *fmt, ...) ZG_PRINTF(3, 4);
#define ZG_FATAL(...) zg_fatal_at(__FILE__, __LINE__, __VA_ARGS__)

/* Prints "zgpt: error: <message>" (with the rank when distributed) to stderr. */
void zg_error_print(void);
/* Prints "zgpt: note: <what>" (with the rank when distributed) to stderr as one line (one write): what zgpt
 * does instead of what was asked or expected. */
void zg_note(const char *fmt, ...) ZG_PRINTF(1, 2);

/* libc calls that return -1 / non-zero and set errno. */
#define ZG_CHECK_SYS(call)                                                                                             \
    do {                                                                                                               \
        if ((call) != 0) zg_fatal_at(__FILE__, __LINE__, "%s failed: %s", #call, zg_strerrno());                       \
    } while (0)

/* Calls that return a pointer, NULL on failure. */
#define ZG_CHECK_PTR(call) zg_check_ptr_at((call), __FILE__, __LINE__, #call)

const char *zg_strerrno(void);
void *zg_check_ptr_at(void *p, const char *file, int line, const char *call);

/* Checked allocation: out-of-memory is fatal with the size and the call site. */
void *zg_malloc_at(size_t n, const char *file, int line);
void *zg_calloc_at(size_t count, size_t size, const char *file, int line);
void *zg_realloc_at(void *p, size_t n, const char *file, int line);
char *zg_strdup_at(const char *s, const char *file, int line);
#define zg_malloc(n) zg_malloc_at((n), __FILE__, __LINE__)
#define zg_calloc(c, s) zg_calloc_at((c), (s), __FILE__, __LINE__)
#define zg_realloc(p, n) zg_realloc_at((p), (n), __FILE__, __LINE__)
#define zg_strdup(s) zg_strdup_at((s), __FILE__, __LINE__)

#endif
