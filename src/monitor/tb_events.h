/* TensorBoard Event protos, encoded by hand (protobuf wire format; the field numbers are those of
 * tensorflow/core/util/event.proto and tensorflow/core/framework/summary.proto):
 *
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; SummaryMetadata metadata = 9; TensorProto tensor = 8; }
 *   SummaryMetadata { PluginData plugin_data = 1; }   PluginData { string plugin_name = 1; }
 *   TensorProto { DataType dtype = 1 (DT_STRING = 7); TensorShapeProto tensor_shape = 2 (empty: a scalar);
 *                 repeated bytes string_val = 8; }
 *
 * Scalars use simple_value (what TensorBoard's scalar dashboard reads); text uses a string tensor
 * with the "text" plugin. Each function appends one encoded Event to the buffer (cleared first). */
#ifndef ZG_MONITOR_TB_EVENTS_H
#define ZG_MONITOR_TB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *data;
    size_t len, cap;
} zg_pb_buf;

void zg_pb_buf_init(zg_pb_buf *b);
void zg_pb_buf_free(zg_pb_buf *b);

/* The first event of every file: file_version "brain.Event:2". */
void zg_tb_event_file_version(zg_pb_buf *out, double wall_time);
void zg_tb_event_scalar(zg_pb_buf *out, double wall_time, int64_t step, const char *tag, float value);
void zg_tb_event_text(zg_pb_buf *out, double wall_time, int64_t step, const char *tag, const char *text);

#endif
