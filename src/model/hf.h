/* Hugging Face GPT-2 checkpoints (GPT2LMHeadModel): import and export.
 *
 * Import: PATH is a folder holding config.json + model.safetensors (or, for a sharded checkpoint,
 * model.safetensors.index.json and the shards it names: model/safetensors_index.h; or a torch.save file:
 * pytorch_model.bin, nanoGPT's ckpt.pt: model/torch_pickle.h), or one such file (the config.json beside it is
 * used when present, else a nanoGPT checkpoint's model_args, else the shapes give the config, for the released
 * GPT-2 shapes only). Projections in nn.Linear's (out, in) layout (nanoGPT) are told from Conv1D's by c_attn's
 * shape. Keys are accepted
 * with or without the "transformer." prefix; the attn.bias / attn.masked_bias buffers are ignored;
 * Conv1D weights (stored (in, out)) are transposed to zgpt's (out, in). lm_head.weight is tied to
 * wte: when present it must equal wte (else an error: zgpt cannot represent an untied head).
 * F32/F16/BF16 tensors are converted to fp32.
 *
 * Export: DIR/model.safetensors (standard "transformer."-prefixed keys, Conv1D layout, the unpadded
 * vocabulary) + DIR/config.json, which GPT2LMHeadModel.from_pretrained(DIR) loads. */
#ifndef ZG_MODEL_HF_H
#define ZG_MODEL_HF_H

#include "model/gpt2.h"

/* 1 when PATH holds a model hf_config_load / hf_params_load read: a folder with model.safetensors,
 * model.safetensors.index.json, pytorch_model.bin or nanoGPT's ckpt.pt, or such a file (.safetensors, an index,
 * a torch.save file: .bin / .pt / .pth / .ckpt or a zip archive). Looks at names only. */
int hf_path_has_weights(const char *path);
/* Reads the model config of PATH (folder or file: config.json beside it, else a nanoGPT checkpoint's model_args,
 * else the released GPT-2 shapes). */
int hf_config_load(const char *path, gpt2_config *cfg);
/* Loads parameters into params_host (fp32, cfg's table layout; padded vocabulary rows zero). cfg
 * must match the file (use hf_config_load first), except that cfg->block_size may be smaller than
 * the file's n_positions: wpe is then cropped to its first block_size rows (as nanoGPT does). */
int hf_params_load(const char *path, const gpt2_config *cfg, float *params_host);
/* Writes a HF folder (created if needed) in dtype fp32/fp16/bf16. */
int hf_export(const char *dir, const gpt2_config *cfg, const float *params_host, zg_dtype dtype);

#endif
