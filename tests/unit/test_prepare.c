/* zgpt prepare as a library: parallel encoding equals serial on text full of cut points, documents and
 * <|endoftext|> with several files, shard rotation, identical re-runs, stale shards, and that a failed
 * run leaves nothing that looks complete. Needs the tokenizer (data/tokenizer/gpt2). */
#include "core/error.h"
#include "core/fileio.h"
#include "testutil.h"
#include "text/dataloader.h"
#include "text/prepare.h"
#include "text/shard.h"
#include "text/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zg_tokenizer *tok;
static char *root;

/* Text with every kind of line start and end around the cut points: whitespace runs before and after
 * '\n', CRLF, a contraction right after a newline, digits, punctuation, non-ASCII letters and spaces
 * (NBSP, U+3000) after newlines (which must not be cut), blank lines, and long lines. */
static char *stress_text(size_t *len) {
    static const char *lines[] = {
        "First Citizen:",
        "Before we proceed any further, hear me speak.",
        "",
        "  indented line",
        "trailing spaces   ",
        "\ttab first",
        "'s contraction at the start",
        "'ll and 'VE and 'Re",
        "12345 digits",
        "\xd9\xa3\xd9\xa4 arabic-indic digits",
        "!!! punctuation ???",
        "caf\xc3\xa9 na\xc3\xafve",
        "\xc2\xa0nbsp first",
        "\xe3\x80\x80ideographic space",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
        "CRLF line\r",
        "\r",
        "   ",
        "x",
        "emoji \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd and \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9",
        "http://example.com/a?b=c",
        "int main(void) { return 0; }",
        "    4 spaces of code",
        "a\x0b"
        "b\x0c"
        "c",
        "ends in nbsp\xc2\xa0",
        "ends in U+3000\xe3\x80\x80",
        "ends in NEL\xc2\x85",
        "\xe2\x80\xa8line separator",
        "bad utf-8 \xff\xfe end\xc3",
    };
    size_t n_lines = sizeof lines / sizeof lines[0];
    size_t cap = 1 << 20, n = 0;
    char *t = malloc(cap);
    uint64_t r = 11;
    for (int i = 0; i < 6000; i++) {
        const char *l = lines[zt_rand_u64(&r) % n_lines];
        size_t k = strlen(l);
        int nl = 1 + (int)(zt_rand_u64(&r) % 3 == 0) * (int)(zt_rand_u64(&r) % 3);
        if (n + k + 8 > cap) break;
        memcpy(t + n, l, k);
        n += k;
        for (int j = 0; j < nl; j++) t[n++] = '\n';
    }
    *len = n;
    return t;
}

static void test_parallel_equals_serial(void) {
    size_t len;
    char *text = stress_text(&len);
    zg_tokens serial = {0};
    zg_encoder *enc = zg_encoder_new(tok);
    ZT_CHECK(zg_encoder_encode(enc, text, len, 0, &serial) == 0);
    zg_encoder_free(enc);
    int cuts = 0;
    for (size_t p = zg_prepare_next_cut(text, len, 0); p < len; p = zg_prepare_next_cut(text, len, p + 1)) cuts++;
    ZT_CHECK_MSG(cuts > 1500, "only %d cut points", cuts);
    /* piece_bytes 1 cuts at every cut point; the others at assorted ones */
    size_t pieces[4] = {1, 37, 4096, 1 << 20};
    for (int i = 0; i < 4; i++) {
        zg_tokens par = {0};
        ZT_CHECK(zg_prepare_encode_parallel(tok, text, len, pieces[i], 2, &par) == 0);
        int same = par.len == serial.len && memcmp(par.ids, serial.ids, par.len * sizeof *par.ids) == 0;
        ZT_CHECK_MSG(same, "piece %zu: %zu tokens in parallel, %zu serial", pieces[i], par.len, serial.len);
        zg_tokens_free(&par);
    }
    /* Cuts the rule forbids would change tokens: "\n\n" + "b" is one pre-token "\n\n" at the end of a
     * piece but "\n", "\n" inside the whole text, so places after a run of whitespace are never cut. */
    const char *bad = "a\n\nb";
    zg_tokens whole = {0}, halves = {0};
    enc = zg_encoder_new(tok);
    ZT_CHECK(zg_encoder_encode(enc, bad, strlen(bad), 0, &whole) == 0);
    ZT_CHECK(zg_encoder_encode(enc, bad, 3, 0, &halves) == 0);
    ZT_CHECK(zg_encoder_encode(enc, bad + 3, strlen(bad) - 3, 0, &halves) == 0);
    ZT_CHECK(whole.len != halves.len || memcmp(whole.ids, halves.ids, whole.len * sizeof *whole.ids) != 0);
    ZT_CHECK(zg_prepare_next_cut(bad, strlen(bad), 0) == strlen(bad));
    zg_encoder_free(enc);
    zg_tokens_free(&whole);
    zg_tokens_free(&halves);
    zg_tokens_free(&serial);
    free(text);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ZT_CHECK(f != NULL);
    if (!f) return;
    ZT_CHECK(fputs(text, f) >= 0);
    ZT_CHECK(fclose(f) == 0);
}

static void encode_str(const char *s, size_t n, zg_tokens *out) {
    zg_encoder *enc = zg_encoder_new(tok);
    ZT_CHECK(zg_encoder_encode(enc, s, n, 0, out) == 0);
    zg_encoder_free(enc);
}

/* All tokens of a split, concatenated over its shards in meta.json order (train_000000, ...). */
static void read_split(const char *dir, const char *split, int n_shards, zg_tokens *out) {
    for (int i = 0; i < n_shards; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s_%06d.bin", split, i);
        char *p = zg_path_join(dir, name);
        zg_shard s;
        ZT_CHECK_MSG(zg_shard_open(&s, p, ZG_GPT2_VOCAB_SIZE) == 0, "%s", zg_error_message());
        for (uint64_t k = 0; k < s.n_tokens; k++) zg_tokens_push(out, zg_shard_token(&s, k));
        zg_shard_close(&s);
        free(p);
    }
}

/* Byte offset of character number `chars` (UTF-8). */
static size_t char_offset(const char *s, size_t n, size_t chars) {
    size_t seen = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80 && seen++ == chars) return i;
    return n;
}

static void test_documents(void) {
    char *in = zg_path_join(root, "corpus");
    char *sub = zg_path_join(in, "sub");
    ZT_CHECK(zg_dir_make(sub) == 0);
    /* sorted order: corpus/a.txt, corpus/b.txt, corpus/sub/c.txt; notes.md is not a *.txt */
    const char *a = "Hello world.\nSecond line of a.\n";
    const char *b = "B text <|endoftext|> stays text.\n";
    const char *c = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac last document, long enough to hold the split point.\n";
    char *pa = zg_path_join(in, "a.txt"), *pb = zg_path_join(in, "b.txt"), *pc = zg_path_join(sub, "c.txt");
    char *pn = zg_path_join(in, "notes.md"), *pe = zg_path_join(in, "empty.txt");
    write_text(pb, b);
    write_text(pa, a);
    write_text(pc, c);
    write_text(pn, "not a text input");
    write_text(pe, "");
    char *out = zg_path_join(root, "out");
    const char *inputs[1] = {in};
    zg_prepare_config cfg = {inputs, 1, out, 0.1, NULL, tok, 7, 2, 0};
    zg_prepare_stats st;
    ZT_CHECK_MSG(zg_prepare_run(&cfg, &st) == 0, "%s", zg_error_message());
    ZT_CHECK(st.n_files == 4); /* a, b, empty, c */

    /* Expected: the character split falls inside c (the last 10% of all characters). */
    size_t ca = strlen(a), cb = strlen(b), cc_bytes = strlen(c);
    size_t cc_chars = cc_bytes - 1 - 2 * 2; /* é is 2 bytes, 日本 3 bytes each */
    size_t total = ca + cb + cc_chars, train_chars = (size_t)((double)total * 0.9);
    ZT_CHECK(st.chars == total);
    size_t head_chars = train_chars - ca - cb; /* c's characters that stay in train */
    size_t head_bytes = char_offset(c, cc_bytes, head_chars);
    zg_tokens exp_train = {0}, exp_val = {0};
    encode_str(a, ca, &exp_train);
    zg_tokens_push(&exp_train, ZG_GPT2_EOT);
    encode_str(b, cb, &exp_train);
    zg_tokens_push(&exp_train, ZG_GPT2_EOT);
    encode_str(c, head_bytes, &exp_train);
    encode_str(c + head_bytes, cc_bytes - head_bytes, &exp_val);
    zg_tokens_push(&exp_val, ZG_GPT2_EOT);

    ZT_CHECK(st.train_tokens == exp_train.len && st.val_tokens == exp_val.len);
    ZT_CHECK(st.train_shards == (int)((exp_train.len + 6) / 7) && st.val_shards == (int)((exp_val.len + 6) / 7));
    zg_tokens got_train = {0}, got_val = {0};
    read_split(out, "train", st.train_shards, &got_train);
    read_split(out, "val", st.val_shards, &got_val);
    ZT_CHECK(got_train.len == exp_train.len &&
             memcmp(got_train.ids, exp_train.ids, exp_train.len * sizeof *exp_train.ids) == 0);
    ZT_CHECK(got_val.len == exp_val.len && memcmp(got_val.ids, exp_val.ids, exp_val.len * sizeof *exp_val.ids) == 0);

    /* The data loader reads the folder through meta.json. */
    zg_data_source src = {out, 1.0};
    zg_dataloader_config dc = {&src, 1, "train", 1, 4, ZG_GPT2_VOCAB_SIZE, ZG_SAMPLE_EPOCH, 0, 0, 1};
    zg_dataloader *dl = NULL;
    ZT_CHECK_MSG(zg_dataloader_init(&dl, &dc) == 0, "%s", zg_error_message());
    if (dl) ZT_CHECK(zg_dataloader_num_tokens(dl) == exp_train.len);
    zg_dataloader_free(dl);

    /* Re-run identically: same bytes. Then with bigger shards: the old extra shards disappear. */
    char *meta = zg_path_join(out, "meta.json"), *m1 = NULL, *m2 = NULL;
    size_t l1, l2;
    ZT_CHECK(zg_file_read_all(meta, &m1, &l1) == 0);
    char *s0 = zg_path_join(out, "train_000000.bin");
    uint64_t sum1 = 0, sum2 = 1;
    ZT_CHECK(zg_file_checksum(s0, &sum1, NULL) == 0);
    ZT_CHECK(zg_prepare_run(&cfg, &st) == 0);
    ZT_CHECK(zg_file_read_all(meta, &m2, &l2) == 0);
    ZT_CHECK(zg_file_checksum(s0, &sum2, NULL) == 0);
    ZT_CHECK(l1 == l2 && memcmp(m1, m2, l1) == 0 && sum1 == sum2);
    cfg.shard_tokens = 1000000;
    ZT_CHECK(zg_prepare_run(&cfg, &st) == 0);
    ZT_CHECK(st.train_shards == 1 && st.val_shards == 1);
    char *s1 = zg_path_join(out, "train_000001.bin");
    ZT_CHECK(!zg_file_exists(s1));

    /* Runs that fail validation touch nothing: a bad --val-fraction, an input with no text. */
    cfg.val_fraction = 1.0;
    ZT_CHECK(zg_prepare_run(&cfg, &st) == -1 && strstr(zg_error_message(), "--val-fraction 1") != NULL);
    cfg.val_fraction = 0.1;
    const char *empty_in[1] = {pe};
    char *out2 = zg_path_join(root, "out2");
    zg_prepare_config ec = {empty_in, 1, out2, 0.1, NULL, tok, 100, 1, 0};
    ZT_CHECK(zg_prepare_run(&ec, &st) == -1 && strstr(zg_error_message(), "empty input") != NULL);
    ZT_CHECK(!zg_dir_exists(out2));

    free(m1);
    free(m2);
    free(meta);
    free(s0);
    free(s1);
    free(out2);
    zg_tokens_free(&exp_train);
    zg_tokens_free(&exp_val);
    zg_tokens_free(&got_train);
    zg_tokens_free(&got_val);
    free(pa);
    free(pb);
    free(pc);
    free(pn);
    free(pe);
    free(out);
    free(sub);
    free(in);
}

int main(void) {
    if (zg_tokenizer_init(&tok, NULL) != 0) {
        fprintf(stderr, "cannot load the default tokenizer: %s\n", zg_error_message());
        return 1;
    }
    root = zt_tmpdir("prepare");
    zt_run("parallel_equals_serial", test_parallel_equals_serial);
    zt_run("documents", test_documents);
    zt_rmtree(root);
    free(root);
    zg_tokenizer_free(tok);
    return zt_finish();
}
