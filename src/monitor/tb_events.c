#include "monitor/tb_events.h"

#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* Wire types */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };
enum { DT_STRING = 7 };

void zg_pb_buf_init(zg_pb_buf *b) { memset(b, 0, sizeof *b); }

void zg_pb_buf_free(zg_pb_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

static void put(zg_pb_buf *b, const void *p, size_t n) {
    if (n == 0) return; /* an empty message has no buffer */
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        b->data = zg_realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_varint(zg_pb_buf *b, uint64_t v) {
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) t[n] |= 0x80;
        n++;
    } while (v);
    put(b, t, n);
}

static void put_key(zg_pb_buf *b, unsigned field, unsigned wt) { put_varint(b, ((uint64_t)field << 3) | wt); }

static void put_bytes(zg_pb_buf *b, unsigned field, const void *p, size_t n) {
    put_key(b, field, WT_LEN);
    put_varint(b, n);
    put(b, p, n);
}

/* A nested message: its encoding is built in `inner`, then copied with its length. */
static void put_msg(zg_pb_buf *b, unsigned field, const zg_pb_buf *inner) {
    put_bytes(b, field, inner->data, inner->len);
}

static void put_fixed(zg_pb_buf *b, unsigned field, unsigned wt, uint64_t bits, int nbytes) {
    uint8_t t[8];
    put_key(b, field, wt);
    for (int i = 0; i < nbytes; i++) t[i] = (uint8_t)(bits >> (8 * i));
    put(b, t, (size_t)nbytes);
}

static void event_head(zg_pb_buf *out, double wall_time, int64_t step) {
    uint64_t bits;
    memcpy(&bits, &wall_time, sizeof bits);
    out->len = 0;
    put_fixed(out, 1, WT_I64, bits, 8);
    if (step != 0) { /* proto3: a zero value is not written */
        put_key(out, 2, WT_VARINT);
        put_varint(out, (uint64_t)step);
    }
}

/* Event.summary = Summary { value = [v] } */
static void event_summary(zg_pb_buf *out, const zg_pb_buf *value) {
    zg_pb_buf summary;
    zg_pb_buf_init(&summary);
    put_msg(&summary, 1, value);
    put_msg(out, 5, &summary);
    zg_pb_buf_free(&summary);
}

void zg_tb_event_file_version(zg_pb_buf *out, double wall_time) {
    static const char version[] = "brain.Event:2";
    event_head(out, wall_time, 0);
    put_bytes(out, 3, version, sizeof version - 1);
}

void zg_tb_event_scalar(zg_pb_buf *out, double wall_time, int64_t step, const char *tag, float value) {
    zg_pb_buf v;
    zg_pb_buf_init(&v);
    put_bytes(&v, 1, tag, strlen(tag));
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    put_fixed(&v, 2, WT_I32, bits, 4);
    event_head(out, wall_time, step);
    event_summary(out, &v);
    zg_pb_buf_free(&v);
}

void zg_tb_event_text(zg_pb_buf *out, double wall_time, int64_t step, const char *tag, const char *text) {
    static const char plugin[] = "text";
    zg_pb_buf plugin_data, metadata, shape, tensor, v;
    zg_pb_buf_init(&plugin_data);
    zg_pb_buf_init(&metadata);
    zg_pb_buf_init(&shape);
    zg_pb_buf_init(&tensor);
    zg_pb_buf_init(&v);
    put_bytes(&plugin_data, 1, plugin, sizeof plugin - 1);
    put_msg(&metadata, 1, &plugin_data);
    put_key(&tensor, 1, WT_VARINT);
    put_varint(&tensor, DT_STRING);
    put_msg(&tensor, 2, &shape); /* no dims: a scalar string */
    put_bytes(&tensor, 8, text, strlen(text));
    put_bytes(&v, 1, tag, strlen(tag));
    put_msg(&v, 9, &metadata);
    put_msg(&v, 8, &tensor);
    event_head(out, wall_time, step);
    event_summary(out, &v);
    zg_pb_buf_free(&plugin_data);
    zg_pb_buf_free(&metadata);
    zg_pb_buf_free(&shape);
    zg_pb_buf_free(&tensor);
    zg_pb_buf_free(&v);
}
