/* Model FLOPs utilisation: the FLOPs a training step needs per token, and the dense peak of known
 * GPUs (shared by `zgpt bench` and the trainer's train/mfu metric). */
#ifndef ZG_TRAIN_MFU_H
#define ZG_TRAIN_MFU_H

#include "model/gpt2.h"

#include <stddef.h>

/* Forward + backward FLOPs per token at context T: 6N (the weights' matmuls) + 6*L*T*C (attention
 * scores and their use), N the unpadded parameter count. */
double zg_mfu_flops_per_token(const gpt2_config *cfg, int T);
/* Dense bf16/fp16 tensor-core peak (FLOP/s, datasheet, without sparsity) of the CUDA device, by its
 * name (written to name); 0 when unknown or without CUDA. */
double zg_mfu_cuda_peak(int device, char *name, size_t cap);

#endif
