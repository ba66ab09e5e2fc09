/* zgpt detokenize: GPT-2 token ids (as written by 'zgpt tokenize') -> the exact bytes they encode. */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/fileio.h"
#include "text/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *input;
    const char *tokenizer;
} detokenize_args;

static const zg_option detokenize_options[] = {
    ZG_OPT_STR(detokenize_args, input, "input", "FILE", "token ids to decode (default: standard input)", NULL),
    ZG_OPT_STR(detokenize_args, tokenizer, "tokenizer", "DIR", ZG_CLI_TOKENIZER_HELP, NULL),
    ZG_OPT_END,
};

static const zg_command_spec detokenize_spec = {
    "detokenize",
    "[--input FILE] [--tokenizer DIR]",
    "decode GPT-2 token ids back into the exact bytes",
    detokenize_options,
    NULL,
    "Reads decimal token ids separated by spaces or newlines (the output of 'zgpt tokenize') and writes\n"
    "the bytes they stand for to standard output. Nothing is written if any id is invalid."};

/* Parses whitespace-separated decimal ids; a one-line error names the first bad one and where. */
static int parse_ids(const char *src, const char *text, size_t len, int vocab, zg_tokens *out) {
    size_t i = 0;
    while (i < len) {
        char c = text[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
            i++;
            continue;
        }
        size_t start = i;
        long long v = 0;
        while (i < len && text[i] >= '0' && text[i] <= '9') {
            if (v <= 100000000LL) v = v * 10 + (text[i] - '0');
            i++;
        }
        int bad_char = i < len && !(text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t');
        if (i == start || bad_char) {
            size_t e = start;
            while (e < len && e - start < 24 && text[e] != ' ' && text[e] != '\n' && text[e] != '\r' && text[e] != '\t')
                e++;
            return zg_errorf("%s: '%.*s' at byte %zu is not a token id; expected decimal integers 0..%d separated "
                             "by spaces (the output of 'zgpt tokenize')",
                             src, (int)(e - start), text + start, start, vocab - 1);
        }
        if (v >= vocab)
            return zg_errorf("%s: token id %.*s (byte %zu) is out of range; the vocabulary has %d tokens (ids 0..%d)",
                             src, (int)(i - start > 24 ? 24 : i - start), text + start, start, vocab, vocab - 1);
        zg_tokens_push(out, (int32_t)v);
    }
    return 0;
}

int zg_cmd_detokenize(int argc, char **argv) {
    detokenize_args a;
    int prc = zg_cli_parse(&detokenize_spec, argc, argv, &a, NULL);
    if (prc < 0) return 2;
    if (prc > 0) return 0;

    const char *src = a.input ? a.input : "standard input";
    zg_tokenizer *tok = NULL;
    if (zg_tokenizer_init(&tok, a.tokenizer) != 0) return zg_cli_fail();
    char *text = NULL;
    size_t len = 0;
    if (a.input && !zg_file_exists(a.input) && !zg_dir_exists(a.input)) {
        zg_tokenizer_free(tok);
        zg_errorf("--input '%s' does not exist; pass a file of token ids (from 'zgpt tokenize'), or pipe them on "
                  "standard input",
                  a.input);
        return zg_cli_fail();
    }
    if (zg_file_read_all(a.input ? a.input : "/dev/stdin", &text, &len) != 0) {
        zg_tokenizer_free(tok);
        return zg_cli_fail();
    }
    zg_tokens ids = {0};
    int rc = parse_ids(src, text, len, zg_tokenizer_vocab_size(tok), &ids);
    free(text);
    char *out = NULL;
    size_t olen = 0, ocap = 0;
    if (rc == 0) rc = zg_tokenizer_decode(tok, ids.ids, ids.len, &out, &olen, &ocap);
    zg_tokens_free(&ids);
    zg_tokenizer_free(tok);
    if (rc != 0) {
        free(out);
        return zg_cli_fail();
    }
    size_t wrote = olen ? fwrite(out, 1, olen, stdout) : 0;
    free(out);
    if (wrote != olen || fflush(stdout) != 0) {
        zg_errorf("cannot write the decoded text to standard output: %s", strerror(errno));
        return zg_cli_fail();
    }
    return 0;
}
