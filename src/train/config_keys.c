/* The key table (config_keys.inc, included here only), looking keys up in a tree, the suggestion for
 * an unknown key, and DeepSpeed's other spellings of a key. */
#include "train/config_internal.h"

#include "core/error.h"
#include "core/strutil.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define OPTIMIZER_NAMES                                                                                                \
    "Adam|AdamW|Lamb|OneBitAdam|ZeroOneAdam|OneBitLamb|Adagrad|Lion|MuAdam|MuAdamW|MuSGD|Muon|SGD|RMSprop|"            \
    "Adamax|NAdam|RAdam|Adadelta"
#define SCHEDULER_NAMES "WarmupLR|WarmupDecayLR|WarmupCosineLR|OneCycle|LRRangeTest"
/* DeepSpeed's DtypeEnum names (deepspeed/runtime/config.py), in the order derive_precision's by_dtype reads them */
#define DTYPE_NAMES                                                                                                    \
    "fp16|float16|half|torch.float16|fp32|float32|float|torch.float32|bf16|bfloat16|torch.bfloat16|int8|torch.int8"

#include "train/config_keys.inc"

const key_spec *config_key_table(size_t *n) {
    *n = N_KEYS;
    return k_keys;
}

static const char *k_key_paths[N_KEYS];

size_t zg_train_config_keys(const char *const **out) {
    for (size_t i = 0; i < N_KEYS; i++) k_key_paths[i] = k_keys[i].path;
    *out = k_key_paths;
    return N_KEYS;
}

const key_spec *config_find_key(const char *path) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(k_keys[i].path, path) == 0) return &k_keys[i];
    return NULL;
}

/* ---- looking keys up ------------------------------------------------------------------------ */

int config_is_auto(const cJSON *v) { return cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0; }

/* The value at a dotted path, "auto" included (NULL when absent). */
const cJSON *config_raw(const cJSON *root, const char *path) {
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
const cJSON *config_get(const cJSON *root, const char *path) {
    const cJSON *v = config_raw(root, path);
    return v && config_is_auto(v) ? NULL : v;
}
int config_given_auto(const cJSON *root, const char *path) { return config_is_auto(config_raw(root, path)); }

int64_t config_get_int(const cJSON *root, const char *path, int64_t def) {
    const cJSON *v = config_get(root, path);
    return v ? (int64_t)v->valuedouble : def;
}
double config_get_num(const cJSON *root, const char *path, double def) {
    const cJSON *v = config_get(root, path);
    return v ? v->valuedouble : def;
}
int config_get_bool(const cJSON *root, const char *path, int def) {
    const cJSON *v = config_get(root, path);
    return v ? cJSON_IsTrue(v) : def;
}
const char *config_get_str(const cJSON *root, const char *path, const char *def) {
    const cJSON *v = config_get(root, path);
    return v ? v->valuestring : def;
}

/* A known rename first (comm_overlap -> zero_optimization.overlap_comm), then the closest key of
 * the same section, then the closest key anywhere. */
int config_unknown_key(const char *path, const char *source) {
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

/* The index of s among k->choices ("a|b|c"), or -1. */
int config_enum_index(const key_spec *k, const char *s) {
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

/* Choice i of k->choices into buf (0), or -1 when there are fewer choices. */
int config_enum_name(const key_spec *k, int i, char *buf, size_t cap) {
    const char *c = k->choices;
    for (; c && *c && i > 0; i--) {
        const char *bar = strchr(c, '|');
        c = bar ? bar + 1 : c + strlen(c);
    }
    if (!c || !*c) return -1;
    const char *bar = strchr(c, '|');
    snprintf(buf, cap, "%.*s", (int)(bar ? (size_t)(bar - c) : strlen(c)), c);
    return 0;
}

/* ---- DeepSpeed's other spellings ------------------------------------------------------------ */

/* The parent object of a dotted path and the last component (NULL when the parent is absent). */
static cJSON *parent_of(cJSON *root, const char *path, const char **last) {
    const char *dot = strrchr(path, '.');
    *last = dot ? dot + 1 : path;
    if (!dot) return root;
    char buf[256];
    snprintf(buf, sizeof buf, "%.*s", (int)(dot - path), path);
    cJSON *p = (cJSON *)config_raw(root, buf);
    return p && cJSON_IsObject(p) ? p : NULL;
}

/* DeepSpeed's deprecated "zero_optimization": true / false (read_zero_config_deprecated in
 * deepspeed/runtime/zero/config.py): {"stage": 1} with the top-level "allgather_size" as its
 * allgather_bucket_size, or {"stage": 0}. */
static void zero_optimization_bool(cJSON *root, load_state *ls) {
    cJSON *zo = cJSON_GetObjectItemCaseSensitive(root, "zero_optimization");
    if (!cJSON_IsBool(zo)) return;
    int on = cJSON_IsTrue(zo);
    cJSON *sec = cJSON_CreateObject();
    ZG_CHECK_PTR(sec);
    cJSON_AddNumberToObject(sec, "stage", on);
    cJSON *ag = on ? cJSON_DetachItemFromObjectCaseSensitive(root, "allgather_size") : NULL;
    if (ag) cJSON_AddItemToObject(sec, "allgather_bucket_size", ag);
    cJSON_ReplaceItemInObjectCaseSensitive(root, "zero_optimization", sec);
    config_note(ls, "note: \"zero_optimization\": %s is DeepSpeed's deprecated form of {\"stage\": %d}; read as that%s",
                on ? "true" : "false", on, ag ? " (allgather_size is its allgather_bucket_size)" : "");
}

/* The boolean a string or number stands for in pydantic's lax mode, which DeepSpeed's config models use
 * ("true"/"false", "yes"/"no", "on"/"off", "t"/"f", "y"/"n", "1"/"0" in any case; the numbers 1 and 0):
 * 1 / 0, or -1 when it is none of those. */
static int lax_bool(const cJSON *v) {
    if (cJSON_IsNumber(v)) return v->valuedouble == 1.0 ? 1 : v->valuedouble == 0.0 ? 0 : -1;
    if (!cJSON_IsString(v)) return -1;
    static const char *const yes[] = {"true", "yes", "on", "t", "y", "1"}, *const no[] = {"false", "no", "off",
                                                                                          "f",     "n",  "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(v->valuestring, yes[i]) == 0) return 1;
        if (strcasecmp(v->valuestring, no[i]) == 0) return 0;
    }
    return -1;
}

/* A boolean written as a string or 0/1 (`"enabled": "true"`) becomes that boolean, with a note: DeepSpeed
 * reads it so (its pydantic config models coerce them), and zgpt would otherwise refuse a config that
 * trains under DeepSpeed. The key's own strings (K_BOOL choices, "auto") stay strings. */
static void coerce_bool(cJSON *root, const char *path, const key_spec *k, const char *source, load_state *ls) {
    const char *last;
    cJSON *parent = parent_of(root, path, &last);
    cJSON *v = parent ? cJSON_GetObjectItemCaseSensitive(parent, last) : NULL;
    if (!v || cJSON_IsBool(v)) return;
    if (cJSON_IsString(v) && ((k && (k->flags & KF_AUTO) && config_is_auto(v)) ||
                              (k && k->choices && config_enum_index(k, v->valuestring) >= 0)))
        return;
    int b = lax_bool(v);
    if (b < 0) return; /* the validator names it */
    char *t = config_value_text(v);
    config_note(ls, "note: %s: '%s' is %s, read as %s (as DeepSpeed's config models read it); write %s", source, path,
                t, b ? "true" : "false", b ? "true" : "false");
    free(t);
    cJSON_ReplaceItemInObjectCaseSensitive(parent, last, b ? cJSON_CreateTrue() : cJSON_CreateFalse());
}

/* Renames each alias to its canonical key (as DeepSpeed reads both); both given must agree. Then booleans
 * given as strings or 0/1 become booleans (coerce_bool). */
void config_canonicalize(cJSON *root, const char *source, load_state *ls) {
    zero_optimization_bool(root, ls);
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
                config_problem(ls, "%s: '%s' and '%s' are the same DeepSpeed key with different values; keep one",
                               source, k_spellings[i].alias, k_spellings[i].canonical);
            cJSON_DeleteItemFromObjectCaseSensitive(parent, alias_last);
            continue;
        }
        cJSON_DetachItemViaPointer(parent, a);
        cJSON_AddItemToObject(parent, canon_last, a);
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        if (k_keys[i].type == K_BOOL) {
            coerce_bool(root, k_keys[i].path, &k_keys[i], source, ls);
        } else if (k_keys[i].type == K_FEATURE) { /* a feature section's "enabled" */
            char path[256];
            snprintf(path, sizeof path, "%s.enabled", k_keys[i].path);
            coerce_bool(root, path, NULL, source, ls);
        }
    }
}

/* A --set path in canonical spelling (bfloat16.enabled -> bf16.enabled). */
void config_canonical_path(const char *path, char *out, size_t cap) {
    for (size_t i = 0; i < sizeof k_spellings / sizeof k_spellings[0]; i++) {
        size_t n = strlen(k_spellings[i].alias);
        if (strncmp(path, k_spellings[i].alias, n) == 0 && (path[n] == '\0' || path[n] == '.')) {
            snprintf(out, cap, "%s%s", k_spellings[i].canonical, path + n);
            return;
        }
    }
    snprintf(out, cap, "%s", path);
}
