#include "train/config.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/strutil.h"
#include "model/gpt2.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the key table: the one list of valid keys, their types, fields and defaults ------------- */

typedef enum {
    K_INT,     /* integral number */
    K_FLOAT,   /* number */
    K_BOOL,    /* true/false (or, when `choices` is set, also one of those strings) */
    K_STRING,  /* any non-empty string */
    K_TEXT,    /* any string, also "" (DeepSpeed's monitor output_path: "" = the current folder) */
    K_ENUM,    /* one of `choices` ("a|b|c") */
    K_DATA,    /* a path string, or a list of paths / {"path", "weight"} objects */
    K_BETAS,   /* [beta1, beta2] */
    K_SECTION, /* an object whose keys are in this table under "<path>." */
    K_ANY,     /* accepted and stored as is */
    K_FEATURE, /* a DeepSpeed feature section zgpt does not implement: its contents are DeepSpeed's */
    K_COMPILE, /* nanoGPT's boolean `compile`, or DeepSpeed's `compile` section */
} key_type;

enum {
    KF_AUTO = 1,    /* the string "auto" (Hugging Face's convention) means "zgpt's resolved value" */
    KF_NOCASE = 2,  /* K_ENUM compared without case (DeepSpeed lowercases optimizer names) */
    KF_SWITCH = 4,  /* section with "enabled": the note is printed only when enabled */
    KF_IGNORED = 8, /* top-level key DeepSpeed never reads: accepted with a note */
};

typedef enum { FK_NONE, FK_I32, FK_I64, FK_U64, FK_DBL, FK_STR, FK_ENUM } field_kind;

typedef struct {
    const char *path;
    key_type type;
    double min, max;     /* numbers: allowed closed range */
    const char *choices; /* K_ENUM; K_BOOL: strings allowed besides true and false */
    unsigned flags;      /* KF_* */
    field_kind fk;       /* how the value is stored at `off` (FK_NONE: derive() reads it) */
    size_t off;          /* offsetof(zg_train_config, field) */
    double def;          /* default of a number/bool/enum index field; for notes, DeepSpeed's default */
    const char *sdef;    /* default of a string field */
    const char *note;    /* a key zgpt accepts without acting on it: what zgpt does instead */
} key_spec;

#define OPTIMIZER_NAMES                                                                                                \
    "Adam|AdamW|Lamb|OneBitAdam|ZeroOneAdam|OneBitLamb|Adagrad|Lion|MuAdam|MuAdamW|MuSGD|Muon|SGD|RMSprop|"            \
    "Adamax|NAdam|RAdam|Adadelta"
#define SCHEDULER_NAMES "WarmupLR|WarmupDecayLR|WarmupCosineLR|OneCycle|LRRangeTest"

#include "train/config_keys.inc"

static const char *k_key_paths[N_KEYS];

size_t zg_train_config_keys(const char *const **out) {
    for (size_t i = 0; i < N_KEYS; i++) k_key_paths[i] = k_keys[i].path;
    *out = k_key_paths;
    return N_KEYS;
}

static const key_spec *find_key(const char *path) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(k_keys[i].path, path) == 0) return &k_keys[i];
    return NULL;
}

/* ---- problems and notes: everything one load has to say ------------------------------------- */

typedef struct {
    char **items;
    int n;
} line_list;

static void lines_addv(line_list *l, const char *fmt, va_list ap) {
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

static void lines_add(line_list *l, const char *fmt, ...) ZG_PRINTF(2, 3);
static void lines_add(line_list *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lines_addv(l, fmt, ap);
    va_end(ap);
}

static void lines_free(line_list *l) {
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* A load's state: its problems (all reported together) and its notes (printed at start). */
typedef struct {
    line_list problems, notes;
} load_state;

/* Records the message of the zg_errorf that just failed as one problem. */
static void collect(load_state *ls) { lines_add(&ls->problems, "%s", zg_error_message()); }

static void problem(load_state *ls, const char *fmt, ...) ZG_PRINTF(2, 3);
static void problem(load_state *ls, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lines_addv(&ls->problems, fmt, ap);
    va_end(ap);
}

static void note(load_state *ls, const char *fmt, ...) ZG_PRINTF(2, 3);
static void note(load_state *ls, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    lines_addv(&ls->notes, fmt, ap);
    va_end(ap);
}

/* -1 with every problem in one message (one per line), or 0 when there are none. */
static int report(load_state *ls) {
    int n = ls->problems.n;
    if (n == 0) return 0;
    if (n == 1) {
        zg_errorf("%s", ls->problems.items[0]);
    } else {
        size_t len = 64;
        for (int i = 0; i < n; i++) len += strlen(ls->problems.items[i]) + 4;
        char *all = zg_malloc(len);
        int w = snprintf(all, len, "%d problems in the configuration (fix them all):", n);
        for (int i = 0; i < n; i++) w += snprintf(all + w, len - (size_t)w, "\n  %s", ls->problems.items[i]);
        zg_errorf("%s", all);
        free(all);
    }
    return -1;
}

/* ---- looking keys up ------------------------------------------------------------------------ */

static int is_auto(const cJSON *v) { return cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0; }

/* The value at a dotted path, "auto" included (NULL when absent). */
static const cJSON *raw(const cJSON *root, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *obj = root;
    char *p = buf;
    for (char *dot; (dot = strchr(p, '.')) != NULL; p = dot + 1) {
        *dot = '\0';
        obj = cJSON_GetObjectItemCaseSensitive(obj, p);
        if (!obj || !cJSON_IsObject(obj)) return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(obj, p);
}

/* The value at a path; "auto" counts as not given (derive() resolves it). */
static const cJSON *get(const cJSON *root, const char *path) {
    const cJSON *v = raw(root, path);
    return v && is_auto(v) ? NULL : v;
}
static int given_auto(const cJSON *root, const char *path) { return is_auto(raw(root, path)); }

static int64_t get_int(const cJSON *root, const char *path, int64_t def) {
    const cJSON *v = get(root, path);
    return v ? (int64_t)v->valuedouble : def;
}
static double get_num(const cJSON *root, const char *path, double def) {
    const cJSON *v = get(root, path);
    return v ? v->valuedouble : def;
}
static int get_bool(const cJSON *root, const char *path, int def) {
    const cJSON *v = get(root, path);
    return v ? cJSON_IsTrue(v) : def;
}
static const char *get_str(const cJSON *root, const char *path, const char *def) {
    const cJSON *v = get(root, path);
    return v ? v->valuestring : def;
}

/* ---- validation ----------------------------------------------------------------------------- */

/* A known rename first (comm_overlap -> zero_optimization.overlap_comm), then the closest key of
 * the same section, then the closest key anywhere. */
static int unknown_key(const char *path, const char *source) {
    for (size_t i = 0; i < sizeof k_renames / sizeof k_renames[0]; i++)
        if (strcmp(k_renames[i].wrong, path) == 0)
            return zg_errorf("%s: unknown key '%s'; did you mean '%s'?", source, path, k_renames[i].right);
    const char *cands[N_KEYS];
    size_t n = 0;
    const char *dot = strrchr(path, '.');
    size_t plen = dot ? (size_t)(dot - path + 1) : 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *p = k_keys[i].path;
        /* same parent, and no deeper */
        if (strncmp(p, path, plen) == 0 && !strchr(p + plen, '.')) cands[n++] = p;
    }
    const char *best = zg_str_closest(path, cands, n);
    if (!best) {
        for (size_t i = 0; i < N_KEYS; i++) cands[i] = k_keys[i].path;
        best = zg_str_closest(path, cands, N_KEYS);
    }
    if (best) return zg_errorf("%s: unknown key '%s'; did you mean '%s'?", source, path, best);
    return zg_errorf("%s: unknown key '%s' (see docs/TRAINING.md for the keys zgpt accepts)", source, path);
}

static char *value_text(const cJSON *v) {
    char *s = cJSON_PrintUnformatted(v);
    ZG_CHECK_PTR(s);
    if (strlen(s) > 80) strcpy(s + 72, "...");
    return s;
}

static int type_error(const char *source, const char *path, const cJSON *v, const char *allowed) {
    char *t = value_text(v);
    zg_errorf("%s: key '%s' has value %s; allowed: %s", source, path, t, allowed);
    free(t);
    return -1;
}

/* The index of s among k->choices ("a|b|c"), or -1. */
static int enum_index(const key_spec *k, const char *s) {
    size_t n = strlen(s);
    int i = 0;
    for (const char *c = k->choices; c && *c; i++) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && ((k->flags & KF_NOCASE) ? strncasecmp(c, s, n) : strncmp(c, s, n)) == 0) return i;
        c = bar ? bar + 1 : c + len;
    }
    return -1;
}

/* The closest choice for a wrong enum value (case-insensitive), or NULL. */
static const char *enum_suggestion(const key_spec *k, const char *s, char *buf, size_t cap) {
    const char *cands[64];
    char names[64][48];
    size_t n = 0;
    for (const char *c = k->choices; c && *c && n < 64;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        snprintf(names[n], sizeof names[n], "%.*s", (int)len, c);
        cands[n] = names[n];
        n++;
        c = bar ? bar + 1 : c + len;
    }
    const char *best = zg_str_closest(s, cands, n);
    if (!best) return NULL;
    snprintf(buf, cap, "%s", best);
    return buf;
}

static int validate_value(const key_spec *k, const cJSON *v, const char *source) {
    char allowed[512];
    if ((k->flags & KF_AUTO) && is_auto(v)) return 0;
    switch (k->type) {
    case K_INT:
    case K_FLOAT: {
        int ok = cJSON_IsNumber(v) && isfinite(v->valuedouble);
        if (ok && k->type == K_INT) ok = v->valuedouble == floor(v->valuedouble);
        if (ok) ok = v->valuedouble >= k->min && v->valuedouble <= k->max;
        if (ok) return 0;
        const char *what = k->type == K_INT ? "an integer" : "a number";
        if (k->min == k->max)
            snprintf(allowed, sizeof allowed, "%s equal to %g (zgpt supports only that)", what, k->min);
        else if (k->max >= BIG)
            snprintf(allowed, sizeof allowed, "%s >= %g", what, k->min);
        else
            snprintf(allowed, sizeof allowed, "%s in [%g, %g]", what, k->min, k->max);
        if (k->flags & KF_AUTO) strncat(allowed, " or \"auto\"", sizeof allowed - strlen(allowed) - 1);
        return type_error(source, k->path, v, allowed);
    }
    case K_BOOL:
        if (cJSON_IsBool(v)) return 0;
        if (k->choices && cJSON_IsString(v) && enum_index(k, v->valuestring) >= 0) return 0;
        if (k->choices) {
            snprintf(allowed, sizeof allowed, "true, false or one of %s", k->choices);
            return type_error(source, k->path, v, allowed);
        }
        return type_error(source, k->path, v, (k->flags & KF_AUTO) ? "true, false or \"auto\"" : "true or false");
    case K_STRING:
        if (cJSON_IsString(v) && v->valuestring[0]) return 0;
        return type_error(source, k->path, v, "a non-empty string");
    case K_TEXT:
        if (cJSON_IsString(v)) return 0;
        return type_error(source, k->path, v, "a string");
    case K_ENUM: {
        if (cJSON_IsString(v) && enum_index(k, v->valuestring) >= 0) return 0;
        char sug[64];
        const char *best = cJSON_IsString(v) ? enum_suggestion(k, v->valuestring, sug, sizeof sug) : NULL;
        if (best)
            snprintf(allowed, sizeof allowed, "one of %s (did you mean \"%s\"?)", k->choices, best);
        else
            snprintf(allowed, sizeof allowed, "one of %s", k->choices);
        return type_error(source, k->path, v, allowed);
    }
    case K_BETAS:
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2) {
            const cJSON *a = cJSON_GetArrayItem(v, 0), *b = cJSON_GetArrayItem(v, 1);
            if (cJSON_IsNumber(a) && cJSON_IsNumber(b) && a->valuedouble >= 0 && a->valuedouble < 1 &&
                b->valuedouble >= 0 && b->valuedouble < 1)
                return 0;
        }
        return type_error(source, k->path, v, "[beta1, beta2] with each in [0, 1)");
    case K_DATA: {
        if (cJSON_IsString(v) && v->valuestring[0]) return 0;
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) {
            const cJSON *e;
            cJSON_ArrayForEach(e, v) {
                if (cJSON_IsString(e) && e->valuestring[0]) continue;
                if (!cJSON_IsObject(e))
                    return type_error(source, k->path, e, "a path or {\"path\": ..., \"weight\": ...}");
                const cJSON *f;
                cJSON_ArrayForEach(f, e) {
                    if (strcmp(f->string, "path") == 0) {
                        if (!cJSON_IsString(f) || !f->valuestring[0])
                            return type_error(source, "data[].path", f, "a non-empty string");
                    } else if (strcmp(f->string, "weight") == 0) {
                        if (!cJSON_IsNumber(f) || !(f->valuedouble > 0) || !isfinite(f->valuedouble))
                            return type_error(source, "data[].weight", f, "a number > 0");
                    } else {
                        const char *c[] = {"path", "weight"};
                        const char *best = zg_str_closest(f->string, c, 2);
                        return zg_errorf("%s: unknown key 'data[].%s'%s%s%s", source, f->string,
                                         best ? "; did you mean '" : " (allowed: path, weight)", best ? best : "",
                                         best ? "'?" : "");
                    }
                }
                if (!cJSON_GetObjectItemCaseSensitive(e, "path"))
                    return zg_errorf("%s: every entry of 'data' needs a \"path\"", source);
            }
            return 0;
        }
        return type_error(source, k->path, v, "a prepared folder / shard path, or a list of {\"path\", \"weight\"}");
    }
    case K_SECTION:
        if (cJSON_IsObject(v)) return 0;
        return type_error(source, k->path, v, "an object");
    case K_FEATURE: {
        if (!cJSON_IsObject(v)) return type_error(source, k->path, v, "an object (DeepSpeed's section)");
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(v, "enabled");
        if (en && !cJSON_IsBool(en)) {
            char path[256];
            snprintf(path, sizeof path, "%s.enabled", k->path);
            return type_error(source, path, en, "true or false");
        }
        return 0;
    }
    case K_COMPILE:
        if (cJSON_IsBool(v) || cJSON_IsObject(v)) return 0;
        return type_error(source, k->path, v, "true/false (nanoGPT) or DeepSpeed's compile section {...}");
    case K_ANY: return 0;
    }
    return 0;
}

/* Whether `path` is the params of an optimizer or scheduler type zgpt refuses (parent: its section). */
static int params_of_unsupported(const cJSON *parent, const char *path) {
    if (strcmp(path, "optimizer.params") != 0 && strcmp(path, "scheduler.params") != 0) return 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(parent, "type");
    if (!cJSON_IsString(t)) return 0;
    static const char *const supported[] = {"Adam",          "AdamW",          "Lamb",    "WarmupLR",
                                            "WarmupDecayLR", "WarmupCosineLR", "OneCycle"};
    for (size_t i = 0; i < sizeof supported / sizeof supported[0]; i++)
        if (strcasecmp(t->valuestring, supported[i]) == 0) return 0;
    return 1;
}

/* Walks an object: every key must be in the table (sections are walked recursively). Every problem
 * is collected. */
static void validate_tree(const cJSON *obj, const char *prefix, const char *source, load_state *ls) {
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        char path[256];
        if (!it->string) {
            problem(ls, "%s: malformed object", source);
            continue;
        }
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        int dup = 0;
        for (const cJSON *o = it->next; o; o = o->next)
            if (o->string && strcmp(o->string, it->string) == 0) dup = 1;
        if (dup) {
            problem(ls, "%s: key '%s' appears twice; keep one", source, path);
            continue;
        }
        if (!prefix[0] && it->string[0] == '_') continue; /* "_comment": DeepSpeed ignores it too */
        const key_spec *k = find_key(path);
        if (!k) {
            unknown_key(path, source);
            collect(ls);
            continue;
        }
        if (validate_value(k, it, source) != 0) {
            collect(ls);
            continue;
        }
        if (k->type == K_SECTION || (k->type == K_COMPILE && cJSON_IsObject(it))) {
            if (params_of_unsupported(obj, path)) continue; /* the type is refused; its params are its own */
            validate_tree(it, path, source, ls);
        }
    }
}

/* ---- DeepSpeed's other spellings ------------------------------------------------------------ */

/* The parent object of a dotted path and the last component (NULL when the parent is absent). */
static cJSON *parent_of(cJSON *root, const char *path, const char **last) {
    const char *dot = strrchr(path, '.');
    *last = dot ? dot + 1 : path;
    if (!dot) return root;
    char buf[256];
    snprintf(buf, sizeof buf, "%.*s", (int)(dot - path), path);
    cJSON *p = (cJSON *)raw(root, buf);
    return p && cJSON_IsObject(p) ? p : NULL;
}

/* Renames each alias to its canonical key (as DeepSpeed reads both); both given must agree. */
static void canonicalize(cJSON *root, const char *source, load_state *ls) {
    for (size_t i = 0; i < sizeof k_spellings / sizeof k_spellings[0]; i++) {
        const char *alias_last, *canon_last;
        cJSON *parent = parent_of(root, k_spellings[i].alias, &alias_last);
        if (!parent) continue;
        parent_of(root, k_spellings[i].canonical, &canon_last);
        cJSON *a = cJSON_GetObjectItemCaseSensitive(parent, alias_last);
        if (!a) continue;
        cJSON *c = cJSON_GetObjectItemCaseSensitive(parent, canon_last);
        if (c) {
            if (!cJSON_Compare(a, c, 1))
                problem(ls, "%s: '%s' and '%s' are the same DeepSpeed key with different values; keep one", source,
                        k_spellings[i].alias, k_spellings[i].canonical);
            cJSON_DeleteItemFromObjectCaseSensitive(parent, alias_last);
            continue;
        }
        cJSON_DetachItemViaPointer(parent, a);
        cJSON_AddItemToObject(parent, canon_last, a);
    }
}

/* A --set path in canonical spelling (bfloat16.enabled -> bf16.enabled). */
static void canonical_path(const char *path, char *out, size_t cap) {
    for (size_t i = 0; i < sizeof k_spellings / sizeof k_spellings[0]; i++) {
        size_t n = strlen(k_spellings[i].alias);
        if (strncmp(path, k_spellings[i].alias, n) == 0 && (path[n] == '\0' || path[n] == '.')) {
            snprintf(out, cap, "%s%s", k_spellings[i].canonical, path + n);
            return;
        }
    }
    snprintf(out, cap, "%s", path);
}

/* ---- merging the sources -------------------------------------------------------------------- */

static cJSON *parse_json_file(const char *path, const char *what) {
    char *text;
    size_t len;
    if (zg_file_read_all(path, &text, &len) != 0) {
        zg_error_prefix("%s", what);
        return NULL;
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
    if (!j) {
        size_t off = end ? (size_t)(end - text) : 0, line = 1;
        for (size_t i = 0; i < off && i < len; i++) line += text[i] == '\n';
        zg_errorf("%s '%s': invalid JSON at line %zu (check commas, quotes and brackets there)", what, path, line);
        free(text);
        return NULL;
    }
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        zg_errorf("%s '%s': expected one JSON object {...} at top level", what, path);
        return NULL;
    }
    return j;
}

/* The --set overrides, parsed by their keys' types. */
typedef struct {
    char path[256];
    cJSON *value;
} set_item;

/* Whether --set gives this path or a section above it (then the files may disagree on it). */
static int set_covers(const set_item *sets, int n, const char *path) {
    for (int i = 0; i < n; i++) {
        size_t l = strlen(sets[i].path);
        if (sets[i].value && strncmp(path, sets[i].path, l) == 0 && (path[l] == '\0' || path[l] == '.')) return 1;
    }
    return 0;
}

/* Adds src's keys into dst. A key in both must agree unless one of them is "auto" (the other value is
 * used, as the Hugging Face Trainer fills it) or --set gives it. */
static void merge_into(cJSON *dst, const cJSON *src, const char *prefix, const char *a_name, const char *b_name,
                       const set_item *sets, int n_sets, load_state *ls) {
    const cJSON *it;
    cJSON_ArrayForEach(it, src) {
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        cJSON *have = cJSON_GetObjectItemCaseSensitive(dst, it->string);
        if (!have) {
            cJSON *dup = cJSON_Duplicate(it, 1);
            ZG_CHECK_PTR(dup);
            cJSON_AddItemToObject(dst, it->string, dup);
            continue;
        }
        if (cJSON_IsObject(have) && cJSON_IsObject(it)) {
            merge_into(have, it, path, a_name, b_name, sets, n_sets, ls);
            continue;
        }
        if (cJSON_Compare(have, it, 1) || set_covers(sets, n_sets, path)) continue;
        if (is_auto(have) || is_auto(it)) {
            const cJSON *concrete = is_auto(have) ? it : have;
            char *x = value_text(concrete);
            note(ls, "auto: '%s' is \"auto\" in '%s'; using %s from '%s'", path, is_auto(have) ? a_name : b_name, x,
                 is_auto(have) ? b_name : a_name);
            free(x);
            if (is_auto(have)) {
                cJSON *dup = cJSON_Duplicate(it, 1);
                ZG_CHECK_PTR(dup);
                cJSON_ReplaceItemViaPointer(dst, have, dup);
            }
            continue;
        }
        char *x = value_text(have), *y = value_text(it);
        problem(ls, "key '%s' is %s in '%s' but %s in '%s'; make them agree, remove one, or give it with --set", path,
                x, a_name, y, b_name);
        free(x);
        free(y);
    }
}

/* --set key.path=value: the value is parsed by the key's type. 0, or -1 with an error. */
static int parse_set(const char *set, set_item *out) {
    memset(out, 0, sizeof *out);
    const char *eq = strchr(set, '=');
    if (!eq || eq == set) return zg_errorf("--set '%s': expected key.path=value", set);
    char path[256];
    size_t plen = (size_t)(eq - set);
    if (plen >= sizeof path) return zg_errorf("--set '%s': key too long", set);
    memcpy(path, set, plen);
    path[plen] = '\0';
    canonical_path(path, out->path, sizeof out->path);
    const char *val = eq + 1;
    const key_spec *k = find_key(out->path);
    if (!k) return unknown_key(path, "--set");
    cJSON *v = NULL;
    char what[300];
    snprintf(what, sizeof what, "--set %s", out->path);
    if ((k->flags & KF_AUTO) && strcmp(val, "auto") == 0) {
        v = cJSON_CreateString(val);
    } else {
        switch (k->type) {
        case K_INT: {
            int64_t x;
            if (zg_parse_i64(val, what, &x) != 0) return -1;
            v = cJSON_CreateNumber((double)x);
            break;
        }
        case K_FLOAT: {
            double x;
            if (zg_parse_f64(val, what, &x) != 0) return -1;
            v = cJSON_CreateNumber(x);
            break;
        }
        case K_BOOL:
        case K_COMPILE: {
            int b;
            if (k->choices && enum_index(k, val) >= 0) {
                v = cJSON_CreateString(val);
                break;
            }
            if (k->type == K_COMPILE && val[0] == '{') {
                v = cJSON_Parse(val);
                break;
            }
            if (zg_parse_bool(val, what, &b) != 0) return -1;
            v = cJSON_CreateBool(b);
            break;
        }
        case K_STRING:
        case K_TEXT:
        case K_ENUM: v = cJSON_CreateString(val); break;
        case K_DATA: v = (val[0] == '[' || val[0] == '{') ? cJSON_Parse(val) : cJSON_CreateString(val); break;
        default: v = cJSON_Parse(val); break;
        }
    }
    if (!v) return zg_errorf("--set %s: cannot parse value '%s' (a JSON value is expected for this key)", path, val);
    if (validate_value(k, v, "--set") != 0) {
        cJSON_Delete(v);
        return -1;
    }
    out->value = v;
    return 0;
}

/* Puts a parsed --set value into the tree (creating its sections). */
static int apply_set(cJSON *root, set_item *s) {
    char path[256];
    snprintf(path, sizeof path, "%s", s->path);
    cJSON *obj = root;
    char *p = path;
    for (char *dot; (dot = strchr(p, '.')) != NULL; p = dot + 1) {
        *dot = '\0';
        cJSON *child = cJSON_GetObjectItemCaseSensitive(obj, p);
        if (!child) {
            child = cJSON_CreateObject();
            ZG_CHECK_PTR(child);
            cJSON_AddItemToObject(obj, p, child);
        } else if (!cJSON_IsObject(child)) {
            return zg_errorf("--set %s: '%s' is not an object in the config", s->path, p);
        }
        *dot = '.';
        obj = child;
    }
    cJSON *v = s->value;
    s->value = NULL;
    if (cJSON_GetObjectItemCaseSensitive(obj, p))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, p, v);
    else
        cJSON_AddItemToObject(obj, p, v);
    return 0;
}

/* ---- from the tree to the struct ------------------------------------------------------------ */

static void auto_note(load_state *ls, const cJSON *root, const char *path, const char *fmt, ...) ZG_PRINTF(4, 5);
/* "auto: KEY = VALUE (SOURCE)" when the key was written "auto". */
static void auto_note(load_state *ls, const cJSON *root, const char *path, const char *fmt, ...) {
    if (!given_auto(root, path)) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    note(ls, "auto: %s = %s", path, buf);
}

/* Every key with a field: its value, or the table default ("auto" takes the default too). */
static void fill_fields(zg_train_config *cfg, const cJSON *root, load_state *ls) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_spec *k = &k_keys[i];
        if (k->fk == FK_NONE) continue;
        const cJSON *v = get(root, k->path);
        void *dst = (char *)cfg + k->off;
        double x = v ? (cJSON_IsBool(v) ? (double)cJSON_IsTrue(v) : v->valuedouble) : k->def;
        switch (k->fk) {
        case FK_NONE: break;
        case FK_I32: *(int *)dst = (int)x; break;
        case FK_I64: *(int64_t *)dst = (int64_t)x; break;
        case FK_U64: *(uint64_t *)dst = (uint64_t)x; break;
        case FK_DBL: *(double *)dst = x; break;
        case FK_STR: {
            const char *s = v ? v->valuestring : k->sdef;
            *(char **)dst = s ? zg_strdup(s) : NULL;
            break;
        }
        case FK_ENUM: *(int *)dst = v ? enum_index(k, v->valuestring) : (int)k->def; break;
        }
        if (k->fk == FK_STR || k->fk == FK_ENUM)
            auto_note(ls, root, k->path, "%s (zgpt's default)", k->sdef ? k->sdef : "its default");
        else if (k->def < 0)
            auto_note(ls, root, k->path, "zgpt's default (its engine decides; docs/DISTRIBUTED.md)");
        else
            auto_note(ls, root, k->path, "%g (zgpt's default)", k->def);
    }
}

/* Whether a note-only key's value asks for something (differs from DeepSpeed's default). */
static int asks_for_something(const key_spec *k, const cJSON *v) {
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v) != (k->def != 0);
    if (cJSON_IsNumber(v)) return v->valuedouble != k->def;
    return 1;
}

/* The enabled state of a DeepSpeed section ("enabled", else DeepSpeed's default for it). */
static int section_enabled(const cJSON *v, int default_on) {
    const cJSON *en = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "enabled") : NULL;
    return en ? cJSON_IsTrue(en) : default_on;
}

/* The no-op lines, the refused features and the disabled ones, in table order. */
static void check_sections(const cJSON *root, load_state *ls) {
    const cJSON *top;
    cJSON_ArrayForEach(top, root) {
        if (top->string && top->string[0] == '_')
            note(ls, "note: '%s' is not read by DeepSpeed; zgpt ignores it too", top->string);
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_spec *k = &k_keys[i];
        const cJSON *v = raw(root, k->path);
        if (!v) continue;
        if (k->type == K_FEATURE) {
            if (section_enabled(v, (int)k->def))
                problem(ls, "'%s' is not supported by zgpt; remove it or set \"enabled\": false", k->path);
            else
                note(ls, "note: '%s' is disabled; accepted (zgpt does not implement it)", k->path);
            continue;
        }
        if (k->flags & KF_IGNORED) {
            note(ls, "note: '%s' is not a key DeepSpeed reads; zgpt ignores it too", k->path);
            continue;
        }
        if (!k->note) continue;
        if (k->flags & KF_SWITCH) {
            if (section_enabled(v, 0)) note(ls, "note: '%s' is enabled, but %s", k->path, k->note);
            continue;
        }
        if (k->type == K_COMPILE) {
            int on = cJSON_IsObject(v) ? !get_bool(v, "disable", 0) : cJSON_IsTrue(v);
            if (on) note(ls, "note: '%s': %s", k->path, k->note);
            continue;
        }
        if (asks_for_something(k, v)) note(ls, "note: '%s' has no effect: %s", k->path, k->note);
    }
}

/* A nanoGPT key and its DeepSpeed counterpart: both may be given only with the same value. The
 * DeepSpeed key's "auto" takes the nanoGPT key's value or `def_nano` (the Trainer-argument
 * default); absent, it is def_ds (DeepSpeed's default) when `ds` (its section is DeepSpeed's). */
static double alias_num(const cJSON *root, const char *alias, const char *canon, double def_nano, double def_ds, int ds,
                        const char *source, load_state *ls) {
    const cJSON *a = get(root, alias), *c = get(root, canon);
    if (a && c && a->valuedouble != c->valuedouble)
        problem(ls, "%s: '%s' (%g) and '%s' (%g) set the same thing to different values; keep one", source, alias,
                a->valuedouble, canon, c->valuedouble);
    int is_a = given_auto(root, canon);
    double v = c ? c->valuedouble : a ? a->valuedouble : (is_a || !ds) ? def_nano : def_ds;
    if (a)
        auto_note(ls, root, canon, "%g (from %s)", v, alias);
    else if (v >= 0) /* (a negative default means "derived later", noted there) */
        auto_note(ls, root, canon, "%g (%s's default)", v, alias);
    return v;
}

/* Which params each supported optimizer / scheduler takes (DeepSpeed's FusedAdam, FusedLamb and
 * lr_schedules.py). */
static const char *const k_adam_params =
    "lr betas eps weight_decay adam_w_mode torch_adam bias_correction amsgrad max_grad_norm";
static const char *const k_lamb_params =
    "lr betas eps weight_decay bias_correction max_coeff min_coeff eps_inside_sqrt max_grad_norm amsgrad";

static int word_in(const char *list, const char *w) {
    size_t n = strlen(w);
    for (const char *hit = list; (hit = strstr(hit, w)) != NULL; hit++)
        if ((hit == list || hit[-1] == ' ') && (hit[n] == ' ' || hit[n] == '\0')) return 1;
    return 0;
}

static void check_params(const cJSON *root, const char *section, const char *type, const char *allowed,
                         const char *source, load_state *ls) {
    char path[64];
    snprintf(path, sizeof path, "%s.params", section);
    const cJSON *params = get(root, path), *p;
    if (!params) return;
    cJSON_ArrayForEach(p, params) {
        if (!word_in(allowed, p->string))
            problem(ls, "%s: %s.params.%s is not a parameter of %s (its parameters: %s)", source, section, p->string,
                    type, allowed);
    }
}

static void derive_optimizer(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    /* without a "type" the section only sets params (AdamW, nanoGPT's defaults for the others) */
    const cJSON *ot = get(root, "optimizer.type");
    int ds_opt = ot != NULL;
    cfg->optim = ZG_OPTIMIZER_ADAMW;
    if (ot) {
        const char *t = ot->valuestring;
        if (strcasecmp(t, "Adam") == 0 || strcasecmp(t, "AdamW") == 0) {
            check_params(root, "optimizer", t, k_adam_params, source, ls);
        } else if (strcasecmp(t, "Lamb") == 0) {
            cfg->optim = ZG_OPTIMIZER_LAMB;
            check_params(root, "optimizer", t, k_lamb_params, source, ls);
        } else {
            problem(ls, "optimizer.type '%s' is not supported by zgpt; use Adam, AdamW or Lamb", t);
        }
    }
    if (!cfg->adam_w_mode)
        problem(ls,
                "%s: optimizer.params.adam_w_mode false (L2-coupled Adam) is not supported; remove it to use AdamW "
                "(decoupled weight decay)",
                source);
    if (get_bool(root, "optimizer.params.amsgrad", 0))
        problem(ls, "%s: optimizer.params.amsgrad true is not supported; remove it", source);
    if (get_num(root, "optimizer.params.max_grad_norm", 0) > 0)
        problem(ls,
                "%s: optimizer.params.max_grad_norm is not an optimizer parameter in DeepSpeed either; clip with "
                "the top-level \"gradient_clipping\"",
                source);
    if (cfg->optim == ZG_OPTIMIZER_LAMB && cfg->max_coeff < cfg->min_coeff)
        problem(ls, "%s: optimizer.params.max_coeff (%g) is below min_coeff (%g)", source, cfg->max_coeff,
                cfg->min_coeff);

    /* "auto" takes the nanoGPT key (the Trainer argument) or nanoGPT's default; absent params in a
     * DeepSpeed section take DeepSpeed's defaults (FusedAdam/FusedLamb: lr 1e-3, betas (0.9, 0.999),
     * weight_decay 0). gradient_clipping's default is DeepSpeed's (1.0) either way. */
    cfg->lr = alias_num(root, "learning_rate", "optimizer.params.lr", 6e-4, 1e-3, ds_opt, source, ls);
    cfg->weight_decay = alias_num(root, "weight_decay", "optimizer.params.weight_decay", 0.1, 0.0, ds_opt, source, ls);
    cfg->grad_clip = alias_num(root, "grad_clip", "gradient_clipping", 1.0, 1.0, 1, source, ls);
    cfg->eps = get_num(root, "optimizer.params.eps", 1e-8);
    auto_note(ls, root, "optimizer.params.eps", "%g (zgpt's default)", cfg->eps);
    const cJSON *betas = get(root, "optimizer.params.betas");
    const cJSON *b1 = get(root, "beta1"), *b2 = get(root, "beta2");
    int nano_betas = !ds_opt || given_auto(root, "optimizer.params.betas");
    cfg->beta1 = b1 ? b1->valuedouble : 0.9;
    cfg->beta2 = b2 ? b2->valuedouble : nano_betas ? 0.95 : 0.999;
    if (betas) {
        double x = cJSON_GetArrayItem(betas, 0)->valuedouble, y = cJSON_GetArrayItem(betas, 1)->valuedouble;
        if ((b1 && b1->valuedouble != x) || (b2 && b2->valuedouble != y))
            problem(ls, "%s: beta1/beta2 disagree with optimizer.params.betas [%g, %g]; keep one", source, x, y);
        cfg->beta1 = x;
        cfg->beta2 = y;
    }
    auto_note(ls, root, "optimizer.params.betas", "[%g, %g] (from beta1/beta2 or their defaults)", cfg->beta1,
              cfg->beta2);
}

static void derive_schedule(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    zg_schedule_config *s = &cfg->sched;
    s->base_lr = cfg->lr;
    const cJSON *st = get(root, "scheduler.type");
    const char *stype = st ? st->valuestring : NULL;
    if (get(root, "scheduler") && !stype)
        problem(ls, "%s: the scheduler section needs a \"type\" (WarmupLR, WarmupDecayLR, WarmupCosineLR or OneCycle)",
                source);
    int decay_lr = get_bool(root, "decay_lr", 0);
    if (stype && decay_lr)
        problem(ls, "%s: decay_lr (nanoGPT's cosine schedule) and a DeepSpeed scheduler section are both set; keep one",
                source);
    static const char *const names[4] = {"WarmupLR", "WarmupDecayLR", "WarmupCosineLR", "OneCycle"};
    static const zg_schedule_type types[4] = {ZG_SCHED_WARMUP_LR, ZG_SCHED_WARMUP_DECAY_LR, ZG_SCHED_WARMUP_COSINE_LR,
                                              ZG_SCHED_ONE_CYCLE};
    static const char *const params_of[4] = {
        "warmup_min_lr warmup_max_lr warmup_num_steps warmup_type last_batch_iteration",
        "warmup_min_lr warmup_max_lr warmup_num_steps warmup_type last_batch_iteration total_num_steps",
        "warmup_min_ratio warmup_num_steps warmup_type last_batch_iteration total_num_steps cos_min_ratio",
        "cycle_min_lr cycle_max_lr decay_lr_rate cycle_first_step_size cycle_second_step_size cycle_first_stair_count "
        "cycle_second_stair_count decay_step_size cycle_momentum cycle_min_mom cycle_max_mom decay_mom_rate "
        "last_batch_iteration"};
    int ti = -1;
    for (int i = 0; stype && i < 4; i++)
        if (strcasecmp(stype, names[i]) == 0) ti = i;
    if (stype && ti < 0)
        problem(ls,
                "scheduler.type '%s' is not supported by zgpt; use WarmupLR, WarmupDecayLR, "
                "WarmupCosineLR or OneCycle",
                stype);
    int uses_warmup_iters = 0, uses_decay_iters = 0;
    if (ti >= 0) {
        s->type = types[ti];
        check_params(root, "scheduler", names[ti], params_of[ti], source, ls);
        s->warmup_min_lr = get_num(root, "scheduler.params.warmup_min_lr", 0.0);
        auto_note(ls, root, "scheduler.params.warmup_min_lr", "0 (as the Hugging Face Trainer sets it)");
        s->warmup_max_lr = get_num(root, "scheduler.params.warmup_max_lr", cfg->lr);
        auto_note(ls, root, "scheduler.params.warmup_max_lr", "%g (the optimizer's lr)", cfg->lr);
        const cJSON *wi = get(root, "warmup_iters");
        if (given_auto(root, "scheduler.params.warmup_num_steps")) {
            uses_warmup_iters = 1;
            s->warmup_num_steps = wi ? (int64_t)wi->valuedouble : 2000;
            auto_note(ls, root, "scheduler.params.warmup_num_steps", "%lld (%s)", (long long)s->warmup_num_steps,
                      wi ? "from warmup_iters" : "warmup_iters' default");
        } else {
            s->warmup_num_steps = get_int(root, "scheduler.params.warmup_num_steps", 1000);
        }
        s->warmup_linear = strcmp(get_str(root, "scheduler.params.warmup_type", "log"), "linear") == 0;
        const cJSON *ld = get(root, "lr_decay_iters");
        uses_decay_iters = given_auto(root, "scheduler.params.total_num_steps");
        s->total_num_steps =
            get_int(root, "scheduler.params.total_num_steps", ld ? (int64_t)ld->valuedouble : cfg->max_iters);
        auto_note(ls, root, "scheduler.params.total_num_steps", "%lld (%s)", (long long)s->total_num_steps,
                  ld ? "from lr_decay_iters" : "from max_iters");
        if (s->type == ZG_SCHED_WARMUP_DECAY_LR && s->total_num_steps < s->warmup_num_steps)
            note(ls,
                 "note: WarmupDecayLR's total_num_steps (%lld) is below its warmup_num_steps (%lld): the lr never "
                 "decays (DeepSpeed warns too)",
                 (long long)s->total_num_steps, (long long)s->warmup_num_steps);
        if (s->type == ZG_SCHED_ONE_CYCLE) {
            if (!get(root, "scheduler.params.cycle_min_lr") || !get(root, "scheduler.params.cycle_max_lr"))
                problem(ls,
                        "%s: OneCycle needs scheduler.params.cycle_min_lr and cycle_max_lr (DeepSpeed requires "
                        "them too)",
                        source);
            if (s->cycle_momentum)
                note(ls,
                     "note: OneCycle cycles beta1 between cycle_max_mom %g and cycle_min_mom %g and sets beta2 to "
                     "0.99, as DeepSpeed does",
                     s->cycle_max_mom, s->cycle_min_mom);
        }
        if (s->warmup_max_lr < s->warmup_min_lr)
            problem(ls, "%s: scheduler.params.warmup_max_lr (%g) is below warmup_min_lr (%g)", source, s->warmup_max_lr,
                    s->warmup_min_lr);
    } else if (decay_lr) {
        s->type = ZG_SCHED_NANOGPT_COSINE;
        s->warmup_iters = get_int(root, "warmup_iters", 2000);
        s->lr_decay_iters = get_int(root, "lr_decay_iters", cfg->max_iters);
        s->min_lr = get_num(root, "min_lr", cfg->lr / 10.0);
    }
    if (!decay_lr) {
        static const char *const nano_keys[] = {"warmup_iters", "lr_decay_iters", "min_lr"};
        int used[3] = {uses_warmup_iters, uses_decay_iters, 0};
        for (size_t i = 0; i < 3; i++)
            if (get(root, nano_keys[i]) && !used[i])
                problem(ls,
                        "%s: '%s' only applies with \"decay_lr\": true (nanoGPT's cosine schedule) or to a "
                        "scheduler value written \"auto\"; add decay_lr or remove it",
                        source, nano_keys[i]);
    }
    if (zg_schedule_validate(s) != 0) {
        zg_error_prefix("%s", source);
        collect(ls);
    }
}

static void derive_precision(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    static const zg_precision by_name[] = {ZG_PREC_AUTO, ZG_PREC_FP32, ZG_PREC_FP32, ZG_PREC_BF16,
                                           ZG_PREC_BF16, ZG_PREC_FP16, ZG_PREC_FP16};
    const char *dt = get_str(root, "dtype", "auto");
    cfg->dtype = by_name[enum_index(find_key("dtype"), dt)];
    cfg->fp16_enabled = get_bool(root, "fp16.enabled", cfg->dtype == ZG_PREC_FP16);
    cfg->bf16_enabled = get_bool(root, "bf16.enabled", 0);
    auto_note(ls, root, "fp16.enabled", "%s (from dtype '%s')", cfg->fp16_enabled ? "true" : "false", dt);
    if (cfg->dtype == ZG_PREC_AUTO)
        auto_note(ls, root, "bf16.enabled", "auto (dtype auto: bf16 on CUDA, fp32 on the CPU)");
    else
        auto_note(ls, root, "bf16.enabled", "%s (from dtype '%s')", cfg->dtype == ZG_PREC_BF16 ? "true" : "false", dt);
    if (cfg->fp16_enabled && cfg->bf16_enabled)
        problem(ls, "%s: fp16.enabled and bf16.enabled are both true; enable one", source);
    else if ((cfg->fp16_enabled && cfg->dtype != ZG_PREC_AUTO && cfg->dtype != ZG_PREC_FP16) ||
             (cfg->bf16_enabled && cfg->dtype != ZG_PREC_AUTO && cfg->dtype != ZG_PREC_BF16))
        problem(ls, "%s: dtype '%s' contradicts %s.enabled true; make them agree or remove dtype", source, dt,
                cfg->fp16_enabled ? "fp16" : "bf16");
    cfg->scaler.enabled = cfg->fp16_enabled;
    if (zg_loss_scaler_config_validate(&cfg->scaler) != 0) {
        zg_error_prefix("%s", source);
        collect(ls);
    }
}

/* ZeRO-Offload as asked for (with DeepSpeed's legacy switches). */
static zg_offload_device offload_device(const cJSON *root, const char *section, const char *legacy) {
    char path[128];
    snprintf(path, sizeof path, "zero_optimization.%s.device", section);
    const char *d = get_str(root, path, NULL);
    if (d) return strcmp(d, "cpu") == 0 ? ZG_OFFLOAD_CPU : strcmp(d, "nvme") == 0 ? ZG_OFFLOAD_NVME : ZG_OFFLOAD_NONE;
    snprintf(path, sizeof path, "zero_optimization.%s", legacy);
    return get_bool(root, path, 0) ? ZG_OFFLOAD_CPU : ZG_OFFLOAD_NONE;
}

static void derive_offload(zg_train_config *cfg, const cJSON *root, load_state *ls) {
    zg_zero_config *z = &cfg->zero;
    z->offload_optimizer = offload_device(root, "offload_optimizer", "cpu_offload");
    z->offload_param = offload_device(root, "offload_param", "cpu_offload_param");
    z->offload_param_pin_memory = get_bool(root, "zero_optimization.offload_param.pin_memory",
                                           get_bool(root, "zero_optimization.cpu_offload_use_pin_memory", 0));
    z->offload_pin_memory = get_bool(root, "zero_optimization.offload_optimizer.pin_memory",
                                     get_bool(root, "zero_optimization.cpu_offload_use_pin_memory", 0));
    z->offload_dpu = get_bool(root, "zero_optimization.offload_optimizer.delayed_param_update", 0);
    z->offload_dpu_warmup = get_int(root, "zero_optimization.offload_optimizer.delayed_param_update_warmup", 0);
    if (z->offload_dpu && z->offload_optimizer != ZG_OFFLOAD_CPU)
        problem(ls, "zero_optimization.offload_optimizer.delayed_param_update needs offload_optimizer \"device\": "
                    "\"cpu\"; set it, or remove delayed_param_update");
    if (z->offload_dpu && z->offload_param == ZG_OFFLOAD_CPU)
        problem(ls, "zero_optimization.offload_optimizer.delayed_param_update is not supported together with "
                    "offload_param (the delayed host step would rewrite the host parameters while the next step "
                    "uploads them); remove one of the two");
    if (z->offload_optimizer == ZG_OFFLOAD_NVME)
        problem(ls, "zero_optimization.offload_optimizer \"device\": \"nvme\" is not supported by zgpt; remove it or "
                    "set \"device\": \"cpu\" or \"none\"");
    if (z->offload_param == ZG_OFFLOAD_NVME)
        problem(ls, "zero_optimization.offload_param \"device\": \"nvme\" is not supported by zgpt; remove it or set "
                    "\"device\": \"none\"");
    if (z->offload_param == ZG_OFFLOAD_CPU && z->stage != 3)
        problem(ls,
                "zero_optimization.offload_param \"device\": \"cpu\" needs ZeRO stage 3 (zero_optimization.stage is "
                "%d; only stage 3 partitions the parameters); set zero_optimization.stage to 3, or remove the offload",
                z->stage < 0 ? 0 : z->stage);
    if (z->offload_optimizer == ZG_OFFLOAD_CPU && z->stage <= 0)
        problem(ls, "zero_optimization.offload_optimizer \"device\": \"cpu\" needs ZeRO stage 1, 2 or 3 "
                    "(zero_optimization.stage is 0); "
                    "set zero_optimization.stage, or remove the offload");
}

/* DeepSpeed's activation_checkpointing saves activation memory by recomputing; zgpt's way to the
 * same end is its recompute settings, which this section turns on unless the config sets them. */
static void derive_checkpointing(zg_train_config *cfg, const cJSON *root, load_state *ls) {
    if (!get(root, "activation_checkpointing")) return;
    if (!get(root, "recompute")) cfg->recompute = 1;
    if (!get(root, "recompute_layernorm") && !cfg->memory_efficient_layernorm)
        cfg->recompute_layernorm = GPT2_RECOMPUTE_LAYERNORM;
    const cJSON *nc = get(root, "activation_checkpointing.number_checkpoints");
    if (nc && !get(root, "recompute_num_layers")) cfg->recompute_num_layers = (int)nc->valuedouble;
    note(ls,
         "note: 'activation_checkpointing': zgpt recomputes GELU%s in backward (recompute%s%s) instead of "
         "checkpointing whole layers%s",
         cfg->recompute_layernorm ? " and the LayerNorm outputs" : "",
         cfg->recompute_layernorm ? ", recompute_layernorm" : "",
         nc ? ", recompute_num_layers from number_checkpoints" : "",
         cfg->recompute_num_layers ? "" : "; in every layer");
}

/* DeepSpeed's monitors with DeepSpeed's defaults (output_path "" = the current folder, job_name
 * DeepSpeedJobName); nanoGPT's wandb_log / wandb_project / wandb_run_name are the wandb section. */
static void derive_monitor(zg_train_config *cfg, const cJSON *root) {
    zg_monitor_config *mo = &cfg->monitor;
    static const char *const sinks[2] = {"tensorboard", "csv_monitor"};
    for (int i = 0; i < 2; i++) {
        zg_monitor_sink_config *sc = i == 0 ? &mo->tensorboard : &mo->csv;
        char key[64];
        snprintf(key, sizeof key, "%s.enabled", sinks[i]);
        sc->enabled = get_bool(root, key, 0);
        snprintf(key, sizeof key, "%s.output_path", sinks[i]);
        sc->output_path = zg_strdup(get_str(root, key, ""));
        snprintf(key, sizeof key, "%s.job_name", sinks[i]);
        sc->job_name = zg_strdup(get_str(root, key, ZG_MONITOR_DEFAULT_JOB));
    }
    mo->wandb = get_bool(root, "wandb.enabled", 0) || get_bool(root, "wandb_log", 0);
    const char *proj = get_str(root, "wandb.project", get_str(root, "wandb_project", NULL));
    const char *team = get_str(root, "wandb.team", NULL);
    const char *run = get_str(root, "wandb_run_name", NULL);
    mo->wandb_project = proj ? zg_strdup(proj) : NULL;
    mo->wandb_team = team ? zg_strdup(team) : NULL;
    mo->wandb_run_name = run ? zg_strdup(run) : NULL;
}

static void derive(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    const cJSON *rl = get(root, "recompute_layernorm");
    cfg->recompute_layernorm = !rl || cJSON_IsFalse(rl)              ? 0
                               : cJSON_IsTrue(rl)                    ? GPT2_RECOMPUTE_LAYERNORM
                               : strcmp(rl->valuestring, "ln1") == 0 ? GPT2_RECOMPUTE_LN1
                                                                     : GPT2_RECOMPUTE_LN2;
    if (cfg->memory_efficient_layernorm && cfg->recompute_layernorm)
        problem(ls,
                "%s: memory_efficient_layernorm and recompute_layernorm both save the LayerNorm activations; set "
                "one of them (memory_efficient_layernorm costs no extra pass)",
                source);
    derive_checkpointing(cfg, root, ls);
    cfg->grad_accum_local_layers_given = get(root, "grad_accum_local_layers") != NULL;
    if (get(root, "bias") && !get_bool(root, "bias", 1))
        problem(ls, "%s: bias false is not supported: GPT-2 has biases (remove the key or set it to true)", source);

    const cJSON *d = get(root, "data");
    if (d && cJSON_IsString(d)) {
        cfg->n_data = 1;
        cfg->data = zg_calloc(1, sizeof *cfg->data);
        cfg->data[0].path = zg_strdup(d->valuestring);
        cfg->data[0].weight = 1.0;
    } else if (d) {
        cfg->n_data = cJSON_GetArraySize(d);
        cfg->data = zg_calloc((size_t)cfg->n_data, sizeof *cfg->data);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, d) {
            const cJSON *p = cJSON_IsString(e) ? e : cJSON_GetObjectItemCaseSensitive(e, "path");
            const cJSON *w = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "weight") : NULL;
            cfg->data[i].path = zg_strdup(p->valuestring);
            cfg->data[i].weight = w ? w->valuedouble : 1.0;
            i++;
        }
    }

    /* batch: nanoGPT's batch_size is the micro-batch; "auto" is derived by zg_train_config_resolve_batch */
    cfg->given_micro_batch =
        (int64_t)alias_num(root, "batch_size", "train_micro_batch_size_per_gpu", -1, -1, 0, source, ls);
    cfg->given_train_batch_size = get_int(root, "train_batch_size", -1);
    cfg->given_grad_accum = get_int(root, "gradient_accumulation_steps", -1);
    if (given_auto(root, "train_micro_batch_size_per_gpu") && cfg->given_micro_batch < 0)
        note(ls, "auto: train_micro_batch_size_per_gpu = derived from train_batch_size and gradient_accumulation_steps "
                 "(else 12, nanoGPT's batch_size)");
    if (given_auto(root, "gradient_accumulation_steps"))
        note(ls, "auto: gradient_accumulation_steps = derived from train_batch_size (else 1)");
    if (given_auto(root, "train_batch_size"))
        note(ls, "auto: train_batch_size = micro-batch x gradient_accumulation_steps x processes");

    derive_optimizer(cfg, root, source, ls);
    derive_schedule(cfg, root, source, ls);
    derive_precision(cfg, root, source, ls);
    derive_offload(cfg, root, ls);
    derive_monitor(cfg, root);
    check_sections(root, ls);
}

/* ---- loading -------------------------------------------------------------------------------- */

void zg_train_config_free(zg_train_config *cfg) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (k_keys[i].fk == FK_STR) free(*(char **)((char *)cfg + k_keys[i].off));
    for (int i = 0; i < cfg->n_data; i++) free((char *)cfg->data[i].path);
    free(cfg->data);
    free(cfg->json_text);
    zg_monitor_config_free(&cfg->monitor);
    for (int i = 0; i < cfg->n_notes; i++) free(cfg->notes[i]);
    free(cfg->notes);
    memset(cfg, 0, sizeof *cfg);
}

/* The tree (merged, overrides applied) -> cfg. Collects every problem; -1 with all of them. */
static int finish(zg_train_config *cfg, cJSON *root, const char *source, load_state *ls) {
    memset(cfg, 0, sizeof *cfg);
    zg_schedule_config_defaults(&cfg->sched);
    zg_loss_scaler_config_defaults(&cfg->scaler);
    fill_fields(cfg, root, ls);
    derive(cfg, root, source, ls);
    if (ls->problems.n == 0) {
        cfg->json_text = cJSON_PrintUnformatted(root);
        ZG_CHECK_PTR(cfg->json_text);
        if (zg_train_config_resolve_batch(cfg, 1) != 0) {
            zg_error_prefix("%s", source);
            collect(ls);
        }
    }
    cfg->notes = ls->notes.items;
    cfg->n_notes = ls->notes.n;
    ls->notes.items = NULL;
    ls->notes.n = 0;
    int rc = report(ls);
    if (rc != 0) zg_train_config_free(cfg);
    return rc;
}

int zg_train_config_load(zg_train_config *cfg, const char *path, const char *ds_path, const char *const *sets,
                         int n_sets) {
    memset(cfg, 0, sizeof *cfg);
    load_state ls;
    memset(&ls, 0, sizeof ls);
    cJSON *root = parse_json_file(path, "config"), *ds = NULL;
    if (!root) return -1;
    int rc = -1;
    set_item *items = zg_calloc((size_t)(n_sets > 0 ? n_sets : 1), sizeof *items);
    if (ds_path) {
        ds = parse_json_file(ds_path, "DeepSpeed config");
        if (!ds) goto cleanup;
    }
    char source[512], dsrc[512];
    snprintf(source, sizeof source, "config '%s'", path);
    snprintf(dsrc, sizeof dsrc, "DeepSpeed config '%s'", ds_path ? ds_path : "");
    for (int i = 0; i < n_sets; i++)
        if (parse_set(sets[i], &items[i]) != 0) collect(&ls);
    /* each file on its own first, so a problem names the file that holds the key */
    canonicalize(root, source, &ls);
    validate_tree(root, "", source, &ls);
    if (ds) {
        canonicalize(ds, dsrc, &ls);
        validate_tree(ds, "", dsrc, &ls);
        merge_into(root, ds, "", path, ds_path, items, n_sets, &ls);
        snprintf(source, sizeof source, "config '%s' + '%s'", path, ds_path);
    }
    for (int i = 0; i < n_sets; i++)
        if (items[i].value && apply_set(root, &items[i]) != 0) collect(&ls);
    if (ls.problems.n > 0) {
        report(&ls);
        goto cleanup;
    }
    rc = finish(cfg, root, source, &ls);
cleanup:
    for (int i = 0; i < n_sets; i++) cJSON_Delete(items[i].value);
    free(items);
    lines_free(&ls.problems);
    lines_free(&ls.notes);
    cJSON_Delete(ds);
    cJSON_Delete(root);
    return rc;
}

int zg_train_config_parse(zg_train_config *cfg, const char *json_text, const char *name) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = cJSON_Parse(json_text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return zg_errorf("%s: invalid JSON (expected one object)", name);
    }
    load_state ls;
    memset(&ls, 0, sizeof ls);
    canonicalize(root, name, &ls);
    validate_tree(root, "", name, &ls);
    int rc = ls.problems.n > 0 ? report(&ls) : finish(cfg, root, name, &ls);
    lines_free(&ls.problems);
    lines_free(&ls.notes);
    cJSON_Delete(root);
    return rc;
}

void zg_train_config_print_notes(const zg_train_config *cfg, FILE *f) {
    for (int i = 0; i < cfg->n_notes; i++) fprintf(f, "%s\n", cfg->notes[i]);
}

int zg_train_config_model_shape(const zg_train_config *cfg, const gpt2_config *base, gpt2_config *out) {
    if (base)
        *out = *base;
    else if (gpt2_config_by_name("gpt2", out) != 0) /* nanoGPT's default shape is GPT-2 124M */
        return -1;
    if (cfg->n_layer) out->n_layer = cfg->n_layer;
    if (cfg->n_head) out->n_head = cfg->n_head;
    if (cfg->n_embd) out->n_embd = cfg->n_embd;
    if (cfg->block_size) out->block_size = cfg->block_size;
    if (cfg->vocab_size) out->vocab_size = cfg->vocab_size;
    if (gpt2_config_validate(out) != 0) return zg_error_prefix("model config");
    return 0;
}

void zg_train_config_optimizer(const zg_train_config *cfg, zg_optimizer_config *out) {
    memset(out, 0, sizeof *out);
    out->lr = (float)cfg->lr;
    out->beta1 = (float)cfg->beta1;
    out->beta2 = (float)cfg->beta2;
    out->eps = (float)cfg->eps;
    out->weight_decay = (float)cfg->weight_decay;
    out->kind = cfg->optim;
    out->no_bias_correction = !cfg->bias_correction;
    out->eps_inside_sqrt = cfg->eps_inside_sqrt;
    out->max_coeff = (float)cfg->max_coeff;
    out->min_coeff = (float)cfg->min_coeff;
}

int zg_train_config_resolve_batch(zg_train_config *cfg, int world_size) {
    int64_t tbs = cfg->given_train_batch_size, mb = cfg->given_micro_batch, ga = cfg->given_grad_accum;
    int64_t ws = world_size < 1 ? 1 : world_size;
    if (tbs > 0 && mb > 0 && ga > 0) {
        if (tbs != mb * ga * ws)
            return zg_errorf("train_batch_size %lld != train_micro_batch_size_per_gpu %lld x "
                             "gradient_accumulation_steps %lld x %lld process(es); fix one or remove one of them",
                             (long long)tbs, (long long)mb, (long long)ga, (long long)ws);
    } else if (tbs > 0 && mb > 0) {
        if (tbs % (mb * ws) != 0)
            return zg_errorf("train_batch_size %lld is not divisible by train_micro_batch_size_per_gpu %lld x %lld "
                             "process(es); change one of them",
                             (long long)tbs, (long long)mb, (long long)ws);
        ga = tbs / (mb * ws);
    } else if (tbs > 0 && ga > 0) {
        if (tbs % (ga * ws) != 0)
            return zg_errorf("train_batch_size %lld is not divisible by gradient_accumulation_steps %lld x %lld "
                             "process(es); change one of them",
                             (long long)tbs, (long long)ga, (long long)ws);
        mb = tbs / (ga * ws);
    } else if (tbs > 0) {
        if (tbs % ws != 0)
            return zg_errorf("train_batch_size %lld is not divisible by %lld processes", (long long)tbs, (long long)ws);
        ga = 1;
        mb = tbs / ws;
    } else {
        if (mb <= 0) mb = 12; /* nanoGPT's default batch_size */
        if (ga <= 0) ga = 1;
        tbs = mb * ga * ws;
    }
    cfg->train_batch_size = mb * ga * ws;
    cfg->micro_batch = mb;
    cfg->grad_accum = ga;
    cfg->world_size = (int)ws;
    return 0;
}

zg_precision zg_train_config_precision(const zg_train_config *cfg, const char *backend_name) {
    int cuda = backend_name && strcmp(backend_name, "cuda") == 0;
    if (cfg->fp16_enabled) return ZG_PREC_FP16;
    if (cfg->bf16_enabled) return ZG_PREC_BF16;
    if (cfg->dtype != ZG_PREC_AUTO) return cfg->dtype;
    return cuda ? ZG_PREC_BF16 : ZG_PREC_FP32;
}

const char *zg_precision_name(zg_precision p) {
    switch (p) {
    case ZG_PREC_AUTO: return "auto";
    case ZG_PREC_FP32: return "fp32";
    case ZG_PREC_BF16: return "bf16";
    case ZG_PREC_FP16: return "fp16";
    }
    return "?";
}

int zg_train_config_recompute(const zg_train_config *cfg) {
    return (cfg->recompute ? GPT2_RECOMPUTE_GELU : 0) | cfg->recompute_layernorm |
           (cfg->memory_efficient_layernorm ? GPT2_LN_FROM_OUTPUT : 0);
}

int zg_train_config_comm_max_ctas(const zg_train_config *cfg, int one_machine) {
    if (cfg->comm_max_ctas >= 0) return cfg->comm_max_ctas;
    if (!one_machine) return 0;
    int64_t T = cfg->block_size > 0 ? cfg->block_size : 1024; /* GPT-2's context unless the config crops it */
    return cfg->micro_batch * T >= ZG_COMM_LEAN_MIN_TOKENS ? ZG_COMM_LEAN_CTAS : 0;
}
