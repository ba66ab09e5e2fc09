/* zgpt train: DeepSpeed-style JSON config -> the training loop (src/train/trainer.c). */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "backend/backend.h"
#include "core/strutil.h"
#include "dist/launch.h"
#include "train/config.h"
#include "train/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *config;
    const char *deepspeed;
    zg_strlist sets;
    const char *device;
    int resume;
    const char *gpus;
    int64_t nproc;
    int quiet;
} train_args;

static const zg_option train_opts[] = {
    ZG_OPT_STR(train_args, config, "config", "FILE", "training config (JSON; may also hold the DeepSpeed keys)", NULL),
    ZG_OPT_STR(train_args, deepspeed, "deepspeed", "DS_CONFIG", "DeepSpeed config file, used unchanged", NULL),
    ZG_OPT_STR(train_args, deepspeed, "deepspeed_config", "DS_CONFIG", "the same as --deepspeed (DeepSpeed's spelling)",
               NULL),
    ZG_OPT_LIST(train_args, sets, "set", "KEY.PATH=VALUE", "override a config key (repeatable)"),
    ZG_OPT_STR(train_args, device, "device", "cpu|cuda|auto", "where to train (default: the config's device, auto)",
               NULL),
    ZG_OPT_FLAG(train_args, resume, "resume", "continue from out_dir/latest (same as init_from \"resume\")"),
    ZG_OPT_STR(train_args, gpus, "gpus", "N|all", "GPUs to train on, one process each (as deepspeed --num_gpus)", NULL),
    ZG_OPT_STR(train_args, gpus, "num_gpus", "N|all", "the same as --gpus (the deepspeed launcher's spelling)", NULL),
    ZG_OPT_INT(train_args, nproc, "nproc", "N", "CPU processes to train with (data parallel, ZeRO)", "1"),
    ZG_OPT_FLAG(train_args, quiet, "quiet", "print evaluations only, not every log_interval iteration"),
    ZG_OPT_END,
};

static const zg_command_spec train_spec = {
    "train",
    "--config FILE [--deepspeed DS_CONFIG] [--set key.path=value]... [options]",
    "Train or fine-tune a GPT-2 from a DeepSpeed-style JSON config.",
    train_opts,
    NULL,
    "Config keys: nanoGPT's (out_dir, data, max_iters, eval_interval, eval_iters, log_interval, init_from,\n"
    "n_layer, n_head, n_embd, block_size, batch_size, learning_rate, ...) and DeepSpeed's (train_batch_size,\n"
    "train_micro_batch_size_per_gpu, gradient_accumulation_steps, gradient_clipping, optimizer, scheduler,\n"
    "fp16, bf16, zero_optimization, ...). See docs/TRAINING.md. Output goes to out_dir: checkpoints\n"
    "(iter_N, best, final, latest) and metrics.jsonl.",
};

/* zg_launch_opts.preflight: the config loaded and checked once, before the workers start (each loads it again);
 * its problems and the launch's in one message. */
static int train_preflight(void *ctx, int world) {
    const train_args *a = ctx;
    zg_lines pr = {NULL, 0};
    zg_train_config cfg;
    int loaded = zg_train_config_load_lines(&cfg, a->config, a->deepspeed, a->sets.items, a->sets.count, &pr) == 0;
    zg_train_options o = {a->device, a->resume, a->quiet};
    zg_train_preflight(loaded ? &cfg : NULL, &o, world, &pr);
    if (loaded) zg_train_config_free(&cfg);
    char what[64];
    snprintf(what, sizeof what, "before starting %d workers", world);
    int rc = zg_error_lines(&pr, what);
    zg_lines_free(&pr);
    return rc;
}

int zg_cmd_train(int argc, char **argv) {
    train_args a;
    int rc = zg_cli_parse(&train_spec, argc, argv, &a, NULL);
    if (rc != 0) return rc < 0 ? 2 : 0;
    int status = 0;
    if (!a.config) {
        zg_errorf("zgpt train needs --config FILE (see 'zgpt train --help')");
        zg_error_print();
        status = 2;
    } else if (a.device && strcmp(a.device, "cpu") != 0 && strcmp(a.device, "cuda") != 0 &&
               strcmp(a.device, "auto") != 0) {
        zg_errorf("--device '%s': use cpu, cuda or auto", a.device);
        zg_error_print();
        status = 2;
    } else {
        /* --nproc N / --gpus N|all: start the workers (this process then only supervises them), as
         * deepspeed --num_gpus does; under mpirun/srun or as a worker, go on as one rank. */
        zg_launch_opts lo;
        memset(&lo, 0, sizeof lo);
        lo.nproc = (int)a.nproc;
        lo.preflight = train_preflight;
        lo.preflight_ctx = &a;
        if (a.nproc < 1) {
            zg_errorf("--nproc %lld: must be >= 1", (long long)a.nproc);
            zg_error_print();
            status = 2;
        } else if (a.gpus && zg_launch_parse_gpus(a.gpus, &lo.gpus) != 0) {
            zg_error_print();
            status = 2;
        } else if (a.gpus && a.device && strcmp(a.device, "cuda") != 0) {
            zg_errorf("--gpus asks for GPUs but --device is '%s'", a.device);
            zg_error_print();
            status = 2;
        } else {
            if (a.gpus) a.device = "cuda";
            int is_parent = 0;
            int lrc = zg_launch_maybe(argc, argv, &lo, &is_parent);
            if (lrc < 0) {
                zg_error_print();
                status = 1;
            } else if (is_parent) {
                zg_strlist_free(&a.sets);
                return lrc;
            }
        }
    }
    if (status == 0) {
        zg_train_config cfg;
        if (zg_train_config_load(&cfg, a.config, a.deepspeed, a.sets.items, a.sets.count) != 0) {
            status = zg_cli_fail();
        } else {
            zg_train_options o = {a.device, a.resume, a.quiet};
            if (zg_train_run(&cfg, &o) != 0) status = zg_cli_fail();
            zg_train_config_free(&cfg);
        }
    }
    zg_strlist_free(&a.sets);
    return status;
}
