/* zgpt tokenize: text -> GPT-2 token ids, as decimal integers separated by single spaces, with a
 * newline at the end (the contract other tools and tests rely on). */
#include "cli/cli_common.h"
#include "cli/commands.h"
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
    ZG_OPT_STR(tokenize_args, tokenizer, "tokenizer", "DIR",
               "folder with encoder.json + vocab.bpe or vocab.json + merges.txt (default: the bundled GPT-2 "
               "vocabulary)",
               NULL),
    ZG_OPT_FLAG(tokenize_args, allow_special, "allow-special",
                "encode the text <|endoftext|> as the special token 50256 (default: as ordinary text)"),
    ZG_OPT_FLAG(tokenize_args, stats, "stats",
                "print bytes, tokens and single-threaded encoding speed (vocabulary loading and I/O excluded) "
                "to stderr"),
    ZG_OPT_END,
};

static const zg_command_spec tokenize_spec = {
    "tokenize", "[--input FILE] [--tokenizer DIR] [--allow-special]",
    "encode text (any bytes) as GPT-2 token ids, exactly as tiktoken's \"gpt2\" encoding", tokenize_options, NULL,
    "Writes the ids to standard output as decimal integers separated by single spaces, with a newline at\n"
    "the end. 'zgpt detokenize' turns them back into the exact input bytes."};

/* Formats ids as "a b c\n" into one buffer; written only once the whole input has encoded. */
static double now_seconds(void) {
    struct timespec ts;
    ZG_CHECK_SYS(clock_gettime(CLOCK_MONOTONIC, &ts));
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *format_ids(const zg_tokens *t, size_t *len) {
    char *buf = zg_malloc(t->len * 7 + 2); /* ids are < 10^6 here, so at most 6 digits + a space */
    char *p = buf;
    for (size_t i = 0; i < t->len; i++) {
        if (i) *p++ = ' ';
        char tmp[12];
        int n = 0;
        uint32_t v = (uint32_t)t->ids[i];
        do tmp[n++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        while (n) *p++ = tmp[--n];
    }
    *p++ = '\n';
    *len = (size_t)(p - buf);
    return buf;
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
    double t0 = now_seconds();
    int rc = zg_encoder_encode(enc, text, len, a.allow_special, &ids);
    double secs = now_seconds() - t0;
    if (rc != 0) zg_error_prefix("%s", a.input ? a.input : "standard input");
    zg_encoder_free(enc);
    free(text);
    zg_tokenizer_free(tok);
    if (rc != 0) {
        zg_tokens_free(&ids);
        return zg_cli_fail();
    }
    if (a.stats)
        fprintf(stderr, "zgpt tokenize: %zu bytes -> %zu tokens in %.4f s: %.2f MB/s single-threaded, %.3f bytes/token\n",
                len, ids.len, secs, secs > 0 ? (double)len / secs / 1e6 : 0.0,
                ids.len ? (double)len / (double)ids.len : 0.0);
    size_t olen;
    char *out = format_ids(&ids, &olen);
    zg_tokens_free(&ids);
    size_t wrote = fwrite(out, 1, olen, stdout);
    free(out);
    if (wrote != olen || fflush(stdout) != 0) {
        zg_errorf("cannot write the token ids to standard output: %s", strerror(errno));
        return zg_cli_fail();
    }
    return 0;
}
