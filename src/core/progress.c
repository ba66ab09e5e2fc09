#include "core/clock.h"
#include "core/progress.h"

#include "core/error.h"
#include "core/strutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A terminal line is redrawn at most this often; output to a file at most every interval seconds. */
#define TTY_REDRAW_S 0.2
#define TTY_FIRST_S 0.5
#define PLAIN_INTERVAL_S 5.0

const char *zg_fmt_duration(double s, char *buf, size_t cap) {
    if (!isfinite(s) || s < 0) {
        snprintf(buf, cap, "?");
        return buf;
    }
    long long t = (long long)(s + 0.5);
    if (t < 60)
        snprintf(buf, cap, "%llds", t);
    else if (t < 3600)
        snprintf(buf, cap, "%lldm%02llds", t / 60, t % 60);
    else
        snprintf(buf, cap, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
    return buf;
}

void zg_progress_init(zg_progress *p, const char *label, uint64_t total, const char *unit) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    p->unit = unit;
    p->total = total;
    p->t0 = zg_now_s();
    p->last = p->t0;
    p->tty = isatty(STDERR_FILENO);
    p->silent = zg_log_rank() > 0;
    p->interval = p->tty ? TTY_REDRAW_S : PLAIN_INTERVAL_S;
    const char *env = getenv("ZGPT_PROGRESS_INTERVAL");
    if (!p->tty && env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (*end == '\0' && v >= 0) p->interval = v;
    }
}

void zg_progress_set_base(zg_progress *p, uint64_t base) {
    p->base = base;
    if (p->done < base) p->done = base;
}

void zg_progress_set_total(zg_progress *p, uint64_t total) { p->total = total; }

static void fmt_amount(const zg_progress *p, double v, char *buf, size_t cap) {
    if (!p->unit) {
        zg_fmt_bytes(v, buf, cap);
    } else if (v >= 1e9) {
        snprintf(buf, cap, "%.2fG", v / 1e9);
    } else if (v >= 1e6) {
        snprintf(buf, cap, "%.2fM", v / 1e6);
    } else {
        snprintf(buf, cap, "%.0f", v);
    }
}

const char *zg_progress_format(const zg_progress *p, double now, char *buf, size_t cap) {
    char d[32], t[32], r[32], e[32];
    double el = now - p->t0;
    double rate = el > 0 ? (double)(p->done - p->base) / el : 0;
    fmt_amount(p, (double)p->done, d, sizeof d);
    fmt_amount(p, rate, r, sizeof r);
    const char *u = p->unit ? " " : "", *un = p->unit ? p->unit : "";
    if (p->total) {
        fmt_amount(p, (double)p->total, t, sizeof t);
        double left = p->total > p->done ? (double)(p->total - p->done) : 0;
        if (rate > 0)
            zg_fmt_duration(left / rate, e, sizeof e);
        else
            snprintf(e, sizeof e, "?");
        snprintf(buf, cap, "%s: %s / %s%s%s (%.0f%%), %s%s%s/s, ETA %s", p->label, d, t, u, un,
                 100.0 * (double)p->done / (double)p->total, r, u, un, e);
    } else {
        snprintf(buf, cap, "%s: %s%s%s, %s%s%s/s", p->label, d, u, un, r, u, un);
    }
    return buf;
}

void zg_progress_update(zg_progress *p, uint64_t done) {
    p->done = done;
    if (p->silent) return;
    double now = zg_now_s();
    if (now - p->last < p->interval) return;
    if (p->tty && now - p->t0 < TTY_FIRST_S) return;
    p->last = now;
    char line[512];
    zg_progress_format(p, now, line, sizeof line);
    if (p->tty)
        fprintf(stderr, "\r%s\033[K", line); /* erase what a longer previous line left */
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
    p->printed = 1;
}

void zg_progress_free(zg_progress *p) {
    if (p->printed) {
        char line[512], el[32];
        double now = zg_now_s();
        zg_progress_format(p, now, line, sizeof line);
        /* the final line: the amount, rate and time taken instead of an ETA */
        char *eta = strstr(line, ", ETA ");
        if (eta) *eta = '\0';
        fprintf(stderr, "%s%s, done in %s%s\n", p->tty ? "\r" : "", line, zg_fmt_duration(now - p->t0, el, sizeof el),
                p->tty ? "\033[K" : "");
        fflush(stderr);
    }
    memset(p, 0, sizeof *p);
}
