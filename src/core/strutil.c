#include "core/strutil.h"

#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

size_t zg_str_distance(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    size_t *row = zg_malloc((nb + 1) * sizeof *row);
    for (size_t j = 0; j <= nb; j++) row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    size_t d = row[nb];
    free(row);
    return d;
}

const char *zg_str_closest(const char *word, const char *const *candidates, size_t n) {
    const char *best = NULL;
    size_t best_d = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        if (!candidates[i]) continue;
        size_t d = zg_str_distance(word, candidates[i]);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    /* Accept a suggestion when under half of the word needs changing, or when one contains the other. */
    size_t len = strlen(word);
    if (best && (best_d <= (len + 1) / 2 || strstr(best, word) || strstr(word, best))) return best;
    return NULL;
}

int zg_parse_i64(const char *s, const char *what, int64_t *out) {
    if (!s || !*s) return zg_errorf("%s: expected an integer, got an empty value", what);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE) return zg_errorf("%s: integer '%s' is out of range", what, s);
    if (*end != '\0') {
        /* Accept integral floats written like 1e6. */
        double d = strtod(s, &end);
        if (*end == '\0' && d == floor(d) && fabs(d) < 9.0e18) {
            *out = (int64_t)d;
            return 0;
        }
        return zg_errorf("%s: expected an integer, got '%s'", what, s);
    }
    *out = v;
    return 0;
}

int zg_parse_f64(const char *s, const char *what, double *out) {
    if (!s || !*s) return zg_errorf("%s: expected a number, got an empty value", what);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(v))
        return zg_errorf("%s: expected a finite number, got '%s'", what, s);
    *out = v;
    return 0;
}

int zg_parse_bool(const char *s, const char *what, int *out) {
    const char *yes[] = {"true", "1", "yes", "on"};
    const char *no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return zg_errorf("%s: expected true or false, got '%s'", what, s);
}

const char *zg_fmt_bytes(double bytes, char *buf, size_t cap) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (fabs(bytes) >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, cap, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
    return buf;
}
