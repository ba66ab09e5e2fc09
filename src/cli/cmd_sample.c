/* zgpt sample: text generation with the KV cache, reproducible for a seed. */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "model/gpt2.h"
#include "model/generate.h"
#include "core/clock.h"
#include "core/fileio.h"
#include "text/tokenizer.h"
#include "train/model_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model, *revision;
    const char *prompt, *prompt_file;
    int64_t num_samples, max_new_tokens, top_k, seed;
    double temperature, top_p;
    const char *device;
    const char *dtype;
    const char *tokenizer;
    int no_graph;
} sample_args;

static const zg_option sample_opts[] = {
    ZG_OPT_STR(sample_args, model, "model", "SRC", ZG_CLI_MODEL_HELP, NULL),
    ZG_OPT_STR(sample_args, revision, "revision", "REV", ZG_CLI_REVISION_HELP, NULL),
    ZG_OPT_STR(sample_args, prompt, "prompt", "TEXT", "text to continue (default: start from <|endoftext|>)", NULL),
    ZG_OPT_STR(sample_args, prompt_file, "prompt-file", "FILE",
               "one prompt per line (an empty line: start from <|endoftext|>), all in one batch whatever their "
               "lengths; each line gives --num-samples rows",
               NULL),
    ZG_OPT_INT(sample_args, num_samples, "num-samples", "N", "samples per prompt (together, as one batch)", "1"),
    ZG_OPT_INT(sample_args, max_new_tokens, "max-new-tokens", "N", "tokens to generate per sample", "200"),
    ZG_OPT_DBL(sample_args, temperature, "temperature", "X", "softmax temperature (0 = greedy)", "0.8"),
    ZG_OPT_INT(sample_args, top_k, "top-k", "K", "sample among the K most likely tokens (0 = all)", "200"),
    ZG_OPT_DBL(sample_args, top_p, "top-p", "P", "nucleus: the most likely tokens up to probability P", "1.0"),
    ZG_OPT_INT(sample_args, seed, "seed", "N", "random seed (row i of the batch uses seed + i)", "1337"),
    ZG_OPT_STR(sample_args, device, "device", "cpu|cuda|auto", "where to run", "auto"),
    ZG_OPT_STR(sample_args, dtype, "dtype", "fp32|bf16|fp16|auto",
               "precision of generation (auto: bf16 on CUDA, fp32 on the CPU)", "auto"),
    ZG_OPT_STR(sample_args, tokenizer, "tokenizer", "DIR", ZG_CLI_TOKENIZER_HELP, NULL),
    ZG_OPT_FLAG(sample_args, no_graph, "no-graph",
                "launch every op of every decode step (default on CUDA: record the step once as a CUDA graph)"),
    ZG_OPT_END,
};

static const zg_command_spec sample_spec = {
    "sample",
    "--model SRC [--prompt TEXT | --prompt-file FILE] [--num-samples N] [--max-new-tokens N] [options]",
    "Generate text from a model on its device (KV cache; sampling on the device; the same seed gives the same "
    "text).",
    sample_opts,
    NULL,
    "Samples are separated by a line of dashes, as nanoGPT's sample.py prints them. Timings go to stderr: the "
    "model's load apart from generation; generated tokens per second over all the time after the load and, "
    "beside it, the steady state's ms per step; then that time split (KV cache, prompt, the first steps with "
    "the step's recording, the steady state)."};

/* The batch's prompts as token ids: one per line of --prompt-file, else --prompt; an empty prompt is
 * <|endoftext|> alone. */
typedef struct {
    zg_tokens *ids;
    int *empty; /* 1: the prompt was empty (its starting <|endoftext|> is not printed) */
    int n;
} prompt_set;

static void prompt_set_free(prompt_set *ps) {
    for (int i = 0; i < ps->n; i++) zg_tokens_free(&ps->ids[i]);
    free(ps->ids);
    free(ps->empty);
    memset(ps, 0, sizeof *ps);
}

static int prompt_add(prompt_set *ps, const zg_tokenizer *tok, zg_encoder *enc, const char *text, size_t len) {
    ps->ids = zg_realloc(ps->ids, (size_t)(ps->n + 1) * sizeof *ps->ids);
    ps->empty = zg_realloc(ps->empty, (size_t)(ps->n + 1) * sizeof *ps->empty);
    zg_tokens *t = &ps->ids[ps->n];
    memset(t, 0, sizeof *t);
    ps->empty[ps->n] = len == 0;
    ps->n++;
    if (len == 0) {
        zg_tokens_push(t, zg_tokenizer_eot(tok));
        return 0;
    }
    return zg_encoder_encode(enc, text, len, 1, t);
}

static int prompt_set_load(prompt_set *ps, const zg_tokenizer *tok, const sample_args *a) {
    memset(ps, 0, sizeof *ps);
    zg_encoder *enc = zg_encoder_new(tok);
    int rc = 0;
    if (a->prompt_file) {
        char *data = NULL;
        size_t len = 0;
        if (zg_file_read_all(a->prompt_file, &data, &len) != 0) {
            rc = zg_error_prefix("--prompt-file");
        } else {
            size_t i = 0;
            while (i < len && rc == 0) {
                size_t j = i;
                while (j < len && data[j] != '\n') j++;
                rc = prompt_add(ps, tok, enc, data + i, j - i);
                i = j + 1;
            }
            if (rc == 0 && ps->n == 0)
                rc = zg_errorf("--prompt-file %s: no lines; give one prompt per line", a->prompt_file);
        }
        free(data);
    } else {
        const char *p = a->prompt ? a->prompt : "";
        rc = prompt_add(ps, tok, enc, p, strlen(p));
    }
    zg_encoder_free(enc);
    return rc;
}

static int print_samples(const zg_tokenizer *tok, const prompt_set *ps, int per_prompt, const int *plen,
                         const gpt2_gen_result *g, int max_new) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int eot = zg_tokenizer_eot(tok), rc = 0, B = ps->n * per_prompt;
    for (int b = 0; b < B && rc == 0; b++) {
        const int32_t *s = g->seq + (size_t)b * g->maxT;
        int P = plen[b], start = ps->empty[b / per_prompt] ? 1 : 0, end = P + max_new;
        for (int t = P; t < P + max_new; t++)
            if (s[t] == eot) {
                end = t;
                break;
            }
        len = 0; /* decode appends */
        rc = zg_tokenizer_decode(tok, s + start, (size_t)(end - start), &buf, &len, &cap);
        if (rc == 0 && fwrite(buf, 1, len, stdout) != len) rc = zg_errorf("cannot write to stdout");
        printf("\n---------------\n");
    }
    fflush(stdout);
    free(buf);
    return rc;
}

/* vocab_limit: draw ids below it only (gpt2_gen_args.vocab_limit) */
static int generate(gpt2_model *m, const zg_tokenizer *tok, const sample_args *a, const prompt_set *ps,
                    int vocab_limit) {
    int per = (int)a->num_samples, B = ps->n * per, rc = 0;
    if (B > 1024) return zg_errorf("%d prompts x --num-samples %d = %d rows; at most 1024 in one batch", ps->n, per, B);
    const int32_t **prompts = zg_malloc((size_t)B * sizeof *prompts);
    int *plen = zg_malloc((size_t)B * sizeof *plen);
    zg_sample_row *rows = zg_malloc((size_t)B * sizeof *rows);
    for (int b = 0; b < B && rc == 0; b++) {
        prompts[b] = ps->ids[b / per].ids;
        plen[b] = (int)ps->ids[b / per].len;
        rc = gpt2_sample_row_init(&rows[b], a->temperature, (long long)a->top_k, a->top_p,
                                  (uint64_t)a->seed + (uint64_t)b);
    }
    gpt2_gen_args ga = {B,          prompts, plen, (int)a->max_new_tokens, rows, zg_tokenizer_eot(tok), !a->no_graph,
                        vocab_limit};
    gpt2_gen_result g = {0};
    if (rc == 0) rc = gpt2_generate(m, &ga, &g);
    if (rc == 0) {
        /* the headline: every token over all the time after the load; beside it the steady state (the
         * steps after the start), and the start's one-time costs on a line of their own */
        long long toks = (long long)(g.steps + 1) * B;
        int steady = g.steps - g.start_steps;
        double ms = steady > 0 ? g.steady_s * 1e3 / steady : 0.0;
        char st[96] = "; steady state n/a (no step after the start)";
        if (steady > 0)
            snprintf(st, sizeof st, "; steady state %.3f ms/step = %.1f tokens/s", ms, B / (ms > 0 ? ms * 1e-3 : 1e-9));
        double all = g.setup_s + g.prefill_s + g.decode_s;
        fprintf(stderr,
                "zgpt sample: %d rows, %lld tokens in %.3f s (KV cache %.3f s + prompt %.3f s + %d decode steps %.3f "
                "s, %s): %.1f tokens/s%s\n",
                B, toks, all, g.setup_s, g.prefill_s, g.steps, g.decode_s,
                g.recorded ? "one CUDA graph per step" : "direct launches", (double)toks / (all > 0 ? all : 1e-9), st);
        char how[160] = "launched directly";
        if (g.record_s > 0)
            snprintf(how, sizeof how,
                     "the first launched directly %.4f s, the second recorded + instantiated %.4f s, then waiting "
                     "for the device",
                     g.first_s, g.record_s);
        fprintf(stderr,
                "zgpt sample: time split: KV cache %.4f s; prompt %.4f s (forward %.4f s, first draw %.4f s); start "
                "%.4f s for %d steps (%s); steady state %.4f s for %d steps\n",
                g.setup_s, g.prefill_s, g.forward_s, g.draw_s, g.start_s, g.start_steps, how, g.steady_s,
                steady > 0 ? steady : 0);
        rc = print_samples(tok, ps, per, plen, &g, (int)a->max_new_tokens);
    }
    gpt2_gen_result_free(&g);
    free(prompts);
    free(plen);
    free(rows);
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
    if (a.prompt && a.prompt_file) {
        zg_errorf("--prompt and --prompt-file together: give one of them");
        zg_error_print();
        return 2;
    }
    zg_sample_row probe;
    if (gpt2_sample_row_init(&probe, a.temperature, (long long)a.top_k, a.top_p, 0) != 0) {
        zg_error_print();
        return 2;
    }
    zg_tokenizer *tok;
    if (zg_tokenizer_init(&tok, a.tokenizer) != 0) return zg_cli_fail();
    prompt_set ps;
    if (prompt_set_load(&ps, tok, &a) != 0) {
        prompt_set_free(&ps);
        zg_tokenizer_free(tok);
        return zg_cli_fail();
    }
    zg_backend *be;
    gpt2_model m;
    int status = 0;
    char spec[1024];
    double t0 = zg_now_s();
    if (zg_cli_model_spec(a.model, a.revision, spec, sizeof spec) != 0 ||
        zg_model_instantiate(spec, a.device, a.dtype, 1, 0, &be, &m, NULL, 0) != 0) {
        status = zg_cli_fail();
    } else {
        be->ops->synchronize(be);
        fprintf(stderr, "zgpt sample: model loaded in %.2f s (%s, %s)\n", zg_now_s() - t0, be->ops->name,
                zg_dtype_name(be->act_dtype));
        if (a.no_graph && be->ops->graph_begin == NULL)
            fprintf(stderr, "note: --no-graph: the %s backend launches every op directly anyway\n", be->ops->name);
        int tv = zg_tokenizer_vocab_size(tok);
        if (m.cfg.vocab_size < tv || m.cfg.vocab_size > m.cfg.padded_vocab_size || m.cfg.vocab_size - tv >= 128) {
            zg_errorf("the model has a vocabulary of %d tokens but the tokenizer %d; give the matching --tokenizer",
                      m.cfg.vocab_size, tv);
            status = zg_cli_fail();
        } else {
            /* a vocabulary padded past the tokenizer's (nanoGPT's 50304 for GPT-2's 50257): draw only real ids */
            if (m.cfg.vocab_size > tv)
                fprintf(stderr,
                        "note: the model's vocabulary has %d ids, the tokenizer's %d (padded, as nanoGPT does): tokens "
                        "are drawn from the first %d only\n",
                        m.cfg.vocab_size, tv, tv);
            if (generate(&m, tok, &a, &ps, tv) != 0) status = zg_cli_fail();
        }
        zg_model_release(be, &m);
    }
    prompt_set_free(&ps);
    zg_tokenizer_free(tok);
    return status;
}
