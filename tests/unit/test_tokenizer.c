/* GPT-2 tokenizer: exactness against tiktoken (expected ids written by tests/js/make_fixtures.mjs
 * from js-tiktoken and tiktoken), the BPE against an independent naive implementation of tiktoken's
 * merge loop, round trips of arbitrary bytes, both vocabulary layouts, bad vocabularies, threads. */
#include "core/error.h"
#include "core/fileio.h"
#include "testutil.h"
#include "text/tokenizer.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static zg_tokenizer *tok; /* the default (vendored) vocabulary, loaded once */

static char *fixture_path(const char *name) {
    char *dir = zg_path_join(zt_src_dir(), "tests/fixtures/tokenizer");
    char *p = zg_path_join(dir, name);
    free(dir);
    return p;
}

static char *read_fixture(const char *name, size_t *len) {
    char *p = fixture_path(name), *data = NULL;
    if (zg_file_read_all(p, &data, len) != 0) {
        zt_fail_at(__FILE__, __LINE__, "cannot read %s: %s", p, zg_error_message());
        free(p);
        return NULL;
    }
    free(p);
    return data;
}

/* Parses "1 2 3\n" into ids. */
static zg_tokens parse_ids(const char *s) {
    zg_tokens t = {0};
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        zg_tokens_push(&t, (int32_t)v);
        s = end;
    }
    return t;
}

static zg_tokens encode(zg_encoder *enc, const char *s, size_t n, int allow_special) {
    zg_tokens t = {0};
    int rc = zg_encoder_encode(enc, s, n, allow_special, &t);
    ZT_CHECK_MSG(rc == 0, "encode failed: %s", zg_error_message());
    return t;
}

static int same_ids(const zg_tokens *a, const zg_tokens *b, const char *what) {
    size_t n = a->len < b->len ? a->len : b->len;
    for (size_t i = 0; i < n; i++)
        if (a->ids[i] != b->ids[i]) {
            zt_fail_at(__FILE__, __LINE__, "%s: token %zu is %d, expected %d", what, i, a->ids[i], b->ids[i]);
            return 0;
        }
    if (a->len != b->len) {
        zt_fail_at(__FILE__, __LINE__, "%s: %zu tokens, expected %zu", what, a->len, b->len);
        return 0;
    }
    return 1;
}

/* Encodes fixture `text_name` and compares with `tokens_name`; returns the token count. */
static size_t check_fixture(zg_encoder *enc, const char *text_name, const char *tokens_name, int allow_special) {
    size_t tl, kl;
    char *text = read_fixture(text_name, &tl), *ids = read_fixture(tokens_name, &kl);
    size_t n = 0;
    if (text && ids) {
        zg_tokens want = parse_ids(ids), got = encode(enc, text, tl, allow_special);
        zt.checks++;
        same_ids(&got, &want, text_name);
        n = got.len;
        zg_tokens_free(&want);
        zg_tokens_free(&got);
    }
    free(text);
    free(ids);
    return n;
}

static void roundtrip(zg_encoder *enc, const char *s, size_t n, const char *what) {
    zg_tokens t = encode(enc, s, n, 0);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    ZT_CHECK(zg_tokenizer_decode(tok, t.ids, t.len, &buf, &len, &cap) == 0);
    ZT_CHECK_MSG(len == n && (n == 0 || memcmp(buf, s, n) == 0), "%s: decode(encode(x)) != x (%zu bytes back, %zu in)",
                 what, len, n);
    free(buf);
    zg_tokens_free(&t);
}

static void test_vocabulary(void) {
    ZT_CHECK(zg_tokenizer_vocab_size(tok) == ZG_GPT2_VOCAB_SIZE);
    ZT_CHECK(zg_tokenizer_eot(tok) == ZG_GPT2_EOT);
    size_t n;
    const char *b = zg_tokenizer_token_bytes(tok, ZG_GPT2_EOT, &n);
    ZT_CHECK(b && n == 13 && memcmp(b, "<|endoftext|>", 13) == 0);
    b = zg_tokenizer_token_bytes(tok, 220, &n); /* Ġ: the space byte */
    ZT_CHECK(b && n == 1 && b[0] == ' ');
    b = zg_tokenizer_token_bytes(tok, 188, &n); /* the first remapped byte is 0x00 */
    ZT_CHECK(b && n == 1 && b[0] == 0);
    ZT_CHECK(zg_tokenizer_token_bytes(tok, ZG_GPT2_VOCAB_SIZE, &n) == NULL);
    ZT_CHECK(strstr(zg_error_message(), "50257") != NULL);
    ZT_CHECK(zg_tokenizer_token_bytes(tok, -1, &n) == NULL);
    int32_t bad[] = {15496, 50257};
    char *buf = NULL;
    size_t len = 0, cap = 0;
    ZT_CHECK(zg_tokenizer_decode(tok, bad, 2, &buf, &len, &cap) == -1);
    ZT_CHECK(strstr(zg_error_message(), "50257") != NULL);
    free(buf);
}

static void test_against_tiktoken(void) {
    zg_encoder *enc = zg_encoder_new(tok);
    ZT_CHECK(check_fixture(enc, "stress.txt", "stress.tokens", 0) > 10000);
    char *input = zg_path_join(zt_src_dir(), "data/tinyshakespeare/input.txt");
    size_t n = 0;
    {
        size_t tl, kl;
        char *text = NULL, *ids = read_fixture("shakespeare.tokens", &kl);
        ZT_CHECK(zg_file_read_all(input, &text, &tl) == 0);
        if (text && ids) {
            zg_tokens want = parse_ids(ids), got = encode(enc, text, tl, 0);
            same_ids(&got, &want, "tinyshakespeare");
            n = got.len;
            zg_tokens_free(&want);
            zg_tokens_free(&got);
        }
        free(text);
        free(ids);
    }
    ZT_CHECK_MSG(n == 338025, "Tiny Shakespeare: %zu tokens, expected 338,025", n);
    /* U+0085 and U+FEFF: tiktoken (Rust regex, \s = White_Space) is the reference. */
    ZT_CHECK(check_fixture(enc, "ws_diverge.txt", "ws_diverge.tokens", 0) > 0);
    ZT_CHECK(check_fixture(enc, "special.txt", "special_ordinary.tokens", 0) > 0);
    ZT_CHECK(check_fixture(enc, "special.txt", "special_allow.tokens", 1) > 0);
    free(input);
    zg_encoder_free(enc);
}

static void test_known_ids(void) {
    zg_encoder *enc = zg_encoder_new(tok);
    struct {
        const char *text;
        int32_t ids[8];
        int n;
        int allow;
    } cases[] = {
        {"Hello world", {15496, 995}, 2, 0},
        {"<|endoftext|>", {27, 91, 437, 1659, 5239, 91, 29}, 7, 0},
        {"<|endoftext|>", {50256}, 1, 1},
        {"a<|endoftext|>b", {64, 50256, 65}, 3, 1},
        {" <|endoftext|> ", {220, 50256, 220}, 3, 1},
        {"<|endoftext", {27, 91, 437, 1659, 5239}, 5, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zg_tokens t = encode(enc, cases[i].text, strlen(cases[i].text), cases[i].allow);
        zg_tokens want = {cases[i].ids, (size_t)cases[i].n, (size_t)cases[i].n};
        char what[64];
        snprintf(what, sizeof what, "case %zu (%s)", i, cases[i].text);
        zt.checks++;
        same_ids(&t, &want, what);
        zg_tokens_free(&t);
    }
    /* Empty input: no tokens, with or without specials. */
    zg_tokens t = encode(enc, "", 0, 0);
    ZT_CHECK(t.len == 0);
    zg_tokens_free(&t);
    t = encode(enc, "", 0, 1);
    ZT_CHECK(t.len == 0);
    zg_tokens_free(&t);
    /* Appends: the output's earlier ids stay. */
    t = encode(enc, "Hello", 5, 0);
    ZT_CHECK(zg_encoder_encode(enc, " world", 6, 0, &t) == 0);
    ZT_CHECK(t.len == 2 && t.ids[0] == 15496 && t.ids[1] == 995);
    zg_tokens_free(&t);
    zg_encoder_free(enc);
}

/* ---- naive reference BPE: tiktoken's merge loop, rescanning every pair per merge ---------- */

typedef struct {
    char **keys;
    size_t *lens;
    int32_t *ids;
    size_t mask;
} naive_map;

static uint64_t fnv(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static void naive_init(naive_map *m) {
    m->mask = (1u << 18) - 1;
    m->keys = calloc(m->mask + 1, sizeof *m->keys);
    m->lens = calloc(m->mask + 1, sizeof *m->lens);
    m->ids = calloc(m->mask + 1, sizeof *m->ids);
    for (int32_t id = 0; id < ZG_GPT2_EOT; id++) { /* tiktoken's ranks: every token but the special */
        size_t n;
        const char *b = zg_tokenizer_token_bytes(tok, id, &n);
        size_t i = fnv(b, n) & m->mask;
        while (m->keys[i]) i = (i + 1) & m->mask;
        m->keys[i] = (char *)b;
        m->lens[i] = n;
        m->ids[i] = id;
    }
}

static int32_t naive_rank(const naive_map *m, const char *p, size_t n) {
    for (size_t i = fnv(p, n) & m->mask; m->keys[i]; i = (i + 1) & m->mask)
        if (m->lens[i] == n && memcmp(m->keys[i], p, n) == 0) return m->ids[i];
    return -1;
}

/* One piece: if it is a token, that token; else merge the lowest-ranked adjacent pair (leftmost on
 * ties) until none is left. Ranks are the token ids (GPT-2's ranks). */
static zg_tokens naive_bpe(const naive_map *m, const char *p, size_t n) {
    zg_tokens out = {0};
    int32_t whole = naive_rank(m, p, n);
    if (whole >= 0) {
        zg_tokens_push(&out, whole);
        return out;
    }
    size_t *start = malloc((n + 1) * sizeof *start), parts = n;
    for (size_t i = 0; i <= n; i++) start[i] = i;
    for (;;) {
        int32_t best = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts; i++) {
            int32_t r = naive_rank(m, p + start[i], start[i + 2] - start[i]);
            if (r >= 0 && (best < 0 || r < best)) {
                best = r;
                at = i;
            }
        }
        if (best < 0) break;
        memmove(start + at + 1, start + at + 2, (parts - at - 1) * sizeof *start);
        parts--;
    }
    for (size_t i = 0; i < parts; i++) zg_tokens_push(&out, naive_rank(m, p + start[i], start[i + 1] - start[i]));
    free(start);
    return out;
}

static void test_bpe_against_naive(void) {
    naive_map m;
    naive_init(&m);
    zg_encoder *enc = zg_encoder_new(tok);
    uint64_t seed = 42;
    static const char *alphabets[] = {"abcdefghijklmnopqrstuvwxyz",      "aeiou", "ab", "esrtn", "xqzj",
                                      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"};
    char *buf = malloc(5000);
    for (int trial = 0; trial < 400; trial++) {
        const char *alpha = alphabets[trial % 6];
        size_t na = strlen(alpha);
        size_t n = 1 + (size_t)(zt_rand_u64(&seed) % (trial < 380 ? 40 : 4000)); /* a few long words */
        size_t off = 0;
        if (trial % 3 == 0) buf[off++] = ' '; /* " ?\p{L}+": one piece with its leading space */
        for (size_t i = 0; i < n; i++) buf[off++] = alpha[zt_rand_u64(&seed) % na];
        zg_tokens want = naive_bpe(&m, buf, off), got = encode(enc, buf, off, 0);
        char what[64];
        snprintf(what, sizeof what, "random word %d (%zu bytes)", trial, off);
        zt.checks++;
        same_ids(&got, &want, what);
        zg_tokens_free(&want);
        zg_tokens_free(&got);
    }
    /* Runs of one letter: every pair has the same rank, so the leftmost-first rule decides. */
    for (size_t n = 2; n < 600; n += 37) {
        memset(buf, 'a', n);
        zg_tokens want = naive_bpe(&m, buf, n), got = encode(enc, buf, n, 0);
        zt.checks++;
        same_ids(&got, &want, "run of a");
        zg_tokens_free(&want);
        zg_tokens_free(&got);
    }
    /* Pieces of invalid UTF-8 are merged as bytes, like any piece. */
    for (int trial = 0; trial < 100; trial++) {
        size_t n = 1 + (size_t)(zt_rand_u64(&seed) % 30);
        for (size_t i = 0; i < n; i++) buf[i] = (char)(0x80 + zt_rand_u64(&seed) % 64); /* continuation bytes */
        zg_tokens want = naive_bpe(&m, buf, n), got = encode(enc, buf, n, 0);
        zt.checks++;
        same_ids(&got, &want, "invalid bytes");
        zg_tokens_free(&want);
        zg_tokens_free(&got);
    }
    free(buf);
    free(m.keys);
    free(m.lens);
    free(m.ids);
    zg_encoder_free(enc);
}

/* Length of the valid UTF-8 character at p (RFC 3629: no overlongs, surrogates or > U+10FFFF),
 * 0 if none starts there. */
static size_t utf8_char_len(const unsigned char *p, size_t n) {
    if (p[0] < 0x80) return 1;
    size_t len = p[0] >= 0xC2 && p[0] <= 0xDF   ? 2
                 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
                 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4
                                                : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    if (p[0] == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
    if (p[0] == 0xED && p[1] >= 0xA0) return 0; /* surrogate */
    if (p[0] == 0xF0 && p[1] < 0x90) return 0;  /* overlong */
    if (p[0] == 0xF4 && p[1] >= 0x90) return 0; /* above U+10FFFF */
    return len;
}

/* The documented semantics for invalid UTF-8: the tokens of x are the tokens of its valid stretches
 * and of its invalid runs, each encoded on its own. */
static void check_invalid_split(zg_encoder *enc, const char *s, size_t n, const char *what) {
    zg_tokens whole = encode(enc, s, n, 0), parts = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        int valid = utf8_char_len(u + i, n - i) > 0;
        while (i < n) {
            size_t cl = utf8_char_len(u + i, n - i);
            if ((cl > 0) != valid) break;
            i += cl ? cl : 1;
        }
        ZT_CHECK(zg_encoder_encode(enc, s + start, i - start, 0, &parts) == 0);
    }
    zt.checks++;
    same_ids(&whole, &parts, what);
    zg_tokens_free(&whole);
    zg_tokens_free(&parts);
}

static void test_roundtrip(void) {
    zg_encoder *enc = zg_encoder_new(tok);
    size_t n;
    char *s = read_fixture("invalid_utf8.bin", &n);
    if (s) roundtrip(enc, s, n, "invalid_utf8.bin");
    if (s) check_invalid_split(enc, s, n, "invalid_utf8.bin split at invalid runs");
    free(s);
    s = read_fixture("stress.txt", &n);
    if (s) roundtrip(enc, s, n, "stress.txt");
    free(s);
    /* Lone surrogates encoded as UTF-8 bytes (invalid in UTF-8): each byte survives. */
    const char sur[] = "a\xed\xa0\x80 b\xed\xbf\xbf\xed\xa0\xbd\xed\xb8\x80";
    roundtrip(enc, sur, sizeof sur - 1, "lone surrogates");
    zg_tokens t = encode(enc, "\xed\xa0\x80", 3, 0);
    ZT_CHECK(t.len >= 1);
    zg_tokens_free(&t);
    /* A single invalid byte is its byte token; it does not pull in the valid text around it. */
    t = encode(enc, "Hello\xffworld", 11, 0);
    ZT_CHECK(t.len == 3 && t.ids[0] == 15496 && t.ids[2] == 6894);
    zg_tokens_free(&t);
    /* Random bytes, and random mixes of UTF-8 fragments, spaces and invalid bytes. */
    uint64_t seed = 7;
    static const char *frags[] = {" ",
                                  "  ",
                                  "\t",
                                  "\n",
                                  "\r\n",
                                  "a",
                                  "Z",
                                  "é",
                                  "ß",
                                  "я",
                                  "中",
                                  "😀",
                                  "🏽",
                                  "\xe2\x80\x8d",
                                  "'s",
                                  "'LL",
                                  "1",
                                  "٣",
                                  "!",
                                  "\xc2\xa0",
                                  "\xe3\x80\x80",
                                  "\xff",
                                  "\x80",
                                  "\xe2\x82",
                                  "\xf0\x9f",
                                  "\xc0\xaf",
                                  "<|endoftext|>",
                                  "\xc2\x85",
                                  "\xef\xbb\xbf",
                                  "\0"};
    char *buf = malloc(4096);
    for (int trial = 0; trial < 500; trial++) {
        size_t len = 0, target = (size_t)(zt_rand_u64(&seed) % 300);
        if (trial % 2) {
            for (len = 0; len < target; len++) buf[len] = (char)zt_rand_u64(&seed);
        } else {
            while (len < target) {
                const char *f = frags[zt_rand_u64(&seed) % (sizeof frags / sizeof frags[0])];
                size_t fl = f[0] ? strlen(f) : 1;
                memcpy(buf + len, f, fl);
                len += fl;
            }
        }
        char what[48];
        snprintf(what, sizeof what, "random bytes %d", trial);
        roundtrip(enc, buf, len, what);
        check_invalid_split(enc, buf, len, what);
    }
    free(buf);
    /* A very long single word (1 MiB of letters, no space): one piece through the heap BPE. */
    size_t big = 1 << 20;
    char *w = malloc(big);
    for (size_t i = 0; i < big; i++) w[i] = "etaoinshrdlu"[zt_rand_u64(&seed) % 12];
    roundtrip(enc, w, big, "1 MiB word");
    memset(w, 'x', big);
    roundtrip(enc, w, big, "1 MiB of x");
    free(w);
    zg_encoder_free(enc);
}

/* ---- Hugging Face layout: vocab.json (compact, in id order) + merges.txt ------------------- */

static int write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static void test_hf_layout(void) {
    char *dir = zt_tmpdir("tok-hf");
    char *gpt2 = zg_path_join(zt_src_dir(), "data/tokenizer/gpt2");
    char *enc_path = zg_path_join(gpt2, "encoder.json"), *bpe_path = zg_path_join(gpt2, "vocab.bpe");
    char *json = NULL, *bpe = NULL;
    size_t jl, bl;
    ZT_CHECK(zg_file_read_all(enc_path, &json, &jl) == 0);
    ZT_CHECK(zg_file_read_all(bpe_path, &bpe, &bl) == 0);
    if (!json || !bpe) goto out;
    /* Re-serialize: keys in id order, no spaces (how HF's vocab.json is written). */
    cJSON *src = cJSON_Parse(json);
    int n = cJSON_GetArraySize(src);
    const char **by_id = calloc((size_t)n, sizeof *by_id);
    for (cJSON *it = src->child; it; it = it->next) by_id[it->valueint] = it->string;
    cJSON *dst = cJSON_CreateObject();
    for (int i = 0; i < n; i++) cJSON_AddNumberToObject(dst, by_id[i], i);
    char *hf = cJSON_PrintUnformatted(dst);
    char *vp = zg_path_join(dir, "vocab.json"), *mp = zg_path_join(dir, "merges.txt");
    ZT_CHECK(write_file(vp, hf, strlen(hf)) == 0);
    /* merges.txt: HF's "#version: 0.2" header; here without the final newline. */
    size_t ml = bl;
    while (ml > 0 && bpe[ml - 1] == '\n') ml--;
    ZT_CHECK(write_file(mp, bpe, ml) == 0);
    ZT_CHECK(strncmp(bpe, "#version", 8) == 0);

    zg_tokenizer *hft = NULL;
    ZT_CHECK_MSG(zg_tokenizer_init(&hft, dir) == 0, "HF layout: %s", zg_error_message());
    if (hft) {
        ZT_CHECK(zg_tokenizer_checksum(hft) == zg_tokenizer_checksum(tok));
        ZT_CHECK(zg_tokenizer_vocab_size(hft) == ZG_GPT2_VOCAB_SIZE && zg_tokenizer_eot(hft) == ZG_GPT2_EOT);
        ZT_CHECK(strcmp(zg_tokenizer_dir(hft), dir) == 0);
        zg_encoder *a = zg_encoder_new(tok), *b = zg_encoder_new(hft);
        size_t sl;
        char *s = read_fixture("stress.txt", &sl);
        if (s) {
            zg_tokens ta = encode(a, s, sl, 1), tb = encode(b, s, sl, 1);
            zt.checks++;
            same_ids(&tb, &ta, "HF layout vs OpenAI layout");
            zg_tokens_free(&ta);
            zg_tokens_free(&tb);
        }
        free(s);
        zg_encoder_free(a);
        zg_encoder_free(b);
        zg_tokenizer_free(hft);
    }
    /* A different vocabulary must have a different checksum: drop the last merge. */
    const char *last = bpe + ml;
    while (last > bpe && last[-1] != '\n') last--;
    ZT_CHECK(write_file(mp, bpe, (size_t)(last - bpe)) == 0);
    hft = NULL;
    if (zg_tokenizer_init(&hft, dir) == 0) {
        ZT_CHECK(zg_tokenizer_checksum(hft) != zg_tokenizer_checksum(tok));
        zg_tokenizer_free(hft);
    }
    free(vp);
    free(mp);
    free(hf);
    free(by_id);
    cJSON_Delete(src);
    cJSON_Delete(dst);
out:
    free(json);
    free(bpe);
    free(enc_path);
    free(bpe_path);
    free(gpt2);
    zt_rmtree(dir);
    free(dir);
}

/* ---- bad vocabularies: one-line errors naming the file ------------------------------------ */

static void expect_init_error(const char *dir, const char *must_contain, const char *what) {
    zg_tokenizer *t = NULL;
    int rc = zg_tokenizer_init(&t, dir);
    ZT_CHECK_MSG(rc == -1 && t == NULL, "%s: init succeeded", what);
    const char *msg = zg_error_message();
    ZT_CHECK_MSG(strstr(msg, must_contain) != NULL, "%s: message '%s' lacks '%s'", what, msg, must_contain);
    ZT_CHECK_MSG(strchr(msg, '\n') == NULL, "%s: message is not one line", what);
    zg_tokenizer_free(t);
}

static void test_bad_vocab(void) {
    char *dir = zt_tmpdir("tok-bad");
    char *vp = zg_path_join(dir, "encoder.json"), *mp = zg_path_join(dir, "vocab.bpe");
    char *missing = zg_path_join(dir, "nope");
    expect_init_error(missing, "nope", "missing folder");
    expect_init_error(dir, "encoder.json", "empty folder");

    char *bpe_path = zg_path_join(zt_src_dir(), "data/tokenizer/gpt2/vocab.bpe");
    char *enc_path = zg_path_join(zt_src_dir(), "data/tokenizer/gpt2/encoder.json");
    char *bpe = NULL, *json = NULL;
    size_t bl = 0, jl = 0;
    ZT_CHECK(zg_file_read_all(bpe_path, &bpe, &bl) == 0 && zg_file_read_all(enc_path, &json, &jl) == 0);

    ZT_CHECK(write_file(vp, "{\"a\": 0,", 8) == 0);
    ZT_CHECK(write_file(mp, bpe, bl) == 0);
    expect_init_error(dir, vp, "truncated JSON");

    ZT_CHECK(write_file(vp, "[1, 2, 3]", 9) == 0);
    expect_init_error(dir, vp, "JSON array");

    /* Valid JSON, one id out of range. */
    char *j2 = malloc(jl + 16);
    memcpy(j2, json, jl);
    char *hit = strstr(j2, "\"!\": 0");
    if (hit) {
        memcpy(hit, "\"!\": 9", 6); /* id 9 twice, id 0 missing */
        ZT_CHECK(write_file(vp, j2, jl) == 0);
        expect_init_error(dir, vp, "duplicate id");
    }
    ZT_CHECK(write_file(vp, json, jl) == 0);
    /* A merges line that is not "A B". */
    const char badm[] = "#version: 0.2\n\xc4\xa0 t\nthis line is wrong\n";
    ZT_CHECK(write_file(mp, badm, sizeof badm - 1) == 0);
    expect_init_error(dir, "vocab.bpe line 3", "bad merges line");
    const char badm2[] = "#version: 0.2\nqqq zzz\n";
    ZT_CHECK(write_file(mp, badm2, sizeof badm2 - 1) == 0);
    expect_init_error(dir, "vocab.bpe line 2", "unknown merge token");
    ZT_CHECK(write_file(mp, "#version: 0.2\n", 14) == 0);
    expect_init_error(dir, "vocab.bpe", "no merges");
    /* And the real files in this folder load. */
    ZT_CHECK(write_file(mp, bpe, bl) == 0);
    zg_tokenizer *t = NULL;
    ZT_CHECK_MSG(zg_tokenizer_init(&t, dir) == 0, "copy of the vocabulary: %s", zg_error_message());
    if (t) ZT_CHECK(zg_tokenizer_checksum(t) == zg_tokenizer_checksum(tok));
    zg_tokenizer_free(t);

    free(j2);
    free(bpe);
    free(json);
    free(bpe_path);
    free(enc_path);
    free(vp);
    free(mp);
    free(missing);
    zt_rmtree(dir);
    free(dir);
}

/* ---- threads: one shared tokenizer, one encoder each ------------------------------------- */

typedef struct {
    const char *text;
    size_t len;
    zg_tokens out;
    int rc;
} thread_job;

static void *thread_encode(void *arg) {
    thread_job *j = arg;
    zg_encoder *enc = zg_encoder_new(tok);
    for (int rep = 0; rep < 3 && j->rc == 0; rep++) {
        j->out.len = 0;
        j->rc = zg_encoder_encode(enc, j->text, j->len, 1, &j->out);
    }
    zg_encoder_free(enc);
    return NULL;
}

static void test_threads(void) {
    size_t n;
    char *s = read_fixture("stress.txt", &n);
    if (!s) return;
    zg_encoder *enc = zg_encoder_new(tok);
    zg_tokens want = encode(enc, s, n, 1);
    zg_encoder_free(enc);
    enum { NT = 4 };
    pthread_t th[NT];
    thread_job jobs[NT];
    for (int i = 0; i < NT; i++) {
        jobs[i] = (thread_job){s, n, {0}, 0};
        ZT_CHECK(pthread_create(&th[i], NULL, thread_encode, &jobs[i]) == 0);
    }
    for (int i = 0; i < NT; i++) {
        ZT_CHECK(pthread_join(th[i], NULL) == 0);
        ZT_CHECK(jobs[i].rc == 0);
        zt.checks++;
        same_ids(&jobs[i].out, &want, "thread");
        zg_tokens_free(&jobs[i].out);
    }
    zg_tokens_free(&want);
    free(s);
}

int main(void) {
    if (zg_tokenizer_init(&tok, NULL) != 0) {
        fprintf(stderr, "cannot load the default tokenizer: %s\n", zg_error_message());
        return 1;
    }
    zt_run("vocabulary", test_vocabulary);
    zt_run("against_tiktoken", test_against_tiktoken);
    zt_run("known_ids", test_known_ids);
    zt_run("bpe_against_naive", test_bpe_against_naive);
    zt_run("roundtrip", test_roundtrip);
    zt_run("hf_layout", test_hf_layout);
    zt_run("bad_vocab", test_bad_vocab);
    zt_run("threads", test_threads);
    zg_tokenizer_free(tok);
    return zt_finish();
}
