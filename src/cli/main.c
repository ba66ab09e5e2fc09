/* zgpt: wires the subcommands together; each command lives in its own cmd_<name>.c. */
#include "cli/commands.h"
#include "core/error.h"
#include "core/strutil.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command_entry;

static const command_entry commands[] = {
    {"prepare", zg_cmd_prepare, "tokenize text files into training/validation shards"},
    {"train", zg_cmd_train, "train or fine-tune a GPT-2 (DeepSpeed-style JSON config)"},
    {"eval", zg_cmd_eval, "mean next-token loss and perplexity of a model on a token file"},
    {"sample", zg_cmd_sample, "generate text from a model"},
    {"download", zg_cmd_download, "fetch a GPT-2 from the Hugging Face Hub into its cache (resumable)"},
    {"export", zg_cmd_export, "write a model as a Hugging Face folder (safetensors + config.json)"},
    {"tokenize", zg_cmd_tokenize, "text -> GPT-2 token ids"},
    {"detokenize", zg_cmd_detokenize, "GPT-2 token ids -> text"},
    {"bench", zg_cmd_bench, "measure training speed (tokens/s, per-op time, memory)"},
    {"plan", zg_cmd_plan, "print per-rank memory for a training config, stage and world size"},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void print_usage(FILE *f) {
    fprintf(f, "usage: zgpt <command> [options]\n       zgpt <command> --help\n       zgpt --version\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        zg_print_version();
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);

    const char *names[N_COMMANDS + 2];
    for (int i = 0; i < N_COMMANDS; i++) names[i] = commands[i].name;
    names[N_COMMANDS] = "--version";
    names[N_COMMANDS + 1] = "--help";
    const char *best = zg_str_closest(cmd, names, N_COMMANDS + 2);
    if (best)
        zg_errorf("unknown command '%s'; did you mean '%s'? (see 'zgpt --help')", cmd, best);
    else
        zg_errorf("unknown command '%s' (see 'zgpt --help')", cmd);
    zg_error_print();
    return 2;
}
