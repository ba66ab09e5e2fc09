/* Which nodes of a recorded chain a library's calls recorded (see graph_spans.h). */
#include "backend/graph_spans.h"

int zg_graph_spans_mark(const void *const *chain, size_t n, const zg_graph_span *spans, int nspans,
                        unsigned char *inside) {
    int j = 0, in = nspans > 0 && spans[0].before == NULL;
    for (size_t i = 0; i < n; i++) {
        inside[i] = (unsigned char)in;
        if (in) {
            if (chain[i] != spans[j].last) continue;
            in = 0;
            j++;
        }
        /* the next span starts after this node (also right after the one that just ended) */
        if (j < nspans && spans[j].before == chain[i]) in = 1;
    }
    return j == nspans && !in ? 0 : -1;
}

int zg_graph_span_may_hoist(const unsigned char *inside, size_t n, size_t i) {
    return i >= 2 && i + 1 < n && inside[i] && !inside[i - 1];
}
