/* Table-driven command-line options: one table per command drives both parsing and --help.
 *
 *   typedef struct { const char *input; int64_t batch; int json; } my_args;
 *   static const zg_option opts[] = {
 *       ZG_OPT_STR(my_args, input, "input", "FILE", "text to read (default: stdin)"),
 *       ZG_OPT_INT(my_args, batch, "batch", "N", "sequences per batch", "8"),
 *       ZG_OPT_FLAG(my_args, json, "json", "print JSON"),
 *       ZG_OPT_END};
 *
 * Defaults are written into the struct by zg_options_parse() from the table's default text, so the
 * help and the behaviour cannot disagree. */
#ifndef ZG_CLI_OPTIONS_H
#define ZG_CLI_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    ZG_OPTK_END = 0,
    ZG_OPTK_FLAG,   /* int, set to 1 when present */
    ZG_OPTK_STRING, /* const char * */
    ZG_OPTK_INT,    /* int64_t */
    ZG_OPTK_DOUBLE, /* double */
    ZG_OPTK_LIST,   /* zg_strlist: the option may repeat, or take several values up to the next option */
} zg_option_kind;

typedef struct {
    const char **items;
    int count;
} zg_strlist;

typedef struct {
    zg_option_kind kind;
    const char *name;    /* long name without "--" */
    size_t offset;       /* where the value goes in the command's args struct */
    const char *metavar; /* e.g. "FILE"; NULL for flags */
    const char *help;
    const char *def; /* default as text (parsed like a command-line value); NULL = none */
} zg_option;

#define ZG_OPT_FLAG(S, field, name, help)                                                                              \
    { ZG_OPTK_FLAG, name, offsetof(S, field), NULL, help, NULL }
#define ZG_OPT_STR(S, field, name, meta, help, def)                                                                    \
    { ZG_OPTK_STRING, name, offsetof(S, field), meta, help, def }
#define ZG_OPT_INT(S, field, name, meta, help, def)                                                                    \
    { ZG_OPTK_INT, name, offsetof(S, field), meta, help, def }
#define ZG_OPT_DBL(S, field, name, meta, help, def)                                                                    \
    { ZG_OPTK_DOUBLE, name, offsetof(S, field), meta, help, def }
#define ZG_OPT_LIST(S, field, name, meta, help)                                                                        \
    { ZG_OPTK_LIST, name, offsetof(S, field), meta, help, NULL }
#define ZG_OPT_END                                                                                                     \
    { ZG_OPTK_END, NULL, 0, NULL, NULL, NULL }

/* A command's description for parsing and help. */
typedef struct {
    const char *name;    /* "train" */
    const char *usage;   /* "--config FILE [options]" */
    const char *summary; /* one line */
    const zg_option *options;
    const char *positional; /* metavar of positional arguments, NULL if none are accepted */
    const char *epilog;     /* extra help text, may be NULL */
} zg_command_spec;

/* Parses argv (argv[0] is the command name) into args. Positional arguments (if the spec accepts
 * them) are returned in *positional. Returns 0 on success, 1 if --help was printed (caller exits 0),
 * -1 on error (message names the option and suggests the closest valid one). */
int zg_options_parse(const zg_command_spec *spec, int argc, char **argv, void *args, zg_strlist *positional);
void zg_options_print_help(const zg_command_spec *spec);
void zg_strlist_free(zg_strlist *l);

#endif
