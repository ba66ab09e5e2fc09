/* zgpt prepare: text files/folders -> token shards (the work is in text/prepare.c). */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/strutil.h"
#include "text/dataloader.h"
#include "text/prepare.h"

#include <stdio.h>
#include <unistd.h>

typedef struct {
    zg_strlist input;
    const char *out;
    double val_fraction;
    const char *tokenizer;
    int64_t shard_tokens;
    int64_t threads;
    const char *check;
    int64_t block_size;
} prepare_args;

static const zg_option prepare_opts[] = {
    ZG_OPT_LIST(prepare_args, input, "input", "PATH", "text files or folders (every *.txt below a folder, sorted)"),
    ZG_OPT_STR(prepare_args, out, "out", "DIR", "output folder for train_*.bin, val_*.bin and meta.json", NULL),
    ZG_OPT_DBL(prepare_args, val_fraction, "val-fraction", "X", "share of the text (from the end) kept for validation",
               "0.1"),
    ZG_OPT_STR(prepare_args, tokenizer, "tokenizer", "DIR", ZG_CLI_TOKENIZER_HELP, NULL),
    ZG_OPT_INT(prepare_args, shard_tokens, "shard-tokens", "N", "tokens per shard file", "100000000"),
    ZG_OPT_INT(prepare_args, threads, "threads", "N", "encoding threads (0 = all cores)", "0"),
    ZG_OPT_STR(prepare_args, check, "check", "DIR",
               "verify a prepared folder (zgpt, nanoGPT or llm.c shards) instead of preparing", NULL),
    ZG_OPT_INT(prepare_args, block_size, "block-size", "T",
               "with --check: the sequence length the splits must hold (T+1 tokens)", "1024"),
    ZG_OPT_END,
};

static const zg_command_spec prepare_spec = {
    "prepare",
    "--input PATH... --out DIR [options]",
    "Tokenize text files into training/validation token shards.",
    prepare_opts,
    NULL,
    "With one input file the first 90% of its characters become train and the rest val, exactly as\n"
    "nanoGPT's shakespeare prepare.py (no <|endoftext|>). With several files each file is a document\n"
    "ending with <|endoftext|>; the split is taken over all documents in order. Formats: docs/FORMATS.md.\n"
    "example: zgpt prepare --input data/tinyshakespeare/input.txt --out data/shakespeare",
};

/* --check: open both splits exactly as training will (every shard verified), and report them. */
static int check_folder(const prepare_args *a) {
    if (a->block_size < 1 || a->block_size > (1 << 24)) {
        zg_errorf("--block-size %lld must be between 1 and %d", (long long)a->block_size, 1 << 24);
        zg_error_print();
        return 2;
    }
    zg_tokenizer *tok;
    if (zg_tokenizer_init(&tok, a->tokenizer) != 0) return zg_cli_fail();
    int vocab = zg_tokenizer_vocab_size(tok);
    zg_tokenizer_free(tok);
    const char *splits[2] = {"train", "val"};
    uint64_t n[2];
    for (int i = 0; i < 2; i++) {
        zg_data_source src = {a->check, 1.0};
        zg_dataloader_config cfg = {&src, 1, splits[i], 1, (int)a->block_size, vocab, ZG_SAMPLE_RANDOM, 0, 0, 1};
        zg_dataloader *dl;
        if (zg_dataloader_init(&dl, &cfg) != 0) return zg_cli_fail();
        n[i] = zg_dataloader_num_tokens(dl);
        char desc[1024];
        printf("  %-5s %s\n", splits[i], zg_dataloader_describe(dl, desc, sizeof desc));
        zg_dataloader_free(dl);
    }
    printf("%s: ok: train %llu tokens, val %llu tokens (ids < %d, block size %lld)\n", a->check,
           (unsigned long long)n[0], (unsigned long long)n[1], vocab, (long long)a->block_size);
    return 0;
}

int zg_cmd_prepare(int argc, char **argv) {
    prepare_args a;
    int rc = zg_cli_parse(&prepare_spec, argc, argv, &a, NULL);
    if (rc != 0) {
        zg_strlist_free(&a.input);
        return rc < 0 ? 2 : 0;
    }
    if (a.check) {
        if (a.input.count || a.out) {
            zg_strlist_free(&a.input);
            zg_errorf("--check DIR verifies an existing folder; leave out --input and --out");
            zg_error_print();
            return 2;
        }
        return check_folder(&a);
    }
    if (a.input.count == 0 || !a.out) {
        zg_errorf("zgpt prepare needs %s (see 'zgpt prepare --help')",
                  a.input.count == 0 ? "--input PATH (a text file or folder)" : "--out DIR (the output folder)");
        zg_strlist_free(&a.input);
        zg_error_print();
        return 2;
    }
    if (a.shard_tokens < 1 || a.threads < 0 || a.threads > 4096) {
        if (a.shard_tokens < 1)
            zg_errorf("--shard-tokens %lld must be >= 1 (e.g. 100000000)", (long long)a.shard_tokens);
        else
            zg_errorf("--threads %lld must be between 0 (all cores) and 4096", (long long)a.threads);
        zg_strlist_free(&a.input);
        zg_error_print();
        return 2;
    }
    zg_prepare_config cfg = {
        .inputs = a.input.items,
        .n_inputs = a.input.count,
        .out_dir = a.out,
        .val_fraction = a.val_fraction,
        .tokenizer_dir = a.tokenizer,
        .shard_tokens = (uint64_t)a.shard_tokens,
        .threads = (int)a.threads,
        .progress = 1, /* a line on a terminal, plain lines every few seconds in a log */
    };
    zg_prepare_stats st;
    rc = zg_prepare_run(&cfg, &st);
    zg_strlist_free(&a.input);
    if (rc != 0) return zg_cli_fail();
    char b1[32];
    printf("prepared %d file%s (%s, %llu characters) in %.2f s: %.2f MB/s on %d thread%s\n", st.n_files,
           st.n_files == 1 ? "" : "s", zg_fmt_bytes((double)st.bytes, b1, sizeof b1), (unsigned long long)st.chars,
           st.seconds, st.seconds > 0 ? (double)st.bytes / 1e6 / st.seconds : 0.0, st.threads,
           st.threads == 1 ? "" : "s");
    printf("  train: %llu tokens in %d shard%s\n", (unsigned long long)st.train_tokens, st.train_shards,
           st.train_shards == 1 ? "" : "s");
    printf("  val:   %llu tokens in %d shard%s\n", (unsigned long long)st.val_tokens, st.val_shards,
           st.val_shards == 1 ? "" : "s");
    printf("  vocab_size %d (%s tokens), tokenizer checksum %016llx\n", st.vocab_size,
           st.vocab_size <= 65536 ? "uint16" : "uint32", (unsigned long long)st.tokenizer_checksum);
    printf("  output: %s/meta.json\n", cfg.out_dir);
    return 0;
}
