/* Generation on the backend (zgpt sample): prompts of different lengths in one batch, the next token
 * drawn by the backend's sample op (no logits leave the device), and the per-token step recorded once
 * and replayed where the backend can record (a CUDA graph).
 *
 * Ragged prompts: every row runs at the same position. The rows' common prompt prefix (the shortest
 * prompt's length) is one prefill; from there each step draws a token for every row, and a row still
 * inside its prompt keeps its prompt token instead (decode_advance). Row b thus sees exactly the
 * tokens it would see alone, and its draws use its own generator (rows[b].seed) at counter = the
 * position of the drawn token, so a row's text does not depend on the other rows (same logits, same
 * tokens). Row b ends at prompt_len[b] + max_new_tokens. */
#ifndef ZG_MODEL_GENERATE_H
#define ZG_MODEL_GENERATE_H

#include "model/gpt2.h"

typedef struct {
    int B;
    const int32_t *const *prompts; /* B prompts (host token ids in [0, vocab_size)), each >= 1 token */
    const int *prompt_len;
    int max_new_tokens;
    const zg_sample_row *rows; /* B settings (host) */
    int32_t stop_token;        /* stop early once every row has drawn it (-1: never) */
    int record;                /* 1: record the decode step and replay it (where the backend records) */
    int vocab_limit;           /* draws from ids [0, vocab_limit) only: a tokenizer smaller than the model's
                                  vocabulary (nanoGPT's 50304, padded past GPT-2's 50257); 0: the model's */
} gpt2_gen_args;

typedef struct {
    int32_t *seq; /* (B, maxT) host: row b's prompt, then its tokens up to prompt_len[b] + max_new_tokens
                       * (past a drawn stop token the row's contents are undefined) */
    int maxT;
    int steps;        /* decode steps run (after the prefill's first draw) */
    int recorded;     /* 1: the steps replayed one recording */
    double setup_s;   /* the KV cache's and the buffers' allocation */
    double prefill_s; /* the prompt prefix's forward and the first draw: forward_s + draw_s */
    double forward_s; /* the prompt prefix's forward, waited for (first launches and plans included) */
    double draw_s;    /* the first draw, waited for */
    double decode_s;  /* the decode steps, until the tokens are back on the host: start_s + steady_s */
    /* decode_s split: the start (the first step, launched directly so that matmul plans and scratch
     * exist before a recording, then the recording of the second and its first replay, until the device
     * has run both) and the steady state (every later step, until the tokens are back on the host) */
    double first_s;  /* host time launching the first step directly */
    double record_s; /* host time recording the second step and instantiating the recording (0: none) */
    double start_s;  /* the start's steps, waited for */
    int start_steps; /* 2 with a recording (direct + recorded), else 1 */
    double steady_s; /* the remaining steps_ - start_steps steps */
} gpt2_gen_result;

/* 0, or -1 with an error (a prompt too long for block_size, memory). */
int gpt2_generate(gpt2_model *m, const gpt2_gen_args *a, gpt2_gen_result *r);
void gpt2_gen_result_free(gpt2_gen_result *r);
/* The row settings for temperature (0: greedy), top_k, top_p and seed; -1 with an error naming the
 * option (--temperature, --top-k, --top-p) when one is out of range. */
int gpt2_sample_row_init(zg_sample_row *row, double temperature, long long top_k, double top_p, uint64_t seed);

#endif
