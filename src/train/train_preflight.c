/* What a launcher checks once before it starts the workers (zg_launch_opts.preflight), and the checks it shares
 * with the trainer: a mistake every rank would make is then said once, instead of once per rank and again in the
 * launcher's failure report. The workers still check the same things (the same functions) when they start. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "model/llmc_model.h"
#include "text/dataloader.h"
#include "train/model_source.h"
#include "train/trainer.h"
#include "train/zero.h"

int zg_train_resume_requested(const zg_train_config *cfg, const zg_train_options *opts) {
    return (opts && opts->resume) || (cfg->init_from && strcmp(cfg->init_from, "resume") == 0);
}

int zg_train_out_dir_check(const zg_train_config *cfg, int resume) {
    char *latest = zg_path_join(cfg->out_dir, "latest");
    int exists = zg_file_exists(latest);
    free(latest);
    if (resume && !exists) {
        /* nanoGPT's init_from='resume' reads out_dir/ckpt.pt: its weights can start a run, its optimizer state not */
        char *nano = zg_path_join(cfg->out_dir, "ckpt.pt"), *llmc = llmc_latest_model(cfg->out_dir);
        int has_nano = zg_file_exists(nano);
        int rc = llmc ? zg_errorf("nothing to resume in out_dir '%s' (no 'latest' checkpoint): it is llm.c's output "
                                  "folder, which zgpt cannot resume (its optimizer state files are llm.c's); start "
                                  "from its newest weights with init_from '%s' and another out_dir",
                                  cfg->out_dir, llmc)
                 : has_nano
                     ? zg_errorf("nothing to resume in out_dir '%s' (no 'latest' checkpoint): its ckpt.pt is "
                                 "nanoGPT's, which zgpt cannot resume (the optimizer state and data position are "
                                 "nanoGPT's); start from its weights with init_from '%s' and another out_dir",
                                 cfg->out_dir, nano)
                     : zg_errorf("nothing to resume in out_dir '%s' (no 'latest' checkpoint); start without "
                                 "--resume (init_from scratch or a model)",
                                 cfg->out_dir);
        free(nano);
        free(llmc);
        return rc;
    }
    char *ds = exists ? zg_deepspeed_tag_folder(cfg->out_dir) : NULL;
    if (ds != NULL) {
        int rc = zg_errorf("out_dir '%s' is a DeepSpeed checkpoint folder (its 'latest' names '%s'): zgpt cannot %s it "
                           "(DeepSpeed's optimizer state and data position are not zgpt's); start from its fp32 "
                           "weights with init_from '%s' and another out_dir",
                           cfg->out_dir, ds, resume ? "resume" : "write into", cfg->out_dir);
        free(ds);
        return rc;
    }
    if (!resume && exists)
        return zg_errorf("out_dir '%s' already holds a run (it has a 'latest' checkpoint); continue it with --resume, "
                         "or choose another out_dir",
                         cfg->out_dir);
    return 0;
}

int zg_train_data_check(const zg_train_config *cfg) {
    if (cfg->n_data == 0) return zg_errorf("config: no \"data\" given; set it to a folder made by 'zgpt prepare'");
    for (int i = 0; i < cfg->n_data; i++)
        if (zg_data_path_check(cfg->data[i].path) != 0) return -1;
    return 0;
}

int zg_train_offload_step_env(void) {
    const char *v = getenv("ZGPT_OFFLOAD_STEP");
    if (!v || !*v) return 0;
    if (strcmp(v, "v12") == 0) return 1;
    return zg_errorf("ZGPT_OFFLOAD_STEP is \"%s\"; allowed: v12 (or unset)", v);
}

void zg_train_preflight(const zg_train_config *cfg, const zg_train_options *opts, int world, zg_lines *pr) {
    if (cfg != NULL) {
        zg_train_config batch = *cfg; /* resolve_batch writes only the batch's scalars */
        if (zg_train_config_resolve_batch(&batch, world) != 0) zg_lines_add_error(pr);
        if (zg_train_data_check(cfg) != 0) zg_lines_add_error(pr);
        if (zg_train_out_dir_check(cfg, zg_train_resume_requested(cfg, opts)) != 0) zg_lines_add_error(pr);
    }
    if (zg_zero_env_check() != 0) zg_lines_add_error(pr);
    if (zg_train_offload_step_env() < 0) zg_lines_add_error(pr);
    if (cfg == NULL) return;
    /* A model from the hub: found in the cache, or downloaded here, once and with the download's progress,
     * instead of by every worker at once behind the cache's lock. Only when nothing else is wrong (no
     * download before a refusal); a path that exists is left to the workers (a checkpoint's full check
     * would read it all twice). */
    const char *from = cfg->init_from;
    if (pr->n == 0 && !zg_train_resume_requested(cfg, opts) && from && strcmp(from, "scratch") != 0 &&
        strncmp(from, "hf:", 3) != 0 && !zg_file_exists(from) && !zg_dir_exists(from)) {
        zg_model_source src;
        memset(&src, 0, sizeof src);
        if (zg_model_source_open(&src, from, 1) != 0) {
            zg_error_prefix("init_from '%s'", from);
            zg_lines_add_error(pr);
        } else {
            zg_model_source_close(&src);
        }
    }
}
