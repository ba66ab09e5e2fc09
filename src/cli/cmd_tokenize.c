/* zgpt tokenize: text -> GPT-2 token ids, as decimal integers separated by single spaces, with a
 * newline at the end (the contract other tools and tests rely on). */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fileio.h"
#include "text/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *input;
    const char *tokenizer;
    int allow_special;
    int stats;
} tokenize_args;

static const zg_option tokenize_options[] = {
    ZG_OPT_STR(tokenize_args, input, "input", "FILE", "text to encode (default: standard input)", NULL),
    ZG_OPT_STR(tokenize_args, tokenizer, "tokenizer", "DIR", ZG_CLI_TOKENIZER_HELP, NULL),
    ZG_OPT_FLAG(tokenize_args, allow_special, "allow-special",
                "encode the text <|endoftext|> as the special token 50256 (default: as ordinary text)"),
    ZG_OPT_FLAG(tokenize_args, stats, "stats",
                "print bytes, tokens and single-threaded encoding speed (vocabulary loading and I/O excluded) "
                "to stderr"),
    ZG_OPT_END,
};

static const zg_command_spec tokenize_spec = {
    "tokenize",
    "[--input FILE] [--tokenizer DIR] [--allow-special] [--stats]",
    "encode text (any bytes) as GPT-2 token ids, exactly as tiktoken's \"gpt2\" encoding",
    tokenize_options,
    NULL,
    "Writes the ids to standard output as decimal integers separated by single spaces, with a newline at\n"
    "the end. 'zgpt detokenize' turns them back into the exact input bytes."};

/* Writes ids as "a b c\n" through a fixed buffer (the encoding is complete before anything is
 * written, so a bad input never leaves partial output). */
static int write_ids(const zg_tokens *t, FILE *f) {
    enum { CAP = 1 << 16 };
    char buf[CAP];
    size_t used = 0;
    for (size_t i = 0; i <= t->len; i++) {
        if (used > CAP - 16) {
            if (fwrite(buf, 1, used, f) != used) return -1;
            used = 0;
        }
        if (i == t->len) break;
        if (i) buf[used++] = ' ';
        char tmp[12];
        int n = 0;
        uint32_t v = (uint32_t)t->ids[i];
        do tmp[n++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        while (n) buf[used++] = tmp[--n];
    }
    buf[used++] = '\n';
    if (fwrite(buf, 1, used, f) != used) return -1;
    return fflush(f);
}

int zg_cmd_tokenize(int argc, char **argv) {
    tokenize_args a;
    int prc = zg_cli_parse(&tokenize_spec, argc, argv, &a, NULL);
    if (prc < 0) return 2;
    if (prc > 0) return 0;

    zg_tokenizer *tok = NULL;
    if (zg_tokenizer_init(&tok, a.tokenizer) != 0) return zg_cli_fail();
    char *text = NULL;
    size_t len = 0;
    if (a.input && !zg_file_exists(a.input) && !zg_dir_exists(a.input)) {
        zg_tokenizer_free(tok);
        zg_errorf("--input '%s' does not exist; pass an existing text file, or pipe the text on standard input",
                  a.input);
        return zg_cli_fail();
    }
    if (zg_file_read_all(a.input ? a.input : "/dev/stdin", &text, &len) != 0) {
        zg_tokenizer_free(tok);
        return zg_cli_fail();
    }
    zg_encoder *enc = zg_encoder_new(tok);
    zg_tokens ids = {0};
    double t0 = zg_now_s();
    int rc = zg_encoder_encode(enc, text, len, a.allow_special, &ids);
    double secs = zg_now_s() - t0;
    if (rc != 0) zg_error_prefix("%s", a.input ? a.input : "standard input");
    zg_encoder_free(enc);
    free(text);
    zg_tokenizer_free(tok);
    if (rc != 0) {
        zg_tokens_free(&ids);
        return zg_cli_fail();
    }
    if (a.stats)
        fprintf(stderr,
                "zgpt tokenize: %zu bytes -> %zu tokens in %.4f s: %.2f MB/s single-threaded, %.3f bytes/token\n", len,
                ids.len, secs, secs > 0 ? (double)len / secs / 1e6 : 0.0,
                ids.len ? (double)len / (double)ids.len : 0.0);
    int wrc = write_ids(&ids, stdout);
    zg_tokens_free(&ids);
    if (wrc != 0) {
        zg_errorf("cannot write the token ids to standard output: %s", strerror(errno));
        return zg_cli_fail();
    }
    return 0;
}
