/* The rules of graph_cuda.cu's memset move (src/backend/graph_spans.h) on chains of stand-in nodes: which nodes
 * a library's calls recorded, which spans are refused, and where a library memset may start beside the node before
 * it. */
#include "backend/graph_spans.h"
#include "testutil.h"

#include <string.h>

enum { N = 12 };
static int nodes[N]; /* the chain's nodes are the addresses of these */
static const void *chain[N];

static void chain_init(void) {
    for (int i = 0; i < N; i++) chain[i] = &nodes[i];
}

/* spans at the chain's start (before = NULL), back to back (the next span's before is the last node of the one
 * ending), and apart; a span of one node */
static void test_spans_mark(void) {
    chain_init();
    zg_graph_span sp[4] = {{NULL, chain[1]}, {chain[1], chain[3]}, {chain[6], chain[7]}, {chain[8], chain[10]}};
    unsigned char in[N];
    ZT_CHECK(zg_graph_spans_mark(chain, N, sp, 4, in) == 0);
    static const unsigned char want[N] = {1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0};
    ZT_CHECK_MSG(memcmp(in, want, N) == 0, "inside: %d%d%d%d%d%d%d%d%d%d%d%d", in[0], in[1], in[2], in[3], in[4], in[5],
                 in[6], in[7], in[8], in[9], in[10], in[11]);
    /* no spans: nothing is the library's */
    ZT_CHECK(zg_graph_spans_mark(chain, N, sp, 0, in) == 0);
    for (int i = 0; i < N; i++) ZT_CHECK(in[i] == 0);
}

/* A span not found whole: its before is not in the chain, its last never comes, or spans out of order */
static void test_spans_refused(void) {
    chain_init();
    int stranger = 0;
    unsigned char in[N];
    zg_graph_span lost_before[1] = {{&stranger, chain[3]}};
    ZT_CHECK(zg_graph_spans_mark(chain, N, lost_before, 1, in) == -1);
    zg_graph_span no_end[1] = {{chain[2], &stranger}};
    ZT_CHECK(zg_graph_spans_mark(chain, N, no_end, 1, in) == -1);
    zg_graph_span swapped[2] = {{chain[6], chain[8]}, {chain[1], chain[3]}};
    ZT_CHECK(zg_graph_spans_mark(chain, N, swapped, 2, in) == -1);
}

/* Where a memset may move: the library's node after one of ours, with a node two back and one after */
static void test_may_hoist(void) {
    /* ours, ours, lib (memset), lib, ours, lib (memset after a library node), lib, ours */
    static const unsigned char in[8] = {0, 0, 1, 1, 0, 1, 1, 0};
    ZT_CHECK(zg_graph_span_may_hoist(in, 8, 2) == 1);
    ZT_CHECK(zg_graph_span_may_hoist(in, 8, 3) == 0); /* after a library node */
    ZT_CHECK(zg_graph_span_may_hoist(in, 8, 4) == 0); /* not the library's */
    ZT_CHECK(zg_graph_span_may_hoist(in, 8, 5) == 1);
    ZT_CHECK(zg_graph_span_may_hoist(in, 8, 6) == 0);
    static const unsigned char edge[3] = {0, 1, 1};
    ZT_CHECK(zg_graph_span_may_hoist(edge, 3, 1) == 0); /* no node two back */
    static const unsigned char tail[4] = {0, 0, 0, 1};
    ZT_CHECK(zg_graph_span_may_hoist(tail, 4, 3) == 0); /* nothing after it */
}

int main(void) {
    zt_run("spans_mark", test_spans_mark);
    zt_run("spans_refused", test_spans_refused);
    zt_run("may_hoist", test_may_hoist);
    return zt_finish();
}
