/* Zip central directory reader (zipread.h). Layout (PKWARE APPNOTE): the end-of-central-directory record at the
 * file's end (after a comment of up to 64 KiB), for zip64 a locator before it pointing at the zip64 end record;
 * then one central header per entry (sizes, the local header's offset, name, extra fields with the zip64 sizes);
 * an entry's data follows its local header (30 bytes + name + extra). */
#include "core/zipread.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_LOCAL 0x04034b50u

void zg_zip_free(zg_zip *z) {
    for (int i = 0; i < z->n; i++) free(z->entries[i].name);
    free(z->entries);
    memset(z, 0, sizeof *z);
}

const zg_zip_entry *zg_zip_find(const zg_zip *z, const char *name) {
    for (int i = 0; i < z->n; i++)
        if (strcmp(z->entries[i].name, name) == 0) return &z->entries[i];
    return NULL;
}

/* the zip64 extra field (id 1) of a central header: the 64-bit values for those of its 32-bit fields that are
 * 0xFFFFFFFF, in the order uncompressed size, compressed size, local header offset */
static int zip64_extra(const uint8_t *ex, size_t len, uint64_t *usize, uint64_t *csize, uint64_t *off) {
    for (size_t k = 0; k + 4 <= len;) {
        unsigned id = (unsigned)zg_load_le(ex + k, 2), sz = (unsigned)zg_load_le(ex + k + 2, 2);
        if (k + 4 + sz > len) return -1;
        if (id == 1) {
            const uint8_t *q = ex + k + 4;
            size_t left = sz;
            uint64_t *want[3] = {usize, csize, off};
            for (int i = 0; i < 3; i++) {
                if (*want[i] != 0xFFFFFFFFu) continue;
                if (left < 8) return -1;
                *want[i] = zg_load_le(q, 8);
                q += 8;
                left -= 8;
            }
            return 0;
        }
        k += 4 + sz;
    }
    return 0;
}

int zg_zip_index(zg_zip *z, const uint8_t *p, size_t size, const char *path) {
    memset(z, 0, sizeof *z);
    if (size < 22 || zg_load_le(p, 4) != SIG_LOCAL) return zg_errorf("%s: not a zip archive", path);
    /* the end record: the last signature within 22 + 65535 bytes of the end */
    size_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0, e = size - 22;
    while (e > lo && zg_load_le(p + e, 4) != SIG_EOCD) e--;
    if (zg_load_le(p + e, 4) != SIG_EOCD) return zg_errorf("%s: no zip end record: the file is truncated", path);
    uint64_t count = zg_load_le(p + e + 10, 2), cd_size = zg_load_le(p + e + 12, 4), cd_off = zg_load_le(p + e + 16, 4);
    if (e >= 20 && zg_load_le(p + e - 20, 4) == SIG_LOC64) {
        uint64_t e64 = zg_load_le(p + e - 20 + 8, 8);
        if (size < 56 || e64 > size - 56 || zg_load_le(p + e64, 4) != SIG_EOCD64) /* (no size_t wrap-around) */
            return zg_errorf("%s: a corrupt zip64 end record: the file is truncated", path);
        count = zg_load_le(p + e64 + 32, 8);
        cd_size = zg_load_le(p + e64 + 40, 8);
        cd_off = zg_load_le(p + e64 + 48, 8);
    }
    if (cd_off > size || cd_size > size - cd_off || count > cd_size / 46)
        return zg_errorf("%s: the zip directory lies outside the file: it is truncated or corrupt", path);
    z->entries = zg_calloc((size_t)(count > 0 ? count : 1), sizeof *z->entries);
    const uint8_t *c = p + cd_off, *end = p + cd_off + cd_size;
    for (uint64_t i = 0; i < count; i++) {
        if (end - c < 46 || zg_load_le(c, 4) != SIG_CENTRAL) goto corrupt;
        int method = (int)zg_load_le(c + 10, 2);
        uint64_t csize = zg_load_le(c + 20, 4), usize = zg_load_le(c + 24, 4), off = zg_load_le(c + 42, 4);
        size_t nlen = (size_t)zg_load_le(c + 28, 2), xlen = (size_t)zg_load_le(c + 30, 2),
               klen = (size_t)zg_load_le(c + 32, 2);
        if ((size_t)(end - c) < 46 + nlen + xlen + klen) goto corrupt;
        if (zip64_extra(c + 46 + nlen, xlen, &usize, &csize, &off) != 0) goto corrupt;
        if (size < 30 || off > size - 30 || zg_load_le(p + off, 4) != SIG_LOCAL) goto corrupt;
        uint64_t data = off + 30 + zg_load_le(p + off + 26, 2) + zg_load_le(p + off + 28, 2);
        if (data > size || csize > size - data) goto corrupt;
        zg_zip_entry *en = &z->entries[z->n++];
        en->name = zg_malloc(nlen + 1);
        memcpy(en->name, c + 46, nlen);
        en->name[nlen] = '\0';
        en->method = method;
        en->size = usize;
        en->data = method == 0 && usize == csize ? p + data : NULL;
        c += 46 + nlen + xlen + klen;
    }
    return 0;
corrupt:
    zg_zip_free(z);
    return zg_errorf("%s: a corrupt zip directory entry: the file is truncated or damaged", path);
}
