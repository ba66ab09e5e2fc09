/* The SDPA pattern as cuDNN operation graphs, and the engine each runs on (attention_cudnn_graph.cu), for
 * attention_cudnn.cu, which caches and runs the plans. Built with cuDNN only. */
#ifndef ZG_BACKEND_CUDA_ATTENTION_CUDNN_GRAPH_H
#define ZG_BACKEND_CUDA_ATTENTION_CUDNN_GRAPH_H

#ifdef ZGPT_WITH_CUDNN

#include "backend/backend.h"
#include "backend/cuda/cudnn_graph.h"

/* Tensor unique ids (the variant pack names tensors by these). Virtual tensors count up from 100. */
enum {
    ZGC_UID_Q = 1,
    ZGC_UID_K,
    ZGC_UID_V,
    ZGC_UID_O,
    ZGC_UID_STATS,
    ZGC_UID_DO,
    ZGC_UID_DQ,
    ZGC_UID_DK,
    ZGC_UID_DV,
    ZGC_UID_SCALE,
    ZGC_UID_NEGINF,
    ZGC_UID_ONE,
    ZGC_UID_DSUM,
    ZGC_UID_VIRTUAL = 100
};

/* Causal attention over packed qkv (B,T,3C), C = NH * hs, in dtype dt (bf16 or fp16) as the forward (bwd 0) or
 * backward (bwd 1) graph's operations into g (g->next_uid set to ZGC_UID_VIRTUAL first); 0, or -1 with g->err. */
int zgc_sdpa_graph_build(zgc_gb *g, int B, int T, int NH, int hs, zg_dtype dt, int bwd);
/* g's operations -> an operation graph -> the heuristics' engine configs (zgpt's preferred one first where offered,
 * deterministic ones only) -> a finalized plan and its workspace bytes; 0, or -1 with g->err naming the last
 * failure. cc_major: the device's compute capability (the preference table is per architecture). */
int zgc_sdpa_plan_build(zgc_gb *g, cudnnHandle_t handle, int bwd, int cc_major, cudnnBackendDescriptor_t *plan_out,
                        int64_t *ws_out);

#endif /* ZGPT_WITH_CUDNN */
#endif
