/* DeepSpeed's save_checkpoint folders read as DeepSpeed's zero_to_fp32.py reads them, without Python or DeepSpeed:
 * the fp32 master weights, merged from the ranks' ZeRO optimizer states.
 *
 * A tag folder (docs/FORMATS.md, "DeepSpeed checkpoints"):
 *   mp_rank_00_model_states.pt                  ZeRO 0-2: the 16-bit module, and param_shapes
 *   zero_pp_rank_<r>_mp_rank_00_model_states.pt ZeRO-3, one per rank: empty placeholders, and param_shapes
 *   [bf16_]zero_pp_rank_<r>_mp_rank_00_optim_states.pt
 *                                               one per rank: {"optimizer_state_dict": {"zero_stage",
 *                                               "partition_count", the rank's fp32 partition: ZeRO 1-2
 *                                               "single_partition_of_fp32_groups", ZeRO-3 "fp32_flat_groups"}}
 * param_shapes lists the trainable parameters' names and shapes in the order they were flattened, one dict per
 * optimizer parameter group. ZeRO 1-2 flatten each group and cut it into world-size pieces, one a rank; ZeRO-3
 * cuts every parameter into world-size pieces of ceil(numel / world) elements and each rank flattens its pieces.
 * Parameters with requires_grad false come whole (or, at ZeRO-3, cut the same way) from the model states'
 * frozen_param_fragments. */
#ifndef ZG_MODEL_DS_CHECKPOINT_H
#define ZG_MODEL_DS_CHECKPOINT_H

#include "model/safetensors.h"
#include "model/torch_pickle.h"

/* The model states file of a DeepSpeed tag folder (heap): mp_rank_00_model_states.pt, else ZeRO-3's
 * zero_pp_rank_0_mp_rank_00_model_states.pt; NULL when neither is there. */
char *ds_model_states_path(const char *dir);
/* 1 when path is named like a DeepSpeed model states file and its folder holds ZeRO optimizer states files */
int ds_checkpoint_has_optim(const char *path);
/* Opens the checkpoint whose model states file is path: f gets one fp32 tensor per parameter, named as in the
 * model (param_shapes' names), each gathered from the ranks' optimizer states when read (safetensors_read_f32).
 * The first read prints one note naming the stage and rank count. 0; 1 when the model states hold no param_shapes
 * (DeepSpeed writes them only with ZeRO stages 1-3: the caller then reads the module's 16-bit weights, f untouched);
 * -1 with a one-line error naming the file and what is wrong (a rank's file missing, ranks that disagree, sizes
 * that do not add up). args (may be NULL): a nanoGPT "model_args" saved in the client state. */
int ds_checkpoint_open(safetensors_file *f, const char *path, torch_model_args *args);

#endif
