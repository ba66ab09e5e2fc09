/* TFRecord framing, the container of TensorBoard event files:
 *
 *   uint64 length (little-endian) | uint32 masked CRC32C of the 8 length bytes |
 *   length bytes of data          | uint32 masked CRC32C of the data
 *
 * CRC32C is the Castagnoli CRC (reflected polynomial 0x82F63B78); "masked" rotates it right by 15
 * bits and adds 0xa282ead8, so a CRC stored inside CRC'd data does not cancel out. */
#ifndef ZG_MONITOR_TFRECORD_H
#define ZG_MONITOR_TFRECORD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* CRC32C of data, continuing from crc (0 to start). */
uint32_t zg_crc32c(uint32_t crc, const void *data, size_t n);
uint32_t zg_crc32c_mask(uint32_t crc);
/* Frames one record into dst (n + 16 bytes). */
void zg_tfrecord_frame(uint8_t header[12], uint8_t footer[4], const void *data, size_t n);
/* Writes one framed record to f (buffered by f). 0, or -1 with an error. */
int zg_tfrecord_write(FILE *f, const void *data, size_t n);

#endif
