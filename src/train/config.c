/* Loading a training configuration (the config file, a DeepSpeed file, --set) and the rest of
 * train/config.h: the problems and notes one load collects, the order of the steps (config_keys.c: the
 * key table and looking keys up; config_validate.c: values and trees; config_merge.c: the sources and
 * --set; config_derive.c: from the tree to zg_train_config), and what the trainer asks of the result
 * (batch arithmetic, model shape, optimizer, precision). */
#include "train/config.h"

#include "core/error.h"
#include "model/gpt2.h"
#include "train/config_internal.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- problems and notes: everything one load has to say ------------------------------------- */

/* Records the message of the zg_errorf that just failed as one problem. */
void config_collect(load_state *ls) { zg_lines_add_error(&ls->problems); }

void config_problem(load_state *ls, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    zg_lines_addv(&ls->problems, fmt, ap);
    va_end(ap);
}

void config_note(load_state *ls, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    zg_lines_addv(&ls->notes, fmt, ap);
    va_end(ap);
}

/* -1 with every problem in one message (one per line), or 0 when there are none. */
static int report(load_state *ls) { return zg_error_lines(&ls->problems, "in the configuration"); }

/* ls's problems appended to out (the caller's list), as they are; -1 when there were any */
static int hand_over(load_state *ls, zg_lines *out) {
    for (int i = 0; i < ls->problems.n; i++) zg_lines_add(out, "%s", ls->problems.items[i]);
    return ls->problems.n > 0 ? -1 : 0;
}

/* ---- loading -------------------------------------------------------------------------------- */

void zg_train_config_free(zg_train_config *cfg) {
    size_t n_keys;
    const key_spec *keys = config_key_table(&n_keys);
    for (size_t i = 0; i < n_keys; i++)
        if (keys[i].fk == FK_STR) free(*(char **)((char *)cfg + keys[i].off));
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
    config_fill_fields(cfg, root, ls);
    config_derive(cfg, root, source, ls);
    if (ls->problems.n == 0) {
        cfg->json_text = cJSON_PrintUnformatted(root);
        ZG_CHECK_PTR(cfg->json_text);
        /* the world size is not known yet: the trainer and `zgpt plan` resolve again with it */
        if (zg_train_config_resolve_batch(cfg, 0) != 0) {
            zg_error_prefix("%s", source);
            config_collect(ls);
        }
    }
    cfg->notes = ls->notes.items;
    cfg->n_notes = ls->notes.n;
    ls->notes.items = NULL;
    ls->notes.n = 0;
    if (ls->problems.n == 0) return 0;
    zg_train_config_free(cfg);
    return -1;
}

int zg_train_config_load_lines(zg_train_config *cfg, const char *path, const char *ds_path, const char *const *sets,
                               int n_sets, zg_lines *problems) {
    memset(cfg, 0, sizeof *cfg);
    load_state ls;
    memset(&ls, 0, sizeof ls);
    cJSON *root = config_parse_json_file(path, "config"), *ds = NULL;
    if (!root) {
        zg_lines_add_error(problems);
        return -1;
    }
    int rc = -1;
    set_item *items = zg_calloc((size_t)(n_sets > 0 ? n_sets : 1), sizeof *items);
    if (ds_path) {
        ds = config_parse_json_file(ds_path, "DeepSpeed config");
        if (!ds) {
            config_collect(&ls);
            goto cleanup;
        }
    }
    char source[512], dsrc[512];
    snprintf(source, sizeof source, "config '%s'", path);
    snprintf(dsrc, sizeof dsrc, "DeepSpeed config '%s'", ds_path ? ds_path : "");
    for (int i = 0; i < n_sets; i++)
        if (config_parse_set(sets[i], &items[i]) != 0) config_collect(&ls);
    /* each file on its own first, so a problem names the file that holds the key */
    config_canonicalize(root, source, &ls);
    config_validate_tree(root, "", source, &ls);
    if (ds) {
        config_canonicalize(ds, dsrc, &ls);
        config_validate_tree(ds, "", dsrc, &ls);
        config_merge_into(root, ds, "", path, ds_path, items, n_sets, &ls);
        snprintf(source, sizeof source, "config '%s' + '%s'", path, ds_path);
    }
    for (int i = 0; i < n_sets; i++)
        if (items[i].value && config_apply_set(root, &items[i]) != 0) config_collect(&ls);
    if (ls.problems.n == 0) finish(cfg, root, source, &ls);
cleanup:
    rc = hand_over(&ls, problems);
    for (int i = 0; i < n_sets; i++) cJSON_Delete(items[i].value);
    free(items);
    zg_lines_free(&ls.problems);
    zg_lines_free(&ls.notes);
    cJSON_Delete(ds);
    cJSON_Delete(root);
    return rc;
}

int zg_train_config_load(zg_train_config *cfg, const char *path, const char *ds_path, const char *const *sets,
                         int n_sets) {
    zg_lines problems = {NULL, 0};
    int rc = zg_train_config_load_lines(cfg, path, ds_path, sets, n_sets, &problems);
    if (rc != 0) rc = zg_error_lines(&problems, "in the configuration");
    zg_lines_free(&problems);
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
    config_canonicalize(root, name, &ls);
    config_validate_tree(root, "", name, &ls);
    int rc = ls.problems.n > 0 || finish(cfg, root, name, &ls) != 0 ? report(&ls) : 0;
    zg_lines_free(&ls.problems);
    zg_lines_free(&ls.notes);
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

/* World size not known: the checks that fail for every world size, and the world size the three keys imply. */
static int batch_world_unknown(const zg_train_config *cfg, int64_t *ws) {
    int64_t tbs = cfg->given_train_batch_size, mb = cfg->given_micro_batch, ga = cfg->given_grad_accum;
    *ws = 1;
    if (tbs > 0 && mb > 0 && ga > 0) {
        if (tbs % (mb * ga) != 0 || tbs / (mb * ga) > 1 << 20)
            return zg_errorf(
                "train_batch_size %lld != train_micro_batch_size_per_gpu %lld x "
                "gradient_accumulation_steps %lld x any number of processes; fix one or remove one of them",
                (long long)tbs, (long long)mb, (long long)ga);
        *ws = tbs / (mb * ga);
    } else if (tbs > 0 && (mb > 0 || ga > 0) && tbs % (mb > 0 ? mb : ga) != 0) {
        return zg_errorf("train_batch_size %lld is not divisible by %s %lld; change one of them", (long long)tbs,
                         mb > 0 ? "train_micro_batch_size_per_gpu" : "gradient_accumulation_steps",
                         (long long)(mb > 0 ? mb : ga));
    }
    return 0;
}

int zg_train_config_resolve_batch(zg_train_config *cfg, int world_size) {
    int64_t tbs = cfg->given_train_batch_size, mb = cfg->given_micro_batch, ga = cfg->given_grad_accum;
    int64_t ws = world_size < 1 ? 1 : world_size;
    if (world_size == 0 && batch_world_unknown(cfg, &ws) != 0) return -1;
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
