/* zgpt export: a model (checkpoint, HF folder, named model) as a Hugging Face folder, or as llm.c's model file. */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/hf.h"
#include "model/llmc_model.h"
#include "train/model_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model, *revision;
    const char *out;
    const char *dtype;
    const char *format;
} export_args;

static const zg_option export_opts[] = {
    ZG_OPT_STR(export_args, model, "model", "SRC", ZG_CLI_MODEL_HELP, NULL),
    ZG_OPT_STR(export_args, revision, "revision", "REV", ZG_CLI_REVISION_HELP, NULL),
    ZG_OPT_STR(export_args, out, "out", "DIR|FILE",
               "output folder (model.safetensors + config.json); with --format llmc, the model file", NULL),
    ZG_OPT_STR(export_args, dtype, "dtype", "fp32|fp16|bf16", "tensor dtype (llm.c's files: fp32 or bf16)", "fp32"),
    ZG_OPT_STR(export_args, format, "format", "hf|llmc",
               "hf: a Hugging Face folder; llmc: llm.c's model file (train_gpt2.cu -e FILE loads it)", "hf"),
    ZG_OPT_END,
};

static const zg_command_spec export_spec = {
    "export",
    "--model SRC --out DIR [--dtype fp32|fp16|bf16] [--format hf|llmc]",
    "Write a model as a Hugging Face GPT-2 folder that GPT2LMHeadModel.from_pretrained(DIR) loads, or as llm.c's "
    "model file.",
    export_opts,
    NULL,
    "The LM head is tied to the token embedding; the vocabulary padding is dropped."};

int zg_cmd_export(int argc, char **argv) {
    export_args a;
    int rc = zg_cli_parse(&export_spec, argc, argv, &a, NULL);
    if (rc != 0) return rc < 0 ? 2 : 0;
    if (!a.model || !a.out) {
        zg_errorf("zgpt export needs --model SRC and --out DIR (see 'zgpt export --help')");
        zg_error_print();
        return 2;
    }
    zg_dtype dt;
    if (zg_dtype_parse(a.dtype, &dt) != 0) {
        zg_error_prefix("--dtype");
        zg_error_print();
        return 2;
    }
    int llmc = strcmp(a.format, "llmc") == 0;
    if (!llmc && strcmp(a.format, "hf") != 0) {
        zg_errorf("--format '%s': expected hf or llmc", a.format);
        zg_error_print();
        return 2;
    }
    if (llmc && dt == ZG_F16) {
        zg_errorf("--dtype fp16 --format llmc: llm.c's model files are fp32 (version 3) or bf16 (version 5)");
        zg_error_print();
        return 2;
    }
    zg_model_source src;
    char spec[1024];
    if (zg_cli_model_spec(a.model, a.revision, spec, sizeof spec) != 0) return zg_cli_fail();
    if (zg_model_source_open(&src, spec, 1) != 0) return zg_cli_fail();
    gpt2_param_table t;
    int status = 0;
    if (gpt2_param_table_init(&t, &src.cfg) != 0) {
        zg_model_source_close(&src);
        return zg_cli_fail();
    }
    float *host = malloc(t.num_params * sizeof(float));
    if (!host) {
        zg_errorf("out of host memory for %zu parameters", t.num_params);
        status = zg_cli_fail();
    } else if (zg_model_source_load(&src, &src.cfg, host, t.num_params) != 0 ||
               (llmc ? llmc_model_write(a.out, &src.cfg, host, dt) : hf_export(a.out, &src.cfg, host, dt)) != 0) {
        status = zg_cli_fail();
    } else {
        char desc[600];
        zg_model_source_describe(&src, desc, sizeof desc);
        printf("exported %s (%.2fM parameters, %s) to %s%s\n", desc, (double)gpt2_param_count_unpadded(&src.cfg) / 1e6,
               zg_dtype_name(dt), a.out, llmc ? " (llm.c's model file)" : "/model.safetensors + config.json");
    }
    free(host);
    gpt2_param_table_free(&t);
    zg_model_source_close(&src);
    return status;
}
