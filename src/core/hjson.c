/* Hjson reader (hjson.h): a recursive-descent parser straight into cJSON nodes. It follows the hjson
 * reference parser's rules where the syntax page leaves a choice: a quoteless value runs to the end of
 * its line and becomes true / false / null / a number only when the text before a , } ] or a comment
 * reads as one; a key ends at ':' (whitespace after it is allowed, inside it is not). */
#include "core/hjson.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct {
    const char *s;
    size_t n, i;
    size_t line; /* of s[i], from 1 */
    int depth;
    char *buf; /* the string being read (NUL-terminated) */
    size_t blen, bcap;
    size_t *err_line;
} hj_parser;

static int hj_fail(hj_parser *p, const char *fmt, ...) ZG_PRINTF(2, 3);
static int hj_fail(hj_parser *p, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->err_line) *p->err_line = p->line;
    return zg_errorf("line %zu: %s", p->line, msg);
}

static int hj_peek(const hj_parser *p, size_t k) { return p->i + k < p->n ? (unsigned char)p->s[p->i + k] : -1; }

static void hj_next(hj_parser *p) {
    if (p->i < p->n) {
        if (p->s[p->i] == '\n') p->line++;
        p->i++;
    }
}

/* buf empty (and allocated: an empty string is still a string) */
static void hj_buf_reset(hj_parser *p) {
    if (!p->buf) {
        p->bcap = 256;
        p->buf = zg_malloc(p->bcap);
    }
    p->blen = 0;
    p->buf[0] = '\0';
}

/* buf's length without its trailing spaces and tabs (a quoteless value's end) */
static size_t hj_buf_trimmed(const hj_parser *p) {
    size_t n = p->blen;
    while (n > 0 && (p->buf[n - 1] == ' ' || p->buf[n - 1] == '\t')) n--;
    return n;
}

static void hj_buf_put(hj_parser *p, char c) {
    if (p->blen + 2 > p->bcap) {
        p->bcap = p->bcap ? 2 * p->bcap : 256;
        p->buf = zg_realloc(p->buf, p->bcap);
    }
    p->buf[p->blen++] = c;
    p->buf[p->blen] = '\0';
}

/* a (shown) character for messages: printable ASCII as itself, else '?' */
static int hj_show(int c) { return c > ' ' && c < 127 ? c : '?'; }

static int hj_is_punct(int c) { return c == ',' || c == ':' || c == '[' || c == ']' || c == '{' || c == '}'; }

/* whitespace and comments (# and // to the end of the line, block comments) */
static int hj_skip(hj_parser *p) {
    for (;;) {
        int c = hj_peek(p, 0);
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            hj_next(p);
        } else if (c == '#' || (c == '/' && hj_peek(p, 1) == '/')) {
            while (hj_peek(p, 0) >= 0 && hj_peek(p, 0) != '\n') hj_next(p);
        } else if (c == '/' && hj_peek(p, 1) == '*') {
            size_t from = p->line;
            hj_next(p);
            hj_next(p);
            while (!(hj_peek(p, 0) == '*' && hj_peek(p, 1) == '/')) {
                if (hj_peek(p, 0) < 0) return hj_fail(p, "the /* comment from line %zu is not closed (add */)", from);
                hj_next(p);
            }
            hj_next(p);
            hj_next(p);
        } else {
            return 0;
        }
    }
}

static void hj_put_utf8(hj_parser *p, unsigned cp) {
    if (cp < 0x80) {
        hj_buf_put(p, (char)cp);
    } else if (cp < 0x800) {
        hj_buf_put(p, (char)(0xC0 | (cp >> 6)));
        hj_buf_put(p, (char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        hj_buf_put(p, (char)(0xE0 | (cp >> 12)));
        hj_buf_put(p, (char)(0x80 | ((cp >> 6) & 0x3F)));
        hj_buf_put(p, (char)(0x80 | (cp & 0x3F)));
    } else {
        hj_buf_put(p, (char)(0xF0 | (cp >> 18)));
        hj_buf_put(p, (char)(0x80 | ((cp >> 12) & 0x3F)));
        hj_buf_put(p, (char)(0x80 | ((cp >> 6) & 0x3F)));
        hj_buf_put(p, (char)(0x80 | (cp & 0x3F)));
    }
}

/* 4 hex digits after \u; -1 when they are not */
static long hj_hex4(hj_parser *p) {
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int c = hj_peek(p, 0), d = c >= '0' && c <= '9'   ? c - '0'
                                   : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                          : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
        hj_next(p);
    }
    return v;
}

/* "..." or '...' (JSON's escapes, and \' ) into buf; p at the opening quote */
static int hj_quoted(hj_parser *p) {
    int q = hj_peek(p, 0);
    size_t from = p->line;
    hj_next(p);
    hj_buf_reset(p);
    for (;;) {
        int c = hj_peek(p, 0);
        if (c < 0 || c == '\n' || c == '\r')
            return hj_fail(p, "the string opened with %c on line %zu is not closed on its line (add %c)", q, from, q);
        hj_next(p);
        if (c == q) return 0;
        if (c != '\\') {
            hj_buf_put(p, (char)c);
            continue;
        }
        int e = hj_peek(p, 0);
        hj_next(p);
        switch (e) {
        case '"':
        case '\'':
        case '\\':
        case '/': hj_buf_put(p, (char)e); break;
        case 'b': hj_buf_put(p, '\b'); break;
        case 'f': hj_buf_put(p, '\f'); break;
        case 'n': hj_buf_put(p, '\n'); break;
        case 'r': hj_buf_put(p, '\r'); break;
        case 't': hj_buf_put(p, '\t'); break;
        case 'u': {
            long cp = hj_hex4(p);
            if (cp < 0) return hj_fail(p, "\\u in a string needs 4 hex digits");
            if (cp >= 0xD800 && cp <= 0xDBFF && hj_peek(p, 0) == '\\' && hj_peek(p, 1) == 'u') {
                size_t at = p->i;
                hj_next(p);
                hj_next(p);
                long lo = hj_hex4(p);
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    p->i = at; /* not a pair: the lone half as it is, the next escape read again */
            }
            if (cp == 0) return hj_fail(p, "\\u0000 (a NUL character) in a string is not supported");
            hj_put_utf8(p, (unsigned)cp);
            break;
        }
        default:
            return hj_fail(p,
                           "bad escape '\\%c' in a string (a backslash in a quoted string starts an escape: "
                           "write \\\\ for one)",
                           hj_show(e));
        }
    }
}

/* '''multiline''' into buf; p at the first quote. The column of the opening ''' is removed from the start
 * of each following line (whitespace only), the rest of its own line is skipped if blank, and the last
 * line feed before the closing ''' is dropped. */
static int hj_multiline(hj_parser *p) {
    size_t from = p->line, indent = 0;
    while (indent < p->i && p->s[p->i - indent - 1] != '\n') indent++;
    hj_next(p);
    hj_next(p);
    hj_next(p);
    hj_buf_reset(p);
    int c;
    while ((c = hj_peek(p, 0)) >= 0 && c <= ' ' && c != '\n') hj_next(p);
    int skip_indent = 0;
    if (c == '\n') {
        hj_next(p);
        skip_indent = 1;
    }
    int quotes = 0;
    for (;;) {
        if (skip_indent) {
            size_t k = indent;
            while ((c = hj_peek(p, 0)) >= 0 && c <= ' ' && c != '\n' && k-- > 0) hj_next(p);
            skip_indent = 0;
        }
        c = hj_peek(p, 0);
        if (c < 0) return hj_fail(p, "the ''' string from line %zu is not closed (add ''')", from);
        hj_next(p);
        if (c == '\'') {
            if (++quotes == 3) {
                if (p->blen > 0 && p->buf[p->blen - 1] == '\n') p->buf[--p->blen] = '\0';
                return 0;
            }
            continue;
        }
        for (; quotes > 0; quotes--) hj_buf_put(p, '\'');
        if (c == '\n') {
            hj_buf_put(p, '\n');
            skip_indent = 1;
        } else if (c != '\r') {
            hj_buf_put(p, (char)c);
        }
    }
}

/* JSON's number grammar over all of s (no leading zeros, digits after '.', an optional exponent) */
static int hj_is_number(const char *s) {
    if (*s == '-') s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9') s++;
    else
        return 0;
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9')) return 0;
        while (*s >= '0' && *s <= '9') s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!(*s >= '0' && *s <= '9')) return 0;
        while (*s >= '0' && *s <= '9') s++;
    }
    return *s == '\0';
}

/* true / false / null / a number when buf (trailing whitespace trimmed) reads as one; NULL otherwise */
static cJSON *hj_literal(hj_parser *p) {
    size_t n = hj_buf_trimmed(p);
    char save = p->buf[n];
    p->buf[n] = '\0';
    cJSON *v = NULL;
    if (strcmp(p->buf, "true") == 0)
        v = cJSON_CreateTrue();
    else if (strcmp(p->buf, "false") == 0)
        v = cJSON_CreateFalse();
    else if (strcmp(p->buf, "null") == 0)
        v = cJSON_CreateNull();
    else if (hj_is_number(p->buf))
        v = cJSON_CreateNumber(strtod(p->buf, NULL));
    p->buf[n] = save;
    return v;
}

/* a quoteless value: true / false / null / a number, or the rest of the line as a string */
static cJSON *hj_quoteless(hj_parser *p) {
    int c = hj_peek(p, 0);
    if (hj_is_punct(c)) {
        hj_fail(p, "found '%c' where a value was expected", c);
        return NULL;
    }
    hj_buf_reset(p);
    for (;;) {
        hj_buf_put(p, (char)c);
        hj_next(p);
        c = hj_peek(p, 0);
        int eol = c < 0 || c == '\n' || c == '\r';
        if (eol || c == ',' || c == '}' || c == ']' || c == '#' ||
            (c == '/' && (hj_peek(p, 1) == '/' || hj_peek(p, 1) == '*'))) {
            cJSON *v = hj_literal(p);
            if (v) return v;
            if (eol) {
                p->buf[hj_buf_trimmed(p)] = '\0';
                return cJSON_CreateString(p->buf);
            }
        }
    }
}

static cJSON *hj_value(hj_parser *p);

/* a key into buf: quoted, or the characters up to ':' (whitespace after them allowed, inside them not) */
static int hj_key(hj_parser *p) {
    int c = hj_peek(p, 0);
    if (c == '"' || c == '\'') return hj_quoted(p);
    hj_buf_reset(p);
    size_t space_at = (size_t)-1, start = p->i;
    for (;;) {
        c = hj_peek(p, 0);
        if (c == ':') {
            if (p->blen == 0) return hj_fail(p, "found ':' with no key before it");
            if (space_at != (size_t)-1 && space_at != p->blen) {
                size_t end = p->i;
                while (end > start && (unsigned char)p->s[end - 1] <= ' ') end--;
                return hj_fail(p, "whitespace in key '%.*s' (put a key with spaces in quotes)", (int)(end - start),
                               p->s + start);
            }
            return 0;
        }
        if (c < 0) return hj_fail(p, "the file ends in key '%s' (a key is followed by ':' and a value)", p->buf);
        if (c <= ' ') {
            if (space_at == (size_t)-1) space_at = p->blen;
        } else if (hj_is_punct(c)) {
            return hj_fail(p, "found '%c' where a key was expected (quote keys that hold {}[],: or whitespace)", c);
        } else {
            hj_buf_put(p, (char)c);
        }
        hj_next(p);
    }
}

/* members up to '}' (braced: p at '{') or the end of the text (the top level without braces) */
static cJSON *hj_object(hj_parser *p, int braced) {
    size_t from = p->line;
    char *key = NULL;
    cJSON *obj = cJSON_CreateObject(), *v = NULL;
    ZG_CHECK_PTR(obj);
    if (braced) hj_next(p);
    for (;;) {
        if (hj_skip(p) != 0) goto fail;
        int c = hj_peek(p, 0);
        if (braced && c == '}') {
            hj_next(p);
            return obj;
        }
        if (c < 0) {
            if (!braced) return obj;
            hj_fail(p, "the '{' from line %zu is not closed (add '}')", from);
            goto fail;
        }
        if (hj_key(p) != 0) goto fail;
        key = zg_strdup(p->buf);
        if (hj_skip(p) != 0) goto fail;
        if (hj_peek(p, 0) != ':') {
            hj_fail(p, "expected ':' after key '%s', found '%c'", key, hj_show(hj_peek(p, 0)));
            goto fail;
        }
        hj_next(p);
        if (hj_skip(p) != 0) goto fail;
        if (hj_peek(p, 0) < 0 || (hj_peek(p, 0) == '}' && braced)) {
            hj_fail(p, "key '%s' has no value", key);
            goto fail;
        }
        if ((v = hj_value(p)) == NULL) goto fail;
        cJSON_AddItemToObject(obj, key, v);
        v = NULL;
        free(key);
        key = NULL;
        if (hj_skip(p) != 0) goto fail;
        if (hj_peek(p, 0) == ',') hj_next(p);
        if (!braced && hj_peek(p, 0) == '}') {
            hj_fail(p, "found '}' with no '{' before it");
            goto fail;
        }
    }
fail:
    free(key);
    cJSON_Delete(obj);
    return NULL;
}

static cJSON *hj_array(hj_parser *p) {
    size_t from = p->line;
    cJSON *arr = cJSON_CreateArray(), *v;
    ZG_CHECK_PTR(arr);
    hj_next(p);
    for (;;) {
        if (hj_skip(p) != 0) goto fail;
        int c = hj_peek(p, 0);
        if (c == ']') {
            hj_next(p);
            return arr;
        }
        if (c < 0) {
            hj_fail(p, "the '[' from line %zu is not closed (add ']')", from);
            goto fail;
        }
        if ((v = hj_value(p)) == NULL) goto fail;
        cJSON_AddItemToArray(arr, v);
        if (hj_skip(p) != 0) goto fail;
        if (hj_peek(p, 0) == ',') hj_next(p);
    }
fail:
    cJSON_Delete(arr);
    return NULL;
}

/* a value; p at its first character (after whitespace and comments) */
static cJSON *hj_value(hj_parser *p) {
    int c = hj_peek(p, 0);
    cJSON *v = NULL;
    if (c == '{' || c == '[') {
        if (++p->depth > ZG_HJSON_MAX_DEPTH) {
            hj_fail(p, "nesting deeper than %d levels", ZG_HJSON_MAX_DEPTH);
            return NULL;
        }
        v = c == '{' ? hj_object(p, 1) : hj_array(p);
        p->depth--;
        return v;
    }
    if (c == '\'' && hj_peek(p, 1) == '\'' && hj_peek(p, 2) == '\'') {
        if (hj_multiline(p) != 0) return NULL;
    } else if (c == '"' || c == '\'') {
        if (hj_quoted(p) != 0) return NULL;
    } else {
        return hj_quoteless(p);
    }
    v = cJSON_CreateString(p->buf);
    ZG_CHECK_PTR(v);
    return v;
}

cJSON *zg_hjson_parse(const char *text, size_t len, size_t *err_line) {
    hj_parser p = {text, len, 0, 1, 0, NULL, 0, 0, err_line};
    cJSON *root = NULL;
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        for (size_t k = 0; k < (size_t)(nul - text); k++) p.line += text[k] == '\n';
        hj_fail(&p, "a NUL byte (is this a text file?)");
        goto done;
    }
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.i = 3; /* a UTF-8 byte order mark */
    if (hj_skip(&p) != 0) goto done;
    int c = hj_peek(&p, 0);
    if (c < 0) {
        hj_fail(&p, "the file holds no value (an empty config is {})");
        goto done;
    }
    if (c == '{' || c == '[') {
        if ((root = hj_value(&p)) == NULL) goto done;
        if (hj_skip(&p) != 0 || hj_peek(&p, 0) >= 0) {
            if (hj_peek(&p, 0) >= 0)
                hj_fail(&p, "found '%c' after the end of the top-level %s", hj_show(hj_peek(&p, 0)),
                        c == '{' ? "object (one more '}' than '{'?)" : "array");
            cJSON_Delete(root);
            root = NULL;
        }
    } else {
        root = hj_object(&p, 0); /* Hjson's top-level object without braces */
    }
done:
    free(p.buf);
    return root;
}
