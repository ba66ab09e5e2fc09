#include "cli/options.h"

#include "core/error.h"
#include "core/strutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zg_strlist_free(zg_strlist *l) {
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

static void strlist_push(zg_strlist *l, const char *s) {
    l->items = zg_realloc(l->items, (size_t)(l->count + 1) * sizeof *l->items);
    l->items[l->count++] = s;
}

static int set_value(const zg_option *o, void *args, const char *value) {
    char what[128];
    snprintf(what, sizeof what, "--%s", o->name);
    char *field = (char *)args + o->offset;
    switch (o->kind) {
    case ZG_OPTK_STRING: *(const char **)field = value; return 0;
    case ZG_OPTK_INT: return zg_parse_i64(value, what, (int64_t *)field);
    case ZG_OPTK_DOUBLE: return zg_parse_f64(value, what, (double *)field);
    case ZG_OPTK_LIST: strlist_push((zg_strlist *)field, value); return 0;
    case ZG_OPTK_FLAG: *(int *)field = 1; return 0;
    default: return zg_errorf("internal: bad option kind for --%s", o->name);
    }
}

static const zg_option *find_option(const zg_command_spec *spec, const char *name) {
    for (const zg_option *o = spec->options; o && o->kind != ZG_OPTK_END; o++)
        if (strcmp(o->name, name) == 0) return o;
    return NULL;
}

static int unknown_option(const zg_command_spec *spec, const char *arg) {
    const char *names[256];
    size_t n = 0;
    for (const zg_option *o = spec->options; o && o->kind != ZG_OPTK_END && n < 255; o++) names[n++] = o->name;
    names[n++] = "help";
    const char *name = arg;
    while (*name == '-') name++;
    const char *best = zg_str_closest(name, names, n);
    if (best)
        return zg_errorf("unknown option '%s' for 'zgpt %s'; did you mean '--%s'? (see 'zgpt %s --help')", arg,
                         spec->name, best, spec->name);
    return zg_errorf("unknown option '%s' for 'zgpt %s' (see 'zgpt %s --help')", arg, spec->name, spec->name);
}

int zg_options_parse(const zg_command_spec *spec, int argc, char **argv, void *args, zg_strlist *positional) {
    if (positional) memset(positional, 0, sizeof *positional);
    /* Defaults first, so the table is the one source of truth. */
    for (const zg_option *o = spec->options; o && o->kind != ZG_OPTK_END; o++) {
        char *field = (char *)args + o->offset;
        switch (o->kind) {
        case ZG_OPTK_LIST: memset(field, 0, sizeof(zg_strlist)); break;
        case ZG_OPTK_FLAG: *(int *)field = 0; break;
        case ZG_OPTK_STRING: *(const char **)field = NULL; break;
        case ZG_OPTK_INT: *(int64_t *)field = 0; break;
        case ZG_OPTK_DOUBLE: *(double *)field = 0.0; break;
        default: break;
        }
        if (o->def && set_value(o, args, o->def) != 0) return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            zg_options_print_help(spec);
            return 1;
        }
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (!spec->positional || !positional)
                    return zg_errorf("'zgpt %s' takes no positional arguments, got '%s'", spec->name, argv[i]);
                strlist_push(positional, argv[i]);
            }
            break;
        }
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            char name[128];
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
            if (len >= sizeof name) return unknown_option(spec, a);
            memcpy(name, a + 2, len);
            name[len] = '\0';
            const zg_option *o = find_option(spec, name);
            if (!o) return unknown_option(spec, a);
            if (o->kind == ZG_OPTK_FLAG) {
                if (eq) {
                    int v;
                    char what[160];
                    snprintf(what, sizeof what, "--%s", o->name);
                    if (zg_parse_bool(eq + 1, what, &v) != 0) return -1;
                    *(int *)((char *)args + o->offset) = v;
                } else {
                    set_value(o, args, NULL);
                }
                continue;
            }
            if (o->kind == ZG_OPTK_LIST) {
                zg_strlist *l = (zg_strlist *)((char *)args + o->offset);
                /* A repeated list option replaces the default only once: clear defaults on first use. */
                if (eq) {
                    strlist_push(l, eq + 1);
                    continue;
                }
                int took = 0;
                while (i + 1 < argc && !(argv[i + 1][0] == '-' && argv[i + 1][1] == '-')) {
                    strlist_push(l, argv[++i]);
                    took++;
                }
                if (!took)
                    return zg_errorf("option --%s needs a value (%s)", o->name, o->metavar ? o->metavar : "VALUE");
                continue;
            }
            const char *value = eq ? eq + 1 : NULL;
            if (!value) {
                if (i + 1 >= argc)
                    return zg_errorf("option --%s needs a value (%s)", o->name, o->metavar ? o->metavar : "VALUE");
                value = argv[++i];
            }
            if (set_value(o, args, value) != 0) return -1;
            continue;
        }
        if (a[0] == '-' && a[1] != '\0') return unknown_option(spec, a);
        if (!spec->positional || !positional)
            return zg_errorf("'zgpt %s' takes no positional argument '%s' (see 'zgpt %s --help')", spec->name, a,
                             spec->name);
        strlist_push(positional, a);
    }
    return 0;
}

void zg_options_print_help(const zg_command_spec *spec) {
    printf("usage: zgpt %s %s\n\n%s\n", spec->name, spec->usage ? spec->usage : "[options]", spec->summary);
    if (spec->options && spec->options->kind != ZG_OPTK_END) printf("\noptions:\n");
    for (const zg_option *o = spec->options; o && o->kind != ZG_OPTK_END; o++) {
        char left[96];
        if (o->metavar)
            snprintf(left, sizeof left, "--%s %s%s", o->name, o->metavar, o->kind == ZG_OPTK_LIST ? "..." : "");
        else
            snprintf(left, sizeof left, "--%s", o->name);
        printf("  %-28s %s", left, o->help);
        if (o->def) printf(" (default: %s)", o->def);
        printf("\n");
    }
    printf("  %-28s %s\n", "--help", "show this help");
    if (spec->epilog) printf("\n%s\n", spec->epilog);
}
