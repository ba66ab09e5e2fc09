/* The safetensors file format (Hugging Face): an 8-byte little-endian header length, a JSON header
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
 * then the tensor bytes (offsets relative to the end of the header). The reader memory-maps the
 * file; the writer writes it atomically (temporary file + rename). */
#ifndef ZG_MODEL_SAFETENSORS_H
#define ZG_MODEL_SAFETENSORS_H

#include "backend/backend.h"
#include "core/fileio.h"

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_DIMS 8

typedef struct {
    char *name;
    zg_dtype dtype; /* F32, F16, BF16 are supported; other dtypes are listed with supported = 0 */
    int supported;
    char dtype_name[16];
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    size_t numel;
    const uint8_t *data; /* inside the map; NULL for an assembled tensor (read below) */
    size_t nbytes;
    /* an assembled tensor (DeepSpeed's fp32 weights, gathered from the ranks' partitions when read): fills out
     * (numel floats) from ctx; 0, or -1 with a one-line error */
    int (*read)(const void *ctx, float *out);
    const void *read_ctx;
} safetensors_tensor;

typedef struct {
    char *path;
    zg_mmap map;
    safetensors_tensor *tensors;
    int n_tensors;
    void *owner; /* what the tensors' read_ctx point into, freed by owner_free at close */
    void (*owner_free)(void *owner);
} safetensors_file;

/* Opens and validates the header (offsets inside the file, sizes matching dtype x shape). */
int safetensors_open(safetensors_file *f, const char *path);
void safetensors_close(safetensors_file *f);
const safetensors_tensor *safetensors_find(const safetensors_file *f, const char *name);
/* Converts a tensor (F32/F16/BF16) to fp32; out holds t->numel floats. */
int safetensors_read_f32(const safetensors_file *f, const safetensors_tensor *t, float *out);
/* n elements of dtype dt at src (any alignment) to fp32 */
void safetensors_convert_f32(zg_dtype dt, const uint8_t *src, size_t n, float *out);

typedef struct {
    const char *name;
    zg_dtype dtype; /* dtype of `data` as stored in the file */
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    const void *data; /* numel * zg_dtype_size(dtype) bytes */
} safetensors_entry;

/* Writes the entries, in the given order, with {"format": "pt"} metadata. */
int safetensors_write(const char *path, const safetensors_entry *entries, int n);

#endif
