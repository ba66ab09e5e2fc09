/* zgpt's GPT-2 against Hugging Face transformers on tests/fixtures/hf_tiny (written by
 * scripts/make_hf_fixture.py): logits, loss, every parameter gradient, and 10 AdamW steps. */
#include "backend/backend.h"
#include "core/error.h"
#include "core/fileio.h"
#include "model/gpt2.h"
#include "model/hf.h"
#include "model/safetensors.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *dir;
    gpt2_config cfg;
    zg_backend *be;
    gpt2_model m;
    float *params0; /* HF parameters in zgpt layout */
    int32_t *inputs, *targets;
    float *logits; /* (B,T,V) */
    float loss;
    float adamw_losses[10];
    int B, T;
} fixture;

static int read_i32(const safetensors_file *f, const char *name, int32_t **out, int *B, int *T) {
    const safetensors_tensor *t = safetensors_find(f, name);
    if (t == NULL || strcmp(t->dtype_name, "I32") != 0 || t->ndim != 2) return -1;
    *B = (int)t->shape[0];
    *T = (int)t->shape[1];
    *out = zg_malloc(t->numel * sizeof(int32_t));
    memcpy(*out, t->data, t->numel * sizeof(int32_t));
    return 0;
}

static int fixture_load(fixture *fx) {
    memset(fx, 0, sizeof *fx);
    fx->dir = zg_path_join(zt_src_dir(), "tests/fixtures/hf_tiny");
    if (hf_config_load(fx->dir, &fx->cfg) != 0) return -1;
    zg_backend_config bc = {"cpu", -1, ZG_F32};
    if (zg_backend_create(&fx->be, &bc) != 0) return -1;
    if (gpt2_init(&fx->m, &fx->cfg, fx->be) != 0) return -1;
    if (gpt2_grads_alloc(&fx->m) != 0) return -1;
    fx->params0 = zg_malloc(fx->m.table.num_params * sizeof(float));
    if (hf_params_load(fx->dir, &fx->cfg, fx->params0) != 0) return -1;
    gpt2_params_upload(&fx->m, fx->params0);
    char *ep = zg_path_join(fx->dir, "expected.safetensors");
    safetensors_file f;
    int rc = safetensors_open(&f, ep);
    free(ep);
    if (rc != 0) return -1;
    int B2, T2;
    rc = read_i32(&f, "inputs", &fx->inputs, &fx->B, &fx->T);
    if (rc == 0) rc = read_i32(&f, "targets", &fx->targets, &B2, &T2);
    const safetensors_tensor *lg = safetensors_find(&f, "logits");
    const safetensors_tensor *ls = safetensors_find(&f, "loss");
    const safetensors_tensor *al = safetensors_find(&f, "adamw_losses");
    if (rc == 0 && (lg == NULL || ls == NULL || al == NULL || al->numel != 10 ||
                    lg->numel != (size_t)fx->B * fx->T * fx->cfg.vocab_size))
        rc = zg_errorf("expected.safetensors lacks logits/loss/adamw_losses of the right sizes");
    if (rc == 0) {
        fx->logits = zg_malloc(lg->numel * sizeof(float));
        rc = safetensors_read_f32(&f, lg, fx->logits);
    }
    if (rc == 0) rc = safetensors_read_f32(&f, ls, &fx->loss);
    if (rc == 0) rc = safetensors_read_f32(&f, al, fx->adamw_losses);
    safetensors_close(&f);
    return rc;
}

static void fixture_free(fixture *fx) {
    gpt2_free(&fx->m);
    zg_backend_destroy(fx->be);
    free(fx->params0);
    free(fx->inputs);
    free(fx->targets);
    free(fx->logits);
    free(fx->dir);
}

static fixture FX;
static int FX_OK;

static void test_logits_and_loss(void) {
    ZT_CHECK_MSG(FX_OK, "fixture: %s", zg_error_message());
    if (!FX_OK) return;
    int B = FX.B, T = FX.T, V = FX.cfg.vocab_size;
    float loss = zt_forward(&FX.m, FX.inputs, FX.targets, B, T);
    printf("  loss zgpt %.8f  HF %.8f\n", loss, FX.loss);
    ZT_NEAR(loss, FX.loss, 0.0, 1e-5);
    float *row = zg_malloc((size_t)B * V * sizeof(float));
    double max_err = 0.0, max_ref = 0.0;
    for (int t = 0; t < T; t++) {
        gpt2_logits(&FX.m, t, row);
        for (int b = 0; b < B; b++)
            for (int v = 0; v < V; v++) {
                double ref = FX.logits[((size_t)b * T + t) * V + v];
                double err = fabs(row[(size_t)b * V + v] - ref);
                max_err = err > max_err ? err : max_err;
                max_ref = fabs(ref) > max_ref ? fabs(ref) : max_ref;
            }
    }
    free(row);
    printf("  logits: max |error| %.3g (max |logit| %.3g)\n", max_err, max_ref);
    ZT_CHECK_MSG(max_err <= 1e-5 * max_ref, "logits differ from HF by %.3g (limit %.3g)", max_err, 1e-5 * max_ref);
}

static void test_gradients(void) {
    if (!FX_OK) return;
    gpt2_zero_grad(&FX.m);
    zt_forward(&FX.m, FX.inputs, FX.targets, FX.B, FX.T);
    gpt2_backward(&FX.m, 1.0f);
    size_t n = FX.m.table.num_params;
    float *g = zg_malloc(n * sizeof(float)), *ref = zg_malloc(n * sizeof(float));
    FX.be->ops->download_f32(FX.be, g, FX.m.grads, FX.be->grad_dtype, n);
    char *gp = zg_path_join(FX.dir, "grads.safetensors");
    int rc = hf_params_load(gp, &FX.cfg, ref);
    free(gp);
    ZT_CHECK_MSG(rc == 0, "grads.safetensors: %s", zg_error_message());
    double worst = 0.0;
    for (int i = 0; rc == 0 && i < FX.m.table.n_tensors; i++) {
        const gpt2_tensor *x = &FX.m.table.tensors[i];
        double max_err = 0.0, max_ref = 0.0;
        for (size_t k = 0; k < x->numel; k++) {
            double e = fabs((double)g[x->offset + k] - ref[x->offset + k]);
            max_err = e > max_err ? e : max_err;
            max_ref = fabs(ref[x->offset + k]) > max_ref ? fabs(ref[x->offset + k]) : max_ref;
        }
        double rel = max_ref > 0 ? max_err / max_ref : max_err;
        worst = rel > worst ? rel : worst;
        ZT_CHECK_MSG(max_ref > 0.0, "%s: HF gradient is all zero (fixture not exercising it)", x->name);
        ZT_CHECK_MSG(rel <= 1e-4, "gradient of %s differs from HF: max |error| %.3g, max |grad| %.3g", x->name, max_err,
                     max_ref);
    }
    printf("  gradients: worst max|error|/max|grad| over %d tensors %.3g\n", FX.m.table.n_tensors, worst);
    free(g);
    free(ref);
}

static void test_adamw_losses(void) {
    if (!FX_OK) return;
    gpt2_model *m = &FX.m;
    gpt2_params_upload(m, FX.params0);
    size_t n = m->table.num_params;
    float *mom = FX.be->ops->alloc(FX.be, n * sizeof(float), "m");
    float *var = FX.be->ops->alloc(FX.be, n * sizeof(float), "v");
    FX.be->ops->zero(FX.be, mom, n * sizeof(float));
    FX.be->ops->zero(FX.be, var, n * sizeof(float));
    zg_segment *segs;
    int ns = gpt2_param_segments(&m->table, 0.1f, &segs);
    double worst = 0.0;
    for (int step = 1; step <= 10; step++) {
        gpt2_zero_grad(m);
        float loss = zt_forward(m, FX.inputs, FX.targets, FX.B, FX.T);
        gpt2_backward(m, 1.0f);
        zg_adamw_args a = {m->params, NULL, m->grads, mom, var, segs, ns, 1e-3f, 0.9f, 0.95f, 1e-8f,
                           step,      1.0f, 0,        0,   0,   0,    0,  0,     0,    NULL};
        FX.be->ops->adamw(FX.be, &a);
        double rel = fabs(loss - FX.adamw_losses[step - 1]) / FX.adamw_losses[step - 1];
        worst = rel > worst ? rel : worst;
        ZT_NEAR(loss, FX.adamw_losses[step - 1], 0.0, 1e-4);
    }
    printf("  AdamW: 10 losses %.6f .. %.6f, worst relative difference to HF %.3g\n", FX.adamw_losses[0],
           FX.adamw_losses[9], worst);
    free(segs);
    FX.be->ops->dealloc(FX.be, mom);
    FX.be->ops->dealloc(FX.be, var);
}

/* With ZGPT_HF_EXPORT_DIR set, writes zgpt exports for scripts/check_hf_export.py (run where
 * transformers is installed): DIR/fixture_{fp32,fp16,bf16} (the HF fixture imported and exported
 * again) and DIR/random_fp32 (a zgpt-initialised model with the GPT-2 vocabulary) with
 * DIR/random_logits.safetensors (zgpt's logits for the fixture inputs). Without it: nothing. */
static void test_export_for_transformers(void) {
    const char *dir = getenv("ZGPT_HF_EXPORT_DIR");
    if (!FX_OK || dir == NULL || dir[0] == '\0') return;
    const char *names[3] = {"fixture_fp32", "fixture_fp16", "fixture_bf16"};
    zg_dtype dts[3] = {ZG_F32, ZG_F16, ZG_BF16};
    for (int i = 0; i < 3; i++) {
        char *d = zg_path_join(dir, names[i]);
        ZT_CHECK_MSG(hf_export(d, &FX.cfg, FX.params0, dts[i]) == 0, "%s", zg_error_message());
        free(d);
    }
    gpt2_config c = {2, 4, 64, 32, 50257, 0};
    gpt2_config_validate(&c);
    gpt2_model m;
    ZT_CHECK(gpt2_init(&m, &c, FX.be) == 0);
    gpt2_init_random(&m, 77);
    float *p = zg_malloc(m.table.num_params * sizeof(float));
    gpt2_params_download(&m, p);
    char *d = zg_path_join(dir, "random_fp32");
    ZT_CHECK(hf_export(d, &c, p, ZG_F32) == 0);
    free(d);
    zt_forward(&m, FX.inputs, NULL, FX.B, FX.T);
    float *lg = zg_malloc((size_t)FX.B * FX.T * c.vocab_size * sizeof(float));
    float *row = zg_malloc((size_t)FX.B * c.vocab_size * sizeof(float));
    for (int t = 0; t < FX.T; t++) {
        gpt2_logits(&m, t, row);
        for (int b = 0; b < FX.B; b++)
            memcpy(lg + ((size_t)b * FX.T + t) * c.vocab_size, row + (size_t)b * c.vocab_size,
                   (size_t)c.vocab_size * sizeof(float));
    }
    safetensors_entry e = {"logits", ZG_F32, 3, {FX.B, FX.T, c.vocab_size}, lg};
    char *lp = zg_path_join(dir, "random_logits.safetensors");
    ZT_CHECK(safetensors_write(lp, &e, 1) == 0);
    free(lp), free(lg), free(row), free(p);
    gpt2_free(&m);
    printf("  wrote exports to %s\n", dir);
}

int main(void) {
    FX_OK = fixture_load(&FX) == 0;
    zt_run("hf_logits_and_loss", test_logits_and_loss);
    zt_run("hf_gradients", test_gradients);
    zt_run("hf_adamw_losses", test_adamw_losses);
    zt_run("hf_export_for_transformers", test_export_for_transformers);
    fixture_free(&FX);
    return zt_finish();
}
