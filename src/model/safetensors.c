/* safetensors reader (memory-mapped, validated header) and writer (atomic). */
#include "model/safetensors.h"

#include "core/error.h"
#include "core/progress.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A header larger than this is not a model file (HF caps headers at 100 MB). */
#define ST_MAX_HEADER (100u * 1024u * 1024u)

static int dtype_from_name(const char *s, zg_dtype *dt, size_t *esz) {
    static const struct {
        const char *name;
        int dt; /* -1: readable size but not convertible */
        size_t esz;
    } tab[] = {{"F32", ZG_F32, 4}, {"F16", ZG_F16, 2}, {"BF16", ZG_BF16, 2}, {"F64", -1, 8},     {"I64", -1, 8},
               {"I32", -1, 4},     {"I16", -1, 2},     {"I8", -1, 1},        {"U8", -1, 1},      {"BOOL", -1, 1},
               {"U16", -1, 2},     {"U32", -1, 4},     {"U64", -1, 8},       {"F8_E4M3", -1, 1}, {"F8_E5M2", -1, 1}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        if (strcmp(s, tab[i].name) == 0) {
            *esz = tab[i].esz;
            if (tab[i].dt < 0) return 0;
            *dt = (zg_dtype)tab[i].dt;
            return 1;
        }
    }
    *esz = 0;
    return -1;
}

void safetensors_close(safetensors_file *f) {
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    if (f->map.data) zg_mmap_close(&f->map);
    if (f->owner_free) f->owner_free(f->owner);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static int cmp_by_data(const void *a, const void *b) {
    const safetensors_tensor *x = *(const safetensors_tensor *const *)a, *y = *(const safetensors_tensor *const *)b;
    return (x->data > y->data) - (x->data < y->data);
}

/* Tensors never share bytes: overlapping data_offsets mean a corrupt (or crafted) header. */
static int check_disjoint(const safetensors_file *f, const uint8_t *data, const char *path) {
    if (f->n_tensors < 2) return 0;
    const safetensors_tensor **by = zg_malloc((size_t)f->n_tensors * sizeof *by);
    for (int i = 0; i < f->n_tensors; i++) by[i] = &f->tensors[i];
    qsort(by, (size_t)f->n_tensors, sizeof *by, cmp_by_data);
    int rc = 0;
    for (int i = 1; i < f->n_tensors && rc == 0; i++)
        if (by[i]->data < by[i - 1]->data + by[i - 1]->nbytes)
            rc = zg_errorf("%s: tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap: the header is corrupt", path,
                           by[i - 1]->name, (size_t)(by[i - 1]->data - data),
                           (size_t)(by[i - 1]->data - data) + by[i - 1]->nbytes, by[i]->name,
                           (size_t)(by[i]->data - data), (size_t)(by[i]->data - data) + by[i]->nbytes);
    free(by);
    return rc;
}

int safetensors_open(safetensors_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (zg_mmap_open(&f->map, path) != 0) return -1;
    f->path = zg_strdup(path);
    const uint8_t *p = f->map.data;
    size_t size = f->map.size;
    cJSON *root = NULL;
    int rc = -1;
    if (size < 8) {
        zg_errorf("%s: not a safetensors file (%zu bytes, shorter than the 8-byte header length)", path, size);
        goto cleanup;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i]; /* little-endian */
    if (hlen > ST_MAX_HEADER || hlen > size - 8) {
        zg_errorf("%s: safetensors header length %llu exceeds the file size %zu: the file is truncated or not a "
                  "safetensors file",
                  path, (unsigned long long)hlen, size);
        goto cleanup;
    }
    root = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (root == NULL || !cJSON_IsObject(root)) {
        zg_errorf("%s: the safetensors header is not a JSON object: the file is corrupt", path);
        goto cleanup;
    }
    const uint8_t *data = p + 8 + hlen;
    size_t data_size = size - 8 - (size_t)hlen;
    int n = cJSON_GetArraySize(root);
    f->tensors = zg_calloc((size_t)(n > 0 ? n : 1), sizeof(safetensors_tensor));
    for (cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2) {
            zg_errorf("%s: tensor '%s' has a malformed header entry (needs dtype, shape, data_offsets)", path,
                      e->string);
            goto cleanup;
        }
        safetensors_tensor *t = &f->tensors[f->n_tensors];
        t->name = zg_strdup(e->string);
        f->n_tensors++;
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
        size_t esz;
        int r = dtype_from_name(dt->valuestring, &t->dtype, &esz);
        if (r < 0) {
            zg_errorf("%s: tensor '%s' has unknown dtype '%s'", path, t->name, dt->valuestring);
            goto cleanup;
        }
        t->supported = r == 1;
        t->ndim = cJSON_GetArraySize(shape);
        if (t->ndim > SAFETENSORS_MAX_DIMS) {
            zg_errorf("%s: tensor '%s' has %d dimensions (at most %d supported)", path, t->name, t->ndim,
                      SAFETENSORS_MAX_DIMS);
            goto cleanup;
        }
        t->numel = 1;
        int k = 0;
        for (cJSON *d = shape->child; d; d = d->next, k++) {
            if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e15 ||
                d->valuedouble != floor(d->valuedouble)) {
                zg_errorf("%s: tensor '%s' has an invalid shape entry", path, t->name);
                goto cleanup;
            }
            t->shape[k] = (int64_t)d->valuedouble;
            t->numel *= (size_t)t->shape[k];
        }
        double b0 = cJSON_GetArrayItem(offs, 0)->valuedouble, b1 = cJSON_GetArrayItem(offs, 1)->valuedouble;
        if (!(b0 >= 0 && b1 >= b0 && b1 <= (double)data_size) || b0 != floor(b0) || b1 != floor(b1)) {
            zg_errorf("%s: tensor '%s' data [%.0f, %.0f) lies outside the %zu data bytes: the file is truncated or "
                      "corrupt",
                      path, t->name, b0, b1, data_size);
            goto cleanup;
        }
        t->data = data + (size_t)b0;
        t->nbytes = (size_t)b1 - (size_t)b0;
        if (t->nbytes != t->numel * esz) {
            zg_errorf("%s: tensor '%s' holds %zu bytes but dtype %s x shape needs %zu", path, t->name, t->nbytes,
                      t->dtype_name, t->numel * esz);
            goto cleanup;
        }
    }
    if (check_disjoint(f, data, path) != 0) goto cleanup;
    rc = 0;
cleanup:
    cJSON_Delete(root);
    if (rc != 0) safetensors_close(f);
    return rc;
}

const safetensors_tensor *safetensors_find(const safetensors_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void safetensors_convert_f32(zg_dtype dt, const uint8_t *d, size_t n, float *out) {
    /* large tensors in pieces over the threads (GPT-2 XL: 6.2 GB out of the file's pages); the data may be unaligned
     * inside the map: copied element by element through memcpy */
    const size_t piece = (size_t)1 << 20;
    const long pieces = (long)((n + piece - 1) / piece);
    switch (dt) {
    case ZG_F32:
#pragma omp parallel for schedule(static) if (pieces > 1)
        for (long k = 0; k < pieces; k++) {
            size_t i0 = (size_t)k * piece, m = n - i0 < piece ? n - i0 : piece;
            memcpy(out + i0, d + 4 * i0, m * 4);
        }
        break;
    case ZG_F16:
#pragma omp parallel for schedule(static) if (n >= piece)
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, d + 2 * i, 2);
            out[i] = zg_f16_to_f32(h);
        }
        break;
    case ZG_BF16:
#pragma omp parallel for schedule(static) if (n >= piece)
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, d + 2 * i, 2);
            out[i] = zg_bf16_to_f32(h);
        }
        break;
    }
}

int safetensors_read_f32(const safetensors_file *f, const safetensors_tensor *t, float *out) {
    if (!t->supported)
        return zg_errorf("%s: tensor '%s' has dtype %s; only F32, F16 and BF16 can be loaded", f->path, t->name,
                         t->dtype_name);
    if (t->read) return t->read(t->read_ctx, out);
    safetensors_convert_f32(t->dtype, t->data, t->numel, out);
    return 0;
}

static const char *st_dtype_name(zg_dtype dt) {
    switch (dt) {
    case ZG_F32: return "F32";
    case ZG_F16: return "F16";
    case ZG_BF16: return "BF16";
    }
    return "F32";
}

int safetensors_write(const char *path, const safetensors_entry *entries, int n) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const safetensors_entry *e = &entries[i];
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        cJSON_AddStringToObject(t, "dtype", st_dtype_name(e->dtype));
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        size_t numel = 1;
        for (int k = 0; k < e->ndim; k++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->shape[k]));
            numel *= (size_t)e->shape[k];
        }
        size_t bytes = numel * zg_dtype_size(e->dtype);
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (json == NULL) ZG_FATAL("cJSON_PrintUnformatted failed (out of memory)");
    size_t hlen = strlen(json);
    size_t padded = (hlen + 7) / 8 * 8; /* pad with spaces so the data starts 8-byte aligned */
    char *hdr = zg_malloc(padded);
    memcpy(hdr, json, hlen);
    memset(hdr + hlen, ' ', padded - hlen);
    free(json);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(((uint64_t)padded >> (8 * i)) & 0xff);
    uint64_t total = 8 + (uint64_t)padded;
    for (int i = 0; i < n; i++) {
        size_t numel = 1;
        for (int k = 0; k < entries[i].ndim; k++) numel *= (size_t)entries[i].shape[k];
        total += numel * zg_dtype_size(entries[i].dtype);
    }
    char label[600];
    snprintf(label, sizeof label, "write %s", path);
    zg_progress prog;
    zg_progress_init(&prog, label, total, NULL);
    zg_atomic_file af;
    int rc = zg_atomic_open(&af, path);
    if (rc == 0) rc = zg_atomic_write(&af, len8, 8);
    if (rc == 0) rc = zg_atomic_write(&af, hdr, padded);
    for (int i = 0; i < n && rc == 0; i++) {
        const safetensors_entry *e = &entries[i];
        size_t numel = 1;
        for (int k = 0; k < e->ndim; k++) numel *= (size_t)e->shape[k];
        rc = zg_atomic_write(&af, e->data, numel * zg_dtype_size(e->dtype));
        zg_progress_update(&prog, af.bytes);
    }
    free(hdr);
    if (rc == 0)
        rc = zg_atomic_commit(&af, NULL);
    else
        zg_atomic_abort(&af);
    zg_progress_free(&prog);
    return rc == 0 ? 0 : -1;
}
