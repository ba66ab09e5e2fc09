/* From the validated tree to zg_train_config: the table's fields, then what depends on several keys
 * (batch, optimizer, schedule, precision, offload, activation checkpointing, monitors). */
#include "train/config_internal.h"

#include "core/error.h"
#include "model/gpt2.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- from the tree to the struct ------------------------------------------------------------ */

static void auto_note(load_state *ls, const cJSON *root, const char *path, const char *fmt, ...) ZG_PRINTF(4, 5);
/* "auto: KEY = VALUE (SOURCE)" when the key was written "auto". */
static void auto_note(load_state *ls, const cJSON *root, const char *path, const char *fmt, ...) {
    if (!config_given_auto(root, path)) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    config_note(ls, "auto: %s = %s", path, buf);
}

/* Every key with a field: its value, or the table default ("auto" takes the default too). */
void config_fill_fields(zg_train_config *cfg, const cJSON *root, load_state *ls) {
    size_t n_keys;
    const key_spec *keys = config_key_table(&n_keys);
    for (size_t i = 0; i < n_keys; i++) {
        const key_spec *k = &keys[i];
        if (k->fk == FK_NONE) continue;
        const cJSON *v = config_get(root, k->path);
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
        case FK_ENUM: *(int *)dst = v ? config_enum_index(k, v->valuestring) : (int)k->def; break;
        }
        if (k->fk == FK_STR || k->fk == FK_ENUM)
            auto_note(ls, root, k->path, "%s (zgpt's default)", k->sdef ? k->sdef : "its default");
        else if (k->def < 0)
            auto_note(ls, root, k->path, "zgpt's default (its engine decides; docs/DISTRIBUTED.md)");
        else
            auto_note(ls, root, k->path, "%g (zgpt's default)", k->def);
    }
}

/* A nanoGPT key and its DeepSpeed counterpart: both may be given only with the same value. The
 * DeepSpeed key's "auto" takes the nanoGPT key's value or `def_nano` (the Trainer-argument
 * default); absent, it is def_ds (DeepSpeed's default) when `ds` (its section is DeepSpeed's). */
static double alias_num(const cJSON *root, const char *alias, const char *canon, double def_nano, double def_ds, int ds,
                        const char *source, load_state *ls) {
    const cJSON *a = config_get(root, alias), *c = config_get(root, canon);
    if (a && c && a->valuedouble != c->valuedouble)
        config_problem(ls, "%s: '%s' (%g) and '%s' (%g) set the same thing to different values; keep one", source,
                       alias, a->valuedouble, canon, c->valuedouble);
    int is_a = config_given_auto(root, canon);
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
    const cJSON *params = config_get(root, path), *p;
    if (!params) return;
    cJSON_ArrayForEach(p, params) {
        if (!word_in(allowed, p->string))
            config_problem(ls, "%s: %s.params.%s is not a parameter of %s (its parameters: %s)", source, section,
                           p->string, type, allowed);
    }
}

static void derive_optimizer(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    /* without a "type" the section only sets params (AdamW, nanoGPT's defaults for the others) */
    const cJSON *ot = config_get(root, "optimizer.type");
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
            config_problem(ls, "optimizer.type '%s' is not supported by zgpt; use Adam, AdamW or Lamb", t);
        }
    }
    if (!cfg->adam_w_mode)
        config_problem(
            ls,
            "%s: optimizer.params.adam_w_mode false (L2-coupled Adam) is not supported; remove it to use AdamW "
            "(decoupled weight decay)",
            source);
    if (config_get_bool(root, "optimizer.params.amsgrad", 0))
        config_problem(ls, "%s: optimizer.params.amsgrad true is not supported; remove it", source);
    if (config_get_num(root, "optimizer.params.max_grad_norm", 0) > 0)
        config_problem(
            ls,
            "%s: optimizer.params.max_grad_norm is not an optimizer parameter in DeepSpeed either; clip with "
            "the top-level \"gradient_clipping\"",
            source);
    if (cfg->optim == ZG_OPTIMIZER_LAMB && cfg->max_coeff < cfg->min_coeff)
        config_problem(ls, "%s: optimizer.params.max_coeff (%g) is below min_coeff (%g)", source, cfg->max_coeff,
                       cfg->min_coeff);

    /* "auto" takes the nanoGPT key (the Trainer argument) or nanoGPT's default; absent params in a
     * DeepSpeed section take DeepSpeed's defaults (FusedAdam/FusedLamb: lr 1e-3, betas (0.9, 0.999),
     * weight_decay 0). gradient_clipping's default is DeepSpeed's (1.0) either way. */
    cfg->lr = alias_num(root, "learning_rate", "optimizer.params.lr", 6e-4, 1e-3, ds_opt, source, ls);
    cfg->weight_decay = alias_num(root, "weight_decay", "optimizer.params.weight_decay", 0.1, 0.0, ds_opt, source, ls);
    cfg->grad_clip = alias_num(root, "grad_clip", "gradient_clipping", 1.0, 1.0, 1, source, ls);
    cfg->eps = config_get_num(root, "optimizer.params.eps", 1e-8);
    auto_note(ls, root, "optimizer.params.eps", "%g (zgpt's default)", cfg->eps);
    const cJSON *betas = config_get(root, "optimizer.params.betas");
    const cJSON *b1 = config_get(root, "beta1"), *b2 = config_get(root, "beta2");
    int nano_betas = !ds_opt || config_given_auto(root, "optimizer.params.betas");
    cfg->beta1 = b1 ? b1->valuedouble : 0.9;
    cfg->beta2 = b2 ? b2->valuedouble : nano_betas ? 0.95 : 0.999;
    if (betas) {
        double x = cJSON_GetArrayItem(betas, 0)->valuedouble, y = cJSON_GetArrayItem(betas, 1)->valuedouble;
        if ((b1 && b1->valuedouble != x) || (b2 && b2->valuedouble != y))
            config_problem(ls, "%s: beta1/beta2 disagree with optimizer.params.betas [%g, %g]; keep one", source, x, y);
        cfg->beta1 = x;
        cfg->beta2 = y;
    }
    auto_note(ls, root, "optimizer.params.betas", "[%g, %g] (from beta1/beta2 or their defaults)", cfg->beta1,
              cfg->beta2);
}

static void derive_schedule(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    zg_schedule_config *s = &cfg->sched;
    s->base_lr = cfg->lr;
    const cJSON *st = config_get(root, "scheduler.type");
    const char *stype = st ? st->valuestring : NULL;
    if (config_get(root, "scheduler") && !stype)
        config_problem(
            ls, "%s: the scheduler section needs a \"type\" (WarmupLR, WarmupDecayLR, WarmupCosineLR or OneCycle)",
            source);
    int decay_lr = config_get_bool(root, "decay_lr", 0);
    if (stype && decay_lr)
        config_problem(
            ls, "%s: decay_lr (nanoGPT's cosine schedule) and a DeepSpeed scheduler section are both set; keep one",
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
        config_problem(ls,
                       "scheduler.type '%s' is not supported by zgpt; use WarmupLR, WarmupDecayLR, "
                       "WarmupCosineLR or OneCycle",
                       stype);
    int uses_warmup_iters = 0, uses_decay_iters = 0;
    if (ti >= 0) {
        s->type = types[ti];
        check_params(root, "scheduler", names[ti], params_of[ti], source, ls);
        s->warmup_min_lr = config_get_num(root, "scheduler.params.warmup_min_lr", 0.0);
        auto_note(ls, root, "scheduler.params.warmup_min_lr", "0 (as the Hugging Face Trainer sets it)");
        s->warmup_max_lr = config_get_num(root, "scheduler.params.warmup_max_lr", cfg->lr);
        auto_note(ls, root, "scheduler.params.warmup_max_lr", "%g (the optimizer's lr)", cfg->lr);
        const cJSON *wi = config_get(root, "warmup_iters");
        if (config_given_auto(root, "scheduler.params.warmup_num_steps")) {
            uses_warmup_iters = 1;
            s->warmup_num_steps = wi ? (int64_t)wi->valuedouble : 2000;
            auto_note(ls, root, "scheduler.params.warmup_num_steps", "%lld (%s)", (long long)s->warmup_num_steps,
                      wi ? "from warmup_iters" : "warmup_iters' default");
        } else {
            s->warmup_num_steps = config_get_int(root, "scheduler.params.warmup_num_steps", 1000);
        }
        s->warmup_linear = strcmp(config_get_str(root, "scheduler.params.warmup_type", "log"), "linear") == 0;
        const cJSON *ld = config_get(root, "lr_decay_iters");
        uses_decay_iters = config_given_auto(root, "scheduler.params.total_num_steps");
        s->total_num_steps =
            config_get_int(root, "scheduler.params.total_num_steps", ld ? (int64_t)ld->valuedouble : cfg->max_iters);
        auto_note(ls, root, "scheduler.params.total_num_steps", "%lld (%s)", (long long)s->total_num_steps,
                  ld ? "from lr_decay_iters" : "from max_iters");
        if (s->type == ZG_SCHED_WARMUP_DECAY_LR && s->total_num_steps < s->warmup_num_steps)
            config_note(
                ls,
                "note: WarmupDecayLR's total_num_steps (%lld) is below its warmup_num_steps (%lld): the lr never "
                "decays (DeepSpeed warns too)",
                (long long)s->total_num_steps, (long long)s->warmup_num_steps);
        if (s->type == ZG_SCHED_ONE_CYCLE) {
            if (!config_get(root, "scheduler.params.cycle_min_lr") ||
                !config_get(root, "scheduler.params.cycle_max_lr"))
                config_problem(ls,
                               "%s: OneCycle needs scheduler.params.cycle_min_lr and cycle_max_lr (DeepSpeed requires "
                               "them too)",
                               source);
            if (s->cycle_momentum)
                config_note(
                    ls,
                    "note: OneCycle cycles beta1 between cycle_max_mom %g and cycle_min_mom %g and sets beta2 to "
                    "0.99, as DeepSpeed does",
                    s->cycle_max_mom, s->cycle_min_mom);
        }
        if (s->warmup_max_lr < s->warmup_min_lr)
            config_problem(ls, "%s: scheduler.params.warmup_max_lr (%g) is below warmup_min_lr (%g)", source,
                           s->warmup_max_lr, s->warmup_min_lr);
    } else if (decay_lr) {
        s->type = ZG_SCHED_NANOGPT_COSINE;
        s->warmup_iters = config_get_int(root, "warmup_iters", 2000);
        s->lr_decay_iters = config_get_int(root, "lr_decay_iters", cfg->max_iters);
        s->min_lr = config_get_num(root, "min_lr", cfg->lr / 10.0);
    }
    if (!decay_lr) {
        static const char *const nano_keys[] = {"warmup_iters", "lr_decay_iters", "min_lr"};
        int used[3] = {uses_warmup_iters, uses_decay_iters, 0};
        for (size_t i = 0; i < 3; i++)
            if (config_get(root, nano_keys[i]) && !used[i])
                config_problem(ls,
                               "%s: '%s' only applies with \"decay_lr\": true (nanoGPT's cosine schedule) or to a "
                               "scheduler value written \"auto\"; add decay_lr or remove it",
                               source, nano_keys[i]);
    }
    if (zg_schedule_validate(s) != 0) {
        zg_error_prefix("%s", source);
        config_collect(ls);
    }
}

/* DeepSpeed's data_types.param_dtype (NULL when absent) and the precision it names in *p (ZG_PREC_AUTO: int8,
 * which zgpt does not train in). */
static const char *param_dtype(const cJSON *root, zg_precision *p) {
    static const zg_precision by_dtype[] = {ZG_PREC_FP16, ZG_PREC_FP16, ZG_PREC_FP16, ZG_PREC_FP16, ZG_PREC_FP32,
                                            ZG_PREC_FP32, ZG_PREC_FP32, ZG_PREC_FP32, ZG_PREC_BF16, ZG_PREC_BF16,
                                            ZG_PREC_BF16, ZG_PREC_AUTO, ZG_PREC_AUTO}; /* DTYPE_NAMES' order */
    const char *pd = config_get_str(root, "data_types.param_dtype", NULL);
    *p = pd ? by_dtype[config_enum_index(config_find_key("data_types.param_dtype"), pd)] : ZG_PREC_AUTO;
    return pd;
}

/* data_types.param_dtype is the dtype DeepSpeed casts the parameters to, and it asserts that this is the
 * precision's (fp16 / bf16 when enabled, else fp32). Where zgpt's precision is still open (dtype auto, no
 * fp16/bf16 enabled) it fixes it: with fp16/bf16.enabled "auto" (the Trainer's flag decides it, and DeepSpeed
 * needs them to agree), or to fp32, DeepSpeed's model dtype without either. The precision it fixes, or
 * ZG_PREC_AUTO (none, or refused). */
static zg_precision param_dtype_fixes(const zg_train_config *cfg, const cJSON *root, const char *source,
                                      load_state *ls) {
    zg_precision want;
    const char *pd = param_dtype(root, &want);
    if (!pd) return ZG_PREC_AUTO;
    if (want == ZG_PREC_AUTO) {
        config_problem(ls,
                       "%s: data_types.param_dtype '%s' is not supported by zgpt (it trains in fp32, bf16 or fp16); "
                       "remove it",
                       source, pd);
        return ZG_PREC_AUTO;
    }
    if (cfg->dtype != ZG_PREC_AUTO || config_get_bool(root, "fp16.enabled", 0) ||
        config_get_bool(root, "bf16.enabled", 0))
        return ZG_PREC_AUTO; /* fixed otherwise: derive_precision checks that they agree */
    int flag_auto = config_given_auto(root, "fp16.enabled") || config_given_auto(root, "bf16.enabled");
    if (!flag_auto && want != ZG_PREC_FP32) {
        config_problem(ls,
                       "%s: data_types.param_dtype '%s' needs %s.enabled true (without it DeepSpeed's model is fp32 "
                       "and DeepSpeed refuses the key too); enable it or remove param_dtype",
                       source, pd, want == ZG_PREC_FP16 ? "fp16" : "bf16");
        return ZG_PREC_AUTO;
    }
    config_note(ls,
                "note: data_types.param_dtype '%s' sets the precision to %s (dtype auto would pick bf16 on CUDA, "
                "fp32 on the CPU)",
                pd, zg_precision_name(want));
    return want;
}

static void derive_precision(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    static const zg_precision by_name[] = {ZG_PREC_AUTO, ZG_PREC_FP32, ZG_PREC_FP32, ZG_PREC_BF16,
                                           ZG_PREC_BF16, ZG_PREC_FP16, ZG_PREC_FP16};
    const char *dt = config_get_str(root, "dtype", "auto");
    cfg->dtype = by_name[config_enum_index(config_find_key("dtype"), dt)];
    char from[96];
    snprintf(from, sizeof from, "dtype '%s'", dt);
    zg_precision fixed = param_dtype_fixes(cfg, root, source, ls);
    if (fixed != ZG_PREC_AUTO) {
        cfg->dtype = fixed;
        snprintf(from, sizeof from, "data_types.param_dtype '%s'", config_get_str(root, "data_types.param_dtype", ""));
    }
    cfg->fp16_enabled = config_get_bool(root, "fp16.enabled", cfg->dtype == ZG_PREC_FP16);
    cfg->bf16_enabled = config_get_bool(root, "bf16.enabled", 0);
    auto_note(ls, root, "fp16.enabled", "%s (from %s)", cfg->fp16_enabled ? "true" : "false", from);
    if (cfg->dtype == ZG_PREC_AUTO)
        auto_note(ls, root, "bf16.enabled", "auto (dtype auto: bf16 on CUDA, fp32 on the CPU)");
    else
        auto_note(ls, root, "bf16.enabled", "%s (from %s)", cfg->dtype == ZG_PREC_BF16 ? "true" : "false", from);
    zg_precision have = cfg->fp16_enabled ? ZG_PREC_FP16 : cfg->bf16_enabled ? ZG_PREC_BF16 : cfg->dtype, want;
    const char *pd = param_dtype(root, &want);
    if (cfg->fp16_enabled && cfg->bf16_enabled)
        config_problem(ls, "%s: fp16.enabled and bf16.enabled are both true; enable one", source);
    else if ((cfg->fp16_enabled && cfg->dtype != ZG_PREC_AUTO && cfg->dtype != ZG_PREC_FP16) ||
             (cfg->bf16_enabled && cfg->dtype != ZG_PREC_AUTO && cfg->dtype != ZG_PREC_BF16))
        config_problem(ls, "%s: dtype '%s' contradicts %s.enabled true; make them agree or remove dtype", source, dt,
                       cfg->fp16_enabled ? "fp16" : "bf16");
    else if (pd && want != ZG_PREC_AUTO && have != ZG_PREC_AUTO && want != have)
        config_problem(ls,
                       "%s: data_types.param_dtype '%s' contradicts the precision %s (from %s); make them agree or "
                       "remove param_dtype (DeepSpeed refuses it too)",
                       source, pd, zg_precision_name(have),
                       cfg->fp16_enabled   ? "fp16.enabled"
                       : cfg->bf16_enabled ? "bf16.enabled"
                                           : "dtype");
    cfg->scaler.enabled = cfg->fp16_enabled;
    if (zg_loss_scaler_config_validate(&cfg->scaler) != 0) {
        zg_error_prefix("%s", source);
        config_collect(ls);
    }
}

/* ZeRO-Offload as asked for (with DeepSpeed's legacy switches). */
static zg_offload_device offload_device(const cJSON *root, const char *section, const char *legacy) {
    char path[128];
    snprintf(path, sizeof path, "zero_optimization.%s.device", section);
    const char *d = config_get_str(root, path, NULL);
    if (d) return strcmp(d, "cpu") == 0 ? ZG_OFFLOAD_CPU : strcmp(d, "nvme") == 0 ? ZG_OFFLOAD_NVME : ZG_OFFLOAD_NONE;
    snprintf(path, sizeof path, "zero_optimization.%s", legacy);
    return config_get_bool(root, path, 0) ? ZG_OFFLOAD_CPU : ZG_OFFLOAD_NONE;
}

static void derive_offload(zg_train_config *cfg, const cJSON *root, load_state *ls) {
    zg_zero_config *z = &cfg->zero;
    z->offload_optimizer = offload_device(root, "offload_optimizer", "cpu_offload");
    z->offload_param = offload_device(root, "offload_param", "cpu_offload_param");
    static const char *const dev_names[] = {"none", "cpu", "nvme"};
    auto_note(ls, root, "zero_optimization.offload_optimizer.device", "%s (%s)", dev_names[z->offload_optimizer],
              z->offload_optimizer ? "from cpu_offload" : "zgpt's default: no offload");
    auto_note(ls, root, "zero_optimization.offload_param.device", "%s (%s)", dev_names[z->offload_param],
              z->offload_param ? "from cpu_offload_param" : "zgpt's default: no offload");
    z->offload_param_pin_memory =
        config_get_bool(root, "zero_optimization.offload_param.pin_memory",
                        config_get_bool(root, "zero_optimization.cpu_offload_use_pin_memory", 0));
    z->offload_pin_memory = config_get_bool(root, "zero_optimization.offload_optimizer.pin_memory",
                                            config_get_bool(root, "zero_optimization.cpu_offload_use_pin_memory", 0));
    z->offload_dpu = config_get_bool(root, "zero_optimization.offload_optimizer.delayed_param_update", 0);
    z->offload_dpu_warmup = config_get_int(root, "zero_optimization.offload_optimizer.delayed_param_update_warmup", 0);
    if (z->offload_dpu && z->offload_optimizer != ZG_OFFLOAD_CPU)
        config_problem(ls,
                       "zero_optimization.offload_optimizer.delayed_param_update needs offload_optimizer \"device\": "
                       "\"cpu\"; set it, or remove delayed_param_update");
    if (z->offload_dpu && z->offload_param == ZG_OFFLOAD_CPU)
        config_problem(ls, "zero_optimization.offload_optimizer.delayed_param_update is not supported together with "
                           "offload_param (the delayed host step would rewrite the host parameters while the next step "
                           "uploads them); remove one of the two");
    if (z->offload_optimizer == ZG_OFFLOAD_NVME)
        config_problem(
            ls, "zero_optimization.offload_optimizer \"device\": \"nvme\" is not supported by zgpt; remove it or "
                "set \"device\": \"cpu\" or \"none\"");
    if (z->offload_param == ZG_OFFLOAD_NVME)
        config_problem(
            ls, "zero_optimization.offload_param \"device\": \"nvme\" is not supported by zgpt; remove it or set "
                "\"device\": \"none\"");
    if (z->offload_param == ZG_OFFLOAD_CPU && z->stage != 3)
        config_problem(
            ls,
            "zero_optimization.offload_param \"device\": \"cpu\" needs ZeRO stage 3 (zero_optimization.stage is "
            "%d; only stage 3 partitions the parameters); set zero_optimization.stage to 3, or remove the offload",
            z->stage < 0 ? 0 : z->stage);
    if (z->offload_optimizer == ZG_OFFLOAD_CPU && z->stage <= 0)
        config_problem(ls, "zero_optimization.offload_optimizer \"device\": \"cpu\" needs ZeRO stage 1, 2 or 3 "
                           "(zero_optimization.stage is 0); "
                           "set zero_optimization.stage, or remove the offload");
}

/* DeepSpeed's activation_checkpointing saves activation memory by recomputing; zgpt's way to the
 * same end is its recompute settings, which this section turns on unless the config sets them. */
static void derive_checkpointing(zg_train_config *cfg, const cJSON *root, load_state *ls) {
    if (!config_get(root, "activation_checkpointing")) return;
    if (!config_get(root, "recompute")) cfg->recompute = 1;
    if (!config_get(root, "recompute_layernorm") && !cfg->memory_efficient_layernorm)
        cfg->recompute_layernorm = GPT2_RECOMPUTE_LAYERNORM;
    const cJSON *nc = config_get(root, "activation_checkpointing.number_checkpoints");
    if (nc && !config_get(root, "recompute_num_layers")) cfg->recompute_num_layers = (int)nc->valuedouble;
    config_note(ls,
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
        sc->enabled = config_get_bool(root, key, 0);
        snprintf(key, sizeof key, "%s.output_path", sinks[i]);
        sc->output_path = zg_strdup(config_get_str(root, key, ""));
        snprintf(key, sizeof key, "%s.job_name", sinks[i]);
        sc->job_name = zg_strdup(config_get_str(root, key, ZG_MONITOR_DEFAULT_JOB));
    }
    mo->wandb = config_get_bool(root, "wandb.enabled", 0) || config_get_bool(root, "wandb_log", 0);
    const char *proj = config_get_str(root, "wandb.project", config_get_str(root, "wandb_project", NULL));
    const char *team = config_get_str(root, "wandb.team", NULL);
    const char *run = config_get_str(root, "wandb_run_name", NULL);
    mo->wandb_project = proj ? zg_strdup(proj) : NULL;
    mo->wandb_team = team ? zg_strdup(team) : NULL;
    mo->wandb_run_name = run ? zg_strdup(run) : NULL;
}

void config_derive(zg_train_config *cfg, const cJSON *root, const char *source, load_state *ls) {
    const cJSON *rl = config_get(root, "recompute_layernorm");
    cfg->recompute_layernorm = !rl || cJSON_IsFalse(rl)              ? 0
                               : cJSON_IsTrue(rl)                    ? GPT2_RECOMPUTE_LAYERNORM
                               : strcmp(rl->valuestring, "ln1") == 0 ? GPT2_RECOMPUTE_LN1
                                                                     : GPT2_RECOMPUTE_LN2;
    if (cfg->memory_efficient_layernorm && cfg->recompute_layernorm)
        config_problem(
            ls,
            "%s: memory_efficient_layernorm and recompute_layernorm both save the LayerNorm activations; set "
            "one of them (memory_efficient_layernorm costs no extra pass)",
            source);
    derive_checkpointing(cfg, root, ls);
    cfg->grad_accum_local_layers_given = config_get(root, "grad_accum_local_layers") != NULL;
    if (config_get(root, "bias") && !config_get_bool(root, "bias", 1))
        config_problem(ls, "%s: bias false is not supported: GPT-2 has biases (remove the key or set it to true)",
                       source);

    const cJSON *d = config_get(root, "data");
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
    cfg->given_train_batch_size = config_get_int(root, "train_batch_size", -1);
    cfg->given_grad_accum = config_get_int(root, "gradient_accumulation_steps", -1);
    if (config_given_auto(root, "train_micro_batch_size_per_gpu") && cfg->given_micro_batch < 0)
        config_note(
            ls, "auto: train_micro_batch_size_per_gpu = derived from train_batch_size and gradient_accumulation_steps "
                "(else 12, nanoGPT's batch_size)");
    if (config_given_auto(root, "gradient_accumulation_steps"))
        config_note(ls, "auto: gradient_accumulation_steps = derived from train_batch_size (else 1)");
    if (config_given_auto(root, "train_batch_size"))
        config_note(ls, "auto: train_batch_size = micro-batch x gradient_accumulation_steps x processes");

    derive_optimizer(cfg, root, source, ls);
    derive_schedule(cfg, root, source, ls);
    derive_precision(cfg, root, source, ls);
    derive_offload(cfg, root, ls);
    derive_monitor(cfg, root);
    config_check_sections(root, ls);
}
