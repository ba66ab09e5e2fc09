/* CPU model benchmark: GPT-2 forward+backward tokens/s at micro-batch B, sequence T, with the time
 * split by op (gpt2_profile). Built and run by bench/cpu_model_bench.sh.
 * usage: cpu_model_bench [model=gpt2] [B=4] [T=256] [steps=3]
 * model is gpt2, gpt2-medium, gpt2-large, gpt2-xl, or L:H:C for a custom n_layer:n_head:n_embd with
 * the GPT-2 vocabulary and block_size T. */
#include "backend/backend.h"
#include "core/error.h"
#include "core/strutil.h"
#include "model/gpt2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    ZG_CHECK_SYS(clock_gettime(CLOCK_MONOTONIC, &ts));
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "gpt2";
    int B = argc > 2 ? atoi(argv[2]) : 4, T = argc > 3 ? atoi(argv[3]) : 256, steps = argc > 4 ? atoi(argv[4]) : 3;
    if (B < 1 || T < 1 || steps < 1) {
        fprintf(stderr, "usage: cpu_model_bench [model] [B >= 1] [T >= 1] [steps >= 1]\n");
        return 2;
    }
    gpt2_config cfg;
    zg_backend *be;
    zg_backend_config bc = {"cpu", -1, ZG_F32};
    gpt2_model m;
    int L, H, C;
    int custom = sscanf(name, "%d:%d:%d", &L, &H, &C) == 3;
    if (custom) {
        memset(&cfg, 0, sizeof cfg);
        cfg.n_layer = L;
        cfg.n_head = H;
        cfg.n_embd = C;
        cfg.block_size = T;
        cfg.vocab_size = 50257;
    }
    if ((custom ? gpt2_config_validate(&cfg) : gpt2_config_by_name(name, &cfg)) != 0 ||
        zg_backend_create(&be, &bc) != 0 || gpt2_init(&m, &cfg, be) != 0 || gpt2_grads_alloc(&m) != 0 ||
        gpt2_activations_ensure(&m, B, T) != 0) {
        zg_error_print();
        return 1;
    }
    gpt2_init_random(&m, 1);
    int32_t *in = malloc((size_t)B * T * 4), *tg = malloc((size_t)B * (T + 1) * 4);
    if (!in || !tg) return 1;
    uint64_t s = 7;
    for (int i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        in[i] = (int32_t)((s >> 33) % (uint64_t)cfg.vocab_size);
        tg[i] = (int32_t)((s >> 13) % (uint64_t)cfg.vocab_size);
    }
    /* warm-up (first touch of activations and BLAS buffers) */
    if (gpt2_forward(&m, in, tg, B, T, NULL) != 0) return zg_error_print(), 1;
    gpt2_backward(&m, 1.0f);
    double t0 = now_s(), fwd = 0;
    float loss = 0;
    for (int i = 0; i < steps; i++) {
        double a = now_s();
        if (gpt2_forward(&m, in, tg, B, T, &loss) != 0) return zg_error_print(), 1;
        fwd += now_s() - a;
        gpt2_backward(&m, 1.0f);
    }
    double dt = (now_s() - t0) / steps;
    double tokens = (double)B * T;
    /* FLOPs per token: 6 N for the weights (LM head included) + 12 L T C for attention scores/values
     * as the CPU computes them (full T x T products, fwd 4 L T C, bwd 8 L T C). */
    double N = (double)gpt2_param_count_unpadded(&cfg) - (double)cfg.block_size * cfg.n_embd;
    double flops = tokens * (6.0 * N + 12.0 * cfg.n_layer * T * cfg.n_embd);
    printf("model %s, B=%d, T=%d, %d threads: %.1f ms/step (forward %.1f ms), %.1f tokens/s, %.1f GFLOP/s, loss %.4f\n",
           name, B, T, omp_get_max_threads(), dt * 1e3, fwd / steps * 1e3, tokens / dt, flops / dt * 1e-9, loss);
    char b1[32], b2[32];
    printf("memory: %s in use (parameters + gradients + activations), peak %s\n",
           zg_fmt_bytes((double)be->bytes_in_use, b1, sizeof b1), zg_fmt_bytes((double)be->bytes_peak, b2, sizeof b2));
    gpt2_profile prof;
    memset(&prof, 0, sizeof prof);
    m.profile = &prof;
    if (gpt2_forward(&m, in, tg, B, T, NULL) != 0) return zg_error_print(), 1;
    gpt2_backward(&m, 1.0f);
    m.profile = NULL;
    double total = 0;
    for (int p = 0; p < 2; p++)
        for (int o = 0; o < GPT2_OP_COUNT; o++) total += prof.ms[p][o];
    printf("per-op split of one profiled step (%.1f ms):\n", total);
    printf("  %-11s %10s %10s %7s\n", "op", "fwd ms", "bwd ms", "share");
    for (int o = 0; o < GPT2_OP_COUNT; o++) {
        double sum = prof.ms[0][o] + prof.ms[1][o];
        printf("  %-11s %10.1f %10.1f %6.1f%%\n", gpt2_op_name((gpt2_op)o), prof.ms[0][o], prof.ms[1][o],
               100.0 * sum / total);
    }
    free(in);
    free(tg);
    gpt2_free(&m);
    zg_backend_destroy(be);
    return 0;
}
