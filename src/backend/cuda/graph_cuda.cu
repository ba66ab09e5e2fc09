/* CUDA graphs: a stream's work recorded once and replayed (a decode step, a training pass).
 *
 * (v0.38 added a rewrite of the recording before it was instantiated: cuBLASLt's 4-byte workspace memsets moved up
 * beside the op before each product, ZGPT_GRAPH_HOIST=1. Measured in v0.40 on an H100 it made the GPT-2 XL step
 * slower in two of three alternated rounds, 324.5 / 324.9 against 319.3 / 320.7 ms, so it was removed; most likely
 * a memset beside another op forks the recorded chain, and the replay pays more for the fork than the idle it
 * saves. ZGPT_GRAPH_HOIST is refused by name.) */
#include "backend/cuda/cuda_internal.h"

struct zg_graph {
    cudaGraphExec_t exec;
};

int zgc_graph_begin(zg_backend *be) {
    /* relaxed: the ops may look up cuBLASLt plans (host calls) while the stream records */
    zgc_impl *im = zgc_get(be);
    zgc_lt_warm_join(be); /* no other thread's CUDA calls while the stream records */
    cudaError_t e = cudaStreamBeginCapture(im->stream, cudaStreamCaptureModeRelaxed);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return zg_errorf("cannot record a CUDA graph: %s", cudaGetErrorString(e));
    }
    zgc_gemv_prof_mark(be, 0);
    return 0;
}

zg_graph *zgc_graph_end(zg_backend *be) {
    zgc_impl *im = zgc_get(be);
    cudaGraph_t g = NULL;
    zgc_gemv_prof_mark(be, 1);
    cudaError_t e = cudaStreamEndCapture(im->stream, &g);
    if (e != cudaSuccess || g == NULL) {
        (void)cudaGetLastError();
        zg_errorf("recording the CUDA graph failed: %s", cudaGetErrorString(e));
        return NULL;
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
