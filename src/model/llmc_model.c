/* llm.c's model files (llmc_model.h): the header checked, the stacked tensors cut per layer as views of the map. */
#include "model/llmc_model.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/zipread.h"
#include "model/gpt2.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLMC_HEADER_BYTES 1024

int llmc_file_is_model(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint8_t b[4] = {0};
    size_t n = fread(b, 1, 4, f);
    fclose(f);
    return n == 4 && zg_load_le(b, 4) == LLMC_MODEL_MAGIC;
}

char *llmc_latest_model(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) return NULL;
    long best = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long step = -1;
        int used = 0;
        if (sscanf(e->d_name, "DONE_%8ld%n", &step, &used) == 1 && used == 13 && e->d_name[used] == '\0' &&
            step > best) {
            char name[64];
            snprintf(name, sizeof name, "model_%08ld.bin", step);
            char *p = zg_path_join(dir, name);
            if (zg_file_exists(p)) best = step;
            free(p);
        }
    }
    closedir(d);
    if (best < 0) return NULL;
    char name[64];
    snprintf(name, sizeof name, "model_%08ld.bin", best);
    return zg_path_join(dir, name);
}

/* the parameter tensors in the file's order: name pattern (%d = layer), rows and columns in units of C (r, c)
 * with fixed extents when C-independent (wte, wpe: set at open), stacked over the layers or not */
typedef struct {
    const char *name; /* Hugging Face's (the import's) */
    const char *zgpt; /* zgpt's parameter table's (the export's) */
    int stacked;
    int rows_c, cols_c; /* multiples of C; 0: rows from the header (wte: Vp, wpe: maxT) */
    int is_wte;
} llmc_tensor;

static const llmc_tensor k_llmc_tensors[] = {
    {"wte.weight", "wte", 0, 0, 1, 1},
    {"wpe.weight", "wpe", 0, 0, 1, 0},
    {"h.%d.ln_1.weight", "h.%d.ln_1.weight", 1, 1, 0, 0},
    {"h.%d.ln_1.bias", "h.%d.ln_1.bias", 1, 1, 0, 0},
    {"h.%d.attn.c_attn.weight", "h.%d.attn.c_attn.weight", 1, 3, 1, 0},
    {"h.%d.attn.c_attn.bias", "h.%d.attn.c_attn.bias", 1, 3, 0, 0},
    {"h.%d.attn.c_proj.weight", "h.%d.attn.c_proj.weight", 1, 1, 1, 0},
    {"h.%d.attn.c_proj.bias", "h.%d.attn.c_proj.bias", 1, 1, 0, 0},
    {"h.%d.ln_2.weight", "h.%d.ln_2.weight", 1, 1, 0, 0},
    {"h.%d.ln_2.bias", "h.%d.ln_2.bias", 1, 1, 0, 0},
    {"h.%d.mlp.c_fc.weight", "h.%d.mlp.c_fc.weight", 1, 4, 1, 0},
    {"h.%d.mlp.c_fc.bias", "h.%d.mlp.c_fc.bias", 1, 4, 0, 0},
    {"h.%d.mlp.c_proj.weight", "h.%d.mlp.c_proj.weight", 1, 1, 4, 0},
    {"h.%d.mlp.c_proj.bias", "h.%d.mlp.c_proj.bias", 1, 1, 0, 0},
    {"ln_f.weight", "ln_f.weight", 0, 1, 0, 0},
    {"ln_f.bias", "ln_f.bias", 0, 1, 0, 0},
};
#define LLMC_N_TENSORS ((int)(sizeof k_llmc_tensors / sizeof k_llmc_tensors[0]))

int llmc_model_open(safetensors_file *f, const char *path, torch_model_args *args) {
    memset(f, 0, sizeof *f);
    if (args) memset(args, 0, sizeof *args);
    if (zg_mmap_open(&f->map, path) != 0) return -1;
    f->path = zg_strdup(path);
    const uint8_t *p = f->map.data;
    int rc = 0;
    int64_t h[8] = {0};
    if (f->map.size < LLMC_HEADER_BYTES)
        rc = zg_errorf("%s: %zu bytes, shorter than llm.c's 1024-byte model header: the file is truncated", path,
                       f->map.size);
    for (int i = 0; rc == 0 && i < 8; i++) h[i] = (int32_t)zg_load_le(p + 4 * i, 4);
    int esize = h[1] == 3 ? 4 : 2;
    if (rc == 0 && h[0] != LLMC_MODEL_MAGIC)
        rc =
            zg_errorf("%s: not an llm.c model file (magic %lld, expected %d)", path, (long long)h[0], LLMC_MODEL_MAGIC);
    else if (rc == 0 && h[1] != 3 && h[1] != 5)
        rc = zg_errorf("%s: llm.c model version %lld is not one zgpt reads (3: fp32, 5: bf16; older versions have an "
                       "unpadded vocabulary: export the model again with llm.c's train_gpt2.py)",
                       path, (long long)h[1]);
    else if (rc == 0 && (h[2] < 1 || h[3] < 1 || h[4] < 1 || h[5] < 1 || h[6] < 1 || h[7] < h[3] || h[2] > 1 << 20 ||
                         h[7] > 1 << 24 || h[4] > 1024 || h[6] > 1 << 16 || h[6] % h[5] != 0))
        rc = zg_errorf("%s: an llm.c header with an impossible shape (max_seq_len %lld, vocab %lld, padded vocab %lld, "
                       "%lld layers, %lld heads, %lld channels)",
                       path, (long long)h[2], (long long)h[3], (long long)h[7], (long long)h[4], (long long)h[5],
                       (long long)h[6]);
    if (rc != 0) goto cleanup;
    int64_t T = h[2], V = h[3], L = h[4], C = h[6], Vp = h[7];
    /* the parameters' count, and the file's size it implies */
    uint64_t total = 0;
    for (int k = 0; k < LLMC_N_TENSORS; k++) {
        const llmc_tensor *d = &k_llmc_tensors[k];
        int64_t rows = d->rows_c ? d->rows_c * C : (d->is_wte ? Vp : T), cols = d->cols_c ? d->cols_c * C : 1;
        total += (uint64_t)rows * (uint64_t)cols * (uint64_t)(d->stacked ? L : 1);
    }
    if (f->map.size != LLMC_HEADER_BYTES + total * (uint64_t)esize) {
        rc =
            zg_errorf("%s: %zu bytes, but its header's GPT-2 (%lld layers, %lld channels, padded vocab %lld, %s) needs "
                      "%llu: the file is truncated or not this model",
                      path, f->map.size, (long long)L, (long long)C, (long long)Vp, esize == 4 ? "fp32" : "bf16",
                      (unsigned long long)(LLMC_HEADER_BYTES + total * (uint64_t)esize));
        goto cleanup;
    }
    f->tensors = zg_calloc((size_t)(LLMC_N_TENSORS * L), sizeof *f->tensors);
    const uint8_t *at = p + LLMC_HEADER_BYTES;
    for (int k = 0; k < LLMC_N_TENSORS; k++) {
        const llmc_tensor *d = &k_llmc_tensors[k];
        int64_t rows = d->rows_c ? d->rows_c * C : (d->is_wte ? Vp : T), cols = d->cols_c ? d->cols_c * C : 1;
        size_t one = (size_t)rows * (size_t)cols;
        for (int64_t l = 0; l < (d->stacked ? L : 1); l++) {
            safetensors_tensor *t = &f->tensors[f->n_tensors++];
            char name[64];
            snprintf(name, sizeof name, d->name, (int)l);
            t->name = zg_strdup(name);
            t->dtype = esize == 4 ? ZG_F32 : ZG_BF16;
            snprintf(t->dtype_name, sizeof t->dtype_name, "%s", esize == 4 ? "F32" : "BF16");
            t->supported = 1;
            /* wte: the tokenizer's rows; the padding rows (zeros in llm.c's files) are zgpt's own */
            t->ndim = d->cols_c ? 2 : 1;
            t->shape[0] = d->is_wte ? V : rows;
            if (d->cols_c) t->shape[1] = cols;
            t->numel = (size_t)t->shape[0] * (size_t)(d->cols_c ? cols : 1);
            t->data = at + (size_t)l * one * (size_t)esize;
            t->nbytes = t->numel * (size_t)esize;
        }
        at += (size_t)(d->stacked ? L : 1) * one * (size_t)esize;
    }
    if (args) {
        args->found = 1;
        args->n_layer = (int)L, args->n_head = (int)h[5], args->n_embd = (int)C, args->block_size = (int)T;
        args->vocab_size = (int)V, args->bias = 1;
    }
cleanup:
    if (rc != 0) safetensors_close(f);
    return rc;
}

/* one tensor's elements as fp32 (version 3) or bf16 (version 5), through a bounded buffer */
static int write_elems(zg_atomic_file *af, const float *x, size_t n, int bf16) {
    if (!bf16) return zg_atomic_write(af, x, n * sizeof(float));
    enum { CHUNK = 1 << 16 };
    uint16_t buf[CHUNK];
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t m = n - i < CHUNK ? n - i : CHUNK;
        for (size_t k = 0; k < m; k++) buf[k] = zg_f32_to_bf16(x[i + k]);
        if (zg_atomic_write(af, buf, m * sizeof(uint16_t)) != 0) return -1;
    }
    return 0;
}

int llmc_model_write(const char *path, const gpt2_config *cfg_in, const float *params, zg_dtype dtype) {
    if (dtype != ZG_F32 && dtype != ZG_BF16)
        return zg_errorf("llm.c's model files are fp32 (version 3) or bf16 (version 5): no fp16 form; use --dtype fp32 "
                         "or bf16");
    gpt2_config cfg = *cfg_in;
    if (gpt2_config_validate(&cfg) != 0) return -1;
    gpt2_param_table t;
    if (gpt2_param_table_init(&t, &cfg) != 0) return -1;
    int32_t header[256] = {
        LLMC_MODEL_MAGIC, dtype == ZG_F32 ? 3 : 5, cfg.block_size, cfg.vocab_size, cfg.n_layer, cfg.n_head,
        cfg.n_embd,       cfg.padded_vocab_size};
    uint8_t hb[LLMC_HEADER_BYTES];
    for (int i = 0; i < 256; i++)
        for (int b = 0; b < 4; b++) hb[4 * i + b] = (uint8_t)(((uint32_t)header[i] >> (8 * b)) & 0xff);
    zg_atomic_file af;
    int rc = zg_atomic_open(&af, path);
    if (rc == 0) rc = zg_atomic_write(&af, hb, sizeof hb);
    /* llm.c's order: each tensor kind over all the layers; zgpt's buffer holds one layer after another */
    for (int k = 0; k < LLMC_N_TENSORS && rc == 0; k++) {
        const llmc_tensor *d = &k_llmc_tensors[k];
        for (int l = 0; l < (d->stacked ? cfg.n_layer : 1) && rc == 0; l++) {
            char name[64];
            snprintf(name, sizeof name, d->zgpt, l);
            const gpt2_tensor *x = gpt2_param_table_find(&t, name);
            rc = x ? write_elems(&af, params + x->offset, x->numel, dtype == ZG_BF16)
                   : zg_errorf("internal: no tensor '%s' in the parameter table", name);
        }
    }
    if (rc == 0)
        rc = zg_atomic_commit(&af, NULL);
    else
        zg_atomic_abort(&af);
    gpt2_param_table_free(&t);
    return rc == 0 ? 0 : -1;
}
