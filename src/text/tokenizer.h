/* GPT-2 byte-level BPE tokenizer, exact to OpenAI's "gpt2" encoding (tiktoken).
 *
 * Loads either OpenAI's encoder.json + vocab.bpe or Hugging Face's vocab.json + merges.txt from a
 * folder (NULL = zgpt's vendored default under <data>/tokenizer/gpt2). The loaded tokenizer is
 * immutable and may be shared by threads; each thread encodes through its own zg_encoder, which
 * holds the scratch space and the cache of already-merged words. */
#ifndef ZG_TEXT_TOKENIZER_H
#define ZG_TEXT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#define ZG_GPT2_VOCAB_SIZE 50257
#define ZG_GPT2_EOT 50256

typedef struct zg_tokenizer zg_tokenizer;
typedef struct zg_encoder zg_encoder;

/* A growable array of token ids. */
typedef struct {
    int32_t *ids;
    size_t len;
    size_t cap;
} zg_tokens;
void zg_tokens_push(zg_tokens *t, int32_t id);
void zg_tokens_free(zg_tokens *t);

/* dir: folder with encoder.json+vocab.bpe or vocab.json+merges.txt; NULL for the default. */
int zg_tokenizer_init(zg_tokenizer **out, const char *dir);
void zg_tokenizer_free(zg_tokenizer *tok);
int zg_tokenizer_vocab_size(const zg_tokenizer *tok); /* 50257 for GPT-2 */
int zg_tokenizer_eot(const zg_tokenizer *tok);        /* id of <|endoftext|> */
/* Checksum identifying the vocabulary and merges (stable across file layouts of the same vocab). */
uint64_t zg_tokenizer_checksum(const zg_tokenizer *tok);
/* The folder the tokenizer was loaded from. */
const char *zg_tokenizer_dir(const zg_tokenizer *tok);

zg_encoder *zg_encoder_new(const zg_tokenizer *tok);
void zg_encoder_free(zg_encoder *enc);
/* Appends the tokens of text[0..len) to out. allow_special: "<|endoftext|>" becomes the EOT id
 * instead of ordinary text (tiktoken's encode_ordinary when 0). Text may be any bytes: valid UTF-8
 * encodes exactly as tiktoken; bytes that are not valid UTF-8 never join a regex match, and each
 * maximal run of them is byte-pair-merged as a piece of its own, so decode(encode(x)) == x always.
 * Returns 0, or -1 with an error (a regex engine failure, or one word over 4 GiB). */
int zg_encoder_encode(zg_encoder *enc, const char *text, size_t len, int allow_special, zg_tokens *out);

/* The exact bytes of one token (not NUL-terminated); NULL with an error for an id out of range. */
const char *zg_tokenizer_token_bytes(const zg_tokenizer *tok, int32_t id, size_t *len);
/* Appends the bytes of ids to a heap buffer (*buf grows; *len is updated). -1 for an invalid id. */
int zg_tokenizer_decode(const zg_tokenizer *tok, const int32_t *ids, size_t n, char **buf, size_t *len, size_t *cap);

#endif
