/* Helpers shared by the cmd_*.c files. */
#ifndef ZG_CLI_COMMON_H
#define ZG_CLI_COMMON_H

#include "cli/options.h"

#include <stddef.h>

/* The help of --tokenizer, one text for every command that takes it. */
#define ZG_CLI_TOKENIZER_HELP                                                                                          \
    "folder with encoder.json + vocab.bpe or vocab.json + merges.txt (default: the bundled GPT-2 vocabulary)"

/* The help of --model, one text for every command that takes a model. */
#define ZG_CLI_MODEL_HELP                                                                                              \
    "checkpoint folder or out_dir, hf:PATH, gpt2..gpt2-xl, or a Hugging Face repo org/name (names and repos take "     \
    "@REVISION; read from the Hugging Face cache, downloaded when missing)"

/* The help of --revision, beside --model. */
#define ZG_CLI_REVISION_HELP                                                                                           \
    "with a hub name or repo id: the branch, tag or commit to read (the same as --model SRC@REV)"

/* --model and --revision as the one spec the model resolver takes ("org/name@rev") into buf[cap];
 * -1 with an error when both give a revision. Returns 0 (buf = model when revision is NULL). */
int zg_cli_model_spec(const char *model, const char *revision, char *buf, size_t cap);

/* Parses options; prints the error or help. Returns -1 (exit 2), 1 (help printed: exit 0), 0 (go on). */
int zg_cli_parse(const zg_command_spec *spec, int argc, char **argv, void *args, zg_strlist *positional);
/* Prints the pending zg_errorf message and returns 1 (the exit status for a failed command). */
int zg_cli_fail(void);

#endif
