/* libFuzzer targets for the readers of files users hand zgpt (scripts/fuzz.sh builds and runs them): each reads one
 * input and must return 0 or a one-line error, never crash, hang or leak. FUZZ_TARGET picks the reader:
 *   1 hjson: a DeepSpeed config's text (zg_hjson_parse)
 *   2 config: a training config file, as `zgpt train --config` loads it (zg_train_config_load)
 *   3 zip: an archive's directory (zg_zip_index)
 *   4 torch: a torch.save file, its pickle run and its tensors read (torch_state_dict_open, safetensors_read_f32)
 *   5 safetensors: a .safetensors file and its tensors read
 *   6 llmc: an llm.c model file (llmc_model_open) and its tensors read
 *   7 hfconfig: a Hugging Face config.json (hf_config_load)
 *   8 index: a model.safetensors.index.json (safetensors_index_read)
 *   9 pickle: a torch.save file's data.pkl, wrapped in a well-formed archive with four storages of 4 KiB (the pickle
 *     machine and the tensors' rebuild, past the zip reader that target 4's mutations mostly stop at)
 *  10 tokenize: any bytes through the GPT-2 encoder (its first byte picks allow_special), then decoded: the bytes must
 *     come back exactly (abort otherwise, which libFuzzer reports as a crash)
 *  11 shard: a token shard file (zgpt prepare's, nanoGPT's .bin, llm.c's) opened by the data loader as the val split,
 *     and four micro-batches of (2, 8) drawn from it
 *  12 manifest: a checkpoint's manifest.json, beside the other files of the checkpoint in $FUZZ_CKPT (copied once),
 *     opened and its model read (zg_ckpt_open, zg_ckpt_read_model)
 *  13 deepspeed: a DeepSpeed tag folder ($FUZZ_DS, copied once) with the data.pkl of its model states (first input
 *     byte even) or of rank 0's optimizer states (odd) replaced by the rest of the input, opened as zero_to_fp32
 *     does and every parameter gathered (ds_checkpoint_open, safetensors_read_f32)
 * The file readers take a path: the input is written to a file under $TMPDIR (a tmpfs is fastest) first. */
#include "core/error.h"
#include "core/hjson.h"
#include "core/zipread.h"
#include "model/ds_checkpoint.h"
#include "model/hf.h"
#include "model/llmc_model.h"
#include "model/safetensors.h"
#include "model/safetensors_index.h"
#include "model/torch_pickle.h"
#include "core/fileio.h"
#include "text/dataloader.h"
#include "text/tokenizer.h"
#include "train/checkpoint.h"
#include "train/config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FUZZ_TARGET
#error "define FUZZ_TARGET (1-13)"
#endif
/* each target uses some of the helpers */
#define FUZZ_HELPER __attribute__((unused)) static

/* the input as a file named `name` in a folder of this process's own (its path, static) */
FUZZ_HELPER const char *as_file(const uint8_t *data, size_t size, const char *name) {
    static char dir[512], path[600];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/zgpt-fuzz.%ld", t && *t ? t : "/tmp", (long)getpid());
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) abort();
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
    return path;
}

/* appends n bytes to a growing buffer */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} zbuf;
FUZZ_HELPER void zput(zbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
FUZZ_HELPER void zle(zbuf *b, uint64_t v, int bytes) {
    uint8_t t[8];
    for (int i = 0; i < bytes; i++) t[i] = (uint8_t)(v >> (8 * i));
    zput(b, t, (size_t)bytes);
}

/* a stored (uncompressed) zip of n entries, as torch.save lays one out (no CRC: zgpt's reader does not check it) */
FUZZ_HELPER void zip_build(zbuf *z, int n, const char *const *names, const uint8_t *const *datas, const size_t *sizes) {
    uint64_t *offs = malloc((size_t)n * sizeof *offs);
    if (!offs) abort();
    for (int e = 0; e < n; e++) {
        size_t nl = strlen(names[e]);
        offs[e] = z->n;
        zle(z, 0x04034b50u, 4), zle(z, 20, 2), zle(z, 0, 2), zle(z, 0, 2), zle(z, 0, 4), zle(z, 0, 4);
        zle(z, sizes[e], 4), zle(z, sizes[e], 4), zle(z, nl, 2), zle(z, 0, 2);
        zput(z, names[e], nl);
        if (sizes[e]) zput(z, datas[e], sizes[e]);
    }
    uint64_t cd = z->n;
    for (int e = 0; e < n; e++) {
        size_t nl = strlen(names[e]);
        zle(z, 0x02014b50u, 4), zle(z, 20, 2), zle(z, 20, 2), zle(z, 0, 2), zle(z, 0, 2), zle(z, 0, 4), zle(z, 0, 4);
        zle(z, sizes[e], 4), zle(z, sizes[e], 4), zle(z, nl, 2), zle(z, 0, 2), zle(z, 0, 2), zle(z, 0, 2);
        zle(z, 0, 2), zle(z, 0, 4), zle(z, offs[e], 4);
        zput(z, names[e], nl);
    }
    uint64_t cd_size = z->n - cd;
    zle(z, 0x06054b50u, 4), zle(z, 0, 2), zle(z, 0, 2), zle(z, (uint64_t)n, 2), zle(z, (uint64_t)n, 2);
    zle(z, cd_size, 4), zle(z, cd, 4), zle(z, 0, 2);
    free(offs);
}

/* `archive/data.pkl` = pkl and archive/data/0..3 (4 KiB each, a ramp of bytes) */
FUZZ_HELPER void torch_zip(zbuf *z, const uint8_t *pkl, size_t pkl_n) {
    static uint8_t storage[4096];
    for (size_t i = 0; i < sizeof storage; i++) storage[i] = (uint8_t)(i * 7);
    const char *names[5] = {"archive/data.pkl", "archive/data/0", "archive/data/1", "archive/data/2", "archive/data/3"};
    const uint8_t *datas[5] = {pkl, storage, storage, storage, storage};
    size_t sizes[5] = {pkl_n, sizeof storage, sizeof storage, sizeof storage, sizeof storage};
    zip_build(z, 5, names, datas, sizes);
}

/* The DeepSpeed target's folder: $FUZZ_DS (a tag folder) copied once into this process's folder; file `which`
 * (0: the model states, 1: rank 0's optimizer states) rewritten with its data.pkl replaced by pkl (its other
 * records kept). Returns the model states file's path (static). */
FUZZ_HELPER const char *ds_folder(int which, const uint8_t *pkl, size_t pkl_n) {
    static char *dir, *files[2], *ms;
    static uint8_t *orig[2];
    static size_t orig_n[2];
    static zg_zip zips[2];
    if (dir == NULL) {
        const char *tpl = getenv("FUZZ_DS");
        if (!tpl || !*tpl) abort();
        char *probe = (char *)as_file(pkl, 0, "probe");
        *strrchr(probe, '/') = '\0';
        dir = zg_path_join(probe, "ds");
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, tpl, dir);
        if (system(cmd) != 0) abort();
        ms = ds_model_states_path(dir);
        if (!ms) abort();
        files[0] = ms;
        files[1] = zg_path_join(dir, "zero_pp_rank_0_mp_rank_00_optim_states.pt");
        for (int i = 0; i < 2; i++) {
            char *text;
            if (zg_file_read_all(files[i], &text, &orig_n[i]) != 0) abort();
            orig[i] = (uint8_t *)text;
            if (zg_zip_index(&zips[i], orig[i], orig_n[i], files[i]) != 0) abort();
        }
    }
    const zg_zip *z = &zips[which];
    const char **names = malloc((size_t)z->n * sizeof *names);
    const uint8_t **datas = malloc((size_t)z->n * sizeof *datas);
    size_t *sizes = malloc((size_t)z->n * sizeof *sizes);
    if (!names || !datas || !sizes) abort();
    for (int e = 0; e < z->n; e++) {
        size_t nl = strlen(z->entries[e].name);
        int is_pkl = nl >= 8 && strcmp(z->entries[e].name + nl - 8, "data.pkl") == 0;
        names[e] = z->entries[e].name;
        datas[e] = is_pkl ? pkl : z->entries[e].data;
        sizes[e] = is_pkl ? pkl_n : (size_t)z->entries[e].size;
    }
    zbuf out = {0};
    zip_build(&out, z->n, names, datas, sizes);
    FILE *f = fopen(files[which], "wb");
    if (!f || fwrite(out.p, 1, out.n, f) != out.n || fclose(f) != 0) abort();
    free(out.p), free(names), free(datas), free(sizes);
    return ms;
}

/* every tensor of f read to fp32 (bounds and dtypes exercised) */
FUZZ_HELPER void read_all(const safetensors_file *f) {
    for (int i = 0; i < f->n_tensors; i++) {
        const safetensors_tensor *t = &f->tensors[i];
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        if (n > ((size_t)1 << 24)) continue; /* a claimed size the reader accepted: not read here */
        float *out = malloc((n ? n : 1) * sizeof(float));
        if (!out) abort();
        (void)safetensors_read_f32(f, t, out);
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zg_error_clear();
#if FUZZ_TARGET == 1
    size_t line = 0;
    cJSON *j = zg_hjson_parse((const char *)data, size, &line);
    cJSON_Delete(j);
#elif FUZZ_TARGET == 2
    const char *p = as_file(data, size, "config.json");
    zg_train_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (zg_train_config_load(&cfg, p, NULL, NULL, 0) == 0) zg_train_config_free(&cfg);
#elif FUZZ_TARGET == 3
    zg_zip z;
    if (zg_zip_index(&z, data, size, "fuzz.zip") == 0) {
        for (int i = 0; i < z.n; i++) (void)zg_zip_find(&z, z.entries[i].name);
        zg_zip_free(&z);
    }
#elif FUZZ_TARGET == 4
    const char *p = as_file(data, size, "model.pt");
    safetensors_file f;
    torch_model_args args;
    if (torch_state_dict_open(&f, p, &args) == 0) {
        read_all(&f);
        safetensors_close(&f);
    }
#elif FUZZ_TARGET == 5
    const char *p = as_file(data, size, "model.safetensors");
    safetensors_file f;
    if (safetensors_open(&f, p) == 0) {
        read_all(&f);
        safetensors_close(&f);
    }
#elif FUZZ_TARGET == 6
    const char *p = as_file(data, size, "model.bin");
    safetensors_file f;
    torch_model_args args;
    if (llmc_model_open(&f, p, &args) == 0) {
        read_all(&f);
        safetensors_close(&f);
    }
#elif FUZZ_TARGET == 7
    const char *p = as_file(data, size, "config.json");
    gpt2_config c;
    (void)hf_config_load(p, &c);
#elif FUZZ_TARGET == 8
    const char *p = as_file(data, size, "model.safetensors.index.json");
    safetensors_index ix;
    if (safetensors_index_read(&ix, p) == 0) safetensors_index_free(&ix);
#elif FUZZ_TARGET == 9
    zbuf z = {0};
    torch_zip(&z, data, size);
    const char *p = as_file(z.p, z.n, "model.pt");
    free(z.p);
    safetensors_file f;
    torch_model_args args;
    if (torch_state_dict_open(&f, p, &args) == 0) {
        read_all(&f);
        safetensors_close(&f);
    }
#elif FUZZ_TARGET == 10
    static zg_tokenizer *tok;
    static zg_encoder *enc;
    if (tok == NULL && (zg_tokenizer_init(&tok, NULL) != 0 || (enc = zg_encoder_new(tok)) == NULL)) abort();
    zg_tokens t = {0};
    if (zg_encoder_encode(enc, (const char *)data, size, size > 0 && (data[0] & 1), &t) != 0) abort();
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (zg_tokenizer_decode(tok, t.ids, t.len, &buf, &len, &cap) != 0) abort();
    if (len != size || (size && memcmp(buf, data, size) != 0)) abort(); /* decode(encode(x)) == x */
    free(buf);
    zg_tokens_free(&t);
#elif FUZZ_TARGET == 11
    const char *p = as_file(data, size, "val.bin");
    zg_data_source src = {p, 1.0};
    zg_dataloader_config dc = {&src, 1, "val", 2, 8, 50257, ZG_SAMPLE_RANDOM, 7, 0, 1};
    zg_dataloader *dl = NULL;
    if (zg_dataloader_init(&dl, &dc) == 0) {
        int32_t in[16], tg[16];
        for (int i = 0; i < 4; i++) zg_dataloader_next(dl, in, tg);
        zg_dataloader_free(dl);
    }
#elif FUZZ_TARGET == 12
    static char *dir;
    if (dir == NULL) { /* the template checkpoint's files, copied once into this process's folder */
        const char *tpl = getenv("FUZZ_CKPT");
        if (!tpl || !*tpl) abort();
        char *probe = (char *)as_file(data, 0, "probe");
        *strrchr(probe, '/') = '\0';
        dir = zg_path_join(probe, "ckpt");
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, tpl, dir);
        if (system(cmd) != 0) abort();
    }
    char *m = zg_path_join(dir, "manifest.json");
    FILE *f = fopen(m, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
    free(m);
    zg_ckpt c;
    if (zg_ckpt_open(&c, dir) == 0) {
        if (c.num_params > 0 && c.num_params < ((uint64_t)1 << 24)) {
            float *params = malloc(c.num_params * sizeof(float));
            if (!params) abort();
            (void)zg_ckpt_read_model(&c, params);
            free(params);
        }
        zg_ckpt_close(&c);
    }
#elif FUZZ_TARGET == 13
    if (size < 1) return 0;
    const char *ms = ds_folder(data[0] & 1, data + 1, size - 1);
    safetensors_file f;
    torch_model_args args;
    if (ds_checkpoint_open(&f, ms, &args) == 0) {
        read_all(&f);
        safetensors_close(&f);
    }
#endif
    zg_error_clear();
    return 0;
}
