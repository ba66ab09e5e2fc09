/* Public extras of the CUDA backend (C-callable), for code that shares its compute stream
 * (the NCCL communicator, benchmarks). Only meaningful when built with ZGPT_WITH_CUDA. */
#ifndef ZG_BACKEND_CUDA_BACKEND_CUDA_H
#define ZG_BACKEND_CUDA_BACKEND_CUDA_H

#include "backend/backend.h"

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The backend's one compute stream (every op is enqueued on it). be must be a CUDA backend. */
cudaStream_t zg_backend_cuda_stream(zg_backend *be);
/* How many attention forward + backward calls cuDNN's fused attention has run on this backend (0 when
 * built without cuDNN): tests and benchmarks use it to tell which path ran (ZGPT_ATTENTION). */
long zg_backend_cuda_cudnn_attention_calls(zg_backend *be);
/* Of those, the backward calls whose workspace was the caller's lent memory (ops->scratch_lend). */
long zg_backend_cuda_cudnn_attention_lent_calls(zg_backend *be);
/* Of those, the backward calls whose dQ came from zgpt's kernel over the causal half of cuDNN's dS (the rest ran
 * cuDNN's own dQ product: ZGPT_SDPA_DQ=cudnn, a shape it does not take, or a failed first-call check). */
long zg_backend_cuda_cudnn_attention_dq_calls(zg_backend *be);
#ifdef __cplusplus
}
#endif

#endif
