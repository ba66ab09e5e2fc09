/* zgpt's GPT-2 against Hugging Face transformers on tests/fixtures/hf_tiny (written by
 * scripts/make_hf_fixture.py): logits, loss, every parameter gradient, and 10 AdamW steps. */
#include "backend/backend.h"
#include "core/error.h"
#include "core/fileio.h"
#include "model/gpt2.h"
#include "model/hf.h"
#include "model/safetensors.h"
#include "model/safetensors_index.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Writes DIR/model.safetensors.index.json mapping the tensors of shards[0..n) (each holding names[k][0..cnt[k]))
 * as transformers' save_pretrained does; `extra` (a JSON member or "") is added to weight_map. */
static void write_index(const char *dir, char names[][64][96], const int *cnt, int n, const char *extra) {
    char *p = zg_path_join(dir, SAFETENSORS_INDEX_NAME);
    FILE *f = fopen(p, "w");
    ZT_CHECK(f != NULL);
    fprintf(f, "{\n  \"metadata\": {\"total_size\": 1},\n  \"weight_map\": {\n");
    int first = 1;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < cnt[k]; i++) {
            fprintf(f, "%s    \"%s\": \"model-%05d-of-%05d.safetensors\"", first ? "" : ",\n", names[k][i], k + 1, n);
            first = 0;
        }
    fprintf(f, "%s%s\n  }\n}\n", extra[0] ? ",\n    " : "", extra);
    fclose(f);
    free(p);
}

/* the entry that writes tensor t (of an open file) again */
static void entry_of(safetensors_entry *x, const safetensors_tensor *t) {
    memset(x, 0, sizeof *x);
    x->name = t->name;
    x->dtype = t->dtype;
    x->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) x->shape[d] = t->shape[d];
    x->data = t->data;
}

/* A sharded checkpoint (the fixture's tensors over three shards, an index, config.json): the same parameters
 * bit for bit as the single file, through the folder and through the index's path; then the broken forms, each
 * one error naming what is wrong. */
static void test_sharded(void) {
    if (!FX_OK) return;
    char *dir = zt_tmpdir("hfshard");
    char *src_path = zg_path_join(FX.dir, "model.safetensors");
    safetensors_file src;
    ZT_CHECK(safetensors_open(&src, src_path) == 0);
    enum { NS = 3 };
    static char names[NS][64][96];
    int cnt[NS] = {0};
    int per = (src.n_tensors + NS - 1) / NS;
    ZT_CHECK(per <= 64);
    char shard_path[NS][4096];
    for (int k = 0; k < NS; k++) {
        safetensors_entry e[64];
        for (int i = k * per; i < src.n_tensors && i < (k + 1) * per; i++) {
            const safetensors_tensor *t = &src.tensors[i];
            ZT_CHECK(t->supported);
            entry_of(&e[cnt[k]], t);
            snprintf(names[k][cnt[k]++], 96, "%s", t->name);
        }
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, NS);
        char *p = zg_path_join(dir, fname);
        snprintf(shard_path[k], sizeof shard_path[k], "%s", p);
        ZT_CHECK(safetensors_write(p, e, cnt[k]) == 0);
        free(p);
    }
    char *cfg_src = zg_path_join(FX.dir, "config.json"), *cfg_dst = zg_path_join(dir, "config.json");
    char *text;
    size_t len;
    ZT_CHECK(zg_file_read_all(cfg_src, &text, &len) == 0);
    FILE *cf = fopen(cfg_dst, "w");
    fwrite(text, 1, len, cf);
    fclose(cf);
    free(text);
    write_index(dir, names, cnt, NS, "");
    char *index = zg_path_join(dir, SAFETENSORS_INDEX_NAME);
    size_t np = FX.m.table.num_params;
    float *p = zg_malloc(np * sizeof(float));
    gpt2_config c;
    ZT_CHECK_MSG(hf_config_load(dir, &c) == 0, "%s", zg_error_message());
    ZT_CHECK(c.n_layer == FX.cfg.n_layer && c.n_embd == FX.cfg.n_embd && c.vocab_size == FX.cfg.vocab_size);
    const char *paths[2] = {dir, index};
    for (int w = 0; w < 2; w++) {
        memset(p, 0xff, np * sizeof(float));
        ZT_CHECK_MSG(hf_params_load(paths[w], &FX.cfg, p) == 0, "%s", zg_error_message());
        ZT_CHECK_MSG(memcmp(p, FX.params0, np * sizeof(float)) == 0, "sharded load of %s differs from the single file",
                     paths[w]);
    }
    char *w8 = model_folder_weights(dir, NULL);
    ZT_CHECK(w8 != NULL && strcmp(w8, index) == 0);
    free(w8);
    /* broken: each case a one-line error that names the problem */
    struct {
        const char *extra, *want;
    } bad[] = {
        {"\"h.0.ln_1.weight\": \"../evil.safetensors\"", "must name a shard file"},
        {"\"transformer.h.0.nothing\": \"model-00001-of-00003.safetensors\"", "is not in 'model-00001-of-00003"},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        write_index(dir, names, cnt, NS, bad[b].extra);
        ZT_CHECK(hf_params_load(dir, &FX.cfg, p) != 0);
        ZT_CHECK_MSG(strstr(zg_error_message(), bad[b].want) != NULL, "got: %s", zg_error_message());
    }
    FILE *f = fopen(index, "w");
    fprintf(f, "{\"metadata\": {}}\n");
    fclose(f);
    ZT_CHECK(hf_params_load(dir, &FX.cfg, p) != 0);
    ZT_CHECK_MSG(strstr(zg_error_message(), "weight_map") != NULL, "got: %s", zg_error_message());
    /* a tensor in two shards: the first shard's first tensor written again into the second */
    write_index(dir, names, cnt, NS, "");
    {
        safetensors_file s2;
        ZT_CHECK(safetensors_open(&s2, shard_path[1]) == 0);
        safetensors_entry e[65];
        int n = 0;
        const safetensors_tensor *dup = safetensors_find(&src, names[0][0]);
        for (int i = -1; i < s2.n_tensors; i++) {
            const safetensors_tensor *t = i < 0 ? dup : &s2.tensors[i];
            entry_of(&e[n++], t);
        }
        char *tmp = zg_path_join(dir, "dup.safetensors");
        ZT_CHECK(safetensors_write(tmp, e, n) == 0);
        safetensors_close(&s2);
        ZT_CHECK(rename(tmp, shard_path[1]) == 0);
        free(tmp);
    }
    ZT_CHECK(hf_params_load(dir, &FX.cfg, p) != 0);
    ZT_CHECK_MSG(strstr(zg_error_message(), "is in two shards") != NULL, "got: %s", zg_error_message());
    /* a missing shard: the load names it; the folder is not a complete model (the hub cache's test) */
    ZT_CHECK(unlink(shard_path[2]) == 0);
    ZT_CHECK(hf_params_load(dir, &FX.cfg, p) != 0);
    ZT_CHECK_MSG(strstr(zg_error_message(), "shard 'model-00003-of-00003.safetensors' is missing") != NULL, "got: %s",
                 zg_error_message());
    char *missing = NULL;
    ZT_CHECK(model_folder_weights(dir, &missing) == NULL);
    ZT_CHECK(missing != NULL && strcmp(missing, "model-00003-of-00003.safetensors") == 0);
    free(missing);
    zg_error_clear();
    safetensors_close(&src);
    free(p), free(index), free(cfg_src), free(cfg_dst), free(src_path);
    zt_rmtree(dir);
    free(dir);
}

/* torch.save files (tests/fixtures/torch_tiny, written by scripts/make_torch_fixture.py from hf_tiny with torch
 * 2.11): transformers' pytorch_model.bin (Conv1D layout), whole and sharded, nanoGPT's ckpt.pt (nn.Linear layout, "_orig_mod."
 * names, a tied lm_head, mask buffers, an optimizer state; its config from model_args), a bf16 state dict with
 * "module." names; each hf_tiny's parameters bit for bit (the bf16 one rounded; nanoGPT's bias=False with its
 * biases 0); a strided view and the legacy
 * format refused with what to do. */
static void test_torch_files(void) {
    if (!FX_OK) return;
    char *dir = zg_path_join(zt_src_dir(), "tests/fixtures/torch_tiny");
    size_t np = FX.m.table.num_params;
    float *p = zg_malloc(np * sizeof(float));
    const char *same[] = {"hf_bin",         "hf_bin/pytorch_model.bin",
                          "hf_bin_sharded", "hf_bin_sharded/pytorch_model.bin.index.json",
                          "nano",           "nano/ckpt.pt"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        char *path = zg_path_join(dir, same[i]);
        ZT_CHECK(hf_path_has_weights(path));
        gpt2_config c;
        ZT_CHECK_MSG(hf_config_load(path, &c) == 0, "%s: %s", same[i], zg_error_message());
        ZT_CHECK_MSG(c.n_layer == FX.cfg.n_layer && c.n_head == FX.cfg.n_head && c.n_embd == FX.cfg.n_embd &&
                         c.vocab_size == FX.cfg.vocab_size && c.block_size == FX.cfg.block_size,
                     "%s: config differs", same[i]);
        memset(p, 0xff, np * sizeof(float));
        ZT_CHECK_MSG(hf_params_load(path, &FX.cfg, p) == 0, "%s: %s", same[i], zg_error_message());
        ZT_CHECK_MSG(memcmp(p, FX.params0, np * sizeof(float)) == 0, "%s: parameters differ from hf_tiny's", same[i]);
        free(path);
    }
    /* nanoGPT's bias=False: hf_tiny's weights, every bias 0 */
    char *nb = zg_path_join(dir, "nano_nobias");
    ZT_CHECK_MSG(hf_params_load(nb, &FX.cfg, p) == 0, "%s", zg_error_message());
    size_t nbad = 0, nzero = 0;
    for (int i = 0; i < FX.m.table.n_tensors; i++) {
        const gpt2_tensor *x = &FX.m.table.tensors[i];
        int bias = x->ndim == 1 && strstr(x->name, ".bias") != NULL;
        for (size_t k = x->offset; k < x->offset + x->numel; k++) {
            nbad += p[k] != (bias ? 0.f : FX.params0[k]);
            nzero += bias;
        }
    }
    ZT_CHECK_MSG(nbad == 0 && nzero > 0, "nano_nobias: %zu parameters differ from hf_tiny's with biases 0", nbad);
    free(nb);
    char *bf = zg_path_join(dir, "plain_bf16.bin");
    ZT_CHECK_MSG(hf_params_load(bf, &FX.cfg, p) == 0, "%s", zg_error_message());
    size_t diff = 0;
    for (size_t k = 0; k < np; k++) diff += p[k] != zg_bf16_to_f32(zg_f32_to_bf16(FX.params0[k]));
    ZT_CHECK_MSG(diff == 0, "plain_bf16.bin: %zu parameters differ from hf_tiny's rounded to bf16", diff);
    free(bf);
    struct {
        const char *file, *want;
    } bad[] = {{"noncontig.pt", "'transformer.h.0.attn.c_attn.weight' is not contiguous"},
               {"legacy.pt", "the legacy format of PyTorch < 1.6"}};
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        char *path = zg_path_join(dir, bad[b].file);
        ZT_CHECK(hf_params_load(path, &FX.cfg, p) != 0);
        ZT_CHECK_MSG(strstr(zg_error_message(), bad[b].want) != NULL, "%s: got: %s", bad[b].file, zg_error_message());
        free(path);
    }
    zg_error_clear();
    free(p);
    free(dir);
}

/* Damaged torch.save files never crash the reader: nanoGPT's ckpt.pt with bytes changed in its pickle (the
 * first 64 KiB) or its zip directory (the last 8 KiB), or cut short; each load either succeeds or fails with an
 * error (ASan runs this too). */
static void test_torch_damaged(void) {
    if (!FX_OK) return;
    char *src = zg_path_join(zt_src_dir(), "tests/fixtures/torch_tiny/nano/ckpt.pt");
    char *orig;
    size_t len;
    ZT_CHECK(zg_file_read_all(src, &orig, &len) == 0);
    char *dir = zt_tmpdir("torchbad");
    char *path = zg_path_join(dir, "ckpt.pt");
    char *buf = zg_malloc(len);
    float *p = zg_malloc(FX.m.table.num_params * sizeof(float));
    uint64_t r = 0x9e3779b97f4a7c15ull;
    int failed = 0, loaded = 0;
    for (int it = 0; it < 300; it++) {
        memcpy(buf, orig, len);
        size_t n = len;
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        if (it % 10 == 9) {
            n = (size_t)(r >> 33) % len; /* cut short */
        } else {
            int k = 1 + (int)((r >> 20) % 8);
            for (int j = 0; j < k; j++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                size_t at = it % 2 ? (size_t)(r >> 33) % (len < 65536 ? len : 65536)
                                   : len - 1 - (size_t)(r >> 33) % (len < 8192 ? len : 8192);
                buf[at] = (char)(r >> 8);
            }
        }
        FILE *f = fopen(path, "wb");
        ZT_CHECK(f != NULL && fwrite(buf, 1, n, f) == n);
        fclose(f);
        gpt2_config c;
        int rc = hf_config_load(path, &c);
        if (rc == 0) rc = hf_params_load(path, &FX.cfg, p);
        if (rc == 0)
            loaded++;
        else
            failed++;
        zg_error_clear();
    }
    printf("  300 damaged checkpoints: %d refused with an error, %d loaded\n", failed, loaded);
    ZT_CHECK(failed > 100);
    free(p), free(buf), free(orig), free(src), free(path);
    zt_rmtree(dir);
    free(dir);
}

int main(void) {
    FX_OK = fixture_load(&FX) == 0;
    zt_run("hf_logits_and_loss", test_logits_and_loss);
    zt_run("hf_gradients", test_gradients);
    zt_run("hf_adamw_losses", test_adamw_losses);
    zt_run("hf_export_for_transformers", test_export_for_transformers);
    zt_run("hf_sharded", test_sharded);
    zt_run("hf_torch_files", test_torch_files);
    zt_run("hf_torch_damaged", test_torch_damaged);
    fixture_free(&FX);
    return zt_finish();
}
