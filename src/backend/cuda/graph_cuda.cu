/* CUDA graphs: a stream's work recorded once and replayed (a decode step, a training pass), and one rewrite of
 * the recording before it is instantiated.
 *
 * cuBLASLt clears a 4-byte counter in its workspace before most Hopper products (a memset node ahead of the
 * kernel). In the recorded chain that memset sits between the op before the product and the product, and the
 * replay pays for it twice over: ~1.5 us from the op before to the memset, ~2 us of memset, ~2-3 us to the
 * product, where two kernels back to back are 0.1-0.3 us apart (PERFORMANCE.md v0.38: 476 such memsets a step at
 * GPT-2 XL B=16, ~2-3 ms a step of idle). Only cuBLASLt's kernels touch its workspace, so when the op before is
 * not a cuBLASLt call (LayerNorm, the dQ kernel, anything of zgpt's or cuDNN's), the memset may start with that
 * op instead of after it: its edge moves one node up, and the product waits for both. Which nodes each cuBLASLt
 * call recorded is noted while the stream records (zgc_graph_note_lt: the chain's last node before and after the
 * call), so nothing depends on kernel names. The rewrite takes only a recording that is one chain (each node one
 * dependency and one dependent), and every span found in it; anything else is instantiated as recorded. The same
 * kernels run on the same data in the same order per buffer: the results are bitwise those of the recording as
 * made. Written without a GPU (v0.38): an A/B form until a device call has timed it and run its op test, so
ZGPT_GRAPH_HOIST=1 turns it on and the default (unset or 0) instantiates every recording as made. */
#include "backend/cuda/cuda_internal.h"

#include <stdio.h>
#include <string.h>

struct zg_graph {
    cudaGraphExec_t exec;
};

int zgc_graph_hoist_env(void) {
    const char *v = getenv("ZGPT_GRAPH_HOIST");
    if (v == NULL || *v == '\0' || strcmp(v, "0") == 0) return 0;
    return strcmp(v, "1") == 0 ? 1 : -1;
}

/* The recording's last node (NULL at its start); *chain cleared when the stream has several (not one chain). */
static cudaGraphNode_t zgc_graph_leaf(zgc_impl *im, int *chain) {
    cudaStreamCaptureStatus st;
    const cudaGraphNode_t *deps = NULL;
    size_t n = 0;
    if (cudaStreamGetCaptureInfo(im->stream, &st, NULL, NULL, &deps, NULL, &n) != cudaSuccess ||
        st != cudaStreamCaptureStatusActive) {
        (void)cudaGetLastError();
        *chain = 0;
        return NULL;
    }
    if (n > 1) *chain = 0;
    return n == 1 ? deps[0] : NULL;
}

cudaGraphNode_t zgc_graph_mark(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    return im->rec.on ? zgc_graph_leaf(im, &im->rec.chain) : NULL;
}

void zgc_graph_note_lt(zg_backend *be, cudaGraphNode_t before) {
    zgc_impl *im = zgc_get(be);
    if (!im->rec.on) return;
    cudaGraphNode_t last = zgc_graph_leaf(im, &im->rec.chain);
    if (last == NULL || last == before) return; /* (nothing recorded) */
    if (im->rec.n == im->rec.cap) {
        im->rec.cap = im->rec.cap ? 2 * im->rec.cap : 256;
        im->rec.spans = (zg_graph_span *)zg_realloc(im->rec.spans, (size_t)im->rec.cap * sizeof(zg_graph_span));
    }
    im->rec.spans[im->rec.n].before = (const void *)before;
    im->rec.spans[im->rec.n].last = (const void *)last;
    im->rec.n++;
}

/* The node's one dependent (or dependency, up = 1); NULL when it has none; *ok cleared when it has several. */
static cudaGraphNode_t zgc_graph_neighbour(cudaGraphNode_t node, int up, int *ok) {
    cudaGraphNode_t nb[2];
    size_t n = 2;
    cudaError_t e =
        up ? cudaGraphNodeGetDependencies(node, nb, NULL, &n) : cudaGraphNodeGetDependentNodes(node, nb, NULL, &n);
    if (e != cudaSuccess || n > 1) {
        (void)cudaGetLastError();
        *ok = 0;
        return NULL;
    }
    return n == 1 ? nb[0] : NULL;
}

/* The recording's nodes in order when it is one chain, else 0 (*out NULL). */
static size_t zgc_graph_chain(cudaGraph_t g, cudaGraphNode_t **out) {
    size_t n = 0, roots = 1;
    cudaGraphNode_t root;
    *out = NULL;
    if (cudaGraphGetNodes(g, NULL, &n) != cudaSuccess || n == 0 ||
        cudaGraphGetRootNodes(g, &root, &roots) != cudaSuccess || roots != 1) {
        (void)cudaGetLastError();
        return 0;
    }
    cudaGraphNode_t *c = (cudaGraphNode_t *)zg_malloc(n * sizeof *c);
    size_t k = 0;
    int ok = 1;
    for (cudaGraphNode_t x = root; x != NULL && ok && k < n; x = zgc_graph_neighbour(x, 0, &ok)) {
        c[k++] = x;
        if (k > 1) (void)zgc_graph_neighbour(x, 1, &ok); /* one dependency each */
    }
    if (!ok || k != n) {
        free(c);
        return 0;
    }
    *out = c;
    return n;
}

/* Moves each cuBLASLt workspace memset that follows a node of no cuBLASLt call up beside that node (the file's
 * comment). Returns the memsets moved; 0 when the recording is left as made. */
static int zgc_graph_hoist(zgc_impl *im, cudaGraph_t g) {
    cudaGraphNode_t *c = NULL;
    size_t n = im->rec.chain ? zgc_graph_chain(g, &c) : 0;
    int moved = 0;
    im->rec.recordings++;
    if (c == NULL) im->rec.not_chain++;
    if (n < 3) goto cleanup;
    {
        /* lt[i]: node i was recorded by a cuBLASLt call (spans are in recording order, as the chain is) */
        unsigned char *lt = (unsigned char *)zg_calloc(n, 1);
        const char *ws = (const char *)im->lt_ws;
        if (zg_graph_spans_mark((const void *const *)c, n, im->rec.spans, im->rec.n, lt) != 0 || ws == NULL) {
            im->rec.spans_lost++;
            free(lt); /* a span not found whole: leave the recording as made */
            goto cleanup;
        }
        for (size_t i = 2; i + 1 < n; i++) {
            cudaGraphNodeType t;
            cudaMemsetParams mp;
            if (!zg_graph_span_may_hoist(lt, n, i) || cudaGraphNodeGetType(c[i], &t) != cudaSuccess ||
                t != cudaGraphNodeTypeMemset || cudaGraphMemsetNodeGetParams(c[i], &mp) != cudaSuccess)
                continue;
            const char *d = (const char *)mp.dst;
            /* its extent: rows of `width` elements, `pitch` bytes apart */
            size_t bytes = (mp.height > 1 ? (size_t)(mp.height - 1) * mp.pitch : 0) + (size_t)mp.elementSize * mp.width;
            if (d < ws || d + bytes > ws + im->lt_ws_bytes) continue;
            /* c[i-2] -> memset -> c[i+1] <- c[i-1]: the memset after the node before c[i-1], the product after
             * both (the last cuBLASLt node before the memset is c[i-2] or earlier) */
            cudaGraphNode_t from[3] = {c[i - 1], c[i - 2], c[i - 1]}, to[3] = {c[i], c[i], c[i + 1]};
            if (cudaGraphRemoveDependencies(g, from, to, NULL, 1) != cudaSuccess ||
                cudaGraphAddDependencies(g, from + 1, to + 1, NULL, 2) != cudaSuccess) {
                /* a half-made change is not instantiated: the recording fails with one line (the model's passes
                 * then run op by op, generation's steps as plain launches) */
                (void)cudaGetLastError();
                moved = -1;
                break;
            }
            moved++;
        }
        free(lt);
    }
cleanup:
    free(c);
    return moved;
}

int zgc_graph_begin(zg_backend *be) {
    /* relaxed: the ops may look up cuBLASLt plans (host calls) while the stream records */
    zgc_impl *im = zgc_get(be);
    zgc_lt_warm_join(be); /* no other thread's CUDA calls while the stream records */
    cudaError_t e = cudaStreamBeginCapture(im->stream, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return zg_errorf("cannot record a CUDA graph: %s", cudaGetErrorString(e));
    }
    im->rec.on = zgc_graph_hoist_env() == 1;
    im->rec.chain = 1;
    im->rec.n = 0;
    zgc_gemv_prof_mark(be, 0);
    return 0;
}

zg_graph *zgc_graph_end(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    cudaGraph_t g = NULL;
    zgc_gemv_prof_mark(be, 1);
    cudaError_t e = cudaStreamEndCapture(im->stream, &g);
    int hoist = im->rec.on;
    im->rec.on = 0;
    if (e != cudaSuccess || g == NULL) {
        (void)cudaGetLastError();
        zg_errorf("recording the CUDA graph failed: %s", cudaGetErrorString(e));
        return NULL;
    }
    if (hoist) {
        int moved = zgc_graph_hoist(im, g);
        if (moved < 0) {
            ZG_CUDA_CHECK(cudaGraphDestroy(g));
            zg_errorf("rearranging a recorded CUDA graph failed; unset ZGPT_GRAPH_HOIST to keep recordings as made");
            return NULL;
        }
        im->rec.hoisted += moved;
    }
    cudaGraphExec_t exec;
    e = cudaGraphInstantiate(&exec, g, 0);
    ZG_CUDA_CHECK(cudaGraphDestroy(g));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        zg_errorf("instantiating the CUDA graph failed: %s", cudaGetErrorString(e));
        return NULL;
    }
    zg_graph *r = (zg_graph *)zg_malloc(sizeof *r);
    r->exec = exec;
    return r;
}

void zgc_graph_launch(zg_backend *be, zg_graph *g) { ZG_CUDA_CHECK(cudaGraphLaunch(g->exec, zgc_get(be)->stream)); }

void zgc_graph_destroy(zg_backend *be, zg_graph *g) {
    (void)be;
    if (g == NULL) return;
    ZG_CUDA_CHECK(cudaGraphExecDestroy(g->exec));
    free(g);
}

void zgc_graph_free(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    /* what an asked-for rewrite did, said once at the end (an A/B run reads it beside its timings) */
    if (im->rec.recordings > 0)
        fprintf(
            stderr,
            "zgpt: ZGPT_GRAPH_HOIST=1: %ld cuBLASLt memsets moved beside the op before them in %ld recorded graphs; "
            "left as made: %ld not one chain, %ld whose cuBLASLt calls were not found whole\n",
            im->rec.hoisted, im->rec.recordings, im->rec.not_chain, im->rec.spans_lost);
    free(im->rec.spans);
    memset(&im->rec, 0, sizeof im->rec);
}
