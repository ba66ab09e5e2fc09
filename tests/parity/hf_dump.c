/* Runs zgpt's model on a Hugging Face GPT-2 (folder with config.json + model.safetensors) for one
 * batch and dumps what tests/parity/hf_parity.py compares against transformers:
 *   OUT/loss.txt            mean loss
 *   OUT/logits.f32          (B, T, vocab_size) fp32
 *   OUT/grad.<name>.f32     gradient of each named parameter (zgpt layout: Linear weights (out, in))
 * usage: hf_dump MODEL_DIR TOKENS_FILE OUT_DIR DEVICE PRECISION B T NAME...
 * TOKENS_FILE holds B*(T+1) int32: each row is T inputs followed by the shifted targets' last id. */
#include "backend/backend.h"
#include "core/error.h"
#include "core/fileio.h"
#include "model/gpt2.h"
#include "model/hf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_f32(const char *dir, const char *name, const float *data, size_t n) {
    char *path = zg_path_join(dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, sizeof(float), n, f) != n || fclose(f) != 0) {
        zg_errorf("cannot write '%s'", path);
        free(path);
        return -1;
    }
    free(path);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: hf_dump MODEL_DIR TOKENS_FILE OUT_DIR DEVICE PRECISION[:lnout] B T [PARAM_NAME...]\n"
                        "  PRECISION:lnout: LayerNorm backward from the output (memory_efficient_layernorm)\n");
        return 2;
    }
    const char *model_dir = argv[1], *tokens_path = argv[2], *out_dir = argv[3];
    int B = atoi(argv[6]), T = atoi(argv[7]);
    zg_backend_config bc = {.device = argv[4], .device_index = -1};
    char prec[32];
    snprintf(prec, sizeof prec, "%s", argv[5]);
    char *variant = strchr(prec, ':');
    if (variant) *variant++ = '\0';
    if (variant && strcmp(variant, "lnout") != 0) {
        fprintf(stderr, "hf_dump: precision '%s': the only variant is ':lnout'\n", argv[5]);
        return 2;
    }
    if (zg_dtype_parse(prec, &bc.precision) != 0) return zg_error_print(), 1;

    gpt2_config cfg;
    if (hf_config_load(model_dir, &cfg) != 0) return zg_error_print(), 1;
    gpt2_param_table table;
    if (gpt2_param_table_init(&table, &cfg) != 0) return zg_error_print(), 1;
    float *host = zg_malloc(table.num_params * sizeof(float));
    if (hf_params_load(model_dir, &cfg, host) != 0) return zg_error_print(), 1;

    zg_backend *be;
    if (zg_backend_create(&be, &bc) != 0) return zg_error_print(), 1;
    gpt2_model m;
    if (gpt2_init(&m, &cfg, be) != 0 || gpt2_grads_alloc(&m) != 0) return zg_error_print(), 1;
    if (variant) m.recompute = GPT2_LN_FROM_OUTPUT;
    gpt2_params_upload(&m, host);
    gpt2_zero_grad(&m);

    char *tok_data;
    size_t tok_len;
    if (zg_file_read_all(tokens_path, &tok_data, &tok_len) != 0) return zg_error_print(), 1;
    if (tok_len != (size_t)B * (T + 1) * sizeof(int32_t)) {
        fprintf(stderr, "hf_dump: '%s' holds %zu bytes, expected B*(T+1)*4 = %zu\n", tokens_path, tok_len,
                (size_t)B * (T + 1) * 4);
        return 1;
    }
    const int32_t *rows = (const int32_t *)tok_data;
    int32_t *inputs = zg_malloc((size_t)B * T * sizeof(int32_t));
    int32_t *targets = zg_malloc((size_t)B * T * sizeof(int32_t));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = rows[b * (T + 1) + t];
            targets[b * T + t] = rows[b * (T + 1) + t + 1];
        }

    float loss;
    if (gpt2_forward(&m, inputs, NULL, B, T, &loss) != 0) return zg_error_print(), 1;
    /* Logits of every position (forward without targets keeps them). */
    size_t V = (size_t)cfg.vocab_size;
    float *logits = zg_malloc((size_t)B * T * V * sizeof(float));
    float *row = zg_malloc((size_t)B * V * sizeof(float));
    for (int t = 0; t < T; t++) {
        gpt2_logits(&m, t, row);
        for (int b = 0; b < B; b++) memcpy(logits + ((size_t)b * T + t) * V, row + (size_t)b * V, V * sizeof(float));
    }
    if (write_f32(out_dir, "logits.f32", logits, (size_t)B * T * V) != 0) return zg_error_print(), 1;

    if (gpt2_forward(&m, inputs, targets, B, T, &loss) != 0) return zg_error_print(), 1;
    gpt2_backward(&m, 1.0f);
    be->ops->synchronize(be);
    char *loss_path = zg_path_join(out_dir, "loss.txt");
    FILE *lf = fopen(loss_path, "w");
    if (!lf) return zg_errorf("cannot write '%s'", loss_path), zg_error_print(), 1;
    fprintf(lf, "%.9g\n", loss);
    fclose(lf);
    free(loss_path);

    for (int i = 8; i < argc; i++) {
        const gpt2_tensor *t = gpt2_param_table_find(&m.table, argv[i]);
        if (!t) {
            fprintf(stderr, "hf_dump: no parameter named '%s'\n", argv[i]);
            return 1;
        }
        float *g = zg_malloc(t->numel * sizeof(float));
        be->ops->download_f32(be, g, (const char *)m.grads + t->offset * zg_dtype_size(be->grad_dtype), be->grad_dtype,
                              t->numel);
        char name[128];
        snprintf(name, sizeof name, "grad.%s.f32", argv[i]);
        if (write_f32(out_dir, name, g, t->numel) != 0) return zg_error_print(), 1;
        free(g);
    }
    printf("hf_dump: %s %s loss %.6f, peak backend memory %.2f GiB\n", argv[4], argv[5], loss,
           be->bytes_peak / 1073741824.0);
    free(logits);
    free(row);
    free(inputs);
    free(targets);
    free(tok_data);
    free(host);
    gpt2_free(&m);
    gpt2_param_table_free(&table);
    zg_backend_destroy(be);
    return 0;
}
