/* zgpt plan: per-rank memory of a training config at a ZeRO stage and world size, from the same
 * function the engine's accounting is checked against (zg_zero_plan), next to the ZeRO paper's
 * model-state formulas. */
#include "backend/backend.h"
#include "cli/cli_common.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/strutil.h"
#include "model/gpt2.h"
#include "train/config.h"
#include "train/zero.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t nproc;
    int64_t stage;       /* -1: from the config */
    int64_t micro_batch; /* 0: from the config */
    const char *model;
    const char *device;
    const char *precision;
    int json;
    const char *deepspeed;
} plan_args;

static const zg_option plan_options[] = {
    ZG_OPT_INT(plan_args, nproc, "nproc", "N",
               "number of ranks (processes / GPUs); unset: the count the config's three batch keys imply, else 1",
               "-1"),
    ZG_OPT_INT(plan_args, stage, "stage", "S", "ZeRO stage 0-3 (default: the config's zero_optimization.stage)", "-1"),
    ZG_OPT_INT(plan_args, micro_batch, "micro-batch", "B", "micro-batch per rank (default: the config's)", "0"),
    ZG_OPT_STR(plan_args, model, "model", "NAME",
               "gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2 (default: the config's model)", NULL),
    ZG_OPT_STR(plan_args, device, "device", "DEV", "cpu or cuda (decides the precision the run would use)", "cuda"),
    ZG_OPT_STR(plan_args, precision, "precision", "P", "fp32, bf16 or fp16 (default: the config's, for the device)",
               NULL),
    ZG_OPT_FLAG(plan_args, json, "json", "print JSON"),
    ZG_OPT_STR(plan_args, deepspeed, "deepspeed", "DS_CONFIG",
               "DeepSpeed config file used with CONFIG (as zgpt train --deepspeed)", NULL),
    ZG_OPT_STR(plan_args, deepspeed, "deepspeed_config", "DS_CONFIG", "the same as --deepspeed (DeepSpeed's spelling)",
               NULL),
    ZG_OPT_END,
};

static const zg_command_spec plan_spec = {
    "plan",
    "[CONFIG [--deepspeed DS_CONFIG]] [--nproc N] [--stage S] [--micro-batch B] [--model NAME] [--device cpu|cuda]",
    "print per-rank memory (params, grads, optimizer state, comm buffers, activations) for a config",
    plan_options,
    "CONFIG",
    "CONFIG is a training config (zgpt train --config); without one, --model gives the model and the\n"
    "DeepSpeed defaults apply (stage 0, buckets of 5e8). The numbers are what zgpt allocates per rank;\n"
    "the ZeRO paper's model-state figure (2+2+12 bytes per parameter, mixed-precision Adam) is printed\n"
    "next to them.",
};

static double paper_bytes(int stage, double psi, int n) {
    switch (stage) {
    case 0: return 16.0 * psi;
    case 1: return 4.0 * psi + 12.0 * psi / n;
    case 2: return 2.0 * psi + 14.0 * psi / n;
    default: return 16.0 * psi / n;
    }
}

/* Host memory a rank's background checkpoint snapshot takes: the optimizer range it saves (at stage 0
 * only rank 0 saves; every rank holds the same state), wherever the state lives (ZeRO-Offload: host). */
static size_t snapshot_bytes(const zg_zero_opts *zo, int world, int rank, const zg_zero_memory *m) {
    return world > 1 && zo->stage == 0 && rank > 0 ? 0 : m->optimizer_state;
}

/* A checkpoint on disk (docs/FORMATS.md): 12 bytes per parameter (fp32 master or parameters, m, v)
 * plus the 64-byte headers of model.bin and the shards; state.json and the manifest not counted. */
static double checkpoint_bytes(size_t n, const zg_zero_opts *zo, int world) {
    int shards = world > 1 && zo->stage > 0 ? world : 1;
    return 12.0 * (double)n + 64.0 * (1 + shards);
}

/* What the CUDA backend's attention backward borrows of the logits' region at (B, T) (backend.h,
 * scratch_lend_want), estimated without a GPU: cuDNN's deterministic backward (bf16/fp16, head size a multiple
 * of 8 up to 128) keeps dS, B*NH*T^2 elements, 128 bytes into its workspace, and two rows of B*NH*T floats
 * (802.5 MiB at GPT-2 XL B=16), then zgpt's D sums (B*NH*T floats) and, on a shape's first call, cuDNN's dQ
 * (B*T*C) for the check of zgpt's dQ kernel. A run asks cuDNN's plan itself. */
static size_t cuda_lend_estimate(const gpt2_config *g, zg_dtype dt, int B, int T) {
    int hs = g->n_head > 0 ? g->n_embd / g->n_head : 0;
    if (dt == ZG_F32 || hs % 8 != 0 || hs > 128) return 0;
    size_t rows = (size_t)B * g->n_head * T, es = zg_dtype_size(dt);
    size_t ws = (128 + rows * T * es + 2 * rows * sizeof(float) + 255) / 256 * 256;
    return ws + (rows * sizeof(float) + 255) / 256 * 256 + (size_t)B * T * g->n_embd * es;
}

static const char *paper_formula(int stage) {
    switch (stage) {
    case 0: return "16Psi (2Psi params + 2Psi grads + 12Psi optimizer)";
    case 1: return "4Psi + 12Psi/N";
    case 2: return "2Psi + 14Psi/N";
    default: return "16Psi/N";
    }
}

/* Which gradients each micro-step reduces (grad_accum_local_layers; zg_zero_grad_schedule_of). */
static void print_grad_schedule(const zg_zero_opts *zo, const zg_zero_grad_schedule *s, int N, int L, size_t eb,
                                int given) {
    char b1[32], b2[32], b3[32], b4[32], b5[32];
    if (s->idle && given) printf("  grad_accum_local_layers %d: %s\n", zo->grad_accum_local_layers, s->idle);
    if (N == 1 || zo->stage < 2) return;
    if (!s->embeddings) {
        printf("  gradient reductions (grad_accum_local_layers %d): every micro-step reduces all %zu elements (%s); "
               "%s per step of %d micro-steps\n",
               zo->grad_accum_local_layers, s->reduced_last,
               zg_fmt_bytes((double)(s->reduced_last * eb), b1, sizeof b1),
               zg_fmt_bytes((double)(s->reduced_step * eb), b2, sizeof b2), zo->grad_accum);
        return;
    }
    char layers[64] = "";
    if (s->layers > 0) snprintf(layers, sizeof layers, " and layers 0-%d of %d", s->layers - 1, L);
    printf("  gradient reductions (grad_accum_local_layers %d%s): the embeddings + ln_f%s accumulate locally over\n"
           "    the %d micro-steps and are reduced on the last only: %zu elements (%s) reduced per micro-step, all\n"
           "    %zu (%s) on the last; %s per step (every micro-step reducing everything: %s);\n"
           "    persistent layer buffers %s per rank (in grads*)\n",
           zo->grad_accum_local_layers, zo->grad_accum_local_layers == -1 ? ", auto" : "", layers, zo->grad_accum,
           s->reduced_micro, zg_fmt_bytes((double)(s->reduced_micro * eb), b1, sizeof b1), s->reduced_last,
           zg_fmt_bytes((double)(s->reduced_last * eb), b2, sizeof b2),
           zg_fmt_bytes((double)(s->reduced_step * eb), b3, sizeof b3),
           zg_fmt_bytes((double)(s->reduced_last * eb) * zo->grad_accum, b4, sizeof b4),
           zg_fmt_bytes((double)(s->layer_elems * eb), b5, sizeof b5));
}

int zg_cmd_plan(int argc, char **argv) {
    plan_args a;
    zg_strlist pos = {0};
    int prc = zg_cli_parse(&plan_spec, argc, argv, &a, &pos);
    if (prc != 0) return prc < 0 ? 2 : 0;
    int rc = 1;
    zg_train_config tc;
    int have_cfg = 0, have_table = 0;
    gpt2_param_table table;
    if (pos.count > 1) {
        zg_errorf("plan takes one CONFIG, got %d", pos.count);
        zg_error_print();
        zg_strlist_free(&pos);
        return 2;
    }
    if ((a.nproc < 1 && a.nproc != -1) || a.nproc > 1 << 20) {
        zg_errorf("--nproc %lld: must be at least 1", (long long)a.nproc);
        zg_error_print();
        zg_strlist_free(&pos);
        return 2;
    }
    if (a.deepspeed && pos.count != 1) {
        zg_errorf("--deepspeed '%s' needs a training CONFIG too (zgpt plan CONFIG --deepspeed DS_CONFIG)", a.deepspeed);
        zg_error_print();
        zg_strlist_free(&pos);
        return 2;
    }
    if (pos.count == 1) {
        if (zg_train_config_load(&tc, pos.items[0], a.deepspeed, NULL, 0) != 0) goto cleanup;
        have_cfg = 1;
        /* train_batch_size = micro x accumulation x N written for one N: that N unless told otherwise */
        if (a.nproc == -1) a.nproc = tc.world_size;
        if (zg_train_config_resolve_batch(&tc, (int)a.nproc) != 0) goto cleanup;
    }
    if (a.nproc == -1) a.nproc = 1;

    /* model */
    gpt2_config g;
    memset(&g, 0, sizeof g);
    const char *name = a.model;
    if (!name && have_cfg && tc.init_from && strncmp(tc.init_from, "gpt2", 4) == 0) name = tc.init_from;
    gpt2_config named;
    if (name && gpt2_config_by_name(name, &named) != 0) goto cleanup;
    if (!name) name = "custom";
    if (have_cfg && !a.model) {
        if (zg_train_config_model_shape(&tc, strcmp(name, "custom") ? &named : NULL, &g) != 0) goto cleanup;
    } else if (strcmp(name, "custom") != 0) {
        g = named;
    } else if (gpt2_config_by_name("gpt2", &g) != 0) {
        goto cleanup;
    }
    if (gpt2_param_table_init(&table, &g) != 0) goto cleanup;
    have_table = 1;
    size_t n = table.num_params;

    /* ZeRO settings, precision, batch */
    zg_zero_opts zo;
    if (have_cfg)
        zg_zero_opts_from_config(&tc.zero, &zo);
    else
        zg_zero_opts_default(&zo);
    if (a.stage >= 0) zo.stage = (int)a.stage;
    if (zo.stage > 3) {
        zg_errorf("--stage %d: allowed 0, 1, 2, 3", zo.stage);
        goto cleanup;
    }
    if (zo.stage != 3) zo.offload_param = 0; /* --stage: parameters are offloaded at stage 3 only */
    zo.grad_accum = have_cfg ? (int)tc.grad_accum : 1;
    zo.grad_accum_local_layers = have_cfg ? tc.grad_accum_local_layers : -1;
    if (zg_zero_local_check(&zo, g.n_layer) != 0) goto cleanup;
    size_t requested_bucket = zo.reduce_bucket_size;
    zg_zero_opts_fit_model(&zo, &table); /* what the trainer will use */
    int device = strcmp(a.device, "cuda") == 0;
    if (!device && strcmp(a.device, "cpu") != 0) {
        zg_errorf("--device '%s': expected cpu or cuda", a.device);
        goto cleanup;
    }
    zg_dtype dt = device ? ZG_BF16 : ZG_F32;
    if (a.precision) {
        if (zg_dtype_parse(a.precision, &dt) != 0) goto cleanup;
    } else if (have_cfg) {
        zg_precision p = zg_train_config_precision(&tc, a.device);
        dt = p == ZG_PREC_FP16 ? ZG_F16 : p == ZG_PREC_BF16 ? ZG_BF16 : ZG_F32;
    }
    if (!device && dt != ZG_F32) {
        zg_errorf("the CPU backend trains in fp32; use --device cuda for %s", zg_dtype_name(dt));
        goto cleanup;
    }
    int B = a.micro_batch > 0 ? (int)a.micro_batch : have_cfg ? (int)tc.micro_batch : 1;
    int T = g.block_size;
    int recompute = have_cfg ? zg_train_config_recompute(&tc) : 0;
    char rdesc[96];
    int rc_layers = have_cfg ? tc.recompute_num_layers : 0;
    int head_chunks = have_cfg ? tc.lm_head_chunks : 0;
    size_t lend = device ? cuda_lend_estimate(&g, dt, B, T) : 0;
    size_t act = gpt2_activation_bytes(&g, dt, B, T, recompute, rc_layers, head_chunks, lend);
    int head_rows = gpt2_head_rows(&g, zg_dtype_size(dt), B * T, head_chunks, lend);
    int N = (int)a.nproc;
    double psi = (double)n;

    char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], b7[32], b8[32];
    zg_zero_grad_schedule gs;
    zg_zero_grad_schedule_of(&table, &zo, N, &gs);
    size_t eb = zg_dtype_size(dt);
    int carry = zg_zero_carry_of(&zo, N); /* (ZGPT_REDUCE_CARRY checked as the trainer does) */
    if (carry < 0) goto cleanup;
    if (a.json) {
        printf("{\"model\":\"%s\",\"num_params\":%zu,\"nproc\":%d,\"stage\":%d,\"dtype\":\"%s\",\"micro_batch\":%d,"
               "\"seq\":%d,\"reduce_bucket_size\":%zu,\"allgather_bucket_size\":%zu,\"paper_model_state_bytes\":%.0f,"
               "\"ranks\":[",
               name, n, N, zo.stage, zg_dtype_name(dt), B, T, zo.reduce_bucket_size, zo.allgather_bucket_size,
               paper_bytes(zo.stage, psi, N));
        size_t gpu_max = 0, host_max = 0; /* rank 0 holds the largest shard; the maxima say it for any layout */
        for (int r = 0; r < N; r++) {
            zg_zero_memory m;
            zg_zero_plan_model(&table, N, r, &zo, dt, dt, device, act, &m);
            printf("%s{\"rank\":%d,\"params\":%zu,\"grads\":%zu,\"grad_shard\":%zu,\"optimizer\":%zu,\"comm\":%zu,"
                   "\"activations\":%zu,\"total\":%zu,\"host\":%zu,\"checkpoint_snapshot\":%zu}",
                   r ? "," : "", r, m.params, m.grads, m.grad_shard, m.optimizer, m.comm, m.activations,
                   zg_zero_memory_total(&m), m.host, snapshot_bytes(&zo, N, r, &m));
            if (zg_zero_memory_total(&m) > gpu_max) gpu_max = zg_zero_memory_total(&m);
            if (m.host > host_max) host_max = m.host;
        }
        printf("],\"offload_optimizer\":\"%s\",\"offload_param\":\"%s\",\"gpu_bytes_per_rank\":%zu,"
               "\"host_bytes_per_rank\":%zu,\"checkpoint_bytes\":%.0f,",
               zo.offload_optimizer ? "cpu" : "none", zo.offload_param ? "cpu" : "none", gpu_max, host_max,
               checkpoint_bytes(n, &zo, N));
        printf("\"grad_accum\":%d,\"grad_accum_local_layers\":%d,\"local_embeddings\":%s,\"local_layers\":%d,"
               "\"local_layer_bytes\":%zu,\"reduced_elems_per_micro_step\":%zu,\"reduced_elems_last_micro_step\":%zu,"
               "\"reduced_elems_per_step\":%zu,\"reduced_bytes_per_micro_step\":%zu,\"reduced_bytes_per_step\":%zu,"
               "\"carried_reductions\":%s}\n",
               zo.grad_accum, zo.grad_accum_local_layers, gs.embeddings ? "true" : "false", gs.layers,
               gs.layer_elems * eb, gs.reduced_micro, gs.reduced_last, gs.reduced_step, gs.reduced_micro * eb,
               gs.reduced_step * eb, carry ? "true" : "false");
        rc = 0;
        goto cleanup;
    }
    if (have_cfg) zg_train_config_print_notes(&tc, stdout); /* resolved "auto"s and keys without effect */
    printf("zgpt plan: %s (%d layers, %d heads, %d channels), %zu parameters (Psi, padded vocabulary)\n", name,
           g.n_layer, g.n_head, g.n_embd, n);
    printf("  %d rank%s, ZeRO stage %d, %s params/grads on %s, fp32 Adam%s, micro-batch %d x %d tokens%s%s\n", N,
           N == 1 ? "" : "s", zo.stage, zg_dtype_name(dt), device ? "cuda" : "cpu",
           dt != ZG_F32 ? " + fp32 master" : " (master = params)", B, T, recompute ? ", activations: " : "",
           gpt2_recompute_describe(recompute, rdesc, sizeof rdesc));
    if ((recompute & (GPT2_RECOMPUTE_GELU | GPT2_RECOMPUTE_LAYERNORM)) && rc_layers > 0 && rc_layers < g.n_layer)
        printf("  (recomputed in layers 0-%d of %d: recompute_num_layers %d)\n", rc_layers - 1, g.n_layer, rc_layers);
    if (head_rows < B * T)
        printf("  LM head in %d chunks of %d rows (lm_head_chunks %d%s): the logits of %s instead of %s\n",
               (B * T + head_rows - 1) / head_rows, head_rows, head_chunks, head_chunks ? "" : ", auto",
               zg_fmt_bytes((double)head_rows * g.padded_vocab_size * zg_dtype_size(dt), b1, sizeof b1),
               zg_fmt_bytes((double)B * T * g.padded_vocab_size * zg_dtype_size(dt), b2, sizeof b2));
    if (requested_bucket != zo.reduce_bucket_size)
        printf("  reduce_bucket_size %zu lowered to %zu (the largest layer, at least 2^24): layers are reduced as they "
               "complete\n",
               requested_bucket, zo.reduce_bucket_size);
    printf("  buckets: reduce %zu, all-gather %zu elements; overlap_comm %s\n\n", zo.reduce_bucket_size,
           zo.allgather_bucket_size, zo.overlap_comm ? "on" : "off");
    if (zo.offload_optimizer)
        printf("  ZeRO-Offload (offload_optimizer cpu%s): the optimizer state (fp32 %s, Adam m, v) and the gradient +\n"
               "    parameter staging of each rank's shard live in host memory; AdamW runs on the CPU%s\n\n",
               zo.offload_pin_memory ? ", pinned" : "", dt != ZG_F32 ? "master" : "parameters",
               zo.offload_dpu
                   ? ",\n    delayed parameter update: step t's host AdamW overlaps step t+1 (whose gradients "
                     "come from\n    the weights one update older), + one parameter shard of host memory "
                     "per rank"
                   : "");
    if (zo.offload_param)
        printf("  offload_param cpu%s: each rank's %s parameter shard lives in host memory%s;\n"
               "    each layer is uploaded into its gather slot just before use (the next one prefetched)\n\n",
               zo.offload_param_pin_memory ? " (pinned)" : "", zg_dtype_name(dt),
               zo.offload_optimizer ? " (the host AdamW updates it in place)" : "");
    printf("  %-5s %11s %11s %11s %11s %11s %11s %11s %11s\n", "rank", "params", "grads*", "grad shard", "optimizer",
           "comm", "activations", "GPU total", "host");
    zg_zero_memory m0;
    memset(&m0, 0, sizeof m0);
    int shown = 0;
    for (int r = 0; r < N; r++) {
        zg_zero_memory m;
        zg_zero_plan_model(&table, N, r, &zo, dt, dt, device, act, &m);
        if (r == 0) m0 = m;
        /* long lists: the first 8 and the last rank (shards differ only at the end) */
        if (N > 9 && r >= 8 && r != N - 1) {
            if (!shown++) printf("  ...\n");
            continue;
        }
        printf("  %-5d %11s %11s %11s %11s %11s %11s %11s %11s\n", r, zg_fmt_bytes((double)m.params, b1, sizeof b1),
               zg_fmt_bytes((double)m.grads, b2, sizeof b2), zg_fmt_bytes((double)m.grad_shard, b3, sizeof b3),
               zg_fmt_bytes((double)m.optimizer, b4, sizeof b4), zg_fmt_bytes((double)m.comm, b5, sizeof b5),
               zg_fmt_bytes((double)m.activations, b6, sizeof b6),
               zg_fmt_bytes((double)zg_zero_memory_total(&m), b7, sizeof b7),
               zg_fmt_bytes((double)m.host, b8, sizeof b8));
    }
    double ours = (double)(m0.params + m0.grads + m0.grad_shard + m0.optimizer);
    if (zo.stage <= 1)
        printf("\n  * grads: the model's full gradient buffer, accumulated over micro-steps.\n");
    else if (zg_zero_grads_direct(&zo, N))
        printf("\n  * grads: the model's full gradient buffer, accumulated over micro-steps (offload on one rank:\n"
               "    nothing to reduce, so no layer buffers and no shard; the last backward sends it to the host).\n");
    else
        printf(
            "\n  * grads: no full gradient buffer. Per-micro-step scratch only: the embeddings + ln_f gradients\n"
            "    (%s, resident: wte's completes last) and %d of %d pool layer buffers (%s each; the layer in\n"
            "    backward, < 1 reduce bucket pending and %s bucket(s) in flight)%s. The gradient state is the shard.\n",
            zg_fmt_bytes((double)((table.layer_begin[0] + n - table.layer_begin[g.n_layer]) * zg_dtype_size(dt)), b1,
                         sizeof b1),
            zg_zero_grad_pool_count(&table, &zo, N), g.n_layer,
            zg_fmt_bytes((double)((table.layer_begin[1] - table.layer_begin[0]) * zg_dtype_size(dt)), b2, sizeof b2),
            zo.overlap_comm ? "up to 2" : "no",
            gs.layers > 0 ? ",\n    + the persistent buffers of the layers held back (below)" : "");
    print_grad_schedule(&zo, &gs, N, g.n_layer, eb, have_cfg && tc.grad_accum_local_layers_given);
    if (carry)
        printf("  carried reductions: each micro-step but a step's last leaves its last reductions in flight, under\n"
               "    the next micro-step's forward (no memory: they hold pool buffers the next backward takes anyway;\n"
               "    ZGPT_REDUCE_CARRY=0 makes each micro-step wait for its reductions)\n");
    if (zo.stage == 3)
        printf(
            "  params at stage 3: the rank's shard%s + the gathered embeddings + ln_f + 2 layer buffers (the current\n"
            "    layer and the prefetched next); checkpoints and export gather a full copy for their duration.\n",
            zo.offload_param ? " (in host memory: offload_param)" : "");
    printf("\n  ZeRO paper, model states per rank at stage %d: %s = %s (N = %d)\n", zo.stage, paper_formula(zo.stage),
           zg_fmt_bytes(paper_bytes(zo.stage, psi, N), b1, sizeof b1), N);
    printf("  zgpt rank 0, the same states (params + grads%s + optimizer%s): %s\n",
           zo.stage >= 2 ? " scratch + grad shard" : "", dt == ZG_F32 ? ", fp32 so 8 bytes/param Adam" : "",
           zg_fmt_bytes(ours, b2, sizeof b2));
    /* background_checkpoint: each rank copies the optimizer range it saves into host memory at a save
     * point (src/train/checkpoint.h, zg_ckpt_snapshot; rank 0's fp32 parameters, when it needs them, are
     * in the host buffer it always holds) */
    zg_zero_memory mlast;
    zg_zero_plan_model(&table, N, N - 1, &zo, dt, dt, device, act, &mlast);
    printf("  checkpoint: %s on disk (12 bytes per parameter)\n",
           zg_fmt_bytes(checkpoint_bytes(n, &zo, N), b3, sizeof b3));
    printf("  background_checkpoint: a host snapshot of %s on rank 0",
           zg_fmt_bytes((double)snapshot_bytes(&zo, N, 0, &m0), b4, sizeof b4));
    if (N > 1)
        printf(", %s on rank %d", zg_fmt_bytes((double)snapshot_bytes(&zo, N, N - 1, &mlast), b5, sizeof b5), N - 1);
    printf(" (pinned host memory on CUDA, allocated once and reused between saves)\n");
    rc = 0;
cleanup:
    if (rc != 0) zg_error_print();
    if (have_cfg) zg_train_config_free(&tc);
    if (have_table) gpt2_param_table_free(&table);
    zg_strlist_free(&pos);
    return rc;
}
