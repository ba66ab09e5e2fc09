#include "text/shard.h"

#include "core/error.h"
#include "core/fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* zgpt header layout (all little-endian):
 *   0  magic "ZGPTTOKS"      8 bytes
 *   8  version               u32
 *  12  header bytes (64)     u32
 *  16  token bytes (2 or 4)  u32
 *  20  vocab size            u32
 *  24  token count           u64
 *  32  XXH3-64 of the tokens u64
 *  40  reserved (zero)       16 bytes
 *  56  XXH3-64 of bytes 0..55 u64  (catches a damaged header before its count is trusted) */
enum { HDR_VERSION = 8, HDR_SIZE = 12, HDR_TOKBYTES = 16, HDR_VOCAB = 20, HDR_COUNT = 24, HDR_SUM = 32, HDR_HSUM = 56 };

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

/* Tokens are stored little-endian and read through zg_shard_token(), so the format is the same on any
 * host; the checksum is over the stored bytes. */

const char *zg_shard_format_name(zg_shard_format f) {
    switch (f) {
    case ZG_SHARD_ZGPT: return "zgpt";
    case ZG_SHARD_LLMC: return "llm.c";
    case ZG_SHARD_NANOGPT: return "nanoGPT";
    }
    return "?";
}

int zg_shard_token_bytes_for(int vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

void zg_shard_read(const zg_shard *s, uint64_t start, size_t n, int32_t *out) {
    if (s->token_bytes == 2) {
        const unsigned char *p = s->tokens + 2 * start;
        for (size_t i = 0; i < n; i++) out[i] = (int32_t)((uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8);
    } else {
        for (size_t i = 0; i < n; i++) out[i] = zg_shard_token(s, start + i);
    }
}

/* Every id must be < vocab_size; reports the first one that is not. */
static int check_ids(const zg_shard *s, int vocab_size) {
    uint64_t n = s->n_tokens;
    uint32_t maxv = 0;
    if (s->token_bytes == 2) {
        const unsigned char *p = s->tokens;
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
            if (v > maxv) maxv = v;
        }
    } else {
        for (uint64_t i = 0; i < n; i++) {
            uint32_t v = (uint32_t)zg_shard_token(s, i);
            if (v > maxv) maxv = v;
        }
    }
    if (n == 0 || maxv < (uint32_t)vocab_size) return 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)zg_shard_token(s, i);
        if (v >= (uint32_t)vocab_size)
            return zg_errorf("'%s': token id %u at position %llu is >= vocab_size %d (the shard was made with "
                             "another tokenizer; re-run 'zgpt prepare' with this model's tokenizer)",
                             s->path, v, (unsigned long long)i, vocab_size);
    }
    return 0;
}

static int open_zgpt(zg_shard *s, const unsigned char *d, size_t size) {
    if (size < ZG_SHARD_HEADER_BYTES)
        return zg_errorf("'%s' is truncated: %zu bytes, shorter than the %u-byte zgpt shard header; re-run 'zgpt "
                         "prepare'",
                         s->path, size, ZG_SHARD_HEADER_BYTES);
    if (get_u64(d + HDR_HSUM) != zg_checksum(d, HDR_HSUM))
        return zg_errorf("'%s': the zgpt shard header is damaged (header checksum mismatch); re-run 'zgpt prepare'",
                         s->path);
    uint32_t version = get_u32(d + HDR_VERSION);
    if (version != ZG_SHARD_VERSION)
        return zg_errorf("'%s': zgpt shard version %u is not supported (this zgpt reads version %u); re-run 'zgpt "
                         "prepare' with this zgpt",
                         s->path, version, ZG_SHARD_VERSION);
    uint32_t hdr = get_u32(d + HDR_SIZE), tb = get_u32(d + HDR_TOKBYTES);
    if (hdr != ZG_SHARD_HEADER_BYTES || (tb != 2 && tb != 4))
        return zg_errorf("'%s': invalid zgpt shard header (header size %u, token width %u); re-run 'zgpt prepare'",
                         s->path, hdr, tb);
    s->token_bytes = (int)tb;
    s->vocab_size = get_u32(d + HDR_VOCAB);
    s->n_tokens = get_u64(d + HDR_COUNT);
    s->checksum = get_u64(d + HDR_SUM);
    uint64_t body = size - ZG_SHARD_HEADER_BYTES;
    if (s->n_tokens > body / tb || body != s->n_tokens * tb)
        return zg_errorf("'%s' is truncated or padded: the header says %llu tokens (%llu bytes) but the body has %llu "
                         "bytes; re-run 'zgpt prepare'",
                         s->path, (unsigned long long)s->n_tokens, (unsigned long long)(s->n_tokens * tb),
                         (unsigned long long)body);
    s->tokens = d + ZG_SHARD_HEADER_BYTES;
    uint64_t sum = zg_checksum(s->tokens, (size_t)body);
    if (sum != s->checksum)
        return zg_errorf("'%s': checksum mismatch (header %016llx, tokens %016llx): the file is corrupt; re-run 'zgpt "
                         "prepare'",
                         s->path, (unsigned long long)s->checksum, (unsigned long long)sum);
    return 0;
}

static int open_llmc(zg_shard *s, const unsigned char *d, size_t size) {
    if (size < ZG_LLMC_HEADER_BYTES)
        return zg_errorf("'%s' is truncated: %zu bytes, shorter than llm.c's 1024-byte header", s->path, size);
    uint32_t version = get_u32(d + 4);
    if (version != 1 && version != 2)
        return zg_errorf("'%s': llm.c shard version %u is not supported (1 = uint16 tokens, 2 = uint32)", s->path,
                         version);
    s->token_bytes = version == 1 ? 2 : 4;
    s->n_tokens = get_u32(d + 8);
    uint64_t body = size - ZG_LLMC_HEADER_BYTES;
    if (body != s->n_tokens * (uint64_t)s->token_bytes)
        return zg_errorf("'%s' is truncated or padded: the llm.c header says %llu tokens but the body has %llu bytes",
                         s->path, (unsigned long long)s->n_tokens, (unsigned long long)body);
    s->tokens = d + ZG_LLMC_HEADER_BYTES;
    return 0;
}

int zg_shard_open(zg_shard *s, const char *path, int vocab_size) {
    memset(s, 0, sizeof *s);
    s->map.fd = -1;
    if (zg_mmap_open(&s->map, path) != 0) return -1;
    s->path = zg_strdup(path);
    const unsigned char *d = s->map.data;
    size_t size = s->map.size;
    int rc;
    const char *base = zg_path_base(path);
    int nanogpt_name = strcmp(base, "train.bin") == 0 || strcmp(base, "val.bin") == 0;
    if (size >= 8 && memcmp(d, ZG_SHARD_MAGIC, 8) == 0) {
        s->format = ZG_SHARD_ZGPT;
        rc = open_zgpt(s, d, size);
    } else if (size >= 4 && get_u32(d) == ZG_LLMC_MAGIC) {
        s->format = ZG_SHARD_LLMC;
        rc = open_llmc(s, d, size);
    } else if (nanogpt_name) {
        /* nanoGPT's files carry no header at all; only its two fixed names are read this way, so a
         * damaged zgpt shard is never silently taken for raw tokens. */
        s->format = ZG_SHARD_NANOGPT;
        s->token_bytes = 2;
        s->n_tokens = size / 2;
        s->tokens = d;
        rc = size % 2 ? zg_errorf("'%s' has an odd size (%zu bytes): a nanoGPT token file holds uint16 tokens; it is "
                                  "truncated",
                                  path, size)
                      : 0;
    } else {
        rc = zg_errorf("'%s' is not a token shard (bad magic): expected a zgpt shard (magic %s), an llm.c shard (magic "
                       "%d) or nanoGPT's header-less train.bin/val.bin; re-run 'zgpt prepare'",
                       path, ZG_SHARD_MAGIC, ZG_LLMC_MAGIC);
    }
    /* A zgpt shard written for a vocabulary no larger than ours had its ids checked by the writer and
     * is protected by its checksum, so only the foreign formats and larger vocabularies are scanned. */
    if (rc == 0 && vocab_size > 0 &&
        (s->format != ZG_SHARD_ZGPT || s->vocab_size == 0 || s->vocab_size > (uint32_t)vocab_size))
        rc = check_ids(s, vocab_size);
    if (rc != 0) {
        zg_shard_close(s);
        return -1;
    }
    return 0;
}

void zg_shard_close(zg_shard *s) {
    zg_mmap_close(&s->map);
    free(s->path);
    memset(s, 0, sizeof *s);
    s->map.fd = -1;
}

/* ---- writer ---------------------------------------------------------------------------------- */

int zg_shard_writer_open(zg_shard_writer *w, const char *path, int vocab_size) {
    memset(w, 0, sizeof *w);
    if (vocab_size <= 0) return zg_errorf("internal: shard '%s' needs a positive vocab_size, got %d", path, vocab_size);
    if (zg_atomic_open(&w->af, path) != 0) return -1;
    w->vocab_size = vocab_size;
    w->token_bytes = zg_shard_token_bytes_for(vocab_size);
    /* The header is written with the final count and checksum at commit; reserve its space now. */
    unsigned char zero[ZG_SHARD_HEADER_BYTES] = {0};
    if (zg_atomic_write(&w->af, zero, sizeof zero) != 0) {
        zg_atomic_abort(&w->af);
        return -1;
    }
    zg_hasher_init(&w->hash);
    w->open = 1;
    return 0;
}

int zg_shard_writer_write(zg_shard_writer *w, const int32_t *ids, size_t n) {
    size_t need = n * (size_t)w->token_bytes;
    if (need > w->buf_cap) {
        w->buf_cap = need;
        w->buf = zg_realloc(w->buf, need);
    }
    unsigned char *p = w->buf;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= w->vocab_size) {
            w->af.failed = 1;
            return zg_errorf("token id %d is outside the vocabulary [0, %d) while writing '%s'", ids[i], w->vocab_size,
                             w->af.path);
        }
        uint32_t v = (uint32_t)ids[i];
        if (w->token_bytes == 2) {
            p[0] = (unsigned char)v;
            p[1] = (unsigned char)(v >> 8);
            p += 2;
        } else {
            put_u32(p, v);
            p += 4;
        }
    }
    zg_hasher_update(&w->hash, w->buf, need);
    w->n_tokens += n;
    return zg_atomic_write(&w->af, w->buf, need);
}

static void writer_release(zg_shard_writer *w) {
    if (w->hash.state) zg_hasher_final(&w->hash);
    free(w->buf);
    memset(w, 0, sizeof *w);
}

void zg_shard_writer_abort(zg_shard_writer *w) {
    if (!w->open) return;
    zg_atomic_abort(&w->af);
    writer_release(w);
}

int zg_shard_writer_commit(zg_shard_writer *w, uint64_t *n_tokens, uint64_t *checksum) {
    uint64_t sum = zg_hasher_final(&w->hash);
    unsigned char h[ZG_SHARD_HEADER_BYTES] = {0};
    memcpy(h, ZG_SHARD_MAGIC, 8);
    put_u32(h + HDR_VERSION, ZG_SHARD_VERSION);
    put_u32(h + HDR_SIZE, ZG_SHARD_HEADER_BYTES);
    put_u32(h + HDR_TOKBYTES, (uint32_t)w->token_bytes);
    put_u32(h + HDR_VOCAB, (uint32_t)w->vocab_size);
    put_u64(h + HDR_COUNT, w->n_tokens);
    put_u64(h + HDR_SUM, sum);
    put_u64(h + HDR_HSUM, zg_checksum(h, HDR_HSUM));
    /* Fill in the reserved header in the temporary file (the atomic file's own running checksum,
     * which saw the placeholder, is not used). */
    if (!w->af.failed) {
        if (fflush(w->af.f) != 0 || fseek(w->af.f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, w->af.f) != sizeof h ||
            fseek(w->af.f, 0, SEEK_END) != 0) {
            zg_errorf("cannot write the header of '%s': %s", w->af.path, strerror(errno));
            w->af.failed = 1;
        }
    }
    uint64_t n = w->n_tokens;
    int rc = zg_atomic_commit(&w->af, NULL);
    free(w->buf);
    memset(w, 0, sizeof *w);
    if (rc != 0) return -1;
    if (n_tokens) *n_tokens = n;
    if (checksum) *checksum = sum;
    return 0;
}

int zg_shard_write_file(const char *path, const int32_t *ids, size_t n, int vocab_size) {
    zg_shard_writer w;
    if (zg_shard_writer_open(&w, path, vocab_size) != 0) return -1;
    if (zg_shard_writer_write(&w, ids, n) != 0) {
        zg_shard_writer_abort(&w);
        return -1;
    }
    return zg_shard_writer_commit(&w, NULL, NULL);
}
