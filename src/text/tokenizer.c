/* GPT-2 byte-level BPE, exact to tiktoken's "gpt2" encoding.
 *
 * Encoding = pre-tokenize with the GPT-2 regex (PCRE2, JIT), then byte-pair-merge each piece.
 * The merge rule is tiktoken's, not the original GPT-2 Python's: repeatedly merge the adjacent pair
 * of parts whose concatenated BYTES have the lowest rank, leftmost first on ties. For GPT-2 the rank
 * of a merged token is its merge line number in vocab.bpe (id = 256 + rank), so both rules agree
 * except where tiktoken also merges a pair that concatenates to a known token by another route;
 * following tiktoken is what makes us byte-exact against it. A piece that is itself a token is
 * emitted directly (tiktoken does the same before running BPE).
 *
 * Loading: OpenAI's encoder.json + vocab.bpe or Hugging Face's vocab.json + merges.txt. Token strings
 * in both are written through GPT-2's byte-to-unicode table (every byte is a printable code point),
 * which we invert to get each token's raw bytes. */
#include "text/tokenizer.h"

#include "core/error.h"
#include "core/fileio.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* ---- token id arrays --------------------------------------------------------------------- */

void zg_tokens_push(zg_tokens *t, int32_t id) {
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        t->ids = zg_realloc(t->ids, cap * sizeof *t->ids);
        t->cap = cap;
    }
    t->ids[t->len++] = id;
}

void zg_tokens_free(zg_tokens *t) {
    free(t->ids);
    t->ids = NULL;
    t->len = t->cap = 0;
}

/* ---- the pre-tokenizer regex ------------------------------------------------------------- */

/* tiktoken compiles the pattern with Rust's regex engine, where \s is the Unicode White_Space
 * property. PCRE2's \s (even with PCRE2_UCP) differs from it (it adds U+180E), so the class is
 * spelled out: U+0009-000D, U+0020, U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F,
 * U+205F, U+3000. \S becomes the negated class. */
#define ZG_WS                                                                                                          \
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" ZG_WS "\\p{L}\\p{N}]+"
                                   "|[" ZG_WS "]+(?![^" ZG_WS "])|[" ZG_WS "]+";

/* ---- the tokenizer ----------------------------------------------------------------------- */

/* One slot of the bytes -> id table. Most tokens are at most 8 bytes, so the first 8 bytes of the key
 * live in the slot itself: a lookup of a short token touches one cache line and no token bytes. */
typedef struct {
    uint64_t head; /* the token's first 8 bytes (zero-padded) */
    uint32_t tag;  /* hash bits << 16 | length */
    int32_t id;    /* -1 = empty */
} vocab_slot;

struct zg_tokenizer {
    char *dir;
    int vocab_size;
    int eot;
    uint64_t checksum;
    char *bytes;       /* all token bytes, back to back */
    uint64_t *tok_off; /* (offset << 16 | length) of token id's bytes; tokens are < 64 KiB */
    int32_t *rank;     /* merge rank of a merged token; -1 for single bytes and special tokens */
    int32_t *rank_id;  /* the token of each rank (merge number; -1 if that merge remade a token) */
    int32_t byte_id[256];
    int32_t *rank2;    /* [b0 << 8 | b1]: rank of the 2-byte token b0 b1, or -1 (256 KiB, so the
                        * first round of BPE lookups stays in the CPU cache) */
    vocab_slot *slots; /* bytes -> id for ordinary tokens (single bytes and merge results) */
    size_t slot_mask;
    int32_t *specials; /* ids of special tokens (in the vocabulary, but no merge makes them) */
    int n_specials;
    pcre2_code *re;
    int jit; /* the regex was JIT-compiled */
};

static inline const char *tok_bytes(const zg_tokenizer *tok, int32_t id, size_t *len) {
    uint64_t v = tok->tok_off[id];
    *len = (size_t)(v & 0xFFFF);
    return tok->bytes + (v >> 16);
}

/* The first 8 bytes of p (fewer if n < 8), zero-padded. */
static inline uint64_t key_head(const char *p, size_t n) {
    uint64_t h = 0;
    memcpy(&h, p, n < 8 ? n : 8);
    return h;
}

/* Hash of a key given its head: a multiply-xorshift mix for the common short key, XXH3 of the
 * rest for longer ones. */
static inline uint64_t key_hash(uint64_t head, const char *p, size_t n) {
    uint64_t x = head ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull);
    if (n > 8) x ^= XXH3_64bits(p + 8, n - 8);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 32);
}

static inline uint32_t key_tag(uint64_t h, size_t n) { return (uint32_t)(h >> 48) << 16 | (uint32_t)n; }

/* id of the ordinary token with exactly these bytes (head and hash h already computed), or -1. */
static inline int32_t vocab_find_hashed(const zg_tokenizer *tok, const char *p, size_t n, uint64_t head, uint64_t h) {
    if (n > 0xFFFF) return -1;
    uint32_t tag = key_tag(h, n);
    for (size_t i = (size_t)h & tok->slot_mask;; i = (i + 1) & tok->slot_mask) {
        const vocab_slot *s = &tok->slots[i];
        if (s->id < 0) return -1;
        if (s->tag == tag && s->head == head) {
            if (n <= 8) return s->id;
            size_t len;
            const char *b = tok_bytes(tok, s->id, &len);
            if (memcmp(b + 8, p + 8, n - 8) == 0) return s->id;
        }
    }
}

static inline int32_t vocab_find(const zg_tokenizer *tok, const char *p, size_t n) {
    uint64_t head = key_head(p, n);
    return vocab_find_hashed(tok, p, n, head, key_hash(head, p, n));
}

static void vocab_insert(zg_tokenizer *tok, int32_t id) {
    size_t n;
    const char *p = tok_bytes(tok, id, &n);
    uint64_t head = key_head(p, n);
    uint64_t h = key_hash(head, p, n);
    size_t i = (size_t)h & tok->slot_mask;
    while (tok->slots[i].id >= 0) i = (i + 1) & tok->slot_mask;
    tok->slots[i].head = head;
    tok->slots[i].tag = key_tag(h, n);
    tok->slots[i].id = id;
}

/* GPT-2's byte-to-unicode table: bytes that are printable Latin-1 map to themselves; the others
 * (0-32, 127-160, 173) map, in increasing order, to U+0100 onwards. Returns code point -> byte
 * (-1 = not a byte's code point) for code points below 512. */
static void byte_decoder_init(int16_t dec[512]) {
    for (int i = 0; i < 512; i++) dec[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        dec[printable ? b : 256 + extra++] = (int16_t)b;
    }
}

/* Decodes a token string in byte-to-unicode form into raw bytes (out must hold strlen(s) bytes).
 * Returns the byte count, or -1 if s contains a code point that is not in the table. */
static long unicode_to_bytes(const int16_t dec[512], const char *s, size_t slen, unsigned char *out) {
    const unsigned char *p = (const unsigned char *)s, *end = p + slen;
    long n = 0;
    while (p < end) {
        uint32_t cp;
        if (p[0] < 0x80) {
            cp = p[0];
            p += 1;
        } else if ((p[0] & 0xE0) == 0xC0 && p + 1 < end && (p[1] & 0xC0) == 0x80) {
            cp = ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
            p += 2;
        } else {
            return -1; /* every table code point is below U+0800: two UTF-8 bytes at most */
        }
        if (cp >= 512 || dec[cp] < 0) return -1;
        out[n++] = (unsigned char)dec[cp];
    }
    return n;
}

/* Printable, truncated form of a key for error messages. */
static const char *short_key(const char *s, char *buf, size_t cap) {
    size_t n = strlen(s);
    if (n + 1 <= cap) {
        memcpy(buf, s, n + 1);
    } else {
        memcpy(buf, s, cap - 4);
        memcpy(buf + cap - 4, "...", 4);
    }
    for (char *c = buf; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == '\'') *c = '?';
    return buf;
}

typedef struct {
    const char *vocab_path;
    const char *merges_path;
    int16_t dec[512];
    int32_t *merge_left, *merge_right; /* ids of each merge's parts, in rank order */
    size_t n_merges;
} load_ctx;

/* Reads the token -> id JSON object (encoder.json / vocab.json) into tok's byte tables. */
static int load_vocab(zg_tokenizer *tok, load_ctx *lc) {
    char *text = NULL;
    size_t len = 0;
    if (zg_file_read_all(lc->vocab_path, &text, &len) != 0) return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return zg_errorf("%s: not a JSON object of token -> id; the vocabulary file is damaged, restore it "
                         "(zgpt ships data/tokenizer/gpt2/encoder.json)",
                         lc->vocab_path);
    }
    int n = cJSON_GetArraySize(root);
    if (n < 257 || n > (1 << 24)) {
        cJSON_Delete(root);
        return zg_errorf("%s: %d tokens; a byte-level BPE vocabulary has at least 257 (256 bytes + "
                         "<|endoftext|>)",
                         lc->vocab_path, n);
    }
    tok->vocab_size = n;
    tok->tok_off = zg_calloc((size_t)n, sizeof *tok->tok_off);
    tok->rank = zg_malloc((size_t)n * sizeof *tok->rank);
    unsigned char *seen = zg_calloc((size_t)n, 1);
    size_t cap = 1 << 20, used = 0;
    tok->bytes = zg_malloc(cap);
    int rc = 0;
    char kb[48];
    for (cJSON *it = root->child; it; it = it->next) {
        double v = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
        if (v < 0 || v >= n || v != (double)(int32_t)v) {
            rc = zg_errorf("%s: token '%s' has id %s; ids must be integers 0..%d, each used once", lc->vocab_path,
                           short_key(it->string, kb, sizeof kb), cJSON_IsNumber(it) ? "out of range" : "not a number",
                           n - 1);
            break;
        }
        int32_t id = (int32_t)v;
        if (seen[id]) {
            rc = zg_errorf("%s: id %d is used twice (again by token '%s'); each id must name one token", lc->vocab_path,
                           id, short_key(it->string, kb, sizeof kb));
            break;
        }
        seen[id] = 1;
        size_t slen = strlen(it->string);
        if (slen > 0xFFFF) {
            rc =
                zg_errorf("%s: token '%s' is longer than 64 KiB", lc->vocab_path, short_key(it->string, kb, sizeof kb));
            break;
        }
        if (used + slen > cap) {
            while (used + slen > cap) cap *= 2;
            tok->bytes = zg_realloc(tok->bytes, cap);
        }
        long blen = unicode_to_bytes(lc->dec, it->string, slen, (unsigned char *)tok->bytes + used);
        if (blen <= 0) {
            rc = zg_errorf("%s: token '%s' is not in GPT-2's byte-to-unicode form; this is not a byte-level BPE "
                           "vocabulary",
                           lc->vocab_path, short_key(it->string, kb, sizeof kb));
            break;
        }
        tok->tok_off[id] = ((uint64_t)used << 16) | (uint64_t)blen;
        tok->rank[id] = -1;
        used += (size_t)blen;
    }
    free(seen);
    cJSON_Delete(root);
    return rc;
}

/* (Re)builds the bytes -> id table: every token (ordinary_only = 0, used while loading) or only the
 * tokens that ordinary text can produce (single bytes and merge results). */
static int vocab_index(zg_tokenizer *tok, const char *vocab_path, int ordinary_only) {
    if (!tok->slots) {
        size_t n = 1024;
        while (n < (size_t)tok->vocab_size * 2) n *= 2; /* load factor <= 1/2: short probe chains */
        tok->slots = zg_malloc(n * sizeof *tok->slots);
        tok->slot_mask = n - 1;
    }
    for (size_t i = 0; i <= tok->slot_mask; i++) tok->slots[i].id = -1;
    for (int32_t id = 0; id < tok->vocab_size; id++) {
        size_t len;
        const char *b = tok_bytes(tok, id, &len);
        if (ordinary_only && len > 1 && tok->rank[id] < 0) continue;
        int32_t other = vocab_find(tok, b, len);
        if (other >= 0)
            return zg_errorf("%s: ids %d and %d are the same token; each token must appear once", vocab_path, other,
                             id);
        vocab_insert(tok, id);
    }
    return 0;
}

/* Splits one merges line "A B" into the ids of its two tokens. */
static int merge_parse_line(zg_tokenizer *tok, load_ctx *lc, const char *line, size_t len, size_t lineno,
                            int32_t *ids) {
    const char *sp = memchr(line, ' ', len);
    if (!sp || sp == line || sp + 1 == line + len || memchr(sp + 1, ' ', (size_t)(line + len - sp - 1)))
        return zg_errorf("%s line %zu: expected two tokens separated by one space (\"A B\"); the merges file is "
                         "damaged, restore it",
                         lc->merges_path, lineno);
    unsigned char buf[1024];
    const char *part[2] = {line, sp + 1};
    size_t plen[2] = {(size_t)(sp - line), (size_t)(line + len - sp - 1)};
    for (int k = 0; k < 2; k++) {
        long b = plen[k] < sizeof buf ? unicode_to_bytes(lc->dec, part[k], plen[k], buf) : -1;
        int32_t id = b > 0 ? vocab_find(tok, (const char *)buf, (size_t)b) : -1;
        if (id < 0)
            return zg_errorf("%s line %zu: '%.*s' is not a token of %s; the two files do not belong together",
                             lc->merges_path, lineno, (int)(plen[k] > 40 ? 40 : plen[k]), part[k], lc->vocab_path);
        ids[k] = id;
    }
    return 0;
}

/* Reads the merges (vocab.bpe / merges.txt): an optional "#version" first line, then "A B" per line
 * in priority order. Each merge's result must be a token; its rank is the merge's line order. */
static int load_merges(zg_tokenizer *tok, load_ctx *lc) {
    char *text = NULL;
    size_t len = 0;
    if (zg_file_read_all(lc->merges_path, &text, &len) != 0) return -1;
    size_t cap = 1024, lineno = 0;
    lc->merge_left = zg_malloc(cap * sizeof *lc->merge_left);
    lc->merge_right = zg_malloc(cap * sizeof *lc->merge_right);
    int rc = 0;
    const char *p = text, *end = text + len;
    char *cat = zg_malloc(2 * 0xFFFF);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line = p, *le = nl ? nl : end;
        p = nl ? nl + 1 : end;
        lineno++;
        size_t ll = (size_t)(le - line);
        if (ll > 0 && line[ll - 1] == '\r') ll--; /* tolerate CRLF files */
        if (ll == 0) continue;
        if (lineno == 1 && ll >= 8 && memcmp(line, "#version", 8) == 0) continue;
        int32_t ids[2];
        if ((rc = merge_parse_line(tok, lc, line, ll, lineno, ids)) != 0) break;
        size_t la, lb;
        const char *a = tok_bytes(tok, ids[0], &la), *b = tok_bytes(tok, ids[1], &lb);
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int32_t res = vocab_find(tok, cat, la + lb);
        if (res < 0) {
            rc = zg_errorf("%s line %zu: the merge '%.*s' makes a token that %s does not have; the two files do not "
                           "belong together",
                           lc->merges_path, lineno, (int)(ll > 60 ? 60 : ll), line, lc->vocab_path);
            break;
        }
        /* A later merge that rebuilds an existing token cannot change tiktoken's result (ranks are
         * per token), so the first one sets the rank. */
        if (tok->rank[res] < 0) tok->rank[res] = (int32_t)lc->n_merges;
        if (lc->n_merges == cap) {
            cap *= 2;
            lc->merge_left = zg_realloc(lc->merge_left, cap * sizeof *lc->merge_left);
            lc->merge_right = zg_realloc(lc->merge_right, cap * sizeof *lc->merge_right);
        }
        lc->merge_left[lc->n_merges] = ids[0];
        lc->merge_right[lc->n_merges] = ids[1];
        lc->n_merges++;
    }
    free(text);
    free(cat);
    if (rc == 0 && lc->n_merges == 0)
        rc = zg_errorf("%s: no merges; the merges file is empty or damaged, restore it", lc->merges_path);
    return rc;
}

/* Layout-independent identity of the vocabulary: every token's bytes in id order, then every merge
 * as a pair of ids in rank order. */
static uint64_t tokenizer_checksum(const zg_tokenizer *tok, const load_ctx *lc) {
    zg_hasher h;
    zg_hasher_init(&h);
    static const char tag[] = "zgpt-bpe-v1";
    zg_hasher_update(&h, tag, sizeof tag);
    uint32_t v = (uint32_t)tok->vocab_size;
    zg_hasher_update(&h, &v, sizeof v);
    for (int32_t id = 0; id < tok->vocab_size; id++) {
        size_t len;
        const char *b = tok_bytes(tok, id, &len);
        uint32_t l32 = (uint32_t)len;
        zg_hasher_update(&h, &l32, sizeof l32);
        zg_hasher_update(&h, b, len);
    }
    uint64_t nm = lc->n_merges;
    zg_hasher_update(&h, &nm, sizeof nm);
    for (size_t i = 0; i < lc->n_merges; i++) {
        int32_t pair[2] = {lc->merge_left[i], lc->merge_right[i]};
        zg_hasher_update(&h, pair, sizeof pair);
    }
    return zg_hasher_final(&h);
}

static int regex_compile(zg_tokenizer *tok) {
    int err = 0;
    PCRE2_SIZE off = 0;
    /* MATCH_INVALID_UTF: the subject may hold any bytes. Invalid UTF-8 sequences never match and
     * act as barriers; the encoder turns each run of them into its own piece (see encode_text). */
    tok->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &err,
                            &off, NULL);
    if (!tok->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return zg_errorf("PCRE2 cannot compile the GPT-2 pattern at offset %zu: %s (PCRE2 built without UTF "
                         "support? install libpcre2-dev >= 10.34)",
                         (size_t)off, (const char *)msg);
    }
    /* Without JIT (PCRE2 built without it) the interpreter gives the same matches, only slower. */
    tok->jit = pcre2_jit_compile(tok->re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

void zg_tokenizer_free(zg_tokenizer *tok) {
    if (!tok) return;
    free(tok->dir);
    free(tok->bytes);
    free(tok->tok_off);
    free(tok->rank);
    free(tok->rank_id);
    free(tok->rank2);
    free(tok->slots);
    free(tok->specials);
    if (tok->re) pcre2_code_free(tok->re);
    free(tok);
}

static int tokenizer_load(zg_tokenizer *tok, load_ctx *lc) {
    if (load_vocab(tok, lc) != 0) return -1;
    if (vocab_index(tok, lc->vocab_path, 0) != 0) return -1;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (vocab_find(tok, &c, 1) < 0)
            return zg_errorf("%s: byte 0x%02X has no token; a byte-level BPE vocabulary needs all 256 bytes",
                             lc->vocab_path, b);
    }
    static const char eot[] = "<|endoftext|>";
    tok->eot = vocab_find(tok, eot, sizeof eot - 1);
    if (tok->eot < 0) return zg_errorf("%s: no <|endoftext|> token; this is not a GPT-2 vocabulary", lc->vocab_path);
    if (load_merges(tok, lc) != 0) return -1;
    /* Tokens that are neither bytes nor merge results cannot come out of BPE: they are special. */
    tok->specials = zg_malloc(sizeof *tok->specials * 8);
    int spec_cap = 8;
    for (int32_t id = 0; id < tok->vocab_size; id++) {
        size_t len;
        tok_bytes(tok, id, &len);
        if (len == 1 || tok->rank[id] >= 0) continue;
        if (tok->n_specials == spec_cap) {
            spec_cap *= 2;
            tok->specials = zg_realloc(tok->specials, sizeof *tok->specials * (size_t)spec_cap);
        }
        tok->specials[tok->n_specials++] = id;
    }
    if (vocab_index(tok, lc->vocab_path, 1) != 0) return -1;
    tok->rank_id = zg_malloc(lc->n_merges * sizeof *tok->rank_id);
    for (size_t r = 0; r < lc->n_merges; r++) tok->rank_id[r] = -1;
    tok->rank2 = zg_malloc(65536 * sizeof *tok->rank2);
    for (size_t i = 0; i < 65536; i++) tok->rank2[i] = -1;
    for (int32_t id = 0; id < tok->vocab_size; id++) {
        size_t len;
        const unsigned char *b = (const unsigned char *)tok_bytes(tok, id, &len);
        if (len == 1) tok->byte_id[b[0]] = id;
        if (tok->rank[id] < 0) continue;
        tok->rank_id[tok->rank[id]] = id;
        if (len == 2) tok->rank2[b[0] << 8 | b[1]] = tok->rank[id];
    }
    tok->checksum = tokenizer_checksum(tok, lc);
    return regex_compile(tok);
}

int zg_tokenizer_init(zg_tokenizer **out, const char *dir) {
    *out = NULL;
    char buf[4096];
    if (!dir) {
        const char *data = zg_data_dir(buf, sizeof buf);
        if (!data) return -1;
        size_t n = strlen(data);
        if (n + sizeof "/tokenizer/gpt2" > sizeof buf) return zg_errorf("data folder path '%s' is too long", data);
        memcpy(buf + n, "/tokenizer/gpt2", sizeof "/tokenizer/gpt2");
        dir = buf;
    }
    if (!zg_dir_exists(dir))
        return zg_errorf("tokenizer folder '%s' does not exist; pass a folder with encoder.json + vocab.bpe (OpenAI) "
                         "or vocab.json + merges.txt (Hugging Face)",
                         dir);
    const char *layouts[2][2] = {{"encoder.json", "vocab.bpe"}, {"vocab.json", "merges.txt"}};
    char *vp = NULL, *mp = NULL;
    for (int i = 0; i < 2 && !vp; i++) {
        char *a = zg_path_join(dir, layouts[i][0]), *b = zg_path_join(dir, layouts[i][1]);
        if (zg_file_exists(a) && zg_file_exists(b)) {
            vp = a;
            mp = b;
        } else {
            free(a);
            free(b);
        }
    }
    if (!vp)
        return zg_errorf("tokenizer folder '%s' has neither encoder.json + vocab.bpe (OpenAI) nor vocab.json + "
                         "merges.txt (Hugging Face); pass --tokenizer a folder with one of these pairs",
                         dir);
    zg_tokenizer *tok = zg_calloc(1, sizeof *tok);
    tok->dir = zg_strdup(dir);
    load_ctx lc = {.vocab_path = vp, .merges_path = mp};
    byte_decoder_init(lc.dec);
    int rc = tokenizer_load(tok, &lc);
    free(lc.merge_left);
    free(lc.merge_right);
    free(vp);
    free(mp);
    if (rc != 0) {
        zg_tokenizer_free(tok);
        return -1;
    }
    *out = tok;
    return 0;
}

int zg_tokenizer_vocab_size(const zg_tokenizer *tok) { return tok->vocab_size; }
int zg_tokenizer_eot(const zg_tokenizer *tok) { return tok->eot; }
uint64_t zg_tokenizer_checksum(const zg_tokenizer *tok) { return tok->checksum; }
const char *zg_tokenizer_dir(const zg_tokenizer *tok) { return tok->dir; }

const char *zg_tokenizer_token_bytes(const zg_tokenizer *tok, int32_t id, size_t *len) {
    if (id < 0 || id >= tok->vocab_size) {
        zg_errorf("token id %ld is out of range; the vocabulary has %d tokens (ids 0..%d)", (long)id, tok->vocab_size,
                  tok->vocab_size - 1);
        return NULL;
    }
    return tok_bytes(tok, id, len);
}

int zg_tokenizer_decode(const zg_tokenizer *tok, const int32_t *ids, size_t n, char **buf, size_t *len, size_t *cap) {
    for (size_t i = 0; i < n; i++) {
        size_t tl;
        const char *b = zg_tokenizer_token_bytes(tok, ids[i], &tl);
        if (!b) return -1;
        if (*len + tl > *cap) {
            size_t c = *cap ? *cap : 4096;
            while (*len + tl > c) c *= 2;
            *buf = zg_realloc(*buf, c);
            *cap = c;
        }
        memcpy(*buf + *len, b, tl);
        *len += tl;
    }
    return 0;
}

/* ---- the per-thread encoder -------------------------------------------------------------- */

/* The word cache maps a piece's bytes to its tokens. Only pieces that are not themselves tokens
 * (those are one hash lookup already) and at most CACHE_MAX_PIECE bytes long are cached; when the
 * table or its arenas fill up, the cache is emptied and refills with what the text repeats. */
#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_PIECE 255
#define CACHE_KEY_ARENA (1u << 22)
#define CACHE_VAL_ARENA (1u << 20)

typedef struct {
    uint64_t hash;
    uint32_t key_off, val_off;
    uint16_t key_len, val_len; /* key_len 0 = empty slot */
} cache_slot;

struct zg_encoder {
    const zg_tokenizer *tok;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    /* BPE scratch, indexed by byte position in the piece: each part is named by its first byte. */
    size_t cap;
    uint32_t *nxt, *prv; /* start of the next / previous part (nxt == n: last part) */
    int32_t *prank;      /* rank of the pair (part i, next part), -1 if none */
    int32_t *pid;        /* token id of the part starting at i */
    uint64_t *heap;      /* (rank << 32 | position): min-heap of candidate merges */
    /* word cache */
    cache_slot *cache;
    size_t cache_used;
    char *ckeys;
    size_t ckeys_used;
    int32_t *cvals;
    size_t cvals_used;
};

zg_encoder *zg_encoder_new(const zg_tokenizer *tok) {
    zg_encoder *enc = zg_calloc(1, sizeof *enc);
    enc->tok = tok;
    enc->md = ZG_CHECK_PTR(pcre2_match_data_create_from_pattern(tok->re, NULL));
    enc->mctx = ZG_CHECK_PTR(pcre2_match_context_create(NULL));
    if (tok->jit) {
        enc->jstack = ZG_CHECK_PTR(pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL));
        pcre2_jit_stack_assign(enc->mctx, NULL, enc->jstack);
    }
    enc->cache = zg_calloc(CACHE_SLOTS, sizeof *enc->cache);
    enc->ckeys = zg_malloc(CACHE_KEY_ARENA);
    enc->cvals = zg_malloc(CACHE_VAL_ARENA * sizeof *enc->cvals);
    return enc;
}

void zg_encoder_free(zg_encoder *enc) {
    if (!enc) return;
    pcre2_match_data_free(enc->md);
    pcre2_match_context_free(enc->mctx);
    if (enc->jstack) pcre2_jit_stack_free(enc->jstack);
    free(enc->nxt);
    free(enc->prv);
    free(enc->prank);
    free(enc->pid);
    free(enc->heap);
    free(enc->cache);
    free(enc->ckeys);
    free(enc->cvals);
    free(enc);
}

static void heap_push(uint64_t *h, size_t *n, uint64_t key) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent] <= key) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = key;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], last = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (h[c] >= last) break;
        h[i] = h[c];
        i = c;
    }
    if (m > 0) h[i] = last;
    return top;
}

/* Rank of merging the part at i with the next one: the rank of the concatenated bytes, -1 if they
 * are not a token. */
static inline int32_t pair_rank(const zg_encoder *enc, const char *p, uint32_t n, uint32_t i) {
    uint32_t j = enc->nxt[i];
    if (j >= n) return -1;
    uint32_t e = enc->nxt[j];
    if (e - i == 2) return enc->tok->rank2[(unsigned char)p[i] << 8 | (unsigned char)p[i + 1]];
    int32_t id = vocab_find(enc->tok, p + i, e - i);
    return id >= 0 ? enc->tok->rank[id] : -1;
}

/* Byte-pair merge of one piece (n >= 2 bytes, not itself a token). O(n log n): a min-heap of
 * candidate pairs keyed by (rank, position), with stale entries skipped when popped; a merge only
 * changes the pairs on its two sides. Same result as tiktoken's rescan: lowest rank first, the
 * leftmost of equal ranks first. */
static void bpe_merge(zg_encoder *enc, const char *p, uint32_t n, zg_tokens *out) {
    if (n > enc->cap) {
        size_t cap = n < 256 ? 256 : (size_t)n;
        enc->nxt = zg_realloc(enc->nxt, cap * sizeof *enc->nxt);
        enc->prv = zg_realloc(enc->prv, cap * sizeof *enc->prv);
        enc->prank = zg_realloc(enc->prank, cap * sizeof *enc->prank);
        enc->pid = zg_realloc(enc->pid, cap * sizeof *enc->pid);
        enc->heap = zg_realloc(enc->heap, 3 * cap * sizeof *enc->heap);
        enc->cap = cap;
    }
    uint32_t *nxt = enc->nxt, *prv = enc->prv;
    int32_t *prank = enc->prank, *pid = enc->pid;
    const int32_t *byte_id = enc->tok->byte_id, *rank_id = enc->tok->rank_id;
    uint64_t *heap = enc->heap;
    size_t hn = 0;
    for (uint32_t i = 0; i < n; i++) {
        nxt[i] = i + 1;
        prv[i] = i - 1; /* wraps for i == 0; never read there */
        pid[i] = byte_id[(unsigned char)p[i]];
    }
    for (uint32_t i = 0; i < n; i++) {
        prank[i] = pair_rank(enc, p, n, i);
        if (prank[i] >= 0) heap_push(heap, &hn, ((uint64_t)prank[i] << 32) | i);
    }
    while (hn > 0) {
        uint64_t key = heap_pop(heap, &hn);
        int32_t r = (int32_t)(key >> 32);
        uint32_t i = (uint32_t)key;
        /* Stale: the part was absorbed (prank -1) or its pair changed (a longer span, so another
         * token, so another rank: ranks are unique per token). */
        if (prank[i] != r) continue;
        uint32_t j = nxt[i];
        pid[i] = rank_id[r];
        nxt[i] = nxt[j];
        if (nxt[j] < n) prv[nxt[j]] = i;
        prank[j] = -1;
        prank[i] = pair_rank(enc, p, n, i);
        if (prank[i] >= 0) heap_push(heap, &hn, ((uint64_t)prank[i] << 32) | i);
        if (i > 0) {
            uint32_t k = prv[i];
            prank[k] = pair_rank(enc, p, n, k);
            if (prank[k] >= 0) heap_push(heap, &hn, ((uint64_t)prank[k] << 32) | k);
        }
    }
    for (uint32_t i = 0; i < n; i = nxt[i]) zg_tokens_push(out, pid[i]);
}

static void cache_clear(zg_encoder *enc) {
    memset(enc->cache, 0, CACHE_SLOTS * sizeof *enc->cache);
    enc->cache_used = enc->ckeys_used = enc->cvals_used = 0;
}

/* Encodes one piece whose key head and hash are computed (see encode_batch). */
static int encode_piece(zg_encoder *enc, const char *p, size_t n, uint64_t head, uint64_t h, zg_tokens *out) {
    int32_t id = vocab_find_hashed(enc->tok, p, n, head, h);
    if (id >= 0) {
        zg_tokens_push(out, id);
        return 0;
    }
    if (n > UINT32_MAX)
        return zg_errorf("a single word of %zu bytes (over 4 GiB without a space or line break) cannot be encoded", n);
    if (n > CACHE_MAX_PIECE) {
        bpe_merge(enc, p, (uint32_t)n, out);
        return 0;
    }
    size_t i = (size_t)h & (CACHE_SLOTS - 1);
    for (; enc->cache[i].key_len; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const cache_slot *s = &enc->cache[i];
        if (s->hash == h && s->key_len == n && memcmp(enc->ckeys + s->key_off, p, n) == 0) {
            for (uint32_t k = 0; k < s->val_len; k++) zg_tokens_push(out, enc->cvals[s->val_off + k]);
            return 0;
        }
    }
    size_t before = out->len;
    bpe_merge(enc, p, (uint32_t)n, out);
    size_t nt = out->len - before; /* <= n */
    if (enc->cache_used + 1 > CACHE_SLOTS / 2 || enc->ckeys_used + n > CACHE_KEY_ARENA ||
        enc->cvals_used + nt > CACHE_VAL_ARENA) {
        cache_clear(enc);
        i = (size_t)h & (CACHE_SLOTS - 1);
    }
    cache_slot *s = &enc->cache[i];
    s->hash = h;
    s->key_off = (uint32_t)enc->ckeys_used;
    s->key_len = (uint16_t)n;
    s->val_off = (uint32_t)enc->cvals_used;
    s->val_len = (uint16_t)nt;
    memcpy(enc->ckeys + enc->ckeys_used, p, n);
    memcpy(enc->cvals + enc->cvals_used, out->ids + before, nt * sizeof *out->ids);
    enc->ckeys_used += n;
    enc->cvals_used += nt;
    enc->cache_used++;
    return 0;
}

/* Pieces are found in batches and looked up afterwards: hashing a batch first and prefetching
 * its table slots lets the (mostly cache-missing) lookups of the batch overlap instead of each
 * stalling the next regex match. */
#define PIECE_BATCH 32

typedef struct {
    size_t off, len;
    uint64_t head, hash;
} piece_ref;

static inline void piece_add(const zg_encoder *enc, piece_ref *b, int *nb, const char *text, size_t off, size_t len) {
    piece_ref *r = &b[(*nb)++];
    r->off = off;
    r->len = len;
    r->head = key_head(text + off, len);
    r->hash = key_hash(r->head, text + off, len);
#if defined(__GNUC__)
    __builtin_prefetch(&enc->tok->slots[(size_t)r->hash & enc->tok->slot_mask]);
#endif
}

static int encode_batch(zg_encoder *enc, const char *text, const piece_ref *b, int nb, zg_tokens *out) {
    for (int i = 0; i < nb; i++)
        if (encode_piece(enc, text + b[i].off, b[i].len, b[i].head, b[i].hash, out) != 0) return -1;
    return 0;
}

/* Pre-tokenizes text[0..len) and encodes each piece. The regex sees exactly this span, so the
 * lookahead in \s+(?!\S) treats its end as the end of the text (as tiktoken does around special
 * tokens). Bytes that no match covers are invalid UTF-8 (every valid character matches some
 * alternative); each maximal run of them is encoded as one piece, so decode(encode(x)) == x for any
 * bytes, and valid text around them encodes as it would on its own. */
static int encode_ordinary(zg_encoder *enc, const char *text, size_t len, zg_tokens *out) {
    const zg_tokenizer *tok = enc->tok;
    PCRE2_SPTR subj = (PCRE2_SPTR)text;
    piece_ref batch[PIECE_BATCH];
    int nb = 0;
    size_t pos = 0;
    while (pos < len) {
        int rc = tok->jit ? pcre2_jit_match(tok->re, subj, len, pos, 0, enc->md, enc->mctx)
                          : pcre2_match(tok->re, subj, len, pos, 0, enc->md, enc->mctx);
        size_t s = len, e = len;
        if (rc >= 0) {
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(enc->md);
            s = ov[0];
            e = ov[1];
            if (e <= s) return zg_errorf("internal error: the GPT-2 pattern matched empty text at byte %zu", s);
        } else if (rc != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return zg_errorf("pre-tokenizing at byte %zu failed: %s", pos, (const char *)msg);
        }
        if (nb > PIECE_BATCH - 2) {
            if (encode_batch(enc, text, batch, nb, out) != 0) return -1;
            nb = 0;
        }
        if (s > pos) piece_add(enc, batch, &nb, text, pos, s - pos);
        if (e > s) piece_add(enc, batch, &nb, text, s, e - s);
        pos = e;
    }
    return encode_batch(enc, text, batch, nb, out);
}

/* Earliest occurrence of a special token in text[from..len): its position (len if none), with its
 * id and length. At one position the first special in id order wins (GPT-2 has one special). */
static size_t find_special(const zg_tokenizer *tok, const char *text, size_t from, size_t len, int32_t *id,
                           size_t *slen) {
    size_t best = len;
    for (int k = 0; k < tok->n_specials; k++) {
        size_t n;
        const char *b = tok_bytes(tok, tok->specials[k], &n);
        for (size_t at = from; at < best && n <= len - at;) {
            const char *hit = memchr(text + at, b[0], len - n + 1 - at);
            if (!hit || (size_t)(hit - text) >= best) break;
            at = (size_t)(hit - text);
            if (memcmp(hit, b, n) == 0) {
                best = at;
                *id = tok->specials[k];
                *slen = n;
                break;
            }
            at++;
        }
    }
    return best;
}

int zg_encoder_encode(zg_encoder *enc, const char *text, size_t len, int allow_special, zg_tokens *out) {
    if (!allow_special) return encode_ordinary(enc, text, len, out);
    size_t pos = 0;
    while (pos < len) {
        int32_t id = -1;
        size_t slen = 0;
        size_t at = find_special(enc->tok, text, pos, len, &id, &slen);
        if (encode_ordinary(enc, text + pos, at - pos, out) != 0) return -1;
        if (at == len) break;
        zg_tokens_push(out, id);
        pos = at + slen;
    }
    return 0;
}
