#include "monitor/tfrecord.h"

#include "core/error.h"

/* Bit-at-a-time: event records are small (scalars, one config text), so a table buys nothing. */
uint32_t zg_crc32c(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

uint32_t zg_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static void put_u32le(uint8_t *b, uint32_t v) {
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}

void zg_tfrecord_frame(uint8_t header[12], uint8_t footer[4], const void *data, size_t n) {
    uint64_t len = (uint64_t)n;
    for (int i = 0; i < 8; i++) header[i] = (uint8_t)(len >> (8 * i));
    put_u32le(header + 8, zg_crc32c_mask(zg_crc32c(0, header, 8)));
    put_u32le(footer, zg_crc32c_mask(zg_crc32c(0, data, n)));
}

int zg_tfrecord_write(FILE *f, const void *data, size_t n) {
    uint8_t header[12], footer[4];
    zg_tfrecord_frame(header, footer, data, n);
    if (fwrite(header, 1, sizeof header, f) != sizeof header || fwrite(data, 1, n, f) != n ||
        fwrite(footer, 1, sizeof footer, f) != sizeof footer)
        return zg_errorf("cannot write an event record: %s", zg_strerrno());
    return 0;
}
