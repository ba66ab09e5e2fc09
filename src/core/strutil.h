/* Small string helpers shared by the CLI and the config validator. */
#ifndef ZG_CORE_STRUTIL_H
#define ZG_CORE_STRUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Edit distance (insert/delete/substitute) between a and b. */
size_t zg_str_distance(const char *a, const char *b);
/* The candidate closest to `word` (NULL if none is reasonably close). */
const char *zg_str_closest(const char *word, const char *const *candidates, size_t n);

/* Strict number parsing: the whole string must be a number in range. 0 / -1 with an error naming
 * `what` (an option or key name) and the value. */
int zg_parse_i64(const char *s, const char *what, int64_t *out);
int zg_parse_f64(const char *s, const char *what, double *out);
/* true/false/1/0/yes/no/on/off */
int zg_parse_bool(const char *s, const char *what, int *out);

/* Human-readable bytes: "1.23 GiB" into buf. */
const char *zg_fmt_bytes(double bytes, char *buf, size_t cap);

#endif
