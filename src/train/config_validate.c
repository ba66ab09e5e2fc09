/* Validation: each value against its key's type and range, each tree against the key table, and the
 * sections zgpt refuses or accepts with a note. */
#include "train/config_internal.h"

#include "core/error.h"
#include "core/strutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- validation ----------------------------------------------------------------------------- */

char *config_value_text(const cJSON *v) {
    char *s = cJSON_PrintUnformatted(v);
    ZG_CHECK_PTR(s);
    if (strlen(s) > 80) strcpy(s + 72, "...");
    return s;
}

static int type_error(const char *source, const char *path, const cJSON *v, const char *allowed) {
    char *t = config_value_text(v);
    zg_errorf("%s: key '%s' has value %s; allowed: %s", source, path, t, allowed);
    free(t);
    return -1;
}

/* The closest choice for a wrong enum value (case-insensitive), or NULL. */
static const char *enum_suggestion(const key_spec *k, const char *s, char *buf, size_t cap) {
    const char *cands[64];
    char names[64][48];
    size_t n = 0;
    for (; n < 64 && config_enum_name(k, (int)n, names[n], sizeof names[n]) == 0; n++) cands[n] = names[n];
    const char *best = zg_str_closest(s, cands, n);
    if (!best) return NULL;
    snprintf(buf, cap, "%s", best);
    return buf;
}

int config_validate_value(const key_spec *k, const cJSON *v, const char *source) {
    char allowed[512];
    if ((k->flags & KF_AUTO) && config_is_auto(v)) return 0;
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
        if (k->choices && cJSON_IsString(v) && config_enum_index(k, v->valuestring) >= 0) return 0;
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
        if (cJSON_IsString(v) && config_enum_index(k, v->valuestring) >= 0) return 0;
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
void config_validate_tree(const cJSON *obj, const char *prefix, const char *source, load_state *ls) {
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        char path[256];
        if (!it->string) {
            config_problem(ls, "%s: malformed object", source);
            continue;
        }
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        int dup = 0;
        for (const cJSON *o = it->next; o; o = o->next)
            if (o->string && strcmp(o->string, it->string) == 0) dup = 1;
        if (dup) {
            config_problem(ls, "%s: key '%s' appears twice; keep one", source, path);
            continue;
        }
        if (!prefix[0] && it->string[0] == '_') continue; /* "_comment": DeepSpeed ignores it too */
        const key_spec *k = config_find_key(path);
        if (!k) {
            config_unknown_key(path, source);
            config_collect(ls);
            continue;
        }
        if (config_validate_value(k, it, source) != 0) {
            config_collect(ls);
            continue;
        }
        if (k->type == K_SECTION || (k->type == K_COMPILE && cJSON_IsObject(it))) {
            if (params_of_unsupported(obj, path)) continue; /* the type is refused; its params are its own */
            config_validate_tree(it, path, source, ls);
        }
    }
}

/* Whether a note-only key's value asks for something (differs from DeepSpeed's default; null is DeepSpeed's
 * None, the default of its optional keys; an enum's default is the index `def`). */
static int asks_for_something(const key_spec *k, const cJSON *v) {
    if (cJSON_IsNull(v)) return 0;
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v) != (k->def != 0);
    if (cJSON_IsNumber(v)) return v->valuedouble != k->def;
    if (k->type == K_ENUM && cJSON_IsString(v)) return config_enum_index(k, v->valuestring) != (int)k->def;
    return 1;
}

/* DeepSpeed's default of a KF_ONLY_DEFAULT key as the messages write it (true, "mean"). */
static void default_text(const key_spec *k, char *buf, size_t cap) {
    if (k->type != K_ENUM) {
        snprintf(buf, cap, "%s", k->def != 0 ? "true" : "false");
        return;
    }
    char name[48] = "";
    config_enum_name(k, (int)k->def, name, sizeof name);
    snprintf(buf, cap, "\"%s\"", name);
}

/* A key whose DeepSpeed default is what zgpt does: the default is accepted with the note, another value
 * is refused in one line naming the key, the value and the default to set. */
static void check_only_default(const key_spec *k, const cJSON *v, load_state *ls) {
    char *t = config_value_text(v), def[64];
    default_text(k, def, sizeof def);
    if (asks_for_something(k, v))
        config_problem(ls, "'%s' %s is not supported by zgpt (%s); remove it or set it to %s", k->path, t, k->note,
                       def);
    else
        config_note(ls, "note: '%s' %s is accepted: %s", k->path, t, k->note);
    free(t);
}

/* The enabled state of a DeepSpeed section ("enabled", else DeepSpeed's default for it). */
static int section_enabled(const cJSON *v, int default_on) {
    const cJSON *en = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "enabled") : NULL;
    return en ? cJSON_IsTrue(en) : default_on;
}

/* A feature section zgpt refuses when it acts: "enabled" (or DeepSpeed's default); for sections without
 * "enabled" in DeepSpeed, their size key above 1, or (key "") their presence. */
static void check_feature(const key_spec *k, const cJSON *v, load_state *ls) {
    const char *key = k->choices;
    int sized = strcmp(key, "enabled") != 0 && key[0];
    const cJSON *size = sized ? cJSON_GetObjectItemCaseSensitive(v, key) : NULL;
    int on = sized ? cJSON_IsNumber(size) && size->valuedouble > 1 : (int)k->def;
    if (!section_enabled(v, on))
        config_note(ls, "note: '%s' is disabled; accepted (zgpt does not implement it)", k->path);
    else if (cJSON_IsNumber(size))
        config_problem(ls, "'%s' is not supported by zgpt (%s %g); remove it or set %s to 1", k->path, key,
                       size->valuedouble, key);
    else if (!key[0])
        config_problem(ls, "'%s' is not supported by zgpt; remove it (DeepSpeed turns it on by its presence)", k->path);
    else
        config_problem(ls, "'%s' is not supported by zgpt; remove it or set \"enabled\": false", k->path);
}

/* The no-op lines, the refused features and the disabled ones, in table order. */
void config_check_sections(const cJSON *root, load_state *ls) {
    const cJSON *top;
    cJSON_ArrayForEach(top, root) {
        if (top->string && top->string[0] == '_')
            config_note(ls, "note: '%s' is not read by DeepSpeed; zgpt ignores it too", top->string);
    }
    size_t n_keys;
    const key_spec *keys = config_key_table(&n_keys);
    for (size_t i = 0; i < n_keys; i++) {
        const key_spec *k = &keys[i];
        const cJSON *v = config_raw(root, k->path);
        if (!v) continue;
        if (k->type == K_FEATURE) {
            check_feature(k, v, ls);
            continue;
        }
        if (k->flags & KF_SIZE) {
            if (v->valuedouble > 1)
                config_problem(ls,
                               "'%s' %g is not supported by zgpt (it trains data-parallel only); remove it or "
                               "set it to 1",
                               k->path, v->valuedouble);
            continue;
        }
        if (k->flags & KF_ONLY_DEFAULT) {
            check_only_default(k, v, ls);
            continue;
        }
        if (k->flags & KF_IGNORED) {
            config_note(ls, "note: '%s' is not a key DeepSpeed reads; zgpt ignores it too", k->path);
            continue;
        }
        if (!k->note) continue;
        if (k->flags & KF_SWITCH) {
            if (section_enabled(v, 0)) config_note(ls, "note: '%s' is enabled, but %s", k->path, k->note);
            continue;
        }
        if (k->type == K_COMPILE) {
            int on = cJSON_IsObject(v) ? !config_get_bool(v, "disable", 0) : cJSON_IsTrue(v);
            if (on) config_note(ls, "note: '%s': %s", k->path, k->note);
            continue;
        }
        if (asks_for_something(k, v)) config_note(ls, "note: '%s' has no effect: %s", k->path, k->note);
    }
}
