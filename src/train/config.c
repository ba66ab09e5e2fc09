#include "train/config.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/strutil.h"
#include "model/gpt2.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the key table: the one list of valid keys, their types and ranges ---------------------- */

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
    K_ANY,     /* accepted and stored as is (DeepSpeed features zgpt does not act on) */
} key_type;

typedef struct {
    const char *path;
    key_type type;
    double min, max;     /* numbers: allowed closed range */
    const char *choices; /* K_ENUM; K_BOOL: strings allowed besides true and false */
    int auto_ok;         /* the string "auto" (Hugging Face's DeepSpeed configs) means "derive it" */
} key_spec;

#define BIG 9.0e18
static const key_spec k_keys[] = {
    /* nanoGPT-named training keys */
    {"out_dir", K_STRING, 0, 0, NULL, 0},
    {"data", K_DATA, 0, 0, NULL, 0},
    {"init_from", K_STRING, 0, 0, NULL, 0},
    {"max_iters", K_INT, 0, BIG, NULL, 0},
    {"eval_interval", K_INT, 1, BIG, NULL, 0},
    {"eval_iters", K_INT, 1, BIG, NULL, 0},
    {"log_interval", K_INT, 1, BIG, NULL, 0},
    {"always_save_checkpoint", K_BOOL, 0, 0, NULL, 0},
    {"save_checkpoints", K_BOOL, 0, 0, NULL, 0},
    {"early_stopping_patience", K_INT, 0, BIG, NULL, 0},
    {"keep_last_k", K_INT, 1, 1e6, NULL, 0},
    {"seed", K_INT, 0, BIG, NULL, 0},
    {"n_layer", K_INT, 1, 1024, NULL, 0},
    {"n_head", K_INT, 1, 1024, NULL, 0},
    {"n_embd", K_INT, 1, 65536, NULL, 0},
    {"block_size", K_INT, 1, 1 << 20, NULL, 0},
    {"vocab_size", K_INT, 1, 1 << 24, NULL, 0},
    {"dropout", K_FLOAT, 0, 0, NULL, 0},
    {"bias", K_BOOL, 0, 0, NULL, 0},
    {"recompute", K_BOOL, 0, 0, NULL, 0},
    {"recompute_layernorm", K_BOOL, 0, 0, "ln1|ln2", 0},
    {"recompute_num_layers", K_INT, 0, 1 << 20, NULL, 0},
    {"memory_efficient_layernorm", K_BOOL, 0, 0, NULL, 0},
    {"comm_max_ctas", K_INT, -1, 64, NULL, 0},
    {"batch_size", K_INT, 1, 1 << 20, NULL, 0},
    {"learning_rate", K_FLOAT, 0, 10, NULL, 0},
    {"weight_decay", K_FLOAT, 0, 10, NULL, 0},
    {"beta1", K_FLOAT, 0, 0.999999, NULL, 0},
    {"beta2", K_FLOAT, 0, 0.999999999, NULL, 0},
    {"grad_clip", K_FLOAT, 0, 1e9, NULL, 0},
    {"decay_lr", K_BOOL, 0, 0, NULL, 0},
    {"warmup_iters", K_INT, 0, BIG, NULL, 0},
    {"lr_decay_iters", K_INT, 0, BIG, NULL, 0},
    {"min_lr", K_FLOAT, 0, 10, NULL, 0},
    {"sample_mode", K_ENUM, 0, 0, "random|epoch", 0},
    {"dtype", K_ENUM, 0, 0, "auto|fp32|float32|bf16|bfloat16|fp16|float16", 0},
    {"device", K_ENUM, 0, 0, "auto|cpu|cuda", 0},
    /* nanoGPT's wandb keys: TensorBoard logs that `wandb sync` uploads (src/monitor/monitor.h) */
    {"wandb_log", K_BOOL, 0, 0, NULL, 0},
    {"wandb_project", K_STRING, 0, 0, NULL, 0},
    {"wandb_run_name", K_STRING, 0, 0, NULL, 0},
    /* nanoGPT keys accepted and ignored (no effect in zgpt) */
    {"compile", K_BOOL, 0, 0, NULL, 0},
    {"backend", K_STRING, 0, 0, NULL, 0},

    /* DeepSpeed: batch */
    {"train_batch_size", K_INT, 1, 1 << 30, NULL, 1},
    {"train_micro_batch_size_per_gpu", K_INT, 1, 1 << 20, NULL, 1},
    {"gradient_accumulation_steps", K_INT, 1, 1 << 20, NULL, 1},
    {"gradient_clipping", K_FLOAT, 0, 1e9, NULL, 1},
    /* DeepSpeed: optimizer */
    {"optimizer", K_SECTION, 0, 0, NULL, 0},
    {"optimizer.type", K_ENUM, 0, 0, "AdamW|Adam|adamw|adam", 0},
    {"optimizer.params", K_SECTION, 0, 0, NULL, 0},
    {"optimizer.params.lr", K_FLOAT, 0, 10, NULL, 1},
    {"optimizer.params.betas", K_BETAS, 0, 0, NULL, 1},
    {"optimizer.params.eps", K_FLOAT, 0, 1, NULL, 1},
    {"optimizer.params.weight_decay", K_FLOAT, 0, 10, NULL, 1},
    {"optimizer.params.adam_w_mode", K_BOOL, 0, 0, NULL, 0},
    {"optimizer.params.torch_adam", K_BOOL, 0, 0, NULL, 0},
    {"optimizer.params.bias_correction", K_BOOL, 0, 0, NULL, 0},
    {"optimizer.params.amsgrad", K_BOOL, 0, 0, NULL, 0},
    /* DeepSpeed: scheduler */
    {"scheduler", K_SECTION, 0, 0, NULL, 0},
    {"scheduler.type", K_ENUM, 0, 0, "WarmupLR|WarmupDecayLR|WarmupCosineLR", 0},
    {"scheduler.params", K_SECTION, 0, 0, NULL, 0},
    {"scheduler.params.warmup_min_lr", K_FLOAT, 0, 10, NULL, 1},
    {"scheduler.params.warmup_max_lr", K_FLOAT, 0, 10, NULL, 1},
    {"scheduler.params.warmup_num_steps", K_INT, 0, BIG, NULL, 1},
    {"scheduler.params.warmup_type", K_ENUM, 0, 0, "log|linear", 0},
    {"scheduler.params.total_num_steps", K_INT, 1, BIG, NULL, 1},
    {"scheduler.params.warmup_min_ratio", K_FLOAT, 0, 1, NULL, 0},
    {"scheduler.params.cos_min_ratio", K_FLOAT, 0, 1, NULL, 0},
    {"scheduler.params.last_batch_iteration", K_INT, -1, -1, NULL, 0},
    /* DeepSpeed: precision */
    {"fp16", K_SECTION, 0, 0, NULL, 0},
    {"fp16.enabled", K_BOOL, 0, 0, NULL, 1},
    {"fp16.loss_scale", K_FLOAT, 0, 1e30, NULL, 0},
    {"fp16.initial_scale_power", K_INT, 0, 60, NULL, 0},
    {"fp16.loss_scale_window", K_INT, 1, BIG, NULL, 0},
    {"fp16.hysteresis", K_INT, 1, 1 << 20, NULL, 0},
    {"fp16.consecutive_hysteresis", K_BOOL, 0, 0, NULL, 0},
    {"fp16.min_loss_scale", K_FLOAT, 1e-30, 1e30, NULL, 0},
    {"fp16.auto_cast", K_BOOL, 0, 0, NULL, 0},
    {"fp16.fp16_master_weights_and_grads", K_BOOL, 0, 0, NULL, 0},
    {"bf16", K_SECTION, 0, 0, NULL, 0},
    {"bf16.enabled", K_BOOL, 0, 0, NULL, 1},
    {"bf16.immediate_grad_update", K_BOOL, 0, 0, NULL, 0},
    {"bf16.check_grad_overflow", K_BOOL, 0, 0, NULL, 0},
    {"amp", K_ANY, 0, 0, NULL, 0},
    {"communication_data_type", K_ANY, 0, 0, NULL, 0},
    {"data_types", K_ANY, 0, 0, NULL, 0},
    /* DeepSpeed: ZeRO (stored; the ZeRO engine acts on it) */
    {"zero_optimization", K_SECTION, 0, 0, NULL, 0},
    {"zero_optimization.stage", K_INT, 0, 3, NULL, 0},
    {"zero_optimization.overlap_comm", K_BOOL, 0, 0, NULL, 1},
    {"zero_optimization.contiguous_gradients", K_BOOL, 0, 0, NULL, 1},
    {"zero_optimization.reduce_scatter", K_BOOL, 0, 0, NULL, 1},
    {"zero_optimization.allgather_partitions", K_BOOL, 0, 0, NULL, 1},
    {"zero_optimization.reduce_bucket_size", K_INT, 1, BIG, NULL, 1},
    {"zero_optimization.allgather_bucket_size", K_INT, 1, BIG, NULL, 1},
    {"zero_optimization.stage3_prefetch_bucket_size", K_INT, 0, BIG, NULL, 1},
    {"zero_optimization.stage3_param_persistence_threshold", K_INT, 0, BIG, NULL, 1},
    {"zero_optimization.stage3_max_live_parameters", K_INT, 0, BIG, NULL, 1},
    {"zero_optimization.stage3_max_reuse_distance", K_INT, 0, BIG, NULL, 1},
    {"zero_optimization.stage3_gather_16bit_weights_on_model_save", K_BOOL, 0, 0, NULL, 1},
    {"zero_optimization.stage3_gather_fp16_weights_on_model_save", K_BOOL, 0, 0, NULL, 1},
    {"zero_optimization.sub_group_size", K_INT, 0, BIG, NULL, 1},
    {"zero_optimization.offload_optimizer", K_ANY, 0, 0, NULL, 0},
    {"zero_optimization.offload_param", K_ANY, 0, 0, NULL, 0},
    {"zero_optimization.cpu_offload", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.round_robin_gradients", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.elastic_checkpoint", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.load_from_fp32_weights", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.ignore_unused_parameters", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.legacy_stage1", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.zero_hpz_partition_size", K_INT, 0, BIG, NULL, 0},
    {"zero_optimization.zero_quantized_weights", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.zero_quantized_gradients", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.mics_shard_size", K_INT, -1, BIG, NULL, 0},
    {"zero_optimization.use_multi_rank_bucket_allreduce", K_BOOL, 0, 0, NULL, 0},
    {"zero_optimization.memory_efficient_linear", K_BOOL, 0, 0, NULL, 0},
    /* other DeepSpeed keys users have in their files: accepted; logging/profiling is zgpt's own */
    {"steps_per_print", K_INT, 1, BIG, NULL, 1},
    {"wall_clock_breakdown", K_BOOL, 0, 0, NULL, 1},
    {"dump_state", K_BOOL, 0, 0, NULL, 0},
    {"memory_breakdown", K_BOOL, 0, 0, NULL, 0},
    {"prescale_gradients", K_BOOL, 0, 0, NULL, 0},
    {"gradient_predivide_factor", K_FLOAT, 0, 1e9, NULL, 0},
    {"sparse_gradients", K_BOOL, 0, 0, NULL, 0},
    {"zero_allow_untested_optimizer", K_BOOL, 0, 0, NULL, 0},
    {"zero_force_ds_cpu_optimizer", K_BOOL, 0, 0, NULL, 0},
    {"disable_allgather", K_BOOL, 0, 0, NULL, 0},
    {"flops_profiler", K_ANY, 0, 0, NULL, 0},
    /* DeepSpeed: monitors (src/monitor/monitor.h) */
    {"tensorboard", K_SECTION, 0, 0, NULL, 0},
    {"tensorboard.enabled", K_BOOL, 0, 0, NULL, 0},
    {"tensorboard.output_path", K_TEXT, 0, 0, NULL, 0},
    {"tensorboard.job_name", K_STRING, 0, 0, NULL, 0},
    {"csv_monitor", K_SECTION, 0, 0, NULL, 0},
    {"csv_monitor.enabled", K_BOOL, 0, 0, NULL, 0},
    {"csv_monitor.output_path", K_TEXT, 0, 0, NULL, 0},
    {"csv_monitor.job_name", K_STRING, 0, 0, NULL, 0},
    {"wandb", K_SECTION, 0, 0, NULL, 0},
    {"wandb.enabled", K_BOOL, 0, 0, NULL, 0},
    {"wandb.project", K_STRING, 0, 0, NULL, 0},
    {"wandb.team", K_STRING, 0, 0, NULL, 0},
    {"wandb.group", K_STRING, 0, 0, NULL, 0},
    {"comet", K_ANY, 0, 0, NULL, 0},
    {"comms_logger", K_ANY, 0, 0, NULL, 0},
    {"activation_checkpointing", K_ANY, 0, 0, NULL, 0},
    {"aio", K_ANY, 0, 0, NULL, 0},
    {"checkpoint", K_ANY, 0, 0, NULL, 0},
    {"timers", K_ANY, 0, 0, NULL, 0},
};
#define N_KEYS (sizeof k_keys / sizeof k_keys[0])

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

/* "unknown key 'x'; did you mean 'y'?" — the suggestion prefers keys of the same section. */
static int unknown_key(const char *path, const char *source) {
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

static int is_auto(const cJSON *v) { return cJSON_IsString(v) && strcmp(v->valuestring, "auto") == 0; }

static int type_error(const char *source, const char *path, const cJSON *v, const char *allowed) {
    char *t = value_text(v);
    zg_errorf("%s: key '%s' has value %s; allowed: %s", source, path, t, allowed);
    free(t);
    return -1;
}

static int check_enum(const key_spec *k, const char *s) {
    size_t n = strlen(s);
    for (const char *c = k->choices; c && *c;) {
        const char *bar = strchr(c, '|');
        size_t len = bar ? (size_t)(bar - c) : strlen(c);
        if (len == n && strncmp(c, s, n) == 0) return 1;
        c = bar ? bar + 1 : c + len;
    }
    return 0;
}

static int validate_value(const key_spec *k, const cJSON *v, const char *source) {
    char allowed[256];
    if (k->auto_ok && is_auto(v)) return 0;
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
        if (k->auto_ok) strncat(allowed, " or \"auto\"", sizeof allowed - strlen(allowed) - 1);
        return type_error(source, k->path, v, allowed);
    }
    case K_BOOL:
        if (cJSON_IsBool(v)) return 0;
        if (k->choices && cJSON_IsString(v) && check_enum(k, v->valuestring)) return 0;
        if (k->choices) {
            snprintf(allowed, sizeof allowed, "true, false or one of %s", k->choices);
            return type_error(source, k->path, v, allowed);
        }
        return type_error(source, k->path, v, k->auto_ok ? "true, false or \"auto\"" : "true or false");
    case K_STRING:
        if (cJSON_IsString(v) && v->valuestring[0]) return 0;
        return type_error(source, k->path, v, "a non-empty string");
    case K_TEXT:
        if (cJSON_IsString(v)) return 0;
        return type_error(source, k->path, v, "a string");
    case K_ENUM:
        if (cJSON_IsString(v) && check_enum(k, v->valuestring)) return 0;
        snprintf(allowed, sizeof allowed, "one of %s", k->choices);
        return type_error(source, k->path, v, allowed);
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
                if (!cJSON_IsObject(e)) return type_error(source, k->path, e, "a path or {\"path\": ..., \"weight\": ...}");
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
    case K_ANY: return 0;
    }
    return 0;
}

/* Walks an object: every key must be in the table (sections are walked recursively). */
static int validate_tree(const cJSON *obj, const char *prefix, const char *source) {
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        char path[256];
        if (!it->string) return zg_errorf("%s: malformed object", source);
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        for (const cJSON *o = it->next; o; o = o->next)
            if (o->string && strcmp(o->string, it->string) == 0)
                return zg_errorf("%s: key '%s' appears twice; keep one", source, path);
        const key_spec *k = find_key(path);
        if (!k) return unknown_key(path, source);
        if (validate_value(k, it, source) != 0) return -1;
        if (k->type == K_SECTION && validate_tree(it, path, source) != 0) return -1;
    }
    return 0;
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

/* Adds src's keys into dst; a key in both must agree (sections are merged key by key). */
static int merge_into(cJSON *dst, const cJSON *src, const char *prefix, const char *a_name, const char *b_name) {
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
            if (merge_into(have, it, path, a_name, b_name) != 0) return -1;
            continue;
        }
        if (!cJSON_Compare(have, it, 1)) {
            char *x = value_text(have), *y = value_text(it);
            zg_errorf("key '%s' is %s in '%s' but %s in '%s'; make them agree or remove one", path, x, a_name, y,
                      b_name);
            free(x);
            free(y);
            return -1;
        }
    }
    return 0;
}

/* --set key.path=value: the value is parsed by the key's type. */
static int apply_set(cJSON *root, const char *set) {
    const char *eq = strchr(set, '=');
    if (!eq || eq == set) return zg_errorf("--set '%s': expected key.path=value", set);
    char path[256];
    size_t plen = (size_t)(eq - set);
    if (plen >= sizeof path) return zg_errorf("--set '%s': key too long", set);
    memcpy(path, set, plen);
    path[plen] = '\0';
    const char *val = eq + 1;
    const key_spec *k = find_key(path);
    if (!k) return unknown_key(path, "--set");
    cJSON *v = NULL;
    char what[300];
    snprintf(what, sizeof what, "--set %s", path);
    if (k->auto_ok && strcmp(val, "auto") == 0) {
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
        case K_BOOL: {
            int b;
            if (k->choices && check_enum(k, val)) {
                v = cJSON_CreateString(val);
                break;
            }
            if (zg_parse_bool(val, what, &b) != 0) return -1;
            v = cJSON_CreateBool(b);
            break;
        }
        case K_STRING:
        case K_TEXT:
        case K_ENUM: v = cJSON_CreateString(val); break;
        case K_DATA:
            v = (val[0] == '[' || val[0] == '{') ? cJSON_Parse(val) : cJSON_CreateString(val);
            break;
        default: v = cJSON_Parse(val); break;
        }
    }
    if (!v) return zg_errorf("--set %s: cannot parse value '%s' (a JSON value is expected for this key)", path, val);
    /* walk/create the sections */
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
            cJSON_Delete(v);
            return zg_errorf("--set %s: '%s' is not an object in the config", set, p);
        }
        *dot = '.';
        obj = child;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, p))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, p, v);
    else
        cJSON_AddItemToObject(obj, p, v);
    return 0;
}

/* ---- extraction ----------------------------------------------------------------------------- */

static const cJSON *get(const cJSON *root, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *obj = root;
    char *p = buf;
    for (char *dot; (dot = strchr(p, '.')) != NULL; p = dot + 1) {
        *dot = '\0';
        obj = cJSON_GetObjectItemCaseSensitive(obj, p);
        if (!obj) return NULL;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, p);
    if (v && is_auto(v)) return NULL; /* "auto" = not given: derived below */
    return v;
}

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

/* nanoGPT alias and DeepSpeed key: both may be given only with the same value. */
static int alias_num(const cJSON *root, const char *alias, const char *canon, double def, double *out,
                     const char *source) {
    const cJSON *a = get(root, alias), *c = get(root, canon);
    if (a && c && a->valuedouble != c->valuedouble)
        return zg_errorf("%s: '%s' (%g) and '%s' (%g) set the same thing to different values; keep one", source,
                         alias, a->valuedouble, canon, c->valuedouble);
    *out = c ? c->valuedouble : a ? a->valuedouble : def;
    return 0;
}

static int extract(zg_train_config *cfg, const cJSON *root, const char *source) {
    cfg->init_from = zg_strdup(get_str(root, "init_from", "scratch"));
    cfg->n_layer = (int)get_int(root, "n_layer", 0);
    cfg->n_head = (int)get_int(root, "n_head", 0);
    cfg->n_embd = (int)get_int(root, "n_embd", 0);
    cfg->block_size = (int)get_int(root, "block_size", 0);
    cfg->vocab_size = (int)get_int(root, "vocab_size", 0);
    cfg->recompute = get_bool(root, "recompute", 0);
    cfg->recompute_num_layers = (int)get_int(root, "recompute_num_layers", 0);
    {
        const cJSON *rl = get(root, "recompute_layernorm");
        cfg->recompute_layernorm = !rl || cJSON_IsFalse(rl)                          ? 0
                                   : cJSON_IsTrue(rl)                                 ? GPT2_RECOMPUTE_LAYERNORM
                                   : strcmp(rl->valuestring, "ln1") == 0 ? GPT2_RECOMPUTE_LN1
                                                                         : GPT2_RECOMPUTE_LN2;
    }
    cfg->memory_efficient_layernorm = get_bool(root, "memory_efficient_layernorm", 0);
    if (cfg->memory_efficient_layernorm && cfg->recompute_layernorm)
        return zg_errorf("%s: memory_efficient_layernorm and recompute_layernorm both save the LayerNorm "
                         "activations; set one of them (memory_efficient_layernorm costs no extra pass)",
                         source);
    if (get(root, "bias") && !get_bool(root, "bias", 1))
        return zg_errorf("%s: bias false is not supported: GPT-2 has biases (remove the key or set it to true)",
                         source);

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
    cfg->sample_mode = strcmp(get_str(root, "sample_mode", "random"), "epoch") == 0 ? ZG_SAMPLE_EPOCH : ZG_SAMPLE_RANDOM;

    cfg->out_dir = zg_strdup(get_str(root, "out_dir", "out"));
    cfg->max_iters = get_int(root, "max_iters", 5000);
    cfg->eval_interval = get_int(root, "eval_interval", 250);
    cfg->eval_iters = get_int(root, "eval_iters", 200);
    cfg->log_interval = get_int(root, "log_interval", 10);
    cfg->always_save_checkpoint = get_bool(root, "always_save_checkpoint", 1);
    cfg->save_checkpoints = get_bool(root, "save_checkpoints", 1);
    cfg->early_stopping_patience = get_int(root, "early_stopping_patience", 0);
    cfg->keep_last_k = get_int(root, "keep_last_k", 2);
    cfg->seed = (uint64_t)get_int(root, "seed", 1337);
    cfg->device = zg_strdup(get_str(root, "device", "auto"));
    cfg->steps_per_print = (int)get_int(root, "steps_per_print", 10);
    cfg->wall_clock_breakdown = get_bool(root, "wall_clock_breakdown", 0);
    cfg->comm_max_ctas = (int)get_int(root, "comm_max_ctas", -1);

    /* batch: nanoGPT's batch_size is the micro-batch */
    double mb = -1;
    if (alias_num(root, "batch_size", "train_micro_batch_size_per_gpu", -1, &mb, source) != 0) return -1;
    cfg->given_micro_batch = (int64_t)mb;
    cfg->given_train_batch_size = get_int(root, "train_batch_size", -1);
    cfg->given_grad_accum = get_int(root, "gradient_accumulation_steps", -1);

    /* optimizer: with a DeepSpeed optimizer section (it has a "type"), unspecified params and the
     * gradient clipping take DeepSpeed's/PyTorch's defaults (what DeepSpeed would use: betas
     * (0.9, 0.999), weight_decay 0.01, no clipping); without one, nanoGPT's (betas (0.9, 0.95),
     * weight_decay 0.1, grad_clip 1.0). */
    int ds_opt = get(root, "optimizer.type") != NULL;
    const char *otype = get_str(root, "optimizer.type", "AdamW");
    (void)otype; /* Adam and AdamW both run decoupled weight decay, as DeepSpeed's adam_w_mode default */
    cfg->adam_w_mode = get_bool(root, "optimizer.params.adam_w_mode", 1);
    if (!cfg->adam_w_mode)
        return zg_errorf("%s: optimizer.params.adam_w_mode false (L2-coupled Adam) is not supported; remove it to "
                         "use AdamW (decoupled weight decay)",
                         source);
    if (get_bool(root, "optimizer.params.amsgrad", 0))
        return zg_errorf("%s: optimizer.params.amsgrad true is not supported; remove it", source);
    if (!get_bool(root, "optimizer.params.bias_correction", 1))
        return zg_errorf("%s: optimizer.params.bias_correction false is not supported; remove it", source);
    if (alias_num(root, "learning_rate", "optimizer.params.lr", ds_opt ? 1e-3 : 6e-4, &cfg->lr, source) != 0) return -1;
    if (alias_num(root, "weight_decay", "optimizer.params.weight_decay", ds_opt ? 0.01 : 0.1, &cfg->weight_decay,
                  source) != 0)
        return -1;
    cfg->beta1 = 0.9;
    cfg->beta2 = ds_opt ? 0.999 : 0.95;
    const cJSON *betas = get(root, "optimizer.params.betas");
    const cJSON *b1 = get(root, "beta1"), *b2 = get(root, "beta2");
    if (betas) {
        double x = cJSON_GetArrayItem(betas, 0)->valuedouble, y = cJSON_GetArrayItem(betas, 1)->valuedouble;
        if ((b1 && b1->valuedouble != x) || (b2 && b2->valuedouble != y))
            return zg_errorf("%s: beta1/beta2 disagree with optimizer.params.betas [%g, %g]; keep one", source, x, y);
        cfg->beta1 = x;
        cfg->beta2 = y;
    } else {
        if (b1) cfg->beta1 = b1->valuedouble;
        if (b2) cfg->beta2 = b2->valuedouble;
    }
    cfg->eps = get_num(root, "optimizer.params.eps", 1e-8);
    if (alias_num(root, "grad_clip", "gradient_clipping", ds_opt ? 0.0 : 1.0, &cfg->grad_clip, source) != 0)
        return -1;

    /* scheduler */
    zg_schedule_config *s = &cfg->sched;
    zg_schedule_config_defaults(s);
    s->base_lr = cfg->lr;
    const char *stype = get_str(root, "scheduler.type", NULL);
    if (get(root, "scheduler") && !stype)
        return zg_errorf("%s: the scheduler section needs a \"type\" (WarmupLR, WarmupDecayLR or WarmupCosineLR)",
                         source);
    int decay_lr = get_bool(root, "decay_lr", 0);
    if (stype && decay_lr)
        return zg_errorf("%s: decay_lr (nanoGPT's cosine schedule) and a DeepSpeed scheduler section are both set; "
                         "keep one",
                         source);
    if (stype) {
        static const char *const params_of[3] = {
            "warmup_min_lr warmup_max_lr warmup_num_steps warmup_type last_batch_iteration",
            "warmup_min_lr warmup_max_lr warmup_num_steps warmup_type last_batch_iteration total_num_steps",
            "warmup_min_ratio warmup_num_steps warmup_type last_batch_iteration total_num_steps cos_min_ratio"};
        int ti = strcmp(stype, "WarmupLR") == 0 ? 0 : strcmp(stype, "WarmupDecayLR") == 0 ? 1 : 2;
        s->type = ti == 0 ? ZG_SCHED_WARMUP_LR : ti == 1 ? ZG_SCHED_WARMUP_DECAY_LR : ZG_SCHED_WARMUP_COSINE_LR;
        const cJSON *params = get(root, "scheduler.params"), *p;
        if (params) {
            cJSON_ArrayForEach(p, params) {
                const char *hit = strstr(params_of[ti], p->string);
                size_t n = strlen(p->string);
                if (!hit || (hit[n] != ' ' && hit[n] != '\0'))
                    return zg_errorf("%s: scheduler.params.%s is not a parameter of %s (its parameters: %s)", source,
                                     p->string, stype, params_of[ti]);
            }
        }
        s->warmup_min_lr = get_num(root, "scheduler.params.warmup_min_lr", 0.0);
        s->warmup_max_lr = get_num(root, "scheduler.params.warmup_max_lr", ti == 2 ? cfg->lr : 0.001);
        if (!get(root, "scheduler.params.warmup_max_lr") && (get(root, "learning_rate") || get(root, "optimizer.params.lr")))
            s->warmup_max_lr = cfg->lr; /* "auto" or absent: the configured lr is the peak */
        s->warmup_num_steps = get_int(root, "scheduler.params.warmup_num_steps", 1000);
        s->warmup_linear = strcmp(get_str(root, "scheduler.params.warmup_type", "log"), "linear") == 0;
        s->total_num_steps = get_int(root, "scheduler.params.total_num_steps", cfg->max_iters);
        s->warmup_min_ratio = get_num(root, "scheduler.params.warmup_min_ratio", 0.0);
        s->cos_min_ratio = get_num(root, "scheduler.params.cos_min_ratio", 0.0001);
        if (s->warmup_max_lr < s->warmup_min_lr)
            return zg_errorf("%s: scheduler.params.warmup_max_lr (%g) is below warmup_min_lr (%g)", source,
                             s->warmup_max_lr, s->warmup_min_lr);
    } else if (decay_lr) {
        s->type = ZG_SCHED_NANOGPT_COSINE;
        s->warmup_iters = get_int(root, "warmup_iters", 2000);
        s->lr_decay_iters = get_int(root, "lr_decay_iters", cfg->max_iters);
        s->min_lr = get_num(root, "min_lr", cfg->lr / 10.0);
    } else {
        static const char *const nano_keys[] = {"warmup_iters", "lr_decay_iters", "min_lr"};
        for (size_t i = 0; i < 3; i++)
            if (get(root, nano_keys[i]))
                return zg_errorf("%s: '%s' only applies with \"decay_lr\": true (nanoGPT's cosine schedule); add "
                                 "decay_lr or remove it",
                                 source, nano_keys[i]);
    }
    if (zg_schedule_validate(s) != 0) return zg_error_prefix("%s", source);

    /* precision */
    const char *dt = get_str(root, "dtype", "auto");
    cfg->dtype = strcmp(dt, "auto") == 0                                    ? ZG_PREC_AUTO
                 : (strcmp(dt, "fp32") == 0 || strcmp(dt, "float32") == 0) ? ZG_PREC_FP32
                 : (strcmp(dt, "bf16") == 0 || strcmp(dt, "bfloat16") == 0) ? ZG_PREC_BF16
                                                                             : ZG_PREC_FP16;
    cfg->fp16_enabled = get_bool(root, "fp16.enabled", 0);
    cfg->bf16_enabled = get_bool(root, "bf16.enabled", 0);
    if (cfg->fp16_enabled && cfg->bf16_enabled)
        return zg_errorf("%s: fp16.enabled and bf16.enabled are both true; enable one", source);
    if ((cfg->fp16_enabled && cfg->dtype != ZG_PREC_AUTO && cfg->dtype != ZG_PREC_FP16) ||
        (cfg->bf16_enabled && cfg->dtype != ZG_PREC_AUTO && cfg->dtype != ZG_PREC_BF16))
        return zg_errorf("%s: dtype '%s' contradicts %s.enabled true; make them agree or remove dtype", source, dt,
                         cfg->fp16_enabled ? "fp16" : "bf16");
    if (cfg->dtype == ZG_PREC_FP16) cfg->fp16_enabled = 1;
    zg_loss_scaler_config *ls = &cfg->scaler;
    zg_loss_scaler_config_defaults(ls);
    ls->enabled = cfg->fp16_enabled;
    ls->loss_scale = get_num(root, "fp16.loss_scale", ls->loss_scale);
    ls->initial_scale_power = (int)get_int(root, "fp16.initial_scale_power", ls->initial_scale_power);
    ls->loss_scale_window = get_int(root, "fp16.loss_scale_window", ls->loss_scale_window);
    ls->hysteresis = (int)get_int(root, "fp16.hysteresis", ls->hysteresis);
    ls->consecutive_hysteresis = get_bool(root, "fp16.consecutive_hysteresis", 0);
    ls->min_loss_scale = get_num(root, "fp16.min_loss_scale", ls->min_loss_scale);
    if (zg_loss_scaler_config_validate(ls) != 0) return zg_error_prefix("%s", source);

    zg_zero_config *z = &cfg->zero;
    z->stage = (int)get_int(root, "zero_optimization.stage", 0);
    z->overlap_comm = get_bool(root, "zero_optimization.overlap_comm", -1);
    z->contiguous_gradients = get_bool(root, "zero_optimization.contiguous_gradients", -1);
    z->reduce_scatter = get_bool(root, "zero_optimization.reduce_scatter", -1);
    z->allgather_partitions = get_bool(root, "zero_optimization.allgather_partitions", -1);
    z->reduce_bucket_size = get_int(root, "zero_optimization.reduce_bucket_size", -1);
    z->allgather_bucket_size = get_int(root, "zero_optimization.allgather_bucket_size", -1);
    z->stage3_prefetch_bucket_size = get_int(root, "zero_optimization.stage3_prefetch_bucket_size", -1);
    z->stage3_param_persistence_threshold = get_int(root, "zero_optimization.stage3_param_persistence_threshold", -1);
    z->stage3_max_live_parameters = get_int(root, "zero_optimization.stage3_max_live_parameters", -1);
    z->stage3_max_reuse_distance = get_int(root, "zero_optimization.stage3_max_reuse_distance", -1);

    /* monitors: DeepSpeed's defaults (output_path "" = the current folder, job_name DeepSpeedJobName) */
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
    const char *team = get_str(root, "wandb.team", NULL); /* wandb.group: `wandb sync` has no such option */
    const char *run = get_str(root, "wandb_run_name", NULL);
    mo->wandb_project = proj ? zg_strdup(proj) : NULL;
    mo->wandb_team = team ? zg_strdup(team) : NULL;
    mo->wandb_run_name = run ? zg_strdup(run) : NULL;
    return 0;
}

void zg_train_config_free(zg_train_config *cfg) {
    free(cfg->init_from);
    for (int i = 0; i < cfg->n_data; i++) free((char *)cfg->data[i].path);
    free(cfg->data);
    free(cfg->out_dir);
    free(cfg->device);
    free(cfg->json_text);
    zg_monitor_config_free(&cfg->monitor);
    memset(cfg, 0, sizeof *cfg);
}

static int finish(zg_train_config *cfg, cJSON *root, const char *source) {
    memset(cfg, 0, sizeof *cfg);
    int rc = validate_tree(root, "", source);
    if (rc == 0) rc = extract(cfg, root, source);
    if (rc == 0) {
        cfg->json_text = cJSON_PrintUnformatted(root);
        ZG_CHECK_PTR(cfg->json_text);
        rc = zg_train_config_resolve_batch(cfg, 1);
        if (rc != 0) zg_error_prefix("%s", source);
    }
    if (rc != 0) zg_train_config_free(cfg);
    return rc;
}

int zg_train_config_load(zg_train_config *cfg, const char *path, const char *ds_path, const char *const *sets,
                         int n_sets) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = parse_json_file(path, "config");
    if (!root) return -1;
    char source[512];
    snprintf(source, sizeof source, "config '%s'", path);
    if (ds_path) {
        cJSON *ds = parse_json_file(ds_path, "DeepSpeed config");
        if (!ds) {
            cJSON_Delete(root);
            return -1;
        }
        char dsrc[512];
        snprintf(dsrc, sizeof dsrc, "DeepSpeed config '%s'", ds_path);
        /* validate each file on its own first, so an error names the file that holds the key */
        int rc = validate_tree(root, "", source);
        if (rc == 0) rc = validate_tree(ds, "", dsrc);
        if (rc == 0) rc = merge_into(root, ds, "", path, ds_path);
        cJSON_Delete(ds);
        if (rc != 0) {
            cJSON_Delete(root);
            return -1;
        }
        snprintf(source, sizeof source, "config '%s' + '%s'", path, ds_path);
    }
    for (int i = 0; i < n_sets; i++) {
        if (apply_set(root, sets[i]) != 0) {
            cJSON_Delete(root);
            return -1;
        }
    }
    int rc = finish(cfg, root, source);
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
    int rc = finish(cfg, root, name);
    cJSON_Delete(root);
    return rc;
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
