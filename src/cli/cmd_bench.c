/* zgpt bench: training-step speed of a GPT-2 (tokens/s, ms/step, MFU, peak memory, per-op split). */
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/strutil.h"
#include "model/gpt2.h"
#include "train/mfu.h"
#include "train/model_source.h"
#include "dist/comm.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"
#include "train/train_step.h"
#include "train/zero.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct {
    const char *model;
    int64_t batch, seq, steps, warmup, head_chunks;
    const char *device;
    const char *recompute;
    int no_profile, json, ln_from_output;
    double peak_tflops;
} bench_args;

static const zg_option bench_opts[] = {
    ZG_OPT_STR(bench_args, model, "model", "SRC", "gpt2..gpt2-xl (random weights if not local), checkpoint, hf:PATH",
               "gpt2"),
    ZG_OPT_INT(bench_args, batch, "batch", "B", "micro-batch", "4"),
    ZG_OPT_INT(bench_args, seq, "seq", "T", "sequence length", "256"),
    ZG_OPT_INT(bench_args, steps, "steps", "N", "timed training steps", "3"),
    ZG_OPT_INT(bench_args, warmup, "warmup", "N", "untimed steps first", "1"),
    ZG_OPT_STR(bench_args, device, "device", "cpu|cuda|auto", "where to run", "auto"),
    ZG_OPT_DBL(
        bench_args, peak_tflops, "peak-tflops", "X",
        "the device's dense peak for MFU (e.g. 989 for an H100/H200 in bf16; 0 = measure on the CPU, n/a on CUDA)",
        "0"),
    ZG_OPT_STR(bench_args, recompute, "recompute", "none|gelu|layernorm|ln1|ln2|all",
               "activations recomputed in backward (as the recompute / recompute_layernorm config keys)", "none"),
    ZG_OPT_FLAG(bench_args, ln_from_output, "memory-efficient-layernorm",
                "LayerNorm backward from the output (as the memory_efficient_layernorm config key)"),
    ZG_OPT_INT(bench_args, head_chunks, "lm-head-chunks", "N",
               "the LM head in N row chunks, 0 = auto, 1 = every row at once (as the lm_head_chunks config key)", "0"),
    ZG_OPT_FLAG(bench_args, no_profile, "no-profile", "skip the per-op profile step"),
    ZG_OPT_FLAG(bench_args, json, "json", "also print one JSON line with the numbers"),
    ZG_OPT_END,
};

static const zg_command_spec bench_spec = {
    "bench",
    "[--model gpt2] [--batch 4] [--seq 256] [--steps N] [--device cpu|cuda]",
    "Measure training speed: tokens/s, ms/step, MFU, peak memory and the time split by op.",
    bench_opts,
    NULL,
    "A step is forward + backward + AdamW on random tokens. MFU counts 6N + 6*L*T*C FLOPs per token (N\n"
    "parameters, L layers, T sequence, C channels) over the peak: on the CPU the peak is measured with a\n"
    "large sgemm on this machine (so MFU is 'share of BLAS speed'); on CUDA give the card's dense peak\n"
    "with --peak-tflops."};

/* Measured fp32 matrix-product speed of this machine (FLOP/s) through the CPU backend's own
 * matmul op, so the threading is the one training uses (the backend pins BLAS to one thread and
 * splits products over OpenMP itself). */
static double cpu_matmul_peak(zg_backend *be) {
    const int n = 1024;
    size_t bytes = (size_t)n * n * sizeof(float);
    float *a = be->ops->alloc(be, bytes, "bench matmul A"), *b = be->ops->alloc(be, bytes, "bench matmul B"),
          *c = be->ops->alloc(be, bytes, "bench matmul C");
    double best = 0;
    if (!a || !b || !c) goto cleanup;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    be->ops->matmul_forward(be, c, NULL, a, b, NULL, NULL, n, n, n); /* warm up */
    for (int r = 0; r < 3; r++) {
        double t0 = zg_now_s();
        be->ops->matmul_forward(be, c, NULL, a, b, NULL, NULL, n, n, n);
        be->ops->synchronize(be);
        double f = 2.0 * n * n * (double)n / (zg_now_s() - t0);
        if (f > best) best = f;
    }
cleanup:
    if (a) be->ops->dealloc(be, a);
    if (b) be->ops->dealloc(be, b);
    if (c) be->ops->dealloc(be, c);
    return best;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Every step trains on the same random tokens (already in the step's input buffers). */
static void same_batch(void *ctx, int32_t *inputs, int32_t *targets) {
    (void)ctx;
    (void)inputs;
    (void)targets;
}

/* One step of zgpt train's step path (zg_train_step: the ZeRO engine at stage 0 over the single-process
 * communicator). A step returns once its update is launched; its gradient norm waited for the device, and
 * so for the step before's update. */
static int bench_step(const zg_train_step_cfg *s, float *loss, zg_train_step_result *r) {
    if (zg_train_step(s, 1e-4, 0, r) != 0) return -1;
    *loss = (float)r->loss;
    if (r->status != ZG_STEP_APPLIED)
        return zg_errorf("the loss or the gradient norm is not finite (loss %g, norm %g) on random tokens", r->loss,
                         r->grad_norm);
    return 0;
}

int zg_cmd_bench(int argc, char **argv) {
    bench_args a;
    int rc = zg_cli_parse(&bench_spec, argc, argv, &a, NULL);
    if (rc != 0) return rc < 0 ? 2 : 0;
    if (a.batch < 1 || a.seq < 1 || a.steps < 1 || a.warmup < 0 || a.peak_tflops < 0 || a.head_chunks < 0 ||
        a.head_chunks > 1 << 20) {
        zg_errorf("--batch, --seq and --steps must be >= 1, --warmup, --peak-tflops and --lm-head-chunks >= 0");
        zg_error_print();
        return 2;
    }
    zg_backend *be;
    gpt2_model m;
    char desc[600];
    int recompute;
    if (strcmp(a.recompute, "none") == 0)
        recompute = 0;
    else if (strcmp(a.recompute, "gelu") == 0)
        recompute = GPT2_RECOMPUTE_GELU;
    else if (strcmp(a.recompute, "layernorm") == 0)
        recompute = GPT2_RECOMPUTE_LAYERNORM;
    else if (strcmp(a.recompute, "ln1") == 0)
        recompute = GPT2_RECOMPUTE_LN1;
    else if (strcmp(a.recompute, "ln2") == 0)
        recompute = GPT2_RECOMPUTE_LN2;
    else if (strcmp(a.recompute, "all") == 0)
        recompute = GPT2_RECOMPUTE_GELU | GPT2_RECOMPUTE_LAYERNORM;
    else {
        zg_errorf("--recompute %s: use none, gelu, layernorm (both LayerNorms), ln1, ln2 or all", a.recompute);
        return zg_cli_fail();
    }
    if (a.ln_from_output && (recompute & GPT2_RECOMPUTE_LAYERNORM)) {
        zg_errorf("--memory-efficient-layernorm with --recompute %s: both save the LayerNorm activations; use one",
                  a.recompute);
        return zg_cli_fail();
    }
    if (a.ln_from_output) recompute |= GPT2_LN_FROM_OUTPUT;
    if (zg_model_instantiate(a.model, a.device, NULL, 0, 1337, &be, &m, desc, sizeof desc) != 0) return zg_cli_fail();
    m.recompute = recompute;
    m.head_chunks = (int)a.head_chunks;
    int B = (int)a.batch, T = (int)a.seq, status = 0;
    zg_comm *comm = NULL;
    zg_zero zero;
    memset(&zero, 0, sizeof zero);
    int32_t *in = NULL, *tg = NULL;
    if (T > m.cfg.block_size) {
        zg_errorf("--seq %d exceeds the model's block_size %d", T, m.cfg.block_size);
        status = zg_cli_fail();
        goto cleanup;
    }
    zg_optimizer_config oc = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    zg_comm_config cc = {.backend = "single", .be = be};
    zg_zero_opts zo;
    zg_zero_opts_default(&zo); /* stage 0: one process */
    if (zg_comm_create(&comm, &cc) != 0 || zg_zero_init_model(&zero, &zo, comm, be, &m, &oc) != 0 ||
        gpt2_activations_ensure(&m, B, T) != 0) {
        status = zg_cli_fail();
        goto cleanup;
    }
    in = zg_malloc((size_t)B * T * sizeof(int32_t));
    tg = zg_malloc((size_t)B * T * sizeof(int32_t));
    uint64_t r = 42;
    for (size_t i = 0; i < (size_t)B * T; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        in[i] = (int32_t)((r >> 33) % (uint64_t)m.cfg.vocab_size);
        tg[i] = (int32_t)((r >> 13) % (uint64_t)m.cfg.vocab_size);
    }
    printf("bench: %s, %s backend (%s), B=%d T=%d, %.2fM parameters\n", desc, be->ops->name,
           zg_dtype_name(be->param_dtype), B, T, (double)gpt2_param_count_unpadded(&m.cfg) / 1e6);
    int rows = gpt2_head_rows_now(&m);
    if (rows < B * T)
        printf("LM head: %d chunks of %d rows (--lm-head-chunks %d%s)\n", (B * T + rows - 1) / rows, rows,
               m.head_chunks, m.head_chunks ? "" : ": auto");
    fflush(stdout);
    zg_loss_scaler scaler; /* inert: bench trains without loss scaling */
    zg_loss_scaler_config lsc;
    zg_loss_scaler_config_defaults(&lsc);
    lsc.enabled = 0;
    zg_loss_scaler_init(&scaler, &lsc);
    zg_train_step_cfg step = {.model = &m,
                              .zero = &zero,
                              .B = B,
                              .T = T,
                              .grad_accum = 1,
                              .inputs = in,
                              .targets = tg,
                              .next_batch = same_batch,
                              .scaler = &scaler};
    zg_train_step_result sr;
    float loss = 0;
    for (int64_t i = 0; i < a.warmup && status == 0; i++)
        if (bench_step(&step, &loss, &sr) != 0) status = zg_cli_fail();
    /* Host clocks around each step: a step waits (at its gradient norm) for the update of the one before, so
     * once steps follow each other each interval is one period of the device's work; the median step is
     * reported (robust to a stray slow step). The first timed step follows the warm-up without a gap. */
    double *times = zg_malloc((size_t)a.steps * sizeof(double));
    for (int64_t i = 0; i < a.steps && status == 0; i++) {
        double t0 = zg_now_s();
        if (bench_step(&step, &loss, &sr) != 0) status = zg_cli_fail();
        times[i] = zg_now_s() - t0;
    }
    qsort(times, (size_t)a.steps, sizeof(double), cmp_double);
    double dt = a.steps % 2 ? times[a.steps / 2] : 0.5 * (times[a.steps / 2 - 1] + times[a.steps / 2]);
    free(times);
    if (status != 0) goto cleanup;
    double tok_s = (double)B * T / dt;
    double flops_tok = zg_mfu_flops_per_token(&m.cfg, T);
    double achieved = flops_tok * tok_s;
    double peak = 0;
    const char *peak_what = "n/a";
    char card[256], peak_text[320];
    if (a.peak_tflops > 0) {
        peak = a.peak_tflops * 1e12;
        peak_what = "--peak-tflops";
    } else if (strcmp(be->ops->name, "cpu") == 0) {
        peak = cpu_matmul_peak(be);
        peak_what = "measured fp32 matmul speed of this machine";
    } else {
        peak = zg_mfu_cuda_peak(be->device, card, sizeof card);
        if (peak > 0) {
            snprintf(peak_text, sizeof peak_text, "dense bf16 peak of the %s", card);
            peak_what = peak_text;
        }
    }
    struct rusage ru;
    double rss = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0) rss = (double)ru.ru_maxrss * 1024.0;
    char b1[32], b2[32];
    printf("tokens/s: %.0f\nms/step: %.1f (median of %lld steps)\n", tok_s, dt * 1e3, (long long)a.steps);
    printf("achieved: %.2f TFLOP/s (%.3g GFLOP per token)\n", achieved / 1e12, flops_tok / 1e9);
    if (peak > 0)
        printf("MFU: %.1f%% of %.2f TFLOP/s (%s)\n", 100.0 * achieved / peak, peak / 1e12, peak_what);
    else
        printf("MFU: n/a (no peak known for this device; give --peak-tflops, e.g. 989 for an H100 in bf16)\n");
    printf("peak memory: backend %s, process RSS %s\n", zg_fmt_bytes((double)be->bytes_peak, b1, sizeof b1),
           zg_fmt_bytes(rss, b2, sizeof b2));
    printf("loss after %lld steps on random tokens: %.4f\n", (long long)(a.warmup + a.steps), loss);
    long records, replays;
    int rec_off;
    gpt2_graph_counts(&m, &records, &replays, &rec_off);
    if (records > 0 || rec_off)
        printf("training passes: recorded %ld times, replayed %ld times%s\n", records, replays,
               rec_off ? ", then launched op by op (recording turned off)" : "");
    if (!a.no_profile) {
        gpt2_profile prof;
        memset(&prof, 0, sizeof prof);
        m.profile = &prof;
        step.breakdown = 1; /* the step's own phases, synchronised: the norm and the optimizer */
        double p0 = zg_now_s();
        if (bench_step(&step, &loss, &sr) != 0) {
            status = zg_cli_fail();
            goto cleanup;
        }
        double total_ms = (zg_now_s() - p0) * 1e3;
        m.profile = NULL;
        printf("time by op (one profiled step, %.1f ms; ops synchronised):\n", total_ms);
        printf("  %-12s %10s %10s %7s\n", "op", "fwd ms", "bwd ms", "share");
        for (int op = 0; op < GPT2_OP_COUNT; op++) {
            double f = prof.ms[0][op], bw = prof.ms[1][op];
            if (prof.calls[0][op] == 0 && prof.calls[1][op] == 0) continue;
            printf("  %-12s %10.1f %10.1f %6.1f%%\n", gpt2_op_name((gpt2_op)op), f, bw, 100.0 * (f + bw) / total_ms);
        }
        double norm_ms = sr.ms[ZG_STEP_NORM], opt_ms = sr.ms[ZG_STEP_OPTIMIZER];
        printf("  %-12s %10s %10.1f %6.1f%%\n", "grad norm", "", norm_ms, 100.0 * norm_ms / total_ms);
        printf("  %-12s %10s %10.1f %6.1f%%\n", "adamw", "", opt_ms, 100.0 * opt_ms / total_ms);
    }
    if (a.json)
        printf("{\"tokens_per_sec\": %.1f, \"ms_per_step\": %.2f, \"mfu\": %.4f, \"peak_bytes\": %zu}\n", tok_s,
               dt * 1e3, peak > 0 ? achieved / peak : 0.0, be->bytes_peak);
cleanup:
    free(in);
    free(tg);
    zg_zero_free(&zero);
    if (comm) zg_comm_destroy(comm);
    zg_model_release(be, &m);
    return status;
}
