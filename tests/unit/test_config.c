/* Training config: DeepSpeed + nanoGPT keys, merging, --set, validation messages, batch rules. */
#include "core/error.h"
#include "core/fileio.h"
#include "model/gpt2.h"
#include "train/config.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_dir;

static char *write_tmp(const char *name, const char *text) {
    char *p = zg_path_join(g_dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return p;
    fputs(text, f);
    fclose(f);
    return p;
}

static int load(zg_train_config *c, const char *main_json, const char *ds_json, const char *const *sets, int n) {
    char *a = write_tmp("a.json", main_json);
    char *b = ds_json ? write_tmp("ds.json", ds_json) : NULL;
    int rc = zg_train_config_load(c, a, b, sets, n);
    free(a);
    free(b);
    return rc;
}

static int has(const char *s) { return strstr(zg_error_message(), s) != NULL; }

/* Whether one of the config's notes contains s. */
static int noted(const zg_train_config *c, const char *s) {
    for (int i = 0; i < c->n_notes; i++)
        if (strstr(c->notes[i], s)) return 1;
    return 0;
}

/* The Hugging Face Trainer's style: everything the Trainer fills is "auto". */
static const char *const k_hf_auto =
    "{\"train_batch_size\": \"auto\", \"train_micro_batch_size_per_gpu\": \"auto\", "
    "\"gradient_accumulation_steps\": \"auto\", \"gradient_clipping\": \"auto\","
    "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": \"auto\", \"betas\": \"auto\", \"eps\": \"auto\","
    " \"weight_decay\": \"auto\"}},"
    "\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\": \"auto\", \"warmup_max_lr\": "
    "\"auto\","
    " \"warmup_num_steps\": \"auto\", \"total_num_steps\": \"auto\"}},"
    "\"fp16\": {\"enabled\": \"auto\"}, \"bf16\": {\"enabled\": \"auto\"},"
    "\"zero_optimization\": {\"stage\": 2, \"reduce_bucket_size\": \"auto\"}}";

static void test_auto(void) {
    zg_train_config c;
    /* "auto" takes the nanoGPT keys (the Trainer's arguments) ... */
    int rc = load(&c,
                  "{\"learning_rate\": 0.002, \"batch_size\": 4, \"grad_clip\": 0.5, \"beta2\": 0.98, "
                  "\"weight_decay\": 0.05, \"warmup_iters\": 7, \"lr_decay_iters\": 40, \"max_iters\": 50, "
                  "\"dtype\": \"fp16\"}",
                  k_hf_auto, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_NEAR(c.lr, 0.002, 0, 0);
        ZT_CHECK(c.micro_batch == 4 && c.grad_accum == 1);
        ZT_NEAR(c.grad_clip, 0.5, 0, 0);
        ZT_NEAR(c.beta1, 0.9, 0, 0);
        ZT_NEAR(c.beta2, 0.98, 0, 0);
        ZT_NEAR(c.weight_decay, 0.05, 0, 0);
        ZT_CHECK(c.sched.type == ZG_SCHED_WARMUP_DECAY_LR && c.sched.warmup_num_steps == 7 &&
                 c.sched.total_num_steps == 40);
        ZT_NEAR(c.sched.warmup_max_lr, 0.002, 0, 0);
        ZT_CHECK(c.fp16_enabled && zg_train_config_precision(&c, "cuda") == ZG_PREC_FP16);
        ZT_CHECK(c.zero.reduce_bucket_size == -1); /* the engine's default */
        /* ... and every resolved "auto" is reported with its source */
        ZT_CHECK(noted(&c, "auto: optimizer.params.lr = 0.002 (from learning_rate)"));
        ZT_CHECK(noted(&c, "auto: scheduler.params.warmup_num_steps = 7 (from warmup_iters)"));
        ZT_CHECK(noted(&c, "auto: scheduler.params.total_num_steps = 40 (from lr_decay_iters)"));
        ZT_CHECK(noted(&c, "auto: gradient_clipping = 0.5 (from grad_clip)"));
        ZT_CHECK(noted(&c, "auto: train_micro_batch_size_per_gpu = 4 (from batch_size)"));
        ZT_CHECK(noted(&c, "auto: fp16.enabled = true (from dtype 'fp16')"));
        zg_train_config_free(&c);
    }
    /* ... or their defaults: an all-"auto" optimizer keeps nanoGPT's beta2 0.95 (absent params take
     * DeepSpeed's defaults, 0.999) */
    rc = load(&c, "{\"max_iters\": 5000}", k_hf_auto, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_NEAR(c.beta2, 0.95, 0, 0);
        ZT_NEAR(c.lr, 6e-4, 0, 0);
        ZT_NEAR(c.weight_decay, 0.1, 0, 0);
        ZT_CHECK(c.micro_batch == 12 && c.grad_accum == 1);
        ZT_CHECK(c.sched.warmup_num_steps == 2000 && c.sched.total_num_steps == 5000);
        ZT_CHECK(noted(&c, "warmup_iters' default"));
        ZT_CHECK(noted(&c, "bf16.enabled = auto (dtype auto"));
        zg_train_config_free(&c);
    }
    rc = load(&c, "{\"optimizer\": {\"type\": \"AdamW\"}}", NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_NEAR(c.beta2, 0.999, 0, 0);
        ZT_NEAR(c.lr, 1e-3, 0, 0);
        ZT_NEAR(c.weight_decay, 0.0, 0, 0); /* FusedAdam's default */
        zg_train_config_free(&c);
    }
    /* an auto total below the warmup never decays: said at start */
    rc = load(&c, "{\"max_iters\": 20}", k_hf_auto, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(noted(&c, "never decays"));
        zg_train_config_free(&c);
    }
}

/* A key in both files: equal, or one of them "auto" (the other wins), or --set gives it. */
static void test_conflicts_and_set(void) {
    zg_train_config c;
    ZT_CHECK(load(&c, "{\"gradient_accumulation_steps\": 1}", "{\"gradient_accumulation_steps\": 32}", NULL, 0) != 0);
    ZT_CHECK(has("gradient_accumulation_steps") && has("is 1 in") && has("but 32 in") && has("--set"));
    const char *set32[] = {"gradient_accumulation_steps=32"};
    int rc = load(&c, "{\"gradient_accumulation_steps\": 1}", "{\"gradient_accumulation_steps\": 32}", set32, 1);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.grad_accum == 32);
        zg_train_config_free(&c);
    }
    /* --set of a section wins over the files' keys inside it */
    const char *set_opt[] = {"optimizer={\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}}"};
    rc = load(&c, "{\"optimizer\": {\"params\": {\"lr\": 0.1}}}", "{\"optimizer\": {\"params\": {\"lr\": 0.2}}}",
              set_opt, 1);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_NEAR(c.lr, 0.01, 0, 0);
        zg_train_config_free(&c);
    }
    rc = load(&c, "{\"gradient_accumulation_steps\": 4}", "{\"gradient_accumulation_steps\": \"auto\"}", NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.grad_accum == 4);
        ZT_CHECK(noted(&c, "'gradient_accumulation_steps' is \"auto\" in") && noted(&c, "using 4 from"));
        zg_train_config_free(&c);
    }
    rc = load(&c, "{\"gradient_clipping\": \"auto\"}", "{\"gradient_clipping\": 0.25}", NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_NEAR(c.grad_clip, 0.25, 0, 0);
        zg_train_config_free(&c);
    }
}

/* Every problem of a load at once; suggestions from DeepSpeed's renames before edit distance. */
static void test_all_errors_and_suggestions(void) {
    zg_train_config c;
    ZT_CHECK(load(&c, "{\"max_iter\": 5, \"eval_iters\": 0, \"comm_overlap\": true}",
                  "{\"max_grad_norm\": 1.0, \"zero_optimization\": {\"comm_overlap\": true}}", NULL, 0) != 0);
    ZT_CHECK(has("5 problems"));
    ZT_CHECK(has("'max_iter'; did you mean 'max_iters'"));
    ZT_CHECK(has("eval_iters") && has(">= 1"));
    ZT_CHECK(has("'comm_overlap'; did you mean 'zero_optimization.overlap_comm'"));
    ZT_CHECK(has("'zero_optimization.comm_overlap'; did you mean 'zero_optimization.overlap_comm'"));
    ZT_CHECK(has("'max_grad_norm'; did you mean 'gradient_clipping'"));
    ZT_CHECK(load(&c, "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"max_grad_norm\": 1.0}}}", NULL, NULL, 0) !=
             0);
    ZT_CHECK(has("max_grad_norm") && has("gradient_clipping"));
    /* a bad --set and a bad file key together */
    const char *bad[] = {"max_iters=abc"};
    ZT_CHECK(load(&c, "{\"lerning_rate\": 1}", NULL, bad, 1) != 0);
    ZT_CHECK(has("2 problems") && has("abc") && has("'learning_rate'"));
}

static void test_names_and_spellings(void) {
    zg_train_config c;
    int rc = load(&c,
                  "{\"optimizer\": {\"type\": \"ADAMW\", \"params\": {\"lr\": 0.001, \"bias_correction\": false}},"
                  "\"scheduler\": {\"type\": \"warmuplr\", \"params\": {\"warmup_num_steps\": 10}},"
                  "\"bfloat16\": {\"enabled\": true, \"immediate_grad_update\": true},"
                  "\"zero_optimization\": {\"stage\": 3, \"max_live_parameters\": 1e9, \"max_reuse_distance\": 5,"
                  " \"gather_16bit_weights_on_model_save\": true, \"prefetch_bucket_size\": 7},"
                  "\"compile\": {\"disable\": false, \"backend\": \"inductor\"}}",
                  NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.optim == ZG_OPTIMIZER_ADAMW && c.bias_correction == 0);
        ZT_CHECK(c.sched.type == ZG_SCHED_WARMUP_LR);
        ZT_CHECK(c.bf16_enabled);
        ZT_CHECK(c.zero.stage3_max_live_parameters == 1000000000 && c.zero.stage3_max_reuse_distance == 5 &&
                 c.zero.stage3_prefetch_bucket_size == 7);
        ZT_CHECK(noted(&c, "'compile'") && noted(&c, "torch.compile"));
        ZT_CHECK(noted(&c, "stage3_max_live_parameters' has no effect"));
        zg_optimizer_config oc;
        zg_train_config_optimizer(&c, &oc);
        ZT_CHECK(oc.no_bias_correction == 1 && oc.kind == ZG_OPTIMIZER_ADAMW);
        /* the stored JSON (canonical spellings) loads again */
        zg_train_config d;
        ZT_CHECK(zg_train_config_parse(&d, c.json_text, "stored") == 0);
        zg_train_config_free(&d);
        zg_train_config_free(&c);
    }
    rc = load(
        &c, "{\"optimizer\": {\"type\": \"lamb\", \"params\": {\"lr\": 0.01, \"max_coeff\": 0.3, \"min_coeff\": 0.1}}}",
        NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.optim == ZG_OPTIMIZER_LAMB);
        ZT_NEAR(c.max_coeff, 0.3, 0, 0);
        ZT_NEAR(c.min_coeff, 0.1, 0, 0);
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c, "{\"optimizer\": {\"type\": \"Lamb\", \"params\": {\"adam_w_mode\": true}}}", NULL, NULL, 0) !=
             0);
    ZT_CHECK(has("adam_w_mode is not a parameter of Lamb"));
    ZT_CHECK(load(&c, "{\"optimizer\": {\"type\": \"OneBitAdam\", \"params\": {\"freeze_step\": 400}}}", NULL, NULL,
                  0) != 0);
    ZT_CHECK(has("optimizer.type 'OneBitAdam' is not supported by zgpt"));
    ZT_CHECK(load(&c, "{\"optimizer\": {\"type\": \"AdamX\"}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("AdamX") && has("did you mean"));
    ZT_CHECK(load(&c, "{\"bf16\": {\"enabled\": true}, \"bfloat16\": {\"enabled\": false}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("'bfloat16' and 'bf16'"));
    /* OneCycle, names in any case */
    rc = load(&c,
              "{\"scheduler\": {\"type\": \"onecycle\", \"params\": {\"cycle_min_lr\": 1e-4, \"cycle_max_lr\": 1e-3,"
              " \"cycle_first_step_size\": 10}}}",
              NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.sched.type == ZG_SCHED_ONE_CYCLE && c.sched.cycle_first_step_size == 10 && c.sched.cycle_momentum);
        ZT_CHECK(noted(&c, "cycles beta1"));
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c, "{\"scheduler\": {\"type\": \"OneCycle\"}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("cycle_min_lr and cycle_max_lr"));
}

static void test_sections(void) {
    zg_train_config c;
    ZT_CHECK(load(&c, "{\"curriculum_learning\": {\"enabled\": true, \"curriculum_type\": \"seqlen\"}}", NULL, NULL,
                  0) != 0);
    ZT_CHECK(has("'curriculum_learning' is not supported by zgpt; remove it or set \"enabled\": false"));
    ZT_CHECK(load(&c, "{\"sparse_attention\": {\"mode\": \"fixed\"}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("'sparse_attention' is not supported by zgpt"));
    int rc = load(&c,
                  "{\"curriculum_learning\": {\"enabled\": false, \"curriculum_type\": \"seqlen\"},"
                  "\"data_efficiency\": {\"enabled\": false}, \"autotuning\": {\"fast\": true},"
                  "\"monitor_config\": {\"enabled\": true}, \"comms_config\": {\"verbose\": false},"
                  "\"flops_profiler\": {\"enabled\": true, \"profile_step\": 2},"
                  "\"comms_logger\": {\"enabled\": false},"
                  "\"tensorboard\": {\"enabled\": true, \"output_path\": \"tb\", \"job_name\": \"j\"},"
                  "\"wandb\": {\"enabled\": false, \"project\": \"p\", \"team\": \"t\", \"group\": \"g\"},"
                  "\"steps_per_print\": 2000, \"_comment\": \"hi\"}",
                  NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(noted(&c, "'curriculum_learning' is disabled"));
        ZT_CHECK(noted(&c, "'autotuning' is disabled")); /* DeepSpeed's default: off */
        ZT_CHECK(noted(&c, "'monitor_config' is not a key DeepSpeed reads"));
        ZT_CHECK(noted(&c, "'flops_profiler' is enabled, but"));
        ZT_CHECK(!noted(&c, "'comms_logger'"));                /* disabled: nothing to say */
        ZT_CHECK(!noted(&c, "'tensorboard' is enabled, but")); /* the monitors act (src/monitor) */
        ZT_CHECK(noted(&c, "'steps_per_print' has no effect"));
        ZT_CHECK(noted(&c, "'_comment'"));
        ZT_CHECK(c.monitor.tensorboard.enabled && strcmp(c.monitor.tensorboard.output_path, "tb") == 0 &&
                 strcmp(c.monitor.tensorboard.job_name, "j") == 0);
        ZT_CHECK(!c.monitor.wandb && strcmp(c.monitor.wandb_project, "p") == 0);
        ZT_CHECK(noted(&c, "'wandb.group'")); /* `wandb sync` cannot set a group: said out loud */
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c, "{\"tensorboard\": {\"enabled\": true, \"outputpath\": \"x\"}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("'tensorboard.output_path'"));
    /* activation_checkpointing: zgpt's recompute settings */
    rc = load(&c, "{\"activation_checkpointing\": {\"partition_activations\": false, \"number_checkpoints\": 3}}", NULL,
              NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_train_config_recompute(&c) == (GPT2_RECOMPUTE_GELU | GPT2_RECOMPUTE_LAYERNORM));
        ZT_CHECK(c.recompute_num_layers == 3);
        ZT_CHECK(noted(&c, "'activation_checkpointing': zgpt recomputes"));
        zg_train_config_free(&c);
    }
}

static void test_offload(void) {
    zg_train_config c;
    ZT_CHECK(load(&c, "{}", "{\"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvmee\"}}}",
                  NULL, 0) != 0);
    ZT_CHECK(has("ds.json") && has("offload_optimizer.device") && has("nvmee") && has("did you mean \"nvme\""));
    ZT_CHECK(load(&c, "{\"zero_optimization\": {\"offload_param\": {\"device\": \"cpu\", \"pin_mem\": true}}}", NULL,
                  NULL, 0) != 0);
    ZT_CHECK(has("offload_param.pin_memory"));
    ZT_CHECK(load(&c, "{\"zero_optimization\": {\"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"/x\"}}}",
                  NULL, NULL, 0) != 0);
    ZT_CHECK(has("\"nvme\" is not supported by zgpt"));
    int rc = load(
        &c,
        "{\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\", \"pin_memory\": true},"
        " \"offload_param\": {\"device\": \"none\"}}}",
        NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.zero.offload_optimizer == ZG_OFFLOAD_CPU && c.zero.offload_param == ZG_OFFLOAD_NONE);
        ZT_CHECK(c.zero.offload_pin_memory == 1);
        ZT_CHECK(!noted(&c, "offload_optimizer")); /* it acts: no "has no effect" note */
        zg_train_config_free(&c);
    }
    rc =
        load(&c, "{\"zero_optimization\": {\"stage\": 2, \"cpu_offload\": true, \"cpu_offload_use_pin_memory\": true}}",
             NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.zero.offload_optimizer == ZG_OFFLOAD_CPU && c.zero.offload_pin_memory == 1);
        zg_train_config_free(&c);
    }
    /* offload_param cpu acts at stage 3 (its own pin_memory) and is refused below it; so is offload at
     * stage 0 */
    rc = load(&c,
              "{\"zero_optimization\": {\"stage\": 3, \"offload_param\": {\"device\": \"cpu\", \"pin_memory\": true}}}",
              NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.zero.offload_param == ZG_OFFLOAD_CPU && c.zero.offload_param_pin_memory == 1);
        ZT_CHECK(c.zero.offload_optimizer == ZG_OFFLOAD_NONE && c.zero.offload_pin_memory == 0);
        ZT_CHECK(!noted(&c, "offload_param"));
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c, "{\"zero_optimization\": {\"stage\": 2, \"offload_param\": {\"device\": \"cpu\"}}}", NULL, NULL,
                  0) != 0);
    ZT_CHECK(has("offload_param \"device\": \"cpu\" needs ZeRO stage 3 (zero_optimization.stage is 2"));
    ZT_CHECK(load(&c, "{\"zero_optimization\": {\"offload_optimizer\": {\"device\": \"cpu\"}}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("needs ZeRO stage 1, 2 or 3"));
    /* the NVMe tuning keys say what zgpt does instead */
    rc = load(&c,
              "{\"zero_optimization\": {\"stage\": 1, \"offload_optimizer\": {\"device\": \"cpu\", \"ratio\": 0.3}}}",
              NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(noted(&c, "offload_optimizer.ratio") && noted(&c, "the whole optimizer state"));
        zg_train_config_free(&c);
    }
}

static void test_model_shape(void) {
    zg_train_config c;
    int rc = load(&c, "{\"n_layer\": 2, \"n_embd\": 64, \"n_head\": 4}", NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc != 0) return;
    gpt2_config g, xl;
    ZT_CHECK(zg_train_config_model_shape(&c, NULL, &g) == 0);
    ZT_CHECK(g.n_layer == 2 && g.n_embd == 64 && g.n_head == 4 && g.block_size == 1024 && g.vocab_size == 50257);
    ZT_CHECK(gpt2_config_by_name("gpt2-xl", &xl) == 0);
    ZT_CHECK(zg_train_config_model_shape(&c, &xl, &g) == 0 && g.n_layer == 2 && g.n_embd == 64);
    zg_train_config_free(&c);
}

static void test_deepspeed_file(void) {
    zg_train_config c;
    const char *ds =
        "{\"train_batch_size\": 32, \"train_micro_batch_size_per_gpu\": 1, \"gradient_clipping\": 1.0,"
        "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 3e-5, \"betas\": [0.9, 0.95],"
        "\"eps\": 1e-8, \"weight_decay\": 0.1}},"
        "\"scheduler\": {\"type\": \"WarmupDecayLR\", \"params\": {\"warmup_min_lr\": 0, \"warmup_max_lr\": 3e-5,"
        "\"warmup_num_steps\": 5, \"total_num_steps\": 20, \"warmup_type\": \"linear\"}},"
        "\"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 12, \"loss_scale_window\": 500,"
        "\"hysteresis\": 2, \"min_loss_scale\": 1},"
        "\"zero_optimization\": {\"stage\": 2, \"overlap_comm\": true, \"contiguous_gradients\": true,"
        "\"reduce_bucket_size\": 5e8, \"allgather_bucket_size\": 5e8, \"reduce_scatter\": true,"
        "\"allgather_partitions\": true},"
        "\"steps_per_print\": 5, \"wall_clock_breakdown\": false}";
    int rc = load(&c, "{\"data\": \"d\", \"max_iters\": 20, \"init_from\": \"gpt2-xl\"}", ds, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc) return;
    ZT_CHECK(c.micro_batch == 1 && c.grad_accum == 32 && c.train_batch_size == 32);
    ZT_NEAR(c.lr, 3e-5, 0, 1e-12);
    ZT_NEAR(c.beta2, 0.95, 0, 1e-12);
    ZT_NEAR(c.grad_clip, 1.0, 0, 0);
    ZT_CHECK(c.sched.type == ZG_SCHED_WARMUP_DECAY_LR && c.sched.total_num_steps == 20 && c.sched.warmup_linear);
    ZT_CHECK(c.fp16_enabled && c.scaler.enabled && c.scaler.initial_scale_power == 12 &&
             c.scaler.loss_scale_window == 500);
    ZT_CHECK(c.zero.stage == 2 && c.zero.overlap_comm == 1 && c.zero.reduce_bucket_size == 500000000);
    ZT_CHECK(zg_train_config_precision(&c, "cpu") == ZG_PREC_FP16);
    ZT_CHECK(strcmp(c.init_from, "gpt2-xl") == 0);
    /* the merged JSON round-trips */
    zg_train_config d;
    rc = zg_train_config_parse(&d, c.json_text, "stored");
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(d.grad_accum == 32 && d.zero.stage == 2);
        zg_train_config_free(&d);
    }
    /* resolving for 4 ranks: accumulation 8 */
    ZT_CHECK(zg_train_config_resolve_batch(&c, 4) == 0 && c.grad_accum == 8);
    zg_train_config_free(&c);
}

static void test_errors(void) {
    zg_train_config c;
    ZT_CHECK(load(&c, "{\"data\": \"d\", \"max_iter\": 5}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("max_iter") && has("max_iters"));
    ZT_CHECK(load(&c, "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lrr\": 1}}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("optimizer.params.lrr") && has("'optimizer.params.lr'"));
    ZT_CHECK(load(&c, "{\"eval_iters\": 0}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("eval_iters") && has(">= 1"));
    ZT_CHECK(load(&c, "{\"max_iters\": \"ten\"}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("max_iters") && has("ten") && has("integer"));
    ZT_CHECK(load(&c, "{\"max_iters\": 2.5}", NULL, NULL, 0) != 0);
    ZT_CHECK(load(&c, "{\"sample_mode\": \"shuffle\"}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("random|epoch"));
    ZT_CHECK(
        load(&c,
             "{\"train_batch_size\": 30, \"train_micro_batch_size_per_gpu\": 4, \"gradient_accumulation_steps\": 8}",
             NULL, NULL, 0) != 0);
    ZT_CHECK(has("train_batch_size 30") && has("gradient_accumulation_steps 8"));
    ZT_CHECK(load(&c, "{\"train_batch_size\": 30, \"train_micro_batch_size_per_gpu\": 4}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("divisible"));
    ZT_CHECK(load(&c, "{\"batch_size\": 4, \"train_micro_batch_size_per_gpu\": 8}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("batch_size") && has("train_micro_batch_size_per_gpu"));
    ZT_CHECK(load(&c, "{\"fp16\": {\"enabled\": true}, \"bf16\": {\"enabled\": true}}", NULL, NULL, 0) != 0);
    ZT_CHECK(load(&c, "{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"cos_min_ratio\": 0.1}}}", NULL, NULL,
                  0) != 0);
    ZT_CHECK(has("cos_min_ratio") && has("WarmupLR"));
    ZT_CHECK(load(&c, "{\"scheduler\": {\"type\": \"LRRangeTest\"}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("WarmupCosineLR"));
    ZT_CHECK(load(&c, "{\"data\": \"d\"", NULL, NULL, 0) != 0);
    ZT_CHECK(has("invalid JSON") && has("line 1") && has("a.json") && has("not closed"));
    ZT_CHECK(load(&c, "{\"dropout\": 0.1}", NULL, NULL, 0) != 0);
    ZT_CHECK(load(&c, "{\"data\": [{\"path\": \"a\", \"wieght\": 2}]}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("wieght") && has("weight"));
    ZT_CHECK(load(&c, "{\"seed\": 1, \"seed\": 2}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("twice"));
    /* overlapping keys must agree */
    ZT_CHECK(load(&c, "{\"gradient_clipping\": 1.0}", "{\"gradient_clipping\": 0.5}", NULL, 0) != 0);
    ZT_CHECK(has("gradient_clipping") && has("agree"));
    /* a typo in the DeepSpeed file names that file */
    ZT_CHECK(load(&c, "{}", "{\"zero_optimisation\": {\"stage\": 2}}", NULL, 0) != 0);
    ZT_CHECK(has("ds.json") && has("zero_optimization"));
}

static void test_set_and_aliases(void) {
    zg_train_config c;
    const char *sets[] = {"max_iters=7", "optimizer.params.lr=0.002", "zero_optimization.stage=1",
                          "data=[{\"path\":\"x\",\"weight\":3},{\"path\":\"y\"}]", "always_save_checkpoint=false"};
    int rc =
        load(&c, "{\"data\": \"d\", \"batch_size\": 4, \"gradient_accumulation_steps\": 2, \"learning_rate\": 0.002}",
             NULL, sets, 5);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.max_iters == 7 && c.zero.stage == 1 && c.always_save_checkpoint == 0);
        ZT_CHECK(c.micro_batch == 4 && c.grad_accum == 2 && c.train_batch_size == 8);
        ZT_CHECK(c.n_data == 2 && c.data[0].weight == 3 && strcmp(c.data[1].path, "y") == 0);
        ZT_NEAR(c.lr, 0.002, 0, 0);
        ZT_NEAR(c.beta2, 0.95, 0, 0); /* nanoGPT defaults without an optimizer section */
        ZT_NEAR(c.grad_clip, 1.0, 0, 0);
        ZT_CHECK(zg_train_config_precision(&c, "cpu") == ZG_PREC_FP32);
        ZT_CHECK(zg_train_config_precision(&c, "cuda") == ZG_PREC_BF16);
        zg_train_config_free(&c);
    }
    /* recompute_layernorm: true, false, "ln1" or "ln2"; comm_max_ctas auto by tokens per micro-step */
    const char *rl_set[] = {"recompute_layernorm=ln2"};
    rc = load(&c, "{\"recompute\": true, \"batch_size\": 8}", NULL, rl_set, 1);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_train_config_recompute(&c) == (GPT2_RECOMPUTE_GELU | GPT2_RECOMPUTE_LN2));
        ZT_CHECK(zg_train_config_comm_max_ctas(&c, 1) == ZG_COMM_LEAN_CTAS); /* 8 x 1024 tokens, one machine */
        ZT_CHECK(zg_train_config_comm_max_ctas(&c, 0) == 0);                 /* several machines: NCCL's */
        zg_train_config_free(&c);
    }
    rc = load(&c, "{\"recompute_layernorm\": \"ln1\", \"batch_size\": 1}", NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_train_config_recompute(&c) == GPT2_RECOMPUTE_LN1);
        ZT_CHECK(zg_train_config_comm_max_ctas(&c, 1) == 0); /* 1 x 1024 tokens: NCCL's choice */
        zg_train_config_free(&c);
    }
    const char *rl_true[] = {"recompute_layernorm=true", "comm_max_ctas=16"};
    rc = load(&c, "{}", NULL, rl_true, 2);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_train_config_recompute(&c) == GPT2_RECOMPUTE_LAYERNORM);
        ZT_CHECK(zg_train_config_comm_max_ctas(&c, 0) == 16); /* given: used everywhere */
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c, "{\"recompute_layernorm\": \"ln3\"}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("recompute_layernorm") && has("ln1|ln2"));
    /* grad_accum_local_layers: -1 (auto) unless given; an integer from -1 (the model's n_layer is checked
     * where the model is known: zg_zero_local_check) */
    rc = load(&c, "{}", NULL, NULL, 0);
    ZT_CHECK(rc == 0 && c.grad_accum_local_layers == -1);
    if (rc == 0) zg_train_config_free(&c);
    const char *gl_set[] = {"grad_accum_local_layers=19"};
    rc = load(&c, "{}", NULL, gl_set, 1);
    ZT_CHECK(rc == 0 && c.grad_accum_local_layers == 19);
    if (rc == 0) zg_train_config_free(&c);
    ZT_CHECK(load(&c, "{\"grad_accum_local_layers\": -2}", NULL, NULL, 0) != 0 && has("grad_accum_local_layers"));
    ZT_CHECK(load(&c, "{\"grad_accum_local_layers\": \"all\"}", NULL, NULL, 0) != 0 && has("grad_accum_local_layers"));
    /* memory_efficient_layernorm: the model's GPT2_LN_FROM_OUTPUT flag; not together with recompute_layernorm */
    const char *me_set[] = {"memory_efficient_layernorm=true"};
    rc = load(&c, "{\"recompute\": true}", NULL, me_set, 1);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_train_config_recompute(&c) == (GPT2_RECOMPUTE_GELU | GPT2_LN_FROM_OUTPUT));
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c, "{\"recompute_layernorm\": \"ln1\"}", NULL, me_set, 1) != 0);
    ZT_CHECK(has("memory_efficient_layernorm") && has("recompute_layernorm"));
    const char *bad1[] = {"max_iters=abc"};
    ZT_CHECK(load(&c, "{}", NULL, bad1, 1) != 0);
    ZT_CHECK(has("max_iters") && has("abc"));
    const char *bad2[] = {"optimizer.params.lrr=1"};
    ZT_CHECK(load(&c, "{}", NULL, bad2, 1) != 0);
    ZT_CHECK(has("optimizer.params.lr"));
    const char *bad3[] = {"eval_interval=0"};
    ZT_CHECK(load(&c, "{}", NULL, bad3, 1) != 0);
    ZT_CHECK(has("eval_interval"));
    /* "auto" (Hugging Face style DeepSpeed files) means: derive it */
    rc = load(
        &c, "{\"train_batch_size\": \"auto\", \"train_micro_batch_size_per_gpu\": 2, \"gradient_clipping\": \"auto\"}",
        NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.micro_batch == 2 && c.grad_accum == 1);
        zg_train_config_free(&c);
    }
}

/* Forms real DeepSpeed configs use: the deprecated boolean zero_optimization, Accelerate's "auto" for the
 * stage, the offload devices and the 16-bit save, and sections without "enabled" (tensor_parallel,
 * zenflow, sequence_parallel_size, compile.passes). */
static void test_deepspeed_forms(void) {
    zg_train_config c;
    int rc = load(&c, "{}", "{\"zero_optimization\": true, \"allgather_size\": 300000000}", NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.zero.stage == 1 && c.zero.allgather_bucket_size == 300000000);
        ZT_CHECK(noted(&c, "deprecated form of {\"stage\": 1}"));
        zg_train_config_free(&c);
    }
    rc = load(&c, "{\"zero_optimization\": false}", NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.zero.stage == 0);
        zg_train_config_free(&c);
    }
    /* allgather_size is read only with the boolean form (DeepSpeed ignores it otherwise) */
    ZT_CHECK(load(&c, "{\"zero_optimization\": {\"stage\": 1}, \"allgather_size\": 5}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("'allgather_size'; did you mean 'zero_optimization.allgather_bucket_size'"));
    rc = load(&c, "{}",
              "{\"zero_optimization\": {\"stage\": \"auto\", \"stage3_gather_16bit_weights_on_model_save\": \"auto\","
              " \"offload_optimizer\": {\"device\": \"auto\"}, \"offload_param\": {\"device\": \"auto\"}}}",
              NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.zero.stage == 0 && c.zero.offload_optimizer == ZG_OFFLOAD_NONE &&
                 c.zero.offload_param == ZG_OFFLOAD_NONE);
        ZT_CHECK(noted(&c, "auto: zero_optimization.stage = 0"));
        ZT_CHECK(noted(&c, "auto: zero_optimization.offload_optimizer.device = none"));
        ZT_CHECK(noted(&c, "'zero_optimization.stage3_gather_16bit_weights_on_model_save' has no effect"));
        zg_train_config_free(&c);
    }
    /* tensor_parallel acts when autotp_size is above 1 (it has no "enabled" in DeepSpeed) */
    ZT_CHECK(load(&c, "{\"tensor_parallel\": {\"autotp_size\": 4}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("'tensor_parallel' is not supported by zgpt (autotp_size 4); remove it or set autotp_size to 1"));
    rc = load(&c, "{\"tensor_parallel\": {\"autotp_size\": 1}, \"sequence_parallel_size\": 1}", NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(noted(&c, "'tensor_parallel' is disabled"));
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c,
                  "{\"zero_optimization\": {\"stage\": 2, \"zenflow\": {\"topk_ratio\": 0.1}},"
                  " \"sequence_parallel_size\": 2, \"compile\": {\"deepcompile\": true, \"passes\": [\"autosp\"]}}",
                  NULL, NULL, 0) != 0);
    ZT_CHECK(has("2 problems"));
    ZT_CHECK(has("'zero_optimization.zenflow' is not supported by zgpt; remove it (DeepSpeed turns it on by its "
                 "presence)"));
    ZT_CHECK(has("'sequence_parallel_size' 2 is not supported by zgpt"));
    /* the keys that allow a client optimizer say that zgpt has none, when they ask for something */
    rc = load(&c, "{}", "{\"zero_allow_untested_optimizer\": true, \"zero_force_ds_cpu_optimizer\": false}", NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(noted(&c, "'zero_allow_untested_optimizer' has no effect: there is no client optimizer"));
        ZT_CHECK(noted(&c, "'zero_force_ds_cpu_optimizer' has no effect: with offload the CPU step"));
        zg_train_config_free(&c);
    }
    rc = load(&c, "{}", "{\"zero_allow_untested_optimizer\": false, \"zero_force_ds_cpu_optimizer\": true}", NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(!noted(&c, "zero_allow_untested_optimizer") && !noted(&c, "zero_force_ds_cpu_optimizer"));
        zg_train_config_free(&c);
    }
}

/* The newer DeepSpeed keys (runtime/constants.py, zero/config.py, data_types, checkpoint, expert_parallel):
 * each says what zgpt does instead, or is refused in one line when it would change training. */
static void test_newer_deepspeed_keys(void) {
    zg_train_config c;
    /* harmless ones: accepted, each with its note when it asks for something */
    int rc = load(
        &c, "{}",
        "{\"graph_harvesting\": true, \"log_level\": \"INFO\", \"vocabulary_size\": 50257,"
        " \"data_parallel_size\": 2, \"use_data_before_expert_parallelism\": true,"
        " \"datastates_ckpt\": {\"host_cache_size\": 16},"
        " \"optimizer\": {\"type\": \"AdamW\", \"legacy_fusion\": true},"
        " \"data_types\": {\"buffer_dtype\": \"fp32\"},"
        " \"zero_optimization\": {\"stage\": 3, \"zero_quantized_gradients\": true,"
        " \"zeropp_loco_param\": {\"err_beta\": 0.8, \"reset_T\": 1024}, \"log_trace_cache_warnings\": true,"
        " \"enable_sanity_checks\": true, \"save_muon_momentum_buffer_in_memory\": true,"
        " \"leaf_module\": {\"classes\": [\"MixtralSparseMoeBlock\"], \"name_suffixes\": \"experts\"}},"
        " \"checkpoint\": {\"tag_validation\": \"fail\", \"load_universal\": true,"
        " \"parallel_write\": {\"pipeline_stage\": true}, \"writer\": {\"type\": \"FAST\", \"decoupled\": true}},"
        " \"aio\": {\"block_size\": 8388608, \"use_gds\": false}, \"timers\": {\"throughput\": {\"enabled\": false}},"
        " \"expert_parallel\": {\"enabled\": false, \"autoep_size\": 2},"
        " \"gradient_allreduce_op\": \"MEAN\", \"managed_gradient_accumulation\": true}",
        NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        static const char *const keys[] = {"graph_harvesting",
                                           "log_level",
                                           "vocabulary_size",
                                           "data_parallel_size",
                                           "use_data_before_expert_parallelism",
                                           "datastates_ckpt",
                                           "optimizer.legacy_fusion",
                                           "data_types.buffer_dtype",
                                           "zero_optimization.zeropp_loco_param",
                                           "zero_optimization.log_trace_cache_warnings",
                                           "zero_optimization.enable_sanity_checks",
                                           "zero_optimization.save_muon_momentum_buffer_in_memory",
                                           "zero_optimization.leaf_module",
                                           "checkpoint",
                                           "aio",
                                           "timers"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            char want[128];
            snprintf(want, sizeof want, "'%s' has no effect: ", keys[i]);
            ZT_CHECK_MSG(noted(&c, want), "no note for %s", keys[i]);
        }
        ZT_CHECK(noted(&c, "'expert_parallel' is disabled"));
        ZT_CHECK(noted(&c, "'gradient_allreduce_op' \"MEAN\" is accepted: zgpt averages the gradients"));
        ZT_CHECK(noted(&c, "'managed_gradient_accumulation' true is accepted: zgpt runs its own training loop"));
        ZT_CHECK(!noted(&c, "checkpoint.")); /* the section's one line stands for its keys */
        zg_train_config_free(&c);
    }
    /* at DeepSpeed's defaults (null: its None) they ask for nothing and say nothing */
    rc = load(&c, "{}",
              "{\"graph_harvesting\": false, \"datastates_ckpt\": false, \"vocabulary_size\": 0,"
              " \"zero_optimization\": {\"zeropp_loco_param\": null, \"enable_sanity_checks\": false}}",
              NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(!noted(&c, "graph_harvesting") && !noted(&c, "datastates_ckpt") && !noted(&c, "vocabulary_size") &&
                 !noted(&c, "zeropp_loco_param") && !noted(&c, "enable_sanity_checks"));
        zg_train_config_free(&c);
    }
    /* the ones that would change training: refused at another value than DeepSpeed's default, one line each */
    ZT_CHECK(load(&c, "{}",
                  "{\"gradient_allreduce_op\": \"sum\", \"managed_gradient_accumulation\": false,"
                  " \"expert_parallel\": {\"enabled\": true, \"autoep_size\": 2}}",
                  NULL, 0) != 0);
    ZT_CHECK(has("3 problems"));
    ZT_CHECK(has("'gradient_allreduce_op' \"sum\" is not supported by zgpt (zgpt averages the gradients over the "
                 "ranks") &&
             has("remove it or set it to \"mean\""));
    ZT_CHECK(has("'managed_gradient_accumulation' false is not supported by zgpt") &&
             has("remove it or set it to true"));
    ZT_CHECK(has("'expert_parallel' is not supported by zgpt; remove it or set \"enabled\": false"));
    ZT_CHECK(load(&c, "{}", "{\"gradient_allreduce_op\": \"avg\"}", NULL, 0) != 0);
    ZT_CHECK(has("gradient_allreduce_op") && has("mean|sum"));
    ZT_CHECK(load(&c, "{}", "{\"log_level\": \"verbose\"}", NULL, 0) != 0);
    ZT_CHECK(has("log_level") && has("debug|info|warning|error|critical"));
    /* the sections zgpt now validates name a misspelt key */
    ZT_CHECK(load(&c, "{}", "{\"checkpoint\": {\"tag_validaton\": \"Warn\"}}", NULL, 0) != 0);
    ZT_CHECK(has("'checkpoint.tag_validaton'; did you mean 'checkpoint.tag_validation'"));
    ZT_CHECK(load(&c, "{}", "{\"zero_optimization\": {\"leaf_module\": {\"class\": [\"X\"]}}}", NULL, 0) != 0);
    ZT_CHECK(has("'zero_optimization.leaf_module.class'; did you mean 'zero_optimization.leaf_module.classes'"));
    ZT_CHECK(load(&c, "{}", "{\"checkpoint\": {\"writer\": {\"type\": \"slow\"}}}", NULL, 0) != 0);
    ZT_CHECK(has("checkpoint.writer.type") && has("mock|python|fast"));
    /* data_types.param_dtype: the precision's dtype (DeepSpeed asserts it) ... */
    rc = load(&c, "{}", "{\"bf16\": {\"enabled\": true}, \"data_types\": {\"param_dtype\": \"bfloat16\"}}", NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_train_config_precision(&c, "cuda") == ZG_PREC_BF16);
        zg_train_config_free(&c);
    }
    ZT_CHECK(load(&c, "{}", "{\"bf16\": {\"enabled\": true}, \"data_types\": {\"param_dtype\": \"fp16\"}}", NULL, 0) !=
             0);
    ZT_CHECK(has("data_types.param_dtype 'fp16' contradicts the precision bf16 (from bf16.enabled)"));
    ZT_CHECK(load(&c, "{\"dtype\": \"fp32\"}", "{\"data_types\": {\"param_dtype\": \"bf16\"}}", NULL, 0) != 0);
    ZT_CHECK(has("data_types.param_dtype 'bf16' contradicts the precision fp32 (from dtype)"));
    /* ... fixing it where zgpt's dtype auto would pick it: fp32 is DeepSpeed's model without fp16/bf16 ... */
    rc = load(&c, "{}", "{\"data_types\": {\"param_dtype\": \"fp32\"}}", NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(zg_train_config_precision(&c, "cuda") == ZG_PREC_FP32);
        ZT_CHECK(noted(&c, "data_types.param_dtype 'fp32' sets the precision to fp32"));
        zg_train_config_free(&c);
    }
    /* ... and with the Trainer's "auto" flags, the dtype the Trainer was given */
    rc = load(&c, "{}",
              "{\"fp16\": {\"enabled\": \"auto\"}, \"bf16\": {\"enabled\": \"auto\"},"
              " \"data_types\": {\"param_dtype\": \"torch.float16\"}}",
              NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.fp16_enabled && zg_train_config_precision(&c, "cuda") == ZG_PREC_FP16);
        ZT_CHECK(noted(&c, "auto: fp16.enabled = true (from data_types.param_dtype 'torch.float16')"));
        zg_train_config_free(&c);
    }
    /* bf16 without bf16.enabled is refused by DeepSpeed too (its model is then fp32); int8 is not trained in */
    ZT_CHECK(load(&c, "{}", "{\"data_types\": {\"param_dtype\": \"bf16\"}}", NULL, 0) != 0);
    ZT_CHECK(has("data_types.param_dtype 'bf16' needs bf16.enabled true"));
    ZT_CHECK(load(&c, "{}", "{\"data_types\": {\"param_dtype\": \"int8\"}}", NULL, 0) != 0);
    ZT_CHECK(has("data_types.param_dtype 'int8' is not supported by zgpt"));
    ZT_CHECK(load(&c, "{}", "{\"data_types\": {\"param_dtype\": \"bf32\"}}", NULL, 0) != 0);
    ZT_CHECK(has("data_types.param_dtype") && has("did you mean"));
    zg_error_clear();
}

/* DeepSpeed reads its config as Hjson: the same config with comments, unquoted keys and strings, missing and
 * trailing commas and no top-level braces gives the same merged configuration as its strict JSON form */
static void test_hjson_files(void) {
    const char *json = "{\"train_micro_batch_size_per_gpu\": 2, \"gradient_accumulation_steps\": 4,"
                       " \"fp16\": {\"enabled\": true, \"loss_scale\": 0, \"initial_scale_power\": 12},"
                       " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 3e-4, \"betas\": [0.9, 0.95]}},"
                       " \"zero_optimization\": {\"stage\": 2, \"reduce_bucket_size\": 5e8,"
                       " \"offload_optimizer\": {\"device\": \"cpu\", \"pin_memory\": true}}}";
    const char *hjson = "// ds_config_zero2.json, as DeepSpeed's hjson reads it\n"
                        "train_micro_batch_size_per_gpu: 2  # per GPU\n"
                        "gradient_accumulation_steps: 4,\n"
                        "fp16: {\n  enabled: true\n  loss_scale: 0, /* dynamic */\n  initial_scale_power: 12,\n},\n"
                        "optimizer: {\n  type: AdamW\n  params: {lr: 3e-4, betas: [0.9, 0.95,]}\n}\n"
                        "zero_optimization: {\n  stage: 2\n  reduce_bucket_size: 5e8\n"
                        "  offload_optimizer: {device: 'cpu', pin_memory: true}\n}\n";
    zg_train_config a, b;
    ZT_CHECK_MSG(load(&a, "{}", json, NULL, 0) == 0, "%s", zg_error_message());
    ZT_CHECK_MSG(load(&b, "{}", hjson, NULL, 0) == 0, "%s", zg_error_message());
    ZT_CHECK_MSG(strcmp(a.json_text, b.json_text) == 0, "json: %s\nhjson: %s", a.json_text, b.json_text);
    ZT_CHECK(b.zero.stage == 2 && b.fp16_enabled && b.lr == 3e-4 && b.beta2 == 0.95);
    zg_train_config_free(&a);
    zg_train_config_free(&b);
    /* booleans as strings or 0/1 (DeepSpeed's pydantic models coerce them): read as booleans, with a note;
     * "auto" and other strings stay what they were */
    ZT_CHECK_MSG(load(&a, "{}",
                      "{\"fp16\": {\"enabled\": \"True\"}, \"wall_clock_breakdown\": 0,"
                      " \"zero_optimization\": {\"stage\": 2, \"overlap_comm\": \"false\", \"contiguous_gradients\": "
                      "\"auto\"}, \"flops_profiler\": {\"enabled\": \"no\"}}",
                      NULL, 0) == 0,
                 "%s", zg_error_message());
    ZT_CHECK(a.fp16_enabled == 1 && a.wall_clock_breakdown == 0 && a.zero.overlap_comm == 0);
    ZT_CHECK(noted(&a, "'fp16.enabled' is \"True\", read as true") &&
             noted(&a, "'zero_optimization.overlap_comm' is \"false\", read as false") &&
             noted(&a, "'wall_clock_breakdown' is 0, read as false") &&
             noted(&a, "'flops_profiler.enabled' is \"no\""));
    zg_train_config_free(&a);
    ZT_CHECK(load(&a, "{}", "{\"fp16\": {\"enabled\": \"maybe\"}}", NULL, 0) != 0);
    ZT_CHECK(has("fp16.enabled") && has("maybe") && has("allowed: true, false"));
    zg_error_clear();
    /* a syntax error names the file and the line */
    ZT_CHECK(load(&a, "{}", "{\n  fp16: {\n    enabled: true\n  \n", NULL, 0) != 0);
    ZT_CHECK(has("ds.json") && has("line 5") && has("'{' from line 2 is not closed"));
    zg_error_clear();
}

/* The batch keys before the world size is known (loading): a DeepSpeed config that gives all three for its
 * launch's process count loads (and implies that count), and only what fails for every world size is an error;
 * the world size then decides (the trainer, zgpt plan). */
static void test_batch_world_unknown(void) {
    zg_train_config c;
    /* 64 = 2 x 8 x 4 processes: loads; 4 processes resolve it, 1 and 2 refuse it naming their count */
    const char *j = "{\"train_batch_size\": 64, \"train_micro_batch_size_per_gpu\": 2, "
                    "\"gradient_accumulation_steps\": 8}";
    int rc = load(&c, j, NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.world_size == 4 && c.micro_batch == 2 && c.grad_accum == 8 && c.train_batch_size == 64);
        ZT_CHECK(zg_train_config_resolve_batch(&c, 4) == 0 && c.grad_accum == 8 && c.world_size == 4);
        ZT_CHECK(zg_train_config_resolve_batch(&c, 1) != 0 && has("x 1 process(es)"));
        ZT_CHECK(zg_train_config_resolve_batch(&c, 2) != 0 && has("x 2 process(es)"));
        zg_train_config_free(&c);
    }
    /* no world size makes 9 = 2 x 2 x N: refused at load, without naming a count */
    ZT_CHECK(load(&c,
                  "{\"train_batch_size\": 9, \"train_micro_batch_size_per_gpu\": 2, "
                  "\"gradient_accumulation_steps\": 2}",
                  NULL, NULL, 0) != 0);
    ZT_CHECK(has("train_batch_size 9") && has("any number of processes") && !has("process(es)"));
    ZT_CHECK(load(&c, "{\"train_batch_size\": 9, \"train_micro_batch_size_per_gpu\": 2}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("not divisible by train_micro_batch_size_per_gpu 2;"));
    ZT_CHECK(load(&c, "{\"train_batch_size\": 10, \"gradient_accumulation_steps\": 4}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("not divisible by gradient_accumulation_steps 4;"));
    /* 12 with micro-batch 3 loads (1, 2 or 4 processes); 3 processes: 12 / 9 does not divide */
    rc = load(&c, "{\"train_batch_size\": 12, \"train_micro_batch_size_per_gpu\": 3}", NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.grad_accum == 4 && c.world_size == 1);
        ZT_CHECK(zg_train_config_resolve_batch(&c, 2) == 0 && c.grad_accum == 2);
        ZT_CHECK(zg_train_config_resolve_batch(&c, 3) != 0 && has("3 process(es)"));
        zg_train_config_free(&c);
    }
}

int main(void) {
    g_dir = zt_tmpdir("config");
    zt_run("batch_world_unknown", test_batch_world_unknown);
    zt_run("deepspeed_file", test_deepspeed_file);
    zt_run("errors", test_errors);
    zt_run("set_and_aliases", test_set_and_aliases);
    zt_run("auto", test_auto);
    zt_run("conflicts_and_set", test_conflicts_and_set);
    zt_run("all_errors_and_suggestions", test_all_errors_and_suggestions);
    zt_run("names_and_spellings", test_names_and_spellings);
    zt_run("sections", test_sections);
    zt_run("offload", test_offload);
    zt_run("deepspeed_forms", test_deepspeed_forms);
    zt_run("newer_deepspeed_keys", test_newer_deepspeed_keys);
    zt_run("hjson_files", test_hjson_files);
    zt_run("model_shape", test_model_shape);
    zt_rmtree(g_dir);
    free(g_dir);
    return zt_finish();
}
