/* 'zgpt prepare' as a library function: text files and folders -> token shards + meta.json.
 *
 * Documents: every input file is one document (a folder contributes every *.txt below it, sorted by
 * path). With two or more documents each one ends with <|endoftext|>; a single document gets none,
 * exactly like nanoGPT's shakespeare prepare.py. Empty files contribute nothing.
 * Split: the documents are one stream of characters (Unicode code points, as Python's len(str));
 * the first floor(N * (1 - val_fraction)) go to train and the rest to val, each part encoded with
 * encode_ordinary (so Tiny Shakespeare gives nanoGPT's 301,966 / 36,059 tokens).
 * Output: DIR/train_000000.bin..., DIR/val_000000.bin..., DIR/meta.json (docs/FORMATS.md). meta.json
 * is removed first and written last, so a folder is only ever complete when meta.json exists; every
 * shard is written atomically, shards of a failed run are removed, stale shards of an older run with
 * more shards are removed, and the same inputs always give byte-identical files.
 * Memory is bounded: files are streamed in batches, never loaded whole. Each batch is cut into pieces
 * at points that are always pre-token boundaries and the pieces are encoded on all cores (one
 * zg_encoder per thread), so the tokens are identical to a serial encode. */
#ifndef ZG_TEXT_PREPARE_H
#define ZG_TEXT_PREPARE_H

#include "text/tokenizer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *const *inputs; /* files or folders */
    int n_inputs;
    const char *out_dir;
    double val_fraction;           /* in (0, 1) */
    const char *tokenizer_dir;     /* NULL: zgpt's default GPT-2 files */
    const zg_tokenizer *tokenizer; /* optional: an already-loaded tokenizer (tokenizer_dir is then only recorded) */
    uint64_t shard_tokens;         /* tokens per shard file (> 0) */
    int threads;                   /* 0: all cores (OpenMP's default) */
    int progress;                  /* 1: progress on stderr (core/progress.h) */
} zg_prepare_config;

typedef struct {
    int n_files;
    uint64_t bytes, chars;
    uint64_t train_tokens, val_tokens;
    int train_shards, val_shards;
    int vocab_size;
    uint64_t tokenizer_checksum;
    int threads;
    double seconds;
} zg_prepare_stats;

/* 0, or -1 with a one-line error naming the path/value and the fix (output left without meta.json and
 * without shards of this run). */
int zg_prepare_run(const zg_prepare_config *cfg, zg_prepare_stats *stats);

/* The first position p in [from, len) where text can be cut without changing the GPT-2 pre-tokens:
 * just after a '\n' followed by a printable non-space ASCII character. len if there is none. */
size_t zg_prepare_next_cut(const char *text, size_t len, size_t from);

/* Encodes text (encode_ordinary) in pieces of about piece_bytes cut with zg_prepare_next_cut, on
 * `threads` threads (0: all); appends to out. The result equals one serial zg_encoder_encode call. */
int zg_prepare_encode_parallel(const zg_tokenizer *tok, const char *text, size_t len, size_t piece_bytes, int threads,
                               zg_tokens *out);

#endif
