/* Token shards: one file = one contiguous stream of token ids (docs/FORMATS.md, "Token shards").
 *
 * zgpt's own format is a 64-byte versioned header (magic, version, token width, vocabulary size,
 * token count, XXH3-64 checksum of the token bytes, checksum of the header) followed by the tokens
 * as little-endian uint16 (vocabulary <= 65536) or uint32. Two foreign layouts are read too, so
 * users can bring existing data: llm.c's shards (256 int32 header, magic 20240520) and nanoGPT's
 * header-less uint16 train.bin / val.bin.
 *
 * Readers memory-map the file and verify everything that can be verified before any token is used:
 * magic, version, size against the count, the checksum, and that every id is < vocab_size. */
#ifndef ZG_TEXT_SHARD_H
#define ZG_TEXT_SHARD_H

#include "core/fileio.h"

#include <stddef.h>
#include <stdint.h>

#define ZG_SHARD_MAGIC "ZGPTTOKS" /* 8 bytes, no NUL */
#define ZG_SHARD_VERSION 1u
#define ZG_SHARD_HEADER_BYTES 64u
#define ZG_LLMC_MAGIC 20240520
#define ZG_LLMC_HEADER_BYTES 1024u

typedef enum {
    ZG_SHARD_ZGPT = 0,    /* zgpt header + tokens */
    ZG_SHARD_LLMC = 1,    /* llm.c: 256 x int32 header (magic, version, count), then tokens */
    ZG_SHARD_NANOGPT = 2, /* nanoGPT: raw uint16 tokens, no header (only files named train.bin / val.bin) */
} zg_shard_format;

typedef struct {
    char *path;
    zg_mmap map;
    zg_shard_format format;
    const unsigned char *tokens; /* first token inside the map */
    uint64_t n_tokens;
    int token_bytes;     /* 2 or 4 */
    uint32_t vocab_size; /* vocabulary recorded in a zgpt header; 0 for the foreign formats */
    uint64_t checksum;   /* XXH3-64 of the token bytes from a zgpt header; 0 for the foreign formats */
} zg_shard;

/* Opens and verifies a shard. vocab_size > 0: every id must be < vocab_size. Returns -1 with a
 * one-line error naming the path and the problem (and what to do) otherwise. */
int zg_shard_open(zg_shard *s, const char *path, int vocab_size);
void zg_shard_close(zg_shard *s);
const char *zg_shard_format_name(zg_shard_format f);

/* Token i of the shard (i < n_tokens). */
static inline int32_t zg_shard_token(const zg_shard *s, uint64_t i) {
    if (s->token_bytes == 2) {
        const unsigned char *p = s->tokens + 2 * i;
        return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8);
    }
    const unsigned char *p = s->tokens + 4 * i;
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}
/* Copies tokens [start, start+n) as int32 (the range must lie inside the shard). */
void zg_shard_read(const zg_shard *s, uint64_t start, size_t n, int32_t *out);

/* Token width for a vocabulary: 2 bytes up to 65536 ids, else 4. */
int zg_shard_token_bytes_for(int vocab_size);

/* Streaming writer of a zgpt shard. The file is written to a temporary name and renamed into place
 * only by zg_shard_writer_commit(), after the header with the final count and checksum has been
 * filled in; an aborted or crashed write never leaves a file under the final name. */
typedef struct {
    zg_atomic_file af;
    int vocab_size;
    int token_bytes;
    uint64_t n_tokens;
    zg_hasher hash;
    unsigned char *buf; /* encoding buffer for the little-endian token bytes */
    size_t buf_cap;
    int open;
} zg_shard_writer;

int zg_shard_writer_open(zg_shard_writer *w, const char *path, int vocab_size);
/* Appends ids; -1 (and the writer is marked failed) for an id outside [0, vocab_size). */
int zg_shard_writer_write(zg_shard_writer *w, const int32_t *ids, size_t n);
/* Completes the header, flushes, fsyncs and renames. n_tokens/checksum may be NULL. */
int zg_shard_writer_commit(zg_shard_writer *w, uint64_t *n_tokens, uint64_t *checksum);
void zg_shard_writer_abort(zg_shard_writer *w);

/* Writes a whole shard in one call (tests, small outputs). */
int zg_shard_write_file(const char *path, const int32_t *ids, size_t n, int vocab_size);

#endif
