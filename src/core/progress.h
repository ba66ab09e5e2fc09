/* Progress of long operations on stderr: done / total, rate and ETA. In a distributed job only rank 0
 * prints (zg_log_rank).
 *
 * On a terminal it is one line rewritten in place (at most every 0.2 s, starting after 0.5 s so
 * short operations print nothing). When stderr is not a terminal (logs, CI) it prints a plain line
 * at most every few seconds (5 s; $ZGPT_PROGRESS_INTERVAL sets another number of seconds), so a log
 * shows that work goes on without filling up. zg_progress_free prints the final line when anything
 * was printed before.
 *
 *   zg_progress p;
 *   zg_progress_init(&p, "download gpt2/model.safetensors", total_bytes, NULL);
 *   ... zg_progress_update(&p, done); ...
 *   zg_progress_free(&p);
 */
#ifndef ZG_CORE_PROGRESS_H
#define ZG_CORE_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char label[160];
    const char *unit; /* NULL: bytes (printed as KiB/MiB/GiB); else the name of an item ("tokens") */
    uint64_t total;   /* 0: unknown (no percentage, no ETA) */
    uint64_t done;
    uint64_t base;   /* done at the start (a resumed download): excluded from the rate */
    double t0, last; /* seconds (monotonic) */
    double interval; /* seconds between lines */
    int tty;
    int printed; /* a line was printed (the final line follows) */
    int silent;  /* prints nothing: set by zg_progress_init on ranks other than 0 */
} zg_progress;

void zg_progress_init(zg_progress *p, const char *label, uint64_t total, const char *unit);
/* The amount already there when the work starts (counted in done, not in the rate). */
void zg_progress_set_base(zg_progress *p, uint64_t base);
void zg_progress_set_total(zg_progress *p, uint64_t total);
/* Records the amount done; prints when the interval has passed. Cheap enough to call per chunk. */
void zg_progress_update(zg_progress *p, uint64_t done);
/* Ends the line (prints the final amount and rate when a line was printed before). */
void zg_progress_free(zg_progress *p);

/* One line of the current state into buf (also used by the tests): "label: 1.00 MiB / 2.00 MiB (50%),
 * 1.00 MiB/s, ETA 1s". */
const char *zg_progress_format(const zg_progress *p, double now, char *buf, size_t cap);
/* A duration as "45s", "12m05s", "3h04m". */
const char *zg_fmt_duration(double seconds, char *buf, size_t cap);

#endif
