/* Damaged inputs through the readers of files users hand zgpt: each must return 0 or a one-line error, never
 * crash or read outside its input (this suite runs under ASan and UBSan in `make test`). Two parts:
 *  - the inputs scripts/fuzz.sh (libFuzzer, tests/fuzz/fuzz_inputs.c) found crashing, kept as they were found;
 *  - a seeded mutation pass over the fixtures (bit flips, bytes set to boundary values, truncations, a run of
 *    bytes copied elsewhere) through the zip, torch.save, safetensors, Hjson and config.json readers: a few
 *    hundred inputs each, the same every run. */
#include "core/error.h"
#include "core/fileio.h"
#include "core/hjson.h"
#include "core/zipread.h"
#include "model/hf.h"
#include "model/safetensors.h"
#include "model/torch_pickle.h"
#include "testutil.h"
#include "train/checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MUTATIONS 300

/* every tensor of f read to fp32 (bounds and dtypes exercised) */
static void read_all(const safetensors_file *f) {
    for (int i = 0; i < f->n_tensors; i++) {
        const safetensors_tensor *t = &f->tensors[i];
        size_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
        if (n > ((size_t)1 << 24)) continue;
        float *out = malloc((n ? n : 1) * sizeof(float));
        ZT_CHECK(out != NULL);
        if (out) (void)safetensors_read_f32(f, t, out);
        free(out);
    }
}

/* One mutation of src (n bytes) into dst (capacity n + 64), its length returned: kind by the random state. */
static size_t mutate(uint8_t *dst, const uint8_t *src, size_t n, uint64_t *rs) {
    memcpy(dst, src, n);
    uint64_t r = zt_rand_u64(rs);
    size_t at = n ? (size_t)(zt_rand_u64(rs) % n) : 0;
    static const uint8_t boundary[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};
    switch (r % 6) {
    case 0: /* a bit */
        if (n) dst[at] ^= (uint8_t)(1u << (zt_rand_u64(rs) % 8));
        return n;
    case 1: /* a byte at a boundary value */
        if (n) dst[at] = boundary[zt_rand_u64(rs) % sizeof boundary];
        return n;
    case 2: /* four bytes at 0xff (a length or offset read as huge) */
        for (size_t k = 0; k < 4 && at + k < n; k++) dst[at + k] = 0xff;
        return n;
    case 3: /* truncated */ return at;
    case 4: { /* a run of up to 64 bytes copied over another place */
        size_t from = n ? (size_t)(zt_rand_u64(rs) % n) : 0, len = 1 + zt_rand_u64(rs) % 64;
        for (size_t k = 0; k < len && at + k < n && from + k < n; k++) dst[at + k] = src[from + k];
        return n;
    }
    default: /* the tail cut off near the end (the directories and end records of a zip live there) */
        return n > 64 ? n - 1 - (size_t)(zt_rand_u64(rs) % 64) : at;
    }
}

typedef void (*reader_fn)(const char *path, const uint8_t *data, size_t n);

static void read_torch(const char *path, const uint8_t *data, size_t n) {
    (void)data, (void)n;
    safetensors_file f;
    torch_model_args args;
    if (torch_state_dict_open(&f, path, &args) == 0) {
        read_all(&f);
        safetensors_close(&f);
    } else {
        ZT_CHECK(zg_error_message()[0] != '\0');
    }
}

static void read_safetensors(const char *path, const uint8_t *data, size_t n) {
    (void)data, (void)n;
    safetensors_file f;
    if (safetensors_open(&f, path) == 0) {
        read_all(&f);
        safetensors_close(&f);
    } else {
        ZT_CHECK(zg_error_message()[0] != '\0');
    }
}

static void read_zip(const char *path, const uint8_t *data, size_t n) {
    zg_zip z;
    if (zg_zip_index(&z, data, n, path) == 0) {
        for (int i = 0; i < z.n; i++) ZT_CHECK(zg_zip_find(&z, z.entries[i].name) != NULL);
        zg_zip_free(&z);
    }
}

static void read_hjson(const char *path, const uint8_t *data, size_t n) {
    (void)path;
    size_t line = 0;
    cJSON *j = zg_hjson_parse((const char *)data, n, &line);
    if (j == NULL) ZT_CHECK(zg_error_message()[0] != '\0');
    cJSON_Delete(j);
}

static void read_hf_config(const char *path, const uint8_t *data, size_t n) {
    (void)data, (void)n;
    gpt2_config c;
    (void)hf_config_load(path, &c);
}

/* MUTATIONS mutations of the fixture `rel` written to dir/name, each through `read` (seeded by the fixture) */
static void mutation_pass(const char *dir, const char *rel, const char *name, reader_fn read, uint64_t seed) {
    char *src = zg_path_join(zt_src_dir(), rel);
    char *text = NULL;
    size_t n = 0;
    ZT_CHECK_MSG(zg_file_read_all(src, &text, &n) == 0, "%s", zg_error_message());
    if (text == NULL) {
        free(src);
        return;
    }
    uint8_t *buf = malloc(n + 64);
    char *path = zg_path_join(dir, name);
    uint64_t rs = seed;
    for (int k = 0; k < MUTATIONS; k++) {
        size_t m = mutate(buf, (const uint8_t *)text, n, &rs);
        FILE *f = fopen(path, "wb");
        ZT_CHECK(f != NULL && (m == 0 || fwrite(buf, 1, m, f) == m) && fclose(f) == 0);
        /* the reader gets an exact-size copy, so that a read past the input is a fault under ASan */
        uint8_t *exact = malloc(m ? m : 1);
        memcpy(exact, buf, m);
        zg_error_clear();
        read(path, exact, m);
        free(exact);
    }
    zg_error_clear();
    free(path);
    free(buf);
    free(text);
    free(src);
}

/* scripts/fuzz.sh zip: a 55-byte archive whose zip64 locator points anywhere; the bound `e64 > size - 56` wrapped
 * around below 56 bytes and the end record was read far outside the input */
static void test_found_zip64_locator(void) {
    static const uint8_t crash[] = {0x50, 0x4b, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50,
                                    0x4b, 0x06, 0x07, 0x00, 0x00, 0x00, 0x00, 0xa7, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0x01, 0x00, 0x00, 0x00, 0x50, 0x4b, 0x05, 0x06, 0x00, 0x00, 0x00, 0x00, 0x23,
                                    0x3f, 0x23, 0x00, 0xaf, 0x0c, 0x00, 0x00, 0xf0, 0x32, 0x00, 0x00, 0x00, 0x00};
    uint8_t *exact = malloc(sizeof crash);
    memcpy(exact, crash, sizeof crash);
    zg_zip z;
    ZT_CHECK(zg_zip_index(&z, exact, sizeof crash, "crash.zip") == -1 &&
             strstr(zg_error_message(), "zip64 end record") != NULL);
    free(exact);
}

/* text into dir/name */
static void write_text(const char *dir, const char *name, const char *text) {
    char *p = zg_path_join(dir, name);
    FILE *f = fopen(p, "wb");
    ZT_CHECK(f != NULL && fputs(text, f) >= 0 && fclose(f) == 0);
    free(p);
}

/* scripts/fuzz.sh manifest and hfconfig: numbers past what a C integer holds were converted to one (undefined
 * behaviour): a file size of 1e89, a format version of 1e20, an n_inner of 1e20. Now each is refused by name. */
static void test_found_numbers(void) {
    char *dir = zt_tmpdir("numbers");
    zg_ckpt c;
    write_text(dir, "manifest.json",
               "{\"format\": \"zgpt-checkpoint\", \"version\": 2, \"tag\": \"iter_1\", \"files\": [{\"name\": "
               "\"optim_0_8.bin\", \"size\": 1e89, \"xxh3\": \"cae4988c8ee2c671\"}]}");
    ZT_CHECK_MSG(zg_ckpt_open(&c, dir) == -1 && strstr(zg_error_message(), "bad file entry") != NULL, "%s",
                 zg_error_message());
    write_text(dir, "manifest.json",
               "{\"format\": \"zgpt-checkpoint\", \"version\": 1e20, \"tag\": \"iter_1\", \"files\": []}");
    ZT_CHECK_MSG(zg_ckpt_open(&c, dir) == -1 && strstr(zg_error_message(), "format version 1e+20") != NULL, "%s",
                 zg_error_message());
    write_text(dir, "config.json",
               "{\"n_layer\": 2, \"n_head\": 2, \"n_embd\": 16, \"n_positions\": 8, \"vocab_size\": 40, "
               "\"n_inner\": 1e20}");
    write_text(dir, "model.safetensors",
               ""); /* (a folder is a model's when it has weights; config.json is read first) */
    gpt2_config g;
    ZT_CHECK_MSG(hf_config_load(dir, &g) == -1 && strstr(zg_error_message(), "n_inner 1e+20") != NULL, "%s",
                 zg_error_message());
    zt_rmtree(dir);
    free(dir);
}

static void test_mutations(void) {
    char *dir = zt_tmpdir("inputs");
    mutation_pass(dir, "tests/fixtures/torch_tiny/legacy.pt", "legacy.pt", read_torch, 11);
    mutation_pass(dir, "tests/fixtures/torch_tiny/noncontig.pt", "noncontig.pt", read_torch, 12);
    mutation_pass(dir, "tests/fixtures/torch_tiny/nano/ckpt.pt", "ckpt.pt", read_torch, 13);
    mutation_pass(dir, "tests/fixtures/torch_tiny/noncontig.pt", "z.zip", read_zip, 14);
    mutation_pass(dir, "tests/fixtures/hf_tiny/model.safetensors", "model.safetensors", read_safetensors, 15);
    mutation_pass(dir, "tests/fixtures/ds_configs/hf_transformers_ds_config_zero3.json", "ds.json", read_hjson, 16);
    mutation_pass(dir, "configs/ds_config_zero2.json", "ds2.json", read_hjson, 17);
    char *sub = zg_path_join(dir, "hf");
    ZT_CHECK(zg_dir_make(sub) == 0);
    mutation_pass(sub, "tests/fixtures/hf_tiny/config.json", "config.json", read_hf_config, 18);
    free(sub);
    zt_rmtree(dir);
    free(dir);
}

int main(void) {
    zt_run("found_zip64_locator", test_found_zip64_locator);
    zt_run("found_numbers", test_found_numbers);
    zt_run("mutations", test_mutations);
    return zt_finish();
}
