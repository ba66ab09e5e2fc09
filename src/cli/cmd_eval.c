/* zgpt eval: mean next-token loss and perplexity of a model on a token file. */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "model/gpt2.h"
#include "text/dataloader.h"
#include "text/shard.h"
#include "train/model_source.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model, *revision;
    const char *data;
    int64_t seq, batch, iters, seed;
    int full, json;
    const char *device;
    const char *dtype;
} eval_args;

static const zg_option eval_opts[] = {
    ZG_OPT_STR(eval_args, model, "model", "SRC", ZG_CLI_MODEL_HELP, NULL),
    ZG_OPT_STR(eval_args, revision, "revision", "REV", ZG_CLI_REVISION_HELP, NULL),
    ZG_OPT_STR(eval_args, data, "data", "FILE",
               "token shard (zgpt, nanoGPT .bin or llm.c), or a prepared folder (val split)", NULL),
    ZG_OPT_INT(eval_args, seq, "seq", "T", "sequence length (0 = the model's block_size)", "0"),
    ZG_OPT_INT(eval_args, batch, "batch", "B", "sequences per forward pass", "8"),
    ZG_OPT_FLAG(eval_args, full, "full", "every consecutive non-overlapping window of the file, from the start"),
    ZG_OPT_INT(eval_args, iters, "iters", "N", "without --full: batches of random windows to average", "20"),
    ZG_OPT_INT(eval_args, seed, "seed", "N", "without --full: seed of the random windows", "1337"),
    ZG_OPT_FLAG(eval_args, json, "json", "print {\"loss\", \"perplexity\", \"tokens\"} as JSON"),
    ZG_OPT_STR(eval_args, device, "device", "cpu|cuda|auto", "where to run", "auto"),
    ZG_OPT_STR(eval_args, dtype, "dtype", "fp32|bf16|fp16|auto",
               "precision of the forward passes (fp32: the loss the exported model gives in transformers)", "fp32"),
    ZG_OPT_END,
};

static const zg_command_spec eval_spec = {
    "eval",
    "--model SRC --data FILE [--seq T] [--batch B] [--full] [--json]",
    "Mean next-token loss and perplexity of a model on a token file.",
    eval_opts,
    NULL,
    "--full: window k has inputs tokens[kT .. kT+T-1] and targets tokens[kT+1 .. kT+T] for every k with\n"
    "kT+T+1 <= n; the loss is the mean over all those targets. Without --full: --iters batches of random\n"
    "windows (seeded)."};

/* Sum of per-token losses of the last forward over targets >= 0. */
static double sum_losses(const gpt2_model *m, const int32_t *targets, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        if (targets[i] >= 0) s += m->losses_host[i];
    return s;
}

static int eval_full(gpt2_model *m, const char *path, int B, int T, double *sum, uint64_t *count) {
    zg_shard sh;
    if (zg_shard_open(&sh, path, m->cfg.vocab_size) != 0) return -1;
    uint64_t n = sh.n_tokens;
    if (n < (uint64_t)T + 1) {
        zg_shard_close(&sh);
        return zg_errorf("'%s' has %llu tokens, fewer than --seq %d + 1 needed for one window; use a smaller --seq",
                         path, (unsigned long long)n, T);
    }
    uint64_t windows = (n - 1) / (uint64_t)T; /* k with kT + T + 1 <= n */
    int32_t *buf = zg_malloc(((size_t)T + 1) * sizeof(int32_t));
    int32_t *in = zg_malloc((size_t)B * T * sizeof(int32_t)), *tg = zg_malloc((size_t)B * T * sizeof(int32_t));
    int rc = 0;
    *sum = 0;
    *count = 0;
    zg_progress prog;
    zg_progress_init(&prog, "eval", windows * (uint64_t)T, "tokens");
    for (uint64_t k = 0; k < windows && rc == 0; k += (uint64_t)B) {
        for (int b = 0; b < B; b++) {
            if (k + (uint64_t)b < windows) {
                zg_shard_read(&sh, (k + (uint64_t)b) * (uint64_t)T, (size_t)T + 1, buf);
                memcpy(in + (size_t)b * T, buf, (size_t)T * sizeof(int32_t));
                memcpy(tg + (size_t)b * T, buf + 1, (size_t)T * sizeof(int32_t));
            } else { /* padding rows of the last batch: ignored targets */
                memset(in + (size_t)b * T, 0, (size_t)T * sizeof(int32_t));
                for (int t = 0; t < T; t++) tg[(size_t)b * T + t] = -1;
            }
        }
        if (gpt2_forward(m, in, tg, B, T, NULL) != 0) rc = -1;
        *sum += sum_losses(m, tg, (size_t)B * T);
        *count += (uint64_t)m->n_valid_targets;
        zg_progress_update(&prog, *count);
    }
    zg_progress_free(&prog);
    free(buf);
    free(in);
    free(tg);
    zg_shard_close(&sh);
    return rc;
}

static int eval_random(gpt2_model *m, const char *path, int B, int T, int64_t iters, uint64_t seed, double *sum,
                       uint64_t *count) {
    zg_data_source src = {path, 1.0};
    zg_dataloader_config dc;
    memset(&dc, 0, sizeof dc);
    dc.sources = &src;
    dc.n_sources = 1;
    dc.split = "val";
    dc.B = B;
    dc.T = T;
    dc.vocab_size = m->cfg.vocab_size;
    dc.mode = ZG_SAMPLE_RANDOM;
    dc.seed = seed;
    dc.world_size = 1;
    zg_dataloader *dl;
    if (zg_dataloader_init(&dl, &dc) != 0) return -1;
    int32_t *in = zg_malloc((size_t)B * T * sizeof(int32_t)), *tg = zg_malloc((size_t)B * T * sizeof(int32_t));
    int rc = 0;
    *sum = 0;
    *count = 0;
    zg_progress prog; /* (GPT-2 XL's 20 batches of 8 x 1024 take minutes on a CPU) */
    zg_progress_init(&prog, "eval", (uint64_t)iters * (uint64_t)B * (uint64_t)T, "tokens");
    for (int64_t i = 0; i < iters && rc == 0; i++) {
        zg_dataloader_next(dl, in, tg);
        if (gpt2_forward(m, in, tg, B, T, NULL) != 0) rc = -1;
        *sum += sum_losses(m, tg, (size_t)B * T);
        *count += (uint64_t)m->n_valid_targets;
        zg_progress_update(&prog, (uint64_t)(i + 1) * (uint64_t)B * (uint64_t)T);
    }
    zg_progress_free(&prog);
    free(in);
    free(tg);
    zg_dataloader_free(dl);
    return rc;
}

int zg_cmd_eval(int argc, char **argv) {
    eval_args a;
    int rc = zg_cli_parse(&eval_spec, argc, argv, &a, NULL);
    if (rc != 0) return rc < 0 ? 2 : 0;
    if (!a.model || !a.data) {
        zg_errorf("zgpt eval needs --model SRC and --data FILE (see 'zgpt eval --help')");
        zg_error_print();
        return 2;
    }
    if (a.batch < 1 || a.batch > 65536 || a.seq < 0 || a.iters < 1) {
        zg_errorf("--batch must be in [1, 65536], --seq >= 0 and --iters >= 1 (got %lld, %lld, %lld)",
                  (long long)a.batch, (long long)a.seq, (long long)a.iters);
        zg_error_print();
        return 2;
    }
    if (a.full && zg_dir_exists(a.data)) {
        zg_errorf("--full needs one token file, and '%s' is a folder; give e.g. %s/val_000000.bin", a.data, a.data);
        zg_error_print();
        return 2;
    }
    zg_backend *be;
    gpt2_model m;
    char desc[600];
    char spec[1024];
    if (zg_cli_model_spec(a.model, a.revision, spec, sizeof spec) != 0) return zg_cli_fail();
    if (zg_model_instantiate(spec, a.device, a.dtype, 1, 0, &be, &m, desc, sizeof desc) != 0) return zg_cli_fail();
    int T = a.seq > 0 ? (int)a.seq : m.cfg.block_size;
    /* forwards only: one set of layer buffers for every layer, and the LM head in row chunks (auto) since only the
     * losses are read (GPT-2 XL, B=8, T=1024: bf16 0.65 GB of activations where the training layout takes 21.1; fp32
     * on the CPU 2.1 where it takes 82) */
    m.recompute = GPT2_FORWARD_ONLY;
    m.head_chunks = 0;
    int status = 0;
    if (T > m.cfg.block_size) {
        zg_errorf("--seq %d exceeds the model's block_size %d", T, m.cfg.block_size);
        status = zg_cli_fail();
    } else {
        double sum = 0;
        uint64_t count = 0;
        rc = a.full ? eval_full(&m, a.data, (int)a.batch, T, &sum, &count)
                    : eval_random(&m, a.data, (int)a.batch, T, a.iters, (uint64_t)a.seed, &sum, &count);
        if (rc != 0) {
            status = zg_cli_fail();
        } else {
            double loss = count ? sum / (double)count : NAN;
            if (a.json)
                printf("{\"loss\": %.9g, \"perplexity\": %.9g, \"tokens\": %llu}\n", loss, exp(loss),
                       (unsigned long long)count);
            else
                printf("loss %.4f, perplexity %.3f over %llu tokens (%s, %s, %s, T=%d)\n", loss, exp(loss),
                       (unsigned long long)count, desc, zg_dtype_name(be->param_dtype),
                       a.full ? "all windows" : "random windows", T);
        }
    }
    zg_model_release(be, &m);
    return status;
}
