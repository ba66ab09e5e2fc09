/* Private to the configuration loader (src/train/config*.c): the key table's row, a load's problems and
 * notes, the --set overrides, and what each module gives the others. Not for use outside them. */
#ifndef ZG_TRAIN_CONFIG_INTERNAL_H
#define ZG_TRAIN_CONFIG_INTERNAL_H

#include "core/error.h"
#include "train/config.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

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
    KF_AUTO = 1,          /* the string "auto" (Hugging Face's convention) means "zgpt's resolved value" */
    KF_NOCASE = 2,        /* K_ENUM compared without case (DeepSpeed lowercases optimizer names) */
    KF_SWITCH = 4,        /* section with "enabled": the note is printed only when enabled */
    KF_IGNORED = 8,       /* top-level key DeepSpeed never reads: accepted with a note */
    KF_SIZE = 16,         /* a DeepSpeed parallelism size zgpt does not implement: above 1 is refused */
    KF_ONLY_DEFAULT = 32, /* DeepSpeed's default (`def`) is what zgpt does: accepted with the note, another value
                           * refused */
};

typedef enum { FK_NONE, FK_I32, FK_I64, FK_U64, FK_DBL, FK_STR, FK_ENUM } field_kind;

typedef struct {
    const char *path;
    key_type type;
    double min, max;     /* numbers: allowed closed range */
    const char *choices; /* K_ENUM; K_BOOL: strings allowed besides true and false; K_FEATURE: how DeepSpeed
                          * turns it off ("enabled", the size key that turns it on above 1, or "" for
                          * sections that only removing turns off) */
    unsigned flags;      /* KF_* */
    field_kind fk;       /* how the value is stored at `off` (FK_NONE: derive() reads it) */
    size_t off;          /* offsetof(zg_train_config, field) */
    double def;          /* default of a number/bool/enum index field; for notes, DeepSpeed's default */
    const char *sdef;    /* default of a string field */
    const char *note;    /* a key zgpt accepts without acting on it: what zgpt does instead */
} key_spec;

/* the upper bound of an open range in the table ("an integer >= min") */
#define BIG 9.0e18

/* ---- problems and notes: everything one load has to say ------------------------------------- */

/* A load's state: its problems (all reported together) and its notes (printed at start). */
typedef struct {
    zg_lines problems, notes;
} load_state;

/* The --set overrides, parsed by their keys' types. */
typedef struct {
    char path[256];
    cJSON *value;
} set_item;

/* ---- what each module gives the others ------------------------------------------------------ */

/* ---- config.c: a load's problems and notes */
/* One problem / one note line (a line already there is not repeated). */
void config_problem(load_state *ls, const char *fmt, ...) ZG_PRINTF(2, 3);
void config_note(load_state *ls, const char *fmt, ...) ZG_PRINTF(2, 3);
/* Records the message of the zg_errorf that just failed as one problem. */
void config_collect(load_state *ls);

/* ---- config_keys.c: the key table, looking keys up, DeepSpeed's spellings */
/* The key table (config_keys.inc): its rows, *n of them. */
const key_spec *config_key_table(size_t *n);
/* The row of a dotted path, or NULL. */
const key_spec *config_find_key(const char *path);
/* The index of s among k->choices ("a|b|c"), or -1. */
int config_enum_index(const key_spec *k, const char *s);
/* choice i of k->choices into buf: 0, or -1 past the last */
int config_enum_name(const key_spec *k, int i, char *buf, size_t cap);
/* -1 with "unknown key", naming a known rename or the closest key. */
int config_unknown_key(const char *path, const char *source);
int config_is_auto(const cJSON *v);
/* The value at a dotted path, "auto" included (NULL when absent). */
const cJSON *config_raw(const cJSON *root, const char *path);
/* The value at a path; "auto" counts as not given (config_derive resolves it). */
const cJSON *config_get(const cJSON *root, const char *path);
int config_given_auto(const cJSON *root, const char *path);
int64_t config_get_int(const cJSON *root, const char *path, int64_t def);
double config_get_num(const cJSON *root, const char *path, double def);
int config_get_bool(const cJSON *root, const char *path, int def);
const char *config_get_str(const cJSON *root, const char *path, const char *def);
/* Renames each alias to its canonical key in the tree; both given must agree. */
void config_canonicalize(cJSON *root, const char *source, load_state *ls);
/* A --set path in canonical spelling (bfloat16.enabled -> bf16.enabled). */
void config_canonical_path(const char *path, char *out, size_t cap);

/* ---- config_validate.c: values and trees */
/* A value as the messages quote it (shortened; the caller frees it). */
char *config_value_text(const cJSON *v);
/* 0, or -1 with an error naming the key, the value and what is allowed. */
int config_validate_value(const key_spec *k, const cJSON *v, const char *source);
/* Every key of an object must be in the table (sections recursively); every problem is collected. */
void config_validate_tree(const cJSON *obj, const char *prefix, const char *source, load_state *ls);
/* The no-op lines, the refused features and the disabled ones, in table order. */
void config_check_sections(const cJSON *root, load_state *ls);

/* ---- config_merge.c: the sources */
/* One JSON object from a file, or NULL with an error naming the file (and the line). */
cJSON *config_parse_json_file(const char *path, const char *what);
/* Adds src's keys into dst; a key in both must agree unless one is "auto" or --set gives it. */
void config_merge_into(cJSON *dst, const cJSON *src, const char *prefix, const char *a_name, const char *b_name,
                       const set_item *sets, int n_sets, load_state *ls);
/* --set key.path=value: the value is parsed by the key's type. 0, or -1 with an error. */
int config_parse_set(const char *set, set_item *out);
/* Puts a parsed --set value into the tree (creating its sections). */
int config_apply_set(cJSON *root, set_item *s);

/* ---- config_derive.c: from the tree to zg_train_config */
/* Every key with a field: its value, or the table default ("auto" takes the default too). */
void config_fill_fields(zg_train_config *cfg, const cJSON *root, load_state *ls);
/* What depends on several keys (batch, optimizer, schedule, precision, offload, monitors). */
void config_derive(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls);

#endif
