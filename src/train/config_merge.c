/* The sources of a configuration: reading a JSON file, merging the DeepSpeed file into the config
 * ("auto" takes the other file's value), and the --set overrides. */
#include "train/config_internal.h"

#include "core/error.h"
#include "core/hjson.h"
#include "core/fileio.h"
#include "core/strutil.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- merging the sources -------------------------------------------------------------------- */

cJSON *config_parse_json_file(const char *path, const char *what) {
    char *text;
    size_t len;
    if (zg_file_read_all(path, &text, &len) != 0) {
        zg_error_prefix("%s", what);
        return NULL;
    }
    /* Hjson, as DeepSpeed reads its config (comments, optional quotes and commas): strict JSON reads the same */
    cJSON *j = zg_hjson_parse(text, len, NULL);
    free(text);
    if (!j) {
        zg_error_prefix("%s '%s': invalid JSON", what, path);
        return NULL;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        zg_errorf("%s '%s': expected one JSON object {...} at top level", what, path);
        return NULL;
    }
    return j;
}

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
void config_merge_into(cJSON *dst, const cJSON *src, const char *prefix, const char *a_name, const char *b_name,
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
            config_merge_into(have, it, path, a_name, b_name, sets, n_sets, ls);
            continue;
        }
        if (cJSON_Compare(have, it, 1) || set_covers(sets, n_sets, path)) continue;
        if (config_is_auto(have) || config_is_auto(it)) {
            const cJSON *concrete = config_is_auto(have) ? it : have;
            char *x = config_value_text(concrete);
            config_note(ls, "auto: '%s' is \"auto\" in '%s'; using %s from '%s'", path,
                        config_is_auto(have) ? a_name : b_name, x, config_is_auto(have) ? b_name : a_name);
            free(x);
            if (config_is_auto(have)) {
                cJSON *dup = cJSON_Duplicate(it, 1);
                ZG_CHECK_PTR(dup);
                cJSON_ReplaceItemViaPointer(dst, have, dup);
            }
            continue;
        }
        char *x = config_value_text(have), *y = config_value_text(it);
        config_problem(ls, "key '%s' is %s in '%s' but %s in '%s'; make them agree, remove one, or give it with --set",
                       path, x, a_name, y, b_name);
        free(x);
        free(y);
    }
}

/* --set key.path=value: the value is parsed by the key's type. 0, or -1 with an error. */
int config_parse_set(const char *set, set_item *out) {
    memset(out, 0, sizeof *out);
    const char *eq = strchr(set, '=');
    if (!eq || eq == set) return zg_errorf("--set '%s': expected key.path=value", set);
    char path[256];
    size_t plen = (size_t)(eq - set);
    if (plen >= sizeof path) return zg_errorf("--set '%s': key too long", set);
    memcpy(path, set, plen);
    path[plen] = '\0';
    config_canonical_path(path, out->path, sizeof out->path);
    const char *val = eq + 1;
    const key_spec *k = config_find_key(out->path);
    if (!k) return config_unknown_key(path, "--set");
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
            if (k->choices && config_enum_index(k, val) >= 0) {
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
    if (config_validate_value(k, v, "--set") != 0) {
        cJSON_Delete(v);
        return -1;
    }
    out->value = v;
    return 0;
}

/* Puts a parsed --set value into the tree (creating its sections). */
int config_apply_set(cJSON *root, set_item *s) {
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
