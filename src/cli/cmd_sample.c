/* zgpt sample: text generation with the KV cache, reproducible for a seed. */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/gpt2.h"
#include "model/sampler.h"
#include "text/tokenizer.h"
#include "train/model_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model, *revision;
    const char *prompt;
    int64_t num_samples, max_new_tokens, top_k, seed;
    double temperature, top_p;
    const char *device;
    const char *dtype;
    const char *tokenizer;
} sample_args;

static const zg_option sample_opts[] = {
    ZG_OPT_STR(sample_args, model, "model", "SRC", ZG_CLI_MODEL_HELP, NULL),
    ZG_OPT_STR(sample_args, revision, "revision", "REV", ZG_CLI_REVISION_HELP, NULL),
    ZG_OPT_STR(sample_args, prompt, "prompt", "TEXT", "text to continue (default: start from <|endoftext|>)", NULL),
    ZG_OPT_INT(sample_args, num_samples, "num-samples", "N", "samples to generate (together, as one batch)", "1"),
    ZG_OPT_INT(sample_args, max_new_tokens, "max-new-tokens", "N", "tokens to generate per sample", "200"),
    ZG_OPT_DBL(sample_args, temperature, "temperature", "X", "softmax temperature (0 = greedy)", "0.8"),
    ZG_OPT_INT(sample_args, top_k, "top-k", "K", "sample among the K most likely tokens (0 = all)", "200"),
    ZG_OPT_DBL(sample_args, top_p, "top-p", "P", "nucleus: the most likely tokens up to probability P", "1.0"),
    ZG_OPT_INT(sample_args, seed, "seed", "N", "random seed (sample i uses seed + i)", "1337"),
    ZG_OPT_STR(sample_args, device, "device", "cpu|cuda|auto", "where to run", "auto"),
    ZG_OPT_STR(sample_args, dtype, "dtype", "fp32|bf16|fp16|auto",
               "precision of generation (auto: bf16 on CUDA, fp32 on the CPU)", "auto"),
    ZG_OPT_STR(sample_args, tokenizer, "tokenizer", "DIR", ZG_CLI_TOKENIZER_HELP, NULL),
    ZG_OPT_END,
};

static const zg_command_spec sample_spec = {
    "sample", "--model SRC [--prompt TEXT] [--num-samples N] [--max-new-tokens N] [options]",
    "Generate text from a model (KV cache; the same seed gives the same text).", sample_opts, NULL,
    "Samples are separated by a line of dashes, as nanoGPT's sample.py prints them."};

static int generate(gpt2_model *m, const zg_tokenizer *tok, const sample_args *a, const zg_tokens *prompt) {
    int B = (int)a->num_samples, V = m->cfg.vocab_size;
    int P = (int)prompt->len;
    int maxT = P + (int)a->max_new_tokens;
    if (maxT > m->cfg.block_size) {
        return zg_errorf("the prompt (%d tokens) plus --max-new-tokens %lld exceeds the model's block_size %d; "
                         "lower --max-new-tokens to %d or shorten the prompt",
                         P, (long long)a->max_new_tokens, m->cfg.block_size, m->cfg.block_size - P);
    }
    if (gpt2_kv_alloc(m, B, maxT) != 0) return -1;
    zg_sampler *smp = zg_calloc((size_t)B, sizeof *smp);
    int rc = 0;
    for (int b = 0; b < B && rc == 0; b++)
        rc = zg_sampler_init(&smp[b], (float)a->temperature, (int)a->top_k, (float)a->top_p, (uint64_t)a->seed + (uint64_t)b);
    int32_t *seq = zg_malloc((size_t)B * maxT * sizeof(int32_t));
    int32_t *step_in = zg_malloc((size_t)B * (size_t)(P > 1 ? P : 1) * sizeof(int32_t));
    float *logits = zg_malloc((size_t)B * V * sizeof(float));
    for (int b = 0; b < B; b++) memcpy(seq + (size_t)b * maxT, prompt->ids, (size_t)P * sizeof(int32_t));
    if (rc == 0) {
        for (int b = 0; b < B; b++) memcpy(step_in + (size_t)b * P, prompt->ids, (size_t)P * sizeof(int32_t));
        rc = gpt2_forward_cached(m, step_in, B, P, 0, logits);
    }
    for (int t = P; t < maxT && rc == 0; t++) {
        for (int b = 0; b < B; b++) {
            int id = zg_sampler_sample(&smp[b], logits + (size_t)b * V, V);
            seq[(size_t)b * maxT + t] = id;
            step_in[b] = id;
        }
        if (t + 1 < maxT) rc = gpt2_forward_cached(m, step_in, B, 1, t, logits);
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int eot = zg_tokenizer_eot(tok);
    for (int b = 0; b < B && rc == 0; b++) {
        len = 0;
        const int32_t *s = seq + (size_t)b * maxT;
        /* the starting <|endoftext|> of an empty prompt is not shown; generation ends at the next one */
        int start = (P == 1 && s[0] == eot && (!a->prompt || !a->prompt[0])) ? 1 : 0;
        int end = maxT;
        for (int t = P; t < maxT; t++)
            if (s[t] == eot) {
                end = t;
                break;
            }
        if (zg_tokenizer_decode(tok, s + start, (size_t)(end - start), &buf, &len, &cap) != 0) {
            rc = -1;
            break;
        }
        if (fwrite(buf, 1, len, stdout) != len) rc = zg_errorf("cannot write to stdout");
        printf("\n---------------\n");
    }
    fflush(stdout);
    free(buf);
    for (int b = 0; b < B; b++) zg_sampler_free(&smp[b]);
    free(smp);
    free(seq);
    free(step_in);
    free(logits);
    gpt2_kv_free(m);
    return rc;
}

int zg_cmd_sample(int argc, char **argv) {
    sample_args a;
    int rc = zg_cli_parse(&sample_spec, argc, argv, &a, NULL);
    if (rc != 0) return rc < 0 ? 2 : 0;
    if (!a.model) {
        zg_errorf("zgpt sample needs --model SRC (see 'zgpt sample --help')");
        zg_error_print();
        return 2;
    }
    if (a.num_samples < 1 || a.num_samples > 1024 || a.max_new_tokens < 1) {
        zg_errorf("--num-samples must be in [1, 1024] and --max-new-tokens >= 1");
        zg_error_print();
        return 2;
    }
    zg_sampler probe;
    if (zg_sampler_init(&probe, (float)a.temperature, (int)a.top_k, (float)a.top_p, 0) != 0) {
        zg_error_print();
        return 2;
    }
    zg_tokenizer *tok;
    if (zg_tokenizer_init(&tok, a.tokenizer) != 0) return zg_cli_fail();
    zg_tokens prompt = {0};
    if (a.prompt && a.prompt[0]) {
        zg_encoder *enc = zg_encoder_new(tok);
        rc = zg_encoder_encode(enc, a.prompt, strlen(a.prompt), 1, &prompt);
        zg_encoder_free(enc);
        if (rc != 0) {
            zg_tokenizer_free(tok);
            return zg_cli_fail();
        }
    } else {
        zg_tokens_push(&prompt, zg_tokenizer_eot(tok));
    }
    zg_backend *be;
    gpt2_model m;
    int status = 0;
    char spec[1024];
    if (zg_cli_model_spec(a.model, a.revision, spec, sizeof spec) != 0 ||
        zg_model_instantiate(spec, a.device, a.dtype, 1, 0, &be, &m, NULL, 0) != 0) {
        status = zg_cli_fail();
    } else {
        if (m.cfg.vocab_size != zg_tokenizer_vocab_size(tok)) {
            zg_errorf("the model has a vocabulary of %d tokens but the tokenizer %d; give the matching --tokenizer",
                      m.cfg.vocab_size, zg_tokenizer_vocab_size(tok));
            status = zg_cli_fail();
        } else if (generate(&m, tok, &a, &prompt) != 0) {
            status = zg_cli_fail();
        }
        zg_model_release(be, &m);
    }
    zg_tokens_free(&prompt);
    zg_tokenizer_free(tok);
    return status;
}
