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

static void test_deepspeed_file(void) {
    zg_train_config c;
    const char *ds = "{\"train_batch_size\": 32, \"train_micro_batch_size_per_gpu\": 1, \"gradient_clipping\": 1.0,"
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
    ZT_CHECK(c.fp16_enabled && c.scaler.enabled && c.scaler.initial_scale_power == 12 && c.scaler.loss_scale_window == 500);
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
    ZT_CHECK(load(&c, "{\"train_batch_size\": 30, \"train_micro_batch_size_per_gpu\": 4, \"gradient_accumulation_steps\": 8}",
                  NULL, NULL, 0) != 0);
    ZT_CHECK(has("train_batch_size 30") && has("gradient_accumulation_steps 8"));
    ZT_CHECK(load(&c, "{\"train_batch_size\": 30, \"train_micro_batch_size_per_gpu\": 4}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("divisible"));
    ZT_CHECK(load(&c, "{\"batch_size\": 4, \"train_micro_batch_size_per_gpu\": 8}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("batch_size") && has("train_micro_batch_size_per_gpu"));
    ZT_CHECK(load(&c, "{\"fp16\": {\"enabled\": true}, \"bf16\": {\"enabled\": true}}", NULL, NULL, 0) != 0);
    ZT_CHECK(load(&c, "{\"scheduler\": {\"type\": \"WarmupLR\", \"params\": {\"cos_min_ratio\": 0.1}}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("cos_min_ratio") && has("WarmupLR"));
    ZT_CHECK(load(&c, "{\"scheduler\": {\"type\": \"LRRangeTest\"}}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("WarmupCosineLR"));
    ZT_CHECK(load(&c, "{\"data\": \"d\",}", NULL, NULL, 0) != 0);
    ZT_CHECK(has("invalid JSON") && has("line 1"));
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
    int rc = load(&c, "{\"data\": \"d\", \"batch_size\": 4, \"gradient_accumulation_steps\": 2, \"learning_rate\": 0.002}",
                  NULL, sets, 5);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.max_iters == 7 && c.zero.stage == 1 && c.always_save_checkpoint == 0);
        ZT_CHECK(c.micro_batch == 4 && c.grad_accum == 2 && c.train_batch_size == 8);
        ZT_CHECK(c.n_data == 2 && c.data[0].weight == 3 && strcmp(c.data[1].path, "y") == 0);
        ZT_NEAR(c.lr, 0.002, 0, 0);
        ZT_NEAR(c.beta2, 0.95, 0, 0);      /* nanoGPT defaults without an optimizer section */
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
    rc = load(&c, "{\"train_batch_size\": \"auto\", \"train_micro_batch_size_per_gpu\": 2, \"gradient_clipping\": \"auto\"}",
              NULL, NULL, 0);
    ZT_CHECK_MSG(rc == 0, "%s", zg_error_message());
    if (rc == 0) {
        ZT_CHECK(c.micro_batch == 2 && c.grad_accum == 1);
        zg_train_config_free(&c);
    }
}

int main(void) {
    g_dir = zt_tmpdir("config");
    zt_run("deepspeed_file", test_deepspeed_file);
    zt_run("errors", test_errors);
    zt_run("set_and_aliases", test_set_and_aliases);
    zt_rmtree(g_dir);
    free(g_dir);
    return zt_finish();
}
