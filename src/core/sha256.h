/* SHA-256 (FIPS 180-4), streamed: the Hugging Face Hub names LFS files by the SHA-256 of their
 * content, and a download is checked against it before it is published. */
#ifndef ZG_CORE_SHA256_H
#define ZG_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t fill;
} zg_sha256;

void zg_sha256_init(zg_sha256 *s);
void zg_sha256_update(zg_sha256 *s, const void *data, size_t n);
/* Writes the digest as 64 lowercase hex digits + NUL. */
void zg_sha256_final_hex(zg_sha256 *s, char hex[65]);
/* The SHA-256 of a whole file, streamed (hex). 0 or -1 with an error naming the path. */
int zg_sha256_file(const char *path, char hex[65]);

#endif
