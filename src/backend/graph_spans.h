/* A recorded chain of graph nodes and the spans of it that one library's calls recorded (graph_cuda.cu): which
 * nodes are the library's, and which of its memsets may start beside the node before them. Plain C over opaque
 * node handles, so the rules are tested without a GPU (tests/unit/test_graph_spans.c). */
#ifndef ZG_BACKEND_GRAPH_SPANS_H
#define ZG_BACKEND_GRAPH_SPANS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One library call while a stream recorded: the recording's last node before it (NULL: the recording's start)
 * and its own last node. */
typedef struct {
    const void *before, *last;
} zg_graph_span;

/* inside[i] = 1 for the nodes of chain[0..n) that a span recorded (the nodes after its `before`, up to and
 * including its `last`), else 0; spans in recording order. -1 when a span is not found whole (the caller then
 * leaves the recording as made), else 0. */
int zg_graph_spans_mark(const void *const *chain, size_t n, const zg_graph_span *spans, int nspans,
                        unsigned char *inside);

/* 1 when chain node i (a memset of the library's own workspace: the caller checks that) may start beside the node
 * before it: the library recorded it, not the node before, and there are nodes on both sides (i >= 2: its new
 * dependency, the node two back, which is at or after the library's previous node; i + 1 < n: the node that then
 * waits for both). */
int zg_graph_span_may_hoist(const unsigned char *inside, size_t n, size_t i);

#ifdef __cplusplus
}
#endif
#endif
