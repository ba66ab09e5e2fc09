/* The entries of a zip archive in memory (a file's map), stored ones readable in place: what torch.save writes
 * (PyTorch's zip serialization stores every record uncompressed, 64-byte aligned). zip64 archives (more than
 * 4 GiB, or 65,535 entries) are read too. */
#ifndef ZG_CORE_ZIPREAD_H
#define ZG_CORE_ZIPREAD_H

#include <stddef.h>
#include <stdint.h>

/* The n-byte (n <= 8) little-endian unsigned integer at p (zip's and pickle's byte order) */
static inline uint64_t zg_load_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

typedef struct {
    char *name;          /* heap copy */
    const uint8_t *data; /* the content, inside the map; NULL for a compressed entry */
    uint64_t size;       /* bytes (uncompressed) */
    int method;          /* 0 stored; anything else is compressed and not readable here */
} zg_zip_entry;

typedef struct {
    zg_zip_entry *entries;
    int n;
} zg_zip;

/* Indexes the archive p[0, size) from its central directory; every offset and size checked against size.
 * 0, or -1 with a one-line error naming `path` (not a zip, truncated, a corrupt directory). */
int zg_zip_index(zg_zip *z, const uint8_t *p, size_t size, const char *path);
void zg_zip_free(zg_zip *z);
/* The entry named exactly `name`, or NULL. */
const zg_zip_entry *zg_zip_find(const zg_zip *z, const char *name);

#endif
